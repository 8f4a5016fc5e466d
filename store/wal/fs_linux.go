//go:build linux

package wal

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data and the metadata needed to read it back (not its
// timestamps).
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// fallocate reserves [off, off+n) of f, extending its size, without writing.
// It returns errors.ErrUnsupported where the file system cannot.
func fallocate(f *os.File, off, n int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, off, n)
		switch {
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
			return errors.ErrUnsupported
		}
		return err
	}
}

// lockFile takes an exclusive advisory lock on f, failing at once if another
// process holds it.
func lockFile(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// dataAfter returns the first region [start, end) of f at or after pos that
// may hold data, skipping holes and unwritten preallocated extents (which read
// as zeros); ok is false when there is none before size.
func dataAfter(f *os.File, pos, size int64) (start, end int64, ok bool, err error) {
	start, err = unix.Seek(int(f.Fd()), pos, unix.SEEK_DATA)
	switch {
	case err == unix.ENXIO:
		return 0, 0, false, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return pos, size, pos < size, nil // not supported: assume data
	case err != nil:
		return 0, 0, false, err
	}
	end, err = unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, false, err
	}
	return max(start, pos), min(end, size), start < size, nil
}
