package authz

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

// Index answers decisions over one Snapshot. It is immutable and safe for
// concurrent use; when tasks, standing grants or locks change, build a new
// one (closing a task takes effect with the next Index).
//
// Grants and standing grants are indexed by the literal prefix of their
// recipient or subject pattern (the segments before its first wildcard), so
// a decision looks up only the segment prefixes of each identity's own ID,
// and within a prefix filters by action before it matches patterns and
// resources. A decision therefore touches only the grants that could apply
// to the identities asking, however many tasks there are.
type Index struct {
	now      time.Time
	maxChain int
	tasks    []task.Task
	// deadWhy says, by index into tasks, why a task grants nothing at any
	// time ("task T-1 is closed"); "" for a task open and unlocked at now,
	// whose window Decide still checks against the request's time. Dead
	// tasks stay indexed so a denial can name the task that would have
	// allowed it.
	deadWhy []string
	// watchedWhy says, by index into tasks, why the task's watched grants
	// (task.Grant.Watched) grant nothing: too few watchers; "" when they
	// count.
	watchedWhy []string
	standing   []task.StandingGrant
	buckets    map[string]*bucket
	// actions interns the actions of all grants; anyAction is "*".
	actions map[string]uint32
	// depths has bit n set when some pattern's literal prefix has n path
	// segments, so lookups skip prefixes no pattern can have.
	depths uint64
	locks  []Lock
	// exactLocks and prefixLocks index identity locks by value.
	exactLocks, prefixLocks map[string][]int32
	// firstUse says when an access clock the snapshot records as not
	// started started since; nil: none did.
	firstUse func(clock string) (time.Time, bool)

	// What Update needs to reuse this index. tasks, deadWhy and watchedWhy
	// are indexed by slot, which stays a task's for as long as it is in
	// the snapshots; a slot no task holds is a hole (pos -1, no entries).
	// pos is each slot's task's position in the snapshot: entries are
	// kept in that order within a bucket, as NewIndex would add them.
	slots map[string]int32
	pos   []int32
	live  int
	// lockDead marks the slots whose deadWhy comes from a task lock.
	lockDead []bool
	// standingPrefixes are the buckets holding standing entries.
	standingPrefixes []string
	// owned holds, while Update builds this index, the buckets it made or
	// copied; the others it shares with the index it came from.
	owned map[*bucket]bool
}

// bucket holds what is indexed under one literal prefix.
type bucket struct {
	grants   []entry
	standing []standingEntry
}

// entry is one grant of one task, for one recipient pattern and action. It
// carries what filters candidates (the action, whether the recipient is a
// literal ID, the task's window) so that entries which do not apply are
// skipped without touching the task or the grant.
type entry struct {
	action              uint32
	res                 resFilter
	to                  recipient
	task, index         int32
	notBefore, deadline int64
	// expires is the grant's own expiry (math.MaxInt64: none), checked
	// against the request's time like the task's window, so a grant
	// stops counting the moment it expires, without a rebuild.
	expires int64
	grant   *task.Grant
}

type standingEntry struct {
	action  uint32
	res     resFilter
	subject recipient
	index   int32
}

// recipient is a pattern as the index matches it. Most patterns are a
// literal ID or a literal prefix followed only by wildcards
// ("…/payroll-bot/*", "…/example.com/**"); within the bucket of their
// prefix, such a pattern matches exactly the IDs whose depth (number of
// path segments) is in [minDepth, maxDepth], which is decided without
// reading the pattern.
type recipient struct {
	// exact: the pattern is a literal ID, matching only the ID equal to
	// the bucket's prefix.
	exact bool
	// byDepth: the pattern is its literal prefix and wildcards only.
	byDepth            bool
	minDepth, maxDepth int
	p                  *task.Pattern
}

func newRecipient(p *task.Pattern) recipient {
	r := recipient{exact: p.IsLiteral(), p: p}
	prefix, text := p.LiteralPrefix(), p.String()
	rest := strings.Split(strings.TrimPrefix(text[len(prefix):], "/"), "/")
	r.minDepth, r.maxDepth, r.byDepth = depth(prefix)+len(rest), depth(prefix)+len(rest), true
	for _, seg := range rest {
		switch seg {
		case "**":
			r.maxDepth = math.MaxInt
		case "*":
		default:
			r.byDepth = false
		}
	}
	return r
}

// matches reports whether the pattern matches id, found in a bucket whose
// prefix is the whole of id or not; idDepth is id's depth.
func (r *recipient) matches(id spiffeid.ID, idDepth int, whole bool) bool {
	switch {
	case r.exact:
		return whole
	case r.byDepth:
		return idDepth >= r.minDepth && idDepth <= r.maxDepth
	}
	return r.p.Matches(id)
}

// anyAction is the interned "*"; noAction stands for a requested action no
// grant names.
const (
	anyAction uint32 = 0
	noAction  uint32 = ^uint32(0)
)

// grantRef names one grant of one task by index.
type grantRef struct {
	task, grant int32
}

// NewIndex builds an Index over s as of now. Only tasks open at now and
// not under a task lock grant anything, and each only within its
// [NotBefore, Deadline) window at the request's time; a grant with its own
// ExpiresAt stops at that time too, checked per request like the window,
// so it needs no rebuild to end. The Index keeps s's
// tasks and grants: do not modify them while it is in use.
func NewIndex(s Snapshot, now time.Time, opts ...Option) *Index {
	ix := &Index{
		now:         now,
		maxChain:    DefaultMaxChain,
		tasks:       slices.Clone(s.Tasks),
		deadWhy:     make([]string, len(s.Tasks)),
		watchedWhy:  make([]string, len(s.Tasks)),
		standing:    slices.Clone(s.Standing),
		buckets:     map[string]*bucket{},
		actions:     map[string]uint32{task.AnyAction: anyAction},
		locks:       slices.Clone(s.Locks),
		exactLocks:  map[string][]int32{},
		prefixLocks: map[string][]int32{},
		slots:       make(map[string]int32, len(s.Tasks)),
		pos:         make([]int32, len(s.Tasks)),
		live:        len(s.Tasks),
		lockDead:    make([]bool, len(s.Tasks)),
	}
	for i := range s.Tasks {
		ix.slots[s.Tasks[i].ID] = int32(i)
		ix.pos[i] = int32(i)
	}
	for _, opt := range opts {
		opt(ix)
	}
	taskLocks := ix.indexLocks()
	watched := ix.watchedLocks()
	for i := range ix.tasks {
		ix.judgeTask(int32(i), taskLocks, watched)
		ix.indexTask(int32(i), ix.bucket)
	}
	for i := range ix.standing {
		ix.indexStanding(int32(i))
	}
	return ix
}

// watchedLocks returns, by task ID, the reason of the first lock on only
// that task's watched grants.
func (ix *Index) watchedLocks() map[string]string {
	watched := map[string]string{}
	for _, l := range ix.locks {
		if l.Kind == identity.LockTask && l.Watched {
			if _, ok := watched[l.Value]; !ok {
				watched[l.Value] = l.Reason
			}
		}
	}
	return watched
}

// judgeTask sets why the task in slot i grants nothing, if so, and why its
// watched grants do not count, from the locks and the index's time.
func (ix *Index) judgeTask(i int32, taskLocks map[string]int32, watched map[string]string) {
	t := &ix.tasks[i]
	if li, locked := taskLocks[t.ID]; locked {
		l := ix.locks[li]
		ix.deadWhy[i] = "task " + t.ID + " is locked by lock " + l.ID + ": " + l.Reason
		ix.lockDead[i] = true
	} else if t.State != task.StateOpen || !ix.now.Before(t.Deadline) {
		ix.deadWhy[i] = t.NotLiveReason(ix.now)
	}
	if why, ok := watched[t.ID]; ok {
		ix.watchedWhy[i] = why
	}
}

// indexLocks indexes identity locks and returns task locks by task ID (the
// first lock on each task). A lock on only a task's watched grants is
// recorded in watchedWhy once tasks are indexed.
func (ix *Index) indexLocks() map[string]int32 {
	taskLocks := map[string]int32{}
	for i, l := range ix.locks {
		switch l.Kind {
		case identity.LockTask:
			if l.Watched {
				continue
			}
			if _, ok := taskLocks[l.Value]; !ok {
				taskLocks[l.Value] = int32(i)
			}
		case identity.LockIDPrefix:
			ix.prefixLocks[l.Value] = append(ix.prefixLocks[l.Value], int32(i))
		case identity.LockSPIFFEID, identity.LockNode, identity.LockAgent:
			ix.exactLocks[l.Value] = append(ix.exactLocks[l.Value], int32(i))
		}
	}
	return taskLocks
}

// indexTask adds the entries of the task in slot i to the buckets that
// bucketFor returns, each after those of the task's earlier grants.
func (ix *Index) indexTask(i int32, bucketFor func(task.Pattern) *bucket) {
	t := &ix.tasks[i]
	for g := range t.Grants {
		gr := &t.Grants[g]
		expires := int64(math.MaxInt64)
		if !gr.ExpiresAt.IsZero() {
			expires = unixNano(gr.ExpiresAt)
		}
		for k := range gr.To {
			to := &gr.To[k]
			b := bucketFor(*to)
			for _, action := range gr.Actions {
				b.grants = append(b.grants, entry{action: ix.intern(action), res: newResFilter(gr.Resources), to: newRecipient(to), task: i, index: int32(g),
					notBefore: unixNano(t.NotBefore), deadline: unixNano(t.Deadline), expires: expires, grant: gr})
			}
		}
	}
}

// Bounds of the times UnixNano represents; times beyond them are clamped,
// which keeps their order.
var (
	minNano = time.Unix(0, math.MinInt64)
	maxNano = time.Unix(0, math.MaxInt64)
)

// unixNano returns t in Unix nanoseconds, clamped to int64 so that a zero
// NotBefore ("from the start") compares before every request time.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(minNano):
		return math.MinInt64
	case t.After(maxNano):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func (ix *Index) intern(action string) uint32 {
	id, ok := ix.actions[action]
	if !ok {
		id = uint32(len(ix.actions))
		ix.actions[action] = id
	}
	return id
}

// actionID returns the interned id of a requested action.
func (ix *Index) actionID(action string) uint32 {
	if id, ok := ix.actions[action]; ok {
		return id
	}
	return noAction
}

func (ix *Index) indexStanding(i int32) {
	s := &ix.standing[i]
	if s.Subject.IsZero() {
		return
	}
	b := ix.bucket(s.Subject)
	if len(b.standing) == 0 {
		ix.standingPrefixes = append(ix.standingPrefixes, s.Subject.LiteralPrefix())
	}
	for _, action := range s.Actions {
		b.standing = append(b.standing, standingEntry{action: ix.intern(action), res: newResFilter(s.Resources), subject: newRecipient(&s.Subject), index: i})
	}
}

// bucket returns the bucket for p's literal prefix, creating it.
func (ix *Index) bucket(p task.Pattern) *bucket {
	return ix.bucketAt(p.LiteralPrefix())
}

// bucketAt returns the bucket for prefix, creating it. During Update it
// returns a copy of a bucket the index shares with the one it came from,
// so that the older index, still in use, does not change.
func (ix *Index) bucketAt(prefix string) *bucket {
	b := ix.buckets[prefix]
	switch {
	case b == nil:
		b = &bucket{}
		ix.buckets[prefix] = b
		ix.depths |= 1 << min(depth(prefix), 63)
		if ix.owned != nil {
			ix.owned[b] = true
		}
	case ix.owned != nil && !ix.owned[b]:
		b = &bucket{grants: slices.Clone(b.grants), standing: slices.Clone(b.standing)}
		ix.buckets[prefix] = b
		ix.owned[b] = true
	}
	return b
}

// depth returns the number of path segments in an ID string.
func depth(id string) int {
	return strings.Count(id[len("spiffe://"):], "/")
}

// idDepth returns the number of path segments of id.
func idDepth(id spiffeid.ID) int {
	return strings.Count(id.Path(), "/")
}

// eachPrefix calls fn with id's string cut at the end of its trust domain
// and after each path segment, shortest first, for the depths in mask,
// until fn returns false. These are the only literal prefixes a pattern
// matching id can have. It does not allocate.
func eachPrefix(id spiffeid.ID, mask uint64, fn func(prefix string) bool) {
	s := id.String()
	d := 0
	for j := len(s) - len(id.Path()); j <= len(s); j++ {
		if j < len(s) && s[j] != '/' {
			continue
		}
		if mask&(1<<min(d, 63)) != 0 && !fn(s[:j]) {
			return
		}
		d++
	}
}

// eachBucket calls fn with each bucket that may hold patterns matching id,
// and whether the bucket's prefix is the whole of id.
func (ix *Index) eachBucket(id spiffeid.ID, fn func(b *bucket, whole bool)) {
	eachPrefix(id, ix.depths, func(prefix string) bool {
		if b := ix.buckets[prefix]; b != nil {
			fn(b, len(prefix) == len(id.String()))
		}
		return true
	})
}

// lockOn returns the first lock (in snapshot order) covering id, or -1.
func (ix *Index) lockOn(id spiffeid.ID) int32 {
	found := int32(-1)
	consider := func(li int32) {
		l := ix.locks[li]
		if (found < 0 || li < found) && identity.LockCoversID(l.Kind, l.Value, id) {
			found = li
		}
	}
	if len(ix.exactLocks) > 0 {
		for _, li := range ix.exactLocks[id.String()] {
			consider(li)
		}
	}
	if len(ix.prefixLocks) > 0 {
		eachPrefix(id, ^uint64(0), func(prefix string) bool {
			for _, li := range ix.prefixLocks[prefix] {
				consider(li)
			}
			return true
		})
	}
	return found
}
