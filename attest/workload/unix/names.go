package unix

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"sync"
	"time"
)

// nameCacheSize bounds the name cache; hosts with user namespaces can show
// the agent many distinct ids.
const nameCacheSize = 1024

// nameTTL is how long a resolved name is trusted. Lookups may read
// /etc/passwd or ask a directory service, too slow for every call, but a
// renamed or deleted account must stop matching rules without a restart.
const nameTTL = time.Minute

type idKind uint8

const (
	kindUser idKind = iota
	kindGroup
)

func (k idKind) String() string {
	if k == kindUser {
		return "uid"
	}
	return "gid"
}

type nameKey struct {
	kind idKind
	id   uint32
}

type nameEntry struct {
	name  string
	found bool
	at    time.Time
}

// nameCache resolves uids and gids to names, remembering the answers,
// including "no such name", for nameTTL.
type nameCache struct {
	mu      sync.Mutex
	entries map[nameKey]nameEntry
	lookup  func(nameKey) (name string, found bool, err error)
	now     func() time.Time
}

func newNameCache() *nameCache {
	return &nameCache{
		entries: make(map[nameKey]nameEntry),
		lookup:  lookupName,
		now:     time.Now,
	}
}

// name returns the name of k's id, or found false if it has none. A failed
// lookup is an error, not "no name": omitting a name the id does have would
// make the workload's identity depend on a transient failure.
func (c *nameCache) name(k nameKey) (name string, found bool, err error) {
	now := c.now()
	if e, ok := c.cached(k, now); ok {
		return e.name, e.found, nil
	}
	name, found, err = c.lookup(k)
	if err != nil {
		return "", false, fmt.Errorf("looking up the name of %s %d: %w", k.kind, k.id, err)
	}
	c.store(k, nameEntry{name: name, found: found, at: now})
	return name, found, nil
}

func (c *nameCache) cached(k nameKey, now time.Time) (nameEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || now.Sub(e.at) >= nameTTL || now.Before(e.at) {
		return nameEntry{}, false
	}
	return e, true
}

// store adds an entry, making room first if the cache is full.
func (c *nameCache) store(k nameKey, e nameEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= nameCacheSize {
		c.evict(e.at)
	}
	c.entries[k] = e
}

// evict drops every expired entry or, if none has expired, an arbitrary
// one: the cost of a wrong choice is one extra lookup.
func (c *nameCache) evict(now time.Time) {
	for k, e := range c.entries {
		if now.Sub(e.at) >= nameTTL {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < nameCacheSize {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}

// lookupName asks the system's user database (os/user) for k's name.
func lookupName(k nameKey) (string, bool, error) {
	id := strconv.FormatUint(uint64(k.id), 10)
	if k.kind == kindUser {
		u, err := user.LookupId(id)
		if errors.As(err, new(user.UnknownUserIdError)) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		return u.Username, true, nil
	}
	g, err := user.LookupGroupId(id)
	if errors.As(err, new(user.UnknownGroupIdError)) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return g.Name, true, nil
}
