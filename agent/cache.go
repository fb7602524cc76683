package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/agent/workloadapi"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// rule is one identity rule of this agent, as synced from the server, with
// the SVID the agent holds for it.
type rule struct {
	id        string
	spiffeID  spiffeid.ID
	selectors []identity.Selector
	hint      string
	revision  int64
	expiresAt time.Time // zero: never

	svid *heldSVID
	// retryAt holds off minting after the server refused this rule.
	retryAt time.Time
	// key is the selector the rule is indexed under (see ruleIndex).
	key identity.Selector
}

// ruleIndex finds the rules a workload may hold without looking at the
// others: each rule with selectors is filed under one of them, its key, so
// only rules whose key the workload holds are candidates, and each is
// visited once. The key is the rule's selector shared by the fewest rules
// filed so far, so a selector common to many rules (a shared uid) is not a
// key while the rule has a rarer one. A fetch therefore costs the
// candidates filed under the workload's selectors, not the agent's rules.
type ruleIndex map[identity.Selector]map[string]*rule

func (ix ruleIndex) add(r *rule) {
	if len(r.selectors) == 0 {
		return // matches no workload
	}
	best := r.selectors[0]
	for _, sel := range r.selectors[1:] {
		if len(ix[sel]) < len(ix[best]) {
			best = sel
		}
	}
	r.key = best
	bucket := ix[best]
	if bucket == nil {
		bucket = map[string]*rule{}
		ix[best] = bucket
	}
	bucket[r.id] = r
}

func (ix ruleIndex) remove(r *rule) {
	if len(r.selectors) == 0 {
		return
	}
	bucket := ix[r.key]
	delete(bucket, r.id)
	if len(bucket) == 0 {
		delete(ix, r.key)
	}
}

// heldSVID is an X.509-SVID the agent minted for a rule; its key never left
// this process. Only encodings and the few fields the agent decides on are
// kept: an agent holding ten thousand SVIDs keeps about a kilobyte each,
// not parsed certificates and keys.
type heldSVID struct {
	chainDER []byte // leaf first, concatenated DER as the Workload API sends it
	keyDER   []byte // PKCS#8
	notAfter time.Time
	caID     string    // hex AuthorityKeyId of the leaf: which CA signed it
	revision int64     // the rule's revision it was minted for
	renewAt  time.Time // half life, with jitter
}

// cache is everything the agent serves from memory: its rules and their
// SVIDs, the locks and the bundle. It is the Workload API's Source, so a
// server outage changes nothing for workloads until SVIDs expire.
type cache struct {
	now func() time.Time
	// self is the agent's own ID: a lock on it (a clone was detected)
	// withdraws every identity the agent holds.
	self spiffeid.ID

	mu       sync.RWMutex
	td       spiffeid.TrustDomain
	rules    map[string]*rule
	index    ruleIndex
	revision int64
	locks    []*writv1.Lock
	x509     []*x509.Certificate
	jwtKeys  map[string]crypto.PublicKey
	// tainted holds the subject key IDs (hex) of tainted authorities:
	// SVIDs they signed are renewed at once.
	tainted map[string]bool
	synced  bool // a full snapshot has arrived
	// disowned says why the server refused this agent itself (locked as
	// a clone, removed); while set the agent serves and mints nothing. A
	// full snapshot, which the server sends only to an agent it accepts,
	// clears it.
	disowned string
	changed  chan struct{}

	// mintWanted is signalled when rules need SVIDs.
	mintWanted chan struct{}
	// jwt caches JWT-SVIDs by rule and audience until half their life.
	jwtMu sync.Mutex
	jwt   map[string]cachedJWT
	// mintJWT asks the server for a JWT-SVID for a rule.
	mintJWT func(ctx context.Context, ruleID string, audience []string) (string, time.Time, error)
}

type cachedJWT struct {
	token   string
	issued  time.Time
	expires time.Time
}

func newCache(self spiffeid.ID, now func() time.Time) *cache {
	return &cache{
		now:        now,
		self:       self,
		td:         self.TrustDomain(),
		rules:      map[string]*rule{},
		index:      ruleIndex{},
		jwtKeys:    map[string]crypto.PublicKey{},
		changed:    make(chan struct{}),
		mintWanted: make(chan struct{}, 1),
		jwt:        map[string]cachedJWT{},
	}
}

// notify wakes every waiter; called with mu held for writing.
func (c *cache) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *cache) wantMint() {
	select {
	case c.mintWanted <- struct{}{}:
	default:
	}
}

// setBundle replaces the X.509 authorities (and JWT keys when given).
func (c *cache) setBundle(certs []*x509.Certificate, jwtKeys map[string]crypto.PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.x509 = certs
	if jwtKeys != nil {
		c.jwtKeys = jwtKeys
	}
	c.notify()
}

func (c *cache) bundle() []*x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.x509
}

// apply takes one sync update.
func (c *cache) apply(u *writv1.SyncUpdate) error {
	certs, keys, err := bundleFromProto(u.GetBundle())
	if err != nil {
		return err
	}
	incoming := make([]*rule, 0, len(u.GetEntries()))
	for _, e := range u.GetEntries() {
		r, err := ruleFromProto(e)
		if err != nil {
			return err
		}
		incoming = append(incoming, r)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if u.GetFull() {
		// Keep SVIDs of rules that survive the snapshot unchanged.
		old := c.rules
		c.rules = make(map[string]*rule, len(incoming))
		c.index = ruleIndex{}
		for _, r := range incoming {
			if prev, ok := old[r.id]; ok && prev.svid != nil && prev.svid.revision == r.revision {
				r.svid = prev.svid
			}
			c.rules[r.id] = r
			c.index.add(r)
		}
		c.synced = true
		c.disowned = ""
	} else {
		for _, r := range incoming {
			if prev, ok := c.rules[r.id]; ok {
				if prev.svid != nil && prev.svid.revision == r.revision {
					r.svid = prev.svid
				}
				c.index.remove(prev)
			}
			c.rules[r.id] = r
			c.index.add(r)
		}
		for _, id := range u.GetDeletedIds() {
			if prev, ok := c.rules[id]; ok {
				c.index.remove(prev)
				delete(c.rules, id)
			}
		}
	}
	if u.GetLocksChanged() {
		c.locks = u.GetLocks()
		if c.locked(c.self, c.now()) {
			c.dropSVIDs()
		}
	}
	if certs != nil {
		c.x509, c.jwtKeys = certs, keys
		c.tainted = map[string]bool{}
		for _, id := range u.GetBundle().GetTaintedX509Authorities() {
			c.tainted[id] = true
		}
	}
	c.revision = max(c.revision, u.GetRevision())
	c.notify()
	c.wantMint()
	return nil
}

func ruleFromProto(e *writv1.Entry) (*rule, error) {
	id, err := spiffeid.FromString(e.GetSpiffeId())
	if err != nil {
		return nil, fmt.Errorf("rule %s: %w", e.GetId(), err)
	}
	r := &rule{id: e.GetId(), spiffeID: id, hint: e.GetHint(), revision: e.GetRevision()}
	for _, s := range e.GetSelectors() {
		r.selectors = append(r.selectors, identity.Selector{Type: s.GetType(), Value: s.GetValue()})
	}
	if e.GetExpiresAt() != 0 {
		r.expiresAt = time.Unix(e.GetExpiresAt(), 0)
	}
	return r, nil
}

func bundleFromProto(b *writv1.Bundle) ([]*x509.Certificate, map[string]crypto.PublicKey, error) {
	if b == nil {
		return nil, nil, nil
	}
	var certs []*x509.Certificate
	for _, der := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("bundle: %w", err)
		}
		certs = append(certs, c)
	}
	keys := map[string]crypto.PublicKey{}
	for _, k := range b.GetJwtAuthorities() {
		pub, err := x509.ParsePKIXPublicKey(k.GetPublicKey())
		if err != nil {
			return nil, nil, fmt.Errorf("bundle: JWT key %s: %w", k.GetKeyId(), err)
		}
		keys[k.GetKeyId()] = pub
	}
	return certs, keys, nil
}

// locked reports whether a lock in force covers id; called with mu held.
func (c *cache) locked(id spiffeid.ID, now time.Time) bool {
	for _, l := range c.locks {
		if l.GetExpiresAt() != 0 && !now.Before(time.Unix(l.GetExpiresAt(), 0)) {
			continue
		}
		if identity.LockCoversID(identity.LockKind(l.GetTarget().GetKind()), l.GetTarget().GetValue(), id) {
			return true
		}
	}
	return false
}

// withdrawn reports whether the agent may serve nothing at all: the
// server refused it, or a lock covers the agent itself. Called with mu held.
func (c *cache) withdrawn(now time.Time) bool {
	return c.disowned != "" || c.locked(c.self, now)
}

// dropSVIDs forgets every workload SVID and key the agent holds, and the
// JWT-SVIDs it reuses. Called with mu held for writing.
func (c *cache) dropSVIDs() {
	for _, r := range c.rules {
		r.svid = nil
	}
	c.jwtMu.Lock()
	clear(c.jwt)
	c.jwtMu.Unlock()
}

// disownedByServer withdraws everything the agent serves when err is the
// server refusing the agent itself (PermissionDenied): a copy of an agent
// locked as a clone must not go on handing out the identities it cached.
// Other errors, an outage among them, change nothing. It reports whether
// the agent was disowned.
func (c *cache) disownedByServer(err error) bool {
	if status.Code(err) != codes.PermissionDenied {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.disowned = status.Convert(err).Message()
	c.dropSVIDs()
	c.notify()
	return true
}

// matching returns the rules a workload with sels holds now, by rule ID:
// all of a rule's selectors among the workload's, not expired, not locked.
// Only the rules filed under the workload's selectors are looked at (see
// ruleIndex). Called with mu held.
func (c *cache) matching(sels []identity.Selector) []*rule {
	now := c.now()
	if c.withdrawn(now) {
		return nil
	}
	set := identity.NewSelectorSet(sels)
	var out []*rule
	for sel := range set {
		for _, r := range c.index[sel] {
			if !set.ContainsAll(r.selectors) {
				continue
			}
			if !r.expiresAt.IsZero() && !now.Before(r.expiresAt) {
				continue
			}
			if c.locked(r.spiffeID, now) {
				continue
			}
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *rule) int { return strings.Compare(a.id, b.id) })
	return out
}

// X509SVIDs implements workloadapi.Source.
func (c *cache) X509SVIDs(sels []identity.Selector) ([]workloadapi.X509SVID, <-chan struct{}) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	now := c.now()
	var out []workloadapi.X509SVID
	for _, r := range c.matching(sels) {
		if r.svid == nil || !now.Before(r.svid.notAfter) {
			continue
		}
		out = append(out, workloadapi.X509SVID{SPIFFEID: r.spiffeID, ChainDER: r.svid.chainDER, KeyDER: r.svid.keyDER, Hint: r.hint})
	}
	return out, c.changed
}

// Bundles implements workloadapi.Source.
func (c *cache) Bundles() (*x509bundle.Set, *jwtbundle.Set, <-chan struct{}) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.x509) == 0 {
		return nil, nil, c.changed
	}
	jb := jwtbundle.New(c.td)
	for kid, k := range c.jwtKeys {
		_ = jb.AddJWTAuthority(kid, k)
	}
	return x509bundle.NewSet(x509bundle.FromX509Authorities(c.td, c.x509)), jwtbundle.NewSet(jb), c.changed
}

// maxCachedJWTs bounds the JWT-SVID cache; expired tokens go first.
const maxCachedJWTs = 10_000

// JWTSVIDs implements workloadapi.Source. A token is reused until half its
// life, so a workload asking often costs the server nothing.
func (c *cache) JWTSVIDs(ctx context.Context, sels []identity.Selector, want spiffeid.ID, audience []string) ([]workloadapi.JWTSVID, error) {
	c.mu.RLock()
	rules := c.matching(sels)
	c.mu.RUnlock()
	if !want.IsZero() {
		rules = slices.DeleteFunc(rules, func(r *rule) bool { return r.spiffeID != want })
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("%w: no rule of this agent matches the caller", workloadapi.ErrNoIdentity)
	}
	aud := slices.Clone(audience)
	slices.Sort(aud)
	var out []workloadapi.JWTSVID
	for _, r := range rules {
		tok, err := c.jwtFor(ctx, r.id, aud)
		if err != nil {
			return nil, err
		}
		out = append(out, workloadapi.JWTSVID{SPIFFEID: r.spiffeID, Token: tok, Hint: r.hint})
	}
	return out, nil
}

func (c *cache) jwtFor(ctx context.Context, ruleID string, audience []string) (string, error) {
	key := ruleID + "\x00" + strings.Join(audience, "\x00")
	now := c.now()
	c.jwtMu.Lock()
	if t, ok := c.jwt[key]; ok && now.Before(t.issued.Add(t.expires.Sub(t.issued)/2)) {
		c.jwtMu.Unlock()
		return t.token, nil
	}
	c.jwtMu.Unlock()
	tok, exp, err := c.mintJWT(ctx, ruleID, audience)
	if err != nil {
		return "", err
	}
	c.jwtMu.Lock()
	defer c.jwtMu.Unlock()
	if len(c.jwt) >= maxCachedJWTs {
		for k, t := range c.jwt {
			if !now.Before(t.expires) || len(c.jwt) >= maxCachedJWTs {
				delete(c.jwt, k)
			}
		}
	}
	c.jwt[key] = cachedJWT{token: tok, issued: now, expires: exp}
	return tok, nil
}

// due returns the rules that need an SVID minted now: none held, minted for
// an older revision of the rule, or past the renewal point.
func (c *cache) due(now time.Time) []*rule {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.withdrawn(now) {
		return nil
	}
	var out []*rule
	for _, r := range c.rules {
		if c.locked(r.spiffeID, now) {
			continue
		}
		if !now.Before(c.dueAt(r)) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *rule) int { return strings.Compare(a.id, b.id) })
	return out
}

// dueAt is when rule r next needs an SVID minted, never before its retryAt:
// at once if it holds none, holds one minted for an older revision of the
// rule, or holds one signed by a tainted authority; otherwise at the held
// SVID's renewal point. Called with mu held.
func (c *cache) dueAt(r *rule) time.Time {
	at := r.retryAt
	if s := r.svid; s != nil && s.revision == r.revision && !c.tainted[s.caID] && s.renewAt.After(at) {
		at = s.renewAt
	}
	return at
}

// setSVID stores a minted SVID if the rule is still there at the revision
// it was minted for.
func (c *cache) setSVIDs(minted map[string]*heldSVID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for id, s := range minted {
		if r, ok := c.rules[id]; ok && r.revision == s.revision {
			r.svid = s
			if c.tainted[s.caID] {
				// Signed by an authority tainted meanwhile: try again
				// shortly, not in a tight loop.
				r.retryAt = now.Add(refusedRetry)
			}
		}
	}
	c.notify()
}

// refused holds off minting for rules the server refused until retry; a
// change to the rule (a new sync update) clears it.
func (c *cache) refused(ids []string, retry time.Time) {
	if len(ids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if r, ok := c.rules[id]; ok {
			r.retryAt = retry
		}
	}
}

// nextRenewal is when the earliest rule is due (see dueAt), for the minting
// loop to sleep until.
func (c *cache) nextRenewal() time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var next time.Time
	for _, r := range c.rules {
		at := c.dueAt(r)
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// waitSynced blocks until a full snapshot has arrived and every rule has
// an SVID, or ctx ends. The one-shot mode uses it.
func (c *cache) waitReady(ctx context.Context) error {
	for {
		c.mu.RLock()
		ready := c.synced
		for _, r := range c.rules {
			if r.svid == nil && !c.locked(r.spiffeID, c.now()) {
				ready = false
			}
		}
		ch := c.changed
		c.mu.RUnlock()
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
