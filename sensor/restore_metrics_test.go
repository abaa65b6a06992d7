package sensor

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// TestRestoreMetrics: restoring a state partition counts every record read, tombstones
// included, and shows the partition as restoring while it reads, and no longer after, also
// when the restore fails.
func TestRestoreMetrics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topo, err := topology.New(topology.Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	kc := kclient.Config{Brokers: c.ListenAddrs()}
	cl, err := kc.NewClient(kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topo.Apply(ctx, kadm.NewClient(cl)); err != nil {
		t.Fatal(err)
	}
	produce := func(key string, st *joinState) {
		t.Helper()
		if err := cl.ProduceSync(ctx, stateRecord(topo.State(), 0, key, st)).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	state := func() *joinState {
		return &joinState{Namespace: "default", Sensor: "join", Trigger: "t", First: time.Now(),
			Events: map[string]json.RawMessage{"a": json.RawMessage(`{"id":"x"}`)}}
	}
	// Three keys written, one of them then tombstoned: four records, two keys pending.
	for _, k := range []string{"k1", "k2", "k3"} {
		produce(joinKey("default", "join", "t", k), state())
	}
	produce(joinKey("default", "join", "t", "k2"), nil)

	m := metrics.New()
	var restoringSeen atomic.Int64
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		restoringSeen.Store(int64(testutil.ToFloat64(m.SensorRestoringPartitions)))
		return nil, nil, false // observe only
	})
	got, err := restorePartition(ctx, kc, topo.State(), 0, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Errorf("restored %d keys, want 2", len(got))
	}
	if v := testutil.ToFloat64(m.SensorRestoreRecords); v != 4 {
		t.Errorf("kevents_sensor_restore_records_total = %v, want the 4 records of the partition", v)
	}
	if v := restoringSeen.Load(); v != 1 {
		t.Errorf("kevents_sensor_restoring_partitions = %d while reading, want 1", v)
	}
	if v := testutil.ToFloat64(m.SensorRestoringPartitions); v != 0 {
		t.Errorf("kevents_sensor_restoring_partitions = %v after the restore, want 0", v)
	}

	// A record that cannot be read stops the restore; the partition is no longer restoring.
	rec := &kgo.Record{Topic: topo.State(), Partition: 0, Key: []byte("broken"), Value: []byte("not json")}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := restorePartition(ctx, kc, topo.State(), 0, m); err == nil {
		t.Fatal("restore of a malformed state record succeeded")
	}
	if v := testutil.ToFloat64(m.SensorRestoringPartitions); v != 0 {
		t.Errorf("kevents_sensor_restoring_partitions = %v after a failed restore, want 0", v)
	}
}
