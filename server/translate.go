package server

import (
	"fmt"
	"strconv"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/states"
)

// Translation is what one webhook POST asks of the engine.
type Translation struct {
	Inputs  []Event
	Roles   []RoleChange // app_roles events, applied to pages
	Skipped []Skip       // events threadctl has no use for
}

// Event is an engine event and the kind of webhook event it came from.
type Event struct {
	Kind string
	engine.Input
}

// Skip is a webhook event threadctl does not apply, and why.
type Skip struct {
	Kind, Why string
}

// RoleChange is an app_roles event for a page.
type RoleChange struct {
	PageID string
	Roles  map[string][]string
}

// Translate maps Meta's webhook events to engine events, from the RingCX
// app's point of view on each page (page returns a configured page):
//
//   - a customer message or postback → customer_message, with its channel;
//   - pass_thread_control to RingCX → control_passed; to another app →
//     owner_observed (other);
//   - take_thread_control from RingCX → control_taken;
//   - request_thread_control by another app → control_requested;
//   - app_roles → a change of the page's primary.
//
// Echoes, reads and deliveries are skipped.
func Translate(w *messenger.Webhook, page func(id string) (engine.Page, bool)) Translation {
	var tr Translation
	for _, en := range w.Entry {
		p, ok := page(string(en.ID))
		if !ok {
			tr.Skipped = append(tr.Skipped, Skip{Kind: "entry", Why: fmt.Sprintf("page %s is not configured", en.ID)})
			continue
		}
		for i := range en.Messaging {
			tr.add(p, &en.Messaging[i], engine.ChannelMessaging)
		}
		for i := range en.Standby {
			tr.add(p, &en.Standby[i], engine.ChannelStandby)
		}
	}
	return tr
}

func (tr *Translation) add(p engine.Page, ev *messenger.Event, channel string) {
	key := engine.ThreadKey{PageID: p.ID, PSID: string(ev.CustomerID())}
	in := engine.Input{Key: key, Cause: engine.CauseWebhook, Create: true, MetaTime: ev.Time(), Channel: channel}
	stamp := strconv.FormatInt(ev.Timestamp, 10)
	kind := ev.Kind()
	switch kind {
	case messenger.KindMessage, messenger.KindPostback:
		in.Event = states.CustomerMessage
		in.DedupKey = kind + ":" + stamp
		if ev.Message != nil && ev.Message.MID != "" {
			in.DedupKey = "mid:" + ev.Message.MID
		}
	case messenger.KindPassThreadControl:
		pass := ev.PassThreadControl
		in.AppID = string(pass.NewOwnerAppID)
		in.DedupKey = fmt.Sprintf("pass:%s:%s:%s", stamp, pass.PreviousOwnerAppID, pass.NewOwnerAppID)
		if in.AppID == p.RingCXAppID {
			in.Event = states.ControlPassed
		} else {
			in.Event, in.Observed = states.OwnerObserved, states.ObservedOther
		}
	case messenger.KindTakeThreadControl:
		take := ev.TakeThreadControl
		in.AppID = string(take.NewOwnerAppID)
		in.DedupKey = fmt.Sprintf("take:%s:%s:%s", stamp, take.PreviousOwnerAppID, take.NewOwnerAppID)
		switch {
		case in.AppID == p.RingCXAppID:
			tr.Skipped = append(tr.Skipped, Skip{Kind: kind, Why: "take_thread_control by RingCX itself"})
			return
		case string(take.PreviousOwnerAppID) == p.RingCXAppID || take.PreviousOwnerAppID == "":
			// HOP v1 payloads omit previous_owner_app_id: it is us, the
			// app receiving the event.
			in.Event = states.ControlTaken
		default:
			in.Event, in.Observed = states.OwnerObserved, states.ObservedOther
		}
	case messenger.KindRequestThreadControl:
		req := ev.RequestThreadControl
		if string(req.RequestedOwnerAppID) == p.RingCXAppID {
			tr.Skipped = append(tr.Skipped, Skip{Kind: kind, Why: "request_thread_control by RingCX itself"})
			return
		}
		in.Event = states.ControlRequested
		in.AppID = string(req.RequestedOwnerAppID)
		in.DedupKey = fmt.Sprintf("request:%s:%s", stamp, in.AppID)
	case messenger.KindAppRoles:
		tr.Roles = append(tr.Roles, RoleChange{PageID: p.ID, Roles: ev.AppRoles})
		return
	default:
		tr.Skipped = append(tr.Skipped, Skip{Kind: kind, Why: kind + " events are not used"})
		return
	}
	tr.Inputs = append(tr.Inputs, Event{Kind: kind, Input: in})
}
