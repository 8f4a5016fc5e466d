// Package storetest is the contract every engine.Store keeps: the same
// assertions run against the bbolt store (store) and the etcd store
// (store/etcd). Each case gets an empty store from its opener.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

var ctx = context.Background()

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// Run runs the contract against stores open makes, one empty store per
// case.
func Run(t *testing.T, open func(t *testing.T) engine.Store) {
	cases := []struct {
		name string
		fn   func(*testing.T, engine.Store)
	}{
		{"CommitAndRead", testCommitAndRead},
		{"CommitConflicts", testCommitConflicts},
		{"AmbiguousIdentity", testAmbiguousIdentity},
		{"ListThreads", testListThreads},
		{"QueueContentsInterventionsIntents", testQueueContentsInterventionsIntents},
		{"PruneHistory", testPruneHistory},
		{"KeepHistory", testKeepHistory},
		{"PruneRecords", testPruneRecords},
		{"AcceptAndConsume", testAcceptAndConsume},
		{"TimersBetween", testTimersBetween},
		{"Pages", testPages},
		{"ThreadView", testThreadView},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open(t)) })
	}
}

// Step commits one transition of thread k to state st and returns the new record.
func Step(t testing.TB, s engine.Store, prev *engine.Thread, k engine.ThreadKey, st states.State, mut func(*engine.Thread)) *engine.Thread {
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

func testCommitAndRead(t *testing.T, s engine.Store) {
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := Step(t, s, nil, k, states.Bot, func(t *engine.Thread) { t.Owner = "300" })
	th = Step(t, s, th, k, states.Pending, func(t *engine.Thread) {
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
	Step(t, s, th, k, states.Agent, func(t *engine.Thread) {
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

func testCommitConflicts(t *testing.T, s engine.Store) {
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := Step(t, s, nil, k, states.Bot, nil)

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

func testAmbiguousIdentity(t *testing.T, s engine.Store) {
	Step(t, s, nil, engine.ThreadKey{PageID: "100", PSID: "u1"}, states.Bot, nil)
	Step(t, s, nil, engine.ThreadKey{PageID: "101", PSID: "u1"}, states.Bot, nil)
	if _, err := s.FindIdentity(ctx, "u1"); !errors.Is(err, engine.ErrAmbiguous) {
		t.Errorf("FindIdentity = %v, want ErrAmbiguous", err)
	}
}

func testListThreads(t *testing.T, s engine.Store) {
	want := map[string]int{}
	for i := range 25 {
		page := fmt.Sprintf("10%d", i%2)
		st := []states.State{states.Bot, states.Agent, states.Idle}[i%3]
		Step(t, s, nil, engine.ThreadKey{PageID: page, PSID: fmt.Sprintf("u%02d", i)}, st, nil)
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

func testQueueContentsInterventionsIntents(t *testing.T, s engine.Store) {
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := Step(t, s, nil, k, states.Bot, nil)

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

func testPruneHistory(t *testing.T, s engine.Store) {
	keys := []engine.ThreadKey{{PageID: "100", PSID: "u1"}, {PageID: "100", PSID: "u2"}}
	for _, k := range keys {
		var th *engine.Thread
		for i := range 30 {
			th = Step(t, s, th, k, []states.State{states.Bot, states.Agent}[i%2], nil)
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

// testKeepHistory: a commit with KeepHistory deletes the entry that falls
// out.
func testKeepHistory(t *testing.T, s engine.Store) {
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	var th *engine.Thread
	for i := range 12 {
		next := engine.Thread{PageID: k.PageID, PSID: k.PSID, Primary: states.PrimaryBot, CreatedAt: t0}
		expect := uint64(0)
		from := states.Idle
		if th != nil {
			next, expect, from = *th, th.Revision, th.State
		}
		next.Revision = expect + 1
		next.State = []states.State{states.Bot, states.Agent}[i%2]
		h := engine.HistoryEntry{Revision: next.Revision, At: t0, Event: states.CustomerMessage, From: from, To: next.State, Outcome: engine.OutcomeApplied}
		if err := s.Commit(ctx, &engine.Commit{Thread: &next, Expect: expect, History: []engine.HistoryEntry{h}, KeepHistory: 5}); err != nil {
			t.Fatal(err)
		}
		th = &next
	}
	hs, err := s.History(ctx, k, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 5 || hs[0].Revision != 12 || hs[4].Revision != 8 {
		t.Errorf("History = %d entries (%v), want revisions 12…8", len(hs), hs)
	}
}

// testPruneRecords deletes synced or failed contents and closed
// interventions created before the cut-off, and keeps the others.
func testPruneRecords(t *testing.T, s engine.Store) {
	old, recent := time.Now().Add(-48*time.Hour), time.Now()
	id := func(at time.Time, n int) string { return fmt.Sprintf("%08x%016x", uint32(at.Unix()), n) }
	contents := []engine.Content{
		{ID: id(old, 1), Status: engine.SyncSynced, CreatedAt: old},
		{ID: id(old, 2), Status: engine.SyncFailed, CreatedAt: old},
		{ID: id(old, 3), Status: engine.SyncPending, CreatedAt: old},
		{ID: id(recent, 4), Status: engine.SyncSynced, CreatedAt: recent},
	}
	ivs := []engine.Intervention{
		{ID: id(old, 5), Status: engine.InterventionClosed},
		{ID: id(old, 6), Status: engine.InterventionOpen},
		{ID: id(recent, 7), Status: engine.InterventionClosed},
	}
	if err := s.Commit(ctx, &engine.Commit{Contents: contents, Interventions: ivs}); err != nil {
		t.Fatal(err)
	}
	cut := time.Now().Add(-24 * time.Hour)
	total := 0
	for cursor := ""; ; {
		next, n, err := s.PruneRecords(ctx, engine.RecordContents, cursor, cut, 1)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if next == "" {
			break
		}
		cursor = next
	}
	if total != 2 {
		t.Errorf("pruned %d contents, want 2", total)
	}
	for i, ct := range contents {
		_, err := s.Content(ctx, ct.ID)
		if gone := errors.Is(err, engine.ErrNotFound); gone != (i < 2) {
			t.Errorf("content %d (%s): gone = %v", i, ct.Status, gone)
		}
	}
	if _, n, err := s.PruneRecords(ctx, engine.RecordInterventions, "", cut, 100); err != nil || n != 1 {
		t.Errorf("pruned %d interventions, %v; want 1", n, err)
	}
	if _, err := s.Intervention(ctx, ivs[1].ID); err != nil {
		t.Errorf("the open intervention: %v", err)
	}
	if _, _, err := s.PruneRecords(ctx, "nope", "", cut, 1); err == nil {
		t.Error("PruneRecords accepted an unknown kind")
	}
}

// testAcceptAndConsume: accepted events are listed in order until a commit
// consumes them.
func testAcceptAndConsume(t *testing.T, s engine.Store) {
	ns := []engine.Notice{
		{PageID: "100", PSID: "u1", Kind: engine.NoticeMessage, MID: "m1"},
		{PageID: "100", PSID: "u1", Kind: engine.NoticePass, NewOwner: "200"},
	}
	seqs, err := s.Accept(ctx, ns)
	if err != nil || len(seqs) != 2 || seqs[0] >= seqs[1] {
		t.Fatalf("Accept = %v, %v; want two increasing sequence numbers", seqs, err)
	}
	more, err := s.Accept(ctx, ns[:1])
	if err != nil || len(more) != 1 || more[0] <= seqs[1] {
		t.Fatalf("second Accept = %v, %v; want a later sequence number", more, err)
	}
	as, err := s.Accepted(ctx)
	if err != nil || len(as) != 3 || as[0].Seq != seqs[0] || as[1].Notice.Kind != engine.NoticePass || as[2].Seq != more[0] {
		t.Fatalf("Accepted = %+v, %v", as, err)
	}
	if err := s.Commit(ctx, &engine.Commit{Consume: []uint64{seqs[0], more[0]}}); err != nil {
		t.Fatal(err)
	}
	if as, _ := s.Accepted(ctx); len(as) != 1 || as[0].Seq != seqs[1] {
		t.Errorf("Accepted after consuming = %+v, want the second event", as)
	}
}

// testTimersBetween reads the due-ordered index a window at a time.
func testTimersBetween(t *testing.T, s engine.Store) {
	for i := range 5 {
		k := engine.ThreadKey{PageID: "100", PSID: fmt.Sprintf("u%d", i)}
		Step(t, s, nil, k, states.Pending, func(th *engine.Thread) {
			th.Pending = &engine.PendingRequest{RequestedAt: t0, Deadline: t0.Add(time.Duration(i) * time.Minute)}
		})
	}
	got, err := s.TimersBetween(ctx, t0, t0.Add(3*time.Minute), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !got[0].Due.Equal(t0.Add(time.Minute)) || !got[2].Due.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("TimersBetween(t0, t0+3m] = %+v, want minutes 1, 2, 3", got)
	}
	if got, _ := s.TimersBetween(ctx, time.Time{}, t0.Add(time.Hour), 2); len(got) != 2 || !got[0].Due.Equal(t0) {
		t.Errorf("TimersBetween limited to 2 = %+v", got)
	}
}

// testPages stores and replaces pages.
func testPages(t *testing.T, s engine.Store) {
	p := engine.Page{ID: "100", Primary: states.PrimaryBot, RingCXAppID: "200", BotAppIDs: []string{"300"}}
	if err := s.PutPage(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Primary = states.PrimaryRingCX
	if err := s.PutPage(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ps, err := s.Pages(ctx); err != nil || len(ps) != 1 || ps[0].Primary != states.PrimaryRingCX || ps[0].BotAppIDs[0] != "300" {
		t.Errorf("Pages = %+v, %v", ps, err)
	}
	if r, err := s.Restored(ctx); err != nil || r {
		t.Errorf("Restored = %v, %v; want false", r, err)
	}
}

// testThreadView checks the one-moment read of a thread: what its three
// separate reads return when nothing changes, and, while a writer steps a
// thread, never a newest history entry other than the record's revision.
func testThreadView(t *testing.T, s engine.Store) {
	k := engine.ThreadKey{PageID: "100", PSID: "tv"}
	if _, err := s.ThreadView(ctx, k, 0, 5); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("ThreadView of an unknown thread: %v, want ErrNotFound", err)
	}
	var th *engine.Thread
	for j := range 6 {
		th = Step(t, s, th, k, []states.State{states.Bot, states.Agent}[j%2], nil)
	}
	next := *th
	next.State = states.Pending
	next.Revision = 7
	next.Intervention = "ivtv"
	if err := s.Commit(ctx, &engine.Commit{
		Thread: &next, Expect: 6,
		History:       []engine.HistoryEntry{{Revision: 7, From: states.Agent, To: states.Pending}},
		Contents:      []engine.Content{{ID: "ctv", Status: engine.SyncPending, Body: "hello"}},
		Enqueue:       []string{"ctv"},
		Interventions: []engine.Intervention{{ID: "ivtv", Status: engine.InterventionOpen, PageID: "100", PSID: "tv"}},
	}); err != nil {
		t.Fatal(err)
	}
	revs := func(h []engine.HistoryEntry) []uint64 {
		var out []uint64
		for _, e := range h {
			out = append(out, e.Revision)
		}
		return out
	}
	for _, c := range []struct {
		before uint64
		limit  int
		want   []uint64
	}{{0, 3, []uint64{7, 6, 5}}, {6, 2, []uint64{5, 4}}, {2, 5, []uint64{1}}} {
		tv, err := s.ThreadView(ctx, k, c.before, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if tv.Thread.Revision != 7 || tv.Thread.State != states.Pending {
			t.Errorf("ThreadView thread = rev %d %s, want 7 pending", tv.Thread.Revision, tv.Thread.State)
		}
		if len(tv.Queue) != 1 || tv.Queue[0].ID != "ctv" || tv.Queue[0].Body != "hello" {
			t.Errorf("ThreadView queue = %+v, want ctv", tv.Queue)
		}
		if got := revs(tv.History); !slices.Equal(got, c.want) {
			t.Errorf("ThreadView(before %d, limit %d) history = %v, want %v", c.before, c.limit, got, c.want)
		}
		if h, _ := s.History(ctx, k, c.before, c.limit); !slices.Equal(revs(h), c.want) {
			t.Errorf("History(before %d, limit %d) = %v, want %v", c.before, c.limit, revs(h), c.want)
		}
	}

	// One writer steps a thread while readers look at it.
	k2 := engine.ThreadKey{PageID: "100", PSID: "tv2"}
	th = Step(t, s, nil, k2, states.Bot, nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	reads := make([]int, 2)
	for r := range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				tv, err := s.ThreadView(ctx, k2, 0, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if len(tv.History) != 1 || tv.History[0].Revision != tv.Thread.Revision {
					t.Errorf("ThreadView read the thread at revision %d with newest history %v", tv.Thread.Revision, revs(tv.History))
					return
				}
				reads[r]++
			}
		}()
	}
	for j := range 40 {
		th = Step(t, s, th, k2, []states.State{states.Agent, states.Bot}[j%2], nil)
	}
	close(done)
	wg.Wait()
	if reads[0]+reads[1] == 0 {
		t.Error("no read ran beside the writer")
	}
}
