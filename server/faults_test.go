package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/engine/enginetest"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
)

// Meta's failures as the Bots API's callers see them. Time is scaled down:
// the RingCX app's Graph client gives up on an attempt after
// faultTimeout (production: 5 s) and retries faultRetries times with
// faultBackoff (the environment's) between attempts.
const (
	faultTimeout = 200 * time.Millisecond
	faultRetries = 2
	faultBackoff = 10 * time.Millisecond // enginetest's Graph clients
)

// faultFixture is the server fixture with a short Graph client timeout,
// and an Observer that records the most Graph calls in flight per page.
type faultFixture struct {
	*fixture
	inFlight *inFlightObserver
}

type faultFixtureOpts struct {
	graphTimeout     time.Duration
	maxGraphInFlight int
}

func newFaultFixture(t *testing.T, o faultFixtureOpts) *faultFixture {
	t.Helper()
	f := &faultFixture{fixture: &fixture{}}
	f.metrics = server.NewMetrics(func() (int, time.Time) { return f.eng.PendingRequests() }, time.Now)
	f.inFlight = &inFlightObserver{Observer: f.metrics, now: map[string]int{}, max: map[string]int{}}
	f.env = enginetest.New(t, enginetest.Options{
		Sim:              sim.Options{RetryDelays: []time.Duration{10 * time.Millisecond, 50 * time.Millisecond}},
		Observer:         f.inFlight,
		Server:           func(c *server.Config) { c.Metrics = f.metrics },
		GraphTimeout:     o.graphTimeout,
		GraphRetries:     faultRetries,
		RetryDelay:       250 * time.Millisecond,
		MaxGraphInFlight: o.maxGraphInFlight,
	})
	f.sim, f.db, f.eng, f.srv = f.env.Sim, f.env.Store(), f.env.Engine(), f.env.Server()
	f.url, f.client = f.env.URL, f.env.HTTP
	return f
}

// inFlightObserver passes the engine's observations on to the metrics and
// records the most Graph calls in flight at once, per page.
type inFlightObserver struct {
	engine.Observer
	mu       sync.Mutex
	now, max map[string]int
}

func (o *inFlightObserver) GraphInFlight(pageID string, delta int) {
	o.mu.Lock()
	o.now[pageID] += delta
	o.max[pageID] = max(o.max[pageID], o.now[pageID])
	o.mu.Unlock()
	o.Observer.GraphInFlight(pageID, delta)
}

func (o *inFlightObserver) most(pageID string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.max[pageID]
}

// TestBotsAPIDuringMetaOutage: while Meta fails every call, Bots API
// handovers (to=agent: request_thread_control; to=bot: pass_thread_control)
// are answered 502 within a bound — one Graph call with its retries, each
// attempt given up after the client timeout, plus a second of slack (a
// bound with a generous margin, not a performance target) — with Meta's
// error code in the message when Meta answered. Once the fault ends the
// threads agree with Meta, and handovers succeed again.
func TestBotsAPIDuringMetaOutage(t *testing.T) {
	perCall := time.Duration(faultRetries+1)*faultTimeout + faultBackoff<<faultRetries
	bound := perCall + time.Second
	cases := []struct {
		name  string
		fault sim.Fault
		// parts the message must contain beyond the call's name: Meta's
		// status and code when Meta answered, and that the outcome is
		// unknown when it did not.
		parts []string
	}{
		{"5xx storm", sim.Fault{Call: "*", Status: 503}, []string{"Meta answered HTTP 503, code 2"}},
		{"613 rate limit", sim.Fault{Call: "*", Status: 400, Code: messenger.CodeRateLimit}, []string{"Meta answered HTTP 400, code 613"}},
		{"connection resets", sim.Fault{Call: "*", Reset: true}, []string{"Meta did not answer", "whether it took effect is unknown"}},
		{"delayed beyond the client timeout", sim.Fault{Call: "*", DelayMS: int(2 * faultTimeout / time.Millisecond)}, []string{"Meta did not answer", "whether it took effect is unknown", "deadline exceeded"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFaultFixture(t, faultFixtureOpts{graphTimeout: faultTimeout})
			toAgent, toBot := []string{newPSID(), newPSID(), newPSID()}, []string{newPSID(), newPSID(), newPSID()}
			for _, p := range toAgent {
				f.customer(t, p)
			}
			for _, p := range toBot {
				f.toAgent(t, p)
			}

			f.sim.SetFault(c.fault)
			type answer struct {
				psid, call string
				r          reply
				took       time.Duration
			}
			answers := make(chan answer, len(toAgent)+len(toBot))
			var wg sync.WaitGroup
			ask := func(psid, from, to, app, call string) {
				wg.Go(func() {
					start := time.Now()
					r := f.api(t, http.MethodPost, "/1.0/bots/handover", handoverQuery(psid, from, to, app))
					answers <- answer{psid, call, r, time.Since(start)}
				})
			}
			for _, p := range toAgent {
				ask(p, "bot", "agent", "", "request_thread_control")
			}
			for _, p := range toBot {
				ask(p, "agent", "bot", botID, "pass_thread_control")
			}
			wg.Wait()
			close(answers)
			f.sim.ClearFaults()

			slowest, sample := time.Duration(0), ""
			for a := range answers {
				slowest = max(slowest, a.took)
				sample = checkEnvelope(t, a.r, http.StatusBadGateway, append([]string{a.call}, c.parts...)...)
				if a.took > bound {
					t.Errorf("%s: answered after %v, want within %v (%d attempts of %v, and slack)", a.psid, a.took, bound, faultRetries+1, faultTimeout)
				}
			}
			t.Logf("%d answers, the slowest after %v (bound %v); one said: %s", len(toAgent)+len(toBot), slowest.Round(time.Millisecond), bound, sample)

			// After the fault: the threads agree with Meta (nothing
			// changed), and handovers work again.
			for _, p := range toAgent {
				f.waitState(t, p, states.Bot, botID)
			}
			for _, p := range toBot {
				f.waitState(t, p, states.Agent, ringcxID)
				checkSuccess(t, f.api(t, http.MethodPost, "/1.0/bots/handover", handoverQuery(p, "agent", "bot", botID)))
				f.waitState(t, p, states.Bot, botID)
			}
			if problems, err := f.env.Store().Check(); err != nil || len(problems) > 0 {
				t.Errorf("store check: %v %v", problems, err)
			}
		})
	}
}

// TestGraphCallsInFlightBoundedPerPage: with every Graph call of RingCX
// delayed (not beyond the client timeout) and many concurrent handovers on
// one page — more than MaxGraphInFlight — no more than MaxGraphInFlight
// calls are in flight at once; the others wait for a slot, and a caller
// whose deadline ends while it waits gets a clear error; every handover
// completes once the delay ends, and threadctl_graph_calls_in_flight for
// the page returns to 0.
func TestGraphCallsInFlightBoundedPerPage(t *testing.T) {
	const (
		bound    = 4
		threads  = 16
		delay    = 300 * time.Millisecond
		deadline = 100 * time.Millisecond // the impatient callers'
	)
	f := newFaultFixture(t, faultFixtureOpts{graphTimeout: 2 * time.Second, maxGraphInFlight: bound})
	var psids []string
	for range threads + 2 {
		p := newPSID()
		psids = append(psids, p)
		if _, err := f.sim.CustomerMessage(pageID, p, "hello"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range psids {
		f.waitState(t, p, states.Bot, botID)
	}
	patient, impatient := psids[:threads], psids[threads:]

	// Only RingCX's calls are delayed: the bot passes control at once.
	f.sim.SetFault(sim.Fault{Call: "*", AppID: ringcxID, DelayMS: int(delay / time.Millisecond)})
	start := time.Now()
	var wg sync.WaitGroup
	answers := make([]reply, threads)
	for i, p := range patient {
		wg.Go(func() {
			answers[i] = f.api(t, http.MethodPost, "/1.0/bots/handover", handoverQuery(p, "bot", "agent", ""))
		})
	}
	// Once the slots are taken, callers with a short deadline give up
	// waiting for one.
	waitForInFlight(t, f, bound)
	for _, p := range impatient {
		c, cancel := context.WithTimeout(context.Background(), deadline)
		_, err := f.eng.Apply(c, engine.Input{Event: states.HandoverToAgent, Key: engine.ThreadKey{PageID: pageID, PSID: p}, Cause: engine.CauseBotsAPI})
		cancel()
		want := fmt.Sprintf("waiting for one of the %d Graph API calls in flight on page %s", bound, pageID)
		if engine.ErrorCode(err) != engine.CodeMeta || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("impatient handover on %s: %v; want Meta's error saying %q", p, err, want)
		}
	}
	wg.Wait()
	took := time.Since(start)
	f.sim.ClearFaults()

	for i, r := range answers {
		if !checkSuccess(t, r) {
			t.Errorf("handover on %s: %v", patient[i], r)
		}
	}
	if got := f.inFlight.most(pageID); got != bound {
		t.Errorf("most Graph calls in flight on the page = %d, want %d (the bound, reached)", got, bound)
	}
	// Calls waited for slots: the handovers took at least as many rounds
	// of the delay as the bound makes.
	if rounds := time.Duration((threads + bound - 1) / bound); took < rounds*delay {
		t.Errorf("%d handovers took %v; with %d calls at a time of %v each, want at least %v", threads, took, bound, delay, rounds*delay)
	}
	t.Logf("%d handovers in %v, at most %d Graph calls in flight", threads, took.Round(time.Millisecond), f.inFlight.most(pageID))
	for _, p := range patient {
		f.waitState(t, p, states.Agent, ringcxID)
	}
	for _, p := range impatient {
		f.waitState(t, p, states.Bot, botID)
	}
	eventually(t, func() (bool, string) {
		v, ok := scrapeGauge(t, f.fixture, "threadctl_graph_calls_in_flight", "page_id", pageID)
		return ok && v == 0, fmt.Sprintf("threadctl_graph_calls_in_flight{page_id=%q} = %v (exposed: %v), want 0", pageID, v, ok)
	})
	if problems, err := f.env.Store().Check(); err != nil || len(problems) > 0 {
		t.Errorf("store check: %v %v", problems, err)
	}
}

// waitForInFlight waits until n Graph calls are in flight on the page.
func waitForInFlight(t *testing.T, f *faultFixture, n int) {
	t.Helper()
	eventually(t, func() (bool, string) {
		f.inFlight.mu.Lock()
		defer f.inFlight.mu.Unlock()
		return f.inFlight.now[pageID] >= n, fmt.Sprintf("%d Graph calls in flight, want %d", f.inFlight.now[pageID], n)
	})
}

// scrapeGauge reads one series from GET /metrics, as Prometheus would.
func scrapeGauge(t *testing.T, f *fixture, name, label, value string) (float64, bool) {
	t.Helper()
	r := f.do(t, http.MethodGet, "/metrics", nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /metrics: %v", r)
	}
	series := fmt.Sprintf("%s{%s=%q} ", name, label, value)
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return n, true
		}
	}
	return 0, false
}
