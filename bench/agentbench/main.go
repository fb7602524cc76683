// Command agentbench measures writ's node agent as a workload sees it: how
// soon a new rule reaches the workload, how fast cached SVIDs are served
// over the Workload API, and how much memory the server and agent hold with
// 10,000 rules. The server and agent run as separate processes started from
// a built writ binary, so the figures compare with SPIRE's measured the same
// way (see BENCHMARKS.md).
//
//	go run ./bench/agentbench [-writ PATH] [-json FILE]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const trustDomain = "bench.test"

type config struct {
	writ          string
	jsonOut       string
	warm, dur     time.Duration
	rounds, batch int
	rules         int
}

// results is what the report prints and -json writes.
type results struct {
	Date         string  `json:"date"`
	GoVersion    string  `json:"go_version"`
	Cores        int     `json:"cores"`
	Rates        []rate  `json:"fetch_rates"`
	Batch        summary `json:"batch_propagation"`
	BatchSize    int     `json:"batch_size"`
	Single       summary `json:"single_rule_propagation"`
	SingleAt     int     `json:"single_rule_at_rules"`
	RSSStart     rssPair `json:"rss_start_kb"`
	RSSAtRules   rssPair `json:"rss_at_rules_kb"`
	RulesForRSS  int     `json:"rss_rules"`
	SyncAtRulesS float64 `json:"sync_to_rules_seconds"`
	FullFetch    summary `json:"full_fetch_x509_context"`
}

type rssPair struct {
	Server int64 `json:"server"`
	Agent  int64 `json:"agent"`
}

func main() {
	var c config
	flag.StringVar(&c.writ, "writ", "", "writ binary to run (default: go build writ.dev/writ/cmd/writ into a temp dir)")
	flag.StringVar(&c.jsonOut, "json", "", "also write the figures as JSON to this file")
	flag.DurationVar(&c.warm, "warmup", time.Second, "warm-up before each fetch-rate run")
	flag.DurationVar(&c.dur, "duration", 10*time.Second, "length of each fetch-rate run")
	flag.IntVar(&c.rounds, "rounds", 5, "propagation rounds (batches, then single rules)")
	flag.IntVar(&c.batch, "batch", 1000, "rules per propagation batch")
	flag.IntVar(&c.rules, "rules", 10000, "rules in place for the single-rule and memory figures")
	flag.Parse()

	// An interrupt cancels the run; run's deferred stops then end the
	// server and agent before we exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := run(ctx, c)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted; server and agent stopped (%w)", err)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
	printReport(os.Stdout, res)
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(c.jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "agentbench:", err)
			os.Exit(1)
		}
	}
}

// env is the running system under test.
type env struct {
	server, agent *proc
	addr          string // Workload API address for go-spiffe
	rules         *rules
}

func run(ctx context.Context, c config) (*results, error) {
	// A short path under /tmp: unix socket paths are limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "wbench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if c.writ == "" {
		fmt.Fprintln(os.Stderr, "building writ...")
		if c.writ, err = buildWrit(ctx, dir); err != nil {
			return nil, err
		}
	}
	e, err := startAll(ctx, c.writ, dir)
	// Deferred calls run last-first: the agent stops before the server, as
	// on a real shutdown, so the server is not left waiting on its stream.
	defer e.server.stop()
	defer e.agent.stop()
	if err != nil {
		return nil, err
	}
	return measureAll(ctx, c, e)
}

// startAll starts the server, makes a join token and the first rule for
// this process's uid, starts the agent and waits until the workload holds
// its SVID. It returns whatever it started, even on error, for cleanup.
func startAll(ctx context.Context, bin, dir string) (*env, error) {
	e := &env{}
	addr, err := freeAddr()
	if err != nil {
		return e, err
	}
	cfg := filepath.Join(dir, "writ.yaml")
	yaml := "listen_address: " + addr + "\nops_address: \"\"\nlog:\n  level: warn\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return e, err
	}
	data := filepath.Join(dir, "server")
	admin := filepath.Join(data, "admin.sock")
	if e.server, err = start("server", bin, dir, nil, "server", "--data-dir", data, "--trust-domain", trustDomain, "--config", cfg); err != nil {
		return e, err
	}
	if err := waitSocket(ctx, e.server, admin, time.Minute); err != nil {
		return e, err
	}
	tok, err := createToken(ctx, bin, admin)
	if err != nil {
		return e, err
	}
	e.rules = &rules{bin: bin, socket: admin, dir: dir, parent: tok.AgentID, td: trustDomain,
		selector: "unix:uid:" + strconv.Itoa(os.Geteuid())}
	if _, err := e.rules.one(ctx); err != nil {
		return e, err
	}
	sock := filepath.Join(dir, "agent.sock")
	e.addr = "unix://" + sock
	if e.agent, err = start("agent", bin, dir, []string{"WRIT_JOIN_TOKEN=" + tok.Token},
		"agent", "--server", addr, "--data-dir", filepath.Join(dir, "agent"), "--socket", sock, "--log-level", "warn"); err != nil {
		return e, err
	}
	if err := waitSocket(ctx, e.agent, sock, time.Minute); err != nil {
		return e, err
	}
	return e, waitFirstSVID(ctx, e)
}

// waitFirstSVID polls until the workload is served its one rule: the agent
// has joined, synced and minted.
func waitFirstSVID(ctx context.Context, e *env) error {
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		if err := e.agent.failed(); err != nil {
			return err
		}
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		x, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr(e.addr))
		cancel()
		if err == nil && len(x.SVIDs) == 1 {
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the workload never received its first SVID: %v", last)
}

// measureAll runs the figures in a fixed order: fetch rates first, while
// the workload holds one SVID (a 10,000-SVID response would measure the
// response size, not the agent), then propagation, which grows the rule
// set, then memory at the full rule set, then single-rule propagation.
func measureAll(ctx context.Context, c config, e *env) (*results, error) {
	res := &results{Date: time.Now().UTC().Format("2006-01-02T15:04Z"), GoVersion: runtime.Version(),
		Cores: runtime.NumCPU(), BatchSize: c.batch, RulesForRSS: c.rules}
	var err error
	if res.RSSStart, err = readRSS(e); err != nil {
		return nil, err
	}
	fmt.Fprintln(os.Stderr, "measuring fetch rates...")
	if res.Rates, err = measureRates(ctx, e.addr, c.warm, c.dur); err != nil {
		return nil, err
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(e.addr), largeMessages())
	if err != nil {
		return nil, err
	}
	defer client.Close()
	w := newCountWatcher()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go client.WatchX509Context(wctx, w)
	if _, err := w.waitFor(ctx, e.rules.total, time.Minute); err != nil {
		return nil, err
	}
	if err := propagate(ctx, c, e, w, res); err != nil {
		return nil, err
	}
	res.FullFetch, err = timeFullFetch(ctx, client, c.rounds)
	return res, err
}

// timeFullFetch times whole FetchX509Context calls at the full rule set:
// every propagation delay above includes one such response being sent and
// parsed, so this shows how much of the delay is the response itself.
func timeFullFetch(ctx context.Context, client *workloadapi.Client, n int) (summary, error) {
	var ds []time.Duration
	for range n {
		t0 := time.Now()
		if _, err := client.FetchX509Context(ctx); err != nil {
			return summary{}, err
		}
		ds = append(ds, time.Since(t0))
	}
	return summarize(ds), nil
}

func propagate(ctx context.Context, c config, e *env, w *countWatcher, res *results) error {
	fmt.Fprintf(os.Stderr, "propagation: %d batches of %d rules...\n", c.rounds, c.batch)
	var batch []time.Duration
	for range c.rounds {
		created, err := e.rules.batch(ctx, c.batch)
		if err != nil {
			return err
		}
		d, err := delay(ctx, w, e.rules.total, created)
		if err != nil {
			return err
		}
		batch = append(batch, d)
	}
	res.Batch = summarize(batch)

	fmt.Fprintf(os.Stderr, "filling to %d rules...\n", c.rules)
	if n := c.rules - e.rules.total; n > 0 {
		created, err := e.rules.batch(ctx, n)
		if err != nil {
			return err
		}
		d, err := delay(ctx, w, e.rules.total, created)
		if err != nil {
			return err
		}
		res.SyncAtRulesS = d.Seconds()
	}
	var err error
	if res.RSSAtRules, err = readRSS(e); err != nil {
		return err
	}
	res.RulesForRSS = e.rules.total

	fmt.Fprintf(os.Stderr, "propagation: %d single rules at %d...\n", c.rounds, e.rules.total)
	res.SingleAt = e.rules.total
	var single []time.Duration
	for range c.rounds {
		created, err := e.rules.one(ctx)
		if err != nil {
			return err
		}
		d, err := delay(ctx, w, e.rules.total, created)
		if err != nil {
			return err
		}
		single = append(single, d)
	}
	res.Single = summarize(single)
	return nil
}

func readRSS(e *env) (rssPair, error) {
	s, err := rssKB(e.server)
	if err != nil {
		return rssPair{}, err
	}
	a, err := rssKB(e.agent)
	return rssPair{Server: s, Agent: a}, err
}
