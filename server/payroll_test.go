package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

const (
	ceo      = "spiffe://" + testTD + "/person/example.com/ceo"
	intern   = "spiffe://" + testTD + "/person/example.com/intern"
	engineer = "spiffe://" + testTD + "/person/example.com/eng"
	bot      = "spiffe://" + testTD + "/agent/payroll-bot"
	runner   = "spiffe://" + testTD + "/ci/runner-1"
)

// openTask creates and opens a task through the API.
func openTask(t *testing.T, api writv1.TaskServiceClient, title string, members []string, grants ...*writv1.Grant) *writv1.Task {
	t.Helper()
	ctx := t.Context()
	created, err := api.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{
		Title: title, Reason: "scenario", Owner: ceo, Members: members, Grants: grants,
		Deadline: time.Now().Add(time.Hour).Unix(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	opened, err := api.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	return opened
}

func check(t *testing.T, api writv1.DecisionServiceClient, action, resource string, chain ...string) *writv1.CheckResponse {
	t.Helper()
	resp, err := api.Check(t.Context(), &writv1.CheckRequest{Action: action, Resource: resource, Chain: chain})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestPayrollScenario is the scenario writ was conceived for, over the real
// API: an agent in a task with the CEO reads hr/salaries on the CEO's
// behalf; the same agent acting for an intern is denied, with the reason;
// a CI runner in a deploy task cannot use the engineer's grant; closing the
// task denies the next request at once; a locked task grants nothing; a
// resource server decides from the requester's SVID, not from names.
func TestPayrollScenario(t *testing.T) {
	srv := startServer(t, testConfig(t))
	admin := adminConn(t, srv)
	tasks := writv1.NewTaskServiceClient(admin)
	decide := writv1.NewDecisionServiceClient(admin)

	payroll := openTask(t, tasks, "answer the CEO's question about payroll", []string{ceo, bot},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo, bot}})
	deploy := openTask(t, tasks, "deploy 4.2 to prod", []string{engineer, runner},
		&writv1.Grant{Actions: []string{"deploy"}, Resources: []string{"k8s/prod/ns/web"}, To: []string{engineer}},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"artifacts/web/**"}, To: []string{runner}})

	if r := check(t, decide, "read", "hr/salaries", bot, ceo); !r.GetAllow() || len(r.GetCovered()) != 2 || r.GetCovered()[0].GetTaskId() != payroll.GetId() {
		t.Fatalf("the agent acting for the CEO in the payroll task: %v", r)
	}
	if r := check(t, decide, "read", "hr/salaries", bot, intern); r.GetAllow() || r.GetDeniedAt() != 1 || !strings.Contains(r.GetReason(), "intern") {
		t.Fatalf("the agent acting for the intern: %v", r)
	}
	if r := check(t, decide, "deploy", "k8s/prod/ns/web", runner); r.GetAllow() {
		t.Fatalf("the CI runner used the engineer's grant: %v", r)
	}
	if r := check(t, decide, "deploy", "k8s/prod/ns/web", engineer); !r.GetAllow() {
		t.Fatalf("the engineer in the deploy task: %v", r)
	}
	if r := check(t, decide, "write", "hr/salaries", bot, ceo); r.GetAllow() {
		t.Fatalf("write was never granted: %v", r)
	}

	// Closing the task takes it all away, for the very next request.
	if _, err := tasks.CloseTask(t.Context(), &writv1.TaskTransitionRequest{Id: payroll.GetId()}); err != nil {
		t.Fatal(err)
	}
	if r := check(t, decide, "read", "hr/salaries", bot, ceo); r.GetAllow() {
		t.Fatalf("allowed after the task closed: %v", r)
	} else if want := "task " + payroll.GetId() + " is closed"; !strings.Contains(r.GetReason(), want) {
		t.Fatalf("the denial after the task closed does not say %q: %q", want, r.GetReason())
	}
	// A locked task grants nothing.
	createLock(t, admin, "task", deploy.GetId(), "INC-12 change freeze", "")
	if r := check(t, decide, "deploy", "k8s/prod/ns/web", engineer); r.GetAllow() || !strings.Contains(r.GetReason(), "INC-12") {
		t.Fatalf("allowed under a task lock: %v", r)
	}

	// A resource server (any workload of the trust domain) asks with the
	// requester's evidence; it may not name identities.
	rs := mintSVID(t, srv, "spiffe://"+testTD+"/svc/artifact-store")
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	cc, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(rs, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID())))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	remote := writv1.NewDecisionServiceClient(cc)
	requester := mintSVID(t, srv, runner)
	var chainDER [][]byte
	for _, c := range requester.Certificates {
		chainDER = append(chainDER, c.Raw)
	}
	// The deploy task is locked: lift the lock so the runner's own grant counts.
	locks, _ := writv1.NewLockServiceClient(admin).ListLocks(t.Context(), &writv1.ListLocksRequest{})
	for _, l := range locks.GetLocks() {
		if _, err := writv1.NewLockServiceClient(admin).DeleteLock(t.Context(), &writv1.DeleteLockRequest{Id: l.GetId()}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	var r *writv1.CheckResponse
	eventually(t, 2*time.Second, "the lock lifted in the decision index", func() bool {
		r, err = remote.Check(ctx, &writv1.CheckRequest{Action: "read", Resource: "artifacts/web/4.2", X509Svid: chainDER})
		return err == nil && r.GetAllow()
	})
	if r.GetChain()[0] != runner {
		t.Fatalf("decided for %v, want the runner from its certificate", r.GetChain())
	}
	_, err = remote.Check(ctx, &writv1.CheckRequest{Action: "read", Resource: "artifacts/web/4.2", Chain: []string{runner}})
	wantCode(t, err, codes.PermissionDenied, "dry runs")
	foreign := testKeyCert(t)
	_, err = remote.Check(ctx, &writv1.CheckRequest{Action: "read", Resource: "artifacts/web/4.2", X509Svid: [][]byte{foreign}})
	wantCode(t, err, codes.InvalidArgument, "does not verify")
	_, err = remote.Check(ctx, &writv1.CheckRequest{Action: "read", Resource: "artifacts/**", X509Svid: chainDER})
	wantCode(t, err, codes.InvalidArgument, "resource")

	// Every decision is an audit event, recorded in the background.
	eventually(t, 5*time.Second, "decision events in the audit log", func() bool {
		n := 0
		for _, e := range readEvents(t, writv1.NewAuditServiceClient(admin)) {
			if e.Type == audit.EventDecision {
				n++
			}
		}
		return n >= 8
	})
}

// testKeyCert is a self-signed certificate naming a trust domain member,
// from no authority of the trust domain.
func testKeyCert(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(runner)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestGuardrailForbids: a Cedar guardrail forbids agents writing to
// production without a person in the chain, whatever a task grants.
func TestGuardrailForbids(t *testing.T) {
	cfg := testConfig(t)
	policy := filepath.Join(cfg.DataDir, "prod.cedar")
	if err := os.WriteFile(policy, []byte(`@id("no-unaccompanied-agent-writes")
forbid(principal, action == writ::Action::"write", resource in writ::Resource::"db/prod")
when { principal.kind == "agent" && !context.person_in_chain };

@id("hr-only-from-the-office")
forbid(principal, action, resource in writ::Resource::"hr")
when { context has source_ip && !context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("no-prod-deploys-granted-to-workloads")
forbid(principal, action == writ::Action::"deploy", resource in writ::Resource::"k8s/prod")
when { principal.kind == "workload" && context.granting };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Guardrails.Files = []string{policy}
	srv := startServer(t, cfg)
	admin := adminConn(t, srv)
	openTask(t, writv1.NewTaskServiceClient(admin), "migrate payments", []string{bot, ceo},
		&writv1.Grant{Actions: []string{"write"}, Resources: []string{"db/prod/**"}, To: []string{bot, ceo}})
	decide := writv1.NewDecisionServiceClient(admin)
	if r := check(t, decide, "write", "db/prod/payments", bot); r.GetAllow() || !strings.Contains(r.GetReason(), "no-unaccompanied-agent-writes") {
		t.Fatalf("the agent alone: %v", r)
	} else if n := strings.Count(r.GetReason(), "guardrail"); n != 1 || strings.Count(r.GetReason(), "forbid") != 1 {
		t.Fatalf("the reason names the guardrail %d times, want once: %q", n, r.GetReason())
	}
	if r := check(t, decide, "write", "db/prod/payments", bot, ceo); !r.GetAllow() {
		t.Fatalf("the agent acting for the CEO: %v", r)
	}

	// A guardrail on where the request comes from, as the resource server saw it.
	openTask(t, writv1.NewTaskServiceClient(admin), "payroll question", []string{bot, ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{bot, ceo}})
	from := func(addr string) *writv1.CheckResponse {
		r, err := decide.Check(t.Context(), &writv1.CheckRequest{Action: "read", Resource: "hr/salaries", Chain: []string{bot, ceo}, SourceAddress: addr})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := from("10.1.2.3:443"); !r.GetAllow() {
		t.Fatalf("from the office: %v", r)
	}
	if r := from("203.0.113.5"); r.GetAllow() || !strings.Contains(r.GetReason(), "hr-only-from-the-office") {
		t.Fatalf("from outside: %v", r)
	}

	// Guardrails bound what a task may grant: opening is refused.
	tasks := writv1.NewTaskServiceClient(admin)
	draft, err := tasks.CreateTask(t.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{
		Title: "deploy", Reason: "release", Owner: engineer, Members: []string{engineer, runner}, Deadline: time.Now().Add(time.Hour).Unix(),
		Grants: []*writv1.Grant{{Actions: []string{"deploy"}, Resources: []string{"k8s/prod/**"}, To: []string{runner}}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tasks.OpenTask(t.Context(), &writv1.TaskTransitionRequest{Id: draft.GetId()})
	wantCode(t, err, codes.PermissionDenied, "no-prod-deploys-granted-to-workloads")
}
