package source

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/cloudevent"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/internal/secrets"
	"github.com/kevents/kevents/topology"
)

// freePort returns a TCP port nothing listens on right now, below the kernel's ephemeral range.
// Many tests dial a server's port before the server listens (a server down at start, or
// restarted on the same address), and a dial to an unbound port of the ephemeral range can
// connect to itself: the kernel picks that very port as the dial's source port, which then
// holds it, and the server fails to start with "address in use".
func freePort(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 20000 {
				low = v
			}
		}
	}
	for range 200 {
		port := 20000 + rand.IntN(low-20000)
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	t.Fatal("no free TCP port below the ephemeral range after 200 tries")
	return 0
}

// parseEventSources loads YAML through api.Parse, as kevents does, and fails on any refused
// document.
func parseEventSources(t *testing.T, yaml string) []*api.EventSource {
	t.Helper()
	var out []*api.EventSource
	for _, d := range api.Parse("test.yaml", []byte(yaml)) {
		if d.Err != nil {
			t.Fatalf("api.Parse: %v", d.Err)
		}
		if d.EventSource == nil {
			t.Fatalf("api.Parse: %s is not an EventSource", d)
		}
		if err := d.EventSource.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		out = append(out, d.EventSource)
	}
	if len(out) == 0 {
		t.Fatal("api.Parse: no documents")
	}
	return out
}

// harness is one embedded Kafka broker, a producer client wrapped in KafkaPublisher, and the
// Env source.Run gets.
type harness struct {
	t       *testing.T
	cluster *kfake.Cluster
	client  *kgo.Client
	env     *Env
	metrics *metrics.Metrics
	topo    *topology.Topology
}

type harnessOpt func(*harnessConfig)

type harnessConfig struct {
	secrets        secrets.Resolver
	publishTimeout time.Duration
	deadBroker     bool
}

func withSecrets(r secrets.Resolver) harnessOpt {
	return func(c *harnessConfig) { c.secrets = r }
}

// withDeadBroker points the producer at a port nothing listens on: Kafka is unreachable from
// the start.
func withDeadBroker() harnessOpt {
	return func(c *harnessConfig) { c.deadBroker = true }
}

func withPublishTimeout(d time.Duration) harnessOpt {
	return func(c *harnessConfig) { c.publishTimeout = d }
}

// newHarness starts a one-broker kfake cluster with the source topics of the given
// EventSource names seeded.
func newHarness(t *testing.T, eventSources []string, opts ...harnessOpt) *harness {
	t.Helper()
	cfg := harnessConfig{
		// An empty environment: nothing from the machine running the test leaks in.
		secrets:        secrets.Resolver{LookupEnv: func(string) (string, bool) { return "", false }},
		publishTimeout: 10 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	topo, err := topology.New()
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, es := range eventSources {
		topics = append(topics, topo.SourceTopic("", es))
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics...))
	if err != nil {
		t.Fatal(err)
	}
	seeds := cluster.ListenAddrs()
	if cfg.deadBroker {
		seeds = []string{fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	}
	client, err := kgo.NewClient(append(ProducerOpts(), kgo.SeedBrokers(seeds...))...)
	if err != nil {
		cluster.Close()
		t.Fatal(err)
	}
	h := &harness{t: t, cluster: cluster, client: client, topo: topo, metrics: metrics.New()}
	t.Cleanup(func() {
		client.Close()
		cluster.Close()
	})
	h.env = &Env{
		Topology:       topo,
		Publisher:      KafkaPublisher{Client: client},
		Secrets:        cfg.secrets,
		Metrics:        h.metrics,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		PublishTimeout: cfg.publishTimeout,
	}
	return h
}

// run starts source.Run and stops it at cleanup, checking that it stops cleanly.
func (h *harness) run(sources []*api.EventSource) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := Run(ctx, h.env, sources)
	if err != nil {
		cancel()
		h.t.Fatalf("Run: %v", err)
	}
	h.t.Cleanup(func() {
		cancel()
		done := make(chan error, 1)
		go func() { done <- wait() }()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("wait: %v", err)
			}
		case <-time.After(h.env.PublishTimeout + 5*time.Second):
			h.t.Error("Run did not stop after its context ended")
		}
	})
}

// endOffset is the number of records in partition 0 of topic: every record a 2xx answer
// stands for is already acknowledged, so it is counted here without waiting.
func (h *harness) endOffset(topic string) int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(h.client).ListEndOffsets(ctx, topic)
	if err != nil {
		h.t.Fatalf("ListEndOffsets %s: %v", topic, err)
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok {
		h.t.Fatalf("ListEndOffsets %s: no partition 0", topic)
	}
	if o.Err != nil {
		h.t.Fatalf("ListEndOffsets %s: %v", topic, o.Err)
	}
	return o.Offset
}

// records reads every record of topic (there must be exactly want) with a consumer of its own.
func (h *harness) records(topic string, want int) []*kgo.Record {
	h.t.Helper()
	if n := h.endOffset(topic); n != int64(want) {
		h.t.Fatalf("topic %s holds %d records, want %d", topic, n, want)
	}
	if want == 0 {
		return nil
	}
	c, err := kgo.NewClient(
		kgo.SeedBrokers(h.cluster.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
	)
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := c.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			h.t.Fatalf("consumed %d of %d records of %s: %v", len(out), want, topic, err)
		}
		fs.EachError(func(t string, p int32, err error) { h.t.Fatalf("fetch %s/%d: %v", t, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// decode turns a record into its CloudEvent.
func decode(t *testing.T, r *kgo.Record) *cloudevents.Event {
	t.Helper()
	e, err := cloudevent.FromRecord(r)
	if err != nil {
		t.Fatalf("FromRecord: %v", err)
	}
	return e
}

// counter reads one child of a counter family from the registry, as a scrape would.
func (h *harness) counter(family, eventSource, event string) float64 {
	h.t.Helper()
	mfs, err := h.metrics.Registry.Gather()
	if err != nil {
		h.t.Fatalf("Gather: %v", err)
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
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

type response struct {
	status int
	header http.Header
	body   string
}

// do sends one request and returns the answer.
func do(t *testing.T, method, url string, body []byte, header map[string]string) response {
	t.Helper()
	resp, err := doWith(httpClient, method, url, body, header)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

func doWith(c *http.Client, method, url string, body []byte, header map[string]string) (response, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

var httpClient = &http.Client{Timeout: 20 * time.Second}

func url(port int, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", port, path)
}

// webhookYAML is an EventSource with one webhook event; extra is appended to the event's
// fields, indented by the caller's choice of 6 spaces.
func webhookYAML(name, event string, port int, endpoint, extra string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  webhook:
    %s:
      port: "%d"
      endpoint: %s
      method: POST
%s`, name, event, port, endpoint, strings.TrimRight(extra, "\n")+"\n")
}

// mapSecrets resolves Secrets from a map keyed "name/key", through the environment lookup only.
func mapSecrets(values map[string]string) secrets.Resolver {
	env := map[string]string{}
	for k, v := range values {
		name, key, _ := strings.Cut(k, "/")
		env[secrets.EnvName(name, key)] = v
	}
	return secrets.Resolver{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
}

// syncBuffer is an io.Writer safe for concurrent use, for logs a test reads back.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runSources starts source.Run with env and returns a function that stops it (also called at
// cleanup) and checks that it stopped cleanly.
func runSources(t *testing.T, env *Env, sources []*api.EventSource) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := Run(ctx, env, sources)
	if err != nil {
		cancel()
		t.Fatalf("Run: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			done := make(chan error, 1)
			go func() { done <- wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("wait: %v", err)
				}
			case <-time.After(2*env.PublishTimeout + 10*time.Second):
				t.Error("Run did not stop after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
