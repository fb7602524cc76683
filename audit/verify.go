package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// LeafSource is a log as a reader sees it: leaves by index, from 0.
type LeafSource interface {
	Len() int64
	Leaf(i int64) ([]byte, error)
}

// gapped is a LeafSource that knows of events missing from it (Assembly);
// Verify fails on any.
type gapped interface {
	Gaps() []string
}

// Assembly collects a log read page by page from a store that numbers its
// events, noting every index the store skips and a tail shorter than the
// store's own count. The leaves are kept in the order read, so a missing
// event also shows in the tree; the gaps say where, in the store's terms.
type Assembly struct {
	leaves Leaves
	next   int64
	head   int64
	gaps   []string
}

// Add takes the next stored event, which the store numbered index.
func (a *Assembly) Add(index int64, leaf []byte) {
	if index != a.next {
		a.gaps = append(a.gaps, fmt.Sprintf("the store has no event %d: the log jumps from %d to %d (events were deleted)", a.next, a.next-1, index))
	}
	a.leaves = append(a.leaves, leaf)
	a.next = index + 1
}

// Head records the size the store's head claims.
func (a *Assembly) Head(size int64) { a.head = max(a.head, size) }

// Next is the index to read from next.
func (a *Assembly) Next() int64 { return a.next }

// HeadSize is the largest size the store's head claimed.
func (a *Assembly) HeadSize() int64 { return a.head }

// Len implements LeafSource.
func (a *Assembly) Len() int64 { return a.leaves.Len() }

// Leaf implements LeafSource.
func (a *Assembly) Leaf(i int64) ([]byte, error) { return a.leaves.Leaf(i) }

// Leaves are the events in the order read.
func (a *Assembly) Leaves() Leaves { return a.leaves }

// Gaps says where the stored events skip indexes or stop short of the head.
func (a *Assembly) Gaps() []string {
	gaps := a.gaps
	if a.next < a.head {
		gaps = append(gaps[:len(gaps):len(gaps)], fmt.Sprintf("the store's head counts %d events but the last stored one is %d (the tail was cut)", a.head, a.next-1))
	}
	return gaps
}

// Leaves is an in-memory LeafSource.
type Leaves [][]byte

func (l Leaves) Len() int64 { return int64(len(l)) }

func (l Leaves) Leaf(i int64) ([]byte, error) {
	if i < 0 || i >= int64(len(l)) {
		return nil, fmt.Errorf("audit: no leaf %d in a log of %d", i, len(l))
	}
	return l[i], nil
}

// An Option adds evidence to Verify.
type Option func(*verifyConfig)

type verifyConfig struct {
	stored     tlog.HashReader
	storedSize int64
	reference  LeafSource
}

// WithStoredHashes gives Verify the hashes the store kept while appending
// (for a tree of storedSize leaves). They are trusted only where a signed
// checkpoint authenticates them, and then let Verify find the exact first
// changed leaf in O(log n) steps instead of only the range between two
// checkpoints. An attacker who edits leaf rows but not the hash table is
// pinpointed this way; one who rebuilds the hash table too is still caught
// by the checkpoints, only less precisely.
func WithStoredHashes(r tlog.HashReader, storedSize int64) Option {
	return func(c *verifyConfig) { c.stored, c.storedSize = r, storedSize }
}

// WithReference gives Verify an earlier copy of the log, such as the leaves
// of an export an outside party kept. The copy is the party's own evidence
// and is trusted as given; Verify names the first index where the log no
// longer matches it and whether that leaf was changed, removed, inserted or
// moved.
func WithReference(ref LeafSource) Option {
	return func(c *verifyConfig) { c.reference = ref }
}

// CheckpointResult is what Verify found for one checkpoint.
type CheckpointResult struct {
	Source     string
	Checkpoint Checkpoint // zero if the note did not parse
	Err        error      // nil if the checkpoint matches the log
}

// Report is the outcome of Verify.
type Report struct {
	Leaves      int64     // leaves in the log
	Root        tlog.Hash // tree hash of all of them
	Origin      string    // the origin all checkpoints name
	Checkpoints []CheckpointResult
	Verified    int64 // largest checkpoint size that matched; leaves beyond it are not covered by any signature

	// Truncated is set when some valid checkpoint covers more leaves than
	// the log has; ClaimedSize is the largest such size.
	Truncated   bool
	ClaimedSize int64

	// FirstBad is the first index that was changed, removed or reordered,
	// or -1. When it cannot be pinned exactly, it lies in [FirstBad,
	// FirstBadEnd); FirstBadEnd == FirstBad+1 means exact.
	FirstBad    int64
	FirstBadEnd int64
	// Kind says what happened at FirstBad when an earlier copy of the log
	// tells: "changed", "removed", "inserted", "moved"; otherwise empty.
	Kind string
	// Forks lists pairs of validly signed checkpoints that cannot both be
	// true: the same key signed two different histories.
	Forks []string
	// Gaps lists events the store skipped (see Assembly).
	Gaps []string
}

// Uncovered reports whether some events lie beyond every checkpoint that
// verified with a trusted key: nothing vouches for them, so they could
// have been changed without a trace.
func (r *Report) Uncovered() bool { return r.Verified < r.Leaves }

// OK reports whether nothing is wrong and every event is covered by a
// checkpoint signed by a trusted key.
func (r *Report) OK() bool {
	if r.Truncated || r.FirstBad >= 0 || len(r.Forks) > 0 || len(r.Gaps) > 0 || r.Uncovered() {
		return false
	}
	for _, c := range r.Checkpoints {
		if c.Err != nil {
			return false
		}
	}
	return true
}

// Summary is one paragraph saying what is wrong, naming the first bad
// index first.
func (r *Report) Summary() string {
	parts := append([]string(nil), r.Gaps...)
	switch {
	case r.FirstBad >= 0 && r.FirstBadEnd == r.FirstBad+1 && r.Kind != "":
		parts = append(parts, fmt.Sprintf("event %d was %s", r.FirstBad, r.Kind))
	case r.FirstBad >= 0 && r.FirstBadEnd == r.FirstBad+1:
		parts = append(parts, fmt.Sprintf("event %d was changed, removed or reordered", r.FirstBad))
	case r.FirstBad >= 0:
		parts = append(parts, fmt.Sprintf("the first changed, removed or reordered event is between %d and %d (no signed evidence between those two sizes pins it further)", r.FirstBad, r.FirstBadEnd-1))
	}
	if r.Truncated {
		parts = append(parts, fmt.Sprintf("the log is shorter than signed: a checkpoint covers %d events but the log has %d (its tail was cut or events were removed)", r.ClaimedSize, r.Leaves))
	}
	parts = append(parts, r.Forks...)
	for _, c := range r.Checkpoints {
		if c.Err != nil && !errors.Is(c.Err, errMismatch) && !errors.Is(c.Err, errBeyond) {
			parts = append(parts, c.Err.Error())
		}
	}
	if r.Uncovered() && r.FirstBad < 0 {
		if r.Verified == 0 {
			parts = append(parts, fmt.Sprintf("none of the %d events is covered by a checkpoint signed with a trusted key, so nothing vouches for them", r.Leaves))
		} else {
			parts = append(parts, fmt.Sprintf("events %d to %d are not covered by any checkpoint signed with a trusted key, so nothing vouches for them (they could have been changed without a trace)", r.Verified, r.Leaves-1))
		}
	}
	if len(parts) == 0 {
		return fmt.Sprintf("audit log of %d events verified against %d checkpoints", r.Leaves, len(r.Checkpoints))
	}
	return strings.Join(parts, "; ")
}

// VerifyError is returned by Verify when the log fails; it carries the
// report.
type VerifyError struct{ Report *Report }

func (e *VerifyError) Error() string { return "audit: verification failed: " + e.Report.Summary() }

var (
	errMismatch = errors.New("root differs from the log's tree of that size")
	errBeyond   = errors.New("covers more events than the log has")
)

// Verify recomputes the tree from leaves, checks every checkpoint's
// signature, checks that each checkpoint's root is the tree of its size,
// and that the checkpoints are consistent with one another.
//
// What an outside verifier can localise depends on what it kept. A
// checkpoint is a single hash, so a checkpoint alone only says whether the
// first Size leaves are intact. Because a prefix that matches at size b
// also matches at every smaller size, the checkpoints form a monotone test
// and the first damaged leaf lies between the largest matching and the
// smallest failing checkpoint size. Exporting checkpoints often makes that
// range short. To name the exact leaf, Verify needs more of the old tree:
// either the store's stored hashes (WithStoredHashes; authenticated by the
// failing checkpoint's root and then searched top-down, comparing each
// node's two children with the recomputed ones) or an earlier export's
// leaves (WithReference; compared hash by hash).
//
// Deleting or moving leaves changes the tree of every later size, so it
// shows as damage at the first affected index; a shortened log also shows
// as truncation against any checkpoint beyond its end. A log rebuilt and
// re-signed with the audit key passes against its own new checkpoints, and
// is caught only against checkpoints someone kept from before; two signed
// checkpoints that contradict each other are reported as a fork.
//
// The returned error is a *VerifyError when the log fails, or another error
// when the leaves cannot be read. Verify keeps the stored hashes of the
// whole log in memory: 64 bytes per leaf.
func Verify(ctx context.Context, leaves LeafSource, checkpoints []SignedCheckpoint, v note.Verifiers, opts ...Option) (Report, error) {
	var cfg verifyConfig
	for _, o := range opts {
		o(&cfg)
	}
	rep := Report{FirstBad: -1, FirstBadEnd: -1}
	if v == nil {
		return rep, errors.New("audit: no verifier key given for checkpoints")
	}

	if g, ok := leaves.(gapped); ok {
		rep.Gaps = g.Gaps()
	}
	tree, err := hashLeaves(ctx, leaves)
	if err != nil {
		return rep, err
	}
	rep.Leaves = tree.Size()
	if rep.Root, err = tree.Root(); err != nil {
		return rep, err
	}

	type parsed struct {
		i int
		c Checkpoint
	}
	var good []parsed // validly signed, in input order
	for i, sc := range checkpoints {
		res := CheckpointResult{Source: sc.Source}
		if res.Source == "" {
			res.Source = fmt.Sprintf("checkpoint #%d", i+1)
		}
		c, err := ParseCheckpoint(sc.Note, v)
		if err != nil {
			res.Err = fmt.Errorf("%s: %w", res.Source, err)
		} else {
			res.Checkpoint = c
			if rep.Origin == "" {
				rep.Origin = c.Origin
			}
			if c.Origin != rep.Origin {
				res.Err = fmt.Errorf("%s: checkpoint is for log %q, not %q", res.Source, c.Origin, rep.Origin)
			} else {
				good = append(good, parsed{i, c})
			}
		}
		rep.Checkpoints = append(rep.Checkpoints, res)
	}

	// Contradicting signed checkpoints, found without the leaves: same size
	// and different roots, or an earlier one that the later tree does not
	// extend (checked where the leaves let us compute the proof).
	slices.SortStableFunc(good, func(a, b parsed) int { return cmpInt(a.c.Size, b.c.Size) })
	for j := 1; j < len(good); j++ {
		a, b := good[j-1], good[j]
		if a.c.Size == b.c.Size && a.c.Root != b.c.Root {
			rep.Forks = append(rep.Forks, fmt.Sprintf("%s and %s are both signed for size %d with different roots: the log was rebuilt and re-signed",
				rep.Checkpoints[a.i].Source, rep.Checkpoints[b.i].Source, a.c.Size))
		}
	}

	// Each checkpoint against the tree of its size.
	lowestBad, highestGoodBelow := int64(-1), int64(0)
	var lowestBadCP Checkpoint
	for _, p := range good {
		res := &rep.Checkpoints[p.i]
		c := p.c
		if c.Size > tree.Size() {
			res.Err = fmt.Errorf("%s: checkpoint of size %d %w (%d)", res.Source, c.Size, errBeyond, tree.Size())
			rep.Truncated = true
			rep.ClaimedSize = max(rep.ClaimedSize, c.Size)
			continue
		}
		root, err := tree.RootAt(c.Size)
		if err != nil {
			return rep, err
		}
		if root != c.Root {
			res.Err = fmt.Errorf("%s: checkpoint of size %d: %w", res.Source, c.Size, errMismatch)
			if lowestBad < 0 || c.Size < lowestBad {
				lowestBad, lowestBadCP = c.Size, c
			}
			continue
		}
		rep.Verified = max(rep.Verified, c.Size)
	}
	// Matching checkpoints are consistent with each other by construction;
	// still prove it with tlog, since this is the proof an outside party
	// would check against the server's published tree.
	var prev *Checkpoint
	for _, p := range good {
		if rep.Checkpoints[p.i].Err != nil || p.c.Size == 0 {
			continue
		}
		if prev != nil && prev.Size < p.c.Size {
			proof, err := tlog.ProveTree(p.c.Size, prev.Size, tree)
			if err == nil {
				err = tlog.CheckTree(proof, p.c.Size, p.c.Root, prev.Size, prev.Root)
			}
			if err != nil {
				return rep, fmt.Errorf("audit: consistency proof between sizes %d and %d: %w", prev.Size, p.c.Size, err)
			}
		}
		c := p.c
		prev = &c
	}

	if lowestBad >= 0 {
		for _, p := range good {
			if rep.Checkpoints[p.i].Err == nil && p.c.Size < lowestBad {
				highestGoodBelow = max(highestGoodBelow, p.c.Size)
			}
		}
		rep.FirstBad, rep.FirstBadEnd = highestGoodBelow, lowestBad
		if cfg.stored != nil && lowestBad <= cfg.storedSize {
			if i, ok := descend(lowestBadCP.Size, lowestBadCP.Root, cfg.stored, tree); ok {
				rep.FirstBad, rep.FirstBadEnd = i, i+1
			}
		}
	}
	if cfg.reference != nil {
		if err := compareReference(ctx, &rep, tree, cfg.reference); err != nil {
			return rep, err
		}
	}
	if !rep.OK() {
		return rep, &VerifyError{Report: &rep}
	}
	return rep, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// hashLeaves recomputes the stored hashes of the whole log.
func hashLeaves(ctx context.Context, leaves LeafSource) (*Hashes, error) {
	n := leaves.Len()
	if n < 0 {
		return nil, fmt.Errorf("audit: leaf source reports %d leaves", n)
	}
	tree := &Hashes{stored: make([]tlog.Hash, 0, tlog.StoredHashCount(n))}
	for i := range n {
		if i&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		leaf, err := leaves.Leaf(i)
		if err != nil {
			return nil, fmt.Errorf("audit: reading event %d: %w", i, err)
		}
		if _, err := tree.Append(leaf); err != nil {
			return nil, err
		}
	}
	return tree, nil
}

// descend finds the first leaf where tree differs from the tree described
// by trusted, a HashReader whose hashes are accepted only as far as they
// hash up to root (the signed root of size n). It returns false when the
// trusted hashes are not authenticated or the trees agree.
func descend(n int64, root tlog.Hash, trusted tlog.HashReader, tree *Hashes) (int64, bool) {
	if got, err := tlog.TreeHash(n, trusted); err != nil || got != root {
		return 0, false
	}
	read := func(level int, k int64) (tlog.Hash, bool) {
		h, err := trusted.ReadHashes([]int64{tlog.StoredHashIndex(level, k)})
		if err != nil || len(h) != 1 {
			return tlog.Hash{}, false
		}
		return h[0], true
	}
	// The tree of size n is a row of complete subtrees, largest first; all
	// of them are authenticated together by TreeHash matching root.
	var start int64
	for level := 62; level >= 0; level-- {
		if n&(1<<level) == 0 {
			continue
		}
		k := start >> level
		start += 1 << level
		want, ok := read(level, k)
		if !ok {
			return 0, false
		}
		if tree.node(level, k) == want {
			continue
		}
		for level > 0 {
			l, ok1 := read(level-1, 2*k)
			r, ok2 := read(level-1, 2*k+1)
			if !ok1 || !ok2 || tlog.NodeHash(l, r) != want {
				return 0, false // the trusted hashes do not hold together below here
			}
			level--
			if tree.node(level, 2*k) != l {
				k, want = 2*k, l
			} else {
				k, want = 2*k+1, r
			}
		}
		return k, true
	}
	return 0, false
}

// compareReference compares the log with an earlier copy leaf by leaf.
func compareReference(ctx context.Context, rep *Report, tree *Hashes, ref LeafSource) error {
	refTree, err := hashLeaves(ctx, ref)
	if err != nil {
		return fmt.Errorf("audit: reference copy: %w", err)
	}
	m := min(refTree.Size(), tree.Size())
	if refTree.Size() > tree.Size() {
		rep.Truncated = true
		rep.ClaimedSize = max(rep.ClaimedSize, refTree.Size())
	}
	if m == 0 {
		return nil
	}
	refRoot, _ := refTree.RootAt(m)
	curRoot, _ := tree.RootAt(m)
	if refRoot == curRoot {
		return nil
	}
	i, ok := descend(m, refRoot, refTree, tree)
	if !ok {
		return nil
	}
	if rep.FirstBad < 0 || rep.FirstBadEnd != rep.FirstBad+1 || i <= rep.FirstBad {
		rep.FirstBad, rep.FirstBadEnd = i, i+1
		rep.Kind = classify(i, tree, refTree)
	}
	return nil
}

// classify says what most likely happened at index i, the first leaf where
// the log and the earlier copy differ, by looking at leaf hashes nearby.
func classify(i int64, cur, ref *Hashes) string {
	leafAt := func(h *Hashes, j int64) (tlog.Hash, bool) {
		if j < 0 || j >= h.Size() {
			return tlog.Hash{}, false
		}
		return h.node(0, j), true
	}
	c, cok := leafAt(cur, i)
	r, rok := leafAt(ref, i)
	if !cok {
		return "removed"
	}
	r1, r1ok := leafAt(ref, i+1)
	c1, c1ok := leafAt(cur, i+1)
	switch {
	case r1ok && c1ok && rok && c == r1 && c1 == r:
		return "reordered"
	case r1ok && c == r1:
		return "removed"
	case c1ok && rok && c1 == r:
		return "inserted"
	}
	// The leaf now at i existed later in the copy.
	for j := i + 2; j < ref.Size(); j++ {
		if rj, _ := leafAt(ref, j); rj == c {
			return "reordered"
		}
	}
	return "changed"
}
