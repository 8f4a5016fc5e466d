package engine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// TestEveryRowAgainstSimulator takes a thread to each state, per table —
// the Handover Protocol's per primary, Conversation Routing's per default
// app with RingCX's takeover setting on and off, and zero-config — through
// the simulator (customer messages, Bots API calls, the bot's own Graph
// calls), fires each event there, and checks the outcome against the table:
// the new state in threadctl, Meta's owner in the simulator, the history
// entry; and for rows the table does not have (or refuses), a refusal (API
// events) or an ignored entry (webhook events). Events are caused as Meta,
// the bot or the agent would cause them; where Meta never sends an event in
// a state (control_passed to a thread RingCX already owns), the webhook is
// delivered to the engine as Meta would shape it, and Meta's owner is not
// compared.
func TestEveryRowAgainstSimulator(t *testing.T) {
	all := tableCells()
	for _, c := range all {
		t.Run(c.name(), func(t *testing.T) {
			t.Parallel()
			runCell(t, c.table, c.event, c.observed, c.from)
		})
	}
	t.Logf("%d cells", len(all))
}

// tableCell is one cell of a table: an event (with what was observed, for
// owner_observed) in a state.
type tableCell struct {
	table    states.Table
	event    states.Event
	observed states.Observed
	from     states.State
}

func (c tableCell) name() string {
	return fmt.Sprintf("%s/%s/%s", c.table, states.Rule{Event: c.event, Observed: c.observed}.Name(), c.from)
}

// tableCells is every cell of every table, table by table, each event from
// each state where it can happen.
func tableCells() []tableCell {
	events := []struct {
		event    states.Event
		observed states.Observed
	}{
		{states.CustomerMessage, ""}, {states.HandoverToAgent, ""}, {states.HandoverToBot, ""},
		{states.AgentEngage, ""}, {states.ControlPassed, ""}, {states.ControlTaken, ""},
		{states.ControlRequested, ""}, {states.InterventionClosed, ""}, {states.RequestExpired, ""},
		{states.ControlExpiring, ""},
		{states.OwnerObserved, states.ObservedNone}, {states.OwnerObserved, states.ObservedRingCX},
		{states.OwnerObserved, states.ObservedOther},
	}
	var out []tableCell
	for _, tbl := range states.Tables {
		for _, ev := range events {
			for _, from := range states.All {
				if ev.event == states.RequestExpired && from != states.Pending {
					continue // its timer exists only in pending-request
				}
				if ev.event == states.ControlExpiring && from != states.Agent {
					continue // its timer exists only while RingCX holds the thread
				}
				out = append(out, tableCell{tbl, ev.event, ev.observed, from})
			}
		}
	}
	return out
}

// tableOpts is a harness whose page follows table tbl: at Meta (the
// simulator's mode and RingCX's takeover setting) and in threadctl's
// configuration.
func tableOpts(tbl states.Table) harnessOpts {
	o := harnessOpts{primary: tbl.Primary, routing: tbl.Routing, noClaimIdle: true}
	if tbl.Routing == states.ConversationRouting && tbl.Primary != states.PrimaryNone {
		o.takeover = &tbl.Takeover
		if !tbl.Takeover {
			o.configTakeover = new(bool)
		}
	}
	return o
}

func runCell(t *testing.T, tbl states.Table, ev states.Event, obs states.Observed, from states.State) {
	runCellWith(t, tbl, ev, obs, from, nil)
}

// runCellWith runs one cell on the store openStore opens (nil: bbolt).
func runCellWith(t *testing.T, tbl states.Table, ev states.Event, obs states.Observed, from states.State, openStore func() (engine.Store, engine.Coordinator, func() error, error)) {
	opts := tableOpts(tbl)
	opts.openStore = openStore
	if ev == states.RequestExpired {
		opts.pendingTimeout = 100 * time.Millisecond
	}
	h := newHarness(t, opts)
	h.reach(tbl, from)
	if openStore != nil && ev != states.RequestExpired { // (its deadline is 100 ms away)
		h.quiet()
	}
	before := h.thread(psid)
	if before.State != from {
		t.Fatalf("setup reached %s, want %s", before.State, from)
	}
	if p, _ := h.eng.Page(pageID); p.Table(h.now()) != tbl {
		t.Fatalf("the page follows table %s, want %s", p.Table(h.now()), tbl)
	}
	rule, allowed := states.Lookup(tbl, ev, obs, from)
	res, err, injected := h.fire(tbl, ev, obs, from)
	after := h.thread(psid)
	last := h.lastEntry(psid)

	if !allowed {
		switch {
		case isAPIEvent(ev):
			if code(err) != engine.CodeConflict {
				t.Errorf("not in the table: error = %v, want a conflict", err)
			}
			if after.Revision != before.Revision {
				t.Errorf("a refused API event recorded something: revision %d → %d", before.Revision, after.Revision)
			}
		default:
			if err != nil || last.Event != ev || last.Outcome != engine.OutcomeIgnored || after.State != from {
				t.Errorf("not in the table: %+v, %v; history %s %s; want ignored in %s", res, err, last.Event, last.Outcome, from)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("%s from %s: %v", ev, from, err)
	}
	want := rule.Dst(from)
	h.eventually(func() bool { return h.thread(psid).State == want }, func() string {
		return fmt.Sprintf("state %s, want %s (history ends %s %s)", h.thread(psid).State, want, h.lastEntry(psid).Event, h.lastEntry(psid).Outcome)
	})
	if !injected {
		wantOwner := map[states.State]string{states.Idle: "", states.Agent: ringcxID, states.Bot: botID, states.Pending: botID}[want]
		h.want(psid, want, wantOwner)
	}
	found := false
	for _, e := range h.history(psid)[before.Revision:] {
		if e.Event == ev && e.Observed == obs && e.From == from && (e.Outcome == engine.OutcomeApplied || e.Outcome == engine.OutcomeNoChange) {
			found = true
			if e.Table != tbl.Name() {
				t.Errorf("history %+v: decided by table %q, want %s", e, e.Table, tbl)
			}
			if rule.Call != states.NoCall && (len(e.Calls) == 0 || e.Calls[len(e.Calls)-1].Call != string(rule.Call) || e.Calls[len(e.Calls)-1].Outcome != "ok") {
				t.Errorf("history %+v: want a successful %s", e, rule.Call)
			}
		}
	}
	if !found {
		t.Errorf("no history entry for %s from %s; history: %v", ev, from, historySummary(h.history(psid)))
	}
	if ev == states.ControlExpiring {
		if got, min := h.thread(psid).ControlExpires, h.now().Add(6*24*time.Hour); got.Before(min) {
			t.Errorf("control expires at %s after extending, want about 7 days from now", got)
		}
	}
}

// quiet waits until the thread has not changed for 150 ms: on a slower
// store, work the setup started in the background (an owner check after a
// customer message) may still be committing.
func (h *harness) quiet() {
	h.t.Helper()
	last, since := h.thread(psid).Revision, time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Since(since) < 150*time.Millisecond && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if rev := h.thread(psid).Revision; rev != last {
			last, since = rev, time.Now()
		}
	}
}

func historySummary(hs []engine.HistoryEntry) []string {
	var out []string
	for _, e := range hs {
		out = append(out, fmt.Sprintf("%s(%s):%s→%s:%s[%s]", e.Event, e.Observed, e.From, e.To, e.Outcome, e.Reason))
	}
	return out
}

func isAPIEvent(ev states.Event) bool {
	switch ev {
	case states.HandoverToAgent, states.HandoverToBot, states.AgentEngage, states.InterventionClosed:
		return true
	}
	return false
}

// reach takes the thread to state st through the simulator, as table tbl
// allows. A Conversation Routing page whose takeover setting is on never
// leaves RingCX waiting: pending-request is reached with the setting off,
// then the configuration turns it on (as a learned refusal expiring would).
func (h *harness) reach(tbl states.Table, st states.State) {
	h.t.Helper()
	must := func(_ engine.Result, err error) {
		h.t.Helper()
		if err != nil {
			h.t.Fatalf("reaching %s: %v", st, err)
		}
	}
	cr := tbl.Routing == states.ConversationRouting
	h.customer(psid, "hello")
	switch st {
	case states.Idle:
		switch tbl.Primary {
		case states.PrimaryBot:
			must(engine.Result{}, h.bot.PassThreadControl(ctx, pageID, psid, ringcxID, ""))
			h.settle()
			fallthrough
		case states.PrimaryRingCX:
			iv, _, err := h.eng.OpenIntervention(ctx, key(psid))
			must(engine.Result{}, err)
			_, _, err = h.eng.CloseIntervention(ctx, iv.ID)
			must(engine.Result{}, err)
		}
	case states.Bot, states.Pending:
		switch tbl.Primary {
		case states.PrimaryRingCX, states.PrimaryNone:
			must(h.apply(states.HandoverToBot, psid, botID))
		}
		if st == states.Pending {
			if cr && tbl.Primary != states.PrimaryNone {
				h.setTakeover(false)
				// An agent's content waits for the owner to pass.
				_, err := h.eng.CreateContent(ctx, key(psid), "one moment please")
				must(engine.Result{}, err)
				h.setTakeover(tbl.Takeover)
			} else {
				must(h.apply(states.HandoverToAgent, psid, ""))
			}
		}
	case states.Agent:
		switch tbl.Primary {
		case states.PrimaryBot:
			must(engine.Result{}, h.bot.PassThreadControl(ctx, pageID, psid, ringcxID, ""))
		case states.PrimaryNone:
			must(h.apply(states.HandoverToAgent, psid, ""))
		}
	}
	h.settle()
}

// setTakeover sets RingCX's takeover setting on a Conversation Routing page,
// at Meta and in threadctl's configuration.
func (h *harness) setTakeover(on bool) {
	h.t.Helper()
	pc := h.simPage()
	pc.Apps[0].TakeoverAllowed = &on
	if err := h.sim.PutPage(pc); err != nil {
		h.t.Fatal(err)
	}
	h.page = pc
	p, _ := h.eng.Page(pageID)
	p.Takeover = nil
	if !on {
		p.Takeover = &on
	}
	if err := h.eng.SetPage(ctx, p); err != nil {
		h.t.Fatal(err)
	}
	h.settle()
}

// botMayTake reports whether Meta lets the bot take control from RingCX:
// the primary on Handover Protocol pages, the default app (whose takeover
// setting is on) on Conversation Routing ones.
func botMayTake(tbl states.Table) bool { return tbl.Primary == states.PrimaryBot }

// fire causes event ev on a thread in state from, as Meta, the bot or the
// agent would. injected reports a webhook Meta would not send in that state,
// delivered to the engine directly.
func (h *harness) fire(tbl states.Table, ev states.Event, obs states.Observed, from states.State) (res engine.Result, err error, injected bool) {
	h.t.Helper()
	cr := tbl.Routing == states.ConversationRouting
	hook := func(app string) (engine.Result, error) {
		// The simulator's stamps are strictly increasing milliseconds, so
		// after a quick run of webhooks they lead the clock: an injected
		// event is stamped no earlier than the thread's last one, or it
		// would be ignored as older.
		at := h.now()
		if last := h.thread(psid).LastMetaTime; at.Before(last) {
			at = last
		}
		return h.eng.Apply(ctx, engine.Input{Event: ev, Observed: obs, Key: key(psid), Cause: engine.CauseWebhook, AppID: app, MetaTime: at, DedupKey: fmt.Sprintf("injected:%s:%d", ev, time.Now().UnixNano())})
	}
	metaOwner := h.sim.Thread(pageID, psid).OwnerAppID
	switch ev {
	case states.CustomerMessage:
		_, err = h.sim.CustomerMessage(pageID, psid, "again")
		h.settle()
		return engine.Result{}, err, false
	case states.HandoverToAgent:
		res, err = h.apply(ev, psid, "")
		return res, err, false
	case states.HandoverToBot:
		res, err = h.apply(ev, psid, botID)
		return res, err, false
	case states.AgentEngage:
		_, res, err = h.eng.OpenIntervention(ctx, key(psid))
		h.settle()
		return res, err, false
	case states.InterventionClosed:
		if from == states.Agent || from == states.Pending {
			iv, _, err := h.eng.OpenIntervention(ctx, key(psid))
			if err != nil {
				return res, err, false
			}
			_, res, err = h.eng.CloseIntervention(ctx, iv.ID)
			h.settle()
			return res, err, false
		}
		res, err = h.eng.Apply(ctx, engine.Input{Event: ev, Key: key(psid), Cause: engine.CauseAgent})
		return res, err, false
	case states.ControlPassed:
		if metaOwner == botID || metaOwner == "" {
			err = h.bot.PassThreadControl(ctx, pageID, psid, ringcxID, "")
			h.settle()
			return engine.Result{}, err, false
		}
		res, err = hook(ringcxID)
		return res, err, true
	case states.ControlTaken:
		if metaOwner == ringcxID && botMayTake(tbl) {
			err = h.bot.TakeThreadControl(ctx, pageID, psid, "")
			h.settle()
			return engine.Result{}, err, false
		}
		res, err = hook(botID)
		return res, err, true
	case states.ControlRequested:
		// Meta refuses requests on Conversation Routing pages with a
		// default app.
		if metaOwner == ringcxID && (!cr || tbl.Primary == states.PrimaryNone) {
			err = h.bot.RequestThreadControl(ctx, pageID, psid, "")
			h.settle()
			return engine.Result{}, err, false
		}
		res, err = hook(botID)
		return res, err, true
	case states.RequestExpired:
		h.eventually(func() bool { return h.thread(psid).State != states.Pending }, func() string { return "the request did not expire" })
		h.settle()
		return engine.Result{}, nil, false
	case states.ControlExpiring:
		// The timer fires while an agent works.
		if _, _, err := h.eng.OpenIntervention(ctx, key(psid)); err != nil {
			return res, err, false
		}
		h.settle()
		res, err = h.eng.Apply(ctx, engine.Input{Event: ev, Key: key(psid), Cause: engine.CauseTimer})
		h.settle()
		return res, err, false
	case states.OwnerObserved:
		// Make Meta's owner what is observed, then report it.
		switch obs {
		case states.ObservedNone:
			if metaOwner != "" {
				h.ownerRelease(metaOwner)
			}
			res, err = h.eng.Apply(ctx, engine.Input{Event: ev, Observed: obs, Key: key(psid), Cause: engine.CauseCheck})
		case states.ObservedRingCX:
			if metaOwner != ringcxID {
				// threadctl must not hear of it: it is to observe it.
				h.dropHandovers(true)
				if err := h.bot.PassThreadControl(ctx, pageID, psid, ringcxID, ""); err != nil {
					h.t.Fatalf("making RingCX the owner: %v", err)
				}
				h.settle()
				h.dropHandovers(false)
			}
			res, err = h.eng.Apply(ctx, engine.Input{Event: ev, Observed: obs, AppID: ringcxID, Key: key(psid), Cause: engine.CauseCheck})
		case states.ObservedOther:
			if metaOwner != botID {
				if metaOwner != "" {
					h.ownerRelease(metaOwner)
				}
				// Any app may claim an idle thread: take on Handover
				// Protocol pages, pass to itself on Conversation Routing
				// ones.
				claim := func() error { return h.bot.TakeThreadControl(ctx, pageID, psid, "") }
				if cr {
					claim = func() error { return h.bot.PassThreadControl(ctx, pageID, psid, botID, "") }
				}
				h.dropHandovers(true)
				if err := claim(); err != nil {
					h.t.Fatalf("making the bot the owner: %v", err)
				}
				h.settle()
				h.dropHandovers(false)
			}
			res, err = h.eng.Apply(ctx, engine.Input{Event: ev, Observed: obs, AppID: botID, Key: key(psid), Cause: engine.CauseCheck})
		}
		h.settle()
		return res, err, false
	}
	h.t.Fatalf("no way to fire %s", ev)
	return
}

// ownerRelease has the thread's owner release it (RingCX or the bot),
// without threadctl hearing of it.
func (h *harness) ownerRelease(owner string) {
	h.t.Helper()
	c := h.bot
	if owner == ringcxID {
		c = h.client("ringcx-page-token", "ringcx-secret")
	}
	if err := c.ReleaseThreadControl(ctx, pageID, psid); err != nil {
		h.t.Fatalf("release by %s: %v", owner, err)
	}
}
