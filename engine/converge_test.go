package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// TestConvergesOnMetasOwner covers the ways threadctl's view of a thread can
// part from Meta's, and checks that it comes back to Meta's owner.
func TestConvergesOnMetasOwner(t *testing.T) {
	// RingCX requested control; the bot passed at once, but Meta's
	// pass_thread_control webhook was lost (the process was down for all of
	// Meta's retries). The request's deadline asks Meta before falling back:
	// RingCX owns the thread, which becomes agent, and the queue is sent.
	t.Run("pass webhook lost, then the deadline", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true, pendingTimeout: 300 * time.Millisecond})
		h.customer(psid, "hi")
		h.want(psid, states.Bot, botID)
		h.dropHandovers(true)
		ct, err := h.eng.CreateContent(ctx, key(psid), "Ann here")
		if err != nil {
			t.Fatal(err)
		}
		h.settle()
		h.dropHandovers(false)
		if th := h.thread(psid); th.State != states.Pending || h.sim.Thread(pageID, psid).OwnerAppID != ringcxID {
			t.Fatalf("setup: threadctl %s, Meta %q; want pending-request while Meta says RingCX", th.State, h.sim.Thread(pageID, psid).OwnerAppID)
		}
		h.want(psid, states.Agent, ringcxID)
		h.eventually(func() bool { c, _ := h.eng.Content(ctx, ct.ID); return c.Status == engine.SyncSynced }, func() string {
			c, _ := h.eng.Content(ctx, ct.ID)
			return "content " + c.Status + " " + c.Reason
		})
	})

	// threadctl went back to bot without hearing of the pass: RingCX's next
	// request is refused ("your app is already the thread owner"); the
	// refusal makes threadctl ask Meta, and the handover succeeds.
	t.Run("request refused as already the owner", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true})
		h.customer(psid, "hi")
		h.want(psid, states.Bot, botID)
		h.dropHandovers(true)
		if err := h.bot.PassThreadControl(ctx, pageID, psid, ringcxID, ""); err != nil {
			t.Fatal(err)
		}
		h.settle()
		h.dropHandovers(false)
		if _, err := h.apply(states.HandoverToAgent, psid, ""); err != nil {
			t.Fatalf("handover: %v", err)
		}
		h.want(psid, states.Agent, ringcxID)
	})

	// Meta applied a take but its answer was lost (the client timed out):
	// the call's outcome is unknown, the Bots API caller gets Meta's error,
	// and threadctl asks Meta again in the background.
	t.Run("answer lost", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryNone, noClaimIdle: true})
		h.customer(psid, "hi")
		h.want(psid, states.Idle, "")
		h.sim.SetFault(sim.Fault{Call: "take_thread_control", DelayMS: 300, Count: 1, ApplyLate: true})
		h.sim.SetFault(sim.Fault{Call: "thread_owner", Status: 503, Count: 8})
		c, cancel := contextWithTimeout(150 * time.Millisecond)
		defer cancel()
		_, err := h.eng.Apply(c, engine.Input{Event: states.HandoverToAgent, Key: key(psid), Cause: engine.CauseBotsAPI})
		if code(err) != engine.CodeMeta {
			t.Fatalf("handover: %v, want Meta's error", err)
		}
		h.settle()
		if th := h.thread(psid); th.State != states.Idle || th.RecheckAt.IsZero() {
			t.Fatalf("after the lost answer: %s, recheck at %v; want idle with a recheck", th.State, th.RecheckAt)
		}
		// Meta does not answer at first; the recheck tries again.
		h.want(psid, states.Agent, ringcxID)
		if th := h.thread(psid); !th.RecheckAt.IsZero() {
			t.Errorf("recheck still armed after Meta answered: %v", th.RecheckAt)
		}
	})
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
