package output

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWriteFilesParseBack(t *testing.T) {
	p := newPKI(t)
	w, _ := newWriter(t, Options{})
	m := p.material(t, JWT{Audience: "api.example.org", Token: "a.b.c"})
	if !mustWrite(t, w, m) {
		t.Fatal("first Write reported no change")
	}
	dir := w.Dir()
	certPEM, _ := os.ReadFile(filepath.Join(dir, "svid.pem"))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "svid.key"))
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("svid.pem and svid.key do not load as a key pair: %v", err)
	}
	if len(pair.Certificate) != 2 || !slices.Equal(pair.Certificate[0], m.Chain[0].Raw) {
		t.Fatal("svid.pem is not the chain, leaf first")
	}
	if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "PRIVATE KEY" {
		t.Fatal("svid.key is not a PKCS#8 PRIVATE KEY PEM block")
	}
	bundlePEM, _ := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundlePEM) {
		t.Fatal("bundle.pem holds no certificate")
	}
	inter := x509.NewCertPool()
	inter.AddCert(m.Chain[1])
	if _, err := m.Chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("leaf does not verify against bundle.pem: %v", err)
	}
	if tok, _ := os.ReadFile(filepath.Join(dir, "jwt-api.example.org.token")); string(tok) != "a.b.c\n" {
		t.Fatalf("token file holds %q", tok)
	}
	for name, want := range map[string]os.FileMode{
		"svid.pem": 0o644, "bundle.pem": 0o644, "svid.key": 0o600, "jwt-api.example.org.token": 0o600,
	} {
		if got := perm(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s mode %04o, want %04o", name, got, want)
		}
	}
	if got := perm(t, dir); got != 0o700 {
		t.Errorf("directory mode %04o, want 0700", got)
	}
}

func TestOpenSSLVerify(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not on PATH")
	}
	p := newPKI(t)
	w, _ := newWriter(t, Options{})
	mustWrite(t, w, p.material(t))
	svid := filepath.Join(w.Dir(), "svid.pem")
	out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(w.Dir(), "bundle.pem"), "-untrusted", svid, svid).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

func TestIdenticalWriteChangesNothing(t *testing.T) {
	p := newPKI(t)
	marker := filepath.Join(t.TempDir(), "marker")
	w, _ := newWriter(t, Options{ReloadCommand: markerCommand(marker)})
	m := p.material(t, JWT{Audience: "a", Token: "x.y.z"})
	mustWrite(t, w, m)
	if n := runs(t, marker, w.Dir()); n != 1 {
		t.Fatalf("reload ran %d times after the first Write, want 1", n)
	}
	before := stats(t, w.Dir())
	if mustWrite(t, w, m) {
		t.Fatal("identical Write reported a change")
	}
	if n := runs(t, marker, w.Dir()); n != 1 {
		t.Fatalf("reload ran %d times after an identical Write, want 1", n)
	}
	if after := stats(t, w.Dir()); !sameFiles(before, after) {
		t.Fatal("identical Write touched files")
	}
}

func TestChangedWriteReloads(t *testing.T) {
	p := newPKI(t)
	marker := filepath.Join(t.TempDir(), "marker")
	w, _ := newWriter(t, Options{ReloadCommand: markerCommand(marker)})
	m1 := p.material(t)
	mustWrite(t, w, m1)
	m2 := p.material(t)
	if !mustWrite(t, w, m2) {
		t.Fatal("Write of a new SVID reported no change")
	}
	if n := runs(t, marker, w.Dir()); n != 2 {
		t.Fatalf("reload ran %d times, want 2", n)
	}
	got, _ := os.ReadFile(filepath.Join(w.Dir(), "svid.pem"))
	if block, _ := pem.Decode(got); block == nil || !slices.Equal(block.Bytes, m2.Chain[0].Raw) {
		t.Fatal("svid.pem does not hold the new leaf")
	}
	// A new token alone is a change too.
	m2.JWTs = []JWT{{Audience: "a", Token: "t.o.k"}}
	if !mustWrite(t, w, m2) || runs(t, marker, w.Dir()) != 3 {
		t.Fatal("a new JWT-SVID did not rewrite and reload")
	}
}

func TestRewritesFileChangedBehindItsBack(t *testing.T) {
	p := newPKI(t)
	w, _ := newWriter(t, Options{})
	m := p.material(t)
	mustWrite(t, w, m)
	key := filepath.Join(w.Dir(), "svid.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(w.Dir(), "bundle.pem")); err != nil {
		t.Fatal(err)
	}
	if !mustWrite(t, w, m) {
		t.Fatal("Write did not repair the files")
	}
	if perm(t, key) != 0o600 {
		t.Fatal("svid.key mode not restored")
	}
	if _, err := os.Stat(filepath.Join(w.Dir(), "bundle.pem")); err != nil {
		t.Fatal("bundle.pem not restored")
	}
}

func TestFailingReload(t *testing.T) {
	p := newPKI(t)
	marker := filepath.Join(t.TempDir(), "marker")
	fail := filepath.Join(t.TempDir(), "fail")
	if err := os.WriteFile(fail, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Fails while the file fail exists, and records each run.
	cmd := []string{"/bin/sh", "-c", `echo "$WRIT_OUTPUT_DIR" >> "$1"; if [ -e "$2" ]; then echo boom >&2; exit 3; fi`, "sh", marker, fail}
	w, logs := newWriter(t, Options{ReloadCommand: cmd})
	m := p.material(t)
	changed, err := w.Write(context.Background(), m)
	if err == nil || !changed {
		t.Fatalf("Write = %v, %v; want a change and an error", changed, err)
	}
	if !strings.Contains(err.Error(), "reload command") {
		t.Fatalf("error does not say the reload command failed: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(w.Dir(), "svid.pem"), filepath.Join(w.Dir(), "svid.key")); err != nil {
		t.Fatalf("files not written after a failed reload: %v", err)
	}
	if !strings.Contains(logs.String(), "boom") {
		t.Fatalf("the command's output is not in the log:\n%s", logs)
	}
	// The next Write, even an identical one, retries the reload.
	os.Remove(fail)
	changed, err = w.Write(context.Background(), m)
	if err != nil || changed {
		t.Fatalf("retry Write = %v, %v; want no change and no error", changed, err)
	}
	if n := runs(t, marker, w.Dir()); n != 2 {
		t.Fatalf("reload ran %d times, want 2", n)
	}
	if _, err := w.Write(context.Background(), m); err != nil || runs(t, marker, w.Dir()) != 2 {
		t.Fatal("a successful reload was run again for an identical Write")
	}
}

func TestReloadTimeout(t *testing.T) {
	p := newPKI(t)
	w, _ := newWriter(t, Options{
		ReloadCommand: []string{"/bin/sh", "-c", "exec sleep 60"},
		ReloadTimeout: 100 * time.Millisecond,
	})
	_, err := w.Write(context.Background(), p.material(t))
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Write error %v, want a timeout", err)
	}
}

func TestRefusedMaterialWritesNothing(t *testing.T) {
	p := newPKI(t)
	good := p.material(t)
	other := p.material(t)
	mismatched := good
	mismatched.Key = other.Key
	noChain := good
	noChain.Chain = nil
	noKey := good
	noKey.Key = nil
	noBundle := good
	noBundle.Bundle = nil
	badToken := p.material(t, JWT{Audience: "a", Token: "a.b\nc"})
	dupAudience := p.material(t, JWT{Audience: "a", Token: "x"}, JWT{Audience: "a", Token: "y"})
	for name, tc := range map[string]struct {
		m    Material
		want string
	}{
		"mismatched key": {mismatched, "does not match"},
		"no chain":       {noChain, "no certificate chain"},
		"no key":         {noKey, "no private key"},
		"no bundle":      {noBundle, "no trust bundle"},
		"bad token":      {badToken, "white space"},
		"dup audience":   {dupAudience, "listed twice"},
	} {
		t.Run(name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "marker")
			w, _ := newWriter(t, Options{ReloadCommand: markerCommand(marker)})
			changed, err := w.Write(context.Background(), tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was written") {
				t.Fatalf("error %v, want one saying %q and that nothing was written", err, tc.want)
			}
			if changed {
				t.Fatal("refused Write reported a change")
			}
			if names := dirNames(t, w.Dir()); len(names) != 0 {
				t.Fatalf("refused Write left files: %v", names)
			}
			if runs(t, marker, w.Dir()) != 0 {
				t.Fatal("refused Write ran the reload command")
			}
		})
	}
}

func TestUnsafeAudiences(t *testing.T) {
	p := newPKI(t)
	long := strings.Repeat("x", 300)
	auds := []string{"../x", "a/b", "a:b", "", ".", "..", long, long + "y", "spiffe://example.org/db", "ok-name_1.2"}
	var jwts []JWT
	for i, a := range auds {
		jwts = append(jwts, JWT{Audience: a, Token: fmt.Sprintf("t.%d.t", i)})
	}
	w, _ := newWriter(t, Options{})
	mustWrite(t, w, p.material(t, jwts...))
	names, err := jwtFileNames(auds)
	if err != nil {
		t.Fatal(err)
	}
	safe := regexp.MustCompile(`^jwt-[A-Za-z0-9._-]{1,110}\.token$`)
	seen := map[string]bool{}
	for i, n := range names {
		if !safe.MatchString(n) || seen[n] {
			t.Errorf("audience %q got unsafe or duplicate file name %q", auds[i], n)
		}
		seen[n] = true
		path := filepath.Join(w.Dir(), n)
		if filepath.Dir(path) != w.Dir() {
			t.Errorf("%q escapes the directory", n)
		}
		if tok, err := os.ReadFile(path); err != nil || string(tok) != jwts[i].Token+"\n" {
			t.Errorf("%s holds %q, %v; want %q", n, tok, err, jwts[i].Token)
		}
		if perm(t, path) != 0o600 {
			t.Errorf("%s mode %04o, want 0600", n, perm(t, path))
		}
	}
	if got := len(dirNames(t, w.Dir())); got != len(auds)+3 {
		t.Fatalf("directory holds %d files, want %d: %v", got, len(auds)+3, dirNames(t, w.Dir()))
	}
	// Names that need no hash stay readable.
	if names[9] != "jwt-ok-name_1.2.token" || names[0] != "jwt-.._x.token" || names[8] != "jwt-spiffe___example.org_db.token" {
		t.Fatalf("readable names changed: %q %q %q", names[9], names[0], names[8])
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"api.example.org":        "api.example.org",
		"a/b":                    "a_b",
		"../x":                   ".._x",
		"é":                      "_",
		"\xff":                   "_",
		"a b\n":                  "a_b_",
		strings.Repeat("z", 150): strings.Repeat("z", 100),
	} {
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStaleJWTFilesRemoved(t *testing.T) {
	p := newPKI(t)
	marker := filepath.Join(t.TempDir(), "marker")
	w, _ := newWriter(t, Options{ReloadCommand: markerCommand(marker)})
	// Files others keep here, one looking like a JWT file, must survive.
	for _, n := range []string{"jwt-other.token", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(w.Dir(), n), []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := p.material(t, JWT{Audience: "a", Token: "1"}, JWT{Audience: "b", Token: "2"})
	mustWrite(t, w, m)
	m.JWTs = m.JWTs[:1]
	if !mustWrite(t, w, m) {
		t.Fatal("dropping an audience reported no change")
	}
	want := []string{"bundle.pem", "jwt-a.token", "jwt-other.token", "notes.txt", "svid.key", "svid.pem"}
	if got := dirNames(t, w.Dir()); !slices.Equal(got, want) {
		t.Fatalf("directory holds %v, want %v", got, want)
	}
	if n := runs(t, marker, w.Dir()); n != 2 {
		t.Fatalf("reload ran %d times, want 2", n)
	}
}

func TestNewRefusesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("group-writable directory: error %v, want one saying chmod 700", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := New(Options{Dir: file}); err == nil {
		t.Fatal("a file was accepted as the directory")
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("an empty directory name was accepted")
	}
}

func TestNewRefusesOptions(t *testing.T) {
	dir := t.TempDir()
	for name, opts := range map[string]Options{
		"missing program":  {Dir: dir, ReloadCommand: []string{"/no/such/program"}},
		"empty program":    {Dir: dir, ReloadCommand: []string{""}},
		"negative timeout": {Dir: dir, ReloadTimeout: -time.Second},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestConcurrentWrites(t *testing.T) {
	p := newPKI(t)
	w, _ := newWriter(t, Options{})
	ms := []Material{p.material(t), p.material(t, JWT{Audience: "a", Token: "1"})}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := w.Write(context.Background(), ms[i%2]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := tls.LoadX509KeyPair(filepath.Join(w.Dir(), "svid.pem"), filepath.Join(w.Dir(), "svid.key")); err != nil {
		t.Fatalf("files inconsistent after concurrent Writes: %v", err)
	}
}

// stats records each file's identity; atomicfile replaces a file by
// renaming a new one over it, so a rewritten file is a different file.
func stats(t *testing.T, dir string) map[string]os.FileInfo {
	t.Helper()
	out := map[string]os.FileInfo{}
	for _, n := range dirNames(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = fi
	}
	return out
}

func sameFiles(a, b map[string]os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] == nil || !os.SameFile(v, b[k]) || !v.ModTime().Equal(b[k].ModTime()) {
			return false
		}
	}
	return true
}
