package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReloadSensors changes, adds and removes Sensor files while kevents runs: a trigger whose
// dependencies did not change keeps its pending join state, a new sensor on a new source topic
// starts matching, and a removed sensor's pending state is tombstoned.
func TestReloadSensors(t *testing.T) {
	sk := newSink(t)
	dir := t.TempDir()
	port := freePort(t)
	defs := filepath.Join(dir, "defs")
	writeFile(t, filepath.Join(defs, "es.yaml"), fmt.Sprintf(joinEventSource, port))
	sensorFile := filepath.Join(defs, "sensor.yaml")
	writeFile(t, sensorFile, fmt.Sprintf(joinSensor, sk.srv.URL))
	cfg := localRun(t, dir, defs, "reload")
	topo := cfg.topology
	cfg.reloadInterval = 100 * time.Millisecond
	in := start(t, cfg)
	defer in.stop(t)
	mustPost := func(path, body string) {
		t.Helper()
		if code := post(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), body); code != http.StatusOK {
			t.Fatalf("POST %s: %d", path, code)
		}
	}
	pending := func(n float64) func() bool {
		return func() bool { return testutil.ToFloat64(in.metrics.JoinPendingKeys) == n }
	}

	mustPost("/build", `{"artifact":"v1"}`)
	waitFor(t, "the build event to wait in the join", pending(1))

	// Same dependencies, another URL: the pending build is kept and fires to the new URL.
	writeFile(t, sensorFile, strings.Replace(fmt.Sprintf(joinSensor, sk.srv.URL), "/ship", "/ship-v2", 1))
	time.Sleep(time.Second) // the reload happens within a reload interval and a poll
	mustPost("/tests", `{"passed":"yes"}`)
	waitFor(t, "the trigger to fire after the reload", func() bool { return len(sk.requests()) == 1 })
	if r := sk.requests()[0]; r.path != "/ship-v2" || !strings.Contains(string(r.body), `"artifact":"v1"`) {
		t.Errorf("got %s %s; want /ship-v2 with the build event from before the reload", r.path, r.body)
	}

	// A new sensor on a source topic nobody read before.
	writeFile(t, filepath.Join(defs, "other.yaml"), fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: other}
spec:
  dependencies: [{name: d, eventSourceName: elsewhere, eventName: e}]
  triggers:
    - template:
        name: t
        http: {url: %s/other}
`, sk.srv.URL))
	cl, err := kgo.NewClient(kgo.SeedBrokers(in.info.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitFor(t, "the new sensor's source topic", func() bool {
		return produceEvent(context.Background(), cl, topo.SourceTopic("default", "elsewhere"), "x1", "elsewhere", "e", `{}`) == nil
	})
	waitFor(t, "the new sensor to fire", func() bool {
		for _, r := range sk.requests() {
			if r.path == "/other" {
				return true
			}
		}
		return false
	})

	// Removing the sensor tombstones its pending state.
	mustPost("/build", `{"artifact":"v2"}`)
	waitFor(t, "the second build to wait", pending(1))
	if err := os.Remove(sensorFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed sensor's state to be tombstoned", pending(0))
}
