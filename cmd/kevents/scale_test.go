package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/sensor"
	"github.com/kevents/kevents/topology"
	"github.com/kevents/kevents/trigger"
)

const pairsSensor = `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: pairs
spec:
  dependencies:
    - name: left
      eventSourceName: pairs
      eventName: left
    - name: right
      eventSourceName: pairs
      eventName: right
  triggers:
    - template:
        name: joined
        log: {}
      kevents:
        correlation:
          keys: {left: id, right: id}
`

// TestJoinScaleOutWithFailures runs three sensor pool members (separate processes) on one
// broker, feeds 10,000 pairs of events to an AND-join sensor correlated by pair id, closes one
// member and SIGKILLs another mid-stream, and counts: read_committed readers must see exactly
// one command per pair.
func TestJoinScaleOutWithFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three kevents processes")
	}
	const pairs = 10000
	bin := buildKevents(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "defs", "sensor.yaml"), pairsSensor)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	topo, err := topology.New(topology.Partitions(6))
	if err != nil {
		t.Fatal(err)
	}
	startMember := func(name string) *exec.Cmd {
		return startChild(t, bin, filepath.Join(dir, name+".log"), "run", "-f", filepath.Join(dir, "defs"),
			"--brokers", strings.Join(brokers, ","), "--partitions", "6", "--member", name, "--metrics-addr", "127.0.0.1:0",
			"--log-level", "warn")
	}
	m1, m2 := startMember("m1"), startMember("m2")
	startMember("m3")

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	waitFor(t, "the members to create the topics", func() bool {
		topics, err := adm.ListTopics(context.Background(), topo.Commands(), topo.State())
		return err == nil && topics.Has(topo.Commands()) && topics.Has(topo.State())
	})
	sourceTopic := topo.SourceTopic("default", "pairs")
	ctx := context.Background()
	feed := func(from, to int) {
		for i := from; i < to; i++ {
			for _, side := range []string{"left", "right"} {
				if err := produceEvent(ctx, cl, sourceTopic, fmt.Sprintf("%s-%d", side, i), "pairs", side, fmt.Sprintf(`{"id":"p%d"}`, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	feed(0, pairs/3)
	// Mid-stream: one member shuts down cleanly, another is killed.
	if err := m1.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	feed(pairs/3, 2*pairs/3)
	if err := m2.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = m1.Wait()
	_ = m2.Wait()
	feed(2*pairs/3, pairs)

	waitFor(t, "the sensor pool to commit every event", func() bool { return caughtUp(t, adm, sensor.GroupID(topo), sourceTopic) })

	perPair := map[string]int{}
	ids := map[string]bool{}
	dups := 0
	// Read commands until every pair has one (or a minute passed), then a little longer so that
	// a late duplicate would be seen.
	readCommitted(t, brokers, topo.Commands(), func() bool { return len(ids) >= pairs }, func(r *kgo.Record) {
		var cmd trigger.Command
		if err := json.Unmarshal(r.Value, &cmd); err != nil {
			t.Fatalf("command: %v", err)
		}
		if ids[cmd.ID] {
			dups++
		}
		ids[cmd.ID] = true
		var req trigger.LogRequest
		if err := json.Unmarshal(cmd.Spec, &req); err != nil || len(req.Events) != 2 {
			t.Fatalf("command %s: %d events, %v; want the pair", cmd.ID, len(req.Events), err)
		}
		var l, r2 struct{ ID string }
		_ = json.Unmarshal([]byte(req.Events[0].Data), &l)
		_ = json.Unmarshal([]byte(req.Events[1].Data), &r2)
		if l.ID != r2.ID {
			t.Errorf("command %s joined %s with %s", cmd.ID, l.ID, r2.ID)
		}
		perPair[l.ID]++
	})
	missing, twice := 0, 0
	for i := 0; i < pairs; i++ {
		switch perPair[fmt.Sprintf("p%d", i)] {
		case 0:
			missing++
		case 1:
		default:
			twice++
		}
	}
	if len(ids) != pairs || dups != 0 || missing != 0 || twice != 0 {
		t.Errorf("%d commands (%d duplicated ids) for %d pairs: %d pairs missing, %d fired twice; want exactly one each",
			len(ids)+dups, dups, pairs, missing, twice)
	}
}
