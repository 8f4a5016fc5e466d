package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
)

// Meta's webhooks (SPEC.md §3.3): the handshake, signatures, parsing and
// what the events change.

func TestWebhookVerify(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		query      url.Values
		wantStatus int
		want       string // the echoed challenge, or part of the error message
	}{
		{"good token", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {verifyToken}, "hub.challenge": {"1158201444"}}, http.StatusOK, "1158201444"},
		{"wrong token", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"nope"}, "hub.challenge": {"1158201444"}}, http.StatusForbidden, "hub.verify_token does not match"},
		{"missing token", url.Values{"hub.mode": {"subscribe"}, "hub.challenge": {"1158201444"}}, http.StatusForbidden, "hub.verify_token does not match"},
		{"wrong mode", url.Values{"hub.mode": {"unsubscribe"}, "hub.verify_token": {verifyToken}, "hub.challenge": {"1158201444"}}, http.StatusForbidden, `hub.mode is "unsubscribe"`},
		{"missing challenge", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {verifyToken}}, http.StatusForbidden, "hub.challenge is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, "/webhooks/messenger?"+tc.query.Encode(), nil, nil)
			if tc.wantStatus == http.StatusOK {
				if r.status != http.StatusOK || string(r.body) != tc.want {
					t.Errorf("answer = %v, want HTTP 200 with body exactly %q", r, tc.want)
				}
				return
			}
			checkEnvelope(t, r, tc.wantStatus, tc.want)
		})
	}
	t.Run("the simulator's handshake", func(t *testing.T) {
		if err := f.sim.VerifyWebhook(context.Background(), pageID, ringcxID); err != nil {
			t.Errorf("VerifyWebhook: %v", err)
		}
	})
}

func (f *fixture) threadExists(t *testing.T, psid string) bool {
	t.Helper()
	_, err := f.eng.Thread(context.Background(), engine.ThreadKey{PageID: pageID, PSID: psid})
	switch engine.ErrorCode(err) {
	case "":
		return true
	case engine.CodeNotFound:
		return false
	}
	t.Fatalf("thread %s: %v", psid, err)
	return false
}

func TestWebhookSignature(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		header     func(body []byte) http.Header
		wantStatus int
		want       string
	}{
		{"missing signature", func([]byte) http.Header { return nil }, http.StatusForbidden, "missing X-Hub-Signature-256"},
		{"legacy sha1 signature only", func(b []byte) http.Header {
			_, sha1 := messenger.Sign(b, ringcxSecret)
			return http.Header{"X-Hub-Signature": {sha1}}
		}, http.StatusForbidden, "missing X-Hub-Signature-256"},
		{"signed with another app's secret", func(b []byte) http.Header {
			sig, _ := messenger.Sign(b, "bot-secret")
			return http.Header{"X-Hub-Signature-256": {sig}}
		}, http.StatusForbidden, "does not match the body"},
		{"signature of another body", func(b []byte) http.Header {
			sig, _ := messenger.Sign(append(b, ' '), ringcxSecret)
			return http.Header{"X-Hub-Signature-256": {sig}}
		}, http.StatusForbidden, "does not match the body"},
		{"sha1 value in the sha256 header", func(b []byte) http.Header {
			_, sha1 := messenger.Sign(b, ringcxSecret)
			return http.Header{"X-Hub-Signature-256": {sha1}}
		}, http.StatusForbidden, "want sha256=<hex>"},
		{"not hex", func([]byte) http.Header {
			return http.Header{"X-Hub-Signature-256": {"sha256=" + strings.Repeat("zz", 32)}}
		}, http.StatusForbidden, "not a hex SHA-256"},
		{"good signature", func(b []byte) http.Header {
			sig, _ := messenger.Sign(b, ringcxSecret)
			return http.Header{"X-Hub-Signature-256": {sig}}
		}, http.StatusOK, "Success"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			body := customerWebhook(psid, "m_sig_"+psid, time.Now())
			r := f.do(t, http.MethodPost, "/webhooks/messenger", tc.header(body), bytes.NewReader(body))
			checkEnvelope(t, r, tc.wantStatus, tc.want)
			if tc.wantStatus != http.StatusOK {
				if !strings.Contains(string(r.body), "nothing was applied") {
					t.Errorf("message %s does not say that nothing was applied", r.body)
				}
			}
			if got, want := f.threadExists(t, psid), tc.wantStatus == http.StatusOK; got != want {
				t.Errorf("thread %s exists = %v, want %v", psid, got, want)
			}
		})
	}
}

func TestWebhookUnparsable(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		body string
		want string
	}{
		{"not JSON", `{"object":"page","entry":[`, "not valid JSON"},
		{"object is not page", `{"object":"user","entry":[{"id":"1","messaging":[]}]}`, `webhook object is "user", want "page"`},
		{"no entry", `{"object":"page","entry":[]}`, "webhook has no entry"},
		{"entry without page id", `{"object":"page","entry":[{"time":1,"messaging":[]}]}`, "webhook entry 0 has no page id"},
		{"event without customer", `{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"recipient":{"id":"` + pageID + `"},"timestamp":1,"message":{"mid":"m_x","text":"hi"}}]}]}`, "webhook entry 0 event 0 (message) has no customer id"},
		{"app id neither number nor string", `{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"sender":{"id":"1"},"recipient":{"id":"` + pageID + `"},"timestamp":1,"pass_thread_control":{"new_owner_app_id":true}}]}]}`, "id: want a string, an integer or null"},
		{"fractional app id", `{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"sender":{"id":"1"},"recipient":{"id":"` + pageID + `"},"timestamp":1,"pass_thread_control":{"new_owner_app_id":2.5}}]}]}`, "is not an integer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.postWebhook(t, []byte(tc.body), ringcxSecret), http.StatusBadRequest, tc.want)
		})
	}
}

func TestWebhookMultiEntry(t *testing.T) {
	f := newFixture(t)
	a, b, c := newPSID(), newPSID(), newPSID()
	ms := time.Now().UnixMilli()
	// One POST, four entries: a customer writes (ids as numbers); the bot
	// passes b's thread to RingCX (ids as numbers), then bot 2 takes it
	// (ids as strings); the bot passes c's thread to RingCX (ids as
	// strings, page id as a string); a page threadctl does not know is
	// skipped.
	body := []byte(fmt.Sprintf(`{"object":"page","entry":[
{"id":%[1]s,"time":%[5]d,"standby":[{"sender":{"id":%[2]s},"recipient":{"id":%[1]s},"timestamp":%[5]d,"message":{"mid":"m_multi_a","text":"hi"}}]},
{"id":%[1]s,"time":%[5]d,"messaging":[{"sender":{"id":%[3]s},"recipient":{"id":%[1]s},"timestamp":%[5]d,"pass_thread_control":{"previous_owner_app_id":%[7]s,"new_owner_app_id":%[6]s,"metadata":"m"}}]},
{"id":"%[1]s","time":%[9]d,"standby":[{"sender":{"id":"%[3]s"},"recipient":{"id":"%[1]s"},"timestamp":%[9]d,"take_thread_control":{"previous_owner_app_id":"%[6]s","new_owner_app_id":"%[8]s","metadata":"m"}}]},
{"id":"%[1]s","time":%[5]d,"messaging":[{"sender":{"id":"%[4]s"},"recipient":{"id":"%[1]s"},"timestamp":%[5]d,"pass_thread_control":{"previous_owner_app_id":"%[7]s","new_owner_app_id":"%[6]s"}}]},
{"id":%[10]s,"time":%[5]d,"standby":[{"sender":{"id":"%[2]s"},"recipient":{"id":"%[10]s"},"timestamp":%[5]d,"message":{"mid":"m_multi_other_page","text":"hi"}}]}
]}`, pageID, a, b, c, ms, ringcxID, botID, bot2ID, ms+1, otherPage))

	want := map[string]struct {
		state, owner string
		revision     uint64
	}{
		a: {"bot", botID, 1},
		b: {"bot", bot2ID, 2},
		c: {"agent", ringcxID, 1},
	}
	check := func(t *testing.T) {
		t.Helper()
		for psid, w := range want {
			r := f.api(t, http.MethodGet, "/debug/threads/"+psid, nil)
			if r.status != http.StatusOK {
				t.Errorf("debug %s = %v, want 200", psid, r)
				continue
			}
			v := decode[threadJSON](t, r)
			if v.State != w.state || v.OwnerAppID != w.owner || v.Revision != w.revision {
				t.Errorf("thread %s = %s owner %s rev %d, want %s owner %s rev %d", psid, v.State, v.OwnerAppID, v.Revision, w.state, w.owner, w.revision)
			}
			for _, tr := range v.Transitions {
				if tr.Outcome != engine.OutcomeApplied {
					t.Errorf("thread %s: transition %d %s outcome %s (%+v), want applied", psid, tr.Revision, tr.Event, tr.Outcome, tr)
				}
			}
		}
	}
	t.Run("applied", func(t *testing.T) {
		checkSuccess(t, f.postWebhook(t, body, ringcxSecret))
		check(t)
	})
	t.Run("unknown page skipped", func(t *testing.T) {
		_, err := f.eng.Thread(context.Background(), engine.ThreadKey{PageID: otherPage, PSID: a})
		if engine.ErrorCode(err) != engine.CodeNotFound {
			t.Errorf("thread %s on page %s: err %v, want not found", a, otherPage, err)
		}
	})
	t.Run("duplicate changes nothing", func(t *testing.T) {
		checkSuccess(t, f.postWebhook(t, body, ringcxSecret))
		check(t)
	})
}

func TestWebhookAppRoles(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	demo := engine.Page{ID: pageID, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID, bot2ID}}

	tests := []struct {
		name  string
		roles string // the app_roles object
		want  states.Primary
		tries int // how often to try (the result must not vary)
	}{
		{"RingCX becomes primary", `{"` + ringcxID + `":["primary_receiver"]}`, states.PrimaryRingCX, 1},
		{"the primary bot app becomes secondary", `{"` + botID + `":["secondary_receiver"]}`, states.PrimaryNone, 1},
		{"another bot app becomes primary", `{"` + bot2ID + `":["primary_receiver"]}`, states.PrimaryBot, 1},
		{"RingCX primary and the bot secondary in one event", `{"` + ringcxID + `":["primary_receiver"],"` + botID + `":["secondary_receiver"]}`, states.PrimaryRingCX, 20},
		{"another bot primary and the primary bot secondary in one event", `{"` + bot2ID + `":["primary_receiver"],"` + botID + `":["secondary_receiver"]}`, states.PrimaryBot, 20},
	}
	applied := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range tc.tries {
				applied++
				if err := f.eng.SetPage(context.Background(), demo); err != nil {
					t.Fatal(err)
				}
				ms := time.Now().UnixMilli()
				body := fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"recipient":{"id":"%s"},"timestamp":%d,"app_roles":%s}]}]}`,
					pageID, ms, pageID, ms, tc.roles)
				checkSuccess(t, f.postWebhook(t, []byte(body), ringcxSecret))

				r := f.api(t, http.MethodGet, "/debug/threads/"+psid, nil)
				var v struct {
					Primary       string   `json:"primary"`
					PrimaryAtLast string   `json:"primary_at_last_transition"`
					Available     []string `json:"available_events"`
				}
				if err := json.Unmarshal(r.body, &v); err != nil {
					t.Fatalf("decoding %s: %v", r.body, err)
				}
				if v.Primary != string(tc.want) || v.PrimaryAtLast != "bot" {
					t.Fatalf("primary %q (at the last transition %q), want %s (bot)", v.Primary, v.PrimaryAtLast, tc.want)
				}
				if got, want := v.Available, eventNames(states.Available(states.HOP(tc.want), states.Bot)); !slices.Equal(got, want) {
					t.Errorf("available_events = %v, want the %s table's %v", got, tc.want, want)
				}
			}
		})
	}
	if got := webhookEvents(t, f.metrics, "app_roles", "applied"); got != float64(applied) {
		t.Errorf("threadctl_webhook_events_total{kind=app_roles,outcome=applied} = %v, want %d", got, applied)
	}
}

// webhookEvents reads one series of threadctl_webhook_events_total.
func webhookEvents(t *testing.T, m *server.Metrics, kind, outcome string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "threadctl_webhook_events_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["outcome"] == outcome {
				return s.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func eventNames(es []states.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e)
	}
	return out
}

func TestWebhookBodyLimit(t *testing.T) {
	f := newFixture(t)
	const limit = 1 << 20 // server.Config's default BodyLimit
	psid := newPSID()
	valid := customerWebhook(psid, "m_limit_"+psid, time.Now())
	atLimit := append(slices.Clone(valid), bytes.Repeat([]byte(" "), limit-len(valid))...)
	over := append(slices.Clone(atLimit), ' ')

	tests := []struct {
		name          string
		body          []byte
		knownLength   bool
		wantStatus    int
		want          string
		wantThreadNow bool
	}{
		{"over the limit, with Content-Length", over, true, http.StatusRequestEntityTooLarge, "over the limit of 1048576 bytes", false},
		{"over the limit, chunked", over, false, http.StatusRequestEntityTooLarge, "over the limit of 1048576 bytes", false},
		{"at the limit", atLimit, true, http.StatusOK, "Success", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig, _ := messenger.Sign(tc.body, ringcxSecret)
			req := httptest.NewRequest(http.MethodPost, "/webhooks/messenger", bytes.NewReader(tc.body))
			if !tc.knownLength {
				req = httptest.NewRequest(http.MethodPost, "/webhooks/messenger", io.MultiReader(bytes.NewReader(tc.body)))
				req.ContentLength = -1
			}
			req.Header.Set("X-Hub-Signature-256", sig)
			rec := httptest.NewRecorder()
			f.srv.Handler().ServeHTTP(rec, req)
			checkEnvelope(t, reply{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}, tc.wantStatus, tc.want)
			if got := f.threadExists(t, psid); got != tc.wantThreadNow {
				t.Errorf("thread %s exists = %v, want %v", psid, got, tc.wantThreadNow)
			}
		})
	}
}
