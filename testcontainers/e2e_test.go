// Package testcontainers runs kevents end to end against a real Apache Kafka in a container:
// the kevents binary, built from this repository, with --brokers pointing at it. It is its own Go
// module so that the main module's `make test` never needs Docker; run it with
// `make test-containers`. Where Docker cannot run or pull the image, the test skips saying so.
package testcontainers

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// kafkaImage is Apache Kafka in KRaft mode; override with KEVENTS_KAFKA_IMAGE (a Redpanda image
// works too if its listeners are set up the same way).
const kafkaImage = "apache/kafka:3.9.1"

// startKafka runs a single-node Kafka whose advertised listener is reachable from the host.
func startKafka(t *testing.T) string {
	t.Helper()
	testcontainers.SkipIfProviderIsNotHealthy(t)
	image := kafkaImage
	if v := os.Getenv("KEVENTS_KAFKA_IMAGE"); v != "" {
		image = v
	}
	port := freePort(t)
	ctx := context.Background()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        image,
			ExposedPorts: []string{fmt.Sprintf("%d:%d/tcp", port, port)},
			Env: map[string]string{
				"KAFKA_NODE_ID":                                  "1",
				"KAFKA_PROCESS_ROLES":                            "broker,controller",
				"KAFKA_LISTENERS":                                fmt.Sprintf("PLAINTEXT://:%d,CONTROLLER://:9093", port),
				"KAFKA_ADVERTISED_LISTENERS":                     fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", port),
				"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
				"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
				"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9093",
				"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
				"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
				"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
				"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
			},
			WaitingFor: wait.ForLog("Kafka Server started").WithStartupTimeout(2 * time.Minute),
		},
		Started: true,
	})
	if err != nil {
		t.Skipf("cannot run %s here: %v", image, err)
	}
	t.Cleanup(func() { _ = c.Terminate(context.Background()) })
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// TestEndToEndOnKafka runs `kevents run --brokers` against the container: the webhook answers
// only once Kafka has the event, the sensor's http trigger reaches a local server with the
// event's data, and a restart neither repeats nor loses a trigger.
func TestEndToEndOnKafka(t *testing.T) {
	brokers := startKafka(t)
	bin := filepath.Join(t.TempDir(), "kevents")
	build := exec.Command("go", "build", "-o", bin, "../cmd/kevents")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kevents: %v\n%s", err, out)
	}

	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen[string(b)]++
		mu.Unlock()
	}))
	defer sink.Close()
	port := freePort(t)
	defs := t.TempDir()
	write(t, filepath.Join(defs, "defs.yaml"), fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: hooks}
spec:
  webhook:
    push: {port: "%d", endpoint: /push, method: POST}
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: notify}
spec:
  dependencies: [{name: push, eventSourceName: hooks, eventName: push}]
  triggers:
    - template:
        name: post
        http:
          url: %s/hook
          payload: [{src: {dependencyName: push, dataKey: body.n}, dest: n}]
`, port, sink.URL))

	run := func() (stop func()) {
		cmd := exec.Command(bin, "run", "-f", defs, "--brokers", brokers, "--member", "containers", "--metrics-addr", "127.0.0.1:0", "--partitions", "3")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		}
	}
	post := func(n int) bool {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/push", port), "application/json", strings.NewReader(fmt.Sprintf(`{"n":%d}`, n)))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}

	stop := run()
	waitFor(t, "the webhook to accept the first event", func() bool { return post(0) })
	for n := 1; n < 50; n++ {
		if !post(n) {
			t.Fatalf("event %d was not accepted", n)
		}
	}
	waitFor(t, "50 triggers", func() bool { return count() == 50 })
	stop()

	stop = run()
	defer stop()
	waitFor(t, "the webhook after a restart", func() bool { return post(50) })
	waitFor(t, "the trigger after the restart", func() bool { return count() == 51 })
	time.Sleep(2 * time.Second) // a repeated trigger would arrive by now
	mu.Lock()
	defer mu.Unlock()
	for body, n := range seen {
		if n != 1 {
			t.Errorf("trigger for %s ran %d times", body, n)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
