// Package migrate orders and plans the versioned schema migrations of writ's
// SQL stores. Each engine embeds its own files, named NNNN_description.sql,
// and applies the planned ones in a transaction when it opens a database.
package migrate

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// ErrSchemaTooNew means the database was migrated by a newer writ than this
// one; running an older binary against it could corrupt data it does not know.
var ErrSchemaTooNew = errors.New("database schema is newer than this writ")

// Migration is one schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Load reads the *.sql files at the root of fsys. Versions must run 1, 2, 3 …
// without gaps, so a misnamed or missing file fails at build-test time rather
// than on a user's database.
func Load(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	ms := make([]Migration, 0, len(names))
	for _, name := range names {
		m, err := load(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d: versions must run from 1 without gaps or repeats", m.Name, i+1)
		}
	}
	return ms, nil
}

func load(fsys fs.FS, name string) (Migration, error) {
	prefix, _, ok := strings.Cut(path.Base(name), "_")
	version, err := strconv.Atoi(prefix)
	if !ok || err != nil || version < 1 {
		return Migration{}, fmt.Errorf("migration %s: name must be NNNN_description.sql with NNNN >= 1", name)
	}
	sql, err := fs.ReadFile(fsys, name)
	if err != nil {
		return Migration{}, err
	}
	return Migration{Version: version, Name: name, SQL: string(sql)}, nil
}

// Plan returns the migrations to apply to a database at version current
// (0 for a new one), in order.
func Plan(ms []Migration, current int) ([]Migration, error) {
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].Version
	}
	if current > latest {
		return nil, fmt.Errorf("schema version %d, this writ knows up to %d: %w: upgrade writ, or restore a backup taken before the upgrade", current, latest, ErrSchemaTooNew)
	}
	return ms[current:], nil
}
