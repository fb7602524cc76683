package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// digestCacheSize bounds the digest cache. A host runs far fewer distinct
// executables than this, so eviction is rare and need not be clever.
const digestCacheSize = 1024

// hashChunk is how much is hashed between checks for cancellation.
const hashChunk = 1 << 20

// fileKey identifies one version of a file's contents without reading
// them. Writing a file changes its mtime and size; ctime is included too
// because, unlike mtime, no one can set it back.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

// keyOf returns the fileKey of an open file.
func keyOf(f *os.File) (fileKey, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileKey{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, fmt.Errorf("stat of %s returned %T, not *syscall.Stat_t", f.Name(), fi.Sys())
	}
	return fileKey{
		dev: st.Dev, ino: st.Ino, size: st.Size,
		mtime: st.Mtim, ctime: st.Ctim,
	}, nil
}

// digestCache remembers executables' SHA-256 digests so that a workload
// calling again and again costs one fstat, not a read of its binary.
type digestCache struct {
	mu      sync.Mutex
	digests map[fileKey]string
	// hashes counts files actually hashed, for tests of the cache.
	hashes atomic.Int64
}

func newDigestCache() *digestCache {
	return &digestCache{digests: make(map[fileKey]string)}
}

func (c *digestCache) get(k fileKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.digests[k]
	return d, ok
}

// put stores a digest, first evicting an arbitrary entry if the cache is
// full: the cost of a wrong choice is one extra hash.
func (c *digestCache) put(k fileKey, digest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.digests[k]; !ok && len(c.digests) >= digestCacheSize {
		for old := range c.digests {
			delete(c.digests, old)
			break
		}
	}
	c.digests[k] = digest
}

// digest returns the hex SHA-256 of the open file f, whose key is k, from
// the cache or by hashing it. It refuses a file that changed while it was
// hashed, whose digest would describe neither version.
func (c *digestCache) digest(ctx context.Context, f *os.File, k fileKey) (string, error) {
	if d, ok := c.get(k); ok {
		return d, nil
	}
	c.hashes.Add(1)
	d, err := hashFile(ctx, io.NewSectionReader(f, 0, k.size))
	if err != nil {
		return "", err
	}
	after, err := keyOf(f)
	if err != nil {
		return "", err
	}
	if after != k {
		return "", errors.New("the executable changed while it was being hashed; try again")
	}
	c.put(k, d)
	return d, nil
}

// hashFile returns the hex SHA-256 of r, checking ctx between chunks so
// that a caller who gave up does not wait for a large file to be read.
func hashFile(ctx context.Context, r io.Reader) (string, error) {
	h := sha256.New()
	buf := make([]byte, hashChunk)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
	}
}
