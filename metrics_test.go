package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/server"
)

// TestMetricsAfterWorkflow plays the bot-primary workflow on a private
// threadctl and checks the metrics it left: Prometheus's naming rules, and
// the values the workflow must have produced.
func TestMetricsAfterWorkflow(t *testing.T) {
	w, _ := diagrams.FindWorkflow("bot-primary")
	app, cleanup, err := startPrivate(context.Background(), w, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	ep := diagrams.Endpoints{Threadctl: "http://" + app.Addr(), Sim: app.SimURL(), Token: demoAPIToken, PageID: demoPageID, RingCXAppID: demoRingCXAppID, BotAppID: demoBotAppID}
	if _, err := diagrams.Play(context.Background(), w, ep, "7000000000000042"); err != nil {
		t.Fatal(err)
	}
	reg := app.metrics.Registry()
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// Start-up asked Meta how the page routes conversations. The customer
	// wrote (idle → bot), the bot handed over (bot → pending-request), Meta
	// passed (→ agent), the agent opened an intervention (agent_engage, no
	// change) and closed it (→ idle).
	want := `
threadctl_graph_calls_total{call="messaging_feature_status",outcome="ok"} 1
threadctl_graph_calls_total{call="release_thread_control",outcome="ok"} 1
threadctl_graph_calls_total{call="request_thread_control",outcome="ok"} 1
threadctl_graph_calls_total{call="send_message",outcome="ok"} 1
threadctl_handover_requests_total{direction="to_agent",outcome="success"} 1
threadctl_threads{state="idle"} 1
threadctl_transitions_total{event="agent_engage",from="agent",outcome="no_change",table="bot",to="agent"} 1
threadctl_transitions_total{event="control_passed",from="pending-request",outcome="applied",table="bot",to="agent"} 1
threadctl_transitions_total{event="customer_message",from="idle",outcome="applied",table="bot",to="bot"} 1
threadctl_transitions_total{event="handover_to_agent",from="bot",outcome="applied",table="bot",to="pending-request"} 1
threadctl_transitions_total{event="intervention_closed",from="agent",outcome="applied",table="bot",to="idle"} 1
threadctl_webhook_events_total{kind="message",outcome="applied"} 1
threadctl_webhook_events_total{kind="pass_thread_control",outcome="applied"} 1
`
	got := nonZero(t, reg, "threadctl_threads", "threadctl_handover_requests_total", "threadctl_transitions_total", "threadctl_graph_calls_total", "threadctl_webhook_events_total")
	if strings.TrimSpace(got) != strings.TrimSpace(want) {
		t.Errorf("metrics after the workflow:\n%s\nwant:\n%s", got, want)
	}
	if got := testutil.CollectAndCount(reg, "threadctl_control_grant_wait_seconds"); got != 1 {
		t.Errorf("control grant wait series = %d, want 1", got)
	}
}

// nonZero renders the series of the named metrics whose value is not 0, one
// a line, sorted: name{label="value",…} value.
func nonZero(t *testing.T, reg prometheus.Gatherer, names ...string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if v == 0 {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), v))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestMetricsExistAtZero checks that the series of known label values exist
// before the first event, so that rate() and alerts see them at once.
func TestMetricsExistAtZero(t *testing.T) {
	m := server.NewMetrics(func() (int, time.Time) { return 0, time.Time{} }, time.Now)
	for _, tc := range []struct {
		name   string
		labels map[string]string
	}{
		{"threadctl_graph_calls_total", map[string]string{"call": "take_thread_control", "outcome": "network_error"}},
		{"threadctl_graph_calls_total", map[string]string{"call": "send_message", "outcome": "ok"}},
		{"threadctl_handover_requests_total", map[string]string{"direction": "to_bot", "outcome": "502"}},
		{"threadctl_webhook_events_total", map[string]string{"kind": "pass_thread_control", "outcome": "failed"}},
		{"threadctl_page_learned_total", map[string]string{"fact": "takeover"}},
	} {
		mfs, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() != tc.name {
				continue
			}
			for _, s := range mf.GetMetric() {
				match := true
				for _, l := range s.GetLabel() {
					if want, ok := tc.labels[l.GetName()]; ok && want != l.GetValue() {
						match = false
					}
				}
				found = found || match
			}
		}
		if !found {
			t.Errorf("%s%v does not exist before the first event", tc.name, tc.labels)
		}
	}
}
