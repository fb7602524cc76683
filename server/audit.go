package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/ca"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

// auditKeyName is the keystore name of the server's checkpoint key.
const auditKeyName = "audit-ed25519"

// AuditOrigin is the checkpoint origin line of a trust domain's audit log.
// Every server sharing a store appends to the same log, so they share it.
func AuditOrigin(trustDomain string) string {
	return trustDomain + "/writ/audit"
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
func (s *Server) actor() string { return ca.ServerActor(s.td, s.serverID) }

// record appends events that change no state (issuance) and returns once
// they are durable; the caller answers only then.
func (s *Server) record(ctx context.Context, evs ...store.AuditEvent) error {
	if _, err := s.store.AppendAudit(ctx, evs...); err != nil {
		s.log.Error("could not record audit event; refusing the operation", "err", err)
		return status.Error(codes.Unavailable, "the audit log could not record this operation, so it is refused: retry later")
	}
	return nil
}

// auditLog signs checkpoints of the audit log with the server's Ed25519
// key: after CheckpointEvents new events or CheckpointInterval, whichever
// is first. Before signing it proves the log it sees extends the last one
// it signed, so history rewritten under a running server is reported
// rather than signed over.
type auditLog struct {
	st       store.Store
	log      *slog.Logger
	serverID string
	origin   string
	signer   note.Signer
	verifier note.Verifiers
	pub      ed25519.PublicKey
	every    int64
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	lastSize int64
	lastRoot tlog.Hash
	lastAt   time.Time
	broken   error // set when the log no longer extends the last checkpoint
}

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
	name := fmt.Sprintf("%s/writ/server/%s/audit-%s", s.td.Name(), s.serverID, hex.EncodeToString(sum[:4]))
	signer, err := audit.NewSigner(name, key)
	if err != nil {
		return nil, err
	}
	verifier, err := audit.NewVerifier(name, pub)
	if err != nil {
		return nil, err
	}
	ev, err := audit.Make(s.now(), audit.EventAuditKeyPublish, s.actor(), name, map[string]any{"server_id": s.serverID})
	if err != nil {
		return nil, err
	}
	if err := s.store.PutAuditKey(ctx, store.AuditKey{ServerID: s.serverID, Name: name, PublicKey: pub}, ev); err != nil {
		return nil, fmt.Errorf("publish audit key: %w", err)
	}
	a := &auditLog{
		st:       s.store,
		log:      s.log.With("component", "audit"),
		serverID: s.serverID,
		origin:   AuditOrigin(s.td.Name()),
		signer:   signer,
		verifier: note.VerifierList(verifier),
		pub:      pub,
		every:    s.cfg.Audit.CheckpointEvents,
		interval: s.cfg.Audit.CheckpointInterval.Duration,
		now:      s.now,
	}
	if err := a.resume(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// resume starts from this server's latest checkpoint under the same key,
// so the first checkpoint after a restart is also proved consistent.
func (a *auditLog) resume(ctx context.Context) error {
	cps, err := a.st.ListAuditCheckpoints(ctx, 0, 0)
	if err != nil {
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	for i := len(cps) - 1; i >= 0; i-- {
		if cps[i].ServerID != a.serverID {
			continue
		}
		c, err := audit.ParseCheckpoint(cps[i].Note, a.verifier)
		if err != nil {
			// Signed under an earlier key; start afresh.
			continue
		}
		a.lastSize, a.lastRoot, a.lastAt = c.Size, c.Root, cps[i].CreatedAt
		return nil
	}
	return nil
}

// run signs checkpoints when due until ctx ends, and a last one then.
func (a *auditLog) run(ctx context.Context) {
	tick := time.NewTicker(min(a.interval, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if _, err := a.checkpoint(final, true); err != nil {
				a.log.Warn("final audit checkpoint", "err", err)
			}
			cancel()
			return
		case <-tick.C:
			if _, err := a.checkpoint(ctx, false); err != nil && ctx.Err() == nil {
				a.log.Error("audit checkpoint failed", "err", err)
			}
		}
	}
}

// checkpoint signs and stores a checkpoint of the log as it is now when
// one is due (or force is set) and the log has grown; it returns the
// stored checkpoint, or nil when none was due.
func (a *auditLog) checkpoint(ctx context.Context, force bool) (*store.AuditCheckpoint, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.broken != nil {
		return nil, a.broken
	}
	size, err := a.st.AuditSize(ctx)
	if err != nil {
		return nil, err
	}
	now := a.now()
	grown := size - a.lastSize
	if size == 0 || grown == 0 || !force && grown < a.every && now.Sub(a.lastAt) < a.interval {
		return nil, nil
	}
	hashes := storeHashReader{ctx: ctx, st: a.st}
	root, err := tlog.TreeHash(size, hashes)
	if err != nil {
		return nil, fmt.Errorf("tree hash of size %d: %w", size, err)
	}
	if a.lastSize > 0 {
		proof, err := tlog.ProveTree(size, a.lastSize, hashes)
		if err == nil {
			err = tlog.CheckTree(proof, size, root, a.lastSize, a.lastRoot)
		}
		if err != nil {
			a.broken = fmt.Errorf("the audit log of size %d does not extend the checkpoint this server signed at size %d (%v): it was changed; run 'writ audit verify' and investigate; no further checkpoints are signed until the server restarts", size, a.lastSize, err)
			a.log.Error("audit log tampering detected", "size", size, "last_checkpoint", a.lastSize, "err", err)
			return nil, a.broken
		}
	}
	msg, err := audit.SignCheckpoint(audit.Checkpoint{Origin: a.origin, Size: size, Root: root}, a.signer)
	if err != nil {
		return nil, err
	}
	cp := store.AuditCheckpoint{ServerID: a.serverID, Size: size, Note: msg, CreatedAt: now}
	if err := a.st.PutAuditCheckpoint(ctx, cp); err != nil {
		return nil, err
	}
	a.lastSize, a.lastRoot, a.lastAt = size, root, now
	return &cp, nil
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
	cp, err := as.s.audit.checkpoint(ctx, true)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "audit checkpoint: %v", err)
	}
	if cp == nil {
		// Nothing new since the last checkpoint: hand out that one.
		cps, err := as.s.store.ListAuditCheckpoints(ctx, as.s.audit.size(), 0)
		if err != nil {
			return nil, storeStatus(err)
		}
		for _, c := range cps {
			if c.ServerID == as.s.serverID {
				cp = &c
			}
		}
		if cp == nil {
			return nil, status.Error(codes.FailedPrecondition, "the audit log is empty: there is nothing to checkpoint")
		}
	}
	return &writv1.AuditCheckpoint{ServerId: cp.ServerID, Size: cp.Size, Note: cp.Note, CreatedAt: cp.CreatedAt.Unix()}, nil
}

// size is the size of the last checkpoint this server signed.
func (a *auditLog) size() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastSize
}
