package audit

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

func testKey(t testing.TB, name string, seed byte) (BundleKey, ed25519.PrivateKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(append(make([]byte, 31), seed))
	vk, err := VerifierKey(name, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return BundleKey{ServerID: "s" + string('0'+seed), VerifierKey: vk}, priv
}

func TestKeyBundleRoundTrip(t *testing.T) {
	a, _ := testKey(t, "example.org/writ/server/a/audit-1", 1)
	b, _ := testKey(t, "example.org/writ/server/b/audit-2", 2)
	var kb KeyBundle
	for _, k := range []BundleKey{a, b, a} {
		if err := kb.Add(k); err != nil {
			t.Fatal(err)
		}
	}
	if len(kb.Keys) != 2 {
		t.Fatalf("bundle holds %d keys after adding one twice, want 2", len(kb.Keys))
	}
	data, err := kb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseKeys(data, "bundle.json")
	if err != nil {
		t.Fatalf("ParseKeys of %s: %v", data, err)
	}
	if len(got.Keys) != 2 || got.Keys[0] != a || got.Keys[1] != b {
		t.Fatalf("round trip gave %+v", got.Keys)
	}
	if _, err := got.Verifiers(); err != nil {
		t.Fatal(err)
	}
	bare, err := ParseKeys([]byte("# server a\n"+a.VerifierKey+"\n\n"), "a.vkey")
	if err != nil || len(bare.Keys) != 1 || bare.Keys[0].VerifierKey != a.VerifierKey {
		t.Fatalf("bare verifier key file: %+v, %v", bare, err)
	}
}

func TestParseKeysRefuses(t *testing.T) {
	a, _ := testKey(t, "example.org/writ/server/a/audit-1", 1)
	other, _ := testKey(t, "example.org/writ/server/a/audit-1", 3)
	for name, in := range map[string]string{
		"empty":           "",
		"no keys":         `{"writ_audit_keys":1,"keys":[]}`,
		"no version":      `{"keys":[{"verifier_key":"` + a.VerifierKey + `"}]}`,
		"wrong version":   `{"writ_audit_keys":2,"keys":[{"verifier_key":"` + a.VerifierKey + `"}]}`,
		"unknown field":   `{"writ_audit_keys":1,"keys":[],"extra":1}`,
		"trailing data":   `{"writ_audit_keys":1,"keys":[{"verifier_key":"` + a.VerifierKey + `"}]} {}`,
		"bad key":         "not-a-key\n",
		"bad hash":        strings.Replace(a.VerifierKey, "+", "+0", 1),
		"same name twice": a.VerifierKey + "\n" + other.VerifierKey + "\n",
		"not utf-8":       "\xff",
	} {
		if kb, err := ParseKeys([]byte(in), "f"); err == nil {
			t.Errorf("%s: ParseKeys accepted %q as %+v", name, in, kb)
		} else if len(err.Error()) > 400 {
			t.Errorf("%s: error is %d bytes long", name, len(err.Error()))
		}
	}
}

func FuzzParseKeys(f *testing.F) {
	a, _ := testKey(f, "example.org/writ/server/a/audit-1", 1)
	var kb KeyBundle
	_ = kb.Add(a)
	data, _ := kb.Marshal()
	f.Add(data)
	f.Add([]byte(a.VerifierKey + "\n"))
	f.Add([]byte(`{"writ_audit_keys":1,"keys":[{"server_id":"x","verifier_key":"a+00000000+AQ=="}]}`))
	f.Add([]byte("# c\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		kb, err := ParseKeys(in, "fuzz")
		if err != nil {
			if len(err.Error()) > 600 {
				t.Fatalf("error of %d bytes echoes too much input", len(err.Error()))
			}
			return
		}
		if len(kb.Keys) == 0 {
			t.Fatal("accepted a bundle without keys")
		}
		if _, err := kb.Verifiers(); err != nil {
			t.Fatalf("accepted keys that make no verifiers: %v", err)
		}
		out, err := kb.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseKeys(out, "again")
		if err != nil || len(again.Keys) != len(kb.Keys) {
			t.Fatalf("re-encoded bundle does not parse back: %v", err)
		}
	})
}
