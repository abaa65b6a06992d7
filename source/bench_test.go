package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/internal/secrets"
	"github.com/kevents/kevents/topology"
)

// benchBus is an embedded broker with kevents' topics and a source Env whose publisher is built
// as `kevents run` builds it (ProducerOpts).
type benchBus struct {
	cluster *kfake.Cluster
	topo    *topology.Topology
	adm     *kadm.Client // a client of its own, so that polling offsets does not share the producer's
	env     *Env
	// produces counts the produce requests the broker handled: records per request shows how
	// much the producer batches with linger 0.
	produces atomic.Int64
}

// newBenchBus starts the broker and creates kevents' topics, with a source topic for each
// EventSource named (namespace default).
func newBenchBus(b *testing.B, eventSources ...string) *benchBus {
	b.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	topo, err := topology.New()
	if err != nil {
		b.Fatal(err)
	}
	producer, err := kgo.NewClient(append(ProducerOpts(), kgo.SeedBrokers(c.ListenAddrs()...))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(producer.Close)
	admCl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(admCl.Close)
	adm := kadm.NewClient(admCl)
	var topics []string
	for _, es := range eventSources {
		topics = append(topics, topo.SourceTopic("", es))
	}
	if _, err := topo.Apply(context.Background(), adm, topics...); err != nil {
		b.Fatal(err)
	}
	bus := &benchBus{cluster: c, topo: topo, adm: adm, env: &Env{
		Topology:       topo,
		Publisher:      KafkaPublisher{Client: producer},
		Secrets:        secrets.Resolver{LookupEnv: func(string) (string, bool) { return "", false }},
		Metrics:        metrics.New(),
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		PublishTimeout: 10 * time.Second,
	}}
	// Not handled (false): the broker then processes the request as usual.
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		bus.produces.Add(1)
		return nil, nil, false
	})
	return bus
}

// run starts source.Run with the bus's Env and returns a function that stops it.
func (bus *benchBus) run(b *testing.B, yaml string) (stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := Run(ctx, bus.env, benchEventSources(b, yaml))
	if err != nil {
		cancel()
		b.Fatalf("Run: %v", err)
	}
	return func() {
		cancel()
		if err := wait(); err != nil {
			b.Error(err)
		}
	}
}

// records is the number of records in topic: the sum of its partitions' high watermarks.
func (bus *benchBus) records(b *testing.B, topic string) int64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := bus.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		b.Fatalf("ListEndOffsets %s: %v", topic, err)
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			b.Fatalf("ListEndOffsets %s/%d: %v", topic, o.Partition, o.Err)
		}
		n += o.Offset
	})
	return n
}

func benchEventSources(b *testing.B, yaml string) []*api.EventSource {
	b.Helper()
	var out []*api.EventSource
	for _, d := range api.Parse("bench.yaml", []byte(yaml)) {
		if d.Err != nil || d.EventSource == nil {
			b.Fatalf("api.Parse: %v (%s)", d.Err, d)
		}
		if err := d.EventSource.Validate(); err != nil {
			b.Fatalf("Validate: %v", err)
		}
		out = append(out, d.EventSource)
	}
	return out
}

// benchEnvInt is a positive integer from the environment, or def.
func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// loadResult is one run of the load generator.
type loadResult struct {
	rate       float64 // answered requests per second
	p50, p99   time.Duration
	perProduce float64 // records per produce request the broker handled meanwhile (webhook)
}

// benchBody is the webhook body the load generator posts: small JSON, as a typical notification.
var benchBody = []byte(`{"id":"evt-0001","type":"push","repository":"kevents","n":42}`)

// load posts requests POSTs of benchBody to url from concurrency workers, each with a
// keep-alive connection of its own, and fails on any answer other than 200.
func load(b *testing.B, clients []*http.Client, url string, requests int) loadResult {
	b.Helper()
	lat := make([]time.Duration, requests)
	var (
		next     atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	start := time.Now()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= requests {
					return
				}
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(benchBody))
				if err != nil {
					fail(err)
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					fail(err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[i] = time.Since(t0)
				if resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("status %d", resp.StatusCode))
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if f := failures.Load(); f > 0 {
		b.Fatalf("%d of %d requests to %s failed; first: %v", f, requests, url, firstErr.Load())
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return loadResult{rate: float64(requests) / took.Seconds(), p50: lat[requests/2], p99: lat[requests*99/100]}
}

// benchClients are concurrency HTTP clients with one keep-alive connection each.
func benchClients(concurrency int) []*http.Client {
	out := make([]*http.Client, concurrency)
	for i := range out {
		out[i] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true,
		}}
	}
	return out
}

// BenchmarkWebhookIngest measures the webhook source on the embedded broker (answering 200 only
// once Kafka acknowledged the event) against a bare net/http handler that reads the body and
// answers 200, with the same load generator in the same run: KEVENTS_BENCH_WEBHOOK_REQUESTS
// POSTs (default 20,000) from KEVENTS_BENCH_WEBHOOK_CONCURRENCY keep-alive clients (default 32).
// The two alternate for KEVENTS_BENCH_WEBHOOK_ROUNDS rounds (default 3); each round is reported
// and so is the median of each figure, with the ratio of the medians (issue 5 target ≥ 0.5).
func BenchmarkWebhookIngest(b *testing.B) {
	requests := benchEnvInt("KEVENTS_BENCH_WEBHOOK_REQUESTS", 20000)
	concurrency := benchEnvInt("KEVENTS_BENCH_WEBHOOK_CONCURRENCY", 32)
	rounds := benchEnvInt("KEVENTS_BENCH_WEBHOOK_ROUNDS", 3)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // the webhook source binds it
	bus := newBenchBus(b, "bench")
	topic := bus.topo.SourceTopic("", "bench")
	stop := bus.run(b, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: bench
spec:
  webhook:
    hit:
      port: "%d"
      endpoint: /hit
      method: POST
`, port))
	defer stop()

	bareLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bare := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "success\n")
	})}
	go func() {
		if err := bare.Serve(bareLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.Error(err)
		}
	}()
	defer bare.Close()

	targets := []struct{ name, url string }{
		{"bare", "http://" + bareLn.Addr().String() + "/hit"},
		{"webhook", fmt.Sprintf("http://127.0.0.1:%d/hit", port)},
	}
	clients := benchClients(concurrency)
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	// Warm up, untimed: connections, the producer's metadata and first batches.
	warm := min(requests, 2000)
	for _, t := range targets {
		load(b, clients, t.url, warm)
	}

	results := make([][]loadResult, len(targets))
	for r := 1; r <= rounds; r++ {
		for i, t := range targets {
			b.Run(fmt.Sprintf("%s/round-%d", t.name, r), func(b *testing.B) {
				produces := bus.produces.Load()
				res := load(b, clients, t.url, requests)
				res.perProduce = float64(requests) / float64(bus.produces.Load()-produces)
				results[i] = append(results[i], res)
				b.ReportMetric(res.rate, "req/s")
				b.ReportMetric(float64(res.p50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(res.p99.Microseconds())/1000, "p99-ms")
				if i > 0 {
					b.ReportMetric(res.rate/results[0][len(results[0])-1].rate, "ratio")
					b.ReportMetric(res.perProduce, "records/produce")
				}
			})
		}
	}
	if b.Failed() {
		return
	}
	// Every 200 stands for an acknowledged record.
	if got, want := bus.records(b, topic), int64(warm+rounds*requests); got != want {
		b.Fatalf("%s holds %d records after %d answers 200", topic, got, want)
	}
	var bareRate float64
	for i, t := range targets {
		var rate, p50, p99, perProduce []float64
		for _, res := range results[i] {
			rate = append(rate, res.rate)
			perProduce = append(perProduce, res.perProduce)
			p50 = append(p50, float64(res.p50.Microseconds())/1000)
			p99 = append(p99, float64(res.p99.Microseconds())/1000)
		}
		b.Run(t.name+"/median", func(b *testing.B) {
			b.ReportMetric(median(rate), "req/s")
			b.ReportMetric(median(p50), "p50-ms")
			b.ReportMetric(median(p99), "p99-ms")
			if i == 0 {
				bareRate = median(rate)
			} else {
				b.ReportMetric(median(rate)/bareRate, "ratio")
				b.ReportMetric(median(perProduce), "records/produce")
			}
		})
	}
}

// BenchmarkKafkaSource measures the kafka source forwarding a user topic to its EventSource's
// topic, both on one embedded broker: KEVENTS_BENCH_KAFKA_SOURCE_EVENTS records (default
// 100,000) of small JSON are produced to a topic of KEVENTS_BENCH_KAFKA_SOURCE_PARTITIONS
// partitions (default 12) before the source starts (consumerGroup.oldest, jsonBody), and the run
// is timed from the start of the source until every event is in the EventSource's topic. The
// source produces without transactions and each Publish returns on Kafka's acknowledgement, so
// the topic's high watermarks count the events. events/s includes the group join; steady-events/s
// runs from the first event to the last. KEVENTS_BENCH_KAFKA_SOURCE_ROUNDS rounds (default 3),
// each on a fresh broker, and their medians.
func BenchmarkKafkaSource(b *testing.B) {
	n := benchEnvInt("KEVENTS_BENCH_KAFKA_SOURCE_EVENTS", 100000)
	partitions := benchEnvInt("KEVENTS_BENCH_KAFKA_SOURCE_PARTITIONS", 12)
	rounds := benchEnvInt("KEVENTS_BENCH_KAFKA_SOURCE_ROUNDS", 3)
	var rates, steady, startup, perProduce []float64
	for r := 1; r <= rounds; r++ {
		b.Run(fmt.Sprintf("partitions-%d/round-%d", partitions, r), func(b *testing.B) {
			bus := newBenchBus(b, "kafka")
			topic := bus.topo.SourceTopic("", "kafka")
			ctx := context.Background()
			if _, err := bus.adm.CreateTopic(ctx, int32(partitions), 1, nil, "orders"); err != nil {
				b.Fatal(err)
			}
			in, err := kgo.NewClient(kgo.SeedBrokers(bus.cluster.ListenAddrs()...), kgo.MaxBufferedRecords(n))
			if err != nil {
				b.Fatal(err)
			}
			defer in.Close()
			var (
				wg       sync.WaitGroup
				firstErr atomic.Value
			)
			for i := 0; i < n; i++ {
				wg.Add(1)
				in.Produce(ctx, &kgo.Record{Topic: "orders", Key: []byte("order-" + strconv.Itoa(i)),
					Value: []byte(`{"id":` + strconv.Itoa(i) + `,"customer":"c-17","items":["a","b"],"total":42.5}`)},
					func(_ *kgo.Record, err error) {
						if err != nil {
							firstErr.CompareAndSwap(nil, err)
						}
						wg.Done()
					})
			}
			wg.Wait()
			if err := firstErr.Load(); err != nil {
				b.Fatal(err)
			}

			produces := bus.produces.Load()
			start := time.Now()
			stop := bus.run(b, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: kafka
spec:
  kafka:
    orders:
      url: %s
      topic: orders
      jsonBody: true
      consumerGroup:
        groupName: bench
        oldest: true
`, bus.cluster.ListenAddrs()[0]))
			defer stop()
			var first time.Time
			deadline := start.Add(10 * time.Minute)
			for {
				got := bus.records(b, topic)
				if got > 0 && first.IsZero() {
					first = time.Now()
				}
				if got >= int64(n) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("only %d of %d events reached %s", got, n, topic)
				}
				time.Sleep(5 * time.Millisecond)
			}
			end := time.Now()
			perProduce = append(perProduce, float64(n)/float64(bus.produces.Load()-produces))
			rate := float64(n) / end.Sub(start).Seconds()
			rates = append(rates, rate)
			steady = append(steady, float64(n)/end.Sub(first).Seconds())
			startup = append(startup, float64(first.Sub(start).Microseconds())/1000)
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(steady[len(steady)-1], "steady-events/s")
			b.ReportMetric(startup[len(startup)-1], "first-event-ms")
			b.ReportMetric(perProduce[len(perProduce)-1], "records/produce")
		})
	}
	if b.Failed() {
		return
	}
	b.Run(fmt.Sprintf("partitions-%d/median", partitions), func(b *testing.B) {
		b.ReportMetric(median(rates), "events/s")
		b.ReportMetric(median(steady), "steady-events/s")
		b.ReportMetric(median(startup), "first-event-ms")
		b.ReportMetric(median(perProduce), "records/produce")
	})
}
