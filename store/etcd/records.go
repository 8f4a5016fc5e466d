package etcd

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

var _ engine.Store = (*Store)(nil)

// Pages returns every page.
func (s *Store) Pages(ctx context.Context) ([]engine.Page, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.key("pages")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.unavailable(err, "reading pages")
	}
	var out []engine.Page
	for _, kv := range resp.Kvs {
		var p engine.Page
		if err := decodeJSON(kv.Value, &p, func() int { return p.V }, "page "+string(kv.Key)); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// PutPage creates or replaces a page.
func (s *Store) PutPage(ctx context.Context, p engine.Page) error {
	if err := validID(p.ID); err != nil {
		return err
	}
	p.V = engine.FormatVersion
	v, err := encodeJSON(p)
	if err != nil {
		return err
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	if _, err := s.cli.Put(c, s.key("pages", p.ID), v); err != nil {
		return s.unavailable(err, "saving page "+p.ID)
	}
	return nil
}

// readThread reads a thread and remembers the ModRevision of its revision.
func (s *Store) readThread(ctx context.Context, k engine.ThreadKey, opts ...clientv3.OpOption) (engine.Thread, int64, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.threadKey(k), opts...)
	if err != nil {
		return engine.Thread{}, 0, s.unavailable(err, "reading thread "+k.String())
	}
	if len(resp.Kvs) == 0 {
		return engine.Thread{}, 0, engine.ErrNotFound
	}
	kv := resp.Kvs[0]
	t, err := store.DecodeThread(kv.Value, "thread "+k.String())
	if err != nil {
		return t, 0, err
	}
	s.revs.put(k, t.Revision, kv.ModRevision)
	return t, kv.ModRevision, nil
}

// Thread returns a thread record.
func (s *Store) Thread(ctx context.Context, k engine.ThreadKey) (engine.Thread, error) {
	if err := validKey(k); err != nil {
		return engine.Thread{}, engine.ErrNotFound
	}
	t, _, err := s.readThread(ctx, k)
	return t, err
}

// ThreadToChange reads a thread the engine is about to change from the
// member this client talks to (a serializable read: no round to the
// cluster's leader), possibly a little behind; the commit's compare on the
// ModRevision refuses a decision made on a stale record
// (engine.ChangeReader).
func (s *Store) ThreadToChange(ctx context.Context, k engine.ThreadKey) (engine.Thread, error) {
	if err := validKey(k); err != nil {
		return engine.Thread{}, engine.ErrNotFound
	}
	t, _, err := s.readThread(ctx, k, clientv3.WithSerializable())
	return t, err
}

// FindIdentity returns the thread of a PSID.
func (s *Store) FindIdentity(ctx context.Context, psid string) (engine.ThreadKey, error) {
	if validID(psid) != nil {
		return engine.ThreadKey{}, engine.ErrNotFound
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	prefix := s.key("identities", psid) + "/"
	resp, err := s.cli.Get(c, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(2))
	if err != nil {
		return engine.ThreadKey{}, s.unavailable(err, "looking up identity")
	}
	switch len(resp.Kvs) {
	case 0:
		return engine.ThreadKey{}, engine.ErrNotFound
	case 1:
		return engine.ThreadKey{PageID: strings.TrimPrefix(string(resp.Kvs[0].Key), prefix), PSID: psid}, nil
	}
	return engine.ThreadKey{}, fmt.Errorf("%w: %s", engine.ErrAmbiguous, psid)
}

// errRetry is a transaction refused for a reason other than the thread's
// revision (two instances picked the same new queue or inbox key): it is
// built and tried again.
var errRetry = errors.New("retry")

// Commit applies c atomically (see engine.Commit): one transaction that
// compares the thread's ModRevision with the one its expected revision was
// read at.
func (s *Store) Commit(ctx context.Context, c *engine.Commit) error {
	if err := validateCommit(c); err != nil {
		return err
	}
	start := time.Now()
	collisions := 0
	for n := 1; collisions < 64; n++ {
		err := s.commitOnce(ctx, c)
		var amb *ambiguousError
		switch {
		case errors.As(err, &amb):
		case errors.Is(err, ErrUnavailable) && ctx.Err() == nil && !s.closed.Load():
			amb = &ambiguousError{err} // a read before the transaction failed: try again
		}
		switch {
		case amb != nil:
			// etcd did not answer (a member went down, a leader election):
			// whether the transaction was applied is unknown. Look, and
			// try again if it was not, for as long as a request may take.
			if time.Since(start) > s.opts.RequestTimeout || ctx.Err() != nil {
				return s.unavailable(amb.err, "committing")
			}
			s.pause(ctx, n)
			landed, verr := s.landed(ctx, c)
			if verr == nil && landed {
				return nil
			}
			if verr != nil && !errors.As(verr, &amb) {
				return verr
			}
		case err != errRetry:
			return err
		default:
			collisions++
		}
	}
	return fmt.Errorf("%w: committing: new queue keys kept colliding", ErrUnavailable)
}

// ambiguousError is a request etcd did not answer: applied or not.
type ambiguousError struct{ err error }

func (e *ambiguousError) Error() string { return "no answer from etcd: " + e.err.Error() }

// pause waits before the n-th try of a request etcd did not answer.
func (s *Store) pause(ctx context.Context, n int) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(min(n, 5)) * 50 * time.Millisecond):
	}
}

// landed reports whether a commit etcd did not answer was applied: the
// thread is at the commit's revision with its record, or the contents it
// enqueued are queued. A thread at the expected revision, or a commit
// whose writes are all idempotent, is not (and is tried again); a thread
// elsewhere is a conflict.
func (s *Store) landed(ctx context.Context, c *engine.Commit) (bool, error) {
	if t := c.Thread; t != nil {
		cur, _, err := s.readThread(ctx, t.Key())
		switch {
		case errors.Is(err, engine.ErrNotFound) && c.Expect == 0:
			return false, nil
		case err != nil && !errors.Is(err, engine.ErrNotFound):
			return false, &ambiguousError{err}
		case err == nil && cur.Revision == t.Revision && cur.State == t.State && cur.UpdatedAt.Equal(t.UpdatedAt):
			return true, nil
		case err == nil && cur.Revision == c.Expect:
			return false, nil
		}
		return false, fmt.Errorf("%w: thread %s changed while etcd did not answer", engine.ErrConflict, t.Key())
	}
	if len(c.Enqueue) > 0 {
		q, err := s.Queue(ctx, c.Key)
		if err != nil {
			return false, &ambiguousError{err}
		}
		return slices.ContainsFunc(q, func(ct engine.Content) bool { return ct.ID == c.Enqueue[0] }), nil
	}
	return false, nil
}

func (s *Store) commitOnce(ctx context.Context, c *engine.Commit) error {
	var (
		cmps []clientv3.Cmp
		ops  []clientv3.Op
		mod  int64
	)
	key := c.Key
	leaseID, _ := s.lease()
	if t := c.Thread; t != nil {
		key = t.Key()
		k := s.threadKey(key)
		var old *engine.Thread
		if c.Expect == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		} else {
			var ok bool
			mod, ok = s.revs.get(key, c.Expect)
			old = c.Prev
			if !ok || old == nil {
				cur, m, err := s.readThread(ctx, key)
				switch {
				case errors.Is(err, engine.ErrNotFound):
					return fmt.Errorf("%w: thread %s does not exist", engine.ErrConflict, key)
				case err != nil:
					return err
				case cur.Revision != c.Expect:
					return fmt.Errorf("%w: thread %s is at revision %d, not %d", engine.ErrConflict, key, cur.Revision, c.Expect)
				}
				mod = m
				if old == nil {
					old = &cur
				}
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", mod))
		}
		ops = append(ops, s.threadOps(old, t)...)
		for _, h := range c.History {
			ops = append(ops, clientv3.OpPut(s.historyKey(key, h.Revision), string(store.EncodeHistory(&h))))
			if keep := uint64(c.KeepHistory); keep > 0 && h.Revision > keep {
				ops = append(ops, clientv3.OpDelete(s.historyKey(key, h.Revision-keep)))
			}
		}
		if c.ResolveIntent {
			ops = append(ops, clientv3.OpDelete(s.key("intents", tk(key))), clientv3.OpDelete(s.key("claims", "intents", tk(key))))
		}
	}
	for _, ct := range c.Contents {
		ct.V = engine.FormatVersion
		v, err := encodeJSON(ct)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.key("contents", ct.ID), v))
	}
	for _, iv := range c.Interventions {
		iv.V = engine.FormatVersion
		v, err := encodeJSON(iv)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.key("interventions", iv.ID), v))
	}
	consumed := map[uint64]bool{}
	for _, seq := range c.Consume {
		if !consumed[seq] {
			consumed[seq] = true
			ops = append(ops, clientv3.OpDelete(s.key("inbox", hex16(seq))), clientv3.OpDelete(s.key("claims", "inbox", hex16(seq))))
		}
	}
	if len(c.Enqueue)+len(c.Dequeue) > 0 {
		qops, qcmps, err := s.queueOps(ctx, key, c.Enqueue, c.Dequeue, leaseID)
		if err != nil {
			return err
		}
		ops, cmps = append(ops, qops...), append(cmps, qcmps...)
	}
	if len(ops)+len(cmps) > s.opts.MaxTxnOps {
		return fmt.Errorf("store: a commit of %d operations exceeds etcd's %d per transaction (--max-txn-ops)", len(ops)+len(cmps), s.opts.MaxTxnOps)
	}
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		if c.Thread != nil {
			s.revs.drop(key) // whether it was written is unknown
		}
		if ctx.Err() != nil || s.closed.Load() {
			return s.unavailable(err, "committing")
		}
		return &ambiguousError{err}
	}
	if !resp.Succeeded {
		if c.Thread == nil {
			return errRetry
		}
		// The thread's revision, or a new queue key: which?
		cur, m, err := s.readThread(ctx, key)
		switch {
		case errors.Is(err, engine.ErrNotFound) && c.Expect == 0:
			return errRetry
		case errors.Is(err, engine.ErrNotFound):
			return fmt.Errorf("%w: thread %s does not exist", engine.ErrConflict, key)
		case err != nil:
			return err
		case c.Expect == 0:
			return fmt.Errorf("%w: thread %s exists", engine.ErrConflict, key)
		case m != mod || cur.Revision != c.Expect:
			return fmt.Errorf("%w: thread %s is at revision %d, not %d", engine.ErrConflict, key, cur.Revision, c.Expect)
		}
		return errRetry
	}
	if c.Thread != nil {
		s.revs.put(key, c.Thread.Revision, resp.Header.Revision)
	}
	return nil
}

// threadOps writes a thread and keeps its indexes (identity, state, timers)
// in step with the previous record old (nil for a new thread).
func (s *Store) threadOps(old, t *engine.Thread) []clientv3.Op {
	k := t.Key()
	t.V = engine.FormatVersion
	ops := []clientv3.Op{clientv3.OpPut(s.threadKey(k), string(store.EncodeThread(t)))}
	if old == nil {
		ops = append(ops, clientv3.OpPut(s.key("identities", k.PSID, k.PageID), ""))
	}
	if old == nil || old.State != t.State {
		if old != nil {
			ops = append(ops, clientv3.OpDelete(s.stateKey(string(old.State), k)))
		}
		ops = append(ops, clientv3.OpPut(s.stateKey(string(t.State), k), ""))
	}
	var before, after []string
	if old != nil {
		for _, tm := range old.Timers() {
			before = append(before, s.timerKey(tm))
		}
	}
	for _, tm := range t.Timers() {
		after = append(after, s.timerKey(tm))
	}
	for _, b := range before {
		if !slices.Contains(after, b) {
			ops = append(ops, clientv3.OpDelete(b))
		}
	}
	for _, a := range after {
		if !slices.Contains(before, a) {
			ops = append(ops, clientv3.OpPut(a, ""))
		}
	}
	return ops
}

// queueOps changes a thread's queue: the dequeued ids' keys are deleted,
// the enqueued ones appended after the last key (compared absent, in case
// another instance appends at once), and the queue claimed by this
// instance — or its claim released when the queue empties.
func (s *Store) queueOps(ctx context.Context, k engine.ThreadKey, enqueue, dequeue []string, lease clientv3.LeaseID) ([]clientv3.Op, []clientv3.Cmp, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	prefix := s.key("queue", tk(k)) + "/"
	resp, err := s.cli.Get(c, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, s.unavailable(err, "reading the queue")
	}
	var ops []clientv3.Op
	var cmps []clientv3.Cmp
	left := 0
	var last uint64
	for _, kv := range resp.Kvs {
		if n, err := parseHex16(strings.TrimPrefix(string(kv.Key), prefix)); err == nil && n > last {
			last = n
		}
		if slices.Contains(dequeue, string(kv.Value)) {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		} else {
			left++
		}
	}
	for _, id := range enqueue {
		last++
		qk := prefix + hex16(last)
		ops = append(ops, clientv3.OpPut(qk, id))
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(qk), "=", 0))
	}
	claim := s.key("claims", "queue", tk(k))
	switch {
	case len(enqueue) > 0:
		ops = append(ops, clientv3.OpPut(claim, leaseHex(lease), clientv3.WithLease(lease)))
	case left == 0:
		ops = append(ops, clientv3.OpDelete(claim))
	}
	return ops, cmps, nil
}

func leaseHex(id clientv3.LeaseID) string { return fmt.Sprintf("%x", int64(id)) }

// validateCommit checks the commit's rules (engine.Commit.Valid) and this
// store's key layout.
func validateCommit(c *engine.Commit) error {
	for _, ct := range c.Contents {
		if err := validID(ct.ID); err != nil {
			return err
		}
	}
	for _, iv := range c.Interventions {
		if err := validID(iv.ID); err != nil {
			return err
		}
	}
	if err := c.Valid(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	switch {
	case c.Thread != nil:
		return validKey(c.Thread.Key())
	case len(c.Enqueue)+len(c.Dequeue) > 0:
		return validKey(c.Key)
	}
	return nil
}

// freshIntent is how long another live instance's intent on a thread keeps
// this instance from making a Graph call on it: longer than a Graph call
// takes, short enough that an intent its live instance left unresolved
// (the call never made) does not block the thread for long.
const freshIntent = 30 * time.Second

// PutIntent records a Graph call about to be made, claimed by this
// instance, if the thread is still at the intent's revision and no other
// live instance is making a call on it (its intent is fresh and claimed):
// so two instances never call Meta about one thread at once.
func (s *Store) PutIntent(ctx context.Context, in engine.Intent) error {
	if err := validKey(in.Key); err != nil {
		return err
	}
	in.V = engine.FormatVersion
	v, err := encodeJSON(in)
	if err != nil {
		return err
	}
	start := time.Now()
	for n := 1; ; n++ {
		err := s.putIntentOnce(ctx, in, v)
		var amb *ambiguousError
		switch {
		case errors.As(err, &amb):
		case errors.Is(err, ErrUnavailable) && ctx.Err() == nil && !s.closed.Load():
			amb = &ambiguousError{err} // a read before the transaction failed: try again
		default:
			return err
		}
		if time.Since(start) > s.opts.RequestTimeout || ctx.Err() != nil {
			return s.unavailable(amb.err, "recording an intent")
		}
		s.pause(ctx, n)
		// Applied already? The intent is then ours, as written.
		vals, gerr := s.getMany(ctx, []string{s.key("intents", tk(in.Key)), s.key("claims", "intents", tk(in.Key))})
		if _, me := s.lease(); gerr == nil && string(vals[0]) == v && string(vals[1]) == me {
			return nil
		}
	}
}

func (s *Store) putIntentOnce(ctx context.Context, in engine.Intent, v string) error {
	mod, ok := s.revs.get(in.Key, in.Revision)
	if !ok {
		cur, m, err := s.readThread(ctx, in.Key)
		if err != nil {
			return err
		}
		if cur.Revision != in.Revision {
			return fmt.Errorf("%w: thread %s is at revision %d, not %d", engine.ErrConflict, in.Key, cur.Revision, in.Revision)
		}
		mod = m
	}
	ik, ck := s.key("intents", tk(in.Key)), s.key("claims", "intents", tk(in.Key))
	lease, me := s.lease()
	c, cancel := s.ctx(ctx)
	defer cancel()
	// The intent and its claim as they are, to compare unchanged.
	cur, err := s.cli.Txn(c).Then(clientv3.OpGet(ik), clientv3.OpGet(ck)).Commit()
	if err != nil {
		return s.unavailable(err, "reading an intent")
	}
	var imod, cmod int64
	if kvs := cur.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		imod = kvs[0].ModRevision
		var other engine.Intent
		claims := cur.Responses[1].GetResponseRange().Kvs
		if len(claims) > 0 && string(claims[0].Value) != me && json.Unmarshal(kvs[0].Value, &other) == nil && time.Since(other.At) < freshIntent {
			return fmt.Errorf("%w: another instance (%s) is making a Graph call on thread %s", engine.ErrConflict, claims[0].Value, in.Key)
		}
	}
	if kvs := cur.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		cmod = kvs[0].ModRevision
	}
	resp, err := s.cli.Txn(c).If(
		clientv3.Compare(clientv3.ModRevision(s.threadKey(in.Key)), "=", mod),
		clientv3.Compare(clientv3.ModRevision(ik), "=", imod),
		clientv3.Compare(clientv3.ModRevision(ck), "=", cmod),
	).Then(
		clientv3.OpPut(ik, v),
		clientv3.OpPut(ck, me, clientv3.WithLease(lease)),
	).Commit()
	if err != nil {
		if ctx.Err() != nil || s.closed.Load() {
			return s.unavailable(err, "recording an intent")
		}
		return &ambiguousError{err}
	}
	if !resp.Succeeded {
		s.revs.drop(in.Key)
		return fmt.Errorf("%w: thread %s changed since revision %d was read", engine.ErrConflict, in.Key, in.Revision)
	}
	return nil
}

// mine lists the keys under claims/<kind>/ that this instance's lease holds
// (as the rest of the key after that prefix).
func (s *Store) claimed(ctx context.Context, kind string) (mine, any map[string]bool, err error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	prefix := s.key("claims", kind) + "/"
	resp, err := s.cli.Get(c, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, s.unavailable(err, "reading claims")
	}
	_, me := s.lease()
	mine, any = map[string]bool{}, map[string]bool{}
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), prefix)
		any[k] = true
		if string(kv.Value) == me {
			mine[k] = true
		}
	}
	return mine, any, nil
}

// Intents returns the outstanding Graph call intents this instance claims.
func (s *Store) Intents(ctx context.Context) ([]engine.Intent, error) {
	all, err := s.allIntents(ctx)
	if err != nil {
		return nil, err
	}
	mine, _, err := s.claimed(ctx, "intents")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(in engine.Intent) bool { return !mine[tk(in.Key)] }), nil
}

func (s *Store) allIntents(ctx context.Context) ([]engine.Intent, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.key("intents")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.unavailable(err, "reading intents")
	}
	var out []engine.Intent
	for _, kv := range resp.Kvs {
		var in engine.Intent
		if err := decodeJSON(kv.Value, &in, func() int { return in.V }, "intent"); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// TimersBetween returns up to limit durable timers due in (after, before],
// earliest first, from the due-ordered index.
func (s *Store) TimersBetween(ctx context.Context, after, before time.Time, limit int) ([]engine.Timer, error) {
	prefix := s.key("timers") + "/"
	from := prefix
	if !after.IsZero() {
		from = prefix + hex16(uint64(after.UnixNano())+1)
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	if b := before.UnixNano(); b >= 0 && b < 1<<62 {
		end = prefix + hex16(uint64(b)+1)
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly()}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.cli.Get(c, from, opts...)
	if err != nil {
		return nil, s.unavailable(err, "reading timers")
	}
	out := make([]engine.Timer, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		t, err := parseTimer(strings.TrimPrefix(string(kv.Key), prefix))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// History returns a thread's entries below revision before (0: from the
// newest), newest first.
func (s *Store) History(ctx context.Context, k engine.ThreadKey, before uint64, limit int) ([]engine.HistoryEntry, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Do(c, s.historyOp(k, before, limit))
	if err != nil {
		return nil, s.unavailable(err, "reading history")
	}
	return decodeHistories(resp.Get().Kvs)
}

// historyOp reads up to limit (default 20) of a thread's history entries
// below revision before (0: from the newest), newest first.
func (s *Store) historyOp(k engine.ThreadKey, before uint64, limit int) clientv3.Op {
	if limit <= 0 {
		limit = 20
	}
	prefix := s.key("history", tk(k)) + "/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	if before != 0 {
		end = prefix + hex16(before)
	}
	return clientv3.OpGet(prefix, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
}

// decodeHistories decodes the entries a historyOp read.
func decodeHistories(kvs []*mvccpb.KeyValue) ([]engine.HistoryEntry, error) {
	out := make([]engine.HistoryEntry, 0, len(kvs))
	for _, kv := range kvs {
		var h engine.HistoryEntry
		if err := store.DecodeHistory(kv.Value, &h); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// getMany reads keys in transactions of at most MaxTxnOps reads; a missing
// key reads as nil.
func (s *Store) getMany(ctx context.Context, keys []string, opts ...clientv3.OpOption) ([][]byte, error) {
	out := make([][]byte, 0, len(keys))
	for chunk := range slices.Chunk(keys, s.opts.MaxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			ops[i] = clientv3.OpGet(k, opts...)
		}
		c, cancel := s.ctx(ctx)
		resp, err := s.cli.Txn(c).Then(ops...).Commit()
		cancel()
		if err != nil {
			return nil, s.unavailable(err, "reading")
		}
		for _, r := range resp.Responses {
			var v []byte
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				v = kvs[0].Value
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// deleteAll deletes keys in transactions of at most MaxTxnOps.
func (s *Store) deleteAll(ctx context.Context, keys []string) error {
	for chunk := range slices.Chunk(keys, s.opts.MaxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			ops[i] = clientv3.OpDelete(k)
		}
		c, cancel := s.ctx(ctx)
		_, err := s.cli.Txn(c).Then(ops...).Commit()
		cancel()
		if err != nil {
			return s.unavailable(err, "deleting")
		}
	}
	return nil
}

// ListThreads lists threads by state and/or page from an index range.
func (s *Store) ListThreads(ctx context.Context, f engine.ListFilter) ([]engine.Thread, string, error) {
	limit := f.Limit
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	base := s.key("threads") + "/"
	if f.State != "" {
		base = s.key("by_state", string(f.State)) + "/"
	}
	prefix := base
	if f.PageID != "" {
		prefix += f.PageID + "/"
	}
	from := prefix
	if f.After != "" {
		raw, err := base64.RawURLEncoding.DecodeString(f.After)
		after := string(raw)
		if _, ok := parseThreadKey(strings.TrimPrefix(s.pfx+after, base)); err != nil || !ok || !strings.HasPrefix(s.pfx+after, prefix) {
			return nil, "", fmt.Errorf("%w: %q", engine.ErrBadCursor, f.After)
		}
		// The cursor is the last index key listed, after the store's
		// prefix; the list goes on at the first key after it.
		from = s.pfx + after + "\x00"
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithKeysOnly(), clientv3.WithLimit(int64(limit+1)))
	if err != nil {
		return nil, "", s.unavailable(err, "listing threads")
	}
	kvs := resp.Kvs
	next := ""
	if len(kvs) > limit {
		kvs = kvs[:limit]
		next = base64.RawURLEncoding.EncodeToString([]byte(strings.TrimPrefix(string(kvs[limit-1].Key), s.pfx)))
	}
	keys := make([]string, len(kvs))
	for i, kv := range kvs {
		k, ok := parseThreadKey(strings.TrimPrefix(string(kv.Key), base))
		if !ok {
			return nil, "", fmt.Errorf("index entry %q names no thread", kv.Key)
		}
		keys[i] = s.threadKey(k)
	}
	vals, err := s.getMany(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	out := make([]engine.Thread, 0, len(vals))
	for i, v := range vals {
		if v == nil {
			continue // changed state since the index was read
		}
		t, err := store.DecodeThread(v, keys[i])
		if err != nil {
			return nil, "", err
		}
		out = append(out, t)
	}
	return out, next, nil
}

// StateCounts counts the by-state index's keys of each state.
func (s *Store) StateCounts(ctx context.Context) (map[states.State]int, error) {
	ops := make([]clientv3.Op, len(states.All))
	for i, st := range states.All {
		ops[i] = clientv3.OpGet(s.key("by_state", string(st))+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(c).Then(ops...).Commit()
	if err != nil {
		return nil, s.unavailable(err, "counting threads")
	}
	out := map[states.State]int{}
	for i, r := range resp.Responses {
		out[states.All[i]] = int(r.GetResponseRange().Count)
	}
	return out, nil
}

// Queue returns a thread's contents awaiting synchronisation, oldest first.
func (s *Store) Queue(ctx context.Context, k engine.ThreadKey) ([]engine.Content, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.key("queue", tk(k))+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.unavailable(err, "reading the queue")
	}
	return s.queuedContents(ctx, resp.Kvs)
}

// queuedContents reads the contents a thread's queue entries name, as of
// the revision given in opts (none: the newest).
func (s *Store) queuedContents(ctx context.Context, queue []*mvccpb.KeyValue, opts ...clientv3.OpOption) ([]engine.Content, error) {
	keys := make([]string, len(queue))
	for i, kv := range queue {
		keys[i] = s.key("contents", string(kv.Value))
	}
	vals, err := s.getMany(ctx, keys, opts...)
	if err != nil {
		return nil, err
	}
	out := make([]engine.Content, 0, len(vals))
	for i, v := range vals {
		if v == nil {
			return nil, fmt.Errorf("queued content %s: %w", keys[i], engine.ErrNotFound)
		}
		var ct engine.Content
		if err := decodeJSON(v, &ct, func() int { return ct.V }, "content"); err != nil {
			return nil, err
		}
		out = append(out, ct)
	}
	return out, nil
}

// ThreadView reads a thread, its queue and some of its history in one
// transaction (one revision), then the queued contents at that revision.
func (s *Store) ThreadView(ctx context.Context, k engine.ThreadKey, before uint64, limit int) (engine.ThreadView, error) {
	var tv engine.ThreadView
	if err := validKey(k); err != nil {
		return tv, engine.ErrNotFound
	}
	c, cancel := s.ctx(ctx)
	resp, err := s.cli.Txn(c).Then(
		clientv3.OpGet(s.threadKey(k)),
		clientv3.OpGet(s.key("queue", tk(k))+"/", clientv3.WithPrefix()),
		s.historyOp(k, before, limit),
	).Commit()
	cancel()
	if err != nil {
		return tv, s.unavailable(err, "reading thread "+k.String())
	}
	thread := resp.Responses[0].GetResponseRange().Kvs
	if len(thread) == 0 {
		return tv, engine.ErrNotFound
	}
	if tv.Thread, err = store.DecodeThread(thread[0].Value, "thread "+k.String()); err != nil {
		return tv, err
	}
	s.revs.put(k, tv.Thread.Revision, thread[0].ModRevision)
	if tv.Queue, err = s.queuedContents(ctx, resp.Responses[1].GetResponseRange().Kvs, clientv3.WithRev(resp.Header.Revision)); err != nil {
		return tv, err
	}
	tv.History, err = decodeHistories(resp.Responses[2].GetResponseRange().Kvs)
	return tv, err
}

// queuedThreads lists the threads with queued contents.
func (s *Store) queuedThreads(ctx context.Context) ([]engine.ThreadKey, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	prefix := s.key("queue") + "/"
	resp, err := s.cli.Get(c, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, s.unavailable(err, "reading queues")
	}
	var out []engine.ThreadKey
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), prefix)
		i := strings.LastIndexByte(rest, '/')
		if i < 0 {
			return nil, fmt.Errorf("queue key %q", kv.Key)
		}
		k, ok := parseThreadKey(rest[:i])
		if !ok {
			return nil, fmt.Errorf("queue key %q", kv.Key)
		}
		if n := len(out); n == 0 || out[n-1] != k {
			out = append(out, k)
		}
	}
	return out, nil
}

// QueuedThreads returns the threads whose queues this instance claims.
func (s *Store) QueuedThreads(ctx context.Context) ([]engine.ThreadKey, error) {
	all, err := s.queuedThreads(ctx)
	if err != nil {
		return nil, err
	}
	mine, _, err := s.claimed(ctx, "queue")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(k engine.ThreadKey) bool { return !mine[tk(k)] }), nil
}

// Content returns a content by id.
func (s *Store) Content(ctx context.Context, id string) (engine.Content, error) {
	var ct engine.Content
	err := s.getJSON(ctx, "contents", id, &ct, func() int { return ct.V })
	return ct, err
}

// Intervention returns an intervention by id.
func (s *Store) Intervention(ctx context.Context, id string) (engine.Intervention, error) {
	var iv engine.Intervention
	err := s.getJSON(ctx, "interventions", id, &iv, func() int { return iv.V })
	return iv, err
}

func (s *Store) getJSON(ctx context.Context, kind, id string, v any, version func() int) error {
	if validID(id) != nil {
		return engine.ErrNotFound
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.key(kind, id))
	if err != nil {
		return s.unavailable(err, "reading "+kind)
	}
	if len(resp.Kvs) == 0 {
		return engine.ErrNotFound
	}
	return decodeJSON(resp.Kvs[0].Value, v, version, kind+" "+id)
}

// Accept makes webhook events durable, claimed by this instance, in one
// transaction. Sequence numbers are milliseconds since the epoch shifted
// left 20 bits plus a per-instance counter: unique with the keys compared
// absent, and in the order each instance accepted them.
func (s *Store) Accept(ctx context.Context, events []engine.Notice) ([]uint64, error) {
	if len(events) == 0 {
		return nil, nil
	}
	now := time.Now()
	for range 8 {
		lease, me := s.lease()
		seqs := s.nextSeqs(now, len(events))
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for i, n := range events {
			v, err := encodeJSON(engine.Accepted{V: engine.FormatVersion, Seq: seqs[i], Notice: n, At: now})
			if err != nil {
				return nil, err
			}
			k := s.key("inbox", hex16(seqs[i]))
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			ops = append(ops, clientv3.OpPut(k, v), clientv3.OpPut(s.key("claims", "inbox", hex16(seqs[i])), me, clientv3.WithLease(lease)))
		}
		if len(ops)+len(cmps) > s.opts.MaxTxnOps {
			return nil, fmt.Errorf("store: %d webhook events in one delivery exceed etcd's %d operations per transaction", len(events), s.opts.MaxTxnOps)
		}
		resp, err := s.acceptTxn(ctx, cmps, ops, s.key("inbox", hex16(seqs[0])), me)
		if err != nil {
			return nil, err
		}
		if resp {
			return seqs, nil
		}
	}
	return nil, fmt.Errorf("%w: accepting webhook events: sequence numbers kept colliding", ErrUnavailable)
}

// acceptTxn runs Accept's transaction; when etcd does not answer, it looks
// whether the first event's claim is this instance's (then it was
// applied), and tries again if not, for as long as a request may take.
func (s *Store) acceptTxn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op, first, me string) (bool, error) {
	start := time.Now()
	for n := 1; ; n++ {
		c, cancel := s.ctx(ctx)
		resp, err := s.cli.Txn(c).If(cmps...).Then(ops...).Commit()
		cancel()
		if err == nil {
			return resp.Succeeded, nil
		}
		if ctx.Err() != nil || s.closed.Load() || time.Since(start) > s.opts.RequestTimeout {
			return false, s.unavailable(err, "accepting webhook events")
		}
		s.pause(ctx, n)
		claim := strings.Replace(first, s.key("inbox")+"/", s.key("claims", "inbox")+"/", 1)
		if vals, gerr := s.getMany(ctx, []string{claim}); gerr == nil && string(vals[0]) == me {
			return true, nil
		}
	}
}

func (s *Store) nextSeqs(now time.Time, n int) []uint64 {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	base := uint64(now.UnixMilli())<<20 | uint64(s.session().Lease())&0xfff<<8
	if base <= s.lastSeq {
		base = s.lastSeq + 1
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = base + uint64(i)
	}
	s.lastSeq = out[n-1]
	return out
}

// Accepted returns the accepted events this instance claims, oldest first.
func (s *Store) Accepted(ctx context.Context) ([]engine.Accepted, error) {
	all, err := s.allAccepted(ctx)
	if err != nil {
		return nil, err
	}
	mine, _, err := s.claimed(ctx, "inbox")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(a engine.Accepted) bool { return !mine[hex16(a.Seq)] }), nil
}

func (s *Store) allAccepted(ctx context.Context) ([]engine.Accepted, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.key("inbox")+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, s.unavailable(err, "reading accepted webhook events")
	}
	out := make([]engine.Accepted, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var a engine.Accepted
		if err := decodeJSON(kv.Value, &a, func() int { return a.V }, "accepted webhook event"); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// PruneHistory reads at most budget history entries from cursor on and
// deletes those beyond the newest keep of their thread, or written before
// olderThan; each thread's newest entry is kept.
func (s *Store) PruneHistory(ctx context.Context, cursor string, keep int, olderThan time.Time, budget int) (string, int, error) {
	prefix := s.key("history") + "/"
	from, err := s.cursorKey(cursor, prefix)
	if err != nil {
		return "", 0, err
	}
	c, cancel := s.ctx(ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(int64(budget + 1))}
	if keep > 0 && olderThan.IsZero() {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	resp, err := s.cli.Get(c, from, opts...)
	if err != nil {
		return "", 0, s.unavailable(err, "reading history")
	}
	kvs := resp.Kvs
	next := ""
	if len(kvs) > budget {
		next = base64.RawURLEncoding.EncodeToString([]byte(strings.TrimPrefix(string(kvs[budget].Key), s.pfx)))
		kvs = kvs[:budget]
	}
	// The newest revision of each thread met.
	type entry struct {
		key    string
		thread engine.ThreadKey
		rev    uint64
		value  []byte
	}
	var entries []entry
	var threads []string
	latest := map[engine.ThreadKey]uint64{}
	for _, kv := range kvs {
		rest := strings.TrimPrefix(string(kv.Key), prefix)
		i := strings.LastIndexByte(rest, '/')
		if i < 0 {
			return "", 0, fmt.Errorf("history key %q", kv.Key)
		}
		k, ok := parseThreadKey(rest[:i])
		rev, err := parseHex16(rest[i+1:])
		if !ok || err != nil {
			return "", 0, fmt.Errorf("history key %q", kv.Key)
		}
		if _, seen := latest[k]; !seen {
			latest[k] = 0
			threads = append(threads, s.threadKey(k))
		}
		entries = append(entries, entry{string(kv.Key), k, rev, kv.Value})
	}
	vals, err := s.getMany(ctx, threads)
	if err != nil {
		return "", 0, err
	}
	for i, v := range vals {
		if len(v) >= 8 {
			k, _ := parseThreadKey(strings.TrimPrefix(threads[i], s.key("threads")+"/"))
			latest[k] = binary.BigEndian.Uint64(v[:8])
		}
	}
	var drop []string
	for _, e := range entries {
		last := latest[e.thread]
		switch {
		case e.rev >= last:
			// The newest entry (or one of a thread not found) stays.
		case keep > 0 && e.rev+uint64(keep) <= last:
			drop = append(drop, e.key)
		case !olderThan.IsZero():
			var h engine.HistoryEntry
			if err := store.DecodeHistory(e.value, &h); err != nil {
				return "", 0, err
			}
			if h.At.Before(olderThan) {
				drop = append(drop, e.key)
			}
		}
	}
	return next, len(drop), s.deleteAll(ctx, drop)
}

// cursorKey is the key a prune cursor names, under prefix.
func (s *Store) cursorKey(cursor, prefix string) (string, error) {
	if cursor == "" {
		return prefix, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || !strings.HasPrefix(s.pfx+string(raw), prefix) {
		return "", fmt.Errorf("%w: %q", engine.ErrBadCursor, cursor)
	}
	return s.pfx + string(raw), nil
}

// PruneRecords reads at most budget contents or interventions from cursor
// on, oldest first (their ids begin with their creation time), and deletes
// the synced or failed contents, or closed interventions, created before
// olderThan.
func (s *Store) PruneRecords(ctx context.Context, kind, cursor string, olderThan time.Time, budget int) (string, int, error) {
	if kind != engine.RecordContents && kind != engine.RecordInterventions {
		return "", 0, fmt.Errorf("store: unknown kind of record %q", kind)
	}
	prefix := s.key(kind) + "/"
	from, err := s.cursorKey(cursor, prefix)
	if err != nil {
		return "", 0, err
	}
	cutoff := prefix + hex.EncodeToString(binary.BigEndian.AppendUint32(nil, uint32(olderThan.Unix())))
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, from, clientv3.WithRange(cutoff), clientv3.WithLimit(int64(budget+1)))
	if err != nil {
		return "", 0, s.unavailable(err, "reading "+kind)
	}
	kvs := resp.Kvs
	next := ""
	if len(kvs) > budget {
		next = base64.RawURLEncoding.EncodeToString([]byte(strings.TrimPrefix(string(kvs[budget].Key), s.pfx)))
		kvs = kvs[:budget]
	}
	var drop []string
	for _, kv := range kvs {
		done := false
		if kind == engine.RecordContents {
			var ct engine.Content
			if err := decodeJSON(kv.Value, &ct, func() int { return ct.V }, "content"); err != nil {
				return "", 0, err
			}
			done = ct.Status == engine.SyncSynced || ct.Status == engine.SyncFailed
		} else {
			var iv engine.Intervention
			if err := decodeJSON(kv.Value, &iv, func() int { return iv.V }, "intervention"); err != nil {
				return "", 0, err
			}
			done = iv.Status == engine.InterventionClosed
		}
		if done {
			drop = append(drop, string(kv.Key))
		}
	}
	return next, len(drop), s.deleteAll(ctx, drop)
}

// Restored reports whether the restored-from-backup mark is set (a bbolt
// backup loaded into etcd by a tool); Reconciled clears it.
func (s *Store) Restored(ctx context.Context) (bool, error) {
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(c, s.key("meta", "restored"), clientv3.WithCountOnly())
	if err != nil {
		return false, s.unavailable(err, "reading the store's marks")
	}
	return resp.Count > 0, nil
}

// Reconciled clears the restored mark.
func (s *Store) Reconciled(ctx context.Context) error {
	c, cancel := s.ctx(ctx)
	defer cancel()
	if _, err := s.cli.Delete(c, s.key("meta", "restored")); err != nil {
		return s.unavailable(err, "clearing the restored mark")
	}
	return nil
}
