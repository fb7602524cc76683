package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
)

const (
	// maxTaskLifetime caps how far ahead a task's deadline may be set when
	// it is created. A task is one piece of work; privileges meant to last
	// longer are a standing role in disguise, which writ does not keep.
	maxTaskLifetime = 30 * 24 * time.Hour
	// taskUpdateAttempts bounds how often an update that named no revision
	// is retried after losing a race with another writer.
	taskUpdateAttempts = 3
	// generatedIDChars is how much of crypto/rand.Text a generated task or
	// standing grant ID keeps: 50 random bits, short enough to type.
	generatedIDChars = 10
)

// anyResource stands in for a draft's missing grant in validateDraft.
var anyResource = mustResourcePattern("**")

func mustResourcePattern(s string) task.ResourcePattern {
	r, err := task.ParseResourcePattern(s)
	if err != nil {
		panic(err)
	}
	return r
}

// taskService manages tasks and standing grants. Every change that can
// alter a decision refreshes the decision index before it is answered, so
// closing a task denies the very next request.
//
// A task past its deadline is reported as expired whenever it is read, but
// the expiry is not written back: its stored state stays open. Nothing is
// lost by that, since a task's grants end at its deadline whatever its state
// says (task.Task.Live checks the time), and a read never writes.
type taskService struct {
	writv1.UnimplementedTaskServiceServer
	s *Server
}

// taskDoc is how a task is stored: JSON with stable field names, patterns
// as their text and times as RFC 3339, so the stored document reads the
// way the API and the audit log show the task.
type taskDoc struct {
	ID        string         `json:"id"`
	Title     string         `json:"title"`
	Reason    string         `json:"reason"`
	Ticket    string         `json:"ticket,omitempty"`
	Owner     string         `json:"owner"`
	Members   []task.Pattern `json:"members"`
	Grants    []grantDoc     `json:"grants"`
	NotBefore time.Time      `json:"not_before,omitzero"`
	Deadline  time.Time      `json:"deadline"`
	State     task.State     `json:"state"`
	CreatedAt time.Time      `json:"created_at"`
	OpenedAt  time.Time      `json:"opened_at,omitzero"`
	ClosedAt  time.Time      `json:"closed_at,omitzero"`
	Dual      *dualDoc       `json:"dual_control,omitempty"`
}

// grantDoc is a grant as stored, and as audit events record it.
type grantDoc struct {
	Actions   []string               `json:"actions"`
	Resources []task.ResourcePattern `json:"resources"`
	To        []task.Pattern         `json:"to"`
	// ExpiresAt is absent in documents written before grants could
	// expire, which therefore last until their task ends, as they did.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Clock, AccessTTLSeconds and FirstUsedAt: a grant whose access time
	// starts at first use (task.Grant).
	Clock            string    `json:"clock,omitempty"`
	AccessTTLSeconds int64     `json:"access_ttl_seconds,omitempty"`
	FirstUsedAt      time.Time `json:"first_used_at,omitzero"`
	// Watched: the grant is under the task's dual control.
	Watched bool `json:"watched,omitempty"`
}

// standingDoc is a standing grant as stored.
type standingDoc struct {
	ID        string                 `json:"id"`
	Subject   task.Pattern           `json:"subject"`
	Actions   []string               `json:"actions"`
	Resources []task.ResourcePattern `json:"resources"`
}

func (ts *taskService) CreateTask(ctx context.Context, req *writv1.CreateTaskRequest) (*writv1.Task, error) {
	s := ts.s
	if req.GetTask() == nil {
		return nil, status.Error(codes.InvalidArgument, "task: is required: give at least a title, reason, owner and deadline")
	}
	t, err := s.newTaskFromProto(ctx, req.GetTask())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "task.%v", err)
	}
	if t.ID == "" {
		t.ID = "T-" + rand.Text()[:generatedIDChars]
	}
	ev, err := s.event(ctx, audit.EventTaskCreate, t.ID, taskSummary(t))
	if err != nil {
		return nil, err
	}
	rec, err := taskRecord(t)
	if err != nil {
		return nil, err
	}
	out, err := s.store.PutTask(ctx, rec, 0, ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	s.log.Info("task created", "id", t.ID, "title", t.Title, "owner", t.Owner.String(), "deadline", t.Deadline, "revision", out.Revision, "caller", callerString(ctx))
	return taskToProto(t, out.Revision), nil
}

// newTaskFromProto builds a draft task from a CreateTask request and checks
// it; errors name the field within the request's task.
func (s *Server) newTaskFromProto(ctx context.Context, pt *writv1.Task) (*task.Task, error) {
	if st := pt.GetState(); st != "" && st != string(task.StateDraft) {
		return nil, &identity.FieldError{Field: "state", Msg: fmt.Sprintf("%q cannot be set at creation: a task is created as a draft; leave state empty and open the task with OpenTask", st)}
	}
	if pt.GetRevision() != 0 || pt.GetCreatedAt() != 0 || pt.GetOpenedAt() != 0 || pt.GetClosedAt() != 0 {
		return nil, &identity.FieldError{Field: "revision", Msg: "revision, created_at, opened_at and closed_at are set by the server: leave them empty"}
	}
	now := s.now()
	t := &task.Task{ID: pt.GetId(), Title: pt.GetTitle(), Reason: pt.GetReason(), Ticket: pt.GetTicket(), State: task.StateDraft, CreatedAt: now.UTC()}
	var err error
	if t.Owner, err = s.taskOwner(ctx, pt.GetOwner()); err != nil {
		return nil, err
	}
	if t.Members, err = membersFromProto("members", pt.GetMembers()); err != nil {
		return nil, err
	}
	for i, pg := range pt.GetGrants() {
		g, err := grantFromProto(fmt.Sprintf("grants[%d]", i), pg)
		if err != nil {
			return nil, err
		}
		t.Grants = append(t.Grants, g)
	}
	if t.Deadline, err = taskDeadline(pt.GetDeadline(), now); err != nil {
		return nil, err
	}
	if t.NotBefore, err = unixField("not_before", pt.GetNotBefore()); err != nil {
		return nil, err
	}
	return t, s.validateTask(t)
}

// taskOwner parses the owner, or takes the caller's own SPIFFE ID when none
// is given. A local administrator is known only by uid, which is no SPIFFE
// ID, so they must name the owner.
func (s *Server) taskOwner(ctx context.Context, owner string) (spiffeid.ID, error) {
	if owner != "" {
		id, err := identity.ParseID("owner", owner)
		if err == nil {
			err = identity.CheckPersonCase("owner", id)
		}
		return id, err
	}
	if c, _ := CallerFrom(ctx); !c.ID.IsZero() {
		return c.ID, nil
	}
	return spiffeid.ID{}, &identity.FieldError{Field: "owner", Msg: fmt.Sprintf("is required when a local administrator creates a task: give the SPIFFE ID of the person responsible, e.g. %s", s.td.IDString()+identity.NamespacePerson.Path()+"/example.com/alice")}
}

// taskDeadline checks a requested deadline: every task ends, and within
// maxTaskLifetime of its creation.
func taskDeadline(unix int64, now time.Time) (time.Time, error) {
	const hint = "give the time (unix seconds) its privileges end, at most 30 days ahead"
	if unix == 0 {
		return time.Time{}, &identity.FieldError{Field: "deadline", Msg: "is required: every task ends; " + hint}
	}
	d, err := unixField("deadline", unix)
	switch {
	case err != nil:
		return time.Time{}, err
	case !d.After(now):
		return time.Time{}, &identity.FieldError{Field: "deadline", Msg: fmt.Sprintf("%s is in the past; %s", d.Format(time.RFC3339), hint)}
	case d.After(now.Add(maxTaskLifetime)):
		return time.Time{}, &identity.FieldError{Field: "deadline", Msg: fmt.Sprintf("%s is more than 30 days ahead; split longer work into several tasks, or give a workload a standing grant", d.Format(time.RFC3339))}
	}
	return d, nil
}

// unixField reads optional unix seconds; 0 is the zero time.
func unixField(field string, unix int64) (time.Time, error) {
	switch {
	case unix == 0:
		return time.Time{}, nil
	case unix < 0:
		return time.Time{}, &identity.FieldError{Field: field, Msg: fmt.Sprintf("%d is not a time: give unix seconds", unix)}
	}
	return time.Unix(unix, 0).UTC(), nil
}

func membersFromProto(field string, in []string) ([]task.Member, error) {
	ps, err := patternsFromProto(field, in)
	if err != nil {
		return nil, err
	}
	out := make([]task.Member, len(ps))
	for i, p := range ps {
		out[i] = task.Member{Pattern: p}
	}
	return out, nil
}

// patternsFromProto parses SPIFFE ID patterns; errors name the item
// ("members[2]").
func patternsFromProto(field string, in []string) ([]task.Pattern, error) {
	out := make([]task.Pattern, len(in))
	for i, s := range in {
		p, err := task.ParsePattern(s)
		if err != nil {
			return nil, &identity.FieldError{Field: fmt.Sprintf("%s[%d]", field, i), Msg: err.Error()}
		}
		out[i] = p
	}
	return out, nil
}

func resourcesFromProto(field string, in []string) ([]task.ResourcePattern, error) {
	out := make([]task.ResourcePattern, len(in))
	for i, s := range in {
		r, err := task.ParseResourcePattern(s)
		if err != nil {
			return nil, &identity.FieldError{Field: fmt.Sprintf("%s[%d]", field, i), Msg: err.Error()}
		}
		out[i] = r
	}
	return out, nil
}

// grantFromProto parses a grant's patterns; the rest (actions, limits,
// recipients being members) is checked with the whole task.
func grantFromProto(field string, pg *writv1.Grant) (task.Grant, error) {
	if pg == nil {
		return task.Grant{}, &identity.FieldError{Field: field, Msg: "is required: give actions, resources and the members it is given to"}
	}
	if pg.GetExpiresAt() != 0 {
		return task.Grant{}, &identity.FieldError{Field: field + ".expires_at", Msg: "is set by the server on grants an approved join request adds; leave it 0 (the grant lasts as long as the task), or ask for time-bound access with a join request"}
	}
	if pg.GetAccessSeconds() != 0 || pg.GetFirstUsedAt() != 0 || pg.GetWatched() {
		return task.Grant{}, &identity.FieldError{Field: field, Msg: "access_seconds, first_used_at and watched are set by the server on grants approved by request; leave them unset"}
	}
	rs, err := resourcesFromProto(field+".resources", pg.GetResources())
	if err != nil {
		return task.Grant{}, err
	}
	to, err := patternsFromProto(field+".to", pg.GetTo())
	if err != nil {
		return task.Grant{}, err
	}
	return task.Grant{Actions: pg.GetActions(), Resources: rs, To: to}, nil
}

// validateTask checks a task whole. A draft is put together step by step
// (created, then members and grants added), so it may still lack grants,
// and members too while it has no grants; the model requires both, so each
// missing list is checked with a stand-in that is valid by construction,
// and every other check still runs. OpenTask checks the real lists.
func (s *Server) validateTask(t *task.Task) error {
	if t.State != task.StateDraft || len(t.Grants) > 0 {
		return t.Validate(s.td)
	}
	c := *t
	if len(c.Members) == 0 {
		owner, err := task.PatternOf(t.Owner)
		if err != nil {
			return t.Validate(s.td)
		}
		c.Members = []task.Member{{Pattern: owner}}
	}
	c.Grants = []task.Grant{{Actions: []string{task.AnyAction}, Resources: []task.ResourcePattern{anyResource}, To: []task.Pattern{c.Members[0].Pattern}}}
	return c.Validate(s.td)
}

func (ts *taskService) GetTask(ctx context.Context, req *writv1.GetTaskRequest) (*writv1.Task, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	rec, err := ts.s.store.GetTask(ctx, req.GetId())
	if err != nil {
		return nil, storeStatus(err)
	}
	t, err := readTask(rec, ts.s.now())
	if err != nil {
		return nil, err
	}
	return taskToProto(t, rec.Revision), nil
}

func (ts *taskService) ListTasks(ctx context.Context, req *writv1.ListTasksRequest) (*writv1.ListTasksResponse, error) {
	want, err := stateFilter(req.GetStates())
	if err != nil {
		return nil, err
	}
	// An expired task may still be stored as open, so asking for expired
	// tasks reads the open ones too, and every task is filtered by the
	// state it has now.
	stored := slices.Clone(want)
	if slices.Contains(want, string(task.StateExpired)) {
		stored = append(stored, string(task.StateOpen))
	}
	recs, err := ts.s.store.ListTasks(ctx, stored...)
	if err != nil {
		return nil, storeStatus(err)
	}
	now := ts.s.now()
	resp := &writv1.ListTasksResponse{}
	for _, rec := range recs {
		t, err := readTask(rec, now)
		if err != nil {
			return nil, err
		}
		if len(want) == 0 || slices.Contains(want, string(t.State)) {
			resp.Tasks = append(resp.Tasks, taskToProto(t, rec.Revision))
		}
	}
	return resp, nil
}

// stateFilter checks the states a listing asks for.
func stateFilter(states []string) ([]string, error) {
	known := []string{string(task.StateDraft), string(task.StateOpen), string(task.StateClosed), string(task.StateExpired)}
	for i, st := range states {
		if !slices.Contains(known, st) {
			return nil, status.Errorf(codes.InvalidArgument, "states[%d]: %q is not a task state: use draft, open, closed or expired", i, st)
		}
	}
	return states, nil
}

func (ts *taskService) AddMembers(ctx context.Context, req *writv1.AddMembersRequest) (*writv1.Task, error) {
	added, err := membersFromProto("members", req.GetMembers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(added) == 0 {
		return nil, status.Error(codes.InvalidArgument, "members: at least one member pattern is required")
	}
	return ts.update(ctx, req.GetId(), req.GetRevision(), audit.EventTaskMemberAdd, func(t *task.Task, _ time.Time) (any, error) {
		if err := changeable(t, "add members to"); err != nil {
			return nil, err
		}
		first := len(t.Members)
		t.Members = append(t.Members, added...)
		if err := ts.s.validateTask(t); err != nil {
			return nil, invalidItem(err, "members", first, func(i int) string { return fmt.Sprintf("members[%d]", i) })
		}
		return map[string]any{"members": req.GetMembers(), "state": t.State}, nil
	})
}

func (ts *taskService) AddGrant(ctx context.Context, req *writv1.AddGrantRequest) (*writv1.Task, error) {
	g, err := grantFromProto("grant", req.GetGrant())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return ts.update(ctx, req.GetId(), req.GetRevision(), audit.EventTaskGrantAdd, func(t *task.Task, _ time.Time) (any, error) {
		if err := changeable(t, "add a grant to"); err != nil {
			return nil, err
		}
		first := len(t.Grants)
		t.Grants = append(t.Grants, g)
		if err := ts.s.validateTask(t); err != nil {
			return nil, invalidItem(err, "grants", first, func(int) string { return "grant" })
		}
		if t.State == task.StateOpen {
			if err := ts.s.guardGrants(t, t.Grants[first:]); err != nil {
				return nil, err
			}
		}
		return map[string]any{"grant": grantToDoc(g), "state": t.State}, nil
	})
}

// changeable refuses changes to a task that has ended. Members and grants
// added to an open task are live at once.
func changeable(t *task.Task, what string) error {
	if t.State == task.StateDraft || t.State == task.StateOpen {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition, "cannot %s task %s: it is %s, and an ended task never comes back; create a new task instead", what, t.ID, t.State)
}

// invalidItem reports a validation error as InvalidArgument, naming an item
// the request added by the request's own field ("grant.to[0]") instead of
// its place in the whole task ("grants[4].to[0]"). Items from index first
// on in list are the added ones; name gives the request's field for the
// i-th of them.
func invalidItem(err error, list string, first int, name func(i int) string) error {
	var fe *identity.FieldError
	if errors.As(err, &fe) {
		head, tail, _ := strings.Cut(fe.Field, "]")
		if idx, ok := strings.CutPrefix(head, list+"["); ok {
			if i, convErr := strconv.Atoi(idx); convErr == nil && i >= first {
				return status.Errorf(codes.InvalidArgument, "%s%s: %s", name(i-first), tail, fe.Msg)
			}
		}
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

func (ts *taskService) OpenTask(ctx context.Context, req *writv1.TaskTransitionRequest) (*writv1.Task, error) {
	return ts.update(ctx, req.GetId(), req.GetRevision(), audit.EventTaskOpen, ts.openTask)
}

// openTask opens t at now, for OpenTask and for an approved request to
// open it: the same checks and guardrails either way.
func (ts *taskService) openTask(t *task.Task, now time.Time) (any, error) {
	if t.State == task.StateDraft {
		// Now the real lists are checked: a draft may lack grants.
		if err := t.Validate(ts.s.td); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "cannot open task %s: %v; complete it first (AddMembers, AddGrant)", t.ID, err)
		}
	}
	if err := ts.s.guardGrants(t, t.Grants); err != nil {
		return nil, err
	}
	if err := t.Open(now); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return map[string]any{"deadline": t.Deadline}, nil
}

func (ts *taskService) CloseTask(ctx context.Context, req *writv1.TaskTransitionRequest) (*writv1.Task, error) {
	return ts.update(ctx, req.GetId(), req.GetRevision(), audit.EventTaskClose, func(t *task.Task, now time.Time) (any, error) {
		if err := t.Close(now); err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		return nil, nil
	})
}

// taskChange applies one change to a task read from the store and returns
// the details of its audit event, or a status error that refuses it.
type taskChange func(t *task.Task, now time.Time) (details any, err error)

// update reads task id, applies change and writes the task back if it is
// still at the revision read. When the request named a revision, the task
// must be at it, and a lost race is reported for the caller to look again;
// otherwise the change is applied afresh to the newer task a few times.
func (ts *taskService) update(ctx context.Context, id string, revision int64, typ string, change taskChange) (*writv1.Task, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	for attempt := 1; ; attempt++ {
		out, err := ts.updateOnce(ctx, id, revision, typ, change)
		if !errors.Is(err, store.ErrConflict) {
			return out, err
		}
		if revision != 0 || attempt == taskUpdateAttempts {
			return nil, status.Errorf(codes.Aborted, "%v; read it again and retry", err)
		}
	}
}

// updateOnce is one attempt of update; it returns store.ErrConflict when
// another writer changed the task first.
func (ts *taskService) updateOnce(ctx context.Context, id string, revision int64, typ string, change taskChange) (*writv1.Task, error) {
	s := ts.s
	rec, err := s.store.GetTask(ctx, id)
	if err != nil {
		return nil, storeStatus(err)
	}
	if revision != 0 && rec.Revision != revision {
		return nil, fmt.Errorf("task %s is at revision %d, not %d: %w", id, rec.Revision, revision, store.ErrConflict)
	}
	now := s.now()
	t, err := readTask(rec, now)
	if err != nil {
		return nil, err
	}
	details, err := change(t, now)
	if err != nil {
		return nil, err
	}
	ev, err := s.event(ctx, typ, id, details)
	if err != nil {
		return nil, err
	}
	next, err := taskRecord(t)
	if err != nil {
		return nil, err
	}
	out, err := s.store.PutTask(ctx, next, rec.Revision, ev)
	switch {
	case errors.Is(err, store.ErrConflict):
		return nil, err
	case err != nil:
		return nil, storeStatus(err)
	}
	s.refreshDecisions(ctx)
	s.log.Info("task changed", "event", typ, "id", id, "state", t.State, "revision", out.Revision, "caller", callerString(ctx))
	return taskToProto(t, out.Revision), nil
}

// taskSummary is what a task.create event records: enough to see from the
// log alone who was to do what, on which resources, until when.
func taskSummary(t *task.Task) map[string]any {
	grants := make([]grantDoc, len(t.Grants))
	for i, g := range t.Grants {
		grants[i] = grantToDoc(g)
	}
	d := map[string]any{"title": t.Title, "reason": t.Reason, "owner": t.Owner.String(), "members": memberPatterns(t), "grants": grants, "deadline": t.Deadline}
	if t.Ticket != "" {
		d["ticket"] = t.Ticket
	}
	if !t.NotBefore.IsZero() {
		d["not_before"] = t.NotBefore
	}
	return d
}

func memberPatterns(t *task.Task) []task.Pattern {
	out := make([]task.Pattern, len(t.Members))
	for i, m := range t.Members {
		out[i] = m.Pattern
	}
	return out
}

func grantToDoc(g task.Grant) grantDoc {
	return grantDoc{Actions: g.Actions, Resources: g.Resources, To: g.To, ExpiresAt: g.ExpiresAt.UTC(),
		Clock: g.Clock, AccessTTLSeconds: int64(g.AccessTTL / time.Second), FirstUsedAt: g.FirstUsedAt.UTC(), Watched: g.Watched}
}

// taskRecord encodes t for the store.
func taskRecord(t *task.Task) (store.TaskRecord, error) {
	d := taskDoc{
		ID: t.ID, Title: t.Title, Reason: t.Reason, Ticket: t.Ticket, Owner: t.Owner.String(),
		Members: memberPatterns(t), NotBefore: t.NotBefore, Deadline: t.Deadline, State: t.State,
		CreatedAt: t.CreatedAt, OpenedAt: t.OpenedAt.UTC(), ClosedAt: t.ClosedAt.UTC(),
	}
	for _, g := range t.Grants {
		d.Grants = append(d.Grants, grantToDoc(g))
	}
	d.Dual = dualToDoc(t.Dual)
	doc, err := json.Marshal(d)
	if err != nil {
		return store.TaskRecord{}, status.Errorf(codes.Internal, "encoding task %s: %v", t.ID, err)
	}
	rec := store.TaskRecord{ID: t.ID, State: string(t.State), Deadline: t.Deadline, Doc: doc}
	if (t.State == task.StateClosed || t.State == task.StateExpired) && !t.ClosedAt.IsZero() {
		// The decision index reads tasks by when they ended, so one
		// closed early leaves its memory window by its close time.
		rec.EndsAt = t.ClosedAt
	}
	return rec, nil
}

// taskFromRecord decodes a stored task. Patterns are parsed again on the
// way in, so a document edited by hand into nonsense is reported, not
// obeyed.
func taskFromRecord(rec store.TaskRecord) (task.Task, error) {
	var d taskDoc
	if err := json.Unmarshal(rec.Doc, &d); err != nil {
		return task.Task{}, fmt.Errorf("stored task %s is unreadable: %w", rec.ID, err)
	}
	owner, err := spiffeid.FromString(d.Owner)
	if err != nil {
		return task.Task{}, fmt.Errorf("stored task %s has a bad owner %q: %w", rec.ID, d.Owner, err)
	}
	t := task.Task{
		ID: d.ID, Title: d.Title, Reason: d.Reason, Ticket: d.Ticket, Owner: owner,
		NotBefore: d.NotBefore, Deadline: d.Deadline, State: d.State,
		CreatedAt: d.CreatedAt, OpenedAt: d.OpenedAt, ClosedAt: d.ClosedAt,
	}
	for _, p := range d.Members {
		t.Members = append(t.Members, task.Member{Pattern: p})
	}
	for _, g := range d.Grants {
		t.Grants = append(t.Grants, task.Grant{Actions: g.Actions, Resources: g.Resources, To: g.To, ExpiresAt: g.ExpiresAt,
			Clock: g.Clock, AccessTTL: time.Duration(g.AccessTTLSeconds) * time.Second, FirstUsedAt: g.FirstUsedAt, Watched: g.Watched})
	}
	if t.Dual, err = dualFromDoc(d.Dual); err != nil {
		return task.Task{}, fmt.Errorf("stored task %s: %w", rec.ID, err)
	}
	if d.Dual != nil && !d.Dual.PerGrant {
		// Written when dual control governed the whole task.
		for i := range t.Grants {
			t.Grants[i].Watched = true
		}
	}
	return t, nil
}

// readTask decodes a stored task as it stands at now: expired if its
// deadline has passed while it was open.
func readTask(rec store.TaskRecord, now time.Time) (*task.Task, error) {
	t, err := taskFromRecord(rec)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// Expire leaves every task but an open one past its deadline as it is.
	_ = t.Expire(now)
	return &t, nil
}

// taskToProto renders t at store revision rev; times are unix seconds, 0
// when unset.
func taskToProto(t *task.Task, rev int64) *writv1.Task {
	out := &writv1.Task{
		Id: t.ID, Title: t.Title, Reason: t.Reason, Ticket: t.Ticket, Owner: t.Owner.String(),
		Members: patternStrings(memberPatterns(t)), NotBefore: unixOrZero(t.NotBefore), Deadline: unixOrZero(t.Deadline),
		State: string(t.State), Revision: rev,
		CreatedAt: unixOrZero(t.CreatedAt), OpenedAt: unixOrZero(t.OpenedAt), ClosedAt: unixOrZero(t.ClosedAt),
	}
	for _, g := range t.Grants {
		out.Grants = append(out.Grants, &writv1.Grant{Actions: g.Actions, Resources: resourceStrings(g.Resources), To: patternStrings(g.To), ExpiresAt: unixOrZero(g.ExpiresAt),
			AccessSeconds: int64(g.AccessTTL / time.Second), FirstUsedAt: unixOrZero(g.FirstUsedAt), Watched: g.Watched})
	}
	return out
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func patternStrings(ps []task.Pattern) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func resourceStrings(rs []task.ResourcePattern) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func (ts *taskService) PutStandingGrant(ctx context.Context, req *writv1.StandingGrant) (*writv1.StandingGrant, error) {
	s := ts.s
	g, err := s.standingFromProto(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if g.ID == "" {
		g.ID = "S-" + rand.Text()[:generatedIDChars]
	}
	doc := standingToDoc(g)
	ev, err := s.event(ctx, audit.EventStandingGrantPut, g.ID, doc)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding standing grant %s: %v", g.ID, err)
	}
	out, err := s.store.PutStandingGrant(ctx, store.StandingGrantRecord{ID: g.ID, Doc: raw}, ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	s.refreshDecisions(ctx)
	s.log.Info("standing grant put", "id", g.ID, "subject", g.Subject.String(), "revision", out.Revision, "caller", callerString(ctx))
	return standingToProto(g), nil
}

// standingFromProto parses and validates a standing grant; errors name the
// field.
func (s *Server) standingFromProto(pg *writv1.StandingGrant) (task.StandingGrant, error) {
	g := task.StandingGrant{ID: pg.GetId(), Actions: pg.GetActions()}
	if pg.GetSubject() != "" {
		p, err := task.ParsePattern(pg.GetSubject())
		if err != nil {
			return g, &identity.FieldError{Field: "subject", Msg: err.Error()}
		}
		g.Subject = p
	}
	rs, err := resourcesFromProto("resources", pg.GetResources())
	if err != nil {
		return g, err
	}
	g.Resources = rs
	return g, g.Validate(s.td)
}

func (ts *taskService) DeleteStandingGrant(ctx context.Context, req *writv1.DeleteStandingGrantRequest) (*writv1.StandingGrant, error) {
	s := ts.s
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	// The store returns nothing of what it deletes; the grant is read first
	// so the event and the answer say what was taken away.
	all, err := ts.standingGrants(ctx)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(all, func(g task.StandingGrant) bool { return g.ID == req.GetId() })
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "standing grant %q: not found; list them with ListStandingGrants", req.GetId())
	}
	ev, err := s.event(ctx, audit.EventStandingGrantDelete, req.GetId(), standingToDoc(all[i]))
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteStandingGrant(ctx, req.GetId(), ev); err != nil {
		return nil, storeStatus(err)
	}
	s.refreshDecisions(ctx)
	s.log.Info("standing grant deleted", "id", req.GetId(), "subject", all[i].Subject.String(), "caller", callerString(ctx))
	return standingToProto(all[i]), nil
}

func (ts *taskService) ListStandingGrants(ctx context.Context, _ *writv1.ListStandingGrantsRequest) (*writv1.ListStandingGrantsResponse, error) {
	all, err := ts.standingGrants(ctx)
	if err != nil {
		return nil, err
	}
	resp := &writv1.ListStandingGrantsResponse{Grants: make([]*writv1.StandingGrant, len(all))}
	for i, g := range all {
		resp.Grants[i] = standingToProto(g)
	}
	return resp, nil
}

// standingGrants reads every standing grant, by ID.
func (ts *taskService) standingGrants(ctx context.Context) ([]task.StandingGrant, error) {
	recs, err := ts.s.store.ListStandingGrants(ctx)
	if err != nil {
		return nil, storeStatus(err)
	}
	out := make([]task.StandingGrant, len(recs))
	for i, rec := range recs {
		if out[i], err = standingFromRecord(rec); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return out, nil
}

// standingFromRecord decodes a stored standing grant.
func standingFromRecord(rec store.StandingGrantRecord) (task.StandingGrant, error) {
	var d standingDoc
	if err := json.Unmarshal(rec.Doc, &d); err != nil {
		return task.StandingGrant{}, fmt.Errorf("stored standing grant %s is unreadable: %w", rec.ID, err)
	}
	return task.StandingGrant{ID: d.ID, Subject: d.Subject, Actions: d.Actions, Resources: d.Resources}, nil
}

func standingToDoc(g task.StandingGrant) standingDoc {
	return standingDoc{ID: g.ID, Subject: g.Subject, Actions: g.Actions, Resources: g.Resources}
}

func standingToProto(g task.StandingGrant) *writv1.StandingGrant {
	return &writv1.StandingGrant{Id: g.ID, Subject: g.Subject.String(), Actions: g.Actions, Resources: resourceStrings(g.Resources)}
}
