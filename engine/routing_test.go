package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// TestPageSwitchedToConversationRouting switches a Handover Protocol page to
// Conversation Routing at Meta while threadctl runs, with no change to its
// configuration: the next handover is refused the Conversation Routing way
// (no request_thread_control on a page with a default app), threadctl learns
// the page's routing, counts it once, and hands over with the new table.
func TestPageSwitchedToConversationRouting(t *testing.T) {
	t.Run("Meta says how the page routes", func(t *testing.T) { testPageSwitched(t, false) })
	// Without messaging_feature_status, the refusal alone teaches it.
	t.Run("Meta does not say", func(t *testing.T) { testPageSwitched(t, true) })
}

func testPageSwitched(t *testing.T, noFeatureStatus bool) {
	on := true
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true})
	if noFeatureStatus {
		h.sim.SetFault(sim.Fault{Call: "node", Status: 500})
	}
	h.customer(psid, "hi")
	h.want(psid, states.Bot, botID)
	if p, _ := h.eng.Page(pageID); p.Table(h.now()) != states.HOP(states.PrimaryBot) {
		t.Fatalf("table %s before the switch", p.Table(h.now()))
	}

	pc := h.simPage()
	pc.Mode = "cr"
	pc.Apps[0].TakeoverAllowed = &on
	if err := h.sim.PutPage(pc); err != nil {
		t.Fatal(err)
	}
	if _, err := h.apply(states.HandoverToAgent, psid, ""); err != nil {
		t.Fatalf("handover after the switch: %v", err)
	}
	h.want(psid, states.Agent, ringcxID)
	var events []string
	for _, e := range h.history(psid) {
		events = append(events, string(e.Event)+":"+e.Outcome+"@"+e.Table)
	}
	want := "customer_message:applied@bot handover_to_agent:failed@bot handover_to_agent:applied@cr-bot"
	if got := strings.Join(events, " "); got != want {
		t.Errorf("history %s, want %s", got, want)
	}
	p, _ := h.eng.Page(pageID)
	if p.RoutingNow() != states.ConversationRouting || p.Learned.RoutingFrom == "" {
		t.Errorf("page routing %s (learned %+v), want conversation_routing learned from Meta", p.RoutingNow(), p.Learned)
	}

	// Another thread: the new table at once, nothing more to learn.
	const other = "7000000000000002"
	h.customer(other, "hello")
	h.want(other, states.Bot, botID)
	if _, err := h.apply(states.HandoverToAgent, other, ""); err != nil {
		t.Fatal(err)
	}
	h.want(other, states.Agent, ringcxID)
	if e := h.history(other); len(e) != 2 || e[1].Outcome != engine.OutcomeApplied || len(e[1].Calls) != 1 || e[1].Calls[0].Call != string(states.CallTake) {
		t.Errorf("second handover: %v, want one take", historySummary(e))
	}
	h.mu.Lock()
	learned := h.learned["routing"]
	h.mu.Unlock()
	if learned != 1 {
		t.Errorf("routing learned %d times, want 1", learned)
	}

	// What was learned survives a restart.
	h.closeEngine()
	h.openEngine()
	if p, _ := h.eng.Page(pageID); p.RoutingNow() != states.ConversationRouting {
		t.Errorf("after a restart the page's routing is %s", p.RoutingNow())
	}
}

// TestTakeoverLearnedAndRechecked runs a Conversation Routing page whose
// takeover setting for RingCX is off at Meta, though threadctl assumes it is
// on: the first handover learns it (409 with what to do); after
// TakeoverRecheck, once the page's admin turned it on, take works again.
func TestTakeoverLearnedAndRechecked(t *testing.T) {
	off, on := false, true
	clock := newFakeClock()
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot, routing: states.ConversationRouting, takeover: &off, clock: clock})
	h.customer(psid, "hi")
	h.want(psid, states.Bot, botID)

	_, err := h.apply(states.HandoverToAgent, psid, "")
	if code(err) != engine.CodeConflict || !strings.Contains(err.Error(), "Advanced Messaging") || !strings.Contains(err.Error(), ringcxID) {
		t.Fatalf("handover with takeover off: %v; want a conflict saying what to do", err)
	}
	if p, _ := h.eng.Page(pageID); p.Table(h.now()).Name() != "cr-bot-no-takeover" {
		t.Fatalf("table %s, want cr-bot-no-takeover", p.Table(h.now()))
	}
	// Asked again, the refusal comes from the table, with no call to Meta.
	before := len(h.history(psid))
	if _, err := h.apply(states.HandoverToAgent, psid, ""); code(err) != engine.CodeConflict {
		t.Fatalf("second handover: %v", err)
	}
	if got := len(h.history(psid)); got != before {
		t.Errorf("a refusal by the table recorded %d entries", got-before)
	}
	// An agent's reply waits for the owner to pass.
	ct, err := h.eng.CreateContent(ctx, key(psid), "Hello from Ann")
	if err != nil || ct.Status != engine.SyncPending {
		t.Fatalf("content = %+v, %v; want pending", ct, err)
	}
	h.want(psid, states.Pending, botID)
	if err := h.bot.PassThreadControl(ctx, pageID, psid, ringcxID, ""); err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.want(psid, states.Agent, ringcxID)
	h.eventually(func() bool { c, _ := h.eng.Content(ctx, ct.ID); return c.Status == engine.SyncSynced }, func() string { return "content not sent" })

	// The admin turns the setting on; after the recheck time take is tried.
	pc := h.simPage()
	pc.Apps[0].TakeoverAllowed = &on
	if err := h.sim.PutPage(pc); err != nil {
		t.Fatal(err)
	}
	clock.Advance(engine.TakeoverRecheck)
	const other = "7000000000000002"
	h.customer(other, "hello")
	if _, err := h.apply(states.HandoverToAgent, other, ""); err != nil {
		t.Fatalf("handover after the recheck time: %v", err)
	}
	h.want(other, states.Agent, ringcxID)
	if p, _ := h.eng.Page(pageID); p.Learned.TakeoverOff {
		t.Errorf("a take allowed by Meta should clear what was learned: %+v", p.Learned)
	}
}

// TestControlExtendedDuringIntervention keeps an agent's thread past Meta's
// 24 h window: an hour before it ends, the open intervention extends control
// (7 days), so the customer who answers the next morning still reaches the
// agent; once the intervention is closed the window is left to run.
func TestControlExtendedDuringIntervention(t *testing.T) {
	for _, tbl := range []states.Table{states.HOP(states.PrimaryRingCX), states.TableFor(states.ConversationRouting, states.PrimaryBot, true)} {
		t.Run(tbl.Name(), func(t *testing.T) {
			clock := newFakeClock()
			opts := tableOpts(tbl)
			opts.clock = clock
			h := newHarness(t, opts)
			h.reach(tbl, states.Agent)
			if _, _, err := h.eng.OpenIntervention(ctx, key(psid)); err != nil {
				t.Fatal(err)
			}
			clock.Advance(23*time.Hour + time.Minute)
			h.eventually(func() bool { return h.lastEntry(psid).Event == states.ControlExpiring }, func() string {
				return "no extension; history ends " + string(h.lastEntry(psid).Event)
			})
			e := h.lastEntry(psid)
			if e.Outcome != engine.OutcomeNoChange || len(e.Calls) != 1 || e.Calls[0].Call != string(states.CallExtend) || e.Calls[0].Outcome != "ok" {
				t.Fatalf("extension recorded as %+v", e)
			}
			h.settle()
			clock.Advance(7 * time.Hour) // the next morning, 30 h after the last message
			h.settle()
			if meta := h.sim.Thread(pageID, psid); meta.OwnerAppID != ringcxID {
				t.Fatalf("Meta's owner after 30 h: %q, want RingCX", meta.OwnerAppID)
			}
			h.customer(psid, "good morning")
			h.want(psid, states.Agent, ringcxID)
		})
	}
}
