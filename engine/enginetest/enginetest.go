// Package enginetest builds, for tests, the environment threadctl's engine
// runs in: a bbolt store in a temporary directory, the Messenger simulator
// over real HTTP with the demo page (SPEC.md §7), the RingCX app's Graph
// client, the engine, and threadctl's own server, which serves the API and
// is the RingCX app's webhook endpoint.
//
// It is used only by tests (engine's and server's); nothing in the service
// imports it.
package enginetest

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

// The demo page and its apps, and the secrets the environment is set up
// with.
const (
	PageID   = "100000000000001"
	RingCXID = "200000000000001"
	BotID    = "300000000000001" // the reference bot (the primary bot app)
	Bot2ID   = "300000000000002" // a second bot app

	APIToken     = "dev-token"
	VerifyToken  = "dev-verify"
	RingCXToken  = "ringcx-page-token"
	RingCXSecret = "ringcx-secret"
	BotToken     = "bot-page-token"
	BotSecret    = "bot-secret"
	Bot2Token    = "bot2-page-token"
	Bot2Secret   = "bot2-secret"
)

// Options set up an environment. The zero value is the demo page with
// primary bot on the Handover Protocol, a reference bot that honours
// requests for control and echoes, and the real clock.
type Options struct {
	// Primary is the demo page's primary at Meta and in threadctl's
	// configuration (default bot).
	Primary states.Primary
	// Routing is the page's routing at Meta and in threadctl's
	// configuration ("": the Handover Protocol); Mode overrides the
	// simulator's mode that Routing and Primary imply.
	Routing states.Routing
	Mode    string
	// Takeover is RingCX's takeover setting at Meta on Conversation Routing
	// pages (nil: the simulator's default, off for a non-default app);
	// ConfigTakeover is threadctl's configuration of it (nil: unknown).
	Takeover, ConfigTakeover *bool
	// PendingTimeout is the page's pending-request deadline (0: the
	// engine's default).
	PendingTimeout time.Duration
	// Bot is the reference bot's behaviour at Meta (nil: it honours
	// requests for control and echoes). The second bot app honours
	// requests, never claims an idle thread and never replies.
	Bot *sim.BotConfig
	// Sim configures the simulator; its clock defaults to Clock's.
	Sim sim.Options
	// Clock is the engine's clock, and the simulator's (nil: the real
	// clock). FakeClock is one tests move by hand.
	Clock engine.Clock
	// Observer receives the engine's observations.
	Observer engine.Observer
	// Server changes the server's configuration (the environment's: API
	// token, verify token, webhook secret, readiness).
	Server func(*server.Config)
	// Engine changes the engine's configuration (the environment's: the
	// store, a Graph client for the RingCX app, Clock, Observer, a
	// RetryDelay of 200 ms).
	Engine func(*engine.Config)

	// GraphTimeout is the RingCX app's Graph client timeout per attempt
	// (0: 5 s); GraphRetries its retries of a failed call (0: the
	// client's default; negative: none). Tests of Meta's failures make
	// them short, so that an outage costs them little time.
	GraphTimeout time.Duration
	GraphRetries int
	// RetryDelay is the engine's RetryDelay (0: 200 ms);
	// MaxGraphInFlight its bound on Graph calls in flight per page (0:
	// the engine's default).
	RetryDelay       time.Duration
	MaxGraphInFlight int
	// Webhook, if set, is told of every webhook delivery to threadctl: the
	// body as threadctl's server got it, and the status it answered.
	Webhook func(body []byte, status int)
	// OpenStore, if set, opens the store the engine runs on instead of a
	// bbolt file in Dir, at every start of the engine: the store, the
	// Coordinator of the instances sharing it (nil: none), and how to
	// close it. Store then returns nil; EngineStore returns it.
	OpenStore func() (engine.Store, engine.Coordinator, func() error, error)
}

// Env is a running environment. The engine, store and server change when
// the engine is restarted (CloseEngine, OpenEngine); the rest stays.
type Env struct {
	// Sim is the simulator (Meta), serving the Graph API at SimURL.
	Sim    *sim.Sim
	SimURL string
	// Page is the demo page as given to the simulator.
	Page sim.PageConfig
	// Dir is the store's directory.
	Dir string
	// URL is threadctl's server (every endpoint); HTTP is a client for it
	// that gives up after 10 s.
	URL  string
	HTTP *http.Client
	// Bot and Bot2 act at Meta as the two bot apps.
	Bot, Bot2 *messenger.Client

	t    testing.TB
	opts Options
	now  func() time.Time

	mu          sync.Mutex
	db          *store.DB
	st          engine.Store // db, or the store OpenStore opened
	closeSt     func() error // closes st when OpenStore opened it
	eng         *engine.Engine
	srv         *server.Server
	storeClosed bool
	dropHO      bool    // acknowledge handover webhooks without applying them
	hookErrs    []error // deliveries the server did not accept
}

// New starts an environment; t's cleanup stops it: the simulator stops
// delivering, then the HTTP servers stop, then the engine and the store
// close (the store checked first).
func New(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Primary == "" {
		o.Primary = states.PrimaryBot
	}
	e := &Env{t: t, opts: o, Dir: t.TempDir(), now: time.Now}
	if o.Clock != nil {
		e.now = o.Clock.Now
	}
	simOpts := o.Sim
	if simOpts.Now == nil {
		simOpts.Now = e.now
	}
	e.Sim = sim.New(simOpts)
	simSrv := httptest.NewServer(e.Sim.Handler())
	e.SimURL = simSrv.URL
	api := httptest.NewServer(http.HandlerFunc(e.serve))
	e.URL, e.HTTP = api.URL, api.Client()
	e.HTTP.Timeout = 10 * time.Second // a hung request fails its test
	hook := httptest.NewServer(http.HandlerFunc(e.receive))
	t.Cleanup(func() {
		e.Sim.Close()
		hook.Close()
		api.Close()
		simSrv.Close()
		e.CloseEngine()
	})
	e.Bot = e.GraphClient(BotToken, BotSecret)
	e.Bot2 = e.GraphClient(Bot2Token, Bot2Secret)

	e.openEngine(&engine.Page{
		ID: PageID, Primary: o.Primary, RingCXAppID: RingCXID, BotAppIDs: []string{BotID, Bot2ID},
		Routing: o.Routing, Takeover: o.ConfigTakeover, PendingTimeout: o.PendingTimeout,
	})

	bot := sim.BotConfig{HonorRequests: true, Reply: "echo"}
	if o.Bot != nil {
		bot = *o.Bot
	}
	fields := []string{"messages", "messaging_handovers", "standby"}
	e.Page = sim.PageConfig{
		PageID: PageID, Mode: simMode(o), PrimaryAppID: map[states.Primary]string{states.PrimaryBot: BotID, states.PrimaryRingCX: RingCXID}[o.Primary],
		Apps: []sim.AppConfig{
			{AppID: RingCXID, Name: "RingCX", AccessToken: RingCXToken, AppSecret: RingCXSecret,
				CallbackURL: hook.URL + "/webhooks/messenger", VerifyToken: VerifyToken, Fields: fields, TakeoverAllowed: o.Takeover},
			{AppID: BotID, Name: "Bot", AccessToken: BotToken, AppSecret: BotSecret, Fields: fields, Bot: &bot},
			{AppID: Bot2ID, Name: "Bot 2", AccessToken: Bot2Token, AppSecret: Bot2Secret, Fields: fields,
				Bot: &sim.BotConfig{HonorRequests: true, ClaimIdle: new(bool)}},
		},
	}
	if err := e.Sim.PutPage(e.Page); err != nil {
		t.Fatalf("sim.PutPage: %v", err)
	}
	return e
}

// simMode is the simulator's mode of the page the options describe.
func simMode(o Options) string {
	switch {
	case o.Mode != "":
		return o.Mode
	case o.Routing == states.ConversationRouting && o.Primary == states.PrimaryNone:
		return "cr_zero"
	case o.Routing == states.ConversationRouting:
		return "cr"
	}
	return "hop_v2"
}

// GraphClient is a Graph API client of the simulator acting with a page
// token of an app.
func (e *Env) GraphClient(token, secret string) *messenger.Client {
	return &messenger.Client{
		BaseURL: e.SimURL, Version: "v19.0", Timeout: 5 * time.Second, Backoff: 10 * time.Millisecond,
		Credentials: func(string) (messenger.Credentials, bool) {
			return messenger.Credentials{AccessToken: token, AppSecret: secret}, true
		},
	}
}

// Engine is the running engine (nil between CloseEngine and OpenEngine).
func (e *Env) Engine() *engine.Engine {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.eng
}

// Store is the open store (nil between CloseEngine and OpenEngine).
func (e *Env) Store() *store.DB {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.db
}

// Server is the running server (nil between CloseEngine and OpenEngine).
func (e *Env) Server() *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv
}

// EngineStore is the store the engine runs on: the bbolt store, or the one
// Options.OpenStore opened (nil between CloseEngine and OpenEngine).
func (e *Env) EngineStore() engine.Store {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st
}

// Now is the environment's clock.
func (e *Env) Now() time.Time { return e.now() }

// OpenEngine opens the store and starts an engine and a server on it
// again after CloseEngine, as a restart: the page is the one stored.
func (e *Env) OpenEngine() {
	e.t.Helper()
	e.openEngine(nil)
}

// openEngine opens the store, configures page (if not nil) and starts the
// engine and its server.
func (e *Env) openEngine(page *engine.Page) {
	e.t.Helper()
	ctx := context.Background()
	var (
		db      *store.DB
		st      engine.Store
		coord   engine.Coordinator
		closeSt func() error
		err     error
	)
	if e.opts.OpenStore != nil {
		if st, coord, closeSt, err = e.opts.OpenStore(); err != nil {
			e.t.Fatalf("opening the store: %v", err)
		}
	} else {
		if db, err = store.Open(e.Dir, store.Options{}); err != nil {
			e.t.Fatalf("store.Open: %v", err)
		}
		st, closeSt = db, db.Close
	}
	graph := e.GraphClient(RingCXToken, RingCXSecret)
	if e.opts.GraphTimeout > 0 {
		graph.Timeout = e.opts.GraphTimeout
	}
	graph.MaxRetries = e.opts.GraphRetries
	retryDelay := 200 * time.Millisecond
	if e.opts.RetryDelay > 0 {
		retryDelay = e.opts.RetryDelay
	}
	ecfg := engine.Config{
		Store: st, Coordinator: coord, Graph: graph, Clock: e.opts.Clock,
		RetryDelay: retryDelay, Observer: e.opts.Observer, MaxGraphInFlight: e.opts.MaxGraphInFlight,
	}
	if e.opts.Engine != nil {
		e.opts.Engine(&ecfg)
	}
	eng, err := engine.New(ecfg)
	if err != nil {
		closeSt()
		e.t.Fatalf("engine.New: %v", err)
	}
	e.mu.Lock()
	e.db, e.st, e.closeSt, e.eng, e.storeClosed = db, st, closeSt, eng, false
	e.mu.Unlock()
	if page != nil {
		if err := eng.SetPage(ctx, *page); err != nil {
			e.t.Fatalf("SetPage: %v", err)
		}
	}
	if err := eng.Start(ctx); err != nil {
		e.t.Fatalf("engine.Start: %v", err)
	}
	cfg := server.Config{
		Engine: eng, APITokens: []string{APIToken}, VerifyToken: VerifyToken,
		WebhookSecrets: []string{RingCXSecret}, Ready: eng.Ping,
	}
	if e.opts.Server != nil {
		e.opts.Server(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		e.t.Fatalf("server.New: %v", err)
	}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

// CloseEngine stops the server and the engine, checks the store and closes
// it.
func (e *Env) CloseEngine() {
	e.mu.Lock()
	eng, db, closeSt, closed := e.eng, e.db, e.closeSt, e.storeClosed
	e.eng, e.db, e.st, e.closeSt, e.srv = nil, nil, nil, nil, nil
	e.mu.Unlock()
	if eng == nil {
		return
	}
	eng.Close()
	if closed {
		return
	}
	if db != nil {
		if problems, err := db.Check(); err != nil || len(problems) > 0 {
			e.t.Errorf("store check: %v %v", problems, err)
		}
	}
	closeSt()
}

// CloseStore closes the store under the running engine and server, as a
// failing disk would; the cleanup then neither checks nor closes it.
func (e *Env) CloseStore() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.storeClosed = true
	return e.closeSt()
}

// DropHandovers makes the webhook endpoint acknowledge handover events
// without applying them (customer messages still arrive), or stop doing so.
func (e *Env) DropHandovers(drop bool) {
	e.mu.Lock()
	e.dropHO = drop
	e.mu.Unlock()
}

// Settle waits until the simulator has delivered everything and threadctl
// has applied the webhook events it accepted, then reports
// the deliveries threadctl's server did not accept since the last call.
func (e *Env) Settle(ctx context.Context) error {
	// Until both are quiet: the simulator's deliveries, and the webhook
	// events threadctl accepted and applies in the background (which may
	// make Meta deliver more).
	for {
		if err := e.Sim.Settle(ctx); err != nil {
			return fmt.Errorf("sim.Settle: %w", err)
		}
		eng := e.Engine()
		if eng == nil || eng.Backlog() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("accepted webhook events still waiting: %d", eng.Backlog())
		case <-time.After(2 * time.Millisecond):
		}
	}
	e.mu.Lock()
	errs := e.hookErrs
	e.hookErrs = nil
	e.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("webhook receiver: %w", errors.Join(errs...))
	}
	return nil
}

// serve is threadctl's server at URL, serving the current engine.
func (e *Env) serve(w http.ResponseWriter, r *http.Request) {
	srv := e.Server()
	if srv == nil {
		http.Error(w, "engine restarting", http.StatusServiceUnavailable)
		return
	}
	srv.Handler().ServeHTTP(w, r)
}

// receive is the RingCX app's webhook endpoint, where the simulator
// delivers: threadctl's own webhook handler, serving the current engine.
// While handovers are dropped, their events are cut from each delivery
// (re-signed) before it reaches the server. An answer other than 200 is
// reported by the next Settle.
func (e *Env) receive(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	srv, drop := e.srv, e.dropHO
	e.mu.Unlock()
	if srv == nil {
		http.Error(w, "engine restarting", http.StatusServiceUnavailable)
		return
	}
	if drop {
		body, _ := io.ReadAll(r.Body)
		body = e.withoutHandovers(body)
		sig, _ := messenger.Sign(body, RingCXSecret)
		r.Header.Set("X-Hub-Signature-256", sig)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	var body []byte
	if e.opts.Webhook != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, r)
	if e.opts.Webhook != nil {
		e.opts.Webhook(body, rec.Code)
	}
	if rec.Code != http.StatusOK {
		e.mu.Lock()
		e.hookErrs = append(e.hookErrs, fmt.Errorf("webhook answered %d: %s", rec.Code, rec.Body))
		e.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// withoutHandovers is a webhook body without its handover events.
func (e *Env) withoutHandovers(body []byte) []byte {
	var wh messenger.Webhook
	if err := json.Unmarshal(body, &wh); err != nil {
		e.t.Errorf("webhook body: %v", err)
		return body
	}
	for i := range wh.Entry {
		wh.Entry[i].Messaging = slices.DeleteFunc(wh.Entry[i].Messaging, func(ev messenger.MessagingEvent) bool { return ev.Kind() != messenger.KindMessage })
	}
	out, err := json.Marshal(wh)
	if err != nil {
		e.t.Errorf("webhook body: %v", err)
		return body
	}
	return out
}
