// Package httpproxy is the gateway's HTTP front end: a reverse proxy that
// decides every request before forwarding it. The caller is known by its
// X.509-SVID from mTLS and, when it acts for someone, by the delegation
// token in "Authorization: Bearer"; the method names the action and the
// path, through an ordered list of routes, the resource. An allowed
// request reaches the upstream with a Writ-Caller header the gateway
// signs with its own SVID, naming the whole chain; it is held while it
// lasts, so a stream or a download is cut when the decision stops holding.
package httpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/gateway"
)

// Options are what the proxy is built from besides its Config.
type Options struct {
	Decider gateway.Decider
	Holder  gateway.Holder
	// SVID is the gateway's own X.509-SVID (a go-spiffe X509Source, say):
	// its key signs Writ-Caller headers and, with upstream_id, it is the
	// client certificate towards the upstream.
	SVID x509svid.Source
	// Bundle verifies the upstream's certificate when upstream_id is set.
	Bundle x509bundle.Source
	// Transport, when set, replaces the transport the proxy builds.
	Transport http.RoundTripper
	// Now is the clock for Writ-Caller headers; time.Now when nil.
	Now func() time.Time
	// Log receives errors that are not the caller's; slog.Default when nil.
	Log *slog.Logger
}

// Proxy is the front end's http.Handler. Serve it on a TLS listener that
// requests and verifies client certificates against the trust bundle
// (NewServer does, given such a tls.Config).
type Proxy struct {
	cfg     Config
	c       compiled
	decider gateway.Decider
	holder  gateway.Holder
	signer  *headerSigner
	now     func() time.Time
	log     *slog.Logger
	rp      *httputil.ReverseProxy
}

// New builds a Proxy from a Config (Defaults is applied to a copy) and
// its Options.
func New(cfg Config, opts Options) (*Proxy, error) {
	cfg.Defaults()
	c, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	if opts.Decider == nil || opts.Holder == nil || opts.SVID == nil {
		return nil, errors.New("http proxy: a Decider, a Holder and the gateway's SVID source are required")
	}
	p := &Proxy{
		cfg:     cfg,
		c:       c,
		decider: opts.Decider,
		holder:  opts.Holder,
		signer:  newHeaderSigner(opts.SVID, cfg.Audience, cfg.Limits.CallerHeaderTTL.Duration),
		now:     opts.Now,
		log:     opts.Log,
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	transport := opts.Transport
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = cfg.Limits.UpstreamTimeout.Duration
		t.MaxResponseHeaderBytes = int64(cfg.Limits.MaxHeaderBytes) * 4
		t.Proxy = nil
		if !c.upstreamID.IsZero() {
			if opts.Bundle == nil {
				return nil, errors.New("http proxy: upstream_id is set but no trust bundle was given to verify the upstream")
			}
			t.TLSClientConfig = tlsconfig.MTLSClientConfig(opts.SVID, opts.Bundle, tlsconfig.AuthorizeID(c.upstreamID))
		}
		transport = t
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    transport,
		ErrorHandler: p.proxyError,
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// NewServer returns an http.Server for h with the Config's limits, for a
// listener made with tlsConf, which must require and verify client
// certificates (tlsconfig.MTLSServerConfig with an authorizer that admits
// every caller the decisions should see). It has no write timeout, since
// responses may stream for as long as the decision holds.
func NewServer(cfg Config, h http.Handler, tlsConf *tls.Config) *http.Server {
	cfg.Defaults()
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: cfg.Limits.ReadHeaderTimeout.Duration,
		IdleTimeout:       cfg.Limits.IdleTimeout.Duration,
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
	}
}

// forward is what ServeHTTP hands the rewrite through the context.
type forward struct {
	path   cleanPath
	header string
}

type forwardKey struct{}

// ServeHTTP decides the request and forwards it, or refuses it with a
// status and a plain-text reason; nothing is forwarded unless the decision
// allowed it.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, err := bearerToken(r.Header)
	if err != nil {
		// RFC 6750 section 3.1: a malformed bearer request.
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_request"`)
		refuse(w, http.StatusUnauthorized, err.Error())
		return
	}
	caller, err := gateway.CallerFromTLS(r.TLS, r.RemoteAddr, token)
	if err != nil {
		// 403, not 401: no HTTP authentication scheme can supply what is
		// missing, which is a certificate in the TLS handshake.
		refuse(w, http.StatusForbidden, err.Error())
		return
	}
	path, err := parsePath(requestPath(r))
	if err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	req, err := p.c.mapper.mapRequest(r.Method, path)
	switch {
	case errors.Is(err, errNoMethod):
		refuse(w, http.StatusMethodNotAllowed, err.Error())
		return
	case err != nil:
		refuse(w, http.StatusNotFound, err.Error())
		return
	}
	if max := p.cfg.Limits.MaxBodyBytes; r.ContentLength > max {
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is %d bytes; at most %d are accepted", r.ContentLength, max))
		return
	}
	d, err := p.decider.Decide(r.Context(), caller, req)
	if errors.Is(err, gateway.ErrEvidenceRefused) {
		// RFC 6750 section 3.1: the token is the caller's to fix, so the
		// answer says why rather than inviting a retry.
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		refuse(w, http.StatusUnauthorized, strings.TrimPrefix(err.Error(), "gateway: "))
		return
	}
	if err != nil {
		p.log.Warn("http proxy: no decision", "action", req.Action, "resource", req.Resource, "error", err)
		refuse(w, http.StatusServiceUnavailable, "writ could not decide this request; try again later")
		return
	}
	if !d.Allow {
		reason := d.Reason
		if reason == "" {
			reason = "denied"
		}
		refuse(w, http.StatusForbidden, fmt.Sprintf("writ denied %s on %s: %s", req.Action, req.Resource, reason))
		return
	}
	if len(d.Chain) == 0 {
		id, err := x509svid.IDFromCert(caller.Certificates[0])
		if err != nil {
			refuse(w, http.StatusForbidden, "the caller's certificate holds no SPIFFE ID")
			return
		}
		d.Chain = []string{id.String()}
	}
	header, err := p.signer.sign(p.now(), d, req, r.Method, path.escaped)
	if err != nil {
		p.log.Error("http proxy: cannot sign the caller header", "error", err)
		refuse(w, http.StatusServiceUnavailable, "the gateway cannot vouch for the caller right now; try again later")
		return
	}
	live, release := p.holder.Hold(r.Context(), caller, req)
	defer release()
	if live.Err() != nil {
		refuse(w, http.StatusForbidden, "writ withdrew the decision before the request was forwarded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, p.cfg.Limits.MaxBodyBytes)
	ctx := context.WithValue(live, forwardKey{}, forward{path: path, header: header})
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// rewrite sends the request to the upstream with the decided path and
// the signed header, and without anything the client sent that could
// speak for the gateway: its token, its own Writ-Caller headers and
// trailers, its forwarding headers (dropped by ReverseProxy before
// rewrite).
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	f, _ := pr.In.Context().Value(forwardKey{}).(forward)
	out := pr.Out
	out.URL.Scheme = p.c.upstream.Scheme
	out.URL.Host = p.c.upstream.Host
	out.URL.Path = "/" + strings.Join(f.path.segs, "/")
	if f.path.trailing && len(f.path.segs) > 0 {
		out.URL.Path += "/"
	}
	out.URL.RawPath = f.path.escaped
	out.Host = ""
	out.Header.Del("Authorization")
	stripCallerHeaders(out.Header)
	out.Header.Set(CallerHeader, f.header)
	// Trailers too: some servers merge them into the headers.
	if out.Trailer != nil {
		out.Trailer.Del("Authorization")
		stripCallerHeaders(out.Trailer)
	}
	pr.SetXForwarded()
}

// stripCallerHeaders removes every header that an upstream might read as
// Writ-Caller: any case (Go canonicalizes those) and any spelling with '_'
// for '-', which CGI-style servers fold into the same variable.
func stripCallerHeaders(h http.Header) {
	for k := range h {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), CallerHeader) {
			delete(h, k)
		}
	}
}

// proxyError answers when the upstream could not be reached or the
// request was cut before the upstream answered.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d bytes", tooLarge.Limit))
	case r.Context().Err() != nil:
		// The caller left, or the decision stopped holding; in either
		// case nobody is waiting for a polite answer.
		refuse(w, http.StatusForbidden, "the request was cut: the caller left or writ withdrew the decision")
	default:
		var ne net.Error
		p.log.Warn("http proxy: upstream unreachable", "upstream", p.c.upstream.Host, "error", err)
		if errors.As(err, &ne) && ne.Timeout() {
			refuse(w, http.StatusGatewayTimeout, "the upstream did not answer in time")
			return
		}
		refuse(w, http.StatusBadGateway, "the upstream could not be reached")
	}
}

// bearerToken takes the delegation token from Authorization. The header
// is the gateway's alone (it is never forwarded), so any other scheme is
// refused rather than silently dropped.
func bearerToken(h http.Header) (string, error) {
	values := h.Values("Authorization")
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", errors.New("more than one Authorization header; send one, with a writ delegation token")
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("the Authorization header is read by the writ gateway as \"Bearer <delegation token>\" and is not forwarded; use that form or send none")
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > 8<<10 {
		return "", errors.New("the bearer token is empty or longer than 8 KiB; send a writ delegation token made for this gateway")
	}
	return token, nil
}

// refuse writes msg as a plain-text answer. Messages quote outside input
// bounded, and say what to do.
func refuse(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}
