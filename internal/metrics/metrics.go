// Package metrics holds kevents' Prometheus metrics and the /metrics, /healthz and /readyz
// endpoints. Every stage takes a *Metrics so tests can read counters from their own registry.
//
// Next to kevents' own metrics it serves Argo Events' (argo_events_*, as of v1.9), counted at
// the same points, so dashboards and alerts written for Argo keep working. Argo sets namespace
// as a constant label per process; one kevents process serves many namespaces, so here it is a
// label of each series.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the counters of every stage.
type Metrics struct {
	Registry *prometheus.Registry

	EventsReceived  *prometheus.CounterVec // source: events accepted from the outside system
	EventsPublished *prometheus.CounterVec // source: events Kafka acknowledged
	PublishFailures *prometheus.CounterVec // source: events Kafka did not acknowledge
	EventsFiltered  *prometheus.CounterVec // source: events an EventSource filter dropped; count them through Filtered
	SourceUp        *prometheus.GaugeVec   // source: 1 while an event reaches its outside server; set it through SourceConnected
	EventsMatched   *prometheus.CounterVec // sensor: events that passed a dependency's filters
	CommandsEmitted *prometheus.CounterVec // sensor: commands committed to the commands topic
	JoinPendingKeys prometheus.Gauge       // sensor: join keys waiting in the partitions this member owns
	Executions      *prometheus.CounterVec // executor: commands executed successfully
	Failures        *prometheus.CounterVec // executor: commands that failed after their retries
	Skipped         *prometheus.CounterVec // executor: redelivered commands already finished
	ExecSeconds     *prometheus.HistogramVec
	EndToEnd        *prometheus.HistogramVec // executor: first input event to command succeeded
	CommandsPending *prometheus.GaugeVec     // executor: queued, or waiting for a retry, rate limit or slot
	CommandsRunning *prometheus.GaugeVec     // executor: an attempt in progress

	SensorRestoreRecords      prometheus.Counter // sensor: state records read while restoring
	SensorRestoringPartitions prometheus.Gauge   // sensor: state partitions being restored now
	ExecutorRestoreRecords    prometheus.Counter // executor: executed records read while restoring

	ConsumerLag *ConsumerLag // the lag of this process's consumer groups, asked on each scrape

	// Argo Events' metrics; count them through Published, PublishFailed, EventServicesRunning,
	// Attempt and Finished.
	ArgoEventsSent          *prometheus.CounterVec
	ArgoEventsSentFailed    *prometheus.CounterVec
	ArgoEventServiceRunning *prometheus.GaugeVec
	ArgoActionTriggered     *prometheus.CounterVec
	ArgoActionFailed        *prometheus.CounterVec
	ArgoActionRetriesFailed *prometheus.CounterVec
	ArgoActionDuration      *prometheus.SummaryVec

	mu     sync.Mutex
	checks map[string]func(context.Context) error

	// Events Filtered counted that their source has yet to report through Published (see
	// Filtered); filteredTotal is their sum, so that Published takes no lock while it is 0.
	filteredMu    sync.Mutex
	filtered      map[[3]string]int
	filteredTotal atomic.Int64

	// down holds the source events that cannot reach their outside server (SourceConnected).
	healthMu sync.Mutex
	down     map[[3]string]sourceDown
}

// New returns metrics registered in a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kevents", Name: name, Help: help}, labels)
		r.MustRegister(c)
		return c
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kevents", Name: name, Help: help}, labels)
		r.MustRegister(g)
		return g
	}
	argoCounter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "argo_events", Name: name, Help: help}, labels)
		r.MustRegister(c)
		return c
	}
	argoSource := []string{"namespace", "eventsource_name", "event_name"}
	argoSensor := []string{"namespace", "sensor_name", "trigger_name"}
	m := &Metrics{
		Registry:        r,
		EventsReceived:  counter("source_events_received_total", "Events a source accepted from its outside system.", "eventsource", "event"),
		EventsPublished: counter("source_events_published_total", "Events Kafka acknowledged.", "eventsource", "event"),
		PublishFailures: counter("source_publish_failures_total", "Events Kafka did not acknowledge in time.", "eventsource", "event"),
		EventsFiltered: counter("source_events_filtered_total", "Events an EventSource's filter expression dropped (reason false) or could not evaluate (reason error); "+
			"they are acknowledged to the outside system and never reach Kafka.", "eventsource", "event", "reason"),
		SourceUp: gauge("source_connected", "1 while a source event is connected to its outside server (a queue, a broker, an API), 0 while it cannot reach it and retries; "+
			"absent for types with no connection of their own (webhooks, calendar).", "eventsource", "event"),
		EventsMatched:   counter("sensor_events_matched_total", "Events that passed a dependency's filters.", "sensor", "dependency"),
		CommandsEmitted: counter("sensor_commands_emitted_total", "Trigger commands committed to the commands topic.", "sensor", "trigger"),
		Executions:      counter("executor_executions_total", "Trigger commands executed successfully.", "sensor", "trigger"),
		Failures:        counter("executor_failures_total", "Trigger commands that failed after their retries.", "sensor", "trigger"),
		Skipped:         counter("executor_skipped_total", "Redelivered trigger commands skipped because they had finished.", "sensor", "trigger"),
		ExecSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kevents", Name: "executor_execution_seconds", Help: "Time to execute a trigger command.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sensor", "trigger"}),
		EndToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kevents", Name: "end_to_end_seconds",
			Help:    "Time from the earliest input event of a trigger command (its CloudEvent time) to the command succeeding.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17), // 1 ms to 65 s
		}, []string{"sensor", "trigger"}),
		CommandsPending: gauge("executor_commands_pending", "Trigger commands this member holds that are queued behind an earlier command of their key (an ordered trigger's) or waiting for a retry, the rate limit or a free slot.", "sensor", "trigger"),
		CommandsRunning: gauge("executor_commands_running", "Trigger commands this member is executing an attempt of now.", "sensor", "trigger"),
		SensorRestoreRecords: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kevents", Name: "sensor_restore_records_total",
			Help: "Records of the state topic read to restore join state (tombstones included) when this member took partitions over."}),
		SensorRestoringPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kevents", Name: "sensor_restoring_partitions",
			Help: "State topic partitions this member is restoring join state from now."}),
		ExecutorRestoreRecords: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kevents", Name: "executor_restore_records_total",
			Help: "Records of the executed topic read to restore finished command ids when this member took partitions over."}),
		ConsumerLag: &ConsumerLag{desc: prometheus.NewDesc("kevents_consumer_lag",
			"Records of a partition not yet committed by the consumer group of a stage this process runs, as the cluster reports it at scrape time.",
			[]string{"group", "topic", "partition"}, nil)},

		ArgoEventsSent:       argoCounter("events_sent_total", "Events Kafka acknowledged (Argo Events' name for kevents_source_events_published_total).", argoSource...),
		ArgoEventsSentFailed: argoCounter("events_sent_failed_total", "Events Kafka did not acknowledge (Argo Events' name for kevents_source_publish_failures_total).", argoSource...),
		ArgoEventServiceRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "argo_events", Name: "event_service_running_total",
			Help: "Events of an EventSource this process has started and not stopped yet."}, []string{"namespace", "eventsource_name"}),
		ArgoActionTriggered:     argoCounter("action_triggered_total", "Trigger commands executed successfully (Argo Events' name for kevents_executor_executions_total).", argoSensor...),
		ArgoActionFailed:        argoCounter("action_failed_total", "Failed attempts to execute a trigger command, each retry counted.", argoSensor...),
		ArgoActionRetriesFailed: argoCounter("action_retries_failed_total", "Trigger commands that failed after their retries (Argo Events' name for kevents_executor_failures_total).", argoSensor...),
		ArgoActionDuration: prometheus.NewSummaryVec(prometheus.SummaryOpts{Namespace: "argo_events", Name: "action_duration_milliseconds",
			Help: "Duration of each attempt to execute a trigger command, in milliseconds."}, argoSensor),
		checks:   map[string]func(context.Context) error{},
		filtered: map[[3]string]int{},
		down:     map[[3]string]sourceDown{},
	}
	m.JoinPendingKeys = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kevents", Name: "sensor_join_pending_keys",
		Help: "Join keys waiting for the rest of their condition in the partitions this member owns."})
	r.MustRegister(m.ExecSeconds, m.JoinPendingKeys, m.EndToEnd, m.SensorRestoreRecords, m.SensorRestoringPartitions,
		m.ExecutorRestoreRecords, m.ConsumerLag, m.ArgoEventServiceRunning, m.ArgoActionDuration)
	return m
}

// argoNamespace is the namespace label of Argo's metrics: an object that names none is in
// default, as in Kubernetes (and in the commands sensors emit).
func argoNamespace(namespace string) string {
	if namespace == "" {
		return "default"
	}
	return namespace
}

// Published counts n events of an EventSource that Kafka acknowledged. Of the n, it leaves out
// as many events of the same event as Filtered counted and Published has not left out yet.
func (m *Metrics) Published(namespace, eventSource, event string, n int) {
	n -= m.takeFiltered(namespace, eventSource, event, n)
	m.EventsPublished.WithLabelValues(eventSource, event).Add(float64(n))
	m.ArgoEventsSent.WithLabelValues(argoNamespace(namespace), eventSource, event).Add(float64(n))
}

// PublishFailed counts n events of an EventSource that Kafka did not acknowledge.
func (m *Metrics) PublishFailed(namespace, eventSource, event string, n int) {
	m.PublishFailures.WithLabelValues(eventSource, event).Add(float64(n))
	m.ArgoEventsSentFailed.WithLabelValues(argoNamespace(namespace), eventSource, event).Add(float64(n))
}

// Filtered counts n events of an EventSource that its filter dropped, for reason "false" (the
// expression was false) or "error" (it could not be evaluated). A source reports a dropped event
// as published, since its filter answers it as Kafka would have, so that it acknowledges its
// outside system: the next n events Published counts for this event are left out of the
// published counters, which keep meaning "acknowledged by Kafka" (Argo does not count filtered
// events as sent either). Under concurrent requests the events left out may be others of the
// same event than the filtered ones; the totals are the same.
func (m *Metrics) Filtered(namespace, eventSource, event, reason string, n int) {
	if n <= 0 {
		return
	}
	m.EventsFiltered.WithLabelValues(eventSource, event, reason).Add(float64(n))
	m.filteredMu.Lock()
	m.filtered[[3]string{namespace, eventSource, event}] += n
	m.filteredTotal.Add(int64(n))
	m.filteredMu.Unlock()
}

// takeFiltered returns how many of n published events Filtered counted already, at most n.
func (m *Metrics) takeFiltered(namespace, eventSource, event string, n int) int {
	if n <= 0 || m.filteredTotal.Load() == 0 {
		return 0
	}
	k := [3]string{namespace, eventSource, event}
	m.filteredMu.Lock()
	defer m.filteredMu.Unlock()
	c := min(m.filtered[k], n)
	if c == 0 {
		return 0
	}
	if m.filtered[k] -= c; m.filtered[k] == 0 {
		delete(m.filtered, k)
	}
	m.filteredTotal.Add(-int64(c))
	return c
}

// EventServicesRunning adds delta to the events of an EventSource this process runs.
func (m *Metrics) EventServicesRunning(namespace, eventSource string, delta int) {
	m.ArgoEventServiceRunning.WithLabelValues(argoNamespace(namespace), eventSource).Add(float64(delta))
}

// Attempt records one attempt to execute a trigger command, as Argo counts them: its duration,
// and a failure per failed attempt.
func (m *Metrics) Attempt(namespace, sensor, trigger string, took time.Duration, err error) {
	m.ArgoActionDuration.WithLabelValues(namespace, sensor, trigger).Observe(float64(took) / float64(time.Millisecond))
	if err != nil {
		m.ArgoActionFailed.WithLabelValues(namespace, sensor, trigger).Inc()
	}
}

// Finished records a trigger command that finished: err is nil when it succeeded, else the
// error it failed with after its retries; took spans every attempt.
func (m *Metrics) Finished(namespace, sensor, trigger string, took time.Duration, err error) {
	m.ExecSeconds.WithLabelValues(sensor, trigger).Observe(took.Seconds())
	if err != nil {
		m.Failures.WithLabelValues(sensor, trigger).Inc()
		m.ArgoActionRetriesFailed.WithLabelValues(namespace, sensor, trigger).Inc()
		return
	}
	m.Executions.WithLabelValues(sensor, trigger).Inc()
	m.ArgoActionTriggered.WithLabelValues(namespace, sensor, trigger).Inc()
}

// AddReadyCheck registers a check /readyz runs; the process is ready when every check passes.
func (m *Metrics) AddReadyCheck(name string, check func(context.Context) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checks[name] = check
}

// Ready runs every readiness check.
func (m *Metrics) Ready(ctx context.Context) error {
	m.mu.Lock()
	checks := make(map[string]func(context.Context) error, len(m.checks))
	for k, v := range m.checks {
		checks[k] = v
	}
	m.mu.Unlock()
	if len(checks) == 0 {
		return errors.New("starting")
	}
	var errs []error
	for name, check := range checks {
		if err := check(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Handler serves /metrics, /healthz (the process is alive) and /readyz (every stage is up).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := m.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve listens on addr and serves Handler until ctx ends. It returns the bound address once
// listening, so ":0" works in tests.
func (m *Metrics) Serve(ctx context.Context, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %q: %w", addr, err)
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr(), nil
}
