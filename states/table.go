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
	Target   Target // for pass_thread_control: who gets control

	// Refuse, when set, makes the row a refusal: the event is refused with
	// this message (an API caller gets it; a webhook is recorded as
	// ignored) and nothing changes. "{ringcx_app_id}" is replaced by the
	// page's RingCX app id.
	Refuse string

	// Confirm asks Meta who owns the thread (thread_owner) before the row
	// applies, so that it does not act on a stale view: the owner may have
	// passed control to RingCX in a webhook that was lost.
	Confirm bool

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

// TakeoverOff is the refusal of handover_to_agent on a Conversation Routing
// page where RingCX may not take control: what the bot or the page's admin
// can do instead.
const TakeoverOff = "RingCX may not take control of this thread: the page uses Conversation Routing and " +
	"its takeover setting for the RingCX app is off. Either the bot passes control to the RingCX app " +
	"({ringcx_app_id}) itself — pass_thread_control with target_app_id={ringcx_app_id}, or a Send API " +
	`message with "thread_control":{"control_type":"pass","app_id":"{ringcx_app_id}"} — or the page's ` +
	"admin turns on the takeover setting for the RingCX app in Page Settings → Advanced Messaging"

// Rules is the transition table t (SPEC.md §2 and §2.1). Rows not listed are
// not allowed: the engine refuses them (API) or records them as ignored
// (webhooks).
//
// The tables differ in how RingCX gets control. On Handover Protocol pages
// it requests control of a thread another app owns (takes it when RingCX is
// the primary) and takes an idle one. On Conversation Routing pages with a
// default app, request_thread_control is refused: RingCX takes control when
// its takeover setting is on; when it is off, handover_to_agent is refused
// with what to do instead, and an agent's content waits for the owner to
// pass. Zero-config pages block take and allow request. On every
// Conversation Routing page RingCX claims an idle thread by passing it to
// itself, which any app may do.
func Rules(t Table) []Rule {
	cr := t.Routing == ConversationRouting
	byPrimary := func(bot, ringcx, none Rule) Rule {
		switch t.Primary {
		case PrimaryRingCX:
			return ringcx
		case PrimaryNone:
			return none
		}
		return bot
	}
	// byRouting picks a row for the Handover Protocol, Conversation Routing
	// with takeover on, with takeover off, and zero-config.
	byRouting := func(hop, takeover, noTakeover, zero Rule) Rule {
		switch {
		case !cr:
			return hop
		case t.Primary == PrimaryNone:
			return zero
		case t.Takeover:
			return takeover
		}
		return noTakeover
	}
	take := func(e Event, note string) Rule {
		return Rule{Event: e, From: []State{Bot}, To: Agent, Call: CallTake, Owner: OwnerRingCX, Queue: QueueFlush, Note: note}
	}
	request := func(e Event, note string) Rule {
		return Rule{Event: e, From: []State{Bot}, To: Pending, Call: CallRequest, Request: RequestStart, Note: note}
	}
	idle := func(e Event) Rule {
		if cr {
			return Rule{Event: e, From: []State{Idle}, To: Agent, Call: CallPass, Target: TargetRingCX, Owner: OwnerRingCX, Queue: QueueFlush, Note: "claim the idle thread: pass it to RingCX itself"}
		}
		return Rule{Event: e, From: []State{Idle}, To: Agent, Call: CallTake, Owner: OwnerRingCX, Queue: QueueFlush, Note: "take the idle thread"}
	}
	expired := Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Confirm: true, Request: RequestEnd, Queue: QueueFail,
		Reason: "the owner did not pass control before the request's deadline", Note: "the owner did not pass in time; queued contents fail"}
	takeExpired := Rule{Event: RequestExpired, From: []State{Pending}, To: Agent, Call: CallTake, Confirm: true, Owner: OwnerRingCX, Request: RequestEnd, Queue: QueueFlush, Note: "take control, send queued contents"}

	return []Rule{
		byPrimary(
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Bot, Owner: OwnerPrimaryBot, Note: "Meta gives the idle thread to the primary bot app"},
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Agent, Owner: OwnerRingCX, Queue: QueueFlush, Note: "Meta gives the idle thread to RingCX, the primary"},
			Rule{Event: CustomerMessage, From: []State{Idle}, To: Same, Note: "no primary: the thread stays idle"},
		),
		{Event: CustomerMessage, From: notIdle, To: Same, Note: "activity restarts the 24 h window"},

		byRouting(
			request(HandoverToAgent, "ask the owner to pass control"),
			take(HandoverToAgent, "take control (the takeover setting is on)"),
			Rule{Event: HandoverToAgent, From: []State{Bot}, To: Same, Refuse: TakeoverOff, Note: "refused: the bot must pass control itself"},
			request(HandoverToAgent, "zero-config: ask the owner to pass control"),
		),
		idle(HandoverToAgent),
		{Event: HandoverToAgent, From: []State{Agent, Pending}, To: Same, Note: "already there or on the way"},

		{Event: HandoverToBot, From: []State{Agent, Idle}, To: Bot, Call: CallPass, Owner: OwnerEventApp, Note: "pass control to the bot app"},
		{Event: HandoverToBot, From: []State{Pending}, To: Bot, Owner: OwnerEventApp, Request: RequestEnd, Queue: QueueFail,
			Reason: "the request for control was cancelled: the thread was handed to a bot", Note: "cancel the request; the bot still owns the thread"},
		{Event: HandoverToBot, From: []State{Bot}, To: Same, Owner: OwnerEventApp, Note: "the bot app already owns the thread"},

		byRouting(
			byPrimary(
				request(AgentEngage, "bot primary: request control"),
				take(AgentEngage, "RingCX primary: take control"),
				request(AgentEngage, "no primary: request control"),
			),
			take(AgentEngage, "take control (the takeover setting is on)"),
			Rule{Event: AgentEngage, From: []State{Bot}, To: Pending, Request: RequestStart, Note: "wait until the deadline for the owner to pass control"},
			request(AgentEngage, "zero-config: request control"),
		),
		idle(AgentEngage),
		{Event: AgentEngage, From: []State{Agent, Pending}, To: Same, Note: "owner already, or waiting (content queued)"},

		{Event: ControlPassed, From: all, To: Agent, Owner: OwnerRingCX, Request: RequestEnd, Queue: QueueFlush, Note: "RingCX owns the thread; queued contents are sent"},

		{Event: ControlTaken, From: []State{Agent}, To: Bot, Owner: OwnerEventApp, Note: "another app took control from RingCX"},

		{Event: ControlRequested, From: []State{Agent}, To: Bot, Call: CallPass, Owner: OwnerEventApp, Note: "pass control to the requester unless an intervention is open"},

		{Event: InterventionClosed, From: []State{Agent}, To: Idle, Call: CallRelease, Owner: OwnerNone, Note: "release the thread"},
		{Event: InterventionClosed, From: []State{Pending}, To: Bot, Request: RequestEnd, Queue: QueueFail,
			Reason: "the intervention was closed before RingCX got control", Note: "cancel the request; queued contents fail"},

		byRouting(byPrimary(expired, takeExpired, expired), takeExpired, expired, expired),

		{Event: ControlExpired, From: []State{Bot, Agent}, To: Idle, Owner: OwnerNone, Note: "24 h without activity: Meta returns the thread to idle"},
		{Event: ControlExpiring, From: []State{Agent}, To: Same, Call: CallExtend, Note: "an agent is working: extend control (up to 7 days)"},

		{Event: OwnerObserved, Observed: ObservedNone, From: []State{Idle, Bot, Agent}, To: Idle, Owner: OwnerNone, Note: "Meta says the thread is idle"},
		{Event: OwnerObserved, Observed: ObservedNone, From: []State{Pending}, To: Idle, Owner: OwnerNone, Request: RequestEnd, Queue: QueueFail,
			Reason: "Meta says nobody owns the thread: the request for control lapsed", Note: "Meta says the thread is idle; the request lapsed"},
		{Event: OwnerObserved, Observed: ObservedRingCX, From: all, To: Agent, Owner: OwnerRingCX, Request: RequestEnd, Queue: QueueFlush, Note: "Meta says RingCX owns the thread"},
		{Event: OwnerObserved, Observed: ObservedOther, From: []State{Idle, Bot, Agent}, To: Bot, Owner: OwnerEventApp, Note: "Meta says another app owns the thread"},
		{Event: OwnerObserved, Observed: ObservedOther, From: []State{Pending}, To: Same, Owner: OwnerEventApp, Note: "still waiting for that app to pass"},

		{Event: PrimaryChanged, From: all, To: Same, Note: "later events use the new table"},
	}
}

// FSMEvents is table t as looplab/fsm Events. A rule with To == Same (a
// refusal too) becomes one self-transition per source state, which fsm
// reports as NoTransitionError: "no change, success"; refusals are then
// cancelled by their before_ callback (see newMachine).
func FSMEvents(t Table) fsm.Events {
	var evs fsm.Events
	for _, r := range Rules(t) {
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
// state from, if table t allows it (a refusal row does not).
func Lookup(t Table, e Event, o Observed, from State) (Rule, bool) {
	r, ok := lookup(t, e, o, from)
	return r, ok && r.Refuse == ""
}

// Available lists the events table t allows in state s, in table order.
func Available(t Table, s State) []Event {
	var out []Event
	for _, r := range tables[t] {
		if r.Refuse == "" && slices.Contains(r.From, s) && !slices.Contains(out, r.Event) {
			out = append(out, r.Event)
		}
	}
	return out
}

// Allowed lists the events the table and its guards allow for a thread with
// facts, in table order: Available without the events a guard refuses now
// (handing the thread to a bot during an intervention, say). Events naming
// an app are tried with the thread's owner.
func Allowed(t Table, f Facts) []Event {
	var out []Event
	for _, e := range Available(t, f.State) {
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
func validate(t Table) error {
	seen := map[string]bool{}
	events := map[Event]bool{}
	for _, r := range Rules(t) {
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
	if r.Refuse != "" && (r.To != Same || r.Call != NoCall || r.Owner != OwnerUnchanged || r.Request != RequestUnchanged || r.Queue != QueueUnchanged) {
		return fmt.Errorf("%s: a refusal changes nothing and calls nothing", r.Name())
	}
	if r.Target != TargetEventApp && r.Call != CallPass {
		return fmt.Errorf("%s: only pass_thread_control has a target", r.Name())
	}
	callOwner := map[Call]Owner{CallPass: OwnerEventApp, CallTake: OwnerRingCX, CallRelease: OwnerNone, CallExtend: OwnerUnchanged}
	if r.Target == TargetRingCX {
		callOwner[CallPass] = OwnerRingCX
	}
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
