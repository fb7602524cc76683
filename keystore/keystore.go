// Package keystore holds private keys where they were made. A key is named,
// created inside the keystore and used through crypto.Signer; callers never
// see the key material, so a keystore backed by an HSM (pkcs11) or a TPM
// satisfies the same interface.
package keystore

import (
	"context"
	"crypto"
	"errors"
	"fmt"
)

// ErrNotFound is returned by Get for a name that holds no key.
var ErrNotFound = errors.New("keystore: key not found")

// KeyType names the algorithms writ accepts for its authorities.
type KeyType string

const (
	ECP256  KeyType = "ec-p256"
	ECP384  KeyType = "ec-p384"
	RSA2048 KeyType = "rsa-2048"
	RSA3072 KeyType = "rsa-3072"
	// Ed25519 signs audit checkpoints (as tlog notes do). It is not an
	// authority key type, so KeyTypes and ParseKeyType leave it out.
	Ed25519 KeyType = "ed25519"
)

// KeyTypes lists every accepted key type, default first.
var KeyTypes = []KeyType{ECP256, ECP384, RSA2048, RSA3072}

// ParseKeyType validates s as a key type.
func ParseKeyType(s string) (KeyType, error) {
	for _, kt := range KeyTypes {
		if string(kt) == s {
			return kt, nil
		}
	}
	return "", fmt.Errorf("key type %q is not supported: use one of ec-p256 (default), ec-p384, rsa-2048, rsa-3072", s)
}

// KeyStore creates and holds named private keys.
type KeyStore interface {
	// Generate makes a new key of type kt under name, replacing any key
	// already there, and returns a signer for it.
	Generate(ctx context.Context, name string, kt KeyType) (crypto.Signer, error)
	// Get returns a signer for the key under name, or ErrNotFound.
	Get(ctx context.Context, name string) (crypto.Signer, error)
	// Delete removes the key under name; deleting a missing key is not an error.
	Delete(ctx context.Context, name string) error
}
