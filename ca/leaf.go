package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
	"unicode/utf8"
)

// This file encodes X509-SVID leaves directly instead of going through
// x509.CreateCertificate. A leaf always has the same shape, so its
// TBSCertificate can be assembled from a handful of precomputed pieces, and
// the signature check CreateCertificate makes after every signature (one
// verification per leaf, about twice the cost of the signature itself) can
// be kept for the signers that need it.
//
// The encoding must stay byte for byte what CreateCertificate produces for
// leafInputs.template(); leaf_test.go checks that for every supported key
// type, and FuzzLeafEncoding for arbitrary accepted inputs.

// leafInputs is everything that varies from one leaf to the next.
type leafInputs struct {
	serial    *big.Int
	notBefore time.Time
	notAfter  time.Time
	publicKey crypto.PublicKey
	// spki is publicKey as a DER SubjectPublicKeyInfo.
	spki         []byte
	subjectKeyID []byte
	keyUsage     x509.KeyUsage
	uri          *url.URL
	dnsNames     []string
}

// newLeafInputs derives the key-dependent parts of a leaf for pub.
func newLeafInputs(pub crypto.PublicKey, uri *url.URL, dnsNames []string, serial *big.Int, notBefore, notAfter time.Time) (*leafInputs, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	keyBits, err := spkiKeyBits(spki)
	if err != nil {
		return nil, err
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		// The X509-SVID spec allows keyEncipherment; TLS 1.2 peers using RSA
		// key exchange need it.
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	return &leafInputs{
		serial:       serial,
		notBefore:    notBefore,
		notAfter:     notAfter,
		publicKey:    pub,
		spki:         spki,
		subjectKeyID: keyIDFromBits(keyBits),
		keyUsage:     keyUsage,
		uri:          uri,
		dnsNames:     dnsNames,
	}, nil
}

// keyIDFromBits follows RFC 7093 method 1: the leftmost 160 bits of the
// SHA-256 of the subjectPublicKey bit string.
func keyIDFromBits(keyBits []byte) []byte {
	sum := sha256.Sum256(keyBits)
	return sum[:20]
}

// subject is the leaf's name: O=writ, plus the first DNS name as CN for
// clients that still look there.
func (in *leafInputs) subject() pkix.Name {
	subject := pkix.Name{Organization: []string{"writ"}}
	if len(in.dnsNames) > 0 {
		subject.CommonName = in.dnsNames[0]
	}
	return subject
}

// template is the leaf as crypto/x509 describes it: what the fallback path
// hands to CreateCertificate, and the reference the encoder is tested
// against.
func (in *leafInputs) template() *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          in.serial,
		Subject:               in.subject(),
		NotBefore:             in.notBefore,
		NotAfter:              in.notAfter,
		KeyUsage:              in.keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          in.subjectKeyID,
		URIs:                  []*url.URL{in.uri},
		DNSNames:              in.dnsNames,
	}
}

// leafSigning is how a CA key signs: the algorithm crypto/x509 picks by
// default for the key, and its DER AlgorithmIdentifier.
type leafSigning struct {
	algorithm x509.SignatureAlgorithm
	algID     []byte
	opts      crypto.SignerOpts
}

var (
	sigECDSAWithSHA256 = mustSigning(x509.ECDSAWithSHA256, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, false, crypto.SHA256)
	sigECDSAWithSHA384 = mustSigning(x509.ECDSAWithSHA384, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}, false, crypto.SHA384)
	sigECDSAWithSHA512 = mustSigning(x509.ECDSAWithSHA512, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}, false, crypto.SHA512)
	// RSA AlgorithmIdentifiers carry an explicit NULL parameter.
	sigSHA256WithRSA = mustSigning(x509.SHA256WithRSA, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, true, crypto.SHA256)
	// Ed25519 signs the message itself: no hash.
	sigPureEd25519 = mustSigning(x509.PureEd25519, asn1.ObjectIdentifier{1, 3, 101, 112}, false, crypto.Hash(0))
)

func mustSigning(alg x509.SignatureAlgorithm, oid asn1.ObjectIdentifier, nullParams bool, hash crypto.Hash) *leafSigning {
	ai := pkix.AlgorithmIdentifier{Algorithm: oid}
	if nullParams {
		ai.Parameters = asn1.NullRawValue
	}
	der, err := asn1.Marshal(ai)
	if err != nil {
		panic(err)
	}
	return &leafSigning{algorithm: alg, algID: der, opts: hash}
}

// signingFor returns how a CA key of pub's type signs, mirroring the
// defaults of x509.CreateCertificate, or nil for a key the encoder does not
// handle (those go through CreateCertificate).
func signingFor(pub crypto.PublicKey) *leafSigning {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return sigECDSAWithSHA256
		case elliptic.P384():
			return sigECDSAWithSHA384
		case elliptic.P521():
			return sigECDSAWithSHA512
		}
	case *rsa.PublicKey:
		return sigSHA256WithRSA
	case ed25519.PublicKey:
		return sigPureEd25519
	}
	return nil
}

// isSoftwareKey reports whether s is one of the standard library's own
// private keys, whose signatures are correct by construction.
func isSoftwareKey(s crypto.Signer) bool {
	switch s.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
		return true
	}
	return false
}

// issueLeaf makes and signs the leaf in describes under ca.
//
// Signature check invariant: every leaf returned carries a signature that
// verifies under ca.Cert's public key. CreateCertificate ensures that by
// verifying every signature it makes. Here the check is made only when it
// can fail: for a software key (*ecdsa.PrivateKey, *rsa.PrivateKey,
// ed25519.PrivateKey) that is the same key as the one in ca.Cert (checked
// below, as CreateCertificate does), the signature is correct by
// construction. Any other signer (an HSM, a TPM, a remote service, a
// wrapper) has its signature verified against ca.Cert before the leaf is
// returned.
func (ca *X509CA) issueLeaf(in *leafInputs) (*x509.Certificate, error) {
	pub := ca.Signer.Public()
	sig := signingFor(pub)
	if sig == nil || ca.Cert.PublicKey == nil || len(ca.Cert.RawSubject) == 0 {
		return ca.createLeaf(in)
	}
	signerPub, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !signerPub.Equal(ca.Cert.PublicKey) {
		return nil, errors.New("the signing key does not match the CA certificate's public key")
	}
	tbs, err := encodeLeafTBS(ca.Cert, sig, in)
	if err != nil {
		return nil, err
	}
	signature, err := crypto.SignMessage(ca.Signer, rand.Reader, tbs, sig.opts)
	if err != nil {
		return nil, err
	}
	if !isSoftwareKey(ca.Signer) {
		if err := ca.Cert.CheckSignature(sig.algorithm, tbs, signature); err != nil {
			return nil, fmt.Errorf("the signer returned a signature that does not verify under the CA certificate (%T): %w", ca.Signer, err)
		}
	}
	return x509.ParseCertificate(assembleCertificate(tbs, sig, signature))
}

// createLeaf is the general path, for CA keys the encoder does not handle.
func (ca *X509CA) createLeaf(in *leafInputs) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, in.template(), ca.Cert, in.publicKey, ca.Signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// DER tags used below.
const (
	tagBoolean         = 0x01
	tagInteger         = 0x02
	tagBitString       = 0x03
	tagOctetString     = 0x04
	tagOID             = 0x06
	tagUTF8String      = 0x0c
	tagPrintableString = 0x13
	tagUTCTime         = 0x17
	tagGeneralizedTime = 0x18
	tagSequence        = 0x30
	tagSet             = 0x31
	tagVersion         = 0xa0 // [0] EXPLICIT, constructed
	tagExtensions      = 0xa3 // [3] EXPLICIT, constructed
	tagSANDNS          = 0x82 // [2] IMPLICIT IA5String
	tagSANURI          = 0x86 // [6] IMPLICIT IA5String
	tagAKIDKeyID       = 0x80 // [0] IMPLICIT OCTET STRING
)

// Fixed pieces of every leaf, as DER.
var (
	derVersion3 = []byte{tagVersion, 3, tagInteger, 1, 2}
	// Extension OIDs, full TLVs.
	derOIDKeyUsage        = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 15})
	derOIDExtKeyUsage     = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 37})
	derOIDBasicConstraint = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 19})
	derOIDSubjectKeyID    = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 14})
	derOIDAuthorityKeyID  = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 35})
	derOIDSubjectAltName  = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 17})
	derOIDCommonName      = mustMarshal(asn1.ObjectIdentifier{2, 5, 4, 3})
	// RDN O=writ.
	derRDNOrgWrit = mustMarshal(pkix.RDNSequence{{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "writ"}}})[2:]
	// ExtKeyUsage value: serverAuth, clientAuth.
	derEKUServerClient = mustMarshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}, {1, 3, 6, 1, 5, 5, 7, 3, 2}})
	// BasicConstraints value: CA=false, no path length (an empty SEQUENCE).
	derBasicConstraintsLeaf = []byte{tagSequence, 0}
	derCritical             = []byte{tagBoolean, 1, 0xff}
)

func mustMarshal(v any) []byte {
	der, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return der
}

// derBuilder appends DER. Constructed values are opened with a one-byte
// length placeholder and widened on close when their contents need more.
type derBuilder struct {
	b []byte
}

func (d *derBuilder) open(tag byte) int {
	d.b = append(d.b, tag, 0)
	return len(d.b)
}

func (d *derBuilder) close(start int) {
	n := len(d.b) - start
	if n < 0x80 {
		d.b[start-1] = byte(n)
		return
	}
	k := 0
	for v := n; v > 0; v >>= 8 {
		k++
	}
	d.b[start-1] = 0x80 | byte(k)
	d.b = append(d.b, make([]byte, k)...)
	copy(d.b[start+k:], d.b[start:start+n])
	for i := k - 1; i >= 0; i-- {
		d.b[start+i] = byte(n)
		n >>= 8
	}
}

func (d *derBuilder) raw(der []byte) {
	d.b = append(d.b, der...)
}

func (d *derBuilder) length(n int) {
	switch {
	case n < 0x80:
		d.b = append(d.b, byte(n))
	case n <= 0xff:
		d.b = append(d.b, 0x81, byte(n))
	case n <= 0xffff:
		d.b = append(d.b, 0x82, byte(n>>8), byte(n))
	default:
		d.b = append(d.b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
}

func (d *derBuilder) element(tag byte, content []byte) {
	d.b = append(d.b, tag)
	d.length(len(content))
	d.b = append(d.b, content...)
}

func (d *derBuilder) stringElement(tag byte, content string) {
	d.b = append(d.b, tag)
	d.length(len(content))
	d.b = append(d.b, content...)
}

// integer appends a non-negative INTEGER in minimal two's complement.
func (d *derBuilder) integer(n *big.Int) {
	mag := n.Bytes()
	pad := len(mag) == 0 || mag[0]&0x80 != 0
	d.b = append(d.b, tagInteger)
	if pad {
		d.length(len(mag) + 1)
		d.b = append(d.b, 0)
	} else {
		d.length(len(mag))
	}
	d.b = append(d.b, mag...)
}

// timeElement appends t the way RFC 5280 section 4.1.2.5 (and encoding/asn1)
// wants it: UTCTime for years 1950 to 2049, GeneralizedTime otherwise,
// in UTC to the second.
func (d *derBuilder) timeElement(t time.Time) error {
	t = t.UTC()
	year := t.Year()
	switch {
	case year >= 1950 && year < 2050:
		d.b = append(d.b, tagUTCTime, 13)
		d.b = appendTwoDigits(d.b, year%100)
	case year >= 0 && year <= 9999:
		d.b = append(d.b, tagGeneralizedTime, 15)
		d.b = appendTwoDigits(d.b, year/100)
		d.b = appendTwoDigits(d.b, year%100)
	default:
		return fmt.Errorf("time %s cannot be encoded in a certificate", t.Format(time.RFC3339))
	}
	_, month, day := t.Date()
	hour, minute, second := t.Clock()
	d.b = appendTwoDigits(d.b, int(month))
	d.b = appendTwoDigits(d.b, day)
	d.b = appendTwoDigits(d.b, hour)
	d.b = appendTwoDigits(d.b, minute)
	d.b = appendTwoDigits(d.b, second)
	d.b = append(d.b, 'Z')
	return nil
}

func appendTwoDigits(b []byte, v int) []byte {
	return append(b, byte('0'+v/10), byte('0'+v%10))
}

// directoryString picks the string type encoding/asn1 gives an attribute
// value: PrintableString when every character allows it, else UTF8String.
func directoryString(s string) (byte, error) {
	for i := 0; i < len(s); i++ {
		if !isPrintableChar(s[i]) {
			if !utf8.ValidString(s) {
				return 0, fmt.Errorf("%q is not valid UTF-8", s)
			}
			return tagUTF8String, nil
		}
	}
	return tagPrintableString, nil
}

// isPrintableChar is the PrintableString alphabet of X.680; '*' and '&'
// are not in it.
func isPrintableChar(b byte) bool {
	return 'a' <= b && b <= 'z' ||
		'A' <= b && b <= 'Z' ||
		'0' <= b && b <= '9' ||
		'\'' <= b && b <= ')' ||
		'+' <= b && b <= '/' ||
		b == ' ' || b == ':' || b == '=' || b == '?'
}

func checkIA5(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return fmt.Errorf("%q cannot be encoded as an IA5String", s)
		}
	}
	return nil
}

// encodeLeafTBS returns the DER TBSCertificate of the leaf in describes,
// issued by issuer and signed as sig says.
func encodeLeafTBS(issuer *x509.Certificate, sig *leafSigning, in *leafInputs) ([]byte, error) {
	if in.serial == nil || in.serial.Sign() < 0 {
		return nil, errors.New("serial number must be positive")
	}
	uri := in.uri.String()
	if err := checkIA5(uri); err != nil {
		return nil, err
	}
	for _, name := range in.dnsNames {
		if err := checkIA5(name); err != nil {
			return nil, err
		}
	}

	d := derBuilder{b: make([]byte, 0, 512+len(in.spki)+len(issuer.RawSubject))}
	tbs := d.open(tagSequence)
	d.raw(derVersion3)
	d.integer(in.serial)
	d.raw(sig.algID)
	d.raw(issuer.RawSubject)

	validity := d.open(tagSequence)
	if err := d.timeElement(in.notBefore); err != nil {
		return nil, err
	}
	if err := d.timeElement(in.notAfter); err != nil {
		return nil, err
	}
	d.close(validity)

	subjectStart := len(d.b)
	subject := d.open(tagSequence)
	d.raw(derRDNOrgWrit)
	if len(in.dnsNames) > 0 {
		cn := in.dnsNames[0]
		strTag, err := directoryString(cn)
		if err != nil {
			return nil, err
		}
		set := d.open(tagSet)
		atv := d.open(tagSequence)
		d.raw(derOIDCommonName)
		d.stringElement(strTag, cn)
		d.close(atv)
		d.close(set)
	}
	d.close(subject)
	// As in CreateCertificate, a leaf named exactly like its issuer carries
	// no authority key identifier.
	withAKID := len(issuer.SubjectKeyId) > 0 && !bytes.Equal(d.b[subjectStart:], issuer.RawSubject)

	d.raw(in.spki)

	exts := d.open(tagExtensions)
	extList := d.open(tagSequence)

	if in.keyUsage != 0 {
		ext := d.open(tagSequence)
		d.raw(derOIDKeyUsage)
		d.raw(derCritical)
		value := d.open(tagOctetString)
		keyUsageBits(&d, in.keyUsage)
		d.close(value)
		d.close(ext)
	}

	ext := d.open(tagSequence)
	d.raw(derOIDExtKeyUsage)
	d.element(tagOctetString, derEKUServerClient)
	d.close(ext)

	ext = d.open(tagSequence)
	d.raw(derOIDBasicConstraint)
	d.raw(derCritical)
	d.element(tagOctetString, derBasicConstraintsLeaf)
	d.close(ext)

	if len(in.subjectKeyID) > 0 {
		ext = d.open(tagSequence)
		d.raw(derOIDSubjectKeyID)
		value := d.open(tagOctetString)
		d.element(tagOctetString, in.subjectKeyID)
		d.close(value)
		d.close(ext)
	}

	if withAKID {
		ext = d.open(tagSequence)
		d.raw(derOIDAuthorityKeyID)
		value := d.open(tagOctetString)
		akid := d.open(tagSequence)
		d.element(tagAKIDKeyID, issuer.SubjectKeyId)
		d.close(akid)
		d.close(value)
		d.close(ext)
	}

	// The subject is never empty (it always has O=writ), so the SAN
	// extension is not critical.
	ext = d.open(tagSequence)
	d.raw(derOIDSubjectAltName)
	value := d.open(tagOctetString)
	names := d.open(tagSequence)
	for _, name := range in.dnsNames {
		d.stringElement(tagSANDNS, name)
	}
	d.stringElement(tagSANURI, uri)
	d.close(names)
	d.close(value)
	d.close(ext)

	d.close(extList)
	d.close(exts)
	d.close(tbs)
	return d.b, nil
}

// keyUsageBits appends ku (non-zero) as the KeyUsage BIT STRING: bit 0
// (digitalSignature) first, one or two bytes, trailing zero bits unused.
func keyUsageBits(d *derBuilder, ku x509.KeyUsage) {
	a := [2]byte{reverseBits(byte(ku)), reverseBits(byte(ku >> 8))}
	bits := a[:1]
	if a[1] != 0 {
		bits = a[:2]
	}
	unused := 0
	for last := bits[len(bits)-1]; last != 0 && last&1 == 0; last >>= 1 {
		unused++
	}
	d.b = append(d.b, tagBitString, byte(1+len(bits)), byte(unused))
	d.b = append(d.b, bits...)
}

func reverseBits(b byte) byte {
	b = b>>4 | b<<4
	b = b>>2&0x33 | b<<2&0xcc
	return b>>1&0x55 | b<<1&0xaa
}

// assembleCertificate wraps tbs and its signature into a Certificate.
func assembleCertificate(tbs []byte, sig *leafSigning, signature []byte) []byte {
	d := derBuilder{b: make([]byte, 0, len(tbs)+len(sig.algID)+len(signature)+16)}
	cert := d.open(tagSequence)
	d.raw(tbs)
	d.raw(sig.algID)
	d.b = append(d.b, tagBitString)
	d.length(len(signature) + 1)
	d.b = append(d.b, 0)
	d.b = append(d.b, signature...)
	d.close(cert)
	return d.b
}

// spkiKeyBits returns the subjectPublicKey bit string's bytes from a DER
// SubjectPublicKeyInfo.
func spkiKeyBits(spki []byte) ([]byte, error) {
	tag, body, rest, ok := readTLV(spki)
	if !ok || tag != tagSequence || len(rest) != 0 {
		return nil, errors.New("malformed SubjectPublicKeyInfo")
	}
	tag, _, body, ok = readTLV(body) // AlgorithmIdentifier
	if !ok || tag != tagSequence {
		return nil, errors.New("malformed SubjectPublicKeyInfo algorithm")
	}
	tag, bits, rest, ok := readTLV(body)
	if !ok || tag != tagBitString || len(rest) != 0 || len(bits) == 0 || bits[0] != 0 {
		return nil, errors.New("malformed SubjectPublicKeyInfo key")
	}
	return bits[1:], nil
}

// readTLV splits one DER element (single-byte tag, definite length) off b.
func readTLV(b []byte) (tag byte, content, rest []byte, ok bool) {
	if len(b) < 2 {
		return 0, nil, nil, false
	}
	tag, l := b[0], int(b[1])
	b = b[2:]
	if l&0x80 != 0 {
		k := l & 0x7f
		if k == 0 || k > 3 || len(b) < k {
			return 0, nil, nil, false
		}
		l = 0
		for _, c := range b[:k] {
			l = l<<8 | int(c)
		}
		b = b[k:]
	}
	if len(b) < l {
		return 0, nil, nil, false
	}
	return tag, b[:l], b[l:], true
}
