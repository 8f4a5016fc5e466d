package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

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
// the raw body, applies every event (threads in parallel, each thread's
// events in order) and answers 200 once they are durable. A store failure
// answers 503 so that Meta delivers again; duplicates are then ignored.
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
	ctx := c.Request().Context()
	tr := Translate(w, s.cfg.Engine.Page)
	for _, sk := range tr.Skipped {
		s.log.Debug("webhook event skipped", "request_id", requestID(c), "kind", sk.Kind, "why", sk.Why)
		s.metrics.webhookEvent(sk.Kind, "skipped")
	}
	for _, rc := range tr.Roles {
		if _, err := s.cfg.Engine.ChangePrimary(ctx, rc.PageID, rc.Roles); err != nil {
			s.metrics.webhookEvent(messenger.KindAppRoles, "error")
			return err
		}
		s.metrics.webhookEvent(messenger.KindAppRoles, "applied")
	}
	if err := s.applyAll(ctx, tr.Inputs); err != nil {
		return err
	}
	return success(c)
}

// applyAll applies inputs, each thread's in order, different threads in
// parallel. Only store failures are returned: what Meta refused is recorded
// in the thread's history.
func (s *Server) applyAll(ctx context.Context, inputs []Event) error {
	if len(inputs) == 1 {
		return s.applyOne(ctx, inputs[0])
	}
	byThread := map[engine.ThreadKey][]Event{}
	var order []engine.ThreadKey
	for _, in := range inputs {
		if _, ok := byThread[in.Key]; !ok {
			order = append(order, in.Key)
		}
		byThread[in.Key] = append(byThread[in.Key], in)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, k := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, in := range byThread[k] {
				if err := s.applyOne(ctx, in); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) applyOne(ctx context.Context, in Event) error {
	res, err := s.cfg.Engine.Apply(ctx, in.Input)
	switch engine.ErrorCode(err) {
	case "":
	case engine.CodeMeta:
		// Recorded as failed in the thread's history.
		s.metrics.webhookEvent(in.Kind, engine.OutcomeFailed)
		s.log.Warn("webhook event failed", "thread", in.Key, "event", in.Event, "err", err)
		return nil
	case engine.CodeConflict, engine.CodeNotFound, engine.CodeInvalid:
		s.metrics.webhookEvent(in.Kind, "error")
		s.log.Warn("webhook event not applied", "thread", in.Key, "event", in.Event, "err", err)
		return nil
	default:
		s.metrics.webhookEvent(in.Kind, "error")
		return err
	}
	s.metrics.webhookEvent(in.Kind, res.Outcome)
	s.log.Debug("webhook event", "thread", in.Key, "event", in.Event, "outcome", res.Outcome, "from", res.From, "to", res.To)
	return nil
}
