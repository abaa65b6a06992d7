package source

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// redisStreamFields is a redisStream event reading stream "orders" in group "kevents-cg".
func redisStreamFields(s *redisTestServer, extra string) string {
	return fmt.Sprintf(`      hostAddress: %s
      streams: [orders]
      consumerGroup: kevents-cg
      maxMsgCountPerRead: 2
      metadata: {team: payments}
%s`, s.addr(), extra)
}

// redisStreamWaitGroup waits until the group exists on the stream: entries added before are
// not delivered (it starts at "$").
func redisStreamWaitGroup(t *testing.T, s *redisTestServer, stream, group string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		groups, err := s.client.XInfoGroups(context.Background(), stream).Result()
		for _, g := range groups {
			if g.Name == group {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no group %s on stream %s: %v %v", group, stream, groups, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisStreamPending is the number of entries of the group not acknowledged yet.
func redisStreamPending(t *testing.T, s *redisTestServer, stream, group string) int64 {
	t.Helper()
	p, err := s.client.XPending(context.Background(), stream, group).Result()
	if err != nil {
		t.Fatalf("XPENDING %s %s: %v", stream, group, err)
	}
	return p.Count
}

// redisStreamMarker checks the data of a redisStream event and returns the entry's n.
func redisStreamMarker(t *testing.T, data []byte) int {
	t.Helper()
	var d struct {
		Stream   string            `json:"stream"`
		ID       string            `json:"message_id"`
		Values   map[string]any    `json:"values"`
		Metadata map[string]string `json:"metadata"`
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("event data is not a JSON object: %v\n%s", err, data)
	}
	for k := range fields {
		switch k {
		case "stream", "message_id", "values", "metadata":
		default:
			t.Errorf("unexpected field %q in the event data %s", k, data)
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Stream != "orders" || d.ID == "" || !reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
		t.Errorf("stream %q message_id %q metadata %v; want orders, the entry id and the event's metadata", d.Stream, d.ID, d.Metadata)
	}
	s, _ := d.Values["n"].(string)
	n, err := strconv.Atoi(s)
	if err != nil || len(d.Values) != 1 {
		t.Fatalf("values %v, want {\"n\": \"<number>\"} (Redis values are strings)", d.Values)
	}
	return n
}

func redisXAdd(t *testing.T, s *redisTestServer, values ...any) string {
	t.Helper()
	id, err := s.client.XAdd(context.Background(), &redis.XAddArgs{Stream: "orders", Values: values}).Result()
	if err != nil {
		t.Fatalf("XADD: %v", err)
	}
	return id
}

func TestConformanceRedisStream(t *testing.T) {
	runConformance(t, "redisStream", func(t *testing.T) *conformanceOutside {
		s := startRedis(t)
		redisXAdd(t, s, "before", "the group") // the stream must exist, as in Argo
		return &conformanceOutside{
			fields:  redisStreamFields(s, ""),
			ready:   func(t *testing.T) { redisStreamWaitGroup(t, s, "orders", "kevents-cg") },
			send:    func(t *testing.T, n int) { redisXAdd(t, s, "n", strconv.Itoa(n)) },
			marker:  redisStreamMarker,
			sendBad: func(t *testing.T) { redisXAdd(t, s, "big", strings.Repeat("x", topology.MaxRecordBytes)) },
			badLog:  "redisStream: entry rejected and acknowledged",
			settled: func(t *testing.T) bool { return redisStreamPending(t, s, "orders", "kevents-cg") == 0 },
			outage: func(*testing.T) func(*testing.T) {
				s.stop()
				return func(*testing.T) { s.start() }
			},
		}
	})
}

// Two members share the entries as two consumers of the group; the entries a consumer gone
// for good read but never acknowledged are claimed once idle. The event id and time derive
// from the entry.
func TestRedisStreamMembersShareAndClaim(t *testing.T) {
	old := redisStreamClaimIdle
	redisStreamClaimIdle = func(time.Duration) time.Duration { return 300 * time.Millisecond }
	t.Cleanup(func() { redisStreamClaimIdle = old })
	s := startRedis(t)
	ctx := context.Background()
	if err := s.client.XGroupCreateMkStream(ctx, "orders", "kevents-cg", "$").Err(); err != nil {
		t.Fatal(err)
	}
	// A consumer that read two entries and went away.
	orphans := []string{redisXAdd(t, s, "n", "0"), redisXAdd(t, s, "n", "1")}
	if _, err := s.client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "kevents-cg", Consumer: "gone", Streams: []string{"orders", ">"}, Block: -1}).Result(); err != nil {
		t.Fatal(err)
	}

	h, _ := newConformanceHarness(t)
	m2 := *h.env
	m2.Member, m2.Metrics = "m2", metrics.New()
	yaml := fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: %s\nspec:\n  redisStream:\n    %s:\n%s",
		conformanceEventSource, conformanceEvent, redisStreamFields(s, ""))
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, &m2, parseEventSources(t, yaml))
	const n = 40
	for i := 2; i < n; i++ {
		redisXAdd(t, s, "n", strconv.Itoa(i))
	}
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(30 * time.Second)
	for len(h.committedEvents(topic)) < n || redisStreamPending(t, s, "orders", "kevents-cg") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d events, %d entries pending; want %d events and none pending", len(h.committedEvents(topic)), redisStreamPending(t, s, "orders", "kevents-cg"), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	seen := map[int]int{}
	for _, e := range h.committedEvents(topic) {
		k := redisStreamMarker(t, e.Data())
		seen[k]++
		if k < 2 {
			if want := fmt.Sprintf("%s:%s:%s:0:orders:%s", conformanceEventSource, conformanceEvent, s.addr(), orphans[k]); e.ID() != want {
				t.Errorf("id %q, want %q", e.ID(), want)
			}
			if !e.Time().Equal(redisStreamTime(orphans[k])) {
				t.Errorf("time %v, want the entry's %v", e.Time(), redisStreamTime(orphans[k]))
			}
		}
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("entry %d: %d events, want 1", i, seen[i])
		}
	}
	a := h.counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	b := (&harness{t: t, metrics: m2.Metrics}).counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	if a == 0 || b == 0 {
		t.Errorf("members published %v and %v: want both to take part", a, b)
	}
	consumers, err := s.client.XInfoConsumers(ctx, "orders", "kevents-cg").Result()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range consumers {
		names = append(names, c.Name)
	}
	if want := []string{"gone", "m1", "m2"}; !reflect.DeepEqual(names, want) {
		t.Errorf("consumers %v, want %v (one per member, named after it)", names, want)
	}
}

// A stream that does not exist yet is waited for, with a log saying so; Redis down is retried.
func TestRedisStreamWaitsForStream(t *testing.T) {
	s := startRedis(t)
	h, logs := newConformanceHarness(t)
	old := redisRetry
	redisRetry.first, redisRetry.limit = 50*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { redisRetry = old })
	runSources(t, h.env, parseEventSources(t, fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: %s\nspec:\n  redisStream:\n    %s:\n%s",
		conformanceEventSource, conformanceEvent, redisStreamFields(s, ""))))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "stream orders does not exist yet") {
		if time.Now().After(deadline) {
			t.Fatalf("the missing stream is not logged:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	redisXAdd(t, s, "n", "-1") // creates the stream; the group starts after it
	redisStreamWaitGroup(t, s, "orders", "kevents-cg")
	redisXAdd(t, s, "n", "7")
	deadline = time.Now().Add(10 * time.Second)
	for {
		evs := h.committedEvents(h.topo.SourceTopic("", conformanceEventSource))
		if len(evs) == 1 && redisStreamMarker(t, evs[0].Data()) == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events, want the one entry added after the group", len(evs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
