//go:build !linux

package wal

import (
	"errors"
	"os"
)

func fdatasync(f *os.File) error { return f.Sync() }

func fallocate(f *os.File, off, n int64) error { return errors.ErrUnsupported }

// lockFile does nothing here: the log is only locked against a second process
// on Linux.
func lockFile(f *os.File) error { return nil }

func dataAfter(f *os.File, pos, size int64) (start, end int64, ok bool, err error) {
	return pos, size, pos < size, nil
}
