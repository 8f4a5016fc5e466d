package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// putFault sets a fault through the control API over HTTP.
func putFault(t *testing.T, srv *httptest.Server, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/_sim/faults", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT /_sim/faults %s = %d %s", body, resp.StatusCode, b)
	}
}

// listFaults returns GET /_sim/faults.
func listFaults(t *testing.T, h http.Handler) []map[string]any {
	t.Helper()
	_, body := control(t, h, http.MethodGet, "/_sim/faults", nil)
	var out []map[string]any
	for _, f := range body["faults"].([]any) {
		out = append(out, f.(map[string]any))
	}
	return out
}

// rawTake posts take_thread_control for thread 42 as app O with client, and returns the
// status (0 on a network error) and the error.
func rawTake(srv *httptest.Server, client *http.Client) (int, error) {
	body, _ := json.Marshal(map[string]any{"recipient": map[string]any{"id": "42"}})
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v19.0/me/take_thread_control?access_token="+token(idO), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// isConnectionError reports whether err is what a client sees when the server closes the
// connection without answering.
func isConnectionError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "connection reset")
}

// lastCall returns the last Graph call of the log.
func lastCall(t *testing.T, s *Sim, call string) LogEntry {
	t.Helper()
	var last *LogEntry
	for _, e := range s.Log("", "") {
		if e.Kind == KindGraphCall && e.Call == call {
			last = &e
		}
	}
	if last == nil {
		t.Fatalf("no %s in the log", call)
	}
	return *last
}

// TestFaultReset: a reset fault closes the client's connection without an answer and does
// not apply the call, unless apply_late; the log says so.
func TestFaultReset(t *testing.T) {
	tests := []struct {
		name      string
		fault     string
		wantOwner string
		wantNote  string
	}{
		{name: "not applied", fault: `{"call":"take_thread_control","reset":true,"count":1}`, wantOwner: "", wantNote: "connection closed without an answer"},
		{name: "every call", fault: `{"call":"*","reset":true,"count":1}`, wantOwner: "", wantNote: "connection closed without an answer"},
		{name: "applied, answer lost", fault: `{"call":"take_thread_control","reset":true,"count":1,"apply_late":true}`, wantOwner: idO, wantNote: "applied anyway (apply_late): ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			srv := serve(t, s)
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
			putFault(t, srv, tc.fault)
			status, err := rawTake(srv, srv.Client())
			if err == nil || !isConnectionError(err) {
				t.Fatalf("take = HTTP %d, error %v; want a connection error (EOF or reset)", status, err)
			}
			if got := s.Thread(testPage, "42").OwnerAppID; got != tc.wantOwner {
				t.Errorf("owner after the reset = %q, want %q", got, tc.wantOwner)
			}
			e := lastCall(t, s, "take_thread_control")
			if e.Outcome != OutcomeReset || !e.Fault || e.HTTPStatus != 0 || !strings.Contains(e.Detail, tc.wantNote) {
				t.Errorf("log entry = outcome %s fault %v status %d detail %q, want reset, fault, no status, %q", e.Outcome, e.Fault, e.HTTPStatus, e.Detail, tc.wantNote)
			}
			setOwnerForTest(s, testPage, "42", "")
			if status, err := rawTake(srv, srv.Client()); err != nil || status != http.StatusOK {
				t.Errorf("take after the fault's count = %d %v, want 200", status, err)
			}
		})
	}
}

// TestFaultResetBotCall: a reset fault on a reference bot's call (not HTTP) is logged as a
// network error and not applied.
func TestFaultResetBotCall(t *testing.T) {
	s := newSim(t, Options{})
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{
		botApp(idP, BotConfig{HonorRequests: true}), app(idO, ""),
	}})
	setOwnerForTest(s, testPage, "42", idP)
	s.SetFault(Fault{Call: "pass_thread_control", Reset: true, AppID: idP})
	if status, body := call(t, s.Handler(), http.MethodPost, "/me/request_thread_control", token(idO), map[string]any{"recipient": map[string]any{"id": "42"}}); status != http.StatusOK {
		t.Fatalf("request = %d %v", status, body)
	}
	settle(t, s)
	if got := s.Thread(testPage, "42").OwnerAppID; got != idP {
		t.Errorf("owner = %q, want the bot %s (its pass was lost)", got, idP)
	}
	e := lastCall(t, s, "pass_thread_control")
	if e.Via != viaBot || e.Outcome != OutcomeReset || !e.Fault || !strings.Contains(e.Detail, "network error") {
		t.Errorf("bot's pass logged as %+v, want a reset via the bot, as a network error", e)
	}
}

// TestFaultForMS: a fault with for_ms ends by itself that long after it is set, on the
// simulator's clock; GET /_sim/faults shows the time left. With count as well, whichever ends
// first ends it.
func TestFaultForMS(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	srv := serve(t, s)
	h := s.Handler()
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
	take := func() (int, error) {
		setOwnerForTest(s, testPage, "42", "")
		return rawTake(srv, srv.Client())
	}

	putFault(t, srv, `{"call":"*","status":503,"for_ms":5000}`)
	if list := listFaults(t, h); len(list) != 1 || list[0]["for_ms"] != 5000.0 {
		t.Fatalf("faults = %v, want the storm with for_ms 5000", list)
	}
	for _, step := range []struct {
		advance    time.Duration
		wantStatus int
		wantLeft   float64 // for_ms listed after the step; 0: no fault listed
	}{
		{advance: 0, wantStatus: 503, wantLeft: 5000},
		{advance: 4999 * time.Millisecond, wantStatus: 503, wantLeft: 1},
		{advance: time.Millisecond, wantStatus: 200},
		{advance: time.Hour, wantStatus: 200},
	} {
		clock.Advance(step.advance)
		if status, err := take(); err != nil || status != step.wantStatus {
			t.Errorf("at +%v: take = %d %v, want %d", clock.Now().Sub(t0), status, err, step.wantStatus)
		}
		list := listFaults(t, h)
		switch {
		case step.wantLeft == 0 && len(list) != 0:
			t.Errorf("at +%v: faults = %v, want none (ended by itself)", clock.Now().Sub(t0), list)
		case step.wantLeft != 0 && (len(list) != 1 || list[0]["for_ms"] != step.wantLeft):
			t.Errorf("at +%v: faults = %v, want for_ms %v left", clock.Now().Sub(t0), list, step.wantLeft)
		}
	}

	// "Meta unreachable for 60 s".
	putFault(t, srv, `{"call":"*","reset":true,"for_ms":60000}`)
	clock.Advance(59 * time.Second)
	if status, err := take(); err == nil || !isConnectionError(err) {
		t.Errorf("take while Meta is unreachable = %d %v, want a connection error", status, err)
	}
	clock.Advance(time.Second)
	if status, err := take(); err != nil || status != http.StatusOK {
		t.Errorf("take once Meta is back = %d %v, want 200", status, err)
	}

	// count 1 ends it before for_ms.
	putFault(t, srv, `{"call":"take_thread_control","status":500,"count":1,"for_ms":60000}`)
	if status, _ := take(); status != 500 {
		t.Errorf("first take = %d, want 500", status)
	}
	if status, _ := take(); status != 200 {
		t.Errorf("second take = %d, want 200 (count used up)", status)
	}
	if list := listFaults(t, h); len(list) != 0 {
		t.Errorf("faults = %v, want none", list)
	}
}

// TestFaultDelayAbandonedOrAppliedLate: a call delayed beyond the client's timeout is not
// applied (the call never reached Meta), unless apply_late, when Meta applies it after the
// delay although nobody reads the answer. Settle waits for the late call.
func TestFaultDelayAbandonedOrAppliedLate(t *testing.T) {
	tests := []struct {
		name      string
		fault     string
		wantOwner string
		wantNote  string
	}{
		{name: "abandoned", fault: `{"call":"take_thread_control","delay_ms":200,"count":1}`, wantOwner: "", wantNote: "abandoned"},
		{name: "apply_late", fault: `{"call":"take_thread_control","delay_ms":200,"count":1,"apply_late":true}`, wantOwner: idO, wantNote: "applied anyway (apply_late)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			srv := serve(t, s)
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
			putFault(t, srv, tc.fault)
			client := &http.Client{Timeout: 30 * time.Millisecond}
			if status, err := rawTake(srv, client); err == nil {
				t.Fatalf("take = %d, want the client to time out", status)
			}
			if got := s.Thread(testPage, "42").OwnerAppID; got != "" {
				t.Errorf("owner right after the timeout = %q, want idle (the call is still delayed)", got)
			}
			settle(t, s)
			if got := s.Thread(testPage, "42").OwnerAppID; got != tc.wantOwner {
				t.Errorf("owner after the delay = %q, want %q", got, tc.wantOwner)
			}
			if e := lastCall(t, s, "take_thread_control"); !e.Fault || !strings.Contains(e.Detail, tc.wantNote) {
				t.Errorf("log entry = fault %v detail %q, want a fault noting %q", e.Fault, e.Detail, tc.wantNote)
			}
		})
	}
}

// TestFaultStatusAppliedLate: with apply_late, a status fault answers its error after the
// call was applied (Meta applied it, the answer was lost).
func TestFaultStatusAppliedLate(t *testing.T) {
	s := newSim(t, Options{})
	srv := serve(t, s)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
	putFault(t, srv, `{"call":"take_thread_control","status":500,"count":1,"apply_late":true}`)
	if status, err := rawTake(srv, srv.Client()); err != nil || status != 500 {
		t.Fatalf("take = %d %v, want 500", status, err)
	}
	if got := s.Thread(testPage, "42").OwnerAppID; got != idO {
		t.Errorf("owner = %q, want %s (applied before the error was answered)", got, idO)
	}
	if e := lastCall(t, s, "take_thread_control"); e.Outcome != OutcomeError || e.HTTPStatus != 500 || !strings.Contains(e.Detail, "applied anyway (apply_late): ok") {
		t.Errorf("log entry = %+v, want the 500 answered and the application noted", e)
	}
}

// TestFaultValidation: PUT /_sim/faults refuses inconsistent faults and accepts the new
// options.
func TestFaultValidation(t *testing.T) {
	s := newSim(t, Options{})
	h := s.Handler()
	for _, tc := range []struct {
		body    string
		wantErr string // "" accepted
	}{
		{body: `{"call":"*","reset":true,"status":503}`, wantErr: "reset closes the connection without an answer: it excludes status"},
		{body: `{"call":"*","reset":true,"code":100}`, wantErr: "they need status"},
		{body: `{"call":"*","status":503,"for_ms":-1}`, wantErr: "for_ms must be between 0"},
		{body: `{"call":"*","status":503,"for_ms":86400001}`, wantErr: "for_ms must be between 0"},
		{body: `{"call":"*","apply_late":true}`, wantErr: "a fault needs status, reset or delay_ms"},
		{body: `{"call":"*","reset":true}`},
		{body: `{"call":"*","reset":true,"for_ms":60000}`},
		{body: `{"call":"*","status":503,"for_ms":5000}`},
		{body: `{"call":"messages","delay_ms":100,"apply_late":true}`},
	} {
		status, body := control(t, h, http.MethodPut, "/_sim/faults", tc.body)
		msg, _ := body["error"].(string)
		switch {
		case tc.wantErr == "" && status != http.StatusOK:
			t.Errorf("PUT %s = %d %v, want 200", tc.body, status, body)
		case tc.wantErr != "" && (status != http.StatusBadRequest || !strings.Contains(msg, tc.wantErr)):
			t.Errorf("PUT %s = %d %q, want 400 saying %q", tc.body, status, msg, tc.wantErr)
		}
	}
}
