package server

import (
	"errors"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

var contentTypes = map[string]string{
	"mmd": "text/plain; charset=utf-8",
	"dot": "text/vnd.graphviz; charset=utf-8",
	"svg": "image/svg+xml",
}

// svgCache keeps rendered state diagrams of the tables, which never change
// while the process runs.
type svgCache struct {
	mu  sync.Mutex
	svg map[states.Table][]byte
}

// splitFile splits "bot.svg" into "bot" and a known format.
func splitFile(file string) (name, format string, err error) {
	ext := path.Ext(file)
	format = strings.TrimPrefix(ext, ".")
	if _, ok := contentTypes[format]; !ok {
		return "", "", &apiError{status: http.StatusNotFound, msg: "unknown diagram format " + ext + ": use .mmd, .dot or .svg"}
	}
	return strings.TrimSuffix(file, ext), format, nil
}

// stateDiagram is GET /diagrams/{table}.{mmd|dot|svg}: bot, ringcx and none
// are the Handover Protocol's tables, cr-… Conversation Routing's.
func (s *Server) stateDiagram(c echo.Context) error {
	name, format, err := splitFile(c.Param("file"))
	if err != nil {
		return err
	}
	t, err := states.ParseTable(name)
	if err != nil {
		return &apiError{status: http.StatusNotFound, msg: err.Error()}
	}
	return s.renderState(c, t, nil, format)
}

// threadDiagram is GET /diagrams/threads/{identity_foreign_id}.{mmd|dot|svg}:
// the thread's page's machine with its state and last transitions marked.
func (s *Server) threadDiagram(c echo.Context) error {
	id, format, err := splitFile(c.Param("file"))
	if err != nil {
		return err
	}
	key, err := s.identity(c, id)
	if err != nil {
		return err
	}
	t, err := s.cfg.Engine.Thread(c.Request().Context(), key)
	if err != nil {
		return err
	}
	hist, err := s.cfg.Engine.History(c.Request().Context(), key, 0, diagramHistory)
	if err != nil {
		return err
	}
	page, _ := s.cfg.Engine.Page(key.PageID)
	return s.renderState(c, page.Table(s.cfg.Engine.Now()), threadHighlight(t, hist, diagramMarks), format)
}

// A thread's diagram marks its last diagramMarks state changes among its
// diagramHistory newest entries (the thread view looks through more when it
// shows more of the newest).
const (
	diagramHistory = 20
	diagramMarks   = 3
)

// threadHighlight marks a thread's state and its last n transitions that
// changed the state.
func threadHighlight(t engine.Thread, newestFirst []engine.HistoryEntry, n int) *diagrams.Highlight {
	h := &diagrams.Highlight{State: t.State}
	for _, e := range newestFirst {
		if len(h.Recent) == n {
			break
		}
		if e.From != e.To {
			h.Recent = append(h.Recent, diagrams.Transition{Event: e.Event, Observed: e.Observed, From: e.From, To: e.To})
		}
	}
	return h
}

func (s *Server) renderState(c echo.Context, p states.Table, h *diagrams.Highlight, format string) error {
	var body []byte
	switch format {
	case "mmd":
		body = []byte(diagrams.Mermaid(p, h))
	case "dot":
		body = []byte(diagrams.DOT(p, h))
	case "svg":
		var err error
		if body, err = s.stateSVG(c, p, h); err != nil {
			return err
		}
	}
	return c.Blob(http.StatusOK, contentTypes[format], body)
}

// StateSVG renders a state diagram to SVG (cached without highlight).
func (s *Server) stateSVG(c echo.Context, p states.Table, h *diagrams.Highlight) ([]byte, error) {
	if h == nil {
		s.svgs.mu.Lock()
		cached := s.svgs.svg[p]
		s.svgs.mu.Unlock()
		if cached != nil {
			return cached, nil
		}
	}
	svg, err := diagrams.SVG(c.Request().Context(), diagrams.DOT(p, h))
	if errors.Is(err, diagrams.ErrNoGraphviz) {
		return nil, &apiError{status: http.StatusNotImplemented, msg: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	if h == nil {
		s.svgs.mu.Lock()
		if s.svgs.svg == nil {
			s.svgs.svg = map[states.Table][]byte{}
		}
		s.svgs.svg[p] = svg
		s.svgs.mu.Unlock()
	}
	return svg, nil
}

// workflowDiagram is GET /diagrams/workflows/{name}.{mmd|svg}: the recorded
// seed workflows shipped with the binary (docs/workflows).
func (s *Server) workflowDiagram(c echo.Context) error {
	name, format, err := splitFile(c.Param("file"))
	if err != nil {
		return err
	}
	if _, err := diagrams.FindWorkflow(name); err != nil {
		return &apiError{status: http.StatusNotFound, msg: err.Error()}
	}
	if s.cfg.Docs == nil {
		return &apiError{status: http.StatusNotFound, msg: "this build has no recorded workflows; run threadctl diagram --workflow " + name}
	}
	b, err := fs.ReadFile(s.cfg.Docs, "workflows/"+name+"."+format)
	if err != nil {
		return &apiError{status: http.StatusNotFound, msg: "no " + format + " drawing of workflow " + name + " (workflows are drawn as .mmd and .svg)"}
	}
	return c.Blob(http.StatusOK, contentTypes[format], b)
}
