// Package mcpproxy is the gateway's MCP front end: it serves streamable
// HTTP MCP endpoints to callers that authenticate with their X.509-SVID
// (and, when acting for someone, a delegation token made for the gateway),
// decides every tool call with writ before forwarding it to the upstream
// MCP server, lists only the tools the caller's chain may call, and cuts a
// session the moment a decision it relies on stops holding.
//
// Each upstream gets its own endpoint, PublicURL + "/<name>", so tools keep
// the names their server gives them; the resource of a tool is
// "mcp/<name>/tool/<tool>" and the action is "call". Only tools are
// proxied: the upstream's resources and prompts are not exposed, since
// nothing decides them.
package mcpproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"writ.dev/writ/gateway"
)

// Options are the proxy's collaborators.
type Options struct {
	Decider gateway.Decider
	Holder  gateway.Holder
	// UpstreamClient opens the streamable HTTP upstream sessions, with the
	// gateway's own SVID when an upstream wants mTLS. Nil: a client with no
	// certificate.
	UpstreamClient *http.Client
	// PinnedClient returns the client for an upstream whose config names
	// its SPIFFE ID (upstream_id): one that accepts that ID alone.
	// Required when any upstream sets upstream_id.
	PinnedClient func(id spiffeid.ID) *http.Client
	// Stderr receives stdio upstreams' standard error. Nil: discarded.
	Stderr io.Writer
	// Logger logs what the operator needs; nil: nothing is logged.
	Logger *slog.Logger
}

// Proxy serves the MCP endpoints and their protected-resource metadata.
// Mount it at the root of an mTLS listener whose tls.Config verifies
// client certificates against the trust bundle.
type Proxy struct {
	cfg       Config
	decider   gateway.Decider
	endpoints map[string]*endpoint // by path
	metadata  map[string]http.Handler
	sessions  *sessions
	cuts      *cutLog
}

type endpoint struct {
	p           *Proxy
	up          *upstream
	server      *mcp.Server
	handler     http.Handler
	metadataURL string
}

// callerKey carries the Caller from the HTTP layer to the verifier.
type callerKey struct{}

// callerExtra is the TokenInfo.Extra key the Caller rides under to the
// MCP method handlers: TokenInfo is the only per-request value the SDK
// hands from the HTTP request to them.
const callerExtra = "writ.dev/caller"

// New builds the proxy; cfg must have passed Validate. Upstreams are
// connected when first needed, so the gateway starts while one is down.
func New(cfg Config, opts Options) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Decider == nil || opts.Holder == nil {
		return nil, errors.New("mcpproxy: a Decider and a Holder are required")
	}
	if opts.UpstreamClient == nil {
		opts.UpstreamClient = &http.Client{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		cfg:       cfg,
		decider:   opts.Decider,
		endpoints: map[string]*endpoint{},
		metadata:  map[string]http.Handler{},
		cuts:      newCutLog(4096),
	}
	p.sessions = newSessions(opts.Holder, p.cuts, opts.Logger)
	baseMeta := &oauthex.ProtectedResourceMetadata{
		Resource:                              cfg.PublicURL,
		AuthorizationServers:                  []string{cfg.TokenEndpoint},
		BearerMethodsSupported:                []string{"header"},
		ResourceName:                          "writ gateway (MCP)",
		TLSClientCertificateBoundAccessTokens: true,
	}
	p.metadata[wellKnown] = auth.ProtectedResourceMetadataHandler(baseMeta)
	for _, uc := range cfg.Upstreams {
		path := cfg.endpointPath(uc.Name)
		client := opts.UpstreamClient
		if uc.UpstreamID != "" {
			if opts.PinnedClient == nil {
				return nil, fmt.Errorf("mcpproxy: upstream %s names upstream_id but no PinnedClient was given", uc.Name)
			}
			client = opts.PinnedClient(spiffeid.RequireFromString(uc.UpstreamID))
		}
		e := &endpoint{
			p:           p,
			up:          newUpstream(uc, client, opts.Stderr, cfg.Limits.CallTimeout),
			metadataURL: cfg.metadataURL(path),
		}
		e.server = mcp.NewServer(&mcp.Implementation{Name: "writ-gateway/" + uc.Name, Version: "1"}, &mcp.ServerOptions{
			Logger: opts.Logger,
			// The tool list is per caller and not watched upstream for
			// changes to pass on, so no list_changed is promised.
			Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
		})
		e.server.AddReceivingMiddleware(e.middleware)
		mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return e.server }, &mcp.StreamableHTTPOptions{
			Logger:              opts.Logger,
			MaxRequestBodyBytes: cfg.Limits.MaxBodyBytes,
			SessionTimeout:      cfg.Limits.SessionIdleTimeout,
		})
		// RequireBearerToken is the SDK's one way to attach a TokenInfo to
		// the request, which is what binds a session to the SVID that opened
		// it (another SVID presenting the session ID is refused) and what
		// carries the Caller to the method handlers. The token itself was
		// read before; the verifier only packs the Caller.
		e.handler = auth.RequireBearerToken(verifyCaller, &auth.RequireBearerTokenOptions{
			ResourceMetadataURL:    e.metadataURL,
			AllowMissingExpiration: true,
		})(stripAuthorization(mcpHandler))
		p.endpoints[path] = e
		meta := *baseMeta
		meta.Resource = cfg.endpointURL(uc.Name)
		meta.ResourceName = "writ gateway: MCP server " + uc.Name
		p.metadata[wellKnown+path] = auth.ProtectedResourceMetadataHandler(&meta)
	}
	return p, nil
}

// Endpoint returns the URL upstream name is served at.
func (p *Proxy) Endpoint(name string) string { return p.cfg.endpointURL(name) }

// Close ends every upstream session (stopping stdio servers) and every
// downstream session.
func (p *Proxy) Close() error {
	for _, e := range p.endpoints {
		for ss := range e.server.Sessions() {
			_ = ss.Close()
		}
		e.up.close()
	}
	return nil
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := p.metadata[r.URL.Path]; ok {
		h.ServeHTTP(w, r)
		return
	}
	if e, ok := p.endpoints[r.URL.Path]; ok {
		e.serveHTTP(w, r)
		return
	}
	http.Error(w, "no MCP endpoint here: the gateway serves "+p.cfg.PublicURL+"/<server name>", http.StatusNotFound)
}

func (e *endpoint) serveHTTP(w http.ResponseWriter, r *http.Request) {
	caller, err := gateway.CallerFromTLS(r.TLS, r.RemoteAddr, "")
	if err != nil {
		e.challenge(w, "", err.Error())
		return
	}
	token, present, err := bearerToken(r.Header)
	if err != nil {
		e.challenge(w, "invalid_request", err.Error())
		return
	}
	if !present && e.p.cfg.RequireDelegation {
		e.challenge(w, "", "this endpoint needs a delegation token: get one with `writ token exchange` for the gateway's SPIFFE ID and send it as \"Authorization: Bearer <token>\"")
		return
	}
	caller.DelegationToken = token

	id := r.Header.Get("Mcp-Session-Id")
	if id != "" {
		if reason, ok := e.p.cuts.reason(id, sessionOwner(caller)); ok {
			e.refuseCut(w, r, reason)
			return
		}
	} else if r.Method == http.MethodPost && e.p.liveSessions() >= e.p.cfg.Limits.MaxSessions {
		http.Error(w, fmt.Sprintf("the gateway holds its maximum of %d MCP sessions: close unused sessions or try again later", e.p.cfg.Limits.MaxSessions), http.StatusServiceUnavailable)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, caller))
	r.Header.Set("Authorization", "Bearer writ")
	e.handler.ServeHTTP(w, r)
}

// challenge answers 401 with the RFC 9728 pointer to the metadata, so an
// MCP client can find the token endpoint.
func (e *endpoint) challenge(w http.ResponseWriter, code, msg string) {
	v := fmt.Sprintf("Bearer resource_metadata=%q", e.metadataURL)
	if code != "" {
		v += fmt.Sprintf(", error=%q", code)
	}
	w.Header().Set("WWW-Authenticate", v)
	http.Error(w, msg, http.StatusUnauthorized)
}

// liveSessions counts initialized sessions: a client probing with the
// newer protocol's server/discover makes a session that the SDK closes
// right after the request, and counting it would refuse the initialize
// that follows.
func (p *Proxy) liveSessions() int {
	n := 0
	for _, e := range p.endpoints {
		for ss := range e.server.Sessions() {
			if ss.InitializeParams() != nil {
				n++
			}
		}
	}
	return n
}

func verifyCaller(ctx context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
	c, ok := r.Context().Value(callerKey{}).(gateway.Caller)
	if !ok {
		return nil, fmt.Errorf("%w: no caller", auth.ErrInvalidToken)
	}
	return &auth.TokenInfo{UserID: sessionOwner(c), Extra: map[string]any{callerExtra: c}}, nil
}

// sessionOwner is who a session belongs to: the SPIFFE ID of the SVID that
// opened it. SVIDs rotate, the ID stays.
func sessionOwner(c gateway.Caller) string {
	leaf := c.Certificates[0]
	if len(leaf.URIs) > 0 {
		return leaf.URIs[0].String()
	}
	sum := sha256.Sum256(leaf.Raw)
	return "x509:" + hex.EncodeToString(sum[:])
}

// stripAuthorization removes the header before the SDK sees the request,
// so no handler, log or upstream can ever be handed the caller's token.
func stripAuthorization(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Authorization")
		h.ServeHTTP(w, r)
	})
}

func callerOf(req mcp.Request) (gateway.Caller, bool) {
	extra := req.GetExtra()
	if extra == nil || extra.TokenInfo == nil {
		return gateway.Caller{}, false
	}
	c, ok := extra.TokenInfo.Extra[callerExtra].(gateway.Caller)
	return c, ok
}

// refuseCut answers a request on a cut session with 404, as the MCP spec
// says for a terminated session, and with a JSON-RPC error naming the
// reason when the request is a call the client waits on: clients surface
// that error rather than a bare "session not found".
func (e *endpoint) refuseCut(w http.ResponseWriter, r *http.Request, reason string) {
	msg := "writ cut this session: " + reason + "; start a new session"
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.p.cfg.Limits.MaxBodyBytes))
	var req *jsonrpc.Request
	if err == nil {
		m, _ := jsonrpc.DecodeMessage(body)
		req, _ = m.(*jsonrpc.Request)
	}
	// A call's ID is echoed, as JSON-RPC requires, only when it is short:
	// the answer must not carry a caller's megabyte back.
	if req == nil || !req.IsCall() {
		http.Error(w, msg, http.StatusNotFound)
		return
	}
	if id, ok := req.ID.Raw().(string); ok && len(id) > 128 {
		http.Error(w, msg, http.StatusNotFound)
		return
	}
	data, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: codeSessionCut, Message: msg}})
	if err != nil {
		http.Error(w, msg, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write(data)
}

// codeSessionCut is the JSON-RPC error code of requests on a cut session,
// in the range JSON-RPC leaves to servers.
const codeSessionCut = -32001

// bearerToken reads the Authorization header. A header that is present but
// not one "Bearer <JWT>" is an error, never read as "no token".
func bearerToken(h http.Header) (token string, present bool, err error) {
	vals := h.Values("Authorization")
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", true, errors.New("more than one Authorization header: send one, \"Authorization: Bearer <delegation token>\"")
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true, errors.New("the Authorization header is not \"Bearer <delegation token>\"")
	}
	if err := checkTokenShape(tok); err != nil {
		return "", true, err
	}
	return tok, true, nil
}

// maxTokenBytes bounds a delegation token; real ones are well under 2 KiB.
const maxTokenBytes = 8 << 10

// checkTokenShape refuses what cannot be a compact JWS before it costs a
// decision: the signature, audience and binding are the server's to check.
func checkTokenShape(tok string) error {
	if len(tok) > maxTokenBytes {
		return fmt.Errorf("the bearer token is %d bytes, more than the %d a delegation token can be", len(tok), maxTokenBytes)
	}
	parts := 0
	for i, seg := range strings.Split(tok, ".") {
		parts = i + 1
		if seg == "" {
			return errors.New("the bearer token is not a JWT (three non-empty base64url parts separated by '.'): send a delegation token from `writ token exchange`")
		}
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return errors.New("the bearer token is not a JWT (three non-empty base64url parts separated by '.'): send a delegation token from `writ token exchange`")
			}
		}
	}
	if parts != 3 {
		return errors.New("the bearer token is not a JWT (three non-empty base64url parts separated by '.'): send a delegation token from `writ token exchange`")
	}
	return nil
}
