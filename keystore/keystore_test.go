package keystore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// backends runs each behaviour every KeyStore must have against both
// implementations.
func backends(t *testing.T) map[string]func(t *testing.T) KeyStore {
	t.Helper()
	return map[string]func(t *testing.T) KeyStore{
		"memory": func(t *testing.T) KeyStore { return NewMemory() },
		"disk": func(t *testing.T) KeyStore {
			d, err := NewDisk(filepath.Join(t.TempDir(), "keys"))
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	}
}

func checkKeyType(t *testing.T, key crypto.Signer, kt KeyType) {
	t.Helper()
	switch kt {
	case ECP256, ECP384:
		pub, ok := key.Public().(*ecdsa.PublicKey)
		if !ok {
			t.Fatalf("%s: public key is %T", kt, key.Public())
		}
		want := elliptic.P256()
		if kt == ECP384 {
			want = elliptic.P384()
		}
		if pub.Curve != want {
			t.Fatalf("%s: curve %s", kt, pub.Curve.Params().Name)
		}
	case RSA2048, RSA3072:
		pub, ok := key.Public().(*rsa.PublicKey)
		if !ok {
			t.Fatalf("%s: public key is %T", kt, key.Public())
		}
		want := 2048
		if kt == RSA3072 {
			want = 3072
		}
		if pub.N.BitLen() != want {
			t.Fatalf("%s: %d bits", kt, pub.N.BitLen())
		}
	default:
		t.Fatalf("unknown key type %s", kt)
	}
}

func checkSigns(t *testing.T, key crypto.Signer) {
	t.Helper()
	digest := sha256.Sum256([]byte("writ"))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatal("ecdsa signature does not verify")
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			t.Fatal(err)
		}
	}
}

type publicKeyEqualer interface{ Equal(crypto.PublicKey) bool }

func samePublic(a, b crypto.Signer) bool {
	return a.Public().(publicKeyEqualer).Equal(b.Public())
}

func TestKeyStore(t *testing.T) {
	ctx := context.Background()
	for backend, open := range backends(t) {
		t.Run(backend, func(t *testing.T) {
			t.Run("generate and get every type", func(t *testing.T) {
				ks := open(t)
				for _, kt := range KeyTypes {
					name := "k-" + string(kt)
					key, err := ks.Generate(ctx, name, kt)
					if err != nil {
						t.Fatalf("Generate %s: %v", kt, err)
					}
					checkKeyType(t, key, kt)
					got, err := ks.Get(ctx, name)
					if err != nil {
						t.Fatalf("Get %s: %v", kt, err)
					}
					if !samePublic(key, got) {
						t.Fatalf("%s: Get returned another key", kt)
					}
					checkSigns(t, got)
				}
			})
			t.Run("generate replaces", func(t *testing.T) {
				ks := open(t)
				first, err := ks.Generate(ctx, "ca", ECP256)
				if err != nil {
					t.Fatal(err)
				}
				second, err := ks.Generate(ctx, "ca", ECP384)
				if err != nil {
					t.Fatal(err)
				}
				got, err := ks.Get(ctx, "ca")
				if err != nil {
					t.Fatal(err)
				}
				if samePublic(first, got) || !samePublic(second, got) {
					t.Fatal("Get does not return the replacing key")
				}
				checkKeyType(t, got, ECP384)
			})
			t.Run("get missing", func(t *testing.T) {
				ks := open(t)
				_, err := ks.Get(ctx, "nothing-here")
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("got %v, want ErrNotFound", err)
				}
			})
			t.Run("delete", func(t *testing.T) {
				ks := open(t)
				if err := ks.Delete(ctx, "never-made"); err != nil {
					t.Fatalf("deleting a missing key: %v", err)
				}
				if _, err := ks.Generate(ctx, "gone", ECP256); err != nil {
					t.Fatal(err)
				}
				if err := ks.Delete(ctx, "gone"); err != nil {
					t.Fatal(err)
				}
				if _, err := ks.Get(ctx, "gone"); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
				}
				if err := ks.Delete(ctx, "gone"); err != nil {
					t.Fatalf("second Delete: %v", err)
				}
			})
			t.Run("names refused", func(t *testing.T) {
				ks := open(t)
				bad := []string{"", ".hidden", ".", "..", "Upper", "a/b", "../x", "a b", "a\x00b", "ключ", strings.Repeat("a", 65)}
				for _, name := range bad {
					if _, err := ks.Generate(ctx, name, ECP256); err == nil {
						t.Errorf("Generate(%q) accepted", name)
					} else if !strings.HasPrefix(err.Error(), "keystore: key name") {
						t.Errorf("Generate(%q): unclear error %v", name, err)
					}
					if _, err := ks.Get(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
						t.Errorf("Get(%q): %v, want a name error", name, err)
					}
					if err := ks.Delete(ctx, name); err == nil {
						t.Errorf("Delete(%q) accepted", name)
					}
				}
				good := []string{"a", "x509-ca-1700000000000000000", "a.b_c-d", "_x", "-x", strings.Repeat("z", 64)}
				for _, name := range good {
					if _, err := ks.Generate(ctx, name, ECP256); err != nil {
						t.Errorf("Generate(%q): %v", name, err)
					}
				}
			})
			t.Run("unsupported type", func(t *testing.T) {
				ks := open(t)
				_, err := ks.Generate(ctx, "k", KeyType("rsa-1024"))
				if err == nil || !strings.Contains(err.Error(), "ec-p256") {
					t.Fatalf("got %v, want an error listing the supported types", err)
				}
				if _, err := ks.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
					t.Fatalf("a refused Generate left a key: %v", err)
				}
			})
			t.Run("cancelled context", func(t *testing.T) {
				ks := open(t)
				cctx, cancel := context.WithCancel(ctx)
				cancel()
				if _, err := ks.Generate(cctx, "k", ECP256); !errors.Is(err, context.Canceled) {
					t.Fatalf("Generate: %v", err)
				}
				if _, err := ks.Get(cctx, "k"); !errors.Is(err, context.Canceled) {
					t.Fatalf("Get: %v", err)
				}
				if err := ks.Delete(cctx, "k"); !errors.Is(err, context.Canceled) {
					t.Fatalf("Delete: %v", err)
				}
			})
			t.Run("concurrent use", func(t *testing.T) {
				ks := open(t)
				var wg sync.WaitGroup
				for i := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						name := fmt.Sprintf("k%d", i%3)
						if _, err := ks.Generate(ctx, name, ECP256); err != nil {
							t.Error(err)
							return
						}
						if _, err := ks.Get(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
							t.Error(err)
						}
						if i%4 == 0 {
							if err := ks.Delete(ctx, name); err != nil {
								t.Error(err)
							}
						}
					}()
				}
				wg.Wait()
			})
		})
	}
}

func TestDiskFileModes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "nested", "keys")
	d, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o700 {
		t.Fatalf("directory mode %04o, want 0700", perm)
	}
	for _, kt := range KeyTypes {
		if _, err := d.Generate(ctx, "k-"+string(kt), kt); err != nil {
			t.Fatal(err)
		}
	}
	// Replacing must keep the mode too.
	if _, err := d.Generate(ctx, "k-ec-p256", ECP256); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(KeyTypes) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want one file per key and no temporary files", names)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", e.Name(), perm)
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----\n") {
			t.Errorf("%s is not PKCS#8 PEM", e.Name())
		}
	}
}

func TestDiskReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	made := map[KeyType]crypto.Signer{}
	for _, kt := range KeyTypes {
		key, err := d.Generate(ctx, "k-"+string(kt), kt)
		if err != nil {
			t.Fatal(err)
		}
		made[kt] = key
	}
	if err := d.Delete(ctx, "k-rsa-3072"); err != nil {
		t.Fatal(err)
	}

	reopened, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, kt := range KeyTypes {
		got, err := reopened.Get(ctx, "k-"+string(kt))
		if kt == RSA3072 {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("deleted key after reopen: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s after reopen: %v", kt, err)
		}
		if !samePublic(made[kt], got) {
			t.Fatalf("%s: reopened store returned another key", kt)
		}
		checkKeyType(t, got, kt)
		checkSigns(t, got)
		again, err := reopened.Get(ctx, "k-"+string(kt))
		if err != nil || again != got {
			t.Fatalf("%s: second Get not served from the cache (%v)", kt, err)
		}
	}
}

func TestDiskRefusesOpenDirectory(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o770, 0o702} {
		dir := filepath.Join(t.TempDir(), "keys")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		_, err := NewDisk(dir)
		if err == nil || !strings.Contains(err.Error(), "writable by group or others") {
			t.Fatalf("mode %04o: got %v, want a refusal", mode, err)
		}
	}
	// Readable by others is allowed: the key files themselves are 0600.
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDisk(dir); err != nil {
		t.Fatalf("0755 directory: %v", err)
	}
}

func TestDiskRefusesFileAsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDisk(path); err == nil {
		t.Fatal("a regular file was accepted as the keystore directory")
	}
	if _, err := NewDisk(""); err == nil {
		t.Fatal("an empty directory name was accepted")
	}
}

func TestDiskRefusesBadKeyFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Generate(ctx, "exposed", ECP256); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "exposed.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "exposed.pem"), filepath.Join(dir, "link.pem")); err != nil {
		t.Fatal(err)
	}

	reopened, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"exposed": "accessible by group or others",
		"garbage": "PKCS#8",
		"link":    "not a regular file",
	}
	for name, want := range cases {
		_, err := reopened.Get(ctx, name)
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), want) {
			t.Errorf("Get(%q): %v, want an error containing %q", name, err, want)
		}
	}
}

// TestEd25519 covers the audit checkpoint key: made, kept (on disk as a
// 0600 PKCS#8 file) and used through crypto.Signer like the others.
func TestEd25519(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, ks := range map[string]KeyStore{"memory": NewMemory(), "disk": d} {
		key, err := ks.Generate(ctx, "audit", Ed25519)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pub, ok := key.Public().(ed25519.PublicKey)
		if !ok {
			t.Fatalf("%s: public key is %T", name, key.Public())
		}
		msg := []byte("checkpoint")
		sig, err := key.Sign(rand.Reader, msg, crypto.Hash(0))
		if err != nil || !ed25519.Verify(pub, msg, sig) {
			t.Fatalf("%s: signature does not verify (%v)", name, err)
		}
	}
	reopened, err := NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := reopened.Get(ctx, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Public().(ed25519.PublicKey); !ok {
		t.Fatalf("reopened key is %T", got.Public())
	}
	if _, err := ParseKeyType(string(Ed25519)); err == nil {
		t.Fatal("ed25519 is accepted as an authority key type")
	}
}
