package audit

import (
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// LeafHash is the RFC 6962 hash of one leaf: SHA-256 of 0x00 and the exact
// stored bytes.
func LeafHash(leaf []byte) tlog.Hash { return tlog.RecordHash(leaf) }

// AppendHashes returns the hashes a writer must store when it appends leaf
// as entry n (0-based) of a log whose stored hashes r holds for entries
// 0..n-1. They go at stored-hash indexes tlog.StoredHashCount(n) onward, in
// order; storing them in the same transaction as the leaf keeps every later
// root and proof computable in O(log n) reads.
func AppendHashes(n int64, leaf []byte, r tlog.HashReader) ([]tlog.Hash, error) {
	return tlog.StoredHashes(n, leaf, r)
}

// Hashes is an in-memory copy of a tree's stored hashes in tlog's layout.
// It is a tlog.HashReader, so roots and proofs can be computed from it.
type Hashes struct {
	stored []tlog.Hash
	size   int64
}

// LoadHashes wraps stored hashes read back from a store. Their number must
// be exactly that of some tree size.
func LoadHashes(stored []tlog.Hash) (*Hashes, error) {
	n := sizeForStoredCount(int64(len(stored)))
	if n < 0 {
		return nil, fmt.Errorf("audit: %d stored hashes is not the count of any tree size; the hash table is damaged or cut", len(stored))
	}
	return &Hashes{stored: stored, size: n}, nil
}

// sizeForStoredCount inverts tlog.StoredHashCount, or returns -1.
func sizeForStoredCount(c int64) int64 {
	// StoredHashCount(n) is 2n minus the number of set bits in n, so n lies
	// between c/2 and c/2+32.
	lo := c / 2
	for n := lo; n <= lo+33; n++ {
		if tlog.StoredHashCount(n) == c {
			return n
		}
	}
	return -1
}

// Size is the number of leaves hashed so far.
func (h *Hashes) Size() int64 { return h.size }

// Append adds the next leaf and returns its index.
func (h *Hashes) Append(leaf []byte) (int64, error) {
	return h.AppendLeafHash(LeafHash(leaf))
}

// AppendLeafHash adds the next leaf by its LeafHash and returns its index.
func (h *Hashes) AppendLeafHash(lh tlog.Hash) (int64, error) {
	n := h.size
	// This is what tlog.StoredHashesForRecordHash computes, done in place:
	// the leaf hash, then one parent for each complete subtree it closes.
	h.stored = append(h.stored, lh)
	for level := 0; (n>>level)&1 == 1; level++ {
		left := h.stored[tlog.StoredHashIndex(level, n>>level-1)]
		lh = tlog.NodeHash(left, lh)
		h.stored = append(h.stored, lh)
	}
	h.size++
	return n, nil
}

// ReadHashes implements tlog.HashReader.
func (h *Hashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(h.stored)) {
			return nil, fmt.Errorf("audit: stored hash %d not present (tree has %d leaves)", x, h.size)
		}
		out[i] = h.stored[x]
	}
	return out, nil
}

// Stored returns the stored hashes in order; the slice is shared.
func (h *Hashes) Stored() []tlog.Hash { return h.stored }

// Root is the tree hash of all leaves so far.
func (h *Hashes) Root() (tlog.Hash, error) { return h.RootAt(h.size) }

// RootAt is the tree hash of the first n leaves.
func (h *Hashes) RootAt(n int64) (tlog.Hash, error) {
	if n < 0 || n > h.size {
		return tlog.Hash{}, fmt.Errorf("audit: tree of size %d asked of a log with %d leaves", n, h.size)
	}
	return tlog.TreeHash(n, h)
}

// node returns the stored hash of the complete subtree at level covering
// leaves [k<<level, (k+1)<<level).
func (h *Hashes) node(level int, k int64) tlog.Hash {
	return h.stored[tlog.StoredHashIndex(level, k)]
}

// ProveExtends proves that the tree of n leaves whose stored hashes r holds
// extends the signed tree head: its first head.Size leaves hash to
// head.Root, and a consistency proof from head.Size to n checks. The error
// names both sizes and both roots, for an operator to act on.
func ProveExtends(n int64, head Checkpoint, r tlog.HashReader) error {
	if n < head.Size {
		return fmt.Errorf("the log has %d events, fewer than the %d of the signed tree head (root %s): events were removed", n, head.Size, head.Root)
	}
	if head.Size == 0 {
		return nil
	}
	got, err := tlog.TreeHash(head.Size, r)
	if err != nil {
		return fmt.Errorf("the log's tree of size %d cannot be computed from the stored hashes (%v): the hash table was damaged or cut", head.Size, err)
	}
	if got != head.Root {
		return fmt.Errorf("at size %d the log's root is %s, but the signed tree head says %s: events at or before index %d were changed, removed or reordered", head.Size, got, head.Root, head.Size-1)
	}
	if n == head.Size {
		return nil
	}
	root, err := tlog.TreeHash(n, r)
	if err == nil {
		var proof tlog.TreeProof
		if proof, err = tlog.ProveTree(n, head.Size, r); err == nil {
			err = tlog.CheckTree(proof, n, root, head.Size, head.Root)
		}
	}
	if err != nil {
		return fmt.Errorf("the log of %d events does not extend the signed tree head of size %d (root %s): %v", n, head.Size, head.Root, err)
	}
	return nil
}

// CheckStoredLeaves checks that the stored hashes r holds for the leaves
// from index first on are exactly what appending those leaves produces. It
// is how a writer takes over a tail of the log nobody has signed yet: the
// prefix is vouched for by a signed root, the tail only by its bytes.
func CheckStoredLeaves(first int64, leaves [][]byte, r tlog.HashReader) error {
	base := tlog.StoredHashIndex(0, first)
	overlay := &overlayReader{r: r, base: base}
	for i, leaf := range leaves {
		hs, err := tlog.StoredHashes(first+int64(i), leaf, overlay)
		if err != nil {
			return fmt.Errorf("hashing event %d: %w", first+int64(i), err)
		}
		overlay.fresh = append(overlay.fresh, hs...)
	}
	const batch = 1024
	for off := 0; off < len(overlay.fresh); off += batch {
		end := min(off+batch, len(overlay.fresh))
		idx := make([]int64, end-off)
		for i := range idx {
			idx[i] = base + int64(off+i)
		}
		stored, err := r.ReadHashes(idx)
		if err != nil {
			return fmt.Errorf("reading stored hashes: %w", err)
		}
		for i, h := range stored {
			if h != overlay.fresh[off+i] {
				ev := first
				for ev+1 < first+int64(len(leaves)) && tlog.StoredHashIndex(0, ev+1) <= idx[i] {
					ev++
				}
				return fmt.Errorf("the stored hashes do not match event %d: it was changed without its hash, or the hashes were rewritten", ev)
			}
		}
	}
	return nil
}

// overlayReader reads hashes from base on from memory, older ones from r.
type overlayReader struct {
	r     tlog.HashReader
	base  int64
	fresh []tlog.Hash
}

func (o *overlayReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var old []int64
	for _, x := range indexes {
		if x < o.base {
			old = append(old, x)
		}
	}
	var got []tlog.Hash
	if len(old) > 0 {
		var err error
		if got, err = o.r.ReadHashes(old); err != nil {
			return nil, err
		}
	}
	for i, x := range indexes {
		switch {
		case x < o.base:
			out[i], got = got[0], got[1:]
		case x-o.base < int64(len(o.fresh)):
			out[i] = o.fresh[x-o.base]
		default:
			return nil, fmt.Errorf("audit: stored hash %d not computed yet", x)
		}
	}
	return out, nil
}

// ErrNotExtended marks a log that provably does not extend a signed tree
// head, as opposed to one whose hashes could not be read.
var ErrNotExtended = errors.New("the log does not extend the signed tree head")

// CheckExtends proves, with a consistency proof read from r, that the tree
// of size leaves whose root is root extends the signed tree head. It is
// ProveExtends for a writer that computed root itself: the proof alone
// binds both roots, so neither is recomputed. An error that wraps
// ErrNotExtended is evidence of tampering; any other is a failed read.
func CheckExtends(size int64, root tlog.Hash, head Checkpoint, r tlog.HashReader) error {
	switch {
	case size < head.Size:
		return fmt.Errorf("%w: the log has %d events, fewer than the %d of the signed tree head (root %s): events were removed", ErrNotExtended, size, head.Size, head.Root)
	case head.Size == 0:
		return nil
	case size == head.Size:
		if root != head.Root {
			return fmt.Errorf("%w: at size %d the log's root is %s, but the signed tree head says %s: events were changed", ErrNotExtended, size, root, head.Root)
		}
		return nil
	}
	proof, err := tlog.ProveTree(size, head.Size, r)
	if err != nil {
		return fmt.Errorf("reading the consistency proof from size %d to %d: %w", head.Size, size, err)
	}
	if err := tlog.CheckTree(proof, size, root, head.Size, head.Root); err != nil {
		return fmt.Errorf("%w: the log of %d events (root %s) does not extend the signed tree head of size %d (root %s): %v", ErrNotExtended, size, root, head.Size, head.Root, err)
	}
	return nil
}
