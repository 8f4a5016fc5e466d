package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/threadctl/threadctl/states"
)

// Notice is one event of a Meta webhook as the engine reads it. The server
// copies Meta's JSON into it field by field; what it means for a thread is
// decided here (Translate), once, for the server and the tests alike.
type Notice struct {
	PageID  string `json:"page_id"`
	PSID    string `json:"psid,omitempty"` // the customer
	Channel string `json:"channel"`        // ChannelMessaging or ChannelStandby
	// Kind is Meta's name for the event: one of the Notice* kinds, or any
	// other (echo, read, delivery…), which threadctl does not use.
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`          // Meta's timestamp
	MID  string    `json:"mid,omitempty"` // a message's id

	PrevOwner string `json:"prev_owner,omitempty"` // pass and take: the app that had control ("" if idle)
	NewOwner  string `json:"new_owner,omitempty"`  // pass and take: the app that has it now
	Requester string `json:"requester,omitempty"`  // request_thread_control: the app asking for control

	Roles map[string][]string `json:"roles,omitempty"` // app_roles: app id → roles
}

// Kinds of Meta webhook events the engine uses, as Meta names them.
const (
	NoticeMessage  = "message"
	NoticePostback = "postback"
	NoticePass     = "pass_thread_control"
	NoticeTake     = "take_thread_control"
	NoticeRequest  = "request_thread_control"
	NoticeAppRoles = "app_roles"
)

// Outcomes of webhook events besides those of HistoryEntry and Result.
const (
	OutcomeSkipped = "skipped" // an event threadctl has no use for
	OutcomeError   = "error"   // not applied: the event was invalid, or the store failed
)

// Translate says what a webhook event means for a thread of page p, from the
// RingCX app's point of view:
//
//   - a customer message or postback → customer_message, with its channel;
//   - pass_thread_control to RingCX → control_passed; to another app →
//     owner_observed (other);
//   - take_thread_control from RingCX → control_taken; between other apps →
//     owner_observed (other);
//   - request_thread_control by another app → control_requested.
//
// Each input carries a de-duplication key built from the event's identity.
// ok is false, with the reason, for events that change no thread (app_roles
// is applied to the page by Receive; echoes, reads, deliveries are not used).
func Translate(p Page, n Notice) (in Input, ok bool, why string) {
	in = Input{
		Key: ThreadKey{PageID: p.ID, PSID: n.PSID}, Cause: CauseWebhook, Create: true,
		MetaTime: n.Time, Channel: n.Channel,
	}
	stamp := n.Time.UnixMilli()
	switch n.Kind {
	case NoticeMessage, NoticePostback:
		in.Event = states.CustomerMessage
		in.DedupKey = fmt.Sprintf("%s:%d", n.Kind, stamp)
		if n.MID != "" {
			in.DedupKey = "mid:" + n.MID
		}
	case NoticePass:
		in.AppID = n.NewOwner
		in.DedupKey = fmt.Sprintf("pass:%d:%s:%s", stamp, n.PrevOwner, n.NewOwner)
		in.Event, in.Observed = states.OwnerObserved, states.ObservedOther
		if n.NewOwner == p.RingCXAppID {
			in.Event, in.Observed = states.ControlPassed, ""
		}
	case NoticeTake:
		in.AppID = n.NewOwner
		in.DedupKey = fmt.Sprintf("take:%d:%s:%s", stamp, n.PrevOwner, n.NewOwner)
		switch {
		case n.NewOwner == p.RingCXAppID:
			return Input{}, false, "take_thread_control by RingCX itself"
		case n.PrevOwner == p.RingCXAppID || n.PrevOwner == "":
			// HOP v1 payloads omit previous_owner_app_id: it is us, the
			// app receiving the event.
			in.Event = states.ControlTaken
		default:
			in.Event, in.Observed = states.OwnerObserved, states.ObservedOther
		}
	case NoticeRequest:
		if n.Requester == p.RingCXAppID {
			return Input{}, false, "request_thread_control by RingCX itself"
		}
		in.Event, in.AppID = states.ControlRequested, n.Requester
		in.DedupKey = fmt.Sprintf("request:%d:%s", stamp, n.Requester)
	case NoticeAppRoles:
		return Input{}, false, "app_roles changes the page, not a thread"
	default:
		return Input{}, false, n.Kind + " events are not used"
	}
	return in, true, ""
}

// Receive takes the events of one Meta webhook: app_roles change their
// page's primary; the others are translated (Translate) and, per thread in
// order and threads in parallel, applied at once when that needs no Graph
// call and the thread is free, or else accepted durably and applied in the
// background (inbox.go). It returns once every event is durable — applied
// or accepted — and never waits for Meta; its error is a store failure,
// for Meta to deliver again. Every event's outcome is reported to the
// Observer.
func (e *Engine) Receive(ctx context.Context, notices []Notice) error {
	byThread := map[ThreadKey][]received{}
	var order []ThreadKey
	for _, n := range notices {
		p, ok := e.Page(n.PageID)
		if !ok {
			e.obs.WebhookEvent(n.Kind, OutcomeSkipped)
			e.log.Debug("webhook event skipped", "kind", n.Kind, "why", "page "+n.PageID+" is not configured")
			continue
		}
		if n.Kind == NoticeAppRoles {
			if _, err := e.ChangePrimary(ctx, p.ID, n.Roles); err != nil {
				e.obs.WebhookEvent(n.Kind, OutcomeError)
				return err
			}
			e.obs.WebhookEvent(n.Kind, OutcomeApplied)
			continue
		}
		in, ok, why := Translate(p, n)
		if !ok {
			e.obs.WebhookEvent(n.Kind, OutcomeSkipped)
			e.log.Debug("webhook event skipped", "kind", n.Kind, "why", why)
			continue
		}
		if err := validateInput(&in); err != nil {
			e.obs.WebhookEvent(n.Kind, OutcomeError)
			e.log.Warn("webhook event not applied", "kind", n.Kind, "err", err)
			continue
		}
		if _, seen := byThread[in.Key]; !seen {
			order = append(order, in.Key)
		}
		byThread[in.Key] = append(byThread[in.Key], received{notice: n, in: in})
	}
	if len(order) == 1 {
		// One thread, the common case: no goroutine to start and wait for.
		return e.receiveThread(ctx, order[0], byThread[order[0]])
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, k := range order {
		wg.Go(func() {
			if err := e.receiveThread(ctx, k, byThread[k]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// received is a translated webhook event and the event it came from.
type received struct {
	notice Notice
	in     Input
}

// receiveThread applies one thread's events of a webhook at once, as long as
// the thread is free and they need no Graph call, and accepts the rest.
func (e *Engine) receiveThread(ctx context.Context, k ThreadKey, rs []received) error {
	i := 0
	if unlock, ok := e.claim(k); ok {
		last := e.recent.last(k)
		for ; i < len(rs); i++ {
			in := &rs[i].in
			in.lastCall = last
			res, err, then := e.attempt(ctx, in, &budget{noCalls: true})
			if then == deferred {
				break
			}
			if errors.Is(err, ErrConflict) {
				// Another instance changed the thread since it was read:
				// the event is accepted, and applied by the worker, which
				// reads the thread again.
				e.cache.drop(k)
				break
			}
			if then == refresh {
				// The message contradicts threadctl's view of the owner:
				// ask Meta, without making Meta wait.
				e.background(func(ctx context.Context) { e.refreshLater(ctx, k) })
			}
			if ErrorCode(err) == CodeUnavailable {
				unlock()
				e.obs.WebhookEvent(rs[i].notice.Kind, OutcomeError)
				return err
			}
			e.reportWebhook(rs[i].notice.Kind, *in, res, err)
		}
		unlock()
	}
	if i == len(rs) {
		return nil
	}
	var notices []Notice
	for _, r := range rs[i:] {
		notices = append(notices, r.notice)
	}
	seqs, err := e.store.Accept(ctx, notices)
	if err != nil {
		for _, n := range notices {
			e.obs.WebhookEvent(n.Kind, OutcomeError)
		}
		return storeError(err, "accepting webhook events")
	}
	as := make([]Accepted, len(seqs))
	for j, seq := range seqs {
		as[j] = Accepted{Seq: seq, Notice: notices[j], At: e.clock.Now()}
	}
	e.enqueue(as)
	return nil
}

// refreshLater asks Meta who owns a thread, in the background.
func (e *Engine) refreshLater(ctx context.Context, k ThreadKey) {
	unlock := e.locks.lock(k)
	defer unlock()
	if _, err := e.refreshOwner(ctx, k, CauseCheck); err != nil {
		e.log.Warn("owner check after a customer message failed", "thread", k, "err", err)
	}
}

// reportWebhook reports what became of a webhook event and logs failures.
// What Meta refused is recorded in the thread's history; an event the
// engine could not apply (conflict, unknown thread, invalid) is logged.
func (e *Engine) reportWebhook(kind string, in Input, res Result, err error) {
	outcome := res.Outcome
	switch ErrorCode(err) {
	case "":
		e.log.Debug("webhook event", "thread", in.Key, "event", in.Event, "outcome", outcome, "from", res.From, "to", res.To)
	case CodeMeta:
		e.log.Warn("webhook event failed", "thread", in.Key, "event", in.Event, "err", err)
		outcome = OutcomeFailed
	default:
		e.log.Warn("webhook event not applied", "thread", in.Key, "event", in.Event, "err", err)
		outcome = OutcomeError
	}
	e.obs.WebhookEvent(kind, outcome)
}
