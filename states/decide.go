package states

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/looplab/fsm"
)

// Facts are what the table's guards look at besides the state.
type Facts struct {
	State            State
	Owner            string // the owner app id; "" when none or unknown
	InterventionOpen bool
	AppID            string // the event's app: handover_to_bot's target, the requester
}

// Decision is what the table says an event does to a thread.
type Decision struct {
	Rule Rule
	From State
	To   State
}

// Changed reports whether the thread changes state.
func (d Decision) Changed() bool { return d.From != d.To }

// ErrInterventionEngaged refuses handing a thread to a bot (and ignores a
// bot's request for control) while an agent's intervention is open.
var ErrInterventionEngaged = errors.New("an intervention is engaged on this identity")

// OwnedByOtherError refuses handing a thread to a bot app that does not own it
// while another app does.
type OwnedByOtherError struct {
	Owner string
	AppID string
}

func (e *OwnedByOtherError) Error() string {
	return fmt.Sprintf("the thread is owned by app %s, not app %s", e.Owner, e.AppID)
}

// NotAllowedError is an event the table has no row for in the thread's state.
type NotAllowedError struct {
	Table Table
	Event string
	State State
}

func (e *NotAllowedError) Error() string {
	return fmt.Sprintf("%s is not allowed in state %s (table %s)", e.Event, e.State, e.Table)
}

// RefusedError is an event a refusal row refuses, with what to do instead.
type RefusedError struct {
	Rule Rule
}

func (e *RefusedError) Error() string { return e.Rule.Refuse }

// ErrNoIntervention ignores control_expiring when no agent is working.
var ErrNoIntervention = errors.New("no intervention is open: control is left to expire")

// guards are the tables' conditions beyond the state, run as looplab/fsm
// before_<event> callbacks; an error cancels the event.
var guards = map[Event]func(Facts) error{
	HandoverToBot: func(f Facts) error {
		if f.InterventionOpen {
			return ErrInterventionEngaged
		}
		if (f.State == Bot || f.State == Pending) && f.Owner != "" && f.Owner != f.AppID {
			return &OwnedByOtherError{Owner: f.Owner, AppID: f.AppID}
		}
		return nil
	},
	ControlRequested: func(f Facts) error {
		if f.InterventionOpen {
			return ErrInterventionEngaged
		}
		return nil
	},
	ControlExpiring: func(f Facts) error {
		if !f.InterventionOpen {
			return ErrNoIntervention
		}
		return nil
	},
}

var (
	tables    = map[Table][]Rule{}
	fsmTables = map[Table]fsm.Events{}
	machines  = map[Table]*sync.Pool{}
)

func init() {
	for _, t := range Tables {
		if err := validate(t); err != nil {
			panic("states: table " + t.Name() + ": " + err.Error())
		}
		tables[t] = Rules(t)
		fsmTables[t] = FSMEvents(t)
		machines[t] = &sync.Pool{New: func() any { return newMachine(t) }}
	}
}

// newMachine builds a looplab/fsm machine for table t. Its before_<event>
// callbacks read the Facts passed to Event and cancel the event with a
// refusal row's error, or with the event's guard's.
func newMachine(t Table) *fsm.FSM {
	callbacks := fsm.Callbacks{}
	refusals := map[string][]Rule{}
	for _, r := range tables[t] {
		if r.Refuse != "" {
			refusals[r.Name()] = append(refusals[r.Name()], r)
		}
	}
	for _, r := range tables[t] {
		name, g := r.Name(), guards[r.Event]
		if _, done := callbacks["before_"+name]; done || (g == nil && refusals[name] == nil) {
			continue
		}
		callbacks["before_"+name] = func(_ context.Context, ev *fsm.Event) {
			for _, rr := range refusals[name] {
				if slices.Contains(rr.From, State(ev.Src)) {
					ev.Cancel(&RefusedError{Rule: rr})
					return
				}
			}
			if g == nil {
				return
			}
			if err := g(ev.Args[0].(Facts)); err != nil {
				ev.Cancel(err)
			}
		}
	}
	return fsm.NewFSM(string(Idle), fsmTables[t], callbacks)
}

// Decide runs event (with observed, for owner_observed) through a looplab/fsm
// machine built from table t and set to the thread's state. It returns the
// rule that applies, or a *NotAllowedError, a *RefusedError, or the guard's
// error. Machines are pooled: building one costs more than deciding with it.
func Decide(ctx context.Context, t Table, e Event, o Observed, f Facts) (Decision, error) {
	pool, ok := machines[t]
	if !ok {
		return Decision{}, fmt.Errorf("unknown table %+v", t)
	}
	m := pool.Get().(*fsm.FSM)
	defer pool.Put(m)
	m.SetState(string(f.State))
	name := fsmName(e, o)
	err := m.Event(ctx, name, f)
	var (
		noTransition fsm.NoTransitionError
		canceled     fsm.CanceledError
	)
	switch {
	case err == nil, errors.As(err, &noTransition) && noTransition.Err == nil:
	case errors.As(err, &canceled):
		return Decision{}, canceled.Err
	default:
		return Decision{}, &NotAllowedError{Table: t, Event: name, State: f.State}
	}
	r, ok := lookup(t, e, o, f.State)
	if !ok {
		return Decision{}, fmt.Errorf("states: fsm allowed %s in %s but the table has no row", name, f.State)
	}
	return Decision{Rule: r, From: f.State, To: State(m.Current())}, nil
}

func lookup(t Table, e Event, o Observed, from State) (Rule, bool) {
	for _, r := range tables[t] {
		if r.Event == e && r.Observed == o && slices.Contains(r.From, from) {
			return r, true
		}
	}
	return Rule{}, false
}
