package engine

import (
	"context"
	"errors"
	"sync"
	"time"
)

// A Meta webhook is answered as soon as its events are durable, and its
// answer never waits for Meta's Graph API (SPEC.md §3.3). Receive applies an
// event at once when that needs no Graph call and its thread is free;
// otherwise it accepts the event durably (Store.Accept) and a background
// worker applies the thread's accepted events in order, retrying a Graph
// call that fails transiently (no answer, Meta's server errors, rate limits)
// with backoff until it succeeds or Meta's answer makes it moot. Accepted
// events left by a crash are applied after the restart.

// inbox tracks the accepted events waiting per thread, and which threads
// have a worker draining them.
type inbox struct {
	mu      sync.Mutex
	waiting map[ThreadKey][]Accepted
}

// maxAcceptBackoff bounds the wait between attempts at an accepted event
// whose Graph call keeps failing transiently.
const maxAcceptBackoff = time.Minute

// claim takes thread k's lock for applying events at once, if no accepted
// event of the thread is waiting and nobody holds the lock.
func (e *Engine) claim(k ThreadKey) (unlock func(), ok bool) {
	e.inbox.mu.Lock()
	defer e.inbox.mu.Unlock()
	if len(e.inbox.waiting[k]) > 0 {
		return nil, false
	}
	return e.locks.tryLock(k)
}

// enqueue hands accepted events to their thread's worker, starting it if the
// thread had none waiting.
func (e *Engine) enqueue(as []Accepted) {
	e.inbox.mu.Lock()
	defer e.inbox.mu.Unlock()
	if e.inbox.waiting == nil {
		e.inbox.waiting = map[ThreadKey][]Accepted{}
	}
	for _, a := range as {
		k := ThreadKey{PageID: a.Notice.PageID, PSID: a.Notice.PSID}
		start := len(e.inbox.waiting[k]) == 0
		e.inbox.waiting[k] = append(e.inbox.waiting[k], a)
		if start {
			// A goroutine per thread with events waiting (not one of the
			// background slots, which a Meta outage would fill with waits);
			// its Graph calls are bounded per page.
			e.spawn(func(ctx context.Context) { e.drain(ctx, k) })
		}
	}
}

// drain applies thread k's accepted events in order until none waits.
func (e *Engine) drain(ctx context.Context, k ThreadKey) {
	backoff := e.cfg.RetryDelay / 4
	for ctx.Err() == nil {
		e.inbox.mu.Lock()
		q := e.inbox.waiting[k]
		if len(q) == 0 {
			delete(e.inbox.waiting, k)
			e.inbox.mu.Unlock()
			return
		}
		a := q[0]
		e.inbox.mu.Unlock()

		if retry := e.applyAccepted(ctx, a); retry {
			e.log.Warn("a Graph call of an accepted webhook event failed; trying again", "thread", k, "kind", a.Notice.Kind, "in", backoff)
			select {
			case <-ctx.Done():
				return // applied after the restart
			case <-e.clock.After(backoff):
			}
			backoff = min(2*backoff, maxAcceptBackoff)
			continue
		}
		backoff = e.cfg.RetryDelay / 4
		e.inbox.mu.Lock()
		e.inbox.waiting[k] = e.inbox.waiting[k][1:]
		e.inbox.mu.Unlock()
	}
}

// applyAccepted applies one accepted event and, unless its Graph call failed
// transiently (retry), removes it from the inbox. An event that no longer
// applies (its page is gone) is removed too.
func (e *Engine) applyAccepted(ctx context.Context, a Accepted) (retry bool) {
	page, ok := e.Page(a.Notice.PageID)
	var res Result
	var err error
	if ok {
		in, ok, _ := Translate(page, a.Notice)
		if ok {
			in.accepted = true
			res, err = e.Apply(ctx, in)
			if res.retry {
				return true
			}
			e.reportWebhook(a.Notice.Kind, in, res, err)
		}
	}
	if ErrorCode(err) == CodeUnavailable || errors.Is(err, ErrConflict) {
		// The store failed, or other instances kept changing the thread:
		// the event stays accepted and is tried again.
		return true
	}
	if err := e.store.Commit(ctx, &Commit{Consume: []uint64{a.Seq}}); err != nil {
		e.log.Error("could not remove an applied webhook event from the inbox; it will be applied again (as a duplicate) after a restart", "seq", a.Seq, "err", err)
	}
	return false
}

// waiting reports whether accepted events of thread k wait to be applied.
func (e *Engine) waiting(k ThreadKey) bool {
	e.inbox.mu.Lock()
	defer e.inbox.mu.Unlock()
	return len(e.inbox.waiting[k]) > 0
}

// Backlog is how many accepted webhook events wait to be applied.
func (e *Engine) Backlog() int {
	e.inbox.mu.Lock()
	defer e.inbox.mu.Unlock()
	n := 0
	for _, q := range e.inbox.waiting {
		n += len(q)
	}
	return n
}

// loadAccepted hands the events accepted before a restart to their workers.
func (e *Engine) loadAccepted(ctx context.Context) error {
	as, err := e.store.Accepted(ctx)
	if err != nil {
		return storeError(err, "loading accepted webhook events")
	}
	if len(as) > 0 {
		e.log.Info("applying webhook events accepted before the restart", "events", len(as))
	}
	e.enqueue(as)
	return nil
}
