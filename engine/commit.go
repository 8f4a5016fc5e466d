package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/threadctl/threadctl/states"
)

// commit records one event on thread t: the decision d (nil when the event
// was ignored or its call failed), its history entry, and what the event
// carries (an intervention, a content). Effects run after the commit.
func (e *Engine) commit(ctx context.Context, t *Thread, in *Input, page Page, d *states.Decision, outcome, reason string, calls []CallRecord) (Result, error) {
	in.wrote = true
	now := e.clock.Now()
	table := page.Table(now)
	prev := *t
	next := *t
	next.Revision++
	next.UpdatedAt = now
	next.Primary = page.Primary
	retried := in.accepted && outcome == OutcomeFailed && slices.ContainsFunc(calls, func(r CallRecord) bool { return r.Outcome == CallUnknown })
	if in.DedupKey != "" && !retried {
		// (An accepted event whose call is to be tried again is not seen yet.)
		next.Seen = appendSeen(t.Seen, dedupHash(in.DedupKey))
	}
	c := &Commit{Thread: &next, Expect: t.Revision}
	if t.Revision > 0 {
		c.Prev = &prev
	}
	// A call made (or Meta asked) settles whatever intent a crash left.
	c.ResolveIntent = len(calls) > 0 || in.intent

	if d != nil {
		e.transition(&next, t, in, page, *d, now)
		if d.Rule.Queue == states.QueueFail {
			reason := fmt.Sprintf("RingCX did not get control of the thread (%s): %s", in.Event, d.Rule.Reason)
			if err := e.failQueue(ctx, c, t.Key(), reason); err != nil {
				return Result{}, err
			}
		}
	}
	applied := outcome == OutcomeApplied || outcome == OutcomeNoChange
	if iv := in.openIntervention; iv != nil && applied {
		next.Intervention = iv.ID
		c.Interventions = append(c.Interventions, *iv)
	}
	if iv := in.closeIntervention; iv != nil && outcome != OutcomeFailed {
		closed := *iv
		closed.Status = InterventionClosed
		closed.ClosedAt = now
		if next.Intervention == iv.ID {
			next.Intervention = ""
		}
		c.Interventions = append(c.Interventions, closed)
	}
	if ct := in.content; ct != nil {
		switch {
		case applied:
			c.Contents = append(c.Contents, *ct)
			c.Enqueue = append(c.Enqueue, ct.ID)
		case outcome == OutcomeFailed:
			failed := *ct
			failed.Status = SyncFailed
			failed.Reason = "RingCX could not get control of the thread: " + reason
			c.Contents = append(c.Contents, failed)
		}
	}
	e.armExtension(&next, now)
	switch {
	case outcome == OutcomeFailed && slices.ContainsFunc(calls, func(r CallRecord) bool { return r.Outcome == CallUnknown }):
		// Whether the call took effect is unknown, and Meta may apply it
		// late, after the calls made since: ask Meta again RetryDelay
		// after the last such call.
		next.RecheckAt = maxTime(next.RecheckAt, now.Add(e.cfg.RetryDelay))
	case in.Cause == CauseWebhook && !in.MetaTime.IsZero() && in.MetaTime.Add(metaTimeResolution).Before(in.lastCall) &&
		(next.State != prev.State || slices.ContainsFunc(calls, func(r CallRecord) bool { return r.Outcome == CallOK && r.Call != "thread_owner" })):
		// A webhook event sent by Meta before threadctl's last Graph call on
		// the thread answered (Meta may apply a call at any moment until
		// then), and applied after it (it waited in the inbox behind the
		// thread's work or a call Meta kept failing, or Meta delivered it
		// late), changed the thread: it may undo what that call did, or
		// contradict what it saw, at Meta. Ask Meta again. (Meta's clock
		// and threadctl's are compared: a skew costs an owner check too
		// many or too few, no more.)
		next.RecheckAt = maxTime(next.RecheckAt, now.Add(e.cfg.RetryDelay))
	case in.Event == states.OwnerObserved && outcome != OutcomeIgnored && !now.Before(next.RecheckAt):
		// Only Meta's word once the recheck is due settles it: a call that
		// succeeded since says nothing of one whose answer was lost.
		next.RecheckAt = time.Time{}
	}
	if outcome == OutcomeFailed && in.timer != nil {
		// The timer's own call failed: try again later.
		if in.timer.Kind == TimerRequest && next.Pending != nil {
			p := *next.Pending
			p.Deadline = now.Add(e.cfg.RetryDelay)
			next.Pending = &p
		}
		if in.timer.Kind == TimerExtend && !next.ExtendAt.IsZero() {
			next.ExtendAt = now.Add(e.cfg.RetryDelay)
		}
	}

	c.History = []HistoryEntry{{
		Revision: next.Revision, At: now, Event: in.Event, Observed: in.Observed, Cause: in.Cause,
		From: prev.State, To: next.State, Owner: next.Owner, Primary: page.Primary, Table: table.Name(),
		Outcome: outcome, Reason: reason, Calls: calls, MetaTime: in.MetaTime,
	}}
	c.KeepHistory = e.cfg.HistoryKeep
	if err := e.store.Commit(ctx, c); err != nil {
		e.cache.drop(next.Key())
		return Result{From: prev.State, To: prev.State, Thread: prev}, storeError(err, "committing "+string(in.Event))
	}
	e.cache.put(next)
	e.after(&prev, &next, in, table, d, outcome, now)
	return Result{Outcome: outcome, From: prev.State, To: next.State, Reason: reason, Thread: next}, nil
}

// transition applies a decided row to the record: the state, and the row's
// effects on the owner and the pending request; then activity and Meta's
// control window.
func (e *Engine) transition(next, t *Thread, in *Input, page Page, d states.Decision, now time.Time) {
	r := d.Rule
	next.State = d.To
	owners := map[states.Owner]string{
		states.OwnerRingCX:     page.RingCXAppID,
		states.OwnerPrimaryBot: page.PrimaryBotApp(),
		states.OwnerEventApp:   in.AppID, // "" when Meta does not say
		states.OwnerNone:       "",
	}
	if owner, ok := owners[r.Owner]; ok {
		next.Owner = owner
	}
	if r.Request == states.RequestStart {
		timeout := page.PendingTimeout
		if timeout <= 0 {
			timeout = e.cfg.PendingTimeout
		}
		next.Pending = &PendingRequest{RequestedAt: now, Deadline: now.Add(timeout), Reason: string(in.Cause)}
	}
	if r.Request == states.RequestEnd {
		next.Pending = nil
	}

	if in.Event == states.CustomerMessage || next.Owner != t.Owner || d.Changed() || r.Call != states.NoCall {
		next.LastActivity = now
	}
	idle := states.Holder(next.State) == states.ObservedNone
	switch {
	case idle:
		next.ControlExpires = time.Time{}
	case r.Call == states.CallExtend:
		next.ControlExpires = now.Add(e.cfg.ExtendBy)
	case next.Owner != t.Owner || t.ControlExpires.IsZero():
		next.ControlExpires = next.LastActivity.Add(e.cfg.ControlWindow)
	default:
		// Activity restarts Meta's window; it never shortens an extension.
		next.ControlExpires = maxTime(t.ControlExpires, next.LastActivity.Add(e.cfg.ControlWindow))
	}
	next.ControlTimer = time.Time{} // (records of earlier versions had one)
	if d.Changed() && !in.MetaTime.IsZero() && in.MetaTime.After(next.LastMetaTime) {
		next.LastMetaTime = in.MetaTime
	}
}

// armExtension sets when control is to be extended: while RingCX holds the
// thread and an agent's intervention is open, ExtendLead before control
// expires (at once if that is past); otherwise never.
func (e *Engine) armExtension(t *Thread, now time.Time) {
	t.ExtendAt = time.Time{}
	if states.Holder(t.State) != states.ObservedRingCX || t.Intervention == "" || t.ControlExpires.IsZero() {
		return
	}
	t.ExtendAt = maxTime(now, t.ControlExpires.Add(-e.cfg.ExtendLead))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// failQueue fails every content queued on the thread, in the commit c.
func (e *Engine) failQueue(ctx context.Context, c *Commit, key ThreadKey, reason string) error {
	queued, err := e.store.Queue(ctx, key)
	if err != nil {
		return storeError(err, "reading queued contents")
	}
	for _, ct := range queued {
		ct.Status = SyncFailed
		ct.Reason = reason
		c.Contents = append(c.Contents, ct)
		c.Dequeue = append(c.Dequeue, ct.ID)
	}
	return nil
}

func appendSeen(seen []uint64, h uint64) []uint64 {
	out := make([]uint64, 0, seenWindow)
	if n := len(seen); n >= seenWindow {
		seen = seen[n-seenWindow+1:]
	}
	out = append(out, seen...)
	return append(out, h)
}

// after runs a commit's effects: timers, gauges, metrics, and sending the
// queue when the row flushes it (an agent's new content is sent by its
// caller).
func (e *Engine) after(prev, next *Thread, in *Input, table states.Table, d *states.Decision, outcome string, now time.Time) {
	e.sched.sync(next)
	e.pendMu.Lock()
	if next.Pending != nil {
		e.pending[next.Key()] = next.Pending.RequestedAt
	} else {
		delete(e.pending, next.Key())
	}
	e.pendMu.Unlock()
	if prev.Pending != nil && next.Pending == nil && states.Holder(next.State) == states.ObservedRingCX {
		e.obs.ControlGranted(now.Sub(prev.Pending.RequestedAt))
	}
	e.obs.Transition(TransitionInfo{
		Table: table, Event: in.Event, From: prev.State, To: next.State,
		Outcome: outcome, Created: prev.Revision == 0,
	})
	if d != nil && d.Rule.Queue == states.QueueFlush && in.content == nil {
		e.scheduleFlush(next.Key())
	}
}
