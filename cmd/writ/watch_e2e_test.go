package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWatchCLI: with the built binary, a grant approved under dual control
// is denied until `writ watch` runs as an eligible watcher, allowed while
// it runs, and denied again once the watch process is killed (no clean
// end of its stream). The requester cannot watch over itself.
func TestWatchCLI(t *testing.T) {
	dir := shortTempDir(t)
	sh := newShell(t, dir)
	listen := freePort(t)
	conf := fmt.Sprintf("listen_address: %s\nops_address: \"\"\n", listen)
	if err := os.WriteFile(filepath.Join(dir, "writ.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(dir, "data", "admin.sock")
	sh.start("writ server --data-dir data --config writ.yaml", admin)
	sh.run("export WRIT_SOCKET=" + admin)
	const (
		stage = "spiffe://example.org/agent/stage-bot"
		sec   = "spiffe://example.org/agent/sec-bot"
		owner = "spiffe://example.org/person/example.com/ceo"
	)
	sh.run("writ svid mint --spiffe-id " + stage + " --out stage")
	sh.run("writ svid mint --spiffe-id " + sec + " --out sec")
	rules := `rules:
  - name: vault-read
    match: {actions: [read], resources: [vault/**], requester_kind: [agent]}
    auto_approve: {}
    max_ttl: 1h
    dual_control: {watchers: ["` + sec + `"], count: 1, on_leave: pause, heartbeat: 2s}
`
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	sh.run("writ review rules apply rules.yaml")
	out := sh.run("writ task create --title rotate --reason 'rotate keys' --owner " + owner + " --deadline 2h --member " + owner)
	taskID := taskIDWord.FindStringSubmatch(out)[1]
	sh.run("writ task grant --id " + taskID + " --action read --resource hr/salaries --to " + owner)
	sh.run("writ task open --id " + taskID)

	as := func(who string) string { return "WRIT_IDENTITY_DIR=" + who + " writ " }
	remote := " --server " + listen + " --identity login"
	if out := sh.run(as("stage") + "request join " + taskID + " --grant read:vault/keys --reason rotate" + remote); !strings.Contains(out, "approved") {
		t.Fatalf("the vault read: %s", out)
	}
	checkLine := "writ check --chain " + stage + " --action read --resource vault/keys || true"
	if out := sh.run(checkLine); !strings.HasPrefix(out, "DENY") || !strings.Contains(out, "0 of 1 watchers present") {
		t.Errorf("no watcher yet: %s", out)
	}
	if msg := sh.fails(as("stage") + "watch " + taskID + remote); !strings.Contains(msg, "may not watch") {
		t.Errorf("the requester watching itself: %s", msg)
	}

	var watchOut syncBuffer
	cmd := sh.command("WRIT_IDENTITY_DIR=sec exec writ watch " + taskID + remote)
	cmd.Stdout, cmd.Stderr = &watchOut, &watchOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "writ watch reports the grant live", func() bool { return strings.Contains(watchOut.String(), "grants live") }, &watchOut)
	if out := sh.run(checkLine); !strings.HasPrefix(out, "ALLOW") {
		t.Errorf("while sec-bot watches: %s", out)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed := time.Now()
	waitFor(t, "deny after writ watch was killed", func() bool { return strings.HasPrefix(sh.run(checkLine), "DENY") })
	t.Logf("writ watch killed to deny: %s", time.Since(killed))

	// Closing the task ends the watch: writ watch says why and exits 0.
	var again syncBuffer
	cmd = sh.command("WRIT_IDENTITY_DIR=sec exec writ watch " + taskID + remote)
	cmd.Stdout, cmd.Stderr = &again, &again
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writ watch joins again", func() bool { return strings.Contains(again.String(), "grants live") }, &again)
	sh.run("writ task close --id " + taskID)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("writ watch after the task closed: %v\n%s", err, again.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("writ watch still runs 20 s after the task closed:\n%s", again.String())
	}
	if want := "stopped watching task " + taskID + ": task " + taskID + " is closed"; !strings.Contains(again.String(), want) {
		t.Errorf("writ watch said %q; want %q", again.String(), want)
	}
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool, out ...*syncBuffer) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			for _, o := range out {
				t.Logf("output: %s", o.String())
			}
			t.Fatalf("%s: not within 20s", what)
		}
	}
}
