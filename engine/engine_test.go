package engine_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

const psid = "7000000000000001"

func code(err error) engine.Code {
	if err == nil {
		return ""
	}
	return engine.ErrorCode(err)
}

func (h *harness) lastEntry(psid string) engine.HistoryEntry {
	h.t.Helper()
	hs := h.history(psid)
	if len(hs) == 0 {
		h.t.Fatal("no history")
	}
	return hs[len(hs)-1]
}

// toBot puts the thread in state bot (owned by the primary bot, or claimed
// by the reference bot on an idle thread).
func (h *harness) toBot(p states.Primary) {
	h.t.Helper()
	switch p {
	case states.PrimaryBot:
		h.customer(psid, "hi")
	case states.PrimaryNone:
		// The reference bot claims idle threads with request_thread_control,
		// which sends RingCX no webhook: threadctl learns the owner from the
		// next message's standby channel.
		h.customer(psid, "hi")
		h.customer(psid, "still there?")
	case states.PrimaryRingCX:
		h.customer(psid, "hi")
		if _, err := h.apply(states.HandoverToBot, psid, botID); err != nil {
			h.t.Fatal(err)
		}
	}
	h.want(psid, states.Bot, botID)
}

func TestCustomerMessageFromIdle(t *testing.T) {
	tests := []struct {
		primary   states.Primary
		wantState states.State
		wantOwner string
	}{
		{states.PrimaryBot, states.Bot, botID},
		{states.PrimaryRingCX, states.Agent, ringcxID},
		{states.PrimaryNone, states.Idle, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.primary), func(t *testing.T) {
			h := newHarness(t, harnessOpts{primary: tt.primary, noClaimIdle: true})
			h.customer(psid, "hello")
			h.want(psid, tt.wantState, tt.wantOwner)
			th := h.thread(psid)
			if th.Revision != 1 || th.Owner != tt.wantOwner || th.Primary != tt.primary {
				t.Errorf("thread = %+v", th)
			}
			// Another message: activity, no change.
			h.customer(psid, "again")
			h.want(psid, tt.wantState, tt.wantOwner)
			if e := h.lastEntry(psid); e.Event != states.CustomerMessage || e.Outcome != engine.OutcomeNoChange {
				t.Errorf("second message recorded as %+v", e)
			}
		})
	}
}

func TestHandoverToAgentFromBot(t *testing.T) {
	for _, p := range states.Primaries {
		t.Run(string(p), func(t *testing.T) {
			h := newHarness(t, harnessOpts{primary: p, honorRequests: true, passDelay: 50 * time.Millisecond})
			h.toBot(p)
			res, err := h.eng.Apply(ctx, engine.Input{Event: states.HandoverToAgent, Key: key(psid), Cause: engine.CauseBotsAPI})
			if err != nil {
				t.Fatal(err)
			}
			if res.To != states.Pending {
				t.Errorf("handover_to_agent → %s, want pending-request", res.To)
			}
			// The reference bot honours the request: control_passed → agent.
			h.settle()
			h.want(psid, states.Agent, ringcxID)
			// Again: no change, success.
			res, err = h.apply(states.HandoverToAgent, psid, "")
			if err != nil || res.Outcome != engine.OutcomeNoChange {
				t.Errorf("second handover_to_agent = %+v, %v; want no change", res, err)
			}
		})
	}
}

func TestHandoverToAgentFromIdleTakes(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryNone, noClaimIdle: true})
	h.customer(psid, "hello")
	h.want(psid, states.Idle, "")
	res, err := h.apply(states.HandoverToAgent, psid, "")
	if err != nil || res.To != states.Agent {
		t.Fatalf("handover_to_agent = %+v, %v", res, err)
	}
	h.want(psid, states.Agent, ringcxID)
	if e := h.lastEntry(psid); len(e.Calls) != 1 || e.Calls[0].Call != "take_thread_control" || e.Calls[0].Outcome != "ok" {
		t.Errorf("history calls = %+v, want one take", e.Calls)
	}
}

func TestHandoverToAgentWhilePending(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: false})
	h.toBot(states.PrimaryBot)
	if _, err := h.apply(states.HandoverToAgent, psid, ""); err != nil {
		t.Fatal(err)
	}
	h.want(psid, states.Pending, botID)
	res, err := h.apply(states.HandoverToAgent, psid, "")
	if err != nil || res.Outcome != engine.OutcomeNoChange || res.To != states.Pending {
		t.Errorf("handover_to_agent while pending = %+v, %v", res, err)
	}
}

func TestHandoverToBot(t *testing.T) {
	t.Run("from agent passes", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
		h.customer(psid, "hi")
		h.want(psid, states.Agent, ringcxID)
		res, err := h.apply(states.HandoverToBot, psid, botID)
		if err != nil || res.To != states.Bot {
			t.Fatalf("handover_to_bot = %+v, %v", res, err)
		}
		h.want(psid, states.Bot, botID)
		if th := h.thread(psid); th.Owner != botID {
			t.Errorf("owner = %s, want %s", th.Owner, botID)
		}
	})
	t.Run("from idle passes", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryNone, noClaimIdle: true})
		h.customer(psid, "hi")
		res, err := h.apply(states.HandoverToBot, psid, bot2ID)
		if err != nil || res.To != states.Bot {
			t.Fatalf("handover_to_bot = %+v, %v", res, err)
		}
		h.want(psid, states.Bot, bot2ID)
	})
	t.Run("from pending cancels", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot})
		h.toBot(states.PrimaryBot)
		h.apply(states.HandoverToAgent, psid, "")
		h.want(psid, states.Pending, botID)
		res, err := h.apply(states.HandoverToBot, psid, botID)
		if err != nil || res.To != states.Bot {
			t.Fatalf("handover_to_bot = %+v, %v", res, err)
		}
		if th := h.thread(psid); th.Pending != nil {
			t.Errorf("pending request kept: %+v", th.Pending)
		}
	})
	t.Run("same bot: no change", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot})
		h.toBot(states.PrimaryBot)
		res, err := h.apply(states.HandoverToBot, psid, botID)
		if err != nil || res.Outcome != engine.OutcomeNoChange {
			t.Errorf("handover_to_bot = %+v, %v; want no change", res, err)
		}
	})
	t.Run("another bot owns: 409 naming it", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot})
		h.toBot(states.PrimaryBot)
		_, err := h.apply(states.HandoverToBot, psid, bot2ID)
		if code(err) != engine.CodeConflict || !strings.Contains(err.Error(), botID) {
			t.Errorf("error = %v, want a conflict naming %s", err, botID)
		}
	})
	t.Run("intervention open: 409", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
		h.customer(psid, "hi")
		if _, _, err := h.eng.OpenIntervention(ctx, key(psid)); err != nil {
			t.Fatal(err)
		}
		_, err := h.apply(states.HandoverToBot, psid, botID)
		if code(err) != engine.CodeConflict || !strings.Contains(err.Error(), "intervention") {
			t.Errorf("error = %v, want intervention conflict", err)
		}
		h.want(psid, states.Agent, ringcxID)
	})
	t.Run("not a bot app: invalid", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
		h.customer(psid, "hi")
		_, err := h.apply(states.HandoverToBot, psid, "999")
		if code(err) != engine.CodeInvalid {
			t.Errorf("error = %v, want invalid", err)
		}
	})
}

func TestAgentEngage(t *testing.T) {
	tests := []struct {
		primary   states.Primary
		wantState states.State // right after the intervention opens
		wantCall  string
	}{
		{states.PrimaryBot, states.Pending, "request_thread_control"},
		{states.PrimaryRingCX, states.Agent, "take_thread_control"},
		{states.PrimaryNone, states.Pending, "request_thread_control"},
	}
	for _, tt := range tests {
		t.Run(string(tt.primary)+"/from bot", func(t *testing.T) {
			h := newHarness(t, harnessOpts{primary: tt.primary, honorRequests: false})
			h.toBot(tt.primary)
			iv, res, err := h.eng.OpenIntervention(ctx, key(psid))
			if err != nil {
				t.Fatal(err)
			}
			if res.To != tt.wantState {
				t.Errorf("agent_engage → %s, want %s", res.To, tt.wantState)
			}
			e := h.lastEntry(psid)
			if e.Event != states.AgentEngage || len(e.Calls) != 1 || e.Calls[0].Call != tt.wantCall {
				t.Errorf("history = %+v, want agent_engage with %s", e, tt.wantCall)
			}
			if th := h.thread(psid); th.Intervention != iv.ID {
				t.Errorf("thread intervention = %q, want %q", th.Intervention, iv.ID)
			}
			// Opening a second one is refused.
			if _, _, err := h.eng.OpenIntervention(ctx, key(psid)); code(err) != engine.CodeConflict {
				t.Errorf("second intervention: %v, want conflict", err)
			}
		})
	}
	t.Run("from idle takes", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryNone, noClaimIdle: true})
		h.customer(psid, "hi")
		_, res, err := h.eng.OpenIntervention(ctx, key(psid))
		if err != nil || res.To != states.Agent {
			t.Fatalf("OpenIntervention = %+v, %v", res, err)
		}
		h.want(psid, states.Agent, ringcxID)
	})
	t.Run("content while pending is queued, sent when control passes", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true, passDelay: 300 * time.Millisecond})
		h.toBot(states.PrimaryBot)
		if _, _, err := h.eng.OpenIntervention(ctx, key(psid)); err != nil {
			t.Fatal(err)
		}
		ct, err := h.eng.CreateContent(ctx, key(psid), "Hello, I am Ann from support")
		if err != nil {
			t.Fatal(err)
		}
		if ct.Status != engine.SyncPending {
			t.Errorf("content while pending = %s, want pending", ct.Status)
		}
		h.settle()
		h.want(psid, states.Agent, ringcxID)
		h.eventually(func() bool {
			got, _ := h.eng.Content(ctx, ct.ID)
			return got.Status == engine.SyncSynced
		}, func() string { got, _ := h.eng.Content(ctx, ct.ID); return fmt.Sprintf("content %+v", got) })
		msgs := h.sim.Thread(pageID, psid).Messages
		if last := msgs[len(msgs)-1]; last.From != ringcxID || last.Text != "Hello, I am Ann from support" {
			t.Errorf("customer's last message = %+v", last)
		}
	})
}

func TestControlTakenAndRequested(t *testing.T) {
	t.Run("bot primary takes from RingCX", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true})
		h.toBot(states.PrimaryBot)
		h.apply(states.HandoverToAgent, psid, "")
		h.want(psid, states.Agent, ringcxID)
		if err := h.bot.TakeThreadControl(ctx, pageID, psid, "bot wants it back"); err != nil {
			t.Fatal(err)
		}
		h.settle()
		h.want(psid, states.Bot, botID)
		if e := h.lastEntry(psid); e.Event != states.ControlTaken || e.Cause != engine.CauseWebhook {
			t.Errorf("history = %+v, want control_taken", e)
		}
	})
	t.Run("bot requests, no intervention: passed", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
		h.customer(psid, "hi")
		h.want(psid, states.Agent, ringcxID)
		if err := h.bot.RequestThreadControl(ctx, pageID, psid, "let me"); err != nil {
			t.Fatal(err)
		}
		h.settle()
		h.want(psid, states.Bot, botID)
		if e := h.lastEntry(psid); e.Event != states.ControlRequested || e.Calls[0].Call != "pass_thread_control" || e.Calls[0].Target != botID {
			t.Errorf("history = %+v", e)
		}
	})
	t.Run("bot requests during an intervention: ignored", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
		h.customer(psid, "hi")
		h.eng.OpenIntervention(ctx, key(psid))
		if err := h.bot.RequestThreadControl(ctx, pageID, psid, "let me"); err != nil {
			t.Fatal(err)
		}
		h.settle()
		h.want(psid, states.Agent, ringcxID)
		if e := h.lastEntry(psid); e.Event != states.ControlRequested || e.Outcome != engine.OutcomeIgnored {
			t.Errorf("history = %+v, want control_requested ignored", e)
		}
	})
}

func TestInterventionClosed(t *testing.T) {
	t.Run("agent releases", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
		h.customer(psid, "hi")
		iv, _, err := h.eng.OpenIntervention(ctx, key(psid))
		if err != nil {
			t.Fatal(err)
		}
		closed, res, err := h.eng.CloseIntervention(ctx, iv.ID)
		if err != nil || res.To != states.Idle || closed.Status != engine.InterventionClosed {
			t.Fatalf("CloseIntervention = %+v %+v, %v", closed, res, err)
		}
		h.settle()
		h.want(psid, states.Idle, "")
		if th := h.thread(psid); th.Intervention != "" {
			t.Errorf("thread still has intervention %s", th.Intervention)
		}
		// Closing again is harmless.
		if again, _, err := h.eng.CloseIntervention(ctx, iv.ID); err != nil || again.Status != engine.InterventionClosed {
			t.Errorf("second close = %+v, %v", again, err)
		}
	})
	t.Run("pending gives up and fails queued contents", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot})
		h.toBot(states.PrimaryBot)
		iv, _, err := h.eng.OpenIntervention(ctx, key(psid))
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := h.eng.CreateContent(ctx, key(psid), "queued")
		_, res, err := h.eng.CloseIntervention(ctx, iv.ID)
		if err != nil || res.To != states.Bot {
			t.Fatalf("close = %+v, %v", res, err)
		}
		got, _ := h.eng.Content(ctx, ct.ID)
		if got.Status != engine.SyncFailed || got.Reason == "" {
			t.Errorf("queued content = %+v, want failed with a reason", got)
		}
		if q, _ := h.eng.Queue(ctx, key(psid)); len(q) != 0 {
			t.Errorf("queue = %+v, want empty", q)
		}
	})
	t.Run("bot owns: closed, event ignored", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true})
		h.toBot(states.PrimaryBot)
		iv, _, _ := h.eng.OpenIntervention(ctx, key(psid))
		h.settle()
		h.want(psid, states.Agent, ringcxID)
		h.bot.TakeThreadControl(ctx, pageID, psid, "")
		h.settle()
		h.want(psid, states.Bot, botID)
		closed, res, err := h.eng.CloseIntervention(ctx, iv.ID)
		if err != nil || closed.Status != engine.InterventionClosed || res.Outcome != engine.OutcomeIgnored {
			t.Errorf("close = %+v %+v, %v; want closed and ignored", closed, res, err)
		}
	})
}

func TestRequestExpired(t *testing.T) {
	tests := []struct {
		primary   states.Primary
		wantState states.State
		wantOwner string
	}{
		{states.PrimaryBot, states.Bot, botID},
		{states.PrimaryRingCX, states.Agent, ringcxID},
		{states.PrimaryNone, states.Bot, botID},
	}
	for _, tt := range tests {
		t.Run(string(tt.primary), func(t *testing.T) {
			h := newHarness(t, harnessOpts{primary: tt.primary, honorRequests: false, pendingTimeout: 150 * time.Millisecond})
			h.toBot(tt.primary)
			if tt.primary == states.PrimaryRingCX {
				// A RingCX primary takes at once; get to pending through the Bots API.
				if _, err := h.apply(states.HandoverToAgent, psid, ""); err != nil {
					t.Fatal(err)
				}
			} else if _, _, err := h.eng.OpenIntervention(ctx, key(psid)); err != nil {
				t.Fatal(err)
			}
			h.want(psid, states.Pending, botID)
			ct, _ := h.eng.CreateContent(ctx, key(psid), "waiting for control")
			h.want(psid, tt.wantState, tt.wantOwner)
			if e := h.lastEntry(psid); e.Event != states.RequestExpired || e.Cause != engine.CauseTimer {
				t.Errorf("history = %+v, want request_expired by timer", e)
			}
			wantStatus := engine.SyncFailed
			if tt.wantState == states.Agent {
				wantStatus = engine.SyncSynced
			}
			h.eventually(func() bool {
				got, _ := h.eng.Content(ctx, ct.ID)
				return got.Status == wantStatus
			}, func() string {
				got, _ := h.eng.Content(ctx, ct.ID)
				return fmt.Sprintf("content %+v, want %s", got, wantStatus)
			})
		})
	}
}

func TestControlExpiredAfter24h(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX, clock: clock})
	h.customer(psid, "hi")
	h.want(psid, states.Agent, ringcxID)
	clock.Advance(23 * time.Hour)
	h.customer(psid, "an hour to go") // activity restarts the window
	clock.Advance(2 * time.Hour)
	time.Sleep(20 * time.Millisecond)
	if th := h.thread(psid); th.State != states.Agent {
		t.Fatalf("expired early: %s", th.State)
	}
	clock.Advance(22*time.Hour + time.Minute)
	h.want(psid, states.Idle, "")
	if e := h.lastEntry(psid); e.Event != states.ControlExpired {
		t.Errorf("history = %+v, want control_expired", e)
	}
}

func TestOwnerCorrection(t *testing.T) {
	t.Run("stale idle: take refused, owner observed, request instead", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryNone, noClaimIdle: true, honorRequests: false})
		h.customer(psid, "hi")
		h.want(psid, states.Idle, "")
		// The bot takes the idle thread: Meta sends RingCX no webhook.
		if err := h.bot.TakeThreadControl(ctx, pageID, psid, ""); err != nil {
			t.Fatal(err)
		}
		h.settle()
		if th := h.thread(psid); th.State != states.Idle {
			t.Fatalf("state = %s, want a stale idle", th.State)
		}
		res, err := h.apply(states.HandoverToAgent, psid, "")
		if err != nil {
			t.Fatal(err)
		}
		if res.To != states.Pending {
			t.Errorf("after correction: %s, want pending-request", res.To)
		}
		var got []string
		for _, e := range h.history(psid) {
			got = append(got, fmt.Sprintf("%s:%s", e.Event, e.Outcome))
		}
		want := []string{"customer_message:no_change", "handover_to_agent:failed", "owner_observed:applied", "handover_to_agent:applied"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("history = %v, want %v", got, want)
		}
	})
	t.Run("standby message while agent", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true})
		h.toBot(states.PrimaryBot)
		h.apply(states.HandoverToAgent, psid, "")
		h.want(psid, states.Agent, ringcxID)
		// The bot takes control back and the take webhook to RingCX is lost.
		h.dropHandovers(true)
		if err := h.bot.TakeThreadControl(ctx, pageID, psid, ""); err != nil {
			t.Fatal(err)
		}
		h.settle()
		h.dropHandovers(false)
		if th := h.thread(psid); th.State != states.Agent {
			t.Fatalf("state = %s, want a stale agent", th.State)
		}
		// The customer's next message reaches RingCX on standby.
		h.customer(psid, "hello?")
		h.want(psid, states.Bot, botID)
		e := h.lastEntry(psid)
		if e.Event != states.OwnerObserved || e.Cause != engine.CauseCheck || e.Calls[0].Call != "thread_owner" {
			t.Errorf("history = %+v, want owner_observed from a thread_owner check", e)
		}
	})
}

func TestWebhookDuplicatesAndStaleEvents(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
	h.customer(psid, "hi")
	h.want(psid, states.Agent, ringcxID)
	th := h.thread(psid)
	msg := engine.Input{Event: states.CustomerMessage, Key: key(psid), Cause: engine.CauseWebhook, Create: true, DedupKey: "mid:dup-1", MetaTime: h.now(), Channel: engine.ChannelMessaging}
	if _, err := h.eng.Apply(ctx, msg); err != nil {
		t.Fatal(err)
	}
	res, err := h.eng.Apply(ctx, msg)
	if err != nil || res.Outcome != engine.OutcomeDuplicate {
		t.Fatalf("duplicate = %+v, %v", res, err)
	}
	if got := h.thread(psid).Revision; got != th.Revision+1 {
		t.Errorf("revision = %d, want %d (the duplicate changes nothing)", got, th.Revision+1)
	}
	// A take older than the thread's last change from Meta is ignored.
	old := engine.Input{Event: states.ControlTaken, Key: key(psid), Cause: engine.CauseWebhook, AppID: botID, DedupKey: "take:old", MetaTime: time.UnixMilli(1000)}
	// Give the thread Meta-timestamped changes first.
	h.eng.Apply(ctx, engine.Input{Event: states.ControlTaken, Key: key(psid), Cause: engine.CauseWebhook, AppID: botID, DedupKey: "take:1", MetaTime: h.now()})
	h.eng.Apply(ctx, engine.Input{Event: states.ControlPassed, Key: key(psid), Cause: engine.CauseWebhook, AppID: ringcxID, DedupKey: "pass:new", MetaTime: h.now().Add(time.Millisecond)})
	if th := h.thread(psid); th.State != states.Agent {
		t.Fatalf("state = %s, want agent", th.State)
	}
	res, err = h.eng.Apply(ctx, old)
	if err != nil || res.Outcome != engine.OutcomeIgnored || res.To != states.Agent {
		t.Errorf("stale take = %+v, %v; want ignored", res, err)
	}
	if e := h.lastEntry(psid); e.Outcome != engine.OutcomeIgnored || !strings.Contains(e.Reason, "older") {
		t.Errorf("history = %+v", e)
	}
}

func TestAPIRefusalsRecordNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot})
	if _, err := h.apply(states.HandoverToAgent, psid, ""); code(err) != engine.CodeNotFound {
		t.Errorf("unknown identity: %v, want not found", err)
	}
	h.toBot(states.PrimaryBot)
	rev := h.thread(psid).Revision
	_, err := h.eng.Apply(ctx, engine.Input{Event: states.ControlTaken, Key: key(psid), Cause: engine.CauseBotsAPI})
	var e *engine.Error
	if !errors.As(err, &e) || e.Code != engine.CodeConflict || !strings.Contains(e.Message, "not allowed") {
		t.Errorf("control_taken from bot via API = %v, want not allowed", err)
	}
	if got := h.thread(psid).Revision; got != rev {
		t.Errorf("revision %d → %d after a refusal", rev, got)
	}
}

func TestGraphFailures(t *testing.T) {
	t.Run("a failed call leaves the state and reports Meta's error", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot})
		h.toBot(states.PrimaryBot)
		f := simFault("request_thread_control")
		f.Count = 3 // the first try and both retries
		h.sim.SetFault(f)
		_, err := h.apply(states.HandoverToAgent, psid, "")
		var me *engine.Error
		if !errors.As(err, &me) || me.Code != engine.CodeMeta || !strings.Contains(err.Error(), "request_thread_control") {
			t.Fatalf("error = %v, want a Meta error naming the call", err)
		}
		h.want(psid, states.Bot, botID)
		e := h.lastEntry(psid)
		if e.Outcome != engine.OutcomeFailed || e.From != states.Bot || e.To != states.Bot || len(e.Calls) != 1 || e.Calls[0].Outcome != engine.CallUnknown {
			t.Errorf("history = %+v, want a failed entry with the call", e)
		}
	})
	t.Run("a transient failure is retried by the client", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryBot})
		h.toBot(states.PrimaryBot)
		h.sim.SetFault(simFault("request_thread_control"))
		res, err := h.apply(states.HandoverToAgent, psid, "")
		if err != nil || res.To != states.Pending {
			t.Fatalf("handover_to_agent = %+v, %v; want pending after a retry", res, err)
		}
	})
	t.Run("a content Meta refuses fails with the reason", func(t *testing.T) {
		h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
		h.customer(psid, "hi")
		f := simFault("messages")
		f.Status, f.Code, f.Message = 400, 100, "(#100) Invalid parameter"
		h.sim.SetFault(f)
		ct, err := h.eng.CreateContent(ctx, key(psid), "hello")
		if err != nil {
			t.Fatal(err)
		}
		if ct.Status != engine.SyncFailed || !strings.Contains(ct.Reason, "Invalid parameter") {
			t.Errorf("content = %+v, want failed with Meta's reason", ct)
		}
		ct, _ = h.eng.CreateContent(ctx, key(psid), "hello again")
		if ct.Status != engine.SyncSynced || ct.MessageID == "" {
			t.Errorf("next content = %+v, want synced", ct)
		}
	})
}

// TestPrimaryChanged switches the page's primary in the simulator: Meta's
// app_roles webhook changes threadctl's primary for later events, threads
// keep their state.
func TestPrimaryChanged(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryNone, noClaimIdle: true})
	h.customer(psid, "hi")
	h.want(psid, states.Idle, "")
	// The page makes RingCX its primary: the simulator tells the apps whose
	// role changed with app_roles.
	pc := h.simPage()
	pc.PrimaryAppID = ringcxID
	if err := h.sim.PutPage(pc); err != nil {
		t.Fatal(err)
	}
	h.settle()
	if p, _ := h.eng.Page(pageID); p.Primary != states.PrimaryRingCX {
		t.Fatalf("primary = %s, want ringcx after app_roles", p.Primary)
	}
	if th := h.thread(psid); th.State != states.Idle {
		t.Errorf("the thread changed state: %s", th.State)
	}
	// The ringcx table now applies: a message on an idle thread goes to RingCX.
	const other = "7000000000000002"
	h.customer(other, "hello")
	h.want(other, states.Agent, ringcxID)
	// Then the bot becomes primary. Meta tells each app only its own new
	// role: RingCX learns it is no longer primary, not who is, so threadctl
	// takes the page as having none...
	pc.PrimaryAppID = botID
	if err := h.sim.PutPage(pc); err != nil {
		t.Fatal(err)
	}
	h.settle()
	if p, _ := h.eng.Page(pageID); p.Primary != states.PrimaryNone {
		t.Fatalf("primary = %s, want none once RingCX is told it is secondary", p.Primary)
	}
	// ...and a new thread, which Meta gives the bot, reaches RingCX on
	// standby: threadctl asks thread_owner and records the bot.
	const third = "7000000000000003"
	h.customer(third, "hello again")
	h.want(third, states.Bot, botID)
	if e := h.lastEntry(third); e.Event != states.OwnerObserved || e.Observed != states.ObservedOther {
		t.Errorf("history = %+v, want owner_observed (other)", e)
	}
}

// TestRestartKeepsPendingRequests restarts the engine while a request for
// control waits: the pending gauge counts it from the start, and its
// deadline still fires.
func TestRestartKeepsPendingRequests(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot, pendingTimeout: 400 * time.Millisecond})
	h.toBot(states.PrimaryBot)
	if _, err := h.apply(states.HandoverToAgent, psid, ""); err != nil {
		t.Fatal(err)
	}
	requested := h.thread(psid).Pending.RequestedAt
	h.closeEngine()
	h.openEngine()
	n, oldest := h.eng.PendingRequests()
	if n != 1 || !oldest.Equal(requested) {
		t.Errorf("after a restart PendingRequests() = %d, %v; want 1, %v", n, oldest, requested)
	}
	h.want(psid, states.Bot, botID)
	if e := h.lastEntry(psid); e.Event != states.RequestExpired {
		t.Errorf("history = %+v, want request_expired after the restart", e)
	}
	// The gauge follows the commit (the state is visible a moment before).
	h.eventually(func() bool { n, _ := h.eng.PendingRequests(); return n == 0 }, func() string {
		n, _ := h.eng.PendingRequests()
		return fmt.Sprintf("PendingRequests() = %d after the request expired", n)
	})
}
