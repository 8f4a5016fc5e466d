package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
)

// demoPage is SPEC §7's demo page: RingCX and the reference bot, the bot primary.
func demoPage(callback string) PageConfig {
	return PageConfig{
		PageID:       "100000000000001",
		Mode:         ModeHOPv2,
		PrimaryAppID: "300000000000001",
		Apps: []AppConfig{
			{AppID: "200000000000001", Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret",
				CallbackURL: callback, VerifyToken: "dev-verify", Fields: []string{FieldMessages, FieldHandovers, FieldStandby}},
			{AppID: "300000000000001", Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret",
				Bot: &BotConfig{HonorRequests: true, Reply: "echo"}},
		},
	}
}

// TestScenarioBotPrimary runs the seed's "bot primary" workflow over real HTTP, as threadctl
// will: the customer writes, the bot answers, RingCX asks for control, gets it, answers, and
// releases. RingCX's callback checks every signature with its secret.
func TestScenarioBotPrimary(t *testing.T) {
	var mu sync.Mutex
	var events []string
	var badSig []string
	ringcx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("X-Hub-Signature-256") != "sha256="+hmacHex("ringcx-secret", body, true) {
			badSig = append(badSig, string(body))
		}
		env := decodeEnvelope(t, body)
		for _, e := range env.Entry {
			for field, evs := range map[string][]map[string]any{"messaging": e.Messaging, "standby": e.Standby} {
				for _, ev := range evs {
					for _, k := range []string{"message", "pass_thread_control", "take_thread_control", "request_thread_control"} {
						if ev[k] != nil {
							events = append(events, field+" "+k)
						}
					}
				}
			}
		}
	}))
	t.Cleanup(ringcx.Close)

	s := newSim(t, Options{})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	do := func(method, path string, body any) map[string]any {
		t.Helper()
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, srv.URL+path, r)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s = %d %v", method, path, resp.StatusCode, out)
		}
		return out
	}
	const page, psid = "100000000000001", "7000001"
	graph := "/v19.0/" + page + "/"
	tok := "?access_token=ringcx-page-token"
	rcpt := map[string]any{"id": psid}

	do(http.MethodPut, "/_sim/pages/"+page, demoPage(ringcx.URL+"/webhooks/messenger"))
	do(http.MethodPost, "/_sim/pages/"+page+"/customers/"+psid+"/messages", map[string]string{"text": "I need help"})
	do(http.MethodPost, "/_sim/settle", nil)
	owner := do(http.MethodGet, graph+"thread_owner"+tok+"&recipient="+psid, nil)
	if got := fmt.Sprint(owner["data"]); !strings.Contains(got, "app_id:300000000000001") {
		t.Fatalf("thread_owner = %v, want the bot", got)
	}

	do(http.MethodPost, graph+"request_thread_control"+tok, map[string]any{"recipient": rcpt, "metadata": "agent"})
	do(http.MethodPost, "/_sim/settle", nil)
	do(http.MethodPost, graph+"messages"+tok, map[string]any{"recipient": rcpt, "messaging_type": "RESPONSE", "message": map[string]any{"text": "Agent here"}})
	form := url.Values{"recipient": {fmt.Sprintf("{id:%s}", psid)}, "access_token": {"ringcx-page-token"}}
	resp, err := srv.Client().PostForm(srv.URL+graph+"release_thread_control", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	do(http.MethodPost, "/_sim/settle", nil)

	view := do(http.MethodGet, "/_sim/pages/"+page+"/threads/"+psid, nil)
	if view["owner_app_id"] != nil {
		t.Errorf("owner after release = %v, want idle", view["owner_app_id"])
	}
	var said []string
	for _, m := range view["messages"].([]any) {
		m := m.(map[string]any)
		said = append(said, m["from"].(string)+": "+m["text"].(string))
	}
	want := []string{"customer: I need help", "300000000000001: echo: I need help", "200000000000001: Agent here"}
	if !slices.Equal(said, want) {
		t.Errorf("thread = %q, want %q", said, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"standby message", "messaging pass_thread_control"}; !slices.Equal(events, want) {
		t.Errorf("RingCX received %q, want %q", events, want)
	}
	if len(badSig) > 0 {
		t.Errorf("%d webhooks failed RingCX's signature check", len(badSig))
	}

	var calls []string
	for _, e := range do(http.MethodGet, "/_sim/log?psid="+psid, nil)["entries"].([]any) {
		e := e.(map[string]any)
		if e["kind"] == KindGraphCall {
			calls = append(calls, fmt.Sprintf("%v %v %v", e["caller_app_id"], e["call"], e["outcome"]))
		}
	}
	wantCalls := []string{
		"300000000000001 messages ok",
		"200000000000001 thread_owner ok",
		"200000000000001 request_thread_control ok",
		"300000000000001 pass_thread_control ok",
		"200000000000001 messages ok",
		"200000000000001 release_thread_control ok",
	}
	if !slices.Equal(calls, wantCalls) {
		t.Errorf("calls logged = %q, want %q", calls, wantCalls)
	}
}

// TestConcurrentUse drives the simulator from many goroutines at once (customers, apps, the
// reference bot, faults, page replacement) for the race detector, then checks that everything
// settled and no delivery is left pending.
func TestConcurrentUse(t *testing.T) {
	s := newSim(t, Options{})
	hook := newCollector(t)
	cfg := PageConfig{PageID: testPage, Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{
		botApp(idP, BotConfig{HonorRequests: true, Reply: "echo"}),
		app(idO, hook.URL("/o"), FieldMessages, FieldHandovers, FieldStandby, FieldEchoes),
		app(idT, hook.URL("/t")),
	}}
	mustPut(t, s, cfg)
	s.SetFault(Fault{Call: "thread_owner", Status: 500, Count: 5})
	h := s.Handler()
	// do makes a Graph call without t, which must not be failed from these goroutines.
	do := func(method, path, tok, query, body string) {
		req := httptest.NewRequest(method, path+"?access_token="+tok+"&"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				psid := fmt.Sprint(500 + (g+i)%5)
				rcpt := `{"recipient":{"id":"` + psid + `"}}`
				switch i % 5 {
				case 0:
					if _, err := s.CustomerMessage(testPage, psid, "hi"); err != nil {
						t.Error(err)
					}
				case 1:
					do(http.MethodPost, "/me/request_thread_control", token(idO), "", rcpt)
				case 2:
					do(http.MethodPost, "/me/take_thread_control", token(idT), "", rcpt)
				case 3:
					do(http.MethodGet, "/me/thread_owner", token(idO), "recipient="+psid, "")
				case 4:
					if g == 0 {
						if err := s.PutPage(cfg); err != nil {
							t.Error(err)
						}
					}
					_ = s.Log(testPage, psid)
				}
			}
		}()
	}
	wg.Wait()
	settle(t, s)
	for _, e := range s.Log("", "") {
		if e.Kind == KindWebhook && e.Outcome == OutcomePending {
			t.Errorf("delivery left pending after Settle: %+v", e)
		}
	}
	if len(hook.Hits()) == 0 {
		t.Error("no webhook delivered")
	}
}
