package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// Demo identities (SPEC.md §7).
const (
	pageID   = "100000000000001"
	ringcxID = "200000000000001"
	botID    = "300000000000001"
	bot2ID   = "300000000000002"
)

var ctx = context.Background()

// harness is threadctl's engine on a real bbolt file, talking to the
// simulator over real HTTP, with the simulator's webhooks for the RingCX app
// delivered to a receiver that applies them to the engine.
type harness struct {
	t      *testing.T
	sim    *sim.Sim
	simURL string
	dir    string
	store  *store.DB
	eng    *engine.Engine
	srv    *server.Server // the engine's webhook endpoint
	clock  engine.Clock
	now    func() time.Time
	bot    *messenger.Client // acts as the bot app
	bot2   *messenger.Client

	page sim.PageConfig // as given to the simulator

	mu       sync.Mutex
	hookErrs []error
	learned  map[string]int // Observer.PageLearned calls, by fact
	dropHO   bool           // acknowledge handover webhooks without applying them
}

func (h *harness) dropHandovers(drop bool) {
	h.mu.Lock()
	h.dropHO = drop
	h.mu.Unlock()
}

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
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), learned: map[string]int{}}
	if o.clock != nil {
		h.clock = o.clock
		h.now = o.clock.Now
	} else {
		h.now = time.Now
	}
	h.sim = sim.New(sim.Options{Now: h.now, RetryDelays: []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}})
	simSrv := httptest.NewServer(h.sim.Handler())
	h.simURL = simSrv.URL
	hook := httptest.NewServer(http.HandlerFunc(h.receive))
	t.Cleanup(func() {
		h.sim.Close()
		hook.Close()
		simSrv.Close()
	})

	h.openEngine()
	h.setPrimary(o)
	h.bot = h.client("bot-page-token", "bot-secret")
	h.bot2 = h.client("bot2-page-token", "bot2-secret")

	primary := map[states.Primary]string{states.PrimaryBot: botID, states.PrimaryRingCX: ringcxID}[o.primary]
	claim := !o.noClaimIdle
	mode := o.mode
	switch {
	case mode != "":
	case o.routing == states.ConversationRouting && o.primary == states.PrimaryNone:
		mode = "cr_zero"
	case o.routing == states.ConversationRouting:
		mode = "cr"
	default:
		mode = "hop_v2"
	}
	h.page = sim.PageConfig{
		PageID: pageID, Mode: mode, PrimaryAppID: primary,
		Apps: []sim.AppConfig{
			{AppID: ringcxID, Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret", CallbackURL: hook.URL + "/webhooks/messenger", VerifyToken: "dev-verify", Fields: []string{"messages", "messaging_handovers", "standby"},
				TakeoverAllowed: o.takeover},
			{AppID: botID, Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret", Fields: []string{"messages", "messaging_handovers", "standby"},
				Bot: &sim.BotConfig{HonorRequests: o.honorRequests, PassDelayMS: int(o.passDelay / time.Millisecond), Reply: "echo", ClaimIdle: &claim}},
			{AppID: bot2ID, Name: "Bot 2", AccessToken: "bot2-page-token", AppSecret: "bot2-secret", Fields: []string{"messages", "messaging_handovers", "standby"},
				Bot: &sim.BotConfig{HonorRequests: true, Reply: "", ClaimIdle: new(bool)}},
		},
	}
	if err := h.sim.PutPage(h.page); err != nil {
		t.Fatalf("sim.PutPage: %v", err)
	}
	if o.pendingTimeout > 0 {
		p, _ := h.eng.Page(pageID)
		p.PendingTimeout = o.pendingTimeout
		if err := h.eng.SetPage(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// simPage is the page as given to the simulator, to change and give again.
func (h *harness) simPage() sim.PageConfig {
	pc := h.page
	pc.Apps = append([]sim.AppConfig(nil), h.page.Apps...)
	return pc
}

func (h *harness) client(token, secret string) *messenger.Client {
	return &messenger.Client{
		BaseURL: h.simURL, Version: "v19.0", Timeout: 5 * time.Second, Backoff: 10 * time.Millisecond,
		Credentials: func(string) (messenger.Credentials, bool) {
			return messenger.Credentials{AccessToken: token, AppSecret: secret}, true
		},
	}
}

// openEngine opens the store and starts an engine on it (again after
// closeEngine, as a restart).
func (h *harness) openEngine() {
	h.t.Helper()
	db, err := store.Open(h.dir, store.Options{})
	if err != nil {
		h.t.Fatalf("store.Open: %v", err)
	}
	eng, err := engine.New(engine.Config{
		Store: db, Graph: h.client("ringcx-page-token", "ringcx-secret"), Clock: h.clock,
		RetryDelay: 200 * time.Millisecond, Observer: h,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		h.t.Fatalf("engine.Start: %v", err)
	}
	srv, err := server.New(server.Config{Engine: eng, APITokens: []string{"dev-token"}, WebhookSecrets: []string{"ringcx-secret"}})
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.store, h.eng, h.srv = db, eng, srv
	h.mu.Unlock()
	h.t.Cleanup(h.closeEngine)
}

func (h *harness) closeEngine() {
	h.mu.Lock()
	eng, db := h.eng, h.store
	h.eng, h.store, h.srv = nil, nil, nil
	h.mu.Unlock()
	if eng == nil {
		return
	}
	eng.Close()
	if problems, err := db.Check(); err != nil || len(problems) > 0 {
		h.t.Errorf("store check: %v %v", problems, err)
	}
	db.Close()
}

func (h *harness) setPrimary(o harnessOpts) {
	h.t.Helper()
	p := engine.Page{ID: pageID, Primary: o.primary, RingCXAppID: ringcxID, BotAppIDs: []string{botID, bot2ID}, Routing: o.routing, Takeover: o.configTakeover}
	if err := h.eng.SetPage(ctx, p); err != nil {
		h.t.Fatal(err)
	}
}

// receive is the RingCX app's webhook endpoint: threadctl's own webhook
// handler (server), serving the harness's current engine. While handovers are
// dropped, their events are cut from each delivery (re-signed) before it
// reaches the server; customer messages still arrive.
func (h *harness) receive(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	srv, drop := h.srv, h.dropHO
	h.mu.Unlock()
	if srv == nil {
		http.Error(w, "engine restarting", http.StatusServiceUnavailable)
		return
	}
	if drop {
		body, _ := io.ReadAll(r.Body)
		body = withoutHandovers(h.t, body)
		sig, _ := messenger.Sign(body, "ringcx-secret")
		r.Header.Set("X-Hub-Signature-256", sig)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		h.fail(fmt.Errorf("webhook answered %d: %s", rec.Code, rec.Body))
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// withoutHandovers is a webhook body without its handover events.
func withoutHandovers(t *testing.T, body []byte) []byte {
	var wh messenger.Webhook
	if err := json.Unmarshal(body, &wh); err != nil {
		t.Errorf("webhook body: %v", err)
		return body
	}
	for i := range wh.Entry {
		wh.Entry[i].Messaging = slices.DeleteFunc(wh.Entry[i].Messaging, func(ev messenger.MessagingEvent) bool { return ev.Kind() != messenger.KindMessage })
	}
	out, err := json.Marshal(wh)
	if err != nil {
		t.Errorf("webhook body: %v", err)
		return body
	}
	return out
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

func (h *harness) settle() {
	h.t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Until both are quiet: the simulator's deliveries, and the webhook
	// events threadctl accepted and applies in the background (which may
	// make Meta deliver more).
	for {
		if err := h.sim.Settle(c); err != nil {
			h.t.Fatalf("sim.Settle: %v", err)
		}
		h.mu.Lock()
		eng := h.eng
		h.mu.Unlock()
		if eng == nil || eng.Backlog() == 0 {
			break
		}
		select {
		case <-c.Done():
			h.t.Fatalf("accepted webhook events still waiting: %d", eng.Backlog())
		case <-time.After(2 * time.Millisecond):
		}
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

// history returns the thread's events, oldest first, as "event:outcome".
func (h *harness) history(psid string) []engine.HistoryEntry {
	h.t.Helper()
	hs, err := h.store.History(ctx, key(psid), 0, 1000)
	if err != nil {
		h.t.Fatal(err)
	}
	for i, j := 0, len(hs)-1; i < j; i, j = i+1, j-1 {
		hs[i], hs[j] = hs[j], hs[i]
	}
	return hs
}

// fakeClock is a clock tests move by hand, shared by the engine and the
// simulator.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
	c.mu.Unlock()
}

func simFault(call string) sim.Fault { return sim.Fault{Call: call, Status: 500, Count: 1} }
