package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// A thread's stored value is its revision (8 bytes, big endian) followed by
// the record (codec.go; JSON from earlier versions), so that a commit checks
// the revision without decoding.

func encodeThread(t *engine.Thread) ([]byte, error) {
	t.V = engine.FormatVersion
	b := marshalThread(t)
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(b)), t.Revision), b...), nil
}

func decodeThread(raw []byte, what string) (engine.Thread, error) {
	var t engine.Thread
	if len(raw) < 9 {
		return t, fmt.Errorf("decoding %s: value of %d bytes is too short", what, len(raw))
	}
	var err error
	if raw[8] == binaryTag {
		err = unmarshalThread(raw[8:], &t, what)
	} else {
		err = decode(raw[8:], &t, func() int { return t.V }, what)
	}
	if err != nil {
		return t, err
	}
	if rev := binary.BigEndian.Uint64(raw[:8]); rev != t.Revision {
		return t, fmt.Errorf("decoding %s: stored under revision %d, record says %d", what, rev, t.Revision)
	}
	return t, nil
}

func getThread(r reader, k engine.ThreadKey) (engine.Thread, error) {
	raw := r.get(bThreads, threadKey(k))
	if raw == nil {
		return engine.Thread{}, engine.ErrNotFound
	}
	return decodeThread(raw, "thread "+k.String())
}

// forEach calls fn for every key of bucket b with prefix, in order, until fn
// returns an error.
func forEach(r reader, b bucketID, prefix []byte, fn func(k, v []byte) error) error {
	var err error
	r.ascend(b, prefix, nil, func(k, v []byte) bool {
		err = fn(k, v)
		return err == nil
	})
	return err
}

// Pages returns every page.
func (s *DB) Pages(ctx context.Context) ([]engine.Page, error) {
	var out []engine.Page
	err := s.read(func(v *view) error {
		return forEach(v, bPages, nil, func(k, raw []byte) error {
			var p engine.Page
			if err := decode(raw, &p, func() int { return p.V }, "page "+string(k)); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// PutPage creates or replaces a page.
func (s *DB) PutPage(ctx context.Context, p engine.Page) error {
	if p.ID == "" {
		return fmt.Errorf("page has no id")
	}
	p.V = engine.FormatVersion
	return s.update(ctx, noCheck, func(w *rw) error {
		return putJSON(w, bPages, []byte(p.ID), p)
	})
}

func noCheck(*rw) error { return nil }

// Thread returns a thread record.
func (s *DB) Thread(ctx context.Context, key engine.ThreadKey) (engine.Thread, error) {
	var t engine.Thread
	err := s.read(func(v *view) (err error) {
		t, err = getThread(v, key)
		return err
	})
	return t, err
}

// FindIdentity returns the thread of a PSID.
func (s *DB) FindIdentity(ctx context.Context, psid string) (engine.ThreadKey, error) {
	var found []engine.ThreadKey
	prefix := append([]byte(psid), 0)
	err := s.read(func(v *view) error {
		return forEach(v, bIdentities, prefix, func(k, _ []byte) error {
			found = append(found, engine.ThreadKey{PageID: string(k[len(prefix):]), PSID: psid})
			return nil
		})
	})
	switch {
	case err != nil:
		return engine.ThreadKey{}, err
	case len(found) == 0:
		return engine.ThreadKey{}, engine.ErrNotFound
	case len(found) > 1:
		return engine.ThreadKey{}, fmt.Errorf("%w: %s", engine.ErrAmbiguous, psid)
	}
	return found[0], nil
}

// Commit applies c atomically and durably (see engine.Commit). Values are
// encoded by the caller's goroutine; the commit loop only checks the
// revision and writes.
func (s *DB) Commit(ctx context.Context, c *engine.Commit) error {
	if err := validateCommit(c); err != nil {
		return err
	}
	enc, err := encodeCommit(c)
	if err != nil {
		return err
	}
	var old *engine.Thread
	check := func(w *rw) error {
		old = nil
		if c.Thread == nil {
			return nil
		}
		k := c.Thread.Key()
		raw := w.get(bThreads, threadKey(k))
		switch {
		case raw == nil && c.Expect != 0:
			return fmt.Errorf("%w: thread %s does not exist", engine.ErrConflict, k)
		case raw == nil:
			return nil
		case len(raw) < 8:
			return fmt.Errorf("thread %s: stored value is too short", k)
		}
		if rev := binary.BigEndian.Uint64(raw[:8]); rev != c.Expect {
			return fmt.Errorf("%w: thread %s is at revision %d, not %d", engine.ErrConflict, k, rev, c.Expect)
		}
		if c.Prev != nil {
			old = c.Prev
			return nil
		}
		cur, err := decodeThread(raw, "thread "+k.String())
		if err != nil {
			return err
		}
		old = &cur
		return nil
	}
	apply := func(w *rw) error {
		if c.Thread != nil {
			putThread(w, old, c.Thread, enc.thread)
			for i, h := range c.History {
				w.put(bHistory, historyKey(c.Thread.Key(), h.Revision), enc.history[i])
				if keep := uint64(c.KeepHistory); keep > 0 && h.Revision > keep {
					w.del(bHistory, historyKey(c.Thread.Key(), h.Revision-keep))
				}
			}
		}
		applyRecords(w, c, enc)
		return nil
	}
	return s.update(ctx, check, apply)
}

// encoded holds a commit's values, encoded before the commit loop sees it.
type encoded struct {
	thread        []byte
	history       [][]byte
	contents      [][]byte
	interventions [][]byte
}

func encodeCommit(c *engine.Commit) (*encoded, error) {
	enc := &encoded{}
	var err error
	if c.Thread != nil {
		if enc.thread, err = encodeThread(c.Thread); err != nil {
			return nil, err
		}
	}
	for _, h := range c.History {
		h.V = engine.FormatVersion
		enc.history = append(enc.history, marshalHistory(&h))
	}
	for _, ct := range c.Contents {
		ct.V = engine.FormatVersion
		b, err := json.Marshal(ct)
		if err != nil {
			return nil, err
		}
		enc.contents = append(enc.contents, b)
	}
	for _, iv := range c.Interventions {
		iv.V = engine.FormatVersion
		b, err := json.Marshal(iv)
		if err != nil {
			return nil, err
		}
		enc.interventions = append(enc.interventions, b)
	}
	return enc, nil
}

// validateCommit checks the commit's rules (engine.Commit.Valid) and this
// store's key layout.
func validateCommit(c *engine.Commit) error {
	if err := c.Valid(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	switch {
	case c.Thread != nil:
		if err := validKey(c.Thread.Key()); err != nil {
			return err
		}
	case len(c.Enqueue)+len(c.Dequeue) > 0:
		if err := validKey(c.Key); err != nil {
			return err
		}
	}
	return validQueueOwners(c)
}

func validQueueOwners(c *engine.Commit) error {
	for _, ct := range c.Contents {
		if ct.ID == "" {
			return fmt.Errorf("store: content without id")
		}
	}
	for _, iv := range c.Interventions {
		if iv.ID == "" {
			return fmt.Errorf("store: intervention without id")
		}
	}
	return nil
}

// putThread writes a thread and keeps its indexes (identity, state, counts,
// timers) in step with the previous record old (nil for a new thread).
func putThread(w *rw, old, t *engine.Thread, value []byte) {
	k := t.Key()
	w.put(bThreads, threadKey(k), value)
	if old == nil {
		w.put(bIdentities, identityKey(k), nil)
	}
	if old == nil || old.State != t.State {
		if old != nil {
			w.del(bByState, stateKey(old.State, k))
			addCount(w, old.State, -1)
		}
		w.put(bByState, stateKey(t.State, k), nil)
		addCount(w, t.State, 1)
	}
	syncTimers(w, old, t)
}

// syncTimers replaces the timer index entries of old by those of t.
func syncTimers(w *rw, old, t *engine.Thread) {
	var before [][]byte
	if old != nil {
		for _, tm := range old.Timers() {
			before = append(before, timerKey(tm))
		}
	}
	var after [][]byte
	for _, tm := range t.Timers() {
		after = append(after, timerKey(tm))
	}
	for _, k := range before {
		if !slices.ContainsFunc(after, func(a []byte) bool { return bytes.Equal(a, k) }) {
			w.del(bTimers, k)
		}
	}
	for _, k := range after {
		if !slices.ContainsFunc(before, func(a []byte) bool { return bytes.Equal(a, k) }) {
			w.put(bTimers, k, nil)
		}
	}
}

func addCount(w *rw, st states.State, d int64) {
	var n int64
	if v := w.get(bStateCounts, []byte(st)); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += d
	w.put(bStateCounts, []byte(st), binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// nextSeq is bucket b's next sequence number, kept in meta.
func nextSeq(w *rw, b bucketID) uint64 {
	var n uint64
	if v := w.get(bMeta, metaSeqKey(b)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	w.put(bMeta, metaSeqKey(b), binary.BigEndian.AppendUint64(nil, n))
	return n
}

func applyRecords(w *rw, c *engine.Commit, enc *encoded) {
	if c.ResolveIntent && c.Thread != nil {
		w.del(bIntents, threadKey(c.Thread.Key()))
	}
	for i, ct := range c.Contents {
		w.put(bContents, []byte(ct.ID), enc.contents[i])
	}
	for i, iv := range c.Interventions {
		w.put(bInterventions, []byte(iv.ID), enc.interventions[i])
	}
	for _, seq := range c.Consume {
		w.del(bInbox, binary.BigEndian.AppendUint64(nil, seq))
	}
	key := c.Key
	if c.Thread != nil {
		key = c.Thread.Key()
	}
	if len(c.Dequeue) > 0 {
		prefix := append(threadKey(key), 0)
		var drop [][]byte
		w.ascend(bQueue, prefix, nil, func(k, v []byte) bool {
			if slices.Contains(c.Dequeue, string(v)) {
				drop = append(drop, slices.Clone(k))
			}
			return true
		})
		for _, k := range drop {
			w.del(bQueue, k)
		}
	}
	for _, id := range c.Enqueue {
		w.put(bQueue, withSeq(threadKey(key), nextSeq(w, bQueue)), []byte(id))
	}
}

// PutIntent records a Graph call about to be made.
func (s *DB) PutIntent(ctx context.Context, in engine.Intent) error {
	if err := validKey(in.Key); err != nil {
		return err
	}
	in.V = engine.FormatVersion
	check := func(w *rw) error {
		t, err := getThread(w, in.Key)
		if err != nil {
			return err
		}
		if t.Revision != in.Revision {
			return fmt.Errorf("%w: thread %s is at revision %d, not %d", engine.ErrConflict, in.Key, t.Revision, in.Revision)
		}
		return nil
	}
	return s.update(ctx, check, func(w *rw) error {
		return putJSON(w, bIntents, threadKey(in.Key), in)
	})
}

// Intents returns the outstanding Graph call intents.
func (s *DB) Intents(ctx context.Context) ([]engine.Intent, error) {
	var out []engine.Intent
	err := s.read(func(v *view) error {
		return forEach(v, bIntents, nil, func(k, raw []byte) error {
			var in engine.Intent
			if err := decode(raw, &in, func() int { return in.V }, "intent"); err != nil {
				return err
			}
			out = append(out, in)
			return nil
		})
	})
	return out, err
}

// TimersBetween returns up to limit durable timers due in (after, before],
// earliest first, from the index ordered by due time.
func (s *DB) TimersBetween(ctx context.Context, after, before time.Time, limit int) ([]engine.Timer, error) {
	var out []engine.Timer
	var from []byte
	if !after.IsZero() {
		from = binary.BigEndian.AppendUint64(nil, uint64(after.UnixNano())+1)
	}
	err := s.read(func(v *view) error {
		var err error
		v.ascend(bTimers, nil, from, func(k, _ []byte) bool {
			var t engine.Timer
			if t, err = parseTimerKey(k); err != nil {
				return false
			}
			if t.Due.After(before) || len(out) == limit {
				return false
			}
			out = append(out, t)
			return true
		})
		return err
	})
	return out, err
}

// History returns a thread's entries below revision before (0: from the
// newest), newest first.
func (s *DB) History(ctx context.Context, key engine.ThreadKey, before uint64, limit int) ([]engine.HistoryEntry, error) {
	var out []engine.HistoryEntry
	err := s.read(func(v *view) (err error) {
		out, err = readHistory(v, key, before, limit)
		return err
	})
	return out, err
}

// readHistory reads up to limit (default 20) history entries of a thread
// below revision before (0: the newest), newest first.
func readHistory(v *view, key engine.ThreadKey, before uint64, limit int) ([]engine.HistoryEntry, error) {
	if limit <= 0 {
		limit = 20
	}
	var out []engine.HistoryEntry
	prefix := append(threadKey(key), 0)
	var until []byte
	if before != 0 {
		until = historyKey(key, before)
	}
	var err error
	v.descend(bHistory, prefix, until, func(_, raw []byte) bool {
		var h engine.HistoryEntry
		if err = decodeHistory(raw, &h); err != nil {
			return false
		}
		out = append(out, h)
		return len(out) < limit
	})
	return out, err
}

// ListThreads lists threads by state and/or page without scanning others.
func (s *DB) ListThreads(ctx context.Context, f engine.ListFilter) ([]engine.Thread, string, error) {
	limit := f.Limit
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	var after []byte
	if f.After != "" {
		var err error
		if after, err = base64.RawURLEncoding.DecodeString(f.After); err != nil {
			return nil, "", fmt.Errorf("%w: %q", engine.ErrBadCursor, f.After)
		}
	}
	var (
		out  []engine.Thread
		next string
	)
	err := s.read(func(v *view) error {
		var (
			b      bucketID
			prefix []byte
			key    func(k []byte) []byte // index key → thread key
		)
		switch {
		case f.State != "":
			b = bByState
			prefix = append([]byte(f.State), 0)
			if f.PageID != "" {
				prefix = append(append(prefix, f.PageID...), 0)
			}
			n := len(f.State) + 1
			key = func(k []byte) []byte { return k[n:] }
		default:
			b = bThreads
			if f.PageID != "" {
				prefix = append([]byte(f.PageID), 0)
			}
			key = func(k []byte) []byte { return k }
		}
		if after != nil && !validCursor(after, prefix, key) {
			return fmt.Errorf("%w: %q", engine.ErrBadCursor, f.After)
		}
		from := after
		if after != nil {
			from = append(slices.Clone(after), 0) // the first key after the cursor
		}
		var err error
		v.ascend(b, prefix, from, func(k, _ []byte) bool {
			if len(out) == limit {
				next = base64.RawURLEncoding.EncodeToString(out2key(out[len(out)-1], f))
				return false
			}
			var t engine.Thread
			if t, err = getThread(v, parseThreadKey(key(k))); err != nil {
				err = fmt.Errorf("index entry %q: %w", k, err)
				return false
			}
			out = append(out, t)
			return true
		})
		return err
	})
	return out, next, err
}

// validCursor reports whether a cursor is an index key this list could have
// returned: under the list's prefix, naming a thread.
func validCursor(after, prefix []byte, key func([]byte) []byte) bool {
	if !bytes.HasPrefix(after, prefix) || len(after) <= len(prefix) {
		return false
	}
	return validKey(parseThreadKey(key(after))) == nil
}

// out2key is the index key of a listed thread, the cursor of the next page.
func out2key(t engine.Thread, f engine.ListFilter) []byte {
	if f.State != "" {
		return stateKey(f.State, t.Key())
	}
	return threadKey(t.Key())
}

// StateCounts returns how many threads are in each state, from counters kept
// with every commit.
func (s *DB) StateCounts(ctx context.Context) (map[states.State]int, error) {
	out := map[states.State]int{}
	err := s.read(func(v *view) error {
		return forEach(v, bStateCounts, nil, func(k, raw []byte) error {
			if len(raw) == 8 {
				out[states.State(k)] = int(int64(binary.BigEndian.Uint64(raw)))
			}
			return nil
		})
	})
	return out, err
}

// Queue returns a thread's contents awaiting synchronisation, oldest first.
func (s *DB) Queue(ctx context.Context, key engine.ThreadKey) ([]engine.Content, error) {
	var out []engine.Content
	err := s.read(func(v *view) (err error) {
		out, err = readQueue(v, key)
		return err
	})
	return out, err
}

// readQueue reads the contents queued on a thread, oldest first.
func readQueue(v *view, key engine.ThreadKey) ([]engine.Content, error) {
	var out []engine.Content
	prefix := append(threadKey(key), 0)
	err := forEach(v, bQueue, prefix, func(_, id []byte) error {
		ct, err := getContent(v, string(id))
		if err != nil {
			return fmt.Errorf("queued content %s: %w", id, err)
		}
		out = append(out, ct)
		return nil
	})
	return out, err
}

// ThreadView reads a thread, its queue and some of its history in one read
// transaction over one set of layers.
func (s *DB) ThreadView(ctx context.Context, key engine.ThreadKey, before uint64, limit int) (engine.ThreadView, error) {
	var tv engine.ThreadView
	err := s.read(func(v *view) (err error) {
		if tv.Thread, err = getThread(v, key); err != nil {
			return err
		}
		if tv.Queue, err = readQueue(v, key); err != nil {
			return err
		}
		tv.History, err = readHistory(v, key, before, limit)
		return err
	})
	return tv, err
}

// QueuedThreads returns the threads with contents awaiting synchronisation.
func (s *DB) QueuedThreads(ctx context.Context) ([]engine.ThreadKey, error) {
	var out []engine.ThreadKey
	err := s.read(func(v *view) error {
		return forEach(v, bQueue, nil, func(k, _ []byte) error {
			if len(k) < 9 {
				return fmt.Errorf("queue key too short: %q", k)
			}
			key := parseThreadKey(k[:len(k)-9])
			if n := len(out); n == 0 || out[n-1] != key {
				out = append(out, key)
			}
			return nil
		})
	})
	return out, err
}

func getContent(r reader, id string) (engine.Content, error) {
	var ct engine.Content
	raw := r.get(bContents, []byte(id))
	if raw == nil {
		return ct, engine.ErrNotFound
	}
	err := decode(raw, &ct, func() int { return ct.V }, "content "+id)
	return ct, err
}

// Content returns a content by id.
func (s *DB) Content(ctx context.Context, id string) (engine.Content, error) {
	var ct engine.Content
	err := s.read(func(v *view) (err error) {
		ct, err = getContent(v, id)
		return err
	})
	return ct, err
}

// Intervention returns an intervention by id.
func (s *DB) Intervention(ctx context.Context, id string) (engine.Intervention, error) {
	var iv engine.Intervention
	err := s.read(func(v *view) error {
		raw := v.get(bInterventions, []byte(id))
		if raw == nil {
			return engine.ErrNotFound
		}
		return decode(raw, &iv, func() int { return iv.V }, "intervention "+id)
	})
	return iv, err
}
