package metrics

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// sourceDown is a source event that cannot reach its outside server.
type sourceDown struct {
	since time.Time
	err   string
}

// userinfo matches the credentials of a URL ("scheme://user:password@"), which some clients
// put in their errors.
var userinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)

// SourceConnected records whether an event of an EventSource reaches its outside server: err
// nil once it connected (or reconnected), else why it cannot, while it retries. It sets
// kevents_source_connected and what SourcesReady reports. Credentials in URLs of err are
// redacted; callers must not put other secrets in err.
func (m *Metrics) SourceConnected(namespace, eventSource, event string, err error) {
	k := [3]string{namespace, eventSource, event}
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	if err == nil {
		delete(m.down, k)
		m.SourceUp.WithLabelValues(eventSource, event).Set(1)
		return
	}
	d, already := m.down[k]
	if !already {
		d.since = time.Now()
	}
	d.err = userinfo.ReplaceAllString(err.Error(), "${1}***@")
	m.down[k] = d
	m.SourceUp.WithLabelValues(eventSource, event).Set(0)
}

// SourceStopped forgets an event that stopped running (its EventSource changed or was removed).
func (m *Metrics) SourceStopped(namespace, eventSource, event string) {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	delete(m.down, [3]string{namespace, eventSource, event})
	m.SourceUp.DeleteLabelValues(eventSource, event)
}

// SourcesReady is a ready check: it fails, naming each one, while any source event cannot
// reach its outside server.
func (m *Metrics) SourcesReady(context.Context) error {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	if len(m.down) == 0 {
		return nil
	}
	msgs := make([]string, 0, len(m.down))
	for k, d := range m.down {
		ns := argoNamespace(k[0])
		msgs = append(msgs, fmt.Sprintf("eventsource %s/%s event %s cannot reach its server for %s: %s",
			ns, k[1], k[2], time.Since(d.since).Round(time.Second), d.err))
	}
	sort.Strings(msgs)
	return errors.New(strings.Join(msgs, "; "))
}
