// Package states is threadctl's thread machine as data: the four states, the
// events of SPEC.md §2 and, for each primary setting, the table of allowed
// transitions with the Graph API call each one makes. The engine, the debug
// endpoint's available events and every diagram are derived from these
// tables; nothing else defines the machine. The package does no I/O.
package states

import "fmt"

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
	OwnerObserved      Event = "owner_observed"      // Meta told us who owns the thread
	PrimaryChanged     Event = "primary_changed"     // the page's primary app changed
)

// Events lists every event in a stable order.
var Events = []Event{
	CustomerMessage, HandoverToAgent, HandoverToBot, AgentEngage, ControlPassed,
	ControlTaken, ControlRequested, InterventionClosed, RequestExpired,
	ControlExpired, OwnerObserved, PrimaryChanged,
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
)
