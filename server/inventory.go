package server

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
	// defaultUnseenDays is how long an identity may go unseen before the
	// inventory flags it, when the request does not say.
	defaultUnseenDays = 30
	// maxUnseenDays keeps the threshold a duration time can represent.
	maxUnseenDays = 36500
	// inventoryAuditPage is how many audit events one store read returns.
	inventoryAuditPage = 5000
	// inventoryMaxEvents bounds the audit events one inventory reads: the
	// latest ones, so a huge log costs a bounded scan and the report says
	// what it left out.
	inventoryMaxEvents = 1_000_000
	// inventoryEntryPage is how many rules one store read returns.
	inventoryEntryPage = 1000
	// usedNamesShown is how many used resource names a grant flag names.
	usedNamesShown = 5
)

// Where the inventory knows an identity from, in the order they are listed.
const (
	sourceAgent    = "agent"
	sourceRule     = "rule"
	sourceTask     = "task"
	sourceStanding = "standing_grant"
	sourceAudit    = "audit"
)

var inventorySources = []string{sourceAgent, sourceRule, sourceTask, sourceStanding, sourceAudit}

// issuanceEvents are the audit event types whose subject is the SPIFFE ID
// that was given an identity: having one issued is being seen.
var issuanceEvents = []string{audit.EventSVIDX509Mint, audit.EventSVIDJWTMint, audit.EventPersonLogin, audit.EventAgentJoin}

// inventoryService reports identities and what they hold.
//
// GetInventory is built from the store alone, without tables of its own:
// agents, rules, tasks and standing grants are read whole, and the audit
// log is scanned from the oldest of its latest inventoryMaxEvents events,
// in pages. That scan is the cost of the report (a million events is a few
// hundred megabytes read and decoded); it is an administrator's report,
// asked for now and then, so the cost is accepted rather than kept current
// on every write.
type inventoryService struct {
	writv1.UnimplementedInventoryServiceServer
	s *Server
}

func (is *inventoryService) GetInventory(ctx context.Context, req *writv1.GetInventoryRequest) (*writv1.Inventory, error) {
	days, err := unseenDays(req.GetUnseenDays())
	if err != nil {
		return nil, err
	}
	st := is.s.store
	now := is.s.now()
	b := &inventoryBuilder{seen: map[string]*seenIdentity{}}
	if err := b.readAgents(ctx, st); err != nil {
		return nil, err
	}
	if err := b.readRules(ctx, st); err != nil {
		return nil, err
	}
	open, err := b.readTasks(ctx, st, now)
	if err != nil {
		return nil, err
	}
	standing, err := b.readStanding(ctx, st)
	if err != nil {
		return nil, err
	}
	uses := grantUses(open)
	if err := b.readAudit(ctx, st, uses); err != nil {
		return nil, err
	}
	out := &writv1.Inventory{Identities: b.identities(open, standing, now, days), Flags: b.notes}
	for _, o := range open {
		out.OpenTasks = append(out.OpenTasks, taskToProto(o.t, o.rev))
	}
	for _, u := range uses {
		if f := u.flag(); f != "" {
			out.Flags = append(out.Flags, f)
		}
	}
	if out.PendingRequests, err = is.s.pendingRequests(ctx, now); err != nil {
		return nil, err
	}
	return out, nil
}

// unseenDays checks the request's threshold; 0 takes the default.
func unseenDays(days int32) (int, error) {
	switch {
	case days == 0:
		return defaultUnseenDays, nil
	case days < 0 || days > maxUnseenDays:
		return 0, status.Errorf(codes.InvalidArgument, "unseen_days: %d is out of range: give 1 to %d, or 0 for the default of %d", days, maxUnseenDays, defaultUnseenDays)
	}
	return int(days), nil
}

// seenIdentity is what the inventory gathered about one SPIFFE ID.
type seenIdentity struct {
	id       spiffeid.ID
	sources  map[string]bool
	facts    []string
	lastSeen time.Time
}

// inventoryBuilder gathers identities from each part of the store, and
// notes what it could not read, for the report's flags.
type inventoryBuilder struct {
	seen  map[string]*seenIdentity
	notes []string
}

// add records that source knows raw, seen at at (zero: not seen). Text that
// is not a SPIFFE ID is ignored: audit subjects of other kinds never reach
// here, and a stored pattern is checked where it is parsed.
func (b *inventoryBuilder) add(raw, source string, at time.Time) *seenIdentity {
	id, err := spiffeid.FromString(raw)
	if err != nil {
		return nil
	}
	si := b.seen[id.String()]
	if si == nil {
		si = &seenIdentity{id: id, sources: map[string]bool{}}
		b.seen[id.String()] = si
	}
	si.sources[source] = true
	if at.After(si.lastSeen) {
		si.lastSeen = at
	}
	return si
}

func (b *inventoryBuilder) readAgents(ctx context.Context, st store.Store) error {
	agents, err := st.ListAgents(ctx)
	if err != nil {
		return storeStatus(fmt.Errorf("reading the agents: %w", err))
	}
	for _, a := range agents {
		si := b.add(a.SPIFFEID, sourceAgent, a.LastSeen)
		if si == nil {
			continue
		}
		for _, sel := range a.Selectors {
			si.facts = append(si.facts, sel.Type+":"+sel.Value)
		}
	}
	return nil
}

// readRules pages through every rule by ID.
func (b *inventoryBuilder) readRules(ctx context.Context, st store.Store) error {
	after := ""
	for {
		entries, err := st.ListEntries(ctx, store.EntryFilter{AfterID: after, Limit: inventoryEntryPage})
		if err != nil {
			return storeStatus(fmt.Errorf("reading the rules: %w", err))
		}
		for _, e := range entries {
			b.add(e.SPIFFEID, sourceRule, time.Time{})
		}
		if len(entries) < inventoryEntryPage {
			return nil
		}
		after = entries[len(entries)-1].ID
	}
}

// inventoryTask is a task that is open now, with its store revision.
type inventoryTask struct {
	t   *task.Task
	rev int64
}

// readTasks records the literal members of every task, whatever its state,
// and returns the tasks open now.
func (b *inventoryBuilder) readTasks(ctx context.Context, st store.Store, now time.Time) ([]inventoryTask, error) {
	recs, err := st.ListTasks(ctx)
	if err != nil {
		return nil, storeStatus(fmt.Errorf("reading the tasks: %w", err))
	}
	var open []inventoryTask
	for _, rec := range recs {
		t, err := readTask(rec, now)
		if err != nil {
			return nil, err
		}
		for _, m := range t.Members {
			if m.Pattern.IsLiteral() {
				b.add(m.Pattern.String(), sourceTask, time.Time{})
			}
		}
		if t.State == task.StateOpen {
			open = append(open, inventoryTask{t: t, rev: rec.Revision})
		}
	}
	return open, nil
}

func (b *inventoryBuilder) readStanding(ctx context.Context, st store.Store) ([]task.StandingGrant, error) {
	recs, err := st.ListStandingGrants(ctx)
	if err != nil {
		return nil, storeStatus(fmt.Errorf("reading the standing grants: %w", err))
	}
	out := make([]task.StandingGrant, len(recs))
	for i, rec := range recs {
		if out[i], err = standingFromRecord(rec); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if out[i].Subject.IsLiteral() {
			b.add(out[i].Subject.String(), sourceStanding, time.Time{})
		}
	}
	return out, nil
}

// readAudit scans the latest inventoryMaxEvents audit events in pages,
// recording who was seen and which grants were used. Events that do not
// decode are counted and reported, not fatal: the rest of the report still
// holds, and `writ audit verify` is the tool that says what went wrong.
func (b *inventoryBuilder) readAudit(ctx context.Context, st store.Store, uses []*grantUse) error {
	size, err := st.AuditSize(ctx)
	if err != nil {
		return storeStatus(fmt.Errorf("reading the audit log's size: %w", err))
	}
	start := max(0, size-inventoryMaxEvents)
	if start > 0 {
		b.notes = append(b.notes, fmt.Sprintf("only the latest %d of %d audit events were read: identities last seen, and grants last used, before event %d are reported as unseen and unused", inventoryMaxEvents, size, start))
	}
	bad := 0
	for next := start; next < size; {
		recs, err := st.ReadAudit(ctx, next, int(min(inventoryAuditPage, size-next)))
		if err != nil {
			return storeStatus(fmt.Errorf("reading audit events from index %d: %w", next, err))
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if !b.observe(r.Event, uses) {
				bad++
			}
		}
		next = recs[len(recs)-1].Index + 1
	}
	if bad > 0 {
		b.notes = append(b.notes, fmt.Sprintf("%d audit events could not be decoded and were left out; run 'writ audit verify' to find out why", bad))
	}
	return nil
}

// decisionDetails are the fields of a decision event the inventory reads.
type decisionDetails struct {
	Action string   `json:"action"`
	Chain  []string `json:"chain"`
	Allow  bool     `json:"allow"`
}

// observe takes one encoded audit event into account; it reports false if
// the event does not decode.
func (b *inventoryBuilder) observe(raw []byte, uses []*grantUse) bool {
	ev, err := audit.DecodeEvent(raw)
	if err != nil {
		return false
	}
	switch {
	case slices.Contains(issuanceEvents, ev.Type):
		b.add(ev.Subject, sourceAudit, ev.Time)
	case ev.Type == audit.EventDecision:
		var d decisionDetails
		if err := json.Unmarshal(ev.Details, &d); err != nil {
			return false
		}
		var chain []spiffeid.ID
		for _, raw := range d.Chain {
			if si := b.add(raw, sourceAudit, ev.Time); si != nil {
				chain = append(chain, si.id)
			}
		}
		if d.Allow {
			for _, u := range uses {
				u.observe(ev.Time, d.Action, ev.Subject, chain)
			}
		}
	}
	return true
}

// identities renders what was gathered, by SPIFFE ID.
func (b *inventoryBuilder) identities(open []inventoryTask, standing []task.StandingGrant, now time.Time, days int) []*writv1.InventoryIdentity {
	keys := make([]string, 0, len(b.seen))
	for k := range b.seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*writv1.InventoryIdentity, len(keys))
	for i, k := range keys {
		out[i] = b.seen[k].render(open, standing, now, days)
	}
	return out
}

func (si *seenIdentity) render(open []inventoryTask, standing []task.StandingGrant, now time.Time, days int) *writv1.InventoryIdentity {
	kind := identity.KindOf(si.id)
	out := &writv1.InventoryIdentity{SpiffeId: si.id.String(), Kind: string(kind), Facts: si.facts, LastSeen: unixOrZero(si.lastSeen)}
	for _, src := range inventorySources {
		if si.sources[src] {
			out.Sources = append(out.Sources, src)
		}
	}
	for _, o := range open {
		if slices.ContainsFunc(o.t.Members, func(m task.Member) bool { return m.Pattern.Matches(si.id) }) {
			out.Tasks = append(out.Tasks, o.t.ID)
		}
	}
	for _, g := range standing {
		if g.Subject.Matches(si.id) {
			out.StandingGrants = append(out.StandingGrants, g.ID)
		}
	}
	// Validation keeps standing grants to workloads; one matching anything
	// else was stored around it, and is worth a look.
	if len(out.StandingGrants) > 0 && kind != identity.KindWorkload {
		out.Flags = append(out.Flags, "standing-grant-held-by-"+string(kind))
	}
	if si.lastSeen.IsZero() || now.Sub(si.lastSeen) > time.Duration(days)*24*time.Hour {
		out.Flags = append(out.Flags, fmt.Sprintf("unseen-%dd", days))
	}
	return out
}

// grantUse is what the audit log says of one grant of an open task.
// Decision events record the action, resource, chain and outcome but not
// which grant allowed a request, so a grant counts as used by an allowed
// decision, made while its task was live, that it could have allowed: its
// actions and resources match and the chain holds one of its recipients.
type grantUse struct {
	taskID      string
	index       int
	grant       task.Grant
	from, until time.Time
	used        bool
	// names are the first distinct resources used, up to usedNamesShown;
	// more says there were others.
	names []string
	more  bool
}

func grantUses(open []inventoryTask) []*grantUse {
	var out []*grantUse
	for _, o := range open {
		from := o.t.OpenedAt
		if o.t.NotBefore.After(from) {
			from = o.t.NotBefore
		}
		for i, g := range o.t.Grants {
			until := o.t.Deadline
			if !g.ExpiresAt.IsZero() && g.ExpiresAt.Before(until) {
				until = g.ExpiresAt
			}
			out = append(out, &grantUse{taskID: o.t.ID, index: i, grant: g, from: from, until: until})
		}
	}
	return out
}

// observe takes an allowed decision into account.
func (u *grantUse) observe(at time.Time, action, resource string, chain []spiffeid.ID) {
	if at.Before(u.from) || at.After(u.until) || !u.grant.Allows(action, resource) {
		return
	}
	if !slices.ContainsFunc(chain, func(id spiffeid.ID) bool { return u.grant.GivenTo(id) >= 0 }) {
		return
	}
	u.used = true
	switch {
	case slices.Contains(u.names, resource):
	case len(u.names) < usedNamesShown:
		u.names = append(u.names, resource)
	default:
		u.more = true
	}
}

// flag returns the finding about the grant, or "" if there is none. A
// wildcard resource pattern matches names without end, so a wildcard grant
// that was used is always wider than the finite set of names used.
func (u *grantUse) flag() string {
	resources := resourceStrings(u.grant.Resources)
	switch {
	case !u.used:
		return fmt.Sprintf("task %s grant %d was never used: no allowed decision matched its actions %v, resources %v and recipients", u.taskID, u.index, u.grant.Actions, resources)
	case slices.ContainsFunc(resources, func(r string) bool { return strings.Contains(r, "*") }):
		used := strings.Join(u.names, ", ")
		if u.more {
			used += " and others"
		}
		return fmt.Sprintf("task %s grant %d is wider than what was used: it allows resources %v but only %s were used", u.taskID, u.index, resources, used)
	}
	return ""
}
