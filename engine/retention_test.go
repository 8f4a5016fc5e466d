package engine_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// TestRetentionUnderLoad keeps each thread's newest 5 history entries while
// customers write on several threads at once and the pruner runs: every
// entry the setting keeps is there, contiguous up to the thread's revision,
// and nothing else.
func TestRetentionUnderLoad(t *testing.T) {
	const keep, threads, messages = 5, 4, 30
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot, historyKeep: keep})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // the pruner, as often as it can
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.eng.Prune(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range threads {
		wg.Go(func() {
			psid := fmt.Sprintf("71000000000000%02d", i)
			for j := range messages {
				if _, err := h.sim.CustomerMessage(pageID, psid, fmt.Sprintf("message %d", j)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	h.settle()
	close(stop)
	for i := range threads {
		psid := fmt.Sprintf("71000000000000%02d", i)
		th := h.thread(psid)
		if th.Revision < messages {
			t.Fatalf("thread %s at revision %d after %d messages", psid, th.Revision, messages)
		}
		hs := h.history(psid)
		if len(hs) != keep {
			t.Errorf("thread %s keeps %d entries, want %d: %v", psid, len(hs), keep, historySummary(hs))
			continue
		}
		for j, e := range hs {
			if want := th.Revision - keep + 1 + uint64(j); e.Revision != want {
				t.Errorf("thread %s: entry %d is revision %d, want %d", psid, j, e.Revision, want)
			}
		}
	}
}

// TestRetentionOfRecords removes synced contents and closed interventions
// once older than the retention period, and keeps pending contents, open
// interventions and young records.
func TestRetentionOfRecords(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX, clock: clock})
	h.customer(psid, "hi")
	h.want(psid, states.Agent, ringcxID)
	old, _, err := h.eng.OpenIntervention(ctx, key(psid))
	if err != nil {
		t.Fatal(err)
	}
	sent, err := h.eng.CreateContent(ctx, key(psid), "an old reply")
	if err != nil || sent.Status != engine.SyncSynced {
		t.Fatalf("content %+v, %v", sent, err)
	}
	if _, _, err := h.eng.CloseIntervention(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	h.settle()
	clock.Advance(31 * 24 * time.Hour)
	h.customer(psid, "back a month later")
	open, _, err := h.eng.OpenIntervention(ctx, key(psid))
	if err != nil {
		t.Fatal(err)
	}
	young, err := h.eng.CreateContent(ctx, key(psid), "a new reply")
	if err != nil {
		t.Fatal(err)
	}
	h.settle()
	if err := h.eng.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.Content(ctx, sent.ID); code(err) != engine.CodeNotFound {
		t.Errorf("the month-old synced content is still there: %v", err)
	}
	if _, err := h.eng.Intervention(ctx, old.ID); code(err) != engine.CodeNotFound {
		t.Errorf("the month-old closed intervention is still there: %v", err)
	}
	if _, err := h.eng.Content(ctx, young.ID); err != nil {
		t.Errorf("the new content is gone: %v", err)
	}
	if iv, err := h.eng.Intervention(ctx, open.ID); err != nil || iv.Status != engine.InterventionOpen {
		t.Errorf("the open intervention: %+v, %v", iv, err)
	}
}
