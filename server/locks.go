package server

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

const (
	// lockRefreshInterval is how often a server looks for lock changes made
	// by others sharing its store; a lock is in force everywhere within
	// about this long (the goal is one second).
	lockRefreshInterval = 500 * time.Millisecond
	// lockStaleAfter bounds how old the in-memory lock set may be. A server
	// that cannot read the store for longer refuses to issue rather than
	// issue past a lock it has not seen.
	lockStaleAfter = 5 * time.Second

	maxLockReasonLen = 512
	maxJoinMethodLen = 64
)

var joinMethodName = regexp.MustCompile(`^[a-z0-9_-]+$`)

// lockSet is a server's in-memory copy of the locks in force, kept fresh by
// a background refresher so that checking one costs no store round trip.
type lockSet struct {
	s *Server

	refreshMu sync.Mutex // one refresh at a time

	mu       sync.RWMutex
	loaded   bool
	rev      int64        // store revision the locks were read at
	locks    []store.Lock // as listed; expiry is checked when matching
	loadedAt time.Time    // last successful refresh, on the monotonic clock
	lastErr  error
}

// loadLocks makes the server's lock set and loads it; lockSet.run keeps it
// fresh. A failed first load is logged, not fatal: issuance is refused until
// a load succeeds.
func (s *Server) loadLocks(ctx context.Context) {
	s.locks = &lockSet{s: s}
	if err := s.locks.refresh(ctx, true); err != nil {
		s.log.Error("loading locks; issuance is refused until they can be read", "err", err)
	}
}

// run refreshes the lock set every lockRefreshInterval until ctx ends.
func (ls *lockSet) run(ctx context.Context) {
	t := time.NewTicker(lockRefreshInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := ls.refresh(ctx, false)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			ls.s.log.Error("refreshing locks", "err", err)
			failing = true
		case err == nil && failing:
			ls.s.log.Info("locks refreshed again")
			failing = false
		}
	}
}

// refresh reads the store revision and reloads the locks only when it moved
// (or when force is set), so an idle trust domain costs one cheap query per
// interval.
func (ls *lockSet) refresh(ctx context.Context, force bool) error {
	ls.refreshMu.Lock()
	defer ls.refreshMu.Unlock()
	rev, err := ls.s.store.Revision(ctx)
	if err != nil {
		ls.fail(err)
		return err
	}
	ls.mu.RLock()
	unchanged := ls.loaded && rev == ls.rev
	ls.mu.RUnlock()
	if unchanged && !force {
		ls.mu.Lock()
		ls.loadedAt, ls.lastErr = time.Now(), nil
		ls.mu.Unlock()
		return nil
	}
	// A change committed between the two reads is picked up now and read
	// again at the next refresh: never older than rev.
	locks, err := ls.s.store.ListLocks(ctx, ls.s.now())
	if err != nil {
		ls.fail(err)
		return err
	}
	ls.mu.Lock()
	ls.loaded, ls.rev, ls.locks, ls.loadedAt, ls.lastErr = true, rev, locks, time.Now(), nil
	ls.mu.Unlock()
	return nil
}

func (ls *lockSet) fail(err error) {
	ls.mu.Lock()
	ls.lastErr = err
	ls.mu.Unlock()
}

// fresh refuses, with Unavailable, when the lock set is not loaded or older
// than lockStaleAfter: what would be done (issuance, delegation) is refused
// rather than done past a lock this server has not seen. Called with mu held.
func (ls *lockSet) fresh(what string) error {
	if !ls.loaded || time.Since(ls.loadedAt) > lockStaleAfter {
		return status.Errorf(codes.Unavailable, "locks could not be read from the store for more than %s (%v): %s is refused until they can", lockStaleAfter, ls.lastErr, what)
	}
	return nil
}

// checkDelegation refuses a delegation token while a lock names anyone in
// chain (every actor and the person) or the task it would be made under:
// a locked identity gets no token to act with, as it gets no SVID, and a
// locked task lends nobody its members.
func (ls *lockSet) checkDelegation(chain []spiffeid.ID, taskID string) error {
	if ls == nil {
		return status.Error(codes.Unavailable, "locks are not loaded yet: delegation is refused until they are")
	}
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	if err := ls.fresh("delegation"); err != nil {
		return err
	}
	now := ls.s.now()
	for _, l := range ls.locks {
		if lockExpired(l, now) {
			continue
		}
		kind := identity.LockKind(l.Target.Kind)
		if kind == identity.LockTask && l.Target.Value == taskID {
			return status.Errorf(codes.PermissionDenied, "task %s is locked by lock %s: %s", taskID, l.ID, l.Reason)
		}
		for _, id := range chain {
			if identity.LockCoversID(kind, l.Target.Value, id) {
				return status.Errorf(codes.PermissionDenied, "%s is locked by lock %s (%s %s): %s", id, l.ID, l.Target.Kind, l.Target.Value, l.Reason)
			}
		}
	}
	return nil
}

// checkIssue refuses issuance of an SVID for id when a lock in force names
// it. spiffe-id locks match the ID exactly; id-prefix locks match the ID and
// everything below it by whole path segments; node and agent locks match
// the node's or agent's own SPIFFE ID exactly (so its own SVID is neither
// issued nor renewed). join-method locks take effect at node attestation.
func (ls *lockSet) checkIssue(id spiffeid.ID) error {
	if ls == nil {
		return status.Error(codes.Unavailable, "locks are not loaded yet: issuance is refused until they are")
	}
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	if err := ls.fresh("issuance"); err != nil {
		return err
	}
	now := ls.s.now()
	for _, l := range ls.locks {
		if lockExpired(l, now) {
			continue
		}
		if identity.LockCoversID(identity.LockKind(l.Target.Kind), l.Target.Value, id) {
			return status.Errorf(codes.PermissionDenied, "%s is locked by lock %s (%s %s): %s", id, l.ID, l.Target.Kind, l.Target.Value, l.Reason)
		}
	}
	return nil
}

// checkJoin refuses a join by method while a join-method lock names it.
func (ls *lockSet) checkJoin(method string) error {
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	if err := ls.fresh("joining"); err != nil {
		return err
	}
	now := ls.s.now()
	for _, l := range ls.locks {
		if !lockExpired(l, now) && identity.LockKind(l.Target.Kind) == identity.LockJoinMethod && l.Target.Value == method {
			return status.Errorf(codes.PermissionDenied, "joining by %s is locked by lock %s: %s", method, l.ID, l.Reason)
		}
	}
	return nil
}

// taskIDChars is what a task id may hold (the store's ID rule).
var taskIDChars = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func lockExpired(l store.Lock, now time.Time) bool {
	return !l.ExpiresAt.IsZero() && !now.Before(l.ExpiresAt)
}

// lockTargetFromProto validates a lock target; errors name the field.
func (s *Server) lockTargetFromProto(pt *writv1.LockTarget) (store.LockTarget, error) {
	kind, err := identity.ParseLockKind("target.kind", pt.GetKind())
	if err != nil {
		return store.LockTarget{}, err
	}
	value := pt.GetValue()
	switch {
	case kind.NamesID():
		id, err := identity.ParseIDInTrustDomain("target.value", value, s.td)
		if err != nil {
			return store.LockTarget{}, err
		}
		// A lock on spiffe://TD/person/example.com/Erin would name nobody
		// (people's IDs are lowercase) and leave erin free.
		if err := identity.CheckPersonCase("target.value", id); err != nil {
			return store.LockTarget{}, err
		}
		value = id.String()
	case kind == identity.LockJoinMethod:
		if len(value) > maxJoinMethodLen || !joinMethodName.MatchString(value) {
			return store.LockTarget{}, &identity.FieldError{Field: "target.value", Msg: fmt.Sprintf("%s is not a join method name: use 1 to %d of a-z, 0-9, '_' and '-', e.g. join_token", identity.Quote(value), maxJoinMethodLen)}
		}
	case kind == identity.LockTask:
		if len(value) > 128 || !taskIDChars.MatchString(value) {
			return store.LockTarget{}, &identity.FieldError{Field: "target.value", Msg: fmt.Sprintf("%s is not a task id: use 1 to 128 of letters, digits, '.', '_' and '-'", identity.Quote(value))}
		}
	}
	return store.LockTarget{Kind: string(kind), Value: value}, nil
}

func checkLockReason(r string) error {
	n := utf8.RuneCountInString(r)
	switch {
	case strings.TrimSpace(r) == "":
		return &identity.FieldError{Field: "reason", Msg: "is required: say why the target is locked, e.g. an incident reference"}
	case !utf8.ValidString(r):
		return &identity.FieldError{Field: "reason", Msg: "is not valid UTF-8"}
	case n > maxLockReasonLen:
		return &identity.FieldError{Field: "reason", Msg: fmt.Sprintf("is %d characters long; at most %d", n, maxLockReasonLen)}
	}
	for i, c := range r {
		if !unicode.IsPrint(c) {
			return &identity.FieldError{Field: "reason", Msg: fmt.Sprintf("holds the unprintable character %U at byte %d: use printable text on one line", c, i)}
		}
	}
	return nil
}

type lockService struct {
	writv1.UnimplementedLockServiceServer
	s *Server
}

func (ls *lockService) CreateLock(ctx context.Context, req *writv1.CreateLockRequest) (*writv1.Lock, error) {
	s := ls.s
	target, err := s.lockTargetFromProto(req.GetTarget())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := checkLockReason(req.GetReason()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	now := s.now()
	l := store.Lock{Target: target, Reason: req.GetReason(), CreatedBy: callerString(ctx), CreatedAt: now}
	if ttl := req.GetTtl(); ttl != "" {
		d, err := identity.ParseTTL("ttl", ttl, 0)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		// Stored in whole seconds: round up, so a lock never ends early.
		l.ExpiresAt = now.Add(d + time.Second - 1).Truncate(time.Second)
	}
	l.ID = store.NewID()
	ev, err := s.event(ctx, audit.EventLockCreate, l.ID, lockDetails(l))
	if err != nil {
		return nil, err
	}
	out, err := s.store.CreateLock(ctx, l, ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	s.lockChanged(ctx, "lock created", out)
	return lockToProto(out), nil
}

func (ls *lockService) DeleteLock(ctx context.Context, req *writv1.DeleteLockRequest) (*writv1.Lock, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	ev, err := ls.s.event(ctx, audit.EventLockDelete, req.GetId(), nil)
	if err != nil {
		return nil, err
	}
	out, err := ls.s.store.DeleteLock(ctx, req.GetId(), ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	ls.s.lockChanged(ctx, "lock deleted", out)
	return lockToProto(out), nil
}

func (ls *lockService) ListLocks(ctx context.Context, _ *writv1.ListLocksRequest) (*writv1.ListLocksResponse, error) {
	locks, err := ls.s.store.ListLocks(ctx, ls.s.now())
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &writv1.ListLocksResponse{Locks: make([]*writv1.Lock, len(locks))}
	for i, l := range locks {
		resp.Locks[i] = lockToProto(l)
	}
	return resp, nil
}

// lockDetails is what a lock's audit event records of it.
func lockDetails(l store.Lock) map[string]any {
	d := map[string]any{"target_kind": l.Target.Kind, "target_value": l.Target.Value, "reason": l.Reason}
	if !l.ExpiresAt.IsZero() {
		d["expires_at"] = l.ExpiresAt.UTC()
	}
	return d
}

// lockChanged puts a local lock change in force at once, without waiting for
// the refresher, and logs it; its audit event was written with the change.
func (s *Server) lockChanged(ctx context.Context, what string, l store.Lock) {
	if err := s.locks.refresh(ctx, true); err != nil {
		s.log.Error("refreshing locks after a change; the refresher retries", "err", err)
	}
	if s.decisions != nil {
		s.refreshDecisions(ctx)
	}
	expires := "never"
	if !l.ExpiresAt.IsZero() {
		expires = l.ExpiresAt.UTC().Format(time.RFC3339)
	}
	s.log.Info(what, "id", l.ID, "target_kind", l.Target.Kind, "target_value", l.Target.Value,
		"reason", l.Reason, "created_by", l.CreatedBy, "expires", expires, "caller", callerString(ctx))
}

func lockToProto(l store.Lock) *writv1.Lock {
	out := &writv1.Lock{
		Id:        l.ID,
		Target:    &writv1.LockTarget{Kind: l.Target.Kind, Value: l.Target.Value},
		Reason:    l.Reason,
		CreatedBy: l.CreatedBy,
		CreatedAt: l.CreatedAt.Unix(),
	}
	if !l.ExpiresAt.IsZero() {
		out.ExpiresAt = l.ExpiresAt.Unix()
	}
	return out
}
