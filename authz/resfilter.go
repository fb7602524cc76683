package authz

import (
	"strings"

	"writ.dev/writ/task"
)

// resFilter is a small Bloom filter over the literal beginnings of a
// grant's resource patterns: the first segment, or the first two when both
// are literal. It lets a decision skip a grant for another resource
// without reading the grant's patterns, which on a large index are rarely
// in cache. A false positive only costs the full match.
type resFilter struct {
	// any: some pattern starts with a wildcard, so every name may match.
	any      bool
	one, two uint64
}

// resKey is a resource name's filter bits, computed once per request.
type resKey struct {
	one, two uint64
}

func newResFilter(rs []task.ResourcePattern) resFilter {
	var f resFilter
	for _, r := range rs {
		first, rest, _ := strings.Cut(r.String(), "/")
		second, _, _ := strings.Cut(rest, "/")
		switch {
		case first == "*" || first == "**":
			f.any = true
		case second == "" || second == "*" || second == "**":
			f.one |= bit(first)
		default:
			f.two |= bit(first + "/" + second)
		}
	}
	return f
}

func newResKey(name string) resKey {
	first, rest, _ := strings.Cut(name, "/")
	second, _, _ := strings.Cut(rest, "/")
	k := resKey{one: bit(first)}
	if second != "" {
		k.two = bit(name[:len(first)+1+len(second)])
	}
	return k
}

// mayMatch reports whether a name with key k may match one of the
// patterns f was built from.
func (f *resFilter) mayMatch(k resKey) bool {
	return f.any || f.one&k.one != 0 || f.two&k.two != 0
}

// bit hashes s (FNV-1a) to one of 64 bits.
func bit(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return 1 << (h >> 58)
}
