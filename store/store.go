// Package store defines how writ persists its state. Engines (store/sqlite,
// store/postgres) implement Store and pass the same conformance suite
// (store/storetest).
//
// Invariants every engine keeps:
//   - Every change carries its audit events and appends them to the audit log
//     in the change's own transaction: a change without its evidence, or
//     evidence of a change that did not happen, cannot be committed. A change
//     given no event is refused.
//   - Every change to entries or locks happens in one transaction that also
//     bumps the store-wide revision. The revision is taken under a lock inside that
//     transaction, so revisions are gap-free and commit in order: a reader that
//     has seen revision N has seen every change numbered N or below.
//   - A failed call writes nothing.
//   - The package imports nothing else of writ's: records hold plain values and
//     the caller validates them.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"
)

// Errors returned by every engine. Callers compare with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict is returned when an update names a revision that is no
	// longer current (optimistic concurrency).
	ErrConflict = errors.New("conflict")
	// ErrNoAuditEvent is returned for a change given no audit event, or an
	// empty or oversized one; nothing is written.
	ErrNoAuditEvent = errors.New("no valid audit event for the change")
	// ErrTokenUsed and ErrTokenExpired are returned for a join token that
	// was already redeemed or is past its expiry.
	ErrTokenUsed    = errors.New("join token already used")
	ErrTokenExpired = errors.New("join token expired")
)

// Selector is one attested property, e.g. {Type: "unix", Value: "uid:1000"}.
type Selector struct {
	Type  string
	Value string
}

// Entry is an identity rule (registration entry) as stored.
type Entry struct {
	// ID is assigned by the store when empty on create.
	ID       string
	SPIFFEID string
	// ParentID is empty when ParentSelectors name the parents.
	ParentID string
	// ParentSelectors, when set, make every agent attested at join with
	// all of them a parent; a sorted set, nil when none.
	ParentSelectors []Selector
	Selectors       []Selector
	// X509TTL and JWTTTL are whole seconds; zero means the server default.
	X509TTL  time.Duration
	JWTTTL   time.Duration
	DNSNames []string
	Hint     string
	// ExpiresAt is the zero time when the rule never expires.
	ExpiresAt time.Time
	// Revision is the store revision of the entry's last change; set by the store.
	Revision  int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// EntryFilter narrows ListEntries. Zero fields do not filter.
type EntryFilter struct {
	SPIFFEID string
	ParentID string
	// Selectors keeps entries that hold every one of these selectors
	// (an entry may hold more).
	Selectors []Selector
	Hint      string
	// WithParentSelectors keeps only entries whose parents are (also)
	// named by node selectors.
	WithParentSelectors bool
	// AfterID and Limit page through results ordered by ID.
	AfterID string
	Limit   int
}

// ChangeOp says what happened to an entry at a revision.
type ChangeOp string

const (
	OpPut    ChangeOp = "put"
	OpDelete ChangeOp = "delete"
)

// Change is one entry change, in revision order.
type Change struct {
	Revision int64
	EntryID  string
	Op       ChangeOp
}

// CACert is an X.509 authority a server publishes in the trust bundle. Each
// server owns its key (never stored here); the bundle is the union of the
// unexpired CA certificates of all servers sharing the store.
type CACert struct {
	ServerID  string
	CertDER   []byte
	NotBefore time.Time
	NotAfter  time.Time
	// Tainted marks a certificate whose key is suspect: holders of SVIDs it
	// signed should get new ones early. Revoked takes it out of the bundle.
	// Both are sticky: re-recording a certificate never clears them.
	Tainted bool
	Revoked bool
}

// JWTKey is the public half of a JWT signing key a server publishes in the
// trust bundle and its JWKS. As with CA certificates, each server keeps its
// private key in its own keystore; the JWKS is the union of the unexpired
// keys of all servers sharing the store.
type JWTKey struct {
	ServerID string
	// KeyID is the key's "kid", unique across the trust domain.
	KeyID string
	// PublicKeyDER is the PKIX (SubjectPublicKeyInfo) encoding of the key.
	PublicKeyDER []byte
	// NotAfter is when the key stops signing; no token it signed lives longer.
	NotAfter time.Time
	// Tainted and Revoked work as for CACert, and are as sticky.
	Tainted bool
	Revoked bool
}

// Lock target kinds. A lock stops issuance for everything its target names.
const (
	LockSPIFFEID   = "spiffe-id"   // exactly one SPIFFE ID
	LockIDPrefix   = "id-prefix"   // a SPIFFE ID and everything below it, by whole path segments
	LockNode       = "node"        // a node's SPIFFE ID
	LockAgent      = "agent"       // an agent's SPIFFE ID
	LockJoinMethod = "join-method" // a node attestation method by name
	LockTask       = "task"        // a task: its grants are dead while the lock holds
)

// LockTarget is what a lock applies to.
type LockTarget struct {
	// Kind is one of the Lock* constants.
	Kind  string
	Value string
}

// Watch is one live watch session over a dual-controlled task.
type Watch struct {
	ID   string
	Task string
	// Chain is the watcher first, then whom it acts for.
	Chain []string
	// ExpiresAt is when the session lapses unless a heartbeat moves it;
	// kept to the millisecond.
	ExpiresAt time.Time
}

// Lock stops issuance for its target until it is deleted or expires.
type Lock struct {
	// ID is assigned by the store when empty on create.
	ID        string
	Target    LockTarget
	Reason    string
	CreatedBy string
	// CreatedAt is set by the store when zero; whole seconds.
	CreatedAt time.Time
	// ExpiresAt is the zero time for a lock that holds until deleted.
	ExpiresAt time.Time
}

// AuditEvent is one encoded audit event (package audit's canonical JSON).
// The store keeps these exact bytes as a leaf of the audit log's Merkle tree
// and never re-encodes them.
type AuditEvent []byte

// MaxAuditEventSize bounds one event; the audit package encodes no larger.
const MaxAuditEventSize = 256 << 10

// AuditRecord is a stored audit event and its index (0-based) in the log.
type AuditRecord struct {
	Index int64
	Event []byte
}

// AuditHash is a node of the audit log's tree in RFC 6962 hashing, as
// golang.org/x/mod/sumdb/tlog lays out its stored hashes.
type AuditHash [32]byte

// AuditCheckpoint is a signed checkpoint (a note over the log's size and
// root hash) a server recorded.
type AuditCheckpoint struct {
	ServerID string
	Size     int64
	Note     []byte
	// CreatedAt is set by the store when zero.
	CreatedAt time.Time
}

// AuditSealer signs a checkpoint of the audit log inside each transaction
// that appends to it (see Store.SetAuditSealer). Calls are serialized by the
// audit log's head lock, but AuditCommitted may arrive after the next
// SealAudit has begun.
type AuditSealer interface {
	// SealAudit returns the checkpoint to store for the log's first size
	// events, whose tree hash is root; hashes reads stored hashes as the
	// transaction sees them. An error aborts the transaction: the change
	// and its events do not happen.
	SealAudit(ctx context.Context, size int64, root AuditHash, hashes AuditHashReader) (AuditSeal, error)
	// AuditCommitted reports that the transaction holding seal committed.
	AuditCommitted(seal AuditSeal)
}

// AuditSeal is what a sealer hands back for one transaction.
type AuditSeal struct {
	Checkpoint AuditCheckpoint
	// Drop lists sizes of earlier checkpoints of the same server that this
	// one supersedes; the store deletes them in the same transaction.
	Drop []int64
}

// AuditHashReader reads stored tree hashes by tlog's stored-hash index.
type AuditHashReader func(indexes []int64) ([]AuditHash, error)

// AuditKey is the public half of the Ed25519 key a server signs audit
// checkpoints with; the private half stays in that server's keystore.
type AuditKey struct {
	ServerID string
	// Name is the note key name the checkpoints are signed under.
	Name      string
	PublicKey []byte // 32-byte Ed25519 public key
	CreatedAt time.Time
}

// JoinToken is a one-time join token as stored. The secret itself is never
// stored, only its SHA-256 digest.
type JoinToken struct {
	ID           string
	SecretSHA256 []byte
	CreatedBy    string
	CreatedAt    time.Time
	ExpiresAt    time.Time
	// UsedAt is the zero time while the token is unused; UsedBy names the
	// agent that redeemed it.
	UsedAt time.Time
	UsedBy string
}

// JoinReplay names a token from an identity provider, to be accepted once.
type JoinReplay struct {
	Issuer string
	JTI    string
	// ExpiresAt is when the token expires: it is remembered until then.
	ExpiresAt time.Time
}

// Agent is a node agent that joined the trust domain. Its private key stays
// on its node; the store tracks which of its certificates is current, which
// is how a copy of the agent is noticed.
type Agent struct {
	ID         string
	SPIFFEID   string
	JoinMethod string
	// Selectors are the node's attested facts.
	Selectors []Selector
	// Serial is the (hex) serial number of the certificate the agent uses
	// now; PendingSerial that of the certificate its last renewal issued,
	// which becomes current when first used. Generation counts renewals.
	Serial        string
	PendingSerial string
	Generation    int64
	CertNotAfter  time.Time
	CreatedAt     time.Time
	LastSeen      time.Time
}

// TaskRecord is a task as stored: the server's JSON document of it (package
// task) with the columns the store lists by.
type TaskRecord struct {
	ID       string
	State    string
	Deadline time.Time
	// EndsAt is when the task stops granting for good: the time it was
	// closed or expired, or zero for its Deadline while it has not ended.
	// A read returns Deadline for zero.
	EndsAt time.Time
	Doc    []byte
	// Revision is the store revision of its last change; set by the store.
	Revision  int64
	UpdatedAt time.Time
}

// StandingGrantRecord is a standing grant as stored, a JSON document.
type StandingGrantRecord struct {
	ID        string
	Doc       []byte
	Revision  int64
	UpdatedAt time.Time
}

// RequestRecord is an access request as stored: the server's JSON document
// of it (package task/review) with the columns the store lists by.
type RequestRecord struct {
	ID           string
	State        string
	Task         string
	PendingUntil time.Time
	Doc          []byte
	// Revision is the store revision of its last change; set by the store.
	Revision  int64
	UpdatedAt time.Time
}

// ReviewRecord is one review of a request as stored, a JSON document.
// Seq numbers a request's reviews from 1 in the order they were made; the
// store assigns it and Revision.
type ReviewRecord struct {
	RequestID string
	Seq       int64
	Doc       []byte
	Revision  int64
}

// ReviewRules is the review rules file last applied, as text, so every
// server sharing the store parses the same rules.
type ReviewRules struct {
	Text      string
	Revision  int64
	UpdatedAt time.Time
}

// MaxReviewRulesSize bounds the stored rules file.
const MaxReviewRulesSize = 1 << 20

// DelegationKey is the public half of a server's delegation token key.
type DelegationKey struct {
	KeyID        string
	ServerID     string
	PublicKeyDER []byte // PKIX
	CreatedAt    time.Time
}

// Store is writ's persistent state. Implementations are safe for concurrent use.
type Store interface {
	// CreateEntries stores all entries or none, under one new revision, and
	// returns them with ID, Revision and timestamps set. An entry with the same
	// SPIFFE ID, parent ID, parent selector set and selector set as an existing one (or another in
	// the batch) fails the whole batch with ErrAlreadyExists; the error names
	// the index of the offending entry.
	CreateEntries(ctx context.Context, entries []Entry, evs ...AuditEvent) ([]Entry, error)
	// UpdateEntry replaces the entry with e.ID under a new revision. If
	// e.Revision is non-zero and not the entry's current revision it fails
	// with ErrConflict. Unknown IDs fail with ErrNotFound.
	UpdateEntry(ctx context.Context, e Entry, evs ...AuditEvent) (Entry, error)
	// DeleteEntry removes an entry under a new revision and returns it as it was.
	DeleteEntry(ctx context.Context, id string, evs ...AuditEvent) (Entry, error)
	GetEntry(ctx context.Context, id string) (Entry, error)
	ListEntries(ctx context.Context, f EntryFilter) ([]Entry, error)

	// Revision is the newest committed revision (0 for an empty store).
	Revision(ctx context.Context) (int64, error)
	// ChangesSince returns changes with revision > rev in order. limit bounds
	// the count (limit <= 0 means all) but never splits a revision: callers
	// resume from the last revision they received, so the result ends at the
	// last whole revision that fits, and a single revision larger than limit
	// is returned whole.
	ChangesSince(ctx context.Context, rev int64, limit int) ([]Change, error)

	// PutCACert records (or re-records) a CA certificate of a server.
	// Tainted and Revoked, once set, stay set.
	PutCACert(ctx context.Context, c CACert, evs ...AuditEvent) error
	// ListCACerts returns the CA certificates that are not revoked and have
	// NotAfter after now, oldest first.
	ListCACerts(ctx context.Context, now time.Time) ([]CACert, error)

	// PutJWTKey records (or re-records, by key ID) a JWT signing key of a
	// server. Tainted and Revoked, once set, stay set.
	PutJWTKey(ctx context.Context, k JWTKey, evs ...AuditEvent) error
	// ListJWTKeys returns the JWT keys that are not revoked and have
	// NotAfter after now, oldest first (by NotAfter, then key ID).
	ListJWTKeys(ctx context.Context, now time.Time) ([]JWTKey, error)

	// CreateLock stores a lock under a new revision and returns it with ID
	// and CreatedAt set. A lock takes a revision but records no entry change:
	// whoever follows the revision sees it move and reloads the locks.
	CreateLock(ctx context.Context, l Lock, evs ...AuditEvent) (Lock, error)
	// DeleteLock removes a lock under a new revision and returns it as it
	// was. Unknown IDs fail with ErrNotFound.
	DeleteLock(ctx context.Context, id string, evs ...AuditEvent) (Lock, error)
	// ListLocks returns the locks that have not expired at now (those with no
	// expiry and those with ExpiresAt after now), oldest first (by
	// CreatedAt, then ID).
	ListLocks(ctx context.Context, now time.Time) ([]Lock, error)

	// AppendAudit appends events that record no state change (issuance,
	// decisions) and returns the index of the first. It returns only once
	// the events are durable. Concurrent calls are committed together, so
	// many callers share one transaction and one flush.
	AppendAudit(ctx context.Context, evs ...AuditEvent) (int64, error)
	// AuditSize is the number of events in the audit log.
	AuditSize(ctx context.Context) (int64, error)
	// ReadAudit returns up to limit events from index start on, in order.
	// Records carry their stored index, so a gap left by a deleted row shows.
	ReadAudit(ctx context.Context, start int64, limit int) ([]AuditRecord, error)
	// ReadAuditHashes returns the stored tree hashes at the given indexes
	// (tlog's stored-hash numbering), in the same order.
	ReadAuditHashes(ctx context.Context, indexes []int64) ([]AuditHash, error)

	// PutAuditCheckpoint records a signed checkpoint; recording the same
	// server and size again replaces the note.
	PutAuditCheckpoint(ctx context.Context, c AuditCheckpoint) error
	// ListAuditCheckpoints returns up to limit checkpoints (limit <= 0: all)
	// of size at least minSize, by size then server.
	ListAuditCheckpoints(ctx context.Context, minSize int64, limit int) ([]AuditCheckpoint, error)
	// PutAuditKey records a server's audit public key, with its event.
	PutAuditKey(ctx context.Context, k AuditKey, evs ...AuditEvent) error
	// ListAuditKeys returns every audit key ever recorded, oldest first: old
	// checkpoints stay verifiable after a key changes.
	ListAuditKeys(ctx context.Context) ([]AuditKey, error)
	// SetAuditSealer makes every later transaction that appends audit
	// events also store the checkpoint s signs over the log it leaves
	// behind, so no committed event is ever without a signed checkpoint
	// covering it. Set it before the first write; nil turns sealing off.
	SetAuditSealer(s AuditSealer)

	// CreateJoinToken stores a new join token with its event.
	CreateJoinToken(ctx context.Context, t JoinToken, evs ...AuditEvent) error
	// RedeemJoinToken burns the token id if secretSHA256 is its secret's
	// digest, it is unused and not expired at now, and stores a as the agent
	// that redeemed it, all in one transaction with evs. An unknown id and a
	// wrong secret both fail with ErrNotFound, so a guess learns nothing; a
	// used or expired token fails with ErrTokenUsed or ErrTokenExpired.
	// Nothing is written on failure.
	RedeemJoinToken(ctx context.Context, id string, secretSHA256 []byte, now time.Time, a Agent, evs ...AuditEvent) (Agent, error)
	// CheckJoinToken fails as RedeemJoinToken would for this token at now,
	// writing nothing. Servers call it before signing, so a replayed token
	// costs no signature; RedeemJoinToken still decides races.
	CheckJoinToken(ctx context.Context, id string, secretSHA256 []byte, now time.Time) error
	// JoinAgent records an agent that joined by attestation (not by join
	// token), with evs, in one transaction: a new agent is created; one
	// that joined before under the same SPIFFE ID starts a new generation
	// with a's certificate. When replay is set, its token is recorded as
	// used first, and a token already used fails with ErrTokenUsed and
	// writes nothing.
	JoinAgent(ctx context.Context, a Agent, replay *JoinReplay, evs ...AuditEvent) (Agent, error)
	// UseToken records that the token jti of issuer was used, until
	// expires, with evs; a token already used fails with ErrTokenUsed and
	// writes nothing. Sign-ins use it; joins record theirs with JoinAgent.
	UseToken(ctx context.Context, issuer, jti string, expires time.Time, evs ...AuditEvent) error
	// CheckToken fails with ErrTokenUsed, writing nothing, when the token
	// jti of issuer was recorded by UseToken or JoinAgent and is remembered
	// at now. Servers call it before signing; UseToken and JoinAgent still
	// decide races.
	CheckToken(ctx context.Context, issuer, jti string, now time.Time) error
	// UseSubjectToken records that the subject token jti of issuer was
	// exchanged, until expires, with evs; a token already exchanged fails
	// with ErrTokenUsed and writes nothing. It is kept apart from UseToken
	// so that signing in with an ID token does not spend it for an
	// exchange, nor the other way round.
	UseSubjectToken(ctx context.Context, issuer, jti string, expires time.Time, evs ...AuditEvent) error
	// CheckSubjectToken fails with ErrTokenUsed, writing nothing, when the
	// subject token jti of issuer was recorded by UseSubjectToken and is
	// remembered at now. Token endpoints call it before signing;
	// UseSubjectToken still decides races.
	CheckSubjectToken(ctx context.Context, issuer, jti string, now time.Time) error
	// GetAgent returns the agent with this SPIFFE ID, or ErrNotFound.
	GetAgent(ctx context.Context, spiffeID string) (Agent, error)
	// UpdateAgent replaces the certificate state of agent next.ID if its
	// serial and pending serial are still prev's; otherwise it fails with
	// ErrConflict (another server changed it first).
	UpdateAgent(ctx context.Context, prev, next Agent, evs ...AuditEvent) error
	// ListAgents returns every agent, by SPIFFE ID.
	ListAgents(ctx context.Context) ([]Agent, error)
	// GetEntries returns the stored entries among ids, in id order; ids not
	// stored are left out. At most 10,000 ids per call.
	GetEntries(ctx context.Context, ids []string) ([]Entry, error)

	// PutTask creates the task (prevRevision 0: fails with
	// ErrAlreadyExists if the ID is taken) or replaces it if it is still at
	// prevRevision (ErrConflict otherwise, ErrNotFound if it is gone),
	// under a new revision, with evs.
	PutTask(ctx context.Context, t TaskRecord, prevRevision int64, evs ...AuditEvent) (TaskRecord, error)
	GetTask(ctx context.Context, id string) (TaskRecord, error)
	// ListTasks returns the tasks in any of states (all when none), by ID.
	ListTasks(ctx context.Context, states ...string) ([]TaskRecord, error)
	// ListTasksEndingSince returns the tasks in any of states (all when
	// none) whose EndsAt is at or after since, by ID: those still to end
	// and those that ended since (to the second: times are stored in whole
	// seconds). It reads only those, however many tasks ended before since.
	ListTasksEndingSince(ctx context.Context, since time.Time, states ...string) ([]TaskRecord, error)
	// ListTaskRevisionsEndingSince lists what ListTasksEndingSince does
	// without the documents (Doc nil), for a reader that keeps the
	// documents it read and fetches only those whose Revision moved.
	ListTaskRevisionsEndingSince(ctx context.Context, since time.Time, states ...string) ([]TaskRecord, error)
	// PutStandingGrant creates or replaces a standing grant under a new
	// revision; DeleteStandingGrant removes one (ErrNotFound if absent).
	PutStandingGrant(ctx context.Context, g StandingGrantRecord, evs ...AuditEvent) (StandingGrantRecord, error)
	DeleteStandingGrant(ctx context.Context, id string, evs ...AuditEvent) error
	ListStandingGrants(ctx context.Context) ([]StandingGrantRecord, error)

	// PutRequest creates the request (prevRevision 0: ErrAlreadyExists if
	// the ID is taken) or replaces it if it is still at prevRevision
	// (ErrConflict otherwise, ErrNotFound if it is gone), under a new
	// revision, with evs. A non-nil review is added to the request's
	// reviews in the same transaction, numbered after the last, so a review
	// and the decision it leads to are committed together or not at all.
	PutRequest(ctx context.Context, r RequestRecord, prevRevision int64, review *ReviewRecord, evs ...AuditEvent) (RequestRecord, error)
	GetRequest(ctx context.Context, id string) (RequestRecord, error)
	// ListRequests returns the requests in any of states (all when none), by ID.
	ListRequests(ctx context.Context, states ...string) ([]RequestRecord, error)
	// ListReviews returns a request's reviews in the order made.
	ListReviews(ctx context.Context, requestID string) ([]ReviewRecord, error)
	// PutReviewRules replaces the review rules if they are still at
	// prevRevision (0: none applied yet; ErrConflict otherwise), under a
	// new revision, with evs. GetReviewRules returns ErrNotFound before
	// any rules were applied.
	PutReviewRules(ctx context.Context, text string, prevRevision int64, evs ...AuditEvent) (ReviewRules, error)
	GetReviewRules(ctx context.Context) (ReviewRules, error)

	// PutDelegationKey records a server's delegation token key (by kid,
	// once; a different key under a recorded kid is ErrAlreadyExists).
	PutDelegationKey(ctx context.Context, k DelegationKey, evs ...AuditEvent) error
	ListDelegationKeys(ctx context.Context) ([]DelegationKey, error)

	// JoinWatch records a watch session of a dual-controlled task under a
	// new revision, so every server sharing the store notices it.
	JoinWatch(ctx context.Context, w Watch, evs ...AuditEvent) error
	// HeartbeatWatch moves a session's expiry without taking a revision:
	// heartbeats are frequent and change no decision. An unknown (swept)
	// session fails with ErrNotFound.
	HeartbeatWatch(ctx context.Context, id string, expiresAt time.Time) error
	// LeaveWatch removes a session under a new revision; ErrNotFound when
	// it is already gone (another server swept it).
	LeaveWatch(ctx context.Context, id string, evs ...AuditEvent) error
	// ListWatches returns every recorded session, expired ones included:
	// the caller judges expiry by its own clock.
	ListWatches(ctx context.Context) ([]Watch, error)

	// Now is the database's clock, the reference servers sharing the store
	// measure their own clocks against.
	Now(ctx context.Context) (time.Time, error)

	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error
	Close() error
}

// NewID returns a random (version 4) UUID, the form of the IDs the store
// assigns. Callers that must name a record in its audit event before it is
// stored assign the ID themselves with it.
func NewID() string {
	var b [16]byte
	// crypto/rand.Read never fails: it crashes the program instead.
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
