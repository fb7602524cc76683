package login_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/person/login"
	"writ.dev/writ/person/login/logintest"
)

func TestDevicePendingThenApproved(t *testing.T) {
	p := logintest.New(t, logintest.WithDevicePendingPolls(1))
	p.SetUser("carol@example.com", true)
	var out bytes.Buffer
	idToken, err := login.Device(testContext(t), config(p, &out))
	if err != nil {
		t.Fatal(err)
	}
	checkClaims(t, p, idToken, "carol@example.com", true)
	for _, want := range []string{p.URL + "/device", "user_code="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q lacks %q", out.String(), want)
		}
	}
}

// writerFunc calls f for each write, letting a test act once the person
// has been shown the code.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestDeviceApprovedWhilePending(t *testing.T) {
	p := logintest.New(t)
	out := writerFunc(func(b []byte) (int, error) {
		if strings.Contains(string(b), "Waiting") {
			p.ApproveDevice()
		}
		return len(b), nil
	})
	idToken, err := login.Device(testContext(t), config(p, out))
	if err != nil {
		t.Fatal(err)
	}
	checkClaims(t, p, idToken, "alice@example.com", true)
}

func TestDeviceDenied(t *testing.T) {
	p := logintest.New(t)
	p.DenyDevice()
	_, err := login.Device(testContext(t), config(p, io.Discard))
	if err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("err = %v, want a denial", err)
	}
}

func TestDeviceExpired(t *testing.T) {
	p := logintest.New(t, logintest.WithDeviceCodeTTL(time.Second))
	_, err := login.Device(testContext(t), config(p, io.Discard))
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err = %v, want the device code to expire", err)
	}
}

// TestDeviceSlowDown relies on the provider answering slow_down again to
// any poll that comes before the longer interval, so a client ignoring
// slow_down would make it count more than one.
func TestDeviceSlowDown(t *testing.T) {
	p := logintest.New(t, logintest.WithDeviceSlowDown(), logintest.WithDevicePendingPolls(0))
	idToken, err := login.Device(testContext(t), config(p, io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	checkClaims(t, p, idToken, "alice@example.com", true)
	if n := p.SlowDowns(); n != 1 {
		t.Errorf("provider answered slow_down %d times, want 1: the client did not lengthen its interval", n)
	}
}

func TestDeviceWithoutDeviceFlow(t *testing.T) {
	p := logintest.New(t, logintest.WithoutDeviceFlow())
	_, err := login.Device(testContext(t), config(p, io.Discard))
	if err == nil || !strings.Contains(err.Error(), "does not offer the device flow; use the browser flow") {
		t.Fatalf("err = %v, want the device flow to be unavailable", err)
	}
}
