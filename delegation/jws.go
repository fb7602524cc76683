package delegation

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"
)

// Tokens are signed by go-jose over an OpaqueSigner (internal/jwssign), so
// the key stays in the keystore (an HSM key included). They are checked
// here rather than by a JOSE library: a verifier that knows exactly one
// header shape and two algorithms has no "alg" or "crit" handling to get
// wrong. go-jose checks the result in the tests.

// keysAllowed names the keys that may sign delegation tokens.
const keysAllowed = "an ECDSA P-256 key (ES256) or an Ed25519 key (EdDSA)"

// algorithm is a JWS "alg" a delegation key signs with.
type algorithm struct {
	name jose.SignatureAlgorithm
}

var (
	es256 = algorithm{name: jose.ES256}
	edDSA = algorithm{name: jose.EdDSA}
)

// es256CoordSize is the byte length of a P-256 coordinate: an ES256
// signature is r||s, each padded to it (RFC 7518 section 3.4).
const es256CoordSize = 32

// algorithmFor returns the one algorithm pub signs with. A key is bound to
// a single algorithm so that a token's "alg" header can never choose how
// it is checked.
func algorithmFor(pub crypto.PublicKey) (algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return algorithm{}, fmt.Errorf("malformed ECDSA public key: use %s", keysAllowed)
		}
		if k.Curve != elliptic.P256() {
			return algorithm{}, fmt.Errorf("ECDSA curve %s cannot sign delegation tokens: use %s", k.Curve.Params().Name, keysAllowed)
		}
		return es256, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return algorithm{}, fmt.Errorf("malformed Ed25519 public key of %d bytes: use %s", len(k), keysAllowed)
		}
		return edDSA, nil
	case nil:
		return algorithm{}, fmt.Errorf("no public key: use %s", keysAllowed)
	default:
		return algorithm{}, fmt.Errorf("%T keys cannot sign delegation tokens: use %s", pub, keysAllowed)
	}
}

// jwsHeader is the only header a delegation token has; the verifier
// refuses any other member ("crit", "jku", "jwk", ...), since each would be
// an instruction from the token's author about how to check it.
type jwsHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

var b64 = base64.RawURLEncoding

// verifySignature checks sig over input with pub, whose algorithm alg is.
func verifySignature(pub crypto.PublicKey, alg algorithm, input, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if alg != es256 || len(sig) != 2*es256CoordSize {
			return false
		}
		sum := sha256.Sum256(input)
		r := new(big.Int).SetBytes(sig[:es256CoordSize])
		s := new(big.Int).SetBytes(sig[es256CoordSize:])
		return ecdsa.Verify(k, sum[:], r, s)
	case ed25519.PublicKey:
		return alg == edDSA && len(sig) == ed25519.SignatureSize && ed25519.Verify(k, input, sig)
	}
	return false
}

// decodeSegment decodes one base64url segment of a compact JWS, refusing
// padding and stray bits so that one token has exactly one spelling.
func decodeSegment(s, what string) ([]byte, error) {
	out, err := b64.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("malformed token: the %s is not unpadded base64url", what)
	}
	return out, nil
}

// decodeStrict unmarshals one JSON object into v, refusing unknown members,
// duplicate members (which parsers resolve differently, so two verifiers
// could read two different tokens) and anything after the object.
func decodeStrict(data []byte, v any, what string) error {
	if err := checkNoDuplicates(json.NewDecoder(bytes.NewReader(data))); err != nil {
		return fmt.Errorf("malformed token %s: %w", what, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed token %s: %w", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("malformed token %s: data after the JSON object", what)
	}
	if err := checkExactNames(data, v); err != nil {
		return fmt.Errorf("malformed token %s: %w", what, err)
	}
	return nil
}

// checkExactNames fails if data names a member other than exactly as v
// writes it. encoding/json matches names regardless of case, so without
// this check {"ISS": ...} would be read as "iss" here while other parsers
// read no issuer at all.
func checkExactNames(data []byte, v any) error {
	canonical, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var got, want any
	if err := json.Unmarshal(data, &got); err != nil {
		return err
	}
	if err := json.Unmarshal(canonical, &want); err != nil {
		return err
	}
	return namesWithin(got, want)
}

// namesWithin fails if an object in got has a member the same object in
// want lacks.
func namesWithin(got, want any) error {
	g, ok := got.(map[string]any)
	if !ok {
		return nil
	}
	w, _ := want.(map[string]any)
	for name, gv := range g {
		wv, ok := w[name]
		if !ok {
			return fmt.Errorf("member %q is not one a delegation token has, or is empty", truncate(name))
		}
		if err := namesWithin(gv, wv); err != nil {
			return err
		}
	}
	return nil
}

// checkNoDuplicates reads one JSON value from dec and fails if any object
// in it names a member twice.
func checkNoDuplicates(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return err
			}
			name := key.(string)
			if seen[name] {
				return fmt.Errorf("member %q appears twice", truncate(name))
			}
			seen[name] = true
			if err := checkNoDuplicates(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	case json.Delim('['):
		for dec.More() {
			if err := checkNoDuplicates(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	}
	return nil
}

// truncate shortens a value taken from a token before it goes into an
// error, so that errors stay readable in logs whatever the token holds.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
