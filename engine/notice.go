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
	PageID  string
	PSID    string // the customer
	Channel string // ChannelMessaging or ChannelStandby
	// Kind is Meta's name for the event: one of the Notice* kinds, or any
	// other (echo, read, delivery…), which threadctl does not use.
	Kind string
	Time time.Time // Meta's timestamp
	MID  string    // a message's id

	PrevOwner string // pass and take: the app that had control ("" if idle)
	NewOwner  string // pass and take: the app that has it now
	Requester string // request_thread_control: the app asking for control

	Roles map[string][]string // app_roles: app id → roles
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

// Receive applies the events of one Meta webhook: app_roles change their
// page's primary, the others are translated (Translate) and applied — each
// thread's events in order, different threads in parallel. It returns only
// failures worth Meta delivering again (the store's); what Meta refused, or
// the table ignored, is recorded in the threads' history. Every event's
// outcome is reported to the Observer.
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
		if _, seen := byThread[in.Key]; !seen {
			order = append(order, in.Key)
		}
		byThread[in.Key] = append(byThread[in.Key], received{kind: n.Kind, in: in})
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, k := range order {
		wg.Go(func() {
			for _, r := range byThread[k] {
				if err := e.receiveOne(ctx, r); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return // the thread's later events wait for Meta's retry
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// received is a translated webhook event and the kind it came as.
type received struct {
	kind string
	in   Input
}

func (e *Engine) receiveOne(ctx context.Context, r received) error {
	res, err := e.Apply(ctx, r.in)
	outcome := res.Outcome
	switch ErrorCode(err) {
	case "":
	case CodeMeta:
		// Recorded as failed in the thread's history.
		e.log.Warn("webhook event failed", "thread", r.in.Key, "event", r.in.Event, "err", err)
		outcome, err = OutcomeFailed, nil
	case CodeConflict, CodeNotFound, CodeInvalid:
		// Delivering it again would not help.
		e.log.Warn("webhook event not applied", "thread", r.in.Key, "event", r.in.Event, "err", err)
		outcome, err = OutcomeError, nil
	default:
		outcome = OutcomeError
	}
	e.obs.WebhookEvent(r.kind, outcome)
	if err == nil {
		e.log.Debug("webhook event", "thread", r.in.Key, "event", r.in.Event, "outcome", outcome, "from", res.From, "to", res.To)
	}
	return err
}
