package source

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"k8s.io/client-go/rest"
)

// The health tests run sources with the sources ready check on (Env.ReadyNeedsSources), take
// their outside server away and bring it back on the same address: kevents_source_connected and
// the ready check follow, naming the event, and Run never stops meanwhile.

// healthRun is a source.Run under test whose wait runs in the background, so a test can check
// at every step that it has not returned.
type healthRun struct {
	t       *testing.T
	h       *harness
	stopped chan struct{}
	err     error // Run's wait's, once stopped is closed
}

// startHealthRun starts Run on the conformance harness (plain and owned sources) with the
// sources ready check on, and stops it at cleanup, checking that it stops cleanly.
func startHealthRun(t *testing.T, h *harness, yaml string) *healthRun {
	t.Helper()
	h.env.ReadyNeedsSources = true
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := Run(ctx, h.env, parseEventSources(t, yaml))
	if err != nil {
		cancel()
		t.Fatalf("Run: %v", err)
	}
	r := &healthRun{t: t, h: h, stopped: make(chan struct{})}
	go func() {
		r.err = wait()
		close(r.stopped)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.stopped:
			if r.err != nil {
				t.Errorf("wait: %v", r.err)
			}
		case <-time.After(2*h.env.PublishTimeout + 10*time.Second):
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Error("Run did not stop after its context ended")
		}
	})
	return r
}

// running fails the test when Run's wait returned: a source must retry, never end Run.
func (r *healthRun) running(step string) {
	r.t.Helper()
	select {
	case <-r.stopped:
		r.t.Fatalf("%s: Run's wait returned (%v) while its context is live; want the sources retrying", step, r.err)
	default:
	}
}

// up waits until the event is reported connected, and the process's ready error (if another
// event is down) does not name it.
func (r *healthRun) up(event, step string) {
	r.t.Helper()
	r.h.waitConnected(conformanceEventSource, event, 1, step)
	name := fmt.Sprintf("eventsource default/%s event %s ", conformanceEventSource, event)
	if err := r.h.metrics.Ready(context.Background()); err != nil && strings.Contains(err.Error(), name) {
		r.t.Fatalf("%s: Ready = %v, want it not to name %q", step, err, name)
	}
	r.running(step)
}

// ready checks that the process is ready: every event is connected.
func (r *healthRun) ready(step string) {
	r.t.Helper()
	if err := r.h.metrics.Ready(context.Background()); err != nil {
		r.t.Fatalf("%s: Ready = %v, want nil", step, err)
	}
}

// down waits until the event is reported not connected and the process not ready, the ready
// error naming the event; it returns what that error says about the event.
func (r *healthRun) down(event, step string) error {
	r.t.Helper()
	said := r.h.waitConnected(conformanceEventSource, event, 0, step)
	name := fmt.Sprintf("eventsource default/%s event %s ", conformanceEventSource, event)
	if err := r.h.metrics.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), name) {
		r.t.Fatalf("%s: Ready = %v, want an error naming %q", step, err, name)
	}
	r.running(step)
	return said
}

// waitEvents polls until the EventSource's topic holds at least n events.
func (r *healthRun) waitEvents(n int, step string) {
	r.t.Helper()
	topic := r.h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(r.h.committedEvents(topic)) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: %d events, want %d", step, len(r.h.committedEvents(topic)), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthYAML is the EventSource of the health tests with the given events, the text under
// spec, indented by two spaces.
func healthYAML(spec string) string {
	return fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: %s\nspec:\n%s", conformanceEventSource, spec)
}

// TestHealthNATS: a core NATS subscription is reported connected, then down while the server
// is away (not ready, naming the event), then connected again once a server listens on the
// same address, and it delivers again.
func TestHealthNATS(t *testing.T) {
	h, _ := newConformanceHarness(t)
	opts := natsserver.Options{Port: freePort(t)}
	s := natsTestServer(t, opts)
	r := startHealthRun(t, h, healthYAML(fmt.Sprintf(`  nats:
    orders:
      url: %s
      subject: orders
      connectionBackoff: {duration: 50ms, factor: 1, jitter: 0, steps: 1}
`, s.ClientURL())))
	r.up("orders", "connected")
	r.ready("connected")

	s.Shutdown()
	s.WaitForShutdown()
	r.down("orders", "server stopped")

	s = natsTestServer(t, opts)
	r.up("orders", "server back on the same address")
	r.ready("server back")
	natsWaitSubscribed(t, s, "orders", 1)
	if err := natsTestConn(t, s).Publish("orders", []byte(`{"n": 1}`)); err != nil {
		t.Fatal(err)
	}
	r.waitEvents(1, "delivered after the reconnection")
	r.running("end")
}

// TestHealthRedis: the redis pub/sub source (owned) and the redisStream source (every member)
// are reported connected, then down while redis-server is stopped, then connected again once
// it listens on the same address, and they deliver again.
func TestHealthRedis(t *testing.T) {
	s := startRedis(t)
	old := redisRetry
	redisRetry.first, redisRetry.limit = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { redisRetry = old })
	redisXAdd(t, s, "n", "-1") // the stream must exist, as in Argo
	h, _ := newConformanceHarness(t)
	r := startHealthRun(t, h, healthYAML(fmt.Sprintf(`  redis:
    pubsub:
      hostAddress: %s
      channels: [orders]
  redisStream:
    stream:
%s`, s.addr(), redisStreamFields(s, ""))))
	for _, ev := range []string{"pubsub", "stream"} {
		r.up(ev, ev+": connected")
	}
	r.ready("connected")

	s.stop()
	for _, ev := range []string{"pubsub", "stream"} {
		r.down(ev, ev+": server stopped")
	}

	s.start()
	for _, ev := range []string{"pubsub", "stream"} {
		r.up(ev, ev+": server back on the same address")
	}
	r.ready("server back")
	redisWaitSubscribers(t, s, "orders", 1)
	if err := s.client.Publish(context.Background(), "orders", `{"n": 1}`).Err(); err != nil {
		t.Fatal(err)
	}
	redisXAdd(t, s, "n", "2")
	r.waitEvents(2, "delivered after the reconnection")
	r.running("end")
}

// TestHealthKafka: the kafka source is reported connected, then down while the user's cluster
// is closed, then connected again once it listens on the same address with its data, and it
// delivers again.
func TestHealthKafka(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	opts := []kfake.Opt{kfake.Ports(port), kfake.DataDir(dir)}
	c := kafkaSrcCluster(t, 1, []string{"in"}, opts...)
	h, _ := newConformanceHarness(t)
	r := startHealthRun(t, h, healthYAML(fmt.Sprintf(`  kafka:
    orders:
      url: %s
      topic: in
      consumerGroup: {groupName: health, oldest: true}
`, c.ListenAddrs()[0])))
	r.up("orders", "connected")
	r.ready("connected")

	c.Close()
	r.down("orders", "cluster closed")

	c = kafkaSrcCluster(t, 1, []string{"in"}, opts...)
	r.up("orders", "cluster back on the same address")
	r.ready("cluster back")
	kafkaSrcProduce(t, kafkaSrcClient(t, c), &kgo.Record{Topic: "in", Value: []byte(`{"n": 1}`)})
	r.waitEvents(1, "delivered after the reconnection")
	r.running("end")
}

// TestHealthNeverConnects: sources whose server never answered (nothing listens at the address
// from the start) are reported down, each by name and saying what it cannot reach, keep
// retrying rather than end Run, and come up once a server appears there. The file source
// reports a directory that does not exist the same way.
func TestHealthNeverConnects(t *testing.T) {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: apt-get install redis-server (make test-servers) to run this test")
	}
	old := redisRetry
	redisRetry.first, redisRetry.limit = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { redisRetry = old })
	natsPort, kafkaPort, redisPort := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir() + "/not-yet"
	h, _ := newConformanceHarness(t)
	r := startHealthRun(t, h, healthYAML(fmt.Sprintf(`  nats:
    nats:
      url: nats://kevents:n4ts-pa55@127.0.0.1:%d
      subject: orders
      connectionBackoff: {duration: 50ms, factor: 1, jitter: 0, steps: 1}
  kafka:
    kafka:
      url: 127.0.0.1:%d
      topic: in
      consumerGroup: {groupName: health}
  redis:
    redis:
      hostAddress: 127.0.0.1:%d
      channels: [orders]
  file:
    file:
      watchPathConfig: {directory: %q, path: x}
      eventType: CREATE
`, natsPort, kafkaPort, redisPort, dir)))
	unreachable := map[string]string{ // what each error must name
		"nats":  fmt.Sprintf("127.0.0.1:%d", natsPort),
		"kafka": fmt.Sprintf("127.0.0.1:%d", kafkaPort),
		"redis": fmt.Sprintf("127.0.0.1:%d", redisPort),
		"file":  dir,
	}
	for ev, what := range unreachable {
		err := r.down(ev, ev+": never connected")
		if !strings.Contains(err.Error(), what) {
			t.Errorf("%s: the ready error does not name what cannot be reached (%s): %v", ev, what, err)
		}
		if strings.Contains(err.Error(), "n4ts-pa55") {
			t.Errorf("%s: the ready error shows the password of the NATS URL: %v", ev, err)
		}
	}
	// Still retrying: each server appearing at its address is found, one after the other.
	natsTestServer(t, natsserver.Options{Port: natsPort, Username: "kevents", Password: "n4ts-pa55"})
	r.up("nats", "nats: a server appeared")
	kafkaSrcCluster(t, 1, []string{"in"}, kfake.Ports(kafkaPort))
	r.up("kafka", "kafka: a cluster appeared")
	rs := &redisTestServer{t: t, bin: redisBin, port: redisPort, dir: t.TempDir()}
	rs.start()
	t.Cleanup(rs.stop)
	r.up("redis", "redis: a server appeared")
	r.down("file", "file: still no directory") // the others coming up did not hide it
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.up("file", "file: the directory appeared")
	r.ready("everything found")
}

// TestHealthResourceNeverConnects: a resource event whose Kubernetes API does not answer is
// reported down, naming the API server, and Run goes on. (The test stops soon after: while the
// API server refuses connections, client-go's reflector sleeps its backoff, up to 30 s, without
// watching for a stop, and the informer's shutdown waits for it.)
func TestHealthResourceNeverConnects(t *testing.T) {
	kube := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	h, _ := newConformanceHarness(t)
	h.env.Kube = &rest.Config{Host: "http://" + kube}
	r := startHealthRun(t, h, healthYAML(`  resource:
    resource:
      version: v1
      resource: configmaps
      eventTypes: [ADD]
`))
	if err := r.down("resource", "no API server"); !strings.Contains(err.Error(), kube) {
		t.Errorf("the ready error does not name the API server (%s): %v", kube, err)
	}
}

// TestHealthOwnedPartitionMovedAway: when this member stops owning a partition (a rebalance
// revoked it), the owned events of that partition are forgotten here, whatever they last
// reported: the new owner reports them, and this member must not keep saying they are down.
func TestHealthOwnedPartitionMovedAway(t *testing.T) {
	h, _ := newConformanceHarness(t)
	h.env.Metrics.AddReadyCheck("sources", h.env.Metrics.SourcesReady) // as Run with ReadyNeedsSources
	es := parseEventSources(t, healthYAML(fmt.Sprintf(`  redis:
    redis:
      hostAddress: 127.0.0.1:%d
      channels: [orders]
`, freePort(t))))[0]
	ev := es.Spec.Events()[0]
	b := Build{EventSource: es, Event: ev, Topic: h.topo.SourceTopic("", conformanceEventSource), Env: h.env}
	src, err := newRedis(b)
	if err != nil {
		t.Fatal(err)
	}
	entry := newOwnedEntry(b, src)
	p := ownedPartition(entry.key, 6)
	ctx, cancel := context.WithCancel(context.Background())
	// The runner as Run sets it up, driven by the group callbacks a rebalance would call.
	r := &ownedRunner{env: h.env, entries: []ownedEntry{entry}, ctx: ctx, session: ownedSession,
		byPartition: map[int32][]ownedEntry{p: {entry}}, workers: map[int32]*ownedWorker{}}
	sources := h.topo.Sources()
	t.Cleanup(func() {
		cancel()
		r.stop([]int32{p}) // waits for the source, if the test ended before the revoke
	})
	r.assigned(ctx, nil, map[string][]int32{sources: {p}})
	h.waitConnected(conformanceEventSource, "redis", 0, "owned here: nothing listens at the address")

	r.revoked(ctx, nil, map[string][]int32{sources: {p}})
	if v, ok := h.gauge(connectedGauge, conformanceEventSource, "redis"); ok {
		t.Errorf("after the revoke: %s = %v; want it gone (another member owns the event)", connectedGauge, v)
	}
	if err := h.metrics.Ready(context.Background()); err != nil {
		t.Errorf("after the revoke: Ready = %v; want nil", err)
	}
}
