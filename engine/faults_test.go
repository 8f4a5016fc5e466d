package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/engine/enginetest"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
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

// TestMetaFailures runs each of Meta's failures against concurrent traffic
// on faultThreads threads, and checks after the fault ends that
//
//  1. no acknowledged transition is lost: every Bots API or agent call that
//     succeeded is in its thread's history with the revision it answered,
//     every intervention closed stays closed, and every event of every
//     webhook threadctl answered 200 is in its thread's history — and was
//     applied in the end, not left failed by Meta's transient errors;
//  2. within faultConverge every thread's state agrees with the
//     simulator's owner (idle ↔ none, agent ↔ RingCX, bot and
//     pending-request ↔ another app), no accepted webhook event waits, and
//     every agent reply is synced or failed with a reason;
//  3. every history is a run of the machine, and the store's Check is
//     clean.
//
// Faults with call "*" hit every app's calls, the bots' included, except
// the second bot's request_thread_control: its requests reach Meta (a
// harmless 1 ms delay fault, matched first, shields them), so that webhooks
// whose handling needs a Graph call (pass to the requester) keep arriving
// during the outage.
func TestMetaFailures(t *testing.T) {
	const outage = time.Second
	cases := []struct {
		name    string
		primary states.Primary
		// faults are set when the outage starts, each with for_ms outage.
		faults []sim.Fault
		// late: calls Meta applied whose answers were lost (apply_late):
		// threadctl's view parts from Meta's and must come back through
		// owner rechecks.
		late bool
		// retries is the Graph client's retries (-1: none). With late
		// answers the client does not retry: a retried call's first
		// attempt landing after the calls that follow it is a known
		// failure (TestLateAttemptOfARetriedCall).
		retries int
	}{
		{name: "5xx storm", primary: states.PrimaryBot, retries: 2,
			faults: []sim.Fault{{Call: "*", Status: 503}}},
		{name: "613 rate limit", primary: states.PrimaryRingCX, retries: 2,
			faults: []sim.Fault{{Call: "*", Status: 400, Code: messenger.CodeRateLimit}}},
		{name: "delayed beyond the client timeout, not applied", primary: states.PrimaryBot, retries: 2,
			faults: []sim.Fault{{Call: "*", DelayMS: int(faultDelay / time.Millisecond)}}},
		{name: "delayed beyond the client timeout, applied late", primary: states.PrimaryBot, late: true,
			retries: -1, faults: []sim.Fault{{Call: "*", DelayMS: int(faultDelay / time.Millisecond), ApplyLate: true}}},
		{name: "connection resets", primary: states.PrimaryNone, retries: 2,
			faults: []sim.Fault{{Call: "*", Reset: true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFaultEnv(t, c.primary, c.retries)
			f.run(c.faults, outage)
			f.check(c.late)
		})
	}
}

// TestMetaUnreachableWhileCustomersWrite: Meta's Graph API is unreachable
// (every call reset) for 1.5 s — production's "60 s unreachable", scaled
// down — while customers keep writing (their webhooks still arrive) and
// agents keep replying. Once Meta is back only customers write: threadctl
// alone must see that every reply is synced or failed with a reason, none
// pending, and that the threads agree with Meta.
func TestMetaUnreachableWhileCustomersWrite(t *testing.T) {
	f := newFaultEnv(t, states.PrimaryBot, 2)
	f.replyHeavy, f.customersOnly = true, true
	f.run([]sim.Fault{{Call: "*", Reset: true}}, 1500*time.Millisecond)
	f.check(false)
	synced, failed := f.contentOutcomes()
	t.Logf("agent replies: %d queued when created; in the end %d synced, %d failed", f.queued, synced, failed)
	if failed == 0 {
		t.Errorf("no agent reply failed while Meta was unreachable: the outage did not bite")
	}
}

const faultThreads = 12

// faultEnv is a running environment under one fault, the traffic on it,
// and what that traffic was acknowledged.
type faultEnv struct {
	t     *testing.T
	env   *enginetest.Env
	psids []string
	// replyHeavy makes agents reply more often than anything else;
	// customersOnly leaves only customers writing once the fault ends.
	replyHeavy, customersOnly bool

	mu       sync.Mutex
	acks     []apiAck
	closed   []string // interventions whose close was acknowledged
	contents []string // agent replies created
	queued   int      // of which queued (pending) when created
	hooks    [][]byte // webhook bodies threadctl answered 200
	errs     map[engine.Code]int
	unexpect []error // answers no fault explains

	webhookErrs atomic.Int64 // webhook events the engine could not apply
	faultStart  time.Time
	faultEnd    time.Time
}

// apiAck is a transition acknowledged to an API caller: the thread's
// revision it answered with, and the event.
type apiAck struct {
	psid  string
	rev   uint64
	event states.Event
}

func newFaultEnv(t *testing.T, primary states.Primary, retries int) *faultEnv {
	t.Helper()
	f := &faultEnv{t: t, errs: map[engine.Code]int{}}
	f.env = enginetest.New(t, enginetest.Options{
		Primary:        primary,
		PendingTimeout: time.Second,
		Sim:            sim.Options{RetryDelays: []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}},
		// The reference bot does not claim idle threads: Meta tells RingCX
		// nothing when a bot takes an idle thread, so threadctl's view of
		// it is corrected only by the thread's next event — by design
		// (SPEC.md §2), not a failure of Meta's.
		Bot:          &sim.BotConfig{HonorRequests: true, Reply: "echo", ClaimIdle: new(bool)},
		Observer:     faultObserver{f},
		GraphTimeout: faultTimeout,
		GraphRetries: retries,
		RetryDelay:   faultRetryDelay,
		Webhook: func(body []byte, status int) {
			if status == 200 {
				f.mu.Lock()
				f.hooks = append(f.hooks, body)
				f.mu.Unlock()
			}
		},
	})
	base := 7300000000000000 + rand.Int64N(1e12)*1000
	for i := range faultThreads {
		f.psids = append(f.psids, strconv.FormatInt(base+int64(i), 10))
	}
	return f
}

// faultObserver counts the webhook events the engine could not apply.
type faultObserver struct{ f *faultEnv }

func (o faultObserver) Transition(engine.TransitionInfo) {}
func (o faultObserver) ControlGranted(time.Duration)     {}
func (o faultObserver) PageLearned(string, string)       {}
func (o faultObserver) GraphInFlight(string, int)        {}
func (o faultObserver) Pruned(int, int, int)             {}
func (o faultObserver) WebhookEvent(_, outcome string) {
	if outcome == engine.OutcomeError {
		o.f.webhookErrs.Add(1)
	}
}

func (f *faultEnv) eng() *engine.Engine { return f.env.Engine() }

// run starts the threads (each customer writes once), runs traffic on them,
// injects faults for outage (for_ms) after a short while, and stops the
// traffic shortly after the faults end.
func (f *faultEnv) run(faults []sim.Fault, outage time.Duration) {
	f.t.Helper()
	for _, p := range f.psids {
		if _, err := f.env.Sim.CustomerMessage(pageID, p, "hi"); err != nil {
			f.t.Fatal(err)
		}
	}
	f.settle()
	// The second bot's requests reach Meta throughout (see TestMetaFailures).
	f.env.Sim.SetFault(sim.Fault{Call: "request_thread_control", AppID: bot2ID, DelayMS: 1})

	f.faultStart = time.Now().Add(200 * time.Millisecond)
	f.faultEnd = f.faultStart.Add(outage)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range f.psids {
		wg.Go(func() { f.traffic(p, stop) })
	}
	time.Sleep(time.Until(f.faultStart))
	for _, ft := range faults {
		ft.ForMS = int(outage / time.Millisecond)
		f.env.Sim.SetFault(ft)
	}
	time.Sleep(time.Until(f.faultEnd) + 200*time.Millisecond)
	close(stop)
	wg.Wait()
	f.env.Sim.ClearFaults()
}

// traffic acts on one thread until stop: the customer writes, the Bots API
// hands over both ways, agents open and close interventions and reply
// (until just before the fault ends: what becomes of replies made during
// it is left to threadctl), and the second bot asks for control.
func (f *faultEnv) traffic(psid string, stop <-chan struct{}) {
	k := key(psid)
	var open string // the intervention this thread's agent opened
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(20+rand.IntN(40)) * time.Millisecond):
		}
		op := rand.IntN(8)
		if f.replyHeavy && rand.IntN(2) == 0 {
			op = 6
		}
		if f.customersOnly && time.Now().After(f.faultEnd) {
			op = 0
		}
		switch op {
		case 0, 1:
			if _, err := f.env.Sim.CustomerMessage(pageID, psid, fmt.Sprintf("m%d", i)); err != nil {
				f.unexpected(fmt.Errorf("customer message: %w", err))
			}
		case 2:
			res, err := f.eng().Apply(ctx, engine.Input{Event: states.HandoverToAgent, Key: k, Cause: engine.CauseBotsAPI})
			f.answered(psid, states.HandoverToAgent, res, err)
		case 3:
			res, err := f.eng().Apply(ctx, engine.Input{Event: states.HandoverToBot, Key: k, Cause: engine.CauseBotsAPI, AppID: botID})
			f.answered(psid, states.HandoverToBot, res, err)
		case 4:
			if open != "" {
				continue
			}
			iv, res, err := f.eng().OpenIntervention(ctx, k)
			f.answered(psid, states.AgentEngage, res, err)
			if err == nil {
				open = iv.ID
			}
		case 5:
			if open == "" {
				continue
			}
			_, _, err := f.eng().CloseIntervention(ctx, open)
			f.answered(psid, "", engine.Result{}, err)
			if err == nil {
				f.mu.Lock()
				f.closed = append(f.closed, open)
				f.mu.Unlock()
				open = ""
			}
		case 6:
			// Not in the fault's last moments either: a reply sent then
			// would be sent (or fail) only once the fault is over.
			if time.Now().After(f.faultEnd.Add(-250 * time.Millisecond)) {
				continue
			}
			ct, err := f.eng().CreateContent(ctx, k, fmt.Sprintf("agent reply %d", i))
			f.answered(psid, "", engine.Result{}, err)
			if err == nil {
				f.mu.Lock()
				f.contents = append(f.contents, ct.ID)
				if ct.Status == engine.SyncPending {
					f.queued++
				}
				f.mu.Unlock()
			}
		case 7:
			// Only while RingCX owns the thread: on an idle thread Meta
			// would give it to the second bot without telling RingCX.
			if f.env.Sim.Thread(pageID, psid).OwnerAppID == ringcxID {
				_ = f.env.Bot2.RequestThreadControl(ctx, pageID, psid, "bot 2 wants it")
			}
		}
	}
}

// answered records an API answer: a transition acknowledged, or an error,
// which must be Meta's failure or the machine's refusal.
func (f *faultEnv) answered(psid string, ev states.Event, res engine.Result, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	code := engine.ErrorCode(err)
	switch code {
	case "":
		if ev != "" {
			f.acks = append(f.acks, apiAck{psid: psid, rev: res.Thread.Revision, event: ev})
		}
		return
	case engine.CodeMeta, engine.CodeConflict:
	default:
		f.unexpect = append(f.unexpect, fmt.Errorf("%s %s: %w", ev, psid, err))
	}
	f.errs[code]++
}

func (f *faultEnv) unexpected(err error) {
	f.mu.Lock()
	f.unexpect = append(f.unexpect, err)
	f.mu.Unlock()
}

func (f *faultEnv) settle() {
	f.t.Helper()
	c, cancel := context.WithTimeout(ctx, faultConverge)
	defer cancel()
	if err := f.env.Settle(c); err != nil {
		f.t.Fatal(err)
	}
}

// converged reports what, if anything, still disagrees with Meta or waits.
func (f *faultEnv) converged() []string {
	var out []string
	if n := f.eng().Backlog(); n > 0 {
		out = append(out, fmt.Sprintf("%d accepted webhook events wait", n))
	}
	for _, p := range f.psids {
		th, err := f.eng().Thread(ctx, key(p))
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		if owner := f.env.Sim.Thread(pageID, p).OwnerAppID; !agrees(th.State, owner) {
			out = append(out, fmt.Sprintf("%s: threadctl %s (owner %q, recheck at %v), Meta's owner %q", p, th.State, th.Owner, th.RecheckAt, owner))
		}
	}
	f.mu.Lock()
	ids := append([]string(nil), f.contents...)
	f.mu.Unlock()
	for _, id := range ids {
		ct, err := f.eng().Content(ctx, id)
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("content %s: %v", id, err))
		case ct.Status == engine.SyncPending:
			out = append(out, fmt.Sprintf("content %s on %s still pending", id, ct.PSID))
		case ct.Status == engine.SyncFailed && ct.Reason == "":
			out = append(out, fmt.Sprintf("content %s failed without a reason", id))
		}
	}
	return out
}

// check waits until threadctl has converged after the fault, then checks
// that nothing acknowledged was lost and that the store is sound. late
// says Meta applied calls whose answers were lost.
func (f *faultEnv) check(late bool) {
	t := f.t
	t.Helper()
	deadline := f.faultEnd.Add(faultConverge)
	var left []string
	for {
		c, cancel := context.WithDeadline(ctx, deadline)
		err := f.env.Settle(c)
		cancel()
		if err != nil {
			t.Fatalf("%v after the fault ended", err)
		}
		if left = f.converged(); len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("%d things still disagree with Meta or wait %v after the fault ended:", len(left), faultConverge)
		for _, l := range left {
			t.Error("  " + l)
		}
		f.dump()
	} else {
		t.Logf("converged %v after the fault ended", time.Since(f.faultEnd).Round(time.Millisecond))
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, err := range f.unexpect {
		t.Errorf("unexpected answer: %v", err)
	}
	if n := f.webhookErrs.Load(); n > 0 {
		t.Errorf("%d webhook events could not be applied (see the log)", n)
	}

	hit := 0
	for _, e := range f.env.Sim.Log(pageID, "") {
		if e.Kind == sim.KindGraphCall && e.Fault && e.CallerAppID == ringcxID {
			hit++
		}
	}

	// 1. Nothing acknowledged is lost.
	histories, finals := map[string][]engine.HistoryEntry{}, map[string]engine.Thread{}
	for _, p := range f.psids {
		finals[p], histories[p] = f.snapshot(p)
	}
	for _, a := range f.acks {
		hs := histories[a.psid]
		if a.rev == 0 || a.rev > uint64(len(hs)) {
			t.Errorf("%s: %s acknowledged at revision %d, history has %d entries", a.psid, a.event, a.rev, len(hs))
			continue
		}
		e := hs[a.rev-1]
		if e.Event != a.event || (e.Outcome != engine.OutcomeApplied && e.Outcome != engine.OutcomeNoChange) {
			t.Errorf("%s rev %d: acknowledged %s, history has %s %s", a.psid, a.rev, a.event, e.Event, e.Outcome)
		}
	}
	for _, id := range f.closed {
		if iv, err := f.eng().Intervention(ctx, id); err != nil || iv.Status != engine.InterventionClosed {
			t.Errorf("intervention %s: close acknowledged, now %q (%v)", id, iv.Status, err)
		}
	}
	events := 0
	for _, body := range f.hooks {
		wh, err := messenger.ParseWebhook(body)
		if err != nil {
			t.Errorf("webhook answered 200 does not parse: %v", err)
			continue
		}
		for _, n := range server.Notices(wh) {
			page, _ := f.eng().Page(n.PageID)
			in, ok, _ := engine.Translate(page, n)
			if !ok {
				continue
			}
			events++
			if problem := webhookApplied(histories[in.Key.PSID], in); problem != "" {
				t.Errorf("%s: webhook %s at %s: %s", in.Key.PSID, n.Kind, n.Time.Format(time.RFC3339Nano), problem)
			}
		}
	}

	// 3. Every history is a run of the machine; the store is sound.
	total, failedCalls := 0, 0
	for _, p := range f.psids {
		hs := histories[p]
		total += len(hs)
		for _, e := range hs {
			if e.Outcome == engine.OutcomeFailed {
				failedCalls++
			}
		}
		for _, problem := range validRun(p, hs, finals[p]) {
			t.Error(problem)
		}
	}
	if problems, err := f.env.Store().Check(); err != nil || len(problems) > 0 {
		t.Errorf("store check: %v %v", problems, err)
	}
	// The fault bit: RingCX's calls met it, and threadctl saw them fail.
	if hit == 0 || (f.errs[engine.CodeMeta] == 0 && failedCalls == 0) {
		t.Errorf("the fault did not bite: %d of RingCX's calls met it, %d callers got Meta's error, %d calls recorded failed", hit, f.errs[engine.CodeMeta], failedCalls)
	}
	t.Logf("%d transitions acknowledged, %d interventions closed, %d contents, %d webhook events applied, %d history entries (%d failed calls); errors by code %v; %d of RingCX's calls met the fault",
		len(f.acks), len(f.closed), len(f.contents), events, total, failedCalls, f.errs, hit)
	if late {
		rechecked := 0
		for _, hs := range histories {
			for _, e := range hs {
				if e.Cause == engine.CauseRecheck {
					rechecked++
				}
			}
		}
		t.Logf("%d owner rechecks recorded", rechecked)
		if rechecked == 0 {
			t.Errorf("no owner recheck recorded though Meta applied calls whose answers were lost")
		}
	}
}

// webhookApplied says what is wrong, if anything, with how a webhook event
// threadctl acknowledged shows in its thread's history: it must be there
// (at Meta's timestamp), and must not have ended failed for one of the
// faults' transient errors: an accepted event whose call failed
// transiently is to be tried again until Meta answers. (Meta's answers,
// such as "not the thread owner", may end it failed.)
func webhookApplied(hs []engine.HistoryEntry, in engine.Input) string {
	var last *engine.HistoryEntry
	for i := range hs {
		if hs[i].Event == in.Event && hs[i].MetaTime.Equal(in.MetaTime) {
			last = &hs[i]
		}
	}
	if last == nil {
		return fmt.Sprintf("acknowledged, but no %s at that time in the history", in.Event)
	}
	if last.Outcome != engine.OutcomeFailed {
		return ""
	}
	for _, c := range last.Calls {
		if c.Outcome == engine.CallUnknown || faultError(c.Error) {
			return fmt.Sprintf("rev %d: its %s failed (%s: %s) and it was never tried again", last.Revision, c.Call, c.Outcome, c.Error)
		}
	}
	return ""
}

// faultError reports whether a call's error is one the faults cause —
// Meta's server errors and rate limits, no answer — judged from its text,
// not from threadctl's own classification, which the tests check.
func faultError(msg string) bool {
	for _, s := range []string{"HTTP 5", "code 2:", "code 613", "connection reset", "EOF", "deadline exceeded", "connection refused"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func (f *faultEnv) history(psid string) []engine.HistoryEntry {
	f.t.Helper()
	return oldestFirst(f.t, f.env.EngineStore(), psid)
}

// snapshot reads a thread and its history as of one revision (a timer or
// a late webhook may still commit while they are read).
func (f *faultEnv) snapshot(psid string) (engine.Thread, []engine.HistoryEntry) {
	f.t.Helper()
	for range 100 {
		th := f.thread(psid)
		hs := f.history(psid)
		if uint64(len(hs)) == th.Revision && f.thread(psid).Revision == th.Revision {
			return th, hs
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("thread %s keeps changing", psid)
	return engine.Thread{}, nil
}

func (f *faultEnv) thread(psid string) engine.Thread {
	f.t.Helper()
	th, err := f.eng().Thread(ctx, key(psid))
	if err != nil {
		f.t.Fatal(err)
	}
	return th
}

// contentOutcomes counts the agent replies synced and failed.
func (f *faultEnv) contentOutcomes() (synced, failed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range f.contents {
		ct, err := f.eng().Content(ctx, id)
		if err != nil {
			f.t.Error(err)
			continue
		}
		switch ct.Status {
		case engine.SyncSynced:
			synced++
		case engine.SyncFailed:
			failed++
		}
	}
	return synced, failed
}

// dump logs, for each thread that disagrees with Meta or has replies
// pending, its history and Meta's log of it, to explain a failure.
func (f *faultEnv) dump() {
	for _, p := range f.psids {
		owner := f.env.Sim.Thread(pageID, p).OwnerAppID
		q, err := f.eng().Queue(ctx, key(p))
		if agrees(f.thread(p).State, owner) && err == nil && len(q) == 0 {
			continue
		}
		for _, ct := range q {
			f.t.Logf("thread %s: reply %s queued at %s", p, ct.ID, ct.CreatedAt.Format("15:04:05.000"))
		}
		f.t.Logf("thread %s (fault from %s to %s):", p, f.faultStart.Format("15:04:05.000"), f.faultEnd.Format("15:04:05.000"))
		for _, e := range f.history(p) {
			calls := ""
			for _, c := range e.Calls {
				calls += fmt.Sprintf(" [%s→%s %s %s]", c.Call, c.Target, c.Outcome, c.Error)
			}
			f.t.Logf("  rev %d %s %s %s(%s) %s→%s owner %s %s %s%s", e.Revision, e.At.Format("15:04:05.000"), e.Cause, e.Event, e.Observed, e.From, e.To, e.Owner, e.Outcome, e.Reason, calls)
		}
		for _, e := range f.env.Sim.Log(pageID, p) {
			f.t.Logf("  meta %s %s %s by %s to %s %s %s fault=%v owner=%s %s %s", e.Time.Format("15:04:05.000"), e.Kind, e.Call+e.Event, e.CallerAppID, e.TargetAppID+e.RecipientAppID, e.Field, e.Outcome, e.Fault, e.OwnerAppID, e.Detail, e.ErrorMessage)
		}
	}
}

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
	// ...and its first try to have failed: every failure of the fault
	// spent, so that none is left for the handover below.
	waitFor(t, "the request's first try to fail", func() bool { return len(env.Sim.Faults()) == 0 })
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

// TestReplyNotLeftPendingWhenControlCannotBeAskedFor: an agent's reply is
// refused by Meta because another app took the thread (its webhook was
// lost), and while threadctl asks for control back, Meta fails the request.
// The reply must end failed with the reason, not stay pending for good.
func TestReplyNotLeftPendingWhenControlCannotBeAskedFor(t *testing.T) {
	env := enginetest.New(t, enginetest.Options{
		Primary: states.PrimaryBot, GraphTimeout: faultTimeout, GraphRetries: 2, RetryDelay: faultRetryDelay,
		Bot: &sim.BotConfig{HonorRequests: true, ClaimIdle: new(bool)},
	})
	eng := env.Engine()
	if _, err := env.Sim.CustomerMessage(pageID, psid, "hi"); err != nil {
		t.Fatal(err)
	}
	settle(t, env)
	if _, err := eng.Apply(ctx, engine.Input{Event: states.HandoverToAgent, Key: key(psid), Cause: engine.CauseBotsAPI}); err != nil {
		t.Fatal(err)
	}
	settle(t, env)
	waitAgrees(t, env, psid, faultConverge)

	// The bot (the primary) takes the thread back; RingCX misses the
	// webhook.
	env.DropHandovers(true)
	if err := env.Bot.TakeThreadControl(ctx, pageID, psid, ""); err != nil {
		t.Fatal(err)
	}
	settle(t, env)
	env.DropHandovers(false)
	env.Sim.SetFault(sim.Fault{Call: "request_thread_control", AppID: ringcxID, Status: 503})
	ct, err := eng.CreateContent(ctx, key(psid), "Ann here")
	if err != nil {
		t.Fatal(err)
	}
	settle(t, env)
	env.Sim.ClearFaults()
	deadline := time.Now().Add(faultConverge)
	for ct.Status == engine.SyncPending && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if ct, err = eng.Content(ctx, ct.ID); err != nil {
			t.Fatal(err)
		}
	}
	if ct.Status != engine.SyncFailed || ct.Reason == "" {
		th, _ := eng.Thread(ctx, key(psid))
		t.Errorf("reply %s %q after %v (thread %s, pending request %v); want failed with the reason", ct.Status, ct.Reason, faultConverge, th.State, th.Pending)
	}
	waitAgrees(t, env, psid, faultConverge)
}

// TestLateAttemptOfARetriedCall: the Graph client retries a call whose
// attempt timed out; the retry succeeds, and threadctl goes on (a take
// after the release). Meta then applies the first, timed-out attempt late,
// undoing the take. threadctl saw only a success, arms no recheck, and
// parts from Meta for good (until the thread's next event tells it).
//
// Known failure, not fixed here: the client would have to stop retrying
// calls that may have reached Meta, or tell the engine that an attempt
// went unanswered. Run it with THREADCTL_KNOWN_FAILURES=1.
func TestLateAttemptOfARetriedCall(t *testing.T) {
	if os.Getenv("THREADCTL_KNOWN_FAILURES") == "" {
		t.Skip("known failure: a late first attempt of a retried call undoes later calls; set THREADCTL_KNOWN_FAILURES=1 to run")
	}
	env := enginetest.New(t, enginetest.Options{
		Primary: states.PrimaryNone, GraphTimeout: faultTimeout, GraphRetries: 2, RetryDelay: faultRetryDelay,
		Bot: &sim.BotConfig{HonorRequests: true, ClaimIdle: new(bool)},
	})
	if _, err := env.Sim.CustomerMessage(pageID, psid, "hi"); err != nil {
		t.Fatal(err)
	}
	settle(t, env)
	eng := env.Engine()
	iv, _, err := eng.OpenIntervention(ctx, key(psid))
	if err != nil {
		t.Fatal(err)
	}
	waitAgrees(t, env, psid, faultConverge)
	env.Sim.SetFault(sim.Fault{Call: "release_thread_control", DelayMS: int(2 * faultTimeout / time.Millisecond), ApplyLate: true, Count: 1})
	if _, _, err := eng.CloseIntervention(ctx, iv.ID); err != nil {
		t.Fatalf("close (released on the second attempt): %v", err)
	}
	if _, _, err := eng.OpenIntervention(ctx, key(psid)); err != nil {
		t.Fatalf("open again (take): %v", err)
	}
	settle(t, env) // until Meta has applied the first release attempt
	waitAgrees(t, env, psid, faultConverge)
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
