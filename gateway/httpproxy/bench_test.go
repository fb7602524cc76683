package httpproxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"writ.dev/writ/gateway"
)

// BenchmarkHTTPOverhead measures one small GET through the proxy and the
// same GET straight to the upstream, alternating in the same run so both
// see the same machine. Both callers use mTLS with keep-alive, so the
// direct figure is what a caller pays for an authenticated request
// without the gateway. The decider answers from memory: the figure is the
// front end's own cost (mapping, hold, signed header, one more hop), and
// the decision's round trip to the server comes on top.
func BenchmarkHTTPOverhead(b *testing.B) {
	pki := newPKI(b, testTD)
	upSVID := pki.svid(b, upstreamSID)
	body := []byte(`{"id":42,"status":"shipped"}`)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})

	// The upstream listens twice: mTLS for direct callers, plain
	// loopback HTTP behind the gateway.
	direct := serveOn(b, handler, tlsconfig.MTLSServerConfig(upSVID, pki.bundle, tlsconfig.AuthorizeMemberOf(testTD)))
	plain := httptest.NewServer(handler)
	b.Cleanup(plain.Close)

	cfg := testConfig(plain.URL)
	gwSource := pki.svid(b, gatewayID)
	p, err := New(cfg, Options{
		Decider: &fakeDecider{allow: map[string]bool{"read http/orders/42": true}},
		Holder:  benchHolder{},
		SVID:    gwSource,
		Log:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	gwSVID, _ := gwSource.GetX509SVID()
	proxied := serveOn(b, p, tlsconfig.MTLSServerConfig(gwSVID, pki.bundle, tlsconfig.AuthorizeMemberOf(testTD)))

	agent := pki.svid(b, agentID)
	client := func(server spiffeid.ID) *http.Client {
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig:     tlsconfig.MTLSClientConfig(agent, pki.bundle, tlsconfig.AuthorizeID(server)),
			MaxIdleConnsPerHost: 4,
		}}
	}
	directClient, proxyClient := client(upstreamSID), client(gatewayID)
	get := func(c *http.Client, addr string) time.Duration {
		start := time.Now()
		resp, err := c.Get("https://" + addr + "/orders/42")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	// Warm both connections so no handshake lands in the figures.
	get(directClient, direct)
	get(proxyClient, proxied)

	dLat := make([]time.Duration, 0, b.N)
	pLat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		dLat = append(dLat, get(directClient, direct))
		pLat = append(pLat, get(proxyClient, proxied))
	}
	b.StopTimer()
	slices.Sort(dLat)
	slices.Sort(pLat)
	pct := func(l []time.Duration, q int) float64 { return float64(l[(len(l)-1)*q/100].Nanoseconds()) / 1000 }
	b.ReportMetric(pct(dLat, 50), "direct-p50-µs")
	b.ReportMetric(pct(dLat, 99), "direct-p99-µs")
	b.ReportMetric(pct(pLat, 50), "proxy-p50-µs")
	b.ReportMetric(pct(pLat, 99), "proxy-p99-µs")
	b.ReportMetric(pct(pLat, 50)-pct(dLat, 50), "overhead-p50-µs")
}

// BenchmarkSignCallerHeader is the signed header alone: one ES256
// signature and the JSON around it.
func BenchmarkSignCallerHeader(b *testing.B) {
	pki := newPKI(b, testTD)
	s := newHeaderSigner(pki.svid(b, gatewayID), "orders-api", time.Minute)
	now := time.Now()
	b.ReportAllocs()
	for range b.N {
		if _, err := s.sign(now, testDecision, testRequest, "GET", "/orders/1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCallerHeader is what an upstream pays per request: the
// SVID chain check and one ES256 verification.
func BenchmarkVerifyCallerHeader(b *testing.B) {
	pki := newPKI(b, testTD)
	now := time.Now()
	h := signWith(b, pki.svid(b, gatewayID), "orders-api", now)
	accept := spiffeid.MatchID(gatewayID)
	b.ReportAllocs()
	for range b.N {
		if _, err := VerifyCallerHeader(h, pki.bundle, accept, "orders-api", now); err != nil {
			b.Fatal(err)
		}
	}
}

// benchHolder holds as cheaply as a holder can: a context of its own per
// request, cancelled on release.
type benchHolder struct{}

func (benchHolder) Hold(ctx context.Context, _ gateway.Caller, _ gateway.Request) (context.Context, func()) {
	return context.WithCancel(ctx)
}

func serveOn(b *testing.B, h http.Handler, conf *tls.Config) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).String()
}

// BenchmarkLimitECDSAP256Sign is the limit for the signed header: one
// raw P-256 signature over a SHA-256 digest, in the same run.
func BenchmarkLimitECDSAP256Sign(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("writ-caller"))
	for range b.N {
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamCut measures the front end's part of lock-to-cut: from
// the hold's context being cancelled (what the gateway's core does when a
// lock lands) to the caller's read of an open event stream failing.
func BenchmarkStreamCut(b *testing.B) {
	f := newFixture(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: first\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	f.decider.allow["read http/events"] = true
	f.proxy.now = time.Now
	addr := f.serveTLS(b)
	client := f.client(f.pki.svid(b, agentID))
	lat := make([]time.Duration, 0, b.N)
	for range b.N {
		resp, err := client.Get("https://" + addr + "/events")
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
		<-f.holder.held
		start := time.Now()
		f.holder.Cut("http/events")
		if _, err := io.Copy(io.Discard, br); err == nil {
			b.Fatal("the stream ended cleanly")
		}
		lat = append(lat, time.Since(start))
		resp.Body.Close()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[(len(lat)-1)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[(len(lat)-1)*99/100].Microseconds()), "p99-µs")
}
