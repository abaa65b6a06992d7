package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// childBrokersEnv tells the test binary, started again as a child, to run an executor member
// against these brokers instead of running tests.
const childBrokersEnv = "KEVENTS_TEST_EXECUTOR_BROKERS"

// TestExecutorMemberProcess is the child side of TestExecutorKilledMidBatch: an executor pool
// member in its own process, so that the test can SIGKILL it.
func TestExecutorMemberProcess(t *testing.T) {
	brokers := os.Getenv(childBrokersEnv)
	if brokers == "" {
		t.Skip("runs only as the child process of TestExecutorKilledMidBatch")
	}
	topo, err := topology.New(topology.Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	err = RunExecutor(context.Background(), ExecutorConfig{
		Kafka: kclient.Config{Brokers: strings.Split(brokers, ",")}, Topology: topo, Member: "killed", Concurrency: 16, Metrics: metrics.New(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	t.Fatalf("executor returned: %v", err)
}

// idempotentSink is an HTTP target that deduplicates by Idempotency-Key, as a target of
// at-least-once deliveries should: it completes each key once and counts the repeats.
type idempotentSink struct {
	mu        sync.Mutex
	completed map[string]int // completions per key: must never exceed 1
	order     map[string][]string
	repeats   int
	srv       *httptest.Server
}

func newIdempotentSink(t *testing.T, delay time.Duration) *idempotentSink {
	s := &idempotentSink{completed: map[string]int{}, order: map[string][]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay) // keeps commands in flight when the member dies
		key := r.Header.Get(IdempotencyKeyHeader)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.completed[key] > 0 {
			s.repeats++
			return
		}
		s.completed[key]++
		trig := r.URL.Query().Get("trigger")
		s.order[trig] = append(s.order[trig], key)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *idempotentSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.completed)
}

// TestExecutorKilledMidBatch SIGKILLs an executor member while it runs a batch of commands and
// starts it again under the same name, as a restarted pod would. Every command must complete;
// the only repeats the idempotent sink may see are commands that were in flight at the kill, and
// each trigger's commands must complete in order.
func TestExecutorKilledMidBatch(t *testing.T) {
	env := newPoolEnv(t)
	sink := newIdempotentSink(t, 2*time.Millisecond)
	const n, triggers = 1500, 30
	for i := 0; i < n; i++ {
		trig := fmt.Sprintf("t%02d", i%triggers)
		env.send(t, fmt.Sprintf("%s-%04d", trig, i), trig, sink.srv.URL+"?trigger="+trig, nil)
	}

	child := exec.Command(os.Args[0], "-test.run=^TestExecutorMemberProcess$")
	child.Env = append(os.Environ(), childBrokersEnv+"="+strings.Join(env.kc.Brokers, ","))
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { child.Wait(); close(exited) }()
	eventually(t, "the child to run a third of the commands", func() bool { return sink.count() >= n/3 })
	child.Process.Signal(syscall.SIGKILL)
	<-exited
	killedAt := sink.count()
	if killedAt == n {
		t.Fatal("the child finished every command before the kill; the test proves nothing")
	}

	env.runMemberWith(t, "killed", 16) // the same member name: it takes the partition back at once
	eventually(t, "every command", func() bool { return sink.count() == n })

	sink.mu.Lock()
	defer sink.mu.Unlock()
	for key, c := range sink.completed {
		if c != 1 {
			t.Errorf("command %s completed %d times", key, c)
		}
	}
	// Repeats are commands that ran but whose outcome was not yet recorded when the member
	// died: at most what could be in flight or awaiting its outcome write.
	if sink.repeats > 16+64 {
		t.Errorf("%d repeated deliveries after the kill; want only the few in flight", sink.repeats)
	}
	for trig, keys := range sink.order {
		for i := 1; i < len(keys); i++ {
			if keys[i] < keys[i-1] {
				t.Errorf("trigger %s completed out of order: %s before %s", trig, keys[i-1], keys[i])
				break
			}
		}
	}
	t.Logf("killed after %d of %d commands; %d repeated deliveries, deduplicated by the sink", killedAt, n, sink.repeats)
}

// TestExecutorTargetOutage takes one trigger's target down for 30 seconds: its commands wait
// and retry while another trigger's commands keep flowing, and after recovery all of them
// complete, in order.
func TestExecutorTargetOutage(t *testing.T) {
	t.Parallel()
	const outage = 30 * time.Second
	env := newPoolEnv(t)
	var (
		mu   sync.Mutex
		down = true
	)
	flaky := newIdempotentSink(t, 0)
	healthy := newIdempotentSink(t, 0)
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		isDown := down
		mu.Unlock()
		if isDown {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		flaky.srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer gate.Close()
	env.runMember(t, "m1")
	// Retries wait 1, 1.5, 2.25, ... seconds: 9 steps span more than the outage.
	retry := &Retry{Steps: 9, Duration: time.Second, Factor: 1.5}
	start := time.Now()
	for i := 0; i < 10; i++ {
		env.send(t, fmt.Sprintf("down-%02d", i), "down", gate.URL+"?trigger=down", retry)
	}
	for i := 0; i < 100; i++ {
		env.send(t, fmt.Sprintf("up-%03d", i), "up", healthy.srv.URL+"?trigger=up", retry)
	}
	eventually(t, "the healthy trigger's commands", func() bool { return healthy.count() == 100 })
	if time.Since(start) > outage/2 {
		t.Errorf("the healthy trigger took %v: it waited for the failing one", time.Since(start))
	}
	if flaky.count() != 0 {
		t.Fatal("a command reached the target while it was down")
	}
	time.Sleep(outage - time.Since(start))
	mu.Lock()
	down = false
	mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for flaky.count() < 10 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	flaky.mu.Lock()
	defer flaky.mu.Unlock()
	if got := strings.Join(flaky.order["down"], ","); got != "down-00,down-01,down-02,down-03,down-04,down-05,down-06,down-07,down-08,down-09" {
		t.Errorf("after the outage the commands completed as %q; want all ten in order", got)
	}
}

// TestKafkaTriggerOnceAcrossKill SIGKILLs an executor member while it runs kafka trigger commands
// whose target is the bus itself, and restarts it: a read_committed reader of the target topic
// must see every command's record exactly once, because each record commits in one transaction
// with its command's outcome.
func TestKafkaTriggerOnceAcrossKill(t *testing.T) {
	env := newPoolEnv(t)
	const n, triggers, out = 600, 12, "orders-out"
	if _, err := kadm.NewClient(env.cl).CreateTopic(context.Background(), 3, 1, nil, out); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		trig := fmt.Sprintf("t%02d", i%triggers)
		id := fmt.Sprintf("%s-%04d", trig, i)
		spec, _ := json.Marshal(KafkaRequest{Brokers: env.kc.Brokers, Topic: out, Value: []byte(id), RequiredAcks: -1})
		env.produce(t, &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: trig, Type: "kafka", Spec: spec})
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	reader, err := kgo.NewClient(kgo.SeedBrokers(env.kc.Brokers...), kgo.ConsumeTopics(out),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	readCtx, stopReading := context.WithCancel(context.Background())
	defer stopReading()
	go func() {
		for readCtx.Err() == nil {
			reader.PollFetches(readCtx).EachRecord(func(r *kgo.Record) {
				mu.Lock()
				seen[string(r.Value)]++
				mu.Unlock()
			})
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}

	child := exec.Command(os.Args[0], "-test.run=^TestExecutorMemberProcess$")
	child.Env = append(os.Environ(), childBrokersEnv+"="+strings.Join(env.kc.Brokers, ","))
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { child.Wait(); close(exited) }()
	eventually(t, "the child to write a third of the records", func() bool { return count() >= n/3 })
	child.Process.Signal(syscall.SIGKILL)
	<-exited
	killedAt := count()
	if killedAt == n {
		t.Fatal("the child wrote every record before the kill; the test proves nothing")
	}
	env.runMemberWith(t, "killed", 16)
	eventually(t, "every record", func() bool { return count() == n })
	time.Sleep(500 * time.Millisecond) // a late duplicate would show up by now
	mu.Lock()
	defer mu.Unlock()
	for id, c := range seen {
		if c != 1 {
			t.Errorf("record of command %s written %d times", id, c)
		}
	}
	t.Logf("killed after %d of %d records; none written twice", killedAt, n)
}
