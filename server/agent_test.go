package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// The agent side (SPEC.md §3.2): interventions and contents.

func TestInterventionLifecycle(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	var iv interventionJSON

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"open", func(t *testing.T) {
			r := f.api(t, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}})
			if r.status != http.StatusCreated {
				t.Fatalf("open = %v, want 201", r)
			}
			iv = decode[interventionJSON](t, r)
			if iv.ID == "" || iv.IdentityForeignID != psid || iv.PageID != pageID || iv.Status != "open" || iv.Closed || iv.ClosedAt != nil {
				t.Errorf("opened intervention = %+v, want an open one on %s/%s", iv, pageID, psid)
			}
			// agent_engage while the bot owns the thread (primary bot): request.
			if iv.ThreadState != string(states.Pending) {
				t.Errorf("thread_state = %q, want %q", iv.ThreadState, states.Pending)
			}
			f.waitState(t, psid, states.Agent, ringcxID)
			if got := f.thread(t, psid).Intervention; got != iv.ID {
				t.Errorf("thread's intervention = %q, want %q", got, iv.ID)
			}
		}},
		{"open twice", func(t *testing.T) {
			r := f.api(t, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}})
			checkEnvelope(t, r, http.StatusConflict, "already open", iv.ID)
		}},
		{"get open", func(t *testing.T) {
			r := f.api(t, http.MethodGet, "/1.0/interventions/"+iv.ID, nil)
			if r.status != http.StatusOK {
				t.Fatalf("get = %v, want 200", r)
			}
			if got := decode[interventionJSON](t, r); got.ID != iv.ID || got.Status != "open" || got.Closed {
				t.Errorf("got %+v, want intervention %s open", got, iv.ID)
			}
		}},
		{"close", func(t *testing.T) {
			r := f.do(t, http.MethodPut, "/1.0/interventions/"+iv.ID+"/close", bearer(apiToken), nil)
			if r.status != http.StatusOK {
				t.Fatalf("close = %v, want 200", r)
			}
			got := decode[interventionJSON](t, r)
			if got.ID != iv.ID || got.Status != "closed" || !got.Closed || got.ClosedAt == nil {
				t.Errorf("closed intervention = %+v, want %s closed with closed_at", got, iv.ID)
			}
			iv = got
			// intervention_closed in agent: release → idle.
			f.waitState(t, psid, states.Idle, "")
			if got := f.thread(t, psid).Intervention; got != "" {
				t.Errorf("thread's intervention after close = %q, want none", got)
			}
		}},
		{"close again is idempotent", func(t *testing.T) {
			before := f.thread(t, psid).Revision
			r := f.api(t, http.MethodPut, "/1.0/interventions/"+iv.ID+"/close", nil)
			if r.status != http.StatusOK {
				t.Fatalf("second close = %v, want 200", r)
			}
			got := decode[interventionJSON](t, r)
			if got.Status != "closed" || got.ClosedAt == nil || !got.ClosedAt.Equal(*iv.ClosedAt) {
				t.Errorf("second close = %+v, want it unchanged (closed_at %v)", got, iv.ClosedAt)
			}
			if after := f.thread(t, psid).Revision; after != before {
				t.Errorf("revision after the second close = %d, want %d", after, before)
			}
		}},
		{"get closed", func(t *testing.T) {
			got := decode[interventionJSON](t, f.api(t, http.MethodGet, "/1.0/interventions/"+iv.ID, nil))
			if got.Status != "closed" || !got.Closed {
				t.Errorf("got %+v, want closed", got)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
}

func TestInterventionErrors(t *testing.T) {
	f := newFixture(t)
	unknown := newPSID()
	tests := []struct {
		name       string
		method     string
		path       string
		query      url.Values
		wantStatus int
		want       string
	}{
		{"open without identity", http.MethodPost, "/1.0/interventions", nil, http.StatusBadRequest, "identity_foreign_id is required"},
		{"open on an unknown identity", http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {unknown}}, http.StatusNotFound, "unknown identity " + unknown},
		{"get unknown", http.MethodGet, "/1.0/interventions/0123456789abcdef01234567", nil, http.StatusNotFound, "unknown intervention 0123456789abcdef01234567"},
		{"close unknown", http.MethodPut, "/1.0/interventions/0123456789abcdef01234567/close", nil, http.StatusNotFound, "unknown intervention 0123456789abcdef01234567"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.api(t, tc.method, tc.path, tc.query), tc.wantStatus, tc.want)
		})
	}
	t.Run("without token", func(t *testing.T) {
		checkEnvelope(t, f.do(t, http.MethodGet, "/1.0/interventions/0123456789abcdef01234567", nil, nil), http.StatusUnauthorized, "missing access token")
	})
}

func TestInterventionMetaFailure(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	f.sim.SetFault(sim.Fault{Call: "request_thread_control", Status: 400, Code: 100, Message: "Invalid parameter (simulated)", Count: 3, AppID: ringcxID})
	defer f.sim.ClearFaults()

	r := f.api(t, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}})
	checkEnvelope(t, r, http.StatusBadGateway, "request_thread_control", "code 100", "Invalid parameter (simulated)")
	f.waitState(t, psid, states.Bot, botID)
	if got := f.thread(t, psid).Intervention; got != "" {
		t.Errorf("thread's intervention after Meta refused = %q, want none opened", got)
	}
	// Nothing is opened: a new intervention can be opened once Meta agrees.
	f.sim.ClearFaults()
	f.openIntervention(t, psid)
	f.waitState(t, psid, states.Agent, ringcxID)
}

func TestContentErrors(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	unknown := newPSID()
	tests := []struct {
		name       string
		query      url.Values
		wantStatus int
		want       string
	}{
		{"missing identity", url.Values{"body": {"hi"}}, http.StatusBadRequest, "identity_foreign_id is required"},
		{"missing body", url.Values{"identity_foreign_id": {psid}}, http.StatusBadRequest, "body is required"},
		{"blank body", url.Values{"identity_foreign_id": {psid}, "body": {"   "}}, http.StatusBadRequest, "body is required"},
		{"body too long", url.Values{"identity_foreign_id": {psid}, "body": {strings.Repeat("é", engine.MaxContentBody+1)}}, http.StatusBadRequest, "at most 2000"},
		{"unknown identity", url.Values{"identity_foreign_id": {unknown}, "body": {"hi"}}, http.StatusNotFound, "unknown identity " + unknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.thread(t, psid).Revision
			checkEnvelope(t, f.api(t, http.MethodPost, "/1.0/contents", tc.query), tc.wantStatus, tc.want)
			f.settle(t)
			if got := f.thread(t, psid); got.Revision != before || got.State != states.Bot {
				t.Errorf("thread after a refused content: %s rev %d, want bot rev %d", got.State, got.Revision, before)
			}
		})
	}
	t.Run("get unknown", func(t *testing.T) {
		checkEnvelope(t, f.api(t, http.MethodGet, "/1.0/contents/0123456789abcdef01234567", nil), http.StatusNotFound, "unknown content 0123456789abcdef01234567")
	})
}

func TestContentSynchronisation(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		setup      func(t *testing.T, psid string)
		asForm     bool
		wantStatus string // synchronization_status in the 201 answer
	}{
		{"RingCX owns the thread", f.toAgent, false, engine.SyncSynced},
		{"RingCX owns the thread, body as a form field", f.toAgent, true, engine.SyncSynced},
		{"the bot owns the thread", f.customer, false, engine.SyncPending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			text := "agent reply to " + psid
			var r reply
			if tc.asForm {
				r = f.do(t, http.MethodPost, "/1.0/contents?identity_foreign_id="+psid, http.Header{
					"Authorization": {"Bearer " + apiToken}, "Content-Type": {"application/x-www-form-urlencoded"},
				}, strings.NewReader(url.Values{"body": {text}}.Encode()))
			} else {
				r = f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {text}})
			}
			if r.status != http.StatusCreated {
				t.Fatalf("create content = %v, want 201", r)
			}
			ct := decode[contentJSON](t, r)
			if ct.ID == "" || ct.Body != text || ct.IdentityForeignID != psid || ct.PageID != pageID {
				t.Errorf("content = %+v, want body %q on %s/%s", ct, text, pageID, psid)
			}
			if ct.SynchronizationStatus != tc.wantStatus {
				t.Errorf("synchronization_status = %q, want %q (%+v)", ct.SynchronizationStatus, tc.wantStatus, ct)
			}
			if tc.wantStatus == engine.SyncPending && ct.ForeignID != "" {
				t.Errorf("foreign_id of a pending content = %q, want none", ct.ForeignID)
			}

			// Poll until synchronised (at once when RingCX owned the thread;
			// after the reference bot passes control otherwise).
			eventually(t, func() (bool, string) {
				ct = decode[contentJSON](t, f.api(t, http.MethodGet, "/1.0/contents/"+ct.ID, nil))
				return ct.SynchronizationStatus == engine.SyncSynced, fmt.Sprintf("content %+v, want synced", ct)
			})
			if ct.ForeignID == "" || ct.SynchronizedAt == nil || ct.SynchronizationError != "" {
				t.Errorf("synced content = %+v, want a foreign_id, synchronized_at and no error", ct)
			}
			f.waitState(t, psid, states.Agent, ringcxID)
			sent := slices.ContainsFunc(f.sim.Thread(pageID, psid).Messages, func(m sim.ThreadMessage) bool {
				return m.MID == ct.ForeignID && m.From == ringcxID && m.Text == text
			})
			if !sent {
				t.Errorf("Meta's thread %+v has no message %s from RingCX with the content's text", f.sim.Thread(pageID, psid).Messages, ct.ForeignID)
			}
		})
	}
}

func TestContentSynchronisationFails(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		// setup brings the thread where the content is created, and returns
		// what happens after it is created.
		setup      func(t *testing.T, psid string) func(t *testing.T)
		wantStatus string // synchronization_status in the 201 answer
		wantState  states.State
		wantError  []string
	}{
		{
			name: "Meta refuses the request for control",
			setup: func(t *testing.T, psid string) func(t *testing.T) {
				f.customer(t, psid)
				f.sim.SetFault(sim.Fault{Call: "request_thread_control", Status: 400, Code: 100, Message: "Invalid parameter (simulated)", Count: 3, AppID: ringcxID})
				t.Cleanup(f.sim.ClearFaults)
				return func(*testing.T) {}
			},
			wantStatus: engine.SyncFailed, wantState: states.Bot,
			wantError: []string{"could not get control", "code 100", "Invalid parameter (simulated)"},
		},
		{
			name: "the intervention is closed while the request is pending",
			setup: func(t *testing.T, psid string) func(t *testing.T) {
				f.customer(t, psid)
				f.failBotPass(t)
				iv := f.openIntervention(t, psid)
				f.waitState(t, psid, states.Pending, botID)
				return func(t *testing.T) {
					if r := f.api(t, http.MethodPut, "/1.0/interventions/"+iv.ID+"/close", nil); r.status != http.StatusOK {
						t.Fatalf("close intervention: %v", r)
					}
				}
			},
			wantStatus: engine.SyncPending, wantState: states.Bot,
			wantError: []string{"did not get control", "intervention_closed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			then := tc.setup(t, psid)
			r := f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {"never sent"}})
			if r.status != http.StatusCreated {
				t.Fatalf("create content = %v, want 201", r)
			}
			ct := decode[contentJSON](t, r)
			if ct.SynchronizationStatus != tc.wantStatus {
				t.Errorf("synchronization_status = %q, want %q", ct.SynchronizationStatus, tc.wantStatus)
			}
			then(t)
			f.waitState(t, psid, tc.wantState, botID)
			ct = decode[contentJSON](t, f.api(t, http.MethodGet, "/1.0/contents/"+ct.ID, nil))
			if ct.SynchronizationStatus != engine.SyncFailed || ct.ForeignID != "" {
				t.Errorf("content = %+v, want failed and never sent", ct)
			}
			for _, w := range tc.wantError {
				if !strings.Contains(ct.SynchronizationError, w) {
					t.Errorf("synchronization_error = %q, want it to contain %q", ct.SynchronizationError, w)
				}
			}
			v := decode[threadJSON](t, f.api(t, http.MethodGet, "/debug/threads/"+psid, nil))
			if len(v.QueuedContents) != 0 {
				t.Errorf("queued_contents = %+v, want none", v.QueuedContents)
			}
		})
	}
}
