package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/attest/node/x509pop"
	"writ.dev/writ/audit"
)

const githubIssuer = "https://token.actions.githubusercontent.com"

// anonymousConn reaches the remote listener without a client certificate,
// as a joining agent does, verifying the server against its bundle.
func anonymousConn(t *testing.T, srv *Server) writv1.AgentServiceClient {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	cc, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(srv.tlsID.ID())))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return writv1.NewAgentServiceClient(cc)
}

// githubToken signs a GitHub Actions-shaped token with key.
func githubToken(t *testing.T, key *ecdsa.PrivateKey, repo, runID, jti string, exp time.Time) string {
	t.Helper()
	claims := map[string]any{
		"iss": githubIssuer, "aud": testTD, "sub": "repo:" + repo + ":ref:refs/heads/main",
		"iat": time.Now().Add(-time.Minute).Unix(), "nbf": time.Now().Add(-time.Minute).Unix(), "exp": exp.Unix(), "jti": jti,
		"repository": repo, "repository_owner": strings.Split(repo, "/")[0], "repository_id": "42",
		"ref": "refs/heads/main", "ref_type": "branch", "sha": "abc123", "workflow": "deploy",
		"workflow_ref": repo + "/.github/workflows/deploy.yml@refs/heads/main", "job_workflow_ref": repo + "/.github/workflows/deploy.yml@refs/heads/main",
		"event_name": "push", "run_id": runID, "run_attempt": "1", "actor": "octocat", "runner_environment": "github-hosted",
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJoinByOIDC joins agents with GitHub Actions-shaped tokens: the
// agent's ID and selectors come from the claims, a token joins once, a
// repository the rules do not allow is refused, and refusals are audited.
func TestJoinByOIDC(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	jwksFile := filepath.Join(cfg.DataDir, "github-jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.NodeAttestation.OIDC = []oidc.IssuerConfig{{
		Name: "github", Profile: oidc.ProfileGitHub, JWKSFile: jwksFile,
		Allow: []oidc.Rule{{"repository": "acme/payments", "ref": "refs/heads/main"}},
	}}
	srv := startServer(t, cfg)
	api := anonymousConn(t, srv)
	ctx := t.Context()
	_, csr := newCSR(t)

	tok := githubToken(t, key, "acme/payments", "7001", "jti-1", time.Now().Add(5*time.Minute))
	svid, err := api.Join(ctx, &writv1.JoinRequest{Method: "github", Jwt: tok, Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://" + testTD + "/node/github/acme/payments/7001/1"; svid.GetSpiffeId() != want {
		t.Fatalf("agent ID %s, want %s", svid.GetSpiffeId(), want)
	}
	a, err := srv.store.GetAgent(ctx, svid.GetSpiffeId())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, sel := range a.Selectors {
		found = found || sel.Type+":"+sel.Value == "github:repository:acme/payments"
	}
	if !found {
		t.Fatalf("agent selectors %v", a.Selectors)
	}

	_, err = api.Join(ctx, &writv1.JoinRequest{Method: "github", Jwt: tok, Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "already used")
	other := githubToken(t, key, "acme/other", "7002", "jti-2", time.Now().Add(5*time.Minute))
	_, err = api.Join(ctx, &writv1.JoinRequest{Method: "github", Jwt: other, Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "")
	expired := githubToken(t, key, "acme/payments", "7003", "jti-3", time.Now().Add(-5*time.Minute))
	_, err = api.Join(ctx, &writv1.JoinRequest{Method: "github", Jwt: expired, Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "expired")
	_, err = api.Join(ctx, &writv1.JoinRequest{Method: "gitlab", Jwt: tok, Csr: csr})
	wantCode(t, err, codes.InvalidArgument, "not a join method")

	// The first refusal from this source is an event at once; all three
	// are counted in the source's summary.
	if err := srv.issuer.flushRefusals(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	refused := 0
	var sum refusalSummaryDetails
	for _, e := range readEvents(t, writv1.NewAuditServiceClient(adminConn(t, srv))) {
		switch e.Type {
		case audit.EventAgentJoinRefused:
			refused++
		case audit.EventRefusalSummary:
			if err := json.Unmarshal(e.Details, &sum); err != nil {
				t.Fatal(err)
			}
		}
	}
	if refused != 1 || sum.Count != 3 || sum.ByType[audit.EventAgentJoinRefused] != 3 || sum.Recorded != 1 {
		t.Fatalf("%d refusals audited on their own and a summary of %+v; want 1 and a summary of 3", refused, sum)
	}
	if !slices.ContainsFunc(sum.Reasons, func(r string) bool { return strings.Contains(r, "already used") }) {
		t.Fatalf("summary reasons %q do not say a token was replayed", sum.Reasons)
	}

	// A join-method lock stops joins by it.
	createLock(t, adminConn(t, srv), "join-method", "github", "INC-3", "")
	fresh := githubToken(t, key, "acme/payments", "7004", "jti-4", time.Now().Add(5*time.Minute))
	_, err = api.Join(ctx, &writv1.JoinRequest{Method: "github", Jwt: fresh, Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "locked")
}

// TestJoinByCertificate is the x509pop join: proving possession of a key
// whose certificate a trusted CA signed gives an agent SVID that does not
// outlive the certificate; a signature over another nonce is refused.
func TestJoinByCertificate(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(20 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, nodeKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	bundle := filepath.Join(cfg.DataDir, "node-ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.NodeAttestation.X509PoP = x509pop.Config{BundleFile: bundle}
	srv := startServer(t, cfg)
	api := anonymousConn(t, srv)
	_, csr := newCSR(t)

	join := func(sign func(nonce []byte) []byte) (*writv1.AgentSVID, error) {
		stream, err := api.JoinWithCertificate(t.Context())
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&writv1.CertificateJoinRequest{Chain: [][]byte{leafDER}, Csr: csr}); err != nil {
			return nil, err
		}
		ch, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&writv1.CertificateJoinRequest{Signature: sign(ch.GetNonce())}); err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		return resp.GetSvid(), nil
	}
	svid, err := join(func(nonce []byte) []byte {
		sig, err := x509pop.Sign(x509pop.Challenge{Nonce: nonce}, nodeKey)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(svid.GetSpiffeId(), "spiffe://"+testTD+"/node/x509pop/") {
		t.Fatalf("agent ID %s", svid.GetSpiffeId())
	}
	if got := time.Unix(svid.GetExpiresAt(), 0); got.After(leafTmpl.NotAfter) {
		t.Fatalf("agent SVID expires %s, after the node certificate (%s)", got, leafTmpl.NotAfter)
	}
	_, err = join(func([]byte) []byte {
		sig, _ := x509pop.Sign(x509pop.Challenge{Nonce: make([]byte, x509pop.NonceSize)}, nodeKey)
		return sig
	})
	wantCode(t, err, codes.PermissionDenied, "")
}

// TestJoinByKubernetesToken joins a pod with a projected service-account
// token verified against the cluster's keys; a token for another service
// account than the rules allow is refused and audited.
func TestJoinByKubernetesToken(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "cluster", Algorithm: "ES256", Use: "sig"}}})
	cfg := testConfig(t)
	jwksFile := filepath.Join(cfg.DataDir, "k8s-jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	const issuer = "https://kubernetes.default.svc.cluster.local"
	cfg.NodeAttestation.OIDC = []oidc.IssuerConfig{{
		Name: "k8s-prod", Profile: oidc.ProfileK8s, Issuer: issuer, JWKSFile: jwksFile,
		Allow: []oidc.Rule{{"namespace": "payments", "service_account": "writ-agent"}},
	}}
	srv := startServer(t, cfg)
	api := anonymousConn(t, srv)
	_, csr := newCSR(t)
	psat := func(ns, sa, pod string) string {
		now := time.Now()
		claims := map[string]any{
			"iss": issuer, "aud": []string{testTD}, "sub": "system:serviceaccount:" + ns + ":" + sa,
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": pod + "-jti",
			"kubernetes.io": map[string]any{
				"namespace":      ns,
				"serviceaccount": map[string]any{"name": sa, "uid": "sa-uid"},
				"pod":            map[string]any{"name": pod, "uid": "0a1b2c3d-0000-4000-8000-000000000001"},
				"node":           map[string]any{"name": "worker-1", "uid": "node-uid"},
			},
		}
		payload, _ := json.Marshal(claims)
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "cluster"}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		jws, _ := signer.Sign(payload)
		s, _ := jws.CompactSerialize()
		return s
	}
	svid, err := api.Join(t.Context(), &writv1.JoinRequest{Method: "k8s-prod", Jwt: psat("payments", "writ-agent", "agent-7x2k"), Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://" + testTD + "/node/k8s/payments/agent-7x2k"; svid.GetSpiffeId() != want {
		t.Fatalf("agent ID %s, want %s", svid.GetSpiffeId(), want)
	}
	_, err = api.Join(t.Context(), &writv1.JoinRequest{Method: "k8s-prod", Jwt: psat("payments", "default", "other-pod"), Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "")
	found := false
	for _, e := range readEvents(t, writv1.NewAuditServiceClient(adminConn(t, srv))) {
		found = found || e.Type == audit.EventAgentJoinRefused && strings.Contains(string(e.Details), "k8s-prod")
	}
	if !found {
		t.Fatal("the refused join left no audit event")
	}
}

// TestReservedIDsAreRefused: no rule and no minted SVID may carry an ID
// under /writ/, where servers and join-token agents are named, or a
// workload could pass for a server to every agent; nor one under /person/.
func TestReservedIDsAreRefused(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	_, err := writv1.NewEntryServiceClient(cc).CreateEntries(t.Context(), &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{
		entry("/writ/server/fake", "/node", "unix:uid:1")}})
	wantCode(t, err, codes.InvalidArgument, "reserved")
	_, csr := newCSR(t)
	_, err = writv1.NewSVIDServiceClient(cc).MintX509SVID(t.Context(), &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/writ/server/x", Csr: csr})
	wantCode(t, err, codes.InvalidArgument, "reserved")
	_, err = writv1.NewSVIDServiceClient(cc).MintJWTSVID(t.Context(), &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/writ", Audience: []string{"a"}})
	wantCode(t, err, codes.InvalidArgument, "reserved")
	// People's IDs come from sign-in only: a rule handing a service a
	// person's ID, or a mint of one, would let it act in their tasks.
	_, err = writv1.NewEntryServiceClient(cc).CreateEntries(t.Context(), &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{
		entry("/person/example.com/ceo", "/node", "unix:uid:1")}})
	wantCode(t, err, codes.InvalidArgument, "/person/, which is reserved")
	_, err = writv1.NewSVIDServiceClient(cc).MintX509SVID(t.Context(), &writv1.MintX509SVIDRequest{SpiffeId: ceo, Csr: csr})
	wantCode(t, err, codes.InvalidArgument, "/person/, which is reserved")
	_, err = writv1.NewSVIDServiceClient(cc).MintJWTSVID(t.Context(), &writv1.MintJWTSVIDRequest{SpiffeId: ceo, Audience: []string{"a"}})
	wantCode(t, err, codes.InvalidArgument, "/person/, which is reserved")
	// Merely similar paths are fine.
	if _, err := writv1.NewEntryServiceClient(cc).CreateEntries(t.Context(), &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{
		entry("/writer/app", "/node", "unix:uid:1")}}); err != nil {
		t.Fatal(err)
	}
}
