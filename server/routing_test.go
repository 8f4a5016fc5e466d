package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// TestDebugShowsLearnedRouting switches the page to Conversation Routing at
// Meta while the service runs: the next handover succeeds, /debug shows the
// page's routing and where it was learned, and the metric counts it once.
func TestDebugShowsLearnedRouting(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	f.waitState(t, psid, states.Bot, botID)

	// The page as the simulator has it, switched to cr with RingCX allowed
	// to take.
	rec := httptest.NewRecorder()
	f.sim.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/_sim/pages/"+pageID, nil))
	var pc sim.PageConfig
	if err := json.Unmarshal(rec.Body.Bytes(), &pc); err != nil {
		t.Fatalf("simulator page %s: %v", rec.Body, err)
	}
	on := true
	pc.Mode = "cr"
	for i := range pc.Apps {
		if pc.Apps[i].AppID == ringcxID {
			pc.Apps[i].TakeoverAllowed = &on
		}
	}
	if err := f.sim.PutPage(pc); err != nil {
		t.Fatal(err)
	}

	if r := f.api(t, http.MethodPost, "/1.0/bots/handover", handoverQuery(psid, "bot", "agent", "")); !checkSuccess(t, r) {
		t.Fatalf("handover after the switch: %s", r)
	}
	f.waitState(t, psid, states.Agent, ringcxID)

	r := f.api(t, http.MethodGet, "/debug/threads/"+psid, nil)
	var v struct {
		Routing string `json:"routing"`
		Table   string `json:"table"`
		Page    struct {
			Routing string `json:"routing"`
			Learned struct {
				Routing     string `json:"routing"`
				RoutingFrom string `json:"routing_from"`
			} `json:"learned"`
		} `json:"page"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
	if v.Routing != "conversation_routing" || v.Table != "cr-bot" || v.Page.Learned.Routing != "conversation_routing" || v.Page.Learned.RoutingFrom == "" {
		t.Errorf("debug view: %s; want conversation_routing learned from Meta, table cr-bot", r.body)
	}
	page := f.api(t, http.MethodGet, "/debug/threads/"+psid+"/view", nil)
	if !strings.Contains(string(page.body), "conversation_routing") || !strings.Contains(string(page.body), "learned from Meta") {
		t.Errorf("the debug page does not show the learned routing")
	}
	if got := metricValue(t, f, "threadctl_page_learned_total", "fact", "routing"); got != 1 {
		t.Errorf("threadctl_page_learned_total{fact=routing} = %v, want 1", got)
	}
}

// metricValue reads one series of a counter.
func metricValue(t *testing.T, f *fixture, name, label, value string) float64 {
	t.Helper()
	mfs, err := f.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
