// Package metrics holds kevents' Prometheus metrics and the /metrics, /healthz and /readyz
// endpoints. Every stage takes a *Metrics so tests can read counters from their own registry.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
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
	EventsMatched   *prometheus.CounterVec // sensor: events that passed a dependency's filters
	CommandsEmitted *prometheus.CounterVec // sensor: commands committed to the commands topic
	JoinPendingKeys prometheus.Gauge       // sensor: join keys waiting in the partitions this member owns
	Executions      *prometheus.CounterVec // executor: commands executed successfully
	Failures        *prometheus.CounterVec // executor: commands that failed after their retries
	Skipped         *prometheus.CounterVec // executor: redelivered commands already finished
	ExecSeconds     *prometheus.HistogramVec

	mu     sync.Mutex
	checks map[string]func(context.Context) error
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
	m := &Metrics{
		Registry:        r,
		EventsReceived:  counter("source_events_received_total", "Events a source accepted from its outside system.", "eventsource", "event"),
		EventsPublished: counter("source_events_published_total", "Events Kafka acknowledged.", "eventsource", "event"),
		PublishFailures: counter("source_publish_failures_total", "Events Kafka did not acknowledge in time.", "eventsource", "event"),
		EventsMatched:   counter("sensor_events_matched_total", "Events that passed a dependency's filters.", "sensor", "dependency"),
		CommandsEmitted: counter("sensor_commands_emitted_total", "Trigger commands committed to the commands topic.", "sensor", "trigger"),
		Executions:      counter("executor_executions_total", "Trigger commands executed successfully.", "sensor", "trigger"),
		Failures:        counter("executor_failures_total", "Trigger commands that failed after their retries.", "sensor", "trigger"),
		Skipped:         counter("executor_skipped_total", "Redelivered trigger commands skipped because they had finished.", "sensor", "trigger"),
		ExecSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kevents", Name: "executor_execution_seconds", Help: "Time to execute a trigger command.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sensor", "trigger"}),
		checks: map[string]func(context.Context) error{},
	}
	m.JoinPendingKeys = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kevents", Name: "sensor_join_pending_keys",
		Help: "Join keys waiting for the rest of their condition in the partitions this member owns."})
	r.MustRegister(m.ExecSeconds, m.JoinPendingKeys)
	return m
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
