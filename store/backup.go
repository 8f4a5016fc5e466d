package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent snapshot of the store to w while it serves: it
// checkpoints what is logged, then streams bbolt's file as of one read
// transaction — a prefix of the log, up to the index it records. Restore by
// starting threadctl on a data directory holding the file as FileName
// (MarkRestored tells it to reconcile with Meta first). While the snapshot
// streams, checkpoints that need to grow the file wait; commits do not.
func (s *DB) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := s.Checkpoint(); err != nil {
		return 0, err
	}
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx, w})
		return err
	})
	return n, err
}

// ctxWriter stops a backup whose client went away.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// restoredKey marks a file restored from a backup, with when it was marked.
var restoredKey = []byte("restored")

// MarkRestored marks the bbolt file at path (not open elsewhere) as
// restored from a backup: the threads it holds may have changed at Meta
// since, and the service reconciles them when it starts (Restored).
func MarkRestored(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(allBuckets[bMeta])
		if m == nil {
			return errors.New("not a threadctl store: no meta bucket")
		}
		return m.Put(restoredKey, binary.BigEndian.AppendUint64(nil, uint64(time.Now().Unix())))
	})
	return errors.Join(err, db.Close())
}

// Restored reports whether the store was restored from a backup and not yet
// reconciled with Meta.
func (s *DB) Restored(ctx context.Context) (bool, error) {
	var marked bool
	err := s.read(func(v *view) error {
		marked = v.get(bMeta, restoredKey) != nil
		return nil
	})
	return marked, err
}

// Reconciled clears the mark Restored reports.
func (s *DB) Reconciled(ctx context.Context) error {
	return s.update(ctx, noCheck, func(w *rw) error {
		w.del(bMeta, restoredKey)
		return nil
	})
}

// Compact rewrites the data directory's bbolt file without its free pages
// (bbolt's compaction), after replaying and checkpointing the log. Run it
// while threadctl is stopped. It returns the file's size before and after.
func Compact(dir string, opts Options) (before, after int64, err error) {
	s, err := Open(dir, opts)
	if err != nil {
		return 0, 0, err
	}
	if err := s.Close(); err != nil { // Close checkpoints
		return 0, 0, err
	}
	path := filepath.Join(dir, FileName)
	tmp := path + ".compact"
	os.Remove(tmp)
	src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, 0, fmt.Errorf("opening %s: %w", path, err)
	}
	defer src.Close()
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return 0, 0, fmt.Errorf("creating %s: %w", tmp, err)
	}
	if err := bolt.Compact(dst, src, 64<<20); err != nil {
		dst.Close()
		os.Remove(tmp)
		return 0, 0, fmt.Errorf("compacting: %w", err)
	}
	if err := dst.Close(); err != nil {
		return 0, 0, err
	}
	bi, _ := os.Stat(path)
	ai, err := os.Stat(tmp)
	if err != nil {
		return 0, 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, 0, err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return bi.Size(), ai.Size(), nil
}

// CheckFile checks a bbolt file that no process has open — a backup — as
// Check does a running store's: bbolt's consistency, then the records.
func CheckFile(path string) ([]string, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer db.Close()
	var problems []string
	add := func(format string, args ...any) {
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("not a threadctl store: no %s bucket", b)
			}
		}
		for err := range tx.Check() {
			add("bbolt: %v", err)
		}
		checkRecords(&view{tx: tx}, add)
		return nil
	})
	return problems, err
}
