package sim

import (
	"net/http"
	"testing"
	"time"
)

// TestFaultedCallInThreadLog: a call a fault answered (an error, a reset) or abandoned
// while a fault delayed it is in its thread's log, GET /_sim/log?psid=, like any other
// call naming the thread.
func TestFaultedCallInThreadLog(t *testing.T) {
	tests := []struct {
		name, fault string
		client      *http.Client
		outcome     string
	}{
		{"error", `{"call":"take_thread_control","status":503,"count":1}`, nil, OutcomeError},
		{"reset", `{"call":"take_thread_control","reset":true,"count":1}`, nil, OutcomeReset},
		{"abandoned delay", `{"call":"take_thread_control","delay_ms":2000,"count":1}`, &http.Client{Timeout: 50 * time.Millisecond}, OutcomeError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			srv := serve(t, s)
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
			putFault(t, srv, tc.fault)
			client := tc.client
			if client == nil {
				client = srv.Client()
			}
			rawTake(srv, client)
			settle(t, s)
			var got []LogEntry
			for _, e := range s.Log(testPage, "42") {
				if e.Kind == KindGraphCall && e.Call == "take_thread_control" {
					got = append(got, e)
				}
			}
			if len(got) != 1 || got[0].Outcome != tc.outcome || !got[0].Fault || got[0].CallerAppID != idO {
				t.Errorf("take_thread_control in the thread's log = %+v, want one, %s by a fault, by app %s", got, tc.outcome, idO)
			}
		})
	}
}
