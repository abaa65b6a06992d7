package source

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	mqttserver "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/kevents/kevents/internal/metrics"
)

// mqttTestBroker is an in-process mochi-mqtt broker on a fixed port; restart starts a new one
// on the same port (sessions do not survive it: mochi keeps them in memory).
type mqttTestBroker struct {
	t      *testing.T
	port   int
	ledger *auth.Ledger // nil: anyone may connect
	srv    *mqttserver.Server
}

func startMQTT(t *testing.T, ledger *auth.Ledger) *mqttTestBroker {
	t.Helper()
	b := &mqttTestBroker{t: t, port: freePort(t), ledger: ledger}
	b.start()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func (b *mqttTestBroker) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", b.port) }

func (b *mqttTestBroker) start() {
	b.t.Helper()
	srv := mqttserver.New(&mqttserver.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var err error
	if b.ledger != nil {
		err = srv.AddHook(new(auth.Hook), &auth.Options{Ledger: b.ledger})
	} else {
		err = srv.AddHook(new(auth.AllowHook), nil)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", b.port)})); err != nil {
		b.t.Fatalf("mqtt listener: %v", err)
	}
	if err := srv.Serve(); err != nil {
		b.t.Fatal(err)
	}
	b.srv = srv
}

func (b *mqttTestBroker) restart() {
	b.t.Helper()
	_ = b.srv.Close()
	b.start()
}

func (b *mqttTestBroker) publish(t *testing.T, topic, payload string, qos byte) {
	t.Helper()
	if err := b.srv.Publish(topic, []byte(payload), false, qos); err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
}

// waitSubscribed waits until clientID is connected and subscribed to filter.
func (b *mqttTestBroker) waitSubscribed(t *testing.T, clientID, filter string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if cl, ok := b.srv.Clients.Get(clientID); ok && !cl.Closed() {
			if _, ok := cl.State.Subscriptions.Get(filter); ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s is not connected and subscribed to %s", clientID, filter)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inflight is the number of messages sent to clientID and not acknowledged (or queued for it).
func (b *mqttTestBroker) inflight(clientID string) int {
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok {
		return 0
	}
	return cl.State.Inflight.Len()
}

// mqttDataOf decodes the data of an mqtt event, checking Argo's fields.
func mqttDataOf(t *testing.T, data []byte) (d struct {
	Topic     string            `json:"topic"`
	MessageID *int              `json:"messageId"`
	Body      json.RawMessage   `json:"body"`
	Metadata  map[string]string `json:"metadata"`
}) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("event data is not a JSON object: %v\n%s", err, data)
	}
	for k := range fields {
		switch k {
		case "topic", "messageId", "body", "metadata":
		default:
			t.Errorf("unexpected field %q in the event data %s", k, data)
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.MessageID == nil {
		t.Errorf("no messageId in %s", data)
	}
	return d
}

func TestConformanceMQTT(t *testing.T) {
	runConformance(t, "mqtt", mqttConformance("orders/+", "kevents-conf"))
}

// With a shared subscription the event runs on every member and publishes through the
// Publisher instead of owned transactions.
func TestConformanceMQTTShared(t *testing.T) {
	runConformance(t, "mqtt", mqttConformance("$share/kevents/orders/+", "kevents-conf-m1"))
}

// mqttConformance subscribes to topic; the broker knows the source as clientID.
func mqttConformance(topic, clientID string) func(t *testing.T) *conformanceOutside {
	return func(t *testing.T) *conformanceOutside {
		b := startMQTT(t, nil)
		return &conformanceOutside{
			fields: fmt.Sprintf(`      url: %s
      topic: %s
      clientId: kevents-conf
      jsonBody: true
      metadata: {team: payments}
      connectionBackoff: {duration: 100ms, factor: 2, jitter: 0, steps: 3}
`, b.url(), topic),
			ready: func(t *testing.T) { b.waitSubscribed(t, clientID, topic) },
			send:  func(t *testing.T, n int) { b.publish(t, "orders/eu", fmt.Sprintf(`{"n": %d}`, n), 1) },
			marker: func(t *testing.T, data []byte) int {
				d := mqttDataOf(t, data)
				if d.Topic != "orders/eu" || !reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
					t.Errorf("topic %q metadata %v, want orders/eu and the event's metadata", d.Topic, d.Metadata)
				}
				return conformanceMarker(t, d.Body)
			},
			sendBad: func(t *testing.T) { b.publish(t, "orders/eu", "not json {", 1) },
			badLog:  "mqtt: message rejected; acknowledged and dropped",
			settled: func(*testing.T) bool { return b.inflight(clientID) == 0 },
			outage: func(*testing.T) func(*testing.T) {
				_ = b.srv.Close()
				return func(*testing.T) { b.start() }
			},
		}
	}
}

// Without jsonBody the body is the payload's bytes (base64, as Argo); username and password
// come from Secrets and never show in the logs.
func TestMQTTBodyAndAuth(t *testing.T) {
	b := startMQTT(t, &auth.Ledger{Auth: auth.AuthRules{{Username: "kevents", Password: "mqtt-pa55-value", Allow: true}}})
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"mqtt/user": "kevents", "mqtt/password": "mqtt-pa55-value"})
	runSources(t, h.env, parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  mqtt:
    %s:
      url: %s
      topic: "raw/#"
      clientId: kevents-raw
      auth:
        username: {name: mqtt, key: user}
        password: {name: mqtt, key: password}
`, conformanceEventSource, conformanceEvent, b.url())))
	b.waitSubscribed(t, "kevents-raw", "raw/#")
	payload := "\x00\x01 not json {"
	b.publish(t, "raw/a/b", payload, 0) // QoS 0: at most once, no acknowledgement
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no event")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := mqttDataOf(t, h.committedEvents(topic)[0].Data())
	var s64 string
	if err := json.Unmarshal(d.Body, &s64); err != nil {
		t.Fatalf("body %s is not a JSON string: %v", d.Body, err)
	}
	if got, err := base64.StdEncoding.DecodeString(s64); err != nil || string(got) != payload || d.Topic != "raw/a/b" {
		t.Errorf("topic %q body %q (%v), want raw/a/b and %q in base64", d.Topic, got, err, payload)
	}
	if strings.Contains(logs.String(), "mqtt-pa55-value") {
		t.Error("the password is in the logs")
	}
}

// With a shared subscription every member subscribes, under its own client id, and the broker
// spreads the messages: each becomes one event.
func TestMQTTSharedSubscription(t *testing.T) {
	b := startMQTT(t, nil)
	h, _ := newConformanceHarness(t)
	m2 := *h.env
	m2.Member, m2.Metrics = "m2", metrics.New()
	yaml := fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  mqtt:
    %s:
      url: %s
      topic: $share/kevents/jobs/#
      clientId: kevents-jobs
`, conformanceEventSource, conformanceEvent, b.url())
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, &m2, parseEventSources(t, yaml))
	b.waitSubscribed(t, "kevents-jobs-m1", "$share/kevents/jobs/#")
	b.waitSubscribed(t, "kevents-jobs-m2", "$share/kevents/jobs/#")
	const n = 20
	for i := range n {
		b.publish(t, "jobs/x", fmt.Sprint(i), 1)
	}
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d events, want %d", len(h.committedEvents(topic)), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if got := len(h.committedEvents(topic)); got != n {
		t.Errorf("%d events for %d messages, want one each", got, n)
	}
	a := h.counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	c := (&harness{t: t, metrics: m2.Metrics}).counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	if a == 0 || c == 0 || a+c != n {
		t.Errorf("members published %v and %v, want both some and %d in all", a, c, n)
	}
}

// The broker is down at the start: the source retries with connectionBackoff, logs it, and
// subscribes once the broker is up.
func TestMQTTBrokerDown(t *testing.T) {
	b := startMQTT(t, nil)
	_ = b.srv.Close()
	h, logs := newConformanceHarness(t)
	runSources(t, h.env, parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  mqtt:
    %s:
      url: %s
      topic: t
      clientId: kevents-down
      connectionBackoff: {duration: 50ms, factor: 1, jitter: 0}
`, conformanceEventSource, conformanceEvent, b.url())))
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(logs.String(), "mqtt: not connected; reconnecting") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the failures to connect are not logged:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.start()
	b.waitSubscribed(t, "kevents-down", "t")
}

func TestCheckMQTT(t *testing.T) {
	check := func(fields string) error {
		t.Helper()
		return Check(parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: chk\nspec:\n  mqtt:\n    ev:\n"+fields)[0])
	}
	for _, ok := range []string{
		"      url: tcp://mqtt:1883\n      topic: a/+/c/#\n      clientId: c\n",
		"      url: mqtt:1883\n      topic: \"#\"\n      clientId: c\n      auth: {username: {name: s, key: u}, password: {name: s, key: p}}\n",
		"      url: ssl://mqtt:8883\n      topic: $share/g/a/b\n      clientId: c\n      tls: {enabled: true}\n",
	} {
		if err := check(ok); err != nil {
			t.Errorf("valid %q: %v", ok, err)
		}
	}
	for _, tc := range []struct{ name, fields, want string }{
		{"no url", "      topic: a\n      clientId: c\n", "spec.mqtt.ev: url: missing; expected tcp://host:port"},
		{"bad scheme", "      url: http://user:hunter2@mqtt:1883\n      topic: a\n      clientId: c\n", `url: "http://user:xxxxx@mqtt:1883"`},
		{"no topic", "      url: tcp://mqtt:1883\n      clientId: c\n", "topic: missing"},
		{"hash not last", "      url: tcp://mqtt:1883\n      topic: a/#/b\n      clientId: c\n", `topic: "a/#/b"`},
		{"plus in level", "      url: tcp://mqtt:1883\n      topic: a/b+\n      clientId: c\n", `topic: "a/b+"`},
		{"bad share", "      url: tcp://mqtt:1883\n      topic: $share/g\n      clientId: c\n", `topic: "$share/g"; expected a shared subscription`},
		{"no client id", "      url: tcp://mqtt:1883\n      topic: a\n", "clientId: missing"},
		{"backoff", "      url: tcp://mqtt:1883\n      topic: a\n      clientId: c\n      connectionBackoff: {duration: soon}\n", `connectionBackoff.duration: "soon"`},
		{"auth half", "      url: tcp://mqtt:1883\n      topic: a\n      clientId: c\n      auth: {username: {name: s, key: u}}\n", "auth.password: a secret name and key are required"},
		{"tls", "      url: tcp://mqtt:1883\n      topic: a\n      clientId: c\n      tls: {}\n", "tls: set enabled"},
		{"filter", "      url: tcp://mqtt:1883\n      topic: a\n      clientId: c\n      filter: {expression: \"body ==\"}\n", `spec.mqtt.ev.filter.expression: "body ==" is not a valid expression`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.fields)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v; want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows a password: %v", err)
			}
		})
	}
}

// Argo's own example loads and passes Check.
func TestMQTTArgoExample(t *testing.T) {
	es := parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: mqtt
spec:
  mqtt:
    example:
      url: tcp://mqtt.argo-events:1883
      topic: bar
      jsonBody: true
      clientId: "2345"
      connectionBackoff:
        duration: 10s
        steps: 5
        factor: 2
        jitter: 0.2
`)
	if err := Check(es[0]); err != nil {
		t.Fatal(err)
	}
}
