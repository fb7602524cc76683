package migrate

import (
	"errors"
	"testing"
	"testing/fstest"
)

func files(names ...string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for _, n := range names {
		fsys[n] = &fstest.MapFile{Data: []byte("-- " + n)}
	}
	return fsys
}

func TestLoadOrders(t *testing.T) {
	ms, err := Load(files("0010_ten.sql", "0002_two.sql", "0001_one.sql", "0003_three.sql", "0004_x.sql", "0005_x.sql", "0006_x.sql", "0007_x.sql", "0008_x.sql", "0009_x.sql", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Errorf("ms[%d] is version %d", i, m.Version)
		}
	}
	if ms[9].Name != "0010_ten.sql" || ms[9].SQL != "-- 0010_ten.sql" {
		t.Errorf("last migration = %+v", ms[9])
	}
}

func TestLoadRejects(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"gap":          files("0001_a.sql", "0003_c.sql"),
		"repeat":       files("0001_a.sql", "0001_b.sql"),
		"not from one": files("0002_b.sql"),
		"zero":         files("0000_a.sql", "0001_b.sql"),
		"no number":    files("init.sql"),
		"no name":      files("0001.sql"),
	} {
		if _, err := Load(fsys); err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
}

func TestPlan(t *testing.T) {
	ms, err := Load(files("0001_a.sql", "0002_b.sql", "0003_c.sql"))
	if err != nil {
		t.Fatal(err)
	}
	for current, want := range []int{3, 2, 1, 0} {
		got, err := Plan(ms, current)
		if err != nil || len(got) != want {
			t.Errorf("Plan(%d) = %d migrations, %v; want %d", current, len(got), err, want)
		}
		if len(got) > 0 && got[0].Version != current+1 {
			t.Errorf("Plan(%d) starts at version %d", current, got[0].Version)
		}
	}
	if _, err := Plan(ms, 4); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("Plan(4) error = %v, want ErrSchemaTooNew", err)
	}
}
