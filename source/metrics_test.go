package source

import (
	"context"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestWebhookArgoMetrics: an acknowledged event counts in kevents' metric and in Argo's, under
// the EventSource's namespace; the event service runs from Run until everything stopped.
func TestWebhookArgoMetrics(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"hooks"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait, err := Run(ctx, h.env, parseEventSources(t, webhookYAML("hooks", "push", port, "/push", "")))
	if err != nil {
		t.Fatal(err)
	}
	running := h.metrics.ArgoEventServiceRunning.WithLabelValues("default", "hooks")
	if v := testutil.ToFloat64(running); v != 1 {
		t.Errorf("argo_events_event_service_running_total = %v while running, want 1", v)
	}
	if resp := do(t, http.MethodPost, url(port, "/push"), []byte(`{}`), nil); resp.status != http.StatusOK {
		t.Fatalf("POST: %d %s", resp.status, resp.body)
	}
	if v := h.counter("kevents_source_events_published_total", "hooks", "push"); v != 1 {
		t.Errorf("kevents_source_events_published_total = %v, want 1", v)
	}
	if v := testutil.ToFloat64(h.metrics.ArgoEventsSent.WithLabelValues("default", "hooks", "push")); v != 1 {
		t.Errorf("argo_events_events_sent_total = %v, want 1", v)
	}
	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(running); v != 0 {
		t.Errorf("argo_events_event_service_running_total = %v after stopping, want 0", v)
	}
}
