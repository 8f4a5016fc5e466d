package etcd_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store/etcd"
)

// The demo page (SPEC.md §7).
const (
	pageID   = "100000000000001"
	ringcxID = "200000000000001"
	botID    = "300000000000001"
	apiToken = "dev-token"
)

// fleet is several threadctl instances — engine and server each, on their
// own etcd session — sharing one prefix of the cluster, in front of one
// simulator (Meta). Webhooks and API calls go to the live instances in
// turn, as a load balancer would send them.
type fleet struct {
	t      *testing.T
	prefix string
	sim    *sim.Sim
	simURL string
	api    string // round-robin over the instances' servers
	opts   fleetOpts

	mu    sync.Mutex
	insts []*instance
	turn  atomic.Uint64
	// errs are webhook deliveries an instance did not accept.
	errs []string
}

type instance struct {
	name  string
	store *etcd.Store
	eng   *engine.Engine
	srv   *server.Server
	dead  atomic.Bool
	obs   *counter
}

type fleetOpts struct {
	primary        states.Primary
	honorRequests  bool
	pendingTimeout time.Duration
	// historyKeep is the engines' Config.HistoryKeep (0: the default).
	historyKeep int
}

func newFleet(t *testing.T, n int, o fleetOpts) *fleet {
	t.Helper()
	if o.primary == "" {
		o.primary = states.PrimaryBot
	}
	f := &fleet{t: t, prefix: newPrefix(), opts: o}
	f.sim = sim.New(sim.Options{RetryDelays: []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}})
	simSrv := httptest.NewServer(f.sim.Handler())
	f.simURL = simSrv.URL
	api := httptest.NewServer(http.HandlerFunc(f.serveAPI))
	f.api = api.URL
	hook := httptest.NewServer(http.HandlerFunc(f.serveHook))
	t.Cleanup(func() {
		f.sim.Close()
		hook.Close()
		api.Close()
		simSrv.Close()
		for _, in := range f.instances() {
			in.eng.Close()
			in.store.Close()
		}
	})
	for i := range n {
		f.start(fmt.Sprintf("i%d", i+1))
	}
	fields := []string{"messages", "messaging_handovers", "standby"}
	primaryApp := map[states.Primary]string{states.PrimaryBot: botID, states.PrimaryRingCX: ringcxID}[o.primary]
	err := f.sim.PutPage(sim.PageConfig{PageID: pageID, Mode: "hop_v2", PrimaryAppID: primaryApp, Apps: []sim.AppConfig{
		{AppID: ringcxID, Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret", CallbackURL: hook.URL + "/webhooks/messenger", VerifyToken: "dev-verify", Fields: fields},
		{AppID: botID, Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret", Fields: fields, Bot: &sim.BotConfig{HonorRequests: o.honorRequests, Reply: "echo"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fleet) graph(token, secret string) *messenger.Client {
	return &messenger.Client{BaseURL: f.simURL, Version: "v19.0", Timeout: 5 * time.Second, Backoff: 10 * time.Millisecond,
		Credentials: func(string) (messenger.Credentials, bool) {
			return messenger.Credentials{AccessToken: token, AppSecret: secret}, true
		}}
}

// start adds an instance.
func (f *fleet) start(name string) *instance {
	f.t.Helper()
	st := open(f.t, f.prefix, nil)
	obs := &counter{}
	eng, err := engine.New(engine.Config{
		Store: st, Coordinator: st, Graph: f.graph("ringcx-page-token", "ringcx-secret"),
		RetryDelay: 200 * time.Millisecond, PendingTimeout: f.opts.pendingTimeout, Observer: obs, HistoryKeep: f.opts.historyKeep,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := eng.SetPage(ctx, engine.Page{ID: pageID, Primary: f.opts.primary, RingCXAppID: ringcxID, BotAppIDs: []string{botID}}); err != nil {
		f.t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		f.t.Fatal(err)
	}
	srv, err := server.New(server.Config{Engine: eng, APITokens: []string{apiToken}, VerifyToken: "dev-verify", WebhookSecrets: []string{"ringcx-secret"}, Ready: eng.Ping})
	if err != nil {
		f.t.Fatal(err)
	}
	in := &instance{name: name, store: st, eng: eng, srv: srv, obs: obs}
	f.mu.Lock()
	f.insts = append(f.insts, in)
	f.mu.Unlock()
	return in
}

func (f *fleet) instances() []*instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*instance(nil), f.insts...)
}

// live are the instances not killed.
func (f *fleet) live() []*instance {
	var out []*instance
	for _, in := range f.instances() {
		if !in.dead.Load() {
			out = append(out, in)
		}
	}
	return out
}

// next is the live instance whose turn it is.
func (f *fleet) next() *instance {
	l := f.live()
	return l[int(f.turn.Add(1))%len(l)]
}

func (f *fleet) serveAPI(w http.ResponseWriter, r *http.Request) {
	f.next().srv.Handler().ServeHTTP(w, r)
}

func (f *fleet) serveHook(w http.ResponseWriter, r *http.Request) {
	in := f.next()
	rec := httptest.NewRecorder()
	in.srv.Handler().ServeHTTP(rec, r)
	if rec.Code != http.StatusOK && !in.dead.Load() {
		// (One that died meanwhile answers 503; Meta delivers again.)
		f.mu.Lock()
		f.errs = append(f.errs, fmt.Sprintf("%s answered a webhook %d: %s", in.name, rec.Code, rec.Body))
		f.mu.Unlock()
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// kill stops an instance as SIGKILL would: its etcd client closes without
// revoking its lease, and it receives no more requests. (Its goroutines
// find the store gone.)
func (f *fleet) kill(in *instance) {
	in.dead.Store(true)
	in.store.Crash()
}

// settle waits until Meta has delivered everything and every live instance
// has applied what it accepted.
func (f *fleet) settle() {
	f.t.Helper()
	c, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		if err := f.sim.Settle(c); err != nil {
			f.t.Fatal(err)
		}
		busy := 0
		for _, in := range f.live() {
			busy += in.eng.Backlog()
		}
		if busy == 0 {
			break
		}
		if c.Err() != nil {
			f.t.Fatalf("accepted events still waiting: %d", busy)
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	errs := f.errs
	f.errs = nil
	f.mu.Unlock()
	for _, e := range errs {
		f.t.Error(e)
	}
}

func (f *fleet) history(k engine.ThreadKey) []engine.HistoryEntry {
	f.t.Helper()
	hs, err := f.live()[0].store.History(ctx, k, 0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	for i, j := 0, len(hs)-1; i < j; i, j = i+1, j-1 {
		hs[i], hs[j] = hs[j], hs[i]
	}
	return hs
}

func eventually(t *testing.T, within time.Duration, ok func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// counter is an engine.Observer that counts transitions by event.
type counter struct {
	mu     sync.Mutex
	events map[states.Event]int
}

func (c *counter) Transition(ti engine.TransitionInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events == nil {
		c.events = map[states.Event]int{}
	}
	c.events[ti.Event]++
}

func (c *counter) count(ev states.Event) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events[ev]
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.events {
		n += v
	}
	return n
}

func (*counter) ControlGranted(time.Duration) {}
func (*counter) WebhookEvent(string, string)  {}
func (*counter) PageLearned(string, string)   {}
func (*counter) GraphInFlight(string, int)    {}
func (*counter) Pruned(int, int, int)         {}
