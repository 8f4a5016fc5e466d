package etcd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store/storetest"
)

var ctx = context.Background()

// TestContract runs the assertions every engine.Store keeps (the bbolt
// store runs the same) against the cluster.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) engine.Store { return open(t, "", nil) })
}

// TestCompareAndSwapAcrossInstances: two instances read the same revision;
// the first commit wins, the second is refused as a conflict, and so is an
// intent decided on the old revision — and a read after it sees the winner.
func TestCompareAndSwapAcrossInstances(t *testing.T) {
	prefix := newPrefix()
	a, b := open(t, prefix, nil), open(t, prefix, nil)
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	t0 := time.Now().UTC()
	first := engine.Thread{PageID: "100", PSID: "u1", State: states.Bot, Revision: 1, CreatedAt: t0}
	if err := a.Commit(ctx, &engine.Commit{Thread: &first, History: []engine.HistoryEntry{{Revision: 1, To: states.Bot}}}); err != nil {
		t.Fatal(err)
	}
	readA, _ := a.Thread(ctx, k)
	readB, _ := b.Thread(ctx, k)
	next := func(r engine.Thread, st states.State) *engine.Commit {
		n := r
		n.Revision, n.State = r.Revision+1, st
		return &engine.Commit{Thread: &n, Expect: r.Revision, Prev: &r, History: []engine.HistoryEntry{{Revision: n.Revision, From: r.State, To: st}}}
	}
	if err := a.Commit(ctx, next(readA, states.Agent)); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, next(readB, states.Pending)); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("the second instance's commit on the same revision: %v, want ErrConflict", err)
	}
	if err := b.PutIntent(ctx, engine.Intent{Key: k, Revision: readB.Revision, Call: states.CallTake}); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("an intent on the old revision: %v, want ErrConflict", err)
	}
	if got, _ := b.Thread(ctx, k); got.State != states.Agent || got.Revision != 2 {
		t.Errorf("thread = %s rev %d, want agent rev 2", got.State, got.Revision)
	}
	if n, _ := b.StateCounts(ctx); n[states.Agent] != 1 || n[states.Bot] != 0 {
		t.Errorf("StateCounts = %v", n)
	}
}

// TestOrphansAreTakenOverOnce: what a crashed instance claimed — an intent,
// accepted events, a queue — is handed to exactly one survivor once its
// lease expires, and not before.
func TestOrphansAreTakenOverOnce(t *testing.T) {
	prefix := newPrefix()
	dead, b, c := open(t, prefix, nil), open(t, prefix, nil), open(t, prefix, nil)
	k := engine.ThreadKey{PageID: "100", PSID: "u1"}
	th := engine.Thread{PageID: "100", PSID: "u1", State: states.Bot, Revision: 1}
	if err := dead.Commit(ctx, &engine.Commit{Thread: &th, History: []engine.HistoryEntry{{Revision: 1, To: states.Bot}},
		Contents: []engine.Content{{ID: "c1", Status: engine.SyncPending}}, Enqueue: []string{"c1"}}); err != nil {
		t.Fatal(err)
	}
	if err := dead.PutIntent(ctx, engine.Intent{Key: k, Revision: 1, Call: states.CallTake}); err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Accept(ctx, []engine.Notice{{PageID: "100", PSID: "u1", Kind: engine.NoticeMessage}}); err != nil {
		t.Fatal(err)
	}
	if o, err := b.Orphans(ctx); err != nil || len(o.Intents)+len(o.Accepted)+len(o.Queued) != 0 {
		t.Fatalf("orphans of a live instance: %+v, %v", o, err)
	}
	if ins, _ := b.Intents(ctx); len(ins) != 0 {
		t.Errorf("another instance's intents listed as this one's: %+v", ins)
	}
	dead.Crash()
	start := time.Now()
	var got engine.Orphans
	for time.Since(start) < 10*time.Second {
		ob, err := b.Orphans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		oc, err := c.Orphans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []engine.Orphans{ob, oc} {
			got.Intents = append(got.Intents, o.Intents...)
			got.Accepted = append(got.Accepted, o.Accepted...)
			got.Queued = append(got.Queued, o.Queued...)
		}
		if len(got.Intents) > 0 && len(got.Accepted) > 0 && len(got.Queued) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("taken over %v after the crash", time.Since(start).Round(time.Millisecond))
	if len(got.Intents) != 1 || len(got.Accepted) != 1 || len(got.Queued) != 1 {
		t.Fatalf("taken over %+v, want one intent, one event, one queue, once", got)
	}
	ib, _ := b.Intents(ctx)
	ic, _ := c.Intents(ctx)
	if len(ib)+len(ic) != 1 {
		t.Errorf("the intent belongs to %d survivors, want 1", len(ib)+len(ic))
	}
}
