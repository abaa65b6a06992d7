package main

import (
	"encoding/json"
	"fmt"
	"github.com/kevents/kevents/sensor"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

const joinEventSource = `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: ci
spec:
  webhook:
    build:
      port: "%[1]d"
      endpoint: /build
      method: POST
    tests:
      port: "%[1]d"
      endpoint: /tests
      method: POST
`

const joinSensor = `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: release
spec:
  dependencies:
    - name: build
      eventSourceName: ci
      eventName: build
    - name: tests
      eventSourceName: ci
      eventName: tests
  triggers:
    - template:
        name: ship
        conditions: "build && tests"
        http:
          url: %s/ship
          payload:
            - src: {dependencyName: build, dataKey: body.artifact}
              dest: artifact
            - src: {dependencyName: tests, dataKey: body.passed}
              dest: passed
`

// TestJoinSurvivesRestart: an AND sensor fires only when both events arrived, with the latest
// of each, and a pending event survives a restart of kevents.
func TestJoinSurvivesRestart(t *testing.T) {
	sk := newSink(t)
	dir := t.TempDir()
	port := freePort(t)
	writeFile(t, filepath.Join(dir, "defs", "es.yaml"), fmt.Sprintf(joinEventSource, port))
	writeFile(t, filepath.Join(dir, "defs", "sensor.yaml"), fmt.Sprintf(joinSensor, sk.srv.URL))
	cfg := localRun(t, dir, filepath.Join(dir, "defs"), "join")
	topo := cfg.topology
	url := func(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", port, path) }
	mustPost := func(path, body string) {
		t.Helper()
		if code := post(t, url(path), body); code != http.StatusOK {
			t.Fatalf("POST %s: %d", path, code)
		}
	}

	in := start(t, cfg)
	mustPost("/build", `{"artifact":"v1"}`)
	mustPost("/build", `{"artifact":"v2"}`) // the latest event of a dependency wins
	// Both builds must be committed past stage 1 before the restart: events of one dependency
	// in different source partitions are matched concurrently, so a build still in the source
	// topic could reach the join after a tests event posted later.
	cl, err := kgo.NewClient(kgo.SeedBrokers(in.info.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sensor to commit both build events", func() bool {
		return testutil.ToFloat64(in.metrics.EventsMatched.WithLabelValues("release", "build")) == 2 &&
			caughtUp(t, kadm.NewClient(cl), sensor.GroupID(topo), topo.SourceTopic("default", "ci"))
	})
	cl.Close()
	in.stop(t)
	if n := len(sk.requests()); n != 0 {
		t.Fatalf("the trigger fired with only one dependency met (%d requests)", n)
	}

	in = start(t, cfg)
	defer in.stop(t)
	mustPost("/tests", `{"passed":"yes"}`)
	waitFor(t, "the trigger to fire", func() bool { return len(sk.requests()) == 1 })
	var body map[string]string
	if err := json.Unmarshal(sk.requests()[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if body["artifact"] != "v2" || body["passed"] != "yes" {
		t.Errorf("payload %v; want the latest build (v2) and the tests event", body)
	}
	// The process reports the lag of the groups of its stages.
	lagGroups := map[string]bool{}
	mfs, err := in.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "kevents_consumer_lag" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "group" {
						lagGroups[l.GetValue()] = true
					}
				}
			}
		}
	}
	if !lagGroups["kevents.sensor"] || !lagGroups["kevents.executor"] || len(lagGroups) != 2 {
		t.Errorf("kevents_consumer_lag for groups %v; want kevents.sensor and kevents.executor", lagGroups)
	}

	// Firing cleared the state: one more tests event alone does not fire again.
	mustPost("/tests", `{"passed":"again"}`)
	waitFor(t, "the second tests event to be matched", func() bool {
		return testutil.ToFloat64(in.metrics.EventsMatched.WithLabelValues("release", "tests")) == 2
	})
	mustPost("/build", `{"artifact":"v3"}`)
	waitFor(t, "the second firing", func() bool { return len(sk.requests()) == 2 })
	if err := json.Unmarshal(sk.requests()[1].body, &body); err != nil {
		t.Fatal(err)
	}
	if body["artifact"] != "v3" || body["passed"] != "again" {
		t.Errorf("second payload %v; want v3 and again", body)
	}
}

const correlatedSensor = `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: release
spec:
  dependencies:
    - name: build
      eventSourceName: ci
      eventName: build
    - name: tests
      eventSourceName: ci
      eventName: tests
  triggers:
    - template:
        name: ship
        http:
          url: %s/ship
          payload:
            - src: {dependencyName: build, dataKey: body.commit}
              dest: commit
            - src: {dependencyName: tests, dataKey: body.sha}
              dest: tested
      kevents:
        correlation:
          keys: {build: body.commit, tests: body.sha}
          window: 2s
`

// TestCorrelatedJoin: with a correlation key, build and tests events join per commit, and a
// commit whose window passed is forgotten.
func TestCorrelatedJoin(t *testing.T) {
	sk := newSink(t)
	dir := t.TempDir()
	port := freePort(t)
	writeFile(t, filepath.Join(dir, "defs", "es.yaml"), fmt.Sprintf(joinEventSource, port))
	writeFile(t, filepath.Join(dir, "defs", "sensor.yaml"), fmt.Sprintf(correlatedSensor, sk.srv.URL))
	in := start(t, localRun(t, dir, filepath.Join(dir, "defs"), "corr"))
	defer in.stop(t)
	mustPost := func(path, body string) {
		t.Helper()
		if code := post(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), body); code != http.StatusOK {
			t.Fatalf("POST %s: %d", path, code)
		}
	}
	fired := func() map[string]string {
		out := map[string]string{}
		for _, r := range sk.requests() {
			var b map[string]string
			if err := json.Unmarshal(r.body, &b); err != nil {
				t.Fatal(err)
			}
			if b["commit"] != b["tested"] {
				t.Errorf("joined build %q with tests %q", b["commit"], b["tested"])
			}
			out[b["commit"]] = b["tested"]
		}
		return out
	}

	mustPost("/build", `{"commit":"c1"}`)
	mustPost("/build", `{"commit":"c2"}`)
	mustPost("/tests", `{"sha":"c2"}`)
	waitFor(t, "c2 to fire", func() bool { _, ok := fired()["c2"]; return ok })
	mustPost("/tests", `{"sha":"c1"}`)
	waitFor(t, "c1 to fire", func() bool { _, ok := fired()["c1"]; return ok })

	mustPost("/build", `{"commit":"c3"}`)
	waitFor(t, "c3 to wait in the join", func() bool { return testutil.ToFloat64(in.metrics.JoinPendingKeys) == 1 })
	time.Sleep(2500 * time.Millisecond) // past c3's 2 s window
	mustPost("/tests", `{"sha":"c3"}`)
	// The expired build is forgotten; the tests event waits alone and expires in turn.
	waitFor(t, "c3's keys to expire", func() bool {
		return testutil.ToFloat64(in.metrics.EventsMatched.WithLabelValues("release", "tests")) == 3 &&
			testutil.ToFloat64(in.metrics.JoinPendingKeys) == 0
	})
	if got := fired(); len(got) != 2 {
		t.Errorf("fired for %v; want c1 and c2 only (c3's build expired before its tests)", got)
	}
}
