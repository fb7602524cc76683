package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
)

// generateKey makes a fresh private key of type kt.
func generateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case ECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case Ed25519:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	}
	_, err := ParseKeyType(string(kt))
	return nil, fmt.Errorf("keystore: %w", err)
}

// maxNameLen bounds key names; they become file names, and 64 leaves room
// for any suffix a backend adds.
const maxNameLen = 64

// ValidateName reports whether name may name a key. Every keystore applies
// the same rule, so a name that works in tests with Memory also works on
// disk: 1 to 64 characters of a-z, 0-9, '.', '_' and '-', not starting with
// '.' (which would hide the file and could name "." or "..").
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("keystore: key name is empty: use 1 to %d characters of a-z, 0-9, '.', '_', '-'", maxNameLen)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("keystore: key name %.20q... is %d characters long: use at most %d", name, len(name), maxNameLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("keystore: key name %q starts with '.': start it with a-z, 0-9, '_' or '-'", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("keystore: key name %q has character %q at offset %d: use only a-z, 0-9, '.', '_', '-'", name, c, i)
		}
	}
	return nil
}
