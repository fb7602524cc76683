package storetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"writ.dev/writ/store"
)

// ConcurrentWrites has 8 writers make 50 changes each through stores (in
// turn, so several stores stand for several servers sharing a database)
// while a reader checks that whoever has seen revision N sees every change
// up to N. Afterwards the revisions must run 1..N without gaps, one per
// call, and hold every change the writers made.
func ConcurrentWrites(t *testing.T, stores ...store.Store) {
	const writers, callsPerWriter = 8, 50
	ctx := t.Context()

	var (
		mu    sync.Mutex
		want  []store.Change // put changes with their revision; deletes with 0
		calls atomic.Int64
	)
	// committed wakes the reader after a write: reading in a loop of its
	// own would take the CPU the writers need, without reading at moments
	// that matter any more than these.
	committed := make(chan struct{}, 1)
	record := func(c ...store.Change) {
		mu.Lock()
		want = append(want, c...)
		mu.Unlock()
		select {
		case committed <- struct{}{}:
		default:
		}
	}

	stop := make(chan struct{})
	var readerDone sync.WaitGroup
	readerDone.Go(func() {
		// The reader resumes from the last revision it checked rather than
		// rescanning from 1: earlier revisions were already found gap-free,
		// and a change committed late below that point would show as a gap
		// in the next read, where its revision is skipped over.
		var checked int64
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-committed:
			}
			seen, err := stores[k%len(stores)].Revision(ctx)
			if err != nil {
				t.Errorf("Revision: %v", err)
				return
			}
			next, err := stores[(k+1)%len(stores)].ChangesSince(ctx, checked, 0)
			if err != nil {
				t.Errorf("ChangesSince: %v", err)
				return
			}
			through, err := gapFreeFrom(next, checked, seen)
			if err != nil {
				t.Errorf("after reading revision %d: %v", seen, err)
				return
			}
			checked = through
		}
	})

	var wg sync.WaitGroup
	for w := range writers {
		s := stores[w%len(stores)]
		wg.Go(func() {
			if err := write(t, s, w, callsPerWriter, record); err != nil {
				t.Errorf("writer %d: %v", w, err)
			}
			calls.Add(callsPerWriter)
		})
	}
	wg.Wait()
	close(stop)
	readerDone.Wait()
	if t.Failed() {
		return
	}

	n := calls.Load()
	wantRevision(t, stores[0], n)
	got := changes(t, stores[0], 0, 0)
	if err := checkGapFree(got, n); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d changes recorded, %d made", len(got), len(want))
	}
	for _, c := range want {
		ok := slices.ContainsFunc(got, func(g store.Change) bool {
			return g.EntryID == c.EntryID && g.Op == c.Op && (c.Revision == 0 || g.Revision == c.Revision)
		})
		if !ok {
			t.Errorf("change %+v missing", c)
		}
	}
}

// write makes calls changes: creates (one in three of them a pair in one
// batch), updates and deletes, recording each. Revisions seen by one writer
// must increase.
func write(t *testing.T, s store.Store, w, calls int, record func(...store.Change)) error {
	ctx := t.Context()
	var alive []store.Entry
	var last int64
	advance := func(rev int64) error {
		if rev <= last {
			return fmt.Errorf("revision %d after %d", rev, last)
		}
		last = rev
		return nil
	}
	for i := range calls {
		switch {
		case i%5 == 3:
			e := alive[len(alive)-1]
			e.Hint = fmt.Sprintf("update %d", i)
			got, err := s.UpdateEntry(ctx, e, testEvent)
			if err != nil {
				return err
			}
			alive[len(alive)-1] = got
			record(store.Change{Revision: got.Revision, EntryID: got.ID, Op: store.OpPut})
			if err := advance(got.Revision); err != nil {
				return err
			}
		case i%5 == 4:
			e := alive[0]
			alive = alive[1:]
			if _, err := s.DeleteEntry(ctx, e.ID, testEvent); err != nil {
				return err
			}
			record(store.Change{EntryID: e.ID, Op: store.OpDelete})
		default:
			batch := []store.Entry{rule(w*1000 + i)}
			if i%5 == 0 {
				batch = append(batch, rule(w*1000+500+i))
			}
			got, err := s.CreateEntries(ctx, batch, testEvent)
			if err != nil {
				return err
			}
			for _, e := range got {
				record(store.Change{Revision: e.Revision, EntryID: e.ID, Op: store.OpPut})
			}
			alive = append(alive, got...)
			if err := advance(got[0].Revision); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkGapFree checks that changes hold every revision from 1 to at least
// through, in order, without gaps.
func checkGapFree(changes []store.Change, through int64) error {
	_, err := gapFreeFrom(changes, 0, through)
	return err
}

// gapFreeFrom checks that changes hold every revision from after+1 to at
// least through, in order, without gaps, and returns the last revision
// they hold.
func gapFreeFrom(changes []store.Change, after, through int64) (int64, error) {
	rev := after
	for _, c := range changes {
		switch c.Revision {
		case rev:
			if rev == after {
				return rev, fmt.Errorf("change at revision %d follows revision %d", c.Revision, rev)
			}
		case rev + 1:
			rev++
		default:
			return rev, fmt.Errorf("change at revision %d follows revision %d", c.Revision, rev)
		}
	}
	if rev < through {
		return rev, fmt.Errorf("changes end at revision %d, revision %d is committed", rev, through)
	}
	return rev, nil
}
