package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/x509pop"
	"writ.dev/writ/internal/pemfile"
)

// joinMethodX509PoP is the server's name for the certificate join.
const joinMethodX509PoP = "x509pop"

// joinByAttestation joins without a secret: with a token an issuer the
// server trusts signed for this node, or by proving possession of a
// certificate's key. Either way the server is verified against BundleFile
// first: these joins carry no pins.
func (a *Agent) joinByAttestation(ctx context.Context) error {
	if a.cfg.BundleFile == "" {
		return fmt.Errorf("agent: joining by %s needs the trust bundle to verify the server with: pass --bundle FILE (from 'writ bundle show' on the server)", a.cfg.JoinMethod)
	}
	roots, err := pemfile.ReadCertificates(a.cfg.BundleFile)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	td, err := a.trustDomainOf(roots)
	if err != nil {
		return err
	}
	var serverID spiffeid.ID
	conn, err := grpc.NewClient(a.cfg.ServerAddress, grpc.WithTransportCredentials(credentials.NewTLS(pinnedTLS(roots, &serverID))))
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer conn.Close()
	keyName := fmt.Sprintf("agent-%d", a.cfg.Clock.Now().UnixNano())
	key, csr, err := a.newKey(ctx, keyName)
	if err != nil {
		return err
	}
	resp, err := retryJoin(ctx, a, "join", func(ctx context.Context) (*writv1.AgentSVID, error) {
		if a.cfg.JoinMethod == joinMethodX509PoP {
			return a.joinX509PoP(ctx, conn, csr)
		}
		return a.joinJWT(ctx, conn, td, csr)
	})
	if err != nil {
		_ = a.keys.Delete(context.WithoutCancel(ctx), keyName)
		return fmt.Errorf("agent: join by %s: %w", a.cfg.JoinMethod, err)
	}
	st, id, err := stateFromSVID(resp, keyName)
	if err != nil {
		return err
	}
	if err := writeState(a.cfg.DataDir, st, id.String()); err != nil {
		return fmt.Errorf("agent: saving its identity: %w", err)
	}
	a.setIdentity(id, st, key)
	a.log.Info("agent joined", "agent_id", id.String(), "method", a.cfg.JoinMethod, "server", serverID.String(), "expires", st.chain[0].NotAfter)
	return nil
}

// trustDomainOf names the trust domain: from the configuration, or from
// the SPIFFE ID writ's own authorities carry.
func (a *Agent) trustDomainOf(roots []*x509.Certificate) (spiffeid.TrustDomain, error) {
	if a.cfg.TrustDomain != "" {
		return spiffeid.TrustDomainFromString(a.cfg.TrustDomain)
	}
	for _, r := range roots {
		for _, u := range r.URIs {
			if id, err := spiffeid.FromURI(u); err == nil {
				return id.TrustDomain(), nil
			}
		}
	}
	return spiffeid.TrustDomain{}, errors.New("agent: the bundle's authorities do not name the trust domain: pass --trust-domain")
}

func (a *Agent) joinJWT(ctx context.Context, conn *grpc.ClientConn, td spiffeid.TrustDomain, csr []byte) (*writv1.AgentSVID, error) {
	if a.cfg.JoinJWT == nil {
		return nil, errors.New("no token for this join method: pass --jwt-file or set WRIT_JOIN_JWT")
	}
	jwt, err := a.cfg.JoinJWT(ctx, td.Name())
	if err != nil {
		return nil, err
	}
	return writv1.NewAgentServiceClient(conn).Join(ctx, &writv1.JoinRequest{Method: a.cfg.JoinMethod, Jwt: jwt, Csr: csr})
}

// joinX509PoP sends the certificate and CSR, signs the server's nonce with
// the certificate's key and receives the SVID, on one stream.
func (a *Agent) joinX509PoP(ctx context.Context, conn *grpc.ClientConn, csr []byte) (*writv1.AgentSVID, error) {
	chain, key, err := readCertAndKey(a.cfg.X509PoPCertFile, a.cfg.X509PoPKeyFile)
	if err != nil {
		return nil, err
	}
	stream, err := writv1.NewAgentServiceClient(conn).JoinWithCertificate(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&writv1.CertificateJoinRequest{Chain: chain, Csr: csr}); err != nil {
		return nil, err
	}
	ch, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	sig, err := x509pop.Sign(x509pop.Challenge{Nonce: ch.GetNonce()}, key)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&writv1.CertificateJoinRequest{Signature: sig}); err != nil {
		return nil, err
	}
	res, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if res.GetSvid() == nil {
		return nil, errors.New("the server sent no SVID")
	}
	return res.GetSvid(), nil
}

// readCertAndKey reads the node's certificate chain and private key.
func readCertAndKey(certFile, keyFile string) ([][]byte, crypto.Signer, error) {
	if certFile == "" || keyFile == "" {
		return nil, nil, errors.New("x509pop needs --x509pop-cert and --x509pop-key")
	}
	certs, err := pemfile.ReadCertificates(certFile)
	if err != nil {
		return nil, nil, err
	}
	var chain [][]byte
	for _, c := range certs {
		chain = append(chain, c.Raw)
	}
	key, err := pemfile.ReadPrivateKey(keyFile)
	if err != nil {
		return nil, nil, err
	}
	return chain, key, nil
}

// maxJoinAttempts bounds the tries of a join call the server keeps
// turning away for now: with the backoff, a few minutes at most before the
// agent gives up and says why, rather than hanging a node's boot for good.
const maxJoinAttempts = 10

// retryJoin calls join until it succeeds or fails for good. A server
// that answers ResourceExhausted (its slots for callers without a
// certificate are full, or this source is over its rate limit) or
// Unavailable (busy, restarting, its issuer's keys out of reach) has not
// looked at the call, or refused it in a way that spends nothing, so the
// same call is tried again after a capped, jittered backoff: many agents
// starting at once then spread out instead of retrying in step.
func retryJoin[T any](ctx context.Context, a *Agent, what string, join func(context.Context) (T, error)) (T, error) {
	var b backoff
	for attempt := 1; ; attempt++ {
		resp, err := join(ctx)
		code := status.Code(err)
		if err == nil || code != codes.ResourceExhausted && code != codes.Unavailable || attempt == maxJoinAttempts {
			return resp, err
		}
		d := b.next()
		a.log.Warn("the server turned the "+what+" away for now; retrying", "attempt", attempt, "of", maxJoinAttempts,
			"code", code.String(), "reason", status.Convert(err).Message(), "retry_in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("stopped before retrying (%w); the server last answered: %w", ctx.Err(), err)
		case <-a.cfg.Clock.After(d):
		}
	}
}
