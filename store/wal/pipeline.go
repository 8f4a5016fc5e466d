package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
)

// Prealloc says how a new segment's space is reserved.
type Prealloc int

const (
	// PreallocFallocate reserves the space with fallocate(2), falling back
	// to PreallocZeros where the file system cannot. The default.
	PreallocFallocate Prealloc = iota
	// PreallocZeros writes zeros over the whole segment before it is used.
	// Appends then skip ext4's conversion of unwritten extents at each
	// fdatasync (BenchmarkPrealloc: 8-16% faster than fallocate once the
	// segment is ready), but every segment is written twice, in a burst
	// that competes with the appends' syncs.
	PreallocZeros
	// PreallocNone reserves nothing: every append grows the file, so every
	// fdatasync also persists a size change (BenchmarkPrealloc: 19-37%
	// slower than fallocate). For measurements.
	PreallocNone
)

func (p Prealloc) String() string {
	switch p {
	case PreallocFallocate:
		return "fallocate"
	case PreallocZeros:
		return "zeros"
	case PreallocNone:
		return "none"
	}
	return "Prealloc(" + strconv.Itoa(int(p)) + ")"
}

// preallocate makes [from, to) of f exist as zeros, per mode.
func preallocate(f *os.File, from, to int64, mode Prealloc) error {
	if to <= from || mode == PreallocNone {
		return nil
	}
	if mode == PreallocFallocate {
		err := fallocate(f, from, to-from)
		if !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
	}
	zeros := make([]byte, 1<<20)
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// syncDir makes the creation, removal or renaming of files in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// pipeline prepares the next segment in the background (as etcd's file
// pipeline does), so that rotating does not stall the writer on allocating
// and syncing a new file: it keeps one file ready, with its header written,
// its space reserved and all of it synced, under a temporary name.
type pipeline struct {
	dir  string
	size int64
	mode Prealloc

	ready chan prepared
	stop  chan struct{}
	done  chan struct{}
	made  atomic.Uint64 // files prepared so far
}

type prepared struct {
	f    *os.File
	path string
	err  error
}

func startPipeline(dir string, size int64, mode Prealloc) *pipeline {
	p := &pipeline{dir: dir, size: size, mode: mode, ready: make(chan prepared), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *pipeline) run() {
	defer close(p.done)
	for seq := 0; ; seq++ {
		f, path, err := p.prepare(seq)
		if err == nil {
			p.made.Add(1)
		}
		select {
		case p.ready <- prepared{f, path, err}:
			if err != nil {
				return
			}
		case <-p.stop:
			if f != nil {
				f.Close()
				os.Remove(path)
			}
			return
		}
	}
}

func (p *pipeline) prepare(seq int) (*os.File, string, error) {
	path := filepath.Join(p.dir, strconv.Itoa(seq)+tmpSuffix)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, "", err
	}
	err = preallocate(f, 0, p.size, p.mode)
	if err == nil {
		_, err = f.WriteAt(segMagic[:], 0)
	}
	if err == nil {
		// fsync, not fdatasync: the reserved size must be durable too.
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, "", fmt.Errorf("wal: preparing a segment: %w", err)
	}
	return f, path, nil
}

// take returns the prepared file and its temporary path.
func (p *pipeline) take() (*os.File, string, error) {
	select {
	case r := <-p.ready:
		return r.f, r.path, r.err
	case <-p.done:
		return nil, "", errors.New("wal: the segment pipeline has stopped")
	}
}

// close stops the pipeline and removes the file it had ready.
func (p *pipeline) close() {
	close(p.stop)
	<-p.done
}
