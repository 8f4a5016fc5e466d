package states

import (
	"fmt"
	"slices"

	"github.com/looplab/fsm"
)

// Same as a rule's destination keeps the thread in its source state: the
// event is accepted and recorded, and nothing else changes ("no change").
const Same State = ""

// Rule is one row of the transition table: in any state of From, Event moves
// the thread to To, making Call first, with the effects that follow from it.
// For owner_observed, Observed says which answer of Meta the row is for. The
// engine applies a row generically from these fields; the diagrams label
// edges with them.
type Rule struct {
	Event    Event
	Observed Observed
	From     []State
	To       State
	Call     Call

	Owner   Owner   // who owns the thread afterwards
	Request Request // whether RingCX's request for control starts or ends
	Queue   Queue   // what happens to the agent's contents awaiting control
	// Reason is why queued contents fail (Queue == QueueFail), as the agent
	// reads it on the content.
	Reason string
	Note   string
}

// Owner is who owns the thread after a row.
type Owner string

// What a row does to the thread's owner.
const (
	OwnerUnchanged  Owner = ""
	OwnerRingCX     Owner = "ringcx"      // the page's RingCX app
	OwnerPrimaryBot Owner = "primary_bot" // the page's primary bot app
	OwnerEventApp   Owner = "event_app"   // the app the event names (handover target, new owner, requester, observed owner)
	OwnerNone       Owner = "none"        // idle
)

// Request is what a row does to RingCX's pending request for control.
type Request string

// What a row does to the pending request.
const (
	RequestUnchanged Request = ""
	RequestStart     Request = "start" // a request starts, with its deadline
	RequestEnd       Request = "end"   // the request (if any) is over
)

// Queue is what a row does to the contents queued until RingCX has control.
type Queue string

// What a row does to the queue.
const (
	QueueUnchanged Queue = ""
	QueueFlush     Queue = "flush" // RingCX has control: send them, in order
	QueueFail      Queue = "fail"  // RingCX will not get control: fail them with Reason
)

// Name is the rule's event name in the looplab/fsm machine: the event, with
// the observed owner for owner_observed ("owner_observed:none").
func (r Rule) Name() string { return fsmName(r.Event, r.Observed) }

func fsmName(e Event, o Observed) string {
	if o == "" {
		return string(e)
	}
	return string(e) + ":" + string(o)
}

// Dst is where the rule leaves a thread that was in from.
func (r Rule) Dst(from State) State {
	if r.To == Same {
		return from
	}
	return r.To
}

var (
	notIdle = []State{Bot, Agent, Pending}
	all     = All
)

// Rules is the transition table for a primary setting (SPEC.md §2). Rows not
// listed are not allowed: the engine refuses them (API) or records them as
// ignored (webhooks).
func Rules(p Primary) []Rule {
	byPrimary := func(bot, ringcx, none Rule) Rule {
		switch p {
		case PrimaryRingCX:
			return ringcx
		case PrimaryNone:
			return none
		}
		return bot
	}
	return []Rule{
		byPrimary(
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Bot, Owner: OwnerPrimaryBot, Note: "Meta gives the idle thread to the primary bot app"},
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Agent, Owner: OwnerRingCX, Queue: QueueFlush, Note: "Meta gives the idle thread to RingCX, the primary"},
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Same, Note: "no primary: the thread stays idle"},
		),
		{Event: CustomerMessage, From: notIdle, To: Same, Note: "activity restarts the 24 h window"},

		{Event: HandoverToAgent, From: []State{Bot}, To: Pending, Call: CallRequest, Request: RequestStart, Note: "ask the owner to pass control"},
		{Event: HandoverToAgent, From: []State{Idle}, To: Agent, Call: CallTake, Owner: OwnerRingCX, Queue: QueueFlush, Note: "take the idle thread"},
		{Event: HandoverToAgent, From: []State{Agent, Pending}, To: Same, Note: "already there or on the way"},

		{Event: HandoverToBot, From: []State{Agent, Idle}, To: Bot, Call: CallPass, Owner: OwnerEventApp, Note: "pass control to the bot app"},
		{Event: HandoverToBot, From: []State{Pending}, To: Bot, Owner: OwnerEventApp, Request: RequestEnd, Queue: QueueFail,
			Reason: "the request for control was cancelled: the thread was handed to a bot", Note: "cancel the request; the bot still owns the thread"},
		{Event: HandoverToBot, From: []State{Bot}, To: Same, Owner: OwnerEventApp, Note: "the bot app already owns the thread"},

		byPrimary(
			Rule{Event: AgentEngage, From: []State{Bot}, To: Pending, Call: CallRequest, Request: RequestStart, Note: "bot primary: request control"},
			Rule{Event: AgentEngage, From: []State{Bot}, To: Agent, Call: CallTake, Owner: OwnerRingCX, Queue: QueueFlush, Note: "RingCX primary: take control"},
			Rule{Event: AgentEngage, From: []State{Bot}, To: Pending, Call: CallRequest, Request: RequestStart, Note: "no primary: request control"},
		),
		{Event: AgentEngage, From: []State{Idle}, To: Agent, Call: CallTake, Owner: OwnerRingCX, Queue: QueueFlush, Note: "take the idle thread"},
		{Event: AgentEngage, From: []State{Agent, Pending}, To: Same, Note: "owner already, or waiting (content queued)"},

		{Event: ControlPassed, From: all, To: Agent, Owner: OwnerRingCX, Request: RequestEnd, Queue: QueueFlush, Note: "RingCX owns the thread; queued contents are sent"},

		{Event: ControlTaken, From: []State{Agent}, To: Bot, Owner: OwnerEventApp, Note: "another app took control from RingCX"},

		{Event: ControlRequested, From: []State{Agent}, To: Bot, Call: CallPass, Owner: OwnerEventApp, Note: "pass control to the requester unless an intervention is open"},

		{Event: InterventionClosed, From: []State{Agent}, To: Idle, Call: CallRelease, Owner: OwnerNone, Note: "release the thread"},
		{Event: InterventionClosed, From: []State{Pending}, To: Bot, Request: RequestEnd, Queue: QueueFail,
			Reason: "the intervention was closed before RingCX got control", Note: "cancel the request; queued contents fail"},

		byPrimary(
			Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Request: RequestEnd, Queue: QueueFail,
				Reason: "the owner did not pass control before the request's deadline", Note: "the owner did not pass in time; queued contents fail"},
			Rule{Event: RequestExpired, From: []State{Pending}, To: Agent, Call: CallTake, Owner: OwnerRingCX, Request: RequestEnd, Queue: QueueFlush, Note: "RingCX primary: take control, send queued contents"},
			Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Request: RequestEnd, Queue: QueueFail,
				Reason: "the owner did not pass control before the request's deadline", Note: "the owner did not pass in time; queued contents fail"},
		),

		{Event: ControlExpired, From: []State{Bot, Agent}, To: Idle, Owner: OwnerNone, Note: "24 h without activity: Meta returns the thread to idle"},

		{Event: OwnerObserved, Observed: ObservedNone, From: []State{Idle, Bot, Agent}, To: Idle, Owner: OwnerNone, Note: "Meta says the thread is idle"},
		{Event: OwnerObserved, Observed: ObservedNone, From: []State{Pending}, To: Idle, Owner: OwnerNone, Request: RequestEnd, Queue: QueueFail,
			Reason: "Meta says nobody owns the thread: the request for control lapsed", Note: "Meta says the thread is idle; the request lapsed"},
		{Event: OwnerObserved, Observed: ObservedRingCX, From: all, To: Agent, Owner: OwnerRingCX, Request: RequestEnd, Queue: QueueFlush, Note: "Meta says RingCX owns the thread"},
		{Event: OwnerObserved, Observed: ObservedOther, From: []State{Idle, Bot, Agent}, To: Bot, Owner: OwnerEventApp, Note: "Meta says another app owns the thread"},
		{Event: OwnerObserved, Observed: ObservedOther, From: []State{Pending}, To: Same, Owner: OwnerEventApp, Note: "still waiting for that app to pass"},

		{Event: PrimaryChanged, From: all, To: Same, Note: "later events use the new table"},
	}
}

// FSMEvents is the table for a primary setting as looplab/fsm Events. A rule
// with To == Same becomes one self-transition per source state, which fsm
// reports as NoTransitionError: "no change, success".
func FSMEvents(p Primary) fsm.Events {
	var evs fsm.Events
	for _, r := range Rules(p) {
		if r.To != Same {
			evs = append(evs, fsm.EventDesc{Name: r.Name(), Src: stateNames(r.From), Dst: string(r.To)})
			continue
		}
		for _, s := range r.From {
			evs = append(evs, fsm.EventDesc{Name: r.Name(), Src: []string{string(s)}, Dst: string(s)})
		}
	}
	return evs
}

func stateNames(ss []State) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

// Lookup returns the rule for event (and, for owner_observed, observed) in
// state from, if the table has one.
func Lookup(p Primary, e Event, o Observed, from State) (Rule, bool) { return lookup(p, e, o, from) }

// Available lists the events the table allows in state s, in table order.
func Available(p Primary, s State) []Event {
	var out []Event
	for _, r := range tables[p] {
		if slices.Contains(r.From, s) && !slices.Contains(out, r.Event) {
			out = append(out, r.Event)
		}
	}
	return out
}

// Allowed lists the events the table and its guards allow for a thread with
// facts, in table order: Available without the events a guard refuses now
// (handing the thread to a bot during an intervention, say). Events naming
// an app are tried with the thread's owner.
func Allowed(p Primary, f Facts) []Event {
	var out []Event
	for _, e := range Available(p, f.State) {
		g := guards[e]
		if g == nil {
			out = append(out, e)
			continue
		}
		probe := f
		if probe.AppID == "" {
			probe.AppID = f.Owner
		}
		if g(probe) == nil {
			out = append(out, e)
		}
	}
	return out
}

// validate checks the invariants a table must hold: every event of SPEC.md §2
// appears, states are known, no (event, state) pair has two rows, and every
// row's effects agree with its states (checkEffects).
func validate(p Primary) error {
	seen := map[string]bool{}
	events := map[Event]bool{}
	for _, r := range Rules(p) {
		events[r.Event] = true
		if (r.Event == OwnerObserved) != (r.Observed != "") {
			return fmt.Errorf("%s: only owner_observed rows name an observed owner", r.Name())
		}
		if r.To != Same && !slices.Contains(All, r.To) {
			return fmt.Errorf("%s: unknown destination %q", r.Name(), r.To)
		}
		for _, s := range r.From {
			if !slices.Contains(All, s) {
				return fmt.Errorf("%s: unknown source %q", r.Name(), s)
			}
			k := r.Name() + "/" + string(s)
			if seen[k] {
				return fmt.Errorf("%s: two rows from %s", r.Name(), s)
			}
			seen[k] = true
		}
		if err := checkEffects(r); err != nil {
			return err
		}
	}
	for _, e := range Events {
		if !events[e] {
			return fmt.Errorf("event %s has no row", e)
		}
	}
	return nil
}

// checkEffects reports a row whose effects contradict its states: the owner
// must be the one each destination implies (RingCX in agent, nobody when
// idle), a request starts exactly when a thread enters pending-request and
// ends when it leaves, contents are flushed exactly when RingCX gains control
// and failed when a request ends without it, and each call has its effect.
func checkEffects(r Rule) error {
	bad := func(from State, format string, args ...any) error {
		return fmt.Errorf("%s from %s: %s", r.Name(), from, fmt.Sprintf(format, args...))
	}
	if (r.Queue == QueueFail) != (r.Reason != "") {
		return fmt.Errorf("%s: a row gives a reason exactly when it fails the queue", r.Name())
	}
	callOwner := map[Call]Owner{CallPass: OwnerEventApp, CallTake: OwnerRingCX, CallRelease: OwnerNone}
	if want, ok := callOwner[r.Call]; ok && r.Owner != want {
		return fmt.Errorf("%s: %s leaves owner %q, want %q", r.Name(), r.Call, r.Owner, want)
	}
	if r.Call == CallRequest && r.Request != RequestStart {
		return fmt.Errorf("%s: request_thread_control must start a request", r.Name())
	}
	for _, from := range r.From {
		to := r.Dst(from)
		switch {
		case to == Agent && r.Owner != OwnerRingCX && !(from == Agent && r.Owner == OwnerUnchanged):
			return bad(from, "a row to agent must leave RingCX the owner")
		case to == Idle && r.Owner != OwnerNone && !(from == Idle && r.Owner == OwnerUnchanged):
			return bad(from, "a row to idle must leave no owner")
		case r.Owner == OwnerRingCX && to != Agent, r.Owner == OwnerNone && to != Idle,
			r.Owner == OwnerPrimaryBot && to != Bot, r.Owner == OwnerEventApp && Holder(to) != ObservedOther:
			return bad(from, "owner %q contradicts destination %s", r.Owner, to)
		case (to == Pending && from != Pending) != (r.Request == RequestStart):
			return bad(from, "a request starts exactly when the thread enters %s", Pending)
		case from == Pending && to != Pending && r.Request != RequestEnd, r.Request == RequestEnd && to == Pending:
			return bad(from, "a request ends exactly when the thread leaves %s", Pending)
		case r.Queue == QueueFlush && to != Agent, to == Agent && from != Agent && r.Queue != QueueFlush:
			return bad(from, "queued contents are flushed exactly when RingCX gets control")
		case r.Queue == QueueFail && from != Pending, from == Pending && to != Pending && to != Agent && r.Queue != QueueFail:
			return bad(from, "queued contents fail exactly when a request ends without control")
		}
	}
	return nil
}
