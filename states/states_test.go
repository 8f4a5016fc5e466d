package states

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// spec is SPEC.md §2's and §2.1's tables written out cell by cell,
// independently of Rules: for each table, event and state, the destination
// and call, or no entry when the event is not allowed there. "=" means no
// change, "refused" a refusal with what to do instead.
type cell struct {
	to     string
	call   Call
	target Target
}

func spec(t Table) map[string]map[State]cell {
	cr, zero := t.Routing == ConversationRouting, t.Primary == PrimaryNone
	pick := func(bot, ringcx, none cell) cell {
		return map[Primary]cell{PrimaryBot: bot, PrimaryRingCX: ringcx, PrimaryNone: none}[t.Primary]
	}
	// route picks a cell for the Handover Protocol, Conversation Routing with
	// takeover on, off, and zero-config.
	route := func(hop, on, off, zeroCfg cell) cell {
		switch {
		case !cr:
			return hop
		case zero:
			return zeroCfg
		case t.Takeover:
			return on
		}
		return off
	}
	same := cell{to: "="}
	takeAgent := cell{to: "agent", call: CallTake}
	request := cell{to: "pending-request", call: CallRequest}
	idle := takeAgent
	if cr {
		idle = cell{to: "agent", call: CallPass, target: TargetRingCX}
	}
	return map[string]map[State]cell{
		"customer_message": {
			Idle: pick(cell{to: "bot"}, cell{to: "agent"}, same),
			Bot:  same, Agent: same, Pending: same,
		},
		"handover_to_agent": {
			Bot:   route(request, takeAgent, cell{to: "refused"}, request),
			Idle:  idle,
			Agent: same, Pending: same,
		},
		"handover_to_bot": {
			Agent:   {to: "bot", call: CallPass},
			Idle:    {to: "bot", call: CallPass},
			Pending: {to: "bot"},
			Bot:     same,
		},
		"agent_engage": {
			Bot:   route(pick(request, takeAgent, request), takeAgent, cell{to: "pending-request"}, request),
			Idle:  idle,
			Agent: same, Pending: same,
		},
		"control_passed":    {Idle: {to: "agent"}, Bot: {to: "agent"}, Agent: same, Pending: {to: "agent"}},
		"control_taken":     {Agent: {to: "bot"}},
		"control_requested": {Agent: {to: "bot", call: CallPass}},
		"intervention_closed": {
			Agent:   {to: "idle", call: CallRelease},
			Pending: {to: "bot"},
		},
		"request_expired": {
			Pending: route(pick(cell{to: "bot"}, takeAgent, cell{to: "bot"}), takeAgent, cell{to: "bot"}, cell{to: "bot"}),
		},
		"control_expired":       {Bot: {to: "idle"}, Agent: {to: "idle"}},
		"control_expiring":      {Agent: {to: "=", call: CallExtend}},
		"owner_observed:none":   {Idle: same, Bot: {to: "idle"}, Agent: {to: "idle"}, Pending: {to: "idle"}},
		"owner_observed:ringcx": {Idle: {to: "agent"}, Bot: {to: "agent"}, Agent: same, Pending: {to: "agent"}},
		"owner_observed:other":  {Idle: {to: "bot"}, Bot: same, Agent: {to: "bot"}, Pending: same},
		"primary_changed":       {Idle: same, Bot: same, Agent: same, Pending: same},
	}
}

func splitName(name string) (Event, Observed) {
	for i := range name {
		if name[i] == ':' {
			return Event(name[:i]), Observed(name[i+1:])
		}
	}
	return Event(name), ""
}

func TestTableMatchesSpec(t *testing.T) {
	for _, tbl := range Tables {
		for name, row := range spec(tbl) {
			e, o := splitName(name)
			for _, s := range All {
				want, allowed := row[s]
				t.Run(fmt.Sprintf("%s/%s/%s", tbl, name, s), func(t *testing.T) {
					// Facts that pass every guard.
					f := Facts{State: s, Owner: "300", AppID: "300", InterventionOpen: e == ControlExpiring}
					d, err := Decide(context.Background(), tbl, e, o, f)
					if want.to == "refused" {
						var re *RefusedError
						if !errors.As(err, &re) || re.Error() == "" {
							t.Fatalf("Decide = %+v, %v; want a RefusedError saying what to do", d, err)
						}
						if _, ok := Lookup(tbl, e, o, s); ok {
							t.Errorf("Lookup allows a refused event")
						}
						return
					}
					if !allowed {
						var na *NotAllowedError
						if !errors.As(err, &na) {
							t.Fatalf("Decide = %+v, %v; want NotAllowedError", d, err)
						}
						return
					}
					if err != nil {
						t.Fatalf("Decide: %v", err)
					}
					wantTo := State(want.to)
					if want.to == "=" {
						wantTo = s
					}
					if d.To != wantTo || d.Rule.Call != want.call || d.Rule.Target != want.target {
						t.Errorf("Decide = to %s call %q (target %q), want to %s call %q (target %q)", d.To, d.Rule.Call, d.Rule.Target, wantTo, want.call, want.target)
					}
				})
			}
		}
	}
}

func TestEveryEventHasRows(t *testing.T) {
	for _, p := range Tables {
		if err := validate(p); err != nil {
			t.Errorf("validate(%s): %v", p, err)
		}
		got := map[Event]bool{}
		for _, r := range Rules(p) {
			got[r.Event] = true
		}
		for _, e := range Events {
			if !got[e] {
				t.Errorf("primary %s: event %s has no row", p, e)
			}
		}
	}
}

func TestGuards(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		event   Event
		facts   Facts
		wantErr error
		wantTo  State
	}{
		{"to bot refused while intervention open", HandoverToBot, Facts{State: Agent, InterventionOpen: true, AppID: "300"}, ErrInterventionEngaged, ""},
		{"to bot refused from idle too", HandoverToBot, Facts{State: Idle, InterventionOpen: true, AppID: "300"}, ErrInterventionEngaged, ""},
		{"to bot, same app owns: no change", HandoverToBot, Facts{State: Bot, Owner: "300", AppID: "300"}, nil, Bot},
		{"to bot, another app owns", HandoverToBot, Facts{State: Bot, Owner: "263902037430900", AppID: "300"}, &OwnedByOtherError{}, ""},
		{"to bot while pending on another app", HandoverToBot, Facts{State: Pending, Owner: "301", AppID: "300"}, &OwnedByOtherError{}, ""},
		{"to bot while pending on that app", HandoverToBot, Facts{State: Pending, Owner: "300", AppID: "300"}, nil, Bot},
		{"request ignored while intervention open", ControlRequested, Facts{State: Agent, InterventionOpen: true, AppID: "300"}, ErrInterventionEngaged, ""},
		{"request honoured without intervention", ControlRequested, Facts{State: Agent, AppID: "300"}, nil, Bot},
		{"control extended while an agent works", ControlExpiring, Facts{State: Agent, InterventionOpen: true}, nil, Agent},
		{"control left to expire without intervention", ControlExpiring, Facts{State: Agent}, ErrNoIntervention, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Decide(ctx, HOP(PrimaryBot), tt.event, "", tt.facts)
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Fatalf("Decide: %v", err)
				}
				if d.To != tt.wantTo {
					t.Errorf("to = %s, want %s", d.To, tt.wantTo)
				}
			case *OwnedByOtherError:
				var got *OwnedByOtherError
				if !errors.As(err, &got) || got.Owner != tt.facts.Owner {
					t.Errorf("Decide error = %v, want OwnedByOtherError naming %s", err, tt.facts.Owner)
				}
			default:
				if !errors.Is(err, want) {
					t.Errorf("Decide error = %v, want %v", err, want)
				}
			}
		})
	}
}

func TestFSMEventsSelfLoops(t *testing.T) {
	for _, p := range Tables {
		for _, ev := range FSMEvents(p) {
			if ev.Dst == "" {
				t.Errorf("%s: %s has no destination", p, ev.Name)
			}
			for _, src := range ev.Src {
				if _, err := ParseState(src); err != nil {
					t.Errorf("%s: %s: %v", p, ev.Name, err)
				}
			}
		}
	}
}

func TestAvailable(t *testing.T) {
	got := Available(HOP(PrimaryBot), Agent)
	for _, e := range []Event{CustomerMessage, HandoverToBot, ControlTaken, ControlRequested, InterventionClosed, ControlExpired, OwnerObserved} {
		if !slices.Contains(got, e) {
			t.Errorf("Available(bot, agent) = %v, missing %s", got, e)
		}
	}
	for _, e := range []Event{RequestExpired} {
		if slices.Contains(got, e) {
			t.Errorf("Available(bot, agent) = %v, should not have %s", got, e)
		}
	}
	if got := Available(HOP(PrimaryBot), Pending); !slices.Contains(got, RequestExpired) {
		t.Errorf("Available(bot, pending) = %v, missing request_expired", got)
	}
	off := TableFor(ConversationRouting, PrimaryBot, false)
	if got := Available(off, Bot); slices.Contains(got, HandoverToAgent) {
		t.Errorf("Available(%s, bot) = %v: a refused event is not available", off, got)
	}
}

func TestParse(t *testing.T) {
	if _, err := ParseState("pending-request"); err != nil {
		t.Error(err)
	}
	if _, err := ParseState("pending"); err == nil {
		t.Error("ParseState(pending) should fail")
	}
	if _, err := ParsePrimary("ringcx"); err != nil {
		t.Error(err)
	}
	if _, err := ParsePrimary("ed"); err == nil {
		t.Error("ParsePrimary(ed) should fail")
	}
}

func BenchmarkDecide(b *testing.B) {
	ctx := context.Background()
	f := Facts{State: Bot, Owner: "300"}
	for b.Loop() {
		if _, err := Decide(ctx, HOP(PrimaryBot), CustomerMessage, "", f); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAllowedAppliesGuards(t *testing.T) {
	free := Allowed(HOP(PrimaryBot), Facts{State: Agent, Owner: "200"})
	engaged := Allowed(HOP(PrimaryBot), Facts{State: Agent, Owner: "200", InterventionOpen: true})
	for _, e := range []Event{HandoverToBot, ControlRequested} {
		if !slices.Contains(free, e) {
			t.Errorf("without an intervention %s should be allowed: %v", e, free)
		}
		if slices.Contains(engaged, e) {
			t.Errorf("during an intervention %s should not be allowed: %v", e, engaged)
		}
	}
	if slices.Contains(free, ControlExpiring) || !slices.Contains(engaged, ControlExpiring) {
		t.Errorf("control_expiring should be allowed only during an intervention: %v, %v", free, engaged)
	}
	if got, want := len(engaged), len(free)-1; got != want {
		t.Errorf("during an intervention %d events, want %d", got, want)
	}
}

// TestEffectsConsistent checks every row's effects against its states, and
// that the check refuses rows whose effects contradict them.
func TestEffectsConsistent(t *testing.T) {
	for _, p := range Tables {
		for _, r := range Rules(p) {
			if err := checkEffects(r); err != nil {
				t.Errorf("primary %s: %v", p, err)
			}
		}
	}
	bad := []struct {
		name string
		rule Rule
	}{
		{"to agent without RingCX owning", Rule{Event: ControlPassed, From: []State{Bot}, To: Agent, Queue: QueueFlush}},
		{"to idle with an owner", Rule{Event: ControlExpired, From: []State{Bot}, To: Idle, Owner: OwnerEventApp}},
		{"flushes and fails", Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Request: RequestEnd, Queue: QueueFlush, Reason: "x"}},
		{"fails without leaving pending", Rule{Event: ControlTaken, From: []State{Agent}, To: Bot, Owner: OwnerEventApp, Queue: QueueFail, Reason: "x"}},
		{"leaves pending without failing", Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Request: RequestEnd}},
		{"fails without a reason", Rule{Event: RequestExpired, From: []State{Pending}, To: Bot, Request: RequestEnd, Queue: QueueFail}},
		{"enters pending without a request", Rule{Event: HandoverToAgent, From: []State{Bot}, To: Pending, Call: CallRequest}},
		{"leaves pending without ending it", Rule{Event: ControlPassed, From: []State{Pending}, To: Agent, Owner: OwnerRingCX, Queue: QueueFlush}},
		{"gains control without flushing", Rule{Event: AgentEngage, From: []State{Idle}, To: Agent, Call: CallTake, Owner: OwnerRingCX}},
		{"take leaves another owner", Rule{Event: AgentEngage, From: []State{Bot}, To: Bot, Call: CallTake, Owner: OwnerEventApp}},
		{"release keeps an owner", Rule{Event: InterventionClosed, From: []State{Agent}, To: Same, Call: CallRelease}},
		{"primary bot in agent", Rule{Event: CustomerMessage, From: []State{Idle}, To: Agent, Owner: OwnerPrimaryBot, Queue: QueueFlush}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkEffects(tc.rule); err == nil {
				t.Errorf("checkEffects(%+v) = nil, want an error", tc.rule)
			}
		})
	}
}

func TestTableNames(t *testing.T) {
	seen := map[string]bool{}
	for _, tbl := range Tables {
		name := tbl.Name()
		if seen[name] {
			t.Errorf("two tables named %s", name)
		}
		seen[name] = true
		got, err := ParseTable(name)
		if err != nil || got != tbl {
			t.Errorf("ParseTable(%q) = %+v, %v; want %+v", name, got, err, tbl)
		}
	}
	for _, tc := range []struct {
		got  Table
		want string
	}{
		{HOP(PrimaryBot), "bot"},
		{TableFor(HandoverProtocol, PrimaryRingCX, true), "ringcx"}, // the Handover Protocol has no takeover setting
		{TableFor("", PrimaryNone, false), "none"},
		{TableFor(ConversationRouting, PrimaryBot, true), "cr-bot"},
		{TableFor(ConversationRouting, PrimaryRingCX, false), "cr-ringcx-no-takeover"},
		{TableFor(ConversationRouting, PrimaryNone, true), "cr-none"}, // zero-config blocks take
	} {
		if tc.got.Name() != tc.want {
			t.Errorf("%+v is named %s, want %s", tc.got, tc.got.Name(), tc.want)
		}
	}
	if _, err := ParseTable("cr"); err == nil {
		t.Error("ParseTable(cr) should fail")
	}
}

func TestRefusalsChangeNothing(t *testing.T) {
	for _, r := range []Rule{
		{Event: HandoverToAgent, From: []State{Bot}, To: Agent, Refuse: "no", Owner: OwnerRingCX, Queue: QueueFlush},
		{Event: HandoverToAgent, From: []State{Bot}, To: Same, Refuse: "no", Call: CallTake},
		{Event: AgentEngage, From: []State{Idle}, To: Bot, Call: CallTake, Target: TargetRingCX, Owner: OwnerRingCX},
	} {
		if err := checkEffects(r); err == nil {
			t.Errorf("checkEffects(%+v) = nil, want an error", r)
		}
	}
}
