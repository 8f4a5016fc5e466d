package states

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// spec is SPEC.md §2's table written out cell by cell, independently of
// Rules: for each primary, event and state, the destination and call, or ""
// when the event is not allowed there. "=" means no change.
type cell struct {
	to   string
	call Call
}

func spec(p Primary) map[string]map[State]cell {
	pick := func(bot, ringcx, none cell) cell {
		return map[Primary]cell{PrimaryBot: bot, PrimaryRingCX: ringcx, PrimaryNone: none}[p]
	}
	same := cell{to: "="}
	return map[string]map[State]cell{
		"customer_message": {
			Idle: pick(cell{to: "bot"}, cell{to: "agent"}, same),
			Bot:  same, Agent: same, Pending: same,
		},
		"handover_to_agent": {
			Bot:   {to: "pending-request", call: CallRequest},
			Idle:  {to: "agent", call: CallTake},
			Agent: same, Pending: same,
		},
		"handover_to_bot": {
			Agent:   {to: "bot", call: CallPass},
			Idle:    {to: "bot", call: CallPass},
			Pending: {to: "bot"},
			Bot:     same,
		},
		"agent_engage": {
			Bot:   pick(cell{to: "pending-request", call: CallRequest}, cell{to: "agent", call: CallTake}, cell{to: "pending-request", call: CallRequest}),
			Idle:  {to: "agent", call: CallTake},
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
			Pending: pick(cell{to: "bot"}, cell{to: "agent", call: CallTake}, cell{to: "bot"}),
		},
		"control_expired":       {Bot: {to: "idle"}, Agent: {to: "idle"}},
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
	for _, p := range Primaries {
		for name, row := range spec(p) {
			e, o := splitName(name)
			for _, s := range All {
				want, allowed := row[s]
				t.Run(fmt.Sprintf("%s/%s/%s", p, name, s), func(t *testing.T) {
					// Facts that pass every guard.
					f := Facts{State: s, Owner: "300", AppID: "300"}
					d, err := Decide(context.Background(), p, e, o, f)
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
					if d.To != wantTo || d.Rule.Call != want.call {
						t.Errorf("Decide = to %s call %q, want to %s call %q", d.To, d.Rule.Call, wantTo, want.call)
					}
				})
			}
		}
	}
}

func TestEveryEventHasRows(t *testing.T) {
	for _, p := range Primaries {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Decide(ctx, PrimaryBot, tt.event, "", tt.facts)
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
	for _, p := range Primaries {
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
	got := Available(PrimaryBot, Agent)
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
	if got := Available(PrimaryBot, Pending); !slices.Contains(got, RequestExpired) {
		t.Errorf("Available(bot, pending) = %v, missing request_expired", got)
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
		if _, err := Decide(ctx, PrimaryBot, CustomerMessage, "", f); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAllowedAppliesGuards(t *testing.T) {
	free := Allowed(PrimaryBot, Facts{State: Agent, Owner: "200"})
	engaged := Allowed(PrimaryBot, Facts{State: Agent, Owner: "200", InterventionOpen: true})
	for _, e := range []Event{HandoverToBot, ControlRequested} {
		if !slices.Contains(free, e) {
			t.Errorf("without an intervention %s should be allowed: %v", e, free)
		}
		if slices.Contains(engaged, e) {
			t.Errorf("during an intervention %s should not be allowed: %v", e, engaged)
		}
	}
	if got, want := len(engaged), len(free)-2; got != want {
		t.Errorf("during an intervention %d events, want %d", got, want)
	}
}

// TestEffectsConsistent checks every row's effects against its states, and
// that the check refuses rows whose effects contradict them.
func TestEffectsConsistent(t *testing.T) {
	for _, p := range Primaries {
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
