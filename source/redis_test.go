package source

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kevents/kevents/internal/metrics"
)

// redisTestServer is Debian's redis-server, run by the test on a free port with its data (an
// append-only file) in a temporary folder, so that a restart keeps streams, groups and pending
// entries.
type redisTestServer struct {
	t      *testing.T
	bin    string
	port   int
	dir    string
	extra  []string
	cmd    *exec.Cmd
	exited chan struct{}
	output *syncBuffer
	client *redis.Client // the test's own client
}

// startRedis starts redis-server with extra arguments, or skips the test when it is not
// installed (fails with KEVENTS_REQUIRE_SERVERS set, as in CI).
func startRedis(t *testing.T, extra ...string) *redisTestServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("KEVENTS_REQUIRE_SERVERS") != "" {
			t.Fatal("redis-server is not installed and KEVENTS_REQUIRE_SERVERS is set: apt-get install redis-server (make test-servers)")
		}
		t.Skip("redis-server is not installed: apt-get install redis-server (make test-servers) to run this test")
	}
	s := &redisTestServer{t: t, bin: bin, port: freePort(t), dir: t.TempDir(), extra: extra}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *redisTestServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

func (s *redisTestServer) start() {
	s.t.Helper()
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"}, s.extra...)
	s.cmd = exec.Command(s.bin, args...)
	s.output = &syncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(s.cmd, s.exited)
	opts := &redis.Options{Addr: s.addr()}
	for i, a := range s.extra {
		if a == "--requirepass" && i+1 < len(s.extra) {
			opts.Password = s.extra[i+1]
		}
	}
	s.client = redis.NewClient(opts)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.client.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			s.t.Fatalf("redis-server exited:\n%s", s.output)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server not answering on %s: %v\n%s", s.addr(), err, s.output)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop shuts the server down (SIGTERM: it syncs its data first).
func (s *redisTestServer) stop() {
	if s.cmd == nil {
		return
	}
	s.client.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

func (s *redisTestServer) restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

// redisWaitSubscribers waits until channel has n subscribers.
func redisWaitSubscribers(t *testing.T, s *redisTestServer, channel string, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := s.client.PubSubNumSub(context.Background(), channel).Result()
		if err == nil && got[channel] == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s has %v subscribers (%v), want %d", channel, got[channel], err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisDataOf decodes the data of a redis event, checking Argo's fields.
func redisDataOf(t *testing.T, data []byte) (d struct {
	Channel  string            `json:"channel"`
	Pattern  *string           `json:"pattern"`
	Body     json.RawMessage   `json:"body"`
	Metadata map[string]string `json:"metadata"`
}) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("event data is not a JSON object: %v\n%s", err, data)
	}
	for k := range fields {
		switch k {
		case "channel", "pattern", "body", "metadata":
		default:
			t.Errorf("unexpected field %q in the event data %s", k, data)
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Pattern == nil || *d.Pattern != "" {
		t.Errorf("pattern %v in %s, want \"\" (channels are subscribed by name, as Argo does)", d.Pattern, data)
	}
	return d
}

// conformanceMarker reads the n of a JSON body {"n": n}.
func conformanceMarker(t *testing.T, body []byte) int {
	t.Helper()
	var b struct{ N *int }
	if err := json.Unmarshal(body, &b); err != nil || b.N == nil {
		t.Fatalf("body %s, want {\"n\": <number>}", body)
	}
	return *b.N
}

func TestConformanceRedis(t *testing.T) {
	runConformance(t, "redis", func(t *testing.T) *conformanceOutside {
		s := startRedis(t)
		publish := func(t *testing.T, msg string) {
			if err := s.client.Publish(context.Background(), "orders", msg).Err(); err != nil {
				t.Fatal(err)
			}
		}
		return &conformanceOutside{
			fields: fmt.Sprintf(`      hostAddress: %s
      channels: [orders]
      jsonBody: true
      metadata: {team: payments}
`, s.addr()),
			ready: func(t *testing.T) { redisWaitSubscribers(t, s, "orders", 1) },
			send:  func(t *testing.T, n int) { publish(t, fmt.Sprintf(`{"n": %d}`, n)) },
			marker: func(t *testing.T, data []byte) int {
				d := redisDataOf(t, data)
				if d.Channel != "orders" || !reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
					t.Errorf("channel %q metadata %v, want orders and the event's metadata", d.Channel, d.Metadata)
				}
				return conformanceMarker(t, d.Body)
			},
			sendBad:    func(t *testing.T) { publish(t, "not json {") },
			badLog:     "redis: message rejected and dropped",
			atMostOnce: "Redis pub/sub has no acknowledgement and delivers a message only to the subscribers connected when it is published",
			outage: func(*testing.T) func(*testing.T) {
				s.stop()
				return func(*testing.T) { s.start() }
			},
		}
	})
}

// Without jsonBody the body is the message as a string (not base64: Argo's body is the
// payload string); a channel name with '*' is a name, not a pattern, as in Argo.
func TestRedisBodyAndChannelNames(t *testing.T) {
	s := startRedis(t, "--requirepass", "redis-pa55-value")
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"redis/password": "redis-pa55-value"})
	runSources(t, h.env, parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  redis:
    %s:
      hostAddress: %s
      password: {name: redis, key: password}
      db: 3
      channels: ["news.*", plain]
`, conformanceEventSource, conformanceEvent, s.addr())))
	redisWaitSubscribers(t, s, "news.*", 1)
	redisWaitSubscribers(t, s, "plain", 1)
	ctx := context.Background()
	for _, m := range [][2]string{{"news.sport", "not delivered: no pattern"}, {"news.*", `{"a": 1}`}, {"plain", "x\x00y"}} {
		if err := s.client.Publish(ctx, m[0], m[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a third event would come by now
	var got []string
	for _, e := range h.committedEvents(topic) {
		d := redisDataOf(t, e.Data())
		var body string
		if err := json.Unmarshal(d.Body, &body); err != nil {
			t.Errorf("body %s is not a JSON string: %v", d.Body, err)
		}
		got = append(got, d.Channel+"="+body)
	}
	sort.Strings(got)
	if want := []string{`news.*={"a": 1}`, "plain=x\x00y"}; !reflect.DeepEqual(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if strings.Contains(logs.String(), "redis-pa55-value") {
		t.Error("the password is in the logs")
	}
}

// Redis pub/sub runs on one member only: with two members, each message is published once.
func TestRedisOwnedOnce(t *testing.T) {
	s := startRedis(t)
	h, _ := newConformanceHarness(t)
	m2 := *h.env
	m2.Member, m2.Metrics = "m2", metrics.New()
	yaml := fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  redis:
    %s:
      hostAddress: %s
      channels: [orders]
`, conformanceEventSource, conformanceEvent, s.addr())
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, &m2, parseEventSources(t, yaml))
	adm := kadm.NewClient(h.client)
	deadline := time.Now().Add(20 * time.Second)
	for {
		groups, err := adm.DescribeGroups(context.Background(), h.topo.Sources())
		g := groups[h.topo.Sources()]
		if err == nil && g.State == "Stable" && len(g.Members) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: state %q with %d members (%v), want Stable with 2", h.topo.Sources(), g.State, len(g.Members), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	redisWaitSubscribers(t, s, "orders", 1)
	const n = 5
	for i := range n {
		if err := s.client.Publish(context.Background(), "orders", fmt.Sprint(i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline = time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(h.committedEvents(topic)); got != n {
		t.Errorf("%d events for %d messages, want one each (one subscriber in the cluster)", got, n)
	}
	a := h.counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	b := (&harness{t: t, metrics: m2.Metrics}).counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	if a+b != n || (a != 0 && b != 0) {
		t.Errorf("members published %v and %v, want %d by one of them", a, b, n)
	}
}

// Redis down at the start: the source keeps retrying, logs it, and subscribes once Redis is up.
func TestRedisServerDown(t *testing.T) {
	s := startRedis(t)
	s.stop()
	h, logs := newConformanceHarness(t)
	runSources(t, h.env, parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  redis:
    %s:
      hostAddress: %s
      channels: [orders]
`, conformanceEventSource, conformanceEvent, s.addr())))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "redis: cannot receive from the subscription; reconnecting") {
		if time.Now().After(deadline) {
			t.Fatal("the failure to reach Redis is not logged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.start()
	redisWaitSubscribers(t, s, "orders", 1)
	if err := s.client.Publish(context.Background(), "orders", "up").Err(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(h.committedEvents(h.topo.SourceTopic("", conformanceEventSource))) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no event after Redis came up")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCheckRedis(t *testing.T) {
	check := func(typ, fields string) error {
		t.Helper()
		return Check(parseEventSources(t, fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: chk\nspec:\n  %s:\n    ev:\n%s", typ, fields))[0])
	}
	for _, ok := range []struct{ typ, fields string }{
		{"redis", "      hostAddress: redis:6379\n      channels: [a, b]\n      username: u\n      password: {name: s, key: p}\n      namespace: argo-events\n      tls: {insecureSkipVerify: true}\n"},
		{"redisStream", "      hostAddress: redis:6379\n      streams: [a]\n      maxMsgCountPerRead: 50\n      consumerGroup: g\n      db: 2\n"},
	} {
		if err := check(ok.typ, ok.fields); err != nil {
			t.Errorf("valid %s: %v", ok.typ, err)
		}
	}
	for _, tc := range []struct{ name, typ, fields, want string }{
		{"no host", "redis", "      channels: [a]\n", `spec.redis.ev: hostAddress: ""; expected host:port`},
		{"bad host", "redis", "      hostAddress: redis\n      channels: [a]\n", `hostAddress: "redis"; expected host:port`},
		{"bad port", "redisStream", "      hostAddress: redis:0\n      streams: [a]\n", `hostAddress: "redis:0"`},
		{"no channels", "redis", "      hostAddress: redis:6379\n", "channels: missing; expected at least one channel name"},
		{"empty channel", "redis", "      hostAddress: redis:6379\n      channels: [a, \"\"]\n", "channels[1]: empty"},
		{"no streams", "redisStream", "      hostAddress: redis:6379\n      streams: []\n", "streams: missing"},
		{"db", "redis", "      hostAddress: redis:6379\n      channels: [a]\n      db: -1\n", "db: -1; expected a database number >= 0"},
		{"count", "redisStream", "      hostAddress: redis:6379\n      streams: [a]\n      maxMsgCountPerRead: -5\n", "maxMsgCountPerRead: -5; expected a count > 0"},
		{"password", "redis", "      hostAddress: redis:6379\n      channels: [a]\n      password: {name: s, key: \"\"}\n", "password: a secret name and key are required"},
		{"tls", "redisStream", "      hostAddress: redis:6379\n      streams: [a]\n      tls: {clientCertSecret: {name: s, key: c}}\n", "tls: clientCertSecret and clientKeySecret go together"},
		{"filter", "redisStream", "      hostAddress: redis:6379\n      streams: [a]\n      filter: {expression: \"\"}\n", "spec.redisStream.ev.filter.expression: empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.typ, tc.fields)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// Argo's own examples load and pass Check.
func TestRedisArgoExamples(t *testing.T) {
	for _, f := range []string{"redis.yaml", "redis-streams.yaml"} {
		b, err := os.ReadFile("../../shared/argo-examples/event-sources/" + f)
		if err != nil {
			t.Skipf("Argo examples not found beside the repository: %v", err)
		}
		if err := Check(parseEventSources(t, string(b))[0]); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
