// Package store keeps threadctl's records and implements engine.Store: a
// write-ahead log in front of one bbolt file, as etcd keeps its raft log in
// front of its bbolt backend. Nothing else in threadctl imports bbolt.
//
// Every change — a thread's transition with its history entry, an intent,
// a content, an accepted webhook event — is appended to the log (store/wal)
// by a group commit: a caller that finds no commit under way writes its own
// at once; those arriving meanwhile are written together by the next
// leader, with one fdatasync. A commit is durable once its log record is.
// Its changes are then published in memory (layers.go), where reads see
// them, and a checkpointer writes them to bbolt in large transactions off
// the request path (every CheckpointInterval, or sooner when many have
// gathered), records in bbolt the last log index it holds, and releases the
// log's older segments. Open replays the log past that index.
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
//	inbox          seq(8, BE)                   → engine.Accepted (webhook events accepted, not yet applied)
//	meta           "format", "applied", "seq/<bucket>" → file format, last log index in bbolt, sequences
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
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store/wal"
)

// bucketID names a bucket in the log's records and the layers.
type bucketID uint8

const (
	bPages bucketID = iota
	bThreads
	bIdentities
	bByState
	bStateCounts
	bHistory
	bTimers
	bIntents
	bQueue
	bContents
	bInterventions
	bInbox
	bMeta
	numBuckets
)

// allBuckets are the bbolt buckets, by bucketID.
var allBuckets = [numBuckets][]byte{
	[]byte("pages"), []byte("threads"), []byte("identities"), []byte("by_state"), []byte("state_counts"),
	[]byte("history"), []byte("timers"), []byte("intents"), []byte("queue"), []byte("contents"),
	[]byte("interventions"), []byte("inbox"), []byte("meta"),
}

// FileName is the bbolt file's name in the data directory; LogDir the log's.
const (
	FileName = "threadctl.db"
	LogDir   = "wal"
)

// fileFormat is the store's format: 2 adds the log (and keeps format 1's
// records, which it upgrades in place).
const fileFormat = 2

// ErrUnavailable wraps failures of the store itself (I/O, a closed store), as
// opposed to a missing record or a conflict.
var ErrUnavailable = errors.New("store unavailable")

// Options tune a DB.
type Options struct {
	// MaxBatch caps how many commits share one log record (default 512).
	MaxBatch int
	// OnCommit, if set, is called after each group commit to the log with
	// its duration and the number of commits it carried.
	OnCommit func(d time.Duration, commits int)
	// OpenTimeout bounds waiting for another process's lock on the file
	// (default 2 s).
	OpenTimeout time.Duration
	// CheckpointInterval is how often logged changes are written to bbolt
	// (default 100 ms); CheckpointSize writes them sooner, once that many
	// keys have changed (default 4096).
	CheckpointInterval time.Duration
	CheckpointSize     int
	// SegmentSize is the size of the log's segments (default 64 MiB).
	SegmentSize int64
	// Logger is told what Open repairs (a torn tail of the log) and what
	// the checkpointer fails at; nil: discard.
	Logger *slog.Logger
}

// DB is the store. Commits from concurrent callers are grouped, leader and
// followers: a caller that finds no commit under way writes its own at once,
// in its own goroutine; callers arriving meanwhile queue, and when the
// commit ends the first of them leads the next one, carrying all that
// queued (one log record, one fdatasync for all).
type DB struct {
	db   *bolt.DB
	log  *wal.Log
	opts Options

	pubMu  sync.Mutex               // serialises publishing layers
	layers atomic.Pointer[layerSet] // what reads see above bbolt

	mu         sync.Mutex
	committing bool  // a leader is writing
	queue      []*op // commits waiting for the next leader
	closed     bool
	broken     error      // a failed log write: no more commits
	idle       *sync.Cond // signalled when committing ends

	ckptMu      sync.Mutex // one checkpoint at a time
	checkpoints atomic.Uint64
	// freezes counts the layers checkpoints froze: a read that sees it
	// change between taking the layers and beginning bbolt's transaction
	// starts again (see read).
	freezes atomic.Uint64
	// testBeforeView, if set (by tests), runs once, in the next read,
	// between taking the layers and beginning bbolt's transaction.
	testBeforeView func()
	poke           chan struct{}
	stop           chan struct{}
	done           chan struct{}
}

// layerSet is the changes logged but not yet all in bbolt: the active layer
// commits add to, and the frozen one a checkpoint is writing.
type layerSet struct{ active, frozen *layer }

func (ls *layerSet) list() []*layer {
	if ls.frozen == nil {
		return []*layer{ls.active}
	}
	return []*layer{ls.active, ls.frozen}
}

var _ engine.Store = (*DB)(nil)

// Open opens (creating if needed) the store in dir: the bbolt file and the
// log beside it. It replays the log past bbolt's checkpoint.
func Open(dir string, opts Options) (*DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 2 * time.Second
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 100 * time.Millisecond
	}
	if opts.CheckpointSize <= 0 {
		opts.CheckpointSize = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dir, FileName)
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: another process holds it open", path)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	applied, err := initBuckets(bdb)
	if err != nil {
		bdb.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	log, err := wal.Open(filepath.Join(dir, LogDir), wal.Options{FirstIndex: applied + 1, SegmentSize: opts.SegmentSize, Logger: opts.Logger})
	if err != nil {
		bdb.Close()
		return nil, fmt.Errorf("opening the log: %w", err)
	}
	s := &DB{db: bdb, log: log, opts: opts, poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	s.idle = sync.NewCond(&s.mu)
	if err := s.replay(applied); err != nil {
		log.Close()
		bdb.Close()
		return nil, err
	}
	go s.checkpointer()
	return s, nil
}

// replay reads the log past bbolt's checkpoint (applied) into the active
// layer, then checkpoints it.
func (s *DB) replay(applied uint64) error {
	active := &layer{last: applied}
	if first, last := s.log.FirstIndex(), s.log.LastIndex(); last >= first {
		switch {
		case first > applied+1:
			return fmt.Errorf("the log starts at record %d but the bbolt file holds changes up to %d only: records %d…%d are missing; restore a backup", first, applied, applied+1, first-1)
		case last < applied:
			return fmt.Errorf("the bbolt file holds changes up to log record %d, which the log (records %d…%d) lacks", applied, first, last)
		}
	}
	err := s.log.ReadFrom(applied+1, func(index uint64, rec []byte) error {
		writes, err := decodeWrites(rec)
		if err != nil {
			return fmt.Errorf("log record %d: %w", index, err)
		}
		for _, w := range writes {
			active.set(w.b, w.key, w.val, w.del)
		}
		active.last = index
		return nil
	})
	if err != nil && !errors.Is(err, wal.ErrReleased) {
		return fmt.Errorf("replaying the log: %w", err)
	}
	s.layers.Store(&layerSet{active: active})
	if active.size > 0 {
		s.opts.Logger.Info("replayed the log past the checkpoint", "records", active.last-applied, "keys", active.size)
		return s.Checkpoint()
	}
	return nil
}

// initBuckets creates the buckets and returns the last log index bbolt
// holds. A format 1 file (no log) is upgraded: its queue's bbolt sequence
// moves into meta.
func initBuckets(db *bolt.DB) (applied uint64, err error) {
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(allBuckets[bMeta])
		if v := meta.Get([]byte("format")); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil || n > fileFormat {
				return fmt.Errorf("file format %q is newer than this threadctl understands (%d)", v, fileFormat)
			}
		}
		seqKey := metaSeqKey(bQueue)
		if meta.Get(seqKey) == nil {
			if err := meta.Put(seqKey, binary.BigEndian.AppendUint64(nil, tx.Bucket(allBuckets[bQueue]).Sequence())); err != nil {
				return err
			}
		}
		if v := meta.Get([]byte("applied")); len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		return meta.Put([]byte("format"), []byte(strconv.Itoa(fileFormat)))
	})
	return applied, err
}

func metaSeqKey(b bucketID) []byte { return append([]byte("seq/"), allBuckets[b]...) }

// Close stops accepting commits, waits for those being written (and those
// already queued), checkpoints what is logged and closes the log and the
// file.
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
	close(s.stop)
	<-s.done
	err := s.Checkpoint()
	return errors.Join(err, s.log.Close(), s.db.Close())
}

// Path is the bbolt file's path.
func (s *DB) Path() string { return s.db.Path() }

// Stats is what the store did since Open.
type Stats struct {
	Log         wal.Stats // appends, records, writes, fdatasyncs of the log
	Checkpoints uint64    // bbolt transactions the checkpointer wrote (two fdatasyncs each)
	PageWrites  int64     // pages bbolt wrote (checkpoints and other transactions)
	LayerKeys   int       // keys logged and not yet in bbolt
}

// Stats reports what the store did since Open.
func (s *DB) Stats() Stats {
	ls := s.layers.Load()
	n := ls.active.size
	if ls.frozen != nil {
		n += ls.frozen.size
	}
	return Stats{Log: s.log.Stats(), Checkpoints: s.checkpoints.Load(), PageWrites: s.pageWrites(), LayerKeys: n}
}

// op is one commit: check validates without writing (its error rejects this
// commit only); apply writes. done receives the outcome, or nil in lead
// when its caller is to write the next commit.
type op struct {
	check func(w *rw) error
	apply func(w *rw) error
	done  chan result
}

type result struct {
	err  error
	lead bool // write the next commit: the queue as it is then
}

var errClosed = fmt.Errorf("%w: closed", ErrUnavailable)

// update commits check/apply durably, in a log record shared with the
// commits of other callers. Once queued a commit is waited for even if ctx
// ends: the caller must learn whether it is durable.
func (s *DB) update(ctx context.Context, check, apply func(w *rw) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{check: check, apply: apply, done: make(chan result, 1)}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return errClosed
	case s.broken != nil:
		err := s.broken
		s.mu.Unlock()
		return err
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

// lead writes one commit, then hands the lead to the first queued commit,
// or ends the committing.
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

// run checks and applies a batch against the newest state, appends the
// changes of the commits it accepts to the log as one record, and — once
// that is durable — publishes them to readers. The batch's changes go into a
// copy of the active layer as they are accepted (later commits of the batch
// read through them), and that copy is what append publishes.
func (s *DB) run(batch []*op) {
	start := time.Now()
	errs := make([]error, len(batch))
	var writes []write
	var base, next *layer
	err := s.read(func(v *view) error {
		base = v.layers[0]
		next = base.clone()
		v.layers[0] = next
		for i, o := range batch {
			w := &rw{view: v}
			if err := o.check(w); err != nil {
				errs[i] = err
				continue
			}
			if err := o.apply(w); err != nil {
				errs[i] = err
				continue
			}
			for _, wr := range w.writes {
				next.set(wr.b, wr.key, wr.val, wr.del)
			}
			writes = append(writes, w.writes...)
		}
		return nil
	})
	if err == nil && len(writes) > 0 {
		err = s.append(writes, base, next)
	}
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(time.Since(start), len(batch))
	}
	for i, o := range batch {
		switch {
		case errs[i] != nil:
			o.done <- result{err: errs[i]}
		case err != nil:
			o.done <- result{err: fmt.Errorf("%w: %v", ErrUnavailable, err)}
		default:
			o.done <- result{}
		}
	}
}

// append logs writes as one record and publishes them: next, the active
// layer base with the writes applied, unless a checkpoint has frozen base
// meanwhile: then the writes go into a copy of the new active layer (next
// would hold base's changes again, for the next checkpoint to write twice). A
// failed log write breaks the store: whether it reached the disk is unknown,
// and no later commit may follow it.
func (s *DB) append(writes []write, base, next *layer) error {
	index, err := s.log.Append(encodeWrites(writes))
	if err != nil {
		s.mu.Lock()
		s.broken = fmt.Errorf("%w: the log failed (%v); restart threadctl", ErrUnavailable, err)
		s.mu.Unlock()
		return err
	}
	s.pubMu.Lock()
	cur := s.layers.Load()
	active := next
	if cur.active != base {
		active = cur.active.clone()
		for _, w := range writes {
			active.set(w.b, w.key, w.val, w.del)
		}
	}
	active.last = index
	s.layers.Store(&layerSet{active: active, frozen: cur.frozen})
	s.pubMu.Unlock()
	if active.size >= s.opts.CheckpointSize {
		select {
		case s.poke <- struct{}{}:
		default:
		}
	}
	return nil
}

// read runs fn over the newest state: the layers, then bbolt. The layers are
// taken before bbolt's read transaction begins, so a checkpoint finishing
// meanwhile is seen in one or the other — unless that checkpoint froze a
// layer newer than the ones taken (frozen and written between the two
// steps): then bbolt would hold changes the layers taken do not, beside
// older values in those layers for the same keys. A freeze counter read
// before the layers and again inside the transaction catches that, and the
// read starts again.
func (s *DB) read(fn func(v *view) error) error {
	for {
		freezes := s.freezes.Load()
		ls := s.layers.Load()
		if h := s.testBeforeView; h != nil {
			s.testBeforeView = nil
			h()
		}
		again := false
		err := s.db.View(func(tx *bolt.Tx) error {
			if s.freezes.Load() != freezes {
				again = true
				return nil
			}
			return fn(&view{tx: tx, layers: ls.list()})
		})
		if again {
			continue
		}
		if err != nil && !isDomain(err) {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return err
	}
}

func isDomain(err error) bool {
	return errors.Is(err, engine.ErrNotFound) || errors.Is(err, engine.ErrConflict) || errors.Is(err, engine.ErrAmbiguous) || errors.Is(err, engine.ErrBadCursor)
}

// checkpointer writes logged changes to bbolt every CheckpointInterval, or
// when poked because many have gathered, until Close.
func (s *DB) checkpointer() {
	defer close(s.done)
	t := time.NewTicker(s.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.poke:
		}
		if err := s.Checkpoint(); err != nil {
			s.opts.Logger.Error("checkpoint failed; logged changes stay in the log and in memory", "err", err)
		}
	}
}

// Checkpoint writes the changes logged so far to bbolt in one transaction,
// with the last log index they come from, then releases the log segments it
// made redundant.
func (s *DB) Checkpoint() error {
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	s.pubMu.Lock()
	cur := s.layers.Load()
	frozen := cur.frozen
	if frozen == nil {
		if cur.active.size == 0 {
			s.pubMu.Unlock()
			return nil
		}
		frozen = cur.active
		s.freezes.Add(1)
		s.layers.Store(&layerSet{active: &layer{last: frozen.last}, frozen: frozen})
	}
	s.pubMu.Unlock()

	err := s.db.Update(func(tx *bolt.Tx) error {
		for b, t := range frozen.trees {
			if t == nil {
				continue
			}
			bk := tx.Bucket(allBuckets[b])
			var err error
			t.Ascend(func(e entry) bool {
				if e.del {
					err = bk.Delete([]byte(e.key))
				} else {
					err = bk.Put([]byte(e.key), e.val)
				}
				return err == nil
			})
			if err != nil {
				return err
			}
		}
		return tx.Bucket(allBuckets[bMeta]).Put([]byte("applied"), binary.BigEndian.AppendUint64(nil, frozen.last))
	})
	if err != nil {
		return fmt.Errorf("writing the checkpoint: %w", err)
	}
	s.checkpoints.Add(1)
	s.pubMu.Lock()
	cur = s.layers.Load()
	s.layers.Store(&layerSet{active: cur.active})
	s.pubMu.Unlock()
	if err := s.log.ReleaseBefore(frozen.last + 1); err != nil {
		return fmt.Errorf("releasing the log: %w", err)
	}
	return nil
}

// ---- log records

// encodeWrites encodes changes as one log record: per change its bucket,
// whether it is a deletion, and its key and value, length-prefixed.
func encodeWrites(writes []write) []byte {
	n := 0
	for _, w := range writes {
		n += 2 + 2*binary.MaxVarintLen32 + len(w.key) + len(w.val)
	}
	b := make([]byte, 0, n)
	for _, w := range writes {
		del := byte(0)
		if w.del {
			del = 1
		}
		b = append(b, byte(w.b), del)
		b = binary.AppendUvarint(b, uint64(len(w.key)))
		b = append(b, w.key...)
		b = binary.AppendUvarint(b, uint64(len(w.val)))
		b = append(b, w.val...)
	}
	return b
}

func decodeWrites(b []byte) ([]write, error) {
	var out []write
	for len(b) > 0 {
		if len(b) < 2 || bucketID(b[0]) >= numBuckets || b[1] > 1 {
			return nil, fmt.Errorf("bad change header %x", b[:min(len(b), 2)])
		}
		w := write{b: bucketID(b[0]), del: b[1] == 1}
		b = b[2:]
		for _, field := range []*[]byte{&w.key, &w.val} {
			n, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n {
				return nil, errors.New("truncated change")
			}
			*field = bytes.Clone(b[k : k+int(n)])
			b = b[k+int(n):]
		}
		if w.del {
			w.val = nil
		}
		out = append(out, w)
	}
	return out, nil
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

func putJSON(w *rw, b bucketID, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.put(b, key, raw)
	return nil
}

func (s *DB) pageWrites() int64 {
	st := s.db.Stats()
	return st.TxStats.GetWrite()
}
