package server

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// The debug HTML page (SPEC.md §3.4): a thread list with filters and a
// thread view, rendered on the server from the same data as the JSON debug
// endpoints. It works offline: no script, no external style or font.

//go:embed templates/debug.html
var debugFS embed.FS

var debugTemplates = template.Must(template.New("debug").ParseFS(debugFS, "templates/debug.html"))

// debugHeaders keep the page (whose links may carry the API token) out of
// caches and referrers, and forbid anything but its own inline style.
var debugHeaders = map[string]string{
	"Cache-Control":           "no-store",
	"Referrer-Policy":         "no-referrer",
	"X-Content-Type-Options":  "nosniff",
	"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}

// linker builds the page's links. It keeps the API token in them only when
// the page was opened with ?access_token= (a Bearer token stays in the
// header it came in).
type linker struct{ token string }

func newLinker(c echo.Context) linker { return linker{token: c.QueryParam("access_token")} }

func (l linker) url(path string, q url.Values) string {
	out := url.Values{}
	for k, vs := range q {
		for _, v := range vs {
			if v != "" {
				out.Add(k, v)
			}
		}
	}
	if l.token != "" {
		out.Set("access_token", l.token)
	}
	if len(out) == 0 {
		return path
	}
	return path + "?" + out.Encode()
}

func (l linker) list(q url.Values) string { return l.url("/debug/", q) }

func (l linker) thread(pageID, psid string, q url.Values) string {
	q = cloneValues(q)
	q.Set("page_id", pageID)
	return l.url("/debug/threads/"+url.PathEscape(psid)+"/view", q)
}

func cloneValues(q url.Values) url.Values {
	out := url.Values{}
	for k, vs := range q {
		out[k] = slices.Clone(vs)
	}
	return out
}

// layout is what every debug page shows around its content.
type layout struct {
	Title   string
	Token   string // for the forms' hidden field; "" when the token came as Bearer
	ListURL string
	Now     timeText
}

// timeText is a time as the page shows it: relative to now, with the exact
// time in a tooltip.
type timeText struct {
	ISO, Abs, Clock, Rel string
}

func (t timeText) IsZero() bool { return t.ISO == "" }

func showTime(t, now time.Time) timeText {
	if t.IsZero() {
		return timeText{}
	}
	t = t.UTC()
	rel := "now"
	if d := now.Sub(t); d >= time.Second {
		rel = humanDuration(d) + " ago"
	} else if d <= -time.Second {
		rel = "in " + humanDuration(-d)
	}
	return timeText{ISO: t.Format(time.RFC3339Nano), Abs: t.Format("2006-01-02 15:04:05.000 UTC"), Clock: t.Format("15:04:05.000"), Rel: rel}
}

// humanDuration is d rounded for a person: "42 s", "3 min 5 s", "2 h 10 min", "3 days".
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		m, s := int(d/time.Minute), int(d%time.Minute/time.Second)
		if s == 0 {
			return fmt.Sprintf("%d min", m)
		}
		return fmt.Sprintf("%d min %d s", m, s)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

// appRole names an app id's role on the page, for people.
func appRole(p engine.Page, app string) string {
	switch {
	case app == "":
		return ""
	case app == p.RingCXAppID:
		return "RingCX"
	case app == engine.PageInboxAppID:
		return "Page Inbox"
	case p.IsBotApp(app):
		if app == p.PrimaryBotApp() && len(p.BotAppIDs) > 1 {
			return "primary bot"
		}
		return "bot"
	}
	return "other app"
}

// ---- the thread list

type listPage struct {
	layout
	States   []option
	Pages    []option
	Limits   []option
	Filtered bool
	Rows     []listRow
	NextURL  string
	FirstURL string // when this is not the first page
	ResetURL string
}

type option struct {
	Value, Label string
	Selected     bool
}

type listRow struct {
	URL               string
	ID, PageID        string
	State             states.State
	Owner, OwnerRole  string
	Revision          uint64
	Intervention      string
	Deadline, Updated timeText
	Overdue           bool
}

// debugList is GET /debug/[?state=&page_id=&limit=&cursor=]: the thread
// list. ?identity= jumps to a thread.
func (s *Server) debugList(c echo.Context) error {
	l := newLinker(c)
	if id := c.QueryParam("identity"); id != "" {
		q := url.Values{}
		if p := c.QueryParam("page_id"); p != "" {
			q.Set("page_id", p)
		}
		return c.Redirect(http.StatusSeeOther, l.url("/debug/threads/"+url.PathEscape(id)+"/view", q))
	}
	f, err := listFilter(c.QueryParams())
	if err != nil {
		return s.debugError(c, l, err)
	}
	v, err := listPageModel(c.Request().Context(), s.cfg.Engine, listPageOpts{
		filter: f, keepLimit: c.QueryParam("limit") != "", scope: scopeOf(c), links: l,
	})
	if err != nil {
		return s.debugError(c, l, err)
	}
	return s.renderDebug(c, http.StatusOK, "list", v)
}

// listPageOpts is what a request asks of the thread list.
type listPageOpts struct {
	filter engine.ListFilter
	// keepLimit keeps the limit in the list's links (the request gave one).
	keepLimit bool
	scope     scope // the pages the request's token acts on
	links     linker
}

// listPageModel reads one page of the thread list from the engine and
// shapes it for the template.
func listPageModel(ctx context.Context, eng *engine.Engine, o listPageOpts) (listPage, error) {
	f, l := o.filter, o.links
	threads, next, err := listInScope(ctx, eng, o.scope, f)
	if err != nil {
		return listPage{}, err
	}
	now := eng.Now()
	filter := url.Values{"state": {string(f.State)}, "page_id": {f.PageID}}
	if o.keepLimit {
		filter.Set("limit", strconv.Itoa(f.Limit))
	}
	v := listPage{
		layout:   newLayout(l, "Threads", now),
		Filtered: f.State != "" || f.PageID != "",
		ResetURL: l.list(nil),
	}
	v.States = append(v.States, option{Value: "", Label: "all states", Selected: f.State == ""})
	for _, st := range states.All {
		v.States = append(v.States, option{Value: string(st), Label: string(st), Selected: f.State == st})
	}
	v.Pages = append(v.Pages, option{Value: "", Label: "all pages", Selected: f.PageID == ""})
	known := false
	for _, p := range visiblePages(eng, o.scope) {
		known = known || p.ID == f.PageID
		v.Pages = append(v.Pages, option{Value: p.ID, Label: p.ID + " (primary " + string(p.Primary) + ")", Selected: f.PageID == p.ID})
	}
	if f.PageID != "" && !known {
		v.Pages = append(v.Pages, option{Value: f.PageID, Label: f.PageID + " (not configured)", Selected: true})
	}
	for _, n := range []int{25, 50, 100, 200} {
		v.Limits = append(v.Limits, option{Value: strconv.Itoa(n), Label: strconv.Itoa(n) + " per page", Selected: f.Limit == n})
	}
	if !slices.ContainsFunc(v.Limits, func(o option) bool { return o.Selected }) {
		v.Limits = append(v.Limits, option{Value: strconv.Itoa(f.Limit), Label: strconv.Itoa(f.Limit) + " per page", Selected: true})
	}
	for _, t := range threads {
		page, _ := eng.Page(t.PageID)
		r := listRow{
			URL: l.thread(t.PageID, t.PSID, nil),
			ID:  t.PSID, PageID: t.PageID, State: t.State,
			Owner: t.Owner, OwnerRole: appRole(page, t.Owner), Revision: t.Revision,
			Intervention: t.Intervention, Updated: showTime(t.UpdatedAt, now),
		}
		if t.Pending != nil {
			r.Deadline = showTime(t.Pending.Deadline, now)
			r.Overdue = !t.Pending.Deadline.After(now)
		}
		v.Rows = append(v.Rows, r)
	}
	if next != "" {
		q := cloneValues(filter)
		q.Set("cursor", next)
		v.NextURL = l.list(q)
	}
	if f.After != "" {
		v.FirstURL = l.list(filter)
	}
	return v, nil
}

// ---- the thread view

type threadPage struct {
	layout
	V                  ThreadView
	OwnerRole          string
	Facts              []fact
	Pending            *pendingText
	Queued             []queuedText
	Timeline           []entryText
	InterventionOpened timeText
	Diagram            template.HTML // inline SVG
	Mermaid            string        // when Graphviz cannot draw the diagram
	DiagramErr         string
	JSONURL            string
	SVGURL             string
	MermaidURL         string
	OlderURL           string
	NewestURL          string // when showing older history

	drawErr error // Graphviz failed (the page shows the Mermaid text instead)
}

type fact struct {
	Label, Value, Note string
	Time               timeText
}

type pendingText struct {
	Requested, Deadline timeText
	Left                string
	Overdue             bool
	Reason              string
}

type queuedText struct {
	ID, Body, Status, Error string
	Created                 timeText
}

type entryText struct {
	Revision       uint64
	At, MetaTime   timeText
	Event          states.Event
	Observed       states.Observed
	Cause          string
	From, To       states.State
	Changed        bool
	Owner          string
	OwnerRole      string
	Primary        states.Primary
	Outcome        string
	Reason         string
	Calls          []callText
	HighlightIndex int // its number on the diagram, 0 if none
}

type callText struct {
	Call, Target, TargetRole, Outcome, Error, Duration string
	OK                                                 bool
}

// debugThread is GET /debug/threads/{identity_foreign_id}/view[?page_id=&limit=&before=].
func (s *Server) debugThread(c echo.Context) error {
	l := newLinker(c)
	psid := c.Param("identity_foreign_id")
	if id, err := url.PathUnescape(psid); err == nil {
		psid = id // the page's own links escape it
	}
	key, err := s.identity(c, psid)
	if err != nil {
		return s.debugError(c, l, err)
	}
	limit, before, err := historyRange(c.QueryParams(), 50)
	if err != nil {
		return s.debugError(c, l, err)
	}
	p, err := threadPageModel(c.Request().Context(), s.cfg.Engine, key, threadPageOpts{
		limit: limit, before: before, keepLimit: c.QueryParam("limit") != "", links: l,
	})
	if err != nil {
		return s.debugError(c, l, err)
	}
	if p.drawErr != nil {
		s.log.Warn("debug page: drawing the state diagram", "request_id", requestID(c), "err", p.drawErr)
	}
	return s.renderDebug(c, http.StatusOK, "thread", p)
}

// threadPageOpts is what a request asks of the thread view.
type threadPageOpts struct {
	limit  int    // history entries shown
	before uint64 // shown entries come before this revision (0: the newest)
	// keepLimit keeps the limit in the link to older entries (the request
	// gave one).
	keepLimit bool
	links     linker
}

// threadPageModel reads a thread from the engine — its record, page,
// queued contents, history and open intervention — and shapes its view for
// the template, diagram drawn.
func threadPageModel(ctx context.Context, eng *engine.Engine, key engine.ThreadKey, o threadPageOpts) (threadPage, error) {
	// When the page shows the newest entries, one read serves the diagram
	// too.
	n := o.limit
	if o.before == 0 {
		n = max(n, diagramHistory)
	}
	r, err := readThread(ctx, eng, key, n, o.before)
	if err != nil {
		return threadPage{}, err
	}
	newest := r.history
	if o.before != 0 {
		if newest, err = eng.History(ctx, key, 0, diagramHistory); err != nil {
			return threadPage{}, err
		}
	}
	var opened time.Time
	if id := r.thread.Intervention; id != "" {
		if iv, err := eng.Intervention(ctx, id); err == nil {
			opened = iv.OpenedAt
		}
	}

	v, page, now, l := r.view(o.limit), r.page, r.now, o.links
	table := page.Table(now)
	pathID := url.PathEscape(key.PSID)
	pq := url.Values{"page_id": {key.PageID}}
	p := threadPage{
		layout: newLayout(l, key.PSID+" · thread", now), V: v, OwnerRole: appRole(page, v.OwnerAppID),
		InterventionOpened: showTime(opened, now),
		JSONURL:            l.url("/debug/threads/"+pathID, pq),
		SVGURL:             l.url("/diagrams/threads/"+pathID+".svg", pq),
		MermaidURL:         l.url("/diagrams/threads/"+pathID+".mmd", pq),
	}
	owner := v.OwnerAppID
	if owner == "" {
		owner = "none"
	}
	p.Facts = []fact{
		{Label: "Page", Value: v.PageID},
		{Label: "Owner app", Value: owner, Note: p.OwnerRole},
		{Label: "Primary", Value: string(v.Primary), Note: primaryNote(v)},
		{Label: "Routing", Value: string(v.Routing), Note: routingNote(v.Page)},
		{Label: "Table", Value: v.Table, Note: table.Title()},
		{Label: "Revision", Value: strconv.FormatUint(v.Revision, 10)},
		{Label: "Last activity", Time: showTime(v.LastActivityAt, now)},
	}
	if v.ControlExpiresAt != nil {
		p.Facts = append(p.Facts, fact{Label: "Control expires", Time: showTime(*v.ControlExpiresAt, now), Note: "Meta's 24 h window"})
	}
	p.Facts = append(p.Facts, fact{Label: "Created", Time: showTime(v.CreatedAt, now)}, fact{Label: "Updated", Time: showTime(v.UpdatedAt, now)})
	if pr := v.PendingRequest; pr != nil {
		pt := &pendingText{Requested: showTime(pr.RequestedAt, now), Deadline: showTime(pr.Deadline, now), Reason: pr.Reason}
		if left := pr.Deadline.Sub(now); left > 0 {
			pt.Left = humanDuration(left) + " left"
		} else {
			pt.Overdue, pt.Left = true, "overdue by "+humanDuration(-left)
		}
		p.Pending = pt
	}
	for _, ct := range v.QueuedContents {
		p.Queued = append(p.Queued, queuedText{ID: ct.ID, Body: ct.Body, Status: ct.SynchronizationStatus, Error: ct.SynchronizationError, Created: showTime(ct.CreatedAt, now)})
	}

	h := threadHighlight(r.thread, newest, diagramMarks)
	p.drawDiagram(ctx, table, h)
	// The timeline numbers the marked entries as the diagram does, when it
	// shows the newest ones.
	marks := map[uint64]int{}
	if o.before == 0 {
		n := 0
		for _, e := range newest {
			if n < len(h.Recent) && e.From != e.To {
				n++
				marks[e.Revision] = n
			}
		}
	}
	for _, tr := range v.Transitions {
		e := entryText{
			Revision: tr.Revision, At: showTime(tr.At, now), Event: tr.Event, Observed: tr.Observed, Cause: tr.Cause,
			From: tr.From, To: tr.To, Changed: tr.From != tr.To, Owner: tr.Owner, OwnerRole: appRole(page, tr.Owner),
			Primary: tr.Primary, Outcome: tr.Outcome, Reason: tr.Reason, HighlightIndex: marks[tr.Revision],
		}
		if tr.MetaTime != nil {
			e.MetaTime = showTime(*tr.MetaTime, now)
		}
		for _, cl := range tr.Calls {
			e.Calls = append(e.Calls, callText{
				Call: cl.Call, Target: cl.Target, TargetRole: appRole(page, cl.Target), Outcome: cl.Outcome, Error: cl.Error,
				Duration: strconv.FormatFloat(cl.DurationMS, 'f', 1, 64) + " ms", OK: cl.Outcome == "ok",
			})
		}
		if slices.ContainsFunc(e.Calls, func(c callText) bool { return c.Error == e.Reason }) {
			e.Reason = "" // the failed call says it
		}
		p.Timeline = append(p.Timeline, e)
	}
	if v.NextBefore != 0 {
		q := cloneValues(pq)
		q.Set("before", strconv.FormatUint(v.NextBefore, 10))
		if o.keepLimit {
			q.Set("limit", strconv.Itoa(o.limit))
		}
		p.OlderURL = l.thread(key.PageID, key.PSID, q)
	}
	if o.before != 0 {
		p.NewestURL = l.thread(key.PageID, key.PSID, nil)
	}
	return p, nil
}

// drawDiagram draws the page's state diagram with Graphviz, or, when it
// cannot, keeps the Mermaid text and says why.
func (p *threadPage) drawDiagram(ctx context.Context, table states.Table, h *diagrams.Highlight) {
	svg, err := diagrams.SVG(ctx, diagrams.DOT(table, h))
	switch {
	case err == nil:
		p.Diagram = inlineSVG(svg)
	case errors.Is(err, diagrams.ErrNoGraphviz):
		p.DiagramErr, p.Mermaid = err.Error(), diagrams.Mermaid(table, h)
	default:
		p.drawErr = err
		p.DiagramErr, p.Mermaid = "Graphviz failed to draw the diagram: "+err.Error(), diagrams.Mermaid(table, h)
	}
}

// routingNote says where the page's routing and takeover setting come from.
func routingNote(p *PageView) string {
	if p == nil {
		return ""
	}
	var notes []string
	if p.Learned.RoutingFrom != "" {
		notes = append(notes, "learned from Meta: "+p.Learned.RoutingFrom)
	} else if p.RoutingConfigured != "" {
		notes = append(notes, "configured")
	}
	if p.Routing == states.ConversationRouting && p.Primary != states.PrimaryNone {
		t := "RingCX's takeover setting on"
		if !p.Takeover {
			t = "RingCX's takeover setting off"
		}
		if p.Learned.TakeoverFrom != "" {
			t += " (learned: " + p.Learned.TakeoverFrom + ")"
		}
		notes = append(notes, t)
	}
	return strings.Join(notes, "; ")
}

func primaryNote(v ThreadView) string {
	if v.PrimaryAtLast != "" && v.PrimaryAtLast != v.Primary {
		return "was " + string(v.PrimaryAtLast) + " at the last transition"
	}
	return ""
}

// inlineSVG drops Graphviz's XML prologue and comments so the drawing can sit
// inside the HTML. The SVG is drawn from the tables (no outside input).
func inlineSVG(svg []byte) template.HTML {
	if i := bytes.Index(svg, []byte("<svg")); i >= 0 {
		svg = svg[i:]
	}
	return template.HTML(svg)
}

// ---- rendering

type errorPage struct {
	layout
	Status  int
	Text    string
	Message string
}

func newLayout(l linker, title string, now time.Time) layout {
	return layout{Title: title, Token: l.token, ListURL: l.list(nil), Now: showTime(now, now)}
}

// debugError answers an error of a debug page as an HTML page with the same
// status and message as the JSON envelope.
func (s *Server) debugError(c echo.Context, l linker, err error) error {
	status, msg := describe(err)
	if status >= 500 {
		s.log.Error("request failed", "request_id", requestID(c), "status", status, "err", err)
	}
	return s.renderDebug(c, status, "error", errorPage{
		layout: newLayout(l, http.StatusText(status), s.cfg.Engine.Now()), Status: status, Text: http.StatusText(status), Message: msg,
	})
}

func (s *Server) renderDebug(c echo.Context, status int, name string, data any) error {
	var b bytes.Buffer
	if err := debugTemplates.ExecuteTemplate(&b, name, data); err != nil {
		return fmt.Errorf("rendering the debug page %s: %w", name, err)
	}
	h := c.Response().Header()
	for k, v := range debugHeaders {
		h.Set(k, v)
	}
	return c.HTMLBlob(status, b.Bytes())
}

// debugRedirect is GET /debug: the list lives at /debug/.
func (s *Server) debugRedirect(c echo.Context) error {
	target := "/debug/"
	if q := c.Request().URL.RawQuery; q != "" {
		target += "?" + q
	}
	return c.Redirect(http.StatusMovedPermanently, target)
}
