package authz

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/identity"
)

// TestDeadTasksApartDecideTheSame: setting dead tasks' grants apart
// changes no decision and no reason. Live tasks that start later or are
// locked, and ended ones, are interleaved so that the first task that
// would have allowed a denied request is sometimes live, sometimes dead.
func TestDeadTasksApartDecideTheSame(t *testing.T) {
	const live, ended = 2_000, 2_000
	s, reqs := scaleWorld(t, live, ended)
	for i := 0; i < live; i += 7 {
		s.Tasks[i].NotBefore = t0.Add(time.Hour)
	}
	for i := 3; i < live+ended; i += 11 {
		s.Locks = append(s.Locks, Lock{Kind: identity.LockTask, Value: s.Tasks[i].ID, ID: fmt.Sprintf("L-%d", i), Reason: "change freeze"})
	}
	apart := NewIndex(s, t0)
	mixed := NewIndex(s, t0, func(ix *Index) { ix.mixDead = true })
	reasons := map[string]int{}
	for i, req := range reqs[:30_000] {
		got, want := apart.Decide(req, nil), mixed.Decide(req, nil)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("request %d %+v:\napart %+v\nmixed %+v", i, req, got, want)
		}
		for _, r := range []string{"is closed", "starts at", "is locked by lock", "in any open task"} {
			if strings.Contains(got.Reason, r) {
				reasons[r]++
			}
		}
	}
	for _, r := range []string{"is closed", "starts at", "is locked by lock"} {
		if reasons[r] == 0 {
			t.Errorf("no denial said %q: the world does not exercise it (%v)", r, reasons)
		}
	}
	t.Log(reasons)
}
