package store

import (
	"bytes"
	"slices"

	"github.com/google/btree"
	bolt "go.etcd.io/bbolt"
)

// The store's newest state is bbolt's checkpoint plus the changes logged
// since, kept in memory in layers: the active layer, which commits add to,
// and the frozen one a checkpoint is writing to bbolt. Each layer holds, per
// bucket, the keys changed (a value, or a deletion) in a B-tree, so that
// reads by key and scans by prefix see logged and checkpointed changes
// alike. A layer published to readers is never changed again: a commit
// clones the trees it changes (google/btree's copy-on-write Clone) and
// publishes the result.

// entry is one key of a layer: its new value, or its deletion.
type entry struct {
	key string
	val []byte
	del bool
}

func lessEntry(a, b entry) bool { return a.key < b.key }

// layer is one generation of changes not yet in bbolt.
type layer struct {
	trees [numBuckets]*btree.BTreeG[entry]
	last  uint64 // the log index of the last change it holds
	size  int    // entries, over all buckets
}

// clone returns a copy of l that can be changed while l is read.
func (l *layer) clone() *layer {
	c := &layer{last: l.last, size: l.size}
	for i, t := range l.trees {
		if t != nil {
			c.trees[i] = t.Clone()
		}
	}
	return c
}

// set records a change of key in bucket b.
func (l *layer) set(b bucketID, key []byte, val []byte, del bool) {
	t := l.trees[b]
	if t == nil {
		t = btree.NewG(16, lessEntry)
		l.trees[b] = t
	}
	if _, replaced := t.ReplaceOrInsert(entry{key: string(key), val: val, del: del}); !replaced {
		l.size++
	}
}

func (l *layer) get(b bucketID, key []byte) (entry, bool) {
	if l == nil || l.trees[b] == nil {
		return entry{}, false
	}
	return l.trees[b].Get(entry{key: string(key)})
}

// reader reads the store's newest state.
type reader interface {
	get(b bucketID, key []byte) []byte
	// ascend calls fn for the keys with prefix, from the first at or after
	// from (nil: the first), in order, until fn returns false.
	ascend(b bucketID, prefix, from []byte, fn func(k, v []byte) bool)
	// descend calls fn for the keys with prefix before before (nil: from the
	// last), in reverse order, until fn returns false.
	descend(b bucketID, prefix, before []byte, fn func(k, v []byte) bool)
}

// view is a reader over a bbolt read transaction and the layers above it,
// newest first.
type view struct {
	tx     *bolt.Tx
	layers []*layer
}

func (v *view) get(b bucketID, key []byte) []byte {
	val, _ := v.lookup(b, key)
	return val
}

// has reports whether key exists in b (index keys have empty values).
func (v *view) has(b bucketID, key []byte) bool {
	_, ok := v.lookup(b, key)
	return ok
}

func (v *view) lookup(b bucketID, key []byte) ([]byte, bool) {
	for _, l := range v.layers {
		if e, ok := l.get(b, key); ok {
			return e.val, !e.del
		}
	}
	// bbolt answers a present key's empty value as empty, not nil.
	val := v.tx.Bucket(allBuckets[b]).Get(key)
	return val, val != nil
}

// changed is the layers' newest entries for the keys of b with prefix in
// [lo, hi) (hi nil: no upper bound), in key order.
func (v *view) changed(b bucketID, prefix, lo, hi []byte) []entry {
	if bytes.Compare(lo, prefix) < 0 {
		lo = prefix
	}
	var out []entry
	seen := map[string]bool{}
	for _, l := range v.layers {
		if l == nil || l.trees[b] == nil {
			continue
		}
		visit := func(e entry) bool {
			if !bytes.HasPrefix([]byte(e.key), prefix) {
				return false
			}
			if !seen[e.key] {
				seen[e.key] = true
				out = append(out, e)
			}
			return true
		}
		if hi == nil {
			l.trees[b].AscendGreaterOrEqual(entry{key: string(lo)}, visit)
		} else {
			l.trees[b].AscendRange(entry{key: string(lo)}, entry{key: string(hi)}, visit)
		}
	}
	slices.SortFunc(out, func(a, b entry) int { return bytes.Compare([]byte(a.key), []byte(b.key)) })
	return out
}

func (v *view) ascend(b bucketID, prefix, from []byte, fn func(k, v []byte) bool) {
	start := prefix
	if bytes.Compare(from, prefix) > 0 {
		start = from
	}
	ch := v.changed(b, prefix, start, nil)
	c := v.tx.Bucket(allBuckets[b]).Cursor()
	k, val := c.Seek(start)
	for i := 0; ; {
		if k != nil && !bytes.HasPrefix(k, prefix) {
			k = nil
		}
		var ek []byte
		if i < len(ch) {
			ek = []byte(ch[i].key)
		}
		switch {
		case k == nil && ek == nil:
			return
		case ek != nil && (k == nil || bytes.Compare(ek, k) <= 0):
			e := ch[i]
			i++
			if k != nil && bytes.Equal(ek, k) {
				k, val = c.Next() // the layer's change wins
			}
			if !e.del && !fn(ek, e.val) {
				return
			}
		default:
			if !fn(k, val) {
				return
			}
			k, val = c.Next()
		}
	}
}

func (v *view) descend(b bucketID, prefix, before []byte, fn func(k, v []byte) bool) {
	ch := v.changed(b, prefix, prefix, before)
	c := v.tx.Bucket(allBuckets[b]).Cursor()
	var k, val []byte
	if before == nil {
		// The last key with prefix: seek past it, then step back.
		if k, val = c.Seek(prefixEnd(prefix)); k == nil || prefixEnd(prefix) == nil {
			k, val = c.Last()
		} else {
			k, val = c.Prev()
		}
	} else if k, val = c.Seek(before); k == nil {
		k, val = c.Last()
	} else {
		k, val = c.Prev()
	}
	for i := len(ch) - 1; ; {
		if k != nil && !bytes.HasPrefix(k, prefix) {
			k = nil
		}
		var ek []byte
		if i >= 0 {
			ek = []byte(ch[i].key)
		}
		switch {
		case k == nil && ek == nil:
			return
		case ek != nil && (k == nil || bytes.Compare(ek, k) >= 0):
			e := ch[i]
			i--
			if k != nil && bytes.Equal(ek, k) {
				k, val = c.Prev()
			}
			if !e.del && !fn(ek, e.val) {
				return
			}
		default:
			if !fn(k, val) {
				return
			}
			k, val = c.Prev()
		}
	}
}

// prefixEnd is the first key after every key with prefix, or nil when there
// is none (an empty prefix, or one of 0xff bytes).
func prefixEnd(prefix []byte) []byte {
	end := slices.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// write is one change a commit makes.
type write struct {
	b   bucketID
	key []byte
	val []byte
	del bool
}

// rw is a commit's reader and writer: it reads through its own changes (and
// those of the commits before it in the same batch) and records them.
type rw struct {
	view   *view
	writes []write
}

func (w *rw) get(b bucketID, key []byte) []byte {
	for i := len(w.writes) - 1; i >= 0; i-- {
		if wr := w.writes[i]; wr.b == b && bytes.Equal(wr.key, key) {
			if wr.del {
				return nil
			}
			return wr.val
		}
	}
	return w.view.get(b, key)
}

// own is the commit's own changes as a layer, for scans.
func (w *rw) own() *layer {
	if len(w.writes) == 0 {
		return nil
	}
	l := &layer{}
	for _, wr := range w.writes {
		l.set(wr.b, wr.key, wr.val, wr.del)
	}
	return l
}

func (w *rw) scanView() *view {
	own := w.own()
	if own == nil {
		return w.view
	}
	return &view{tx: w.view.tx, layers: append([]*layer{own}, w.view.layers...)}
}

func (w *rw) ascend(b bucketID, prefix, from []byte, fn func(k, v []byte) bool) {
	w.scanView().ascend(b, prefix, from, fn)
}

func (w *rw) descend(b bucketID, prefix, before []byte, fn func(k, v []byte) bool) {
	w.scanView().descend(b, prefix, before, fn)
}

func (w *rw) put(b bucketID, key, val []byte) {
	w.writes = append(w.writes, write{b: b, key: slices.Clone(key), val: val})
}

func (w *rw) del(b bucketID, key []byte) {
	w.writes = append(w.writes, write{b: b, key: slices.Clone(key), del: true})
}
