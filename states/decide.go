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
	Primary Primary
	Event   string
	State   State
}

func (e *NotAllowedError) Error() string {
	return fmt.Sprintf("%s is not allowed in state %s (primary %s)", e.Event, e.State, e.Primary)
}

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
}

var (
	tables    = map[Primary][]Rule{}
	fsmTables = map[Primary]fsm.Events{}
	machines  = map[Primary]*sync.Pool{}
)

func init() {
	for _, p := range Primaries {
		if err := validate(p); err != nil {
			panic("states: table for primary " + string(p) + ": " + err.Error())
		}
		tables[p] = Rules(p)
		fsmTables[p] = FSMEvents(p)
		machines[p] = &sync.Pool{New: func() any { return newMachine(p) }}
	}
}

// newMachine builds a looplab/fsm machine for a primary's table, with the
// guards as before_<event> callbacks that read the Facts passed to Event.
// Machines are pooled: building one costs more than deciding with it.
func newMachine(p Primary) *fsm.FSM {
	callbacks := fsm.Callbacks{}
	for _, r := range tables[p] {
		g := guards[r.Event]
		if g == nil {
			continue
		}
		callbacks["before_"+r.Name()] = func(_ context.Context, ev *fsm.Event) {
			if err := g(ev.Args[0].(Facts)); err != nil {
				ev.Cancel(err)
			}
		}
	}
	return fsm.NewFSM(string(Idle), fsmTables[p], callbacks)
}

// Decide runs event (with observed, for owner_observed) through a looplab/fsm
// machine built from the primary's table and set to the thread's state. It
// returns the rule that applies, or a *NotAllowedError, or the guard's error.
func Decide(ctx context.Context, p Primary, e Event, o Observed, f Facts) (Decision, error) {
	pool, ok := machines[p]
	if !ok {
		return Decision{}, fmt.Errorf("unknown primary %q", p)
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
		return Decision{}, &NotAllowedError{Primary: p, Event: name, State: f.State}
	}
	r, ok := lookup(p, e, o, f.State)
	if !ok {
		return Decision{}, fmt.Errorf("states: fsm allowed %s in %s but the table has no row", name, f.State)
	}
	return Decision{Rule: r, From: f.State, To: State(m.Current())}, nil
}

func lookup(p Primary, e Event, o Observed, from State) (Rule, bool) {
	for _, r := range tables[p] {
		if r.Event == e && r.Observed == o && slices.Contains(r.From, from) {
			return r, true
		}
	}
	return Rule{}, false
}
