// Package store keeps threadctl's records in one bbolt file and implements
// engine.Store. Nothing else in threadctl imports bbolt.
//
// Buckets and keys (k = page_id 0x00 psid):
//
//	pages          page_id                      → engine.Page
//	threads        k                            → engine.Thread
//	identities     psid 0x00 page_id            → ∅     (identity_foreign_id index)
//	by_state       state 0x00 k                 → ∅     (list by state, by state and page)
//	state_counts   state                        → uint64
//	history        k 0x00 revision(8, BE)       → engine.HistoryEntry
//	timers         due(8, BE ns) kind(1) k      → ∅
//	intents        k                            → engine.Intent
//	queue          k 0x00 seq(8, BE)            → content id
//	contents       id                           → engine.Content
//	interventions  id                           → engine.Intervention
//	meta           "format"                     → format version
//
// Threads of one page are contiguous, so listing by page is a prefix scan;
// a thread's history is contiguous and ordered, so its latest entries are one
// seek away.
package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

var (
	bPages         = []byte("pages")
	bThreads       = []byte("threads")
	bIdentities    = []byte("identities")
	bByState       = []byte("by_state")
	bStateCounts   = []byte("state_counts")
	bHistory       = []byte("history")
	bTimers        = []byte("timers")
	bIntents       = []byte("intents")
	bQueue         = []byte("queue")
	bContents      = []byte("contents")
	bInterventions = []byte("interventions")
	bMeta          = []byte("meta")

	allBuckets = [][]byte{bPages, bThreads, bIdentities, bByState, bStateCounts, bHistory, bTimers, bIntents, bQueue, bContents, bInterventions, bMeta}
)

// FileName is the bbolt file's name in the data directory.
const FileName = "threadctl.db"

// ErrUnavailable wraps failures of the store itself (I/O, a closed store), as
// opposed to a missing record or a conflict.
var ErrUnavailable = errors.New("store unavailable")

// Options tune a DB.
type Options struct {
	// MaxBatch caps how many commits share one transaction (default 512).
	MaxBatch int
	// OnCommit, if set, is called after each bbolt transaction with its
	// duration and the number of commits it carried.
	OnCommit func(d time.Duration, commits int)
	// OpenTimeout bounds waiting for another process's lock on the file
	// (default 2 s).
	OpenTimeout time.Duration
}

// DB is the bbolt store. Commits from concurrent callers are grouped: the
// first caller's commit starts at once, and whatever arrives while a
// transaction is being written shares the next one (one fsync for all).
type DB struct {
	db      *bolt.DB
	opts    Options
	ops     chan *op
	stop    chan struct{}
	stopped chan struct{}
}

var _ engine.Store = (*DB)(nil)

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	return OpenFile(filepath.Join(dir, FileName), opts)
}

// OpenFile opens (creating if needed) the store in the bbolt file at path.
func OpenFile(path string, opts Options) (*DB, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 2 * time.Second
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: another process holds it open", path)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := initBuckets(bdb); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &DB{db: bdb, opts: opts, ops: make(chan *op, opts.MaxBatch), stop: make(chan struct{}), stopped: make(chan struct{})}
	go s.commitLoop()
	return s, nil
}

func initBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		v := meta.Get([]byte("format"))
		if v == nil {
			return meta.Put([]byte("format"), []byte(strconv.Itoa(engine.FormatVersion)))
		}
		n, err := strconv.Atoi(string(v))
		if err != nil || n > engine.FormatVersion {
			return fmt.Errorf("file format %q is newer than this threadctl understands (%d)", v, engine.FormatVersion)
		}
		return nil
	})
}

// Close stops accepting commits, waits for the one being written and closes
// the file.
func (s *DB) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.stopped
	return s.db.Close()
}

// Path is the bbolt file's path.
func (s *DB) Path() string { return s.db.Path() }

// op is one commit waiting for the commit loop: check validates without
// writing (its error rejects this commit only); apply writes (its error
// aborts the transaction, and each commit of the batch is then retried alone).
type op struct {
	check func(tx *bolt.Tx) error
	apply func(tx *bolt.Tx) error
	done  chan error
}

// rejected marks a commit refused by its own check, which leaves the
// transaction usable for the other commits of the batch.
type rejected struct{ err error }

func (r rejected) Error() string { return r.err.Error() }
func (r rejected) Unwrap() error { return r.err }

func (s *DB) update(ctx context.Context, check, apply func(tx *bolt.Tx) error) error {
	closed := fmt.Errorf("%w: closed", ErrUnavailable)
	select {
	case <-s.stop:
		return closed
	default:
	}
	o := &op{check: check, apply: apply, done: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-s.stop:
		return closed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the commit is waited for even if ctx ends: the caller
	// must learn whether it is durable. If the loop stopped meanwhile, the
	// commit was either answered or never taken.
	select {
	case err := <-o.done:
		return err
	case <-s.stopped:
		select {
		case err := <-o.done:
			return err
		default:
			return closed
		}
	}
}

func (s *DB) commitLoop() {
	defer close(s.stopped)
	batch := make([]*op, 0, s.opts.MaxBatch)
	for {
		select {
		case o := <-s.ops:
			batch = append(batch[:0], o)
		case <-s.stop:
			s.drain()
			return
		}
	fill:
		for len(batch) < s.opts.MaxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.run(batch)
	}
}

// drain fails commits queued after Close began.
func (s *DB) drain() {
	for {
		select {
		case o := <-s.ops:
			o.done <- fmt.Errorf("%w: closed", ErrUnavailable)
		default:
			return
		}
	}
}

func (s *DB) run(batch []*op) {
	start := time.Now()
	errs := make([]error, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, o := range batch {
			if err := o.check(tx); err != nil {
				errs[i] = rejected{err}
				continue
			}
			if err := o.apply(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(time.Since(start), len(batch))
	}
	if err != nil && len(batch) > 1 {
		// One commit broke the transaction: give each its own.
		for _, o := range batch {
			s.run([]*op{o})
		}
		return
	}
	for i, o := range batch {
		switch {
		case err != nil:
			o.done <- fmt.Errorf("%w: %v", ErrUnavailable, err)
		case errs[i] != nil:
			o.done <- errs[i].(rejected).err
		default:
			o.done <- nil
		}
	}
}

func (s *DB) view(fn func(tx *bolt.Tx) error) error {
	err := s.db.View(fn)
	if err != nil && !isDomain(err) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

func isDomain(err error) bool {
	return errors.Is(err, engine.ErrNotFound) || errors.Is(err, engine.ErrConflict) || errors.Is(err, engine.ErrAmbiguous) || errors.Is(err, engine.ErrBadCursor)
}

// ---- keys

func threadKey(k engine.ThreadKey) []byte {
	b := make([]byte, 0, len(k.PageID)+1+len(k.PSID))
	b = append(b, k.PageID...)
	b = append(b, 0)
	return append(b, k.PSID...)
}

func parseThreadKey(b []byte) engine.ThreadKey {
	page, psid, _ := bytes.Cut(b, []byte{0})
	return engine.ThreadKey{PageID: string(page), PSID: string(psid)}
}

func withSeq(prefix []byte, n uint64) []byte {
	b := make([]byte, 0, len(prefix)+9)
	b = append(b, prefix...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, n)
}

func historyKey(k engine.ThreadKey, rev uint64) []byte { return withSeq(threadKey(k), rev) }

func stateKey(st states.State, k engine.ThreadKey) []byte {
	b := append([]byte(st), 0)
	return append(b, threadKey(k)...)
}

func timerKey(t engine.Timer) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(t.Due.UnixNano()))
	b = append(b, byte(t.Kind))
	return append(b, threadKey(t.Key)...)
}

func parseTimerKey(b []byte) (engine.Timer, error) {
	if len(b) < 10 {
		return engine.Timer{}, fmt.Errorf("timer key too short: %x", b)
	}
	return engine.Timer{
		Due:  time.Unix(0, int64(binary.BigEndian.Uint64(b[:8]))),
		Kind: engine.TimerKind(b[8]),
		Key:  parseThreadKey(b[9:]),
	}, nil
}

func identityKey(k engine.ThreadKey) []byte {
	b := append([]byte(k.PSID), 0)
	return append(b, k.PageID...)
}

// validKey refuses ids that would break the key layout.
func validKey(k engine.ThreadKey) error {
	if k.PageID == "" || k.PSID == "" || bytes.IndexByte([]byte(k.PageID+k.PSID), 0) >= 0 {
		return fmt.Errorf("invalid thread key %q", k)
	}
	return nil
}

// ---- encoding

// decode reads a stored value and refuses one written by a newer format.
func decode(raw []byte, v any, version func() int, what string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	if n := version(); n > engine.FormatVersion {
		return fmt.Errorf("decoding %s: format %d is newer than this threadctl understands (%d)", what, n, engine.FormatVersion)
	}
	return nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}
