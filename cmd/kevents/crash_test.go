package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/cloudevent"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/sensor"
	"github.com/kevents/kevents/topology"
	"github.com/kevents/kevents/trigger"
)

const crashSensor = `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: crash
spec:
  dependencies:
    - name: tick
      eventSourceName: feed
      eventName: tick
  triggers:
    - template:
        name: forward
        http:
          url: %s/n
          payload:
            - src: {dependencyName: tick, dataKey: n}
              dest: n
`

// TestCrashMidStream runs `kevents run` as a child process against a broker in this process,
// SIGKILLs it while events are flowing, restarts it under the same member name, and counts:
// the commands topic must hold exactly one command per event (none lost, none duplicated), and
// the HTTP target must have seen every event.
func TestCrashMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kevents binary")
	}
	const events = 3000
	dir := t.TempDir()
	bin := buildKevents(t)

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	var (
		mu   sync.Mutex
		seen = map[string]int{} // "n" → requests
	)
	target := httptest.NewServer(countingHandler(&mu, seen))
	defer target.Close()
	writeFile(t, filepath.Join(dir, "defs", "sensor.yaml"), fmt.Sprintf(crashSensor, target.URL))

	topo, err := topology.New(topology.Partitions(4))
	if err != nil {
		t.Fatal(err)
	}
	child := func(name string) *exec.Cmd {
		return startChild(t, bin, filepath.Join(dir, name+".log"), "run", "-f", filepath.Join(dir, "defs"),
			"--brokers", strings.Join(brokers, ","), "--partitions", "4", "--member", "crash-member", "--metrics-addr", "127.0.0.1:0")
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}

	first := child("first")

	// Feed the source topic at ~3000 events/s while the child runs and is killed.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	waitFor(t, "the child to create its topics", func() bool {
		topics, err := adm.ListTopics(context.Background(), topo.Commands())
		return err == nil && topics.Has(topo.Commands())
	})
	sourceTopic := topo.SourceTopic("default", "feed")
	produced := make(chan error, 1)
	go func() {
		for i := 0; i < events; i++ {
			err := produceEvent(context.Background(), cl, sourceTopic, fmt.Sprintf("ev-%d", i), "feed", "tick", fmt.Sprintf(`{"n":%d}`, i))
			if err != nil {
				produced <- err
				return
			}
			if i%30 == 29 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		produced <- nil
	}()

	waitFor(t, "some triggers before the crash", func() bool { return count() >= events/5 })
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	killedAt := count()
	child("second")

	if err := <-produced; err != nil {
		t.Fatalf("producing events: %v", err)
	}
	waitFor(t, "the sensor to commit every event", func() bool { return caughtUp(t, adm, sensor.GroupID(topo), sourceTopic) })
	waitFor(t, "every event to reach the HTTP target", func() bool { return count() == events })
	if killedAt >= events {
		t.Fatalf("the child was killed after all %d events had been handled: the crash was not mid-stream", events)
	}

	ids := map[string]bool{}
	ns := map[string]bool{}
	dups := 0
	consumeCommitted(t, brokers, topo.Commands(), func(r *kgo.Record) {
		var cmd trigger.Command
		if err := json.Unmarshal(r.Value, &cmd); err != nil {
			t.Fatalf("command: %v", err)
		}
		// The id header and the key come from the same buffer as the value (a pooled one).
		if len(r.Headers) != 1 || string(r.Headers[0].Value) != cmd.ID || string(r.Key) != cmd.Key() {
			t.Fatalf("command %s: headers %v, key %q; want its id and key", cmd.ID, r.Headers, r.Key)
		}
		if ids[cmd.ID] {
			dups++
		}
		ids[cmd.ID] = true
		var req trigger.HTTPRequest
		if err := json.Unmarshal(cmd.Spec, &req); err != nil {
			t.Fatalf("command spec: %v", err)
		}
		ns[string(req.Body)] = true
	})
	if dups != 0 || len(ids) != events || len(ns) != events {
		t.Errorf("commands topic: %d distinct commands for %d distinct events and %d duplicates; want exactly %d, none duplicated",
			len(ids), len(ns), dups, events)
	}
	mu.Lock()
	rerun := 0
	for _, c := range seen {
		rerun += c - 1
	}
	mu.Unlock()
	t.Logf("killed after %d of %d triggers; %d commands ran again after the restart (at least once, same idempotency key)", killedAt, events, rerun)
}

// consumeCommitted reads every committed record of topic, partition by partition up to its last
// stable offset as of the call, so a slow broker cannot make it stop early.
func consumeCommitted(t *testing.T, brokers []string, topic string, fn func(*kgo.Record)) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topics, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil || !topics.Has(topic) {
		t.Fatalf("topic %s: %v", topic, err)
	}
	kc := kclient.Config{Brokers: brokers}
	for _, p := range topics[topic].Partitions.Numbers() {
		if err := kc.ReadPartition(ctx, topic, p, func(r *kgo.Record) error { fn(r); return nil }); err != nil {
			t.Fatalf("read %s/%d: %v", topic, p, err)
		}
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildKevents builds the kevents binary once per test run.
func buildKevents(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kevents-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "kevents")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// startChild starts bin with args, its output in logPath; the test kills it at cleanup.
func startChild(t *testing.T, bin, logPath string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// produceEvent writes one CloudEvent to a source topic as a source would.
func produceEvent(ctx context.Context, cl *kgo.Client, topic, id, source, subject, data string) error {
	e := cloudevents.New()
	e.SetID(id)
	e.SetSource(source)
	e.SetSubject(subject)
	e.SetType("test")
	e.SetTime(time.Now())
	if err := e.SetData("application/json", []byte(data)); err != nil {
		return err
	}
	rec, err := cloudevent.ToRecord(ctx, e, topic, nil)
	if err != nil {
		return err
	}
	return cl.ProduceSync(ctx, rec).FirstErr()
}

// readCommitted reads the committed records of topic until done holds and the topic then stays
// quiet for 2 s, or a minute passed.
func readCommitted(t *testing.T, brokers []string, topic string, done func() bool, fn func(*kgo.Record)) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		f := cl.PollFetches(ctx)
		cancel()
		f.EachRecord(fn)
		if f.NumRecords() == 0 && done() {
			return
		}
	}
}
