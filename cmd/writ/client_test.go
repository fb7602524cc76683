package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	writv1 "writ.dev/writ/api/writ/v1"
)

// fakeWrit is an in-memory stand-in for the server's admin API, just
// faithful enough to exercise the client: revisions, optimistic concurrency,
// paging and signing.
type fakeWrit struct {
	mu        sync.Mutex
	entries   map[string]*writv1.Entry
	order     []string
	rev       int64
	nextID    int
	pageSize  int
	listCalls int
	// beforeUpdate runs inside UpdateEntry before the revision check, to
	// simulate someone else changing the entry meanwhile.
	beforeUpdate func(f *fakeWrit, id string)
	// lastMint is the last mint request received.
	lastMint *writv1.MintX509SVIDRequest
	// mintOtherKey makes MintX509SVID certify a key other than the CSR's.
	mintOtherKey bool

	root, inter   *x509.Certificate
	interKey      crypto.Signer
	rootDER, iDER []byte
}

// entry returns a copy of the stored entry id, or nil.
func (f *fakeWrit) entry(id string) *writv1.Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[id]
	if !ok {
		return nil
	}
	return proto.Clone(e).(*writv1.Entry)
}

type fakeEntries struct {
	writv1.UnimplementedEntryServiceServer
	f *fakeWrit
}

type fakeSVIDs struct {
	writv1.UnimplementedSVIDServiceServer
	f *fakeWrit
}

type fakeBundles struct {
	writv1.UnimplementedBundleServiceServer
	f *fakeWrit
}

type fakeStatus struct {
	writv1.UnimplementedStatusServiceServer
	f *fakeWrit
}

// startFake serves a fakeWrit on a unix socket in a temporary directory and
// returns it with the socket's path.
func startFake(t *testing.T) (*fakeWrit, string) {
	t.Helper()
	f := &fakeWrit{entries: map[string]*writv1.Entry{}, pageSize: 2}
	f.makeCA(t)
	// t.TempDir paths include the test name and can pass the ~100-byte
	// limit of unix socket paths.
	dir, err := os.MkdirTemp("", "writ-cli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	writv1.RegisterEntryServiceServer(srv, &fakeEntries{f: f})
	writv1.RegisterSVIDServiceServer(srv, &fakeSVIDs{f: f})
	writv1.RegisterBundleServiceServer(srv, &fakeBundles{f: f})
	writv1.RegisterStatusServiceServer(srv, &fakeStatus{f: f})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f, sock
}

func (f *fakeWrit) makeCA(t *testing.T) {
	t.Helper()
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tdURL, _ := url.Parse("spiffe://example.org")
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"test"}, CommonName: "test root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{tdURL},
	}
	f.rootDER, err = x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	f.root, _ = x509.ParseCertificate(f.rootDER)
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	interTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{Organization: []string{"test"}, CommonName: "test intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(12 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{tdURL},
	}
	f.iDER, err = x509.CreateCertificate(rand.Reader, interTmpl, f.root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	f.inter, _ = x509.ParseCertificate(f.iDER)
	f.interKey = interKey
}

func (s *fakeEntries) CreateEntries(_ context.Context, req *writv1.CreateEntriesRequest) (*writv1.CreateEntriesResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(req.GetEntries()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no entries")
	}
	f.rev++
	now := time.Now().Unix()
	out := make([]*writv1.Entry, 0, len(req.GetEntries()))
	for i, e := range req.GetEntries() {
		e = proto.Clone(e).(*writv1.Entry)
		if e.Id == "" {
			f.nextID++
			e.Id = fmt.Sprintf("e%d", f.nextID)
		}
		if _, dup := f.entries[e.Id]; dup {
			f.rev--
			return nil, status.Errorf(codes.AlreadyExists, "entries[%d].id: an entry with id %q already exists", i, e.Id)
		}
		e.Revision, e.CreatedAt, e.UpdatedAt = f.rev, now, now
		out = append(out, e)
	}
	for _, e := range out {
		f.entries[e.Id] = e
		f.order = append(f.order, e.Id)
	}
	return &writv1.CreateEntriesResponse{Entries: out}, nil
}

func (s *fakeEntries) GetEntry(_ context.Context, req *writv1.GetEntryRequest) (*writv1.Entry, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.GetId() == "forbidden" {
		return nil, status.Error(codes.PermissionDenied, "uid 1001 may not administer this server")
	}
	e, ok := f.entries[req.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "entry %q not found", req.GetId())
	}
	return proto.Clone(e).(*writv1.Entry), nil
}

func (s *fakeEntries) UpdateEntry(_ context.Context, req *writv1.UpdateEntryRequest) (*writv1.Entry, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	e := proto.Clone(req.GetEntry()).(*writv1.Entry)
	if f.beforeUpdate != nil {
		f.beforeUpdate(f, e.GetId())
	}
	cur, ok := f.entries[e.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "entry %q not found", e.GetId())
	}
	if e.GetRevision() != 0 && e.GetRevision() != cur.GetRevision() {
		return nil, status.Errorf(codes.Aborted, "entry %q is at revision %d, not %d", e.GetId(), cur.GetRevision(), e.GetRevision())
	}
	f.rev++
	e.Revision, e.CreatedAt, e.UpdatedAt = f.rev, cur.GetCreatedAt(), time.Now().Unix()
	f.entries[e.Id] = e
	return proto.Clone(e).(*writv1.Entry), nil
}

func (s *fakeEntries) DeleteEntry(_ context.Context, req *writv1.DeleteEntryRequest) (*writv1.Entry, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[req.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "entry %q not found", req.GetId())
	}
	delete(f.entries, e.Id)
	f.order = slices.DeleteFunc(f.order, func(id string) bool { return id == e.Id })
	f.rev++
	return e, nil
}

func (s *fakeEntries) ListEntries(_ context.Context, req *writv1.ListEntriesRequest) (*writv1.ListEntriesResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	start := 0
	if tok := req.GetPageToken(); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, "bad page token")
		}
		start = n
	}
	var match []*writv1.Entry
	for _, id := range f.order {
		e := f.entries[id]
		if req.GetSpiffeId() != "" && e.GetSpiffeId() != req.GetSpiffeId() ||
			req.GetParentId() != "" && e.GetParentId() != req.GetParentId() ||
			req.GetHint() != "" && e.GetHint() != req.GetHint() {
			continue
		}
		has := func(want *writv1.Selector) bool {
			return slices.ContainsFunc(e.GetSelectors(), func(s *writv1.Selector) bool { return proto.Equal(s, want) })
		}
		all := true
		for _, want := range req.GetSelectors() {
			all = all && has(want)
		}
		if all {
			match = append(match, e)
		}
	}
	resp := &writv1.ListEntriesResponse{}
	end := min(start+f.pageSize, len(match))
	if start < end {
		resp.Entries = match[start:end]
	}
	if end < len(match) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (s *fakeSVIDs) MintX509SVID(_ context.Context, req *writv1.MintX509SVIDRequest) (*writv1.MintX509SVIDResponse, error) {
	f := s.f
	f.mu.Lock()
	f.lastMint = proto.Clone(req).(*writv1.MintX509SVIDRequest)
	otherKey := f.mintOtherKey
	f.mu.Unlock()
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	id, err := url.Parse(req.GetSpiffeId())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "spiffe_id: %v", err)
	}
	ttl := time.Hour
	if req.GetTtlSeconds() != 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
		DNSNames:     req.GetDnsNames(),
	}
	pub := csr.PublicKey
	if otherKey {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = k.Public()
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.inter, pub, f.interKey)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign: %v", err)
	}
	return &writv1.MintX509SVIDResponse{
		CertChain: [][]byte{der, f.iDER},
		Bundle:    [][]byte{f.rootDER},
		ExpiresAt: tmpl.NotAfter.Unix(),
	}, nil
}

func (s *fakeBundles) GetBundle(context.Context, *writv1.GetBundleRequest) (*writv1.Bundle, error) {
	return &writv1.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{s.f.rootDER}}, nil
}

func (s *fakeStatus) GetStatus(context.Context, *writv1.GetStatusRequest) (*writv1.Status, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return &writv1.Status{
		TrustDomain: "example.org",
		ServerId:    "server-1",
		Version:     "v0.0.0-test",
		Revision:    s.f.rev,
		CaNotAfter:  s.f.root.NotAfter.Unix(),
		StoreEngine: "sqlite",
	}, nil
}

// run runs one client command against sock and returns its stdout.
func runCmd(t *testing.T, cmd func(context.Context, []string, io.Writer, io.Writer) error, sock string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := cmd(context.Background(), append(args, "--socket", sock), &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("stderr of %v: %s", args, errOut.String())
	}
	return out.String(), err
}

func mustRunCmd(t *testing.T, cmd func(context.Context, []string, io.Writer, io.Writer) error, sock string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, cmd, sock, args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out
}

func TestEntryCommandsAgainstServer(t *testing.T) {
	f, sock := startFake(t)

	// Create one entry from flags.
	out := mustRunCmd(t, runEntry, sock, "create",
		"--spiffe-id", "spiffe://example.org/service/web",
		"--parent-id", "spiffe://example.org/writ/agent/node-1",
		"--selector", "unix:uid:1000", "--selector", "unix:gid:50",
		"--x509-ttl", "2h", "--jwt-ttl", "120",
		"--dns", "web.example.org", "--hint", "external", "--expires-in", "720h")
	for _, want := range []string{"ID:", "e1", "spiffe://example.org/service/web", "unix:uid:1000", "unix:gid:50", "X.509 TTL:", "2h", "2m", "web.example.org", "external", "Revision:"} {
		if !strings.Contains(out, want) {
			t.Errorf("create output lacks %q:\n%s", want, out)
		}
	}
	e1 := f.entry("e1")
	if e1.GetX509TtlSeconds() != 7200 || e1.GetJwtTtlSeconds() != 120 || len(e1.GetSelectors()) != 2 {
		t.Errorf("stored entry = %v", e1)
	}
	if d := time.Until(time.Unix(e1.GetExpiresAt(), 0)); d < 719*time.Hour || d > 721*time.Hour {
		t.Errorf("expires_at is %v from now, want 720h", d)
	}

	// A batch from a file, in one call.
	batch := filepath.Join(t.TempDir(), "batch.yaml")
	if err := os.WriteFile(batch, []byte(batchDoc(4, func(int) string { return "" })), 0o600); err != nil {
		t.Fatal(err)
	}
	out = mustRunCmd(t, runEntry, sock, "create", "--file", batch)
	if out != "created 4 entries (revision 2)\n" {
		t.Errorf("batch output = %q", out)
	}

	// A batch from standard input, as JSON, printed as JSON lines.
	stdin = strings.NewReader(`{"entries": [{"id": "json-1", "spiffe_id": "spiffe://example.org/j", "parent_id": "spiffe://example.org/n", "selectors": ["unix:uid:7"], "hint": "j"}]}`)
	t.Cleanup(func() { stdin = os.Stdin })
	out = mustRunCmd(t, runEntry, sock, "create", "--file", "-", "--json")
	var created map[string]any
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("create --json output %q: %v", out, err)
	}
	if created["id"] != "json-1" || created["spiffe_id"] != "spiffe://example.org/j" || created["revision"] != "3" {
		t.Errorf("create --json = %v", created)
	}

	// A batch the server refuses changes nothing and says why.
	stdin = strings.NewReader(`{"entries": [{"id": "json-1", "spiffe_id": "spiffe://example.org/j", "parent_id": "spiffe://example.org/n", "selectors": ["unix:uid:7"]}]}`)
	if _, err := runCmd(t, runEntry, sock, "create", "--file", "-"); err == nil || !strings.Contains(err.Error(), `entries[0].id: an entry with id "json-1" already exists`) {
		t.Errorf("duplicate create: err = %v", err)
	}

	// list follows every page (page size 2, 6 entries).
	f.mu.Lock()
	f.listCalls = 0
	f.mu.Unlock()
	out = mustRunCmd(t, runEntry, sock, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 7 {
		t.Fatalf("list printed %d lines, want header + 6:\n%s", len(lines), out)
	}
	f.mu.Lock()
	calls := f.listCalls
	f.mu.Unlock()
	if calls != 3 {
		t.Errorf("list made %d calls, want 3", calls)
	}
	header := strings.Fields(lines[0])
	if strings.Join(header, " ") != "ID SPIFFE ID PARENT SELECTORS TTL REVISION" {
		t.Errorf("header = %q", lines[0])
	}
	if !strings.Contains(lines[1], "unix:uid:1000,unix:gid:50") || !strings.Contains(lines[1], "2h/2m") {
		t.Errorf("first row = %q", lines[1])
	}
	if !strings.Contains(lines[2], "default/default") {
		t.Errorf("second row = %q", lines[2])
	}

	out = mustRunCmd(t, runEntry, sock, "list", "--json")
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("list --json line %q: %v", line, err)
		}
		for _, k := range []string{"id", "spiffe_id", "parent_id", "selectors", "x509_ttl_seconds", "revision"} {
			if _, ok := e[k]; !ok {
				t.Errorf("list --json line lacks %q: %s", k, line)
			}
		}
		ids = append(ids, e["id"].(string))
	}
	if strings.Join(ids, ",") != "e1,e2,e3,e4,e5,json-1" {
		t.Errorf("list --json ids = %v", ids)
	}

	out = mustRunCmd(t, runEntry, sock, "list", "--selector", "unix:uid:7", "--json")
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"id":"json-1"`) {
		t.Errorf("filtered list = %q", out)
	}
	out = mustRunCmd(t, runEntry, sock, "list", "--spiffe-id", "spiffe://example.org/nobody")
	if out != "no entries\n" {
		t.Errorf("empty list = %q", out)
	}

	// show
	out = mustRunCmd(t, runEntry, sock, "show", "--id", "json-1", "--json")
	if !strings.HasPrefix(out, `{"id":"json-1","spiffe_id":"spiffe://example.org/j"`) {
		t.Errorf("show --json = %q", out)
	}
	out = mustRunCmd(t, runEntry, sock, "show", "--id", "e1")
	if !strings.Contains(out, "web.example.org") || !strings.Contains(out, "Expires at:") {
		t.Errorf("show = %q", out)
	}

	// update changes only what was given; --selector replaces the set.
	out = mustRunCmd(t, runEntry, sock, "update", "--id", "e1", "--selector", "k8s:ns:web", "--hint", "", "--clear-dns", "--clear-expiry")
	e1 = f.entry("e1")
	if got := formatSelectors(e1.GetSelectors()); strings.Join(got, ",") != "k8s:ns:web" {
		t.Errorf("selectors after update = %v", got)
	}
	if e1.GetHint() != "" || len(e1.GetDnsNames()) != 0 || e1.GetExpiresAt() != 0 {
		t.Errorf("cleared fields remain: %v", e1)
	}
	if e1.GetX509TtlSeconds() != 7200 || e1.GetSpiffeId() != "spiffe://example.org/service/web" {
		t.Errorf("fields not given changed: %v", e1)
	}
	if !strings.Contains(out, "k8s:ns:web") {
		t.Errorf("update output = %q", out)
	}

	// A change made between the read and the write is not overwritten.
	f.mu.Lock()
	f.beforeUpdate = func(f *fakeWrit, id string) {
		f.rev++
		f.entries[id].Revision = f.rev
	}
	f.mu.Unlock()
	_, err := runCmd(t, runEntry, sock, "update", "--id", "e2", "--hint", "x")
	f.mu.Lock()
	f.beforeUpdate = nil
	f.mu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "changed by someone else") || !strings.Contains(err.Error(), "run the command again") {
		t.Errorf("conflicting update: err = %v", err)
	}
	if f.entry("e2").GetHint() == "x" {
		t.Error("conflicting update was written")
	}

	// Errors from the server read as sentences.
	if _, err := runCmd(t, runEntry, sock, "show", "--id", "missing"); err == nil || err.Error() != `entry "missing" not found` {
		t.Errorf("show missing: err = %v", err)
	}
	if _, err := runCmd(t, runEntry, sock, "show", "--id", "forbidden"); err == nil || err.Error() != "permission denied: uid 1001 may not administer this server" {
		t.Errorf("show forbidden: err = %v", err)
	}

	// delete
	out = mustRunCmd(t, runEntry, sock, "delete", "--id", "e3")
	if out != "deleted entry e3 (spiffe://example.org/w/1)\n" {
		t.Errorf("delete output = %q", out)
	}
	if f.entry("e3") != nil {
		t.Error("e3 still stored")
	}
}

func TestBundleAndStatusAgainstServer(t *testing.T) {
	f, sock := startFake(t)
	out := mustRunCmd(t, runBundle, sock, "show")
	block, rest := pem.Decode([]byte(out))
	if block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, f.rootDER) || len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("bundle show = %q", out)
	}
	out = mustRunCmd(t, runBundle, sock, "show", "--format", "pem")
	if !strings.HasPrefix(out, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("bundle show --format pem = %q", out)
	}

	out = mustRunCmd(t, runStatus, sock)
	for _, want := range []string{"example.org", "server-1", "v0.0.0-test", "sqlite", "CA expires:", sock} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out = mustRunCmd(t, runStatus, sock, "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil || st["trust_domain"] != "example.org" || st["store_engine"] != "sqlite" {
		t.Errorf("status --json = %q (%v)", out, err)
	}
}

func TestSocketResolution(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv(socketEnv, "")

	got, err := resolveSocket("")
	if err != nil || got != systemSocket {
		t.Errorf("no flag, env or dev socket: %q, %v; want %s", got, err, systemSocket)
	}
	if err := os.MkdirAll(".writ", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(devSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := resolveSocket(""); got != filepath.Join(dir, devSocket) {
		t.Errorf("with ./%s present: %q", devSocket, got)
	}
	t.Setenv(socketEnv, "env.sock")
	if got, _ := resolveSocket(""); got != filepath.Join(dir, "env.sock") {
		t.Errorf("with %s set: %q", socketEnv, got)
	}
	if got, _ := resolveSocket("/run/flag.sock"); got != "/run/flag.sock" {
		t.Errorf("with the flag: %q", got)
	}
}

func TestSocketFromEnvironment(t *testing.T) {
	_, sock := startFake(t)
	t.Setenv(socketEnv, sock)
	var out bytes.Buffer
	if err := runStatus(context.Background(), nil, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "example.org") {
		t.Errorf("status = %q", out.String())
	}
}

func TestConnectErrors(t *testing.T) {
	dir := t.TempDir()
	absent := filepath.Join(dir, "absent.sock")
	_, err := runCmd(t, runStatus, absent)
	if err == nil || !strings.Contains(err.Error(), absent) || !strings.Contains(err.Error(), "--socket") || !strings.Contains(err.Error(), socketEnv) {
		t.Errorf("absent socket: err = %v", err)
	}

	// A path that exists but where nothing listens.
	stale := filepath.Join(dir, "stale.sock")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = runEntry(ctx, []string{"list", "--socket", stale}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "cannot reach the writ server at "+stale) || !strings.Contains(err.Error(), "start the server") {
		t.Errorf("stale socket: err = %v", err)
	}
}

func TestExplain(t *testing.T) {
	c := &client{socket: "/run/writ/admin.sock"}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.PermissionDenied, "uid 1000 is not an administrator"), "permission denied: uid 1000 is not an administrator"},
		{status.Error(codes.Unavailable, `connection error: desc = "dial unix /run/writ/admin.sock: connect: permission denied"`),
			"permission denied connecting to the writ server at /run/writ/admin.sock"},
		{status.Error(codes.Unavailable, "connection refused"), "cannot reach the writ server at /run/writ/admin.sock: connection refused; start the server"},
		{status.Error(codes.InvalidArgument, "entries[2].selectors[0]: bad"), "entries[2].selectors[0]: bad"},
		{status.Error(codes.NotFound, `entry "x" not found`), `entry "x" not found`},
		{status.Error(codes.Aborted, "revision changed"), "conflict: revision changed; run the command again"},
		{status.Error(codes.Unimplemented, "unknown service"), "does not support this request"},
		{status.Error(codes.Internal, "boom"), "server error: boom"},
	} {
		if got := c.explain(tt.err).Error(); !strings.HasPrefix(got, tt.want) && !strings.Contains(got, tt.want) {
			t.Errorf("explain(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	if c.explain(nil) != nil {
		t.Error("explain(nil) != nil")
	}
}
