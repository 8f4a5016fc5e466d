package sim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Fault makes Graph calls fail or slow down. Its JSON form is the body of PUT /_sim/faults.
type Fault struct {
	// Call is the Graph edge to match (e.g. "take_thread_control", "messages",
	// "thread_owner"), or "*" for every call.
	Call string `json:"call"`
	// Status is the HTTP status to answer; 0 only delays the call, which then runs normally.
	Status int `json:"status"`
	// Count is how many matching calls the fault affects; 0 means every matching call until
	// the faults are cleared.
	Count int `json:"count"`
	// DelayMS delays each matching call before it is answered.
	DelayMS int `json:"delay_ms"`
	// Code, Subcode and Message override Meta's error; by default a 5xx answers code 2 ("An
	// unexpected error has occurred…", is_transient) and any other status code 613 (rate limit).
	Code    int    `json:"code,omitempty"`
	Subcode int    `json:"subcode,omitempty"`
	Message string `json:"message,omitempty"`
	// AppID limits the fault to calls made by that app.
	AppID string `json:"app_id,omitempty"`
}

// graphCalls are the Graph edges the simulator serves.
var graphCalls = []string{
	"pass_thread_control", "take_thread_control", "request_thread_control",
	"release_thread_control", "extend_thread_control", "pass_thread_metadata",
	"thread_owner", "secondary_receivers", "messages",
}

// validate reports what is wrong with a fault, if anything.
func (f Fault) validate() error {
	var problems []string
	if f.Call != "*" && !slices.Contains(graphCalls, f.Call) {
		problems = append(problems, fmt.Sprintf("call %q: want \"*\" or one of %s", f.Call, strings.Join(graphCalls, ", ")))
	}
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		problems = append(problems, fmt.Sprintf("status %d: want 0 (delay only) or 400-599", f.Status))
	}
	if f.Status == 0 && f.DelayMS == 0 {
		problems = append(problems, "a fault with status 0 needs delay_ms")
	}
	if f.Count < 0 {
		problems = append(problems, "count must be 0 (unlimited) or more")
	}
	if f.DelayMS < 0 || f.DelayMS > 120_000 {
		problems = append(problems, "delay_ms must be between 0 and 120000")
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

// SetFault adds a fault; faults are matched in the order they were added.
func (s *Sim) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// faultList returns copies of the active faults, with their remaining counts.
func (s *Sim) faultList() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Fault, 0, len(s.faults))
	for _, f := range s.faults {
		out = append(out, *f)
	}
	return out
}

// takeFault consumes one use of the first fault matching a call. The caller holds s.mu.
func (s *Sim) takeFault(call, appID string) *Fault {
	for i, f := range s.faults {
		if !f.matches(call, appID) {
			continue
		}
		taken := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
		}
		return &taken
	}
	return nil
}
