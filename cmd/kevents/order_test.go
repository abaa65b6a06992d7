package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/trigger"
)

const orderSensor = `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: orders
spec:
  dependencies:
    - name: build
      eventSourceName: builds
      eventName: finished
  triggers:
    - template:
        name: spread
        log: {}
    - template:
        name: inorder
        log: {}
      kevents:
        ordered: true
`

// TestCommandsSpreadUnlessOrdered: a busy trigger's commands are keyed by their id and spread
// over the commands partitions (so several executor members share it); a trigger marked
// kevents.ordered keeps all its commands in one partition, in the order of its events.
func TestCommandsSpreadUnlessOrdered(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	writeFile(t, filepath.Join(dir, "defs", "es.yaml"), fmt.Sprintf(e2eEventSource, port))
	writeFile(t, filepath.Join(dir, "defs", "sensor.yaml"), orderSensor)
	cfg := localRun(t, dir, filepath.Join(dir, "defs"), "order")
	in := start(t, cfg)
	defer in.stop(t)
	const events = 30
	for i := 0; i < events; i++ {
		if code := post(t, fmt.Sprintf("http://127.0.0.1:%d/builds", port), fmt.Sprintf(`{"n":%d}`, i)); code != http.StatusOK {
			t.Fatalf("POST %d: status %d", i, code)
		}
	}
	waitFor(t, "both triggers to run every command", func() bool {
		return testutil.ToFloat64(in.metrics.Executions.WithLabelValues("orders", "spread")) == events &&
			testutil.ToFloat64(in.metrics.Executions.WithLabelValues("orders", "inorder")) == events
	})

	partitions := map[string]map[int32]bool{"spread": {}, "inorder": {}}
	var inorder []int // the n of each inorder command's event, in its partition's order
	consumeCommitted(t, in.info.brokers, cfg.topology.Commands(), func(r *kgo.Record) {
		var cmd trigger.Command
		if err := json.Unmarshal(r.Value, &cmd); err != nil {
			t.Fatalf("command %s: %v", r.Value, err)
		}
		partitions[cmd.Trigger][r.Partition] = true
		switch cmd.Trigger {
		case "spread":
			if string(r.Key) != cmd.ID || cmd.Ordered {
				t.Errorf("spread command key %q, ordered %v; want its id %s, not ordered", r.Key, cmd.Ordered, cmd.ID)
			}
		case "inorder":
			if string(r.Key) != "default/orders/inorder" || !cmd.Ordered {
				t.Errorf("inorder command key %q, ordered %v; want default/orders/inorder, ordered", r.Key, cmd.Ordered)
			}
			inorder = append(inorder, eventNumber(t, &cmd))
		}
	})
	if n := len(partitions["spread"]); n < 2 {
		t.Errorf("the spread trigger's %d commands used %d of 3 partitions; want them spread", events, n)
	}
	if n := len(partitions["inorder"]); n != 1 {
		t.Errorf("the ordered trigger's commands used %d partitions; want 1", n)
	}
	for i, n := range inorder {
		if n != i {
			t.Fatalf("the ordered trigger's commands are in event order %v; want 0..%d", inorder, events-1)
		}
	}
}

// eventNumber is the n the webhook event of a log command carried in its body.
func eventNumber(t *testing.T, cmd *trigger.Command) int {
	t.Helper()
	var req trigger.LogRequest
	var data struct {
		Body struct{ N int } `json:"body"`
	}
	if err := json.Unmarshal(cmd.Spec, &req); err != nil || len(req.Events) != 1 {
		t.Fatalf("log command spec %s: %v", cmd.Spec, err)
	}
	if err := json.Unmarshal([]byte(req.Events[0].Data), &data); err != nil {
		t.Fatalf("event data %s: %v", req.Events[0].Data, err)
	}
	return data.Body.N
}
