package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/internal/atomicfile"
)

// runBackup runs `writ backup --out FILE`.
func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ backup", "Copy the running server's store to FILE: a consistent SQLite database a server can be started on "+
		"(stop the server, put FILE in place of DATA_DIR/writ.db and remove writ.db-wal and writ.db-shm). "+
		"The copy holds the trust domain's rules and audit log: keep it as private as the data dir.",
		"writ backup --out FILE [--socket PATH]")
	out := c.fs.String("out", "", "write the copy to this new `FILE` (mode 0600); an existing file is never replaced")
	c.required("out")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("--out %s exists: name a new file, so that no earlier backup is overwritten", *out)
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	size, err := receiveBackup(ctx, writv1.NewStoreServiceClient(cl.conn), *out)
	if err != nil {
		return cl.explain(err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *out, size)
	return nil
}

// receiveBackup streams the copy into a temporary file beside out, checks
// it against the size and digest the server announced, and only then gives
// it its name, so out is either a whole copy or absent.
func receiveBackup(ctx context.Context, api writv1.StoreServiceClient, out string) (size int64, err error) {
	stream, err := api.Backup(ctx, &writv1.BackupRequest{})
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.partial")
	if err != nil {
		return 0, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	h := sha256.New()
	var want *writv1.BackupChunk
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		if want == nil {
			want = chunk
		}
		if _, err := f.Write(chunk.GetData()); err != nil {
			return 0, err
		}
		h.Write(chunk.GetData())
		size += int64(len(chunk.GetData()))
	}
	switch {
	case want == nil:
		return 0, errors.New("the server sent no backup")
	case size != want.GetSize() || !bytes.Equal(h.Sum(nil), want.GetSha256()):
		return 0, fmt.Errorf("the backup arrived incomplete or altered (%d of %d bytes, digest mismatch): nothing was written; retry", size, want.GetSize())
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	// A link, unlike a rename, never replaces a file that appeared meanwhile.
	if err := os.Link(f.Name(), out); err != nil {
		return 0, err
	}
	return size, atomicfile.SyncDir(filepath.Dir(out))
}
