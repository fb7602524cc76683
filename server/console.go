package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/audit"
	"writ.dev/writ/identity"
	"writ.dev/writ/internal/quote"
	"writ.dev/writ/server/console"
)

// ConsoleConfig serves the web console (server/console) over HTTPS with
// the server's own certificate. People sign in as with 'writ login'
// (people.issuer, people.client_id), so the console needs people.
type ConsoleConfig struct {
	// Address is host:port to listen on; empty disables the console.
	Address string `yaml:"address"`
	// PublicURL is where browsers reach it; the identity provider must
	// allow PUBLIC_URL/callback as a redirect URI for people.client_id.
	// Empty: https://ADDRESS.
	PublicURL string `yaml:"public_url"`
	// AuditKeys is the key bundle ('writ audit keys') the audit page
	// verifies the log with, kept where the servers cannot write it.
	AuditKeys string `yaml:"audit_keys"`
	// IdleTimeout ends a session unused for so long; default 30m.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// SessionTTL ends a session so long after sign-in; default
	// people.svid_ttl, the lifetime of the SVID 'writ login' would give.
	SessionTTL Duration `yaml:"session_ttl"`
	// MaxSessions bounds the sessions held; default 10000.
	MaxSessions int `yaml:"max_sessions"`
}

const (
	defaultConsoleIdle        = 30 * time.Minute
	defaultConsoleMaxSessions = 10000
)

func (c *ConsoleConfig) validate(people PeopleConfig) []error {
	if c.Address == "" {
		if c.PublicURL != "" {
			return []error{errors.New("console.address: is required when console.public_url is set: the host:port the console listens on")}
		}
		return nil
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("console.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		add("address", "%s is not host:port", quote.String(c.Address))
	}
	if people.Issuer == "" {
		add("address", "the console signs people in through people.issuer and people.client_id: configure people first")
	}
	if u, err := url.Parse(c.PublicURL); c.PublicURL != "" && (err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "") {
		add("public_url", "%s must be https://HOST[:PORT] with no path: the address browsers use", quote.String(c.PublicURL))
	}
	if c.IdleTimeout.Duration == 0 {
		c.IdleTimeout.Duration = defaultConsoleIdle
	}
	if c.SessionTTL.Duration == 0 {
		c.SessionTTL.Duration = people.SVIDTTL.Duration
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = defaultConsoleMaxSessions
	}
	if c.IdleTimeout.Duration < time.Minute || c.SessionTTL.Duration < time.Minute {
		add("idle_timeout", "idle_timeout %s and session_ttl %s must each be at least 1m", c.IdleTimeout, c.SessionTTL)
	}
	if c.SessionTTL.Duration > people.SVIDTTL.Duration && people.SVIDTTL.Duration > 0 {
		add("session_ttl", "%s is more than people.svid_ttl %s: a console session must not outlive what a sign-in gives", c.SessionTTL, people.SVIDTTL)
	}
	if c.MaxSessions < 1 {
		add("max_sessions", "%d is out of range: at least 1", c.MaxSessions)
	}
	return errs
}

// consoleEndpoint is the console's listener and HTTP server.
type consoleEndpoint struct {
	ln  net.Listener
	srv *http.Server
	c   *console.Console
}

// listenConsole binds the console's address, with the per-source
// connection cap of the other listeners people reach directly.
func (s *Server) listenConsole() error {
	if s.cfg.Console.Address == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Console.Address)
	if err != nil {
		return fmt.Errorf("console.address: %w", err)
	}
	s.console = &consoleEndpoint{ln: limitPerSource(ln, s.cfg.Limits.ConnsPerSource, s.log)}
	return nil
}

// startConsole serves the console; the server's certificate must be in
// place (tlsID rotated) first.
func (s *Server) startConsole() error {
	if s.console == nil {
		return nil
	}
	cc := s.cfg.Console
	var keys func() ([]byte, error)
	if cc.AuditKeys != "" {
		keys = func() ([]byte, error) { return readBounded(cc.AuditKeys, audit.MaxKeyBundleSize) }
	}
	public := cc.PublicURL
	if public == "" {
		public = "https://" + s.console.ln.Addr().String()
	}
	c, err := console.New(console.Config{
		PublicURL: public,
		Issuer:    s.cfg.People.Issuer,
		ClientID:  s.cfg.People.ClientID,
		SignIn:    s.consoleSignIn,
		SignedOut: s.consoleSignedOut,
		AllowSignIn: func(r *http.Request) error {
			src := "unknown"
			if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
				src = sourceKey(net.TCPAddrFromAddrPort(ap))
			}
			// The same bucket as sign-ins and joins over gRPC from there.
			if s.issuer.perSource.allow(src) {
				return nil
			}
			l := s.cfg.Limits.UnauthenticatedPerSource
			return fmt.Errorf("too many sign-in attempts from %s: at most %g a second, %d at once (limits.unauthenticated_per_source); try again in a minute", src, l.Rate, l.Burst)
		},
		As: s.consoleAs,
		Services: console.Services{
			Requests:  &requestService{s: s},
			Reviews:   &reviewService{s: s},
			Watch:     &watchService{s: s},
			Tasks:     &taskService{s: s},
			Audit:     &auditService{s: s},
			Inventory: &inventoryService{s: s},
		},
		AuditKeys:   keys,
		IdleTimeout: cc.IdleTimeout.Duration,
		SessionTTL:  cc.SessionTTL.Duration,
		MaxSessions: cc.MaxSessions,
		Now:         s.now,
		Log:         s.log,
	})
	if err != nil {
		return err
	}
	s.console.c = c
	s.console.srv = s.newHTTPServer("console", c.Handler())
	s.console.srv.TLSConfig = tlsconfig.TLSServerConfig(s.tlsID)
	s.console.srv.RegisterOnShutdown(c.Close)
	s.serve("console", func() error { return s.console.srv.ServeTLS(s.console.ln, "", "") })
	return nil
}

// ConsoleAddr is the console's address once started, or nil.
func (s *Server) ConsoleAddr() net.Addr {
	if s.console == nil {
		return nil
	}
	return s.console.ln.Addr()
}

// consoleAs is how the console acts for a person: the gRPC method's own
// rule decides, with the person as the caller, exactly as for a call
// with the person's SVID.
func (s *Server) consoleAs(ctx context.Context, person spiffeid.ID, method string) (context.Context, error) {
	r, ok := methodRules[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s has no access rule and is refused", method)
	}
	// A lock on the person ends what they can do here at once, as it
	// stops their SVID's renewal.
	if err := s.locks.checkIssue(person); err != nil {
		return nil, err
	}
	c := Caller{ID: person}
	if err := r(s, c); err != nil {
		s.log.Warn("denied", "method", method, "caller", c.String(), "via", "console", "reason", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	return context.WithValue(ctx, callerKey{}, c), nil
}

// consoleSignIn checks an ID token as Login does (signature, issuer,
// audience, expiry, a verified email the rules allow, no lock on the
// person, used once) and records the sign-in with the token.
func (s *Server) consoleSignIn(ctx context.Context, idToken string) (spiffeid.ID, error) {
	if s.people == nil {
		return spiffeid.ID{}, errors.New("sign-in is not configured on this server: set people.issuer and people.client_id")
	}
	refuse := func(err error) (spiffeid.ID, error) {
		if ev, eerr := s.event(ctx, audit.EventConsoleSignInRefused, "", map[string]any{"reason": quote.Max(err.Error(), 512)}); eerr == nil {
			_ = s.record(ctx, ev)
		}
		s.log.Warn("console sign-in refused", "reason", err)
		return spiffeid.ID{}, err
	}
	res, err := s.people.Verify(ctx, idToken)
	if errors.Is(err, oidc.ErrKeysUnavailable) {
		return spiffeid.ID{}, fmt.Errorf("%v; sign in again in a minute", err)
	}
	if err != nil {
		return refuse(err)
	}
	id, err := identity.PersonID("email", s.td, res.Facts["email"])
	if err != nil {
		return refuse(err)
	}
	if err := s.locks.checkIssue(id); err != nil {
		return refuse(err)
	}
	ev, err := s.event(ctx, audit.EventConsoleSignIn, id.String(), map[string]any{"email": res.Facts["email"], "issuer": res.Issuer})
	if err != nil {
		return spiffeid.ID{}, err
	}
	if err := s.store.UseToken(ctx, res.Issuer, res.JTI, res.Expiry, ev); err != nil {
		return refuse(errors.New(status.Convert(loginReplayRefusal(err)).Message()))
	}
	return id, nil
}

func (s *Server) consoleSignedOut(ctx context.Context, person spiffeid.ID) {
	ctx = context.WithValue(ctx, callerKey{}, Caller{ID: person})
	if ev, err := s.event(ctx, audit.EventConsoleSignOut, person.String(), nil); err == nil {
		_ = s.record(ctx, ev)
	}
}

// consoleServer is the console's HTTP server, or nil.
func (s *Server) consoleServer() *http.Server {
	if s.console == nil {
		return nil
	}
	return s.console.srv
}

// readBounded reads a file of at most limit bytes.
func readBounded(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than the %d bytes allowed", name, limit)
	}
	return data, nil
}

// consoleListener is the console's listener, or nil.
func (s *Server) consoleListener() net.Listener {
	if s.console == nil {
		return nil
	}
	return s.console.ln
}
