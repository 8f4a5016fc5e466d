package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/states"
)

// Webhook event kinds and outcomes, as threadctl_webhook_events_total
// counts them.
var (
	webhookKinds = []string{
		messenger.KindMessage, messenger.KindPostback, messenger.KindPassThreadControl, messenger.KindTakeThreadControl,
		messenger.KindRequestThreadControl, messenger.KindAppRoles, messenger.KindEcho, messenger.KindRead, messenger.KindDelivery, messenger.KindUnknown,
	}
	webhookOutcomes = []string{
		engine.OutcomeApplied, engine.OutcomeNoChange, engine.OutcomeIgnored, engine.OutcomeDuplicate,
		engine.OutcomeFailed, engine.OutcomeSkipped, engine.OutcomeError,
	}
)

// Metrics are threadctl's Prometheus metrics, on one registry. Its methods
// are the hooks the engine (as its Observer), the Graph client, the store
// and the HTTP server call. No label names a thread.
type Metrics struct {
	reg *prometheus.Registry

	transitions    *prometheus.CounterVec
	handovers      *prometheus.CounterVec
	graphCalls     *prometheus.CounterVec
	graphDuration  *prometheus.HistogramVec
	webhookEvents  *prometheus.CounterVec
	pageLearned    *prometheus.CounterVec
	graphInFlight  *prometheus.GaugeVec
	pruned         *prometheus.CounterVec
	pruneLastRun   prometheus.Gauge
	threads        *prometheus.GaugeVec
	controlWait    prometheus.Histogram
	commitDuration prometheus.Histogram
	commitBatch    prometheus.Histogram
	httpRequests   *prometheus.CounterVec
	httpDuration   *prometheus.HistogramVec
}

var _ engine.Observer = (*Metrics)(nil)

// NewMetrics registers threadctl's metrics, and Go's and the process's, on
// a new registry. pending reports the outstanding requests for control.
func NewMetrics(pending func() (n int, oldest time.Time), now func() time.Time) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := promauto.With(reg)
	m := &Metrics{reg: reg}
	m.transitions = f.NewCounterVec(prometheus.CounterOpts{
		Name: "threadctl_transitions_total",
		Help: "Events recorded on threads, by the table that decided (the page's routing and primary: bot, ringcx, none, cr-bot, …), event, source and destination state, and outcome (applied, no_change, ignored, failed).",
	}, []string{"table", "event", "from", "to", "outcome"})
	m.handovers = f.NewCounterVec(prometheus.CounterOpts{
		Name: "threadctl_handover_requests_total",
		Help: "Bots API handover calls, by direction (to_agent, to_bot) and outcome (success or the error's HTTP status).",
	}, []string{"direction", "outcome"})
	m.graphCalls = f.NewCounterVec(prometheus.CounterOpts{
		Name: "threadctl_graph_calls_total",
		Help: "Graph API calls made by the RingCX app, by call and outcome (ok, not_owner, rate_limited, meta_error, server_error, network_error), retries included in one call.",
	}, []string{"call", "outcome"})
	m.graphDuration = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "threadctl_graph_call_duration_seconds",
		Help:    "Duration of Graph API calls, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
	}, []string{"call"})
	m.webhookEvents = f.NewCounterVec(prometheus.CounterOpts{
		Name: "threadctl_webhook_events_total",
		Help: "Meta webhook events, by kind and outcome (applied, no_change, ignored, duplicate, failed, skipped, error).",
	}, []string{"kind", "outcome"})
	m.pageLearned = f.NewCounterVec(prometheus.CounterOpts{
		Name: "threadctl_page_learned_total",
		Help: "Changes to how threadctl sees a page that Meta's answers taught (a refusal, messaging_feature_status), by fact: routing (Handover Protocol or Conversation Routing) or takeover (RingCX's takeover setting).",
	}, []string{"fact"})
	for _, fact := range []string{"routing", "takeover"} {
		m.pageLearned.WithLabelValues(fact)
	}
	m.graphInFlight = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "threadctl_graph_calls_in_flight",
		Help: "Graph API calls in flight, by page (bounded per page; more wait for a slot).",
	}, []string{"page_id"})
	// Series of known label values exist from the start, at 0, so that
	// rate() and alerts see them before the first event.
	for _, call := range messenger.Calls {
		for _, outcome := range messenger.Outcomes {
			m.graphCalls.WithLabelValues(call, outcome)
		}
	}
	for _, direction := range []string{"to_agent", "to_bot"} {
		for _, outcome := range []string{"success", "400", "401", "404", "409", "502", "503"} {
			m.handovers.WithLabelValues(direction, outcome)
		}
	}
	for _, kind := range webhookKinds {
		for _, outcome := range webhookOutcomes {
			m.webhookEvents.WithLabelValues(kind, outcome)
		}
	}
	m.pruned = f.NewCounterVec(prometheus.CounterOpts{
		Name: "threadctl_pruned_total",
		Help: "Records the retention pruner deleted, by kind: history (entries beyond a thread's newest kept, or too old), contents (synced or failed) and interventions (closed) past the retention period.",
	}, []string{"kind"})
	for _, kind := range []string{"history", "contents", "interventions"} {
		m.pruned.WithLabelValues(kind)
	}
	m.pruneLastRun = f.NewGauge(prometheus.GaugeOpts{
		Name: "threadctl_prune_last_run_timestamp_seconds",
		Help: "When the retention pruner last finished a pass (Unix time); 0 before the first.",
	})
	m.threads = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "threadctl_threads",
		Help: "Threads in each state, kept from the store's counts and every transition.",
	}, []string{"state"})
	for _, s := range states.All {
		m.threads.WithLabelValues(string(s))
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "threadctl_pending_requests",
		Help: "Requests for control waiting for the owner to pass.",
	}, func() float64 { n, _ := pending(); return float64(n) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "threadctl_oldest_pending_request_age_seconds",
		Help: "Age of the oldest request for control still waiting; 0 when none waits.",
	}, func() float64 {
		if _, oldest := pending(); !oldest.IsZero() {
			return now().Sub(oldest).Seconds()
		}
		return 0
	})
	m.controlWait = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "threadctl_control_grant_wait_seconds",
		Help:    "Time from RingCX's request for control to control passed.",
		Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
	})
	m.commitDuration = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "threadctl_store_commit_duration_seconds",
		Help:    "Duration of group commits to the write-ahead log (each carries one or more commits), fdatasync included.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
	})
	m.commitBatch = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "threadctl_store_commits_per_transaction",
		Help:    "How many commits shared one group commit to the write-ahead log.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	m.httpRequests = f.NewCounterVec(prometheus.CounterOpts{
		Name: "threadctl_http_requests_total",
		Help: "HTTP requests, by route pattern, method and status.",
	}, []string{"route", "method", "status"})
	m.httpDuration = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "threadctl_http_request_duration_seconds",
		Help:    "Duration of HTTP requests, by route pattern and method.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 3, 10),
	}, []string{"route", "method"})
	return m
}

// Registry is the registry the metrics are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus's formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SetThreadCounts sets the per-state gauge, from the store's counts at start.
func (m *Metrics) SetThreadCounts(counts map[states.State]int) {
	for _, s := range states.All {
		m.threads.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

// Transition counts a recorded event and keeps the per-state gauge.
func (m *Metrics) Transition(t engine.TransitionInfo) {
	m.transitions.WithLabelValues(t.Table.Name(), string(t.Event), string(t.From), string(t.To), t.Outcome).Inc()
	switch {
	case t.Created:
		m.threads.WithLabelValues(string(t.To)).Inc()
	case t.From != t.To:
		m.threads.WithLabelValues(string(t.From)).Dec()
		m.threads.WithLabelValues(string(t.To)).Inc()
	}
}

// PageLearned counts a change Meta's answers made to how threadctl sees a
// page.
func (m *Metrics) PageLearned(pageID, fact string) { m.pageLearned.WithLabelValues(fact).Inc() }

// Pruned counts what a pass of the retention pruner deleted.
func (m *Metrics) Pruned(history, contents, interventions int) {
	m.pruned.WithLabelValues("history").Add(float64(history))
	m.pruned.WithLabelValues("contents").Add(float64(contents))
	m.pruned.WithLabelValues("interventions").Add(float64(interventions))
	m.pruneLastRun.SetToCurrentTime()
}

// GraphInFlight counts a page's Graph API calls in flight.
func (m *Metrics) GraphInFlight(pageID string, delta int) {
	m.graphInFlight.WithLabelValues(pageID).Add(float64(delta))
}

// ControlGranted observes the wait from a request to control passed.
func (m *Metrics) ControlGranted(wait time.Duration) { m.controlWait.Observe(wait.Seconds()) }

// GraphCall observes one Graph API call (the messenger client's hook).
func (m *Metrics) GraphCall(call, outcome string, d time.Duration) {
	m.graphCalls.WithLabelValues(call, outcome).Inc()
	m.graphDuration.WithLabelValues(call).Observe(d.Seconds())
}

// StoreStats is what the store did since it opened (see store.Stats).
type StoreStats struct {
	LogAppends, LogRecords, LogSyncs, LogBytes uint64
	Checkpoints                                uint64
	PageWrites                                 int64
	LayerKeys                                  int
}

// ObserveStore exports the store's counters, read from stats at each scrape.
func (m *Metrics) ObserveStore(stats func() StoreStats) {
	f := promauto.With(m.reg)
	counter := func(name, help string, v func(StoreStats) float64) {
		f.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return v(stats()) })
	}
	counter("threadctl_log_appends_total", "Group commits appended to the write-ahead log.", func(s StoreStats) float64 { return float64(s.LogAppends) })
	counter("threadctl_log_records_total", "Records appended to the write-ahead log.", func(s StoreStats) float64 { return float64(s.LogRecords) })
	counter("threadctl_log_syncs_total", "fdatasyncs of the write-ahead log.", func(s StoreStats) float64 { return float64(s.LogSyncs) })
	counter("threadctl_log_bytes_total", "Bytes written to the write-ahead log.", func(s StoreStats) float64 { return float64(s.LogBytes) })
	counter("threadctl_checkpoints_total", "Checkpoints written to bbolt (one transaction, two fdatasyncs, each).", func(s StoreStats) float64 { return float64(s.Checkpoints) })
	counter("threadctl_bbolt_page_writes_total", "Pages bbolt wrote.", func(s StoreStats) float64 { return float64(s.PageWrites) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "threadctl_log_unapplied_keys", Help: "Keys changed in the log and not yet checkpointed to bbolt.",
	}, func() float64 { return float64(stats().LayerKeys) })
}

// StoreCommit observes one bbolt transaction (the store's hook).
func (m *Metrics) StoreCommit(d time.Duration, commits int) {
	m.commitDuration.Observe(d.Seconds())
	m.commitBatch.Observe(float64(commits))
}

// HTTPRequest observes one HTTP request (the server's hook).
func (m *Metrics) HTTPRequest(route, method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(route, method).Observe(d.Seconds())
}

// WebhookEvent counts one Meta webhook event by kind and outcome.
func (m *Metrics) WebhookEvent(kind, outcome string) {
	if m == nil {
		return
	}
	m.webhookEvents.WithLabelValues(kind, outcome).Inc()
}

func (m *Metrics) handover(direction, outcome string) {
	if m == nil {
		return
	}
	m.handovers.WithLabelValues(direction, outcome).Inc()
}
