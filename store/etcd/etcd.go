// Package etcd keeps threadctl's records in an etcd v3 cluster, so that
// several threadctl instances share them (SPEC.md §8). It implements
// engine.Store and engine.Coordinator; nothing else in threadctl imports
// etcd.
//
// Keys, under one prefix (default /threadctl/); k = page_id/psid:
//
//	pages/<page_id>                   → engine.Page (JSON)
//	threads/k                         → revision (8, BE) + engine.Thread (store's compact codec)
//	identities/<psid>/<page_id>       → ∅      identity_foreign_id index
//	by_state/<state>/k                → ∅      list and count by state
//	history/k/<revision, 16 hex>      → engine.HistoryEntry (compact codec)
//	timers/<due ns, 16 hex>/<kind>/k  → ∅      due-ordered timer index
//	intents/k                         → engine.Intent (JSON)
//	queue/k/<seq, 16 hex>             → content id
//	contents/<id>                     → engine.Content (JSON)
//	interventions/<id>                → engine.Intervention (JSON)
//	inbox/<seq, 16 hex>               → engine.Accepted (JSON)
//	claims/intents/k, claims/queue/k, claims/inbox/<seq>
//	                                  → the instance's lease id, attached to its lease
//	election/…                        → the leader election (client/v3/concurrency)
//	meta/restored                     → set while restored threads await reconciling
//
// A thread's commit is one transaction that compares the thread key's
// ModRevision with the one read, and writes the thread, its history entry
// and every index entry the change touches. The engine's revision is kept
// in the value; the store remembers the ModRevision at which it last read
// or wrote each engine revision, so that a commit needs no read first.
//
// Counts by state are not kept in counters (one key every transition of
// that state would write, a hot spot under contention): StateCounts counts
// the by_state keys (a count-only range, served from etcd's index).
//
// Work in flight — an accepted webhook event, a Graph call's intent, a
// thread's queue — is claimed by the instance that made it with a key
// attached to its session lease. When the instance dies its lease expires
// (after SessionTTL) and its claims vanish; the leader (Orphans) claims what
// is left unclaimed, in a transaction, so exactly one instance takes it.
package etcd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/threadctl/threadctl/engine"
)

// DefaultPrefix is the key prefix threadctl uses when none is given.
const DefaultPrefix = "/threadctl/"

// ErrUnavailable wraps failures of etcd itself (no quorum, a closed client),
// as opposed to a missing record or a conflict.
var ErrUnavailable = errors.New("etcd store unavailable")

// Options configure a Store.
type Options struct {
	Endpoints []string
	// Prefix is where threadctl's keys live (default DefaultPrefix); it
	// ends with "/".
	Prefix string
	// TLS, if set, is used to reach the cluster.
	TLS *tls.Config
	// DialTimeout bounds connecting (default 5 s); RequestTimeout bounds
	// each request to etcd (default 10 s).
	DialTimeout, RequestTimeout time.Duration
	// SessionTTL is the lease of this instance's claims and of its place
	// in the leader election: how long after its death its work is taken
	// over (default 5 s; etcd rounds it up to whole seconds, 2 s at least).
	SessionTTL time.Duration
	// MaxTxnOps is the cluster's --max-txn-ops (default 128): a commit
	// needing more is refused with an error that says so.
	MaxTxnOps int
	// TakeoverInterval is how often the leader looks for dead instances'
	// work (default SessionTTL / 2).
	TakeoverInterval time.Duration
	// Logger is told what the store does in the background; nil: discard.
	Logger *slog.Logger
}

// Store is threadctl's store on etcd.
type Store struct {
	cli    *clientv3.Client
	opts   Options
	pfx    string
	log    *slog.Logger
	revs   *revCache
	closed atomic.Bool

	sessMu sync.Mutex
	sess   *concurrency.Session
	stop   chan struct{}
	done   chan struct{}

	seqMu   sync.Mutex
	lastSeq uint64
}

// Open connects to the cluster and starts this instance's session.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints given")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 5 * time.Second
	}
	if opts.MaxTxnOps <= 0 {
		opts.MaxTxnOps = 128
	}
	if opts.TakeoverInterval <= 0 {
		opts.TakeoverInterval = opts.SessionTTL / 2
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: opts.Endpoints, DialTimeout: opts.DialTimeout, TLS: opts.TLS,
		Logger: zap.NewNop(), DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connecting to %v: %w", opts.Endpoints, err)
	}
	s := &Store{cli: cli, opts: opts, pfx: opts.Prefix, log: opts.Logger, revs: newRevCache(1 << 16), stop: make(chan struct{}), done: make(chan struct{})}
	cctx, cancel := context.WithTimeout(ctx, opts.DialTimeout+opts.RequestTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, s.pfx+"meta/restored"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd: reaching %v: %w", opts.Endpoints, err)
	}
	sess, err := s.newSession(cctx)
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.sess = sess
	go s.keepSession()
	return s, nil
}

func (s *Store) ttlSeconds() int {
	return max(int((s.opts.SessionTTL+time.Second-1)/time.Second), 1)
}

func (s *Store) newSession(ctx context.Context) (*concurrency.Session, error) {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(s.ttlSeconds()), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("%w: starting a session: %v", ErrUnavailable, err)
	}
	return sess, nil
}

// keepSession starts a new session whenever this instance's lease is lost
// (etcd unreachable for longer than the TTL): its claims are gone by then,
// and what it does next is claimed under the new lease.
func (s *Store) keepSession() {
	defer close(s.done)
	for {
		sess := s.session()
		select {
		case <-s.stop:
			return
		case <-sess.Done():
		}
		s.log.Warn("the etcd session (lease) of this instance ended; starting a new one")
		for {
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
			ns, err := s.newSession(ctx)
			cancel()
			if err == nil {
				s.sessMu.Lock()
				s.sess = ns
				s.sessMu.Unlock()
				break
			}
			select {
			case <-s.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

func (s *Store) session() *concurrency.Session {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	return s.sess
}

// lease is this instance's current lease, and its id as claims hold it.
func (s *Store) lease() (clientv3.LeaseID, string) {
	id := s.session().Lease()
	return id, leaseHex(id)
}

// ID names this instance in the cluster (its lease, in hex).
func (s *Store) ID() string { _, id := s.lease(); return id }

// Client is the etcd client, for tools and tests.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the key prefix.
func (s *Store) Prefix() string { return s.pfx }

// Close ends this instance's session — its claims are released at once, for
// the leader to take over — and closes the client.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	<-s.done
	err := s.session().Close()
	if cerr := s.cli.Close(); err == nil {
		err = cerr
	}
	return err
}

// Crash stops as a killed process would: the client closes without
// revoking the lease, whose claims expire after SessionTTL. For tests.
func (s *Store) Crash() {
	if s.closed.Swap(true) {
		return
	}
	close(s.stop)
	<-s.done
	s.session().Orphan()
	s.cli.Close()
}

// ctx bounds a request to etcd.
func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.RequestTimeout)
}

// unavailable wraps an etcd failure.
func (s *Store) unavailable(err error, doing string) error {
	if s.closed.Load() {
		return fmt.Errorf("%w: %s: the store is closed", ErrUnavailable, doing)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, doing, err)
}

// ---- keys

func (s *Store) key(parts ...string) string { return s.pfx + strings.Join(parts, "/") }

func tk(k engine.ThreadKey) string { return k.PageID + "/" + k.PSID }

func hex16(n uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[n&15]
		n >>= 4
	}
	return string(b[:])
}

func parseHex16(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("%q is not 16 hex digits", s)
	}
	return strconv.ParseUint(s, 16, 64)
}

func (s *Store) threadKey(k engine.ThreadKey) string { return s.key("threads", tk(k)) }
func (s *Store) stateKey(st string, k engine.ThreadKey) string {
	return s.key("by_state", st, tk(k))
}
func (s *Store) historyKey(k engine.ThreadKey, rev uint64) string {
	return s.key("history", tk(k), hex16(rev))
}
func (s *Store) timerKey(t engine.Timer) string {
	return s.key("timers", hex16(uint64(t.Due.UnixNano())), strconv.Itoa(int(t.Kind)), tk(t.Key))
}

// parseTimer reads a timer key (without the prefix "timers/").
func parseTimer(rest string) (engine.Timer, error) {
	f := strings.Split(rest, "/")
	if len(f) != 4 {
		return engine.Timer{}, fmt.Errorf("timer key %q", rest)
	}
	due, err := parseHex16(f[0])
	if err != nil {
		return engine.Timer{}, fmt.Errorf("timer key %q: %v", rest, err)
	}
	kind, err := strconv.Atoi(f[1])
	if err != nil {
		return engine.Timer{}, fmt.Errorf("timer key %q: %v", rest, err)
	}
	return engine.Timer{Kind: engine.TimerKind(kind), Key: engine.ThreadKey{PageID: f[2], PSID: f[3]}, Due: time.Unix(0, int64(due)).UTC()}, nil
}

// parseThreadKey reads "page/psid".
func parseThreadKey(s string) (engine.ThreadKey, bool) {
	page, psid, ok := strings.Cut(s, "/")
	if !ok || page == "" || psid == "" || strings.Contains(psid, "/") {
		return engine.ThreadKey{}, false
	}
	return engine.ThreadKey{PageID: page, PSID: psid}, true
}

// validKey refuses ids that would break the key layout.
func validKey(k engine.ThreadKey) error {
	for _, s := range []string{k.PageID, k.PSID} {
		if s == "" || strings.ContainsAny(s, "/\x00") {
			return fmt.Errorf("store: invalid thread key %q/%q", k.PageID, k.PSID)
		}
	}
	return nil
}

func validID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("store: invalid id %q", id)
	}
	return nil
}

// ---- values

func encodeJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// decodeJSON reads a stored value and refuses one written by a newer format.
func decodeJSON(raw []byte, v any, version func() int, what string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	if n := version(); n > engine.FormatVersion {
		return fmt.Errorf("decoding %s: format version %d is newer than this build's %d", what, n, engine.FormatVersion)
	}
	return nil
}

// ---- the revisions read

// revCache remembers, per thread, the engine revision last read or written
// and the etcd ModRevision it was at: a commit expecting that revision
// compares against it without reading the thread first. A wrong entry
// (another instance wrote since) only makes the compare fail, and the
// engine read again.
type revCache struct {
	mu  sync.Mutex
	m   map[engine.ThreadKey]revEntry
	max int
}

type revEntry struct {
	rev uint64
	mod int64
}

func newRevCache(n int) *revCache { return &revCache{m: map[engine.ThreadKey]revEntry{}, max: n} }

func (c *revCache) get(k engine.ThreadKey, rev uint64) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || e.rev != rev {
		return 0, false
	}
	return e.mod, true
}

func (c *revCache) put(k engine.ThreadKey, rev uint64, mod int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = revEntry{rev, mod}
}

func (c *revCache) drop(k engine.ThreadKey) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}
