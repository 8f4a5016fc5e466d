package engine

import (
	"context"
	"time"

	"github.com/threadctl/threadctl/states"
)

// timerEvents is the event each kind of timer fires.
var timerEvents = map[TimerKind]states.Event{
	TimerRequest: states.RequestExpired,
	TimerControl: states.ControlExpired,
	TimerExtend:  states.ControlExpiring,
}

// timerDue fires a durable timer's event in the background.
func (e *Engine) timerDue(t Timer) {
	if !e.isLeader() {
		return // the leader fires it, exactly once across instances
	}
	if t.Kind == TimerRecheck {
		e.background(func(ctx context.Context) { e.recheck(ctx, t) })
		return
	}
	ev := timerEvents[t.Kind]
	e.background(func(ctx context.Context) {
		res, err := e.Apply(ctx, Input{Event: ev, Key: t.Key, Cause: CauseTimer, timer: &t})
		if err != nil {
			e.log.Warn("timer event failed", "thread", t.Key, "event", ev, "err", err)
			return
		}
		if res.Outcome != OutcomeStale {
			e.log.Info("timer event", "thread", t.Key, "event", ev, "outcome", res.Outcome, "from", res.From, "to", res.To)
		}
	})
}

// maxRechecks bounds how often Meta is asked again about one thread whose
// call had an unknown outcome, when Meta does not answer: with the delay
// doubling each time, about 2^maxRechecks RetryDelays in all.
const maxRechecks = 8

// recheck asks Meta who owns a thread after a Graph call of unknown outcome
// (RecheckAt). When Meta does not answer, it is asked again later, each
// time twice as late, a bounded number of times; the durable RecheckAt
// starts it over after a restart.
func (e *Engine) recheck(ctx context.Context, tm Timer) {
	unlock := e.locks.lock(tm.Key)
	defer unlock()
	t, err := e.loadLocked(ctx, tm.Key)
	if err != nil || t.RecheckAt.IsZero() {
		return // settled meanwhile
	}
	if t.RecheckAt.After(e.clock.Now()) {
		return // another call's answer was lost meanwhile: its recheck is armed
	}
	if _, err := e.refreshOwner(ctx, tm.Key, CauseRecheck); err == nil {
		e.rechecks.Delete(tm.Key)
		return
	}
	n, _ := e.rechecks.LoadOrStore(tm.Key, 0)
	tries := n.(int) + 1
	if tries >= maxRechecks {
		e.rechecks.Delete(tm.Key)
		e.log.Error("Meta did not answer who owns the thread; giving up until the next event or restart", "thread", tm.Key, "tries", tries, "err", err)
		return
	}
	e.rechecks.Store(tm.Key, tries)
	e.log.Warn("could not ask Meta who owns the thread; will ask again", "thread", tm.Key, "tries", tries, "err", err)
	e.sched.set(Timer{Kind: TimerRecheck, Key: tm.Key, Due: e.clock.Now().Add(e.cfg.RetryDelay << tries)})
}

// reconcile asks Meta who owns every thread that is not idle, after the
// store was restored from a backup: what Meta did since the backup was
// taken is not in it. Idle threads are left to their next event (a
// customer message on another app's channel corrects them). Meta's calls
// are bounded per page, as all are.
//
// A thread with webhook events the backup had accepted but not applied is
// asked about after they are applied, whatever its state: they are older
// than Meta's answer, and applied after it they would undo it.
func (e *Engine) reconcile(ctx context.Context) {
	e.log.Info("the store was restored from a backup: asking Meta who owns each thread that is not idle")
	n := 0
	ask := func(k ThreadKey) {
		unlock := e.locks.lock(k)
		_, err := e.refreshOwner(ctx, k, CauseRecovery)
		unlock()
		if err != nil && ctx.Err() == nil {
			e.log.Warn("reconciling after a restore: Meta did not answer for a thread", "thread", k, "err", err)
		}
		n++
	}
	e.inbox.mu.Lock()
	later := make(map[ThreadKey]bool, len(e.inbox.waiting))
	for k := range e.inbox.waiting {
		later[k] = true
	}
	e.inbox.mu.Unlock()
	for _, st := range []states.State{states.Bot, states.Agent, states.Pending} {
		for f := (ListFilter{State: st, Limit: 500}); ; {
			threads, next, err := e.store.ListThreads(ctx, f)
			if err != nil {
				e.log.Error("reconciling after a restore: listing threads failed; will try again at the next start", "err", err)
				return
			}
			for _, th := range threads {
				if !later[th.Key()] {
					ask(th.Key())
				}
			}
			if next == "" || ctx.Err() != nil {
				break
			}
			f.After = next
		}
	}
	for k := range later {
		for e.waiting(k) && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-e.clock.After(20 * time.Millisecond):
			}
		}
		ask(k)
	}
	if ctx.Err() != nil {
		return // the next start reconciles again
	}
	if err := e.store.Reconciled(ctx); err != nil {
		e.log.Error("reconciling after a restore: could not clear the mark", "err", err)
		return
	}
	e.log.Info("reconciled the restored threads with Meta", "threads", n)
}

// recover settles what a crash left in flight: every Graph call intent is
// resolved by asking Meta who owns the thread (owner_observed), and threads
// with queued contents resume sending them (or ask for control again).
// Intents Meta cannot be asked about now are retried in the background.
func (e *Engine) recover(ctx context.Context) error {
	intents, err := e.store.Intents(ctx)
	if err != nil {
		return storeError(err, "loading intents")
	}
	queued, err := e.store.QueuedThreads(ctx)
	if err != nil {
		return storeError(err, "loading queues")
	}
	e.settle(ctx, intents, queued)
	return nil
}

// settle resolves intents left in flight and resumes the queues of threads,
// whether a crash of this instance left them (recover) or the death of
// another (takeOver).
func (e *Engine) settle(ctx context.Context, intents []Intent, queued []ThreadKey) {
	var left []Intent
	for _, in := range intents {
		if err := e.resolveIntent(ctx, in); err != nil {
			e.log.Warn("could not resolve a Graph call left by a crash; will retry", "thread", in.Key, "call", in.Call, "err", err)
			left = append(left, in)
		}
	}
	if len(left) > 0 {
		e.background(func(ctx context.Context) { e.retryIntents(ctx, left) })
	}
	for _, key := range queued {
		e.resumeQueue(ctx, key)
	}
}

func (e *Engine) resolveIntent(ctx context.Context, in Intent) error {
	unlock := e.locks.lock(in.Key)
	defer unlock()
	res, err := e.refreshOwner(ctx, in.Key, CauseRecovery)
	if err != nil {
		return err
	}
	e.log.Info("resolved a Graph call left by a crash", "thread", in.Key, "call", in.Call, "event", in.Event, "state", res.To)
	return nil
}

func (e *Engine) retryIntents(ctx context.Context, left []Intent) {
	for len(left) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(e.cfg.RetryDelay):
		}
		var still []Intent
		for _, in := range left {
			if err := e.resolveIntent(ctx, in); err != nil {
				still = append(still, in)
			}
		}
		left = still
	}
}

// resumeQueue sends a thread's queue if RingCX holds it, or asks for control
// unless a request is already on the way.
func (e *Engine) resumeQueue(ctx context.Context, key ThreadKey) {
	t, err := e.store.Thread(ctx, key)
	if err != nil {
		e.log.Warn("queued contents of an unreadable thread", "thread", key, "err", err)
		return
	}
	if states.Holder(t.State) == states.ObservedRingCX {
		e.scheduleFlush(key)
		return
	}
	if t.Pending == nil {
		e.background(func(ctx context.Context) {
			if _, err := e.Apply(ctx, Input{Event: states.AgentEngage, Key: key, Cause: CauseRecovery}); err != nil {
				e.log.Warn("asking for control for queued contents failed", "thread", key, "err", err)
			}
		})
	}
}
