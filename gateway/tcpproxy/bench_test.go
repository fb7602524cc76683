package tcpproxy_test

import (
	"crypto/tls"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	writv1 "writ.dev/writ/api/writ/v1"
)

// benchEnv is startEnv with the caller inside an open task.
func benchEnv(b *testing.B) (*env, *x509svid.SVID) {
	b.Helper()
	e := startEnv(b)
	agent := e.mint(b, agentID)
	e.openTask(b, agentID)
	return e, agent
}

func (e *env) tlsConfig(svid *x509svid.SVID) *tls.Config {
	return tlsconfig.MTLSClientConfig(svid, e.bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://"+td+"/gateway")))
}

// roundTrip writes buf and reads as much back.
func roundTrip(b *testing.B, conn net.Conn, buf, back []byte) {
	if _, err := conn.Write(buf); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(conn, back); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkThroughput: bytes echoed through one connection, directly to
// the upstream (plain TCP), to an echo behind the same mTLS (what TLS
// alone costs) and through the proxy (mTLS to the gateway, TCP on), in
// the same run. Each op sends 64 KiB and reads it back.
func BenchmarkThroughput(b *testing.B) {
	e, agent := benchEnv(b)
	tlsEcho := tlsEchoServer(b, e)
	buf, back := make([]byte, 64<<10), make([]byte, 64<<10)
	for _, target := range []string{"direct", "direct-tls", "proxy"} {
		b.Run(target, func(b *testing.B) {
			var conn net.Conn
			var err error
			switch target {
			case "direct":
				conn, err = net.Dial("tcp", e.upstream)
			case "direct-tls":
				conn, err = tls.Dial("tcp", tlsEcho, e.tlsConfig(agent))
			default:
				conn, err = tls.Dial("tcp", e.proxy, e.tlsConfig(agent))
			}
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			roundTrip(b, conn, buf[:1], back[:1])
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for b.Loop() {
				roundTrip(b, conn, buf, back)
			}
		})
	}
}

// BenchmarkConnect: a new connection and one small round trip, directly,
// over TLS directly to a TLS echo (the handshake alone), and through the
// proxy (handshake, a decision from the cache, the hold, the dial on).
func BenchmarkConnect(b *testing.B) {
	e, agent := benchEnv(b)
	tlsEcho := tlsEchoServer(b, e)
	for _, target := range []string{"direct", "direct-tls", "proxy"} {
		b.Run(target, func(b *testing.B) {
			buf, back := []byte("ping"), make([]byte, 4)
			for b.Loop() {
				var conn net.Conn
				var err error
				switch target {
				case "direct":
					conn, err = net.Dial("tcp", e.upstream)
				case "direct-tls":
					conn, err = tls.Dial("tcp", tlsEcho, e.tlsConfig(agent))
				default:
					conn, err = tls.Dial("tcp", e.proxy, e.tlsConfig(agent))
				}
				if err != nil {
					b.Fatal(err)
				}
				roundTrip(b, conn, buf, back)
				conn.Close()
			}
		})
	}
}

// tlsEchoServer is an echo behind the gateway's own TLS, without the
// proxy: what a connection costs with mTLS and no decision.
func tlsEchoServer(b *testing.B, e *env) string {
	b.Helper()
	gw := e.mint(b, "spiffe://"+td+"/gateway")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(gw, e.bundle, tlsconfig.AuthorizeAny()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkLockToCut: a live connection through the proxy, a lock on the
// caller, and the time until the connection is closed, from CreateLock's
// return; then the lock is lifted. Reports the median and the 99th
// percentile of the iterations (run with -benchtime Nx).
func BenchmarkLockToCut(b *testing.B) {
	e, agent := benchEnv(b)
	locks := writv1.NewLockServiceClient(e.admin)
	var took []time.Duration
	buf, back := []byte("ping"), make([]byte, 4)
	for b.Loop() {
		var conn *tls.Conn
		for deadline := time.Now().Add(30 * time.Second); ; {
			c, err := tls.Dial("tcp", e.proxy, e.tlsConfig(agent))
			if err == nil {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err = c.Write(buf); err == nil {
					if _, err = io.ReadFull(c, back); err == nil {
						c.SetDeadline(time.Time{})
						conn = c
						break
					}
				}
				c.Close()
			}
			if time.Now().After(deadline) {
				b.Fatal("the caller was refused 30s after the lock was lifted")
			}
		}
		start := time.Now()
		lock, err := locks.CreateLock(b.Context(), &writv1.CreateLockRequest{Target: &writv1.LockTarget{Kind: "spiffe-id", Value: agentID}, Reason: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadAll(conn); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				b.Fatal("not cut within 30s of the lock")
			}
		}
		took = append(took, time.Since(start))
		conn.Close()
		if _, err := locks.DeleteLock(b.Context(), &writv1.DeleteLockRequest{Id: lock.GetId()}); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[len(took)/2]), "ms-p50")
	b.ReportMetric(ms(took[(len(took)*99)/100]), "ms-p99")
	b.ReportMetric(ms(took[len(took)-1]), "ms-max")
	b.ReportMetric(0, "ns/op")
}
