package sim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPutPageValidation(t *testing.T) {
	appJSON := func(id, tok string) string {
		return fmt.Sprintf(`{"app_id":%q,"name":"a","access_token":%q,"app_secret":"s","callback_url":"","verify_token":"v","fields":["messages"],"bot":null}`, id, tok)
	}
	page := func(mode, primary string, apps ...string) string {
		return fmt.Sprintf(`{"mode":%q,"primary_app_id":%s,"apps":[%s]}`, mode, primary, strings.Join(apps, ","))
	}
	tests := []struct {
		name    string
		path    string
		body    string
		wantErr string
	}{
		{name: "unknown mode", body: page("hop_v3", "null", appJSON("11", "a")), wantErr: `unknown mode "hop_v3"`},
		{name: "duplicate app ids", body: page("hop_v2", "null", appJSON("11", "a"), appJSON("11", "b")), wantErr: "duplicate app_id"},
		{name: "duplicate tokens", body: page("hop_v2", "null", appJSON("11", "a"), appJSON("22", "a")), wantErr: "access_token is also used"},
		{name: "primary not among apps", body: page("hop_v2", `"99"`, appJSON("11", "a")), wantErr: "primary_app_id 99 is not among the page's apps"},
		{name: "missing token", body: page("hop_v2", "null", appJSON("11", "")), wantErr: "access_token is missing"},
		{name: "hop_v1 without primary", body: page("hop_v1", "null", appJSON("11", "a")), wantErr: "hop_v1 needs primary_app_id"},
		{name: "cr without default app", body: page("cr", "null", appJSON("11", "a")), wantErr: "use cr_zero"},
		{name: "cr_zero with default app", body: page("cr_zero", `"11"`, appJSON("11", "a")), wantErr: "primary_app_id must be null"},
		{name: "no apps", body: page("hop_v2", "null"), wantErr: "apps is empty"},
		{name: "non-numeric app id", body: page("hop_v2", "null", appJSON("bot", "a")), wantErr: "must be a numeric Facebook app id"},
		{name: "non-numeric page id", path: "/_sim/pages/mypage", body: page("hop_v2", "null", appJSON("11", "a")), wantErr: "must be a numeric Facebook page id"},
		{name: "misspelt field", body: `{"mode":"hop_v2","primary":"11","apps":[]}`, wantErr: `unknown field "primary"`},
		{name: "unknown webhook field", body: `{"apps":[{"app_id":"11","access_token":"a","fields":["message"]}]}`, wantErr: `unknown webhook field "message"`},
		{name: "bot with callback", body: `{"apps":[{"app_id":"11","access_token":"a","app_secret":"s","callback_url":"http://127.0.0.1:1/","bot":{"reply":"echo"}}]}`, wantErr: "takes no callback_url"},
		{name: "handover text without app", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"handover_text":"agent"}}]}`, wantErr: "bot.handover_app_id is required with bot.handover_text"},
		{name: "handover app not on the page", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"handover_text":"agent","handover_app_id":99}}]}`, wantErr: "bot.handover_app_id 99 is not among the page's apps"},
		{name: "handover to the bot itself", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"handover_text":"agent","handover_app_id":"11"}}]}`, wantErr: "bot.handover_app_id is the bot itself"},
		{name: "handover app not numeric", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"handover_text":"agent","handover_app_id":"ringcx"}}]}`, wantErr: `bot.handover_app_id "ringcx" must be a numeric`},
		{name: "bad handover_via", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"handover_text":"agent","handover_app_id":"263902037430900","handover_via":"email"}}]}`, wantErr: `bot.handover_via "email"`},
		{name: "handover app without text", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"handover_app_id":"263902037430900","handover_via":"send_api"}}]}`, wantErr: "need bot.handover_text"},
		{name: "misspelt bot field", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"handover":"agent"}}]}`, wantErr: `unknown field "handover"`},
		{name: "bad bot reply", body: `{"apps":[{"app_id":"11","access_token":"a","bot":{"reply":"shout"}}]}`, wantErr: `bot.reply "shout"`},
		{name: "callback without secret", body: `{"apps":[{"app_id":"11","access_token":"a","callback_url":"http://127.0.0.1:1/"}]}`, wantErr: "app_secret is needed"},
		{name: "relative callback", body: `{"apps":[{"app_id":"11","access_token":"a","app_secret":"s","callback_url":"/hook"}]}`, wantErr: "must be an absolute http(s) URL"},
		{name: "page id mismatch", body: `{"page_id":"2000","apps":[{"app_id":"11","access_token":"a"}]}`, wantErr: "differs from 1000"},
		{name: "Page Inbox listed", body: page("hop_v2", "null", appJSON(PageInboxAppID, "a")), wantErr: "Page Inbox is built into the simulator"},
		{name: "token of another page", path: "/_sim/pages/2000", body: page("hop_v2", "null", appJSON("11", "taken")), wantErr: "already used by app 22 on page 1000"},
		{name: "not JSON", body: `mode=cr`, wantErr: "body is not the expected JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			mustPut(t, s, PageConfig{Apps: []AppConfig{{AppID: "22", AccessToken: "taken"}}})
			path := tc.path
			if path == "" {
				path = "/_sim/pages/" + testPage
			}
			status, body := control(t, s.Handler(), http.MethodPut, path, tc.body)
			if status != http.StatusBadRequest {
				t.Fatalf("HTTP status = %d (%v), want 400", status, body)
			}
			if msg, _ := body["error"].(string); !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error = %q, want it to contain %q", msg, tc.wantErr)
			}
		})
	}
}

func TestPutGetPage(t *testing.T) {
	s := newSim(t, Options{})
	h := s.Handler()
	body := `{"mode":"","primary_app_id":300000000000001,"apps":[
		{"app_id":"200000000000001","name":"RingCX","access_token":"ringcx-page-token","app_secret":"ringcx-secret","callback_url":"http://127.0.0.1:8080/webhooks/messenger","verify_token":"dev-verify","fields":["messages","messaging_handover","standby"],"bot":null},
		{"app_id":300000000000001,"name":"Bot","access_token":"bot-page-token","app_secret":"bot-secret","callback_url":"","verify_token":"","bot":{"honor_requests":true,"pass_delay_ms":0,"reply":"echo"}}]}`
	status, put := control(t, h, http.MethodPut, "/_sim/pages/100000000000001", body)
	if status != http.StatusOK {
		t.Fatalf("PUT = %d %v", status, put)
	}
	status, got := control(t, h, http.MethodGet, "/_sim/pages/100000000000001", nil)
	if status != http.StatusOK {
		t.Fatalf("GET = %d %v", status, got)
	}
	if fmt.Sprint(got) != fmt.Sprint(put) {
		t.Errorf("GET = %v, want what PUT answered %v", got, put)
	}
	if got["mode"] != ModeHOPv2 || got["primary_app_id"] != "300000000000001" || got["page_id"] != "100000000000001" {
		t.Errorf("page = %v, want mode hop_v2, primary 300000000000001", got)
	}
	apps := got["apps"].([]any)
	if f := fmt.Sprint(apps[0].(map[string]any)["fields"]); f != "[messages messaging_handovers standby]" {
		t.Errorf("RingCX fields = %s, want the alias normalised", f)
	}
	if f := fmt.Sprint(apps[1].(map[string]any)["fields"]); f != "[messages messaging_handovers standby]" {
		t.Errorf("bot fields = %s, want the defaults", f)
	}

	if status, _ := control(t, h, http.MethodPut, "/_sim/pages/100000000000001", strings.Replace(body, `300000000000001,"apps"`, `null,"apps"`, 1)); status != http.StatusOK {
		t.Fatalf("PUT without primary = %d", status)
	}
	if _, got := control(t, h, http.MethodGet, "/_sim/pages/100000000000001", nil); got["primary_app_id"] != nil {
		t.Errorf("primary_app_id = %v, want null", got["primary_app_id"])
	}
	if status, _ := control(t, h, http.MethodGet, "/_sim/pages/999", nil); status != http.StatusNotFound {
		t.Errorf("GET unknown page = %d, want 404", status)
	}
	if _, list := control(t, h, http.MethodGet, "/_sim/pages", nil); len(list["pages"].([]any)) != 1 {
		t.Errorf("page list = %v, want one page", list)
	}
}

func TestCustomerAndThreadEndpoints(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	h := s.Handler()
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, ""), app(idO, "")}})

	_, idle := control(t, h, http.MethodGet, "/_sim/pages/"+testPage+"/threads/42", nil)
	if want := "map[expires_at:<nil> messages:[] owner_app_id:<nil>]"; fmt.Sprint(idle) != want {
		t.Errorf("idle thread = %v, want %s", idle, want)
	}
	status, sent := control(t, h, http.MethodPost, "/_sim/pages/"+testPage+"/customers/42/messages", map[string]string{"text": "hi"})
	mid, _ := sent["mid"].(string)
	if status != http.StatusOK || !strings.HasPrefix(mid, "m_") {
		t.Fatalf("customer message = %d %v", status, sent)
	}
	_, owned := control(t, h, http.MethodGet, "/_sim/pages/"+testPage+"/threads/42", nil)
	msgs := owned["messages"].([]any)
	if owned["owner_app_id"] != idP || owned["expires_at"] != "2024-05-02T12:00:00Z" || len(msgs) != 1 {
		t.Fatalf("thread = %v", owned)
	}
	if m := msgs[0].(map[string]any); m["mid"] != mid || m["from"] != "customer" || m["text"] != "hi" || m["time"] != "2024-05-01T12:00:00Z" {
		t.Errorf("message = %v", m)
	}

	for _, tc := range []struct {
		name string
		path string
		body any
		want int
	}{
		{"unknown page", "/_sim/pages/999/customers/42/messages", map[string]string{"text": "hi"}, http.StatusNotFound},
		{"empty text", "/_sim/pages/" + testPage + "/customers/42/messages", map[string]string{"text": ""}, http.StatusBadRequest},
		{"unknown field", "/_sim/pages/" + testPage + "/customers/42/messages", map[string]string{"txt": "hi"}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := control(t, h, http.MethodPost, tc.path, tc.body)
			if status != tc.want || body["error"] == "" {
				t.Errorf("answer = %d %v, want %d with an error", status, body, tc.want)
			}
		})
	}
	if status, _ := control(t, h, http.MethodGet, "/_sim/pages/999/threads/42", nil); status != http.StatusNotFound {
		t.Errorf("thread of unknown page = %d, want 404", status)
	}
	if status, body := control(t, h, http.MethodPatch, "/_sim/log", nil); status != http.StatusNotFound || body["error"] == nil {
		t.Errorf("unknown control endpoint = %d %v, want 404 with an error", status, body)
	}
}

func TestLogEndpoint(t *testing.T) {
	s := newSim(t, Options{})
	h := s.Handler()
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
	for _, psid := range []string{"1", "2", "1"} {
		if _, err := s.CustomerMessage(testPage, psid, "hi "+psid); err != nil {
			t.Fatal(err)
		}
	}
	call(t, h, http.MethodGet, "/me/thread_owner", token(idO), map[string]any{"recipient": "2"})
	tests := []struct {
		query string
		want  []string
	}{
		{query: "?psid=1", want: []string{"customer_message 1", "customer_message 1"}},
		{query: "?page_id=" + testPage + "&psid=2", want: []string{"customer_message 2", "graph_call 2"}},
		{query: "", want: []string{"page_config ", "customer_message 1", "customer_message 2", "customer_message 1", "graph_call 2"}},
		{query: "?page_id=2000", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			_, body := control(t, h, http.MethodGet, "/_sim/log"+tc.query, nil)
			var got []string
			for _, e := range body["entries"].([]any) {
				m := e.(map[string]any)
				psid, _ := m["psid"].(string)
				got = append(got, m["kind"].(string)+" "+psid)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("entries = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	type attempt struct {
		caller string
		call   string
	}
	take := attempt{idO, "take_thread_control"}
	tests := []struct {
		name      string
		faults    []string // PUT /_sim/faults bodies
		calls     []attempt
		want      []string // "status code/subcode"
		wantMsg   string   // message of the first answer
		transient bool
	}{
		{name: "5xx twice", faults: []string{`{"call":"take_thread_control","status":500,"count":2,"delay_ms":0}`},
			calls: []attempt{take, take, take}, want: []string{"500 2", "500 2", "200 "},
			wantMsg: "An unexpected error has occurred. Please retry your request later.", transient: true},
		{name: "rate limit", faults: []string{`{"call":"take_thread_control","status":400,"count":1}`},
			calls: []attempt{take, take}, want: []string{"400 613", "200 "}, wantMsg: "(#613) Calls to this api have exceeded the rate limit."},
		{name: "custom error", faults: []string{`{"call":"take_thread_control","status":400,"count":1,"code":10,"subcode":2018300,"message":"nope"}`},
			calls: []attempt{take}, want: []string{"400 10/2018300"}, wantMsg: "(#10) nope"},
		{name: "only calls by one app", faults: []string{`{"call":"take_thread_control","status":503,"count":1,"app_id":"11"}`},
			calls: []attempt{take, {idP, "take_thread_control"}}, want: []string{"200 ", "503 2"}},
		{name: "every call", faults: []string{`{"call":"*","status":502,"count":2}`},
			calls: []attempt{{idO, "thread_owner"}, {idP, "messages"}, take}, want: []string{"502 2", "502 2", "200 "}},
		{name: "unlimited until cleared", faults: []string{`{"call":"take_thread_control","status":500}`},
			calls: []attempt{take, take, take}, want: []string{"500 2", "500 2", "500 2"}},
		{name: "faults in order", faults: []string{`{"call":"take_thread_control","status":500,"count":1}`, `{"call":"*","status":429,"count":1}`},
			calls: []attempt{take, take, take}, want: []string{"500 2", "429 613", "200 "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			h := s.Handler()
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
			for _, f := range tc.faults {
				if status, body := control(t, h, http.MethodPut, "/_sim/faults", f); status != http.StatusOK {
					t.Fatalf("PUT /_sim/faults %s = %d %v", f, status, body)
				}
			}
			var got []string
			for i, a := range tc.calls {
				setOwnerForTest(s, testPage, "42", "")
				method, args := http.MethodPost, map[string]any{"recipient": map[string]any{"id": "42"}}
				switch a.call {
				case "thread_owner":
					method, args = http.MethodGet, map[string]any{"recipient": "42"}
				case "messages":
					args["message"] = map[string]any{"text": "x"}
				}
				status, body := call(t, h, method, "/v19.0/me/"+a.call, token(a.caller), args)
				got = append(got, fmt.Sprintf("%d %s", status, errorCode(body)))
				if i == 0 && tc.wantMsg != "" {
					e := body["error"].(map[string]any)
					if e["message"] != tc.wantMsg {
						t.Errorf("message = %q, want %q", e["message"], tc.wantMsg)
					}
					if transient, _ := e["is_transient"].(bool); transient != tc.transient {
						t.Errorf("is_transient = %v, want %v", e["is_transient"], tc.transient)
					}
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("answers = %q, want %q", got, tc.want)
			}
			for _, e := range s.Log("", "") {
				if e.Kind == KindGraphCall && e.Fault != (e.Outcome == OutcomeError) {
					t.Errorf("log entry %+v: fault = %v", e, e.Fault)
				}
			}
		})
	}
}

func TestFaultDelayAndClear(t *testing.T) {
	s := newSim(t, Options{})
	h := s.Handler()
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
	rcpt := map[string]any{"recipient": "42"}
	if status, _ := control(t, h, http.MethodPut, "/_sim/faults", `{"call":"thread_owner","status":0,"delay_ms":80}`); status != http.StatusOK {
		t.Fatal("PUT delay fault failed")
	}
	start := time.Now()
	status, body := call(t, h, http.MethodGet, "/me/thread_owner", token(idP), rcpt)
	if took := time.Since(start); status != http.StatusOK || took < 80*time.Millisecond {
		t.Errorf("delayed call = %d %v after %v, want 200 after at least 80ms", status, body, took)
	}
	if _, list := control(t, h, http.MethodGet, "/_sim/faults", nil); len(list["faults"].([]any)) != 1 {
		t.Errorf("faults = %v, want the unlimited delay fault", list)
	}
	if status, _ := control(t, h, http.MethodDelete, "/_sim/faults", nil); status != http.StatusOK {
		t.Fatal("DELETE /_sim/faults failed")
	}
	start = time.Now()
	call(t, h, http.MethodGet, "/me/thread_owner", token(idP), rcpt)
	if took := time.Since(start); took >= 80*time.Millisecond {
		t.Errorf("call after clearing took %v", took)
	}

	for _, bad := range []string{
		`{"call":"steal_thread_control","status":500}`,
		`{"call":"*","status":200}`,
		`{"call":"*","status":0}`,
		`{"call":"*","status":500,"count":-1}`,
		`{"call":"*","status":500,"colour":"red"}`,
	} {
		if status, body := control(t, h, http.MethodPut, "/_sim/faults", bad); status != http.StatusBadRequest || body["error"] == nil {
			t.Errorf("PUT %s = %d %v, want 400 with an error", bad, status, body)
		}
	}
}

// TestExpiry drives the 24 h control window with the injected clock.
func TestExpiry(t *testing.T) {
	rcpt := map[string]any{"recipient": map[string]any{"id": "42"}}
	type step struct {
		advance   time.Duration
		customer  bool   // the customer writes
		extend    int    // the owner extends by this many seconds
		wantOwner string // after the step
	}
	tests := []struct {
		name  string
		mode  string
		steps []step
	}{
		{name: "hop_v2 expires 24h after the last message", mode: ModeHOPv2, steps: []step{
			{customer: true, wantOwner: idP},
			{advance: 23 * time.Hour, wantOwner: idP},
			{customer: true, wantOwner: idP},
			{advance: 24*time.Hour - time.Second, wantOwner: idP},
			{advance: time.Second, wantOwner: ""},
			{customer: true, wantOwner: idP},
		}},
		{name: "extension is not shortened by a message", mode: ModeHOPv2, steps: []step{
			{customer: true, wantOwner: idP},
			{extend: 7 * 24 * 3600, wantOwner: idP},
			{advance: 24 * time.Hour, customer: true, wantOwner: idP},
			{advance: 6*24*time.Hour - time.Second, wantOwner: idP},
			{advance: time.Second, wantOwner: ""},
		}},
		{name: "extension can shorten the window", mode: ModeCR, steps: []step{
			{customer: true, wantOwner: idP},
			{extend: 60, wantOwner: idP},
			{advance: time.Minute, wantOwner: ""},
		}},
		{name: "hop_v1 never expires", mode: ModeHOPv1, steps: []step{
			{customer: true, wantOwner: idP},
			{advance: 30 * 24 * time.Hour, wantOwner: idP},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newSim(t, Options{Now: clock.Now})
			h := s.Handler()
			mustPut(t, s, PageConfig{Mode: tc.mode, PrimaryAppID: idP, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
			for i, st := range tc.steps {
				clock.Advance(st.advance)
				if st.customer {
					if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
						t.Fatal(err)
					}
				}
				if st.extend != 0 {
					args := map[string]any{"recipient": rcpt["recipient"], "duration": st.extend}
					if status, body := call(t, h, http.MethodPost, "/me/extend_thread_control", token(idP), args); status != 200 {
						t.Fatalf("step %d: extend = %d %v", i, status, body)
					}
				}
				_, body := call(t, h, http.MethodGet, "/me/thread_owner", token(idP), map[string]any{"recipient": "42"})
				got := ""
				if data := body["data"].([]any); len(data) == 1 {
					got = data[0].(map[string]any)["thread_owner"].(map[string]any)["app_id"].(string)
				}
				if got != st.wantOwner {
					t.Fatalf("step %d (at +%v): thread_owner = %q, want %q", i, clock.Now().Sub(t0), got, st.wantOwner)
				}
				if view := s.Thread(testPage, "42"); view.OwnerAppID != st.wantOwner {
					t.Fatalf("step %d: Thread owner = %q, want %q", i, view.OwnerAppID, st.wantOwner)
				}
			}
		})
	}
}

// TestExpiredOwnerLosesExclusivity: once control expires, another app may act on the thread.
func TestExpiredOwnerLosesExclusivity(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	h := s.Handler()
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, ""), app(idO, "")}})
	setOwnerForTest(s, testPage, "42", idP)
	rcpt := map[string]any{"recipient": map[string]any{"id": "42"}}
	if _, body := call(t, h, http.MethodPost, "/me/take_thread_control", token(idO), rcpt); errorCode(body) != "100/2534037" {
		t.Fatalf("take before expiry = %v, want 100/2534037", body)
	}
	clock.Advance(24 * time.Hour)
	if status, body := call(t, h, http.MethodPost, "/me/take_thread_control", token(idO), rcpt); status != 200 {
		t.Fatalf("take after expiry = %d %v, want success", status, body)
	}
}

func TestReplacePageAdoptsThreads(t *testing.T) {
	s := newSim(t, Options{})
	apps := []AppConfig{app(idP, ""), app(idO, ""), app(idT, "")}
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: apps})
	setOwnerForTest(s, testPage, "owned-by-T", idT)
	setOwnerForTest(s, testPage, "idle", "")
	setOwnerForTest(s, testPage, "owned-by-O", idO)

	mustPut(t, s, PageConfig{Mode: ModeHOPv1, PrimaryAppID: idP, Apps: apps[:2]})
	for psid, want := range map[string]string{"owned-by-T": idP, "idle": idP, "owned-by-O": idO} {
		view := s.Thread(testPage, psid)
		if view.OwnerAppID != want || !view.ExpiresAt.IsZero() {
			t.Errorf("%s: owner %q expiring %v, want %q never expiring", psid, view.OwnerAppID, view.ExpiresAt, want)
		}
	}
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: apps})
	if view := s.Thread(testPage, "owned-by-O"); view.ExpiresAt.IsZero() {
		t.Error("a thread owned when leaving hop_v1 has no control window")
	}
}

func TestSettleAndClose(t *testing.T) {
	block := make(chan struct{})
	hook := newCollector(t)
	hook.answer = func(int) int { <-block; return 200 }
	s := New(Options{})
	h := s.Handler()
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, hook.URL("/"))}})
	if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
		t.Fatal(err)
	}
	status, body := control(t, h, http.MethodPost, "/_sim/settle?timeout=50ms", nil)
	if status != http.StatusGatewayTimeout || !strings.Contains(fmt.Sprint(body["error"]), "1 webhook events") {
		t.Errorf("settle while a delivery hangs = %d %v, want 504 naming what is pending", status, body)
	}
	close(block)
	if status, body := control(t, h, http.MethodPost, "/_sim/settle?timeout=2", nil); status != http.StatusOK || body["settled"] != true {
		t.Errorf("settle = %d %v, want 200 settled", status, body)
	}
	if status, _ := control(t, h, http.MethodPost, "/_sim/settle?timeout=soon", nil); status != http.StatusBadRequest {
		t.Errorf("settle with a bad timeout = %d, want 400", status)
	}

	s.Close()
	s.Close()
	if err := s.Settle(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Settle after Close = %v, want ErrClosed", err)
	}
	if _, err := s.CustomerMessage(testPage, "42", "hi"); !errors.Is(err, ErrClosed) {
		t.Errorf("CustomerMessage after Close = %v, want ErrClosed", err)
	}
}

// TestCloseStopsRetries: Close returns promptly even while a delivery waits for a long retry.
func TestCloseStopsRetries(t *testing.T) {
	hook := newCollector(t)
	hook.answer = func(int) int { return 500 }
	s := New(Options{RetryDelays: []time.Duration{time.Hour}})
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, hook.URL("/"))}})
	if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(hook.Hits()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	s.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v", took)
	}
}

// TestSwitchModeKeepsThreads: PUT /_sim/pages/{id} from hop_v2 to cr and back keeps every
// thread with its owner and control window, and the next call follows the new mode's rules.
func TestSwitchModeKeepsThreads(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	srv := serve(t, s)
	hook := newCollector(t)
	page := func(mode string) PageConfig {
		return PageConfig{Mode: mode, PrimaryAppID: idP, Apps: []AppConfig{
			app(idP, hook.URL("/p")), app(idO, hook.URL("/o")), app(idT, hook.URL("/t")),
		}}
	}
	put := func(mode string) {
		t.Helper()
		status, _, raw := httpPut(t, srv, "/_sim/pages/"+testPage, page(mode))
		if status != http.StatusOK {
			t.Fatalf("PUT mode %s = %d %s", mode, status, raw)
		}
	}
	put(ModeHOPv2)
	setOwnerForTest(s, testPage, "by-P", idP)
	setOwnerForTest(s, testPage, "by-O", idO)
	setOwnerForTest(s, testPage, "idle", "")
	rcpt := func(psid string) map[string]any { return map[string]any{"recipient": map[string]any{"id": psid}} }
	if status, _, raw := httpCall(t, srv, http.MethodPost, "/v19.0/me/extend_thread_control", token(idO), map[string]any{"recipient": map[string]any{"id": "by-O"}, "duration": 3 * 24 * 3600}); status != http.StatusOK {
		t.Fatalf("extend = %d %s", status, raw)
	}
	before := map[string]ThreadView{}
	for _, psid := range []string{"by-P", "by-O", "idle"} {
		before[psid] = s.Thread(testPage, psid)
	}
	same := func(when string) {
		t.Helper()
		for psid, b := range before {
			got := s.Thread(testPage, psid)
			if got.OwnerAppID != b.OwnerAppID || !got.ExpiresAt.Equal(b.ExpiresAt) {
				t.Errorf("%s: thread %s owner %q expiring %v, want %q expiring %v", when, psid, got.OwnerAppID, got.ExpiresAt, b.OwnerAppID, b.ExpiresAt)
			}
		}
	}

	clock.Advance(time.Hour)
	put(ModeCR)
	same("after hop_v2 → cr")
	_, body, raw := httpCall(t, srv, http.MethodPost, "/v19.0/me/request_thread_control", token(idO), rcpt("by-P"))
	if msg := fmt.Sprint(body["error"]); errorCode(body) != "200" || !strings.Contains(msg, "default app") {
		t.Errorf("request after the switch to cr = %s, want the CR refusal (code 200, default app)", raw)
	}
	if _, body, raw := httpCall(t, srv, http.MethodPost, "/v19.0/me/take_thread_control", token(idO), rcpt("by-P")); errorCode(body) != "200" {
		t.Errorf("take without the takeover setting after the switch = %s, want code 200", raw)
	}
	if _, _, raw := httpCall(t, srv, http.MethodGet, "/v19.0/me", token(idO), map[string]any{"fields": "messaging_feature_status"}); !strings.Contains(string(raw), `"msgr_multi_app":true`) {
		t.Errorf("messaging_feature_status after the switch = %s, want msgr_multi_app true", raw)
	}
	same("after the refused calls")

	put(ModeHOPv2)
	same("after cr → hop_v2")
	if status, _, raw := httpCall(t, srv, http.MethodPost, "/v19.0/me/request_thread_control", token(idO), rcpt("by-P")); status != http.StatusOK {
		t.Errorf("request after the switch back to hop_v2 = %d %s, want success", status, raw)
	}
	settle(t, s)
	if got, want := deliveredHooks(s), []string{"P messaging request_thread_control"}; !slices.Equal(got, want) {
		t.Errorf("webhooks = %q, want %q", got, want)
	}
}

// TestSwitchModeExpiredControl: control that expired before a page is replaced is idle in the
// new config; in hop_v1 the thread then goes to the Primary Receiver, not the former owner.
func TestSwitchModeExpiredControl(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	apps := []AppConfig{app(idP, ""), app(idO, "")}
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: apps})
	setOwnerForTest(s, testPage, "expired", idO)
	setOwnerForTest(s, testPage, "live", idO)
	clock.Advance(12 * time.Hour)
	setOwnerForTest(s, testPage, "live", idO) // window restarted: expires at +36 h
	clock.Advance(13 * time.Hour)             // "expired" ran out at +24 h, unseen so far
	mustPut(t, s, PageConfig{Mode: ModeHOPv1, PrimaryAppID: idP, Apps: apps})
	if got := s.Thread(testPage, "expired").OwnerAppID; got != idP {
		t.Errorf("expired thread owner after the switch to hop_v1 = %q, want the Primary Receiver %s", got, idP)
	}
	if got := s.Thread(testPage, "live").OwnerAppID; got != idO {
		t.Errorf("live thread owner after the switch to hop_v1 = %q, want %s", got, idO)
	}
}
