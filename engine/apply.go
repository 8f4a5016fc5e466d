package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/threadctl/threadctl/states"
)

// Causes of events, as recorded in history.
const (
	CauseBotsAPI  = "bots_api"
	CauseAgent    = "agent"
	CauseWebhook  = "webhook"
	CauseTimer    = "timer"
	CauseRecovery = "recovery"
	CauseCheck    = "owner_check"
)

// Channels a webhook event arrives on.
const (
	ChannelMessaging = "messaging"
	ChannelStandby   = "standby"
)

// Input is an event for a thread.
type Input struct {
	Event    states.Event
	Key      ThreadKey
	Cause    string
	AppID    string          // handover_to_bot's target, the new owner, the requester, the observed owner
	Observed states.Observed // owner_observed only
	MetaTime time.Time       // a webhook's timestamp
	DedupKey string          // a webhook event's identity, for de-duplication
	Channel  string          // messaging or standby, for customer_message
	Create   bool            // create the thread if it does not exist (webhooks)

	// Set by the engine's own operations.
	openIntervention  *Intervention
	closeIntervention *Intervention
	content           *Content
	timer             *Timer
	calls             []CallRecord // calls made before deciding (thread_owner)
	resolveIntent     bool         // the event settles an intent left by a crash
}

// Outcomes beyond the recorded ones of HistoryEntry.
const (
	OutcomeDuplicate = "duplicate"   // a webhook already applied; nothing changed
	OutcomeStale     = "stale_timer" // a timer that no longer matches the thread
)

// Result is what applying an event did.
type Result struct {
	Outcome  string
	From, To states.State
	Reason   string
	Thread   Thread
}

// Apply applies one event to its thread: it waits for the thread's earlier
// events, decides with the table of the page's primary, makes the Graph call
// (durable intent first), commits, and then runs the effects. A webhook
// event the table refuses is recorded as ignored and returns no error; an
// API event it refuses returns a CodeConflict error and records nothing.
func (e *Engine) Apply(ctx context.Context, in Input) (Result, error) {
	if err := validateInput(&in); err != nil {
		return Result{}, err
	}
	unlock := e.locks.lock(in.Key)
	defer unlock()
	return e.applyLocked(ctx, &in)
}

func validateInput(in *Input) error {
	if _, err := states.ParseEvent(string(in.Event)); err != nil {
		return errorf(CodeInvalid, nil, "%v", err)
	}
	if !isDigits(in.Key.PageID) {
		return errorf(CodeInvalid, nil, "page id %q must be numeric", in.Key.PageID)
	}
	if in.Key.PSID == "" || len(in.Key.PSID) > 64 || !isDigits(in.Key.PSID) {
		return errorf(CodeInvalid, nil, "identity_foreign_id %q must be a numeric PSID", in.Key.PSID)
	}
	if in.Cause == "" {
		return errorf(CodeInvalid, nil, "an event needs a cause")
	}
	return nil
}

// applyLocked applies in with the thread's lock held, then checks a
// customer message's channel against the new state.
func (e *Engine) applyLocked(ctx context.Context, in *Input) (Result, error) {
	res, err := e.apply(ctx, in, true)
	if err != nil || in.Event != states.CustomerMessage || res.Outcome == OutcomeDuplicate || res.Outcome == OutcomeIgnored {
		return res, err
	}
	if page, perr := e.page(in.Key.PageID); perr == nil && inconsistent(in.Channel, res.To, page.Primary) {
		// Meta routed the message as if someone else owned the thread (or
		// we did): ask who does. A failure here leaves the message applied.
		cres, cerr := e.correct(ctx, in.Key, CauseCheck)
		if cerr == nil {
			return cres, nil
		}
		e.log.Warn("owner check after a customer message failed", "thread", in.Key, "err", cerr)
	}
	return res, nil
}

// inconsistent reports whether a customer message arriving on channel
// contradicts state: standby means another app owns the thread; messaging
// means RingCX owns it or it is idle.
func inconsistent(channel string, st states.State, p states.Primary) bool {
	switch channel {
	case ChannelStandby:
		return st == states.Agent || (st == states.Idle && p != states.PrimaryBot)
	case ChannelMessaging:
		return st == states.Bot || st == states.Pending
	}
	return false
}

// apply is one decision and its commit. correct allows one owner correction
// (and a retry) when Meta says another app owns the thread.
func (e *Engine) apply(ctx context.Context, in *Input, correct bool) (Result, error) {
	page, err := e.page(in.Key.PageID)
	if err != nil {
		return Result{}, err
	}
	if in.Event == states.HandoverToBot && !page.IsBotApp(in.AppID) {
		return Result{}, errorf(CodeInvalid, nil, "app_id %q is not a bot app of page %s (bot apps: %v)", in.AppID, page.ID, page.BotAppIDs)
	}
	t, err := e.loadLocked(ctx, in.Key)
	switch {
	case errors.Is(err, ErrNotFound) && in.Create:
		now := e.clock.Now()
		t = Thread{PageID: in.Key.PageID, PSID: in.Key.PSID, State: states.Idle, Primary: page.Primary, CreatedAt: now, LastActivity: now}
	case errors.Is(err, ErrNotFound):
		return Result{}, errorf(CodeNotFound, err, "unknown identity %s on page %s", in.Key.PSID, in.Key.PageID)
	case err != nil:
		return Result{}, storeError(err, "reading thread")
	}

	if in.DedupKey != "" && slices.Contains(t.Seen, dedupHash(in.DedupKey)) {
		return Result{Outcome: OutcomeDuplicate, From: t.State, To: t.State, Thread: t}, nil
	}
	if in.timer != nil && !e.timerCurrent(&t, *in.timer) {
		return Result{Outcome: OutcomeStale, From: t.State, To: t.State, Thread: t}, nil
	}
	if !in.MetaTime.IsZero() && in.MetaTime.Before(t.LastMetaTime) {
		reason := fmt.Sprintf("event at %s is older than the thread's last change from Meta at %s", in.MetaTime.UTC().Format(time.RFC3339Nano), t.LastMetaTime.UTC().Format(time.RFC3339Nano))
		return e.commit(ctx, &t, in, page, nil, OutcomeIgnored, reason, in.calls)
	}

	facts := states.Facts{State: t.State, Owner: t.Owner, InterventionOpen: t.Intervention != "", AppID: in.AppID}
	d, err := states.Decide(ctx, page.Primary, in.Event, in.Observed, facts)
	if err != nil {
		if recordsRefusals(in) {
			return e.commit(ctx, &t, in, page, nil, OutcomeIgnored, err.Error(), in.calls)
		}
		return Result{From: t.State, To: t.State, Thread: t}, refusal(err, &t)
	}

	calls := slices.Clone(in.calls)
	if d.Rule.Call != states.NoCall {
		rec, err := e.callWithIntent(ctx, &t, in, page, d)
		calls = append(calls, rec)
		if err != nil {
			return e.callFailed(ctx, &t, in, page, calls, err, correct)
		}
	}
	return e.commit(ctx, &t, in, page, &d, outcomeOf(d), "", calls)
}

// loadLocked reads a thread through the cache; the caller holds its lock.
func (e *Engine) loadLocked(ctx context.Context, key ThreadKey) (Thread, error) {
	if t, ok := e.cache.get(key); ok {
		return t, nil
	}
	t, err := e.store.Thread(ctx, key)
	if err == nil {
		e.cache.put(t)
	}
	return t, err
}

func outcomeOf(d states.Decision) string {
	if d.Changed() {
		return OutcomeApplied
	}
	return OutcomeNoChange
}

// recordsRefusals reports whether an event the table refuses is recorded as
// ignored (webhooks, timers, recovery) rather than refused to its caller.
func recordsRefusals(in *Input) bool {
	return in.Cause != CauseBotsAPI && in.Cause != CauseAgent || in.closeIntervention != nil
}

func refusal(err error, t *Thread) error {
	var (
		na    *states.NotAllowedError
		owned *states.OwnedByOtherError
	)
	switch {
	case errors.Is(err, states.ErrInterventionEngaged):
		return errorf(CodeConflict, err, "an intervention is engaged on this identity (%s); close it before handing the thread to a bot", t.Intervention)
	case errors.As(err, &owned):
		return errorf(CodeConflict, err, "the thread is owned by app %s, not by app %s; only RingCX's own control can be passed", owned.Owner, owned.AppID)
	case errors.As(err, &na):
		return errorf(CodeConflict, err, "%s is not allowed while the thread is %s (page primary: %s); available events: %v", na.Event, na.State, na.Primary, states.Available(na.Primary, na.State))
	}
	return errorf(CodeConflict, err, "%v", err)
}

// timerCurrent reports whether a fired timer is the thread's deadline now. A
// control timer that fired before the (since extended) deadline is armed
// again at it.
func (e *Engine) timerCurrent(t *Thread, tm Timer) bool {
	for _, cur := range t.deadlines() {
		if cur.Kind != tm.Kind {
			continue
		}
		if cur.Due.Equal(tm.Due) {
			return true
		}
		if tm.Kind == TimerControl && tm.Due.Before(cur.Due) {
			e.sched.set(cur)
		}
	}
	return false
}

func dedupHash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// seenWindow is how many recent webhook events a thread remembers for
// de-duplication; older duplicates are caught by the timestamp rule.
const seenWindow = 16

// callWithIntent makes the decision's Graph call, with its intent durable
// before the call.
func (e *Engine) callWithIntent(ctx context.Context, t *Thread, in *Input, page Page, d states.Decision) (CallRecord, error) {
	target := ""
	if d.Rule.Call == states.CallPass {
		target = in.AppID
	}
	if t.Revision > 0 {
		intent := Intent{Key: t.Key(), Revision: t.Revision, Event: in.Event, Observed: in.Observed, Call: d.Rule.Call, Target: target, Cause: in.Cause, At: e.clock.Now()}
		if err := e.store.PutIntent(ctx, intent); err != nil {
			e.cache.drop(t.Key())
			return CallRecord{Call: string(d.Rule.Call), Target: target, Outcome: "not_sent"}, storeError(err, "recording the Graph call intent")
		}
	}
	return e.graphCall(ctx, page, t.PSID, d.Rule.Call, target)
}

// graphCall makes one thread-control call and records it.
func (e *Engine) graphCall(ctx context.Context, page Page, psid string, call states.Call, target string) (CallRecord, error) {
	start := e.clock.Now()
	var err error
	switch call {
	case states.CallRequest:
		err = e.graph.RequestThreadControl(ctx, page.ID, psid, "threadctl: an agent asks for control")
	case states.CallTake:
		err = e.graph.TakeThreadControl(ctx, page.ID, psid, "threadctl: taken for an agent")
	case states.CallPass:
		err = e.graph.PassThreadControl(ctx, page.ID, psid, target, "threadctl: passed by RingCX")
	case states.CallRelease:
		err = e.graph.ReleaseThreadControl(ctx, page.ID, psid)
	default:
		err = fmt.Errorf("unknown call %q", call)
	}
	return record(string(call), target, start, e.clock.Now(), err), err
}

func record(call, target string, start, end time.Time, err error) CallRecord {
	r := CallRecord{Call: call, Target: target, Outcome: "ok", Duration: end.Sub(start)}
	if err != nil {
		r.Outcome = "error"
		if notOwner(err) {
			r.Outcome = "not_owner"
		}
		r.Error = err.Error()
	}
	return r
}

// callFailed records a refused or failed Graph call (the state stays) and,
// when Meta says another app owns the thread, corrects the state from
// thread_owner and applies the event once more.
func (e *Engine) callFailed(ctx context.Context, t *Thread, in *Input, page Page, calls []CallRecord, callErr error, correct bool) (Result, error) {
	if ctx.Err() != nil || errors.As(callErr, new(*Error)) {
		// Cancelled (shutting down) or the intent was not stored: the
		// outcome is unknown or the call was not made; a stored intent is
		// resolved at the next start.
		return Result{From: t.State, To: t.State, Thread: *t}, wrapCallErr(callErr, calls)
	}
	retry := correct && notOwner(callErr)
	failIn := *in
	if retry {
		// The event is applied again below: its content or intervention
		// belong to that attempt.
		failIn.content, failIn.openIntervention = nil, nil
	}
	res, err := e.commit(ctx, t, &failIn, page, nil, OutcomeFailed, callErr.Error(), calls)
	if err != nil {
		return res, err
	}
	if retry {
		_, cerr := e.correct(ctx, in.Key, CauseCheck)
		if cerr == nil {
			in.calls = nil
			return e.apply(ctx, in, false)
		}
		e.log.Warn("owner correction failed", "thread", in.Key, "err", cerr)
	}
	return res, wrapCallErr(callErr, calls)
}

func wrapCallErr(err error, calls []CallRecord) error {
	if errors.As(err, new(*Error)) {
		return err
	}
	call := "the Graph API call"
	if n := len(calls); n > 0 {
		call = calls[n-1].Call
	}
	return errorf(CodeMeta, err, "Meta refused or failed %s; the thread did not change", call)
}

// correct asks Meta who owns the thread and applies owner_observed. The
// caller holds the thread's lock.
func (e *Engine) correct(ctx context.Context, key ThreadKey, cause string) (Result, error) {
	return e.observeOwner(ctx, key, cause, false)
}

func (e *Engine) observeOwner(ctx context.Context, key ThreadKey, cause string, resolveIntent bool) (Result, error) {
	page, err := e.page(key.PageID)
	if err != nil {
		return Result{}, err
	}
	start := e.clock.Now()
	owner, expires, err := e.graph.ThreadOwner(ctx, key.PageID, key.PSID)
	rec := record("thread_owner", "", start, e.clock.Now(), err)
	if err != nil {
		return Result{}, errorf(CodeMeta, err, "asking Meta for the thread's owner")
	}
	obs := observe(page, owner, expires)
	rec.Target = owner
	in := &Input{Event: states.OwnerObserved, Observed: obs, AppID: owner, Key: key, Cause: cause, calls: []CallRecord{rec}, resolveIntent: resolveIntent}
	return e.apply(ctx, in, false)
}

func observe(page Page, owner string, expires time.Time) states.Observed {
	switch {
	case owner == page.RingCXAppID:
		return states.ObservedRingCX
	case owner == "" && expires.IsZero():
		return states.ObservedNone
	}
	return states.ObservedOther
}
