package login_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"writ.dev/writ/person/login"
	"writ.dev/writ/person/login/logintest"
)

// deviceConfig reaches the provider in process: the device tests run under
// testing/synctest, where the provider and the polling client share the
// bubble's fake clock, so RFC 8628's whole-second intervals and slow_down's
// extra five seconds pass at once while keeping their order.
func deviceConfig(p *logintest.Provider, out io.Writer) login.Config {
	c := config(p, out)
	c.HTTPClient = p.InProcessClient()
	return c
}

func TestDevicePendingThenApproved(t *testing.T) {
	p := logintest.New(t, logintest.WithDevicePendingPolls(1))
	synctest.Test(t, func(t *testing.T) {
		p.SetUser("carol@example.com", true)
		var out bytes.Buffer
		idToken, err := login.Device(testContext(t), deviceConfig(p, &out))
		if err != nil {
			t.Fatal(err)
		}
		checkClaims(t, p, idToken, "carol@example.com", true)
		for _, want := range []string{p.URL + "/device", "user_code="} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output %q lacks %q", out.String(), want)
			}
		}
	})
}

// writerFunc calls f for each write, letting a test act once the person
// has been shown the code.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestDeviceApprovedWhilePending(t *testing.T) {
	p := logintest.New(t)
	synctest.Test(t, func(t *testing.T) {
		out := writerFunc(func(b []byte) (int, error) {
			if strings.Contains(string(b), "Waiting") {
				p.ApproveDevice()
			}
			return len(b), nil
		})
		idToken, err := login.Device(testContext(t), deviceConfig(p, out))
		if err != nil {
			t.Fatal(err)
		}
		checkClaims(t, p, idToken, "alice@example.com", true)
	})
}

func TestDeviceDenied(t *testing.T) {
	p := logintest.New(t)
	synctest.Test(t, func(t *testing.T) {
		p.DenyDevice()
		_, err := login.Device(testContext(t), deviceConfig(p, io.Discard))
		if err == nil || !strings.Contains(err.Error(), "denied") {
			t.Fatalf("err = %v, want a denial", err)
		}
	})
}

func TestDeviceExpired(t *testing.T) {
	p := logintest.New(t, logintest.WithDeviceCodeTTL(time.Second))
	synctest.Test(t, func(t *testing.T) {
		_, err := login.Device(testContext(t), deviceConfig(p, io.Discard))
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("err = %v, want the device code to expire", err)
		}
	})
}

// TestDeviceSlowDown relies on the provider answering slow_down again to
// any poll that comes before the longer interval, so a client ignoring
// slow_down would make it count more than one.
func TestDeviceSlowDown(t *testing.T) {
	p := logintest.New(t, logintest.WithDeviceSlowDown(), logintest.WithDevicePendingPolls(0))
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		idToken, err := login.Device(testContext(t), deviceConfig(p, io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		checkClaims(t, p, idToken, "alice@example.com", true)
		// On the bubble's clock: one interval, then the five seconds more
		// that slow_down asks for.
		if waited := time.Since(start); waited < 7*time.Second {
			t.Errorf("the client polled again %v after starting, before the 1 s interval plus 5 s slow_down", waited)
		}
		if n := p.SlowDowns(); n != 1 {
			t.Errorf("provider answered slow_down %d times, want 1: the client did not lengthen its interval", n)
		}
	})
}

func TestDeviceWithoutDeviceFlow(t *testing.T) {
	p := logintest.New(t, logintest.WithoutDeviceFlow())
	synctest.Test(t, func(t *testing.T) {
		_, err := login.Device(testContext(t), deviceConfig(p, io.Discard))
		if err == nil || !strings.Contains(err.Error(), "does not offer the device flow; use the browser flow") {
			t.Fatalf("err = %v, want the device flow to be unavailable", err)
		}
	})
}
