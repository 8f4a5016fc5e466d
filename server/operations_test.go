package server_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/threadctl/threadctl/messenger"
)

// Operations (SPEC.md §3.4): probes, unknown routes and methods, and every
// endpoint while the store is unavailable.

func TestOperations(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		method     string
		target     string
		header     http.Header
		wantStatus int
		want       string
	}{
		{"healthz without token", http.MethodGet, "/healthz", nil, http.StatusOK, "Success"},
		{"readyz without token", http.MethodGet, "/readyz", nil, http.StatusOK, "Success"},
		{"unknown route with token", http.MethodGet, "/no/such/route", bearer(apiToken), http.StatusNotFound, "no such endpoint"},
		{"unknown Bots API version", http.MethodPost, "/2.0/bots/handover", bearer(apiToken), http.StatusNotFound, "no such endpoint"},
		{"unknown route without token", http.MethodGet, "/no/such/route", nil, http.StatusNotFound, "no such endpoint"},
		{"root without token", http.MethodGet, "/", nil, http.StatusNotFound, "no such endpoint"},
		{"wrong method on healthz without token", http.MethodPost, "/healthz", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{"wrong method on the webhook without token", http.MethodPut, "/webhooks/messenger", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{"wrong method on the Bots API", http.MethodGet, "/1.0/bots/handover", bearer(apiToken), http.StatusMethodNotAllowed, "method not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.do(t, tc.method, tc.target, tc.header, nil), tc.wantStatus, tc.want)
		})
	}
}

func TestStoreUnavailable(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	f.closeStore(t)

	fresh := newPSID()
	webhook := func(psid string) (http.Header, []byte) {
		body := customerWebhook(psid, "m_closed_store_"+psid, time.Now())
		sig, _ := messenger.Sign(body, ringcxSecret)
		return http.Header{"X-Hub-Signature-256": {sig}, "Content-Type": {"application/json"}}, body
	}
	newHook, newBody := webhook(fresh)
	knownHook, knownBody := webhook(psid)
	tests := []struct {
		name   string
		method string
		target string
		header http.Header
		body   []byte
		want   string
	}{
		{"handover", http.MethodPost, "/1.0/bots/handover?access_token=" + apiToken + "&" + handoverQuery(psid, "bot", "agent", "").Encode(), nil, nil, "the store is unavailable"},
		{"handover to bot", http.MethodPost, "/1.0/bots/handover?" + handoverQuery(psid, "agent", "bot", botID).Encode(), bearer(apiToken), nil, "the store is unavailable"},
		{"open intervention", http.MethodPost, "/1.0/interventions?access_token=" + apiToken + "&identity_foreign_id=" + psid, nil, nil, "the store is unavailable"},
		{"create content", http.MethodPost, "/1.0/contents?access_token=" + apiToken + "&identity_foreign_id=" + psid + "&body=hi", nil, nil, "the store is unavailable"},
		{"debug thread", http.MethodGet, "/debug/threads/" + psid + "?access_token=" + apiToken, nil, nil, "the store is unavailable"},
		{"debug list", http.MethodGet, "/debug/threads?access_token=" + apiToken, nil, nil, "the store is unavailable"},
		{"webhook for a new thread", http.MethodPost, "/webhooks/messenger", newHook, newBody, "the store is unavailable"},
		{"webhook for a known thread", http.MethodPost, "/webhooks/messenger", knownHook, knownBody, "the store is unavailable"},
		{"readyz", http.MethodGet, "/readyz", nil, nil, "not ready"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, tc.method, tc.target, tc.header, bytes.NewReader(tc.body))
			checkEnvelope(t, r, http.StatusServiceUnavailable, tc.want)
		})
	}
	t.Run("healthz stays up", func(t *testing.T) {
		checkSuccess(t, f.do(t, http.MethodGet, "/healthz", nil, nil))
	})
}
