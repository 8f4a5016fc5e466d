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
// the thread to To, making Call first. For owner_observed, Observed says
// which answer of Meta the row is for.
type Rule struct {
	Event    Event
	Observed Observed
	From     []State
	To       State
	Call     Call
	Note     string
}

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
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Bot, Note: "Meta gives the idle thread to the primary bot app"},
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Agent, Note: "Meta gives the idle thread to RingCX, the primary"},
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Same, Note: "no primary: the thread stays idle"},
		),
		{Event: CustomerMessage, From: notIdle, To: Same, Note: "activity restarts the 24 h window"},

		{Event: HandoverToAgent, From: []State{Bot}, To: Pending, Call: CallRequest, Note: "ask the owner to pass control"},
		{Event: HandoverToAgent, From: []State{Idle}, To: Agent, Call: CallTake, Note: "take the idle thread"},
		{Event: HandoverToAgent, From: []State{Agent, Pending}, To: Same, Note: "already there or on the way"},

		{Event: HandoverToBot, From: []State{Agent, Idle}, To: Bot, Call: CallPass, Note: "pass control to the bot app"},
		{Event: HandoverToBot, From: []State{Pending}, To: Bot, Note: "cancel the request; the bot still owns the thread"},
		{Event: HandoverToBot, From: []State{Bot}, To: Same, Note: "the bot app already owns the thread"},

		byPrimary(
			Rule{Event: AgentEngage, From: []State{Bot}, To: Pending, Call: CallRequest, Note: "bot primary: request control"},
			Rule{Event: AgentEngage, From: []State{Bot}, To: Agent, Call: CallTake, Note: "RingCX primary: take control"},
			Rule{Event: AgentEngage, From: []State{Bot}, To: Pending, Call: CallRequest, Note: "no primary: request control"},
		),
		{Event: AgentEngage, From: []State{Idle}, To: Agent, Call: CallTake, Note: "take the idle thread"},
		{Event: AgentEngage, From: []State{Agent, Pending}, To: Same, Note: "owner already, or waiting (content queued)"},

		{Event: ControlPassed, From: all, To: Agent, Note: "RingCX owns the thread; queued contents are sent"},

		{Event: ControlTaken, From: []State{Agent}, To: Bot, Note: "another app took control from RingCX"},

		{Event: ControlRequested, From: []State{Agent}, To: Bot, Call: CallPass, Note: "pass control to the requester unless an intervention is open"},

		{Event: InterventionClosed, From: []State{Agent}, To: Idle, Call: CallRelease, Note: "release the thread"},
		{Event: InterventionClosed, From: []State{Pending}, To: Bot, Note: "cancel the request; queued contents fail"},

		byPrimary(
			Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Note: "the owner did not pass in time; queued contents fail"},
			Rule{Event: RequestExpired, From: []State{Pending}, To: Agent, Call: CallTake, Note: "RingCX primary: take control, send queued contents"},
			Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Note: "the owner did not pass in time; queued contents fail"},
		),

		{Event: ControlExpired, From: []State{Bot, Agent}, To: Idle, Note: "24 h without activity: Meta returns the thread to idle"},

		{Event: OwnerObserved, Observed: ObservedNone, From: all, To: Idle, Note: "Meta says the thread is idle"},
		{Event: OwnerObserved, Observed: ObservedRingCX, From: all, To: Agent, Note: "Meta says RingCX owns the thread"},
		{Event: OwnerObserved, Observed: ObservedOther, From: []State{Idle, Bot, Agent}, To: Bot, Note: "Meta says another app owns the thread"},
		{Event: OwnerObserved, Observed: ObservedOther, From: []State{Pending}, To: Same, Note: "still waiting for that app to pass"},

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
// appears, states are known, and no (event, state) pair has two rows.
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
	}
	for _, e := range Events {
		if !events[e] {
			return fmt.Errorf("event %s has no row", e)
		}
	}
	return nil
}
