package store

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// maxProblems bounds what Check reports; a broken file could list millions.
const maxProblems = 100

// Check verifies the file: bbolt's own consistency check, then the record
// invariants — every index entry points to a thread that agrees with it,
// every thread is indexed, counts match, each thread's history has gapless
// revisions 1…revision and ends in the thread's state, timers and queued
// contents exist. It returns the problems found (none when healthy).
func (s *DB) Check() ([]string, error) {
	var problems []string
	add := func(format string, args ...any) {
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			add("bbolt: %v", err)
		}
		checkRecords(tx, add)
		return nil
	})
	if err != nil {
		return problems, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return problems, nil
}

func checkRecords(tx *bolt.Tx, add func(string, ...any)) {
	counts := map[states.State]int64{}
	threads := tx.Bucket(bThreads)
	byState := tx.Bucket(bByState)
	identities := tx.Bucket(bIdentities)
	history := tx.Bucket(bHistory)
	timers := tx.Bucket(bTimers)

	threads.ForEach(func(k, v []byte) error {
		t, err := decodeThread(v, "thread")
		if err != nil {
			add("thread %q: %v", k, err)
			return nil
		}
		key := t.Key()
		if !bytes.Equal(threadKey(key), k) {
			add("thread %q: stored under the key of %s", k, key)
		}
		counts[t.State]++
		if byState.Get(stateKey(t.State, key)) == nil {
			add("thread %s: no by_state entry for %s", key, t.State)
		}
		if identities.Get(identityKey(key)) == nil {
			add("thread %s: no identity entry", key)
		}
		for _, tm := range t.Timers() {
			if timers.Get(timerKey(tm)) == nil {
				add("thread %s: %s timer at %s not indexed", key, tm.Kind, tm.Due)
			}
		}
		checkHistory(history, t, add)
		return nil
	})

	byState.ForEach(func(k, _ []byte) error {
		st, rest, _ := bytes.Cut(k, []byte{0})
		t, err := getThread(tx, parseThreadKey(rest))
		switch {
		case err != nil:
			add("by_state entry %q: %v", k, err)
		case string(t.State) != string(st):
			add("by_state entry %q: thread is %s", k, t.State)
		}
		return nil
	})
	identities.ForEach(func(k, _ []byte) error {
		psid, page, _ := bytes.Cut(k, []byte{0})
		if threads.Get(threadKey(engine.ThreadKey{PageID: string(page), PSID: string(psid)})) == nil {
			add("identity entry %q points to no thread", k)
		}
		return nil
	})
	tx.Bucket(bStateCounts).ForEach(func(k, v []byte) error {
		if n := int64(binary.BigEndian.Uint64(v)); n != counts[states.State(k)] {
			add("state count %s is %d, threads in that state: %d", k, n, counts[states.State(k)])
		}
		delete(counts, states.State(k))
		return nil
	})
	for st, n := range counts {
		add("state %s has %d threads and no count", st, n)
	}
	timers.ForEach(func(k, _ []byte) error {
		tm, err := parseTimerKey(k)
		if err != nil {
			add("%v", err)
			return nil
		}
		t, err := getThread(tx, tm.Key)
		if err != nil {
			add("timer %s of %s: %v", tm.Kind, tm.Key, err)
			return nil
		}
		found := false
		for _, want := range t.Timers() {
			found = found || bytes.Equal(timerKey(want), k)
		}
		if !found {
			add("timer %s of %s at %s is not the thread's", tm.Kind, tm.Key, tm.Due)
		}
		return nil
	})
	tx.Bucket(bIntents).ForEach(func(k, _ []byte) error {
		if threads.Get(k) == nil {
			add("intent %q points to no thread", k)
		}
		return nil
	})
	contents := tx.Bucket(bContents)
	tx.Bucket(bQueue).ForEach(func(k, v []byte) error {
		ct, err := getContent(contents, string(v))
		switch {
		case err != nil:
			add("queue entry %q: content %s: %v", k, v, err)
		case ct.Status != engine.SyncPending:
			add("queue entry %q: content %s is %s", k, v, ct.Status)
		}
		return nil
	})
}

// checkHistory verifies that a thread's history has the revisions 1…t.Revision
// with no gap and that its last entry ends in the thread's state.
func checkHistory(b *bolt.Bucket, t engine.Thread, add func(string, ...any)) {
	prefix := append(threadKey(t.Key()), 0)
	c := b.Cursor()
	want := uint64(1)
	var last engine.HistoryEntry
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		rev := binary.BigEndian.Uint64(k[len(prefix):])
		if rev != want {
			add("thread %s: history revision %d where %d was expected", t.Key(), rev, want)
			return
		}
		if err := decode(v, &last, func() int { return last.V }, "history entry"); err != nil {
			add("thread %s: history %d: %v", t.Key(), rev, err)
			return
		}
		if last.Revision != rev {
			add("thread %s: history entry under %d says revision %d", t.Key(), rev, last.Revision)
		}
		want++
	}
	switch {
	case want-1 != t.Revision:
		add("thread %s: revision %d but history ends at %d", t.Key(), t.Revision, want-1)
	case t.Revision > 0 && last.To != t.State:
		add("thread %s: history ends in %s, thread is %s", t.Key(), last.To, t.State)
	}
}
