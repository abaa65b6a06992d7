package source

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/metrics"
)

// The RabbitMQ user every test connects as; the server creates it at its first start.
const (
	rabbitUser     = "kevents"
	rabbitPassword = "rabbit-pa55-value"
)

// rabbitTestServer is Debian's rabbitmq-server, run by the test on free ports with its data in a
// temporary folder, so that a restart keeps durable exchanges, queues and persistent messages.
// The test runs its own epmd (Erlang's port mapper) on a free port too, so that the server does
// not start a daemon of its own that would outlive the test.
type rabbitTestServer struct {
	t        *testing.T
	dir      string // where rabbitmq-server and rabbitmqctl are
	data     string
	port     int
	node     string
	env      []string
	epmd     *exec.Cmd
	cmd      *exec.Cmd
	exited   chan struct{}
	output   *syncBuffer
	epmdDone chan struct{}
	// With newRabbitMQTLS: the TLS listener's port and the CA that signed its certificate.
	tlsPort int
	caPEM   []byte
}

// newRabbitMQ prepares a server without starting it (start does), or skips the test when
// rabbitmq-server is not installed (fails with KEVENTS_REQUIRE_SERVERS set, as in CI).
func newRabbitMQ(t *testing.T) *rabbitTestServer {
	t.Helper()
	return newRabbitMQWith(t, false)
}

// newRabbitMQTLS is newRabbitMQ with a TLS listener too, whose certificate (for 127.0.0.1) a CA
// of the test signed.
func newRabbitMQTLS(t *testing.T) *rabbitTestServer {
	t.Helper()
	return newRabbitMQWith(t, true)
}

func newRabbitMQWith(t *testing.T, withTLS bool) *rabbitTestServer {
	t.Helper()
	bin, err := exec.LookPath("rabbitmq-server")
	if err == nil {
		_, err = exec.LookPath("epmd")
	}
	if err != nil {
		if os.Getenv("KEVENTS_REQUIRE_SERVERS") != "" {
			t.Fatalf("rabbitmq-server is not installed (%v) and KEVENTS_REQUIRE_SERVERS is set: apt-get install rabbitmq-server (make test-servers)", err)
		}
		t.Skipf("rabbitmq-server is not installed (%v): apt-get install rabbitmq-server (make test-servers) to run this test", err)
	}
	// Debian's rabbitmq-server is a wrapper that switches to the rabbitmq user; the script it
	// runs sits beside the wrapper's target.
	if real, err := filepath.EvalSymlinks(bin); err == nil {
		bin = real
	}
	s := &rabbitTestServer{t: t, dir: filepath.Dir(bin), data: t.TempDir(), port: freePort(t)}
	s.node = fmt.Sprintf("kevents%d@localhost", s.port)
	epmdPort, distPort := freePort(t), freePort(t)
	files := map[string]string{"rabbitmq-env.conf": "", "enabled_plugins": "[].\n"}
	var ssl string
	if withTLS {
		s.tlsPort = freePort(t)
		var cert, key []byte
		s.caPEM, cert, key = testServerCertificate(t)
		files["ca.pem"], files["server.pem"], files["server.key"] = string(s.caPEM), string(cert), string(key)
		ssl = fmt.Sprintf(`, {ssl_listeners, [{"127.0.0.1", %d}]}, {ssl_options, [{cacertfile, %q}, {certfile, %q}, {keyfile, %q}, {verify, verify_none}]}`,
			s.tlsPort, filepath.Join(s.data, "ca.pem"), filepath.Join(s.data, "server.pem"), filepath.Join(s.data, "server.key"))
	}
	files["rabbitmq.config"] = fmt.Sprintf(`[{rabbit, [{default_user, <<"%s">>}, {default_pass, <<"%s">>}, {loopback_users, []}, {disk_free_limit, 1000000}%s]}].`+"\n",
		rabbitUser, rabbitPassword, ssl)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.data, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RABBITMQ_") && !strings.HasPrefix(kv, "ERL_") && !strings.HasPrefix(kv, "HOME=") {
			s.env = append(s.env, kv)
		}
	}
	s.env = append(s.env,
		"HOME="+s.data, // the Erlang cookie the server and rabbitmqctl share
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(s.data, "rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(s.data, "rabbitmq.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(s.data, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(s.data, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(s.data, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(s.data, "rabbitmq.pid"),
		"RABBITMQ_LOGS=-",
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(s.port),
		"RABBITMQ_NODENAME="+s.node,
		"RABBITMQ_DIST_PORT="+strconv.Itoa(distPort),
		"ERL_EPMD_PORT="+strconv.Itoa(epmdPort),
	)

	s.epmd = exec.Command("epmd", "-port", strconv.Itoa(epmdPort))
	s.epmd.Env = s.env
	epmdOut := &syncBuffer{}
	s.epmd.Stdout, s.epmd.Stderr = epmdOut, epmdOut
	if err := s.epmd.Start(); err != nil {
		t.Fatalf("start epmd: %v", err)
	}
	s.epmdDone = make(chan struct{})
	go func() { _ = s.epmd.Wait(); close(s.epmdDone) }()
	t.Cleanup(func() {
		s.stop()
		_ = s.epmd.Process.Kill()
		<-s.epmdDone
	})
	// The server must find this epmd listening, or it starts one of its own.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", epmdPort))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("epmd not listening on %d: %v\n%s", epmdPort, err, epmdOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// testServerCertificate returns a CA, and a certificate for 127.0.0.1 it signed with its key, in
// PEM.
func testServerCertificate(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kevents test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "rabbitmq"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// startRabbitMQ starts a server and waits until it accepts AMQP connections.
func startRabbitMQ(t *testing.T) *rabbitTestServer {
	t.Helper()
	s := newRabbitMQ(t)
	s.start()
	return s
}

// url is the server's URL with the test user's credentials.
func (s *rabbitTestServer) url() string {
	return fmt.Sprintf("amqp://%s:%s@127.0.0.1:%d/", rabbitUser, rabbitPassword, s.port)
}

func (s *rabbitTestServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(filepath.Join(s.dir, "rabbitmq-server"))
	s.cmd.Env = s.env
	s.cmd.Dir = s.data
	// Its own process group, so that a server that ignores SIGTERM can be killed with its VM.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.output = &syncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start rabbitmq-server: %v", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(s.cmd, s.exited)
	began := time.Now()
	deadline := began.Add(60 * time.Second)
	for {
		conn, err := amqp.Dial(s.url())
		if err == nil {
			conn.Close()
			s.t.Logf("rabbitmq-server answering on 127.0.0.1:%d after %.1fs", s.port, time.Since(began).Seconds())
			return
		}
		select {
		case <-s.exited:
			s.t.Fatalf("rabbitmq-server exited:\n%s", s.output)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("rabbitmq-server not answering on %d: %v\n%s", s.port, err, s.output)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop shuts the server down: SIGTERM makes its script stop the VM cleanly, which syncs the
// durable queues to disk.
func (s *rabbitTestServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

func (s *rabbitTestServer) restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

// channel opens a connection and a channel for the test, closed at the end of the test or by
// the returned function.
func (s *rabbitTestServer) channel(t *testing.T) (*amqp.Channel, func()) {
	t.Helper()
	conn, err := amqp.Dial(s.url())
	if err != nil {
		t.Fatalf("connect to rabbitmq: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	return ch, func() { conn.Close() }
}

// publish publishes msgs to exchange with key and waits for the server's confirmations, so
// that they are queued when it returns.
func (s *rabbitTestServer) publish(t *testing.T, exchange, key string, msgs ...amqp.Publishing) {
	t.Helper()
	ch, done := s.channel(t)
	defer done()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var confirms []*amqp.DeferredConfirmation
	for _, m := range msgs {
		c, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, m)
		if err != nil {
			t.Fatalf("publish to %s: %v", exchange, err)
		}
		confirms = append(confirms, c)
	}
	for _, c := range confirms {
		if !c.Wait() {
			t.Fatalf("rabbitmq refused a message published to %s", exchange)
		}
	}
}

// consumers is the number of consumers of the named queue (0 when it does not exist).
func (s *rabbitTestServer) consumers(t *testing.T, queue string) int {
	t.Helper()
	ch, done := s.channel(t)
	defer done()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		return 0
	}
	return q.Consumers
}

func (s *rabbitTestServer) waitConsumers(t *testing.T, queue string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.consumers(t, queue) != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue %s has %d consumers, want %d", queue, s.consumers(t, queue), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rabbitQueue is a line of rabbitmqctl list_queues.
type rabbitQueue struct {
	name                      string
	ready, unacked, consumers int
}

// queues lists the queues through rabbitmqctl, which knows the unacknowledged messages that the
// protocol does not tell a client.
func (s *rabbitTestServer) queues(t *testing.T) map[string]rabbitQueue {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.dir, "rabbitmqctl"), "-n", s.node, "-q", "list_queues",
		"--no-table-headers", "name", "messages_ready", "messages_unacknowledged", "consumers")
	cmd.Env, cmd.Dir = s.env, s.data
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_queues: %v\n%s", err, out)
	}
	qs := map[string]rabbitQueue{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		q := rabbitQueue{name: f[0]}
		q.ready, _ = strconv.Atoi(f[1])
		q.unacked, _ = strconv.Atoi(f[2])
		q.consumers, _ = strconv.Atoi(f[3])
		qs[q.name] = q
	}
	return qs
}

// amqpDataOf decodes the data of an amqp event, checking Argo's fields (and kevents' headers).
func amqpDataOf(t *testing.T, data []byte) (d struct {
	ContentType     string            `json:"contentType"`
	ContentEncoding string            `json:"contentEncoding"`
	DeliveryMode    int               `json:"deliveryMode"`
	Priority        int               `json:"priority"`
	CorrelationID   string            `json:"correlationId"`
	ReplyTo         string            `json:"replyTo"`
	Expiration      string            `json:"expiration"`
	MessageID       string            `json:"messageId"`
	Timestamp       string            `json:"timestamp"`
	Type            string            `json:"type"`
	AppID           string            `json:"appId"`
	Exchange        string            `json:"exchange"`
	RoutingKey      string            `json:"routingKey"`
	Headers         map[string]any    `json:"headers"`
	Body            json.RawMessage   `json:"body"`
	Metadata        map[string]string `json:"metadata"`
}) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("event data is not a JSON object: %v\n%s", err, data)
	}
	argo := []string{"contentType", "contentEncoding", "deliveryMode", "priority", "correlationId", "replyTo",
		"expiration", "messageId", "timestamp", "type", "appId", "exchange", "routingKey", "body"}
	for _, k := range argo {
		if _, ok := fields[k]; !ok {
			t.Errorf("Argo's field %q is missing from the event data %s", k, data)
		}
		delete(fields, k)
	}
	delete(fields, "metadata")
	delete(fields, "headers")
	for k := range fields {
		t.Errorf("unexpected field %q in the event data %s", k, data)
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// amqpFields are the event's YAML fields of the conformance runs: a named durable queue on a
// topic exchange, with extra appended.
func amqpFields(s *rabbitTestServer, extra string) string {
	return fmt.Sprintf(`      url: %s
      exchangeName: orders
      exchangeType: topic
      routingKey: "orders.#"
      jsonBody: true
      metadata: {team: payments}
      connectionBackoff: {duration: 100ms, factor: 2, jitter: 0, steps: 3}
      queueDeclare: {name: kevents-orders, durable: true}
%s`, s.url(), extra)
}

func amqpConformance(extra string) func(t *testing.T) *conformanceOutside {
	return func(t *testing.T) *conformanceOutside {
		s := startRabbitMQ(t)
		send := func(t *testing.T, body string, id string) {
			s.publish(t, "orders", "orders.eu", amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: id, Body: []byte(body)})
		}
		return &conformanceOutside{
			fields: amqpFields(s, extra),
			ready:  func(t *testing.T) { s.waitConsumers(t, "kevents-orders", 1) },
			send:   func(t *testing.T, n int) { send(t, fmt.Sprintf(`{"n": %d}`, n), fmt.Sprintf("msg-%d", n)) },
			marker: func(t *testing.T, data []byte) int {
				d := amqpDataOf(t, data)
				if d.Exchange != "orders" || d.RoutingKey != "orders.eu" || d.DeliveryMode != 2 || d.ContentType != "application/json" ||
					!reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
					t.Errorf("exchange %q routingKey %q deliveryMode %d contentType %q metadata %v; want orders, orders.eu, 2, application/json and the event's metadata",
						d.Exchange, d.RoutingKey, d.DeliveryMode, d.ContentType, d.Metadata)
				}
				return conformanceMarker(t, d.Body)
			},
			sendBad: func(t *testing.T) { send(t, "not json {", "bad") },
			badLog:  "amqp: message rejected",
			settled: func(t *testing.T) bool {
				q := s.queues(t)["kevents-orders"]
				return q.ready == 0 && q.unacked == 0
			},
			outage: func(*testing.T) func(*testing.T) {
				s.stop()
				return func(*testing.T) { s.start() }
			},
		}
	}
}

// A named, shared queue: every member consumes it (here the one member), through the Publisher.
func TestConformanceAMQP(t *testing.T) {
	runConformance(t, "amqp", amqpConformance(""))
}

// A named queue consumed exclusively runs once in the cluster, as an owned source.
func TestConformanceAMQPOwned(t *testing.T) {
	runConformance(t, "amqp", amqpConformance("      consume: {exclusive: true}\n"))
}

// Two members consume one named queue as competing consumers: each message becomes one event,
// and both members take part.
func TestAMQPCompetingConsumers(t *testing.T) {
	s := startRabbitMQ(t)
	h, _ := newConformanceHarness(t)
	m2 := *h.env
	m2.Member, m2.Metrics = "m2", metrics.New()
	yaml := fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: %s\nspec:\n  amqp:\n    %s:\n%s",
		conformanceEventSource, conformanceEvent, amqpFields(s, ""))
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, &m2, parseEventSources(t, yaml))
	s.waitConsumers(t, "kevents-orders", 2)
	const n = 20
	var msgs []amqp.Publishing
	for i := range n {
		msgs = append(msgs, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprintf(`{"n": %d}`, i))})
	}
	s.publish(t, "orders", "orders.eu", msgs...)
	topic := h.topo.SourceTopic("", conformanceEventSource)
	waitAMQPEvents(t, h, topic, n)
	got := map[int]int{}
	for _, e := range h.committedEvents(topic) {
		got[conformanceMarker(t, amqpDataOf(t, e.Data()).Body)]++
	}
	for i := range n {
		if got[i] != 1 {
			t.Errorf("message %d: %d events, want 1 (all: %v)", i, got[i], got)
		}
	}
	a := h.counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	b := (&harness{t: t, metrics: m2.Metrics}).counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	if a == 0 || b == 0 || a+b != n {
		t.Errorf("members published %v and %v, want both some and %d in all", a, b, n)
	}
}

// waitAMQPEvents waits until topic holds n events, then a little longer to see that no more come.
func waitAMQPEvents(t *testing.T, h *harness, topic string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d events, want %d", len(h.committedEvents(topic)), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(h.committedEvents(topic)); got != n {
		t.Errorf("%d events, want %d", got, n)
	}
}

// With Argo's default queue (server-named, exclusive to its connection) every consumer would get
// its own copy of every message: the event runs once in the cluster. While Kafka refuses the
// events, the owner keeps its connection, and so its queue and the message, and requeues it.
func TestAMQPArgoDefaultQueueRunsOnce(t *testing.T) {
	s := startRabbitMQ(t)
	h, logs := newConformanceHarness(t)
	m2 := *h.env
	m2.Member, m2.Metrics = "m2", metrics.New()
	yaml := fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  amqp:
    %s:
      url: %s
      exchangeName: jobs
      exchangeType: fanout
      routingKey: any
      jsonBody: true
`, conformanceEventSource, conformanceEvent, s.url())
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, &m2, parseEventSources(t, yaml))
	// One queue, consumed by the owner.
	var queue rabbitQueue
	deadline := time.Now().Add(30 * time.Second)
	for {
		qs := s.queues(t)
		if len(qs) == 1 {
			for _, q := range qs {
				queue = q
			}
			if queue.consumers == 1 {
				break
			}
		}
		if len(qs) > 1 || time.Now().After(deadline) {
			t.Fatalf("queues %v; want one server-named queue with one consumer", qs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(queue.name, "amq.gen-") {
		t.Errorf("queue %q, want a server-named one (amq.gen-...)", queue.name)
	}
	if strings.Contains(logs.String(), "url="+s.url()) || strings.Contains(logs.String(), rabbitPassword) {
		t.Error("the password in the URL is in the logs")
	}

	body := func(i int) amqp.Publishing { return amqp.Publishing{Body: []byte(fmt.Sprintf(`{"n": %d}`, i))} }
	const n = 10
	var msgs []amqp.Publishing
	for i := range n {
		msgs = append(msgs, body(i))
	}
	s.publish(t, "jobs", "", msgs...)
	topic := h.topo.SourceTopic("", conformanceEventSource)
	waitAMQPEvents(t, h, topic, n)

	failures := func() float64 {
		return h.counter("kevents_source_publish_failures_total", conformanceEventSource, conformanceEvent) +
			(&harness{t: t, metrics: m2.Metrics}).counter("kevents_source_publish_failures_total", conformanceEventSource, conformanceEvent)
	}
	allow := h.refuseWrites()
	s.publish(t, "jobs", "", body(n))
	deadline = time.Now().Add(20 * time.Second)
	for failures() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no publish failure while Kafka refuses writes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(h.committedEvents(topic)); got != n {
		t.Errorf("%d events while Kafka refuses writes, want %d", got, n)
	}
	if q, ok := s.queues(t)[queue.name]; !ok || q.ready+q.unacked != 1 {
		t.Errorf("queue %s: %+v (exists: %v); want it to hold the message Kafka refused", queue.name, q, ok)
	}
	allow()
	waitAMQPEvents(t, h, topic, n+1)
	got := map[int]int{}
	for _, e := range h.committedEvents(topic) {
		got[conformanceMarker(t, amqpDataOf(t, e.Data()).Body)]++
	}
	for i := range n + 1 {
		if got[i] != 1 {
			t.Errorf("message %d: %d events, want 1", i, got[i])
		}
	}
}

// The server is down when the source starts: it retries with connectionBackoff and consumes once
// the server is up. Without jsonBody the body is the bytes (base64, as Argo); every property of
// the message is in the data; username and password come from Secrets and never show in logs.
// tls turns TLS on even with an amqp:// URL, verifying the server with the CA from a Secret.
func TestAMQPDataAuthAndServerDown(t *testing.T) {
	s := newRabbitMQTLS(t)
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"rabbit/user": rabbitUser, "rabbit/password": rabbitPassword, "rabbit/ca": string(s.caPEM)})
	runSources(t, h.env, parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  amqp:
    %s:
      url: amqp://127.0.0.1:%d/
      exchangeName: raw
      exchangeType: direct
      routingKey: raw
      connectionBackoff: {duration: 50ms, factor: 1, jitter: 0}
      queueDeclare: {name: kevents-raw, arguments: "x-max-length: 1000"}
      auth:
        username: {name: rabbit, key: user}
        password: {name: rabbit, key: password}
    tls:
      url: amqp://127.0.0.1:%d
      exchangeName: secure
      exchangeType: direct
      routingKey: secure
      jsonBody: true
      connectionBackoff: {duration: 50ms, factor: 1, jitter: 0}
      queueDeclare: {name: kevents-tls}
      tls: {caCertSecret: {name: rabbit, key: ca}}
      auth:
        username: {name: rabbit, key: user}
        password: {name: rabbit, key: password}
`, conformanceEventSource, conformanceEvent, s.port, s.tlsPort)))
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(logs.String(), "amqp: not connected; reconnecting") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the failures to connect are not logged:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.start()
	s.waitConsumers(t, "kevents-raw", 1)
	s.waitConsumers(t, "kevents-tls", 1)
	s.publish(t, "secure", "secure", amqp.Publishing{Body: []byte(`{"secure": true}`)})

	payload := "\x00\x01 not json {"
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	s.publish(t, "raw", "raw",
		amqp.Publishing{
			Headers:     amqp.Table{"h": "v", "n": int32(7), "nested": amqp.Table{"x": true}},
			ContentType: "application/octet-stream", ContentEncoding: "identity", DeliveryMode: amqp.Persistent,
			Priority: 3, CorrelationId: "corr-1", ReplyTo: "replies", Expiration: "60000", MessageId: "m-1",
			Timestamp: at, Type: "order.created", AppId: "shop", Body: []byte(payload),
		},
		amqp.Publishing{Body: []byte("second")})
	topic := h.topo.SourceTopic("", conformanceEventSource)
	waitAMQPEvents(t, h, topic, 3)
	for _, e := range h.committedEvents(topic) {
		d := amqpDataOf(t, e.Data())
		if e.Subject() == "tls" {
			if string(d.Body) != `{"secure":true}` || d.Exchange != "secure" {
				t.Errorf("tls event: exchange %q body %s; want secure and the message", d.Exchange, d.Body)
			}
			continue
		}
		var s64 string
		if err := json.Unmarshal(d.Body, &s64); err != nil {
			t.Fatalf("body %s is not a JSON string: %v", d.Body, err)
		}
		body, err := base64.StdEncoding.DecodeString(s64)
		if err != nil {
			t.Fatalf("body %q is not base64: %v", s64, err)
		}
		if d.MessageID == "" {
			if string(body) != "second" || d.Headers != nil || d.Timestamp != "0001-01-01 00:00:00 +0000 UTC" {
				t.Errorf("second message: body %q headers %v timestamp %q; want second, none and Go's zero time", body, d.Headers, d.Timestamp)
			}
			if _, err := uuid.Parse(e.ID()); err != nil {
				t.Errorf("id %q of a message without a message id, want a UUID", e.ID())
			}
			continue
		}
		if string(body) != payload {
			t.Errorf("body %q, want %q", body, payload)
		}
		if !strings.HasPrefix(e.ID(), "m-1:") {
			t.Errorf("id %q, want m-1:<hash of the body>", e.ID())
		}
		want := []any{"application/octet-stream", "identity", 2, 3, "corr-1", "replies", "60000", "m-1", "2024-05-01 10:00:00 +0000 UTC", "order.created", "shop", "raw", "raw"}
		got := []any{d.ContentType, d.ContentEncoding, d.DeliveryMode, d.Priority, d.CorrelationID, d.ReplyTo, d.Expiration, d.MessageID, d.Timestamp, d.Type, d.AppID, d.Exchange, d.RoutingKey}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("properties %v, want %v", got, want)
		}
		if wantH := map[string]any{"h": "v", "n": float64(7), "nested": map[string]any{"x": true}}; !reflect.DeepEqual(d.Headers, wantH) {
			t.Errorf("headers %v, want %v", d.Headers, wantH)
		}
		if d.Metadata != nil {
			t.Errorf("metadata %v, want none", d.Metadata)
		}
	}
	if strings.Contains(logs.String(), rabbitPassword) {
		t.Error("the password is in the logs")
	}
}

func TestCheckAMQP(t *testing.T) {
	check := func(fields string) error {
		t.Helper()
		return Check(parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: chk\nspec:\n  amqp:\n    ev:\n"+fields)[0])
	}
	const base = "      exchangeName: x\n      exchangeType: topic\n      routingKey: k\n"
	for _, ok := range []string{
		"      url: amqp://rabbit:5672\n" + base,
		"      url: amqps://u:p@rabbit/vhost\n" + base + "      tls: {caCertSecret: {name: s, key: ca}}\n",
		"      urlSecret: {name: s, key: url}\n" + base + "      auth: {username: {name: s, key: u}, password: {name: s, key: p}}\n",
		"      url: amqp://rabbit\n      exchangeName: x\n      exchangeType: x-consistent-hash\n      routingKey: \"1\"\n" +
			"      queueDeclare: {name: q, arguments: \"x-queue-type: quorum\\nx-max-length: 10\"}\n      consume: {autoAck: true}\n",
	} {
		if err := check(ok); err != nil {
			t.Errorf("valid %q: %v", ok, err)
		}
	}
	for _, tc := range []struct{ name, fields, want string }{
		{"no url", base, "spec.amqp.ev: url: missing; expected amqp://host:port"},
		{"url and secret", "      url: amqp://rabbit\n      urlSecret: {name: s, key: url}\n" + base, "url and urlSecret: both set"},
		{"bad scheme", "      url: http://user:hunter2@rabbit:5672\n" + base, `url: "http://user:xxxxx@rabbit:5672"; expected amqp://`},
		{"bad port", "      url: amqp://user:hunter2@rabbit:port\n" + base, `url: "amqp://redacted@rabbit:port"`},
		{"url secret half", "      urlSecret: {name: s}\n" + base, "urlSecret: a secret name and key are required"},
		{"no exchange", "      url: amqp://rabbit\n      exchangeType: topic\n      routingKey: k\n", "exchangeName: missing"},
		{"no exchange type", "      url: amqp://rabbit\n      exchangeName: x\n      routingKey: k\n", "exchangeType: missing"},
		{"bad exchange type", "      url: amqp://rabbit\n      exchangeName: x\n      exchangeType: topics\n      routingKey: k\n", `exchangeType: "topics"; expected direct, fanout, topic, headers`},
		{"no routing key", "      url: amqp://rabbit\n      exchangeName: x\n      exchangeType: fanout\n", "routingKey: missing"},
		{"backoff", "      url: amqp://rabbit\n" + base + "      connectionBackoff: {duration: soon}\n", `connectionBackoff.duration: "soon"`},
		{"arguments", "      url: amqp://rabbit\n" + base + "      queueDeclare: {arguments: \"[1, 2]\"}\n", `queueDeclare.arguments: "[1, 2]"; expected a mapping`},
		{"auth half", "      url: amqp://rabbit\n" + base + "      auth: {username: {name: s, key: u}}\n", "auth.password: a secret name and key are required"},
		{"tls", "      url: amqp://rabbit\n" + base + "      tls: {}\n", "tls: set enabled"},
		{"filter", "      url: amqp://rabbit\n" + base + "      filter: {expression: \"body.n ==\"}\n", `filter.expression: "body.n =="`},
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
	// An unknown field is refused when the YAML loads.
	docs := api.Parse("x.yaml", []byte("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: chk\nspec:\n  amqp:\n    ev:\n      url: amqp://rabbit\n"+base+"      queueDeclare: {nmae: q}\n"))
	if len(docs) != 1 || docs[0].Err == nil || !strings.Contains(docs[0].Err.Error(), "nmae") {
		t.Errorf("an unknown field loads: %v", docs)
	}
}

// Where an event runs: every member for a named queue shared by its consumers, once in the
// cluster otherwise.
func TestAMQPOwnership(t *testing.T) {
	h, _ := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"s/url": "amqp://u:p@rabbit:5672/"})
	for _, tc := range []struct {
		fields      string
		everyMember bool
	}{
		{"", false}, // Argo's default: server-named and exclusive
		{"      queueDeclare: {name: q}\n", true},
		{"      queueDeclare: {name: q, durable: true, autoDelete: true}\n", true},
		{"      queueDeclare: {name: q, exclusive: true}\n", false},
		{"      queueDeclare: {name: q}\n      consume: {exclusive: true}\n", false},
		{"      queueDeclare: {exclusive: false, autoDelete: true}\n", false},
	} {
		es := parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: own\nspec:\n  amqp:\n    ev:\n"+
			"      urlSecret: {name: s, key: url}\n      exchangeName: x\n      exchangeType: topic\n      routingKey: k\n"+tc.fields)[0]
		ev := es.Spec.Events()[0]
		src, err := newAMQP(Build{EventSource: es, Event: ev, Topic: "t", Env: h.env})
		if err != nil {
			t.Fatalf("%q: %v", tc.fields, err)
		}
		if got := src.(*amqpSource).everyMember(); got != tc.everyMember {
			t.Errorf("%q: every member %v, want %v", tc.fields, got, tc.everyMember)
		}
	}
	// A bad URL in the Secret is refused without showing it.
	h.env.Secrets = mapSecrets(map[string]string{"s/url": "http://u:hunter2@rabbit"})
	es := parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: own\nspec:\n  amqp:\n    ev:\n"+
		"      urlSecret: {name: s, key: url}\n      exchangeName: x\n      exchangeType: topic\n      routingKey: k\n")[0]
	_, err := newAMQP(Build{EventSource: es, Event: es.Spec.Events()[0], Topic: "t", Env: h.env})
	if err == nil || !strings.Contains(err.Error(), "urlSecret (secret s/url)") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("newAMQP: %v; want an error naming urlSecret without the password", err)
	}
}

// queueDeclare.arguments become an AMQP table: whole numbers integers (RabbitMQ refuses floats
// for x-max-length), nested mappings tables.
func TestAMQPArguments(t *testing.T) {
	got, err := amqpArguments("x-queue-type: quorum\nx-max-length: 10\nx-ratio: 0.5\nx-list: [1, a]\nx-map: {k: v}")
	if err != nil {
		t.Fatal(err)
	}
	want := amqp.Table{"x-queue-type": "quorum", "x-max-length": int64(10), "x-ratio": 0.5, "x-list": []any{int64(1), "a"}, "x-map": amqp.Table{"k": "v"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("arguments %#v, want %#v", got, want)
	}
	if _, err := amqpArguments("a: [unclosed"); err == nil || !strings.Contains(err.Error(), "queueDeclare.arguments") {
		t.Errorf("bad YAML: %v", err)
	}
}

// Argo's own example loads and passes Check.
func TestAMQPArgoExample(t *testing.T) {
	es := parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: amqp
spec:
  amqp:
    example:
      url: amqp://rabbitmq-service.argo-events:5672
      jsonBody: true
      exchangeName: test
      exchangeType: fanout
      routingKey: hello
      connectionBackoff:
        duration: 10s
        steps: 5
        factor: 2
        jitter: 0.2
      exchangeDeclare:
        durable: true
        autoDelete: false
        internal: false
        noWait: false
      queueDeclare:
        name: "my-queue-name"
        durable: false
        autoDelete: false
        exclusive: true
        noWait: false
      queueBind:
        noWait: false
      consume:
        consumerTag: "my-consumer-tag"
        autoAck: true
        exclusive: false
        noLocal: false
        noWait: false
      auth:
        username:
          name: my-secret
          key: username
        password:
          name: my-secret
          key: password
`)
	if err := Check(es[0]); err != nil {
		t.Fatal(err)
	}
}
