package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/threadctl/threadctl/store/wal"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// maxProblems bounds what Check reports; a broken file could list millions.
const maxProblems = 100

// Check verifies the store: bbolt's own consistency check, then the record
// invariants over the newest state (logged and checkpointed) — every index
// entry points to a thread that agrees with it, every thread is indexed,
// counts match, each thread's history has gapless revisions 1…revision and
// ends in the thread's state, timers and queued contents exist. It returns
// the problems found (none when healthy). CheckLog verifies the log.
func (s *DB) Check() ([]string, error) {
	var problems []string
	add := func(format string, args ...any) {
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	// bbolt checks a read transaction against the current free list: no
	// checkpoint may write meanwhile.
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	err := s.read(func(v *view) error {
		for err := range v.tx.Check() {
			add("bbolt: %v", err)
		}
		checkRecords(v, add)
		return nil
	})
	if err != nil {
		return problems, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return problems, nil
}

// CheckLog verifies a data directory's log while no process has it open:
// each record's CRC, indexes in order with no gap, and that the bbolt file
// holds no change the log lacks (its checkpoint is at most the log's last
// record, and no record between them is missing). It returns the problems
// found, notes (a torn tail, which a crash leaves and the next Open drops,
// is not a problem) and the log's report. Opening the store then replays
// the log, and Check verifies the records.
func CheckLog(dir string, opts Options) (problems, notes []string, rep wal.Report, err error) {
	rep, err = wal.Check(filepath.Join(dir, LogDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, rep, fmt.Errorf("checking the log: %w", err)
	}
	for _, p := range rep.Problems {
		if p.Tail {
			notes = append(notes, "log: "+p.String()+" (a write a crash cut short: dropped when the store opens)")
			continue
		}
		problems = append(problems, "log: "+p.String())
	}
	bdb, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: opts.OpenTimeout})
	if err != nil {
		return problems, notes, rep, fmt.Errorf("opening %s: %w", filepath.Join(dir, FileName), err)
	}
	var applied uint64
	bdb.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(allBuckets[bMeta]); m != nil {
			if v := m.Get([]byte("applied")); len(v) == 8 {
				applied = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	bdb.Close()
	if rep.Records > 0 && (applied > rep.LastIndex || applied+1 < rep.FirstIndex) {
		problems = append(problems, fmt.Sprintf("the bbolt file holds changes up to log record %d; the log holds records %d…%d", applied, rep.FirstIndex, rep.LastIndex))
	}
	return problems, notes, rep, nil
}

func checkRecords(v *view, add func(string, ...any)) {
	counts := map[states.State]int64{}

	forEach(v, bThreads, nil, func(k, raw []byte) error {
		t, err := decodeThread(raw, "thread")
		if err != nil {
			add("thread %q: %v", k, err)
			return nil
		}
		key := t.Key()
		if !bytes.Equal(threadKey(key), k) {
			add("thread %q: stored under the key of %s", k, key)
		}
		counts[t.State]++
		if !v.has(bByState, stateKey(t.State, key)) {
			add("thread %s: no by_state entry for %s", key, t.State)
		}
		if !v.has(bIdentities, identityKey(key)) {
			add("thread %s: no identity entry", key)
		}
		for _, tm := range t.Timers() {
			if !v.has(bTimers, timerKey(tm)) {
				add("thread %s: %s timer at %s not indexed", key, tm.Kind, tm.Due)
			}
		}
		checkHistory(v, t, add)
		return nil
	})

	forEach(v, bByState, nil, func(k, _ []byte) error {
		st, rest, _ := bytes.Cut(k, []byte{0})
		t, err := getThread(v, parseThreadKey(rest))
		switch {
		case err != nil:
			add("by_state entry %q: %v", k, err)
		case string(t.State) != string(st):
			add("by_state entry %q: thread is %s", k, t.State)
		}
		return nil
	})
	forEach(v, bIdentities, nil, func(k, _ []byte) error {
		psid, page, _ := bytes.Cut(k, []byte{0})
		if v.get(bThreads, threadKey(engine.ThreadKey{PageID: string(page), PSID: string(psid)})) == nil {
			add("identity entry %q points to no thread", k)
		}
		return nil
	})
	forEach(v, bStateCounts, nil, func(k, raw []byte) error {
		if n := int64(binary.BigEndian.Uint64(raw)); n != counts[states.State(k)] {
			add("state count %s is %d, threads in that state: %d", k, n, counts[states.State(k)])
		}
		delete(counts, states.State(k))
		return nil
	})
	for st, n := range counts {
		add("state %s has %d threads and no count", st, n)
	}
	forEach(v, bTimers, nil, func(k, _ []byte) error {
		tm, err := parseTimerKey(k)
		if err != nil {
			add("%v", err)
			return nil
		}
		t, err := getThread(v, tm.Key)
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
	forEach(v, bIntents, nil, func(k, _ []byte) error {
		if v.get(bThreads, k) == nil {
			add("intent %q points to no thread", k)
		}
		return nil
	})
	forEach(v, bQueue, nil, func(k, id []byte) error {
		ct, err := getContent(v, string(id))
		switch {
		case err != nil:
			add("queue entry %q: content %s: %v", k, id, err)
		case ct.Status != engine.SyncPending:
			add("queue entry %q: content %s is %s", k, id, ct.Status)
		}
		return nil
	})
}

// checkHistory verifies that a thread's history has the revisions first…
// t.Revision with no gap (first is 1 unless older entries were pruned) and
// that its last entry ends in the thread's state.
func checkHistory(v *view, t engine.Thread, add func(string, ...any)) {
	prefix := append(threadKey(t.Key()), 0)
	want := uint64(0)
	var last engine.HistoryEntry
	v.ascend(bHistory, prefix, nil, func(k, raw []byte) bool {
		rev := binary.BigEndian.Uint64(k[len(prefix):])
		if want == 0 {
			want = rev
		}
		if rev != want {
			add("thread %s: history revision %d where %d was expected", t.Key(), rev, want)
			return false
		}
		if err := decodeHistory(raw, &last); err != nil {
			add("thread %s: history %d: %v", t.Key(), rev, err)
			return false
		}
		if last.Revision != rev {
			add("thread %s: history entry under %d says revision %d", t.Key(), rev, last.Revision)
		}
		want++
		return true
	})
	switch {
	case t.Revision > 0 && want == 0:
		add("thread %s: revision %d but no history", t.Key(), t.Revision)
	case t.Revision > 0 && want-1 != t.Revision:
		add("thread %s: revision %d but history ends at %d", t.Key(), t.Revision, want-1)
	case t.Revision > 0 && last.To != t.State:
		add("thread %s: history ends in %s, thread is %s", t.Key(), last.To, t.State)
	}
}
