package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// CutError is the cause of a held session's end when the decision stopped
// holding: context.Cause(live) returns it, for front ends that tell the
// caller why.
type CutError struct {
	// Reason is the server's reason for the denial, or why no decision
	// could be had.
	Reason string
}

func (e *CutError) Error() string { return "the decision no longer holds: " + e.Reason }

// ErrReleased is the cause of a held session's end when it was released.
var ErrReleased = errors.New("released")

type hold struct {
	caller Caller
	req    Request
	// live is the session's context, so a session already ended is not
	// counted as cut again.
	live   context.Context
	cancel context.CancelCauseFunc
}

// Hold registers a live session and decides it once more, so a change the
// server told of between the front end's Decide and this call is not
// missed. The returned context ends when a re-decision denies or fails
// (with a *CutError cause), when the caller's certificate expires, when
// ctx ends, or at release.
func (c *Core) Hold(ctx context.Context, caller Caller, r Request) (context.Context, func()) {
	live, cancel := context.WithCancelCause(ctx)
	h := &hold{caller: caller, req: r, live: live, cancel: cancel}
	// Nothing re-decides a session when the evidence it was decided on
	// lapses, so the session ends then.
	var timers []*time.Timer
	expire := func(what, reason string, at time.Time) {
		timers = append(timers, time.AfterFunc(time.Until(at), func() {
			if live.Err() == nil {
				c.metrics.cut(reason)
			}
			cancel(&CutError{Reason: fmt.Sprintf("the caller's %s expired at %s", what, at.UTC().Format(time.RFC3339))})
		}))
	}
	if len(caller.Certificates) > 0 {
		expire("X.509-SVID", CutSVIDExpired, caller.Certificates[0].NotAfter)
	}
	if exp, ok := tokenExpiry(caller.DelegationToken); ok {
		expire("delegation token", CutTokenExpired, exp)
	}
	c.mu.Lock()
	c.holds[h] = struct{}{}
	c.mu.Unlock()
	var once sync.Once
	release := func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.holds, h)
			c.mu.Unlock()
			for _, t := range timers {
				t.Stop()
			}
			cancel(ErrReleased)
		})
	}
	if d, err := c.Decide(live, caller, r); err != nil {
		c.metrics.cut(CutUndecided)
		cancel(&CutError{Reason: err.Error()})
	} else if !d.Allow {
		c.metrics.cut(CutDenied)
		cancel(&CutError{Reason: d.Reason})
	}
	return live, release
}

// redecideRateWait bounds how long a re-decision waits out the server's
// rate limit before the session is cut as undecidable: within the second
// a change may take to cut.
const redecideRateWait = 600 * time.Millisecond

// redecider decides the held sessions again after every change until ctx
// ends.
func (c *Core) redecider(ctx context.Context) {
	for {
		// Decisions may change with the time alone (a guardrail on
		// the hour): held sessions are decided again at every step.
		step := time.NewTimer(time.Until(time.Now().Truncate(c.recheck).Add(c.recheck)))
		select {
		case <-ctx.Done():
			step.Stop()
			return
		case <-c.kick:
		case <-step.C:
		}
		step.Stop()
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		c.redecide(ctx)
		c.mu.Lock()
		c.redecided = gen
		c.passed.Broadcast()
		c.mu.Unlock()
	}
}

// redecide decides every held session once, each distinct (caller,
// request) once, and cuts the sessions denied or left undecided.
func (c *Core) redecide(ctx context.Context) {
	groups := map[cacheKey][]*hold{}
	c.mu.Lock()
	for h := range c.holds {
		args, err := encodeArguments(h.req.Arguments)
		if err != nil {
			if h.live.Err() == nil {
				c.metrics.cut(CutUndecided)
			}
			h.cancel(&CutError{Reason: err.Error()})
			continue
		}
		k := keyOf(h.caller, h.req, args)
		groups[k] = append(groups[k], h)
	}
	c.mu.Unlock()
	sem := make(chan struct{}, redecideWorkers)
	var wg sync.WaitGroup
	for _, hs := range groups {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			first := hs[0]
			d, err := c.Decide(ctx, first.caller, first.req)
			// Deciding every held session at once may outrun the
			// server's rate limit for the gateway; a session is cut
			// for that only if it lasts past redecideRateWait.
			for wait, waited := 20*time.Millisecond, time.Duration(0); errors.Is(err, ErrRateLimited) && waited < redecideRateWait; wait *= 2 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				waited += wait
				d, err = c.Decide(ctx, first.caller, first.req)
			}
			var cut *CutError
			reason := CutDenied
			switch {
			case err != nil:
				cut, reason = &CutError{Reason: err.Error()}, CutUndecided
			case !d.Allow:
				cut = &CutError{Reason: d.Reason}
			default:
				return
			}
			if ctx.Err() != nil {
				return
			}
			c.log.Info("cutting live sessions: the decision no longer holds", "caller", callerName(first.caller),
				"action", first.req.Action, "resource", first.req.Resource, "sessions", len(hs), "reason", cut.Reason)
			for _, h := range hs {
				if h.live.Err() == nil {
					c.metrics.cut(reason)
				}
				h.cancel(cut)
			}
		}()
	}
	wg.Wait()
}

// Held returns how many sessions are held, for tests and metrics.
func (c *Core) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.holds)
}

// WaitRedecided blocks until the held sessions have been decided again
// after every change seen so far, or ctx ends: tests use it instead of
// sleeping.
func (c *Core) WaitRedecided(ctx context.Context) error {
	c.mu.Lock()
	target := c.gen
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.passed.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.redecided < target && ctx.Err() == nil {
		c.passed.Wait()
	}
	return ctx.Err()
}

// callerName is the caller's SPIFFE ID for logs, or "unknown".
func callerName(c Caller) string {
	if len(c.Certificates) > 0 && len(c.Certificates[0].URIs) == 1 {
		return c.Certificates[0].URIs[0].String()
	}
	return "unknown"
}

func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// tokenExpiry reads a JWT's exp without verifying it: the server verified
// the token when it decided, and this only ends a session sooner.
func tokenExpiry(token string) (time.Time, bool) {
	if token == "" || len(token) > 64<<10 {
		return time.Time{}, false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 || exp > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(int64(exp), 0), true
}
