package sim

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// graphFixture is a hop_v2 page (primary P) whose thread 42 belongs to P.
func graphFixture(t *testing.T) *Sim {
	t.Helper()
	s := newSim(t, Options{})
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, ""), app(idO, ""), app(idT, "")}})
	setOwnerForTest(s, testPage, "42", idP)
	return s
}

func TestGraphPaths(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		wantCode string // "" for success
		wantMsg  string
	}{
		{name: "v2.6 me", method: http.MethodGet, path: "/v2.6/me/thread_owner"},
		{name: "v6.0 me", method: http.MethodGet, path: "/v6.0/me/thread_owner"},
		{name: "v19.0 page id", method: http.MethodGet, path: "/v19.0/" + testPage + "/thread_owner"},
		{name: "v22.0 me", method: http.MethodGet, path: "/v22.0/me/thread_owner"},
		{name: "no version", method: http.MethodGet, path: "/me/thread_owner"},
		{name: "no version page id", method: http.MethodGet, path: "/" + testPage + "/thread_owner"},
		{name: "trailing slash", method: http.MethodGet, path: "/v19.0/me/thread_owner/"},
		{name: "page node", method: http.MethodGet, path: "/v19.0/me"},
		{name: "another page", method: http.MethodGet, path: "/v19.0/2000/thread_owner", wantCode: "100/33", wantMsg: "Unsupported get request. Object with ID '2000' does not exist"},
		{name: "unknown edge", method: http.MethodPost, path: "/v19.0/me/xyz", wantCode: "2500", wantMsg: "Unknown path components: /xyz"},
		{name: "extra components", method: http.MethodGet, path: "/v19.0/me/thread_owner/abc", wantCode: "2500", wantMsg: "Unknown path components: /abc"},
		{name: "GET on a POST edge", method: http.MethodGet, path: "/v19.0/me/take_thread_control", wantCode: "100/33", wantMsg: "Unsupported get request"},
		{name: "POST on a GET edge", method: http.MethodPost, path: "/v19.0/me/thread_owner", wantCode: "100/33", wantMsg: "Unsupported post request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := graphFixture(t)
			status, body := call(t, s.Handler(), tc.method, tc.path, token(idP), map[string]any{"recipient": "42"})
			if got := errorCode(body); got != tc.wantCode {
				t.Fatalf("outcome = %q (HTTP %d, %v), want %q", got, status, body, tc.wantCode)
			}
			if tc.wantCode == "" {
				if status != http.StatusOK {
					t.Errorf("HTTP status = %d, want 200", status)
				}
				return
			}
			msg := body["error"].(map[string]any)["message"].(string)
			if !strings.HasPrefix(msg, tc.wantMsg) {
				t.Errorf("message = %q, want it to start with %q", msg, tc.wantMsg)
			}
		})
	}
}

// TestGraphEncodings sends the same pass_thread_control in every encoding Meta's docs and
// client libraries use.
func TestGraphEncodings(t *testing.T) {
	form := func(v url.Values) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Body = ioNop(v.Encode())
		}
	}
	jsonBody := func(s string) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Set("Content-Type", "application/json")
			r.Body = ioNop(s)
		}
	}
	tests := []struct {
		name  string
		query string
		body  func(*http.Request)
	}{
		{name: "JSON body, object recipient, numeric app id", query: "access_token=tok-11",
			body: jsonBody(`{"recipient":{"id":"42"},"target_app_id":22,"metadata":"m"}`)},
		{name: "JSON body with the token inside", body: jsonBody(`{"recipient":{"id":"42"},"target_app_id":"22","access_token":"tok-11"}`)},
		{name: "JSON body without content type", query: "access_token=tok-11",
			body: func(r *http.Request) { r.Body = ioNop(`{"recipient":{"id":42},"target_app_id":22}`) }},
		{name: "query string, relaxed recipient", query: "recipient={id:42}&target_app_id=22&access_token=tok-11"},
		{name: "query string, strict JSON recipient", query: url.Values{"recipient": {`{"id":"42"}`}, "target_app_id": {"22"}, "access_token": {"tok-11"}}.Encode()},
		{name: "form body, single quotes", body: form(url.Values{"recipient": {"{'id':'42'}"}, "target_app_id": {"22"}, "access_token": {"tok-11"}})},
		{name: "form body and query merged", query: "access_token=tok-11", body: form(url.Values{"recipient": {`{"id":"42"}`}, "target_app_id": {"22"}})},
		{name: "bearer header", body: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer tok-11")
			jsonBody(`{"recipient":{"id":"42"},"target_app_id":22}`)(r)
		}},
		{name: "multipart body", body: func(r *http.Request) {
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			_ = mw.WriteField("recipient", `{"id":"42"}`)
			_ = mw.WriteField("target_app_id", "22")
			_ = mw.WriteField("access_token", "tok-11")
			_ = mw.Close()
			r.Header.Set("Content-Type", mw.FormDataContentType())
			r.Body = ioNop(buf.String())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := graphFixture(t)
			req := httptest.NewRequest(http.MethodPost, "/v19.0/me/pass_thread_control?"+tc.query, nil)
			if tc.body != nil {
				tc.body(req)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusOK || rec.Body.String() != `{"success":true}` {
				t.Fatalf("answer = %d %s, want 200 {\"success\":true}", rec.Code, rec.Body)
			}
			if got := s.Thread(testPage, "42").OwnerAppID; got != idO {
				t.Errorf("owner = %s, want %s", got, idO)
			}
		})
	}
}

func TestGraphAuth(t *testing.T) {
	proof := func(tok, sec string) string { return sign(sha256.New, sec, []byte(tok)) }
	tests := []struct {
		name     string
		query    url.Values
		header   string
		wantCode string
		wantType string
		wantMsg  string
	}{
		{name: "unknown token", query: url.Values{"access_token": {"nope"}}, wantCode: "190", wantType: "OAuthException",
			wantMsg: "Invalid OAuth access token - Cannot parse access token"},
		{name: "no token", query: url.Values{}, wantCode: "104", wantType: "OAuthException"},
		{name: "right appsecret_proof", query: url.Values{"access_token": {"tok-11"}, "appsecret_proof": {proof("tok-11", "secret-11")}}},
		{name: "uppercase appsecret_proof", query: url.Values{"access_token": {"tok-11"}, "appsecret_proof": {strings.ToUpper(proof("tok-11", "secret-11"))}}},
		{name: "proof with another app's secret", query: url.Values{"access_token": {"tok-11"}, "appsecret_proof": {proof("tok-11", "secret-22")}},
			wantCode: "100", wantType: "GraphMethodException", wantMsg: "Invalid appsecret_proof provided in the API argument"},
		{name: "garbage proof", query: url.Values{"access_token": {"tok-11"}, "appsecret_proof": {"xyz"}}, wantCode: "100", wantType: "GraphMethodException"},
		{name: "bearer header", query: url.Values{}, header: "Bearer tok-22"},
		{name: "OAuth header", query: url.Values{}, header: "OAuth tok-22"},
		{name: "bearer header with unknown token", query: url.Values{}, header: "Bearer nope", wantCode: "190", wantType: "OAuthException"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := graphFixture(t)
			tc.query.Set("recipient", "42")
			req := httptest.NewRequest(http.MethodGet, "/v19.0/me/thread_owner?"+tc.query.Encode(), nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			var body map[string]any
			if err := decodeJSON(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if got := errorCode(body); got != tc.wantCode {
				t.Fatalf("outcome = %q (%s), want %q", got, rec.Body, tc.wantCode)
			}
			if tc.wantCode == "" {
				return
			}
			if rec.Code != http.StatusBadRequest {
				t.Errorf("HTTP status = %d, want 400", rec.Code)
			}
			e := body["error"].(map[string]any)
			if e["type"] != tc.wantType {
				t.Errorf("type = %v, want %s", e["type"], tc.wantType)
			}
			if tc.wantMsg != "" && e["message"] != tc.wantMsg {
				t.Errorf("message = %q, want %q", e["message"], tc.wantMsg)
			}
		})
	}
}

// TestErrorEnvelope checks Meta's error shape key by key, in order.
func TestErrorEnvelope(t *testing.T) {
	s := graphFixture(t)
	status, raw := callRaw(t, s.Handler(), http.MethodPost, "/v19.0/me/take_thread_control", token(idO), map[string]any{"recipient": map[string]any{"id": "42"}})
	if status != http.StatusBadRequest {
		t.Fatalf("HTTP status = %d, want 400", status)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var keys []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok {
		case json.Delim('{'):
			depth++
		case json.Delim('}'):
			depth--
		default:
			if k, ok := tok.(string); ok && depth == 2 && dec.More() {
				keys = append(keys, k)
				_, _ = dec.Token()
			}
		}
	}
	want := []string{"message", "type", "code", "error_subcode", "fbtrace_id"}
	if !slices.Equal(keys, want) {
		t.Errorf("error keys = %v, want %v (body %s)", keys, want, raw)
	}
	var body struct {
		Error wireError `json:"error"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	if got, want := body.Error.Message, "(#100) The action is invalid since it's not the thread owner."; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	if len(body.Error.FBTraceID) != 11 {
		t.Errorf("fbtrace_id = %q, want 11 characters", body.Error.FBTraceID)
	}
}

// TestSendAPI covers the Send API's parameters.
func TestSendAPI(t *testing.T) {
	tests := []struct {
		name     string
		args     map[string]any
		wantCode string
		wantBody string // keys that must be present
	}{
		{name: "text", args: map[string]any{"messaging_type": "RESPONSE", "message": map[string]any{"text": "hello"}}},
		{name: "message as a JSON string", args: map[string]any{"message": `{"text":"hello"}`}},
		{name: "sender action", args: map[string]any{"sender_action": "typing_on"}},
		{name: "no message", args: map[string]any{}, wantCode: "100"},
		{name: "attachment only", args: map[string]any{"message": map[string]any{"attachment": map[string]any{"type": "image"}}}, wantCode: "100"},
		{name: "text too long", args: map[string]any{"message": map[string]any{"text": strings.Repeat("é", 2001)}}, wantCode: "100"},
		{name: "thread_control ignored outside cr", args: map[string]any{"message": map[string]any{"text": "x"}, "thread_control": map[string]any{"control_type": "steal"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := graphFixture(t)
			args := map[string]any{"recipient": map[string]any{"id": "42"}}
			for k, v := range tc.args {
				args[k] = v
			}
			_, body := call(t, s.Handler(), http.MethodPost, "/v19.0/me/messages", token(idP), args)
			if got := errorCode(body); got != tc.wantCode {
				t.Fatalf("outcome = %q (%v), want %q", got, body, tc.wantCode)
			}
			if tc.wantCode == "" && body["recipient_id"] != "42" {
				t.Errorf("recipient_id = %v, want 42", body["recipient_id"])
			}
		})
	}
}

func TestRecipientErrors(t *testing.T) {
	tests := []struct {
		name      string
		recipient any
	}{
		{name: "missing", recipient: nil},
		{name: "empty string", recipient: ""},
		{name: "object without id", recipient: map[string]any{"user_ref": "x"}},
		{name: "unparsable", recipient: "{id:"},
		{name: "array", recipient: []any{"42"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := graphFixture(t)
			args := map[string]any{"target_app_id": idO}
			if tc.recipient != nil {
				args["recipient"] = tc.recipient
			}
			_, body := call(t, s.Handler(), http.MethodPost, "/v19.0/me/pass_thread_control", token(idP), args)
			if got := errorCode(body); got != "100" {
				t.Errorf("outcome = %q (%v), want 100", got, body)
			}
		})
	}
}

func TestSecondaryReceiversParams(t *testing.T) {
	tests := []struct {
		name     string
		args     map[string]any
		wantBody string
		wantCode string
	}{
		{name: "no fields", args: map[string]any{}, wantBody: `{"data":[{"id":"22","name":"O app"},{"id":"33","name":"T app"}]}`},
		{name: "id only", args: map[string]any{"fields": "id"}, wantBody: `{"data":[{"id":"22"},{"id":"33"}]}`},
		{name: "instagram", args: map[string]any{"platform": "INSTAGRAM"}, wantBody: `{"data":[]}`},
		{name: "unknown field", args: map[string]any{"fields": "id,secret"}, wantCode: "100"},
		{name: "unknown platform", args: map[string]any{"platform": "WHATSAPP"}, wantCode: "100"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := graphFixture(t)
			_, raw := callRaw(t, s.Handler(), http.MethodGet, "/v19.0/me/secondary_receivers", token(idP), tc.args)
			var body map[string]any
			if err := decodeJSON(raw, &body); err != nil {
				t.Fatal(err)
			}
			if got := errorCode(body); got != tc.wantCode {
				t.Fatalf("outcome = %q (%s), want %q", got, raw, tc.wantCode)
			}
			if tc.wantBody != "" && string(raw) != tc.wantBody {
				t.Errorf("body = %s, want %s", raw, tc.wantBody)
			}
		})
	}
}

// TestGraphLog checks what the log records of Graph calls.
func TestGraphLog(t *testing.T) {
	s := graphFixture(t)
	h := s.Handler()
	call(t, h, http.MethodPost, "/v19.0/me/pass_thread_control", token(idP), map[string]any{"recipient": map[string]any{"id": "42"}, "target_app_id": idO})
	call(t, h, http.MethodPost, "/v19.0/me/take_thread_control", token(idT), map[string]any{"recipient": map[string]any{"id": "42"}})
	call(t, h, http.MethodGet, "/v19.0/me/thread_owner", "bad-token", map[string]any{"recipient": "42"})

	var got []LogEntry
	for _, e := range s.Log("", "") {
		if e.Kind == KindGraphCall {
			e.Time, e.Seq, e.ErrorMessage = time.Time{}, 0, ""
			got = append(got, e)
		}
	}
	want := []LogEntry{
		{Kind: KindGraphCall, PageID: testPage, PSID: "42", CallerAppID: idP, Call: "pass_thread_control", TargetAppID: idO, OwnerAppID: idO, Outcome: OutcomeOK, HTTPStatus: 200},
		{Kind: KindGraphCall, PageID: testPage, PSID: "42", CallerAppID: idT, Call: "take_thread_control", OwnerAppID: idO, Outcome: OutcomeError, HTTPStatus: 400, ErrorCode: 100, ErrorSubcode: 2534037},
		{Kind: KindGraphCall, Call: "thread_owner", Outcome: OutcomeError, HTTPStatus: 400, ErrorCode: 190},
	}
	if !slices.Equal(got, want) {
		t.Errorf("graph calls logged:\n got %+v\nwant %+v", got, want)
	}
	seqs := []int64{}
	for _, e := range s.Log("", "") {
		seqs = append(seqs, e.Seq)
	}
	if !slices.IsSorted(seqs) {
		t.Errorf("log sequence numbers %v are not increasing", seqs)
	}
}

func ioNop(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }

// FuzzGraphRequest feeds arbitrary requests to the Graph endpoints: every answer must be a
// JSON object, and the simulator must not panic.
func FuzzGraphRequest(f *testing.F) {
	f.Add("POST", "/v19.0/me/pass_thread_control", "access_token=tok-11", "application/json", `{"recipient":{"id":"42"},"target_app_id":22}`)
	f.Add("POST", "/me/messages", "access_token=tok-22", "application/x-www-form-urlencoded", "recipient={'id':'42'}&message={\"text\":\"hi\"}")
	f.Add("GET", "/v2.6/1000/thread_owner", "access_token=tok-11&recipient=42", "", "")
	f.Add("POST", "/v19.0/me/extend_thread_control", "access_token=tok-11&duration=9e9", "", "")
	f.Add("POST", "/v19.0/me/messages", "access_token=tok-11", "multipart/form-data; boundary=x", "--x\r\n")
	f.Fuzz(func(t *testing.T, method, path, query, ctype, body string) {
		if method != http.MethodGet && method != http.MethodPost {
			return
		}
		u, err := url.Parse(path)
		if err != nil || u.Path == "" || u.Path[0] != '/' || strings.HasPrefix(u.Path, "/_sim") {
			return
		}
		s := graphFixture(t)
		req := httptest.NewRequest(method, "/", strings.NewReader(body))
		req.URL.Path, req.URL.RawQuery = u.Path, query
		req.Header.Set("Content-Type", ctype)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code >= 300 && rec.Code < 400 {
			return // the mux's redirect to a clean path
		}
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s?%s: answer %d is not a JSON object: %q", method, u.Path, query, rec.Code, rec.Body)
		}
	})
}

// TestMessagingFeatureStatus: the page node answers messaging_feature_status when asked, on
// /me and on the page id, with the flags the simulator derives from the page's mode.
func TestMessagingFeatureStatus(t *testing.T) {
	status := func(hopV2, multi bool) string {
		return fmt.Sprintf(`{"messaging_feature_status":{"hop_v2":%t,"msgr_multi_app":%t,"ig_multi_app":false},"id":"%s"}`, hopV2, multi, testPage)
	}
	idOnly := `{"id":"` + testPage + `"}`
	tests := []struct {
		name     string
		mode     string
		node     string
		fields   string // "-": no fields parameter
		wantBody string
		wantCode string
	}{
		{name: "hop_v1", mode: ModeHOPv1, node: "me", fields: "messaging_feature_status", wantBody: status(false, false)},
		{name: "hop_v2", mode: ModeHOPv2, node: "me", fields: "messaging_feature_status", wantBody: status(true, false)},
		{name: "cr", mode: ModeCR, node: "me", fields: "messaging_feature_status", wantBody: status(false, true)},
		{name: "cr_zero", mode: ModeCRZero, node: "me", fields: "messaging_feature_status", wantBody: status(false, true)},
		{name: "cr on the page id", mode: ModeCR, node: testPage, fields: "messaging_feature_status", wantBody: status(false, true)},
		{name: "id and status", mode: ModeCR, node: testPage, fields: "id,messaging_feature_status", wantBody: status(false, true)},
		{name: "status and id with spaces", mode: ModeHOPv2, node: "me", fields: " messaging_feature_status , id", wantBody: status(true, false)},
		{name: "id only", mode: ModeCR, node: "me", fields: "id", wantBody: idOnly},
		{name: "no fields", mode: ModeCR, node: testPage, fields: "-", wantBody: idOnly},
		{name: "unknown field", mode: ModeCR, node: "me", fields: "id,name", wantCode: "100"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			cfg := PageConfig{Mode: tc.mode, Apps: []AppConfig{app(idP, ""), app(idO, "")}}
			if tc.mode != ModeHOPv2 && tc.mode != ModeCRZero {
				cfg.PrimaryAppID = idP
			}
			mustPut(t, s, cfg)
			args := map[string]any{}
			if tc.fields != "-" {
				args["fields"] = tc.fields
			}
			status, body, raw := httpCall(t, serve(t, s), http.MethodGet, "/v19.0/"+tc.node, token(idO), args)
			if got := errorCode(body); got != tc.wantCode {
				t.Fatalf("outcome = %q (HTTP %d, %s), want %q", got, status, raw, tc.wantCode)
			}
			if tc.wantCode != "" {
				msg := body["error"].(map[string]any)["message"].(string)
				if status != http.StatusBadRequest || !strings.Contains(msg, "nonexisting field (name)") {
					t.Errorf("error = %d %q, want 400 naming the field", status, msg)
				}
				return
			}
			if status != http.StatusOK || string(raw) != tc.wantBody {
				t.Errorf("answer = %d %s, want 200 %s", status, raw, tc.wantBody)
			}
		})
	}
}
