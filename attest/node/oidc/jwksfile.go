package oidc

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// staticKeys is a jwks_file. It is read again when a token names a key it
// does not hold and the file changed, so an updated file needs no restart.
type staticKeys struct {
	file string

	mu    sync.Mutex
	keys  []jose.JSONWebKey
	stamp fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func loadStaticKeys(file string) (*staticKeys, error) {
	s := &staticKeys{file: file}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *staticKeys) load() error {
	f, err := os.Open(s.file)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	data, err := readBounded(f)
	if err != nil {
		return fmt.Errorf("%s: %w", s.file, err)
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return fmt.Errorf("%s: %w", s.file, err)
	}
	s.keys, s.stamp = keys, fileStamp{fi.ModTime(), fi.Size()}
	return nil
}

// candidates returns the keys that may have signed a token with header h,
// reading the file again if it changed since it was read.
func (s *staticKeys) candidates(h jose.Header) ([]jose.JSONWebKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keys := matchKeys(s.keys, h); len(keys) > 0 {
		return keys, nil
	}
	fi, err := os.Stat(s.file)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	if (fileStamp{fi.ModTime(), fi.Size()}) == s.stamp {
		return nil, nil
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	return matchKeys(s.keys, h), nil
}

func (s *staticKeys) verify(ctx context.Context, raw string, h jose.Header) ([]byte, error) {
	keys, err := s.candidates(h)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errUnknownKey
	}
	set := gooidc.StaticKeySet{PublicKeys: make([]crypto.PublicKey, len(keys))}
	for i, k := range keys {
		set.PublicKeys[i] = k.Key
	}
	payload, err := set.VerifySignature(ctx, raw)
	if err != nil {
		return nil, errNotVerified
	}
	return payload, nil
}

// matchKeys picks the keys that may verify a signature with header h: the
// one named by kid, or every key when the token names none; a key
// restricted to another algorithm is left out.
func matchKeys(keys []jose.JSONWebKey, h jose.Header) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range keys {
		if h.KeyID != "" && k.KeyID != h.KeyID {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		out = append(out, k)
	}
	return out
}

// parseJWKS reads a JWKS, keeping the public signature keys. A key that
// cannot be used (an unsupported type, an encryption or symmetric key) is
// skipped rather than failing the set, because issuers publish keys for
// other purposes next to their signing keys.
func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if json.Unmarshal(raw, &k) != nil || (k.Use != "" && k.Use != "sig") {
			continue
		}
		if pub := k.Public(); pub.Valid() && pub.IsPublic() {
			keys = append(keys, pub)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the JWKS has no usable public signature key (of %d keys)", len(set.Keys))
	}
	return keys, nil
}
