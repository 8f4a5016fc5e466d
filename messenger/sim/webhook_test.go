package sim

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func hmacHex(secret string, body []byte, sha256Hash bool) string {
	h := hmac.New(sha1.New, []byte(secret))
	if sha256Hash {
		h = hmac.New(sha256.New, []byte(secret))
	}
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// TestWebhookSignatures recomputes both signature headers of every delivery with the
// receiving app's own secret.
func TestWebhookSignatures(t *testing.T) {
	s := newSim(t, Options{})
	hookP, hookO := newCollector(t), newCollector(t)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, hookP.URL("/")), app(idO, hookO.URL("/"))}})
	if _, err := s.CustomerMessage(testPage, "42", "héllo"); err != nil {
		t.Fatal(err)
	}
	settle(t, s)
	for _, c := range []struct {
		name   string
		hook   *collector
		secret string
		other  string
	}{{"primary", hookP, secret(idP), secret(idO)}, {"standby app", hookO, secret(idO), secret(idP)}} {
		t.Run(c.name, func(t *testing.T) {
			hits := c.hook.Hits()
			if len(hits) != 1 {
				t.Fatalf("got %d deliveries, want 1", len(hits))
			}
			h := hits[0]
			if got, want := h.header.Get("X-Hub-Signature-256"), "sha256="+hmacHex(c.secret, h.body, true); got != want {
				t.Errorf("X-Hub-Signature-256 = %s, want %s", got, want)
			}
			if got, want := h.header.Get("X-Hub-Signature"), "sha1="+hmacHex(c.secret, h.body, false); got != want {
				t.Errorf("X-Hub-Signature = %s, want %s", got, want)
			}
			if got := h.header.Get("X-Hub-Signature-256"); got == "sha256="+hmacHex(c.other, h.body, true) {
				t.Error("signed with another app's secret")
			}
			if got := h.header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
		})
	}
}

func TestMetaJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "ascii", in: "hello", want: `"hello"`},
		{name: "latin", in: "äöå", want: `"\u00e4\u00f6\u00e5"`},
		{name: "slash", in: "https://www.facebook.com/x", want: `"https:\/\/www.facebook.com\/x"`},
		{name: "emoji surrogate pair", in: "😀", want: `"\ud83d\ude00"`},
		{name: "no HTML escaping", in: "<b>&</b>", want: `"<b>&<\/b>"`},
		{name: "quotes and backslash", in: `a"b\c/`, want: `"a\"b\\c\/"`},
		{name: "line separator", in: "\u2028", want: `"\u2028"`},
		{name: "control character", in: "\x01\n", want: `"\u0001\n"`},
		{name: "CJK", in: "中", want: `"\u4e2d"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := metaJSON(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b); got != tc.want {
				t.Errorf("metaJSON(%q) = %s, want %s", tc.in, got, tc.want)
			}
			var back string
			if err := json.Unmarshal(b, &back); err != nil || back != tc.in {
				t.Errorf("decoding %s = %q, %v; want %q", b, back, err, tc.in)
			}
		})
	}
}

// TestWebhookEscaping checks the bytes on the wire: what Meta signs is the escaped form.
func TestWebhookEscaping(t *testing.T) {
	s := newSim(t, Options{})
	hook := newCollector(t)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, hook.URL("/"))}})
	if _, err := s.CustomerMessage(testPage, "42", "äöå 😀 a/b <i>&"); err != nil {
		t.Fatal(err)
	}
	settle(t, s)
	hits := hook.Hits()
	if len(hits) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(hits))
	}
	body := string(hits[0].body)
	if want := `"text":"\u00e4\u00f6\u00e5 \ud83d\ude00 a\/b <i>&"`; !strings.Contains(body, want) {
		t.Errorf("body %s does not contain %s", body, want)
	}
	for _, r := range body {
		if r > 127 {
			t.Fatalf("body has a raw non-ASCII character %q: %s", r, body)
		}
	}
}

// TestWebhookBatching holds the callback on its first POST; what queues meanwhile goes out in
// order, one event per entry, at most 50 entries per POST.
func TestWebhookBatching(t *testing.T) {
	s := newSim(t, Options{})
	release := make(chan struct{})
	first := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		once.Do(func() { close(first); <-release })
	}))
	t.Cleanup(srv.Close)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, srv.URL)}})

	if _, err := s.CustomerMessage(testPage, "42", "m0"); err != nil {
		t.Fatal(err)
	}
	<-first
	for i := 1; i <= 60; i++ {
		if _, err := s.CustomerMessage(testPage, fmt.Sprint(100+i%3), fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	settle(t, s)

	mu.Lock()
	defer mu.Unlock()
	var sizes []int
	var texts []string
	for _, b := range bodies {
		env := decodeEnvelope(t, b)
		sizes = append(sizes, len(env.Entry))
		for _, e := range env.Entry {
			if len(e.Messaging) != 1 || len(e.Standby) != 0 {
				t.Fatalf("entry has %d messaging and %d standby events, want exactly one", len(e.Messaging), len(e.Standby))
			}
			texts = append(texts, e.Messaging[0]["message"].(map[string]any)["text"].(string))
		}
	}
	if want := []int{1, 50, 10}; !slices.Equal(sizes, want) {
		t.Errorf("entries per POST = %v, want %v", sizes, want)
	}
	for i, text := range texts {
		if want := fmt.Sprintf("m%d", i); text != want {
			t.Fatalf("event %d = %s, want %s (FIFO)", i, text, want)
		}
	}
	ids := map[int64]int{}
	for _, e := range s.Log("", "") {
		if e.Kind == KindWebhook {
			ids[e.DeliveryID]++
		}
	}
	if len(ids) != 3 {
		t.Errorf("log shows %d deliveries (%v), want 3", len(ids), ids)
	}
}

// TestWebhookTimestamps checks that event timestamps are strictly increasing across the
// simulator even with a frozen clock, and that an entry's time is its event's.
func TestWebhookTimestamps(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	hook := newCollector(t)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, hook.URL("/p")), app(idO, hook.URL("/o"))}})
	for i := range 5 {
		if _, err := s.CustomerMessage(testPage, "42", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	call(t, s.Handler(), http.MethodPost, "/me/request_thread_control", token(idO), map[string]any{"recipient": map[string]any{"id": "42"}})
	settle(t, s)
	var stamps []int64
	for _, h := range hook.Hits() {
		for _, e := range decodeEnvelope(t, h.body).Entry {
			ev := e.Messaging[0]
			ts, _ := ev["timestamp"].(json.Number).Int64()
			if ts != e.Time {
				t.Errorf("entry time %d differs from event timestamp %d", e.Time, ts)
			}
			stamps = append(stamps, ts)
		}
	}
	slices.Sort(stamps)
	// Each customer message reaches both apps with the same timestamp; the pass event has its own.
	want := []int64{}
	base := t0.UnixMilli()
	for i := range 5 {
		want = append(want, base+int64(i), base+int64(i))
	}
	want = append(want, base+5)
	if !slices.Equal(stamps, want) {
		t.Errorf("timestamps = %v, want %v", stamps, want)
	}
}

// TestWebhookRetries makes the callback fail, and checks the retries, their log and the drop.
func TestWebhookRetries(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	tests := []struct {
		name        string
		answer      func(n int) int
		url         string
		delays      []time.Duration
		wantOutcome []string
		wantStatus  []int
	}{
		{name: "recovers", answer: func(n int) int { return map[bool]int{true: 500, false: 200}[n <= 2] },
			delays:      []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond},
			wantOutcome: []string{OutcomeFailed, OutcomeFailed, OutcomeDelivered}, wantStatus: []int{500, 500, 200}},
		{name: "dropped", answer: func(int) int { return http.StatusServiceUnavailable },
			delays:      []time.Duration{5 * time.Millisecond, 5 * time.Millisecond},
			wantOutcome: []string{OutcomeFailed, OutcomeFailed, OutcomeDropped}, wantStatus: []int{503, 503, 503}},
		{name: "redirect is a failure", answer: func(n int) int { return map[bool]int{true: 302, false: 204}[n == 1] },
			delays:      []time.Duration{5 * time.Millisecond},
			wantOutcome: []string{OutcomeFailed, OutcomeDelivered}, wantStatus: []int{302, 204}},
		{name: "no retries", answer: func(int) int { return 500 }, delays: []time.Duration{},
			wantOutcome: []string{OutcomeDropped}, wantStatus: []int{500}},
		{name: "network error", url: closedURL, delays: []time.Duration{5 * time.Millisecond},
			wantOutcome: []string{OutcomeFailed, OutcomeDropped}, wantStatus: []int{0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{RetryDelays: tc.delays})
			hook := newCollector(t)
			hook.answer = tc.answer
			url := tc.url
			if url == "" {
				url = hook.URL("/")
			}
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, url)}})
			if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
				t.Fatal(err)
			}
			settle(t, s)
			var outcomes []string
			var statuses []int
			for _, e := range s.Log(testPage, "42") {
				if e.Kind != KindWebhook {
					continue
				}
				outcomes = append(outcomes, e.Outcome)
				statuses = append(statuses, e.HTTPStatus)
				if e.Attempt != len(outcomes) {
					t.Errorf("attempt = %d, want %d", e.Attempt, len(outcomes))
				}
				if tc.url != "" && e.Detail == "" {
					t.Error("network error not described in the log")
				}
			}
			if !slices.Equal(outcomes, tc.wantOutcome) {
				t.Errorf("outcomes = %v, want %v", outcomes, tc.wantOutcome)
			}
			if !slices.Equal(statuses, tc.wantStatus) {
				t.Errorf("statuses = %v, want %v", statuses, tc.wantStatus)
			}
			hits := hook.Hits()
			for i := 1; i < len(hits); i++ {
				if string(hits[i].body) != string(hits[0].body) {
					t.Errorf("retry %d sent a different body", i)
				}
				if gap, min := hits[i].at.Sub(hits[i-1].at), tc.delays[i-1]; gap < min {
					t.Errorf("retry %d came %v after the previous attempt, want at least %v", i, gap, min)
				}
			}
		})
	}
}

// TestRoutingTable sends a customer message in each mode and thread state and checks who
// receives it on which channel (reference §6.5) and who owns the thread afterwards.
func TestRoutingTable(t *testing.T) {
	all := []string{FieldMessages, FieldHandovers, FieldStandby}
	tests := []struct {
		name      string
		mode      string
		primary   bool
		owner     string
		fieldsT   []string
		wantOwner string
		want      []string
	}{
		{name: "v1 new thread", mode: ModeHOPv1, primary: true, owner: "-", wantOwner: "P",
			want: []string{"P messaging message", "O standby message", "T standby message"}},
		{name: "v1 owned by secondary", mode: ModeHOPv1, primary: true, owner: "O", wantOwner: "O",
			want: []string{"O messaging message", "P standby message", "T standby message"}},
		{name: "v2 idle with primary", mode: ModeHOPv2, primary: true, owner: "", wantOwner: "P",
			want: []string{"P messaging message", "O standby message", "T standby message"}},
		{name: "v2 owned", mode: ModeHOPv2, primary: true, owner: "O", wantOwner: "O",
			want: []string{"O messaging message", "P standby message", "T standby message"}},
		{name: "v2 idle without primary", mode: ModeHOPv2, owner: "", wantOwner: "",
			want: []string{"P messaging message", "O messaging message", "T messaging message"}},
		{name: "v2 owned without primary", mode: ModeHOPv2, owner: "T", wantOwner: "T",
			want: []string{"T messaging message", "P standby message", "O standby message"}},
		{name: "cr idle goes to default", mode: ModeCR, primary: true, owner: "", wantOwner: "P",
			want: []string{"P messaging message", "O standby message", "T standby message"}},
		{name: "cr owned", mode: ModeCR, primary: true, owner: "O", wantOwner: "O",
			want: []string{"O messaging message", "P standby message", "T standby message"}},
		{name: "cr_zero idle", mode: ModeCRZero, owner: "", wantOwner: "",
			want: []string{"P messaging message", "O messaging message", "T messaging message"}},
		{name: "cr_zero owned", mode: ModeCRZero, owner: "O", wantOwner: "O",
			want: []string{"O messaging message", "P standby message", "T standby message"}},
		{name: "not subscribed to standby", mode: ModeHOPv2, primary: true, owner: "", fieldsT: []string{FieldMessages}, wantOwner: "P",
			want: []string{"P messaging message", "O standby message"}},
		{name: "standby only on an idle thread", mode: ModeHOPv2, owner: "", fieldsT: []string{FieldStandby}, wantOwner: "",
			want: []string{"P messaging message", "O messaging message"}},
		{name: "handovers only", mode: ModeHOPv2, primary: true, owner: "T", fieldsT: []string{FieldHandovers}, wantOwner: "T",
			want: []string{"P standby message", "O standby message"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			hook := newCollector(t)
			fieldsT := tc.fieldsT
			if fieldsT == nil {
				fieldsT = all
			}
			cfg := PageConfig{Mode: tc.mode, Apps: []AppConfig{
				app(idP, hook.URL("/p"), all...), app(idO, hook.URL("/o"), all...), app(idT, hook.URL("/t"), fieldsT...),
			}}
			if tc.primary {
				cfg.PrimaryAppID = idP
			}
			mustPut(t, s, cfg)
			if tc.owner != "-" {
				setOwnerForTest(s, testPage, "42", letterToID[tc.owner])
			}
			if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
				t.Fatal(err)
			}
			settle(t, s)
			got := deliveredHooks(s)
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("deliveries = %q, want %q", got, want)
			}
			if got := idToLetter(s.Thread(testPage, "42").OwnerAppID); got != tc.wantOwner {
				t.Errorf("owner = %q, want %q", got, tc.wantOwner)
			}
			for _, h := range hook.Hits() {
				env := decodeEnvelope(t, h.body)
				for _, e := range env.Entry {
					ev := append(e.Messaging, e.Standby...)[0]
					if ev["sender"].(map[string]any)["id"] != "42" || ev["recipient"].(map[string]any)["id"] != testPage {
						t.Errorf("event sender/recipient = %v/%v, want 42/%s", ev["sender"], ev["recipient"], testPage)
					}
					if msg := ev["message"].(map[string]any); msg["text"] != "hi" || !strings.HasPrefix(msg["mid"].(string), "m_") {
						t.Errorf("message = %v", msg)
					}
				}
			}
		})
	}
}

// TestHandoverWebhookShapes checks the handover events byte for byte, with app ids as numbers
// (production) and as strings (option).
func TestHandoverWebhookShapes(t *testing.T) {
	tests := []struct {
		name      string
		asStrings bool
		primary   string
		owner     string
		caller    string
		call      string
		args      map[string]any
		recipient string
		want      string
	}{
		{name: "pass from idle", owner: "", caller: idO, call: "pass_thread_control",
			args: map[string]any{"target_app_id": idT, "metadata": `{"a":"b/c"}`}, recipient: idT,
			want: `"pass_thread_control":{"previous_owner_app_id":null,"new_owner_app_id":33,"metadata":"{\"a\":\"b\/c\"}"}`},
		{name: "pass with string ids", asStrings: true, owner: idO, caller: idO, call: "pass_thread_control",
			args: map[string]any{"target_app_id": idT}, recipient: idT,
			want: `"pass_thread_control":{"previous_owner_app_id":"22","new_owner_app_id":"33"}`},
		{name: "take", primary: idP, owner: idO, caller: idP, call: "take_thread_control",
			args: map[string]any{"metadata": "agent"}, recipient: idO,
			want: `"take_thread_control":{"previous_owner_app_id":22,"new_owner_app_id":11,"metadata":"agent"}`},
		{name: "request", owner: idO, caller: idT, call: "request_thread_control", recipient: idO,
			args: map[string]any{"metadata": "please"},
			want: `"request_thread_control":{"requested_owner_app_id":33,"metadata":"please"}`},
		{name: "request granted on idle", owner: "", caller: idT, call: "request_thread_control", recipient: idT,
			want: `"pass_thread_control":{"previous_owner_app_id":null,"new_owner_app_id":33}`},
		{name: "pass_thread_metadata", owner: idO, caller: idO, call: "pass_thread_metadata",
			args: map[string]any{"target_app_id": idT, "metadata": "x"}, recipient: idT,
			want: `"pass_thread_metadata":{"previous_owner_app_id":22,"new_owner_app_id":33,"metadata":"x"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newSim(t, Options{Now: clock.Now})
			hook := newCollector(t)
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: tc.primary, AppIDsAsStrings: tc.asStrings, Apps: []AppConfig{
				app(idP, hook.URL("/"+idP)), app(idO, hook.URL("/"+idO)), app(idT, hook.URL("/"+idT)),
			}})
			setOwnerForTest(s, testPage, "42", tc.owner)
			args := map[string]any{"recipient": map[string]any{"id": "42"}}
			for k, v := range tc.args {
				args[k] = v
			}
			if status, body := call(t, s.Handler(), http.MethodPost, "/v19.0/me/"+tc.call, token(tc.caller), args); status != 200 {
				t.Fatalf("%s: %d %v", tc.call, status, body)
			}
			settle(t, s)
			hits := hook.Hits()
			if len(hits) != 1 {
				t.Fatalf("got %d deliveries, want 1", len(hits))
			}
			ts := fmt.Sprint(t0.UnixMilli())
			want := `{"object":"page","entry":[{"id":"1000","time":` + ts + `,"messaging":[{"sender":{"id":"42"},"recipient":{"id":"1000"},"timestamp":` + ts + `,` + tc.want + `}]}]}`
			if got := string(hits[0].body); got != want {
				t.Errorf("body =\n %s\nwant\n %s", got, want)
			}
			if got := s.Log("", "")[len(s.Log("", ""))-1].RecipientAppID; got != tc.recipient {
				t.Errorf("delivered to %s, want %s", got, tc.recipient)
			}
		})
	}
}

// TestAppRoles replaces a page with another primary: the apps whose role changed are told.
func TestAppRoles(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	hook := newCollector(t)
	apps := []AppConfig{app(idP, hook.URL("/"+idP)), app(idO, hook.URL("/"+idO)), app(idT, hook.URL("/"+idT))}
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: apps})
	setOwnerForTest(s, testPage, "42", idO)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idO, Apps: apps})
	settle(t, s)

	var bodies []string
	for _, h := range hook.Hits() {
		bodies = append(bodies, string(h.body))
	}
	slices.Sort(bodies)
	ts0, ts1 := fmt.Sprint(t0.UnixMilli()), fmt.Sprint(t0.UnixMilli()+1)
	want := []string{
		`{"object":"page","entry":[{"id":"1000","time":` + ts0 + `,"messaging":[{"recipient":{"id":"1000"},"timestamp":` + ts0 + `,"app_roles":{"11":["secondary_receiver"]}}]}]}`,
		`{"object":"page","entry":[{"id":"1000","time":` + ts1 + `,"messaging":[{"recipient":{"id":"1000"},"timestamp":` + ts1 + `,"app_roles":{"22":["primary_receiver"]}}]}]}`,
	}
	if !slices.Equal(bodies, want) {
		t.Errorf("app_roles deliveries =\n%s\nwant\n%s", strings.Join(bodies, "\n"), strings.Join(want, "\n"))
	}
	if got := s.Thread(testPage, "42").OwnerAppID; got != idO {
		t.Errorf("owner after replacing the page = %s, want %s (threads are kept)", got, idO)
	}
}

// TestEchoes checks message_echoes: the sender gets its echo in messaging, apps subscribed to
// standby and echoes get it in standby, others nothing.
func TestEchoes(t *testing.T) {
	s := newSim(t, Options{})
	hook := newCollector(t)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{
		app(idP, hook.URL("/"+idP), FieldMessages, FieldEchoes),
		app(idO, hook.URL("/"+idO), FieldStandby, FieldEchoes),
		app(idT, hook.URL("/"+idT), FieldMessages, FieldStandby),
	}})
	setOwnerForTest(s, testPage, "42", idP)
	args := map[string]any{"recipient": map[string]any{"id": "42"}, "message": map[string]any{"text": "hi there", "metadata": "tag"}}
	_, body := call(t, s.Handler(), http.MethodPost, "/v19.0/me/messages", token(idP), args)
	settle(t, s)
	got := deliveredHooks(s)
	slices.Sort(got)
	if want := []string{"O standby echo", "P messaging echo"}; !slices.Equal(got, want) {
		t.Errorf("echo deliveries = %q, want %q", got, want)
	}
	for _, h := range hook.Hits() {
		env := decodeEnvelope(t, h.body)
		ev := append(env.Entry[0].Messaging, env.Entry[0].Standby...)[0]
		want := fmt.Sprintf(`{"app_id":11,"is_echo":true,"metadata":"tag","mid":"%s","text":"hi there"}`, body["message_id"])
		if b, _ := json.Marshal(ev["message"]); string(b) != want {
			t.Errorf("echo message = %s, want %s", b, want)
		}
		if ev["sender"].(map[string]any)["id"] != testPage || ev["recipient"].(map[string]any)["id"] != "42" {
			t.Errorf("echo sender/recipient = %v/%v, want page/PSID", ev["sender"], ev["recipient"])
		}
	}
	msgs := s.Thread(testPage, "42").Messages
	if len(msgs) != 1 || msgs[0].From != idP || msgs[0].Text != "hi there" {
		t.Errorf("thread messages = %+v", msgs)
	}
}

func TestVerifyWebhook(t *testing.T) {
	handshake := func(verify string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			if q.Get("hub.mode") != "subscribe" || q.Get("hub.verify_token") != verify {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			_, _ = w.Write([]byte(q.Get("hub.challenge")))
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
		status  int
	}{
		{name: "answers the challenge", handler: handshake("verify-" + idP), status: 200},
		{name: "wrong verify token", handler: handshake("other"), wantErr: "HTTP 403", status: 400},
		{name: "wrong challenge", handler: func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }, wantErr: "want the challenge", status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			s := newSim(t, Options{})
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idP, srv.URL+"/webhooks/messenger")}})
			status, body := control(t, s.Handler(), http.MethodPost, "/_sim/pages/"+testPage+"/apps/"+idP+"/verify", nil)
			if status != tc.status {
				t.Errorf("HTTP status = %d (%v), want %d", status, body, tc.status)
			}
			msg, _ := body["error"].(string)
			if tc.wantErr == "" && msg != "" || !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error = %q, want it to contain %q", msg, tc.wantErr)
			}
		})
	}
}

// TestWebhookLoggedBeforeReaction: an app that calls the Graph API while handling a webhook
// (before answering it) must appear after that webhook in the log.
func TestWebhookLoggedBeforeReaction(t *testing.T) {
	s := newSim(t, Options{})
	graphSrv := httptest.NewServer(s.Handler())
	t.Cleanup(graphSrv.Close)
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"request_thread_control"`) {
			resp, err := http.Post(graphSrv.URL+"/v19.0/me/pass_thread_control?access_token="+token(idO), "application/json",
				strings.NewReader(`{"recipient":{"id":"42"},"target_app_id":`+idT+`}`))
			if err == nil {
				resp.Body.Close()
			}
		}
	}))
	t.Cleanup(owner.Close)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, Apps: []AppConfig{app(idO, owner.URL), app(idT, "")}})
	setOwnerForTest(s, testPage, "42", idO)
	call(t, s.Handler(), http.MethodPost, "/me/request_thread_control", token(idT), map[string]any{"recipient": map[string]any{"id": "42"}})
	settle(t, s)

	var steps []string
	for _, e := range s.Log(testPage, "42") {
		switch e.Kind {
		case KindGraphCall:
			steps = append(steps, idToLetter(e.CallerAppID)+" "+e.Call+" "+e.Outcome)
		case KindWebhook:
			steps = append(steps, idToLetter(e.RecipientAppID)+" gets "+e.Event+" "+e.Outcome)
		}
	}
	want := []string{"T request_thread_control ok", "O gets request_thread_control delivered", "O pass_thread_control ok"}
	if !slices.Equal(steps, want) {
		t.Errorf("log = %q, want %q", steps, want)
	}
}
