// Package engine applies events to Messenger threads: it serialises events per
// thread, decides with the states tables, makes the Graph API call intent
// durable, calls Meta outside any transaction, commits the new state with its
// history entry, and runs effects (sending queued contents, timers) after the
// commit. It talks to storage and to Meta through the small interfaces in
// this package; it imports neither bbolt nor HTTP.
package engine

import (
	"time"

	"github.com/threadctl/threadctl/states"
)

// FormatVersion is the version of the records below as stored; stored values
// carry it so a later format can read (or refuse) an older one.
const FormatVersion = 1

// PageInboxAppID is the Facebook Page Inbox's app id.
const PageInboxAppID = "263902037430900"

// ThreadKey identifies a thread: a customer (PSID) on a page.
type ThreadKey struct {
	PageID string `json:"page_id"`
	PSID   string `json:"psid"`
}

func (k ThreadKey) String() string { return k.PageID + "/" + k.PSID }

// Page is a Facebook page connected to RingCX and its handover settings.
type Page struct {
	V              int            `json:"v"`
	ID             string         `json:"page_id"`
	Primary        states.Primary `json:"primary"`
	RingCXAppID    string         `json:"ringcx_app_id"`
	BotAppIDs      []string       `json:"bot_app_ids"`
	PendingTimeout time.Duration  `json:"pending_timeout"`
	UpdatedAt      time.Time      `json:"updated_at"`

	// Routing is the page's routing as configured; "" leaves it to Meta
	// (asked at start, learned from refusals), the Handover Protocol until
	// Meta says otherwise.
	Routing states.Routing `json:"routing,omitempty"`
	// Takeover is the page's takeover setting for the RingCX app on
	// Conversation Routing pages, as configured; nil assumes it is on
	// until Meta refuses a take.
	Takeover *bool `json:"takeover,omitempty"`
	// Learned is what Meta's answers taught about the page. It outlives
	// restarts and configuration changes, and wins over the configuration.
	Learned Learned `json:"learned,omitzero"`
}

// Learned is what threadctl learned about a page from Meta.
type Learned struct {
	// Routing is the page's routing as Meta last showed it, with when and
	// how (messaging_feature_status, or the call Meta refused).
	Routing     states.Routing `json:"routing,omitempty"`
	RoutingAt   time.Time      `json:"routing_at,omitzero"`
	RoutingFrom string         `json:"routing_from,omitempty"`
	// TakeoverOff is Meta refusing RingCX's take_thread_control on a
	// Conversation Routing page: the takeover setting is off. It is tried
	// again once TakeoverRecheck has passed since TakeoverAt.
	TakeoverOff  bool      `json:"takeover_off,omitempty"`
	TakeoverAt   time.Time `json:"takeover_at,omitzero"`
	TakeoverFrom string    `json:"takeover_from,omitempty"`
}

// TakeoverRecheck is how long a takeover setting that Meta showed off is
// believed before RingCX tries take_thread_control again.
const TakeoverRecheck = 15 * time.Minute

// RoutingNow is the page's routing: as Meta showed it, or as configured, or
// the Handover Protocol.
func (p *Page) RoutingNow() states.Routing {
	switch {
	case p.Learned.Routing != "":
		return p.Learned.Routing
	case p.Routing != "":
		return p.Routing
	}
	return states.HandoverProtocol
}

// TakeoverNow reports whether RingCX may take control on the page at now,
// as far as threadctl knows: not when configured off, nor for a while after
// Meta refused a take; otherwise yes.
func (p *Page) TakeoverNow(now time.Time) bool {
	if p.Takeover != nil && !*p.Takeover {
		return false
	}
	return !p.Learned.TakeoverOff || now.Sub(p.Learned.TakeoverAt) >= TakeoverRecheck
}

// Table is the transition table that applies to the page's threads at now.
func (p *Page) Table(now time.Time) states.Table {
	return states.TableFor(p.RoutingNow(), p.Primary, p.TakeoverNow(now))
}

// PrimaryBotApp is the bot app Meta gives idle threads to when the primary is
// a bot: the first of BotAppIDs.
func (p *Page) PrimaryBotApp() string {
	if len(p.BotAppIDs) == 0 {
		return ""
	}
	return p.BotAppIDs[0]
}

// IsBotApp reports whether appID is one of the page's bot apps.
func (p *Page) IsBotApp(appID string) bool {
	for _, id := range p.BotAppIDs {
		if id == appID {
			return true
		}
	}
	return false
}

// Thread is the stored record of one conversation's handover state.
type Thread struct {
	V        int            `json:"v"`
	PageID   string         `json:"page_id"`
	PSID     string         `json:"psid"`
	State    states.State   `json:"state"`
	Owner    string         `json:"owner_app_id,omitempty"` // "" when idle, or owned by an app Meta hides
	Primary  states.Primary `json:"primary"`                // the page's primary at the last transition
	Revision uint64         `json:"revision"`               // one per history entry, gapless

	Intervention string          `json:"intervention_id,omitempty"` // the open intervention
	Pending      *PendingRequest `json:"pending,omitempty"`

	LastActivity   time.Time `json:"last_activity"`
	ControlExpires time.Time `json:"control_expires,omitzero"` // Meta's 24 h window; zero when idle
	// ControlTimer was an earlier version's lagging control timer: the
	// index now holds ControlExpires itself. Read, never written.
	ControlTimer time.Time `json:"control_timer,omitzero"`
	// ExtendAt is when control is extended (control_expiring) because an
	// agent's intervention is open while RingCX holds the thread: some time
	// before ControlExpires. Zero otherwise.
	ExtendAt time.Time `json:"extend_at,omitzero"`
	// RecheckAt is when Meta is asked again who owns the thread because a
	// Graph call's outcome is unknown (no answer, Meta's server error).
	// Zero when threadctl's view is settled.
	RecheckAt    time.Time `json:"recheck_at,omitzero"`
	LastMetaTime time.Time `json:"last_meta_time,omitzero"` // timestamp of the last webhook that changed the thread
	Seen         []uint64  `json:"seen,omitempty"`          // hashes of the last webhook events applied, for de-duplication

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Key is the thread's key.
func (t *Thread) Key() ThreadKey { return ThreadKey{PageID: t.PageID, PSID: t.PSID} }

// PendingRequest is RingCX's outstanding request for control.
type PendingRequest struct {
	RequestedAt time.Time `json:"requested_at"`
	Deadline    time.Time `json:"deadline"`
	Reason      string    `json:"reason"` // what asked: the Bots API or an agent
}

// Outcome of an event on a thread, as recorded in its history.
const (
	OutcomeApplied  = "applied"   // the state changed
	OutcomeNoChange = "no_change" // accepted; the state stays
	OutcomeIgnored  = "ignored"   // a webhook the table does not allow now, a duplicate, or a stale event
	OutcomeFailed   = "failed"    // Meta refused or failed the call; the state stays
)

// HistoryEntry is one applied event in a thread's append-only history.
type HistoryEntry struct {
	V        int             `json:"v"`
	Revision uint64          `json:"revision"`
	At       time.Time       `json:"at"`
	Event    states.Event    `json:"event"`
	Observed states.Observed `json:"observed,omitempty"`
	Cause    Cause           `json:"cause"`
	From     states.State    `json:"from"`
	To       states.State    `json:"to"`
	Owner    string          `json:"owner_app_id,omitempty"`
	Primary  states.Primary  `json:"primary"`
	Table    string          `json:"table,omitempty"` // the table that decided; "" before tables had names (the primary's)
	Outcome  string          `json:"outcome"`
	Reason   string          `json:"reason,omitempty"`
	Calls    []CallRecord    `json:"calls,omitempty"`
	MetaTime time.Time       `json:"meta_time,omitzero"`
}

// TableOf is the table that decided the entry: named, or for entries
// written before tables had names, the Handover Protocol's of its primary.
func (h *HistoryEntry) TableOf() (states.Table, error) {
	if h.Table == "" {
		return states.HOP(h.Primary), nil
	}
	return states.ParseTable(h.Table)
}

// Outcomes of a Graph API call, as recorded.
const (
	CallOK       = "ok"
	CallNotOwner = "not_owner" // Meta refused: another app owns the thread
	CallRefused  = "error"     // Meta refused for another reason
	// CallUnknown is a call that got no answer (network error, timeout) or
	// Meta's server error: whether it took effect is unknown until Meta is
	// asked again.
	CallUnknown = "unknown"
)

// CallRecord is one Graph API call made while applying an event.
type CallRecord struct {
	Call     string        `json:"call"`
	Target   string        `json:"target_app_id,omitempty"`
	Outcome  string        `json:"outcome"` // CallOK, CallNotOwner, CallRefused or CallUnknown
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Intervention status values.
const (
	InterventionOpen   = "open"
	InterventionClosed = "closed"
)

// Intervention is an agent's engagement on a thread.
type Intervention struct {
	V        int       `json:"v"`
	ID       string    `json:"id"`
	PageID   string    `json:"page_id"`
	PSID     string    `json:"identity_foreign_id"`
	Status   string    `json:"status"`
	OpenedAt time.Time `json:"opened_at"`
	ClosedAt time.Time `json:"closed_at,omitzero"`
}

// Content synchronisation status values.
const (
	SyncPending = "pending"
	SyncSynced  = "synced"
	SyncFailed  = "failed"
)

// Content is an agent's reply, which must be synchronised to Messenger with
// the Send API while RingCX owns the thread.
type Content struct {
	V              int       `json:"v"`
	ID             string    `json:"id"`
	PageID         string    `json:"page_id"`
	PSID           string    `json:"identity_foreign_id"`
	InterventionID string    `json:"intervention_id,omitempty"`
	Body           string    `json:"body"`
	Status         string    `json:"synchronization_status"`
	Reason         string    `json:"synchronization_error,omitempty"`
	MessageID      string    `json:"foreign_id,omitempty"` // Meta's message id once sent
	CreatedAt      time.Time `json:"created_at"`
	SyncedAt       time.Time `json:"synchronized_at,omitzero"`
}

// Intent is a Graph API call made durable before it is sent, so that a crash
// between the call and the commit of its outcome is resolved at start-up by
// asking Meta who owns the thread.
type Intent struct {
	V        int             `json:"v"`
	Key      ThreadKey       `json:"key"`
	Revision uint64          `json:"revision"` // the thread's revision when the call was decided
	Event    states.Event    `json:"event"`
	Observed states.Observed `json:"observed,omitempty"`
	Call     states.Call     `json:"call"`
	Target   string          `json:"target_app_id,omitempty"`
	Cause    Cause           `json:"cause"`
	At       time.Time       `json:"at"`
}

// TimerKind names a durable timer.
type TimerKind uint8

// The two timers of a thread.
const (
	TimerRequest TimerKind = 1 // the pending request's deadline
	TimerControl TimerKind = 2 // Meta's 24 h control window
	TimerExtend  TimerKind = 3 // extend control while an agent works
	TimerRecheck TimerKind = 4 // ask Meta again after a call of unknown outcome
)

func (k TimerKind) String() string {
	switch k {
	case TimerRequest:
		return "request_expiry"
	case TimerControl:
		return "control_expiry"
	case TimerExtend:
		return "control_extension"
	case TimerRecheck:
		return "owner_recheck"
	}
	return "unknown"
}

// Timer is a durable deadline of a thread.
type Timer struct {
	Kind TimerKind
	Key  ThreadKey
	Due  time.Time
}

// Timers are the thread's durable timers, derived from its record: the store
// keeps its timer index in step with each committed thread.
func (t *Thread) Timers() []Timer {
	var out []Timer
	if t.Pending != nil {
		out = append(out, Timer{Kind: TimerRequest, Key: t.Key(), Due: t.Pending.Deadline})
	}
	switch {
	case !t.ControlTimer.IsZero():
		out = append(out, Timer{Kind: TimerControl, Key: t.Key(), Due: t.ControlTimer})
	case !t.ControlExpires.IsZero():
		out = append(out, Timer{Kind: TimerControl, Key: t.Key(), Due: t.ControlExpires})
	}
	if !t.ExtendAt.IsZero() {
		out = append(out, Timer{Kind: TimerExtend, Key: t.Key(), Due: t.ExtendAt})
	}
	if !t.RecheckAt.IsZero() {
		out = append(out, Timer{Kind: TimerRecheck, Key: t.Key(), Due: t.RecheckAt})
	}
	return out
}

// deadlines are when the thread's timers must really fire.
func (t *Thread) deadlines() []Timer {
	var out []Timer
	if t.Pending != nil {
		out = append(out, Timer{Kind: TimerRequest, Key: t.Key(), Due: t.Pending.Deadline})
	}
	if !t.ControlExpires.IsZero() {
		out = append(out, Timer{Kind: TimerControl, Key: t.Key(), Due: t.ControlExpires})
	}
	if !t.ExtendAt.IsZero() {
		out = append(out, Timer{Kind: TimerExtend, Key: t.Key(), Due: t.ExtendAt})
	}
	if !t.RecheckAt.IsZero() {
		out = append(out, Timer{Kind: TimerRecheck, Key: t.Key(), Due: t.RecheckAt})
	}
	return out
}
