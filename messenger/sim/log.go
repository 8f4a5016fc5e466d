package sim

import (
	"sort"
	"time"
)

// Kinds of log entries.
const (
	KindGraphCall       = "graph_call"       // a Graph API call, by an app or a reference bot
	KindCustomerMessage = "customer_message" // a customer wrote to a page
	KindWebhook         = "webhook"          // a webhook delivery attempt, or an event handed to a bot
	KindPageConfig      = "page_config"      // a page was added or replaced
)

// Outcomes of log entries.
const (
	OutcomeOK        = "ok"        // a Graph call that succeeded
	OutcomeError     = "error"     // a Graph call answered with an error
	OutcomeReset     = "reset"     // a Graph call left unanswered: a reset fault closed the connection (a network error for a reference bot's call)
	OutcomePending   = "pending"   // a webhook POST still in flight
	OutcomeDelivered = "delivered" // a webhook POST answered 2xx, or an event handed to the reference bot
	OutcomeFailed    = "failed"    // a webhook POST that failed and will be retried
	OutcomeDropped   = "dropped"   // the last attempt of a webhook POST failed; the events are dropped
)

// maxLogEntries bounds the log's memory; the oldest entries go first.
const maxLogEntries = 100_000

// LogEntry is one thing the simulator saw or did, in order: a Graph call, a customer message,
// a webhook delivery attempt (one entry per event of the POST, logged when the POST starts and
// completed with its outcome when it ends), or a page (re)configuration. It is the raw material
// of sequence diagrams.
type LogEntry struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	PageID string    `json:"page_id,omitempty"`
	PSID   string    `json:"psid,omitempty"`

	// Graph calls.
	CallerAppID string `json:"caller_app_id,omitempty"`
	Call        string `json:"call,omitempty"`
	TargetAppID string `json:"target_app_id,omitempty"`
	// Fault is set when an injected fault decided the answer (an error, a reset, an
	// abandoned delay) or made the simulator apply a call whose answer was lost (apply_late).
	Fault bool `json:"fault,omitempty"`

	// Customer messages and Send API calls.
	Text string `json:"text,omitempty"`
	MID  string `json:"mid,omitempty"`

	// OwnerAppID is the thread's owner after the entry's effect (graph calls naming a thread,
	// customer messages); empty when idle.
	OwnerAppID string `json:"owner_app_id,omitempty"`

	// Webhooks.
	RecipientAppID string `json:"recipient_app_id,omitempty"`
	Field          string `json:"field,omitempty"`
	Event          string `json:"event,omitempty"`
	// DeliveryID is shared by the entries of one webhook POST (one per event it carries).
	DeliveryID int64 `json:"delivery_id,omitempty"`
	Attempt    int   `json:"attempt,omitempty"`

	// Via is "bot" for a call made by, or an event handed to, the reference bot.
	Via string `json:"via,omitempty"`

	Outcome      string `json:"outcome,omitempty"`
	HTTPStatus   int    `json:"http_status,omitempty"`
	ErrorCode    int    `json:"error_code,omitempty"`
	ErrorSubcode int    `json:"error_subcode,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	// Detail says more where a field does not: a page's mode, a network error, a Send API
	// thread_control effect.
	Detail string `json:"detail,omitempty"`
}

// appendLog numbers and stores an entry. The caller holds s.mu.
func (s *Sim) appendLog(e LogEntry) {
	s.seq++
	e.Seq = s.seq
	if e.Time.IsZero() {
		e.Time = s.now().UTC()
	}
	if len(s.log) >= maxLogEntries {
		s.log = append(s.log[:0], s.log[len(s.log)-maxLogEntries/2:]...)
	}
	s.log = append(s.log, e)
}

// logEntry returns the stored entry with a sequence number, nil if it was trimmed. The caller
// holds s.mu.
func (s *Sim) logEntry(seq int64) *LogEntry {
	i := sort.Search(len(s.log), func(i int) bool { return s.log[i].Seq >= seq })
	if i < len(s.log) && s.log[i].Seq == seq {
		return &s.log[i]
	}
	return nil
}

// Log returns the log entries of a page and a thread, in order; "" matches any page or thread.
func (s *Sim) Log(pageID, psid string) []LogEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []LogEntry{}
	for _, e := range s.log {
		if (pageID == "" || e.PageID == pageID) && (psid == "" || e.PSID == psid) {
			out = append(out, e)
		}
	}
	return out
}
