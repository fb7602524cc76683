package oidc

import (
	"context"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func FuzzVerify(f *testing.F) {
	key := newECKey(f, "fuzz-1")
	const issuer = "https://issuer.example"
	file := writeFile(f, "jwks.json", jwksJSON(f, key))
	cfg := IssuerConfig{
		Name: "ci", Profile: ProfileGeneric, Issuer: issuer, JWKSFile: file,
		Facts: []string{"sub", "run.id"}, Allow: []Rule{{"sub": "*"}},
		NodeID: "/node/{{sub...}}/{{run.id}}",
	}
	v, err := NewVerifier(context.Background(), cfg, testTD, WithClock(func() time.Time { return testNow }))
	if err != nil {
		f.Fatal(err)
	}
	claims := map[string]any{
		"iss": issuer, "aud": "example.org", "sub": "a/b", "jti": "j",
		"iat": testNow.Unix(), "exp": testNow.Add(time.Minute).Unix(),
		"run": map[string]any{"id": 7},
	}
	f.Add(key.sign(f, claims))
	claims["sub"] = "a/../b"
	f.Add(key.sign(f, claims))
	f.Add("e30.e30.")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		r, err := v.Verify(context.Background(), token)
		if err != nil {
			if strings.Contains(err.Error(), token) && len(token) > 40 {
				t.Fatalf("the error echoes the token: %v", err)
			}
			return
		}
		jws, err := jose.ParseSignedCompact(strings.TrimSpace(token), algorithms)
		if err != nil {
			t.Fatalf("accepted a token that does not parse: %v", err)
		}
		if _, err := jws.Verify(key.priv.Public()); err != nil {
			t.Fatalf("accepted a token not signed by the key: %v", err)
		}
		if !r.AgentID.MemberOf(testTD) {
			t.Fatalf("agent ID %s is outside the trust domain", r.AgentID)
		}
	})
}

func FuzzRenderNodeID(f *testing.F) {
	templates := []string{
		"/node/{{a...}}/{{b}}",
		"/node/x-{{a}}.{{b}}",
		"/{{a}}{{b}}",
		"/{{b...}}",
	}
	parsed := make([]nodeTemplate, len(templates))
	for i, s := range templates {
		t, err := parseTemplate(s, []string{"a", "b"})
		if err != nil {
			f.Fatal(err)
		}
		parsed[i] = t
	}
	f.Add(uint8(0), "org/repo", "123")
	f.Add(uint8(1), ".", ".")
	f.Add(uint8(2), "", ".")
	f.Add(uint8(3), "a//b", "x/..")
	f.Add(uint8(0), "a/b%2F", "é")
	f.Fuzz(func(t *testing.T, which uint8, a, b string) {
		tmpl := parsed[int(which)%len(parsed)]
		id, err := tmpl.render(map[string]string{"a": a, "b": b}, testTD)
		if err != nil {
			return
		}
		parsedID, err := spiffeid.FromString(id.String())
		if err != nil || !parsedID.MemberOf(testTD) {
			t.Fatalf("rendered %q, which is not a SPIFFE ID in %s: %v", id, testTD, err)
		}
		for _, seg := range strings.Split(strings.TrimPrefix(id.Path(), "/"), "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("rendered %q with segment %q", id, seg)
			}
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	f.Add(jwksJSON(f, newECKey(f, "a"), newRSAKey(f, "b")))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"XYZ"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parseJWKS(data)
		if err != nil {
			return
		}
		if len(keys) == 0 {
			t.Fatal("no error and no key")
		}
		for _, k := range keys {
			if !k.IsPublic() || !k.Valid() || (k.Use != "" && k.Use != "sig") {
				t.Fatalf("kept a key that cannot verify signatures: %+v", k)
			}
		}
	})
}
