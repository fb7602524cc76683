package server

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/status"

	"writ.dev/writ/audit"
	"writ.dev/writ/delegation"
	"writ.dev/writ/identity"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
)

// TokenEndpointConfig serves RFC 8693 token exchange: an agent presents
// its JWT-SVID (actor token) and a person's token (subject token) and gets
// a short-lived delegation token bound to its certificate.
type TokenEndpointConfig struct {
	// Address serves POST /token over TLS with the server's SVID, requiring
	// the caller's X.509-SVID. Empty disables it.
	Address string `yaml:"address"`
	// Issuer is the "iss" of delegation tokens and the audience actor and
	// subject JWT-SVIDs must carry; the same on every server of the trust
	// domain. Default https://ADDRESS/token.
	Issuer string `yaml:"issuer"`
	// MaxTTL caps delegation tokens; default 5m.
	MaxTTL Duration `yaml:"max_ttl"`
}

// delegationKeyName is the keystore name of the server's delegation key.
const delegationKeyName = "delegation-p256"

// delegator issues and verifies delegation tokens.
type delegator struct {
	s      *Server
	signer *delegation.Signer
	keys   atomic.Pointer[map[string]crypto.PublicKey]
}

func (s *Server) loadDelegation(ctx context.Context) error {
	c := s.cfg.TokenEndpoint
	if c.Address == "" {
		// Only verifying: tokens other servers issued are checked with
		// their published keys.
		s.delegator = &delegator{s: s}
		return s.delegator.refreshKeys(ctx)
	}
	key, err := s.keys.Get(ctx, delegationKeyName)
	if errors.Is(err, keystore.ErrNotFound) {
		key, err = s.keys.Generate(ctx, delegationKeyName, keystore.ECP256)
	}
	if err != nil {
		return fmt.Errorf("delegation key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	kid := hex.EncodeToString(sum[:16])
	ev, err := s.event(ctx, audit.EventDelegationKeyPublish, kid, map[string]any{"server_id": s.serverID})
	if err != nil {
		return err
	}
	if err := s.store.PutDelegationKey(ctx, store.DelegationKey{KeyID: kid, ServerID: s.serverID, PublicKeyDER: der}, ev); err != nil {
		return fmt.Errorf("publish delegation key: %w", err)
	}
	signer, err := delegation.NewSigner(key, kid, c.Issuer, delegation.WithClock(s.now), delegation.WithMaxTTL(c.MaxTTL.Duration))
	if err != nil {
		return fmt.Errorf("token_endpoint: %w", err)
	}
	s.delegator = &delegator{s: s, signer: signer}
	return s.delegator.refreshKeys(ctx)
}

// refreshKeys reloads every server's delegation key from the store.
func (d *delegator) refreshKeys(ctx context.Context) error {
	keys, err := d.s.store.ListDelegationKeys(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]crypto.PublicKey, len(keys))
	for _, k := range keys {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKeyDER)
		if err != nil {
			d.s.log.Warn("skipping an unusable delegation key", "kid", k.KeyID, "err", err)
			continue
		}
		m[k.KeyID] = pub
	}
	d.keys.Store(&m)
	return nil
}

// verify checks a delegation token a requester presented with its
// certificate, for the resource server audience, and returns the chain it
// stands for: the requester, any further actors, then the person.
func (d *delegator) verify(token, audience string, requester *x509.Certificate, requesterID spiffeid.ID) ([]spiffeid.ID, error) {
	keys := d.keys.Load()
	if keys == nil || len(*keys) == 0 {
		return nil, errors.New("no delegation keys are known")
	}
	v, err := delegation.NewVerifier(*keys, d.s.cfg.TokenEndpoint.Issuer, delegation.WithClock(d.s.now), delegation.WithLeeway(d.s.cfg.MaxClockSkew.Duration))
	if err != nil {
		return nil, err
	}
	c, err := v.Verify(token, audience, requester)
	if err != nil {
		return nil, err
	}
	if len(c.Actors) == 0 || c.Actors[0] != requesterID.String() {
		return nil, fmt.Errorf("the token's nearest actor is not the requester %s", requesterID)
	}
	var chain []spiffeid.ID
	for _, raw := range append(append([]string{}, c.Actors...), c.Subject) {
		id, err := spiffeid.FromString(raw)
		if err != nil {
			return nil, err
		}
		chain = append(chain, id)
	}
	return chain, nil
}

// tokenHandler serves POST /token, and POST /v1/check for resource servers
// that speak HTTP rather than gRPC.
func (s *Server) tokenHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", limitBody(maxTokenForm, s.exchange))
	mux.HandleFunc("POST /v1/check", limitBody(maxCheckBody, s.checkHTTP))
	return mux
}

// maxTokenForm bounds a token-exchange form: two tokens of at most 16 KiB
// (delegation's own bounds) and a few targets. Without it ParseForm reads
// up to 10 MiB.
const maxTokenForm = 64 << 10

// tokenTLS requires the caller's X.509-SVID: the delegation token is bound
// to that certificate.
func (s *Server) tokenTLS() *tls.Config {
	return tlsconfig.MTLSServerConfig(s.tlsID, s.tlsID, tlsconfig.AuthorizeMemberOf(s.td))
}

// exchange is RFC 8693 token exchange for an agent acting for a person.
// The agent proves itself twice (its TLS certificate and its JWT-SVID as
// actor token, which must name the same ID); the person's token is a
// JWT-SVID or an ID token from the people issuer; the person must have
// allowed it: both must be members of a live task (named in scope as
// task:ID, or the only one they share). No token is issued while a lock
// names the agent, the person or the task.
//
// Every refusal is an audit event naming the authenticated caller (the TLS
// client's SPIFFE ID, when it gave one) and the source address, and its
// description repeats what the caller sent only escaped and cut short.
// Exchanges past limits.requests_per_identity are answered 429 and only
// counted into a summary.
func (s *Server) exchange(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var caller spiffeid.ID
	fail := func(code, desc string) {
		who := "unauthenticated"
		if !caller.IsZero() {
			who = caller.String()
		}
		s.log.Warn("token exchange refused", "reason", desc, "caller", who, "source", r.RemoteAddr)
		if ev, err := s.event(ctx, audit.EventDelegationRefused, who, map[string]any{"reason": desc, "caller": who, "source": r.RemoteAddr}); err == nil {
			_ = s.record(ctx, ev)
		}
		(&delegation.ExchangeError{Code: code, Description: desc}).WriteJSON(w)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		fail(delegation.CodeUnauthorizedClient, "present your X.509-SVID")
		return
	}
	cert := r.TLS.PeerCertificates[0]
	caller, err := x509svid.IDFromCert(cert)
	if err != nil {
		fail(delegation.CodeUnauthorizedClient, "the client certificate is not an X.509-SVID: "+outsideError(err))
		return
	}
	// Every exchange writes an event, refused or not: past the caller's
	// limit it writes none and is only counted.
	if err := s.requests.allow(Caller{ID: caller}, requestExchange); err != nil {
		s.requests.writeExchangeLimited(w, err)
		return
	}
	// Events name the agent as their actor, as gRPC calls name theirs.
	ctx = context.WithValue(ctx, callerKey{}, Caller{ID: caller})
	// The body is already capped by limitBody (maxTokenForm).
	if err := r.ParseForm(); err != nil {
		if limit, ok := bodyTooLarge(err); ok {
			writeFormTooLarge(w, limit)
			return
		}
		fail(delegation.CodeInvalidRequest, "the body is not a form")
		return
	}
	req, err := delegation.ParseExchangeRequest(r.PostForm)
	if err != nil {
		var ee *delegation.ExchangeError
		if errors.As(err, &ee) {
			fail(ee.Code, ee.Description)
			return
		}
		fail(delegation.CodeInvalidRequest, outsideError(err))
		return
	}
	issuer := s.cfg.TokenEndpoint.Issuer
	actorSVID, err := s.validateJWTSVID(req.ActorToken, issuer)
	if err != nil {
		fail(delegation.CodeInvalidRequest, "actor_token: "+err.Error())
		return
	}
	if actorSVID.ID != caller {
		fail(delegation.CodeInvalidRequest, fmt.Sprintf("actor_token names %s but the TLS client is %s", actorSVID.ID, caller))
		return
	}
	if req.SubjectTokenType == delegation.TokenTypeURI {
		s.redelegate(ctx, w, req, cert, caller, fail)
		return
	}
	person, spent, err := s.subjectOf(ctx, req, issuer)
	if err != nil {
		fail(delegation.CodeInvalidRequest, "subject_token: "+err.Error())
		return
	}
	if identity.KindOf(person) != identity.KindPerson {
		fail(delegation.CodeInvalidRequest, fmt.Sprintf("subject_token names %s, not a person", person))
		return
	}
	chain := []spiffeid.ID{caller, person}
	taskID, err := s.sharedTask(ctx, taskInScope(req.Scope), chain)
	if err != nil {
		fail(delegation.CodeInvalidTarget, err.Error())
		return
	}
	if err := s.locks.checkDelegation(chain, taskID); err != nil {
		fail(delegation.CodeInvalidGrant, status.Convert(err).Message())
		return
	}
	s.issueDelegation(ctx, w, req, cert, chain, taskID, spent, fail)
}

// issueDelegation signs and records the delegation token for chain (the
// new actor first, the person last) under task taskID.
func (s *Server) issueDelegation(ctx context.Context, w http.ResponseWriter, req delegation.ExchangeRequest, cert *x509.Certificate, chain []spiffeid.ID, taskID string, spent subjectToken, fail func(code, desc string)) {
	// Checked before signing so that a replay costs no signature; the
	// record written with the event below decides races between servers.
	if err := s.store.CheckSubjectToken(ctx, spent.Issuer, spent.ID, s.now()); err != nil {
		s.refuseSpent(w, err, fail)
		return
	}
	audience := append(append([]string{}, req.Audience...), req.Resource...)
	actors := make([]string, 0, len(chain)-1)
	for _, id := range chain[:len(chain)-1] {
		actors = append(actors, id.String())
	}
	person := chain[len(chain)-1].String()
	ttl := s.cfg.TokenEndpoint.MaxTTL.Duration
	tok, err := s.delegator.signer.Issue(delegation.Claims{
		Subject: person, Audience: audience, Actors: actors, TaskID: taskID,
		Thumbprint: delegation.Thumbprint(cert), Expiry: s.now().Add(ttl),
	})
	if err != nil {
		fail(delegation.CodeInvalidRequest, outsideError(err))
		return
	}
	details := map[string]any{"actor": actors[0], "task": taskID, "audience": audience}
	if len(actors) > 1 {
		details["actors"] = actors
	}
	ev, err := s.event(ctx, audit.EventDelegationIssue, person, details)
	if err != nil {
		http.Error(w, "the audit log could not record this exchange: retry later", http.StatusServiceUnavailable)
		return
	}
	// The subject token is spent with the event, in one transaction: an
	// exchange is either answered and remembered, or neither.
	if err := s.store.UseSubjectToken(ctx, spent.Issuer, spent.ID, spent.rememberUntil(s.cfg.MaxClockSkew.Duration), ev); err != nil {
		s.refuseSpent(w, err, fail)
		return
	}
	_ = delegation.WriteResponse(w, tok, ttl)
}

// subjectToken names a subject token for the record that lets it be
// exchanged once, on whichever server sharing the store is asked.
type subjectToken struct {
	// Issuer is who signed the token; ID is its jti, or, for a token
	// without one, a digest of what it signs (which, unlike its text,
	// cannot be varied without the issuer's key).
	Issuer, ID string
	// Expiry is the last moment the token is accepted.
	Expiry time.Time
}

// rememberUntil is how long the record is kept: past Expiry by the clock
// skew tolerated between servers, since the server pruning the record
// may be that far ahead of the one still accepting the token.
func (t subjectToken) rememberUntil(skew time.Duration) time.Time {
	return t.Expiry.Add(skew)
}

// maxTokenID bounds a jti kept as it is; a longer or unprintable one is
// kept as its digest instead, so a record stays small.
const maxTokenID = 256

// jwtTokenID returns a token's jti when it has a usable one, else the
// SHA-256 of its signing input (header and payload).
func jwtTokenID(token string, claims map[string]any) string {
	if jti, ok := claims["jti"].(string); ok && jti != "" && len(jti) <= maxTokenID && isPrintableASCII(jti) {
		return jti
	}
	return signedDigest(token)
}

func signedDigest(token string) string {
	input := token
	if i := strings.LastIndexByte(token, '.'); i >= 0 {
		input = token[:i]
	}
	sum := sha256.Sum256([]byte(input))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// refuseSpent answers an exchange whose subject token was already
// exchanged, or whose record could not be read or written.
func (s *Server) refuseSpent(w http.ResponseWriter, err error, fail func(code, desc string)) {
	if errors.Is(err, store.ErrTokenUsed) {
		fail(delegation.CodeInvalidGrant, "subject_token was already exchanged, and each is exchanged once: get a new token from its issuer (for an ID token, sign in again)")
		return
	}
	s.log.Error("could not read or record a spent subject token; refusing the exchange", "err", err)
	http.Error(w, "the store could not record this exchange: retry later", http.StatusServiceUnavailable)
}

// redelegate passes work on from one agent to another: the subject token
// is a delegation token an earlier agent obtained with this endpoint as its
// audience. Every hop is checked here, since consumers are told to ignore
// nested act claims: the earlier token verifies, the new actor is not
// already in the chain, every actor and the person are members of the
// token's task and it is live, no lock names any of them or the task, and
// the chain stays within the depth limit.
func (s *Server) redelegate(ctx context.Context, w http.ResponseWriter, req delegation.ExchangeRequest, cert *x509.Certificate, actor spiffeid.ID, fail func(code, desc string)) {
	issuer := s.cfg.TokenEndpoint.Issuer
	keys := s.delegator.keys.Load()
	if keys == nil {
		fail(delegation.CodeInvalidRequest, "no delegation keys are known")
		return
	}
	v, err := delegation.NewVerifier(*keys, issuer, delegation.WithClock(s.now), delegation.WithLeeway(s.cfg.MaxClockSkew.Duration))
	if err != nil {
		fail(delegation.CodeInvalidRequest, outsideError(err))
		return
	}
	prev, err := v.VerifyForExchange(req.SubjectToken, issuer)
	if err != nil {
		fail(delegation.CodeInvalidRequest, "subject_token: "+outsideError(err))
		return
	}
	chain := []spiffeid.ID{actor}
	for _, raw := range append(append([]string{}, prev.Actors...), prev.Subject) {
		id, err := spiffeid.FromString(raw)
		if err != nil {
			fail(delegation.CodeInvalidRequest, "subject_token: "+outsideError(err))
			return
		}
		if id == actor {
			fail(delegation.CodeInvalidRequest, fmt.Sprintf("%s is already in the chain of this token", actor))
			return
		}
		chain = append(chain, id)
	}
	if _, err := s.sharedTask(ctx, prev.TaskID, chain); err != nil {
		fail(delegation.CodeInvalidTarget, err.Error())
		return
	}
	if err := s.locks.checkDelegation(chain, prev.TaskID); err != nil {
		fail(delegation.CodeInvalidGrant, status.Convert(err).Message())
		return
	}
	spent := subjectToken{Issuer: issuer, ID: prev.ID, Expiry: prev.Expiry}
	if spent.ID == "" || len(spent.ID) > maxTokenID || !isPrintableASCII(spent.ID) {
		spent.ID = signedDigest(req.SubjectToken)
	}
	s.issueDelegation(ctx, w, req, cert, chain, prev.TaskID, spent, fail)
}

// subjectOf verifies the person's token and names it for the record that
// lets it be exchanged once. A person named by an ID token gets the ID
// sign-in gives them (identity.PersonID), so a token endpoint and a login
// never disagree on who someone is.
func (s *Server) subjectOf(ctx context.Context, req delegation.ExchangeRequest, audience string) (spiffeid.ID, subjectToken, error) {
	switch req.SubjectTokenType {
	case delegation.TokenTypeJWT:
		svid, err := s.validateJWTSVID(req.SubjectToken, audience)
		if err != nil {
			return spiffeid.ID{}, subjectToken{}, err
		}
		return svid.ID, subjectToken{Issuer: s.td.IDString(), ID: jwtTokenID(req.SubjectToken, svid.Claims), Expiry: svid.Expiry}, nil
	case delegation.TokenTypeIDToken:
		if s.people == nil {
			return spiffeid.ID{}, subjectToken{}, errors.New("ID tokens are not accepted: people sign-in is not configured")
		}
		res, err := s.people.Verify(ctx, req.SubjectToken)
		if err != nil {
			return spiffeid.ID{}, subjectToken{}, errors.New(outsideError(err))
		}
		id, err := identity.PersonID("email", s.td, res.Facts["email"])
		return id, subjectToken{Issuer: res.Issuer, ID: res.JTI, Expiry: res.Expiry}, err
	}
	return spiffeid.ID{}, subjectToken{}, fmt.Errorf("token type %s is not accepted: give a JWT-SVID or an ID token", req.SubjectTokenType)
}

// taskInScope returns the task named by the last "task:ID" scope token, or "".
func taskInScope(scope []string) string {
	want := ""
	for _, sc := range scope {
		if id, ok := strings.CutPrefix(sc, "task:"); ok {
			want = id
		}
	}
	return want
}

// sharedTask finds the live task under which chain[0] acts for the rest of
// the chain (the person last): the one named want, or the only one all of
// them are members of.
func (s *Server) sharedTask(ctx context.Context, want string, chain []spiffeid.ID) (string, error) {
	recs, err := s.store.ListTasks(ctx, string(task.StateOpen))
	if err != nil {
		return "", err
	}
	now := s.now()
	var found []string
	for _, r := range recs {
		t, err := taskFromRecord(r)
		if err != nil || !t.Live(now) || want != "" && t.ID != want {
			continue
		}
		all := true
		for _, id := range chain {
			all = all && isMemberOf(t, id)
		}
		if all {
			found = append(found, t.ID)
		}
	}
	actor, person := chain[0], chain[len(chain)-1]
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && want != "":
		return "", fmt.Errorf("task %s is not open, or does not have %s as members", identity.Quote(want), joinIDs(chain))
	case len(found) == 0:
		return "", fmt.Errorf("%s has not allowed %s to act for them: no open task has both as members", person, actor)
	}
	return "", fmt.Errorf("%s and %s share tasks %s: name one with scope=task:ID", person, actor, strings.Join(found, ", "))
}

func joinIDs(ids []spiffeid.ID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, ", ")
}

// outsideError renders an error that may repeat what a caller sent:
// control bytes escaped and cut at maxEcho bytes, so a response or a log
// line never carries a caller's text unbounded.
func outsideError(err error) string {
	const maxEcho = 200
	q := strconv.Quote(err.Error())
	q = q[1 : len(q)-1]
	if len(q) <= maxEcho {
		return q
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(q[cut]) {
		cut--
	}
	return q[:cut] + "…"
}

func isMemberOf(t task.Task, id spiffeid.ID) bool {
	for _, m := range t.Members {
		if m.Pattern.Matches(id) {
			return true
		}
	}
	return false
}

// jwtBundle is the trust domain's JWT bundle as JWT-SVIDs are verified.
func (s *Server) jwtBundle() *jwtbundle.Bundle {
	b := jwtbundle.New(s.td)
	for _, k := range s.jwt.Keys() {
		_ = b.AddJWTAuthority(k.KeyID, k.PublicKey)
	}
	return b
}
