package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/threadctl/threadctl/states"
)

// MaxContentBody is the longest text Messenger's Send API accepts.
const MaxContentBody = 2000

// OpenIntervention opens an agent's intervention on a thread and fires
// agent_engage, which asks for (or takes) control unless RingCX owns the
// thread. If Meta refuses, nothing is opened and the error says why.
func (e *Engine) OpenIntervention(ctx context.Context, key ThreadKey) (Intervention, Result, error) {
	unlock := e.locks.lock(key)
	defer unlock()
	t, err := e.loadLocked(ctx, key)
	if err != nil {
		return Intervention{}, Result{}, e.threadErr(err, key)
	}
	if t.Intervention != "" {
		return Intervention{}, Result{}, errorf(CodeConflict, nil, "an intervention (%s) is already open on this identity; close it before opening another", t.Intervention)
	}
	now := e.clock.Now()
	iv := Intervention{ID: newID(now), PageID: key.PageID, PSID: key.PSID, Status: InterventionOpen, OpenedAt: now}
	res, err := e.applyLocked(ctx, &Input{Event: states.AgentEngage, Key: key, Cause: CauseAgent, openIntervention: &iv})
	if err != nil {
		return Intervention{}, res, err
	}
	return iv, res, nil
}

// CloseIntervention closes an intervention and fires intervention_closed:
// RingCX releases the thread (agent) or gives up its request (pending). In
// other states the intervention is closed and the event recorded as ignored.
// Closing a closed intervention returns it unchanged.
func (e *Engine) CloseIntervention(ctx context.Context, id string) (Intervention, Result, error) {
	iv, err := e.Intervention(ctx, id)
	if err != nil || iv.Status == InterventionClosed {
		return iv, Result{}, err
	}
	key := ThreadKey{PageID: iv.PageID, PSID: iv.PSID}
	unlock := e.locks.lock(key)
	defer unlock()
	if iv, err = e.Intervention(ctx, id); err != nil || iv.Status == InterventionClosed {
		return iv, Result{}, err
	}
	t, err := e.loadLocked(ctx, key)
	if err != nil {
		return iv, Result{}, e.threadErr(err, key)
	}
	if t.Intervention != iv.ID {
		// The cached record may be older than another instance's commit:
		// read the thread itself before deciding.
		e.cache.drop(key)
		if t, err = e.loadLocked(ctx, key); err != nil {
			return iv, Result{}, e.threadErr(err, key)
		}
	}
	if t.Intervention != iv.ID {
		// Not the thread's current intervention: close the record only.
		iv.Status, iv.ClosedAt = InterventionClosed, e.clock.Now()
		if err := e.store.Commit(ctx, &Commit{Interventions: []Intervention{iv}}); err != nil {
			return iv, Result{}, storeError(err, "closing intervention")
		}
		return iv, Result{From: t.State, To: t.State, Outcome: OutcomeNoChange, Thread: t}, nil
	}
	res, err := e.applyLocked(ctx, &Input{Event: states.InterventionClosed, Key: key, Cause: CauseAgent, closeIntervention: &iv})
	if err != nil {
		return iv, res, err
	}
	iv, err = e.Intervention(ctx, id)
	return iv, res, err
}

// Intervention returns an intervention by id.
func (e *Engine) Intervention(ctx context.Context, id string) (Intervention, error) {
	iv, err := e.store.Intervention(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return iv, errorf(CodeNotFound, err, "unknown intervention %s", id)
	}
	return iv, storeError(err, "reading intervention")
}

// Content returns a content by id.
func (e *Engine) Content(ctx context.Context, id string) (Content, error) {
	ct, err := e.store.Content(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return ct, errorf(CodeNotFound, err, "unknown content %s", id)
	}
	return ct, storeError(err, "reading content")
}

// Queue returns the contents awaiting synchronisation on a thread.
func (e *Engine) Queue(ctx context.Context, key ThreadKey) ([]Content, error) {
	q, err := e.store.Queue(ctx, key)
	return q, storeError(err, "reading queued contents")
}

// CreateContent records an agent's reply and synchronises it: at once when
// RingCX owns the thread, otherwise it is queued and agent_engage fired, and
// it is sent when control arrives. The content is returned with its
// synchronisation status; a content that could not be created is an error.
func (e *Engine) CreateContent(ctx context.Context, key ThreadKey, body string) (Content, error) {
	switch {
	case strings.TrimSpace(body) == "":
		return Content{}, errorf(CodeInvalid, nil, "body is required: the text of the agent's reply")
	case !utf8.ValidString(body):
		return Content{}, errorf(CodeInvalid, nil, "body must be UTF-8 text")
	case utf8.RuneCountInString(body) > MaxContentBody:
		return Content{}, errorf(CodeInvalid, nil, "body has %d characters; Messenger accepts at most %d", utf8.RuneCountInString(body), MaxContentBody)
	}
	unlock := e.locks.lock(key)
	defer unlock()
	t, err := e.loadLocked(ctx, key)
	if err != nil {
		return Content{}, e.threadErr(err, key)
	}
	now := e.clock.Now()
	ct := Content{ID: newID(now), PageID: key.PageID, PSID: key.PSID, InterventionID: t.Intervention, Body: body, Status: SyncPending, CreatedAt: now}
	to := t.State
	if states.Holder(t.State) == states.ObservedRingCX {
		// Durable in the queue first, then sent in order.
		if err := e.store.Commit(ctx, &Commit{Key: key, Contents: []Content{ct}, Enqueue: []string{ct.ID}}); err != nil {
			return Content{}, storeError(err, "saving content")
		}
	} else {
		res, err := e.applyLocked(ctx, &Input{Event: states.AgentEngage, Key: key, Cause: CauseAgent, content: &ct})
		if err != nil && ErrorCode(err) != CodeMeta {
			return Content{}, err
		}
		to = res.To
	}
	if states.Holder(to) == states.ObservedRingCX {
		e.flushLocked(ctx, key)
	}
	return e.Content(ctx, ct.ID)
}

func (e *Engine) threadErr(err error, key ThreadKey) error {
	if errors.Is(err, ErrNotFound) {
		return errorf(CodeNotFound, err, "unknown identity %s on page %s", key.PSID, key.PageID)
	}
	return storeError(err, "reading thread")
}

// scheduleFlush sends a thread's queue in the background.
func (e *Engine) scheduleFlush(key ThreadKey) {
	e.flushMu.Lock()
	if e.flushing[key] {
		e.flushMu.Unlock()
		return
	}
	e.flushing[key] = true
	e.flushMu.Unlock()
	e.background(func(ctx context.Context) {
		// Most threads RingCX gets have nothing queued: look without the
		// thread's lock, so that the thread's next event is not kept
		// waiting (on a shared store, not sent to the inbox) by a read.
		// Contents queued after this look are sent by whoever queues them,
		// or by the next flush.
		if q, err := e.store.Queue(ctx, key); err == nil && len(q) == 0 {
			e.flushMu.Lock()
			delete(e.flushing, key)
			e.flushMu.Unlock()
			return
		}
		unlock := e.locks.lock(key)
		defer unlock()
		e.flushMu.Lock()
		delete(e.flushing, key)
		e.flushMu.Unlock()
		e.flushLocked(ctx, key)
	})
}

// flushLocked sends a thread's queued contents in order while RingCX owns
// it. A content Meta refuses because another app owns the thread stays
// queued: the state is corrected from thread_owner and agent_engage asks
// for control again ("retry the synchronisation"). Other failures fail that
// content with Meta's reason. The caller holds the thread's lock.
func (e *Engine) flushLocked(ctx context.Context, key ThreadKey) {
	corrected := false
	for ctx.Err() == nil {
		t, err := e.loadLocked(ctx, key)
		if err != nil {
			e.log.Error("flush: reading thread", "thread", key, "err", err)
			return
		}
		if states.Holder(t.State) != states.ObservedRingCX {
			return
		}
		queue, err := e.store.Queue(ctx, key)
		if err != nil || len(queue) == 0 {
			if err != nil {
				e.log.Error("flush: reading queue", "thread", key, "err", err)
			}
			return
		}
		ct := queue[0]
		mid, err := e.graph.SendText(ctx, key.PageID, key.PSID, ct.Body)
		switch {
		case err == nil:
			ct.Status, ct.MessageID, ct.SyncedAt, ct.Reason = SyncSynced, mid, e.clock.Now(), ""
		case ctx.Err() != nil:
			return // shutting down: it stays queued for the next start
		case notOwner(err) && !corrected:
			corrected = true
			e.reengage(ctx, key, err)
			continue
		default:
			ct.Status, ct.Reason = SyncFailed, fmt.Sprintf("Meta refused the message: %v", err)
		}
		if err := e.store.Commit(ctx, &Commit{Key: key, Contents: []Content{ct}, Dequeue: []string{ct.ID}}); err != nil {
			e.log.Error("flush: saving content", "thread", key, "content", ct.ID, "err", err)
			return
		}
	}
}

// reengage handles a Send API refusal for not owning the thread: refresh the
// owner from thread_owner, then, unless RingCX holds the thread or waits for
// it, fire agent_engage for the queued contents. When Meta cannot be asked,
// or RingCX cannot ask for control, the queued contents fail with the
// reason: nothing would send them later.
func (e *Engine) reengage(ctx context.Context, key ThreadKey, sendErr error) {
	res, err := e.refreshOwner(ctx, key, CauseCheck)
	if err != nil {
		e.log.Warn("flush: refreshing the owner failed", "thread", key, "send_err", sendErr, "err", err)
		e.failQueued(ctx, key, fmt.Sprintf("Meta refused the message (%v), and could not be asked who controls the thread: %v", sendErr, err))
		return
	}
	if states.Holder(res.To) == states.ObservedRingCX || res.Thread.Pending != nil {
		return
	}
	if _, err := e.applyLocked(ctx, &Input{Event: states.AgentEngage, Key: key, Cause: CauseAgent}); err != nil {
		e.log.Warn("flush: asking for control again failed", "thread", key, "err", err)
		e.failQueued(ctx, key, "another app controls the thread, and RingCX could not get control back: "+err.Error())
	}
}

// failQueued fails every content queued on a thread, with reason.
func (e *Engine) failQueued(ctx context.Context, key ThreadKey, reason string) {
	c := &Commit{Key: key}
	err := e.failQueue(ctx, c, key, reason)
	if err == nil && len(c.Contents) > 0 {
		err = e.store.Commit(ctx, c)
	}
	if err != nil {
		e.log.Error("flush: failing queued contents", "thread", key, "err", err)
	}
}

// History returns up to limit of a thread's entries below revision before
// (0: the newest), newest first.
func (e *Engine) History(ctx context.Context, key ThreadKey, before uint64, limit int) ([]HistoryEntry, error) {
	h, err := e.store.History(ctx, key, before, limit)
	return h, storeError(err, "reading history")
}

// ListThreads lists threads by state and page.
func (e *Engine) ListThreads(ctx context.Context, f ListFilter) ([]Thread, string, error) {
	threads, next, err := e.store.ListThreads(ctx, f)
	if errors.Is(err, ErrBadCursor) {
		return nil, "", errorf(CodeInvalid, err, "cursor %q is not one this list returned; start again without it", f.After)
	}
	return threads, next, storeError(err, "listing threads")
}
