package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/ca/rotation"
	"writ.dev/writ/identity"
	"writ.dev/writ/internal/atomicfile"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

// auditKeyName is the keystore name of the server's checkpoint key.
const auditKeyName = "audit-ed25519"

// AuditOrigin is the checkpoint origin line of a trust domain's audit log.
// Every server sharing a store appends to the same log, so they share it.
func AuditOrigin(trustDomain string) string {
	return identity.AuditOrigin(trustDomain)
}

// event encodes the audit event of something the caller in ctx did.
func (s *Server) event(ctx context.Context, typ, subject string, details any) (store.AuditEvent, error) {
	actor := s.actor()
	if c, ok := CallerFrom(ctx); ok {
		actor = c.Actor()
	}
	ev, err := audit.Make(s.now(), typ, actor, subject, details)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "audit event: %v", err)
	}
	return ev, nil
}

// actor names the server itself in events it causes.
func (s *Server) actor() string { return rotation.ServerActor(s.td, s.serverID) }

// record appends events that change no state (issuance) and returns once
// they are durable; the caller answers only then.
func (s *Server) record(ctx context.Context, evs ...store.AuditEvent) error {
	if _, err := s.store.AppendAudit(ctx, evs...); err != nil {
		s.log.Error("could not record audit event; refusing the operation", "err", err)
		return status.Error(codes.Unavailable, "the audit log could not record this operation, so it is refused: retry later")
	}
	return nil
}

// auditHeadFile is the name, in the data dir, of the last tree head this
// server signed and saw committed. It lives outside the database on
// purpose: someone who can write the database but not the data dir cannot
// make the server forget what it has vouched for.
const auditHeadFile = "audit-head"

// auditLog seals the audit log: the store calls SealAudit inside every
// transaction that appends events, and the checkpoint signed there commits
// with the events, so no committed event is ever without a signature over
// it. Before signing, the server proves the tree extends the last head it
// signed and saw committed; a log rewritten under it is refused, and with it
// every further change, rather than signed over.
//
// Every commit's checkpoint is kept until the next one of this server
// supersedes it; one in CheckpointEvents events or CheckpointInterval is
// kept for good, so the store holds a bounded trail of old heads.
type auditLog struct {
	st       store.Store
	log      *slog.Logger
	serverID string
	origin   string
	name     string
	signer   note.Signer
	verifier note.Verifiers
	pub      ed25519.PublicKey
	every    int64
	interval time.Duration
	now      func() time.Time
	headPath string

	mu       sync.Mutex
	last     audit.Checkpoint // the last head this server signed that committed
	lastNote []byte
	pending  map[int64]tlog.Hash // sealed, commit not yet seen
	keptSize int64
	keptAt   time.Time
	dropNext []int64 // transient checkpoints the next seal supersedes
	broken   error   // set when the log no longer extends last

	written chan struct{} // a new head is waiting to be written to headPath
}

var _ store.AuditSealer = (*auditLog)(nil)

func newAuditLog(ctx context.Context, s *Server, ks keystore.KeyStore) (*auditLog, error) {
	key, err := ks.Get(ctx, auditKeyName)
	if errors.Is(err, keystore.ErrNotFound) {
		key, err = ks.Generate(ctx, auditKeyName, keystore.Ed25519)
	}
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit key %q is a %T, not Ed25519: move it aside and restart to make a new one", auditKeyName, key.Public())
	}
	// The name carries a digest of the key, so a server that loses its key
	// and makes a new one records it under a new name and its old
	// checkpoints stay verifiable under the old.
	sum := sha256.Sum256(pub)
	serverID, err := identity.ServerID(s.td, s.serverID)
	if err != nil {
		return nil, fmt.Errorf("server id: %w", err)
	}
	name := fmt.Sprintf("%s/audit-%s", strings.TrimPrefix(serverID.String(), "spiffe://"), hex.EncodeToString(sum[:4]))
	signer, err := audit.NewSigner(name, key)
	if err != nil {
		return nil, err
	}
	verifier, err := audit.NewVerifier(name, pub)
	if err != nil {
		return nil, err
	}
	a := &auditLog{
		st:       s.store,
		log:      s.log.With("component", "audit"),
		serverID: s.serverID,
		origin:   AuditOrigin(s.td.Name()),
		name:     name,
		signer:   signer,
		verifier: note.VerifierList(verifier),
		pub:      pub,
		every:    s.cfg.Audit.CheckpointEvents,
		interval: s.cfg.Audit.CheckpointInterval.Duration,
		now:      s.now,
		headPath: filepath.Join(s.cfg.DataDir, auditHeadFile),
		pending:  map[int64]tlog.Hash{},
		written:  make(chan struct{}, 1),
	}
	if err := a.resume(ctx); err != nil {
		return nil, err
	}
	s.store.SetAuditSealer(a)
	ev, err := audit.Make(s.now(), audit.EventAuditKeyPublish, s.actor(), name, map[string]any{"server_id": s.serverID})
	if err != nil {
		return nil, err
	}
	if err := s.store.PutAuditKey(ctx, store.AuditKey{ServerID: s.serverID, Name: name, PublicKey: pub}, ev); err != nil {
		return nil, fmt.Errorf("publish audit key: %w", err)
	}
	// Whatever tail the last run left unsigned is vouched for now, and the
	// head on disk is brought up to date before anything is served.
	if _, err := a.checkpoint(ctx); err != nil {
		return nil, err
	}
	if err := a.writeHead(); err != nil {
		return nil, err
	}
	return a, nil
}

// resume finds the last tree head this server signed, from its head file
// and from its own checkpoints in the store (a server from before the head
// file existed has only those), and proves the store's log extends it. If
// it does not, the database was changed behind the server's back and the
// server refuses to start: going on would sign the rewritten history.
func (a *auditLog) resume(ctx context.Context) error {
	var heads []audit.Checkpoint
	var sources []string
	var notes [][]byte
	data, err := os.ReadFile(a.headPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading the audit tree head: %w", err)
	default:
		c, err := audit.ParseCheckpoint(data, a.verifier)
		if err != nil {
			return fmt.Errorf("%s: %v: it was not signed by this server's audit key %s. If the key was replaced on purpose, move the file aside (keep it as evidence) and start again", a.headPath, err, a.name)
		}
		if c.Origin != a.origin {
			return fmt.Errorf("%s is a tree head of log %q, not of this trust domain's %q: move it aside (keep it as evidence) and start again", a.headPath, c.Origin, a.origin)
		}
		heads, sources, notes = append(heads, c), append(sources, a.headPath), append(notes, data)
	}
	cps, err := a.st.ListAuditCheckpoints(ctx, 0, 0)
	if err != nil {
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	for i := len(cps) - 1; i >= 0; i-- {
		if cps[i].ServerID != a.serverID {
			continue
		}
		// Notes under another key (an earlier one) or forged ones do not
		// verify and are not this server's word.
		if c, err := audit.ParseCheckpoint(cps[i].Note, a.verifier); err == nil && c.Origin == a.origin {
			heads, sources = append(heads, c), append(sources, fmt.Sprintf("its checkpoint of size %d in the store", c.Size))
			notes = append(notes, cps[i].Note)
			break
		}
	}
	size, err := a.st.AuditSize(ctx)
	if err != nil {
		return fmt.Errorf("audit log size: %w", err)
	}
	hashes := storeHashReader{ctx: ctx, st: a.st}
	for i, h := range heads {
		if err := audit.ProveExtends(size, h, hashes); err != nil {
			a.log.Error("AUDIT LOG REWRITTEN: refusing to start", "head", sources[i], "head_size", h.Size, "head_root", h.Root.String(), "store_size", size, "err", err)
			return fmt.Errorf("REFUSING TO START: the store's audit log does not extend the tree head this server signed (%s, size %d, root %s): %v. "+
				"The database was changed behind the server's back. Keep the database and %s as evidence, check them with 'writ audit verify --keys BUNDLE --checkpoints EXPORT' against a copy, and restore a database that extends this head",
				sources[i], h.Size, h.Root, err, a.headPath)
		}
		if h.Size > a.last.Size {
			a.last, a.lastNote = h, notes[i]
		}
	}
	if len(heads) == 0 {
		a.log.Info("no audit tree head signed by this server yet; vouching for the store's log as found", "events", size)
	}
	// The events after the head were committed but are vouched for by no
	// head this server kept; check at least that their hashes are theirs
	// before signing over them.
	if size > a.last.Size {
		var tail [][]byte
		for next := a.last.Size; next < size; {
			recs, err := a.st.ReadAudit(ctx, next, 1000)
			if err != nil {
				return fmt.Errorf("reading audit events: %w", err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if r.Index != next {
					return fmt.Errorf("REFUSING TO START: the store's audit log has no event %d (the next stored one is %d): events were deleted behind the server's back; keep the database as evidence and restore one without gaps", next, r.Index)
				}
				tail = append(tail, r.Event)
				next++
			}
		}
		if int64(len(tail)) != size-a.last.Size {
			return fmt.Errorf("REFUSING TO START: the store's audit head counts %d events but only %d are stored: the tail was cut behind the server's back", size, a.last.Size+int64(len(tail)))
		}
		if err := audit.CheckStoredLeaves(a.last.Size, tail, hashes); err != nil {
			return fmt.Errorf("REFUSING TO START: the audit log's unsigned tail (events %d to %d) does not match its stored hashes: %v; keep the database as evidence", a.last.Size, size-1, err)
		}
	}
	// The first seal of a run is kept for good, so restarts leave a trail.
	a.keptSize, a.keptAt = a.last.Size, time.Time{}
	return nil
}

// SealAudit implements store.AuditSealer. The store calls it with the head
// lock of the log held, so seals do not race each other.
func (a *auditLog) SealAudit(ctx context.Context, size int64, root store.AuditHash, hashes store.AuditHashReader) (store.AuditSeal, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sealLocked(size, root, sealHashes(hashes))
}

func (a *auditLog) sealLocked(size int64, root store.AuditHash, hashes tlog.HashReader) (store.AuditSeal, error) {
	if a.broken != nil {
		return store.AuditSeal{}, a.broken
	}
	if err := audit.CheckExtends(size, tlog.Hash(root), a.last, hashes); err != nil {
		if !errors.Is(err, audit.ErrNotExtended) {
			// A failed read (a canceled caller, a busy database) refuses
			// this change only.
			return store.AuditSeal{}, err
		}
		a.broken = fmt.Errorf("the audit log no longer extends the head this server signed at size %d: %v; it was changed behind the server's back. No change is accepted until the server restarts, which refuses while the log is rewritten: run 'writ audit verify' and investigate", a.last.Size, err)
		a.log.Error("AUDIT LOG REWRITTEN under a running server: refusing every change", "head_size", a.last.Size, "head_root", a.last.Root.String(), "store_size", size, "err", err)
		return store.AuditSeal{}, a.broken
	}
	now := a.now()
	msg, err := audit.SignCheckpoint(audit.Checkpoint{Origin: a.origin, Size: size, Root: tlog.Hash(root)}, a.signer)
	if err != nil {
		return store.AuditSeal{}, err
	}
	seal := store.AuditSeal{
		Checkpoint: store.AuditCheckpoint{ServerID: a.serverID, Size: size, Note: msg, CreatedAt: now},
		Drop:       a.dropNext,
	}
	if a.keptAt.IsZero() || size-a.keptSize >= a.every || now.Sub(a.keptAt) >= a.interval {
		a.keptSize, a.keptAt, a.dropNext = size, now, nil
	} else {
		a.dropNext = []int64{size}
	}
	a.pending[size] = tlog.Hash(root)
	return seal, nil
}

// AuditCommitted implements store.AuditSealer.
func (a *auditLog) AuditCommitted(seal store.AuditSeal) {
	a.committed(seal.Checkpoint.Size, seal.Checkpoint.Note)
}

func (a *auditLog) committed(size int64, msg []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	root, ok := a.pending[size]
	if !ok {
		return
	}
	for s := range a.pending {
		if s <= size {
			delete(a.pending, s)
		}
	}
	if size > a.last.Size {
		a.last = audit.Checkpoint{Origin: a.origin, Size: size, Root: root}
		a.lastNote = msg
		select {
		case a.written <- struct{}{}:
		default:
		}
	}
}

// writeHead saves the last committed head to the data dir.
func (a *auditLog) writeHead() error {
	a.mu.Lock()
	msg := a.lastNote
	a.mu.Unlock()
	if msg == nil {
		return nil
	}
	if err := atomicfile.Write(a.headPath, msg, 0o600); err != nil {
		return fmt.Errorf("saving the audit tree head: %w", err)
	}
	return nil
}

// run keeps the head file up to date until ctx ends, and once more then.
// Writes are coalesced: the file trails the log by at most the commits made
// while one write is under way.
func (a *auditLog) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			if err := a.writeHead(); err != nil {
				a.log.Error("could not save the audit tree head", "err", err)
			}
			return
		case <-a.written:
			if err := a.writeHead(); err != nil {
				a.log.Error("could not save the audit tree head", "err", err)
			}
		}
	}
}

// checkpoint returns a checkpoint of this server covering the log as it is
// now, signing one when the last commits were sealed by other servers.
func (a *auditLog) checkpoint(ctx context.Context) (*store.AuditCheckpoint, error) {
	size, err := a.st.AuditSize(ctx)
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	hashes := storeHashReader{ctx: ctx, st: a.st}
	root, err := tlog.TreeHash(size, hashes)
	if err != nil {
		return nil, fmt.Errorf("tree hash of size %d: %w", size, err)
	}
	a.mu.Lock()
	if a.last.Size >= size && a.lastNote != nil {
		cp := store.AuditCheckpoint{ServerID: a.serverID, Size: a.last.Size, Note: a.lastNote}
		a.mu.Unlock()
		return &cp, nil
	}
	seal, err := a.sealLocked(size, store.AuditHash(root), hashes)
	// Nothing is dropped outside a transaction that appends; the next
	// seal drops what this one superseded.
	a.dropNext = append(a.dropNext, seal.Drop...)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := a.st.PutAuditCheckpoint(ctx, seal.Checkpoint); err != nil {
		return nil, err
	}
	a.committed(size, seal.Checkpoint.Note)
	return &seal.Checkpoint, nil
}

// sealHashes adapts the store's in-transaction hash reader for tlog.
type sealHashes store.AuditHashReader

func (r sealHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	hs, err := r(indexes)
	if err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(hs))
	for i := range hs {
		out[i] = tlog.Hash(hs[i])
	}
	return out, nil
}

// storeHashReader reads the store's tree hashes for tlog.
type storeHashReader struct {
	ctx context.Context
	st  store.Store
}

func (r storeHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	hs, err := r.st.ReadAuditHashes(r.ctx, indexes)
	if err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(hs))
	for i := range hs {
		out[i] = tlog.Hash(hs[i])
	}
	return out, nil
}

const (
	defaultAuditPage = 1000
	maxAuditPage     = 10_000
	maxAuditHashes   = 4096
)

type auditService struct {
	writv1.UnimplementedAuditServiceServer
	s *Server
}

func (as *auditService) ReadEvents(ctx context.Context, req *writv1.ReadAuditEventsRequest) (*writv1.ReadAuditEventsResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case req.GetStart() < 0:
		return nil, status.Errorf(codes.InvalidArgument, "start: %d is negative", req.GetStart())
	case limit < 0 || limit > maxAuditPage:
		return nil, status.Errorf(codes.InvalidArgument, "limit: %d is out of range: 1 to %d, or 0 for %d", limit, maxAuditPage, defaultAuditPage)
	case limit == 0:
		limit = defaultAuditPage
	}
	st := as.s.store
	size, err := st.AuditSize(ctx)
	if err != nil {
		return nil, storeStatus(err)
	}
	recs, err := st.ReadAudit(ctx, req.GetStart(), limit)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &writv1.ReadAuditEventsResponse{Size: size, Events: make([]*writv1.AuditEvent, len(recs))}
	for i, r := range recs {
		resp.Events[i] = &writv1.AuditEvent{Index: r.Index, Event: r.Event}
	}
	return resp, nil
}

func (as *auditService) GetCheckpoints(ctx context.Context, req *writv1.GetAuditCheckpointsRequest) (*writv1.GetAuditCheckpointsResponse, error) {
	st := as.s.store
	cps, err := st.ListAuditCheckpoints(ctx, req.GetMinSize(), 0)
	if err != nil {
		return nil, storeStatus(err)
	}
	if req.GetLatestOnly() {
		latest := map[string]store.AuditCheckpoint{}
		for _, c := range cps {
			latest[c.ServerID] = c // sorted by size: the last one wins
		}
		cps = cps[:0]
		for _, c := range latest {
			cps = append(cps, c)
		}
	}
	keys, err := st.ListAuditKeys(ctx)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &writv1.GetAuditCheckpointsResponse{Origin: AuditOrigin(as.s.td.Name())}
	if a := as.s.audit; a != nil {
		vk, err := audit.VerifierKey(a.name, a.pub)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "audit key: %v", err)
		}
		resp.ServerKey = &writv1.AuditKey{Name: a.name, ServerId: a.serverID, PublicKey: a.pub, VerifierKey: vk}
	}
	for _, c := range cps {
		resp.Checkpoints = append(resp.Checkpoints, &writv1.AuditCheckpoint{ServerId: c.ServerID, Size: c.Size, Note: c.Note, CreatedAt: c.CreatedAt.Unix()})
	}
	for _, k := range keys {
		vk, err := note.NewEd25519VerifierKey(k.Name, ed25519.PublicKey(k.PublicKey))
		if err != nil {
			as.s.log.Warn("skipping an unusable audit key from the store", "name", k.Name, "err", err)
			continue
		}
		resp.Keys = append(resp.Keys, &writv1.AuditKey{Name: k.Name, ServerId: k.ServerID, PublicKey: k.PublicKey, VerifierKey: vk})
	}
	return resp, nil
}

func (as *auditService) ReadHashes(ctx context.Context, req *writv1.ReadAuditHashesRequest) (*writv1.ReadAuditHashesResponse, error) {
	idx := req.GetIndexes()
	if len(idx) > maxAuditHashes {
		return nil, status.Errorf(codes.InvalidArgument, "indexes: %d asked, at most %d at a time", len(idx), maxAuditHashes)
	}
	for i, x := range idx {
		if x < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "indexes[%d]: %d is negative", i, x)
		}
	}
	hs, err := as.s.store.ReadAuditHashes(ctx, idx)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &writv1.ReadAuditHashesResponse{Hashes: make([][]byte, len(hs))}
	for i := range hs {
		resp.Hashes[i] = hs[i][:]
	}
	return resp, nil
}

func (as *auditService) SignCheckpoint(ctx context.Context, _ *writv1.SignAuditCheckpointRequest) (*writv1.AuditCheckpoint, error) {
	cp, err := as.s.audit.checkpoint(ctx)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "audit checkpoint: %v", err)
	}
	if cp == nil {
		return nil, status.Error(codes.FailedPrecondition, "the audit log is empty: there is nothing to checkpoint")
	}
	return &writv1.AuditCheckpoint{ServerId: cp.ServerID, Size: cp.Size, Note: cp.Note, CreatedAt: cp.CreatedAt.Unix()}, nil
}
