package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// The Bots API (SPEC.md §3.1): POST /1.0/bots/handover, and how it finds
// a thread from an identity.

func TestHandoverAuth(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	before := f.thread(t, psid).Revision
	valid := handoverQuery(psid, "bot", "agent", "").Encode()

	tests := []struct {
		name   string
		query  string
		header http.Header
		want   string
	}{
		{"missing token", valid, nil, "missing access token"},
		{"empty access_token", valid + "&access_token=", nil, "missing access token"},
		{"wrong token in query", valid + "&access_token=not-the-token", nil, "invalid access token"},
		{"wrong Bearer token", valid, bearer("not-the-token"), "invalid access token"},
		{"wrong Bearer token with a good query token", valid + "&access_token=" + apiToken, bearer("not-the-token"), "invalid access token"},
		{"Authorization Basic", valid, http.Header{"Authorization": {"Basic ZGV2LXRva2Vu"}}, `"Bearer <access_token>"`},
		{"Authorization without scheme", valid, http.Header{"Authorization": {apiToken}}, `"Bearer <access_token>"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodPost, "/1.0/bots/handover?"+tc.query, tc.header, nil)
			checkEnvelope(t, r, http.StatusUnauthorized, tc.want)
			if got := f.thread(t, psid); got.Revision != before || got.State != states.Bot {
				t.Errorf("thread after a refused call: %s rev %d, want bot rev %d", got.State, got.Revision, before)
			}
		})
	}
}

func TestHandoverBadRequest(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	before := f.thread(t, psid).Revision

	tests := []struct {
		name   string
		change func(q url.Values)
		want   []string
	}{
		{"missing identity_foreign_id", func(q url.Values) { q.Del("identity_foreign_id") }, []string{"identity_foreign_id is required"}},
		{"missing from", func(q url.Values) { q.Del("from") }, []string{"from is required"}},
		{"missing to", func(q url.Values) { q.Del("to") }, []string{"to is required"}},
		{"missing type", func(q url.Values) { q.Del("type") }, []string{"type is required", "messenger"}},
		{"from not bot or agent", func(q url.Values) { q.Set("from", "human") }, []string{`from="human" is invalid`, "bot or agent"}},
		{"to not bot or agent", func(q url.Values) { q.Set("to", "robot") }, []string{`to="robot" is invalid`}},
		{"from and to both bot", func(q url.Values) { q.Set("to", "bot"); q.Set("app_id", botID) }, []string{`from and to are both "bot"`}},
		{"from and to both agent", func(q url.Values) { q.Set("from", "agent") }, []string{`from and to are both "agent"`}},
		{"type not messenger", func(q url.Values) { q.Set("type", "whatsapp") }, []string{`type="whatsapp" is not supported`}},
		{"app_id missing for to=bot", func(q url.Values) { q.Set("from", "agent"); q.Set("to", "bot") }, []string{"app_id is required with to=bot"}},
		{"app_id is the RingCX app", func(q url.Values) { q.Set("from", "agent"); q.Set("to", "bot"); q.Set("app_id", ringcxID) },
			[]string{"app_id " + ringcxID + " is not a bot app of page " + pageID, botID, bot2ID}},
		{"app_id unknown", func(q url.Values) { q.Set("from", "agent"); q.Set("to", "bot"); q.Set("app_id", "999") },
			[]string{"app_id 999 is not a bot app of page " + pageID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := handoverQuery(psid, "bot", "agent", "")
			tc.change(q)
			r := f.api(t, http.MethodPost, "/1.0/bots/handover", q)
			checkEnvelope(t, r, http.StatusBadRequest, tc.want...)
			if got := f.thread(t, psid); got.Revision != before || got.State != states.Bot {
				t.Errorf("thread after a refused call: %s rev %d, want bot rev %d", got.State, got.Revision, before)
			}
		})
	}
}

func TestHandoverUnknownIdentity(t *testing.T) {
	f := newFixture(t)
	known := newPSID()
	f.customer(t, known)
	unknown := newPSID()

	tests := []struct {
		name  string
		query url.Values
		want  string
	}{
		{"to agent", handoverQuery(unknown, "bot", "agent", ""), "unknown identity " + unknown},
		{"to bot", handoverQuery(unknown, "agent", "bot", botID), "unknown identity " + unknown},
		{"with page_id", func() url.Values {
			q := handoverQuery(unknown, "bot", "agent", "")
			q.Set("page_id", pageID)
			return q
		}(), "no thread for identity " + unknown},
		{"known identity on another page", func() url.Values {
			q := handoverQuery(known, "bot", "agent", "")
			q.Set("page_id", otherPage)
			return q
		}(), "no thread for identity " + known},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.api(t, http.MethodPost, "/1.0/bots/handover", tc.query), http.StatusNotFound, tc.want)
		})
	}
}

func TestAmbiguousIdentity(t *testing.T) {
	f := newFixture(t)
	const page2 = "100000000000002"
	if err := f.eng.SetPage(context.Background(), engine.Page{ID: page2, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID}}); err != nil {
		t.Fatal(err)
	}
	psid := newPSID()
	ms := time.Now().UnixMilli()
	body := fmt.Sprintf(`{"object":"page","entry":[
{"id":"%[1]s","time":%[4]d,"standby":[{"sender":{"id":"%[3]s"},"recipient":{"id":"%[1]s"},"timestamp":%[4]d,"message":{"mid":"m_amb_1","text":"hi"}}]},
{"id":"%[2]s","time":%[4]d,"standby":[{"sender":{"id":"%[3]s"},"recipient":{"id":"%[2]s"},"timestamp":%[4]d,"message":{"mid":"m_amb_2","text":"hi"}}]}]}`,
		pageID, page2, psid, ms)
	checkSuccess(t, f.postWebhook(t, []byte(body), ringcxSecret))

	tests := []struct {
		name       string
		method     string
		path       string
		query      url.Values
		wantStatus int
		want       string
	}{
		{"handover without page_id", http.MethodPost, "/1.0/bots/handover", handoverQuery(psid, "bot", "agent", ""), http.StatusBadRequest, "exists on several pages; give page_id"},
		{"intervention without page_id", http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}}, http.StatusBadRequest, "exists on several pages; give page_id"},
		{"content without page_id", http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {"hi"}}, http.StatusBadRequest, "exists on several pages; give page_id"},
		{"debug without page_id", http.MethodGet, "/debug/threads/" + psid, nil, http.StatusBadRequest, "exists on several pages; give page_id"},
		{"debug with page_id", http.MethodGet, "/debug/threads/" + psid, url.Values{"page_id": {page2}}, http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.api(t, tc.method, tc.path, tc.query)
			if tc.wantStatus != http.StatusOK {
				checkEnvelope(t, r, tc.wantStatus, tc.want)
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("answer = %v, want 200", r)
			}
			if v := decode[threadJSON](t, r); v.PageID != page2 || v.IdentityForeignID != psid || v.State != "bot" {
				t.Errorf("thread = %s/%s %s, want %s/%s bot", v.PageID, v.IdentityForeignID, v.State, page2, psid)
			}
		})
	}
}

func TestHandoverConflict(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		setup     func(t *testing.T, psid string)
		query     func(psid string) url.Values
		want      []string
		wantState states.State
		wantOwner string // Meta's
	}{
		{
			name: "to bot while an intervention is engaged",
			setup: func(t *testing.T, psid string) {
				f.customer(t, psid)
				f.openIntervention(t, psid)
				f.waitState(t, psid, states.Agent, ringcxID)
			},
			query:     func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", botID) },
			want:      []string{"an intervention is engaged on this identity", "close it"},
			wantState: states.Agent, wantOwner: ringcxID,
		},
		{
			name: "to bot while a request for control is pending and an intervention is engaged",
			setup: func(t *testing.T, psid string) {
				f.customer(t, psid)
				f.failBotPass(t)
				f.openIntervention(t, psid)
				f.waitState(t, psid, states.Pending, botID)
			},
			query:     func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", botID) },
			want:      []string{"an intervention is engaged on this identity"},
			wantState: states.Pending, wantOwner: botID,
		},
		{
			name:      "to bot while another bot app owns the thread",
			setup:     f.customer,
			query:     func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", bot2ID) },
			want:      []string{"owned by app " + botID, bot2ID},
			wantState: states.Bot, wantOwner: botID,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			before := f.thread(t, psid).Revision
			checkEnvelope(t, f.api(t, http.MethodPost, "/1.0/bots/handover", tc.query(psid)), http.StatusConflict, tc.want...)
			f.settle(t)
			got := f.thread(t, psid)
			if got.State != tc.wantState || got.Revision != before {
				t.Errorf("thread after the refusal: %s rev %d, want %s rev %d (unchanged, nothing recorded)", got.State, got.Revision, tc.wantState, before)
			}
			if owner := f.sim.Thread(pageID, psid).OwnerAppID; owner != tc.wantOwner {
				t.Errorf("Meta's owner = %q, want %q", owner, tc.wantOwner)
			}
		})
	}
}

func TestHandoverMetaFailure(t *testing.T) {
	f := newFixture(t)
	code100 := func(call string) sim.Fault {
		return sim.Fault{Call: call, Status: 400, Code: 100, Message: "Invalid parameter (simulated)", Count: 3, AppID: ringcxID}
	}
	tests := []struct {
		name      string
		setup     func(t *testing.T, psid string)
		query     func(psid string) url.Values
		fault     sim.Fault
		want      []string
		event     states.Event
		wantState states.State // unchanged
		wantOwner string       // Meta's
	}{
		{
			name:  "request refused with code 100",
			setup: f.customer, query: func(psid string) url.Values { return handoverQuery(psid, "bot", "agent", "") },
			fault:     code100("request_thread_control"),
			want:      []string{"request_thread_control", "HTTP 400", "code 100", "Invalid parameter (simulated)", "fbtrace_id"},
			event:     states.HandoverToAgent,
			wantState: states.Bot, wantOwner: botID,
		},
		{
			name:  "request fails with HTTP 500",
			setup: f.customer, query: func(psid string) url.Values { return handoverQuery(psid, "bot", "agent", "") },
			fault:     sim.Fault{Call: "request_thread_control", Status: 500, Count: 3, AppID: ringcxID},
			want:      []string{"request_thread_control", "HTTP 500", "code 2"},
			event:     states.HandoverToAgent,
			wantState: states.Bot, wantOwner: botID,
		},
		{
			name:  "pass refused",
			setup: f.toAgent, query: func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", botID) },
			fault:     code100("pass_thread_control"),
			want:      []string{"pass_thread_control", "code 100", "Invalid parameter (simulated)"},
			event:     states.HandoverToBot,
			wantState: states.Agent, wantOwner: ringcxID,
		},
		{
			name:  "take fails",
			setup: f.toIdle, query: func(psid string) url.Values { return handoverQuery(psid, "bot", "agent", "") },
			fault:     sim.Fault{Call: "take_thread_control", Status: 503, Count: 3, AppID: ringcxID},
			want:      []string{"take_thread_control", "HTTP 503"},
			event:     states.HandoverToAgent,
			wantState: states.Idle, wantOwner: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			f.sim.SetFault(tc.fault)
			defer f.sim.ClearFaults()

			r := f.api(t, http.MethodPost, "/1.0/bots/handover", tc.query(psid))
			checkEnvelope(t, r, http.StatusBadGateway, tc.want...)

			f.waitState(t, psid, tc.wantState, tc.wantOwner)
			v := decode[threadJSON](t, f.api(t, http.MethodGet, "/debug/threads/"+psid, nil))
			if len(v.Transitions) == 0 {
				t.Fatalf("no transitions recorded")
			}
			last := v.Transitions[0]
			if last.Event != string(tc.event) || last.Outcome != engine.OutcomeFailed || last.From != string(tc.wantState) || last.To != string(tc.wantState) {
				t.Errorf("last transition = %s %s %s → %s, want %s failed %s → %s", last.Event, last.Outcome, last.From, last.To, tc.event, tc.wantState, tc.wantState)
			}
			if len(last.Calls) != 1 || last.Calls[0].Call != tc.fault.Call || last.Calls[0].Outcome == "ok" || last.Calls[0].Error == "" {
				t.Errorf("graph calls = %+v, want one failed %s with its error", last.Calls, tc.fault.Call)
			}
		})
	}
}

func TestHandoverSuccess(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		setup     func(t *testing.T, psid string)
		from, to  string
		appID     string
		auth      string // "" for ?access_token=, else the Authorization header
		wantState states.State
		wantOwner string // Meta's and threadctl's
	}{
		{"bot to agent, token in query", f.customer, "bot", "agent", "", "", states.Agent, ringcxID},
		{"bot to agent, Bearer token", f.customer, "bot", "agent", "", "Bearer " + apiToken, states.Agent, ringcxID},
		{"agent to bot, token in query", f.toAgent, "agent", "bot", botID, "", states.Bot, botID},
		{"agent to the second bot, Bearer token", f.toAgent, "agent", "bot", bot2ID, "Bearer " + apiToken, states.Bot, bot2ID},
		{"to agent while agent: no change", f.toAgent, "bot", "agent", "", "", states.Agent, ringcxID},
		{"to the bot app that owns the thread: no change", f.customer, "agent", "bot", botID, "Bearer " + apiToken, states.Bot, botID},
		{"to agent while idle: take", f.toIdle, "bot", "agent", "", "", states.Agent, ringcxID},
		{"to bot while idle: pass", f.toIdle, "agent", "bot", bot2ID, "", states.Bot, bot2ID},
		{"to bot while a request is pending: cancel", f.toPending, "agent", "bot", botID, "", states.Bot, botID},
		{"to agent while a request is pending: no change", f.toPending, "bot", "agent", "", "", states.Pending, botID},
		{"bearer scheme in lower case", f.customer, "bot", "agent", "", "bearer " + apiToken, states.Agent, ringcxID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			q := handoverQuery(psid, tc.from, tc.to, tc.appID)
			var r reply
			if tc.auth != "" {
				r = f.do(t, http.MethodPost, "/1.0/bots/handover?"+q.Encode(), http.Header{"Authorization": {tc.auth}}, nil)
			} else {
				r = f.api(t, http.MethodPost, "/1.0/bots/handover", q)
			}
			if !checkSuccess(t, r) {
				t.FailNow()
			}
			f.waitState(t, psid, tc.wantState, tc.wantOwner)
			if got := f.thread(t, psid).Owner; got != tc.wantOwner {
				t.Errorf("threadctl's owner = %q, want %q", got, tc.wantOwner)
			}
		})
	}
}
