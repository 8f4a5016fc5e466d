package server

import (
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
)

// webhookVerify is GET /webhooks/messenger, Meta's subscription handshake.
func (s *Server) webhookVerify(c echo.Context) error {
	challenge, err := messenger.VerifyChallenge(c.QueryParam("hub.mode"), c.QueryParam("hub.verify_token"), c.QueryParam("hub.challenge"), s.cfg.VerifyToken)
	if err != nil {
		return &apiError{status: http.StatusForbidden, msg: err.Error()}
	}
	return c.String(http.StatusOK, challenge)
}

// webhookReceive is POST /webhooks/messenger: it checks the signature over
// the raw body, hands the events to the engine (which applies each thread's
// in order, threads in parallel) and answers 200 once they are durable. A
// store failure answers 503 so that Meta delivers again; duplicates are then
// ignored.
func (s *Server) webhookReceive(c echo.Context) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	if err := messenger.VerifySignature(body, c.Request().Header.Get("X-Hub-Signature-256"), s.cfg.WebhookSecrets...); err != nil {
		s.log.Warn("webhook refused", "request_id", requestID(c), "err", err)
		return &apiError{status: http.StatusForbidden, msg: err.Error() + "; nothing was applied"}
	}
	w, err := messenger.ParseWebhook(body)
	if err != nil {
		s.log.Warn("webhook unparsable", "request_id", requestID(c), "err", err)
		return badRequest("%v", err)
	}
	if err := s.cfg.Engine.Receive(c.Request().Context(), Notices(w)); err != nil {
		return err
	}
	return success(c)
}

// Notices copies a webhook's events into the engine's terms, in order: every
// entry's messaging events, then its standby events. It gives them no
// meaning; engine.Translate does.
func Notices(w *messenger.Webhook) []engine.Notice {
	var out []engine.Notice
	for _, en := range w.Entry {
		for _, list := range []struct {
			channel string
			events  []messenger.MessagingEvent
		}{{engine.ChannelMessaging, en.Messaging}, {engine.ChannelStandby, en.Standby}} {
			for i := range list.events {
				out = append(out, notice(string(en.ID), list.channel, &list.events[i]))
			}
		}
	}
	return out
}

func notice(pageID, channel string, ev *messenger.MessagingEvent) engine.Notice {
	n := engine.Notice{
		PageID: pageID, PSID: string(ev.CustomerID()), Channel: channel,
		Kind: ev.Kind(), Time: ev.Time(), Roles: ev.AppRoles,
	}
	if ev.Message != nil {
		n.MID = ev.Message.MID
	}
	if p := ev.PassThreadControl; p != nil {
		n.PrevOwner, n.NewOwner = string(p.PreviousOwnerAppID), string(p.NewOwnerAppID)
	}
	if t := ev.TakeThreadControl; t != nil {
		n.PrevOwner, n.NewOwner = string(t.PreviousOwnerAppID), string(t.NewOwnerAppID)
	}
	if r := ev.RequestThreadControl; r != nil {
		n.Requester = string(r.RequestedOwnerAppID)
	}
	return n
}
