package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/twmb/franz-go/pkg/kfake"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/sensor"
	"github.com/kevents/kevents/topology"
	"github.com/kevents/kevents/trigger"
)

// sink is a real HTTP server that records what the http trigger sent.
type sink struct {
	mu   sync.Mutex
	reqs []sinkRequest
	srv  *httptest.Server
}

type sinkRequest struct {
	method, path, key, contentType string
	body                           []byte
}

func newSink(t *testing.T) *sink {
	s := &sink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, sinkRequest{r.Method, r.URL.Path, r.Header.Get(trigger.IdempotencyKeyHeader), r.Header.Get("Content-Type"), b})
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) requests() []sinkRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkRequest(nil), s.reqs...)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds or the deadline passes. It waits for the system to settle;
// it measures nothing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// localRun is the configuration of a `kevents run` of the definitions under defs on an embedded
// broker kept under dir, with 3 partitions per topic, logging to the test.
func localRun(t *testing.T, dir, defs, member string) runConfig {
	t.Helper()
	topo, err := topology.New(topology.Partitions(3))
	if err != nil {
		t.Fatal(err)
	}
	return runConfig{
		paths: []string{defs}, dataDir: filepath.Join(dir, "broker"), brokerPort: freePort(t),
		topology: topo, metricsAddr: "127.0.0.1:0", member: member, publishTimeout: 5 * time.Second,
		logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
}

// instance is one `kevents run` in this process.
type instance struct {
	cancel  context.CancelFunc
	done    chan error
	info    running
	metrics *metrics.Metrics
}

func start(t *testing.T, cfg runConfig) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), metrics: metrics.New()}
	cfg.metrics = in.metrics
	ready := make(chan running, 1)
	go func() { in.done <- runAll(ctx, cfg, func(r running) { ready <- r }) }()
	select {
	case in.info = <-ready:
	case err := <-in.done:
		t.Fatalf("kevents run stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("kevents run not ready after 60 s")
	}
	return in
}

func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			t.Fatalf("kevents run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kevents run did not stop within 30 s")
	}
}

func post(t *testing.T, url, body string) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// caughtUp reports whether group has committed every record of topic.
func caughtUp(t *testing.T, adm *kadm.Client, group, topic string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false
	}
	ok := true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset == 0 {
			return
		}
		c, found := committed.Lookup(topic, o.Partition)
		if !found || c.At < o.Offset {
			ok = false
		}
	})
	return ok
}

// commandCount counts the committed records of the commands topic.
func commandCount(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	n := 0
	consumeCommitted(t, brokers, topic, func(*kgo.Record) { n++ })
	return n
}

const e2eEventSource = `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: builds
spec:
  webhook:
    finished:
      port: "%d"
      endpoint: /builds
      method: POST
`

const e2eSensor = `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: deploy
spec:
  dependencies:
    - name: build
      eventSourceName: builds
      eventName: finished
      filters:
        data:
          - path: body.status
            type: string
            value: ["^succeeded$"]
  triggers:
    - template:
        name: notify
        http:
          url: %s/deploy
          method: PUT
          payload:
            - src:
                dependencyName: build
                dataKey: body.commit
              dest: commit
            - src:
                dependencyName: build
                contextKey: source
              dest: from
            - src:
                dependencyName: build
                dataKey: body.missing
                value: main
              dest: branch
`

// TestEndToEnd runs kevents on the embedded broker, fires its webhook and checks what the HTTP
// trigger delivers, then restarts it on the same data directory.
func TestEndToEnd(t *testing.T) {
	sk := newSink(t)
	dir := t.TempDir()
	port := freePort(t)
	defs := filepath.Join(dir, "defs")
	if err := os.MkdirAll(defs, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(defs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("eventsource.yaml", fmt.Sprintf(e2eEventSource, port))
	write("sensor.yaml", fmt.Sprintf(e2eSensor, sk.srv.URL))

	cfg := localRun(t, dir, defs, "e2e")
	topo := cfg.topology
	url := fmt.Sprintf("http://127.0.0.1:%d/builds", port)

	in := start(t, cfg)
	cl, err := kgo.NewClient(kgo.SeedBrokers(in.info.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	sourceTopic := topo.SourceTopic("default", "builds")

	if code := post(t, url, `{"status":"failed","commit":"bad"}`); code != http.StatusOK {
		t.Fatalf("POST rejected event: status %d, want 200", code)
	}
	if code := post(t, url, `{"status":"succeeded","commit":"abc123"}`); code != http.StatusOK {
		t.Fatalf("POST accepted event: status %d, want 200", code)
	}
	waitFor(t, "the sink to get a request", func() bool { return len(sk.requests()) >= 1 })
	waitFor(t, "the sensor to commit both events", func() bool { return caughtUp(t, adm, sensor.GroupID(topo), sourceTopic) })
	if n := commandCount(t, in.info.brokers, topo.Commands()); n != 1 {
		t.Fatalf("commands topic holds %d commands, want 1 (the filtered-out event must not fire)", n)
	}
	waitFor(t, "the executor to finish", func() bool {
		return testutil.ToFloat64(in.metrics.Executions.WithLabelValues("deploy", "notify")) == 1
	})

	reqs := sk.requests()
	if len(reqs) != 1 {
		t.Fatalf("sink got %d requests, want exactly 1", len(reqs))
	}
	got := reqs[0]
	if got.method != http.MethodPut || got.path != "/deploy" {
		t.Errorf("sink got %s %s, want PUT /deploy", got.method, got.path)
	}
	var body map[string]string
	if err := json.Unmarshal(got.body, &body); err != nil {
		t.Fatalf("body %q is not JSON: %v", got.body, err)
	}
	want := map[string]string{"commit": "abc123", "from": "builds", "branch": "main"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("body[%q] = %q, want %q (body %s)", k, body[k], v, got.body)
		}
	}
	if got.key == "" || got.contentType != "application/json" {
		t.Errorf("Idempotency-Key %q, Content-Type %q; want a key and application/json", got.key, got.contentType)
	}
	if v := testutil.ToFloat64(in.metrics.EventsPublished.WithLabelValues("builds", "finished")); v != 2 {
		t.Errorf("events published metric = %v, want 2", v)
	}
	if v := testutil.ToFloat64(in.metrics.CommandsEmitted.WithLabelValues("deploy", "notify")); v != 1 {
		t.Errorf("commands emitted metric = %v, want 1", v)
	}
	resp, err := http.Get("http://" + in.info.metricsAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz answered %d, want 200", resp.StatusCode)
	}
	cl.Close()
	in.stop(t)

	// Restart on the same data directory: topics, records and offsets are kept, so the first
	// event is not triggered again; a new event still flows.
	in = start(t, cfg)
	defer in.stop(t)
	if code := post(t, url, `{"status":"succeeded","commit":"def456"}`); code != http.StatusOK {
		t.Fatalf("POST after restart: status %d, want 200", code)
	}
	waitFor(t, "the executor to run the new command", func() bool {
		return testutil.ToFloat64(in.metrics.Executions.WithLabelValues("deploy", "notify")) == 1
	})
	reqs = sk.requests()
	if len(reqs) != 2 {
		t.Fatalf("after restart the sink has %d requests, want 2 (the old command must not run again)", len(reqs))
	}
	if !strings.Contains(string(reqs[1].body), "def456") || reqs[1].key == reqs[0].key {
		t.Errorf("second request %s (key %s) is not the new event", reqs[1].body, reqs[1].key)
	}
}

// testWriter sends logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// countingHandler counts requests by their JSON body's "n".
func countingHandler(mu *sync.Mutex, seen map[string]int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			N json.RawMessage `json:"n"`
		}
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &body)
		mu.Lock()
		seen[string(body.N)]++
		mu.Unlock()
	})
}

// TestGracefulStopLeavesGroups stops a member as SIGTERM would: it leaves the sensor and executor
// groups at once, so its partitions move now rather than after the session timeout.
func TestGracefulStopLeavesGroups(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "defs.yaml"), fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: hooks}
spec:
  webhook:
    push: {port: "%d", endpoint: /push, method: POST}
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: logger}
spec:
  dependencies: [{name: push, eventSourceName: hooks, eventName: push}]
  triggers: [{template: {name: log, log: {}}}]
`, freePort(t)))
	topo, err := topology.New(topology.Partitions(2))
	if err != nil {
		t.Fatal(err)
	}
	in := start(t, runConfig{paths: []string{dir}, kafka: kclient.Config{Brokers: cluster.ListenAddrs()}, topology: topo,
		metricsAddr: "127.0.0.1:0", member: "leaver", publishTimeout: 5 * time.Second, logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	members := func() int {
		groups, err := adm.DescribeGroups(context.Background(), sensor.GroupID(topo), trigger.GroupID(topo))
		if err != nil {
			return -1
		}
		n := 0
		for _, g := range groups {
			n += len(g.Members)
		}
		return n
	}
	waitFor(t, "the member in both groups", func() bool { return members() == 2 })
	in.stop(t)
	if n := members(); n != 0 {
		t.Errorf("%d memberships left after a graceful stop; want none", n)
	}
}
