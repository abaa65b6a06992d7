package metrics

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lags gathers kevents_consumer_lag as "group topic partition" → value, as a scrape would.
func lags(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "kevents_consumer_lag" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["group"]+" "+labels["topic"]+" "+labels["partition"]] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestConsumerLagReportsWhatTheClusterCanTell: partitions with a lag are reported; a group or
// partition the cluster cannot tell about is left out, and logged unless the group does not exist.
func TestConsumerLagReportsWhatTheClusterCanTell(t *testing.T) {
	m := New()
	if got := lags(t, m.Registry); len(got) != 0 {
		t.Fatalf("lag before Watch: %v; want none", got)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var asked []string
	stop := m.ConsumerLag.Watch(func(_ context.Context, groups ...string) (kadm.DescribedGroupLags, error) {
		asked = groups
		return kadm.DescribedGroupLags{
			"kevents.sensor": {Group: "kevents.sensor", Lag: kadm.GroupLag{"kevents.matches": {
				0: {Topic: "kevents.matches", Partition: 0, Lag: 7},
				1: {Topic: "kevents.matches", Partition: 1, Lag: -1, Err: errors.New("no end offset")},
			}}},
			"kevents.executor": {Group: "kevents.executor", FetchErr: errors.New("coordinator moving")},
			"kevents.sources":  {Group: "kevents.sources", DescribeErr: kerr.GroupIDNotFound},
		}, nil
	}, log, "kevents.sensor", "kevents.executor", "kevents.sources")

	got := lags(t, m.Registry)
	if len(got) != 1 || got["kevents.sensor kevents.matches 0"] != 7 {
		t.Errorf("lag %v; want only kevents.sensor kevents.matches 0 = 7", got)
	}
	if strings.Join(asked, ",") != "kevents.sensor,kevents.executor,kevents.sources" {
		t.Errorf("asked for %v", asked)
	}
	if !strings.Contains(logs.String(), "coordinator moving") || strings.Contains(logs.String(), "kevents.sources") {
		t.Errorf("logs %q; want the executor group's error and nothing about the group that does not exist", logs.String())
	}

	stop()
	if got := lags(t, m.Registry); len(got) != 0 {
		t.Errorf("lag after stop: %v; want none", got)
	}
}

// TestConsumerLagClusterUnreachable: when the cluster cannot answer, the scrape goes on without
// the lag series, and the error is logged.
func TestConsumerLagClusterUnreachable(t *testing.T) {
	m := New()
	var logs bytes.Buffer
	m.ConsumerLag.Watch(func(context.Context, ...string) (kadm.DescribedGroupLags, error) {
		return nil, errors.New("no broker answers")
	}, slog.New(slog.NewTextHandler(&logs, nil)), "g")
	if got := lags(t, m.Registry); len(got) != 0 {
		t.Errorf("lag %v; want none", got)
	}
	if !strings.Contains(logs.String(), "no broker answers") {
		t.Errorf("logs %q; want the error", logs.String())
	}
}

// TestConsumerLagAgainstBroker: N records, a member that consumed them without committing
// (lag N), an empty group that committed offset 2 (lag N-2), and a group that never existed.
func TestConsumerLagAgainstBroker(t *testing.T) {
	const n = 5
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "events", Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := kadm.NewClient(cl)
	if _, err := adm.CommitOffsets(ctx, "committed-two", kadm.OffsetsFromRecords(kgo.Record{Topic: "events", Partition: 0, Offset: 1})); err != nil {
		t.Fatal(err)
	}

	member, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup("idle"), kgo.ConsumeTopics("events"),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	// Consuming every record proves the member is in the group with the partition assigned.
	for got := 0; got < n; {
		f := member.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records", got, n)
		}
		got += f.NumRecords()
	}

	m := New()
	var logs bytes.Buffer
	m.ConsumerLag.Watch(adm.Lag, slog.New(slog.NewTextHandler(&logs, nil)), "idle", "committed-two", "never-started")
	got := lags(t, m.Registry)
	want := map[string]float64{"idle events 0": n, "committed-two events 0": n - 2}
	if len(got) != len(want) || got["idle events 0"] != want["idle events 0"] || got["committed-two events 0"] != want["committed-two events 0"] {
		t.Errorf("lag %v; want %v", got, want)
	}
	if logs.Len() > 0 {
		t.Errorf("logged %q; a group that never started is no error", logs.String())
	}
}
