package messenger_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
)

const (
	pageID   = "100000000000001"
	ringcxID = "200000000000001"
	botID    = "300000000000001"
	psid     = "7000000000000001"
)

var ctx = context.Background()

// simFixture is the simulator over real HTTP with the demo page (hop_v2, the
// bot primary), a RingCX client and a bot client.
type simFixture struct {
	sim    *sim.Sim
	url    string
	ringcx *messenger.Client
	bot    *messenger.Client
}

func newSim(t *testing.T) *simFixture {
	t.Helper()
	s := sim.New(sim.Options{RetryDelays: []time.Duration{}})
	srv := httptest.NewServer(s.Handler())
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(func() { s.Close(); srv.Close(); hook.Close() })
	err := s.PutPage(sim.PageConfig{PageID: pageID, Mode: "hop_v2", PrimaryAppID: botID, Apps: []sim.AppConfig{
		{AppID: ringcxID, Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret", CallbackURL: hook.URL},
		{AppID: botID, Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret", CallbackURL: hook.URL},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f := &simFixture{sim: s, url: srv.URL}
	f.ringcx = f.client("ringcx-page-token", "ringcx-secret")
	f.bot = f.client("bot-page-token", "bot-secret")
	return f
}

func (f *simFixture) client(token, secret string) *messenger.Client {
	return &messenger.Client{BaseURL: f.url, Version: "v19.0", Timeout: 2 * time.Second, Backoff: 5 * time.Millisecond,
		Credentials: func(page string) (messenger.Credentials, bool) {
			return messenger.Credentials{AccessToken: token, AppSecret: secret}, page == pageID
		}}
}

// attempts counts the simulator's log entries for a call.
func (f *simFixture) attempts(call string) int {
	n := 0
	for _, e := range f.sim.Log(pageID, "") {
		if e.Kind == "graph_call" && e.Call == call {
			n++
		}
	}
	return n
}

func TestClientAgainstSimulator(t *testing.T) {
	f := newSim(t)
	if _, err := f.sim.CustomerMessage(pageID, psid, "hi"); err != nil {
		t.Fatal(err)
	}
	// The bot primary owns the thread.
	owner, exp, err := f.ringcx.ThreadOwner(ctx, pageID, psid)
	if err != nil || owner != botID || exp.IsZero() {
		t.Fatalf("ThreadOwner = %q, %v, %v; want the bot with an expiry", owner, exp, err)
	}
	// RingCX may not pass a thread it does not own: Meta's error, typed.
	err = f.ringcx.PassThreadControl(ctx, pageID, psid, botID, "")
	var me *messenger.Error
	if !errors.As(err, &me) || me.HTTPStatus != 400 || me.Code != 100 || me.Subcode != 2534037 || me.FBTraceID == "" || !messenger.IsNotThreadOwner(err) {
		t.Fatalf("pass by a non-owner = %#v (%v), want 400 100/2534037 with fbtrace_id", me, err)
	}
	if _, err := f.ringcx.SendText(ctx, pageID, psid, "hello"); !errors.As(err, &me) || me.Code != 10 || me.Subcode != 2018300 || !messenger.IsNotThreadOwner(err) {
		t.Fatalf("send by a non-owner = %v, want 10/2018300", err)
	}
	if err := f.ringcx.RequestThreadControl(ctx, pageID, psid, "an agent"); err != nil {
		t.Fatalf("RequestThreadControl: %v", err)
	}
	if err := f.bot.PassThreadControl(ctx, pageID, psid, ringcxID, `{"why":"agent"}`); err != nil {
		t.Fatalf("bot PassThreadControl: %v", err)
	}
	if got := f.sim.Thread(pageID, psid).OwnerAppID; got != ringcxID {
		t.Fatalf("owner after pass = %q, want RingCX", got)
	}
	mid, err := f.ringcx.SendText(ctx, pageID, psid, "Hello, this is Ann — ça va?")
	if err != nil || mid == "" {
		t.Fatalf("SendText = %q, %v", mid, err)
	}
	msgs := f.sim.Thread(pageID, psid).Messages
	if last := msgs[len(msgs)-1]; last.From != ringcxID || last.Text != "Hello, this is Ann — ça va?" {
		t.Errorf("customer got %+v", last)
	}
	if err := f.ringcx.ExtendThreadControl(ctx, pageID, psid, 48*time.Hour); err != nil {
		t.Fatalf("ExtendThreadControl: %v", err)
	}
	if err := f.ringcx.ReleaseThreadControl(ctx, pageID, psid); err != nil {
		t.Fatalf("ReleaseThreadControl: %v", err)
	}
	if owner, exp, err := f.ringcx.ThreadOwner(ctx, pageID, psid); err != nil || owner != "" || !exp.IsZero() {
		t.Fatalf("ThreadOwner after release = %q, %v, %v; want idle", owner, exp, err)
	}
	if err := f.ringcx.TakeThreadControl(ctx, pageID, psid, "take the idle thread"); err != nil {
		t.Fatalf("TakeThreadControl on idle: %v", err)
	}
	if apps, err := f.bot.SecondaryReceivers(ctx, pageID); err != nil || len(apps) == 0 {
		t.Fatalf("SecondaryReceivers = %v, %v", apps, err)
	}
	if err := f.ringcx.ExtendThreadControl(ctx, pageID, psid, 8*24*time.Hour); !errors.As(err, &me) || me.Code != 100 {
		t.Errorf("extend beyond 7 days = %v, want code 100", err)
	}
}

func TestClientRetries(t *testing.T) {
	tests := []struct {
		name         string
		fault        sim.Fault
		wantErr      bool
		wantAttempts int
	}{
		{"5xx twice, then success", sim.Fault{Call: "request_thread_control", Status: 500, Count: 2}, false, 3},
		{"5xx beyond the retries", sim.Fault{Call: "request_thread_control", Status: 503, Count: 5}, true, 3},
		{"rate limited once", sim.Fault{Call: "request_thread_control", Status: 400, Code: 613, Count: 1}, false, 2},
		{"other 4xx never retried", sim.Fault{Call: "request_thread_control", Status: 400, Code: 100, Message: "(#100) Invalid parameter", Count: 1}, true, 1},
		{"timeout is retried", sim.Fault{Call: "request_thread_control", DelayMS: 400, Count: 1}, false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSim(t)
			f.sim.CustomerMessage(pageID, psid, "hi")
			f.sim.SetFault(tt.fault)
			c := f.ringcx
			c.Timeout = 200 * time.Millisecond
			var observed []string
			c.Observe = func(call, outcome string, d time.Duration) { observed = append(observed, call+":"+outcome) }
			err := c.RequestThreadControl(ctx, pageID, psid, "")
			if (err != nil) != tt.wantErr {
				t.Fatalf("RequestThreadControl error = %v, wantErr %v", err, tt.wantErr)
			}
			// A timed-out attempt still reaches the simulator's log when its
			// delay ends: wait for every call the simulator holds.
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := f.sim.Settle(sctx); err != nil {
				t.Fatal(err)
			}
			if got := f.attempts("request_thread_control"); got != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tt.wantAttempts)
			}
			if len(observed) != 1 {
				t.Errorf("Observe called %d times (%v), want once per call", len(observed), observed)
			}
		})
	}
}

// TestClientUnansweredThenRefused: when an attempt got no answer (Meta may
// have applied it) and Meta refuses the retry, the call's outcome is
// unknown: an UnansweredError, which still unwraps to Meta's answer. A
// refusal of a first attempt is Meta's answer alone.
func TestClientUnansweredThenRefused(t *testing.T) {
	refusal := sim.Fault{Call: "request_thread_control", Status: 400, Code: 100, Message: "(#100) You cannot request thread control: your app is already the thread owner", Count: 1}
	for _, reset := range []bool{true, false} {
		f := newSim(t)
		f.sim.CustomerMessage(pageID, psid, "hi")
		if reset {
			f.sim.SetFault(sim.Fault{Call: "request_thread_control", Reset: true, Count: 1})
		}
		f.sim.SetFault(refusal)
		err := f.ringcx.RequestThreadControl(ctx, pageID, psid, "")
		var me *messenger.Error
		if !errors.As(err, &me) || me.Code != 100 {
			t.Fatalf("reset %v: error %v, want Meta's code 100 within", reset, err)
		}
		var ue *messenger.UnansweredError
		if got := errors.As(err, &ue); got != reset {
			t.Errorf("reset %v: an UnansweredError = %v (%v), want %v", reset, got, err, reset)
		}
	}
}

func TestClientRefusesUnknownPage(t *testing.T) {
	f := newSim(t)
	err := f.ringcx.TakeThreadControl(ctx, "999", psid, "")
	if err == nil || !strings.Contains(err.Error(), "no page access token") {
		t.Errorf("TakeThreadControl on an unknown page = %v", err)
	}
}

func TestClientAcceptsDocumentedAnswers(t *testing.T) {
	answers := map[string]string{
		"/v19.0/1/take_thread_control": `{"data":[{"thread_owner":{"app_id":976665718578167,"expiration":1764000000}}]}`,
		"/v19.0/1/thread_owner":        `{"data":[{"thread_owner":{"app_id":"12345678910"}}]}`,
		"/v19.0/1/pass_thread_control": `{"success":"true"}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("access_token") != "tok" || r.URL.Query().Get("appsecret_proof") != messenger.AppSecretProof("tok", "sec") {
			http.Error(w, `{"error":{"message":"bad token","code":190}}`, 400)
			return
		}
		body, ok := answers[r.URL.Path]
		if !ok {
			http.Error(w, `<html>gateway exploded</html>`, http.StatusBadGateway)
			return
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	c := &messenger.Client{BaseURL: srv.URL, MaxRetries: -1, Credentials: func(string) (messenger.Credentials, bool) {
		return messenger.Credentials{AccessToken: "tok", AppSecret: "sec"}, true
	}}
	if err := c.TakeThreadControl(ctx, "1", "2", ""); err != nil {
		t.Errorf("take with the thread_owner answer: %v", err)
	}
	if owner, exp, err := c.ThreadOwner(ctx, "1", "2"); err != nil || owner != "12345678910" || !exp.IsZero() {
		t.Errorf("v1 thread_owner = %q, %v, %v", owner, exp, err)
	}
	if err := c.PassThreadControl(ctx, "1", "2", "3", ""); err != nil {
		t.Errorf(`pass answered {"success":"true"}: %v`, err)
	}
	err := c.ReleaseThreadControl(ctx, "1", "2")
	var me *messenger.Error
	if !errors.As(err, &me) || me.HTTPStatus != http.StatusBadGateway || !strings.Contains(me.Message, "gateway exploded") {
		t.Errorf("non-JSON error = %v, want the raw text kept", err)
	}
	if strings.Contains(err.Error(), "tok") {
		t.Errorf("error leaks the token: %v", err)
	}
}

func TestClientNetworkErrorHidesToken(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	c := &messenger.Client{BaseURL: url, MaxRetries: 1, Backoff: time.Millisecond, Credentials: func(string) (messenger.Credentials, bool) {
		return messenger.Credentials{AccessToken: "secret-token"}, true
	}}
	err := c.ReleaseThreadControl(ctx, "1", "2")
	if err == nil {
		t.Fatal("call to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Errorf("error leaks the token: %v", err)
	}
	if got := messenger.Outcome(err); got != "network_error" {
		t.Errorf("Outcome = %q, want network_error", got)
	}
}

func TestClientRateLimitedError(t *testing.T) {
	f := newSim(t)
	f.sim.CustomerMessage(pageID, psid, "hi")
	f.sim.SetFault(sim.Fault{Call: "request_thread_control", Status: 400, Code: 613, Count: 5})
	err := f.ringcx.RequestThreadControl(ctx, pageID, psid, "")
	if !messenger.IsRateLimited(err) || messenger.IsNotThreadOwner(err) || messenger.Outcome(err) != "rate_limited" {
		t.Errorf("after the retries: %v (rate limited %v, outcome %q), want Meta's 613", err, messenger.IsRateLimited(err), messenger.Outcome(err))
	}
	if got := f.attempts("request_thread_control"); got != 3 {
		t.Errorf("attempts = %d, want 3 (retried twice)", got)
	}
}

func TestFeatureStatus(t *testing.T) {
	for _, tc := range []struct {
		mode, primary   string
		hopV2, multiApp bool
	}{
		{"hop_v2", botID, true, false},
		{"cr", botID, false, true},
		{"cr_zero", "", false, true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			f := newSim(t)
			err := f.sim.PutPage(sim.PageConfig{PageID: pageID, Mode: tc.mode, PrimaryAppID: tc.primary, Apps: []sim.AppConfig{
				{AppID: ringcxID, Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret"},
				{AppID: botID, Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret"},
			}})
			if err != nil {
				t.Fatal(err)
			}
			hop, multi, err := f.ringcx.FeatureStatus(ctx, pageID)
			if err != nil || hop != tc.hopV2 || multi != tc.multiApp {
				t.Errorf("FeatureStatus = %v, %v, %v; want %v, %v", hop, multi, err, tc.hopV2, tc.multiApp)
			}
		})
	}
}
