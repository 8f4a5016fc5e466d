package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Conversation Routing rules (reference §4, §5.3, §7, §12), one test per rule, over real HTTP.
// The page: P is the default app (cr only), O is a RingCX-like app with a webhook callback,
// T is a bot app (a reference bot that does nothing by itself, so that only the test acts).

// crFixture is a cr or cr_zero page served over HTTP, on a fake clock that starts at t0.
type crFixture struct {
	s     *Sim
	srv   *httptest.Server
	clock *fakeClock
	hook  *collector
}

// newCRFixture sets up the page; takeover gives the takeover_allowed setting of some apps
// (by letter); the others keep the default.
func newCRFixture(t *testing.T, mode string, takeover map[string]bool) *crFixture {
	t.Helper()
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	hook := newCollector(t)
	off := false
	cfg := PageConfig{Mode: mode, Apps: []AppConfig{
		app(idP, hook.URL("/p")),
		app(idO, hook.URL("/o")),
		botApp(idT, BotConfig{ClaimIdle: &off}),
	}}
	if mode != ModeCRZero {
		cfg.PrimaryAppID = idP
	}
	for i := range cfg.Apps {
		if v, ok := takeover[idToLetter(cfg.Apps[i].AppID)]; ok {
			cfg.Apps[i].TakeoverAllowed = &v
		}
	}
	mustPut(t, s, cfg)
	return &crFixture{s: s, srv: serve(t, s), clock: clock, hook: hook}
}

// do makes a Graph call on thread psid by the app with letter caller and returns "ok" or
// Meta's "code/subcode", and the raw answer. It checks the HTTP status that goes with it.
func (f *crFixture) do(t *testing.T, caller, edge, psid string, args map[string]any) (string, []byte) {
	t.Helper()
	all := map[string]any{"recipient": map[string]any{"id": psid}}
	method := http.MethodPost
	if edge == "thread_owner" {
		method, all = http.MethodGet, map[string]any{"recipient": psid}
	}
	for k, v := range args {
		all[k] = v
	}
	status, body, raw := httpCall(t, f.srv, method, "/v19.0/me/"+edge, token(letterToID[caller]), all)
	got := errorCode(body)
	if got == "" {
		got = "ok"
	}
	if want := map[bool]int{true: 200, false: 400}[got == "ok"]; status != want {
		t.Errorf("%s by %s: HTTP %d for %s, want %d", edge, caller, status, got, want)
	}
	return got, raw
}

// owner returns the letter of the thread's owner ("" when idle).
func (f *crFixture) owner(psid string) string {
	return idToLetter(f.s.Thread(testPage, psid).OwnerAppID)
}

// hooks returns the webhooks delivered so far, after letting deliveries finish.
func (f *crFixture) hooks(t *testing.T) []string {
	t.Helper()
	settle(t, f.s)
	return deliveredHooks(f.s)
}

const (
	crNotOwner    = "100/2534037"
	crSendBlocked = "10/2018300"
	crPerm        = "200"
	crParam       = "100"
)

// TestCRTakeNeedsTakeoverSetting: in cr, take_thread_control works only for an app whose
// takeover setting is on (the default app's is on unless set off, the others' off unless set
// on), for the RingCX-like app and for a bot app alike. The previous owner, if any, gets
// take_thread_control, and a fresh 24 h window starts.
func TestCRTakeNeedsTakeoverSetting(t *testing.T) {
	on, off := true, false
	tests := []struct {
		name      string
		caller    string
		takeover  *bool // the caller's setting; nil: the default
		owner     string
		want      string
		wantHooks []string
	}{
		{name: "RingCX on, bot owns", caller: "O", takeover: &on, owner: "T", want: "ok", wantHooks: []string{"T messaging take_thread_control"}},
		{name: "RingCX on, default app owns", caller: "O", takeover: &on, owner: "P", want: "ok", wantHooks: []string{"P messaging take_thread_control"}},
		{name: "RingCX on, idle", caller: "O", takeover: &on, owner: "", want: "ok"},
		{name: "RingCX off, bot owns", caller: "O", takeover: &off, owner: "T", want: crPerm},
		{name: "RingCX off, idle", caller: "O", takeover: &off, owner: "", want: crPerm},
		{name: "RingCX unset is off", caller: "O", owner: "T", want: crPerm},
		{name: "bot on, RingCX owns", caller: "T", takeover: &on, owner: "O", want: "ok", wantHooks: []string{"O messaging take_thread_control"}},
		{name: "bot on, idle", caller: "T", takeover: &on, owner: "", want: "ok"},
		{name: "bot off, RingCX owns", caller: "T", takeover: &off, owner: "O", want: crPerm},
		{name: "bot unset is off", caller: "T", owner: "O", want: crPerm},
		{name: "default app unset is on", caller: "P", owner: "O", want: "ok", wantHooks: []string{"O messaging take_thread_control"}},
		{name: "default app off", caller: "P", takeover: &off, owner: "O", want: crPerm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			settings := map[string]bool{}
			if tc.takeover != nil {
				settings[tc.caller] = *tc.takeover
			}
			f := newCRFixture(t, ModeCR, settings)
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			f.clock.Advance(time.Hour)
			before := f.s.Thread(testPage, "42")
			got, raw := f.do(t, tc.caller, "take_thread_control", "42", map[string]any{"metadata": "m"})
			if got != tc.want {
				t.Fatalf("take = %s (%s), want %s", got, raw, tc.want)
			}
			view := f.s.Thread(testPage, "42")
			if tc.want == "ok" {
				if letter := idToLetter(view.OwnerAppID); letter != tc.caller {
					t.Errorf("owner = %q, want the taker %s", letter, tc.caller)
				}
				if want := f.clock.Now().Add(24 * time.Hour); !view.ExpiresAt.Equal(want) {
					t.Errorf("expires at %v, want %v (a fresh window)", view.ExpiresAt, want)
				}
			} else if view.OwnerAppID != before.OwnerAppID || !view.ExpiresAt.Equal(before.ExpiresAt) {
				t.Errorf("a refused take changed the thread: %+v, was %+v", view, before)
			}
			if got := f.hooks(t); !slices.Equal(got, tc.wantHooks) {
				t.Errorf("webhooks = %q, want %q", got, tc.wantHooks)
			}
		})
	}
}

// TestCRTakeByOwnerRefused: in cr the owner cannot take the thread it already owns, even
// with its takeover setting on ("You cannot invoke this API to extend thread control"); the
// window is not restarted.
func TestCRTakeByOwnerRefused(t *testing.T) {
	for _, owner := range []string{"O", "T", "P"} {
		t.Run(owner, func(t *testing.T) {
			f := newCRFixture(t, ModeCR, map[string]bool{"O": true, "T": true, "P": true})
			setOwnerForTest(f.s, testPage, "42", letterToID[owner])
			f.clock.Advance(time.Hour)
			if got, raw := f.do(t, owner, "take_thread_control", "42", nil); got != crParam {
				t.Fatalf("take by the owner = %s (%s), want %s", got, raw, crParam)
			}
			view := f.s.Thread(testPage, "42")
			if idToLetter(view.OwnerAppID) != owner || !view.ExpiresAt.Equal(t0.Add(24*time.Hour)) {
				t.Errorf("thread = owner %s expiring %v, want %s expiring %v", view.OwnerAppID, view.ExpiresAt, owner, t0.Add(24*time.Hour))
			}
			if got := f.hooks(t); len(got) != 0 {
				t.Errorf("webhooks = %q, want none", got)
			}
		})
	}
}

// TestCRRequestRefused: request_thread_control is refused on a page with a default app,
// whoever calls and whatever the thread's state, and changes nothing.
func TestCRRequestRefused(t *testing.T) {
	tests := []struct {
		caller, owner string
	}{
		{caller: "O", owner: ""},
		{caller: "O", owner: "T"},
		{caller: "T", owner: "O"},
		{caller: "T", owner: "P"},
		{caller: "P", owner: "O"},
		{caller: "P", owner: ""},
		{caller: "O", owner: "O"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s asks, owner %q", tc.caller, tc.owner), func(t *testing.T) {
			f := newCRFixture(t, ModeCR, map[string]bool{"O": true, "T": true})
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			if got, raw := f.do(t, tc.caller, "request_thread_control", "42", nil); got != crPerm {
				t.Fatalf("request = %s (%s), want %s", got, raw, crPerm)
			}
			if got := f.owner("42"); got != tc.owner {
				t.Errorf("owner = %q, want %q", got, tc.owner)
			}
			if got := f.hooks(t); len(got) != 0 {
				t.Errorf("webhooks = %q, want none", got)
			}
		})
	}
}

// TestCRZeroTakeBlocked: without a default app take_thread_control is blocked for every app,
// even one whose takeover setting is on.
func TestCRZeroTakeBlocked(t *testing.T) {
	tests := []struct {
		caller, owner string
	}{
		{caller: "O", owner: ""},
		{caller: "O", owner: "T"},
		{caller: "T", owner: "O"},
		{caller: "T", owner: "T"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s takes, owner %q", tc.caller, tc.owner), func(t *testing.T) {
			f := newCRFixture(t, ModeCRZero, map[string]bool{"O": true, "T": true})
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			if got, raw := f.do(t, tc.caller, "take_thread_control", "42", nil); got != crPerm {
				t.Fatalf("take = %s (%s), want %s", got, raw, crPerm)
			}
			if got := f.owner("42"); got != tc.owner {
				t.Errorf("owner = %q, want %q", got, tc.owner)
			}
			if got := f.hooks(t); len(got) != 0 {
				t.Errorf("webhooks = %q, want none", got)
			}
		})
	}
}

// TestCRZeroRequest: without a default app, request_thread_control on an idle thread grants
// control to the caller (pass_thread_control to it), on an owned thread sends the owner
// request_thread_control and changes nothing, and is refused to the owner.
func TestCRZeroRequest(t *testing.T) {
	tests := []struct {
		name      string
		caller    string
		owner     string
		want      string
		wantOwner string
		wantHooks []string
	}{
		{name: "idle grants RingCX", caller: "O", owner: "", want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{name: "idle grants the bot", caller: "T", owner: "", want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "owned by the bot asks the bot", caller: "O", owner: "T", want: "ok", wantOwner: "T", wantHooks: []string{"T messaging request_thread_control"}},
		{name: "owned by RingCX asks RingCX", caller: "T", owner: "O", want: "ok", wantOwner: "O", wantHooks: []string{"O messaging request_thread_control"}},
		{name: "by the owner", caller: "O", owner: "O", want: crParam, wantOwner: "O"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newCRFixture(t, ModeCRZero, nil)
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			if got, raw := f.do(t, tc.caller, "request_thread_control", "42", nil); got != tc.want {
				t.Fatalf("request = %s (%s), want %s", got, raw, tc.want)
			}
			if got := f.owner("42"); got != tc.wantOwner {
				t.Errorf("owner = %q, want %q", got, tc.wantOwner)
			}
			if got := f.hooks(t); !slices.Equal(got, tc.wantHooks) {
				t.Errorf("webhooks = %q, want %q", got, tc.wantHooks)
			}
		})
	}
}

// TestCRZeroRequestFirstCallerWins: of two apps requesting an idle thread, the first gets
// control (pass_thread_control from idle: previous_owner_app_id null); the second's request
// goes to it.
func TestCRZeroRequestFirstCallerWins(t *testing.T) {
	f := newCRFixture(t, ModeCRZero, nil)
	if got, raw := f.do(t, "O", "request_thread_control", "42", map[string]any{"metadata": "first"}); got != "ok" {
		t.Fatalf("first request = %s (%s)", got, raw)
	}
	if got, raw := f.do(t, "T", "request_thread_control", "42", map[string]any{"metadata": "second"}); got != "ok" {
		t.Fatalf("second request = %s (%s)", got, raw)
	}
	if got := f.owner("42"); got != "O" {
		t.Fatalf("owner = %q, want the first caller O", got)
	}
	settle(t, f.s)
	var events []string
	for _, h := range f.hook.Hits() {
		for _, e := range decodeEnvelope(t, h.body).Entry {
			for _, ev := range e.Messaging {
				b, _ := json.Marshal(map[string]any{
					"pass":    ev["pass_thread_control"],
					"request": ev["request_thread_control"],
				})
				events = append(events, string(b))
			}
		}
	}
	want := []string{
		`{"pass":{"metadata":"first","new_owner_app_id":22,"previous_owner_app_id":null},"request":null}`,
		`{"pass":null,"request":{"metadata":"second","requested_owner_app_id":33}}`,
	}
	if !slices.Equal(events, want) {
		t.Errorf("RingCX received %q, want %q", events, want)
	}
}

// TestCRPassIdle: any app may pass an idle thread, to another app or to itself, in cr and
// cr_zero; the target gets pass_thread_control. Without target_app_id control goes to the
// default app (cr), which cr_zero does not have.
func TestCRPassIdle(t *testing.T) {
	tests := []struct {
		mode      string
		caller    string
		target    string // "-": no target_app_id
		want      string
		wantOwner string
		wantHooks []string
	}{
		{mode: ModeCRZero, caller: "T", target: "O", want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{mode: ModeCRZero, caller: "O", target: "O", want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{mode: ModeCRZero, caller: "T", target: "T", want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{mode: ModeCRZero, caller: "O", target: "-", want: crParam, wantOwner: ""},
		{mode: ModeCR, caller: "O", target: "T", want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{mode: ModeCR, caller: "O", target: "O", want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{mode: ModeCR, caller: "T", target: "-", want: "ok", wantOwner: "P", wantHooks: []string{"P messaging pass_thread_control"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %s to %s", tc.mode, tc.caller, tc.target), func(t *testing.T) {
			f := newCRFixture(t, tc.mode, nil)
			args := map[string]any{}
			if tc.target != "-" {
				args["target_app_id"] = letterToID[tc.target]
			}
			if got, raw := f.do(t, tc.caller, "pass_thread_control", "42", args); got != tc.want {
				t.Fatalf("pass = %s (%s), want %s", got, raw, tc.want)
			}
			if got := f.owner("42"); got != tc.wantOwner {
				t.Errorf("owner = %q, want %q", got, tc.wantOwner)
			}
			if got := f.hooks(t); !slices.Equal(got, tc.wantHooks) {
				t.Errorf("webhooks = %q, want %q", got, tc.wantHooks)
			}
		})
	}
}

// TestCRPassByNonOwnerRefused: on an owned thread only the owner may pass, in cr (the default
// app included) and cr_zero; the owner may not pass to itself.
func TestCRPassByNonOwnerRefused(t *testing.T) {
	tests := []struct {
		mode, caller, target, want string
	}{
		{mode: ModeCR, caller: "T", target: "T", want: crNotOwner},
		{mode: ModeCR, caller: "T", target: "P", want: crNotOwner},
		{mode: ModeCR, caller: "P", target: "P", want: crNotOwner},
		{mode: ModeCR, caller: "P", target: "-", want: crNotOwner},
		{mode: ModeCR, caller: "O", target: "O", want: crParam},
		{mode: ModeCRZero, caller: "T", target: "T", want: crNotOwner},
		{mode: ModeCRZero, caller: "P", target: "T", want: crNotOwner},
		{mode: ModeCRZero, caller: "O", target: "O", want: crParam},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %s to %s", tc.mode, tc.caller, tc.target), func(t *testing.T) {
			f := newCRFixture(t, tc.mode, nil)
			setOwnerForTest(f.s, testPage, "42", idO)
			args := map[string]any{}
			if tc.target != "-" {
				args["target_app_id"] = letterToID[tc.target]
			}
			if got, raw := f.do(t, tc.caller, "pass_thread_control", "42", args); got != tc.want {
				t.Fatalf("pass = %s (%s), want %s", got, raw, tc.want)
			}
			if got := f.owner("42"); got != "O" {
				t.Errorf("owner = %q, want O", got)
			}
			if got := f.hooks(t); len(got) != 0 {
				t.Errorf("webhooks = %q, want none", got)
			}
		})
	}
}

// TestCRSendExclusivity: on an idle thread only the default app may send in cr, every app in
// cr_zero; on an owned thread only the owner. Sending does not claim an idle thread.
func TestCRSendExclusivity(t *testing.T) {
	tests := []struct {
		mode, owner, caller, want string
	}{
		{mode: ModeCR, owner: "", caller: "P", want: "ok"},
		{mode: ModeCR, owner: "", caller: "O", want: crSendBlocked},
		{mode: ModeCR, owner: "", caller: "T", want: crSendBlocked},
		{mode: ModeCR, owner: "O", caller: "O", want: "ok"},
		{mode: ModeCR, owner: "O", caller: "P", want: crSendBlocked},
		{mode: ModeCR, owner: "O", caller: "T", want: crSendBlocked},
		{mode: ModeCRZero, owner: "", caller: "P", want: "ok"},
		{mode: ModeCRZero, owner: "", caller: "O", want: "ok"},
		{mode: ModeCRZero, owner: "", caller: "T", want: "ok"},
		{mode: ModeCRZero, owner: "O", caller: "O", want: "ok"},
		{mode: ModeCRZero, owner: "O", caller: "T", want: crSendBlocked},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s owner %q sender %s", tc.mode, tc.owner, tc.caller), func(t *testing.T) {
			f := newCRFixture(t, tc.mode, nil)
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			got, raw := f.do(t, tc.caller, "messages", "42", map[string]any{"messaging_type": "RESPONSE", "message": map[string]any{"text": "hello"}})
			if got != tc.want {
				t.Fatalf("send = %s (%s), want %s", got, raw, tc.want)
			}
			view := f.s.Thread(testPage, "42")
			if idToLetter(view.OwnerAppID) != tc.owner {
				t.Errorf("owner = %q, want %q (sending claims nothing)", view.OwnerAppID, tc.owner)
			}
			if sent := len(view.Messages) == 1; sent != (tc.want == "ok") {
				t.Errorf("thread messages = %v, want sent = %v", view.Messages, tc.want == "ok")
			}
		})
	}
}

// TestCRSendThreadControl: a Send API message with thread_control passes control (to app_id,
// or to the default app) or releases it (idle, no webhook), in cr and cr_zero only; a
// thread_control that cannot apply refuses the call before the message is sent.
func TestCRSendThreadControl(t *testing.T) {
	tc := func(kind string, appID string) map[string]any {
		m := map[string]any{}
		if kind != "" {
			m["control_type"] = kind
		}
		if appID != "" {
			m["app_id"] = letterToID[appID]
		}
		return m
	}
	tests := []struct {
		name      string
		mode      string
		owner     string
		caller    string
		control   map[string]any
		want      string
		wantOwner string
		wantHooks []string
	}{
		{name: "cr pass to app_id", mode: ModeCR, owner: "O", caller: "O", control: tc("pass", "T"), want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "cr pass to the default app", mode: ModeCR, owner: "O", caller: "O", control: tc("pass", ""), want: "ok", wantOwner: "P", wantHooks: []string{"P messaging pass_thread_control"}},
		{name: "cr pass by the default app on idle", mode: ModeCR, owner: "", caller: "P", control: tc("pass", "O"), want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{name: "cr release", mode: ModeCR, owner: "O", caller: "O", control: tc("release", ""), want: "ok", wantOwner: ""},
		{name: "cr no control_type releases", mode: ModeCR, owner: "O", caller: "O", control: tc("", ""), want: "ok", wantOwner: ""},
		{name: "cr pass to itself", mode: ModeCR, owner: "O", caller: "O", control: tc("pass", "O"), want: crParam, wantOwner: "O"},
		{name: "cr pass to an unknown app", mode: ModeCR, owner: "O", caller: "O", control: map[string]any{"control_type": "pass", "app_id": "999"}, want: crParam, wantOwner: "O"},
		{name: "cr unknown control_type", mode: ModeCR, owner: "O", caller: "O", control: tc("steal", ""), want: crParam, wantOwner: "O"},
		{name: "cr by a non-owner", mode: ModeCR, owner: "O", caller: "T", control: tc("pass", "T"), want: crSendBlocked, wantOwner: "O"},
		{name: "cr_zero pass to app_id", mode: ModeCRZero, owner: "O", caller: "O", control: tc("pass", "T"), want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "cr_zero pass on idle to itself", mode: ModeCRZero, owner: "", caller: "O", control: tc("pass", "O"), want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{name: "cr_zero pass needs app_id", mode: ModeCRZero, owner: "O", caller: "O", control: tc("pass", ""), want: crParam, wantOwner: "O"},
		{name: "cr_zero release", mode: ModeCRZero, owner: "O", caller: "O", control: tc("release", ""), want: "ok", wantOwner: ""},
		{name: "hop_v2 ignores thread_control", mode: ModeHOPv2, owner: "O", caller: "O", control: tc("pass", "T"), want: "ok", wantOwner: "O"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newCRFixture(t, tc.mode, nil)
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			got, raw := f.do(t, tc.caller, "messages", "42", map[string]any{
				"messaging_type": "RESPONSE",
				"message":        map[string]any{"text": "Let me transfer you"},
				"thread_control": tc.control,
			})
			if got != tc.want {
				t.Fatalf("send = %s (%s), want %s", got, raw, tc.want)
			}
			if gotOwner := f.owner("42"); gotOwner != tc.wantOwner {
				t.Errorf("owner = %q, want %q", gotOwner, tc.wantOwner)
			}
			if sent := len(f.s.Thread(testPage, "42").Messages) == 1; sent != (tc.want == "ok") {
				t.Errorf("message sent = %v, want %v", sent, tc.want == "ok")
			}
			if got := f.hooks(t); !slices.Equal(got, tc.wantHooks) {
				t.Errorf("webhooks = %q, want %q", got, tc.wantHooks)
			}
		})
	}
}

// TestCRExtend: only the owner may extend; duration is 1 to 604800 seconds (7 days); the new
// expiry is now + duration, which thread_owner reports.
func TestCRExtend(t *testing.T) {
	tests := []struct {
		mode     string
		owner    string
		caller   string
		duration any
		want     string
	}{
		{mode: ModeCR, owner: "O", caller: "O", duration: 604800, want: "ok"},
		{mode: ModeCR, owner: "O", caller: "O", duration: "86400", want: "ok"},
		{mode: ModeCR, owner: "O", caller: "O", duration: 60, want: "ok"},
		{mode: ModeCR, owner: "O", caller: "O", duration: 604801, want: crParam},
		{mode: ModeCR, owner: "O", caller: "O", duration: 0, want: crParam},
		{mode: ModeCR, owner: "O", caller: "O", duration: "a week", want: crParam},
		{mode: ModeCR, owner: "O", caller: "P", duration: 3600, want: crNotOwner},
		{mode: ModeCR, owner: "O", caller: "T", duration: 3600, want: crNotOwner},
		{mode: ModeCR, owner: "", caller: "P", duration: 3600, want: crNotOwner},
		{mode: ModeCRZero, owner: "T", caller: "T", duration: 604800, want: "ok"},
		{mode: ModeCRZero, owner: "T", caller: "O", duration: 3600, want: crNotOwner},
		{mode: ModeCRZero, owner: "T", caller: "T", duration: 604801, want: crParam},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %s extends %v, owner %q", tc.mode, tc.caller, tc.duration, tc.owner), func(t *testing.T) {
			f := newCRFixture(t, tc.mode, nil)
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			f.clock.Advance(5 * time.Hour)
			before := f.s.Thread(testPage, "42")
			if got, raw := f.do(t, tc.caller, "extend_thread_control", "42", map[string]any{"duration": tc.duration}); got != tc.want {
				t.Fatalf("extend = %s (%s), want %s", got, raw, tc.want)
			}
			view := f.s.Thread(testPage, "42")
			if idToLetter(view.OwnerAppID) != tc.owner {
				t.Errorf("owner = %q, want %q", view.OwnerAppID, tc.owner)
			}
			if tc.want != "ok" {
				if !view.ExpiresAt.Equal(before.ExpiresAt) {
					t.Errorf("a refused extension moved the expiry to %v (was %v)", view.ExpiresAt, before.ExpiresAt)
				}
				return
			}
			d, _ := strconv.Atoi(fmt.Sprint(tc.duration))
			want := f.clock.Now().Add(time.Duration(d) * time.Second)
			if !view.ExpiresAt.Equal(want) {
				t.Errorf("expires at %v, want now + %ds = %v", view.ExpiresAt, d, want)
			}
			_, raw := f.do(t, tc.caller, "thread_owner", "42", nil)
			if wantBody := fmt.Sprintf(`{"data":[{"thread_owner":{"app_id":"%s","expiration":%d}}]}`, letterToID[tc.owner], want.Unix()); string(raw) != wantBody {
				t.Errorf("thread_owner = %s, want %s", raw, wantBody)
			}
			f.clock.Advance(want.Sub(f.clock.Now()) - time.Second)
			if got := f.owner("42"); got != tc.owner {
				t.Errorf("owner a second before the extended expiry = %q, want %q", got, tc.owner)
			}
			f.clock.Advance(time.Second)
			if got := f.owner("42"); got != "" {
				t.Errorf("owner at the extended expiry = %q, want idle", got)
			}
		})
	}
}

// TestCRRelease: only the owner may release; the thread becomes idle with no webhook. In cr
// the next customer message goes to the default app; in cr_zero the thread stays idle.
func TestCRRelease(t *testing.T) {
	tests := []struct {
		mode, owner, caller, want string
		wantNext                  string // owner after the next customer message, when released
	}{
		{mode: ModeCR, owner: "O", caller: "O", want: "ok", wantNext: "P"},
		{mode: ModeCR, owner: "T", caller: "T", want: "ok", wantNext: "P"},
		{mode: ModeCR, owner: "O", caller: "P", want: crNotOwner},
		{mode: ModeCR, owner: "O", caller: "T", want: crNotOwner},
		{mode: ModeCR, owner: "", caller: "P", want: crNotOwner},
		{mode: ModeCRZero, owner: "O", caller: "O", want: "ok", wantNext: ""},
		{mode: ModeCRZero, owner: "O", caller: "T", want: crNotOwner},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %s releases, owner %q", tc.mode, tc.caller, tc.owner), func(t *testing.T) {
			f := newCRFixture(t, tc.mode, nil)
			setOwnerForTest(f.s, testPage, "42", letterToID[tc.owner])
			if got, raw := f.do(t, tc.caller, "release_thread_control", "42", nil); got != tc.want {
				t.Fatalf("release = %s (%s), want %s", got, raw, tc.want)
			}
			wantOwner := tc.owner
			if tc.want == "ok" {
				wantOwner = ""
			}
			if got := f.owner("42"); got != wantOwner {
				t.Errorf("owner = %q, want %q", got, wantOwner)
			}
			if got := f.hooks(t); len(got) != 0 {
				t.Errorf("webhooks = %q, want none", got)
			}
			if tc.want != "ok" {
				return
			}
			if _, err := f.s.CustomerMessage(testPage, "42", "hi again"); err != nil {
				t.Fatal(err)
			}
			if got := f.owner("42"); got != tc.wantNext {
				t.Errorf("owner after the next customer message = %q, want %q", got, tc.wantNext)
			}
		})
	}
}

// TestCRExpiry: control returns to idle 24 h after the last activity (a customer message
// restarts the window); then, in cr, only the default app may send and the next customer
// message goes to it; in cr_zero every app may send and the thread stays idle.
func TestCRExpiry(t *testing.T) {
	for _, mode := range []string{ModeCR, ModeCRZero} {
		t.Run(mode, func(t *testing.T) {
			f := newCRFixture(t, mode, nil)
			setOwnerForTest(f.s, testPage, "42", idO) // window until t0 + 24 h
			f.clock.Advance(12 * time.Hour)
			if _, err := f.s.CustomerMessage(testPage, "42", "still there?"); err != nil {
				t.Fatal(err)
			}
			f.clock.Advance(24*time.Hour - time.Second)
			if got := f.owner("42"); got != "O" {
				t.Fatalf("owner 24 h - 1 s after the last message = %q, want O", got)
			}
			f.clock.Advance(time.Second)
			if got, raw := f.do(t, "O", "thread_owner", "42", nil); got != "ok" || string(raw) != `{"data":[]}` {
				t.Errorf("thread_owner after expiry = %s, want {\"data\":[]}", raw)
			}
			text := map[string]any{"message": map[string]any{"text": "hello?"}}
			wantO := "ok"
			if mode == ModeCR {
				wantO = crSendBlocked
				if got, raw := f.do(t, "P", "messages", "42", text); got != "ok" {
					t.Errorf("default app's send on the expired thread = %s (%s), want ok", got, raw)
				}
			}
			if got, raw := f.do(t, "O", "messages", "42", text); got != wantO {
				t.Errorf("former owner's send after expiry = %s (%s), want %s", got, raw, wantO)
			}
			if _, err := f.s.CustomerMessage(testPage, "42", "hello"); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{ModeCR: "P", ModeCRZero: ""}[mode]
			if got := f.owner("42"); got != want {
				t.Errorf("owner after the next customer message = %q, want %q", got, want)
			}
		})
	}
}
