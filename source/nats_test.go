package source

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/metrics"
)

// natsTestServer runs an in-process NATS server on a free port (or opts.Port) until the test
// ends.
func natsTestServer(t *testing.T, opts natsserver.Options) *natsserver.Server {
	t.Helper()
	opts.Host = "127.0.0.1"
	if opts.Port == 0 {
		opts.Port = -1
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := natsserver.NewServer(&opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// natsTestConn connects a client of the test (the publisher) to s.
func natsTestConn(t *testing.T, s *natsserver.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("test client connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// natsWaitSubscribed waits until n kevents connections subscribe to subject on s: core NATS
// messages published before that are not delivered to anybody.
func natsWaitSubscribed(t *testing.T, s *natsserver.Server, subject string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		cz, err := s.Connz(&natsserver.ConnzOptions{Subscriptions: true})
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, c := range cz.Conns {
			if !strings.HasPrefix(c.Name, "kevents eventsource ") {
				continue
			}
			for _, sub := range c.Subs {
				if sub == subject {
					got++
				}
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d kevents subscriptions to %s, want %d", got, subject, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// member is a second kevents member on the same Kafka cluster: its own Env (and metrics) and
// the same producer.
func (h *harness) member() *harness {
	m := *h
	m.metrics = metrics.New()
	env := *h.env
	env.Metrics = m.metrics
	env.routes = nil
	m.env = &env
	return &m
}

// waitCounter polls a counter until it reaches at least want.
func (h *harness) waitCounter(family, eventSource, event string, want float64) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for h.counter(family, eventSource, event) < want {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s{%s,%s} = %v, want >= %v", family, eventSource, event, h.counter(family, eventSource, event), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRecords polls until topic holds want records, then reads them.
func (h *harness) waitRecords(topic string, want int64) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := h.endOffset(topic)
		if n == want {
			return
		}
		if n > want || time.Now().After(deadline) {
			h.t.Fatalf("topic %s holds %d records, want %d", topic, n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) captureLogs() *syncBuffer {
	l := &syncBuffer{}
	h.env.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return l
}

// natsYAML is an EventSource with one nats event; extra is appended to the event's fields,
// indented by 6 spaces.
func natsYAML(name, event, url, subject, extra string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  nats:
    %s:
      url: %s
      subject: %q
%s`, name, event, url, subject, strings.TrimRight(extra, "\n")+"\n")
}

// natsEventData decodes the data of a nats event and lists its fields.
func natsEventData(t *testing.T, data []byte) (struct {
	Subject  string              `json:"subject"`
	Body     json.RawMessage     `json:"body"`
	Header   map[string][]string `json:"header"`
	Metadata map[string]string   `json:"metadata"`
}, map[string]json.RawMessage) {
	t.Helper()
	var d struct {
		Subject  string              `json:"subject"`
		Body     json.RawMessage     `json:"body"`
		Header   map[string][]string `json:"header"`
		Metadata map[string]string   `json:"metadata"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("event data is not JSON: %v\n%s", err, data)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	return d, fields
}

func TestNATSPublishesCloudEvent(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{})
	h := newHarness(t, []string{"nats-es"})
	runSources(t, h.env, parseEventSources(t, natsYAML("nats-es", "orders", s.ClientURL(), "orders.*", `      jsonBody: true
      metadata:
        team: payments
`)))
	topic := "kevents.src.default.nats-es"
	natsWaitSubscribed(t, s, "orders.*", 1)

	nc := natsTestConn(t, s)
	body := []byte(`{"id": 7, "items": ["a", "b"], "paid": true}`)
	before := time.Now().Add(-time.Second)
	msg := nats.NewMsg("orders.created")
	msg.Data = body
	msg.Header.Set("X-Trace", "t-1")
	msg.Header.Add("X-Multi", "1")
	msg.Header.Add("X-Multi", "2")
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	h.waitRecords(topic, 1)
	e := decode(t, h.records(topic, 1)[0])
	if e.Source() != "nats-es" || e.Subject() != "orders" || e.Type() != "nats" {
		t.Errorf("source %q subject %q type %q, want nats-es orders nats", e.Source(), e.Subject(), e.Type())
	}
	if e.ID() == "" || strings.HasPrefix(e.ID(), "jetstream:") {
		t.Errorf("id %q, want a UUID for a core NATS message", e.ID())
	}
	if e.Time().Before(before) || e.Time().After(time.Now().Add(time.Second)) {
		t.Errorf("time %v, want about now", e.Time())
	}
	if e.DataContentType() != "application/json" {
		t.Errorf("datacontenttype %q", e.DataContentType())
	}
	d, fields := natsEventData(t, e.Data())
	for k := range fields {
		switch k {
		case "subject", "body", "header", "metadata":
		default:
			t.Errorf("unexpected field %q in event data", k)
		}
	}
	if d.Subject != "orders.created" {
		t.Errorf("subject %q, want the message's subject orders.created", d.Subject)
	}
	if !jsonEqual(t, d.Body, body) {
		t.Errorf("body %s, want %s", d.Body, body)
	}
	if want := map[string][]string{"X-Trace": {"t-1"}, "X-Multi": {"1", "2"}}; !reflect.DeepEqual(d.Header, want) {
		t.Errorf("header %v, want %v", d.Header, want)
	}
	if want := map[string]string{"team": "payments"}; !reflect.DeepEqual(d.Metadata, want) {
		t.Errorf("metadata %v, want %v", d.Metadata, want)
	}
	for family, want := range map[string]float64{
		"kevents_source_events_received_total":  1,
		"kevents_source_events_published_total": 1,
		"kevents_source_publish_failures_total": 0,
	} {
		if got := h.counter(family, "nats-es", "orders"); got != want {
			t.Errorf("%s = %v, want %v", family, got, want)
		}
	}
}

func TestNATSBodyEncoding(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{})
	h := newHarness(t, []string{"raw", "js"})
	runSources(t, h.env, append(
		parseEventSources(t, natsYAML("raw", "bytes", s.ClientURL(), "raw", "")),
		parseEventSources(t, natsYAML("js", "json", s.ClientURL(), "json", "      jsonBody: true\n"))...))
	natsWaitSubscribed(t, s, "raw", 1)
	natsWaitSubscribed(t, s, "json", 1)
	nc := natsTestConn(t, s)

	// Without jsonBody the body is the message's bytes, base64 as Go (and Argo) encode []byte.
	raw := []byte("\x00\x01 not json {")
	if err := nc.Publish("raw", raw); err != nil {
		t.Fatal(err)
	}
	h.waitRecords("kevents.src.default.raw", 1)
	d, fields := natsEventData(t, decode(t, h.records("kevents.src.default.raw", 1)[0]).Data())
	var s64 string
	if err := json.Unmarshal(d.Body, &s64); err != nil {
		t.Fatalf("body %s is not a JSON string: %v", d.Body, err)
	}
	if got, err := base64.StdEncoding.DecodeString(s64); err != nil || !bytes.Equal(got, raw) {
		t.Errorf("body %q decodes to %q (%v), want %q", s64, got, err, raw)
	}
	for _, k := range []string{"header", "metadata"} {
		if _, ok := fields[k]; ok {
			t.Errorf("%s present although the message has none: %s", k, fields[k])
		}
	}

	// With jsonBody, JSON is embedded; anything else becomes a JSON string (Argo drops it).
	for i, b := range []string{`[1, {"a": null}]`, `"text"`, "plain text", ""} {
		if err := nc.Publish("json", []byte(b)); err != nil {
			t.Fatal(err)
		}
		h.waitRecords("kevents.src.default.js", int64(i+1))
	}
	recs := h.records("kevents.src.default.js", 4)
	want := []string{`[1, {"a": null}]`, `"text"`, `"plain text"`, `""`}
	for i, r := range recs {
		d, _ := natsEventData(t, decode(t, r).Data())
		if !jsonEqual(t, d.Body, []byte(want[i])) {
			t.Errorf("message %d: body %s, want %s", i, d.Body, want[i])
		}
	}
}

// Members that share a queue group split the messages; without one, each member publishes
// every message.
func TestNATSQueueGroup(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{})
	const n = 100
	for _, tc := range []struct {
		name, extra string
		want        int64
	}{
		{"queue", "      queue: kevents-orders\n", n},
		{"no queue", "", 2 * n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, []string{"shared"})
			m2 := h.member()
			subject := "work." + strings.ReplaceAll(tc.name, " ", "-")
			yaml := natsYAML("shared", "work", s.ClientURL(), subject, tc.extra)
			runSources(t, h.env, parseEventSources(t, yaml))
			runSources(t, m2.env, parseEventSources(t, yaml))
			natsWaitSubscribed(t, s, subject, 2)
			nc := natsTestConn(t, s)
			for i := range n {
				if err := nc.Publish(subject, []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
					t.Fatal(err)
				}
			}
			h.waitRecords("kevents.src.default.shared", tc.want)
			a := h.counter("kevents_source_events_published_total", "shared", "work")
			b := m2.counter("kevents_source_events_published_total", "shared", "work")
			if a+b != float64(tc.want) {
				t.Errorf("members published %v + %v, want %d in all", a, b, tc.want)
			}
			if tc.want == n && (a == 0 || b == 0) {
				t.Errorf("members published %v and %v: the queue group did not split the work", a, b)
			}
			if tc.want == 2*n && (a != n || b != n) {
				t.Errorf("members published %v and %v, want %d each without a queue", a, b, n)
			}
		})
	}
}

// natsJetStream creates stream ORDERS on orders.> and a durable push consumer delivering to
// deliver (to deliverGroup's members when set), with explicit acks, flow control and
// heartbeats.
func natsJetStream(t *testing.T, nc *nats.Conn, deliver, deliverGroup string) nats.JetStreamContext {
	t.Helper()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddConsumer("ORDERS", &nats.ConsumerConfig{
		Durable: "kevents", DeliverSubject: deliver, DeliverGroup: deliverGroup,
		AckPolicy: nats.AckExplicitPolicy, AckWait: 30 * time.Second,
		FlowControl: true, Heartbeat: 500 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	return js
}

func natsConsumer(t *testing.T, js nats.JetStreamContext) *nats.ConsumerInfo {
	t.Helper()
	ci, err := js.ConsumerInfo("ORDERS", "kevents")
	if err != nil {
		t.Fatal(err)
	}
	return ci
}

// A JetStream message is acked only after Kafka acknowledged its event: a member whose Kafka is
// down naks it, JetStream delivers it again, and a member with a working Kafka publishes and
// acks it. The event id is the same on every delivery.
func TestNATSJetStreamAckAfterKafka(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := natsTestConn(t, s)
	js := natsJetStream(t, nc, "deliver.orders", "")
	yaml := natsYAML("orders", "created", s.ClientURL(), "deliver.orders", "      jsonBody: true\n")
	topic := "kevents.src.default.orders"

	down := newHarness(t, []string{"orders"}, withDeadBroker(), withPublishTimeout(300*time.Millisecond))
	logs := down.captureLogs()
	stopDown := runSources(t, down.env, parseEventSources(t, yaml))
	natsWaitSubscribed(t, s, "deliver.orders", 1)
	ack, err := js.Publish("orders.eu", []byte(`{"order": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	// First delivery, nak with a 1 s delay, second delivery, nak again.
	down.waitCounter("kevents_source_publish_failures_total", "orders", "created", 2)
	if got := down.counter("kevents_source_events_published_total", "orders", "created"); got != 0 {
		t.Errorf("published %v with Kafka down", got)
	}
	ci := natsConsumer(t, js)
	if ci.AckFloor.Stream != 0 || ci.NumAckPending != 1 || ci.NumRedelivered < 1 {
		t.Errorf("with Kafka down: ack floor %d, ack pending %d, redelivered %d; want 0, 1, >= 1 (not acked, delivered again)",
			ci.AckFloor.Stream, ci.NumAckPending, ci.NumRedelivered)
	}
	if !strings.Contains(logs.String(), "nak'ed for redelivery") {
		t.Errorf("no nak in the logs:\n%s", logs)
	}
	stopDown()

	up := newHarness(t, []string{"orders"})
	runSources(t, up.env, parseEventSources(t, yaml))
	up.waitRecords(topic, 1)
	e := decode(t, up.records(topic, 1)[0])
	stored, err := js.GetMsg("ORDERS", ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("jetstream:ORDERS:%d:%d", ack.Sequence, stored.Time.UnixNano()); e.ID() != want {
		t.Errorf("id %q, want %q (stream, sequence, stored time)", e.ID(), want)
	}
	if !e.Time().Equal(stored.Time) {
		t.Errorf("time %v, want the stored time %v", e.Time(), stored.Time)
	}
	d, _ := natsEventData(t, e.Data())
	if d.Subject != "orders.eu" || !jsonEqual(t, d.Body, []byte(`{"order": 1}`)) {
		t.Errorf("data subject %q body %s, want orders.eu {\"order\": 1}", d.Subject, d.Body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ci = natsConsumer(t, js); ci.AckFloor.Stream != ack.Sequence || ci.NumAckPending != 0; ci = natsConsumer(t, js) {
		if time.Now().After(deadline) {
			t.Fatalf("after Kafka acknowledged: ack floor %d, ack pending %d; want %d, 0", ci.AckFloor.Stream, ci.NumAckPending, ack.Sequence)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A second message goes straight through; heartbeats and flow control (500 ms) never
	// become events.
	if _, err := js.Publish("orders.us", []byte(`{"order": 2}`)); err != nil {
		t.Fatal(err)
	}
	up.waitRecords(topic, 2)
	time.Sleep(1200 * time.Millisecond)
	up.waitRecords(topic, 2)
	if got := up.counter("kevents_source_events_received_total", "orders", "created"); got != 2 {
		t.Errorf("received %v events, want 2 (heartbeats are no events)", got)
	}
}

// Several members share a JetStream push consumer through its deliver group: each message is
// published once and acked.
func TestNATSJetStreamDeliverGroup(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := natsTestConn(t, s)
	js := natsJetStream(t, nc, "deliver.grouped", "kevents")
	h := newHarness(t, []string{"grouped"})
	m2 := h.member()
	yaml := natsYAML("grouped", "orders", s.ClientURL(), "deliver.grouped", "      queue: kevents\n")
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, m2.env, parseEventSources(t, yaml))
	natsWaitSubscribed(t, s, "deliver.grouped", 2)
	const n = 50
	for i := range n {
		if _, err := js.Publish("orders.x", []byte(fmt.Sprintf("%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	h.waitRecords("kevents.src.default.grouped", n)
	ids := map[string]bool{}
	for _, r := range h.records("kevents.src.default.grouped", n) {
		ids[decode(t, r).ID()] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct ids, want %d", len(ids), n)
	}
	a := h.counter("kevents_source_events_published_total", "grouped", "orders")
	b := m2.counter("kevents_source_events_published_total", "grouped", "orders")
	if a == 0 || b == 0 || a+b != n {
		t.Errorf("members published %v and %v, want both some, %d in all", a, b, n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ci := natsConsumer(t, js); ci.AckFloor.Stream != n; ci = natsConsumer(t, js) {
		if time.Now().After(deadline) {
			t.Fatalf("ack floor %d, want %d", ci.AckFloor.Stream, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Core NATS has no redelivery: a message Kafka did not acknowledge is counted, logged and lost.
func TestNATSCoreKafkaDown(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{})
	h := newHarness(t, []string{"lossy"}, withDeadBroker(), withPublishTimeout(200*time.Millisecond))
	logs := h.captureLogs()
	runSources(t, h.env, parseEventSources(t, natsYAML("lossy", "ev", s.ClientURL(), "lossy", "")))
	natsWaitSubscribed(t, s, "lossy", 1)
	if err := natsTestConn(t, s).Publish("lossy", []byte("x")); err != nil {
		t.Fatal(err)
	}
	h.waitCounter("kevents_source_publish_failures_total", "lossy", "ev", 1)
	time.Sleep(500 * time.Millisecond)
	if got := h.counter("kevents_source_events_received_total", "lossy", "ev"); got != 1 {
		t.Errorf("received %v, want 1 (no redelivery)", got)
	}
	if !strings.Contains(logs.String(), "message lost") {
		t.Errorf("the loss is not logged:\n%s", logs)
	}
}

// natsTestAuth is one way to authenticate: the server's options, the Secrets and auth YAML of
// the source, and the option of the test's own client.
type natsTestAuth struct {
	name    string
	server  natsserver.Options
	secrets map[string]string
	yaml    string
	client  nats.Option
	secret  string // must never be logged
}

func natsAuthCases(t *testing.T) []natsTestAuth {
	t.Helper()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	userPub, _ := user.PublicKey()
	userSeed, _ := user.Seed()

	// Operator mode for a creds file: operator → account → user.
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	acct, _ := nkeys.CreateAccount()
	acctPub, _ := acct.PublicKey()
	acctJWT, err := jwt.NewAccountClaims(acctPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &natsserver.MemAccResolver{}
	if err := resolver.Store(acctPub, acctJWT); err != nil {
		t.Fatal(err)
	}
	credUser, _ := nkeys.CreateUser()
	credPub, _ := credUser.PublicKey()
	credSeed, _ := credUser.Seed()
	userJWT, err := jwt.NewUserClaims(credPub).Encode(acct)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, credSeed)
	if err != nil {
		t.Fatal(err)
	}

	return []natsTestAuth{{
		name:    "token",
		server:  natsserver.Options{Authorization: "s3cr3t-token-value"},
		secrets: map[string]string{"nats-auth/token": "s3cr3t-token-value"},
		yaml:    "      auth:\n        token:\n          name: nats-auth\n          key: token\n",
		client:  nats.Token("s3cr3t-token-value"),
		secret:  "s3cr3t-token-value",
	}, {
		name:    "basic",
		server:  natsserver.Options{Username: "kevents", Password: "pa55-w0rd-value"},
		secrets: map[string]string{"nats-auth/user": "kevents", "nats-auth/password": "pa55-w0rd-value"},
		yaml: `      auth:
        basic:
          username: {name: nats-auth, key: user}
          password: {name: nats-auth, key: password}
`,
		client: nats.UserInfo("kevents", "pa55-w0rd-value"),
		secret: "pa55-w0rd-value",
	}, {
		name:    "nkey",
		server:  natsserver.Options{Nkeys: []*natsserver.NkeyUser{{Nkey: userPub}}},
		secrets: map[string]string{"nats-auth/seed": string(userSeed)},
		yaml:    "      auth:\n        nkey: {name: nats-auth, key: seed}\n",
		client:  nats.Nkey(userPub, user.Sign),
		secret:  string(userSeed),
	}, {
		name:    "credential",
		server:  natsserver.Options{TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver},
		secrets: map[string]string{"nats-auth/creds": string(creds)},
		yaml:    "      auth:\n        credential: {name: nats-auth, key: creds}\n",
		client:  nats.UserJWTAndSeed(userJWT, string(credSeed)),
		secret:  string(credSeed),
	}}
}

func TestNATSAuth(t *testing.T) {
	for _, tc := range natsAuthCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			s := natsTestServer(t, tc.server)
			h := newHarness(t, []string{"authed"}, withSecrets(mapSecrets(tc.secrets)))
			logs := h.captureLogs()
			runSources(t, h.env, parseEventSources(t, natsYAML("authed", "ev", s.ClientURL(), "secure", tc.yaml)))
			natsWaitSubscribed(t, s, "secure", 1)
			if err := natsTestConn(t, s, tc.client).Publish("secure", []byte(`{"ok":true}`)); err != nil {
				t.Fatal(err)
			}
			h.waitRecords("kevents.src.default.authed", 1)
			e := decode(t, h.records("kevents.src.default.authed", 1)[0])
			if strings.Contains(string(e.Data()), tc.secret) {
				t.Errorf("the secret is in the event: %s", e.Data())
			}
			if strings.Contains(logs.String(), tc.secret) {
				t.Errorf("the secret is in the logs:\n%s", logs)
			}
		})
	}
}

// A refused token is retried with the backoff and never logged; a missing Secret stops Run
// from starting, and its error names the Secret only.
func TestNATSAuthFailures(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{Authorization: "right-token"})
	yaml := natsYAML("authed", "ev", s.ClientURL(), "secure", `      auth:
        token: {name: nats-auth, key: token}
      connectionBackoff: {duration: 50ms, factor: 1, jitter: 0, steps: 3}
`)
	t.Run("wrong token", func(t *testing.T) {
		h := newHarness(t, []string{"authed"}, withSecrets(mapSecrets(map[string]string{"nats-auth/token": "wrong-token-value"})))
		logs := h.captureLogs()
		runSources(t, h.env, parseEventSources(t, yaml))
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(logs.String(), "cannot connect") < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than 3 connection attempts logged:\n%s", logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		out := logs.String()
		if !strings.Contains(strings.ToLower(out), "authorization violation") {
			t.Errorf("the refusal is not logged:\n%s", out)
		}
		if strings.Contains(out, "wrong-token-value") {
			t.Errorf("the token is in the logs:\n%s", out)
		}
	})
	t.Run("missing secret", func(t *testing.T) {
		h := newHarness(t, []string{"authed"}, withSecrets(mapSecrets(map[string]string{"other/token": "right-token"})))
		_, err := Run(context.Background(), h.env, parseEventSources(t, yaml))
		if err == nil || !strings.Contains(err.Error(), "auth.token") || !strings.Contains(err.Error(), "nats-auth/token") {
			t.Fatalf("Run: %v; want an error naming auth.token and the Secret nats-auth/token", err)
		}
		if strings.Contains(err.Error(), "right-token") {
			t.Errorf("the error shows a secret: %v", err)
		}
	})
}

// natsTestPKI makes a CA and a server and a client certificate it signed, as PEM.
func natsTestPKI(t *testing.T) (caPEM, serverCert, serverKey, clientCert, clientKey []byte) {
	t.Helper()
	newKey := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	caKey, _ := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage) ([]byte, []byte) {
		k, keyPEM := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM
	}
	serverCert, serverKey = leaf(2, x509.ExtKeyUsageServerAuth)
	clientCert, clientKey = leaf(3, x509.ExtKeyUsageClientAuth)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), serverCert, serverKey, clientCert, clientKey
}

// The server requires TLS and a client certificate; the CA, certificate and key come from
// Secrets.
func TestNATSTLS(t *testing.T) {
	caPEM, srvCert, srvKey, cliCert, cliKey := natsTestPKI(t)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	s := natsTestServer(t, natsserver.Options{TLS: true, TLSVerify: true, TLSTimeout: 5, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}})
	h := newHarness(t, []string{"tls"}, withSecrets(mapSecrets(map[string]string{
		"nats-tls/ca.crt": string(caPEM), "nats-tls/tls.crt": string(cliCert), "nats-tls/tls.key": string(cliKey),
	})))
	logs := h.captureLogs()
	runSources(t, h.env, parseEventSources(t, natsYAML("tls", "ev", s.ClientURL(), "secure", `      tls:
        caCertSecret: {name: nats-tls, key: ca.crt}
        clientCertSecret: {name: nats-tls, key: tls.crt}
        clientKeySecret: {name: nats-tls, key: tls.key}
`)))
	natsWaitSubscribed(t, s, "secure", 1)
	clientPair, _ := tls.X509KeyPair(cliCert, cliKey)
	nc := natsTestConn(t, s, nats.Secure(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientPair}, MinVersion: tls.VersionTLS12}))
	if err := nc.Publish("secure", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	h.waitRecords("kevents.src.default.tls", 1)
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Errorf("the key is in the logs:\n%s", logs)
	}
}

// The server is down at start and restarts later: the source connects with connectionBackoff,
// and reconnects (restoring its subscription) after a restart.
func TestNATSReconnect(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"flaky"})
	runSources(t, h.env, parseEventSources(t, natsYAML("flaky", "ev", fmt.Sprintf("nats://127.0.0.1:%d", port), "flaky",
		"      connectionBackoff: {duration: 50ms, factor: 2, jitter: 0.1, steps: 3}\n")))
	time.Sleep(300 * time.Millisecond) // several failed attempts

	for i := 1; i <= 2; i++ {
		s := natsTestServer(t, natsserver.Options{Port: port})
		natsWaitSubscribed(t, s, "flaky", 1)
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("flaky", []byte(fmt.Sprintf(`{"round":%d}`, i))); err != nil {
			t.Fatal(err)
		}
		h.waitRecords("kevents.src.default.flaky", int64(i))
		nc.Close()
		s.Shutdown()
		s.WaitForShutdown()
	}
}

func TestNATSBackoff(t *testing.T) {
	b, err := parseBackoff(&api.Backoff{Duration: api.Opaque(`"10ms"`), Factor: api.Opaque(`2`), Jitter: api.Opaque(`"0"`), Steps: 3})
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	for i := range 5 {
		got = append(got, b.wait(i))
	}
	if want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond}; !reflect.DeepEqual(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	if b, _ := parseBackoff(&api.Backoff{Duration: api.Opaque(`1000000`)}); b.duration != time.Millisecond || b.steps != 5 || b.factor != 1 || b.jitter != 1 {
		t.Errorf("integer duration and defaults: %+v", b)
	}
	if b, _ := parseBackoff(&api.Backoff{Duration: api.Opaque(`"1s"`), Factor: api.Opaque(`10`), Jitter: api.Opaque(`0`), Steps: 10}); b.wait(9) != time.Minute {
		t.Errorf("wait(9) = %v, want capped at a minute", b.wait(9))
	}
	if b, _ := parseBackoff(nil); b.wait(0) < time.Second || b.wait(0) > 2*time.Second {
		t.Errorf("Argo's default: first wait %v, want 1-2 s", b.wait(0))
	}
	for _, d := range []uint64{0, 1, 2, 3, 6, 100} {
		if got := natsNakDelay(d); got < time.Second || got > 30*time.Second {
			t.Errorf("natsNakDelay(%d) = %v", d, got)
		}
	}
}

func TestCheckNATS(t *testing.T) {
	check := func(extra string) error {
		t.Helper()
		return natsCheckYAML(t, natsYAML("chk", "ev", "nats://127.0.0.1:4222", "orders.>", extra))
	}
	if err := check("      queue: q\n      jsonBody: true\n"); err != nil {
		t.Errorf("valid: %v", err)
	}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"no url", natsYAML("chk", "ev", `""`, "a", ""), "spec.nats.ev: url: required"},
		{"bad url", natsYAML("chk", "ev", "http://user:hunter2@host:4222", "a", ""), `url: "http://redacted@host:4222"`},
		{"no subject", natsYAML("chk", "ev", "nats://h:4222", "", ""), "subject: required"},
		{"bad subject", natsYAML("chk", "ev", "nats://h:4222", "a.>.b", ""), `subject: "a.>.b"`},
		{"space subject", natsYAML("chk", "ev", "nats://h:4222", "a b", ""), `subject: "a b"`},
		{"empty queue", natsYAML("chk", "ev", "nats://h:4222", "a", "      queue: \"\"\n"), `queue: ""`},
		{"backoff", natsYAML("chk", "ev", "nats://h:4222", "a", "      connectionBackoff: {duration: soon}\n"), `connectionBackoff.duration: "soon"`},
		{"factor", natsYAML("chk", "ev", "nats://h:4222", "a", "      connectionBackoff: {factor: -1}\n"), "connectionBackoff.factor: -1"},
		{"tls empty", natsYAML("chk", "ev", "nats://h:4222", "a", "      tls: {caCertSecret: {name: x, key: \"\"}}\n"), "tls.caCertSecret: a secret name and key are required"},
		{"tls half", natsYAML("chk", "ev", "nats://h:4222", "a", "      tls: {clientCertSecret: {name: x, key: y}}\n"), "tls: clientCertSecret and clientKeySecret go together"},
		{"two auths", natsYAML("chk", "ev", "nats://h:4222", "a", "      auth: {token: {name: a, key: b}, nkey: {name: a, key: c}}\n"), "auth: set only one"},
		{"basic half", natsYAML("chk", "ev", "nats://h:4222", "a", "      auth: {basic: {username: {name: a, key: b}}}\n"), "auth.basic.password: a secret name and key are required"},
		{"filter", natsYAML("chk", "ev", "nats://h:4222", "a", "      filter: {expression: \"body.a = 1\"}\n"), `spec.nats.ev.filter.expression: "body.a = 1" is not a valid expression`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := natsCheckYAML(t, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v; want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows a password: %v", err)
			}
		})
	}
}

func natsCheckYAML(t *testing.T, yaml string) error {
	t.Helper()
	return Check(parseEventSources(t, yaml)[0])
}

// Argo's own example loads and passes Check.
func TestNATSArgoExample(t *testing.T) {
	es := parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: nats
spec:
  nats:
    example:
      url: nats://nats.argo-events.svc:4222
      jsonBody: true
      subject: foo
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

// TestConformanceNATSJetStream runs the suite on a JetStream push consumer; the server keeps
// its store across a restart.
func TestConformanceNATSJetStream(t *testing.T) {
	runConformance(t, "nats", func(t *testing.T) *conformanceOutside {
		opts := natsserver.Options{Port: freePort(t), JetStream: true, StoreDir: t.TempDir()}
		s := natsTestServer(t, opts)
		js := natsJetStream(t, natsTestConn(t, s), "deliver.conf", "")
		publish := func(t *testing.T, body string) {
			if _, err := js.Publish("orders.conf", []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
		return &conformanceOutside{
			fields: fmt.Sprintf(`      url: %s
      subject: deliver.conf
      jsonBody: true
      metadata: {team: payments}
      connectionBackoff: {duration: 100ms, factor: 2, jitter: 0, steps: 3}
`, s.ClientURL()),
			ready: func(t *testing.T) { natsWaitSubscribed(t, s, "deliver.conf", 1) },
			send:  func(t *testing.T, n int) { publish(t, fmt.Sprintf(`{"n": %d}`, n)) },
			marker: func(t *testing.T, data []byte) int {
				d, _ := natsEventData(t, data)
				if d.Subject != "orders.conf" || !reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
					t.Errorf("subject %q metadata %v, want orders.conf and the event's metadata", d.Subject, d.Metadata)
				}
				if string(d.Body) == `"not json {"` {
					return -1
				}
				return conformanceMarker(t, d.Body)
			},
			sendBad: func(t *testing.T) { publish(t, "not json {") },
			// Kept as a JSON string, without a log (nats.go: Argo drops it).
			badKept: true,
			settled: func(t *testing.T) bool {
				ci := natsConsumer(t, js)
				return ci.NumAckPending == 0 && ci.NumPending == 0
			},
			outage: func(t *testing.T) func(*testing.T) {
				s.Shutdown()
				s.WaitForShutdown()
				return func(t *testing.T) {
					s = natsTestServer(t, opts)
					nc, err := nats.Connect(s.ClientURL())
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(nc.Close)
					if js, err = nc.JetStream(); err != nil {
						t.Fatal(err)
					}
				}
			},
		}
	})
}
