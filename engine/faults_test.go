package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/engine/enginetest"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// Meta's failures, injected with the simulator's fault API while customers
// write and agents and bots hand threads over, each a test. Real outages last
// minutes; here time is scaled down so the suite stays short: the RingCX
// app's Graph client gives up on an attempt after faultTimeout (production:
// 5 s) and retries twice, the engine's RetryDelay is faultRetryDelay
// (production: 30 s), and an outage lasts about a second (production: a
// minute or more).
const (
	faultTimeout    = 200 * time.Millisecond
	faultRetryDelay = 250 * time.Millisecond
	// faultDelay is how late a delayed call is answered (or applied):
	// beyond the client's timeout, but applied before the engine's
	// recheck asks Meta again (faultRetryDelay after the timeout).
	faultDelay = faultTimeout * 3 / 2
	// faultConverge bounds how long after a fault ends every thread must
	// agree with Meta's owner, every accepted webhook event be applied,
	// and every content be sent or failed.
	faultConverge = 5 * time.Second
)

// TestRecheckOutlivesLaterCalls: a call whose answer was lost may still
// take effect at Meta after the calls that follow it on the thread; the
// owner recheck it arms must ask Meta only once the last such call would
// have landed, and no later call may cancel it. The client does not retry
// here (see TestLateAttemptOfARetriedCall for what retries add).
func TestRecheckOutlivesLaterCalls(t *testing.T) {
	const (
		delay      = 400 * time.Millisecond // Meta applies the call this late
		retryDelay = 800 * time.Millisecond // the recheck asks this long after the lost answer
	)
	newEnv := func(t *testing.T, primary states.Primary) *enginetest.Env {
		env := enginetest.New(t, enginetest.Options{
			Primary: primary, GraphTimeout: faultTimeout, GraphRetries: -1, RetryDelay: retryDelay,
			Bot: &sim.BotConfig{HonorRequests: true, ClaimIdle: new(bool)},
		})
		if _, err := env.Sim.CustomerMessage(pageID, psid, "hi"); err != nil {
			t.Fatal(err)
		}
		settle(t, env)
		return env
	}
	handover := func(env *enginetest.Env, ev states.Event, app string) error {
		_, err := env.Engine().Apply(ctx, engine.Input{Event: ev, Key: key(psid), Cause: engine.CauseBotsAPI, AppID: app})
		return err
	}
	// A pass to the bot has its answer lost; before Meta applies it, the
	// agent's intervention closes, releasing the thread. Meta then applies
	// the pass (HOP v2 lets any app pass an idle thread): the bot owns the
	// thread, Meta tells RingCX nothing, and only the recheck can correct
	// threadctl, which believes the thread is idle.
	t.Run("a later call succeeds", func(t *testing.T) {
		env := newEnv(t, states.PrimaryRingCX)
		env.Sim.SetFault(sim.Fault{Call: "pass_thread_control", DelayMS: int(delay / time.Millisecond), ApplyLate: true, Count: 1})
		if err := handover(env, states.HandoverToBot, botID); engine.ErrorCode(err) != engine.CodeMeta {
			t.Fatalf("pass with its answer lost: %v, want Meta's error", err)
		}
		iv, _, err := env.Engine().OpenIntervention(ctx, key(psid))
		if err != nil {
			t.Fatal(err)
		}
		if _, res, err := env.Engine().CloseIntervention(ctx, iv.ID); err != nil || res.To != states.Idle {
			t.Fatalf("close the intervention: %v, %s; want released, idle", err, res.To)
		}
		settle(t, env) // until Meta has applied the late pass
		waitAgrees(t, env, psid, retryDelay+faultConverge)
	})

	// A take fails (503), arming a recheck; just before it is due, a
	// second take's answer is lost. The recheck must wait for the second
	// take to land rather than ask at the first one's time.
	t.Run("a later call's answer is lost too", func(t *testing.T) {
		env := newEnv(t, states.PrimaryNone)
		env.Sim.SetFault(sim.Fault{Call: "take_thread_control", Status: 503, Count: 1})
		if err := handover(env, states.HandoverToAgent, ""); engine.ErrorCode(err) != engine.CodeMeta {
			t.Fatalf("first take: %v, want Meta's error", err)
		}
		time.Sleep(retryDelay - faultTimeout - 50*time.Millisecond)
		env.Sim.SetFault(sim.Fault{Call: "take_thread_control", DelayMS: int(delay / time.Millisecond), ApplyLate: true, Count: 1})
		if err := handover(env, states.HandoverToAgent, ""); engine.ErrorCode(err) != engine.CodeMeta {
			t.Fatalf("second take: %v, want Meta's error", err)
		}
		settle(t, env) // until Meta has applied the late take
		waitAgrees(t, env, psid, retryDelay+faultConverge)
	})
}

// TestStaleWebhookBehindARetriedEvent: a webhook event whose Graph call
// Meta keeps failing waits in the inbox to be tried again, and the
// thread's later webhooks wait behind it. Meanwhile the thread moves on
// without them, and the owner recheck armed by the failures finds it as
// threadctl sees it. When the waiting event finally passes control to the
// app that asked, the webhook queued behind it (an older grant to RingCX)
// must not leave threadctl believing RingCX holds a thread Meta gave away.
func TestStaleWebhookBehindARetriedEvent(t *testing.T) {
	// The inbox tries a failing event again after retryDelay/4, then
	// twice as late each time: with three failures the fourth try comes
	// 2×retryDelay after the third, and the recheck in between.
	const retryDelay = 600 * time.Millisecond
	env := enginetest.New(t, enginetest.Options{
		Primary: states.PrimaryRingCX, GraphTimeout: faultTimeout, GraphRetries: 2, RetryDelay: retryDelay,
		Bot: &sim.BotConfig{HonorRequests: true, ClaimIdle: new(bool)},
	})
	eng := env.Engine()
	if _, err := env.Sim.CustomerMessage(pageID, psid, "hi"); err != nil {
		t.Fatal(err)
	}
	settle(t, env)
	waitAgrees(t, env, psid, faultConverge)
	handover := func(ev states.Event, app string) {
		t.Helper()
		if _, err := eng.Apply(ctx, engine.Input{Event: ev, Key: key(psid), Cause: engine.CauseBotsAPI, AppID: app}); err != nil {
			t.Fatalf("%s: %v", ev, err)
		}
	}
	passFails := func(calls int) {
		env.Sim.SetFault(sim.Fault{Call: "pass_thread_control", AppID: ringcxID, Status: 503, Count: 3 * calls})
	}

	// The second bot asks RingCX for control; RingCX's pass fails: the
	// event waits to be tried again.
	passFails(1)
	if err := env.Bot2.RequestThreadControl(ctx, pageID, psid, "bot 2 wants it"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request to wait in the inbox", func() bool { return eng.Backlog() == 1 })
	// Before it is tried again, RingCX hands the thread to the bot, which
	// passes it back at once: its grant waits behind the request. A
	// handover to the agent finds RingCX in control (Meta refuses the
	// request; threadctl asks thread_owner).
	handover(states.HandoverToBot, botID)
	passFails(3)
	if err := env.Bot.PassThreadControl(ctx, pageID, psid, ringcxID, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bot's grant to wait behind the request", func() bool { return eng.Backlog() == 2 })
	handover(states.HandoverToAgent, "")
	if th, _ := eng.Thread(ctx, key(psid)); th.State != states.Agent {
		t.Fatalf("after the handover: %s, want agent", th.State)
	}
	// The request fails three more times, the recheck finds RingCX in
	// control, then the request passes control to the second bot; the
	// grant behind it is older than that pass.
	waitFor(t, "the inbox to drain", func() bool { return eng.Backlog() == 0 })
	settle(t, env)
	if owner := env.Sim.Thread(pageID, psid).OwnerAppID; owner != bot2ID {
		t.Fatalf("Meta's owner %q, want the second bot %s", owner, bot2ID)
	}
	waitAgrees(t, env, psid, retryDelay+faultConverge)
}

// agrees reports whether threadctl's state st agrees with Meta's owner.
func agrees(st states.State, owner string) bool {
	switch st {
	case states.Idle:
		return owner == ""
	case states.Agent:
		return owner == ringcxID
	case states.Bot, states.Pending:
		return owner != "" && owner != ringcxID
	}
	return false
}

func settle(t *testing.T, env *enginetest.Env) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, faultConverge)
	defer cancel()
	if err := env.Settle(c); err != nil {
		t.Fatal(err)
	}
}

// waitAgrees waits up to d for threadctl's state of a thread to agree with
// Meta's owner.
func waitAgrees(t *testing.T, env *enginetest.Env, psid string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		th, err := env.Engine().Thread(ctx, key(psid))
		if err != nil {
			t.Fatal(err)
		}
		owner := env.Sim.Thread(pageID, psid).OwnerAppID
		if agrees(th.State, owner) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: threadctl %s (recheck at %v), Meta's owner %q", d, th.State, th.RecheckAt, owner)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * faultConverge)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
