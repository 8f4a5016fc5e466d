package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/threadctl/threadctl/diagrams"
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
	// wrote (idle → bot), the bot handed over (bot →
	// pending-request), Meta passed (→ agent), the agent opened an
	// intervention (agent_engage, no change) and closed it (→ idle).
	want := `
# HELP threadctl_threads Threads in each state, kept from the store's counts and every transition.
# TYPE threadctl_threads gauge
threadctl_threads{state="agent"} 0
threadctl_threads{state="bot"} 0
threadctl_threads{state="idle"} 1
threadctl_threads{state="pending-request"} 0
# HELP threadctl_handover_requests_total Bots API handover calls, by direction (to_agent, to_bot) and outcome (success or the error's HTTP status).
# TYPE threadctl_handover_requests_total counter
threadctl_handover_requests_total{direction="to_agent",outcome="success"} 1
# HELP threadctl_transitions_total Events recorded on threads, by the table that decided (the page's routing and primary: bot, ringcx, none, cr-bot, …), event, source and destination state, and outcome (applied, no_change, ignored, failed).
# TYPE threadctl_transitions_total counter
threadctl_transitions_total{event="agent_engage",from="agent",outcome="no_change",table="bot",to="agent"} 1
threadctl_transitions_total{event="control_passed",from="pending-request",outcome="applied",table="bot",to="agent"} 1
threadctl_transitions_total{event="customer_message",from="idle",outcome="applied",table="bot",to="bot"} 1
threadctl_transitions_total{event="handover_to_agent",from="bot",outcome="applied",table="bot",to="pending-request"} 1
threadctl_transitions_total{event="intervention_closed",from="agent",outcome="applied",table="bot",to="idle"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "threadctl_threads", "threadctl_handover_requests_total", "threadctl_transitions_total"); err != nil {
		t.Error(err)
	}
	want = `
# HELP threadctl_graph_calls_total Graph API calls made by the RingCX app, by call and outcome (ok, not_owner, rate_limited, meta_error, server_error, network_error), retries included in one call.
# TYPE threadctl_graph_calls_total counter
threadctl_graph_calls_total{call="messaging_feature_status",outcome="ok"} 1
threadctl_graph_calls_total{call="release_thread_control",outcome="ok"} 1
threadctl_graph_calls_total{call="request_thread_control",outcome="ok"} 1
threadctl_graph_calls_total{call="send_message",outcome="ok"} 1
# HELP threadctl_webhook_events_total Meta webhook events, by kind and outcome (applied, no_change, ignored, duplicate, failed, skipped, error).
# TYPE threadctl_webhook_events_total counter
threadctl_webhook_events_total{kind="message",outcome="applied"} 1
threadctl_webhook_events_total{kind="pass_thread_control",outcome="applied"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "threadctl_graph_calls_total", "threadctl_webhook_events_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(reg, "threadctl_control_grant_wait_seconds"); got != 1 {
		t.Errorf("control grant wait series = %d, want 1", got)
	}
}
