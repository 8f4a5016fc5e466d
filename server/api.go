package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// handover is POST /1.0/bots/handover, the RingCX Bots API.
func (s *Server) handover(c echo.Context) (err error) {
	defer func() {
		direction := "to_" + c.QueryParam("to")
		if direction != "to_agent" && direction != "to_bot" {
			direction = "invalid"
		}
		outcome := "success"
		if err != nil {
			status, _ := describe(err)
			outcome = strconv.Itoa(status)
		}
		s.metrics.handover(direction, outcome)
	}()
	id := c.QueryParam("identity_foreign_id")
	from, to := c.QueryParam("from"), c.QueryParam("to")
	typ, appID := c.QueryParam("type"), c.QueryParam("app_id")
	switch {
	case id == "":
		return errNoIdentity
	case from == "":
		return badRequest("from is required: bot or agent (the side that has control before the handover)")
	case to == "":
		return badRequest("to is required: agent or bot (the side that should get control)")
	case from != "bot" && from != "agent":
		return badRequest("from=%q is invalid: use bot or agent", from)
	case to != "bot" && to != "agent":
		return badRequest("to=%q is invalid: use agent or bot", to)
	case from == to:
		return badRequest("from and to are both %q: a handover goes from bot to agent or from agent to bot", from)
	case typ == "":
		return badRequest("type is required: only messenger is supported")
	case typ != "messenger":
		return badRequest("type=%q is not supported: only messenger channels have the Bots API", typ)
	case to == "bot" && appID == "":
		return badRequest("app_id is required with to=bot: the Facebook app id of the bot that gets control")
	}
	key, err := s.identity(c, id)
	if err != nil {
		return err
	}
	in := engine.Input{Event: states.HandoverToAgent, Key: key, Cause: engine.CauseBotsAPI}
	if to == "bot" {
		page, _ := s.cfg.Engine.Page(key.PageID)
		if !page.IsBotApp(appID) {
			return badRequest("app_id %s is not a bot app of page %s; its bot apps are %s", appID, key.PageID, strings.Join(page.BotAppIDs, ", "))
		}
		in.Event, in.AppID = states.HandoverToBot, appID
	}
	if _, err := s.cfg.Engine.Apply(c.Request().Context(), in); err != nil {
		return err
	}
	return success(c)
}

var errNoIdentity = badRequest("identity_foreign_id is required: the customer's Messenger PSID")

// identityParam finds the thread of the request's ?identity_foreign_id=.
func (s *Server) identityParam(c echo.Context) (engine.ThreadKey, error) {
	id := c.QueryParam("identity_foreign_id")
	if id == "" {
		return engine.ThreadKey{}, errNoIdentity
	}
	return s.identity(c, id)
}

// identity finds the thread of an identity_foreign_id (optionally on one
// page, with page_id) among the pages of the request's token.
func (s *Server) identity(c echo.Context, id string) (engine.ThreadKey, error) {
	sc := scopeOf(c)
	if page := c.QueryParam("page_id"); page != "" {
		key := engine.ThreadKey{PageID: page, PSID: id}
		if !sc.allows(page) {
			return key, noThread(key)
		}
		if _, err := s.cfg.Engine.Thread(c.Request().Context(), key); err != nil {
			return key, err
		}
		return key, nil
	}
	if !sc.global {
		return s.findInScope(c.Request().Context(), sc, id)
	}
	return s.cfg.Engine.FindIdentity(c.Request().Context(), id)
}

// InterventionView is an intervention as the agent API shows it.
type InterventionView struct {
	ID                string     `json:"id"`
	IdentityForeignID string     `json:"identity_foreign_id"`
	PageID            string     `json:"page_id"`
	Status            string     `json:"status"`
	Closed            bool       `json:"closed"`
	OpenedAt          time.Time  `json:"created_at"`
	ClosedAt          *time.Time `json:"closed_at"`
	ThreadState       string     `json:"thread_state,omitempty"`
}

func interventionView(iv engine.Intervention, st states.State) InterventionView {
	v := InterventionView{ID: iv.ID, IdentityForeignID: iv.PSID, PageID: iv.PageID, Status: iv.Status,
		Closed: iv.Status == engine.InterventionClosed, OpenedAt: iv.OpenedAt, ThreadState: string(st)}
	if !iv.ClosedAt.IsZero() {
		t := iv.ClosedAt
		v.ClosedAt = &t
	}
	return v
}

// ContentView is a content as the agent API shows it.
type ContentView struct {
	ID                    string     `json:"id"`
	IdentityForeignID     string     `json:"identity_foreign_id"`
	PageID                string     `json:"page_id"`
	InterventionID        string     `json:"intervention_id,omitempty"`
	Body                  string     `json:"body"`
	SynchronizationStatus string     `json:"synchronization_status"`
	SynchronizationError  string     `json:"synchronization_error,omitempty"`
	ForeignID             string     `json:"foreign_id,omitempty"`
	CreatedAt             time.Time  `json:"created_at"`
	SynchronizedAt        *time.Time `json:"synchronized_at"`
}

func contentView(ct engine.Content) ContentView {
	v := ContentView{ID: ct.ID, IdentityForeignID: ct.PSID, PageID: ct.PageID, InterventionID: ct.InterventionID, Body: ct.Body,
		SynchronizationStatus: ct.Status, SynchronizationError: ct.Reason, ForeignID: ct.MessageID, CreatedAt: ct.CreatedAt}
	if !ct.SyncedAt.IsZero() {
		t := ct.SyncedAt
		v.SynchronizedAt = &t
	}
	return v
}

// openIntervention is POST /1.0/interventions?identity_foreign_id=.
func (s *Server) openIntervention(c echo.Context) error {
	key, err := s.identityParam(c)
	if err != nil {
		return err
	}
	iv, res, err := s.cfg.Engine.OpenIntervention(c.Request().Context(), key)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, interventionView(iv, res.To))
}

// closeIntervention is PUT /1.0/interventions/{id}/close.
func (s *Server) closeIntervention(c echo.Context) error {
	if _, err := s.intervention(c, c.Param("id")); err != nil {
		return err
	}
	iv, res, err := s.cfg.Engine.CloseIntervention(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, interventionView(iv, res.To))
}

// getIntervention is GET /1.0/interventions/{id}.
func (s *Server) getIntervention(c echo.Context) error {
	iv, err := s.intervention(c, c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, interventionView(iv, ""))
}

// createContent is POST /1.0/contents?identity_foreign_id=&body= (body may
// also be a form field, for long texts).
func (s *Server) createContent(c echo.Context) error {
	if c.QueryParam("identity_foreign_id") == "" {
		return errNoIdentity
	}
	body := c.FormValue("body")
	if body == "" {
		return badRequest("body is required: the text of the agent's reply, as ?body= or a form field")
	}
	key, err := s.identityParam(c)
	if err != nil {
		return err
	}
	ct, err := s.cfg.Engine.CreateContent(c.Request().Context(), key, body)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, contentView(ct))
}

// getContent is GET /1.0/contents/{id}.
func (s *Server) getContent(c echo.Context) error {
	ct, err := s.content(c, c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, contentView(ct))
}
