package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultSegmentSize is the size past which a segment is rotated.
const DefaultSegmentSize = 64 << 20

// maxGroupBytes caps the bytes one group commit writes, as does the segment
// size (a single Append may exceed either, and is then written alone).
const maxGroupBytes = 4 << 20

// Options configure a Log. The zero value is the default.
type Options struct {
	// SegmentSize is the size of a segment: each is preallocated to it, and
	// a batch that would not fit in the current segment starts a new one
	// (default DefaultSegmentSize, at least 4 KiB).
	SegmentSize int64
	// FirstIndex is the index of the first record of a new log (default 1).
	// It is ignored when the directory already holds a log.
	FirstIndex uint64
	// Prealloc says how segments' space is reserved (default fallocate).
	Prealloc Prealloc
	// NoSync skips fdatasync: Append then returns once its records are
	// written to the page cache, and a machine crash can lose them. FOR
	// TESTS ONLY.
	NoSync bool
	// Logger, if set, is told at Warn level about each torn tail Open drops.
	Logger *slog.Logger

	// syncHook, if set (by tests), runs before each fdatasync; an error it
	// returns is taken as the sync's.
	syncHook func() error
}

// Errors returned by a Log.
var (
	// ErrClosed: the log is closed.
	ErrClosed = errors.New("wal: log closed")
	// ErrBroken: an earlier write or fdatasync failed. Whether the records
	// of the failed and later Appends reached the disk is unknown; the log
	// takes no more appends. Close it and Open it again, which finds out
	// what is on disk.
	ErrBroken = errors.New("wal: log broken by an earlier failed write or sync")
	// ErrReleased: ReadFrom was asked for records before the first one
	// the log holds (released by ReleaseBefore, or never written).
	ErrReleased = errors.New("wal: records released")
)

// Stats counts what a Log did since Open.
type Stats struct {
	Appends   uint64 // Append calls that returned successfully
	Records   uint64 // records they appended
	Writes    uint64 // group commits: one write each
	Syncs     uint64 // fdatasyncs of segments (0 with NoSync)
	Rotations uint64 // new segments started
	Bytes     uint64 // bytes written in records' frames
}

// Log is a write-ahead log in a directory. Its methods are safe for
// concurrent use.
type Log struct {
	dir    string
	opts   Options
	lock   *os.File
	pipe   *pipeline
	report Report

	mu      sync.Mutex
	segs    []segment // oldest first; the last one is being written
	next    uint64    // index the next admitted record gets
	durable uint64    // last index written and synced
	queue   []*request
	leading bool // a leader is writing and syncing
	err     error
	closed  bool
	pending sync.WaitGroup // admitted Appends that have not returned

	// Owned by the current leader (only one at a time).
	active *os.File
	off    int64
	buf    []byte

	appends, records, writes, syncs, rotations, bytes atomic.Uint64
}

type segment struct {
	name  string
	first uint64
}

// request is one Append waiting in the queue.
type request struct {
	recs  [][]byte
	first uint64
	size  int
	wake  chan bool // true: lead; false: done, see err
	err   error
}

// Open opens the log in dir, creating the directory and an empty log if
// needed. It verifies every segment, drops a torn tail (reporting it in
// Report and to Options.Logger), and refuses a log with other corruption
// (the error wraps ErrCorrupt). Only one process may have a log open.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < 4096 {
		return nil, fmt.Errorf("wal: segment size %d is below 4096", opts.SegmentSize)
	}
	if opts.FirstIndex == 0 {
		opts.FirstIndex = 1
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if err := syncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			return nil, err
		}
	}
	l := &Log{dir: dir, opts: opts}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("wal: %s is in use by another process: %w", dir, err)
	}
	l.lock = lock
	if err := l.open(); err != nil {
		if l.pipe != nil {
			l.pipe.close()
		}
		if l.active != nil {
			l.active.Close()
		}
		lock.Close()
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	// Segments being prepared when the last process stopped.
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			if err := os.Remove(filepath.Join(l.dir, e.Name())); err != nil {
				return err
			}
		}
	}
	segs, scans, err := scanDir(l.dir, &l.report)
	if err != nil {
		return err
	}
	if err := corruptError(l.dir, l.report.Problems); err != nil {
		return err
	}
	l.pipe = startPipeline(l.dir, l.opts.SegmentSize, l.opts.Prealloc)
	if len(segs) == 0 {
		l.next = l.opts.FirstIndex
		l.durable = l.next - 1
		l.report.FirstIndex, l.report.LastIndex = l.next, l.next-1
		return l.startSegment(l.next)
	}
	for _, sg := range segs {
		l.segs = append(l.segs, segment{sg.name, sg.first})
	}
	last := scans[len(scans)-1]
	l.next = last.next
	l.durable = last.next - 1
	l.off = last.end
	l.active, err = os.OpenFile(filepath.Join(l.dir, segs[len(segs)-1].name), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	for i := range l.report.Problems {
		p := &l.report.Problems[i]
		if !p.Tail {
			continue
		}
		if err := l.dropTail(); err != nil {
			return fmt.Errorf("wal: dropping the torn tail of %s: %w", p.Segment, err)
		}
		p.Dropped = true
		if l.opts.Logger != nil {
			l.opts.Logger.Warn(p.String(), "dir", l.dir, "segment", p.Segment, "offset", p.Offset, "index", p.Index)
		}
	}
	return nil
}

// dropTail zeroes the active segment from l.off on, durably, so that nothing
// of a torn write can be mistaken for a record later.
func (l *Log) dropTail() error {
	if err := l.active.Truncate(l.off); err != nil {
		return err
	}
	if err := preallocate(l.active, l.off, l.opts.SegmentSize, l.opts.Prealloc); err != nil {
		return err
	}
	return l.active.Sync()
}

// startSegment makes the prepared segment the one being written, its first
// record being first.
func (l *Log) startSegment(first uint64) error {
	f, tmp, err := l.pipe.take()
	if err != nil {
		return err
	}
	name := segName(first)
	if err := os.Rename(tmp, filepath.Join(l.dir, name)); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	old := l.active
	l.active, l.off = f, segHeaderSize
	l.mu.Lock()
	l.segs = append(l.segs, segment{name, first})
	l.mu.Unlock()
	if old != nil {
		l.rotations.Add(1)
		return old.Close()
	}
	return nil
}

// Report says what Open found and what it repaired.
func (l *Log) Report() Report { return l.report }

// Append appends recs as consecutive records and returns the index of the
// last one, once all of them are durable: written and fdatasynced (unless
// Options.NoSync). Records of concurrent Appends are written together and
// share one fdatasync. The order of indexes is the order in which Appends
// were admitted. The caller must not change recs until Append returns. After
// an error, the records may or may not be on disk; every later Append fails
// with ErrBroken.
func (l *Log) Append(recs ...[]byte) (uint64, error) {
	size := 0
	for _, r := range recs {
		if len(r) > MaxRecordSize {
			return 0, fmt.Errorf("wal: record of %d bytes exceeds MaxRecordSize", len(r))
		}
		size += frameSize(len(r))
	}
	req := &request{recs: recs, size: size, wake: make(chan bool, 1)}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return 0, ErrClosed
	case l.err != nil:
		err := l.err
		l.mu.Unlock()
		return 0, err
	case len(recs) == 0:
		last := l.durable
		l.mu.Unlock()
		return last, nil
	}
	req.first = l.next
	l.next += uint64(len(recs))
	l.queue = append(l.queue, req)
	l.pending.Add(1)
	defer l.pending.Done()
	lead := !l.leading
	l.leading = true
	l.mu.Unlock()
	if !lead {
		lead = <-req.wake
	}
	if lead {
		l.lead()
		<-req.wake
	}
	if req.err != nil {
		return 0, req.err
	}
	l.appends.Add(1)
	l.records.Add(uint64(len(recs)))
	return req.first + uint64(len(recs)) - 1, nil
}

// lead writes and syncs the queued requests as one group, then hands the
// lead to the first request queued meanwhile, if any.
func (l *Log) lead() {
	l.mu.Lock()
	n, size := 0, 0
	limit := int(min(maxGroupBytes, l.opts.SegmentSize-segHeaderSize))
	for n < len(l.queue) && (n == 0 || size+l.queue[n].size <= limit) {
		size += l.queue[n].size
		n++
	}
	batch := l.queue[:n:n]
	l.queue = l.queue[n:]
	if len(l.queue) == 0 {
		l.queue = nil
	}
	l.mu.Unlock()

	err := l.commit(batch, size)

	l.mu.Lock()
	var next *request
	var rest []*request
	if err != nil {
		if l.err == nil {
			l.err = fmt.Errorf("%w: %w", ErrBroken, err)
		}
		rest, l.queue = l.queue, nil
		l.leading = false
	} else {
		last := batch[n-1]
		l.durable = last.first + uint64(len(last.recs)) - 1
		if len(l.queue) > 0 {
			next = l.queue[0]
		} else {
			l.leading = false
		}
	}
	broken := l.err
	l.mu.Unlock()
	for _, r := range batch {
		r.err = err
		r.wake <- false
	}
	for _, r := range rest {
		r.err = broken
		r.wake <- false
	}
	if next != nil {
		next.wake <- true
	}
}

// commit writes the batch's records at the end of the active segment, first
// starting a new segment if they would not fit, and syncs them.
func (l *Log) commit(batch []*request, size int) error {
	if l.off > segHeaderSize && l.off+int64(size) > l.opts.SegmentSize {
		if err := l.startSegment(batch[0].first); err != nil {
			return err
		}
	}
	buf := l.buf[:0]
	for _, r := range batch {
		for i, rec := range r.recs {
			buf = appendFrame(buf, r.first+uint64(i), rec)
		}
	}
	if cap(buf) <= 2*maxGroupBytes {
		l.buf = buf
	}
	if _, err := l.active.WriteAt(buf, l.off); err != nil {
		return fmt.Errorf("writing %s: %w", l.active.Name(), err)
	}
	l.off += int64(len(buf))
	l.writes.Add(1)
	l.bytes.Add(uint64(len(buf)))
	if l.opts.NoSync {
		return nil
	}
	var err error
	if l.opts.syncHook != nil {
		err = l.opts.syncHook()
	}
	if err == nil {
		err = fdatasync(l.active)
	}
	l.syncs.Add(1)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", l.active.Name(), err)
	}
	return nil
}

// FirstIndex is the index of the first record the log holds (or would hold,
// when it is empty).
func (l *Log) FirstIndex() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.segs[0].first
}

// LastIndex is the index of the last durable record (FirstIndex()-1 when the
// log is empty).
func (l *Log) LastIndex() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durable
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{
		Appends: l.appends.Load(), Records: l.records.Load(), Writes: l.writes.Load(),
		Syncs: l.syncs.Load(), Rotations: l.rotations.Load(), Bytes: l.bytes.Load(),
	}
}

// ReadFrom calls fn with each record of index ≥ index, in order, up to the
// last record durable when ReadFrom was called. rec is only valid during the
// call. It stops at fn's first error and returns it. Asking for records before
// FirstIndex() is ErrReleased; after LastIndex(), it calls nothing.
func (l *Log) ReadFrom(index uint64, fn func(index uint64, rec []byte) error) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	first, last := l.segs[0].first, l.durable
	if index < first {
		l.mu.Unlock()
		return fmt.Errorf("%w: record %d is before the first record in the log, %d", ErrReleased, index, first)
	}
	if index > last {
		l.mu.Unlock()
		return nil
	}
	k := len(l.segs) - 1
	for l.segs[k].first > index {
		k--
	}
	var files []*os.File
	var segs []segment
	var err error
	// Open the files now, so that ReleaseBefore may remove them meanwhile.
	for _, s := range l.segs[k:] {
		if s.first > last {
			break
		}
		var f *os.File
		f, err = os.Open(filepath.Join(l.dir, s.name))
		if err != nil {
			break
		}
		files = append(files, f)
		segs = append(segs, s)
	}
	l.mu.Unlock()
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return err
	}
	for i, f := range files {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		fr := newFrameReader(f, st.Size())
		if what, err := fr.header(); what != "" || err != nil {
			return fmt.Errorf("wal: reading %s: %v%v", segs[i].name, what, err)
		}
		for idx := segs[i].first; idx <= last && (i+1 == len(segs) || idx < segs[i+1].first); idx++ {
			rec, stop, why, err := fr.next(idx)
			if err != nil {
				return fmt.Errorf("wal: reading %s: %w", segs[i].name, err)
			}
			if stop != stopNone {
				if why == "" {
					why = "is missing"
				}
				return fmt.Errorf("%w: record %d at offset %d of %s %s", ErrCorrupt, idx, fr.off, segs[i].name, why)
			}
			if idx >= index {
				if err := fn(idx, rec); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ReleaseBefore deletes the segments all of whose records have indexes below
// index, once a checkpoint has made them redundant. It never deletes the
// segment being written, so FirstIndex() may stay below index.
func (l *Log) ReleaseBefore(index uint64) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	var victims []segment
	for len(l.segs) > 1 && l.segs[1].first <= index {
		victims = append(victims, l.segs[0])
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	if len(victims) == 0 {
		return nil
	}
	for _, v := range victims {
		if err := os.Remove(filepath.Join(l.dir, v.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return syncDir(l.dir)
}

// Close waits for the Appends under way, then closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	l.pending.Wait()
	l.pipe.close()
	err := l.active.Close()
	if cerr := l.lock.Close(); err == nil {
		err = cerr
	}
	return err
}
