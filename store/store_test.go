package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store/storetest"
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

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	storetest.Step(t, s, nil, k, states.Agent, func(t *engine.Thread) { t.ControlExpires = t0.Add(24 * time.Hour); t.ControlTimer = t.ControlExpires })
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
	th := storetest.Step(t, s, nil, k, states.Bot, nil)
	th = storetest.Step(t, s, th, k, states.Agent, nil)
	storetest.Step(t, s, th, k, states.Bot, nil)
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
				th = storetest.Step(t, s, th, k, st, nil)
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

	reopenHolds(t, dir, "u", threads, steps)
}

// reopenHolds opens the store in dir again and checks that threads
// prefix0 … prefix<threads-1> of page 100 are at revision steps, and that
// Check finds nothing wrong.
func reopenHolds(t *testing.T, dir, prefix string, threads int, steps uint64) {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range threads {
		th, err := s.Thread(ctx, engine.ThreadKey{PageID: "100", PSID: fmt.Sprintf("%s%d", prefix, i)})
		if err != nil || th.Revision != steps {
			t.Errorf("after reopening, thread %s%d is at revision %d (%v), want %d", prefix, i, th.Revision, err, steps)
		}
	}
	if p, err := s.Check(); err != nil || len(p) > 0 {
		t.Errorf("Check: %v %v", p, err)
	}
}

// TestCommitsDuringCheckpoints commits from many callers while the
// checkpointer freezes and writes the active layer every millisecond: a
// batch whose base layer a checkpoint froze meanwhile must still publish all
// its changes (each commit is read back at once, and the next commit
// expects it), and the reopened store must hold every one.
func TestCommitsDuringCheckpoints(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{CheckpointInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const threads, steps = 16, 60
	var wg sync.WaitGroup
	for i := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := engine.ThreadKey{PageID: "100", PSID: fmt.Sprintf("c%d", i)}
			var th *engine.Thread
			for j := range steps {
				th = storetest.Step(t, s, th, k, []states.State{states.Bot, states.Agent}[j%2], nil)
				got, err := s.Thread(ctx, k)
				if err != nil || got.Revision != th.Revision {
					t.Errorf("thread %s read back at revision %d (%v) right after committing %d", k.PSID, got.Revision, err, th.Revision)
					return
				}
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); st.Checkpoints < 10 {
		t.Errorf("only %d checkpoints ran beside the commits", st.Checkpoints)
	}
	s.Close()
	reopenHolds(t, dir, "c", threads, steps)
}

// TestReadAcrossACheckpoint makes a checkpoint freeze and write a layer
// newer than the ones a read has taken, before the read's bbolt transaction
// begins: the read must not see that layer's changes through bbolt beside
// older values of the same keys in its own layers.
func TestReadAcrossACheckpoint(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := engine.ThreadKey{PageID: "100", PSID: "x"}
	y := engine.ThreadKey{PageID: "100", PSID: "y"}
	tx := storetest.Step(t, s, nil, x, states.Bot, nil)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	tx = storetest.Step(t, s, tx, x, states.Agent, nil) // x at 2, in the active layer only
	s.testBeforeView = func() {
		storetest.Step(t, s, tx, x, states.Bot, nil) // x at 3
		storetest.Step(t, s, nil, y, states.Bot, nil)
		if err := s.Checkpoint(); err != nil { // freezes and writes both
			t.Error(err)
		}
	}
	var xr uint64
	var yseen bool
	if err := s.read(func(v *view) error {
		xt, err := getThread(v, x)
		if err != nil {
			return err
		}
		xr = xt.Revision
		_, err = getThread(v, y)
		yseen = err == nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if yseen && xr != 3 {
		t.Errorf("one read saw thread y, created after x's revision 3, with x at revision %d", xr)
	}
	if !yseen || xr != 3 {
		t.Errorf("the read began after the checkpoint and saw x at %d, y %v; want 3, true", xr, yseen)
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
