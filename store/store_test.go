package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

var ctx = context.Background()

func openTest(t testing.TB) *DB {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if problems, err := s.Check(); err != nil || len(problems) > 0 {
			t.Errorf("Check after test: %v %v", problems, err)
		}
		s.Close()
	})
	return s
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// step commits one transition of thread k to state st and returns the new record.
func step(t testing.TB, s *DB, prev *engine.Thread, k engine.ThreadKey, st states.State, mut func(*engine.Thread)) *engine.Thread {
	t.Helper()
	var next engine.Thread
	var expect uint64
	from := states.Idle
	if prev != nil {
		next = *prev
		expect = prev.Revision
		from = prev.State
	} else {
		next = engine.Thread{PageID: k.PageID, PSID: k.PSID, Primary: states.PrimaryBot, CreatedAt: t0}
	}
	next.State = st
	next.Revision = expect + 1
	if mut != nil {
		mut(&next)
	}
	h := engine.HistoryEntry{Revision: next.Revision, At: t0, Event: states.CustomerMessage, From: from, To: st, Outcome: engine.OutcomeApplied}
	if err := s.Commit(ctx, &engine.Commit{Thread: &next, Expect: expect, History: []engine.HistoryEntry{h}}); err != nil {
		t.Fatalf("Commit %s rev %d: %v", k, next.Revision, err)
	}
	return &next
}

func TestCommitAndRead(t *testing.T) {
	s := openTest(t)
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := step(t, s, nil, k, states.Bot, func(t *engine.Thread) { t.Owner = "300" })
	th = step(t, s, th, k, states.Pending, func(t *engine.Thread) {
		t.Pending = &engine.PendingRequest{RequestedAt: t0, Deadline: t0.Add(time.Minute), Reason: "bots_api"}
	})

	got, err := s.Thread(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != states.Pending || got.Revision != 2 || got.Owner != "300" || got.Pending == nil || !got.Pending.Deadline.Equal(t0.Add(time.Minute)) {
		t.Errorf("Thread = %+v", got)
	}
	if got.V != engine.FormatVersion {
		t.Errorf("stored format = %d, want %d", got.V, engine.FormatVersion)
	}
	if key, err := s.FindIdentity(ctx, "u1"); err != nil || key != k {
		t.Errorf("FindIdentity = %v, %v; want %v", key, err, k)
	}
	if _, err := s.FindIdentity(ctx, "nobody"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("FindIdentity(nobody) error = %v, want ErrNotFound", err)
	}
	h, err := s.History(ctx, k, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Revision != 2 || h[1].Revision != 1 {
		t.Errorf("History = %+v, want revisions 2, 1", h)
	}
	if h, _ := s.History(ctx, k, 2, 10); len(h) != 1 || h[0].Revision != 1 {
		t.Errorf("History(before 2) = %+v, want revision 1", h)
	}
	timers, err := s.TimersBetween(ctx, time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(timers) != 1 || timers[0].Kind != engine.TimerRequest || !timers[0].Due.Equal(t0.Add(time.Minute)) {
		t.Errorf("Timers = %+v, want the request deadline", timers)
	}
	// Leaving pending removes the timer.
	step(t, s, th, k, states.Agent, func(t *engine.Thread) {
		t.Pending = nil
		t.ControlExpires = t0.Add(24 * time.Hour)
		t.ControlTimer = t.ControlExpires
	})
	timers, _ = s.TimersBetween(ctx, time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 1<<30)
	if len(timers) != 1 || timers[0].Kind != engine.TimerControl {
		t.Errorf("Timers after pending = %+v, want only the control expiry", timers)
	}
	counts, _ := s.StateCounts(ctx)
	if counts[states.Agent] != 1 || counts[states.Pending] != 0 || counts[states.Bot] != 0 {
		t.Errorf("StateCounts = %v", counts)
	}
}

func TestCommitConflicts(t *testing.T) {
	s := openTest(t)
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := step(t, s, nil, k, states.Bot, nil)

	stale := *th
	stale.Revision = 1
	h := engine.HistoryEntry{Revision: 1, To: states.Agent}
	stale.State = states.Agent
	err := s.Commit(ctx, &engine.Commit{Thread: &stale, Expect: 0, History: []engine.HistoryEntry{h}})
	if !errors.Is(err, engine.ErrConflict) {
		t.Errorf("creating an existing thread: error = %v, want ErrConflict", err)
	}
	stale.Revision = 3
	h.Revision = 3
	err = s.Commit(ctx, &engine.Commit{Thread: &stale, Expect: 2, History: []engine.HistoryEntry{h}})
	if !errors.Is(err, engine.ErrConflict) {
		t.Errorf("wrong expected revision: error = %v, want ErrConflict", err)
	}
	bad := []struct {
		name string
		c    engine.Commit
	}{
		{"revision does not follow history", engine.Commit{Thread: &engine.Thread{PageID: "1", PSID: "2", State: states.Bot, Revision: 5}, History: []engine.HistoryEntry{{Revision: 1, To: states.Bot}}}},
		{"history ends elsewhere", engine.Commit{Thread: &engine.Thread{PageID: "1", PSID: "2", State: states.Bot, Revision: 1}, History: []engine.HistoryEntry{{Revision: 1, To: states.Agent}}}},
		{"nul in key", engine.Commit{Thread: &engine.Thread{PageID: "1\x00", PSID: "2", State: states.Bot, Revision: 1}, History: []engine.HistoryEntry{{Revision: 1, To: states.Bot}}}},
		{"unknown state", engine.Commit{Thread: &engine.Thread{PageID: "1", PSID: "2", State: "nope", Revision: 1}, History: []engine.HistoryEntry{{Revision: 1, To: "nope"}}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Commit(ctx, &tt.c); err == nil {
				t.Errorf("Commit accepted %s", tt.name)
			}
		})
	}
	if got, _ := s.Thread(ctx, k); got.Revision != 1 || got.State != states.Bot {
		t.Errorf("after refused commits: %+v", got)
	}
}

func TestAmbiguousIdentity(t *testing.T) {
	s := openTest(t)
	step(t, s, nil, engine.ThreadKey{PageID: "100", PSID: "u1"}, states.Bot, nil)
	step(t, s, nil, engine.ThreadKey{PageID: "101", PSID: "u1"}, states.Bot, nil)
	if _, err := s.FindIdentity(ctx, "u1"); !errors.Is(err, engine.ErrAmbiguous) {
		t.Errorf("FindIdentity = %v, want ErrAmbiguous", err)
	}
}

func TestListThreads(t *testing.T) {
	s := openTest(t)
	want := map[string]int{}
	for i := range 25 {
		page := fmt.Sprintf("10%d", i%2)
		st := []states.State{states.Bot, states.Agent, states.Idle}[i%3]
		step(t, s, nil, engine.ThreadKey{PageID: page, PSID: fmt.Sprintf("u%02d", i)}, st, nil)
		want[string(st)+"/"+page]++
		want[string(st)]++
		want["/"+page]++
		want[""]++
	}
	for _, f := range []engine.ListFilter{
		{}, {State: states.Bot}, {PageID: "100"}, {State: states.Agent, PageID: "101"}, {State: states.Pending},
	} {
		t.Run(fmt.Sprintf("%s/%s", f.State, f.PageID), func(t *testing.T) {
			f.Limit = 4
			seen := map[string]bool{}
			pages := 0
			for {
				got, next, err := s.ListThreads(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, th := range got {
					if f.State != "" && th.State != f.State || f.PageID != "" && th.PageID != f.PageID {
						t.Errorf("listed %s in %s", th.Key(), th.State)
					}
					if seen[th.Key().String()] {
						t.Errorf("listed %s twice", th.Key())
					}
					seen[th.Key().String()] = true
				}
				if next == "" {
					break
				}
				f.After = next
			}
			key := string(f.State)
			if f.PageID != "" {
				key += "/" + f.PageID
			}
			if len(seen) != want[key] {
				t.Errorf("listed %d threads over %d pages, want %d", len(seen), pages, want[key])
			}
		})
	}
	if _, _, err := s.ListThreads(ctx, engine.ListFilter{After: "!!"}); err == nil {
		t.Error("ListThreads accepted a bad cursor")
	}
}

func TestQueueContentsInterventionsIntents(t *testing.T) {
	s := openTest(t)
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := step(t, s, nil, k, states.Bot, nil)

	next := *th
	next.State = states.Pending
	next.Revision = 2
	next.Intervention = "iv1"
	c := &engine.Commit{
		Thread: &next, Expect: 1,
		History:       []engine.HistoryEntry{{Revision: 2, From: states.Bot, To: states.Pending}},
		Contents:      []engine.Content{{ID: "c1", Status: engine.SyncPending, Body: "one"}, {ID: "c2", Status: engine.SyncPending, Body: "two"}},
		Enqueue:       []string{"c1", "c2"},
		Interventions: []engine.Intervention{{ID: "iv1", Status: engine.InterventionOpen, PageID: "100", PSID: "u1"}},
	}
	if err := s.Commit(ctx, c); err != nil {
		t.Fatal(err)
	}
	q, err := s.Queue(ctx, k)
	if err != nil || len(q) != 2 || q[0].ID != "c1" || q[1].ID != "c2" {
		t.Fatalf("Queue = %+v, %v; want c1, c2", q, err)
	}
	if iv, err := s.Intervention(ctx, "iv1"); err != nil || iv.Status != engine.InterventionOpen {
		t.Errorf("Intervention = %+v, %v", iv, err)
	}
	// An intent is refused unless the thread is still at its revision.
	if err := s.PutIntent(ctx, engine.Intent{Key: k, Revision: 1, Call: states.CallTake}); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("stale PutIntent error = %v, want ErrConflict", err)
	}
	if err := s.PutIntent(ctx, engine.Intent{Key: k, Revision: 2, Call: states.CallTake}); err != nil {
		t.Fatal(err)
	}
	if ins, _ := s.Intents(ctx); len(ins) != 1 || ins[0].Call != states.CallTake {
		t.Errorf("Intents = %+v", ins)
	}
	// Synchronising c1: dequeued and updated with the intent resolved.
	after := next
	after.State = states.Agent
	after.Revision = 3
	after.Pending = nil
	sent := q[0]
	sent.Status = engine.SyncSynced
	err = s.Commit(ctx, &engine.Commit{
		Thread: &after, Expect: 2, ResolveIntent: true,
		History:  []engine.HistoryEntry{{Revision: 3, From: states.Pending, To: states.Agent}},
		Contents: []engine.Content{sent}, Dequeue: []string{"c1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Queue(ctx, k); len(q) != 1 || q[0].ID != "c2" {
		t.Errorf("Queue after sync = %+v, want c2", q)
	}
	if ct, _ := s.Content(ctx, "c1"); ct.Status != engine.SyncSynced {
		t.Errorf("content c1 = %+v", ct)
	}
	if ins, _ := s.Intents(ctx); len(ins) != 0 {
		t.Errorf("Intents after resolve = %+v", ins)
	}
	// Fail the rest so the queue holds only pending contents (Check).
	failed, _ := s.Content(ctx, "c2")
	failed.Status = engine.SyncFailed
	if err := s.Commit(ctx, &engine.Commit{Thread: &after, Expect: 3, Contents: []engine.Content{failed}}); err == nil {
		t.Error("a thread commit without history that keeps the revision should be refused")
	}
	after2 := after
	after2.Revision = 4
	if err := s.Commit(ctx, &engine.Commit{Thread: &after2, Expect: 3, History: []engine.HistoryEntry{{Revision: 4, From: states.Agent, To: states.Agent}}, Contents: []engine.Content{failed}, Dequeue: []string{"c2"}}); err != nil {
		t.Fatal(err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	step(t, s, nil, k, states.Agent, func(t *engine.Thread) { t.ControlExpires = t0.Add(24 * time.Hour); t.ControlTimer = t.ControlExpires })
	if err := s.PutPage(ctx, engine.Page{ID: "100", Primary: states.PrimaryBot, BotAppIDs: []string{"300"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Thread(ctx, k); err == nil {
		t.Error("read from a closed store succeeded")
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if th, err := s.Thread(ctx, k); err != nil || th.State != states.Agent {
		t.Errorf("after reopen: %+v, %v", th, err)
	}
	if pages, _ := s.Pages(ctx); len(pages) != 1 || pages[0].BotAppIDs[0] != "300" {
		t.Errorf("Pages after reopen = %+v", pages)
	}
	if tm, _ := s.TimersBetween(ctx, time.Time{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 1<<30); len(tm) != 1 {
		t.Errorf("Timers after reopen = %+v", tm)
	}
}

func TestOpenLockedFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir, Options{OpenTimeout: 50 * time.Millisecond}); err == nil {
		t.Error("a second Open of the same file succeeded")
	}
}

func TestCheckFindsBrokenInvariants(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := step(t, s, nil, k, states.Bot, nil)
	th = step(t, s, th, k, states.Agent, nil)
	step(t, s, th, k, states.Bot, nil)
	if p, err := s.Check(); err != nil || len(p) != 0 {
		t.Fatalf("healthy file: %v %v", p, err)
	}
	breakers := []struct {
		name string
		fn   func(l *layer)
	}{
		{"history gap", func(l *layer) { l.set(bHistory, historyKey(k, 2), nil, true) }},
		{"history cut short", func(l *layer) { l.set(bHistory, historyKey(k, 3), nil, true) }},
		{"missing state index", func(l *layer) { l.set(bByState, stateKey(states.Bot, k), nil, true) }},
		{"dangling identity", func(l *layer) { l.set(bIdentities, []byte("ghost\x00100"), nil, false) }},
	}
	for _, b := range breakers {
		t.Run(b.name, func(t *testing.T) {
			// Break the records in a layer seen by this check only, so
			// each case starts from the healthy store.
			broken := &layer{}
			b.fn(broken)
			s.read(func(v *view) error {
				v.layers = append([]*layer{broken}, v.layers...)
				var p []string
				checkRecords(v, func(f string, a ...any) { p = append(p, fmt.Sprintf(f, a...)) })
				if len(p) == 0 {
					t.Errorf("Check found nothing after %s", b.name)
				}
				return nil
			})
		})
	}
}

func TestConcurrentCommitsAreGroupedAndDurable(t *testing.T) {
	var mu sync.Mutex
	var txs, commits int
	dir := t.TempDir()
	s, err := Open(dir, Options{OnCommit: func(_ time.Duration, n int) {
		mu.Lock()
		txs++
		commits += n
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	const threads, steps = 32, 20
	var wg sync.WaitGroup
	for i := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := engine.ThreadKey{PageID: "100", PSID: fmt.Sprintf("u%d", i)}
			var th *engine.Thread
			for j := range steps {
				st := []states.State{states.Bot, states.Agent}[j%2]
				th = step(t, s, th, k, st, nil)
			}
		}()
	}
	// A conflicting commit in the middle of the load is refused alone.
	wg.Add(1)
	go func() {
		defer wg.Done()
		bad := engine.Thread{PageID: "100", PSID: "u0", State: states.Idle, Revision: 1000}
		err := s.Commit(ctx, &engine.Commit{Thread: &bad, Expect: 999, History: nil})
		if err == nil {
			t.Error("conflicting commit accepted")
		}
	}()
	wg.Wait()
	s.Close()
	if commits < threads*steps {
		t.Errorf("OnCommit saw %d commits, want at least %d", commits, threads*steps)
	}
	t.Logf("%d commits in %d transactions", commits, txs)
	if txs >= commits {
		t.Errorf("%d commits of 32 concurrent callers took %d transactions: none were grouped", commits, txs)
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range threads {
		th, err := s.Thread(ctx, engine.ThreadKey{PageID: "100", PSID: fmt.Sprintf("u%d", i)})
		if err != nil || th.Revision != steps {
			t.Errorf("thread u%d = rev %d, %v; want %d", i, th.Revision, err, steps)
		}
	}
	if p, err := s.Check(); err != nil || len(p) > 0 {
		t.Errorf("Check: %v %v", p, err)
	}
}

// TestPruneHistory keeps each thread's newest entries, by number and by age,
// in bounded steps, and never a thread's newest entry.
func TestPruneHistory(t *testing.T) {
	s := openTest(t)
	keys := []engine.ThreadKey{{PageID: "100", PSID: "u1"}, {PageID: "100", PSID: "u2"}}
	for _, k := range keys {
		var th *engine.Thread
		for i := range 30 {
			th = step(t, s, th, k, []states.State{states.Bot, states.Agent}[i%2], nil)
		}
	}
	pruned := 0
	for cursor, steps := "", 0; ; steps++ {
		next, n, err := s.PruneHistory(ctx, cursor, 5, time.Time{}, 7)
		if err != nil {
			t.Fatal(err)
		}
		pruned += n
		if next == "" {
			if steps < 5 {
				t.Errorf("%d steps of at most 7 entries read 60 entries", steps+1)
			}
			break
		}
		cursor = next
	}
	if pruned != 50 {
		t.Errorf("pruned %d entries, want 50", pruned)
	}
	for _, k := range keys {
		hs, _ := s.History(ctx, k, 0, 100)
		if len(hs) != 5 || hs[0].Revision != 30 || hs[4].Revision != 26 {
			t.Errorf("%s keeps %d entries (%v), want revisions 26…30", k, len(hs), hs)
		}
	}
	// By age: every entry is older than now, but each thread keeps its newest.
	if _, n, err := s.PruneHistory(ctx, "", 0, time.Now(), 1000); err != nil || n != 8 {
		t.Errorf("pruning by age deleted %d, %v; want 8", n, err)
	}
	for _, k := range keys {
		if hs, _ := s.History(ctx, k, 0, 100); len(hs) != 1 || hs[0].Revision != 30 {
			t.Errorf("%s after pruning by age: %v, want its newest entry only", k, hs)
		}
	}
}

// TestFileStopsGrowing runs a steady load — the same threads changing over
// and over, keeping their newest 10 history entries — and checks that the
// bbolt file and the log stop growing once the history is full.
func TestFileStopsGrowing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{CheckpointInterval: time.Millisecond, SegmentSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ths := make([]*engine.Thread, 50)
	round := func() {
		for i := range ths {
			k := engine.ThreadKey{PageID: "100", PSID: fmt.Sprintf("u%d", i)}
			var next engine.Thread
			expect := uint64(0)
			if ths[i] == nil {
				next = engine.Thread{PageID: k.PageID, PSID: k.PSID, Primary: states.PrimaryBot, CreatedAt: t0}
			} else {
				next, expect = *ths[i], ths[i].Revision
			}
			next.Revision = expect + 1
			next.State = []states.State{states.Bot, states.Agent}[next.Revision%2]
			from := states.Idle
			if ths[i] != nil {
				from = ths[i].State
			}
			h := engine.HistoryEntry{Revision: next.Revision, At: t0, Event: states.CustomerMessage, From: from, To: next.State, Outcome: engine.OutcomeApplied}
			if err := s.Commit(ctx, &engine.Commit{Thread: &next, Expect: expect, History: []engine.HistoryEntry{h}, KeepHistory: 10}); err != nil {
				t.Fatal(err)
			}
			ths[i] = &next
		}
	}
	size := func() (file, log int64) {
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		des, _ := os.ReadDir(filepath.Join(dir, LogDir))
		for _, de := range des {
			if info, err := de.Info(); err == nil {
				log += info.Size()
			}
		}
		return st.Size(), log
	}
	for range 20 { // the history fills up
		round()
	}
	file1, log1 := size()
	for range 100 { // five times as many changes
		round()
	}
	file2, log2 := size()
	t.Logf("after 20 rounds: file %d, log %d bytes; after 120: file %d, log %d", file1, log1, file2, log2)
	if file2 > file1*5/4 {
		t.Errorf("the file grew from %d to %d bytes under a steady load", file1, file2)
	}
	if log2 > log1*2 && log2 > 4*(256<<10) {
		t.Errorf("the log grew from %d to %d bytes under a steady load", log1, log2)
	}
}
