package server

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// ThreadView is a thread as the debug endpoint shows it.
type ThreadView struct {
	IdentityForeignID string            `json:"identity_foreign_id"`
	PageID            string            `json:"page_id"`
	State             states.State      `json:"state"`
	OwnerAppID        string            `json:"owner_app_id"`
	Primary           states.Primary    `json:"primary"`
	PrimaryAtLast     states.Primary    `json:"primary_at_last_transition"`
	Routing           states.Routing    `json:"routing"`
	Table             string            `json:"table"`
	Page              *PageView         `json:"page,omitempty"`
	Revision          uint64            `json:"revision"`
	Intervention      *InterventionRef  `json:"intervention"`
	PendingRequest    *PendingView      `json:"pending_request"`
	QueuedContents    []ContentView     `json:"queued_contents"`
	AvailableEvents   []states.Event    `json:"available_events"`
	LastActivityAt    time.Time         `json:"last_activity_at"`
	ControlExpiresAt  *time.Time        `json:"control_expires_at"`
	CreatedAt         time.Time         `json:"created_at"`
	UpdatedAt         time.Time         `json:"updated_at"`
	Transitions       []TransitionView  `json:"transitions,omitempty"`
	NextBefore        uint64            `json:"transitions_before,omitempty"`
	Links             map[string]string `json:"links,omitempty"`
}

// PageView is how threadctl sees a page: its routing and, on Conversation
// Routing pages, RingCX's takeover setting, as configured and as Meta's
// answers taught.
type PageView struct {
	ID                 string         `json:"page_id"`
	Primary            states.Primary `json:"primary"`
	Routing            states.Routing `json:"routing"`
	RoutingConfigured  states.Routing `json:"routing_configured,omitempty"`
	Takeover           bool           `json:"takeover"`
	TakeoverConfigured *bool          `json:"takeover_configured,omitempty"`
	Table              string         `json:"table"`
	Learned            engine.Learned `json:"learned"`
}

func pageView(p engine.Page, now time.Time) *PageView {
	return &PageView{
		ID: p.ID, Primary: p.Primary, Routing: p.RoutingNow(), RoutingConfigured: p.Routing,
		Takeover: p.TakeoverNow(now), TakeoverConfigured: p.Takeover, Table: p.Table(now).Name(), Learned: p.Learned,
	}
}

// InterventionRef names a thread's open intervention.
type InterventionRef struct {
	ID string `json:"id"`
}

// PendingView is a thread's outstanding request for control.
type PendingView struct {
	RequestedAt time.Time `json:"requested_at"`
	Deadline    time.Time `json:"deadline"`
	Reason      string    `json:"reason"`
}

// TransitionView is one history entry.
type TransitionView struct {
	Revision uint64          `json:"revision"`
	At       time.Time       `json:"at"`
	Event    states.Event    `json:"event"`
	Observed states.Observed `json:"observed,omitempty"`
	Cause    string          `json:"cause"`
	From     states.State    `json:"from"`
	To       states.State    `json:"to"`
	Owner    string          `json:"owner_app_id,omitempty"`
	Primary  states.Primary  `json:"primary"`
	Outcome  string          `json:"outcome"`
	Reason   string          `json:"reason,omitempty"`
	Calls    []CallView      `json:"graph_calls,omitempty"`
	MetaTime *time.Time      `json:"meta_timestamp,omitempty"`
}

// CallView is one Graph API call of a transition.
type CallView struct {
	Call       string  `json:"call"`
	Target     string  `json:"target_app_id,omitempty"`
	Outcome    string  `json:"outcome"`
	Error      string  `json:"error,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}

func threadView(t engine.Thread, page engine.Page, now time.Time) ThreadView {
	table := page.Table(now)
	v := ThreadView{
		IdentityForeignID: t.PSID, PageID: t.PageID, State: t.State, OwnerAppID: t.Owner,
		Primary: page.Primary, PrimaryAtLast: t.Primary, Revision: t.Revision,
		Routing: page.RoutingNow(), Table: table.Name(),
		AvailableEvents: states.Allowed(table, states.Facts{State: t.State, Owner: t.Owner, InterventionOpen: t.Intervention != ""}),
		LastActivityAt:  t.LastActivity, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
		QueuedContents: []ContentView{},
	}
	if t.Intervention != "" {
		v.Intervention = &InterventionRef{ID: t.Intervention}
	}
	if p := t.Pending; p != nil {
		v.PendingRequest = &PendingView{RequestedAt: p.RequestedAt, Deadline: p.Deadline, Reason: p.Reason}
	}
	if !t.ControlExpires.IsZero() {
		exp := t.ControlExpires
		v.ControlExpiresAt = &exp
	}
	return v
}

func transitionView(h engine.HistoryEntry) TransitionView {
	v := TransitionView{Revision: h.Revision, At: h.At, Event: h.Event, Observed: h.Observed, Cause: string(h.Cause),
		From: h.From, To: h.To, Owner: h.Owner, Primary: h.Primary, Outcome: h.Outcome, Reason: h.Reason}
	for _, c := range h.Calls {
		v.Calls = append(v.Calls, CallView{Call: c.Call, Target: c.Target, Outcome: c.Outcome, Error: c.Error, DurationMS: float64(c.Duration.Microseconds()) / 1000})
	}
	if !h.MetaTime.IsZero() {
		mt := h.MetaTime
		v.MetaTime = &mt
	}
	return v
}

// threadRecord is what the engine knows of one thread, read once for one
// request: the record, its page, its queued contents and a range of its
// history, newest first.
type threadRecord struct {
	thread  engine.Thread
	page    engine.Page
	now     time.Time
	queued  []engine.Content
	history []engine.HistoryEntry
}

// readThread reads a thread, its queued contents and up to n history
// entries before revision before (0: the newest) as of one moment, and its
// page.
func readThread(ctx context.Context, eng *engine.Engine, key engine.ThreadKey, n int, before uint64) (threadRecord, error) {
	tv, err := eng.ThreadView(ctx, key, before, n)
	if err != nil {
		return threadRecord{}, err
	}
	r := threadRecord{thread: tv.Thread, now: eng.Now(), queued: tv.Queue, history: tv.History}
	r.page, _ = eng.Page(key.PageID)
	return r, nil
}

// view is the record as the debug endpoint shows it: with its first limit
// history entries and, when older ones exist, the revision they come
// before.
func (r threadRecord) view(limit int) ThreadView {
	v := threadView(r.thread, r.page, r.now)
	v.Page = pageView(r.page, r.now)
	for _, ct := range r.queued {
		v.QueuedContents = append(v.QueuedContents, contentView(ct))
	}
	shown := r.history[:min(limit, len(r.history))]
	for _, h := range shown {
		v.Transitions = append(v.Transitions, transitionView(h))
	}
	if n := len(shown); n > 0 && n == limit && shown[n-1].Revision > 1 {
		v.NextBefore = shown[n-1].Revision
	}
	return v
}

// intParam reads a number from 1 to max from the query; def when absent.
func intParam(q url.Values, name string, def, max int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("%s=%q must be a number from 1 to %d", name, s, max)
	}
	return n, nil
}

// historyRange reads which history entries a thread view shows: ?limit=
// (def when absent) entries ?before= a revision (0: the newest).
func historyRange(q url.Values, def int) (limit int, before uint64, err error) {
	if limit, err = intParam(q, "limit", def, 500); err != nil {
		return 0, 0, err
	}
	if b := q.Get("before"); b != "" {
		if before, err = strconv.ParseUint(b, 10, 64); err != nil {
			return 0, 0, badRequest("before=%q must be a revision number", b)
		}
	}
	return limit, before, nil
}

// getThread is GET /debug/threads/{identity_foreign_id}[?page_id=&limit=&before=].
func (s *Server) getThread(c echo.Context) error {
	key, err := s.identity(c, c.Param("identity_foreign_id"))
	if err != nil {
		return err
	}
	limit, before, err := historyRange(c.QueryParams(), 20)
	if err != nil {
		return err
	}
	r, err := readThread(c.Request().Context(), s.cfg.Engine, key, limit, before)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r.view(limit))
}

// ThreadList is a page of the thread list.
type ThreadList struct {
	Threads    []ThreadView `json:"threads"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// listThreads is GET /debug/threads?state=&page_id=&cursor=&limit=.
func (s *Server) listThreads(c echo.Context) error {
	f, err := listFilter(c.QueryParams())
	if err != nil {
		return err
	}
	list, err := threadList(c.Request().Context(), s.cfg.Engine, scopeOf(c), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, list)
}

// listFilter reads the thread list's query parameters.
func listFilter(q url.Values) (engine.ListFilter, error) {
	f := engine.ListFilter{PageID: q.Get("page_id"), After: q.Get("cursor")}
	if st := q.Get("state"); st != "" {
		parsed, err := states.ParseState(st)
		if err != nil {
			return f, badRequest("state: %v", err)
		}
		f.State = parsed
	}
	limit, err := intParam(q, "limit", 50, 500)
	f.Limit = limit
	return f, err
}

// threadList reads one page of the thread list: the threads of the pages
// the scope acts on.
func threadList(ctx context.Context, eng *engine.Engine, sc scope, f engine.ListFilter) (ThreadList, error) {
	threads, next, err := listInScope(ctx, eng, sc, f)
	if err != nil {
		return ThreadList{}, err
	}
	out := ThreadList{Threads: []ThreadView{}, NextCursor: next}
	for _, t := range threads {
		page, _ := eng.Page(t.PageID)
		out.Threads = append(out.Threads, threadView(t, page, eng.Now()))
	}
	return out, nil
}
