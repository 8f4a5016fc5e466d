package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// Inspection (SPEC.md §3.4): the JSON debug endpoints. The HTML pages are
// in debugpage_test.go.

func TestDebugThread(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	f.failBotPass(t) // RingCX's request stays pending
	iv := f.openIntervention(t, psid)
	f.waitState(t, psid, states.Pending, botID)
	r := f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {"queued reply"}})
	if r.status != http.StatusCreated {
		t.Fatalf("create content = %v", r)
	}
	ct := decode[contentJSON](t, r)
	f.settle(t)

	r = f.api(t, http.MethodGet, "/debug/threads/"+psid, nil)
	if r.status != http.StatusOK {
		t.Fatalf("debug = %v, want 200", r)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"state", "owner_app_id", "page_id", "primary", "revision", "intervention", "pending_request", "queued_contents", "available_events", "transitions"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("debug thread has no %q field: %s", k, r.body)
		}
	}
	v := decode[threadJSON](t, r)

	t.Run("record", func(t *testing.T) {
		if v.IdentityForeignID != psid || v.PageID != pageID || v.State != string(states.Pending) || v.OwnerAppID != botID || v.Primary != string(states.PrimaryBot) {
			t.Errorf("thread = %s/%s %s owner %s primary %s, want %s/%s pending-request owner %s primary bot",
				v.PageID, v.IdentityForeignID, v.State, v.OwnerAppID, v.Primary, pageID, psid, botID)
		}
		// customer_message, agent_engage (intervention), agent_engage (content).
		if v.Revision != 3 {
			t.Errorf("revision = %d, want 3", v.Revision)
		}
		if v.Intervention == nil || v.Intervention.ID != iv.ID {
			t.Errorf("intervention = %+v, want %s", v.Intervention, iv.ID)
		}
	})
	t.Run("pending request", func(t *testing.T) {
		p := v.PendingRequest
		if p == nil {
			t.Fatalf("pending_request is null")
		}
		if got, want := p.Deadline.Sub(p.RequestedAt), 60*time.Second; got != want {
			t.Errorf("deadline - requested_at = %v, want %v (the default pending timeout)", got, want)
		}
		if p.Deadline.Before(time.Now()) {
			t.Errorf("deadline %v is in the past", p.Deadline)
		}
	})
	t.Run("queued contents", func(t *testing.T) {
		if len(v.QueuedContents) != 1 || v.QueuedContents[0].ID != ct.ID || v.QueuedContents[0].SynchronizationStatus != engine.SyncPending || v.QueuedContents[0].Body != "queued reply" {
			t.Errorf("queued_contents = %+v, want the pending content %s", v.QueuedContents, ct.ID)
		}
	})
	t.Run("available events", func(t *testing.T) {
		// SPEC.md §2, pending-request with primary bot; the open intervention
		// refuses handover_to_bot.
		for _, e := range []states.Event{states.ControlPassed, states.InterventionClosed, states.RequestExpired, states.CustomerMessage} {
			if !slices.Contains(v.AvailableEvents, string(e)) {
				t.Errorf("available_events %v lacks %s", v.AvailableEvents, e)
			}
		}
		for _, e := range []states.Event{states.ControlTaken, states.ControlRequested, states.HandoverToBot} {
			if slices.Contains(v.AvailableEvents, string(e)) {
				t.Errorf("available_events %v has %s, which is not allowed in pending-request with an intervention open", v.AvailableEvents, e)
			}
		}
	})
	t.Run("transitions", func(t *testing.T) {
		type step struct{ event, cause, from, to, outcome, call string }
		want := []step{
			{"agent_engage", "agent", "pending-request", "pending-request", engine.OutcomeNoChange, ""},
			{"agent_engage", "agent", "bot", "pending-request", engine.OutcomeApplied, "request_thread_control"},
			{"customer_message", "webhook", "idle", "bot", engine.OutcomeApplied, ""},
		}
		if len(v.Transitions) != len(want) {
			t.Fatalf("got %d transitions (%+v), want %d", len(v.Transitions), v.Transitions, len(want))
		}
		for i, w := range want {
			tr := v.Transitions[i]
			call := ""
			if len(tr.Calls) == 1 && tr.Calls[0].Outcome == "ok" {
				call = tr.Calls[0].Call
			} else if len(tr.Calls) > 0 {
				call = fmt.Sprintf("%+v", tr.Calls)
			}
			got := step{tr.Event, tr.Cause, tr.From, tr.To, tr.Outcome, call}
			if got != w || tr.Revision != v.Revision-uint64(i) || tr.At.IsZero() {
				t.Errorf("transition %d = %+v rev %d at %v, want %+v rev %d", i, got, tr.Revision, tr.At, w, v.Revision-uint64(i))
			}
		}
	})

	tests := []struct {
		name       string
		target     string
		header     http.Header
		wantStatus int
		wantRevs   []uint64 // revisions of the transitions shown
		wantBefore uint64
		want       string // part of the error message
	}{
		{"no token", "/debug/threads/" + psid, nil, http.StatusUnauthorized, nil, 0, "missing access token"},
		{"wrong token", "/debug/threads/" + psid + "?access_token=nope", nil, http.StatusUnauthorized, nil, 0, "invalid access token"},
		{"Bearer token", "/debug/threads/" + psid, bearer(apiToken), http.StatusOK, []uint64{3, 2, 1}, 0, ""},
		{"limit=1", "/debug/threads/" + psid + "?limit=1", bearer(apiToken), http.StatusOK, []uint64{3}, 3, ""},
		{"limit=2 before=3", "/debug/threads/" + psid + "?limit=2&before=3", bearer(apiToken), http.StatusOK, []uint64{2, 1}, 0, ""},
		{"page_id", "/debug/threads/" + psid + "?page_id=" + pageID, bearer(apiToken), http.StatusOK, []uint64{3, 2, 1}, 0, ""},
		{"limit=0", "/debug/threads/" + psid + "?limit=0", bearer(apiToken), http.StatusBadRequest, nil, 0, `limit="0" must be a number from 1 to 500`},
		{"limit not a number", "/debug/threads/" + psid + "?limit=ten", bearer(apiToken), http.StatusBadRequest, nil, 0, `limit="ten"`},
		{"before not a number", "/debug/threads/" + psid + "?before=x", bearer(apiToken), http.StatusBadRequest, nil, 0, `before="x" must be a revision number`},
		{"unknown identity", "/debug/threads/7999999999999999", bearer(apiToken), http.StatusNotFound, nil, 0, "unknown identity 7999999999999999"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, tc.target, tc.header, nil)
			if tc.wantStatus != http.StatusOK {
				checkEnvelope(t, r, tc.wantStatus, tc.want)
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("answer = %v, want 200", r)
			}
			v := decode[threadJSON](t, r)
			var revs []uint64
			for _, tr := range v.Transitions {
				revs = append(revs, tr.Revision)
			}
			if !slices.Equal(revs, tc.wantRevs) || v.Before != tc.wantBefore {
				t.Errorf("transitions %v, transitions_before %d; want %v, %d", revs, v.Before, tc.wantRevs, tc.wantBefore)
			}
		})
	}
}

func TestDebugThreadList(t *testing.T) {
	f := newFixture(t)
	var bots, agents []string
	ms := time.Now().UnixMilli()
	for range 3 {
		psid := newPSID()
		bots = append(bots, psid)
		checkSuccess(t, f.postWebhook(t, customerWebhook(psid, "m_list_"+psid, time.UnixMilli(ms)), ringcxSecret))
	}
	for range 2 {
		psid := newPSID()
		agents = append(agents, psid)
		body := fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"pass_thread_control":{"previous_owner_app_id":%s,"new_owner_app_id":%s}}]}]}`,
			pageID, ms, psid, pageID, ms, botID, ringcxID)
		checkSuccess(t, f.postWebhook(t, []byte(body), ringcxSecret))
	}
	all := append(slices.Clone(bots), agents...)
	slices.Sort(all)

	tests := []struct {
		name      string
		query     url.Values
		wantPages []int // threads per page
		wantIDs   []string
		wantState string // every listed thread's state, if set
	}{
		{"state=bot, 2 per page", url.Values{"state": {"bot"}, "limit": {"2"}}, []int{2, 1}, bots, "bot"},
		{"state=agent and page_id, 1 per page", url.Values{"state": {"agent"}, "page_id": {pageID}, "limit": {"1"}}, []int{1, 1}, agents, "agent"},
		{"page_id, 2 per page", url.Values{"page_id": {pageID}, "limit": {"2"}}, []int{2, 2, 1}, all, ""},
		{"no filter", nil, []int{5}, all, ""},
		{"exactly one full page", url.Values{"state": {"bot"}, "limit": {"3"}}, []int{3}, bots, "bot"},
		{"state=idle", url.Values{"state": {"idle"}}, []int{0}, nil, ""},
		{"another page", url.Values{"page_id": {otherPage}}, []int{0}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				pages []int
				ids   []string
			)
			q := clone(tc.query)
			for len(pages) < 10 {
				r := f.api(t, http.MethodGet, "/debug/threads", q)
				if r.status != http.StatusOK {
					t.Fatalf("list %v = %v, want 200", q, r)
				}
				if !bytes.Contains(r.body, []byte(`"threads":[`)) {
					t.Errorf("body %s has no threads array", r.body)
				}
				list := decode[threadListJSON](t, r)
				pages = append(pages, len(list.Threads))
				for _, th := range list.Threads {
					ids = append(ids, th.IdentityForeignID)
					if th.PageID != pageID || (tc.wantState != "" && th.State != tc.wantState) {
						t.Errorf("listed thread %s on page %s in %s, want page %s state %q", th.IdentityForeignID, th.PageID, th.State, pageID, tc.wantState)
					}
				}
				if list.NextCursor == "" {
					break
				}
				q.Set("cursor", list.NextCursor)
			}
			if !slices.Equal(pages, tc.wantPages) || !slices.Equal(ids, tc.wantIDs) {
				t.Errorf("pages %v with %v, want %v with %v", pages, ids, tc.wantPages, tc.wantIDs)
			}
		})
	}

	t.Run("cursor from another list", func(t *testing.T) {
		first := decode[threadListJSON](t, f.api(t, http.MethodGet, "/debug/threads", url.Values{"state": {"bot"}, "limit": {"1"}}))
		if first.NextCursor == "" {
			t.Fatalf("state=bot&limit=1 returned no cursor")
		}
		cases := []struct {
			name  string
			query url.Values
		}{
			{"state=bot cursor used with state=agent", url.Values{"state": {"agent"}, "cursor": {first.NextCursor}}},
			{"made-up cursor with state", url.Values{"state": {"bot"}, "cursor": {"AAAA"}}},
			{"made-up cursor without filter", url.Values{"cursor": {"AAAA"}}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				checkEnvelope(t, f.api(t, http.MethodGet, "/debug/threads", tc.query), http.StatusBadRequest, "cursor")
			})
		}
	})

	errs := []struct {
		name       string
		target     string
		wantStatus int
		want       string
	}{
		{"unknown state", "/debug/threads?access_token=" + apiToken + "&state=sleeping", http.StatusBadRequest, `unknown state "sleeping"`},
		{"bad cursor", "/debug/threads?access_token=" + apiToken + "&cursor=%21%21%21", http.StatusBadRequest, `cursor "!!!" is not one this list returned`},
		{"limit=0", "/debug/threads?access_token=" + apiToken + "&limit=0", http.StatusBadRequest, "limit"},
		{"limit over 500", "/debug/threads?access_token=" + apiToken + "&limit=501", http.StatusBadRequest, "from 1 to 500"},
		{"no token", "/debug/threads", http.StatusUnauthorized, "missing access token"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.do(t, http.MethodGet, tc.target, nil, nil), tc.wantStatus, tc.want)
		})
	}
}
