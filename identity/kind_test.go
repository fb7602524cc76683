package identity

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestKindOf(t *testing.T) {
	for in, want := range map[string]Kind{
		"spiffe://example.org/person/alice":       KindPerson,
		"spiffe://example.org/person":             KindPerson,
		"spiffe://example.org/agent/triage-bot":   KindAgent,
		"spiffe://example.org/node/ci-runner-7":   KindNode,
		"spiffe://example.org/writ/agent/k8s/n1":  KindNode,
		"spiffe://example.org/writ/agent":         KindNode,
		"spiffe://example.org/writ/server/s1":     KindWorkload,
		"spiffe://example.org/writ/agentx":        KindWorkload,
		"spiffe://example.org/service/web":        KindWorkload,
		"spiffe://example.org/personal/alice":     KindWorkload,
		"spiffe://example.org/Person/alice":       KindWorkload,
		"spiffe://example.org/service/person/bob": KindWorkload,
		"spiffe://example.org":                    KindWorkload,
	} {
		if got := KindOf(spiffeid.RequireFromString(in)); got != want {
			t.Errorf("KindOf(%s) = %q, want %q", in, got, want)
		}
	}
	if got := KindOf(spiffeid.ID{}); got != KindWorkload {
		t.Errorf("KindOf(zero) = %q", got)
	}
}
