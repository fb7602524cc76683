package authz

import (
	"maps"
	"slices"
	"time"

	"writ.dev/writ/task"
)

// Update returns an Index over s as of now that decides every request as
// NewIndex(s, now, opts...) would, with the same reasons, reusing what ix
// indexed for the tasks that did not change. Building an index is linear
// in all the tasks kept; an update is linear in the tasks that changed
// and the buckets they share, plus small per-task work (the snapshot's
// order, why each task grants nothing). ix itself does not change and
// stays usable.
//
// A task counts as unchanged when a task with its ID was in ix's snapshot
// with the same grants (the same slice, as a decoder keeping unchanged
// tasks gives) and the same window; the index holds pointers into its
// grants, so, as for NewIndex, do not modify them while either index is in
// use. When the tasks kept do not keep their order, or an ID is given
// twice, Update builds afresh.
func (ix *Index) Update(s Snapshot, now time.Time, opts ...Option) *Index {
	if ix == nil || len(ix.slots) != ix.live || len(ix.tasks) > 2*len(s.Tasks)+64 {
		return NewIndex(s, now, opts...)
	}
	n := len(ix.tasks)
	// slotOf[i] is the slot of s.Tasks[i] if it was indexed, else -1.
	slotOf := make([]int32, len(s.Tasks))
	kept := make([]bool, n)
	last := int32(-1)
	for i := range s.Tasks {
		slot, ok := ix.slots[s.Tasks[i].ID]
		if !ok {
			slotOf[i] = -1
			continue
		}
		if ix.pos[slot] <= last {
			return NewIndex(s, now, opts...)
		}
		last = ix.pos[slot]
		slotOf[i] = slot
		kept[slot] = true
	}
	nx := &Index{
		now:         now,
		maxChain:    DefaultMaxChain,
		tasks:       make([]task.Task, n),
		deadWhy:     make([]string, n),
		watchedWhy:  make([]string, n),
		standing:    slices.Clone(s.Standing),
		buckets:     maps.Clone(ix.buckets),
		actions:     maps.Clone(ix.actions),
		depths:      ix.depths,
		locks:       slices.Clone(s.Locks),
		exactLocks:  map[string][]int32{},
		prefixLocks: map[string][]int32{},
		slots:       maps.Clone(ix.slots),
		pos:         make([]int32, n),
		live:        len(s.Tasks),
		lockDead:    make([]bool, n),
		owned:       map[*bucket]bool{},
	}
	for _, opt := range opts {
		opt(nx)
	}
	for i := range nx.pos {
		nx.pos[i] = -1
	}
	// Take out the entries of the tasks gone or changed, and free the
	// slots of those gone.
	var free []int32
	var redo []int32 // slots of changed or new tasks, in snapshot order
	for slot := range ix.tasks {
		if ix.pos[slot] >= 0 && !kept[slot] {
			nx.dropTask(&ix.tasks[slot], int32(slot))
			delete(nx.slots, ix.tasks[slot].ID)
			nx.tasks[slot] = task.Task{}
			free = append(free, int32(slot))
		} else if ix.pos[slot] < 0 {
			free = append(free, int32(slot))
		}
	}
	for i := range s.Tasks {
		t := &s.Tasks[i]
		slot := slotOf[i]
		switch {
		case slot >= 0 && sameEntries(&ix.tasks[slot], t):
		case slot >= 0:
			nx.dropTask(&ix.tasks[slot], slot)
			redo = append(redo, slot)
		default:
			if _, dup := nx.slots[t.ID]; dup {
				nx.owned = nil
				return NewIndex(s, now, opts...)
			}
			if len(free) > 0 {
				slot, free = free[0], free[1:]
			} else {
				slot = int32(len(nx.tasks))
				nx.tasks = append(nx.tasks, task.Task{})
				nx.deadWhy = append(nx.deadWhy, "")
				nx.watchedWhy = append(nx.watchedWhy, "")
				nx.pos = append(nx.pos, -1)
				nx.lockDead = append(nx.lockDead, false)
			}
			nx.slots[t.ID] = slot
			redo = append(redo, slot)
		}
		nx.tasks[slot] = *t
		nx.pos[slot] = int32(i)
	}
	taskLocks := nx.indexLocks()
	watched := nx.watchedLocks()
	for slot := range nx.tasks {
		if nx.pos[slot] < 0 {
			continue
		}
		// A closed or expired task's reason does not depend on the time;
		// keep the string rather than format it again.
		if slot < n && kept[slot] && !ix.lockDead[slot] && sameDeath(&ix.tasks[slot], &nx.tasks[slot]) {
			t := &nx.tasks[slot]
			if _, locked := taskLocks[t.ID]; !locked {
				nx.deadWhy[slot] = ix.deadWhy[slot]
				if why, ok := watched[t.ID]; ok {
					nx.watchedWhy[slot] = why
				}
				continue
			}
		}
		nx.judgeTask(int32(slot), taskLocks, watched)
	}
	for _, slot := range redo {
		nx.addTask(slot)
	}
	for _, prefix := range ix.standingPrefixes {
		if b := nx.buckets[prefix]; b != nil {
			nx.bucketAt(prefix).standing = nil
		}
	}
	for i := range nx.standing {
		nx.indexStanding(int32(i))
	}
	for prefix, b := range nx.buckets {
		if nx.owned[b] && len(b.grants) == 0 && len(b.standing) == 0 {
			delete(nx.buckets, prefix)
		}
	}
	nx.owned = nil
	return nx
}

// sameDeath reports whether t is closed or expired as old was, so that
// the reason it grants nothing is the same at any time.
func sameDeath(old, t *task.Task) bool {
	return t.State != task.StateOpen && old.State == t.State && old.ID == t.ID && old.Deadline.Equal(t.Deadline)
}

// sameEntries reports whether the entries indexed for old serve t: the
// same grants and window.
func sameEntries(old, t *task.Task) bool {
	if len(old.Grants) != len(t.Grants) || !old.NotBefore.Equal(t.NotBefore) || !old.Deadline.Equal(t.Deadline) {
		return false
	}
	return len(t.Grants) > 0 && &old.Grants[0] == &t.Grants[0] && cap(old.Grants) == cap(t.Grants)
}

// dropTask takes the entries of old, indexed in slot, out of the buckets.
func (ix *Index) dropTask(old *task.Task, slot int32) {
	for g := range old.Grants {
		for k := range old.Grants[g].To {
			prefix := old.Grants[g].To[k].LiteralPrefix()
			if ix.buckets[prefix] == nil {
				continue
			}
			b := ix.bucketAt(prefix)
			b.grants = slices.DeleteFunc(b.grants, func(e entry) bool { return e.task == slot })
		}
	}
}

// addTask indexes the task in slot, placing its entries in each bucket
// where NewIndex would: after those of the tasks before it in the
// snapshot, in the order of its grants.
func (ix *Index) addTask(slot int32) {
	staged := map[string]*bucket{}
	var order []string
	ix.indexTask(slot, func(p task.Pattern) *bucket {
		prefix := p.LiteralPrefix()
		b := staged[prefix]
		if b == nil {
			b = &bucket{}
			staged[prefix] = b
			order = append(order, prefix)
		}
		return b
	})
	p := ix.pos[slot]
	for _, prefix := range order {
		b := ix.bucketAt(prefix)
		at, _ := slices.BinarySearchFunc(b.grants, p+1, func(e entry, target int32) int {
			return int(ix.pos[e.task]) - int(target)
		})
		b.grants = slices.Insert(b.grants, at, staged[prefix].grants...)
	}
}
