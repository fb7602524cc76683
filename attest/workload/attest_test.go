package workload

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"writ.dev/writ/identity"
)

type fakeAttestor struct {
	typ  string
	sels []identity.Selector
	err  error
}

func (f fakeAttestor) Type() string { return f.typ }

func (f fakeAttestor) Attest(context.Context, Peer) ([]identity.Selector, error) {
	return f.sels, f.err
}

func sel(typ, value string) identity.Selector { return identity.Selector{Type: typ, Value: value} }

func TestAttestAllUnion(t *testing.T) {
	attestors := []Attestor{
		fakeAttestor{typ: "unix", sels: []identity.Selector{sel("unix", "uid:1000"), sel("unix", "gid:1000"), sel("unix", "uid:1000")}},
		fakeAttestor{typ: "k8s", sels: []identity.Selector{sel("k8s", "ns:payments")}},
		fakeAttestor{typ: "systemd"},
		fakeAttestor{typ: "unix", sels: []identity.Selector{sel("unix", "gid:1000")}},
	}
	got, err := AttestAll(context.Background(), attestors, Peer{PID: 42})
	if err != nil {
		t.Fatal(err)
	}
	want := []identity.Selector{sel("k8s", "ns:payments"), sel("unix", "gid:1000"), sel("unix", "uid:1000")}
	if !slices.Equal(got, want) {
		t.Fatalf("AttestAll = %v, want %v", got, want)
	}
}

func TestAttestAllNoAttestors(t *testing.T) {
	got, err := AttestAll(context.Background(), nil, Peer{PID: 42})
	if err != nil || len(got) != 0 {
		t.Fatalf("AttestAll(no attestors) = %v, %v; want nothing, no error", got, err)
	}
}

func TestAttestAllFailure(t *testing.T) {
	cause := errors.New("process gone")
	attestors := []Attestor{
		fakeAttestor{typ: "unix", sels: []identity.Selector{sel("unix", "uid:1000")}},
		fakeAttestor{typ: "k8s", err: cause},
	}
	got, err := AttestAll(context.Background(), attestors, Peer{PID: 42})
	if err == nil {
		t.Fatalf("AttestAll = %v, want an error", got)
	}
	if got != nil {
		t.Errorf("AttestAll returned selectors %v with its error; identity must not rest on partial facts", got)
	}
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), `"k8s"`) || !strings.Contains(err.Error(), "42") {
		t.Errorf("error %q should wrap the cause and name the attestor type and pid", err)
	}
}

func TestAttestAllRefusesBadSelectors(t *testing.T) {
	for name, a := range map[string]fakeAttestor{
		"other type": {typ: "unix", sels: []identity.Selector{sel("k8s", "ns:payments")}},
		"invalid":    {typ: "unix", sels: []identity.Selector{sel("unix", "path:/bin/a\nb")}},
		"empty":      {typ: "unix", sels: []identity.Selector{sel("unix", "")}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := AttestAll(context.Background(), []Attestor{a}, Peer{PID: 42})
			if err == nil || got != nil {
				t.Fatalf("AttestAll = %v, %v; want no selectors and an error", got, err)
			}
			if !strings.Contains(err.Error(), `"unix"`) {
				t.Errorf("error %q does not name the attestor", err)
			}
		})
	}
}

func TestAttestAllCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := fakeAttestor{typ: "unix", sels: []identity.Selector{sel("unix", "uid:1000")}}
	if _, err := AttestAll(ctx, []Attestor{a}, Peer{PID: 42}); !errors.Is(err, context.Canceled) {
		t.Fatalf("AttestAll with a cancelled context: err = %v, want context.Canceled", err)
	}
}
