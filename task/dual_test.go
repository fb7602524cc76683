package task

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestDualControlEligible: a watcher counts when its root principal matches
// and no identity of its chain is in the requester's; principals count once.
func TestDualControlEligible(t *testing.T) {
	id := spiffeid.RequireFromString
	alice, bob, carol := id("spiffe://example.org/person/alice"), id("spiffe://example.org/person/bob"), id("spiffe://example.org/person/carol")
	agent, bobAgent := id("spiffe://example.org/agent/helper"), id("spiffe://example.org/agent/bob-helper")
	people, err := ParsePattern("spiffe://example.org/person/*")
	if err != nil {
		t.Fatal(err)
	}
	dc := &DualControl{Watchers: []Pattern{people}, Count: 2, Requester: []spiffeid.ID{agent, alice}}
	for _, tc := range []struct {
		chain []spiffeid.ID
		want  bool
	}{
		{[]spiffeid.ID{bob}, true},
		{[]spiffeid.ID{bobAgent, bob}, true}, // an agent watching for bob counts as bob
		{[]spiffeid.ID{alice}, false},        // the person the requester acts for
		{[]spiffeid.ID{agent}, false},        // the requester itself
		{[]spiffeid.ID{agent, bob}, false},   // the requester acting for someone else
		{[]spiffeid.ID{bob, alice}, false},   // anyone acting for alice
		{[]spiffeid.ID{bobAgent}, false},     // root does not match watchers
		{nil, false},
	} {
		if got := dc.Eligible(tc.chain); got != tc.want {
			t.Errorf("Eligible(%v) = %v, want %v", tc.chain, got, tc.want)
		}
	}
	got := dc.Present([][]spiffeid.ID{{bob}, {bobAgent, bob}, {alice}, {carol}})
	if !slices.Equal(got, []spiffeid.ID{bob, carol}) {
		t.Errorf("Present = %v, want bob and carol once each", got)
	}
}
