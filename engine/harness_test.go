package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/engine/enginetest"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// Demo identities (SPEC.md §7).
const (
	pageID   = enginetest.PageID
	ringcxID = enginetest.RingCXID
	botID    = enginetest.BotID
	bot2ID   = enginetest.Bot2ID
)

var ctx = context.Background()

// harness is threadctl's engine on a real bbolt file, talking to the
// simulator over real HTTP, with the simulator's webhooks for the RingCX app
// delivered to threadctl's own webhook handler (enginetest builds all that).
type harness struct {
	t     *testing.T
	env   *enginetest.Env
	sim   *sim.Sim
	store *store.DB
	eng   *engine.Engine
	now   func() time.Time
	bot   *messenger.Client // acts as the bot app
	bot2  *messenger.Client

	page sim.PageConfig // as given to the simulator

	mu       sync.Mutex
	hookErrs []error
	learned  map[string]int // Observer.PageLearned calls, by fact
}

func (h *harness) dropHandovers(drop bool) { h.env.DropHandovers(drop) }

type harnessOpts struct {
	primary states.Primary
	// routing is the page's routing, at Meta and in threadctl's
	// configuration (the Handover Protocol when empty); mode overrides the
	// simulator's mode.
	routing states.Routing
	mode    string
	// takeover is RingCX's takeover setting at Meta on Conversation Routing
	// pages (nil: the simulator's default, off for a non-default app);
	// configTakeover is threadctl's configuration of it (nil: unknown).
	takeover, configTakeover *bool
	honorRequests            bool
	passDelay                time.Duration
	pendingTimeout           time.Duration
	clock                    *fakeClock
	noClaimIdle              bool
	historyKeep              int // engine.Config.HistoryKeep (0: its default)
	// openStore, if set, opens another store than bbolt
	// (enginetest.Options.OpenStore).
	openStore func() (engine.Store, engine.Coordinator, func() error, error)
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, learned: map[string]int{}}
	claim := !o.noClaimIdle
	eo := enginetest.Options{
		Primary: o.primary, Routing: o.routing, Mode: o.mode,
		Takeover: o.takeover, ConfigTakeover: o.configTakeover, PendingTimeout: o.pendingTimeout,
		Bot:       &sim.BotConfig{HonorRequests: o.honorRequests, PassDelayMS: int(o.passDelay / time.Millisecond), Reply: "echo", ClaimIdle: &claim},
		Sim:       sim.Options{RetryDelays: []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}},
		Observer:  h,
		Engine:    func(c *engine.Config) { c.HistoryKeep = o.historyKeep },
		OpenStore: o.openStore,
	}
	if o.clock != nil {
		eo.Clock = o.clock
	}
	h.env = enginetest.New(t, eo)
	h.sim, h.now, h.bot, h.bot2, h.page = h.env.Sim, h.env.Now, h.env.Bot, h.env.Bot2, h.env.Page
	h.store, h.eng = h.env.Store(), h.env.Engine()
	return h
}

// simPage is the page as given to the simulator, to change and give again.
func (h *harness) simPage() sim.PageConfig {
	pc := h.page
	pc.Apps = append([]sim.AppConfig(nil), h.page.Apps...)
	return pc
}

func (h *harness) client(token, secret string) *messenger.Client {
	return h.env.GraphClient(token, secret)
}

// openEngine opens the store and starts an engine on it again after
// closeEngine, as a restart.
func (h *harness) openEngine() {
	h.t.Helper()
	h.env.OpenEngine()
	h.store, h.eng = h.env.Store(), h.env.Engine()
}

func (h *harness) closeEngine() {
	h.env.CloseEngine()
	h.store, h.eng = nil, nil
}

// WebhookEvent fails the test for webhook events the engine could not
// apply (the harness is the engine's Observer).
func (h *harness) WebhookEvent(kind, outcome string) {
	if outcome == engine.OutcomeError {
		h.fail(fmt.Errorf("a %s webhook event was not applied (see the log)", kind))
	}
}

func (h *harness) Transition(engine.TransitionInfo) {}
func (h *harness) ControlGranted(time.Duration)     {}
func (h *harness) GraphInFlight(string, int)        {}
func (h *harness) Pruned(int, int, int)             {}

// PageLearned counts what Meta's refusals taught about the page.
func (h *harness) PageLearned(_, fact string) {
	h.mu.Lock()
	h.learned[fact]++
	h.mu.Unlock()
}

func (h *harness) fail(err error) {
	h.mu.Lock()
	h.hookErrs = append(h.hookErrs, err)
	h.mu.Unlock()
}

// settle waits until the simulator has delivered everything, and fails the
// test for deliveries threadctl's server refused and webhook events the
// engine could not apply.
func (h *harness) settle() {
	h.t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.env.Settle(c); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	errs := h.hookErrs
	h.hookErrs = nil
	h.mu.Unlock()
	if len(errs) > 0 {
		h.t.Fatalf("webhook receiver: %v", errors.Join(errs...))
	}
}

func key(psid string) engine.ThreadKey { return engine.ThreadKey{PageID: pageID, PSID: psid} }

func (h *harness) customer(psid, text string) {
	h.t.Helper()
	if _, err := h.sim.CustomerMessage(pageID, psid, text); err != nil {
		h.t.Fatalf("customer message: %v", err)
	}
	h.settle()
}

func (h *harness) apply(ev states.Event, psid, app string) (engine.Result, error) {
	h.t.Helper()
	cause := engine.CauseBotsAPI
	res, err := h.eng.Apply(ctx, engine.Input{Event: ev, Key: key(psid), Cause: cause, AppID: app})
	h.settle()
	return res, err
}

func (h *harness) thread(psid string) engine.Thread {
	h.t.Helper()
	th, err := h.eng.Thread(ctx, key(psid))
	if err != nil {
		h.t.Fatalf("thread %s: %v", psid, err)
	}
	return th
}

// want checks threadctl's state and the simulator's owner ("" = idle).
func (h *harness) want(psid string, st states.State, metaOwner string) {
	h.t.Helper()
	h.eventually(func() bool {
		return h.thread(psid).State == st && h.sim.Thread(pageID, psid).OwnerAppID == metaOwner
	}, func() string {
		return "threadctl " + string(h.thread(psid).State) + " (want " + string(st) + "), Meta owner " + h.sim.Thread(pageID, psid).OwnerAppID + " (want " + metaOwner + ")"
	})
}

func (h *harness) eventually(ok func() bool, msg func() string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out: %s", msg())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// history returns the thread's history, oldest first.
func (h *harness) history(psid string) []engine.HistoryEntry {
	h.t.Helper()
	return oldestFirst(h.t, h.env.EngineStore(), psid)
}

// oldestFirst is a thread's whole history in st, oldest first.
func oldestFirst(t testing.TB, st engine.Store, psid string) []engine.HistoryEntry {
	t.Helper()
	hs, err := st.History(ctx, key(psid), 0, math.MaxInt32)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(hs)
	return hs
}

// fakeClock is a clock tests move by hand, shared by the engine and the
// simulator.
type fakeClock = enginetest.FakeClock

func newFakeClock() *fakeClock { return enginetest.NewFakeClock() }

func simFault(call string) sim.Fault { return sim.Fault{Call: call, Status: 500, Count: 1} }
