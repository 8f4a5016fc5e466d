package engine_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/engine/enginetest"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// SPEC.md §3.3: a webhook is answered 200 once its events are durably
// accepted, before any Graph call, and the accepted events are applied
// afterwards, in order per thread, retried until Meta answers.

// requestWebhook is Meta's request_thread_control webhook to the RingCX
// app (the owner) from app on the thread of psid.
func requestWebhook(psid, app string, at time.Time) []byte {
	return []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"request_thread_control":{"requested_owner_app_id":%s,"metadata":"the bot asks"}}]}]}`,
		pageID, at.UnixMilli(), psid, pageID, at.UnixMilli(), app))
}

// standbyMessageWebhook is a customer's message on the standby channel (another
// app owns the thread).
func standbyMessageWebhook(psid, mid string, at time.Time) []byte {
	return []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"standby":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"message":{"mid":"%s","text":"are you there?"}}]}]}`,
		pageID, at.UnixMilli(), psid, pageID, at.UnixMilli(), mid))
}

// postWebhook posts a webhook signed with the RingCX app's secret to
// threadctl's endpoint and returns the answer's status.
func (h *harness) postWebhook(body []byte) int {
	h.t.Helper()
	sig, _ := messenger.Sign(body, enginetest.RingCXSecret)
	req, err := http.NewRequest(http.MethodPost, h.env.URL+"/webhooks/messenger", bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", sig)
	resp, err := h.env.HTTP.Do(req)
	if err != nil {
		h.t.Fatalf("posting a webhook: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		h.t.Errorf("webhook answered %d: %s", resp.StatusCode, b)
	}
	return resp.StatusCode
}

// graphCalls returns the Graph calls of app named call that the simulator
// has completed on the thread of psid, in order.
func (h *harness) graphCalls(psid, app, call string) []sim.LogEntry {
	var out []sim.LogEntry
	for _, e := range h.sim.Log(pageID, psid) {
		if e.Kind == sim.KindGraphCall && e.Call == call && e.CallerAppID == app {
			out = append(out, e)
		}
	}
	return out
}

// accepted returns the accepted webhook events the store holds, not yet
// applied.
func (h *harness) accepted() []engine.Accepted {
	h.t.Helper()
	as, err := h.store.Accepted(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return as
}

// events returns the thread's history entries of one event, oldest first.
func (h *harness) events(psid string, ev states.Event) []engine.HistoryEntry {
	return slices.DeleteFunc(h.history(psid), func(e engine.HistoryEntry) bool { return e.Event != ev })
}

// TestWebhookAnsweredBeforeMeta: with every Graph call delayed 2 s, a
// webhook whose event needs a Graph call (the bot requests control of a
// thread RingCX holds with no intervention: pass it) is answered while the
// pass is still in flight, and applied once Meta answers.
func TestWebhookAnsweredBeforeMeta(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
	h.customer(psid, "hi")
	h.want(psid, states.Agent, ringcxID)

	h.sim.SetFault(sim.Fault{Call: "*", DelayMS: 2000})
	if got := h.postWebhook(requestWebhook(psid, botID, time.Now())); got != http.StatusOK {
		t.Fatalf("webhook answered %d", got)
	}
	answered := time.Now()
	// The order at the answer: Meta has not answered the pass yet, and the
	// event waits, durably, to be applied.
	if passes := h.graphCalls(psid, ringcxID, "pass_thread_control"); len(passes) > 0 {
		t.Errorf("when the webhook was answered, Meta had already answered the pass: %+v", passes)
	}
	if got := h.eng.Backlog(); got != 1 {
		t.Errorf("Backlog() when the webhook was answered = %d, want 1", got)
	}
	if as := h.accepted(); len(as) != 1 || as[0].Notice.Kind != engine.NoticeRequest || as[0].Notice.Requester != botID {
		t.Errorf("accepted events in the store when the webhook was answered = %+v, want the request", as)
	}

	// Applied once Meta answers.
	h.want(psid, states.Bot, botID)
	h.sim.ClearFaults()
	h.settle()
	passes := h.graphCalls(psid, ringcxID, "pass_thread_control")
	if len(passes) != 1 || passes[0].Outcome != sim.OutcomeOK || passes[0].TargetAppID != botID {
		t.Fatalf("pass_thread_control calls = %+v, want one, to the bot, ok", passes)
	}
	if !passes[0].Time.After(answered) {
		t.Errorf("Meta answered the pass at %s, before the webhook was answered at %s", passes[0].Time, answered)
	}
	if e := h.lastEntry(psid); e.Event != states.ControlRequested || e.Outcome != engine.OutcomeApplied || e.Cause != engine.CauseWebhook || len(e.Calls) != 1 || e.Calls[0].Outcome != engine.CallOK {
		t.Errorf("last history entry = %+v, want control_requested applied with its pass", e)
	}
	if n, as := h.eng.Backlog(), h.accepted(); n != 0 || len(as) != 0 {
		t.Errorf("after it was applied: Backlog() = %d, accepted = %+v; want none", n, as)
	}
}

// TestWebhookNotBlockedByThreadLock: a customer's message arriving while a
// slow Bots API call holds its thread (handover_to_agent, Meta slow to
// answer the request) is answered before that call ends and applied after
// it, in order.
func TestWebhookNotBlockedByThreadLock(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true})
	h.toBot(states.PrimaryBot)

	h.sim.SetFault(sim.Fault{Call: "request_thread_control", DelayMS: 1500, AppID: ringcxID})
	apiDone := make(chan error, 1)
	go func() {
		q := url.Values{"access_token": {enginetest.APIToken}, "identity_foreign_id": {psid}, "from": {"bot"}, "to": {"agent"}, "type": {"messenger"}}
		resp, err := h.env.HTTP.Post(h.env.URL+"/1.0/bots/handover?"+q.Encode(), "", nil)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("Bots API answered %d: %s", resp.StatusCode, b)
			}
		}
		apiDone <- err
	}()
	// The request is in flight once its intent is durable: the Bots API
	// call holds the thread.
	h.eventually(func() bool {
		ins, _ := h.store.Intents(ctx)
		return slices.ContainsFunc(ins, func(in engine.Intent) bool { return in.Key == key(psid) && in.Call == states.CallRequest })
	}, func() string { return "no request intent: the Bots API call did not reach Meta" })

	at := time.Now()
	if got := h.postWebhook(standbyMessageWebhook(psid, "m.while-locked", at)); got != http.StatusOK {
		t.Fatalf("webhook answered %d", got)
	}
	select {
	case err := <-apiDone:
		t.Fatalf("the Bots API call ended (%v) before the webhook was answered", err)
	default:
	}
	if reqs := h.graphCalls(psid, ringcxID, "request_thread_control"); len(reqs) > 0 {
		t.Errorf("when the webhook was answered, Meta had already answered the request: %+v", reqs)
	}
	if got := h.eng.Backlog(); got != 1 {
		t.Errorf("Backlog() when the webhook was answered = %d, want 1", got)
	}

	if err := <-apiDone; err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.want(psid, states.Agent, ringcxID)
	hs := h.history(psid)
	i := slices.IndexFunc(hs, func(e engine.HistoryEntry) bool { return e.Event == states.HandoverToAgent })
	if i < 0 || i+1 == len(hs) {
		t.Fatalf("history = %v, want handover_to_agent then the customer's message", eventNames(hs))
	}
	if next := hs[i+1]; next.Event != states.CustomerMessage || !next.MetaTime.Equal(time.UnixMilli(at.UnixMilli())) || next.Outcome != engine.OutcomeNoChange {
		t.Errorf("after handover_to_agent (rev %d): %+v; want the customer's message, no change (history %v)", hs[i].Revision, next, eventNames(hs))
	}
	if msgs := h.events(psid, states.CustomerMessage); len(msgs) != 2 {
		t.Errorf("customer messages in the history = %d, want 2 (the first, and the one that waited)", len(msgs))
	}
}

// TestAcceptedEventRetried: an accepted event whose Graph call fails
// transiently is tried again until it succeeds; it stays accepted (in the
// store) meanwhile and is applied once.
func TestAcceptedEventRetried(t *testing.T) {
	tests := []struct {
		name  string
		fault sim.Fault
		// failures is how many attempts fail (0: at least one).
		failures int
	}{
		// The Graph client tries each call 3 times: 6 failures are two
		// attempts of the engine.
		{"503 six times", sim.Fault{Call: "pass_thread_control", Status: 503, Count: 6, AppID: ringcxID}, 2},
		{"connection reset for 400 ms", sim.Fault{Call: "pass_thread_control", Reset: true, ForMS: 400, AppID: ringcxID}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{primary: states.PrimaryRingCX})
			h.customer(psid, "hi")
			h.want(psid, states.Agent, ringcxID)

			h.sim.SetFault(tc.fault)
			if err := h.bot.RequestThreadControl(ctx, pageID, psid, "let me"); err != nil {
				t.Fatal(err)
			}
			// While the pass fails, the event stays accepted.
			h.eventually(func() bool { return len(h.events(psid, states.ControlRequested)) > 0 }, func() string { return "no attempt at control_requested" })
			if e := h.events(psid, states.ControlRequested)[0]; e.Outcome != engine.OutcomeFailed {
				t.Fatalf("first attempt = %+v, want failed", e)
			}
			if as := h.accepted(); len(as) != 1 || as[0].Notice.Kind != engine.NoticeRequest {
				t.Errorf("accepted events after a failed attempt = %+v, want the request", as)
			}
			if got := h.eng.Backlog(); got != 1 {
				t.Errorf("Backlog() after a failed attempt = %d, want 1", got)
			}

			h.want(psid, states.Bot, botID)
			h.settle()
			reqs := h.events(psid, states.ControlRequested)
			last := reqs[len(reqs)-1]
			if last.Outcome != engine.OutcomeApplied || len(last.Calls) != 1 || last.Calls[0].Call != "pass_thread_control" || last.Calls[0].Outcome != engine.CallOK {
				t.Errorf("last control_requested = %+v, want applied with its pass", last)
			}
			failed := reqs[:len(reqs)-1]
			if len(failed) == 0 || tc.failures > 0 && len(failed) != tc.failures {
				t.Errorf("control_requested attempts = %v, want %d failed then one applied", outcomes(reqs), tc.failures)
			}
			for _, e := range failed {
				if e.Outcome != engine.OutcomeFailed || len(e.Calls) != 1 || e.Calls[0].Call != "pass_thread_control" || e.Calls[0].Outcome == engine.CallOK {
					t.Errorf("failed attempt = %+v, want failed with its pass", e)
				}
			}
			passes := h.graphCalls(psid, ringcxID, "pass_thread_control")
			ok := slices.DeleteFunc(slices.Clone(passes), func(e sim.LogEntry) bool { return e.Outcome != sim.OutcomeOK })
			if len(ok) != 1 || passes[len(passes)-1].Outcome != sim.OutcomeOK {
				t.Errorf("Meta saw %d passes, %d of them ok, the last %s; want the failures then one ok", len(passes), len(ok), passes[len(passes)-1].Outcome)
			}
			if tc.fault.Count > 0 && len(passes) != tc.fault.Count+1 {
				t.Errorf("Meta saw %d passes, want %d failed and one ok", len(passes), tc.fault.Count)
			}
			if n, as := h.eng.Backlog(), h.accepted(); n != 0 || len(as) != 0 {
				t.Errorf("after it was applied: Backlog() = %d, accepted = %+v; want none", n, as)
			}
			t.Logf("control_requested: %v; Meta saw %d passes", outcomes(reqs), len(passes))
		})
	}
}

func eventNames(hs []engine.HistoryEntry) []string {
	var out []string
	for _, e := range hs {
		out = append(out, fmt.Sprintf("%d:%s:%s", e.Revision, e.Event, e.Outcome))
	}
	return out
}

func outcomes(hs []engine.HistoryEntry) []string {
	var out []string
	for _, e := range hs {
		out = append(out, e.Outcome)
	}
	return out
}
