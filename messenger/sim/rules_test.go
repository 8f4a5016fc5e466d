package sim

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRules checks every call of every mode from each kind of caller: the owner, the primary
// or default app, another app, and any app on an idle thread. Apps are letters: P is the
// primary (hop_v1, hop_v2) or default app (cr), O and T are other apps.
func TestRules(t *testing.T) {
	exp := strconv.FormatInt(t0.Add(24*time.Hour).Unix(), 10)
	ownerBody := func(id string, withExp bool) string {
		if withExp {
			return `{"data":[{"thread_owner":{"app_id":"` + id + `","expiration":` + exp + `}}]}`
		}
		return `{"data":[{"thread_owner":{"app_id":"` + id + `"}}]}`
	}
	const (
		v1, v2, cr, crz = ModeHOPv1, ModeHOPv2, ModeCR, ModeCRZero
		notOwner        = "100/2534037"
		sendBlocked     = "10/2018300"
		unknownPath     = "2500"
		perm            = "200"
		param           = "100"
		pass            = "pass_thread_control"
		take            = "take_thread_control"
		request         = "request_thread_control"
		release         = "release_thread_control"
		extend          = "extend_thread_control"
		metadata        = "pass_thread_metadata"
		owner           = "thread_owner"
		secondaries     = "secondary_receivers"
		send            = "messages"
	)
	to := func(l string) map[string]any { return map[string]any{"target_app_id": letterToID[l]} }
	text := map[string]any{"message": map[string]any{"text": "hello"}}
	allApps := `{"data":[{"id":"11","name":"P app"},{"id":"22","name":"O app"},{"id":"33","name":"T app"}]}`
	secondaryApps := `{"data":[{"id":"22","name":"O app"},{"id":"33","name":"T app"}]}`

	tests := []struct {
		name      string
		mode      string
		noPrimary bool // hop_v2 without a Primary Receiver
		takeoverT bool // cr: T's takeover setting is on
		owner     string
		caller    string
		call      string
		args      map[string]any
		want      string // "ok" or Meta's "code/subcode"
		wantOwner string
		wantHooks []string
		wantBody  string
		wantExp   time.Duration // expiry after the call, from t0 (0: not checked)
	}{
		// hop_v1: the Primary owns new threads, only the owner passes, only the Primary takes.
		{name: "v1 pass owner primary to secondary", mode: v1, owner: "P", caller: "P", call: pass, args: to("O"), want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{name: "v1 pass by primary needs a target", mode: v1, owner: "P", caller: "P", call: pass, want: param, wantOwner: "P"},
		{name: "v1 pass by secondary owner defaults to primary", mode: v1, owner: "O", caller: "O", call: pass, want: "ok", wantOwner: "P", wantHooks: []string{"P messaging pass_thread_control"}},
		{name: "v1 pass secondary to secondary", mode: v1, owner: "O", caller: "O", call: pass, args: to("T"), want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "v1 pass by other app", mode: v1, owner: "O", caller: "T", call: pass, args: to("P"), want: notOwner, wantOwner: "O"},
		{name: "v1 pass by primary not owner", mode: v1, owner: "O", caller: "P", call: pass, args: to("T"), want: notOwner, wantOwner: "O"},
		{name: "v1 pass owner to itself", mode: v1, owner: "P", caller: "P", call: pass, args: to("P"), want: param, wantOwner: "P"},
		{name: "v1 pass to unknown app", mode: v1, owner: "P", caller: "P", call: pass, args: map[string]any{"target_app_id": "999"}, want: param, wantOwner: "P"},
		{name: "v1 take by primary", mode: v1, owner: "O", caller: "P", call: take, want: "ok", wantOwner: "P", wantHooks: []string{"O messaging take_thread_control"}},
		{name: "v1 take by primary owner", mode: v1, owner: "P", caller: "P", call: take, want: "ok", wantOwner: "P"},
		{name: "v1 take by secondary", mode: v1, owner: "P", caller: "O", call: take, want: perm, wantOwner: "P"},
		{name: "v1 take by secondary owner", mode: v1, owner: "O", caller: "O", call: take, want: perm, wantOwner: "O"},
		{name: "v1 request by secondary goes to primary owner", mode: v1, owner: "P", caller: "O", call: request, want: "ok", wantOwner: "P", wantHooks: []string{"P messaging request_thread_control"}},
		{name: "v1 request goes to primary not owner", mode: v1, owner: "O", caller: "T", call: request, want: "ok", wantOwner: "O", wantHooks: []string{"P messaging request_thread_control"}},
		{name: "v1 request by primary goes to owner", mode: v1, owner: "O", caller: "P", call: request, want: "ok", wantOwner: "O", wantHooks: []string{"O messaging request_thread_control"}},
		{name: "v1 request by owner", mode: v1, owner: "O", caller: "O", call: request, want: param, wantOwner: "O"},
		{name: "v1 release does not exist", mode: v1, owner: "O", caller: "O", call: release, want: unknownPath, wantOwner: "O"},
		{name: "v1 extend does not exist", mode: v1, owner: "O", caller: "O", call: extend, args: map[string]any{"duration": 60}, want: unknownPath, wantOwner: "O"},
		{name: "v1 pass_thread_metadata does not exist", mode: v1, owner: "O", caller: "O", call: metadata, args: to("P"), want: unknownPath, wantOwner: "O"},
		{name: "v1 thread_owner by primary", mode: v1, owner: "O", caller: "P", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, false)},
		{name: "v1 thread_owner by owner", mode: v1, owner: "O", caller: "O", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, false)},
		{name: "v1 thread_owner by secondary when primary owns", mode: v1, owner: "P", caller: "T", call: owner, want: "ok", wantOwner: "P", wantBody: ownerBody(idP, false)},
		{name: "v1 thread_owner by secondary when another secondary owns", mode: v1, owner: "O", caller: "T", call: owner, want: "100/2018234", wantOwner: "O"},
		{name: "v1 secondary_receivers by primary", mode: v1, owner: "P", caller: "P", call: secondaries, want: "ok", wantOwner: "P", wantBody: secondaryApps},
		{name: "v1 secondary_receivers by secondary", mode: v1, owner: "P", caller: "O", call: secondaries, want: perm, wantOwner: "P"},
		{name: "v1 send by owner", mode: v1, owner: "O", caller: "O", call: send, args: text, want: "ok", wantOwner: "O"},
		{name: "v1 send by primary not owner", mode: v1, owner: "O", caller: "P", call: send, args: text, want: sendBlocked, wantOwner: "O"},
		{name: "v1 send by other app", mode: v1, owner: "O", caller: "T", call: send, args: text, want: sendBlocked, wantOwner: "O"},

		// hop_v2 with a Primary Receiver.
		{name: "v2 pass owner to other", mode: v2, owner: "O", caller: "O", call: pass, args: to("T"), want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}, wantExp: 24 * time.Hour},
		{name: "v2 pass on idle by any app", mode: v2, owner: "", caller: "T", call: pass, args: to("O"), want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{name: "v2 pass on idle to itself", mode: v2, owner: "", caller: "T", call: pass, args: to("T"), want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "v2 pass owner to itself", mode: v2, owner: "O", caller: "O", call: pass, args: to("O"), want: param, wantOwner: "O"},
		{name: "v2 pass by other app", mode: v2, owner: "O", caller: "T", call: pass, args: to("P"), want: notOwner, wantOwner: "O"},
		{name: "v2 pass by primary not owner", mode: v2, owner: "O", caller: "P", call: pass, args: to("T"), want: notOwner, wantOwner: "O"},
		{name: "v2 pass without target defaults to primary", mode: v2, owner: "O", caller: "O", call: pass, want: "ok", wantOwner: "P", wantHooks: []string{"P messaging pass_thread_control"}},
		{name: "v2 pass by primary needs a target", mode: v2, owner: "P", caller: "P", call: pass, want: param, wantOwner: "P"},
		{name: "v2 take on idle by any app", mode: v2, owner: "", caller: "T", call: take, want: "ok", wantOwner: "T", wantExp: 24 * time.Hour},
		{name: "v2 take by primary", mode: v2, owner: "O", caller: "P", call: take, want: "ok", wantOwner: "P", wantHooks: []string{"O messaging take_thread_control"}},
		{name: "v2 take by other app", mode: v2, owner: "O", caller: "T", call: take, want: notOwner, wantOwner: "O"},
		{name: "v2 take by owner", mode: v2, owner: "O", caller: "O", call: take, want: "ok", wantOwner: "O"},
		{name: "v2 request on idle grants control", mode: v2, owner: "", caller: "T", call: request, want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "v2 request goes to owner", mode: v2, owner: "O", caller: "T", call: request, want: "ok", wantOwner: "O", wantHooks: []string{"O messaging request_thread_control"}},
		{name: "v2 request by primary goes to owner", mode: v2, owner: "O", caller: "P", call: request, want: "ok", wantOwner: "O", wantHooks: []string{"O messaging request_thread_control"}},
		{name: "v2 request by owner", mode: v2, owner: "O", caller: "O", call: request, want: param, wantOwner: "O"},
		{name: "v2 release by owner", mode: v2, owner: "O", caller: "O", call: release, want: "ok", wantOwner: ""},
		{name: "v2 release by other app", mode: v2, owner: "O", caller: "T", call: release, want: notOwner, wantOwner: "O"},
		{name: "v2 release by primary", mode: v2, owner: "O", caller: "P", call: release, want: notOwner, wantOwner: "O"},
		{name: "v2 release on idle", mode: v2, owner: "", caller: "T", call: release, want: notOwner, wantOwner: ""},
		{name: "v2 extend by owner", mode: v2, owner: "O", caller: "O", call: extend, args: map[string]any{"duration": 3600}, want: "ok", wantOwner: "O", wantExp: time.Hour},
		{name: "v2 extend seven days", mode: v2, owner: "O", caller: "O", call: extend, args: map[string]any{"duration": 604800}, want: "ok", wantOwner: "O", wantExp: 7 * 24 * time.Hour},
		{name: "v2 extend past seven days", mode: v2, owner: "O", caller: "O", call: extend, args: map[string]any{"duration": 604801}, want: param, wantOwner: "O", wantExp: 24 * time.Hour},
		{name: "v2 extend without duration", mode: v2, owner: "O", caller: "O", call: extend, want: param, wantOwner: "O"},
		{name: "v2 extend by other app", mode: v2, owner: "O", caller: "T", call: extend, args: map[string]any{"duration": 60}, want: notOwner, wantOwner: "O"},
		{name: "v2 extend on idle", mode: v2, owner: "", caller: "T", call: extend, args: map[string]any{"duration": 60}, want: notOwner, wantOwner: ""},
		{name: "v2 pass_thread_metadata by any app", mode: v2, owner: "O", caller: "T", call: metadata, args: map[string]any{"target_app_id": idP, "metadata": "m"}, want: "ok", wantOwner: "O", wantHooks: []string{"P messaging pass_thread_metadata"}},
		{name: "v2 pass_thread_metadata needs a target", mode: v2, owner: "O", caller: "T", call: metadata, want: param, wantOwner: "O"},
		{name: "v2 thread_owner by other app", mode: v2, owner: "O", caller: "T", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, true)},
		{name: "v2 thread_owner by primary", mode: v2, owner: "O", caller: "P", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, true)},
		{name: "v2 thread_owner on idle", mode: v2, owner: "", caller: "T", call: owner, want: "ok", wantOwner: "", wantBody: `{"data":[]}`},
		{name: "v2 secondary_receivers by primary", mode: v2, owner: "", caller: "P", call: secondaries, want: "ok", wantBody: secondaryApps},
		{name: "v2 secondary_receivers by other app", mode: v2, owner: "", caller: "O", call: secondaries, want: perm},
		{name: "v2 send on idle by any app", mode: v2, owner: "", caller: "T", call: send, args: text, want: "ok", wantOwner: ""},
		{name: "v2 send by owner", mode: v2, owner: "O", caller: "O", call: send, args: text, want: "ok", wantOwner: "O"},
		{name: "v2 send by primary not owner", mode: v2, owner: "O", caller: "P", call: send, args: text, want: sendBlocked, wantOwner: "O"},
		{name: "v2 send by other app", mode: v2, owner: "O", caller: "T", call: send, args: text, want: sendBlocked, wantOwner: "O"},

		// hop_v2 without a Primary Receiver.
		{name: "v2 no primary pass needs a target", mode: v2, noPrimary: true, owner: "O", caller: "O", call: pass, want: param, wantOwner: "O"},
		{name: "v2 no primary take on idle", mode: v2, noPrimary: true, owner: "", caller: "P", call: take, want: "ok", wantOwner: "P"},
		{name: "v2 no primary take from owner", mode: v2, noPrimary: true, owner: "O", caller: "P", call: take, want: notOwner, wantOwner: "O"},
		{name: "v2 no primary secondary_receivers by any app", mode: v2, noPrimary: true, owner: "", caller: "O", call: secondaries, want: "ok", wantBody: allApps},
		{name: "v2 no primary thread_owner", mode: v2, noPrimary: true, owner: "O", caller: "T", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, true)},

		// Conversation Routing with a default app (P).
		{name: "cr pass owner to other", mode: cr, owner: "O", caller: "O", call: pass, args: to("T"), want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "cr pass on idle by any app", mode: cr, owner: "", caller: "T", call: pass, args: to("O"), want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{name: "cr pass without target goes to default", mode: cr, owner: "O", caller: "O", call: pass, want: "ok", wantOwner: "P", wantHooks: []string{"P messaging pass_thread_control"}},
		{name: "cr pass by default owner without target", mode: cr, owner: "P", caller: "P", call: pass, want: param, wantOwner: "P"},
		{name: "cr pass by other app", mode: cr, owner: "O", caller: "T", call: pass, args: to("T"), want: notOwner, wantOwner: "O"},
		{name: "cr pass by default not owner", mode: cr, owner: "O", caller: "P", call: pass, args: to("P"), want: notOwner, wantOwner: "O"},
		{name: "cr take by default", mode: cr, owner: "O", caller: "P", call: take, want: "ok", wantOwner: "P", wantHooks: []string{"O messaging take_thread_control"}},
		{name: "cr take on idle by default", mode: cr, owner: "", caller: "P", call: take, want: "ok", wantOwner: "P"},
		{name: "cr take by default owner", mode: cr, owner: "P", caller: "P", call: take, want: param, wantOwner: "P"},
		{name: "cr take without takeover setting", mode: cr, owner: "O", caller: "T", call: take, want: perm, wantOwner: "O"},
		{name: "cr take on idle without takeover setting", mode: cr, owner: "", caller: "T", call: take, want: perm, wantOwner: ""},
		{name: "cr take with takeover setting", mode: cr, takeoverT: true, owner: "O", caller: "T", call: take, want: "ok", wantOwner: "T", wantHooks: []string{"O messaging take_thread_control"}},
		{name: "cr request on idle", mode: cr, owner: "", caller: "T", call: request, want: perm, wantOwner: ""},
		{name: "cr request to owner", mode: cr, owner: "O", caller: "T", call: request, want: perm, wantOwner: "O"},
		{name: "cr release by owner", mode: cr, owner: "O", caller: "O", call: release, want: "ok", wantOwner: ""},
		{name: "cr release by default", mode: cr, owner: "O", caller: "P", call: release, want: notOwner, wantOwner: "O"},
		{name: "cr extend by owner", mode: cr, owner: "O", caller: "O", call: extend, args: map[string]any{"duration": "7200"}, want: "ok", wantOwner: "O", wantExp: 2 * time.Hour},
		{name: "cr extend by other app", mode: cr, owner: "O", caller: "T", call: extend, args: map[string]any{"duration": 60}, want: notOwner, wantOwner: "O"},
		{name: "cr pass_thread_metadata", mode: cr, owner: "O", caller: "O", call: metadata, args: to("T"), want: "ok", wantOwner: "O", wantHooks: []string{"T messaging pass_thread_metadata"}},
		{name: "cr thread_owner by owner", mode: cr, owner: "O", caller: "O", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, true)},
		{name: "cr thread_owner by default", mode: cr, owner: "O", caller: "P", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, true)},
		{name: "cr thread_owner by other app sees expiration only", mode: cr, owner: "O", caller: "T", call: owner, want: "ok", wantOwner: "O", wantBody: `{"data":[{"thread_owner":{"expiration":` + exp + `}}]}`},
		{name: "cr thread_owner on idle", mode: cr, owner: "", caller: "P", call: owner, want: "ok", wantBody: `{"data":[]}`},
		{name: "cr secondary_receivers by default", mode: cr, owner: "", caller: "P", call: secondaries, want: "ok", wantBody: secondaryApps},
		{name: "cr secondary_receivers by other app", mode: cr, owner: "", caller: "T", call: secondaries, want: perm},
		{name: "cr send on idle by default", mode: cr, owner: "", caller: "P", call: send, args: text, want: "ok", wantOwner: ""},
		{name: "cr send on idle by other app", mode: cr, owner: "", caller: "O", call: send, args: text, want: sendBlocked, wantOwner: ""},
		{name: "cr send by owner", mode: cr, owner: "O", caller: "O", call: send, args: text, want: "ok", wantOwner: "O"},
		{name: "cr send by default not owner", mode: cr, owner: "O", caller: "P", call: send, args: text, want: sendBlocked, wantOwner: "O"},
		{name: "cr send with thread_control pass", mode: cr, owner: "O", caller: "O", call: send, args: map[string]any{"message": map[string]any{"text": "bye"}, "thread_control": map[string]any{"control_type": "pass", "app_id": idT}}, want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "cr send with thread_control pass to default", mode: cr, owner: "O", caller: "O", call: send, args: map[string]any{"message": map[string]any{"text": "bye"}, "thread_control": map[string]any{"control_type": "pass"}}, want: "ok", wantOwner: "P", wantHooks: []string{"P messaging pass_thread_control"}},
		{name: "cr send with thread_control release", mode: cr, owner: "O", caller: "O", call: send, args: map[string]any{"message": map[string]any{"text": "bye"}, "thread_control": map[string]any{}}, want: "ok", wantOwner: ""},

		// Conversation Routing zero-config (no default app).
		{name: "cr_zero pass on idle by any app", mode: crz, owner: "", caller: "T", call: pass, args: to("O"), want: "ok", wantOwner: "O", wantHooks: []string{"O messaging pass_thread_control"}},
		{name: "cr_zero pass owner to other", mode: crz, owner: "O", caller: "O", call: pass, args: to("T"), want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "cr_zero pass by other app", mode: crz, owner: "O", caller: "T", call: pass, args: to("T"), want: notOwner, wantOwner: "O"},
		{name: "cr_zero pass needs a target", mode: crz, owner: "O", caller: "O", call: pass, want: param, wantOwner: "O"},
		{name: "cr_zero take on idle is blocked", mode: crz, owner: "", caller: "T", call: take, want: perm, wantOwner: ""},
		{name: "cr_zero take from owner is blocked", mode: crz, owner: "O", caller: "P", call: take, want: perm, wantOwner: "O"},
		{name: "cr_zero request on idle grants control", mode: crz, owner: "", caller: "T", call: request, want: "ok", wantOwner: "T", wantHooks: []string{"T messaging pass_thread_control"}},
		{name: "cr_zero request goes to owner", mode: crz, owner: "O", caller: "T", call: request, want: "ok", wantOwner: "O", wantHooks: []string{"O messaging request_thread_control"}},
		{name: "cr_zero request by owner", mode: crz, owner: "O", caller: "O", call: request, want: param, wantOwner: "O"},
		{name: "cr_zero release by owner", mode: crz, owner: "O", caller: "O", call: release, want: "ok", wantOwner: ""},
		{name: "cr_zero release by other app", mode: crz, owner: "O", caller: "T", call: release, want: notOwner, wantOwner: "O"},
		{name: "cr_zero extend by owner", mode: crz, owner: "O", caller: "O", call: extend, args: map[string]any{"duration": 600}, want: "ok", wantOwner: "O", wantExp: 10 * time.Minute},
		{name: "cr_zero extend by other app", mode: crz, owner: "O", caller: "T", call: extend, args: map[string]any{"duration": 600}, want: notOwner, wantOwner: "O"},
		{name: "cr_zero thread_owner by owner", mode: crz, owner: "O", caller: "O", call: owner, want: "ok", wantOwner: "O", wantBody: ownerBody(idO, true)},
		{name: "cr_zero thread_owner by other app sees expiration only", mode: crz, owner: "O", caller: "T", call: owner, want: "ok", wantOwner: "O", wantBody: `{"data":[{"thread_owner":{"expiration":` + exp + `}}]}`},
		{name: "cr_zero thread_owner on idle", mode: crz, owner: "", caller: "T", call: owner, want: "ok", wantBody: `{"data":[]}`},
		{name: "cr_zero secondary_receivers by any app", mode: crz, owner: "", caller: "T", call: secondaries, want: "ok", wantBody: allApps},
		{name: "cr_zero send on idle by any app", mode: crz, owner: "", caller: "T", call: send, args: text, want: "ok", wantOwner: ""},
		{name: "cr_zero send by owner", mode: crz, owner: "O", caller: "O", call: send, args: text, want: "ok", wantOwner: "O"},
		{name: "cr_zero send by other app", mode: crz, owner: "O", caller: "T", call: send, args: text, want: sendBlocked, wantOwner: "O"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newSim(t, Options{Now: clock.Now})
			hook := newCollector(t)
			cfg := PageConfig{Mode: tc.mode, Apps: []AppConfig{
				app(idP, hook.URL("/p")), app(idO, hook.URL("/o")), app(idT, hook.URL("/t")),
			}}
			if !tc.noPrimary && tc.mode != ModeCRZero {
				cfg.PrimaryAppID = idP
			}
			if tc.takeoverT {
				on := true
				cfg.Apps[2].TakeoverAllowed = &on
			}
			mustPut(t, s, cfg)
			const psid = "5550001"
			setOwnerForTest(s, testPage, psid, letterToID[tc.owner])

			args := map[string]any{"recipient": map[string]any{"id": psid}}
			method := http.MethodPost
			if tc.call == owner || tc.call == secondaries {
				method = http.MethodGet
				args = map[string]any{"recipient": psid}
				if tc.call == secondaries {
					args = map[string]any{"fields": "id,name"}
				}
			}
			for k, v := range tc.args {
				args[k] = v
			}
			status, raw := callRaw(t, s.Handler(), method, "/v19.0/me/"+tc.call, token(letterToID[tc.caller]), args)
			var body map[string]any
			if err := decodeJSON(raw, &body); err != nil {
				t.Fatalf("answer is not JSON: %s", raw)
			}

			got := errorCode(body)
			if got == "" {
				got = "ok"
			}
			if got != tc.want {
				t.Fatalf("outcome = %s (HTTP %d, %s), want %s", got, status, raw, tc.want)
			}
			if wantStatus := map[bool]int{true: 200, false: 400}[tc.want == "ok"]; status != wantStatus {
				t.Errorf("HTTP status = %d, want %d", status, wantStatus)
			}
			if tc.wantBody != "" && string(raw) != tc.wantBody {
				t.Errorf("body = %s, want %s", raw, tc.wantBody)
			}
			if tc.call == send && tc.want == "ok" {
				if body["recipient_id"] != psid || !strings.HasPrefix(body["message_id"].(string), "m_") {
					t.Errorf("send answer = %s, want recipient_id and message_id", raw)
				}
			}
			if tc.want == "ok" && (tc.call == pass || tc.call == take || tc.call == request || tc.call == release || tc.call == extend) {
				if string(raw) != `{"success":true}` {
					t.Errorf("body = %s, want {\"success\":true}", raw)
				}
			}
			view := s.Thread(testPage, psid)
			if got, want := idToLetter(view.OwnerAppID), tc.wantOwner; got != want {
				t.Errorf("owner = %q, want %q", got, want)
			}
			if tc.wantExp != 0 && !view.ExpiresAt.Equal(t0.Add(tc.wantExp)) {
				t.Errorf("expires at %v, want %v", view.ExpiresAt, t0.Add(tc.wantExp))
			}
			if tc.mode == ModeHOPv1 && !view.ExpiresAt.IsZero() {
				t.Errorf("hop_v1 thread expires at %v, want never", view.ExpiresAt)
			}
			settle(t, s)
			if got := deliveredHooks(s); !slices.Equal(got, tc.wantHooks) {
				t.Errorf("webhooks = %q, want %q", got, tc.wantHooks)
			}
			assertCallLogged(t, s, tc.call, letterToID[tc.caller], tc.want == "ok")
		})
	}
}

// assertCallLogged checks that the last Graph call in the log is the one just made.
func assertCallLogged(t *testing.T, s *Sim, call, caller string, ok bool) {
	t.Helper()
	var last *LogEntry
	for _, e := range s.Log(testPage, "") {
		if e.Kind == KindGraphCall {
			last = &e
		}
	}
	if last == nil {
		t.Fatal("no graph_call in the log")
	}
	want := OutcomeError
	if ok {
		want = OutcomeOK
	}
	if last.Call != call || last.CallerAppID != caller || last.Outcome != want {
		t.Errorf("last logged call = %s by %s (%s), want %s by %s (%s)", last.Call, last.CallerAppID, last.Outcome, call, caller, want)
	}
}

// TestPageInbox checks that control can go to the Page Inbox, which gets no webhook and then
// blocks the other apps' messages.
func TestPageInbox(t *testing.T) {
	s := newSim(t, Options{})
	hook := newCollector(t)
	mustPut(t, s, PageConfig{Mode: ModeHOPv2, PrimaryAppID: idP, Apps: []AppConfig{app(idP, hook.URL("/p")), app(idO, hook.URL("/o"))}})
	if _, err := s.CustomerMessage(testPage, "42", "hi"); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	rcpt := map[string]any{"recipient": map[string]any{"id": "42"}}
	if status, body := call(t, h, http.MethodPost, "/me/pass_thread_control", token(idP), map[string]any{"recipient": map[string]any{"id": "42"}, "target_app_id": PageInboxAppID}); status != 200 {
		t.Fatalf("pass to the Page Inbox: %d %v", status, body)
	}
	if got := s.Thread(testPage, "42").OwnerAppID; got != PageInboxAppID {
		t.Errorf("owner = %s, want the Page Inbox", got)
	}
	if _, body := call(t, h, http.MethodPost, "/me/messages", token(idP), map[string]any{"recipient": rcpt["recipient"], "message": map[string]any{"text": "x"}}); errorCode(body) != "10/2018300" {
		t.Errorf("send while the inbox owns = %v, want 10/2018300", body)
	}
	settle(t, s)
	for _, h := range deliveredHooks(s) {
		if strings.Contains(h, "pass_thread_control") {
			t.Errorf("webhook %q sent for a pass to the Page Inbox", h)
		}
	}
}
