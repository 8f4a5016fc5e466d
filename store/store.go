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
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

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

// DB is the bbolt store. Commits from concurrent callers are grouped, leader
// and followers: a caller that finds no transaction under way writes its
// commit at once, in its own goroutine; callers arriving meanwhile queue, and
// when the transaction ends the first of them leads the next one, carrying
// all that queued (one fsync for all). A lone caller pays no delay and no
// hand-off; under load, transactions grow with concurrency.
type DB struct {
	db   *bolt.DB
	opts Options

	mu         sync.Mutex
	committing bool  // a leader is writing a transaction
	queue      []*op // commits waiting for the next transaction
	closed     bool
	idle       *sync.Cond // signalled when committing ends
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
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: another process holds it open", path)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := initBuckets(bdb); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &DB{db: bdb, opts: opts}
	s.idle = sync.NewCond(&s.mu)
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

// Close stops accepting commits, waits for those being written (and those
// already queued) and closes the file.
func (s *DB) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for s.committing {
		s.idle.Wait()
	}
	s.mu.Unlock()
	return s.db.Close()
}

// Path is the bbolt file's path.
func (s *DB) Path() string { return s.db.Path() }

// op is one commit: check validates without writing (its error rejects this
// commit only); apply writes (its error aborts the transaction, and each
// commit of the batch is then retried alone). done receives the outcome, or
// nil in lead when its caller is to write the next transaction.
type op struct {
	check func(tx *bolt.Tx) error
	apply func(tx *bolt.Tx) error
	done  chan result
}

type result struct {
	err  error
	lead bool // write the next transaction: the queue as it is then
}

// rejected marks a commit refused by its own check, which leaves the
// transaction usable for the other commits of the batch.
type rejected struct{ err error }

func (r rejected) Error() string { return r.err.Error() }
func (r rejected) Unwrap() error { return r.err }

var errClosed = fmt.Errorf("%w: closed", ErrUnavailable)

// update commits check/apply durably, in a transaction shared with the
// commits of other callers. Once queued a commit is waited for even if ctx
// ends: the caller must learn whether it is durable.
func (s *DB) update(ctx context.Context, check, apply func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{check: check, apply: apply, done: make(chan result, 1)}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return errClosed
	case s.committing:
		s.queue = append(s.queue, o)
		s.mu.Unlock()
		r := <-o.done
		if !r.lead {
			return r.err
		}
		// Lead: take the queue (this commit is in it) and write it.
		s.mu.Lock()
		batch := s.takeQueue()
		s.mu.Unlock()
		s.lead(batch)
	default:
		s.committing = true
		s.mu.Unlock()
		s.lead([]*op{o})
	}
	return (<-o.done).err
}

// takeQueue returns up to MaxBatch queued commits. The caller holds s.mu.
func (s *DB) takeQueue() []*op {
	n := min(len(s.queue), s.opts.MaxBatch)
	batch := s.queue[:n:n]
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		s.queue = nil
	}
	return batch
}

// lead writes one transaction, then hands the lead to the first queued
// commit, or ends the committing.
func (s *DB) lead(batch []*op) {
	s.run(batch)
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.committing = false
		s.idle.Broadcast()
		s.mu.Unlock()
		return
	}
	next := s.queue[0]
	s.mu.Unlock()
	next.done <- result{lead: true}
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
			o.done <- result{err: fmt.Errorf("%w: %v", ErrUnavailable, err)}
		case errs[i] != nil:
			o.done <- result{err: errs[i].(rejected).err}
		default:
			o.done <- result{}
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
