package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// blockingTarget answers 200 to every request once release is closed, and 500 to bodies
// starting with "fail"; until then requests wait (or end with the caller).
func blockingTarget(t *testing.T, release <-chan struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if string(b) == "fail" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// sendAt produces an ordered http command whose input event happened at eventTime.
func (e *poolEnv) sendAt(t *testing.T, id, trig, url string, eventTime time.Time, retry *Retry) {
	t.Helper()
	spec, _ := json.Marshal(HTTPRequest{URL: url, Method: http.MethodPost, Body: []byte(id)})
	e.produce(t, &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: trig, Type: "http", Spec: spec, Retry: retry, Ordered: true,
		Events: []EventRef{{Dependency: "d", ID: id, Time: eventTime}}})
}

// histogramCount reads the observation count and sum of one child of a histogram family.
func histogramCount(t *testing.T, m *metrics.Metrics, family, sensor, trig string) (uint64, float64) {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["sensor"] == sensor && labels["trigger"] == trig {
				return s.GetHistogram().GetSampleCount(), s.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

// TestExecutorMetricsPendingRunningAndDone: a command in progress is running and the one behind
// it pending; once both finish the gauges are back to 0, the end-to-end latency is observed
// from the event times, and Argo's counters count each attempt and command. A restarted member
// counts the outcomes it restores.
func TestExecutorMetricsPendingRunningAndDone(t *testing.T) {
	env := newPoolEnv(t)
	release := make(chan struct{})
	srv := blockingTarget(t, release)
	m, stop := env.runMember(t, "m1")
	pending, running := m.CommandsPending.WithLabelValues("s", "t"), m.CommandsRunning.WithLabelValues("s", "t")

	eventTime := time.Now().Add(-time.Minute)
	env.sendAt(t, "first", "t", srv.URL, eventTime, nil)
	env.sendAt(t, "second", "t", srv.URL, eventTime, nil)
	eventually(t, "one command running and one pending", func() bool {
		return testutil.ToFloat64(running) == 1 && testutil.ToFloat64(pending) == 1
	})
	close(release)
	eventually(t, "both commands", func() bool { return testutil.ToFloat64(m.Executions.WithLabelValues("s", "t")) == 2 })
	if p, r := testutil.ToFloat64(pending), testutil.ToFloat64(running); p != 0 || r != 0 {
		t.Errorf("pending %v, running %v after the work drained; want 0 and 0", p, r)
	}
	if n, sum := histogramCount(t, m, "kevents_end_to_end_seconds", "s", "t"); n != 2 || sum < 2*time.Minute.Seconds() {
		t.Errorf("end-to-end: %d observations summing %vs; want 2, each at least the minute since the event", n, sum)
	}
	if v := testutil.ToFloat64(m.ArgoActionTriggered.WithLabelValues("ns", "s", "t")); v != 2 {
		t.Errorf("argo_events_action_triggered_total = %v, want 2", v)
	}

	// A command failing both its attempts: Argo counts each failed attempt and the command once.
	env.sendAt(t, "fail", "f", srv.URL, eventTime, &Retry{Steps: 2, Duration: 10 * time.Millisecond, Factor: 1})
	eventually(t, "the failure", func() bool { return testutil.ToFloat64(m.Failures.WithLabelValues("s", "f")) == 1 })
	if v := testutil.ToFloat64(m.ArgoActionFailed.WithLabelValues("ns", "s", "f")); v != 2 {
		t.Errorf("argo_events_action_failed_total = %v, want 2 (one per attempt)", v)
	}
	if v := testutil.ToFloat64(m.ArgoActionRetriesFailed.WithLabelValues("ns", "s", "f")); v != 1 {
		t.Errorf("argo_events_action_retries_failed_total = %v, want 1", v)
	}
	if n, _ := histogramCount(t, m, "kevents_end_to_end_seconds", "s", "f"); n != 0 {
		t.Errorf("end-to-end observed %d times for a failed command; want 0", n)
	}
	if p, r := testutil.ToFloat64(m.CommandsPending.WithLabelValues("s", "f")), testutil.ToFloat64(m.CommandsRunning.WithLabelValues("s", "f")); p != 0 || r != 0 {
		t.Errorf("pending %v, running %v after the failure; want 0 and 0", p, r)
	}

	// Restarted, the member restores the three outcomes before it skips a repeat.
	stop()
	m, _ = env.runMember(t, "m1")
	env.sendAt(t, "first", "t", srv.URL, eventTime, nil)
	eventually(t, "the repeat to be skipped", func() bool { return testutil.ToFloat64(m.Skipped.WithLabelValues("s", "t")) == 1 })
	if v := testutil.ToFloat64(m.ExecutorRestoreRecords); v != 3 {
		t.Errorf("kevents_executor_restore_records_total = %v, want 3", v)
	}
}

// TestExecutorMetricsDropOnStop: a member that stops with a command running and one queued
// holds neither any more.
func TestExecutorMetricsDropOnStop(t *testing.T) {
	env := newPoolEnv(t)
	srv := blockingTarget(t, make(chan struct{})) // never released
	m, stop := env.runMember(t, "m1")
	pending, running := m.CommandsPending.WithLabelValues("s", "t"), m.CommandsRunning.WithLabelValues("s", "t")
	env.sendAt(t, "first", "t", srv.URL, time.Now(), nil)
	env.sendAt(t, "second", "t", srv.URL, time.Now(), nil)
	eventually(t, "one command running and one pending", func() bool {
		return testutil.ToFloat64(running) == 1 && testutil.ToFloat64(pending) == 1
	})
	stop()
	if p, r := testutil.ToFloat64(pending), testutil.ToFloat64(running); p != 0 || r != 0 {
		t.Errorf("pending %v, running %v after the member stopped; want 0 and 0", p, r)
	}
}

// TestExecutorMetricsRevokeDropsQueued: commands queued in a partition the member loses leave
// the pending gauge at once, not when their key's worker gets to them; forgetting them later
// does not count them twice.
func TestExecutorMetricsRevokeDropsQueued(t *testing.T) {
	topo, err := topology.New(topology.Partitions(2))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	p := &pool{cfg: ExecutorConfig{Topology: topo, Metrics: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		parts: map[int32]*partition{}, keys: map[string]*keyQueue{}}
	var jobs []*job
	for n := int32(0); n < 2; n++ {
		part := &partition{num: n, done: map[string]bool{}, finished: map[int64]bool{}, next: -1, committed: -1, running: map[string]bool{}}
		p.parts[n] = part
		// The key's worker is busy elsewhere: its jobs stay queued.
		q := &keyQueue{running: true}
		p.keys[fmt.Sprintf("key%d", n)] = q
		for i := int64(0); i < 2; i++ {
			j := &job{part: part, offset: i, cmd: Command{ID: fmt.Sprintf("p%d-%d", n, i), Sensor: "s", Trigger: "t"}}
			part.running[j.cmd.ID] = true
			p.inflight++
			p.setState(j, jobPending)
			q.jobs = append(q.jobs, j)
			jobs = append(jobs, j)
		}
	}
	pending := m.CommandsPending.WithLabelValues("s", "t")
	if v := testutil.ToFloat64(pending); v != 4 {
		t.Fatalf("pending = %v, want 4", v)
	}
	p.revoke(context.Background(), nil, map[string][]int32{topo.Commands(): {0}})
	if v := testutil.ToFloat64(pending); v != 2 {
		t.Errorf("pending = %v after losing partition 0, want the 2 of partition 1", v)
	}
	for _, j := range jobs[:2] {
		p.forget(j) // what the key's worker does with them
	}
	if v := testutil.ToFloat64(pending); v != 2 {
		t.Errorf("pending = %v after the worker forgot the dropped jobs, want still 2", v)
	}
}
