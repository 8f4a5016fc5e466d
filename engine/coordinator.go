package engine

import (
	"context"
	"time"
)

// Several engine instances may share one store (SPEC.md §8). Each serialises
// its own work per thread; across instances, a thread's commits are
// serialised by the store's compare-and-swap on the revision read: a commit
// or intent refused with ErrConflict makes the engine drop its cached
// record, read the thread again and decide the event again (applyLocked).
// A Coordinator says which instance is the leader: only the leader fires
// durable timers, prunes, and takes over the work an instance that died left
// (its unresolved intents, accepted webhook events and queued contents).
// Without one, the engine is alone on its store and always leads.

// Coordinator coordinates the engine instances sharing a store.
type Coordinator interface {
	// Leader reports this instance's leadership until ctx ends: true when
	// it becomes the leader, false when it stops being it. The channel is
	// closed when ctx ends.
	Leader(ctx context.Context) <-chan bool
	// Timers delivers the timers that commits of any instance arm from the
	// call on, until ctx ends or the feed breaks (the channel is then
	// closed; the caller asks again and reloads the index).
	Timers(ctx context.Context) <-chan Timer
	// Orphans hands this instance the work of instances that are gone —
	// their unresolved intents, accepted events and queued threads — so
	// that its Store's Intents, Accepted and QueuedThreads include them
	// from then on.
	Orphans(ctx context.Context) (Orphans, error)
	// TakeoverInterval is how often the leader asks for orphans: well
	// within the time an instance's death takes to be noticed.
	TakeoverInterval() time.Duration
}

// Orphans is work a dead instance left, now this instance's.
type Orphans struct {
	Intents  []Intent
	Accepted []Accepted
	Queued   []ThreadKey
}

// maxConflicts bounds how often one event is decided again after another
// instance changed its thread between the read and the commit, or was
// making a Graph call on it: with conflictPause, about 2 s in all.
const maxConflicts = 10

// conflictPause waits a little before the n-th retry of an event whose
// commit met another instance's: growing (5 ms, 20 ms, 45 ms… at most
// 500 ms), jittered so that two instances do not meet again.
func (e *Engine) conflictPause(ctx context.Context, n int) {
	d := min(time.Duration(n*n)*5*time.Millisecond, 500*time.Millisecond) + time.Duration(time.Now().UnixNano()%5)*time.Millisecond
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// isLeader reports whether this instance fires timers and prunes.
func (e *Engine) isLeader() bool { return e.coord == nil || e.leader.Load() }

// coordinate follows the coordinator's leadership until the engine closes:
// while leading, it feeds the scheduler the timers other instances arm and
// takes over orphaned work every TakeoverInterval.
func (e *Engine) coordinate(ctx context.Context) {
	var stop func()
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for leading := range e.coord.Leader(ctx) {
		switch {
		case leading && stop == nil:
			lctx, cancel := context.WithCancel(ctx)
			stop = cancel
			e.leader.Store(true)
			e.log.Info("this instance leads: it fires the timers and takes over what dead instances left")
			e.spawn(func(context.Context) { e.lead(lctx) })
		case !leading && stop != nil:
			stop()
			stop = nil
			e.leader.Store(false)
			e.log.Warn("this instance no longer leads")
		}
	}
}

// lead runs while this instance leads.
func (e *Engine) lead(ctx context.Context) {
	go func() {
		for ctx.Err() == nil {
			feed := e.coord.Timers(ctx)
			// Timers armed before the feed began are in the index: read
			// it again from the start (overdue ones fire at once).
			e.sched.reset()
			for t := range feed {
				e.sched.set(t)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	every := e.coord.TakeoverInterval()
	for {
		e.takeOver(ctx)
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(every):
		}
	}
}

// takeOver settles the work of dead instances, as recover does at start.
func (e *Engine) takeOver(ctx context.Context) {
	o, err := e.coord.Orphans(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("looking for work dead instances left failed; trying again", "err", err)
		}
		return
	}
	if len(o.Intents)+len(o.Accepted)+len(o.Queued) == 0 {
		return
	}
	e.log.Info("taking over what a dead instance left", "intents", len(o.Intents), "accepted", len(o.Accepted), "queued_threads", len(o.Queued))
	e.settle(ctx, o.Intents, o.Queued)
	e.enqueue(o.Accepted)
}

// Leading reports whether this instance leads: fires the timers and takes
// over dead instances' work. Without a Coordinator it always does.
func (e *Engine) Leading() bool { return e.isLeader() }
