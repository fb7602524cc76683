package output

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// The file layout of an identity on disk, the one every writer of SVID
// files uses (`writ agent --out`, `writ fetch --out`, `writ svid mint
// --out`, `writ login`), so users see the same files whichever way they
// got them.
const (
	SVIDFile   = "svid.pem" // the certificate, then intermediates
	KeyFile    = "svid.key" // PKCS#8 private key, mode 0600
	BundleFile = "bundle.pem"
)

// Material is what gets written: the identity (one X.509-SVID), the trust
// bundle, and any JWT-SVIDs asked for.
type Material struct {
	Chain  []*x509.Certificate // leaf first
	Key    crypto.Signer       // software key; marshalled with x509.MarshalPKCS8PrivateKey
	Bundle []*x509.Certificate // the trust domain's X.509 authorities
	JWTs   []JWT               // may be empty
}

// JWT is one JWT-SVID and the audience it was minted for, which names its
// file.
type JWT struct {
	Audience string
	Token    string
}

// file is one file to write: its name in the directory, content and mode.
type file struct {
	name string
	data []byte
	perm os.FileMode
}

// encode checks m and turns it into files in the order they are to be
// written.
//
// The order is for readers that reload when svid.pem changes, the file that
// says which identity is current. bundle.pem comes first, so a new chain is
// never on disk before the authorities that verify it. The JWT files come
// next, as they do not depend on the X.509 files. svid.key comes before
// svid.pem: when svid.pem changes the matching key is already in place, so
// such a reader never pairs a new certificate with an old key. Key first is
// the better of the two orders: the other leaves a window in which a reader
// woken by svid.pem loads a new certificate with the old key and fails.
// Key first still leaves a short window in which a reader that loads both
// files for another reason (its own start-up) sees the new key with the old
// certificate; such a reader should retry on a mismatch, or rely on the
// reload command, which runs only after every file is written.
func (m Material) encode() ([]file, error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("output: nothing was written: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(m.Key)
	if err != nil {
		return nil, fmt.Errorf("output: nothing was written: cannot encode the private key as PKCS#8 (only software RSA, ECDSA and Ed25519 keys can be written): %w", err)
	}
	jwts, err := m.jwtFiles()
	if err != nil {
		return nil, fmt.Errorf("output: nothing was written: %w", err)
	}
	files := []file{{BundleFile, pemCerts(m.Bundle), 0o644}}
	files = append(files, jwts...)
	return append(files,
		file{KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		file{SVIDFile, pemCerts(m.Chain), 0o644},
	), nil
}

// check refuses material that would leave unusable files: a reader cannot
// do anything with a certificate whose key is missing or another's.
func (m Material) check() error {
	if len(m.Chain) == 0 {
		return errors.New("the material has no certificate chain: an X.509-SVID is required")
	}
	if err := noNil("certificate chain", m.Chain); err != nil {
		return err
	}
	if len(m.Bundle) == 0 {
		return errors.New("the material has no trust bundle: readers could not verify peers")
	}
	if err := noNil("trust bundle", m.Bundle); err != nil {
		return err
	}
	if m.Key == nil {
		return errors.New("the material has no private key for the X.509-SVID")
	}
	leaf := m.Chain[0]
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(m.Key.Public()) {
		return fmt.Errorf("the private key does not match the public key of the leaf certificate (serial %s, URIs %v): pass the key the certificate was issued for", leaf.SerialNumber, leaf.URIs)
	}
	return nil
}

func noNil(what string, certs []*x509.Certificate) error {
	for i, c := range certs {
		if c == nil {
			return fmt.Errorf("the %s has no certificate at position %d", what, i)
		}
	}
	return nil
}

// jwtFiles names and encodes one file per JWT-SVID. A token file holds the
// token and a newline, as `writ svid mint --jwt --out` writes it.
func (m Material) jwtFiles() ([]file, error) {
	auds := make([]string, len(m.JWTs))
	for i, j := range m.JWTs {
		if j.Token == "" || strings.ContainsAny(j.Token, " \t\r\n") {
			return nil, fmt.Errorf("the JWT-SVID for audience %q is empty or contains white space: a compact JWS is expected", j.Audience)
		}
		auds[i] = j.Audience
	}
	names, err := jwtFileNames(auds)
	if err != nil {
		return nil, err
	}
	files := make([]file, len(m.JWTs))
	for i, j := range m.JWTs {
		files[i] = file{names[i], []byte(j.Token + "\n"), 0o600}
	}
	return files, nil
}

func pemCerts(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}
