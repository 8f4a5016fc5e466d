// Package states is threadctl's thread machine as data: the four states, the
// events of SPEC.md §2 and, for each primary setting, the table of allowed
// transitions with the Graph API call each one makes. The engine, the debug
// endpoint's available events and every diagram are derived from these
// tables; nothing else defines the machine. The package does no I/O.
package states

import (
	"fmt"
	"strings"
)

// State is where a thread is in the handover protocol.
type State string

// The four states of a thread.
const (
	Idle    State = "idle"            // no app controls the thread
	Bot     State = "bot"             // another app (normally a bot) controls it
	Agent   State = "agent"           // the RingCX app controls it
	Pending State = "pending-request" // RingCX asked the owner for control and waits
)

// All lists the states in a stable order.
var All = []State{Idle, Bot, Agent, Pending}

// ParseState returns the state named s.
func ParseState(s string) (State, error) {
	for _, st := range All {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown state %q (want idle, bot, agent or pending-request)", s)
}

// Primary is the page's primary app setting, which selects the table.
type Primary string

// The three primary settings.
const (
	PrimaryBot    Primary = "bot"
	PrimaryRingCX Primary = "ringcx"
	PrimaryNone   Primary = "none"
)

// Primaries lists the primary settings in a stable order.
var Primaries = []Primary{PrimaryBot, PrimaryRingCX, PrimaryNone}

// ParsePrimary returns the primary setting named s.
func ParsePrimary(s string) (Primary, error) {
	for _, p := range Primaries {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown primary %q (want bot, ringcx or none)", s)
}

// Routing is how a page shares its threads between apps: Meta's Handover
// Protocol, or Conversation Routing, where every Messenger page has been
// since September 2025 (SPEC.md §2.1).
type Routing string

// The two routings.
const (
	HandoverProtocol    Routing = "handover_protocol"
	ConversationRouting Routing = "conversation_routing"
)

// ParseRouting returns the routing named s.
func ParseRouting(s string) (Routing, error) {
	switch Routing(s) {
	case HandoverProtocol, ConversationRouting:
		return Routing(s), nil
	}
	return "", fmt.Errorf("unknown routing %q (want handover_protocol or conversation_routing)", s)
}

// Table names one transition table: the page's routing, its primary app
// (on Conversation Routing pages, its default app; none is zero-config)
// and, on Conversation Routing pages with a default app, whether RingCX may
// take control (the page's takeover setting for the RingCX app).
type Table struct {
	Routing  Routing
	Primary  Primary
	Takeover bool
}

// TableFor is the table of a page with these settings. The takeover setting
// matters only on Conversation Routing pages with a default app: the
// Handover Protocol lets the primary take, and zero-config blocks take.
func TableFor(r Routing, p Primary, takeover bool) Table {
	if r != ConversationRouting || p == PrimaryNone {
		takeover = false
	}
	if r == "" {
		r = HandoverProtocol
	}
	return Table{Routing: r, Primary: p, Takeover: takeover}
}

// HOP is the Handover Protocol table of a primary setting.
func HOP(p Primary) Table { return TableFor(HandoverProtocol, p, false) }

// Tables lists every table in a stable order: the Handover Protocol's, then
// Conversation Routing's.
var Tables = []Table{
	HOP(PrimaryBot), HOP(PrimaryRingCX), HOP(PrimaryNone),
	TableFor(ConversationRouting, PrimaryBot, true), TableFor(ConversationRouting, PrimaryBot, false),
	TableFor(ConversationRouting, PrimaryRingCX, true), TableFor(ConversationRouting, PrimaryRingCX, false),
	TableFor(ConversationRouting, PrimaryNone, false),
}

// Name is the table's short name, as in URLs and file names: the primary
// ("bot", "ringcx", "none") for the Handover Protocol; "cr-" and the
// default app, with "-no-takeover" when RingCX may not take, for
// Conversation Routing.
func (t Table) Name() string {
	if t.Routing != ConversationRouting {
		return string(t.Primary)
	}
	n := "cr-" + string(t.Primary)
	if t.Primary != PrimaryNone && !t.Takeover {
		n += "-no-takeover"
	}
	return n
}

// Title describes the table for people.
func (t Table) Title() string {
	if t.Routing != ConversationRouting {
		return "Handover Protocol, primary = " + string(t.Primary)
	}
	if t.Primary == PrimaryNone {
		return "Conversation Routing, no default app (zero-config)"
	}
	takeover := "RingCX may take control"
	if !t.Takeover {
		takeover = "RingCX's takeover setting off"
	}
	return "Conversation Routing, default app = " + string(t.Primary) + ", " + takeover
}

func (t Table) String() string { return t.Name() }

// ParseTable returns the table named s (see Name).
func ParseTable(s string) (Table, error) {
	for _, t := range Tables {
		if t.Name() == s {
			return t, nil
		}
	}
	names := make([]string, len(Tables))
	for i, t := range Tables {
		names[i] = t.Name()
	}
	return Table{}, fmt.Errorf("unknown table %q (want one of %s)", s, strings.Join(names, ", "))
}

// Event is something that happens to a thread.
type Event string

// The events of SPEC.md §2.
const (
	CustomerMessage    Event = "customer_message"    // webhook: the customer wrote
	HandoverToAgent    Event = "handover_to_agent"   // Bots API from=bot to=agent
	HandoverToBot      Event = "handover_to_bot"     // Bots API from=agent to=bot
	AgentEngage        Event = "agent_engage"        // intervention opened, or agent content while not owner
	ControlPassed      Event = "control_passed"      // webhook pass_thread_control to RingCX
	ControlTaken       Event = "control_taken"       // webhook take_thread_control from RingCX
	ControlRequested   Event = "control_requested"   // webhook request_thread_control to RingCX
	InterventionClosed Event = "intervention_closed" // the agent closed the intervention
	RequestExpired     Event = "request_expired"     // timer: the pending request's deadline
	ControlExpired     Event = "control_expired"     // timer: 24 h without activity
	ControlExpiring    Event = "control_expiring"    // timer: control is about to expire while an agent works
	OwnerObserved      Event = "owner_observed"      // Meta told us who owns the thread
	PrimaryChanged     Event = "primary_changed"     // the page's primary app changed
)

// Events lists every event in a stable order.
var Events = []Event{
	CustomerMessage, HandoverToAgent, HandoverToBot, AgentEngage, ControlPassed,
	ControlTaken, ControlRequested, InterventionClosed, RequestExpired,
	ControlExpired, ControlExpiring, OwnerObserved, PrimaryChanged,
}

// ParseEvent returns the event named s.
func ParseEvent(s string) (Event, error) {
	for _, e := range Events {
		if string(e) == s {
			return e, nil
		}
	}
	return "", fmt.Errorf("unknown event %q", s)
}

// Observed is Meta's answer about a thread's owner, which selects the
// destination of owner_observed.
type Observed string

// What Meta can say about the owner.
const (
	ObservedNone   Observed = "none"   // idle
	ObservedRingCX Observed = "ringcx" // the RingCX app
	ObservedOther  Observed = "other"  // any other app (a bot, the Page Inbox…)
)

// Holder is who controls a thread in state s, as Meta would say it: nobody
// when idle, RingCX in agent, another app in bot and while RingCX's request
// waits.
func Holder(s State) Observed { return holders[s] }

var holders = map[State]Observed{Idle: ObservedNone, Bot: ObservedOther, Agent: ObservedRingCX, Pending: ObservedOther}

// Call is a Graph API thread-control call made by the RingCX app.
type Call string

// The calls a transition can make. NoCall makes none.
const (
	NoCall      Call = ""
	CallRequest Call = "request_thread_control"
	CallTake    Call = "take_thread_control"
	CallPass    Call = "pass_thread_control" // to the event's app id
	CallRelease Call = "release_thread_control"
	CallExtend  Call = "extend_thread_control"
)

// Target is who a pass_thread_control gives control to.
type Target string

// The targets of a pass.
const (
	// TargetEventApp is the app the event names: handover_to_bot's app_id,
	// the app that requested control.
	TargetEventApp Target = ""
	// TargetRingCX is RingCX itself: on Conversation Routing pages any app
	// may pass an idle thread, itself included, which claims it without
	// take_thread_control (and so without the takeover setting).
	TargetRingCX Target = "ringcx"
)
