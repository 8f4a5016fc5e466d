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
	now := e.clock.Now()
	prev := *t
	next := *t
	next.Revision++
	next.UpdatedAt = now
	next.Primary = page.Primary
	if in.DedupKey != "" {
		next.Seen = appendSeen(t.Seen, dedupHash(in.DedupKey))
	}
	c := &Commit{Thread: &next, Expect: t.Revision}
	if t.Revision > 0 {
		c.Prev = &prev
	}
	c.ResolveIntent = in.resolveIntent || slices.ContainsFunc(calls, func(r CallRecord) bool { return r.Call != "thread_owner" })

	if d != nil {
		e.transition(&next, t, in, page, *d, now)
		if d.From == states.Pending && d.To != states.Pending && d.To != states.Agent {
			if err := e.failQueue(ctx, c, t.Key(), fmt.Sprintf("RingCX did not get control of the thread (%s)", in.Event), now); err != nil {
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
	if outcome == OutcomeFailed && in.timer != nil && in.timer.Kind == TimerRequest && next.Pending != nil {
		// The deadline's own call failed: try again later.
		p := *next.Pending
		p.Deadline = now.Add(e.cfg.RetryDelay)
		next.Pending = &p
	}

	c.History = []HistoryEntry{{
		Revision: next.Revision, At: now, Event: in.Event, Observed: in.Observed, Cause: in.Cause,
		From: prev.State, To: next.State, Owner: next.Owner, Primary: page.Primary,
		Outcome: outcome, Reason: reason, Calls: calls, MetaTime: in.MetaTime,
	}}
	if err := e.store.Commit(ctx, c); err != nil {
		e.cache.drop(next.Key())
		return Result{From: prev.State, To: prev.State, Thread: prev}, storeError(err, "committing "+string(in.Event))
	}
	e.cache.put(next)
	e.after(&prev, &next, in, page, outcome, now)
	return Result{Outcome: outcome, From: prev.State, To: next.State, Reason: reason, Thread: next}, nil
}

// transition sets what the decision changes in the record besides the state:
// the owner, the pending request, activity and Meta's control window.
func (e *Engine) transition(next, t *Thread, in *Input, page Page, d states.Decision, now time.Time) {
	next.State = d.To
	switch d.To {
	case states.Agent:
		next.Owner = page.RingCXAppID
	case states.Idle:
		next.Owner = ""
	case states.Bot, states.Pending:
		switch {
		case in.Event == states.CustomerMessage && d.From == states.Idle:
			next.Owner = page.PrimaryBotApp()
		case in.Event == states.OwnerObserved:
			next.Owner = in.AppID // "" when Meta hides the owner
		case in.AppID != "" && (in.Event == states.HandoverToBot || in.Event == states.ControlTaken || in.Event == states.ControlRequested):
			next.Owner = in.AppID
		}
	}

	switch {
	case d.To == states.Pending && d.From != states.Pending:
		timeout := page.PendingTimeout
		if timeout <= 0 {
			timeout = e.cfg.PendingTimeout
		}
		next.Pending = &PendingRequest{RequestedAt: now, Deadline: now.Add(timeout), Reason: in.Cause}
	case d.To != states.Pending:
		next.Pending = nil
	}

	if in.Event == states.CustomerMessage || next.Owner != t.Owner || d.Changed() || d.Rule.Call != states.NoCall {
		next.LastActivity = now
	}
	if next.State == states.Idle {
		next.ControlExpires, next.ControlTimer = time.Time{}, time.Time{}
	} else {
		next.ControlExpires = next.LastActivity.Add(e.cfg.ControlWindow)
		// The durable timer stays where it is unless it is missing, late,
		// or has already fired.
		if next.ControlTimer.IsZero() || next.ControlTimer.After(next.ControlExpires) || next.ControlTimer.Before(now) {
			next.ControlTimer = next.ControlExpires
		}
	}
	if d.Changed() && !in.MetaTime.IsZero() && in.MetaTime.After(next.LastMetaTime) {
		next.LastMetaTime = in.MetaTime
	}
}

// failQueue fails every content queued on the thread, in the commit c.
func (e *Engine) failQueue(ctx context.Context, c *Commit, key ThreadKey, reason string, now time.Time) error {
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
// queue once RingCX owns the thread.
func (e *Engine) after(prev, next *Thread, in *Input, page Page, outcome string, now time.Time) {
	e.sched.sync(next)
	e.pendMu.Lock()
	if next.Pending != nil {
		e.pending[next.Key()] = next.Pending.RequestedAt
	} else {
		delete(e.pending, next.Key())
	}
	e.pendMu.Unlock()
	if prev.Pending != nil && next.State == states.Agent {
		e.obs.ControlGranted(now.Sub(prev.Pending.RequestedAt))
	}
	e.obs.Transition(TransitionInfo{
		Primary: page.Primary, Event: in.Event, From: prev.State, To: next.State,
		Outcome: outcome, Created: prev.Revision == 0,
	})
	if next.State == states.Agent && prev.State != states.Agent && in.content == nil {
		e.scheduleFlush(next.Key())
	}
}
