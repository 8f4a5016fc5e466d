// Package soak_test kills the built threadctl with SIGKILL over and over
// under concurrent handovers, agent work and webhooks, and checks after
// every kill that the file is sound and that nothing threadctl acknowledged
// was lost. Run it with make soak (SOAK_CYCLES=, default 1000); without
// THREADCTL_SOAK_CYCLES the test is skipped.
//
// The parent (this test) runs the Messenger simulator, which must outlive
// the kills, and a webhook relay in front of threadctl that records every
// delivery threadctl answered 200. Each cycle:
//
//  1. starts `threadctl serve` on the data directory, with the simulator as
//     Meta's Graph API and the relay as the RingCX app's webhook URL;
//  2. lets clients work (Bots API handovers both ways, interventions,
//     contents, customer messages through the simulator) for a random time,
//     or kills it during start-up (one cycle in ten);
//  3. SIGKILLs it, copies the data directory as the kill left it, runs
//     `threadctl check` on the copy (must be clean), and opens the copy to
//     check every acknowledgement: a handover answered 200 has its history
//     entry (its event, caused by the Bots API, applied or unchanged, made
//     while the call was under way); an intervention answered 201 exists, one
//     closed with 200 is closed; a content answered 201 exists (synced if it
//     was answered synced); every event of a webhook answered 200 is in its
//     thread's history or still accepted in the inbox, to be applied;
//  4. restarts on the directory as the kill left it.
//
// Between kills, a thread whose webhook events waited in the inbox when
// threadctl started, and which served a second or more, must have applied
// the oldest of them (they are applied in order): the backlog may grow under
// load, but never stall.
//
// At the end traffic stops; threadctl is started again (and stopped with
// SIGTERM) until its inbox is empty; then the last threadctl runs until Meta
// and threadctl agree on every thread (no request pending, the state
// matching Meta's owner) and stops on SIGTERM; every acknowledged webhook
// event must be in the history. A self-check fabricates acknowledgements and
// requires them reported lost. The last line is the summary: cycles,
// acknowledged, lost, threads agreeing with Meta, wall time.
package soak_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

const (
	ringcxID     = "200000000000001"
	botID        = "300000000000001"
	bot2ID       = "300000000000002"
	apiToken     = "soak-token"
	verifyToken  = "soak-verify"
	ringcxSecret = "ringcx-secret"
	handoverText = "agent please"
)

// soakPage is one page: the Handover Protocol with a bot primary, or
// Conversation Routing with the bot as default app and RingCX's takeover
// setting on.
type soakPage struct {
	id      string
	routing states.Routing
	psids   []string
}

func (p soakPage) token(app string) string { return "token-" + app + "-" + p.id }

var soakPages = []soakPage{
	{id: "100000000000001", routing: states.HandoverProtocol},
	{id: "100000000000002", routing: states.ConversationRouting},
}

const threadsPerPage = 6

func init() {
	for i := range soakPages {
		for j := range threadsPerPage {
			soakPages[i].psids = append(soakPages[i].psids, fmt.Sprintf("76%02d%012d", i, j))
		}
	}
}

// config is threadctl's configuration for the soak: the pages, with the
// simulator as Meta.
func config(simURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "api_tokens: [%s]\ngraph: {base_url: %q, version: v19.0, timeout: 5s}\nwebhook: {verify_token: %s}\npages:\n", apiToken, simURL, verifyToken)
	for _, p := range soakPages {
		fmt.Fprintf(&b, "  - page_id: %q\n    primary: bot\n    ringcx_app_id: %q\n    ringcx_app_secret: %s\n    page_token: %s\n    bot_app_ids: [%q, %q]\n    pending_timeout: 1s\n    routing: %s\n",
			p.id, ringcxID, ringcxSecret, p.token(ringcxID), botID, bot2ID, p.routing)
		if p.routing == states.ConversationRouting {
			b.WriteString("    ringcx_takeover: true\n")
		}
	}
	return b.String()
}

// simPage is the page at Meta: the RingCX app, whose webhooks go to
// callback; the reference bot (passes control when asked, and when the
// customer asks for an agent); a second bot that honours requests.
func simPage(p soakPage, callback string) sim.PageConfig {
	fields := []string{"messages", "messaging_handovers", "standby"}
	pc := sim.PageConfig{PageID: p.id, Mode: "hop_v2", PrimaryAppID: botID}
	ringcx := sim.AppConfig{AppID: ringcxID, Name: "RingCX", AccessToken: p.token(ringcxID), AppSecret: ringcxSecret, CallbackURL: callback, VerifyToken: verifyToken, Fields: fields}
	bot := &sim.BotConfig{HonorRequests: true, PassDelayMS: 100, Reply: "echo", HandoverText: handoverText, HandoverAppID: ringcxID}
	if p.routing == states.ConversationRouting {
		pc.Mode = "cr"
		on := true
		ringcx.TakeoverAllowed = &on
		bot.HandoverVia = sim.HandoverViaSendAPI
	}
	pc.Apps = []sim.AppConfig{
		ringcx,
		{AppID: botID, Name: "Bot", AccessToken: p.token(botID), AppSecret: "bot-secret", Fields: fields, Bot: bot},
		{AppID: bot2ID, Name: "Bot 2", AccessToken: p.token(bot2ID), AppSecret: "bot2-secret", Fields: fields, Bot: &sim.BotConfig{HonorRequests: true, ClaimIdle: new(bool)}},
	}
	return pc
}

// apiAck is an API call threadctl answered with 2xx.
type apiAck struct {
	kind       string // handover_to_agent, handover_to_bot, open, close, content
	key        engine.ThreadKey
	call, ret  time.Time
	id, status string // an intervention's or a content's id; a content's synchronisation status
	cycle      int
}

// hookAck is a webhook event threadctl answered 200 for, as the engine
// translates it.
type hookAck struct {
	key      engine.ThreadKey
	event    states.Event
	observed states.Observed
	metaMS   int64
	dedup    string
	cycle    int
}

func (a hookAck) match() string {
	return fmt.Sprintf("%s|%s|%s|%d", a.key, a.event, a.observed, a.metaMS)
}

// soak is one run.
type soak struct {
	t      *testing.T
	bin    string
	cfg    string
	dir    string
	sim    *sim.Sim
	client *http.Client

	// gate: clients and the relay hold it shared while they talk to
	// threadctl and record what it answered; the checks after a kill hold
	// it alone.
	gate   sync.RWMutex
	mu     sync.Mutex
	target string // threadctl's base URL, "" while it is down
	cycle  int
	api    []apiAck
	hooks  map[string]hookAck // by thread and the engine's de-duplication key
	open   map[engine.ThreadKey]string
	counts map[string]int

	pending  map[string]hookAck // acknowledged webhook events not yet seen in the history
	apiAcked int                // API calls answered 2xx, all checked
	children []*child           // the last three threadctl processes

	// The inbox at the last kill, per thread (oldest first); its largest
	// size and the age of the oldest event it held at a kill.
	off      []offThread // threads that did not agree with Meta at the end
	waiting  map[engine.ThreadKey][]engine.Accepted
	backlog  int
	oldest   time.Duration
	failures []string
	saved    int

	// dry collects failures in dryFailures instead of failing the test
	// (selfCheck).
	dry         bool
	dryFailures []string
}

func (s *soak) setTarget(u string) {
	s.mu.Lock()
	s.target = u
	s.mu.Unlock()
}

func (s *soak) current() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target, s.cycle
}

func (s *soak) count(what string, n int) {
	s.mu.Lock()
	s.counts[what] += n
	s.mu.Unlock()
}

func (s *soak) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dry {
		s.dryFailures = append(s.dryFailures, msg)
		return
	}
	s.failures = append(s.failures, msg)
	s.t.Errorf("%s", msg)
}

// ServeHTTP relays the simulator's webhook deliveries to threadctl and
// records the events of every delivery it answered 200.
func (s *soak) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.gate.RLock()
	defer s.gate.RUnlock()
	target, cycle := s.current()
	if target == "" {
		http.Error(w, "threadctl is down", http.StatusServiceUnavailable)
		return
	}
	req, _ := http.NewRequest(r.Method, target+r.URL.RequestURI(), bytes.NewReader(body))
	for _, h := range []string{"Content-Type", "X-Hub-Signature-256", "X-Hub-Signature"} {
		req.Header.Set(h, r.Header.Get(h))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if r.Method == http.MethodPost && resp.StatusCode == http.StatusOK {
		s.acceptedHook(body, cycle)
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

func (s *soak) acceptedHook(body []byte, cycle int) {
	wh, err := messenger.ParseWebhook(body)
	if err != nil {
		s.fail("cycle %d: threadctl answered 200 to a webhook the relay cannot parse: %v", cycle, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range server.Notices(wh) {
		in, ok, _ := engine.Translate(engine.Page{ID: n.PageID, RingCXAppID: ringcxID}, n)
		if !ok {
			continue
		}
		a := hookAck{key: in.Key, event: in.Event, observed: in.Observed, metaMS: in.MetaTime.UnixMilli(), dedup: in.DedupKey, cycle: cycle}
		id := in.Key.String() + "|" + in.DedupKey
		if _, seen := s.hooks[id]; !seen {
			s.hooks[id] = a
			s.pending[id] = a
			s.counts["webhook events"]++
		}
	}
}

// do calls threadctl's API while it is up and records a 2xx answer.
func (s *soak) do(kind string, k engine.ThreadKey, method, path string, q url.Values) (int, map[string]any) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	target, cycle := s.current()
	if target == "" {
		return 0, nil
	}
	q.Set("page_id", k.PageID)
	req, _ := http.NewRequest(method, target+path+"?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	call := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ret := time.Now()
	var v map[string]any
	json.Unmarshal(body, &v)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[fmt.Sprintf("%s %d", kind, resp.StatusCode)]++
	if resp.StatusCode/100 == 2 {
		id, _ := v["id"].(string)
		status, _ := v["synchronization_status"].(string)
		s.api = append(s.api, apiAck{kind: kind, key: k, call: call, ret: ret, id: id, status: status, cycle: cycle})
	}
	return resp.StatusCode, v
}

// work is one client: random actions on random threads until stop closes.
func (s *soak) work(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(5+rand.IntN(25)) * time.Millisecond):
		}
		p := soakPages[rand.IntN(len(soakPages))]
		k := engine.ThreadKey{PageID: p.id, PSID: p.psids[rand.IntN(len(p.psids))]}
		id := url.Values{"identity_foreign_id": {k.PSID}, "type": {"messenger"}}
		switch n := rand.IntN(100); {
		case n < 25:
			id.Set("from", "bot")
			id.Set("to", "agent")
			s.do("handover_to_agent", k, http.MethodPost, "/1.0/bots/handover", id)
		case n < 40:
			app := botID
			if rand.IntN(4) == 0 {
				app = bot2ID
			}
			id.Set("from", "agent")
			id.Set("to", "bot")
			id.Set("app_id", app)
			s.do("handover_to_bot", k, http.MethodPost, "/1.0/bots/handover", id)
		case n < 52:
			if code, v := s.do("open", k, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {k.PSID}}); code == http.StatusCreated {
				iv, _ := v["id"].(string)
				s.mu.Lock()
				s.open[k] = iv
				s.mu.Unlock()
			}
		case n < 62:
			s.mu.Lock()
			iv := s.open[k]
			s.mu.Unlock()
			if iv == "" {
				break
			}
			if code, _ := s.do("close", k, http.MethodPut, "/1.0/interventions/"+iv+"/close", url.Values{}); code == http.StatusOK {
				s.mu.Lock()
				if s.open[k] == iv {
					delete(s.open, k)
				}
				s.mu.Unlock()
			}
		case n < 72:
			s.do("content", k, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {k.PSID}, "body": {"Ann here"}})
		default:
			text := "hi"
			if rand.IntN(6) == 0 {
				text = handoverText
			}
			if _, err := s.sim.CustomerMessage(k.PageID, k.PSID, text); err == nil {
				s.mu.Lock()
				s.counts["customer messages"]++
				s.mu.Unlock()
			}
		}
	}
}

// child is one threadctl process.
type child struct {
	cmd     *exec.Cmd
	cycle   int
	started time.Time
	dead    bool // killed (guarded by soak.mu)
	addr    chan string
	exited  chan error
	mu      sync.Mutex
	served  time.Time // when it logged that it serves
	logs    []string  // the last lines of its log (debug level)
	errors  []string  // its ERROR lines
}

// uptime is how long it served before now (0 if it never did).
func (c *child) uptime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.served.IsZero() {
		return 0
	}
	return time.Since(c.served)
}

func (s *soak) start() *child {
	c := &child{addr: make(chan string, 1), exited: make(chan error, 1), started: time.Now()}
	s.mu.Lock()
	c.cycle = s.cycle
	s.children = append(s.children[max(0, len(s.children)-2):], c)
	s.mu.Unlock()
	c.cmd = exec.Command(s.bin, "serve", "--config", s.cfg, "--data-dir", s.dir, "--addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug")
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var rec struct {
				Msg   string `json:"msg"`
				Level string `json:"level"`
				Addr  string `json:"addr"`
			}
			json.Unmarshal([]byte(line), &rec)
			c.mu.Lock()
			c.logs = append(c.logs, line)
			if len(c.logs) > 4000 {
				c.logs = c.logs[len(c.logs)-2000:]
			}
			if rec.Msg == "threadctl serving" {
				c.served = time.Now()
			}
			if rec.Level == "ERROR" {
				c.errors = append(c.errors, line)
			}
			c.mu.Unlock()
			if rec.Msg == "threadctl serving" {
				c.addr <- "http://" + rec.Addr
			}
		}
		c.exited <- c.cmd.Wait()
	}()
	return c
}

func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.logs[max(0, len(c.logs)-40):], "\n")
}

// TestSoak is the soak: THREADCTL_SOAK_CYCLES cycles (see the package doc).
// THREADCTL_BIN is the threadctl binary (built here when unset).
func TestSoak(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("THREADCTL_SOAK_CYCLES"))
	if n <= 0 {
		t.Skip("set THREADCTL_SOAK_CYCLES (make soak) to run the soak")
	}
	began := time.Now()
	bin := os.Getenv("THREADCTL_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "threadctl")
		build := exec.Command("go", "build", "-o", bin, "..")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			t.Fatalf("building threadctl: %v", err)
		}
	}
	s := &soak{
		t: t, bin: bin, dir: t.TempDir(), client: &http.Client{Timeout: 10 * time.Second},
		hooks: map[string]hookAck{}, pending: map[string]hookAck{}, open: map[engine.ThreadKey]string{}, counts: map[string]int{},
	}
	// Meta retries a failed delivery for about 30 s, longer than threadctl
	// is ever down here.
	s.sim = sim.New(sim.Options{
		RetryDelays: []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	simSrv := httptest.NewServer(s.sim.Handler())
	relay := httptest.NewServer(s)
	defer func() {
		s.sim.Close()
		relay.Close()
		simSrv.Close()
	}()
	for _, p := range soakPages {
		if err := s.sim.PutPage(simPage(p, relay.URL+"/webhooks/messenger")); err != nil {
			t.Fatal(err)
		}
	}
	s.cfg = filepath.Join(t.TempDir(), "threadctl.yaml")
	if err := os.WriteFile(s.cfg, []byte(config(simSrv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range soakPages {
		for _, psid := range p.psids {
			if _, err := s.sim.CustomerMessage(p.id, psid, "hello"); err != nil {
				t.Fatal(err)
			}
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { s.work(stop) })
	}
	kills, early := 0, 0
	for cycle := 1; cycle <= n; cycle++ {
		s.mu.Lock()
		s.cycle = cycle
		s.mu.Unlock()
		c := s.start()
		var uptime time.Duration
		if rand.IntN(10) == 0 {
			// Killed while starting: recovering the log, resolving intents,
			// re-arming timers, or just serving.
			early++
			uptime = time.Duration(rand.IntN(300)) * time.Millisecond
			go func() {
				a := <-c.addr
				s.mu.Lock()
				if !c.dead {
					s.target = a
				}
				s.mu.Unlock()
			}()
		} else {
			select {
			case a := <-c.addr:
				s.setTarget(a)
			case err := <-c.exited:
				t.Fatalf("cycle %d: threadctl exited before serving: %v\n%s", cycle, err, c.log())
			case <-time.After(60 * time.Second):
				c.cmd.Process.Kill()
				t.Fatalf("cycle %d: threadctl did not start in 60 s\n%s", cycle, c.log())
			}
			uptime = time.Duration(100+rand.IntN(1400)) * time.Millisecond
		}
		time.Sleep(uptime)
		s.mu.Lock()
		c.dead = true
		s.mu.Unlock()
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
		kills++
		s.gate.Lock()
		s.setTarget("")
		s.afterKill(cycle, c)
		s.gate.Unlock()
		if len(s.failures) > 20 {
			t.Fatalf("stopping after %d failures", len(s.failures))
		}
		if cycle%50 == 0 {
			t.Logf("cycle %d: %d API answers 2xx, %d webhook events acknowledged, %d failures, %s", cycle, s.apiAcked, len(s.hooks), len(s.failures), time.Since(began).Round(time.Second))
		}
	}

	// The last runs: traffic stops; threadctl applies what waits in the
	// inbox (started again, without traffic, until the inbox is empty);
	// then Meta and threadctl settle, and SIGTERM.
	s.mu.Lock()
	s.cycle = n + 1
	s.mu.Unlock()
	c := s.serve()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	stopped := time.Now()
	var drained time.Duration
	for i := 0; ; i++ {
		time.Sleep(3 * time.Second)
		s.terminate(c)
		left := s.inboxSize()
		if i == 0 {
			s.count("accepted webhook events still waiting 3 s after traffic stopped", left)
		}
		if left == 0 {
			drained = time.Since(stopped)
			break
		}
		if i == 40 {
			s.fail("the inbox still holds %d accepted webhook events %s after traffic stopped", left, time.Since(stopped).Round(time.Second))
			break
		}
		c = s.serve()
	}
	c = s.serve()
	agree, threads := s.converge(c)
	s.terminate(c)
	s.reportOff()
	s.gate.Lock()
	s.setTarget("")
	if !s.verify(n+1, s.dir, nil) {
		t.Logf("the data directory after the last, clean, stop, and the last threadctl logs:%s", s.save(n+1, s.dir))
	}
	s.selfCheck()
	s.gate.Unlock()

	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range s.counts {
			if !yield(k) {
				return
			}
		}
	})
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %d\n", k, s.counts[k])
	}
	t.Logf("answers:\n%s", b.String())
	t.Logf("the inbox at a kill: at most %d accepted webhook events waiting, the oldest %s old; after traffic stopped it was empty %s later",
		s.backlog, s.oldest.Round(time.Millisecond), drained.Round(time.Second))
	acked := s.apiAcked + len(s.hooks)
	summary := fmt.Sprintf("soak: cycles=%d (killed during start-up: %d) acknowledged=%d (API 2xx: %d, webhook events answered 200: %d) lost=%d threads agreeing with Meta=%d/%d failures=%d wall=%s",
		kills, early, acked, s.apiAcked, len(s.hooks), s.counts["lost"], agree, threads, len(s.failures), time.Since(began).Round(time.Second))
	t.Log(summary)
	fmt.Println(summary)
}

// serve starts threadctl and waits until it serves.
func (s *soak) serve() *child {
	c := s.start()
	select {
	case a := <-c.addr:
		s.setTarget(a)
	case err := <-c.exited:
		s.t.Fatalf("threadctl exited before serving: %v\n%s", err, c.log())
	case <-time.After(60 * time.Second):
		c.cmd.Process.Kill()
		s.t.Fatalf("threadctl did not start in 60 s\n%s", c.log())
	}
	return c
}

// terminate stops threadctl with SIGTERM: it must exit cleanly.
func (s *soak) terminate(c *child) {
	s.mu.Lock()
	c.dead = true
	s.target = ""
	s.mu.Unlock()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		if err != nil {
			s.fail("threadctl did not stop cleanly on SIGTERM: %v\n%s", err, c.log())
		}
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
		s.fail("threadctl did not stop within 30 s of SIGTERM\n%s", c.log())
	}
}

// inboxSize is how many accepted webhook events wait in the stopped
// threadctl's inbox.
func (s *soak) inboxSize() int {
	db, err := store.Open(s.dir, store.Options{OpenTimeout: 2 * time.Second})
	if err != nil {
		s.t.Fatalf("opening the store: %v", err)
	}
	defer db.Close()
	inbox, err := db.Accepted(context.Background())
	if err != nil {
		s.t.Fatalf("reading the inbox: %v", err)
	}
	return len(inbox)
}

// afterKill checks the directory as the kill left it: on a copy, so that
// the next threadctl starts on exactly what the kill left.
func (s *soak) afterKill(cycle int, c *child) {
	cp := s.dir + ".check"
	os.RemoveAll(cp)
	if err := os.CopyFS(cp, os.DirFS(s.dir)); err != nil {
		s.t.Fatalf("cycle %d: copying the data directory: %v", cycle, err)
	}
	defer os.RemoveAll(cp)
	if !s.verify(cycle, cp, c) {
		s.t.Logf("cycle %d: the data directory as the kill left it, and the last threadctl logs:%s", cycle, s.save(cycle, s.dir))
	}
	c.mu.Lock()
	errs := c.errors
	c.mu.Unlock()
	s.count("threadctl ERROR log lines", len(errs))
}

// verify runs threadctl check on dir and checks every acknowledgement not
// checked yet against it. c is the threadctl that was just killed; nil
// after the last, clean, stop, when nothing may be left in the inbox. It
// reports whether all was well (the store is closed again when it returns).
func (s *soak) verify(cycle int, dir string, c *child) bool {
	final := c == nil
	failures := len(s.failures)
	out, err := exec.Command(s.bin, "check", "--data-dir", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": ok") {
		s.count("check failures", 1)
		s.fail("cycle %d: threadctl check: %v\n%s", cycle, err, out)
		return false
	}
	db, err := store.Open(dir, store.Options{OpenTimeout: 2 * time.Second})
	if err != nil {
		s.fail("cycle %d: opening the store: %v", cycle, err)
		return false
	}
	defer db.Close()
	ctx := context.Background()
	if !final {
		// What the kill interrupted: Graph calls (their intents), accepted
		// webhook events not applied yet, log records check replayed.
		intents, _ := db.Intents(ctx)
		inbox, _ := db.Accepted(ctx)
		if len(intents) > 0 {
			s.count("kills with a Graph call in flight", 1)
		}
		if len(inbox) > 0 {
			s.count("kills with accepted webhook events not applied yet", 1)
		}
		if m := replayed.FindStringSubmatch(string(out)); m != nil {
			n, _ := strconv.Atoi(m[1])
			s.count("log records replayed by check after a kill", n)
		}
		s.inboxProgress(cycle, c, inbox)
	}
	lost := s.verifyAPI(ctx, db, cycle)
	lost += s.verifyHooks(ctx, db, cycle, final)
	if s.dry {
		return true
	}
	s.apiAcked += len(s.api)
	s.count("lost", lost)
	s.api = s.api[:0]
	return len(s.failures) == failures
}

// inboxProgress checks that the accepted webhook events are being applied:
// a thread whose events waited in the inbox when c started, and which
// served a second or more, must have applied at least its oldest one (each
// thread's events are applied in order). It keeps the backlog's figures.
func (s *soak) inboxProgress(cycle int, c *child, inbox []engine.Accepted) {
	now := map[uint64]bool{}
	byThread := map[engine.ThreadKey][]engine.Accepted{}
	for _, a := range inbox {
		now[a.Seq] = true
		k := engine.ThreadKey{PageID: a.Notice.PageID, PSID: a.Notice.PSID}
		byThread[k] = append(byThread[k], a)
		if age := time.Since(a.At); age > s.oldest {
			s.oldest = age
		}
	}
	s.backlog = max(s.backlog, len(inbox))
	if up := c.uptime(); up >= time.Second {
		for k, before := range s.waiting {
			if now[before[0].Seq] {
				s.fail("cycle %d: thread %s applied none of the %d webhook events waiting in its inbox when threadctl started, although it served %s: the oldest, seq %d (%s, accepted at %s), is still there",
					cycle, k, len(before), up.Round(time.Millisecond), before[0].Seq, before[0].Notice.Kind, before[0].At.Format("15:04:05.000000"))
			}
		}
	}
	s.waiting = byThread
}

// selfCheck shows that the checks can fail: on the final directory,
// acknowledgements threadctl never gave — a handover answered an hour ago,
// a webhook event Meta never sent — must each be reported lost.
func (s *soak) selfCheck() {
	k := engine.ThreadKey{PageID: soakPages[0].id, PSID: soakPages[0].psids[0]}
	past := time.Now().Add(-time.Hour)
	fake := hookAck{key: k, event: states.ControlPassed, metaMS: past.UnixMilli(), dedup: "pass:self-check", cycle: -1}
	id := k.String() + "|" + fake.dedup
	s.api = []apiAck{{kind: "handover_to_agent", key: k, call: past, ret: past.Add(time.Millisecond), cycle: -1}}
	s.hooks[id], s.pending[id] = fake, fake
	s.dry = true
	s.verify(-1, s.dir, nil)
	s.dry = false
	delete(s.hooks, id)
	delete(s.pending, id)
	s.api = nil
	var api, hook bool
	for _, f := range s.dryFailures {
		api = api || strings.Contains(f, "LOST: handover_to_agent")
		hook = hook || strings.Contains(f, "LOST: webhook event")
	}
	if !api || !hook {
		s.fail("the soak's checks did not report fabricated acknowledgements as lost (handover %v, webhook %v): %q", api, hook, s.dryFailures)
		return
	}
	s.t.Log("self-check: a fabricated handover acknowledgement and a fabricated webhook event were both reported lost")
}

// replayed finds in threadctl check's report how many log records it
// replayed into bbolt.
var replayed = regexp.MustCompile(`log: (\d+) records replayed`)

// save keeps a copy of a failing directory (the first few times), with the
// end of the last threadctl processes' logs, under $THREADCTL_ARTIFACTS/soak
// and says where. Nothing may have the directory open meanwhile.
func (s *soak) save(cycle int, dir string) string {
	base := os.Getenv("THREADCTL_ARTIFACTS")
	if base == "" || s.saved >= 3 {
		return ""
	}
	s.saved++
	dst := filepath.Join(base, "soak", fmt.Sprintf("cycle-%d", cycle))
	os.RemoveAll(dst)
	if err := os.CopyFS(filepath.Join(dst, "data"), os.DirFS(dir)); err != nil {
		return "\n(could not keep it: " + err.Error() + ")"
	}
	s.mu.Lock()
	children := slices.Clone(s.children)
	s.mu.Unlock()
	for _, c := range children {
		c.mu.Lock()
		logs := strings.Join(c.logs, "\n") + "\n"
		c.mu.Unlock()
		os.WriteFile(filepath.Join(dst, fmt.Sprintf("threadctl-cycle-%d.log", c.cycle)), []byte(logs), 0o644)
	}
	return "\nkept in " + dst
}

// history is a thread's entries made at or after since, oldest first.
func history(ctx context.Context, db *store.DB, k engine.ThreadKey, since time.Time) ([]engine.HistoryEntry, error) {
	var out []engine.HistoryEntry
	before := uint64(0)
	for {
		hs, err := db.History(ctx, k, before, 200)
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			if h.At.Before(since) {
				slices.Reverse(out)
				return out, nil
			}
			out = append(out, h)
		}
		if len(hs) < 200 || hs[len(hs)-1].Revision <= 1 {
			slices.Reverse(out)
			return out, nil
		}
		before = hs[len(hs)-1].Revision
	}
}

func describe(hs []engine.HistoryEntry) string {
	var b strings.Builder
	for _, h := range hs {
		ev := string(h.Event)
		if h.Observed != "" {
			ev += ":" + string(h.Observed)
		}
		meta := ""
		if !h.MetaTime.IsZero() {
			meta = fmt.Sprintf(" (Meta's time %s, %d)", h.MetaTime.Format("15:04:05.000"), h.MetaTime.UnixMilli())
		}
		var calls []string
		for _, c := range h.Calls {
			calls = append(calls, c.Call+":"+c.Outcome)
		}
		fmt.Fprintf(&b, "    rev %d %s %s %s %s → %s %s %v%s\n", h.Revision, h.At.Format("15:04:05.000000"), ev, h.Cause, h.From, h.To, h.Outcome, calls, meta)
	}
	return b.String()
}

// verifyAPI checks the API calls answered 2xx since the last check; it
// returns how many are lost.
func (s *soak) verifyAPI(ctx context.Context, db *store.DB, cycle int) int {
	lost := 0
	byThread := map[engine.ThreadKey][]apiAck{}
	for _, a := range s.api {
		byThread[a.key] = append(byThread[a.key], a)
	}
	for k, acks := range byThread {
		since := acks[0].call
		for _, a := range acks {
			if a.call.Before(since) {
				since = a.call
			}
		}
		hs, err := history(ctx, db, k, since)
		if err != nil {
			s.fail("cycle %d: reading the history of %s: %v", cycle, k, err)
			continue
		}
		used := map[uint64]bool{}
		// Earliest answer first: each takes the earliest entry it can.
		slices.SortFunc(acks, func(a, b apiAck) int { return a.ret.Compare(b.ret) })
		for _, a := range acks {
			var problem string
			switch a.kind {
			case "handover_to_agent", "handover_to_bot":
				ev := states.HandoverToAgent
				if a.kind == "handover_to_bot" {
					ev = states.HandoverToBot
				}
				i := slices.IndexFunc(hs, func(h engine.HistoryEntry) bool {
					return !used[h.Revision] && h.Event == ev && h.Cause == engine.CauseBotsAPI &&
						(h.Outcome == engine.OutcomeApplied || h.Outcome == engine.OutcomeNoChange) &&
						!h.At.Before(a.call) && !h.At.After(a.ret)
				})
				if i < 0 {
					problem = "no history entry"
				} else {
					used[hs[i].Revision] = true
				}
			case "open", "close":
				iv, err := db.Intervention(ctx, a.id)
				switch {
				case err != nil:
					problem = "intervention " + a.id + ": " + err.Error()
				case a.kind == "close" && iv.Status != engine.InterventionClosed:
					problem = "intervention " + a.id + " is " + iv.Status
				}
			case "content":
				ct, err := db.Content(ctx, a.id)
				switch {
				case err != nil:
					problem = "content " + a.id + ": " + err.Error()
				case a.status == engine.SyncSynced && ct.Status != engine.SyncSynced:
					problem = "content " + a.id + " was answered synced, is " + ct.Status
				}
			}
			if problem != "" {
				lost++
				s.fail("cycle %d: LOST: %s on %s answered 2xx at %s (call at %s): %s; history since the call:\n%s",
					cycle, a.kind, k, a.ret.Format("15:04:05.000000"), a.call.Format("15:04:05.000000"), problem, describe(hs))
			}
		}
	}
	return lost
}

// verifyHooks checks the acknowledged webhook events not yet seen in the
// history: each must be there now, or still accepted in the inbox (final:
// only in the history). It returns how many are lost.
func (s *soak) verifyHooks(ctx context.Context, db *store.DB, cycle int, final bool) int {
	if len(s.pending) == 0 {
		return 0
	}
	inbox, err := db.Accepted(ctx)
	if err != nil {
		s.fail("cycle %d: reading the inbox: %v", cycle, err)
		return 0
	}
	accepted := map[string]bool{}
	for _, a := range inbox {
		in, ok, _ := engine.Translate(engine.Page{ID: a.Notice.PageID, RingCXAppID: ringcxID}, a.Notice)
		if ok {
			accepted[in.Key.String()+"|"+in.DedupKey] = true
		}
	}
	if final {
		for _, a := range inbox {
			s.fail("after the last, clean, stop a webhook event accepted at %s is still in the inbox, never applied: seq %d %s on %s/%s (Meta's time %s)",
				a.At.Format("15:04:05.000000"), a.Seq, a.Notice.Kind, a.Notice.PageID, a.Notice.PSID, a.Notice.Time.Format("15:04:05.000"))
		}
	}
	// Entries per (thread, event, Meta's timestamp); acknowledged events
	// per the same key (distinct by the engine's de-duplication key).
	since := map[engine.ThreadKey]int64{}
	want := map[string]int{}
	for _, a := range s.pending {
		if m, ok := since[a.key]; !ok || a.metaMS < m {
			since[a.key] = a.metaMS
		}
	}
	for _, a := range s.hooks {
		if m, ok := since[a.key]; ok && a.metaMS >= m {
			want[a.match()]++
		}
	}
	have := map[string]int{}
	entries := map[engine.ThreadKey][]engine.HistoryEntry{}
	for k, ms := range since {
		hs, err := history(ctx, db, k, time.UnixMilli(ms-1))
		if err != nil {
			s.fail("cycle %d: reading the history of %s: %v", cycle, k, err)
			return 0
		}
		entries[k] = hs
		for _, h := range hs {
			if h.Cause == engine.CauseWebhook && !h.MetaTime.IsZero() {
				have[hookAck{key: k, event: h.Event, observed: h.Observed, metaMS: h.MetaTime.UnixMilli()}.match()]++
			}
		}
	}
	lost := 0
	for id, a := range s.pending {
		m := a.match()
		switch {
		case have[m] >= want[m]:
			delete(s.pending, id)
		case accepted[id] && !final:
			// Accepted, not applied yet: applied after the restart.
		case accepted[id]:
			// The last threadctl stopped without applying it: reported
			// above, with the inbox.
			delete(s.pending, id)
		default:
			lost++
			s.fail("cycle %d: LOST: webhook event %s (%s %s, Meta's time %d) answered 200 in cycle %d is neither in the history (%d of %d such entries) nor in the inbox; history since:\n%s",
				cycle, a.key, a.event, a.observed, a.metaMS, a.cycle, have[m], want[m], describe(entries[a.key]))
			delete(s.pending, id)
		}
	}
	return lost
}

// converge lets the last threadctl and Meta settle, then compares every
// thread with Meta's owner: RingCX in agent, nobody when idle, another app
// in bot; no request pending. A bot that claims an idle thread sends RingCX
// no webhook (SPEC.md §2): threadctl learns it from the next event, so a
// thread threadctl sees idle while Meta gives it to another app gets a
// customer message.
func (s *soak) converge(c *child) (agree, threads int) {
	deadline := time.Now().Add(2 * time.Minute)
	var off []string
	poked := map[string]time.Time{}
	for {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.sim.Settle(sctx)
		cancel()
		off = off[:0]
		agree, threads = 0, 0
		for _, p := range soakPages {
			for _, psid := range p.psids {
				threads++
				v, err := s.debug(p.id, psid)
				meta := s.sim.Thread(p.id, psid).OwnerAppID
				ok := err == nil && v.PendingRequest == nil && agrees(v.State, meta)
				if ok {
					agree++
					continue
				}
				if v.State == states.Idle && meta != "" && meta != ringcxID && time.Since(poked[psid]) > time.Second {
					poked[psid] = time.Now()
					s.sim.CustomerMessage(p.id, psid, "still there?")
				}
				off = append(off, fmt.Sprintf("%s/%s: threadctl %s (owner %q, pending %v, err %v), Meta's owner %q", p.id, psid, v.State, v.OwnerAppID, v.PendingRequest != nil, err, meta))
			}
		}
		if agree == threads || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.off = nil
	for _, o := range off {
		k, why, _ := strings.Cut(o, ": ")
		page, psid, _ := strings.Cut(k, "/")
		s.off = append(s.off, offThread{key: engine.ThreadKey{PageID: page, PSID: psid}, why: why})
	}
	return agree, threads
}

// offThread is a thread that did not agree with Meta at the end.
type offThread struct {
	key engine.ThreadKey
	why string
}

// reportOff fails for each thread that did not agree with Meta, with the
// end of its history (threadctl is stopped) and of the simulator's log, and
// says when the history has the signature of a known bug.
func (s *soak) reportOff() {
	if len(s.off) == 0 {
		return
	}
	db, err := store.Open(s.dir, store.Options{OpenTimeout: 2 * time.Second})
	if err != nil {
		s.fail("opening the store: %v", err)
		return
	}
	defer db.Close()
	for _, o := range s.off {
		hs, err := db.History(context.Background(), o.key, 0, 40)
		if err != nil {
			s.fail("reading the history of %s: %v", o.key, err)
			continue
		}
		slices.Reverse(hs)
		known := ""
		if sig, ok := staleWebhook(hs); ok {
			known = "\na webhook stamped before RingCX's own later call was applied after it (engine's TestStaleWebhookAfterOwnCall): " + sig
		}
		var b strings.Builder
		log := s.sim.Log(o.key.PageID, o.key.PSID)
		for _, e := range log[max(0, len(log)-40):] {
			fmt.Fprintf(&b, "    %s %s %s%s%s %s%s %s owner %q %s\n", e.Time.Format("15:04:05.000000"), e.Kind, e.CallerAppID, e.RecipientAppID, e.Via, e.Call, e.Event, e.Outcome, e.OwnerAppID, e.ErrorMessage)
		}
		s.fail("does not agree with Meta: %s: %s%s\nthe end of its history:\n%sat Meta (the simulator's log):\n%s", o.key, o.why, known, describe(hs), b.String())
	}
}

func agrees(st states.State, metaOwner string) bool {
	switch metaOwner {
	case ringcxID:
		return st == states.Agent
	case "":
		return st == states.Idle
	}
	return st == states.Bot
}

func (s *soak) debug(page, psid string) (server.ThreadView, error) {
	var v server.ThreadView
	target, _ := s.current()
	req, _ := http.NewRequest(http.MethodGet, target+"/debug/threads/"+psid+"?limit=20&page_id="+page, nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := s.client.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return v, fmt.Errorf("%s: %s", resp.Status, body)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

// staleWebhook finds in a thread's history (oldest first) a webhook event
// applied after a change RingCX made itself with a Graph call that began
// after Meta stamped the event: the event was stale (see the engine's
// TestStaleWebhookAfterOwnCall).
func staleWebhook(hs []engine.HistoryEntry) (string, bool) {
	for j, w := range hs {
		if w.Cause != engine.CauseWebhook || w.Outcome != engine.OutcomeApplied || w.MetaTime.IsZero() {
			continue
		}
		for _, a := range hs[:j] {
			if a.Outcome != engine.OutcomeApplied || a.From == a.To {
				continue
			}
			for _, c := range a.Calls {
				if c.Outcome == engine.CallOK && c.Call != "thread_owner" && a.At.Add(-c.Duration-5*time.Millisecond).After(w.MetaTime) {
					return fmt.Sprintf("rev %d %s (Meta's time %s) applied after rev %d %s by RingCX's own %s at %s",
						w.Revision, w.Event, w.MetaTime.Format("15:04:05.000"), a.Revision, a.Event, c.Call, a.At.Format("15:04:05.000")), true
				}
			}
		}
	}
	return "", false
}
