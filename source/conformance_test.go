package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// The conformance suite runs every pull source through the same life, as watermill's and
// Redpanda Connect's adapter tests do: start, receive, reject (or keep) bad input, acknowledge
// only after Kafka, stop, restart, and survive a restart of the outside server. Each source type
// describes its outside system in a conformanceOutside; runConformance does the rest on an
// embedded broker.

// conformanceN is how many messages each step sends: enough to see order and exactly once,
// few enough to keep the suite quick on two cores.
const conformanceN = 3

// conformanceEventSource and conformanceEvent name the EventSource and event under test.
const (
	conformanceEventSource = "conf"
	conformanceEvent       = "ev"
)

// conformanceOutside is the outside system of one source type, started by the test.
type conformanceOutside struct {
	// fields are the event's YAML fields, each line indented by six spaces; secrets are the
	// Secrets they name, keyed "name/key".
	fields  string
	secrets map[string]string
	// ready waits until what send sends reaches the source: subscribed, group created, ...
	ready func(t *testing.T)
	// send sends good message n; its body carries n.
	send func(t *testing.T, n int)
	// marker checks an event's data against Argo's shape for the type and returns the n of the
	// message it stands for, or -1 for the bad message (when the type keeps it).
	marker func(t *testing.T, data []byte) int
	// sendBad sends a message the source must reject, or keep as Argo does (badKept); badLog is
	// what the log says about it.
	sendBad func(t *testing.T)
	badKept bool
	badLog  string
	// atMostOnce says why the protocol cannot deliver a message again (empty: it can). The suite
	// then skips acknowledge-after-Kafka and sends nothing while the source is stopped.
	atMostOnce string
	// settled, if set, reports whether the outside holds nothing unacknowledged.
	settled func(t *testing.T) bool
	// restart stops the outside server and starts it again on the same address with what it
	// stored; restartNA says why a type has none. outage, when set, is used instead: it stops
	// the server and returns what starts it again, so that the suite sees the event reported
	// not connected while the server is away.
	restart   func(t *testing.T)
	outage    func(t *testing.T) (back func(t *testing.T))
	restartNA string
	// eventType is the CloudEvent type when Argo spells it unlike the field name (pubSub's
	// "pubsub"); empty: the field name.
	eventType string
}

// newConformanceHarness starts the bus of the suite: one broker holding the EventSource's topic
// and the sources topic, and an Env that runs plain and owned sources. The logs are returned,
// and shown when the test fails.
func newConformanceHarness(t *testing.T) (*harness, *syncBuffer) {
	t.Helper()
	topo, err := topology.New()
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second),
		kfake.SeedTopics(1, topo.SourceTopic("", conformanceEventSource)), kfake.SeedTopics(6, topo.Sources()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := kgo.NewClient(append(ProducerOpts(), kgo.SeedBrokers(cluster.ListenAddrs()...))...)
	if err != nil {
		cluster.Close()
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	t.Cleanup(func() {
		client.Close()
		cluster.Close()
		if t.Failed() {
			t.Logf("kevents logs:\n%s", logs)
		}
	})
	h := &harness{t: t, cluster: cluster, client: client, topo: topo, metrics: metrics.New()}
	h.env = &Env{
		Topology:       topo,
		Publisher:      KafkaPublisher{Client: client},
		Secrets:        mapSecrets(nil),
		Metrics:        h.metrics,
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PublishTimeout: 2 * time.Second,
		Kafka:          kclient.Config{Brokers: cluster.ListenAddrs()},
		Member:         "m1",
		SessionTimeout: ownedSession,
	}
	return h, logs
}

// refuseWrites makes the broker answer every produce with a non-retriable error, as a Kafka
// that refuses the source's records, until the returned function is called: nothing is written
// meanwhile, so an event that appears later was produced again.
func (h *harness) refuseWrites() (allow func()) {
	var refusing atomic.Bool
	refusing.Store(true)
	h.cluster.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !refusing.Load() {
			h.cluster.DropControl()
			return nil, nil, false
		}
		h.cluster.KeepControl()
		preq := req.(*kmsg.ProduceRequest)
		resp := preq.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range preq.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.InvalidRecord.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return func() { refusing.Store(false) }
}

// committedEvents reads the events of partition 0 of topic as a read_committed consumer sees
// them (owned sources write in transactions).
func (h *harness) committedEvents(topic string) []*cloudevents.Event {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*cloudevents.Event
	err := h.env.Kafka.ReadPartition(ctx, topic, 0, func(r *kgo.Record) error {
		out = append(out, decode(h.t, r))
		return nil
	})
	if err != nil {
		h.t.Fatalf("read %s: %v", topic, err)
	}
	return out
}

// gauge reads one child of a gauge family from the registry, as a scrape would; ok is false
// when the child does not exist.
func (h *harness) gauge(family, eventSource, event string) (v float64, ok bool) {
	h.t.Helper()
	return gaugeOf(h.t, h.metrics, family, eventSource, event)
}

func gaugeOf(t *testing.T, m *metrics.Metrics, family, eventSource, event string) (v float64, ok bool) {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["eventsource"] == eventSource && labels["event"] == event {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// connectedGauge is the family Build.Connected drives.
const connectedGauge = "kevents_source_connected"

// waitConnected polls until kevents_source_connected of the event is want (1 or 0) and the
// sources' ready check agrees: for 1 it does not name the event (nil when no other event is
// down); for 0 it fails naming the event, and what it says about the event is returned.
// A report may follow the first message of a reconnection by a moment (client libraries call
// back asynchronously), hence a poll; the deadline is only a bound for a test that failed.
func (h *harness) waitConnected(eventSource, event string, want float64, step string) error {
	h.t.Helper()
	name := fmt.Sprintf("eventsource default/%s event %s", eventSource, event)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, ok := h.gauge(connectedGauge, eventSource, event)
		ready := h.metrics.SourcesReady(context.Background())
		switch {
		case want == 1 && ok && v == 1 && (ready == nil || !strings.Contains(ready.Error(), name+" ")):
			return nil
		case want == 0 && ok && v == 0 && ready != nil && strings.Contains(ready.Error(), name+" "):
			msg := ready.Error()[strings.Index(ready.Error(), name+" "):]
			if end := strings.Index(msg, "; eventsource "); end >= 0 {
				msg = msg[:end]
			}
			return errors.New(msg)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %s{eventsource=%q,event=%q} = %v (present: %v), sources ready check: %v; want %v",
				step, connectedGauge, eventSource, event, v, ok, ready, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// conformanceMarkers reads the events and counts them by marker.
func conformanceMarkers(t *testing.T, h *harness, out *conformanceOutside, topic string) map[int]int {
	t.Helper()
	got := map[int]int{}
	for _, e := range h.committedEvents(topic) {
		got[out.marker(t, e.Data())]++
	}
	return got
}

// waitMarkers polls until every marker in want has an event.
func waitMarkers(t *testing.T, h *harness, out *conformanceOutside, topic, step string, want ...int) map[int]int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := conformanceMarkers(t, h, out, topic)
		missing := false
		for _, n := range want {
			if got[n] == 0 {
				missing = true
			}
		}
		if !missing {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: events by message %v, want at least one for each of %v", step, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runConformance runs the suite for source type typ; start starts its outside system. Steps:
//
//   - start: source.Run, then out.ready;
//   - receive: conformanceN messages, each one CloudEvent with Argo's attributes (type = typ,
//     source = EventSource, subject = event) and data shape (out.marker checks it);
//   - bad input: a bad message, rejected with out.badLog in the logs or kept (out.badKept), and
//     the next message still delivered;
//   - acknowledge after Kafka (unless out.atMostOnce): while the broker refuses writes a message
//     fails to publish and stays unacknowledged outside; it is delivered once writes resume;
//   - stop and restart: messages sent while stopped (unless out.atMostOnce: sent after the
//     restart) arrive after the restart;
//   - restart the outside server (when out.restart or out.outage is set): the source reconnects
//     by itself; kevents_source_connected says 0 while the server is away (with out.outage) and
//     1 again once the source delivers;
//   - exactly once: every good message has exactly one event, and out.settled holds.
func runConformance(t *testing.T, typ string, start func(t *testing.T) *conformanceOutside) {
	h, logs := newConformanceHarness(t)
	out := start(t)
	h.env.Secrets = mapSecrets(out.secrets)
	sources := parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  %s:
    %s:
%s`, conformanceEventSource, typ, conformanceEvent, strings.TrimRight(out.fields, "\n")+"\n"))
	topic := h.topo.SourceTopic("", conformanceEventSource)
	next := 0
	sendN := func(k int) []int {
		var sent []int
		for range k {
			out.send(t, next)
			sent = append(sent, next)
			next++
		}
		return sent
	}
	began := time.Now()
	step := func(name string) { t.Logf("%6.2fs %s", time.Since(began).Seconds(), name) }

	step("start")
	stop := runSources(t, h.env, sources)
	out.ready(t)

	step("receive")
	waitMarkers(t, h, out, topic, "receive", sendN(conformanceN)...)
	wantType := typ
	if out.eventType != "" {
		wantType = out.eventType
	}
	for _, e := range h.committedEvents(topic) {
		if e.Type() != wantType || e.Source() != conformanceEventSource || e.Subject() != conformanceEvent {
			t.Errorf("receive: type %q source %q subject %q; want %s, %s, %s (Argo's attributes)",
				e.Type(), e.Source(), e.Subject(), wantType, conformanceEventSource, conformanceEvent)
		}
		if e.ID() == "" || e.Time().IsZero() || e.DataContentType() != "application/json" {
			t.Errorf("receive: id %q, time %v, datacontenttype %q; want an id, a time and application/json", e.ID(), e.Time(), e.DataContentType())
		}
	}
	for _, family := range []string{"kevents_source_events_received_total", "kevents_source_events_published_total"} {
		if got := h.counter(family, conformanceEventSource, conformanceEvent); got < conformanceN {
			t.Errorf("receive: %s = %v, want >= %d", family, got, conformanceN)
		}
	}
	_ = h.waitConnected(conformanceEventSource, conformanceEvent, 1, "receive: connected")

	step("bad input")
	out.sendBad(t)
	after := sendN(1)
	waitMarkers(t, h, out, topic, "bad input: the message after the bad one", after...)
	if got := conformanceMarkers(t, h, out, topic)[-1]; out.badKept && got != 1 || !out.badKept && got != 0 {
		t.Errorf("bad input: %d events for the bad message; want %d (kept: %v)", got, map[bool]int{true: 1}[out.badKept], out.badKept)
	}
	if !strings.Contains(logs.String(), out.badLog) {
		t.Errorf("bad input: the log does not say %q", out.badLog)
	}

	if out.atMostOnce != "" {
		step("acknowledge after Kafka: not applicable: " + out.atMostOnce)
	} else {
		step("acknowledge after Kafka")
		failures := h.counter("kevents_source_publish_failures_total", conformanceEventSource, conformanceEvent)
		allow := h.refuseWrites()
		held := sendN(1)
		h.waitCounter("kevents_source_publish_failures_total", conformanceEventSource, conformanceEvent, failures+1)
		if got := conformanceMarkers(t, h, out, topic)[held[0]]; got != 0 {
			t.Errorf("acknowledge after Kafka: message %d has %d events while Kafka refuses writes", held[0], got)
		}
		if out.settled != nil && out.settled(t) {
			t.Errorf("acknowledge after Kafka: the outside system holds nothing unacknowledged while Kafka refuses writes")
		}
		allow()
		waitMarkers(t, h, out, topic, "acknowledge after Kafka: delivered again once Kafka takes writes", held...)
	}

	step("stop")
	stop()
	// A stopped event is forgotten, and no late callback of its client brings it back.
	if v, ok := h.gauge(connectedGauge, conformanceEventSource, conformanceEvent); ok {
		t.Errorf("stop: %s = %v after the source stopped; want it gone", connectedGauge, v)
	}
	if err := h.metrics.SourcesReady(context.Background()); err != nil {
		t.Errorf("stop: sources ready check = %v after the source stopped; want nil", err)
	}
	var whileStopped []int
	if out.atMostOnce == "" {
		whileStopped = sendN(conformanceN)
	}
	step("restart")
	stop = runSources(t, h.env, sources)
	out.ready(t)
	if out.atMostOnce != "" {
		whileStopped = sendN(conformanceN)
	}
	waitMarkers(t, h, out, topic, "restart", whileStopped...)

	switch {
	case out.outage != nil:
		step("restart the outside server, waiting for the source to report it away")
		back := out.outage(t)
		_ = h.waitConnected(conformanceEventSource, conformanceEvent, 0, "restart the outside server: reported away")
		back(t)
	case out.restart != nil:
		step("restart the outside server")
		out.restart(t)
	}
	if out.restart == nil && out.outage == nil {
		step("restart the outside server: not applicable: " + out.restartNA)
	} else {
		out.ready(t)
		waitMarkers(t, h, out, topic, "restart the outside server", sendN(1)...)
		_ = h.waitConnected(conformanceEventSource, conformanceEvent, 1, "restart the outside server: connected again")
	}
	stop()

	step("exactly once")
	got := conformanceMarkers(t, h, out, topic)
	var wrong []string
	for n := range next {
		if got[n] != 1 {
			wrong = append(wrong, fmt.Sprintf("message %d: %d events", n, got[n]))
		}
		delete(got, n)
	}
	delete(got, -1)
	for n, c := range got {
		wrong = append(wrong, fmt.Sprintf("unexpected marker %d: %d events", n, c))
	}
	sort.Strings(wrong)
	if len(wrong) > 0 {
		t.Errorf("exactly once: want one event per message sent:\n%s", strings.Join(wrong, "\n"))
	}
	if out.settled != nil {
		deadline := time.Now().Add(10 * time.Second)
		for !out.settled(t) {
			if time.Now().After(deadline) {
				t.Fatal("exactly once: the outside system still holds unacknowledged messages")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
