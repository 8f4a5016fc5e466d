package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/threadctl/threadctl/states"
)

// Cause is what made an event happen, as recorded in history.
type Cause string

// Causes of events.
const (
	CauseBotsAPI  Cause = "bots_api"    // the RingCX Bots API
	CauseAgent    Cause = "agent"       // the agent API (interventions, contents)
	CauseWebhook  Cause = "webhook"     // a Meta webhook
	CauseTimer    Cause = "timer"       // a durable timer
	CauseRecovery Cause = "recovery"    // start-up settling what a crash left in flight
	CauseCheck    Cause = "owner_check" // threadctl asked Meta who owns the thread
	CauseRecheck  Cause = "recheck"     // asked again after a call whose outcome is unknown
)

// fromCaller reports whether an API caller asked for the event: a refusal is
// then answered to it, and nothing is recorded. Refusals of what Meta or the
// timers cause are recorded as ignored.
func (c Cause) fromCaller() bool { return c == CauseBotsAPI || c == CauseAgent }

// Channels a webhook event arrives on.
const (
	ChannelMessaging = "messaging"
	ChannelStandby   = "standby"
)

// Input is an event for a thread.
type Input struct {
	Event    states.Event
	Key      ThreadKey
	Cause    Cause
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
	// unrecorded are Graph calls an attempt made whose commit another
	// instance's commit beat: the owner refresh that follows records them.
	unrecorded []CallRecord
	accepted   bool      // an accepted webhook event: a transient failure is retried
	lastCall   time.Time // when threadctl's last Graph call on the thread before this event answered
	// intent is set once an attempt stored a Graph call's intent: the
	// event's commit resolves it, even when a retry (after a conflict)
	// decides no call.
	intent bool
	// fresh asks for the thread as the store has it now, not as a cheaper
	// read may have it (after a conflict).
	fresh bool
	// cheap: the attempt decided on the store's cheaper read; wrote: it
	// stored an intent or tried a commit (whose compare checks the read).
	cheap, wrote bool
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
	retry    bool // an accepted event's Graph call failed transiently: try it again
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
	in.lastCall = e.recent.last(in.Key)
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

// next is what an attempt at an event leaves to do.
type next int

const (
	done next = iota
	// retryOwner: Meta refused the call because another app owns the
	// thread; refresh the owner, then decide the event again.
	retryOwner
	// retryPage: Meta's refusal taught how the page works (its routing, the
	// takeover setting); decide the event again with the right table.
	retryPage
	// refresh: the event contradicts threadctl's view of the owner (a
	// customer message on another owner's channel); refresh the owner only.
	refresh
	// confirm: the row asks Meta who owns the thread before it applies;
	// refresh the owner, then decide again (and apply the row as it is if
	// Meta does not answer).
	confirm
	// deferred: the row calls Meta, which the attempt may not do (a webhook
	// applied while Meta waits for the answer): nothing was done.
	deferred
	// landed: the row's call moved control at Meta, but another instance
	// committed to the thread first and the store refused the commit: the
	// owner the store has is not Meta's. Refresh it (recording the call),
	// then decide again. This spends no owner budget: deciding again on
	// the store's record alone would make a call Meta refuses because of
	// threadctl's own call, and the budget is for Meta's news.
	landed
)

// budget bounds what one event may try again: one owner refresh, and one
// retry per fact a refusal can teach about the page (routing, takeover).
// noCalls forbids calling Meta at all.
type budget struct {
	owner, page int
	noCalls     bool
}

// applyLocked applies in with the thread's lock held, in one bounded loop:
// decide, call, commit; when Meta's answer shows threadctl's view of the
// owner is stale, refresh it from thread_owner once (refreshOwner); when a
// refusal teaches how the page works, learn it (learnFrom); and decide the
// event again.
func (e *Engine) applyLocked(ctx context.Context, in *Input) (Result, error) {
	b := budget{owner: 1, page: 2}
	conflicts := 0
	for {
		res, err, then := e.attempt(ctx, in, &b)
		if then == done && errors.Is(err, ErrConflict) && conflicts < maxConflicts && ctx.Err() == nil {
			// Another instance changed the thread since it was read (the
			// store refused the commit or the intent): read it again and
			// decide again. (A call that moved control is landed instead;
			// any other call this attempt made is not recorded.)
			conflicts++
			e.cache.drop(in.Key)
			in.fresh = true
			e.conflictPause(ctx, conflicts)
			continue
		}
		if then == landed {
			conflicts++
			if conflicts > maxConflicts || ctx.Err() != nil {
				return res, err
			}
			e.cache.drop(in.Key)
			in.fresh = true
			if _, ferr := e.refreshOwner(ctx, in.Key, CauseCheck, in.unrecorded...); ferr != nil {
				// Decide again on the store's record, as after any
				// conflict; the call is recorded with the event.
				e.log.Warn("refreshing the thread's owner after a call whose commit met another instance's failed", "thread", in.Key, "event", in.Event, "err", ferr)
				in.calls, in.unrecorded = in.unrecorded, nil
				continue
			}
			in.calls, in.unrecorded = nil, nil
			continue
		}
		switch then {
		case done:
			return res, err
		case refresh, retryOwner, confirm:
			fixed, ferr := e.refreshOwner(ctx, in.Key, CauseCheck, in.unrecorded...)
			if ferr == nil {
				in.unrecorded = nil
			}
			switch {
			case ferr != nil && then == confirm:
				e.log.Warn("could not ask Meta who owns the thread; applying the event as it is", "thread", in.Key, "event", in.Event, "err", ferr)
			case ferr != nil:
				e.log.Warn("refreshing the thread's owner from Meta failed", "thread", in.Key, "event", in.Event, "err", ferr)
				// The failed attempt left the event's content for the
				// retry that will not come: record it as failed.
				if ct := in.content; ct != nil {
					failed := *ct
					failed.Status, failed.Reason = SyncFailed, "RingCX could not get control of the thread: "+err.Error()
					if cerr := e.store.Commit(ctx, &Commit{Key: in.Key, Contents: []Content{failed}}); cerr != nil {
						return res, storeError(cerr, "saving content")
					}
				}
				return res, err
			case then == refresh:
				return fixed, nil
			}
		}
		// (Calls a refused commit left unrecorded go with the next one.)
		in.calls, in.unrecorded = in.unrecorded, nil
	}
}

// attempt decides in against the stored thread with the page's table, makes
// the row's Graph call (durable intent first) and commits. b bounds the
// retries it may ask for.
//
// A decision made on a store's cheaper read (ChangeReader) that writes
// nothing — a refusal, a duplicate, a stale timer, a deferral — is not
// checked by any compare-and-swap: it is made again on a fresh read.
func (e *Engine) attempt(ctx context.Context, in *Input, b *budget) (Result, error, next) {
	saved := *b
	in.cheap, in.wrote = false, false
	res, err, then := e.attemptOnce(ctx, in, b)
	if !in.cheap || in.wrote {
		return res, err, then
	}
	*b = saved
	fresh := in.fresh
	in.fresh = true
	res, err, then = e.attemptOnce(ctx, in, b)
	in.fresh = fresh
	return res, err, then
}

func (e *Engine) attemptOnce(ctx context.Context, in *Input, b *budget) (Result, error, next) {
	page, err := e.page(in.Key.PageID)
	if err != nil {
		return Result{}, err, done
	}
	if in.Event == states.HandoverToBot && !page.IsBotApp(in.AppID) {
		return Result{}, errorf(CodeInvalid, nil, "app_id %q is not a bot app of page %s (bot apps: %v)", in.AppID, page.ID, page.BotAppIDs), done
	}
	t, err := e.loadForChange(ctx, in)
	switch {
	case errors.Is(err, ErrNotFound) && in.Create:
		now := e.clock.Now()
		t = Thread{PageID: in.Key.PageID, PSID: in.Key.PSID, State: states.Idle, Primary: page.Primary, CreatedAt: now, LastActivity: now}
	case errors.Is(err, ErrNotFound):
		return Result{}, errorf(CodeNotFound, err, "unknown identity %s on page %s", in.Key.PSID, in.Key.PageID), done
	case err != nil:
		return Result{}, storeError(err, "reading thread"), done
	}

	if in.openIntervention != nil && t.Intervention != "" {
		// Checked again on each attempt: another instance may have opened
		// one since the caller looked.
		return Result{From: t.State, To: t.State, Thread: t}, errorf(CodeConflict, nil, "an intervention (%s) is already open on this identity; close it before opening another", t.Intervention), done
	}
	if in.DedupKey != "" && slices.Contains(t.Seen, dedupHash(in.DedupKey)) {
		return Result{Outcome: OutcomeDuplicate, From: t.State, To: t.State, Thread: t}, nil, done
	}
	if in.timer != nil && !e.timerCurrent(&t, *in.timer) {
		return Result{Outcome: OutcomeStale, From: t.State, To: t.State, Thread: t}, nil, done
	}
	if !in.MetaTime.IsZero() && in.MetaTime.Before(t.LastMetaTime) {
		reason := fmt.Sprintf("event at %s is older than the thread's last change from Meta at %s", in.MetaTime.UTC().Format(time.RFC3339Nano), t.LastMetaTime.UTC().Format(time.RFC3339Nano))
		res, err := e.commit(ctx, &t, in, page, nil, OutcomeIgnored, reason, in.calls)
		return res, err, done
	}

	facts := states.Facts{State: t.State, Owner: t.Owner, InterventionOpen: t.Intervention != "", AppID: in.AppID}
	d, err := states.Decide(ctx, page.Table(e.clock.Now()), in.Event, in.Observed, facts)
	if err != nil {
		if in.Cause.fromCaller() && in.closeIntervention == nil {
			return Result{From: t.State, To: t.State, Thread: t}, refusal(err, &t, page), done
		}
		// Recorded as ignored; a closed intervention is closed all the same.
		res, err := e.commit(ctx, &t, in, page, nil, OutcomeIgnored, err.Error(), in.calls)
		return res, err, done
	}

	if b.noCalls && (d.Rule.Call != states.NoCall || d.Rule.Confirm) {
		return Result{From: t.State, To: t.State, Thread: t}, nil, deferred
	}
	if d.Rule.Confirm && b.owner > 0 {
		b.owner--
		return Result{From: t.State, To: t.State, Thread: t}, nil, confirm
	}
	calls := slices.Clone(in.calls)
	if d.Rule.Call != states.NoCall {
		rec, err := e.callWithIntent(ctx, &t, in, page, d)
		calls = append(calls, rec)
		if err != nil {
			return e.callFailed(ctx, &t, in, page, d.Rule.Call, calls, err, b)
		}
		if d.Rule.Call == states.CallTake && page.RoutingNow() == states.ConversationRouting {
			if _, err := e.learnTakeover(ctx, page.ID, true, "Meta allowed take_thread_control"); err != nil {
				e.log.Warn("could not save what Meta's answer taught about the page", "page_id", page.ID, "err", err)
			}
		}
	}
	res, err := e.commit(ctx, &t, in, page, &d, outcomeOf(d), "", calls)
	if errors.Is(err, ErrConflict) && movesControl(d.Rule.Call) {
		in.unrecorded = calls
		return res, err, landed
	}
	if err == nil && in.Event == states.CustomerMessage && contradicts(in.Channel, res.To) {
		// Meta routed the message as if someone else owned the thread (or
		// RingCX did): ask who does. The message itself is applied.
		return res, nil, refresh
	}
	return res, err, done
}

// movesControl reports whether a call that Meta accepted changed the
// thread's owner.
func movesControl(c states.Call) bool {
	return c == states.CallPass || c == states.CallTake || c == states.CallRelease
}

// contradicts reports whether a customer message arriving on channel
// contradicts the thread's state st: standby means another app controls the
// thread; messaging means RingCX does, or nobody.
func contradicts(channel string, st states.State) bool {
	if channel != ChannelMessaging && channel != ChannelStandby {
		return false
	}
	return (channel == ChannelStandby) != (states.Holder(st) == states.ObservedOther)
}

// ChangeReader is implemented by a store that can read a thread about to be
// changed more cheaply than a read that answers a caller — etcd from the
// member it talks to, without confirming with the cluster's leader — at the
// price of a record possibly a little stale. Deciding on a stale record is
// safe: the compare-and-swap of the intent (before any Graph call) or of
// the commit refuses it, and the event is decided again on a fresh read.
type ChangeReader interface {
	ThreadToChange(ctx context.Context, key ThreadKey) (Thread, error)
}

// loadForChange reads the thread an attempt decides on: through the cache,
// else with the store's cheaper read unless in asks for a fresh one.
func (e *Engine) loadForChange(ctx context.Context, in *Input) (Thread, error) {
	cr, ok := e.store.(ChangeReader)
	if !ok || in.fresh {
		return e.loadLocked(ctx, in.Key)
	}
	if t, ok := e.cache.get(in.Key); ok {
		return t, nil
	}
	t, err := cr.ThreadToChange(ctx, in.Key)
	if errors.Is(err, ErrNotFound) {
		// Perhaps only not there yet: the thread may have just been created.
		return e.loadLocked(ctx, in.Key)
	}
	if err == nil {
		in.cheap = true
		e.cache.put(t)
	}
	return t, err
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

func refusal(err error, t *Thread, page Page) error {
	var (
		na      *states.NotAllowedError
		owned   *states.OwnedByOtherError
		refused *states.RefusedError
	)
	switch {
	case errors.As(err, &refused):
		return errorf(CodeConflict, err, "%s", strings.ReplaceAll(refused.Rule.Refuse, "{ringcx_app_id}", page.RingCXAppID))
	case errors.Is(err, states.ErrInterventionEngaged):
		return errorf(CodeConflict, err, "an intervention is engaged on this identity (%s); close it before handing the thread to a bot", t.Intervention)
	case errors.As(err, &owned):
		return errorf(CodeConflict, err, "the thread is owned by app %s, not by app %s; only RingCX's own control can be passed", owned.Owner, owned.AppID)
	case errors.As(err, &na):
		return errorf(CodeConflict, err, "%s is not allowed while the thread is %s (page table: %s); available events: %v", na.Event, na.State, na.Table.Title(), states.Available(na.Table, na.State))
	}
	return errorf(CodeConflict, err, "%v", err)
}

// timerCurrent reports whether a fired timer is the thread's deadline now.
// A stale one (the deadline moved since) is dropped: the index holds the
// current deadline, which fires in its turn. A control timer of a record
// written by an earlier version (ControlTimer) is armed at the deadline.
func (e *Engine) timerCurrent(t *Thread, tm Timer) bool {
	for _, cur := range t.deadlines() {
		if cur.Kind != tm.Kind {
			continue
		}
		if cur.Due.Equal(tm.Due) {
			return true
		}
		if tm.Kind == TimerControl && !t.ControlTimer.IsZero() {
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
		if d.Rule.Target == states.TargetRingCX {
			target = page.RingCXAppID
		}
	}
	in.wrote = true
	if t.Revision > 0 {
		intent := Intent{Key: t.Key(), Revision: t.Revision, Event: in.Event, Observed: in.Observed, Call: d.Rule.Call, Target: target, Cause: in.Cause, At: e.clock.Now()}
		if err := e.store.PutIntent(ctx, intent); err != nil {
			e.cache.drop(t.Key())
			return CallRecord{Call: string(d.Rule.Call), Target: target, Outcome: "not_sent"}, storeError(err, "recording the Graph call intent")
		}
		in.intent = true
	}
	return e.graphCall(ctx, page, t.PSID, d.Rule.Call, target)
}

// graphCall makes one thread-control call and records it.
func (e *Engine) graphCall(ctx context.Context, page Page, psid string, call states.Call, target string) (CallRecord, error) {
	calls := map[states.Call]func() error{
		states.CallRequest: func() error {
			return e.graph.RequestThreadControl(ctx, page.ID, psid, "threadctl: an agent asks for control")
		},
		states.CallTake: func() error { return e.graph.TakeThreadControl(ctx, page.ID, psid, "threadctl: taken for an agent") },
		states.CallPass: func() error {
			return e.graph.PassThreadControl(ctx, page.ID, psid, target, "threadctl: passed by RingCX")
		},
		states.CallRelease: func() error { return e.graph.ReleaseThreadControl(ctx, page.ID, psid) },
		states.CallExtend:  func() error { return e.graph.ExtendThreadControl(ctx, page.ID, psid, e.cfg.ExtendBy) },
	}
	start := e.clock.Now()
	err := fmt.Errorf("unknown call %q", call)
	if fn, ok := calls[call]; ok {
		err = fn()
	}
	end := e.clock.Now()
	e.recent.note(ThreadKey{PageID: page.ID, PSID: psid}, end) // Meta may apply the call at any moment until it answers
	return record(string(call), target, start, end, err), err
}

func record(call, target string, start, end time.Time, err error) CallRecord {
	r := CallRecord{Call: call, Target: target, Outcome: CallOK, Duration: end.Sub(start)}
	if err != nil {
		r.Outcome = CallRefused
		switch {
		case notOwner(err):
			r.Outcome = CallNotOwner
		case transient(err):
			r.Outcome = CallUnknown
		}
		r.Error = err.Error()
	}
	return r
}

// callFailed records a refused or failed Graph call: the state stays. When
// Meta says another app owns the thread, or its refusal teaches how the
// page works, and the budget allows, the event is decided again; its content
// or intervention are then left for that attempt.
func (e *Engine) callFailed(ctx context.Context, t *Thread, in *Input, page Page, call states.Call, calls []CallRecord, callErr error, b *budget) (Result, error, next) {
	if errors.As(callErr, new(*Error)) || e.isClosing() {
		// The call was not made (its intent could not be stored, no slot
		// freed in time), or the engine is shutting down: a stored intent
		// is resolved at the next start.
		return Result{From: t.State, To: t.State, Thread: *t}, wrapCallErr(callErr, calls), done
	}
	then := done
	if ctx.Err() != nil {
		// The caller gave up mid-call: the outcome is unknown. Record it
		// (which arms the recheck) without the caller's deadline.
		ctx = context.WithoutCancel(ctx)
		b.owner, b.page = 0, 0
	}
	switch {
	case revealsOwner(callErr) && b.owner > 0:
		b.owner--
		then = retryOwner
	case (revealsOwner(callErr) || permissionDenied(callErr)) && b.page > 0 && e.learnFrom(ctx, page, call, callErr):
		b.page--
		then = retryPage
	}
	failIn := *in
	if then != done {
		failIn.content, failIn.openIntervention = nil, nil
	}
	res, err := e.commit(ctx, t, &failIn, page, nil, OutcomeFailed, callErr.Error(), calls)
	if err != nil && then != done && errors.Is(err, ErrConflict) {
		// Another instance committed to the thread first. The refusal
		// still stands, and the owner refresh (or the next attempt)
		// reads the thread again and records the call: the budget this
		// refusal spent is not lost to the conflict.
		e.cache.drop(t.Key())
		in.fresh = true
		in.unrecorded = calls
		return res, wrapCallErr(callErr, calls), then
	}
	if err != nil {
		return res, err, done
	}
	res.retry = then == done && in.accepted && transient(callErr)
	return res, wrapCallErr(callErr, calls), then
}

func wrapCallErr(err error, calls []CallRecord) error {
	if errors.As(err, new(*Error)) {
		return err
	}
	call := "the Graph API call"
	if n := len(calls); n > 0 {
		call = calls[n-1].Call
	}
	var answered interface{ Transient() bool }
	var unknown interface{ OutcomeUnknown() bool }
	if !errors.As(err, &answered) || errors.As(err, &unknown) {
		// No answer (a timeout, a reset): Meta may have applied the call.
		return errorf(CodeMeta, err, "Meta did not answer %s, so whether it took effect is unknown; threadctl keeps the thread as it was and asks Meta who owns it shortly", call)
	}
	return errorf(CodeMeta, err, "Meta refused or failed %s; the thread did not change", call)
}

// refreshOwner asks Meta who owns the thread (thread_owner) and applies
// owner_observed with the answer, recording the calls made before (whose
// own commit the store refused) with it. The caller holds the thread's
// lock.
func (e *Engine) refreshOwner(ctx context.Context, key ThreadKey, cause Cause, made ...CallRecord) (Result, error) {
	page, err := e.page(key.PageID)
	if err != nil {
		return Result{}, err
	}
	start := e.clock.Now()
	owner, expires, err := e.graph.ThreadOwner(ctx, key.PageID, key.PSID)
	end := e.clock.Now()
	e.recent.note(key, end) // Meta's answer tells the owner at some moment until then
	rec := record("thread_owner", "", start, end, err)
	if err != nil {
		return Result{}, errorf(CodeMeta, err, "asking Meta for the thread's owner")
	}
	rec.Target = owner
	in := &Input{Event: states.OwnerObserved, Observed: observe(page, owner, expires), AppID: owner, Key: key, Cause: cause, calls: append(slices.Clone(made), rec)}
	for n := 1; ; n++ {
		res, err, _ := e.attempt(ctx, in, &budget{})
		if !errors.Is(err, ErrConflict) || n > maxConflicts || ctx.Err() != nil {
			return res, err
		}
		// Another instance changed the thread meanwhile: record Meta's
		// answer on the thread as it is now.
		e.cache.drop(key)
		e.conflictPause(ctx, n)
	}
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
