package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New()
	addr, err := m.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before any stage = %d %q, want 503 starting", code, body)
	}
	kafkaDown := errors.New("broker unreachable")
	var down bool
	m.AddReadyCheck("kafka", func(context.Context) error {
		if down {
			return kafkaDown
		}
		return nil
	})
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with passing checks = %d, want 200", code)
	}
	down = true
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "kafka: broker unreachable") {
		t.Errorf("/readyz with a failing check = %d %q, want 503 naming the check", code, body)
	}

	m.EventsPublished.WithLabelValues("hooks", "push").Add(3)
	m.CommandsEmitted.WithLabelValues("deploy", "notify").Inc()
	_, body := get(t, base+"/metrics")
	for _, want := range []string{
		`kevents_source_events_published_total{event="push",eventsource="hooks"} 3`,
		`kevents_sensor_commands_emitted_total{sensor="deploy",trigger="notify"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// summaryCount reads the observation count of one child of a summary family, as a scrape would.
func summaryCount(t *testing.T, m *Metrics, family string, labels map[string]string) uint64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
	next:
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return s.GetSummary().GetSampleCount()
		}
	}
	return 0
}

// TestArgoMetricsCountedWithKevents: one call counts kevents' metric and Argo's, Argo's with the
// namespace as a label (default when the object names none).
func TestArgoMetricsCountedWithKevents(t *testing.T) {
	m := New()
	m.Published("team", "hooks", "push", 3)
	m.PublishFailed("", "hooks", "push", 1)
	if v := testutil.ToFloat64(m.EventsPublished.WithLabelValues("hooks", "push")); v != 3 {
		t.Errorf("kevents published = %v, want 3", v)
	}
	if v := testutil.ToFloat64(m.ArgoEventsSent.WithLabelValues("team", "hooks", "push")); v != 3 {
		t.Errorf("argo events sent = %v, want 3", v)
	}
	if v := testutil.ToFloat64(m.PublishFailures.WithLabelValues("hooks", "push")); v != 1 {
		t.Errorf("kevents publish failures = %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.ArgoEventsSentFailed.WithLabelValues("default", "hooks", "push")); v != 1 {
		t.Errorf("argo events sent failed in default = %v, want 1", v)
	}

	m.EventServicesRunning("team", "hooks", 2)
	m.EventServicesRunning("team", "hooks", -2)
	if v := testutil.ToFloat64(m.ArgoEventServiceRunning.WithLabelValues("team", "hooks")); v != 0 {
		t.Errorf("event services running = %v after start and stop, want 0", v)
	}

	// A command failing once, then succeeding; another failing after its two attempts.
	failed := errors.New("500")
	m.Attempt("team", "deploy", "notify", 3*time.Millisecond, failed)
	m.Attempt("team", "deploy", "notify", time.Millisecond, nil)
	m.Finished("team", "deploy", "notify", 10*time.Millisecond, nil)
	m.Attempt("team", "deploy", "notify", time.Millisecond, failed)
	m.Attempt("team", "deploy", "notify", time.Millisecond, failed)
	m.Finished("team", "deploy", "notify", 5*time.Millisecond, failed)
	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"kevents executions", m.Executions.WithLabelValues("deploy", "notify"), 1},
		{"kevents failures", m.Failures.WithLabelValues("deploy", "notify"), 1},
		{"argo action triggered", m.ArgoActionTriggered.WithLabelValues("team", "deploy", "notify"), 1},
		{"argo action retries failed", m.ArgoActionRetriesFailed.WithLabelValues("team", "deploy", "notify"), 1},
		{"argo action failed (per attempt)", m.ArgoActionFailed.WithLabelValues("team", "deploy", "notify"), 3},
	} {
		if v := testutil.ToFloat64(c.c); v != c.want {
			t.Errorf("%s = %v, want %v", c.name, v, c.want)
		}
	}
	if n := summaryCount(t, m, "argo_events_action_duration_milliseconds", map[string]string{"namespace": "team", "sensor_name": "deploy", "trigger_name": "notify"}); n != 4 {
		t.Errorf("action duration observations = %d, want one per attempt (4)", n)
	}
}

// TestFilteredNotCountedPublished: events an EventSource filter dropped, which their source then
// reports published, are left out of the published counters, for that event only.
func TestFilteredNotCountedPublished(t *testing.T) {
	m := New()
	m.Filtered("ns", "hooks", "pr", "false", 2)
	m.Filtered("ns", "hooks", "pr", "error", 1)
	m.Published("ns", "hooks", "other", 1) // another event: counted in full
	m.Published("ns", "hooks", "pr", 2)    // both are dropped ones
	m.Published("ns", "hooks", "pr", 3)    // one more dropped one, two real ones
	m.Published("ns", "hooks", "pr", 4)    // all real
	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"filtered false", m.EventsFiltered.WithLabelValues("hooks", "pr", "false"), 2},
		{"filtered error", m.EventsFiltered.WithLabelValues("hooks", "pr", "error"), 1},
		{"published", m.EventsPublished.WithLabelValues("hooks", "pr"), 6},
		{"argo sent", m.ArgoEventsSent.WithLabelValues("ns", "hooks", "pr"), 6},
		{"published other", m.EventsPublished.WithLabelValues("hooks", "other"), 1},
	} {
		if v := testutil.ToFloat64(c.c); v != c.want {
			t.Errorf("%s = %v, want %v", c.name, v, c.want)
		}
	}
	if len(m.filtered) != 0 || m.filteredTotal.Load() != 0 {
		t.Errorf("credits left: %v (total %d)", m.filtered, m.filteredTotal.Load())
	}
}
