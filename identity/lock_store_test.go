package identity_test

import (
	"testing"

	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

// TestLockKindsMatchStore: the store keeps lock kinds as strings of its own
// (it imports nothing of writ's); they must be the same words.
func TestLockKindsMatchStore(t *testing.T) {
	stored := []string{store.LockSPIFFEID, store.LockIDPrefix, store.LockNode, store.LockAgent, store.LockJoinMethod, store.LockTask}
	kinds := identity.LockKinds()
	if len(kinds) != len(stored) {
		t.Fatalf("%d lock kinds, the store has %d", len(kinds), len(stored))
	}
	for i, k := range kinds {
		if string(k) != stored[i] {
			t.Errorf("lock kind %d is %q, the store's is %q", i, k, stored[i])
		}
	}
}
