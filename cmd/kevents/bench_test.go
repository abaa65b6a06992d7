package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kevents/kevents/topology"
)

const benchSensor = `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: bench
spec:
  dependencies:
    - name: hit
      eventSourceName: bench
      eventName: hit
      filters:
        data:
          - path: body.n
            type: number
            comparator: ">="
            value: ["0"]
  triggers:
    - template:
        name: forward
        http:
          url: %s/sink
          method: POST
          payload:
            - src: {dependencyName: hit, dataKey: body.n}
              dest: n
`

const benchEventSource = `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: bench
spec:
  webhook:
    hit:
      port: "%d"
      endpoint: /hit
      method: POST
`

// BenchmarkWebhookToHTTPTrigger measures the whole path on the embedded broker: webhook POST →
// source topic → sensor (filter, parameters, transaction) → commands topic → executor → HTTP
// sink. It reports accepted webhook requests/s, triggers/s and POST-to-sink latency.
// KEVENTS_BENCH_EVENTS sets the number of events per run (default 5000).
func BenchmarkWebhookToHTTPTrigger(b *testing.B) {
	events := 5000
	if v, err := strconv.Atoi(os.Getenv("KEVENTS_BENCH_EVENTS")); err == nil && v > 0 {
		events = v
	}
	var (
		mu       sync.Mutex
		received = map[int]time.Time{}
	)
	sinkSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			N string `json:"n"`
		}
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &body)
		n, _ := strconv.Atoi(body.N)
		mu.Lock()
		received[n] = time.Now()
		mu.Unlock()
	})}
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sinkSrv.Close()
	go func() { _ = sinkSrv.Serve(sinkLn) }()

	dir := b.TempDir()
	port := freePort(b)
	writeFile(b, filepath.Join(dir, "defs", "es.yaml"), fmt.Sprintf(benchEventSource, port))
	writeFile(b, filepath.Join(dir, "defs", "sensor.yaml"), fmt.Sprintf(benchSensor, "http://"+sinkLn.Addr().String()))
	topo, err := topology.New()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan running, 1)
	go func() {
		done <- runAll(ctx, runConfig{
			paths: []string{filepath.Join(dir, "defs")}, dataDir: filepath.Join(dir, "broker"), brokerPort: 0,
			topology: topo, metricsAddr: "127.0.0.1:0", member: "bench", publishTimeout: 10 * time.Second,
			logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, func(r running) { ready <- r })
	}()
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	defer func() { cancel(); <-done }()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	url := fmt.Sprintf("http://127.0.0.1:%d/hit", port)
	next := 0
	// fire posts count events from concurrency workers; with rate > 0 event i is sent no earlier
	// than i/rate seconds after the start, so latency is measured below saturation.
	fire := func(count, concurrency int, rate float64) (sent map[int]time.Time, accepted time.Duration, all time.Duration) {
		sent = make(map[int]time.Time, count)
		var sentMu sync.Mutex
		var failures atomic.Int64
		first := next
		next += count
		var idx atomic.Int64
		idx.Store(int64(first))
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					n := int(idx.Add(1) - 1)
					if n >= first+count {
						return
					}
					if rate > 0 {
						time.Sleep(time.Until(start.Add(time.Duration(float64(n-first) / rate * float64(time.Second)))))
					}
					t0 := time.Now()
					sentMu.Lock()
					sent[n] = t0
					sentMu.Unlock()
					resp, err := client.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`{"n":%d}`, n)))
					if err != nil {
						failures.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						failures.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		accepted = time.Since(start)
		if f := failures.Load(); f > 0 {
			b.Fatalf("%d of %d webhook requests failed", f, count)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			mu.Lock()
			got := 0
			for n := first; n < first+count; n++ {
				if _, ok := received[n]; ok {
					got++
				}
			}
			mu.Unlock()
			if got == count {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d triggers arrived", got, count)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return sent, accepted, time.Since(start)
	}
	latencies := func(sent map[int]time.Time) (p50, p99 time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		ls := make([]time.Duration, 0, len(sent))
		for n, t0 := range sent {
			ls = append(ls, received[n].Sub(t0))
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
		return ls[len(ls)/2], ls[len(ls)*99/100]
	}

	fire(200, 16, 0) // warm up: group joins, connections, JIT of the first transactions
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.Run("concurrency=16", func(b *testing.B) {
			sent, accepted, all := fire(events, 16, 0)
			p50, p99 := latencies(sent)
			b.ReportMetric(float64(events)/accepted.Seconds(), "accepted/s")
			b.ReportMetric(float64(events)/all.Seconds(), "triggers/s")
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		})
		b.Run("rate=1000/s", func(b *testing.B) {
			sent, _, _ := fire(min(events, 3000), 16, 1000)
			p50, p99 := latencies(sent)
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		})
		b.Run("concurrency=1", func(b *testing.B) {
			sent, _, all := fire(min(events, 1000), 1, 0)
			p50, p99 := latencies(sent)
			b.ReportMetric(float64(len(sent))/all.Seconds(), "triggers/s")
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		})
	}
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}
