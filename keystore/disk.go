package keystore

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"writ.dev/writ/internal/atomicfile"
)

// Disk keeps one PKCS#8 PEM file per key in a directory only its owner can
// use. Keys are cached in memory after their first use, so a signer stays
// cheap however often it is asked for.
type Disk struct {
	dir string

	// mu serialises file changes with the cache, so the cache always holds
	// what the last completed Generate or Delete left on disk.
	mu    sync.Mutex
	cache map[string]crypto.Signer
}

var _ KeyStore = (*Disk)(nil)

const pemTypePKCS8 = "PRIVATE KEY"

// NewDisk opens the keystore in dir, creating the directory with mode 0700
// when it is missing. A directory that others may write to is refused:
// whoever can write there can replace a CA key.
func NewDisk(dir string) (*Disk, error) {
	if dir == "" {
		return nil, errors.New("keystore: directory is empty: name a directory for the key files")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keystore: cannot create directory: %w", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("keystore: %s is not a directory", dir)
	}
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("keystore: directory %s is writable by group or others (mode %04o): run chmod 700 %s, or use another directory", dir, perm, dir)
	}
	return &Disk{dir: dir, cache: make(map[string]crypto.Signer)}, nil
}

// Dir is the directory holding the key files.
func (d *Disk) Dir() string { return d.dir }

func (d *Disk) path(name string) string {
	return filepath.Join(d.dir, name+".pem")
}

// Generate makes a key of type kt and writes it under name, replacing any
// key there. The file is replaced atomically: a crash leaves either the old
// key or the new one, never a torn file.
func (d *Disk) Generate(ctx context.Context, name string, kt KeyType) (crypto.Signer, error) {
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
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keystore: encode key %q: %w", name, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS8, Bytes: der})

	d.mu.Lock()
	defer d.mu.Unlock()
	if err := atomicfile.Write(d.path(name), data, 0o600); err != nil {
		return nil, fmt.Errorf("keystore: write key %q: %w", name, err)
	}
	d.cache[name] = key
	return key, nil
}

// Get returns the key under name, loading it from disk on first use, or
// ErrNotFound.
func (d *Disk) Get(ctx context.Context, name string) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if key, ok := d.cache[name]; ok {
		return key, nil
	}
	key, err := d.load(name)
	if err != nil {
		return nil, err
	}
	d.cache[name] = key
	return key, nil
}

func (d *Disk) load(name string) (crypto.Signer, error) {
	path := d.path(name)
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("keystore: %s is not a regular file (mode %s): key files must be plain files", path, info.Mode())
	}
	// Like ssh, refuse a key others could have read: it may already be
	// compromised, and using it silently would hide that.
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("keystore: key file %s is accessible by group or others (mode %04o): run chmod 600 %s if it was never exposed, or replace the key", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemTypePKCS8 {
		return nil, fmt.Errorf("keystore: %s holds no %q PEM block (PKCS#8 expected)", path, pemTypePKCS8)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", path, err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("keystore: %s holds a %T, which cannot sign", path, parsed)
	}
	return key, nil
}

// Delete removes the key under name; a missing key is not an error.
func (d *Disk) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.cache, name)
	err := os.Remove(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("keystore: delete key %q: %w", name, err)
	}
	if err := atomicfile.SyncDir(d.dir); err != nil {
		return fmt.Errorf("keystore: delete key %q: %w", name, err)
	}
	return nil
}
