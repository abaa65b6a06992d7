package trigger

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkExecutor measures commands/s through the pool to a local HTTP sink, spread over 256
// ordered triggers (keys), at several concurrency limits, and the added latency from command
// produced to sink reached; "one-key-failing" adds a trigger whose target always fails with
// retries; "one-trigger-ordered" and "-unordered" send every command for one trigger, ordered
// (one key) or not (each command its own key).
func BenchmarkExecutor(b *testing.B) {
	const n = 20000
	for _, c := range []struct {
		name        string
		concurrency int
		failing     bool
		triggers    int
		ordered     bool
	}{
		{"concurrency=1", 1, false, 256, true}, {"concurrency=16", 16, false, 256, true}, {"concurrency=256", 256, false, 256, true},
		{"concurrency=16/one-key-failing", 16, true, 256, true},
		{"concurrency=16/one-trigger-ordered", 16, false, 1, true},
		{"concurrency=16/one-trigger-unordered", 16, false, 1, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			env := newPoolEnv(b)
			var mu sync.Mutex
			arrived := make(map[string]time.Time, n)
			sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/fail" {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				mu.Lock()
				arrived[r.Header.Get(IdempotencyKeyHeader)] = time.Now()
				mu.Unlock()
			}))
			defer sink.Close()
			sent := make(map[string]time.Time, n)
			var wg sync.WaitGroup
			produce := func(id, trig, url string, retry *Retry) {
				spec, _ := json.Marshal(HTTPRequest{URL: url, Method: http.MethodPost})
				cmd := Command{ID: id, Namespace: "ns", Sensor: "bench", Trigger: trig, Type: "http", Spec: spec, Retry: retry, Ordered: c.ordered}
				v, _ := json.Marshal(cmd)
				wg.Add(1)
				env.cl.Produce(context.Background(), &kgo.Record{Topic: env.topo.Commands(), Key: []byte(cmd.Key()), Value: v},
					func(*kgo.Record, error) { wg.Done() })
			}
			if c.failing {
				for i := 0; i < 50; i++ {
					produce("fail-"+strconv.Itoa(i), "failing", sink.URL+"/fail", &Retry{Steps: 3, Duration: 200 * time.Millisecond, Factor: 1})
				}
			}
			_, stop := env.runMemberWith(b, "bench", c.concurrency)
			defer stop()
			start := time.Now()
			for i := 0; i < n; i++ {
				id := "c-" + strconv.Itoa(i)
				sent[id] = time.Now()
				produce(id, "t"+strconv.Itoa(i%c.triggers), sink.URL+"/ok", nil)
			}
			wg.Wait()
			deadline := time.Now().Add(5 * time.Minute)
			for {
				mu.Lock()
				got := len(arrived)
				mu.Unlock()
				if got == n {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("only %d of %d commands reached the sink", got, n)
				}
				time.Sleep(5 * time.Millisecond)
			}
			took := time.Since(start)
			lat := make([]time.Duration, 0, n)
			mu.Lock()
			for id, t0 := range sent {
				lat = append(lat, arrived[id].Sub(t0))
			}
			mu.Unlock()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(n)/took.Seconds(), "commands/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
