package sim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Fault makes Graph calls fail, slow down or go unanswered. Its JSON form is the body of PUT
// /_sim/faults; GET /_sim/faults lists the active faults, each with its remaining count and
// for_ms; DELETE /_sim/faults clears them. A call takes the first active fault that matches
// it (faults are matched in the order they were added).
//
// What a matching call does:
//   - status: the call is not applied and is answered with Meta's error (see Code).
//   - reset: the call is not applied and the simulator closes the client's connection without
//     answering; an http.Client sees a network error (connection reset, or EOF). Go's
//     http.Transport itself retries a GET (an idempotent call) that was reset on a reused
//     keep-alive connection, so a GET may need count 2 or more (or for_ms) to fail visibly.
//     A call by a reference bot, which does not go through HTTP, is logged as a network
//     error. The handler must be served by a real HTTP server (it takes the connection over).
//   - delay_ms: the call waits, then runs (and then status or reset, when set, apply). If the
//     client gives up meanwhile (its timeout, a cancelled context), the call is logged as
//     abandoned and NOT applied: the call never reached Meta.
//   - apply_late: the call is applied even though its answer is lost, which models Meta
//     applying a call whose answer never came back: after delay_ms even if the client has
//     gone, and, with status or reset, applied before the error or the reset is answered.
//     The log entry's detail says what was applied.
//
// A fault ends after count matching calls, or for_ms after it was set (on the simulator's
// clock, Options.Now), whichever comes first; with neither it lasts until the faults are
// cleared. "Meta unreachable for 60 s" is {"call":"*","reset":true,"for_ms":60000}; a 5xx
// storm {"call":"*","status":503,"for_ms":5000}.
type Fault struct {
	// Call is the Graph edge to match (e.g. "take_thread_control", "messages",
	// "thread_owner"), or "*" for every call (the page node, GET /me, included).
	Call string `json:"call"`
	// Status is the HTTP status to answer (400-599); 0 answers no error: the call is only
	// delayed, or reset.
	Status int `json:"status"`
	// Count is how many matching calls the fault affects; 0 means no limit (until for_ms
	// runs out, or the faults are cleared).
	Count int `json:"count"`
	// DelayMS delays each matching call before it is answered (at most 120000).
	DelayMS int `json:"delay_ms"`
	// Reset closes the client's connection without an answer; it excludes Status.
	Reset bool `json:"reset,omitempty"`
	// ForMS ends the fault this many milliseconds after it is set (at most 86400000); 0 means
	// no time limit. GET /_sim/faults shows the milliseconds left.
	ForMS int `json:"for_ms,omitempty"`
	// ApplyLate applies the call even though its answer is lost (see above).
	ApplyLate bool `json:"apply_late,omitempty"`
	// Code, Subcode and Message override Meta's error (with Status only); by default a 5xx
	// answers code 2 ("An unexpected error has occurred…", is_transient) and any other status
	// code 613 (rate limit).
	Code    int    `json:"code,omitempty"`
	Subcode int    `json:"subcode,omitempty"`
	Message string `json:"message,omitempty"`
	// AppID limits the fault to calls made by that app.
	AppID string `json:"app_id,omitempty"`
}

// activeFault is a fault as set, with the time it ends (zero: no time limit).
type activeFault struct {
	Fault
	until time.Time
}

const (
	maxFaultDelayMS = 120_000
	maxFaultForMS   = 86_400_000
)

// graphCalls are the Graph edges the simulator serves.
var graphCalls = []string{
	"pass_thread_control", "take_thread_control", "request_thread_control",
	"release_thread_control", "extend_thread_control", "pass_thread_metadata",
	"thread_owner", "secondary_receivers", "messages",
	"node", // the page node: GET /{page}?fields=messaging_feature_status
}

// validate reports what is wrong with a fault, if anything.
func (f Fault) validate() error {
	var problems []string
	if f.Call != "*" && !slices.Contains(graphCalls, f.Call) {
		problems = append(problems, fmt.Sprintf("call %q: want \"*\" or one of %s", f.Call, strings.Join(graphCalls, ", ")))
	}
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		problems = append(problems, fmt.Sprintf("status %d: want 0 (no error answer) or 400-599", f.Status))
	}
	if f.Reset && f.Status != 0 {
		problems = append(problems, "reset closes the connection without an answer: it excludes status")
	}
	if f.Status == 0 && (f.Code != 0 || f.Subcode != 0 || f.Message != "") {
		problems = append(problems, "code, subcode and message shape an error answer: they need status")
	}
	if f.Status == 0 && !f.Reset && f.DelayMS == 0 {
		problems = append(problems, "a fault needs status, reset or delay_ms")
	}
	if f.Count < 0 {
		problems = append(problems, "count must be 0 (unlimited) or more")
	}
	if f.DelayMS < 0 || f.DelayMS > maxFaultDelayMS {
		problems = append(problems, fmt.Sprintf("delay_ms must be between 0 and %d", maxFaultDelayMS))
	}
	if f.ForMS < 0 || f.ForMS > maxFaultForMS {
		problems = append(problems, fmt.Sprintf("for_ms must be between 0 (no time limit) and %d (24 h)", maxFaultForMS))
	}
	if len(problems) > 0 {
		return errors.New("invalid fault: " + strings.Join(problems, "; "))
	}
	return nil
}

// matches reports whether the fault applies to a call by an app.
func (f *Fault) matches(call, appID string) bool {
	return (f.Call == "*" || f.Call == call) && (f.AppID == "" || f.AppID == appID)
}

// graphError is the error a failing fault answers with.
func (f *Fault) graphError() *graphError {
	var e *graphError
	switch {
	case f.Code != 0:
		e = oauthError(f.Code, f.Subcode, "%s", f.Message)
		if f.Message == "" {
			e.message = fmt.Sprintf("(#%d) Simulated failure", f.Code)
		} else if !strings.HasPrefix(f.Message, "(#") {
			e.message = fmt.Sprintf("(#%d) %s", f.Code, f.Message)
		} else {
			e.message = f.Message
		}
		e.transient = f.Status >= 500
	case f.Status >= 500:
		e = errTransient(f.Status)
	default:
		e = oauthError(613, f.Subcode, "Calls to this api have exceeded the rate limit.")
	}
	e.status = f.Status
	return e
}

// SetFault adds a fault; faults are matched in the order they were added. A fault with
// ForMS ends that long after now, on the simulator's clock.
func (s *Sim) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &activeFault{Fault: f}
	if f.ForMS > 0 {
		a.until = s.now().Add(time.Duration(f.ForMS) * time.Millisecond)
	}
	s.faults = append(s.faults, a)
}

// ClearFaults removes every fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Faults returns the active faults, each with its remaining count and
// for_ms (as GET /_sim/faults).
func (s *Sim) Faults() []Fault { return s.faultList() }

// faultList returns copies of the active faults, with their remaining counts and for_ms.
func (s *Sim) faultList() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.pruneFaults(now)
	out := make([]Fault, 0, len(s.faults))
	for _, a := range s.faults {
		f := a.Fault
		if !a.until.IsZero() {
			left := a.until.Sub(now)
			f.ForMS = int((left + time.Millisecond - 1) / time.Millisecond) // rounded up: never 0 while active
		}
		out = append(out, f)
	}
	return out
}

// pruneFaults removes the faults whose for_ms has run out. The caller holds s.mu.
func (s *Sim) pruneFaults(now time.Time) {
	s.faults = slices.DeleteFunc(s.faults, func(a *activeFault) bool {
		return !a.until.IsZero() && !now.Before(a.until)
	})
}

// takeFault consumes one use of the first active fault matching a call. The caller holds
// s.mu.
func (s *Sim) takeFault(call, appID string) *Fault {
	s.pruneFaults(s.now())
	for i, a := range s.faults {
		if !a.matches(call, appID) {
			continue
		}
		taken := a.Fault
		if a.Count > 0 {
			a.Count--
			if a.Count == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
		}
		return &taken
	}
	return nil
}
