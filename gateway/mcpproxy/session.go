package mcpproxy

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"writ.dev/writ/gateway"
)

// maxHoldsPerSession bounds the decisions one session keeps live: one per
// tool and chain it was allowed, so a session cannot make the gateway
// watch without end.
const maxHoldsPerSession = 256

// session is what the gateway keeps for one downstream MCP session: the
// decisions it was allowed on, held live, and the context that ends when
// the session is cut or closed (in-flight upstream calls run under it).
//
// What is held: every allowed tools/call is held with the Holder, one hold
// per (tool, chain the decision named). Any of them ending cuts the whole
// session, because the session is the unit the caller sees and a partly
// revoked session would keep running calls that the revoked decision
// allowed. A later allowed call of the same tool for the same chain (a
// refreshed token, new arguments) replaces that hold, so a token that
// expires after being refreshed does not cut the session.
type session struct {
	ss     *mcp.ServerSession
	owner  string // sessionOwner of the caller; the SDK refuses anyone else
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	holds map[string]*hold
	ended bool
}

type hold struct {
	token   string
	live    context.Context
	release func()
	dropped atomic.Bool // set before a release of ours, so it does not cut
}

// errTooManyHolds refuses a call that would add a hold past the bound.
var errTooManyHolds = errors.New("this session holds the most decisions one session may: open a new MCP session")

// errSessionEnded is the cause of a session's context when it closed
// without being cut.
var errSessionEnded = errors.New("the MCP session ended")

// sessions maps each downstream session to its state.
type sessions struct {
	holder gateway.Holder
	cuts   *cutLog
	log    *slog.Logger

	mu   sync.Mutex
	byID map[*mcp.ServerSession]*session
}

func newSessions(h gateway.Holder, cuts *cutLog, log *slog.Logger) *sessions {
	return &sessions{holder: h, cuts: cuts, log: log, byID: map[*mcp.ServerSession]*session{}}
}

// get returns ss's state, making it on first use. The state is dropped,
// and its holds released, when ss ends.
func (m *sessions) get(ss *mcp.ServerSession, owner string) *session {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.byID[ss]; ok {
		return s
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &session{ss: ss, owner: owner, ctx: ctx, cancel: cancel, holds: map[string]*hold{}}
	m.byID[ss] = s
	go func() {
		_ = ss.Wait()
		m.mu.Lock()
		delete(m.byID, ss)
		m.mu.Unlock()
		s.end(errSessionEnded)
	}()
	return s
}

// hold keeps the decision for r live for the session and returns its live
// context. chain is the decision's chain; it keys the hold with the
// resource.
func (m *sessions) hold(s *session, c gateway.Caller, r gateway.Request, chain []string) (context.Context, error) {
	key := r.Resource + "\x00" + strings.Join(chain, "\x00")
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return nil, context.Cause(s.ctx)
	}
	old := s.holds[key]
	if old != nil && old.token == c.DelegationToken {
		s.mu.Unlock()
		return old.live, nil
	}
	if old == nil && len(s.holds) >= maxHoldsPerSession {
		s.mu.Unlock()
		return nil, errTooManyHolds
	}
	s.mu.Unlock()

	// Hold runs outside the lock: it may ask the server, and a cut that
	// fires at once must be able to take the lock.
	live, release := m.holder.Hold(s.ctx, c, r)
	h := &hold{token: c.DelegationToken, live: live, release: release}
	context.AfterFunc(live, func() {
		if !h.dropped.Load() {
			m.cut(s, live)
		}
	})

	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		h.dropped.Store(true)
		release()
		return nil, context.Cause(s.ctx)
	}
	old = s.holds[key]
	s.holds[key] = h
	s.mu.Unlock()
	if old != nil {
		old.dropped.Store(true)
		old.release()
	}
	return live, nil
}

// cut ends s because a decision it holds stopped holding: the client's
// next request is answered with the reason, then the session is closed.
func (m *sessions) cut(s *session, live context.Context) {
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return
	}
	cause := context.Cause(live)
	reason := "a decision this session relies on no longer allows it (a lock, a closed task or a dual-control watcher leaving)"
	if cause != nil && !errors.Is(cause, context.Canceled) {
		reason = cause.Error()
	}
	m.cuts.add(s.ss.ID(), s.owner, reason)
	m.log.Info("cut MCP session", "session", s.ss.ID(), "reason", reason)
	s.end(errors.New("writ cut this session: " + reason))
	_ = s.ss.Close()
}

// end cancels s's context and releases its holds, once. The holds are
// marked dropped before the context ends, since a Holder's live contexts
// may derive from it and must not read this as a revocation.
func (s *session) end(cause error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	holds := s.holds
	s.holds = nil
	s.mu.Unlock()
	for _, h := range holds {
		h.dropped.Store(true)
	}
	s.cancel(cause)
	for _, h := range holds {
		h.release()
	}
}

// cutLog remembers why recent sessions were cut, so a client that comes
// back with a cut session's ID is told why rather than "not found". Only
// the session's owner is told. It is bounded: the oldest reasons are
// forgotten first.
type cutLog struct {
	mu      sync.Mutex
	reasons map[string]cutReason
	order   []string
	max     int
}

type cutReason struct{ owner, reason string }

func newCutLog(max int) *cutLog { return &cutLog{reasons: map[string]cutReason{}, max: max} }

func (l *cutLog) add(id, owner, reason string) {
	if id == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.reasons[id]; !ok {
		l.order = append(l.order, id)
	}
	l.reasons[id] = cutReason{owner, reason}
	for len(l.order) > l.max {
		delete(l.reasons, l.order[0])
		l.order = l.order[1:]
	}
}

// reason says why session id was cut, when owner is who it belonged to.
func (l *cutLog) reason(id, owner string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.reasons[id]
	if !ok || r.owner != owner {
		return "", false
	}
	return r.reason, true
}
