package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New()
	addr, err := m.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before any stage = %d %q, want 503 starting", code, body)
	}
	kafkaDown := errors.New("broker unreachable")
	var down bool
	m.AddReadyCheck("kafka", func(context.Context) error {
		if down {
			return kafkaDown
		}
		return nil
	})
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with passing checks = %d, want 200", code)
	}
	down = true
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "kafka: broker unreachable") {
		t.Errorf("/readyz with a failing check = %d %q, want 503 naming the check", code, body)
	}

	m.EventsPublished.WithLabelValues("hooks", "push").Add(3)
	m.CommandsEmitted.WithLabelValues("deploy", "notify").Inc()
	_, body := get(t, base+"/metrics")
	for _, want := range []string{
		`kevents_source_events_published_total{event="push",eventsource="hooks"} 3`,
		`kevents_sensor_commands_emitted_total{sensor="deploy",trigger="notify"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
