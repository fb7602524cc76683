package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/audit"
	"writ.dev/writ/ca"
	"writ.dev/writ/ca/rotation"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

// issuer is the one pipeline every SVID the server signs goes through:
// administrators' mints, workload mints, agent joins (every join method)
// and renewals, and people signing in. Its invariants:
//
//  1. Nothing else in the server asks a signer for an SVID.
//  2. The steps run in one order: rate limit; for an unauthenticated caller,
//     the join-method lock and then attestation; clock and lock check, once;
//     TTL cap; request checks (CSR, audience); one-time checks (a spent join
//     token or ID token is refused here); signing; the durable event;
//     metrics.
//  3. An SVID is answered and counted in writ_svids_issued_total only once
//     its event is durable. A signed SVID whose event cannot be recorded
//     (or whose one-time credential another call spent first) is dropped.
//  4. Every refusal (PermissionDenied) after the rate limit is audited the
//     same way on every path: an authenticated caller's as one event each,
//     bounded by its rate limit; an unauthenticated caller's counted per
//     source and interval into one refusal.summary event, the first of each
//     interval also recorded at once.
//  5. A rate-limit refusal (ResourceExhausted) is never an event of its own;
//     an unauthenticated one is counted in the summary.
type issuer struct {
	x509    x509Signer
	jwt     jwtSigner
	locks   issueLocks
	clock   issueClock
	audit   auditRecorder
	metrics issueMetrics
	now     func() time.Time
	log     *slog.Logger
	svid    SVIDConfig
	limits  LimitsConfig
	jwtIss  string

	perIdentity *rateLimiter
	perSource   *rateLimiter
	refusals    *refusalSummary
}

// issuerConfig is what an issuer is built from: the narrow parts of the
// server it uses, so tests can put fakes in any of them.
type issuerConfig struct {
	X509    x509Signer
	JWT     jwtSigner
	Locks   issueLocks
	Clock   issueClock
	Audit   auditRecorder
	Metrics issueMetrics
	// Now is the clock of TTLs, rate limits and summary intervals.
	Now func() time.Time
	Log *slog.Logger
	// SVID holds the default and maximum TTLs.
	SVID   SVIDConfig
	Limits LimitsConfig
	// JWTIssuer is the "iss" of JWT-SVIDs; empty for none.
	JWTIssuer string
}

// x509Signer signs with the active X.509 authority.
type x509Signer interface {
	SignX509SVID(p ca.X509SVIDParams, now time.Time) ([]*x509.Certificate, error)
}

// jwtSigner signs with the active JWT key, reporting the key's ID and the
// token's expiry as the token carries it.
type jwtSigner interface {
	SignJWT(p ca.JWTSVIDParams, now time.Time) (token, kid string, exp time.Time, err error)
}

// issueLocks are the locks in force (lockSet).
type issueLocks interface {
	checkIssue(id spiffeid.ID) error
	checkJoin(method string) error
}

// issueClock refuses issuance while this server's clock is off (clockWatch).
type issueClock interface {
	checkIssue() error
}

// auditRecorder makes events naming the caller in ctx and appends them
// durably (Server).
type auditRecorder interface {
	event(ctx context.Context, typ, subject string, details any) (store.AuditEvent, error)
	record(ctx context.Context, evs ...store.AuditEvent) error
}

// issueMetrics counts what the issuer did.
type issueMetrics interface {
	issued(kind svidKind, n int)
	rateLimited(kind svidKind)
}

type svidKind string

const (
	kindX509 svidKind = audit.KindX509
	kindJWT  svidKind = audit.KindJWT
)

func newIssuer(c issuerConfig) *issuer {
	return &issuer{
		x509: c.X509, jwt: c.JWT, locks: c.Locks, clock: c.Clock, audit: c.Audit, metrics: c.Metrics,
		now: c.Now, log: c.Log, svid: c.SVID, limits: c.Limits, jwtIss: c.JWTIssuer,
		perIdentity: newRateLimiter(c.Limits.IssuancePerIdentity, c.Now),
		perSource:   newRateLimiter(c.Limits.UnauthenticatedPerSource, c.Now),
		refusals:    newRefusalSummary(c.Limits.RefusalSummaryInterval.Duration),
	}
}

// issueRequest is one SVID to issue and how to record it.
type issueRequest struct {
	Kind svidKind
	// ID is the identity to issue; Attest sets it when the caller proves it.
	ID spiffeid.ID
	// Admin marks a local administrator, who is not rate limited: whoever
	// holds the admin socket holds the server.
	Admin bool
	// Anonymous marks a caller without an SVID (joining, signing in): it is
	// rate limited by source address, and its refusals are summarised.
	Anonymous bool
	// JoinMethod, when set, is refused while a join-method lock names it.
	JoinMethod string
	// Attest, when set, verifies the caller's evidence after the rate limit
	// and fills in the request (ID, TTL, details, Claim, Commit).
	Attest func(ctx context.Context, r *issueRequest) error

	// Event is the type of the event recorded on issuance; RefusedEvent
	// that of a refusal. Either, when empty, is the kind's own
	// (audit.SVIDEvents).
	Event, RefusedEvent string
	// Details go into the issuance event; RefusalDetails into a refusal's.
	Details, RefusalDetails map[string]any
	// LogMsg, when set, logs the issuance at info level.
	LogMsg string

	// TTL is the lifetime wished (0: the default of the kind), shortened to
	// the maximum of the kind. RequestedSeconds, when not 0, is a caller's
	// explicit wish: above the maximum it is refused, so the caller learns
	// the limit. NotAfter, when set, caps the SVID's expiry.
	TTL              time.Duration
	RequestedSeconds int64
	NotAfter         time.Time

	// CSR and DNSNames are for X.509-SVIDs, Audience for JWT-SVIDs.
	CSR      []byte
	DNSNames []string
	Audience []string

	// Claim runs just before signing: the one-time checks (a spent token is
	// refused with PermissionDenied).
	Claim func(ctx context.Context) error
	// Commit stores the event durably together with the state that goes
	// with it (an agent's record, a spent token); nil appends the event to
	// the audit log. leaf is nil for JWT-SVIDs.
	Commit func(ctx context.Context, ev store.AuditEvent, leaf *x509.Certificate) error
}

// issuedSVID is what was signed.
type issuedSVID struct {
	ID     spiffeid.ID
	Chain  []*x509.Certificate
	Token  string
	KeyID  string
	Expiry time.Time
}

// issue runs one request through the pipeline.
func (is *issuer) issue(ctx context.Context, r *issueRequest) (issuedSVID, error) {
	out, ev, refusal, err := is.sign(ctx, r)
	if err != nil {
		if refusal != nil {
			if recErr := is.audit.record(ctx, refusal); recErr != nil {
				return issuedSVID{}, recErr
			}
		}
		return issuedSVID{}, err
	}
	if r.Commit != nil {
		err = r.Commit(ctx, ev, leafOf(out))
	} else {
		err = is.audit.record(ctx, ev)
	}
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			// Spent by another call between Claim and Commit.
			if refusal, err = is.refuse(ctx, r, err); refusal != nil {
				if recErr := is.audit.record(ctx, refusal); recErr != nil {
					return issuedSVID{}, recErr
				}
			}
		}
		return issuedSVID{}, err
	}
	is.metrics.issued(r.Kind, 1)
	is.logIssued(ctx, r, out)
	return out, nil
}

// issueResult is one answer of issueBatch.
type issueResult struct {
	SVID issuedSVID
	Err  error
}

// issueBatch issues several X.509-SVIDs for one caller. Each request runs
// the pipeline to signing on its own; the issuance and refusal events of
// all are then recorded together, in one append, before any is answered.
// Requests must not have Commit set. The whole batch fails when the audit
// log cannot record, or when the server cannot issue at all (Unavailable:
// its clock is off or its locks are stale), so the caller retries it.
func (is *issuer) issueBatch(ctx context.Context, reqs []*issueRequest) ([]issueResult, error) {
	out := make([]issueResult, len(reqs))
	var evs []store.AuditEvent
	issued := 0
	for i, r := range reqs {
		svid, ev, refusal, err := is.sign(ctx, r)
		out[i] = issueResult{SVID: svid, Err: err}
		if status.Code(err) == codes.Unavailable {
			return nil, err
		}
		switch {
		case err == nil:
			evs = append(evs, ev)
			issued++
		case refusal != nil:
			evs = append(evs, refusal)
		}
	}
	if len(evs) > 0 {
		if err := is.audit.record(ctx, evs...); err != nil {
			return nil, err
		}
	}
	if issued > 0 {
		is.metrics.issued(kindX509, issued)
	}
	return out, nil
}

// sign runs the pipeline up to the event: it returns what was signed and
// its event, or the error for the caller with the refusal event to record,
// if any.
func (is *issuer) sign(ctx context.Context, r *issueRequest) (_ issuedSVID, ev, refusal store.AuditEvent, err error) {
	fail := func(err error) (issuedSVID, store.AuditEvent, store.AuditEvent, error) {
		refusal, err := is.refuse(ctx, r, err)
		return issuedSVID{}, nil, refusal, err
	}
	mint, refused := audit.SVIDEvents(string(r.Kind))
	if r.Event == "" {
		r.Event = mint
	}
	if r.RefusedEvent == "" {
		r.RefusedEvent = refused
	}
	if err := is.limit(ctx, r); err != nil {
		return issuedSVID{}, nil, nil, err
	}
	if r.JoinMethod != "" {
		if err := is.locks.checkJoin(r.JoinMethod); err != nil {
			return fail(err)
		}
	}
	if r.Attest != nil {
		if err := r.Attest(ctx, r); err != nil {
			return fail(err)
		}
	}
	if err := is.clock.checkIssue(); err != nil {
		is.log.Warn("issuance refused", "spiffe_id", r.ID.String(), "reason", err, "caller", callerString(ctx))
		return issuedSVID{}, nil, nil, err
	}
	if err := is.locks.checkIssue(r.ID); err != nil {
		return fail(err)
	}
	now := is.now()
	ttl, err := is.ttl(r, now)
	if err != nil {
		return fail(err)
	}
	var pub any
	switch r.Kind {
	case kindX509:
		if pub, err = ca.ParseCSR(r.CSR); err != nil {
			return fail(status.Error(codes.InvalidArgument, err.Error()))
		}
	case kindJWT:
		if err := checkAudience(r.Audience); err != nil {
			return fail(err)
		}
	}
	if r.Claim != nil {
		if err := r.Claim(ctx); err != nil {
			return fail(err)
		}
	}
	out := issuedSVID{ID: r.ID}
	details := make(map[string]any, len(r.Details)+4)
	for k, v := range r.Details {
		details[k] = v
	}
	switch r.Kind {
	case kindX509:
		chain, err := is.x509.SignX509SVID(ca.X509SVIDParams{PublicKey: pub, SPIFFEID: r.ID, DNSNames: r.DNSNames, TTL: ttl}, now)
		if err != nil {
			return issuedSVID{}, nil, nil, status.Errorf(codes.Internal, "signing: %v", err)
		}
		out.Chain, out.Expiry = chain, chain[0].NotAfter
		details["serial"], details["not_after"], details["ca"] = serialHex(chain[0]), chain[0].NotAfter.UTC(), fmt.Sprintf("%x", chain[0].AuthorityKeyId)
	case kindJWT:
		tok, kid, exp, err := is.jwt.SignJWT(ca.JWTSVIDParams{SPIFFEID: r.ID, Audience: r.Audience, TTL: ttl, Issuer: is.jwtIss}, now)
		if err != nil {
			return issuedSVID{}, nil, nil, status.Errorf(codes.Internal, "signing: %v", err)
		}
		out.Token, out.KeyID, out.Expiry = tok, kid, exp
		details["kid"], details["audience"], details["exp"] = kid, r.Audience, exp.Unix()
	}
	ev, err = is.audit.event(ctx, r.Event, r.ID.String(), omitEmpty(details))
	if err != nil {
		return issuedSVID{}, nil, nil, err
	}
	return out, ev, nil, nil
}

// omitEmpty drops the details that say nothing (null, "", [], {}): every
// SVID issued is an event, so their bytes add up in the log, and a reader
// learns as much from an absent field. Zero numbers and false stay, as
// they are values.
func omitEmpty(details map[string]any) map[string]any {
	for k, v := range details {
		if isEmptyDetail(v) {
			delete(details, k)
		}
	}
	return details
}

func isEmptyDetail(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String, reflect.Slice, reflect.Map, reflect.Array:
		return rv.Len() == 0
	case reflect.Pointer:
		return rv.IsNil()
	}
	return false
}

// limit applies the rate limit of the caller: per source address for an
// unauthenticated one, per identity otherwise.
func (is *issuer) limit(ctx context.Context, r *issueRequest) error {
	switch {
	case r.Admin:
		return nil
	case r.Anonymous:
		src := sourceOf(ctx)
		if is.perSource.allow(src) {
			return nil
		}
		is.refusals.note(src, r.RefusedEvent, "", true, is.now())
		is.metrics.rateLimited(r.Kind)
		l := is.limits.UnauthenticatedPerSource
		return status.Errorf(codes.ResourceExhausted, "too many attempts from %s: at most %g a second, %d at once (limits.unauthenticated_per_source); retry later", src, l.Rate, l.Burst)
	}
	if is.perIdentity.allow(r.ID.String()) {
		return nil
	}
	is.metrics.rateLimited(r.Kind)
	l := is.limits.IssuancePerIdentity
	return status.Errorf(codes.ResourceExhausted, "too many SVIDs for %s: at most %g a second, %d at once (limits.issuance_per_identity); reuse the SVIDs you have until they are half way to expiry, or retry later", r.ID, l.Rate, l.Burst)
}

// refuse audits a refusal (PermissionDenied) the one way every path does:
// it returns the event to record, if one is due now, and the caller's
// error. Other errors are the caller's mistakes or the server's state, not
// refusals of an identity, and are returned as they are.
func (is *issuer) refuse(ctx context.Context, r *issueRequest, err error) (store.AuditEvent, error) {
	if status.Code(err) != codes.PermissionDenied {
		return nil, err
	}
	reason := status.Convert(err).Message()
	subject := ""
	if !r.ID.IsZero() {
		subject = r.ID.String()
	}
	details := map[string]any{"reason": reason}
	for k, v := range r.RefusalDetails {
		details[k] = v
	}
	if r.Anonymous {
		src := sourceOf(ctx)
		// Logged like it is audited: the first of an interval, not a flood.
		if !is.refusals.note(src, r.RefusedEvent, reason, false, is.now()) {
			is.log.Debug("refused", "event", r.RefusedEvent, "spiffe_id", subject, "reason", reason, "source", src)
			return nil, err
		}
		is.log.Warn("refused", "event", r.RefusedEvent, "spiffe_id", subject, "reason", reason, "source", src)
		details["source"] = src
	} else {
		is.log.Warn("issuance refused", "spiffe_id", subject, "reason", reason, "caller", callerString(ctx))
	}
	ev, evErr := is.audit.event(ctx, r.RefusedEvent, subject, omitEmpty(details))
	if evErr != nil {
		return nil, evErr
	}
	return ev, err
}

// ttl is the lifetime to issue r with.
func (is *issuer) ttl(r *issueRequest, now time.Time) (time.Duration, error) {
	def, maxTTL, setting := is.svid.X509TTL.Duration, is.svid.MaxX509TTL.Duration, "svid.max_x509_ttl"
	if r.Kind == kindJWT {
		def, maxTTL, setting = is.svid.JWTTTL.Duration, is.svid.MaxJWTTTL.Duration, "svid.max_jwt_ttl"
	}
	ttl := r.TTL
	if r.RequestedSeconds != 0 {
		d, err := requestedTTL(r.RequestedSeconds, def, maxTTL, setting)
		if err != nil {
			return 0, status.Error(codes.InvalidArgument, err.Error())
		}
		ttl = d
	}
	if ttl <= 0 {
		ttl = def
	}
	ttl = min(ttl, maxTTL)
	if !r.NotAfter.IsZero() {
		left := r.NotAfter.Sub(now)
		if left <= 0 {
			return 0, status.Error(codes.PermissionDenied, "the certificate proved expires now")
		}
		ttl = min(ttl, left)
	}
	return ttl, nil
}

func checkAudience(audience []string) error {
	if len(audience) == 0 {
		return status.Error(codes.InvalidArgument, (&identity.FieldError{Field: "audience", Msg: "is empty: name at least one party that may accept the token"}).Error())
	}
	for i, aud := range audience {
		if aud == "" {
			return status.Error(codes.InvalidArgument, (&identity.FieldError{Field: fmt.Sprintf("audience[%d]", i), Msg: "is empty"}).Error())
		}
	}
	return nil
}

func (is *issuer) logIssued(ctx context.Context, r *issueRequest, out issuedSVID) {
	if r.LogMsg == "" {
		return
	}
	attrs := []any{"spiffe_id", r.ID.String(), "expires", out.Expiry.UTC().Format(time.RFC3339), "caller", callerString(ctx)}
	if len(out.Chain) > 0 {
		attrs = append(attrs, "serial", serialHex(out.Chain[0]))
	} else {
		attrs = append(attrs, "kid", out.KeyID, "audience", r.Audience)
	}
	if r.JoinMethod != "" {
		attrs = append(attrs, "method", r.JoinMethod, "peer", peerAddr(ctx))
	}
	is.log.Info(r.LogMsg, attrs...)
}

func leafOf(s issuedSVID) *x509.Certificate {
	if len(s.Chain) == 0 {
		return nil
	}
	return s.Chain[0]
}

// run writes refusal summaries as their intervals end, and all that are
// left when ctx ends; refusals after that are recorded one by one.
func (is *issuer) run(ctx context.Context) {
	runSummaries(ctx, is.refusals, is.audit, is.now, is.log)
}

// flushRefusals records the summaries due now (all when all is set).
// Summaries that cannot be recorded are kept for the next try.
func (is *issuer) flushRefusals(ctx context.Context, all bool) error {
	return flushSummaries(ctx, is.refusals, is.audit, is.now(), all)
}

// Adapters from the server's parts to the issuer's interfaces.

type activeX509 struct{ m *rotation.X509Manager }

func (a activeX509) SignX509SVID(p ca.X509SVIDParams, now time.Time) ([]*x509.Certificate, error) {
	return a.m.Active().SignX509SVID(p, now)
}

type activeJWT struct{ m *rotation.JWTManager }

func (a activeJWT) SignJWT(p ca.JWTSVIDParams, now time.Time) (string, string, time.Time, error) {
	auth := a.m.Active()
	tok, err := auth.SignJWTSVID(p, now)
	if err != nil {
		return "", "", time.Time{}, err
	}
	// SignJWTSVID clamps exp the same way, in whole seconds.
	exp := now.Add(p.TTL)
	if exp.After(auth.NotAfter) {
		exp = auth.NotAfter
	}
	return tok, auth.KeyID, time.Unix(exp.Unix(), 0), nil
}

type issuerMetrics struct {
	issuedVec, limitedVec *prometheus.CounterVec
}

func (m issuerMetrics) issued(kind svidKind, n int) {
	m.issuedVec.WithLabelValues(string(kind)).Add(float64(n))
}

func (m issuerMetrics) rateLimited(kind svidKind) {
	m.limitedVec.WithLabelValues(string(kind)).Inc()
}

// startIssuer builds the server's issuer once the locks are loaded, and
// runs its refusal summaries until ctx ends.
func (s *Server) startIssuer(ctx context.Context) {
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "writ_issuance_rate_limited_total",
		Help: "Issuance requests refused by a rate limit, by SVID kind (x509, jwt).",
	}, []string{"kind"})
	s.metrics.reg.MustRegister(limited)
	s.issuer = newIssuer(issuerConfig{
		X509: activeX509{s.x509}, JWT: activeJWT{s.jwt}, Locks: s.locks, Clock: s.clock, Audit: s,
		Metrics: issuerMetrics{issuedVec: s.metrics.issued, limitedVec: limited},
		Now:     s.now, Log: s.log, SVID: s.cfg.SVID, Limits: s.cfg.Limits, JWTIssuer: s.jwtIssuer(),
	})
	s.background(ctx, s.issuer.run)
}
