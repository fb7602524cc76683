// Package console is writ's web console: people sign in through the
// company's identity provider (the flow 'writ login' uses) and review
// requests, watch dual-controlled tasks, close tasks, read the audit log
// and see who can reach what. It holds no power of its own: every page
// calls the gRPC services' own implementations as the signed-in person,
// after the same authorization rule a gRPC call meets, so the console can
// do nothing the person could not do with the CLI.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/person/login"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Services are the gRPC services' implementations. The console calls them
// with a context that As returned, exactly as the gRPC server would.
type Services struct {
	Requests  writv1.RequestServiceServer
	Reviews   writv1.ReviewServiceServer
	Watch     writv1.WatchServiceServer
	Tasks     writv1.TaskServiceServer
	Audit     writv1.AuditServiceServer
	Inventory writv1.InventoryServiceServer
}

// Config is what the console needs from the server.
type Config struct {
	// PublicURL is where browsers reach the console (https://host[:port]);
	// the identity provider sends people back to PublicURL/callback.
	PublicURL string
	// Issuer and ClientID name the identity provider and the public client
	// people sign in with (people.issuer, people.client_id).
	Issuer, ClientID string
	// HTTPClient talks to the identity provider; nil: http.DefaultClient.
	HTTPClient *http.Client
	// SignIn checks an ID token as a 'writ login' is checked (signature,
	// audience, allow rules, used once), records the sign-in and returns
	// the person's SPIFFE ID.
	SignIn func(ctx context.Context, idToken string) (spiffeid.ID, error)
	// AllowSignIn, when set, rate limits starting and finishing sign-ins
	// by the browser's address: anyone may start one, and each costs a
	// slot among the sign-ins in progress and a token verification.
	AllowSignIn func(r *http.Request) error
	// SignedOut records that a person signed out.
	SignedOut func(ctx context.Context, person spiffeid.ID)
	// As authorizes person for a gRPC method by that method's own rule and
	// returns the context its implementation is called with.
	As func(ctx context.Context, person spiffeid.ID, method string) (context.Context, error)
	// Services are called as the person.
	Services Services
	// AuditKeys reads the audit verifier keys trusted to sign checkpoints,
	// given out of band (the bundle 'writ audit keys' writes), at each
	// verification, so a new bundle needs no restart; nil: none are
	// configured, and the log is shown as not verified.
	AuditKeys func() ([]byte, error)
	// IdleTimeout and SessionTTL end a session unused for so long, or
	// that old; MaxSessions bounds the sessions held.
	IdleTimeout, SessionTTL time.Duration
	MaxSessions             int
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Console serves the web console.
type Console struct {
	cfg      Config
	origin   string
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux

	webMu sync.Mutex
	web   *login.Web

	// watches are the watch pages open, for their heartbeats.
	watches watchRegistry

	// closing ends the live streams (the audit tail) when the server
	// shuts down, so they do not hold the shutdown to its deadline.
	closing   chan struct{}
	closeOnce sync.Once
}

// Close ends the console's live streams; the HTTP server calls it on
// shutdown.
func (c *Console) Close() { c.closeOnce.Do(func() { close(c.closing) }) }

// New checks cfg and builds the console. The identity provider is
// discovered on the first sign-in, so an outage there does not stop the
// server from starting.
func New(cfg Config) (*Console, error) {
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("console: public_url must be https://HOST[:PORT] with no path: the address browsers use")
	}
	if cfg.SignIn == nil || cfg.As == nil {
		return nil, errors.New("console: SignIn and As are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	c := &Console{
		cfg:      cfg,
		origin:   u.Scheme + "://" + u.Host,
		sessions: newSessions(cfg.IdleTimeout, cfg.SessionTTL, cfg.MaxSessions, cfg.Now),
		closing:  make(chan struct{}),
	}
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// parsePages builds one template per page, each with the shared layout.
func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"unix": func(s int64) string {
			if s == 0 {
				return "—"
			}
			return time.Unix(s, 0).UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"join": strings.Join,
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// Handler serves the console; every answer carries the security headers.
func (c *Console) Handler() http.Handler { return securityHeaders(c.mux) }

// Sessions is the number of sessions held, for tests and metrics.
func (c *Console) Sessions() int { return c.sessions.count() }

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", c.signedIn(c.home))
	m.HandleFunc("GET /signin", c.signIn)
	m.HandleFunc("GET /callback", c.callback)
	m.HandleFunc("POST /signout", c.form(c.signOut))
	m.HandleFunc("GET /requests", c.signedIn(c.requestsPage))
	m.HandleFunc("POST /requests/{id}/review", c.form(c.review))
	m.HandleFunc("GET /tasks", c.signedIn(c.tasksPage))
	m.HandleFunc("GET /tasks/{id}", c.signedIn(c.taskPage))
	m.HandleFunc("POST /tasks/{id}/close", c.form(c.closeTask))
	m.HandleFunc("GET /tasks/{id}/watch", c.signedIn(c.watchPage))
	m.HandleFunc("GET /tasks/{id}/watch/events", c.signedIn(c.watchEvents))
	m.HandleFunc("POST /tasks/{id}/watch/beat", c.form(c.watchBeat))
	m.HandleFunc("GET /audit", c.signedIn(c.auditPage))
	m.HandleFunc("GET /audit/events", c.signedIn(c.auditEvents))
	m.HandleFunc("GET /inventory", c.signedIn(c.inventoryPage))
	c.mux = m
}

// csp allows scripts, styles and connections from the console alone:
// no inline script, no framing, forms post only to the console.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: under no-referrer browsers send
		// "Origin: null" with forms, and the origin check needs the real one.
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

type sessionKey struct{}

func sessionFrom(ctx context.Context) *session {
	se, _ := ctx.Value(sessionKey{}).(*session)
	return se
}

// signedIn sends a browser without a live session to the sign-in page.
func (c *Console) signedIn(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		se := c.sessions.get(r)
		if se == nil {
			if r.Header.Get("Accept") == "text/event-stream" {
				http.Error(w, "not signed in: sign in again", http.StatusUnauthorized)
				return
			}
			c.render(w, r, http.StatusOK, "signin", &page{Title: "Sign in to writ"})
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, se)))
	}
}

// maxForm bounds a form post: a reason and a token or two.
const maxForm = 8 << 10

// form guards every POST: a live session, a request from the console's
// own origin when the browser says where it came from, and the session's
// CSRF token. A refused post changes nothing.
func (c *Console) form(h http.HandlerFunc) http.HandlerFunc {
	return c.signedIn(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" && o != c.origin {
			c.fail(w, r, http.StatusForbidden, "This form was sent from another site and is refused. Use the console's own pages.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			c.fail(w, r, http.StatusBadRequest, fmt.Sprintf("The form could not be read (at most %d bytes): send it again from the page.", maxForm))
			return
		}
		if !validCSRF(sessionFrom(r.Context()), r.PostForm.Get("csrf")) {
			c.fail(w, r, http.StatusForbidden, "The form's security token is missing or out of date: reload the page and try again.")
			return
		}
		h(w, r)
	})
}

// page is what every template gets.
type page struct {
	Title  string
	Person string
	CSRF   string
	Nav    string
	Error  string
	Notice string
	Data   any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	if p == nil {
		p = &page{}
	}
	if se := sessionFrom(r.Context()); se != nil {
		p.Person, p.CSRF = se.person.String(), se.csrf
	}
	if p.Nav == "" {
		p.Nav = name
	}
	t := c.pages[name]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.Execute(w, p); err != nil {
		c.cfg.Log.Warn("console: rendering a page", "page", name, "err", err)
	}
}

// fail shows an error page that says what went wrong and what to do.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", &page{Title: "Refused", Error: msg})
}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/requests", http.StatusSeeOther)
}

// as is the context to call method with as the signed-in person.
func (c *Console) as(r *http.Request, method string) (context.Context, error) {
	se := sessionFrom(r.Context())
	if se == nil {
		return nil, errors.New("not signed in")
	}
	return c.cfg.As(r.Context(), se.person, method)
}
