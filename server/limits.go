package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/delegation"
)

// LimitsConfig bounds what one caller can make a listener hold: connections,
// concurrent calls, time and header bytes. Message sizes are fixed per RPC
// (methodMaxBytes) because they follow from the messages themselves.
type LimitsConfig struct {
	// ConnsPerSource caps connections open at once from one IP address to
	// listen_address and the token and bundle endpoints. Raise it when many
	// agents reach the server through one NAT address.
	ConnsPerSource int `yaml:"conns_per_source"`
	// StreamsPerConn caps concurrent gRPC calls on one connection.
	StreamsPerConn int `yaml:"streams_per_conn"`
	// HandshakeTimeout bounds the TLS handshake on every TCP listener and
	// the request headers on the HTTP ones.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// ReadTimeout bounds reading a whole HTTP request, body included.
	ReadTimeout Duration `yaml:"read_timeout"`
	// WriteTimeout bounds an HTTP request from its headers to the end of
	// the response.
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive HTTP connection with no request, and a
	// gRPC connection with no call, after this long.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps HTTP request headers and gRPC metadata.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// AnonymousCalls caps calls in progress at once on listen_address from
	// callers without a certificate (joins, logins, bundle reads), each of
	// which may make the transport buffer up to networkMaxMessage.
	AnonymousCalls int `yaml:"anonymous_calls"`

	// IssuancePerIdentity limits SVIDs issued to one SPIFFE ID (workload
	// minting, agent renewal); local administrators are not limited.
	IssuancePerIdentity RateLimit `yaml:"issuance_per_identity"`
	// UnauthenticatedPerSource limits join and sign-in attempts from one
	// source address (an IPv6 /64 counts as one), checked before any
	// token is verified.
	UnauthenticatedPerSource RateLimit `yaml:"unauthenticated_per_source"`
	// RequestsPerIdentity limits the token exchanges, and separately the
	// decisions (Check, POST /v1/check), and separately the access requests
	// and reviews, of one SPIFFE ID: each writes an audit event whatever
	// its outcome. Local administrators are not
	// limited.
	RequestsPerIdentity RateLimit `yaml:"requests_per_identity"`
	// RefusalSummaryInterval is how long refusals of unauthenticated
	// callers are counted per source before one summary event records them.
	RefusalSummaryInterval Duration `yaml:"refusal_summary_interval"`
}

// Defaults of the limits section.
const (
	DefaultConnsPerSource   = 64
	DefaultStreamsPerConn   = 100
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultReadTimeout      = 30 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultMaxHeaderBytes   = 16 << 10
	DefaultAnonymousCalls   = 128
)

func (l *LimitsConfig) defaults() {
	if l.ConnsPerSource == 0 {
		l.ConnsPerSource = DefaultConnsPerSource
	}
	if l.StreamsPerConn == 0 {
		l.StreamsPerConn = DefaultStreamsPerConn
	}
	setDuration(&l.HandshakeTimeout, DefaultHandshakeTimeout)
	setDuration(&l.ReadTimeout, DefaultReadTimeout)
	setDuration(&l.WriteTimeout, DefaultWriteTimeout)
	setDuration(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.AnonymousCalls == 0 {
		l.AnonymousCalls = DefaultAnonymousCalls
	}
	l.IssuancePerIdentity.defaults(DefaultIssuancePerIdentity)
	l.UnauthenticatedPerSource.defaults(DefaultUnauthenticatedPerSource)
	l.RequestsPerIdentity.defaults(DefaultRequestsPerIdentity)
	setDuration(&l.RefusalSummaryInterval, DefaultRefusalSummaryInterval)
}

func (l *LimitsConfig) validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("limits.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if l.ConnsPerSource < 1 || l.ConnsPerSource > 100_000 {
		add("conns_per_source", "%d is out of range: 1 to 100000", l.ConnsPerSource)
	}
	if l.StreamsPerConn < 1 || l.StreamsPerConn > 10_000 {
		add("streams_per_conn", "%d is out of range: 1 to 10000", l.StreamsPerConn)
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{
		{"handshake_timeout", l.HandshakeTimeout}, {"read_timeout", l.ReadTimeout},
		{"write_timeout", l.WriteTimeout}, {"idle_timeout", l.IdleTimeout},
	} {
		if d.v.Duration <= 0 || d.v.Duration > time.Hour {
			add(d.field, "%s is out of range: more than 0 and at most 1h", d.v)
		}
	}
	if l.MaxHeaderBytes < 4<<10 || l.MaxHeaderBytes > 1<<20 {
		add("max_header_bytes", "%d is out of range: 4096 to 1048576", l.MaxHeaderBytes)
	}
	errs = append(errs, l.IssuancePerIdentity.validate("limits.issuance_per_identity")...)
	errs = append(errs, l.UnauthenticatedPerSource.validate("limits.unauthenticated_per_source")...)
	errs = append(errs, l.RequestsPerIdentity.validate("limits.requests_per_identity")...)
	if d := l.RefusalSummaryInterval.Duration; d < time.Second || d > time.Hour {
		add("refusal_summary_interval", "%s is out of range: 1s to 1h", l.RefusalSummaryInterval)
	}
	if l.AnonymousCalls < 1 || l.AnonymousCalls > 100_000 {
		add("anonymous_calls", "%d is out of range: 1 to 100000", l.AnonymousCalls)
	}
	return errs
}

// Request size limits of the network listener, per RPC. Each fits its
// message with room to spare: a DER CSR is under 2 KiB even for RSA-4096,
// an ID token or a join JWT a few KiB, a certificate chain a few KiB.
const (
	// smallestMessage is for requests that carry nothing or a few names,
	// and for every method not in methodMaxBytes.
	smallestMessage = 4 << 10
	// csrMessage is a request carrying one CSR and a few short fields.
	csrMessage = 16 << 10
	// tokenMessage is a request carrying a CSR and a JWT or ID token.
	tokenMessage = 32 << 10
	// evidenceMessage carries certificate chains and tokens.
	evidenceMessage = 64 << 10
	// workloadBatchMessage is maxWorkloadBatch EC CSRs (about 300 bytes
	// each; writ's agent makes P-256 keys and sends at most 500 per call)
	// with their entry ids. It sets the transport limit below, which is
	// what a caller without a certificate can make one stream buffer, so
	// it is kept this tight: an agent with RSA keys sends smaller batches.
	workloadBatchMessage = 512 << 10
)

// methodMaxBytes is the largest request each RPC takes on the network
// listener. Administrative RPCs are absent: they are refused there anyway,
// so they get smallestMessage.
var methodMaxBytes = map[string]int{
	writv1.AgentService_Join_FullMethodName:                  tokenMessage,
	writv1.AgentService_JoinWithCertificate_FullMethodName:   evidenceMessage,
	writv1.AgentService_RenewAgent_FullMethodName:            csrMessage,
	writv1.AgentService_MintWorkloadX509SVIDs_FullMethodName: workloadBatchMessage,
	writv1.AgentService_MintWorkloadJWTSVID_FullMethodName:   csrMessage,
	writv1.PersonService_Login_FullMethodName:                tokenMessage,
	writv1.DecisionService_Check_FullMethodName:              evidenceMessage,
	// A request carries up to 32 grants, a reason and a delegation token.
	writv1.RequestService_CreateRequest_FullMethodName: tokenMessage,
	writv1.RequestService_CancelRequest_FullMethodName: tokenMessage,
	writv1.ReviewService_Approve_FullMethodName:        tokenMessage,
	writv1.ReviewService_Deny_FullMethodName:           tokenMessage,
}

// networkMaxMessage is what the network listener's transport reads at all:
// the largest request any RPC takes there, refused before it is buffered.
var networkMaxMessage = func() int {
	n := smallestMessage
	for _, v := range methodMaxBytes {
		n = max(n, v)
	}
	return n
}()

// adminMaxMessage bounds a request on the admin socket: enough for a batch
// of maxBatchEntries identity rules from an entry file.
const adminMaxMessage = 64 << 20

// maxResponseBytes bounds a response on either listener: a full sync
// snapshot or a page of entries.
const maxResponseBytes = 64 << 20

func methodLimit(method string) int {
	if n, ok := methodMaxBytes[method]; ok {
		return n
	}
	return smallestMessage
}

// checkSize refuses a request larger than its method takes. The message
// names the limit and the size, never the content.
func checkSize(method string, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	limit := methodLimit(method)
	if n := proto.Size(m); n > limit {
		return status.Errorf(codes.ResourceExhausted, "the request is %d bytes; this call takes at most %d bytes", n, limit)
	}
	return nil
}

func unarySizeLimit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	defer releaseAnonymousSlot(ctx)
	if err := checkSize(info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func streamSizeLimit(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	defer releaseAnonymousSlot(ss.Context())
	return handler(srv, &sizedStream{ServerStream: ss, method: info.FullMethod})
}

type sizedStream struct {
	grpc.ServerStream
	method string
}

func (s *sizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkSize(s.method, m)
}

// tapNetwork runs when a call's headers arrive on the network listener,
// before its request is read: a caller is refused what it may not call
// without the server buffering a byte of it, and callers without a
// certificate share a fixed number of slots, so together they can make the
// transport hold at most AnonymousCalls × networkMaxMessage.
func (s *Server) tapNetwork(ctx context.Context, info *tap.Info) (context.Context, error) {
	if _, err := s.authorize(ctx, info.FullMethodName); err != nil {
		return nil, err
	}
	if c, _ := callerFromPeer(ctx); !c.ID.IsZero() || c.Local != nil {
		return ctx, nil
	}
	select {
	case s.anonymousSlots <- struct{}{}:
	default:
		return nil, status.Errorf(codes.ResourceExhausted,
			"the server is busy with %d calls from callers without a certificate: retry in a moment", cap(s.anonymousSlots))
	}
	// The interceptors give the slot back when the handler returns, before
	// the caller sees the response; the stream's context ending covers
	// calls that never reach them (a request over the transport limit).
	release := sync.OnceFunc(func() { <-s.anonymousSlots })
	context.AfterFunc(ctx, release)
	return context.WithValue(ctx, anonymousSlotKey{}, release), nil
}

type anonymousSlotKey struct{}

func releaseAnonymousSlot(ctx context.Context) {
	if release, ok := ctx.Value(anonymousSlotKey{}).(func()); ok {
		release()
	}
}

// networkGRPCOptions bound what callers of the network listener, most of
// them holding no certificate yet, can make the server hold.
func (s *Server) networkGRPCOptions() []grpc.ServerOption {
	l := s.cfg.Limits
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(networkMaxMessage),
		grpc.ConnectionTimeout(l.HandshakeTimeout.Duration),
		grpc.MaxConcurrentStreams(uint32(l.StreamsPerConn)),
		grpc.MaxHeaderListSize(uint32(l.MaxHeaderBytes)),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.IdleTimeout.Duration}),
		// Agents hold a Sync stream open; pings more often than this from
		// a client are abuse and end its connection.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second}),
		grpc.InTapHandle(s.tapNetwork),
		grpc.ChainUnaryInterceptor(unarySizeLimit),
		grpc.ChainStreamInterceptor(streamSizeLimit),
	}
}

// newHTTPServer is every HTTP listener's server: its timeouts also bound
// the TLS handshake (net/http uses the smallest of them).
func (s *Server) newHTTPServer(name string, h http.Handler) *http.Server {
	l := s.cfg.Limits
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.HandshakeTimeout.Duration,
		ReadTimeout:       l.ReadTimeout.Duration,
		WriteTimeout:      l.WriteTimeout.Duration,
		IdleTimeout:       l.IdleTimeout.Duration,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// Failed handshakes and timeouts from scanners are routine on a
		// public endpoint: debug, not stderr.
		ErrorLog: slog.NewLogLogger(s.log.With("listener", name).Handler(), slog.LevelDebug),
	}
}

// limitBody caps a request body; a larger one fails to read with
// *http.MaxBytesError, which handlers answer with 413.
func limitBody(limit int64, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h(w, r)
	}
}

// bodyTooLarge reports whether err is a body over limitBody's limit.
func bodyTooLarge(err error) (limit int64, ok bool) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return tooLarge.Limit, true
	}
	return 0, false
}

// writeFormTooLarge answers an oversized token-exchange form in the RFC 6749
// error format, with 413 so that clients can tell it from a bad form.
func writeFormTooLarge(w http.ResponseWriter, limit int64) {
	body, _ := json.Marshal(map[string]string{
		"error":             delegation.CodeInvalidRequest,
		"error_description": fmt.Sprintf("the body is larger than %d bytes: send only the token-exchange parameters", limit),
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = w.Write(body)
}

// perSourceListener refuses a connection from an address that already holds
// max of them, so one source cannot take every connection slot and file
// descriptor. Refused connections are closed at once, before any TLS work.
type perSourceListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]int
}

func limitPerSource(ln net.Listener, max int, log *slog.Logger) net.Listener {
	return &perSourceListener{Listener: ln, max: max, log: log, conns: map[string]int{}}
}

func (l *perSourceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceKey(c.RemoteAddr())
		l.mu.Lock()
		n := l.conns[src]
		if n < l.max {
			l.conns[src] = n + 1
		}
		l.mu.Unlock()
		if n >= l.max {
			l.log.Debug("connection refused: too many from one source", "source", src, "limit", l.max)
			c.Close()
			continue
		}
		return &countedConn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *perSourceListener) release(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[src] <= 1 {
		delete(l.conns, src)
		return
	}
	l.conns[src]--
}

// countedConn gives its slot back once, however often it is closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
