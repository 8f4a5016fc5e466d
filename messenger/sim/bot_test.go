package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func botApp(id string, bot BotConfig) AppConfig {
	a := app(id, "")
	a.Bot = &bot
	return a
}

func texts(msgs []ThreadMessage) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.From+": "+m.Text)
	}
	return out
}

// TestBotHonorsRequests runs the SPEC's demo shape: the bot is primary, owns the thread after
// the first customer message and echoes; RingCX (O) requests control and the bot passes it
// after its delay, without holding up RingCX's request.
func TestBotHonorsRequests(t *testing.T) {
	const delay = 150 * time.Millisecond
	s := newSim(t, Options{})
	ringcx := newCollector(t)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{
		botApp(idP, BotConfig{HonorRequests: true, PassDelayMS: int(delay / time.Millisecond), Reply: "echo"}),
		app(idO, ringcx.URL("/")),
	}})
	if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
		t.Fatal(err)
	}
	settle(t, s)
	if got, want := texts(s.Thread(testPage, "42").Messages), []string{"customer: hi", idP + ": echo: hi"}; !slices.Equal(got, want) {
		t.Fatalf("thread = %q, want %q", got, want)
	}

	start := time.Now()
	status, body := call(t, s.Handler(), http.MethodPost, "/v19.0/me/request_thread_control", token(idO), map[string]any{"recipient": map[string]any{"id": "42"}, "metadata": "agent"})
	if took := time.Since(start); status != http.StatusOK || took > delay/2 {
		t.Fatalf("request_thread_control = %d %v after %v; want 200 without waiting for the bot", status, body, took)
	}
	if got := s.Thread(testPage, "42").OwnerAppID; got != idP {
		t.Errorf("owner right after the request = %s, want the bot %s (request is not a grant)", got, idP)
	}
	settle(t, s)
	if got := s.Thread(testPage, "42").OwnerAppID; got != idO {
		t.Fatalf("owner = %s, want %s", got, idO)
	}

	var requestAt, passAt time.Time
	var steps []string
	for _, e := range s.Log(testPage, "42") {
		switch {
		case e.Kind == KindGraphCall && e.Call == "request_thread_control":
			requestAt = e.Time
			steps = append(steps, "O calls request")
		case e.Kind == KindWebhook && e.Event == evRequest:
			steps = append(steps, idToLetter(e.RecipientAppID)+" gets request via "+e.Via)
		case e.Kind == KindGraphCall && e.Call == "pass_thread_control":
			passAt = e.Time
			steps = append(steps, idToLetter(e.CallerAppID)+" calls pass via "+e.Via+" to "+idToLetter(e.TargetAppID)+" "+e.Outcome)
		case e.Kind == KindWebhook && e.Event == evPass:
			steps = append(steps, idToLetter(e.RecipientAppID)+" gets pass "+e.Outcome)
		}
	}
	want := []string{"O calls request", "P gets request via bot", "P calls pass via bot to O ok", "O gets pass delivered"}
	if !slices.Equal(steps, want) {
		t.Errorf("log steps = %q, want %q", steps, want)
	}
	if gap := passAt.Sub(requestAt); gap < delay {
		t.Errorf("the bot passed %v after the request, want at least %v", gap, delay)
	}
	var pass envelope
	for _, h := range ringcx.Hits() {
		if env := decodeEnvelope(t, h.body); len(env.Entry[0].Messaging) == 1 && env.Entry[0].Messaging[0]["pass_thread_control"] != nil {
			pass = env
		}
	}
	if len(pass.Entry) == 0 {
		t.Fatal("RingCX got no pass_thread_control webhook")
	}
	ptc := pass.Entry[0].Messaging[0]["pass_thread_control"].(map[string]any)
	if ptc["previous_owner_app_id"].(json.Number).String() != idP || ptc["new_owner_app_id"].(json.Number).String() != idO {
		t.Errorf("pass_thread_control = %v, want from %s to %s", ptc, idP, idO)
	}
}

// TestBotClaimsIdle: on a page with no app to route to, the bot claims the idle thread with
// request_thread_control, then replies.
func TestBotClaimsIdle(t *testing.T) {
	for _, mode := range []string{ModeHOPv2, ModeCRZero} {
		t.Run(mode, func(t *testing.T) {
			s := newSim(t, Options{})
			ringcx := newCollector(t)
			mustPut(t, s, PageConfig{Mode: mode, Apps: []AppConfig{
				botApp(idP, BotConfig{Reply: "echo"}),
				app(idO, ringcx.URL("/")),
			}})
			if _, err := s.CustomerMessage(testPage, "42", "hello"); err != nil {
				t.Fatal(err)
			}
			settle(t, s)
			view := s.Thread(testPage, "42")
			if view.OwnerAppID != idP {
				t.Errorf("owner = %q, want the bot %s", view.OwnerAppID, idP)
			}
			if got, want := texts(view.Messages), []string{"customer: hello", idP + ": echo: hello"}; !slices.Equal(got, want) {
				t.Errorf("thread = %q, want %q", got, want)
			}
			var botCalls []string
			for _, e := range s.Log(testPage, "42") {
				if e.Kind == KindGraphCall {
					if e.Via != viaBot || e.CallerAppID != idP {
						t.Errorf("call %s by %s via %q, want the bot's", e.Call, e.CallerAppID, e.Via)
					}
					botCalls = append(botCalls, e.Call+" "+e.Outcome)
				}
			}
			if want := []string{"request_thread_control ok", "messages ok"}; !slices.Equal(botCalls, want) {
				t.Errorf("bot calls = %q, want %q", botCalls, want)
			}
			got := deliveredHooks(s)
			slices.Sort(got)
			want := []string{"O messaging message", "P messaging message", "P messaging pass_thread_control"}
			if !slices.Equal(got, want) {
				t.Errorf("deliveries = %q, want %q", got, want)
			}
		})
	}
}

// TestBotOptions checks each switch of the reference bot.
func TestBotOptions(t *testing.T) {
	off := false
	tests := []struct {
		name      string
		primary   string
		bot       BotConfig
		owner     string // before the customer message ("-": no customer message)
		request   bool   // O requests control after the customer message
		takeByT   bool   // T (primary) takes control while the bot waits
		wantOwner string
		wantTexts []string
	}{
		{name: "does not honour requests", primary: idP, bot: BotConfig{Reply: "echo"}, request: true,
			wantOwner: idP, wantTexts: []string{"customer: hi", idP + ": echo: hi"}},
		{name: "silent bot", primary: idP, bot: BotConfig{HonorRequests: true}, request: true,
			wantOwner: idO, wantTexts: []string{"customer: hi"}},
		{name: "does not claim idle threads", bot: BotConfig{Reply: "echo", ClaimIdle: &off},
			wantOwner: "", wantTexts: []string{"customer: hi"}},
		{name: "ignores standby messages", primary: idO, bot: BotConfig{Reply: "echo"},
			wantOwner: idO, wantTexts: []string{"customer: hi"}},
		{name: "passes only while it owns the thread", primary: idT, owner: idP, bot: BotConfig{HonorRequests: true, PassDelayMS: 100}, request: true, takeByT: true,
			wantOwner: idT, wantTexts: []string{"customer: hi"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			hook := newCollector(t)
			mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: tc.primary, Apps: []AppConfig{
				botApp(idP, tc.bot), app(idO, hook.URL("/o")), app(idT, hook.URL("/t")),
			}})
			if tc.owner != "" {
				setOwnerForTest(s, testPage, "42", tc.owner)
			}
			if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
				t.Fatal(err)
			}
			settle(t, s)
			h := s.Handler()
			rcpt := map[string]any{"recipient": map[string]any{"id": "42"}}
			if tc.request {
				if status, body := call(t, h, http.MethodPost, "/me/request_thread_control", token(idO), rcpt); status != 200 {
					t.Fatalf("request: %d %v", status, body)
				}
			}
			if tc.takeByT {
				if status, body := call(t, h, http.MethodPost, "/me/take_thread_control", token(idT), rcpt); status != 200 {
					t.Fatalf("take: %d %v", status, body)
				}
			}
			settle(t, s)
			view := s.Thread(testPage, "42")
			if view.OwnerAppID != tc.wantOwner {
				t.Errorf("owner = %q, want %q", view.OwnerAppID, tc.wantOwner)
			}
			if got := texts(view.Messages); !slices.Equal(got, tc.wantTexts) {
				t.Errorf("thread = %q, want %q", got, tc.wantTexts)
			}
		})
	}
}

// TestBotEventsFollowFields: a bot not subscribed to messaging_handovers never hears of a
// request, so it cannot honour it.
func TestBotEventsFollowFields(t *testing.T) {
	s := newSim(t, Options{})
	bot := botApp(idP, BotConfig{HonorRequests: true})
	bot.Fields = []string{FieldMessages}
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{bot, app(idO, "")}})
	setOwnerForTest(s, testPage, "42", idP)
	call(t, s.Handler(), http.MethodPost, "/me/request_thread_control", token(idO), map[string]any{"recipient": map[string]any{"id": "42"}})
	settle(t, s)
	if got := s.Thread(testPage, "42").OwnerAppID; got != idP {
		t.Errorf("owner = %s, want the bot %s", got, idP)
	}
	if got := deliveredHooks(s); len(got) != 0 {
		t.Errorf("deliveries = %q, want none", got)
	}
}

// TestBotHandsOver: a bot with handover_text passes the thread it owns to handover_app_id by
// itself when a customer asks, with pass_thread_control or with the Send API's
// thread_control (Conversation Routing only; elsewhere it falls back to pass_thread_control).
func TestBotHandsOver(t *testing.T) {
	tests := []struct {
		name      string
		mode      string
		via       string
		owner     string // before the customer messages; "" idle
		wantCalls []string
		wantOwner string
		wantTexts []string
		wantPass  bool // RingCX receives pass_thread_control from the bot
	}{
		{name: "hop_v2 pass (default)", mode: ModeHOPv2, via: "", wantOwner: idO, wantPass: true,
			wantCalls: []string{"messages ok", "pass_thread_control ok"},
			wantTexts: []string{"customer: hi", idP + ": echo: hi", "customer: I want an agent now"}},
		{name: "cr pass", mode: ModeCR, via: HandoverViaPass, wantOwner: idO, wantPass: true,
			wantCalls: []string{"messages ok", "pass_thread_control ok"},
			wantTexts: []string{"customer: hi", idP + ": echo: hi", "customer: I want an agent now"}},
		{name: "cr send_api", mode: ModeCR, via: HandoverViaSendAPI, wantOwner: idO, wantPass: true,
			wantCalls: []string{"messages ok", "messages ok thread_control pass"},
			wantTexts: []string{"customer: hi", idP + ": echo: hi", "customer: I want an agent now", idP + ": Transferring you to an agent"}},
		{name: "cr_zero send_api after claiming the idle thread", mode: ModeCRZero, via: HandoverViaSendAPI, wantOwner: idO, wantPass: true,
			wantCalls: []string{"request_thread_control ok", "messages ok", "messages ok thread_control pass"},
			wantTexts: []string{"customer: hi", idP + ": echo: hi", "customer: I want an agent now", idP + ": Transferring you to an agent"}},
		{name: "hop_v2 send_api falls back to pass", mode: ModeHOPv2, via: HandoverViaSendAPI, wantOwner: idO, wantPass: true,
			wantCalls: []string{"messages ok", "pass_thread_control ok"},
			wantTexts: []string{"customer: hi", idP + ": echo: hi", "customer: I want an agent now"}},
		{name: "not the owner: nothing", mode: ModeCR, via: HandoverViaSendAPI, owner: idT, wantOwner: idT,
			wantTexts: []string{"customer: hi", "customer: I want an agent now"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Options{})
			ringcx := newCollector(t)
			cfg := PageConfig{Mode: tc.mode, Apps: []AppConfig{
				botApp(idP, BotConfig{Reply: "echo", HandoverText: "agent", HandoverAppID: idO, HandoverVia: tc.via}),
				app(idO, ringcx.URL("/")),
				app(idT, ""),
			}}
			if tc.mode != ModeCRZero {
				cfg.PrimaryAppID = idP
			}
			mustPut(t, s, cfg)
			wantVia := tc.via
			if wantVia == "" {
				wantVia = HandoverViaPass
			}
			if stored, _ := s.pageConfig(testPage); stored.Apps[0].Bot.HandoverVia != wantVia {
				t.Errorf("stored handover_via = %q, want %q", stored.Apps[0].Bot.HandoverVia, wantVia)
			}
			if tc.owner != "" {
				setOwnerForTest(s, testPage, "42", tc.owner)
			}
			for _, text := range []string{"hi", "I want an agent now"} {
				if _, err := s.CustomerMessage(testPage, "42", text); err != nil {
					t.Fatal(err)
				}
				settle(t, s)
			}
			view := s.Thread(testPage, "42")
			if view.OwnerAppID != tc.wantOwner {
				t.Errorf("owner = %q, want %q", view.OwnerAppID, tc.wantOwner)
			}
			if got := texts(view.Messages); !slices.Equal(got, tc.wantTexts) {
				t.Errorf("thread = %q, want %q", got, tc.wantTexts)
			}
			var calls []string
			for _, e := range s.Log(testPage, "42") {
				if e.Kind != KindGraphCall {
					continue
				}
				if e.Via != viaBot || e.CallerAppID != idP {
					t.Errorf("call %s by %s via %q, want only the bot's", e.Call, e.CallerAppID, e.Via)
				}
				c := e.Call + " " + e.Outcome
				if e.Detail != "" {
					c += " " + e.Detail
				}
				if (e.Call == "pass_thread_control" || strings.Contains(e.Detail, "pass")) && e.TargetAppID != idO {
					t.Errorf("handover call %s targets %q, want %s", e.Call, e.TargetAppID, idO)
				}
				calls = append(calls, c)
			}
			if !slices.Equal(calls, tc.wantCalls) {
				t.Errorf("bot calls = %q, want %q", calls, tc.wantCalls)
			}
			var passes []map[string]any
			for _, h := range ringcx.Hits() {
				for _, e := range decodeEnvelope(t, h.body).Entry {
					for _, ev := range e.Messaging {
						if p, ok := ev["pass_thread_control"].(map[string]any); ok {
							passes = append(passes, p)
						}
					}
				}
			}
			if !tc.wantPass {
				if len(passes) != 0 {
					t.Errorf("RingCX got pass_thread_control %v, want none", passes)
				}
				return
			}
			if len(passes) != 1 || fmt.Sprint(passes[0]["previous_owner_app_id"]) != idP || fmt.Sprint(passes[0]["new_owner_app_id"]) != idO {
				t.Errorf("RingCX got pass_thread_control %v, want one from the bot %s to %s", passes, idP, idO)
			}
		})
	}
}
