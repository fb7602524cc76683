package task

import (
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Dual-control leave policies, as review rules name them.
const (
	OnLeavePause     = "pause"
	OnLeaveTerminate = "terminate"
)

// DualControl makes a task's watched grants (Grant.Watched) live only while
// Count watchers are present. It is set on a task when a request approved
// under a rule with dual_control makes grants live, which it marks
// watched, and stored with the task so every server sharing the store
// enforces it.
type DualControl struct {
	Watchers  []Pattern
	Count     int
	OnLeave   string
	Heartbeat time.Duration
	// Requester is the chain that asked for the access (requester first):
	// nobody in it watches over it.
	Requester []spiffeid.ID
	// Request is the ID of the request whose approval set this.
	Request string
}

// Eligible reports whether a watcher with chain (the watcher first, then
// whom it acts for) may watch: its chain shares no identity with the
// requester's, and its root principal matches a watcher pattern.
func (dc *DualControl) Eligible(chain []spiffeid.ID) bool {
	if len(chain) == 0 {
		return false
	}
	for _, id := range chain {
		if slices.Contains(dc.Requester, id) {
			return false
		}
	}
	root := chain[len(chain)-1]
	return slices.ContainsFunc(dc.Watchers, func(p Pattern) bool { return p.Matches(root) })
}

// Present returns the distinct root principals among watchers (chains)
// that count towards dc: eligible ones, each principal once, so bob and
// bob's agent watching are one watcher.
func (dc *DualControl) Present(watchers [][]spiffeid.ID) []spiffeid.ID {
	var present []spiffeid.ID
	for _, w := range watchers {
		if !dc.Eligible(w) {
			continue
		}
		if root := w[len(w)-1]; !slices.Contains(present, root) {
			present = append(present, root)
		}
	}
	return present
}

// WatchedLive reports whether t has a watched grant that has not expired
// at now: while it has none, its dual control guards nothing.
func (t *Task) WatchedLive(now time.Time) bool {
	for i := range t.Grants {
		if g := &t.Grants[i]; g.Watched && !g.Expired(now) {
			return true
		}
	}
	return false
}

// AllWatched reports whether every grant of t is watched.
func (t *Task) AllWatched() bool {
	for i := range t.Grants {
		if !t.Grants[i].Watched {
			return false
		}
	}
	return len(t.Grants) > 0
}
