package unix

import (
	"errors"
	"os"
	"os/user"
	"strconv"
	"testing"
	"time"
)

// countingNames is a nameCache over fakeNames with a settable clock that
// counts its lookups.
type countingNames struct {
	*nameCache
	lookups int
	clock   time.Time
}

func newCountingNames() *countingNames {
	c := &countingNames{nameCache: newNameCache(), clock: time.Unix(1e9, 0)}
	c.now = func() time.Time { return c.clock }
	c.lookup = func(k nameKey) (string, bool, error) {
		c.lookups++
		return fakeNames(k)
	}
	return c
}

func TestNameCache(t *testing.T) {
	c := newCountingNames()
	for range 3 {
		if name, found, err := c.name(nameKey{kindUser, 1000}); err != nil || !found || name != "name1000" {
			t.Fatalf("name(uid 1000) = %q, %v, %v; want name1000", name, found, err)
		}
		if _, found, err := c.name(nameKey{kindGroup, 6000}); err != nil || found {
			t.Fatalf("name(gid 6000) = found %v, %v; want no name", found, err)
		}
	}
	if c.lookups != 2 {
		t.Errorf("%d lookups for two ids, want 2", c.lookups)
	}

	c.clock = c.clock.Add(nameTTL)
	c.name(nameKey{kindUser, 1000})
	if c.lookups != 3 {
		t.Errorf("%d lookups after the entry expired, want 3", c.lookups)
	}
}

func TestNameCacheLookupFailure(t *testing.T) {
	c := newCountingNames()
	cause := errors.New("directory service unreachable")
	c.lookup = func(nameKey) (string, bool, error) { return "", false, cause }
	_, _, err := c.name(nameKey{kindGroup, 42})
	if !errors.Is(err, cause) || err.Error() != "looking up the name of gid 42: directory service unreachable" {
		t.Fatalf("err = %v, want it to name the gid and wrap the cause", err)
	}
	if len(c.entries) != 0 {
		t.Errorf("a failed lookup was cached")
	}
}

func TestNameCacheIsBounded(t *testing.T) {
	c := newCountingNames()
	for i := range nameCacheSize + 10 {
		c.name(nameKey{kindUser, uint32(i)})
	}
	if n := len(c.entries); n != nameCacheSize {
		t.Errorf("cache holds %d names, want %d", n, nameCacheSize)
	}
	// Once they have expired, all old entries make way for a new one.
	c.clock = c.clock.Add(nameTTL)
	c.name(nameKey{kindGroup, 1})
	if n := len(c.entries); n != 1 {
		t.Errorf("cache holds %d names after the others expired, want 1", n)
	}
}

func TestLookupName(t *testing.T) {
	uid := os.Getuid()
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		name, found, err := lookupName(nameKey{kindUser, uint32(uid)})
		if err != nil || !found || name != u.Username {
			t.Errorf("lookupName(uid %d) = %q, %v, %v; want %q", uid, name, found, err, u.Username)
		}
	}
	// (uid_t)-1 means "no id" to the kernel and is never assigned.
	for _, kind := range []idKind{kindUser, kindGroup} {
		if name, found, err := lookupName(nameKey{kind, 4294967295}); err != nil || found {
			t.Errorf("lookupName(%s 4294967295) = %q, %v, %v; want no name", kind, name, found, err)
		}
	}
}
