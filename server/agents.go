package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/jointoken"
	"writ.dev/writ/audit"

	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

const (
	// JoinMethodToken is the join method of agents that joined with a token;
	// a join-method lock on it stops such joins.
	JoinMethodToken = "join_token"
	// DefaultJoinTokenTTL and MaxJoinTokenTTL bound how long a token waits
	// to be used: the one secret writ tolerates should not live long.
	DefaultJoinTokenTTL = 15 * time.Minute
	MaxJoinTokenTTL     = time.Hour
)

// AgentID is the SPIFFE ID of the agent that redeems the join token tokenID.
func AgentID(td spiffeid.TrustDomain, tokenID string) (spiffeid.ID, error) {
	return identity.AgentID(td, "join-token", tokenID)
}

// isMember reports whether id is of td. Which members are agents is the
// agents table's to say (authenticateAgent): agents that joined by
// attestation have IDs from templates, anywhere in the trust domain.
func isMember(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	return !id.IsZero() && id.MemberOf(td)
}

type tokenService struct {
	writv1.UnimplementedTokenServiceServer
	s *Server
}

// CreateJoinToken makes a one-time join token. Only its digest is stored;
// the token itself is in this response and nowhere else.
func (ts *tokenService) CreateJoinToken(ctx context.Context, req *writv1.CreateJoinTokenRequest) (*writv1.JoinToken, error) {
	s := ts.s
	ttl := DefaultJoinTokenTTL
	if req.GetTtl() != "" {
		d, err := identity.ParseTTL("ttl", req.GetTtl(), MaxJoinTokenTTL)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		ttl = d
	}
	tok, err := s.NewJoinToken(ctx, ttl)
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// NewJoinToken makes and stores a join token valid for ttl, pinned to the
// current trust bundle. `writ dev` calls it in process.
func (s *Server) NewJoinToken(ctx context.Context, ttl time.Duration) (*writv1.JoinToken, error) {
	tok, err := jointoken.New(s.x509.Bundle())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	agentID, err := AgentID(s.td, tok.ID)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	now := s.now()
	expires := now.Add(ttl).Truncate(time.Second)
	ev, err := s.event(ctx, audit.EventAgentTokenCreate, tok.ID, map[string]any{"agent_id": agentID.String(), "expires_at": expires.UTC()})
	if err != nil {
		return nil, err
	}
	err = s.store.CreateJoinToken(ctx, store.JoinToken{ID: tok.ID, SecretSHA256: tok.SecretDigest(), CreatedBy: actorOf(ctx, s), CreatedAt: now, ExpiresAt: expires}, ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	s.log.Info("join token created", "id", tok.ID, "agent_id", agentID.String(), "expires", expires.UTC().Format(time.RFC3339), "caller", callerString(ctx))
	return &writv1.JoinToken{Token: tok.String(), Id: tok.ID, AgentId: agentID.String(), ExpiresAt: expires.Unix()}, nil
}

// actorOf names the caller in ctx, or the server itself.
func actorOf(ctx context.Context, s *Server) string {
	if c, ok := CallerFrom(ctx); ok {
		return c.Actor()
	}
	return s.actor()
}

type agentService struct {
	writv1.UnimplementedAgentServiceServer
	s *Server
}

// Join redeems a join token. The agent's key was made on its node; only
// its CSR comes here. A used, expired or unknown token is refused before
// anything is signed, and the refusal is audited as the issuer audits
// those of unauthenticated callers (counted per source).
func (as *agentService) Join(ctx context.Context, req *writv1.JoinRequest) (*writv1.AgentSVID, error) {
	s := as.s
	if m := req.GetMethod(); m != "" && m != JoinMethodToken {
		return s.joinByJWT(ctx, req)
	}
	// The token is parsed in Attest, after the source's rate limit: a
	// malformed token must cost an attempt like a wrong secret does, or a
	// flood of them would be limited by nothing.
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindX509, Anonymous: true, JoinMethod: JoinMethodToken, CSR: req.GetCsr(),
		Event: audit.EventAgentJoin, RefusedEvent: audit.EventAgentJoinRefused, LogMsg: "agent joined",
		Attest: func(ctx context.Context, r *issueRequest) error {
			tok, err := jointoken.Parse(req.GetToken())
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			agentID, err := AgentID(s.td, tok.ID)
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			r.ID = agentID
			r.Details = map[string]any{"token_id": tok.ID, "join_method": JoinMethodToken}
			r.RefusalDetails = map[string]any{"token_id": tok.ID}
			// Checked before signing, so a spent token costs no signature;
			// redeeming decides between two calls racing with one token.
			r.Claim = func(ctx context.Context) error {
				return joinTokenRefusal(tok.ID, s.store.CheckJoinToken(ctx, tok.ID, tok.SecretDigest(), s.now()))
			}
			r.Commit = func(ctx context.Context, ev store.AuditEvent, leaf *x509.Certificate) error {
				_, err := s.store.RedeemJoinToken(ctx, tok.ID, tok.SecretDigest(), s.now(), store.Agent{
					SPIFFEID:     agentID.String(),
					JoinMethod:   JoinMethodToken,
					Selectors:    []store.Selector{{Type: JoinMethodToken, Value: tok.ID}},
					Serial:       serialHex(leaf),
					Generation:   1,
					CertNotAfter: leaf.NotAfter,
				}, ev)
				return joinTokenRefusal(tok.ID, err)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return s.agentSVID(out.ID, out.Chain), nil
}

// joinTokenRefusal says why a join token is refused, or is nil.
func joinTokenRefusal(id string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrTokenUsed):
		return status.Errorf(codes.PermissionDenied, "join token %s was already used: a token joins one agent once; make a new one with 'writ token create'", id)
	case errors.Is(err, store.ErrTokenExpired):
		return status.Errorf(codes.PermissionDenied, "join token %s expired: make a new one with 'writ token create'", id)
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.PermissionDenied, "join token %s is not known here or its secret is wrong", id)
	}
	return storeStatus(err)
}

// RenewAgent issues the calling agent its next certificate. The new one is
// pending until the agent first uses it, so a reply lost on the way leaves
// the agent working with its current certificate.
func (as *agentService) RenewAgent(ctx context.Context, req *writv1.RenewAgentRequest) (*writv1.AgentSVID, error) {
	s := as.s
	a, id, err := s.authenticateAgent(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindX509, ID: id, CSR: req.GetCsr(),
		Event:   audit.EventAgentRenew,
		Details: map[string]any{"generation": a.Generation + 1},
		Commit: func(ctx context.Context, ev store.AuditEvent, leaf *x509.Certificate) error {
			next := a
			next.PendingSerial = serialHex(leaf)
			next.Generation = a.Generation + 1
			next.LastSeen = s.now()
			if err := s.store.UpdateAgent(ctx, a, next, ev); err != nil {
				if errors.Is(err, store.ErrConflict) {
					return status.Error(codes.Aborted, "the agent's certificate state changed meanwhile (a concurrent renewal): retry")
				}
				return storeStatus(err)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return s.agentSVID(id, out.Chain), nil
}

// authenticateAgent checks that the caller is a known agent presenting its
// current certificate. Presenting the pending one makes it current.
// Presenting any other certificate of the agent means the agent's key and
// certificate exist twice: the agent is locked (only this instance, by its
// own SPIFFE ID), the call refused and the clone audited.
func (s *Server) authenticateAgent(ctx context.Context) (store.Agent, spiffeid.ID, error) {
	c, _ := CallerFrom(ctx)
	if !isMember(s.td, c.ID) {
		return store.Agent{}, spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "%s is not an agent of %s", c, s.td)
	}
	leaf := peerLeaf(ctx)
	if leaf == nil {
		return store.Agent{}, spiffeid.ID{}, status.Error(codes.Unauthenticated, "no client certificate")
	}
	if err := s.locks.checkIssue(c.ID); err != nil {
		return store.Agent{}, spiffeid.ID{}, err
	}
	a, err := s.store.GetAgent(ctx, c.ID.String())
	if errors.Is(err, store.ErrNotFound) {
		return store.Agent{}, spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "%s is not an agent known here: an agent that was removed must join again", c.ID)
	}
	if err != nil {
		return store.Agent{}, spiffeid.ID{}, storeStatus(err)
	}
	serial := serialHex(leaf)
	switch serial {
	case a.Serial:
		return a, c.ID, nil
	case a.PendingSerial:
		next := a
		next.Serial, next.PendingSerial, next.LastSeen = serial, "", s.now()
		ev, err := s.event(ctx, audit.EventAgentCertificateUse, c.ID.String(), map[string]any{"serial": serial, "generation": a.Generation})
		if err != nil {
			return store.Agent{}, spiffeid.ID{}, err
		}
		if err := s.store.UpdateAgent(ctx, a, next, ev); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return s.authenticateAgent(ctx) // another call promoted it first
			}
			return store.Agent{}, spiffeid.ID{}, storeStatus(err)
		}
		return next, c.ID, nil
	}
	return store.Agent{}, spiffeid.ID{}, s.cloneDetected(ctx, a, c.ID, serial)
}

// cloneDetected locks the agent whose superseded certificate was presented
// and refuses the call.
func (s *Server) cloneDetected(ctx context.Context, a store.Agent, id spiffeid.ID, serial string) error {
	reason := fmt.Sprintf("clone detected: certificate %s of agent %s was superseded (current %s), so a copy of the agent exists", serial, id, a.Serial)
	l := store.Lock{ID: store.NewID(), Target: store.LockTarget{Kind: store.LockAgent, Value: id.String()}, Reason: reason, CreatedBy: s.actor(), CreatedAt: s.now()}
	evLock, err := s.event(ctx, audit.EventLockCreate, l.ID, lockDetails(l))
	if err != nil {
		return err
	}
	evClone, err := s.event(ctx, audit.EventAgentClone, id.String(), map[string]any{"presented_serial": serial, "current_serial": a.Serial, "peer": peerAddr(ctx)})
	if err != nil {
		return err
	}
	if _, err := s.store.CreateLock(ctx, l, evClone, evLock); err != nil {
		s.log.Error("could not lock a cloned agent", "agent_id", id.String(), "err", err)
	} else {
		s.lockChanged(ctx, "lock created", l)
	}
	s.log.Error("agent clone detected; agent locked", "agent_id", id.String(), "presented_serial", serial, "current_serial", a.Serial, "peer", peerAddr(ctx))
	return status.Error(codes.PermissionDenied, reason+"; the agent is locked: investigate, delete the lock and re-join the real agent")
}

func (s *Server) agentSVID(id spiffeid.ID, chain []*x509.Certificate) *writv1.AgentSVID {
	out := &writv1.AgentSVID{SpiffeId: id.String(), ExpiresAt: chain[0].NotAfter.Unix()}
	for _, c := range chain {
		out.CertChain = append(out.CertChain, c.Raw)
	}
	for _, c := range s.x509.Bundle() {
		out.Bundle = append(out.Bundle, c.Raw)
	}
	return out
}

// MintWorkloadX509SVIDs signs an X.509-SVID for each rule named whose
// parent is the calling agent. A rule that is not the agent's, or whose
// identity is locked, gets an error in its slot; the others are issued.
// All issuance events go to the audit log together before any is returned.
func (as *agentService) MintWorkloadX509SVIDs(ctx context.Context, req *writv1.MintWorkloadX509SVIDsRequest) (*writv1.MintWorkloadX509SVIDsResponse, error) {
	s := as.s
	agent, agentID, err := s.authenticateAgent(ctx)
	if err != nil {
		return nil, err
	}
	parent := newParentOf(agent, agentID)
	csrs := req.GetCsrs()
	if len(csrs) > maxWorkloadBatch {
		return nil, status.Errorf(codes.InvalidArgument, "csrs: %d in one call, at most %d", len(csrs), maxWorkloadBatch)
	}
	ids := make([]string, len(csrs))
	for i, c := range csrs {
		ids[i] = c.GetEntryId()
	}
	entries, err := s.store.GetEntries(ctx, ids)
	if err != nil {
		return nil, storeStatus(err)
	}
	byID := make(map[string]store.Entry, len(entries))
	for _, e := range entries {
		byID[e.ID] = e
	}
	resp := &writv1.MintWorkloadX509SVIDsResponse{}
	var reqs []*issueRequest
	var slots []*writv1.WorkloadX509SVID
	for _, c := range csrs {
		out := &writv1.WorkloadX509SVID{EntryId: c.GetEntryId()}
		resp.Svids = append(resp.Svids, out)
		e, ok := byID[c.GetEntryId()]
		if !ok || !parent.rule(e) {
			out.Error = fmt.Sprintf("entry %q is not a rule of agent %s", c.GetEntryId(), agentID)
			continue
		}
		id, err := spiffeid.FromString(e.SPIFFEID)
		if err != nil {
			out.Error = err.Error()
			continue
		}
		out.SpiffeId = id.String()
		reqs = append(reqs, &issueRequest{
			Kind: kindX509, ID: id, CSR: c.GetCsr(), DNSNames: e.DNSNames, TTL: e.X509TTL,
			Details: map[string]any{"entry_id": e.ID}, RefusalDetails: map[string]any{"entry_id": e.ID},
		})
		slots = append(slots, out)
	}
	results, err := s.issuer.issueBatch(ctx, reqs)
	if err != nil {
		return nil, err
	}
	for i, res := range results {
		out := slots[i]
		if res.Err != nil {
			out.Error = status.Convert(res.Err).Message()
			continue
		}
		for _, cert := range res.SVID.Chain {
			out.CertChain = append(out.CertChain, cert.Raw)
		}
		out.ExpiresAt = res.SVID.Expiry.Unix()
	}
	return resp, nil
}

// maxWorkloadBatch bounds one MintWorkloadX509SVIDs call.
const maxWorkloadBatch = 1000

// MintWorkloadJWTSVID signs a JWT-SVID for a rule of the calling agent.
func (as *agentService) MintWorkloadJWTSVID(ctx context.Context, req *writv1.MintWorkloadJWTSVIDRequest) (*writv1.MintJWTSVIDResponse, error) {
	s := as.s
	agent, agentID, err := s.authenticateAgent(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := s.store.GetEntries(ctx, []string{req.GetEntryId()})
	if err != nil {
		return nil, storeStatus(err)
	}
	if len(entries) == 0 || !newParentOf(agent, agentID).rule(entries[0]) {
		return nil, status.Errorf(codes.PermissionDenied, "entry %q is not a rule of agent %s", req.GetEntryId(), agentID)
	}
	e := entries[0]
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "entry %s: %v", e.ID, err)
	}
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindJWT, ID: id, Audience: req.GetAudience(), TTL: e.JWTTTL,
		Details: map[string]any{"entry_id": e.ID}, RefusalDetails: map[string]any{"entry_id": e.ID},
	})
	if err != nil {
		return nil, err
	}
	return &writv1.MintJWTSVIDResponse{Token: out.Token, ExpiresAt: out.Expiry.Unix()}, nil
}

// serialHex is how certificate serials are recorded.
func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// peerLeaf is the client certificate of the current call, if any.
func peerLeaf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil
	}
	return ti.State.PeerCertificates[0]
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
