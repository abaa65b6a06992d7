package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSourceConnected follows one source event through an outage: the gauge, the ready check
// naming it without the password of its URL, and recovery.
func TestSourceConnected(t *testing.T) {
	m := New()
	m.SourceConnected("", "orders", "ev", nil)
	if err := m.SourcesReady(context.Background()); err != nil {
		t.Fatalf("connected: ready check %v", err)
	}
	if got := testutil.ToFloat64(m.SourceUp.WithLabelValues("orders", "ev")); got != 1 {
		t.Errorf("connected: kevents_source_connected = %v, want 1", got)
	}

	m.SourceConnected("", "orders", "ev", errors.New(`dial amqp://kevents:hunter2@rabbit:5672: connection refused`))
	err := m.SourcesReady(context.Background())
	if err == nil {
		t.Fatal("down: the ready check passes")
	}
	for _, want := range []string{"eventsource default/orders event ev", "amqp://***@rabbit:5672", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("down: ready check %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("down: the ready check shows a password: %v", err)
	}
	if got := testutil.ToFloat64(m.SourceUp.WithLabelValues("orders", "ev")); got != 0 {
		t.Errorf("down: kevents_source_connected = %v, want 0", got)
	}

	m.SourceConnected("", "orders", "ev", nil)
	if err := m.SourcesReady(context.Background()); err != nil {
		t.Errorf("reconnected: ready check %v", err)
	}
	m.SourceConnected("", "orders", "ev", errors.New("down again"))
	m.SourceStopped("", "orders", "ev")
	if err := m.SourcesReady(context.Background()); err != nil {
		t.Errorf("stopped: ready check %v", err)
	}
}
