package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// A key bundle is the set of server audit public keys a verifier trusts.
// Checkpoints are only as trustworthy as the keys they are checked with, and
// the keys a server publishes in its store can be replaced by anyone who
// can write the database; so the bundle is exported once from each server
// ('writ audit keys') and kept where the servers cannot write. Its form:
//
//	{
//	  "writ_audit_keys": 1,
//	  "keys": [
//	    {"server_id": "…", "verifier_key": "NAME+HASH+BASE64"}
//	  ]
//	}
//
// verifier_key is a note verifier key (golang.org/x/mod/sumdb/note) of an
// Ed25519 key: the key's name, its 8-hex-digit key hash and the base64 of
// 0x01 followed by the 32-byte public key. A file of bare verifier keys,
// one a line, is accepted too.

// MaxKeyBundleSize bounds a key bundle file: thousands of keys.
const MaxKeyBundleSize = 1 << 20

// keyBundleVersion is the value of "writ_audit_keys" this package writes
// and reads.
const keyBundleVersion = 1

// BundleKey is one trusted audit key.
type BundleKey struct {
	ServerID    string `json:"server_id,omitempty"`
	VerifierKey string `json:"verifier_key"`
}

// KeyBundle is a set of trusted audit keys, in the order they were added.
type KeyBundle struct {
	Keys []BundleKey
}

type wireBundle struct {
	Version *int        `json:"writ_audit_keys"`
	Keys    []BundleKey `json:"keys"`
}

// VerifierKey is the note verifier key of an Ed25519 audit key.
func VerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	if err := checkKeyName(name); err != nil {
		return "", err
	}
	vk, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return "", fmt.Errorf("audit: audit public key %q: %w", name, err)
	}
	return vk, nil
}

// Add puts a key in the bundle unless it is there already. A different key
// under a name the bundle already holds is refused: notes are matched to
// keys by name and hash, and two keys of one name mean one is not genuine.
func (b *KeyBundle) Add(k BundleKey) error {
	v, err := parseVerifierKey(k.VerifierKey)
	if err != nil {
		return err
	}
	if len(k.ServerID) > 256 || !utf8.ValidString(k.ServerID) || strings.ContainsFunc(k.ServerID, isControl) {
		return fmt.Errorf("audit: server id of key %q is not a short printable string", v.Name())
	}
	for _, have := range b.Keys {
		if have.VerifierKey == k.VerifierKey {
			return nil
		}
		if hv, err := parseVerifierKey(have.VerifierKey); err == nil && hv.Name() == v.Name() {
			return fmt.Errorf("audit: the bundle already holds a different key named %q; one of them is not genuine: find out which before trusting either", v.Name())
		}
	}
	b.Keys = append(b.Keys, k)
	return nil
}

// Verifiers returns the keys as note verifiers, for Verify and
// ParseCheckpoint.
func (b *KeyBundle) Verifiers() (note.Verifiers, error) {
	if b == nil || len(b.Keys) == 0 {
		return nil, errors.New("audit: the key bundle holds no keys")
	}
	vs := make([]note.Verifier, 0, len(b.Keys))
	for _, k := range b.Keys {
		v, err := parseVerifierKey(k.VerifierKey)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return note.VerifierList(vs...), nil
}

// Names lists the key names in the bundle.
func (b *KeyBundle) Names() []string {
	var out []string
	for _, k := range b.Keys {
		if i := strings.IndexByte(k.VerifierKey, '+'); i > 0 {
			out = append(out, k.VerifierKey[:i])
		}
	}
	return out
}

// Marshal encodes the bundle in its documented JSON form.
func (b *KeyBundle) Marshal() ([]byte, error) {
	v := keyBundleVersion
	keys := b.Keys
	if keys == nil {
		keys = []BundleKey{}
	}
	out, err := json.MarshalIndent(wireBundle{Version: &v, Keys: keys}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("audit: key bundle: %w", err)
	}
	return append(out, '\n'), nil
}

// ParseKeys reads a key bundle, or a file of bare verifier keys one a line
// (blank lines and lines starting with '#' are skipped). name is used in
// messages (a file name). Every key must be a well-formed Ed25519 note
// verifier key, and at least one must be given.
func ParseKeys(data []byte, name string) (*KeyBundle, error) {
	if name == "" {
		name = "key file"
	}
	if len(data) > MaxKeyBundleSize {
		return nil, fmt.Errorf("audit: %s is %d bytes, more than the %d a key bundle may be", name, len(data), MaxKeyBundleSize)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("audit: %s is not valid UTF-8 text; want a key bundle from 'writ audit keys'", name)
	}
	b := &KeyBundle{}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var w wireBundle
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil {
			return nil, fmt.Errorf("audit: %s is not a key bundle: %v", name, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("audit: %s has data after the key bundle", name)
		}
		if w.Version == nil || *w.Version != keyBundleVersion {
			return nil, fmt.Errorf("audit: %s: \"writ_audit_keys\" must be %d; the bundle was written by another version of writ, or is not one", name, keyBundleVersion)
		}
		for i, k := range w.Keys {
			if err := b.Add(k); err != nil {
				return nil, fmt.Errorf("audit: %s: key %d: %w", name, i+1, err)
			}
		}
	} else {
		for i, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := b.Add(BundleKey{VerifierKey: line}); err != nil {
				return nil, fmt.Errorf("audit: %s line %d: %w", name, i+1, err)
			}
		}
	}
	if len(b.Keys) == 0 {
		return nil, fmt.Errorf("audit: %s holds no audit keys", name)
	}
	return b, nil
}

// parseVerifierKey accepts only Ed25519 verifier keys with a valid writ key
// name.
func parseVerifierKey(vkey string) (note.Verifier, error) {
	if len(vkey) > 1024 {
		return nil, fmt.Errorf("audit: verifier key of %d bytes is too long to be one", len(vkey))
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("audit: %q is not a note verifier key (NAME+HASH+BASE64): %v", truncate(vkey, 80), err)
	}
	if err := checkKeyName(v.Name()); err != nil {
		return nil, err
	}
	// note.NewVerifier knows Ed25519 only, so what parsed is one.
	return v, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// truncate bounds text from outside for use in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
