package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/audit"
	"writ.dev/writ/ca"
)

// signIn gives the person id the X.509-SVID sign-in would, recorded as
// sign-in records it. People's IDs cannot be minted through the API (the
// namespace is reserved), and a test has no identity provider to sign in
// against.
func signIn(t testing.TB, srv *Server, id string) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spiffeID := spiffeid.RequireFromString(id)
	chain, err := srv.x509.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: key.Public(), SPIFFEID: spiffeID, TTL: time.Hour}, srv.now())
	if err != nil {
		t.Fatal(err)
	}
	ev, err := srv.event(context.Background(), audit.EventPersonLogin, id, map[string]any{"serial": serialHex(chain[0])})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.record(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: spiffeID, Certificates: chain, PrivateKey: key}
}

// personJWT signs a JWT-SVID for the person id through the server's one
// JWT path (locks checked, event recorded), bypassing only the API's
// refusal of reserved IDs.
func personJWT(t testing.TB, srv *Server, id string, audience ...string) string {
	t.Helper()
	out, err := srv.issuer.issue(context.Background(), &issueRequest{
		Kind: kindJWT, ID: spiffeid.RequireFromString(id), Admin: true, Audience: audience,
		Event: audit.EventSVIDJWTMint, RefusedEvent: audit.EventSVIDJWTRefused,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Token
}
