package server

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/peer"
)

// maxLimiterKeys bounds the memory a rate limiter holds. Sources are
// attacker-chosen (every address of an IPv6 /64 could be one), so the map
// must not grow with them.
const maxLimiterKeys = 65_536

// overflowKey is the bucket every new key shares once maxLimiterKeys are
// tracked and none is idle: under a spray from more sources than that, the
// newcomers are limited together rather than not at all.
const overflowKey = "\x00overflow"

// rateLimiter is a token bucket per key (an identity or a source address):
// each key may spend burst at once and rate per second after that.
type rateLimiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(l RateLimit, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: l.Rate, burst: float64(l.Burst), now: now, buckets: map[string]*bucket{}}
}

// allow takes one token from key's bucket, reporting whether there was one.
func (r *rateLimiter) allow(key string) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[key]
	if !ok {
		if len(r.buckets) >= maxLimiterKeys {
			r.sweep(now)
		}
		if len(r.buckets) >= maxLimiterKeys {
			key = overflowKey
			b = r.buckets[key]
		}
		if b == nil {
			b = &bucket{tokens: r.burst, last: now}
			r.buckets[key] = b
		}
	}
	b.refill(now, r.rate, r.burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (b *bucket) refill(now time.Time, rate, burst float64) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(burst, b.tokens+dt.Seconds()*rate)
		b.last = now
	}
}

// sweep forgets buckets that have refilled: a fresh bucket is the same.
func (r *rateLimiter) sweep(now time.Time) {
	for k, b := range r.buckets {
		b.refill(now, r.rate, r.burst)
		if b.tokens >= r.burst {
			delete(r.buckets, k)
		}
	}
}

// sourceOf is the rate-limit and summary key of an unauthenticated caller:
// its IP address, or its /64 for IPv6, since one host commonly holds a
// whole /64. Local (unix socket) callers are "local".
func sourceOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	return sourceKey(p.Addr)
}

// sourceKey is sourceOf for an address: the connection cap per source
// groups addresses the same way, or a host holding a /64 would open as
// many connections as it has addresses.
func sourceKey(addr net.Addr) string {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UnixAddr:
		return "local"
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return "unknown"
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return "unknown"
	}
	if ip.Is6() {
		pfx, _ := ip.Prefix(64)
		return pfx.String()
	}
	return ip.String()
}
