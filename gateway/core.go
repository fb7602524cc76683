package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

const (
	// DefaultCacheSize bounds the decisions a Core remembers: enough for
	// the distinct (caller, request) pairs of a busy gateway between two
	// changes, small enough to stay a few megabytes.
	DefaultCacheSize = 10_000
	// DefaultDecideTimeout bounds one call to the server.
	DefaultDecideTimeout = 5 * time.Second
	// redecideWorkers bounds the decisions a re-decision of held sessions
	// has in flight at once.
	redecideWorkers = 16
	// watchRetryMin and watchRetryMax bound the wait before watching the
	// server's decisions again after the stream broke.
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// CoreConfig is what a Core is built from.
type CoreConfig struct {
	// Conn reaches the writ server over mTLS with the gateway's own
	// X.509-SVID (see Dial): the server checks that delegation tokens were
	// made for that identity.
	Conn grpc.ClientConnInterface
	// CacheSize bounds the decision cache; 0 means DefaultCacheSize, a
	// negative value turns the cache off.
	CacheSize int
	// DecideTimeout bounds one call to the server; 0 means
	// DefaultDecideTimeout.
	DecideTimeout time.Duration
	Log           *slog.Logger
	// Metrics, when set, counts cache hits, cuts and stream breaks and
	// exports the held sessions and the stream's state.
	Metrics *Metrics
}

// Core is the gateway's Decider and Holder over the server's
// DecisionService. It caches decisions only while the server's
// WatchDecisions stream is up, clears them on every message of it, and on
// every message, and whenever the stream breaks, decides every held
// session again and cuts those that no longer hold or cannot be decided.
// So an allow is never served from the cache past a change the server has
// told of, nor while the gateway could miss one.
type Core struct {
	api     writv1.DecisionServiceClient
	log     *slog.Logger
	timeout time.Duration
	size    int
	// silence is how long the decision stream may stay silent
	// (watchSilence; shorter in tests).
	silence time.Duration
	// now is the clock cache entries are dated by; recheck is how often
	// held sessions are decided again though nothing changed.
	now     func() time.Time
	recheck time.Duration
	metrics *Metrics

	mu sync.Mutex
	// watching is true from the first message of a WatchDecisions stream
	// until it breaks; the cache is used only then.
	watching bool
	// gen counts the changes seen (messages and breaks): a decision
	// fetched across one is not cached.
	gen   uint64
	cache map[cacheKey]cached
	holds map[*hold]struct{}
	// kick wakes the re-decider; one pending kick covers any number of
	// changes.
	kick chan struct{}
	// redecided is the gen the last finished re-decision of the held
	// sessions started at; passed is signalled when it moves.
	redecided uint64
	passed    *sync.Cond
}

// NewCore builds a Core; Run must be running for it to cache decisions
// and to cut held sessions.
func NewCore(cfg CoreConfig) (*Core, error) {
	if cfg.Conn == nil {
		return nil, errors.New("gateway: a connection to the writ server is required")
	}
	c := &Core{
		api: writv1.NewDecisionServiceClient(cfg.Conn), log: cfg.Log, timeout: cfg.DecideTimeout, size: cfg.CacheSize,
		cache: map[cacheKey]cached{}, holds: map[*hold]struct{}{}, kick: make(chan struct{}, 1), silence: watchSilence,
		now: time.Now, recheck: timeStep, metrics: cfg.Metrics,
	}
	c.passed = sync.NewCond(&c.mu)
	cfg.Metrics.observeCore(c)
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.timeout <= 0 {
		c.timeout = DefaultDecideTimeout
	}
	if c.size == 0 {
		c.size = DefaultCacheSize
	}
	return c, nil
}

// timeStep is how far apart in time decisions are taken for the same: a
// guardrail may read the time (context.hour, context.weekday,
// context.time), which no change on the server announces. A cached
// decision lasts until the next whole step, and held sessions are decided
// again at every step, so such a guardrail takes effect at the gateway
// within a minute.
const timeStep = time.Minute

// cached is a decision and when it stops being served.
type cached struct {
	d     Decision
	until time.Time
}

// cacheKey names one decision: who (the leaf certificate and the
// delegation token, by hash) asks what.
type cacheKey [sha256.Size]byte

func keyOf(c Caller, r Request, args []byte) cacheKey {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	if len(c.Certificates) > 0 {
		field(c.Certificates[0].Raw)
	} else {
		field(nil)
	}
	field([]byte(c.DelegationToken))
	field([]byte(r.Action))
	field([]byte(r.Resource))
	// The source address is part of the decision (a guardrail may read
	// it), but only its host: a new connection's port would defeat the
	// cache.
	field([]byte(hostOf(c.SourceAddress)))
	field(args)
	var k cacheKey
	h.Sum(k[:0])
	return k
}

// Decide asks the server, or answers from the cache while the server's
// change stream is up.
func (c *Core) Decide(ctx context.Context, caller Caller, r Request) (Decision, error) {
	args, err := encodeArguments(r.Arguments)
	if err != nil {
		return Decision{}, err
	}
	key := keyOf(caller, r, args)
	asked := c.now()
	c.mu.Lock()
	e, hit := c.cache[key]
	gen, watching := c.gen, c.watching
	c.mu.Unlock()
	if hit && watching && asked.Before(e.until) {
		c.metrics.cacheResult(true)
		return e.d, nil
	}
	c.metrics.cacheResult(false)
	d, err := c.ask(ctx, caller, r, args)
	if err != nil {
		return Decision{}, err
	}
	c.mu.Lock()
	// A change seen while the server decided may postdate the answer.
	if c.watching && c.gen == gen && c.size > 0 {
		if len(c.cache) >= c.size {
			for k := range c.cache {
				delete(c.cache, k)
				break
			}
		}
		// Dated from before the question: the server decided at some
		// time after it.
		c.cache[key] = cached{d: d, until: asked.Truncate(c.recheck).Add(c.recheck)}
	}
	c.mu.Unlock()
	return d, nil
}

func encodeArguments(args map[string]any) ([]byte, error) {
	if args == nil {
		return nil, nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("gateway: the arguments are not JSON: %v", err)
	}
	return b, nil
}

// ask calls the server's Check with the caller's evidence.
func (c *Core) ask(ctx context.Context, caller Caller, r Request, args []byte) (Decision, error) {
	if len(caller.Certificates) == 0 {
		return Decision{}, ErrNoPeerCertificate
	}
	req := &writv1.CheckRequest{Action: r.Action, Resource: r.Resource, DelegationToken: caller.DelegationToken,
		SourceAddress: caller.SourceAddress, ArgumentsJson: string(args)}
	for _, cert := range caller.Certificates {
		req.X509Svid = append(req.X509Svid, cert.Raw)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.api.Check(ctx, req)
	if err != nil {
		return Decision{}, checkError(err)
	}
	return Decision{Allow: resp.GetAllow(), Reason: resp.GetReason(), Chain: resp.GetChain()}, nil
}

// checkError turns a refusal of the evidence (a replayed or misdirected
// delegation token, a certificate that does not verify) into an error
// that says so, and anything else into one saying no decision was had.
func checkError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("gateway: no decision: %w", err)
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.PermissionDenied:
		return fmt.Errorf("gateway: %w: %s", ErrEvidenceRefused, st.Message())
	case codes.ResourceExhausted:
		return fmt.Errorf("%w (limits.requests_per_identity of the gateway's identity): %s", ErrRateLimited, st.Message())
	}
	return fmt.Errorf("gateway: no decision from the writ server (%s): %s", st.Code(), st.Message())
}

// ErrEvidenceRefused is a Decide error of the caller's making: the server
// would not decide on what it presented (a delegation token made for
// another audience, bound to another certificate, expired or forged).
// Retrying does not help; front ends answer it as an authentication
// failure with the server's reason.
var ErrEvidenceRefused = errors.New("the writ server refused the caller's evidence")

// ErrRateLimited is the error of a decision the server refused to make
// because this gateway asked too often.
var ErrRateLimited = errors.New("gateway: the writ server is rate limiting this gateway's decisions")

// Run watches the server's decision changes until ctx ends, reconnecting
// with backoff, and keeps the held sessions decided.
func (c *Core) Run(ctx context.Context) error {
	go c.redecider(ctx)
	wait := watchRetryMin
	for {
		err := c.watch(ctx)
		c.changed(false)
		if ctx.Err() != nil {
			return nil
		}
		c.metrics.streamBroke()
		c.log.Warn("the writ server's decision stream broke: deciding without the cache and deciding held sessions again", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, watchRetryMax)
		if err == nil || errors.Is(err, errWatched) {
			wait = watchRetryMin
		}
	}
}

// errWatched marks a stream that had delivered messages before it broke,
// so the next attempt is made soon.
var errWatched = errors.New("the stream ended after it was up")

func (c *Core) watch(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := c.api.WatchDecisions(ctx, &writv1.WatchDecisionsRequest{})
	if err != nil {
		return err
	}
	// The server speaks at least every 2 s; silence past watchSilence
	// means it or the path to it is lost, and the cache must go.
	silent := time.AfterFunc(c.silence, func() { cancel(errSilent) })
	defer silent.Stop()
	up := false
	for {
		m, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errSilent) {
				err = cause
			}
			if up {
				return fmt.Errorf("%w: %v", errWatched, err)
			}
			return err
		}
		silent.Reset(c.silence)
		if !up {
			c.log.Info("watching the writ server's decisions", "revision", m.GetRevision())
		} else if m.GetHeartbeat() {
			continue
		}
		up = true
		c.changed(true)
	}
}

// watchSilence is how long the decision stream may stay silent before it
// is taken for broken: the server promises a message every 2 s.
const watchSilence = 5 * time.Second

var errSilent = errors.New("the writ server's decision stream went silent past its heartbeat")

// changed drops the cache and has every held session decided again;
// watching says whether the stream is up after the change.
func (c *Core) changed(watching bool) {
	c.mu.Lock()
	c.gen++
	c.watching = watching
	clear(c.cache)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Watching reports whether the Core is following the server's changes
// (and so may answer from its cache).
func (c *Core) Watching() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.watching
}
