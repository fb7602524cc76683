package keystore

import (
	"context"
	"crypto"
	"fmt"
	"sync"
)

// Memory keeps keys in process memory only; they are gone when the process
// ends. For tests and writ dev.
type Memory struct {
	mu   sync.RWMutex
	keys map[string]crypto.Signer
}

var _ KeyStore = (*Memory)(nil)

// NewMemory returns an empty in-memory keystore.
func NewMemory() *Memory {
	return &Memory{keys: make(map[string]crypto.Signer)}
}

// Generate makes a key of type kt under name, replacing any key there.
func (m *Memory) Generate(ctx context.Context, name string, kt KeyType) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	key, err := generateKey(kt)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.keys[name] = key
	m.mu.Unlock()
	return key, nil
}

// Get returns the key under name, or ErrNotFound.
func (m *Memory) Get(ctx context.Context, name string) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	m.mu.RLock()
	key, ok := m.keys[name]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return key, nil
}

// Delete removes the key under name; a missing key is not an error.
func (m *Memory) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.keys, name)
	m.mu.Unlock()
	return nil
}
