package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// poolEnv is an embedded broker with kevents' topics and a producer of commands.
type poolEnv struct {
	kc   kclient.Config
	topo *topology.Topology
	cl   *kgo.Client
}

func newPoolEnv(t testing.TB) *poolEnv {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	topo, err := topology.New(topology.Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	kc := kclient.Config{Brokers: c.ListenAddrs()}
	cl, err := kc.NewClient(kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if _, err := topo.Apply(context.Background(), kadm.NewClient(cl)); err != nil {
		t.Fatal(err)
	}
	return &poolEnv{kc: kc, topo: topo, cl: cl}
}

// runMember runs an executor pool member until the test ends or stop is called.
func (e *poolEnv) runMember(t testing.TB, member string) (m *metrics.Metrics, stop func()) {
	return e.runMemberWith(t, member, 8)
}

func (e *poolEnv) runMemberWith(t testing.TB, member string, concurrency int) (m *metrics.Metrics, stop func()) {
	t.Helper()
	m = metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunExecutor(ctx, ExecutorConfig{Kafka: e.kc, Topology: e.topo, Member: member, Metrics: m, Concurrency: concurrency,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("executor: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return m, stop
}

// send produces an ordered http command for url to the commands topic, keyed by its trigger.
func (e *poolEnv) send(t *testing.T, id, trig, url string, retry *Retry) {
	t.Helper()
	spec, _ := json.Marshal(HTTPRequest{URL: url, Method: http.MethodPost, Body: []byte(id)})
	e.produce(t, &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: trig, Type: "http", Spec: spec, Retry: retry, Ordered: true})
}

// produce writes cmd to the commands topic as the sensor does, under its Key.
func (e *poolEnv) produce(t *testing.T, cmd *Command) {
	t.Helper()
	v, _ := json.Marshal(cmd)
	if err := e.cl.ProduceSync(context.Background(), &kgo.Record{Topic: e.topo.Commands(), Key: []byte(cmd.Key()), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// target is an HTTP server that records what reached it, in order, and fails as told.
type target struct {
	mu    sync.Mutex
	got   []string          // bodies in arrival order, successes only
	calls map[string]int    // attempts per body
	fail  func(string) bool // answer 500 to this body on this attempt
	srv   *httptest.Server
}

func newTarget(t *testing.T, fail func(body string, attempt int) bool) *target {
	tg := &target{calls: map[string]int{}}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body := string(b)
		tg.mu.Lock()
		tg.calls[body]++
		attempt := tg.calls[body]
		tg.mu.Unlock()
		if fail != nil && fail(body, attempt) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if r.Header.Get(IdempotencyKeyHeader) != body {
			t.Errorf("Idempotency-Key %q for command %q", r.Header.Get(IdempotencyKeyHeader), body)
		}
		tg.mu.Lock()
		tg.got = append(tg.got, body)
		tg.mu.Unlock()
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) received() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]string(nil), tg.got...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExecutorUnorderedCommandsDoNotWait: the commands of a trigger that is not ordered are keyed
// by their ids, so those that wait for their retries hold up none of their trigger's others, even
// when they outnumber the member's slots.
func TestExecutorUnorderedCommandsDoNotWait(t *testing.T) {
	env := newPoolEnv(t)
	failing := map[string]bool{"c-00": true, "c-01": true, "c-02": true}
	tg := newTarget(t, func(body string, attempt int) bool { return failing[body] && attempt <= 2 })
	env.runMemberWith(t, "m1", 2)
	retry := &Retry{Steps: 5, Duration: 300 * time.Millisecond, Factor: 1}
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("c-%02d", i)
		spec, _ := json.Marshal(HTTPRequest{URL: tg.srv.URL, Method: http.MethodPost, Body: []byte(id)})
		env.produce(t, &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "busy", Type: "http", Spec: spec, Retry: retry})
	}
	eventually(t, "all commands", func() bool { return len(tg.received()) == 20 })
	got := tg.received()
	for _, id := range got[len(got)-3:] {
		if !failing[id] {
			t.Errorf("arrival order %v; want the three retried commands last: their trigger's others must not wait for them", got)
			break
		}
	}
}

// TestExecutorBacklogParksNoGoroutinePerKey: a member holding thousands of unordered commands
// (each its own key) while its slots are busy keeps a worker per slot, not a goroutine per
// command waiting for one.
func TestExecutorBacklogParksNoGoroutinePerKey(t *testing.T) {
	env := newPoolEnv(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	const n, concurrency = 3000, 4
	spec, _ := json.Marshal(HTTPRequest{URL: srv.URL, Method: http.MethodPost})
	for i := 0; i < n; i++ {
		env.produce(t, &Command{ID: fmt.Sprintf("c%04d", i), Namespace: "ns", Sensor: "s", Trigger: "busy", Type: "http", Spec: spec})
	}
	before := runtime.NumGoroutine()
	m, _ := env.runMemberWith(t, "m1", concurrency)
	pending, running := m.CommandsPending.WithLabelValues("s", "busy"), m.CommandsRunning.WithLabelValues("s", "busy")
	eventually(t, "every command taken, four running", func() bool {
		return testutil.ToFloat64(pending) == n-concurrency && testutil.ToFloat64(running) == concurrency
	})
	if g := runtime.NumGoroutine() - before; g > 300 {
		t.Errorf("%d more goroutines while %d commands wait for %d slots; want about one per slot", g, n-concurrency, concurrency)
	}
}

// TestExecutorFailingKeyDoesNotBlockOthers: a key whose target fails waits for its retries
// while another key of the same partition flows; the failing key's commands still run in order.
func TestExecutorFailingKeyDoesNotBlockOthers(t *testing.T) {
	env := newPoolEnv(t)
	tg := newTarget(t, func(body string, attempt int) bool { return strings.HasPrefix(body, "a-") && attempt <= 2 })
	env.runMember(t, "m1")
	retry := &Retry{Steps: 5, Duration: 300 * time.Millisecond, Factor: 1}
	for i := 0; i < 3; i++ {
		env.send(t, fmt.Sprintf("a-%d", i), "slow", tg.srv.URL, retry)
	}
	for i := 0; i < 20; i++ {
		env.send(t, fmt.Sprintf("b-%d", i), "fast", tg.srv.URL, retry)
	}
	eventually(t, "all commands", func() bool { return len(tg.received()) == 23 })
	got := tg.received()
	var a, b []string
	lastB, firstA := -1, -1
	for i, body := range got {
		if strings.HasPrefix(body, "a-") {
			a = append(a, body)
			if firstA < 0 {
				firstA = i
			}
		} else {
			b = append(b, body)
			lastB = i
		}
	}
	if lastB > firstA {
		t.Errorf("the fast key waited for the failing one: arrival order %v", got)
	}
	if strings.Join(a, ",") != "a-0,a-1,a-2" {
		t.Errorf("the failing key ran out of order: %v", a)
	}
	for i, body := range b {
		if body != fmt.Sprintf("b-%d", i) {
			t.Errorf("the fast key ran out of order: %v", b)
			break
		}
	}
}

// TestExecutorDLQAndDedupe: a command that keeps failing goes to the DLQ with its error; a
// finished command delivered again is skipped, also by a member that restarts.
func TestExecutorDLQAndDedupe(t *testing.T) {
	env := newPoolEnv(t)
	tg := newTarget(t, func(body string, _ int) bool { return body == "broken" })
	m, stop := env.runMember(t, "m1")
	env.send(t, "broken", "t", tg.srv.URL, &Retry{Steps: 2, Duration: 10 * time.Millisecond, Factor: 1})
	env.send(t, "ok", "t", tg.srv.URL, nil)
	eventually(t, "the failure and the success", func() bool {
		return testutil.ToFloat64(m.Failures.WithLabelValues("s", "t")) == 1 && testutil.ToFloat64(m.Executions.WithLabelValues("s", "t")) == 1
	})

	var dlq []*kgo.Record
	readAll(t, env, env.topo.DLQ(), 1, func(r *kgo.Record) { dlq = append(dlq, r) })
	if len(dlq) != 1 || !strings.Contains(header(dlq[0], "kevents-error"), "500") || header(dlq[0], "kevents-command-id") != "broken" {
		t.Fatalf("DLQ %v; want the broken command with its error", dlq)
	}
	outcomes := map[string]Outcome{}
	readAll(t, env, env.topo.Executed(), 2, func(r *kgo.Record) {
		var o Outcome
		if err := json.Unmarshal(r.Value, &o); err != nil {
			t.Fatal(err)
		}
		outcomes[o.ID] = o
	})
	if o := outcomes["broken"]; o.Succeeded || o.Attempts != 2 || !strings.Contains(o.Error, "500") {
		t.Errorf("outcome of broken: %+v", o)
	}
	if o := outcomes["ok"]; !o.Succeeded || o.Attempts != 1 {
		t.Errorf("outcome of ok: %+v", o)
	}

	// Delivered again: skipped by this member.
	env.send(t, "ok", "t", tg.srv.URL, nil)
	eventually(t, "the repeat to be skipped", func() bool { return testutil.ToFloat64(m.Skipped.WithLabelValues("s", "t")) == 1 })
	stop()

	// And by the member restarted (same name, so it takes its partition back at once), which
	// reads the executed topic before running anything.
	m2, _ := env.runMember(t, "m1")
	env.send(t, "ok", "t", tg.srv.URL, nil)
	env.send(t, "new", "t", tg.srv.URL, nil)
	eventually(t, "the new command", func() bool { return testutil.ToFloat64(m2.Executions.WithLabelValues("s", "t")) == 1 })
	if n := testutil.ToFloat64(m2.Skipped.WithLabelValues("s", "t")); n != 1 {
		t.Errorf("the restarted member skipped %v commands, want 1", n)
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if tg.calls["ok"] != 1 || tg.calls["new"] != 1 {
		t.Errorf("target calls %v; want ok and new once each", tg.calls)
	}
}

func readAll(t *testing.T, env *poolEnv, topic string, n int, fn func(*kgo.Record)) {
	t.Helper()
	cl, err := env.kc.NewClient(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for got := 0; got < n; {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", got, n, topic)
		}
		f.EachRecord(func(r *kgo.Record) { got++; fn(r) })
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestExecutorRateLimitAndPolicy: a trigger's rateLimit spaces its commands, and
// policy.status.allow decides which HTTP statuses count as success.
func TestExecutorRateLimitAndPolicy(t *testing.T) {
	env := newPoolEnv(t)
	var mu sync.Mutex
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	m, _ := env.runMember(t, "m1")
	for i := 0; i < 4; i++ {
		spec, _ := json.Marshal(HTTPRequest{URL: srv.URL, Method: http.MethodPost})
		// A sensor orders the commands of a rate-limited trigger (see Ordered).
		env.produce(t, &Command{ID: fmt.Sprintf("c%d", i), Namespace: "ns", Sensor: "s", Trigger: "limited", Type: "http", Spec: spec,
			RateLimit: &RateLimit{Requests: 5, Per: time.Second}, AllowStatus: []int{404}, Ordered: true})
	}
	eventually(t, "four commands", func() bool { return testutil.ToFloat64(m.Executions.WithLabelValues("s", "limited")) == 4 })
	if f := testutil.ToFloat64(m.Failures.WithLabelValues("s", "limited")); f != 0 {
		t.Errorf("%v failures: 404 is allowed by the policy", f)
	}
	mu.Lock()
	defer mu.Unlock()
	// 5 per second without bursts: at least 200 ms between calls.
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 190*time.Millisecond {
			t.Errorf("calls %d and %d were %v apart; the rate limit allows one per 200 ms", i-1, i, gap)
		}
	}
}

// TestExecutorDLQTrigger: when a command fails after its retries, its dlqTrigger runs once.
func TestExecutorDLQTrigger(t *testing.T) {
	env := newPoolEnv(t)
	tg := newTarget(t, func(body string, _ int) bool { return body == "main" })
	m, _ := env.runMember(t, "m1")
	spec, _ := json.Marshal(HTTPRequest{URL: tg.srv.URL, Method: http.MethodPost, Body: []byte("dlq")})
	dlq := &Command{ID: "dlq", Namespace: "ns", Sensor: "s", Trigger: "on-failure", Type: "http", Spec: spec}
	spec, _ = json.Marshal(HTTPRequest{URL: tg.srv.URL, Method: http.MethodPost, Body: []byte("main")})
	env.produce(t, &Command{ID: "main", Namespace: "ns", Sensor: "s", Trigger: "t", Type: "http", Spec: spec,
		Retry: &Retry{Steps: 2, Duration: 10 * time.Millisecond, Factor: 1}, DLQ: dlq})
	eventually(t, "the dlqTrigger", func() bool { return testutil.ToFloat64(m.Executions.WithLabelValues("s", "on-failure")) == 1 })
	if got := tg.received(); len(got) != 1 || got[0] != "dlq" {
		t.Errorf("target got %v; want only the dlqTrigger's request (the main one failed)", got)
	}
	if f := testutil.ToFloat64(m.Failures.WithLabelValues("s", "t")); f != 1 {
		t.Errorf("failures of the main trigger = %v, want 1", f)
	}
}
