package server

import (
	"context"
	"os"
	"strings"
	"testing"
)

// A server whose database file is damaged must refuse to start and say
// why; it used to panic closing the store that never opened.
func TestDamagedStoreRefusesToStart(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown(ctx)
	fi, err := os.Stat(cfg.Store.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cfg.Store.DSN, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	_, err = New(ctx, cfg, Options{Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("New on a truncated database: %v; want an error saying the file is damaged", err)
	}
}
