package sim_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/messenger/sim"
)

// The demo ids of SPEC §7.
const (
	tpPage        = "100000000000001"
	tpRingCX      = "200000000000001"
	tpBot         = "300000000000001"
	tpBotToken    = "bot-page-token"
	tpBotSecret   = "bot-secret"
	tpRingCXToken = "ringcx-page-token"
	tpPSID        = "7000001"

	tpDir     = "testdata/thirdparty"
	tpLibrary = "messaging-api-messenger"
)

// clientLine is one line printed by testdata/thirdparty/client.js.
type clientLine struct {
	Step        string          `json:"step"`
	Call        string          `json:"call"`
	OK          bool            `json:"ok"`
	Result      json.RawMessage `json:"result,omitempty"`
	Status      int             `json:"status,omitempty"`
	Code        int             `json:"code,omitempty"`
	Subcode     int             `json:"subcode,omitempty"`
	Type        string          `json:"type,omitempty"`
	Message     string          `json:"message,omitempty"`
	FBTraceID   string          `json:"fbtrace_id,omitempty"`
	ClientError string          `json:"client_error,omitempty"`
}

// String is the line as client.js printed it, for failure messages.
func (l clientLine) String() string {
	type plain clientLine // no String method
	b, _ := json.Marshal(plain(l))
	return string(b)
}

// tpRequest is what the simulator's front saw of one HTTP request from the library.
type tpRequest struct {
	method, path, contentType string
	token, proof              string
}

// TestThirdPartyClient drives bottender's messaging-api-messenger (Node.js, unmodified, pointed
// at the simulator with its `origin` option) as the bot app through thread_owner, take, pass,
// request, release, the Send API and secondary_receivers, and checks every answer the library
// got against the simulator's truth: its log, the thread's owner and messages, and the webhooks
// RingCX received. The request encodings the library does not use (form body, relaxed query
// string) are covered by TestGraphEncodings.
func TestThirdPartyClient(t *testing.T) {
	node, version := nodePackages(t, tpDir, tpLibrary, "npm ci --prefix messenger/sim/"+tpDir)

	// RingCX's webhook endpoint: answers 200 and keeps the bodies.
	var hookMu sync.Mutex
	var hookBodies [][]byte
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		hookBodies = append(hookBodies, b)
		hookMu.Unlock()
	}))
	defer hook.Close()

	s := sim.New(sim.Options{RetryDelays: []time.Duration{}})
	defer s.Close()
	// Record each request's path, content type, token and appsecret_proof on the way in.
	var reqMu sync.Mutex
	var requests []tpRequest
	simHandler := s.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		reqMu.Lock()
		requests = append(requests, tpRequest{
			method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			token: q.Get("access_token"), proof: q.Get("appsecret_proof"),
		})
		reqMu.Unlock()
		simHandler.ServeHTTP(w, r)
	}))
	defer srv.Close()

	err := s.PutPage(sim.PageConfig{
		PageID:       tpPage,
		Mode:         sim.ModeHOPv2,
		PrimaryAppID: tpBot,
		Apps: []sim.AppConfig{
			{AppID: tpRingCX, Name: "RingCX", AccessToken: tpRingCXToken, AppSecret: "ringcx-secret",
				CallbackURL: hook.URL, VerifyToken: "dev-verify"},
			// A plain app, not the reference bot: the library plays the bot.
			{AppID: tpBot, Name: "Bot", AccessToken: tpBotToken, AppSecret: tpBotSecret},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The customer writes first: the thread exists and the Primary Receiver (the bot) owns it.
	customerMID, err := s.CustomerMessage(tpPage, tpPSID, "hi, I need help")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Thread(tpPage, tpPSID).OwnerAppID; got != tpBot {
		t.Fatalf("owner after the customer's first message = %q, want the bot %s", got, tpBot)
	}
	firstCall := len(s.Log("", ""))

	start := time.Now()
	lines := runThirdPartyClient(t, node, map[string]string{
		"SIM_BASE_URL":      srv.URL,
		"SIM_PSID":          tpPSID,
		"SIM_PAGE_TOKEN":    tpBotToken,
		"SIM_APP_SECRET":    tpBotSecret,
		"SIM_TARGET_APP_ID": tpRingCX,
	})
	t.Logf("%s %s: %d calls in %v", tpLibrary, version, len(lines), time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Settle(ctx); err != nil {
		t.Fatal(err)
	}

	// What each call must have done, in the order client.js makes them. owner is the thread's
	// owner in the simulator right after the call ("" = idle); code/subcode are Meta's error.
	type want struct {
		step, call    string
		ok            bool
		code, subcode int
		owner         string
		clientError   string // the library failed on a 200 answer
	}
	wants := []want{
		{step: "owner_initial", call: "thread_owner", ok: true, owner: tpBot},
		{step: "take_own", call: "take_thread_control", ok: true, owner: tpBot},
		{step: "pass_to_ringcx", call: "pass_thread_control", ok: true, owner: tpRingCX},
		{step: "pass_not_owner", call: "pass_thread_control", code: 100, subcode: 2534037, owner: tpRingCX},
		{step: "send_blocked", call: "messages", code: 10, subcode: 2018300, owner: tpRingCX},
		{step: "owner_ringcx", call: "thread_owner", ok: true, owner: tpRingCX},
		{step: "request", call: "request_thread_control", ok: true, owner: tpRingCX},
		{step: "take_back", call: "take_thread_control", ok: true, owner: tpBot},
		{step: "typing_on", call: "messages", ok: true, owner: tpBot},
		{step: "send_text", call: "messages", ok: true, owner: tpBot},
		{step: "send_form_data", call: "messages", ok: true, owner: tpBot},
		{step: "secondary_receivers", call: "secondary_receivers", ok: true},
		{step: "release_via_axios", call: "release_thread_control", ok: true, owner: ""},
		// messaging-api-messenger reads data[0] of thread_owner's answer, which is
		// {"data":[]} on an idle thread.
		{step: "owner_idle", call: "thread_owner", ok: true, owner: "", clientError: "TypeError"},
		{step: "wrong_proof", call: "thread_owner", code: 100},
		{step: "wrong_token", call: "thread_owner", code: 190},
	}

	var graphCalls []sim.LogEntry
	for _, e := range s.Log("", "")[firstCall:] {
		if e.Kind == sim.KindGraphCall {
			graphCalls = append(graphCalls, e)
		}
	}
	reqMu.Lock()
	reqs := slices.Clone(requests)
	reqMu.Unlock()
	if len(lines) != len(wants) || len(graphCalls) != len(wants) || len(reqs) != len(wants) {
		t.Fatalf("client printed %d lines, the simulator logged %d Graph calls and saw %d requests; want %d of each\nlines: %v",
			len(lines), len(graphCalls), len(reqs), len(wants), lines)
	}
	goodProof := hmacHex(tpBotSecret, tpBotToken)
	for i, w := range wants {
		l, e, r := lines[i], graphCalls[i], reqs[i]
		if l.Step != w.step || l.Call != w.call || e.Call != w.call {
			t.Fatalf("call %d: client step %q call %q, simulator logged %q; want step %q call %q", i, l.Step, l.Call, e.Call, w.step, w.call)
		}
		// What the library reported, against what the simulator answered.
		switch {
		case w.clientError != "":
			if l.OK || !strings.HasPrefix(l.ClientError, w.clientError) || l.Status != 0 {
				t.Errorf("%s: library reported %v, want a client-side %s on a 200 answer", w.step, l, w.clientError)
			}
		case w.ok:
			if !l.OK {
				t.Errorf("%s: library reported an error %v, want success", w.step, l)
			}
		default:
			if l.OK || l.Status != http.StatusBadRequest || l.Code != w.code || l.Subcode != w.subcode ||
				l.Message == "" || l.Type == "" || l.FBTraceID == "" {
				t.Errorf("%s: library reported %v, want Meta's envelope with HTTP 400, code %d, subcode %d, message, type and fbtrace_id",
					w.step, l, w.code, w.subcode)
			}
		}
		wantOutcome := sim.OutcomeError
		if w.ok {
			wantOutcome = sim.OutcomeOK
		}
		if e.Outcome != wantOutcome || e.ErrorCode != w.code || e.ErrorSubcode != w.subcode {
			t.Errorf("%s: simulator logged outcome %q code %d/%d, want %q %d/%d", w.step, e.Outcome, e.ErrorCode, e.ErrorSubcode, wantOutcome, w.code, w.subcode)
		}
		if !w.ok && (e.ErrorMessage != l.Message || e.HTTPStatus != l.Status) {
			t.Errorf("%s: library reported HTTP %d %q, simulator logged HTTP %d %q", w.step, l.Status, l.Message, e.HTTPStatus, e.ErrorMessage)
		}
		wantCaller := tpBot
		if w.step == "wrong_token" {
			wantCaller = "" // an unknown token names no app
		}
		if e.CallerAppID != wantCaller {
			t.Errorf("%s: simulator logged caller %q, want %q", w.step, e.CallerAppID, wantCaller)
		}
		if e.PSID == tpPSID && e.OwnerAppID != w.owner {
			t.Errorf("%s: owner after the call = %q, want %q", w.step, e.OwnerAppID, w.owner)
		}
		// How the library sent it: any /vN.M/ prefix (its default is v6.0), the token in the
		// query string, appsecret_proof always; JSON bodies, the query string for GETs, and
		// multipart for sendMessageFormData.
		if !strings.HasPrefix(r.path, "/v6.0/me/") {
			t.Errorf("%s: path %q, want the library's default /v6.0/me/...", w.step, r.path)
		}
		if r.proof == "" {
			t.Errorf("%s: no appsecret_proof sent", w.step)
		}
		if (r.token == tpBotToken && w.step != "wrong_proof") != (r.proof == goodProof) {
			t.Errorf("%s: token %q with appsecret_proof %q; the right proof for the bot's token is %q", w.step, r.token, r.proof, goodProof)
		}
		ctype, _, _ := mime.ParseMediaType(r.contentType)
		wantType := "application/json"
		if w.step == "send_form_data" {
			wantType = "multipart/form-data"
		}
		if ctype != wantType {
			t.Errorf("%s: %s with Content-Type %q, want %s", w.step, r.method, r.contentType, wantType)
		}
	}

	// Answers the library decoded (it camel-cases keys), against the simulator's truth.
	byStep := map[string]clientLine{}
	for _, l := range lines {
		byStep[l.Step] = l
	}
	var owner struct {
		AppID      string `json:"appId"`
		Expiration int64  `json:"expiration"`
	}
	for step, wantOwner := range map[string]string{"owner_initial": tpBot, "owner_ringcx": tpRingCX} {
		owner.AppID, owner.Expiration = "", 0
		if err := json.Unmarshal(byStep[step].Result, &owner); err != nil {
			t.Errorf("%s: result %s: %v", step, byStep[step].Result, err)
		}
		if exp := time.Unix(owner.Expiration, 0); owner.AppID != wantOwner || exp.Before(start) || exp.After(time.Now().Add(24*time.Hour)) {
			t.Errorf("%s: library got owner %q expiring %v, want %s within the next 24 h", step, owner.AppID, exp, wantOwner)
		}
	}
	var sent struct {
		RecipientID string `json:"recipientId"`
		MessageID   string `json:"messageId"`
	}
	sentMIDs := map[string]string{}
	for _, step := range []string{"typing_on", "send_text", "send_form_data"} {
		sent.RecipientID, sent.MessageID = "", ""
		if err := json.Unmarshal(byStep[step].Result, &sent); err != nil || sent.RecipientID != tpPSID {
			t.Errorf("%s: result %s, want recipientId %s (%v)", step, byStep[step].Result, tpPSID, err)
		}
		sentMIDs[step] = sent.MessageID
	}
	var receivers []struct{ ID, Name string }
	if err := json.Unmarshal(byStep["secondary_receivers"].Result, &receivers); err != nil ||
		len(receivers) != 1 || receivers[0].ID != tpRingCX || receivers[0].Name != "RingCX" {
		t.Errorf("secondary_receivers: library got %s, want [{id %s, name RingCX}] (%v)", byStep["secondary_receivers"].Result, tpRingCX, err)
	}
	if got := string(byStep["release_via_axios"].Result); got != `{"success":true}` {
		t.Errorf("release: library got %s, want {\"success\":true}", got)
	}

	// The thread as Meta sees it: released, with the customer's message and the two texts.
	view := s.Thread(tpPage, tpPSID)
	if view.OwnerAppID != "" {
		t.Errorf("final owner = %q, want idle after release", view.OwnerAppID)
	}
	var gotMsgs []string
	for _, m := range view.Messages {
		gotMsgs = append(gotMsgs, m.From+"|"+m.MID+"|"+m.Text)
	}
	wantMsgs := []string{
		"customer|" + customerMID + "|hi, I need help",
		tpBot + "|" + sentMIDs["send_text"] + "|hello from messaging-api-messenger",
		tpBot + "|" + sentMIDs["send_form_data"] + "|multipart hello",
	}
	if !slices.Equal(gotMsgs, wantMsgs) {
		t.Errorf("thread messages:\n got %q\nwant %q", gotMsgs, wantMsgs)
	}

	// RingCX's webhooks: the handovers the library's calls caused, with the library's metadata.
	hookMu.Lock()
	bodies := slices.Clone(hookBodies)
	hookMu.Unlock()
	gotHandovers := ringCXHandovers(t, bodies)
	wantHandovers := []string{
		"pass_thread_control new_owner=" + tpRingCX + " metadata=over to an agent",
		"request_thread_control requested_owner=" + tpBot + " metadata=bot asks back",
		"take_thread_control new_owner=" + tpBot + " metadata=bot takes back",
	}
	if !slices.Equal(gotHandovers, wantHandovers) {
		t.Errorf("RingCX handover webhooks:\n got %q\nwant %q", gotHandovers, wantHandovers)
	}
}

// runThirdPartyClient runs client.js with env added to the environment (proxy settings removed,
// so that nothing leaves loopback) and returns its lines.
func runThirdPartyClient(t *testing.T, node string, env map[string]string) []clientLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.js")
	cmd.Dir = tpDir
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(name), "_proxy") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node client.js: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var lines []clientLine
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var l clientLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("client.js printed %q: %v", sc.Text(), err)
		}
		t.Logf("client: %s", sc.Text())
		lines = append(lines, l)
	}
	return lines
}

// ringCXHandovers lists the handover events in RingCX's webhook bodies, in order.
func ringCXHandovers(t *testing.T, bodies [][]byte) []string {
	t.Helper()
	var out []string
	for _, b := range bodies {
		var body struct {
			Entry []struct {
				Messaging []map[string]json.RawMessage `json:"messaging"`
			} `json:"entry"`
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			t.Fatalf("webhook body %s: %v", b, err)
		}
		for _, e := range body.Entry {
			for _, m := range e.Messaging {
				for _, kind := range []string{"pass_thread_control", "request_thread_control", "take_thread_control"} {
					raw, ok := m[kind]
					if !ok {
						continue
					}
					var ev map[string]any
					dec := json.NewDecoder(bytes.NewReader(raw))
					dec.UseNumber()
					if err := dec.Decode(&ev); err != nil {
						t.Fatalf("%s %s: %v", kind, raw, err)
					}
					who := "new_owner=" + fmt.Sprint(ev["new_owner_app_id"])
					if kind == "request_thread_control" {
						who = "requested_owner=" + fmt.Sprint(ev["requested_owner_app_id"])
					}
					out = append(out, fmt.Sprintf("%s %s metadata=%v", kind, who, ev["metadata"]))
				}
			}
		}
	}
	return out
}

func hmacHex(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}
