package source

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// eventData is the data of a webhook event, decoded loosely so that a missing or extra field
// shows.
type eventData struct {
	Header   map[string][]string `json:"header"`
	Body     json.RawMessage     `json:"body"`
	Metadata map[string]string   `json:"metadata"`
}

func decodeData(t *testing.T, data []byte) (eventData, map[string]json.RawMessage) {
	t.Helper()
	var d eventData
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("event data is not JSON: %v\n%s", err, data)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	return d, fields
}

func jsonEqual(t *testing.T, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("not JSON: %v: %s", err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("not JSON: %v: %s", err, want)
	}
	return reflect.DeepEqual(g, w)
}

func TestWebhookPublishesCloudEvent(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"webhook"})
	h.run(parseEventSources(t, webhookYAML("webhook", "example", port, "/example", `      metadata:
        team: payments
        env: test
`)))
	topic := "kevents.src.default.webhook"

	body := []byte(`{"message": "hello", "n": 3, "nested": {"ok": true}}`)
	before := time.Now().Add(-time.Second)
	resp := do(t, http.MethodPost, url(port, "/example"), body, map[string]string{
		"Content-Type": "application/json",
		"X-Request-Id": "abc-123",
	})
	if resp.status != http.StatusOK || strings.TrimSpace(resp.body) != "success" {
		t.Fatalf("POST: %d %q, want 200 success", resp.status, resp.body)
	}

	recs := h.records(topic, 1)
	r := recs[0]
	if r.Topic != topic {
		t.Errorf("record topic %q, want %q", r.Topic, topic)
	}
	e := decode(t, r)
	if e.Source() != "webhook" {
		t.Errorf("source %q, want the EventSource name webhook", e.Source())
	}
	if e.Subject() != "example" {
		t.Errorf("subject %q, want the event name example", e.Subject())
	}
	if e.Type() != "webhook" {
		t.Errorf("type %q, want webhook", e.Type())
	}
	if e.ID() == "" {
		t.Error("empty id")
	}
	if e.Time().IsZero() || e.Time().Before(before) || e.Time().After(time.Now().Add(time.Second)) {
		t.Errorf("time %v, want about now", e.Time())
	}
	if e.DataContentType() != "application/json" {
		t.Errorf("datacontenttype %q, want application/json", e.DataContentType())
	}
	d, fields := decodeData(t, e.Data())
	for k := range fields {
		switch k {
		case "header", "body", "metadata":
		default:
			t.Errorf("unexpected field %q in event data", k)
		}
	}
	if !jsonEqual(t, d.Body, body) {
		t.Errorf("body %s, want %s", d.Body, body)
	}
	if got := d.Header["X-Request-Id"]; !reflect.DeepEqual(got, []string{"abc-123"}) {
		t.Errorf("header X-Request-Id %q, want [abc-123]; header %v", got, d.Header)
	}
	if got := d.Header["Content-Type"]; !reflect.DeepEqual(got, []string{"application/json"}) {
		t.Errorf("header Content-Type %q, want [application/json]", got)
	}
	if want := map[string]string{"team": "payments", "env": "test"}; !reflect.DeepEqual(d.Metadata, want) {
		t.Errorf("metadata %v, want %v", d.Metadata, want)
	}

	if got := h.counter("kevents_source_events_received_total", "webhook", "example"); got != 1 {
		t.Errorf("events received %v, want 1", got)
	}
	if got := h.counter("kevents_source_events_published_total", "webhook", "example"); got != 1 {
		t.Errorf("events published %v, want 1", got)
	}
	if got := h.counter("kevents_source_publish_failures_total", "webhook", "example"); got != 0 {
		t.Errorf("publish failures %v, want 0", got)
	}
}

func TestWebhookNonJSONBody(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"plain"})
	h.run(parseEventSources(t, webhookYAML("plain", "text", port, "/text", "")))
	topic := "kevents.src.default.plain"

	bodies := []string{
		"hello, \"world\"\n<not json>",
		"", // an empty body is not JSON either
		"{\"truncated\": ",
	}
	for _, b := range bodies {
		resp := do(t, http.MethodPost, url(port, "/text"), []byte(b), map[string]string{"Content-Type": "text/plain"})
		if resp.status != http.StatusOK {
			t.Fatalf("POST %q: %d %q, want 200", b, resp.status, resp.body)
		}
	}
	recs := h.records(topic, len(bodies))
	for i, r := range recs {
		e := decode(t, r)
		if e.DataContentType() != "application/json" {
			t.Errorf("datacontenttype %q, want application/json", e.DataContentType())
		}
		d, fields := decodeData(t, e.Data())
		var s string
		if err := json.Unmarshal(d.Body, &s); err != nil {
			t.Errorf("record %d: body %s is not a JSON string: %v", i, d.Body, err)
			continue
		}
		if s != bodies[i] {
			t.Errorf("record %d: body %q, want %q", i, s, bodies[i])
		}
		if _, ok := fields["metadata"]; ok {
			t.Errorf("record %d: metadata %s present although the webhook sets none", i, fields["metadata"])
		}
		if got := d.Header["Content-Type"]; !reflect.DeepEqual(got, []string{"text/plain"}) {
			t.Errorf("record %d: header Content-Type %q, want [text/plain]", i, got)
		}
	}
}

func TestWebhookRefusals(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"small"})
	h.run(parseEventSources(t, webhookYAML("small", "tiny", port, "/tiny", "      maxPayloadSize: 10\n")))
	topic := "kevents.src.default.small"

	t.Run("wrong method", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			resp := do(t, m, url(port, "/tiny"), []byte(`{}`), nil)
			if resp.status != http.StatusMethodNotAllowed {
				t.Errorf("%s: %d, want 405", m, resp.status)
			}
			if got := resp.header.Get("Allow"); got != http.MethodPost {
				t.Errorf("%s: Allow %q, want POST", m, got)
			}
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		for _, p := range []string{"/", "/other", "/tiny/more", "/tin"} {
			resp := do(t, http.MethodPost, url(port, p), []byte(`{}`), nil)
			if resp.status != http.StatusNotFound {
				t.Errorf("POST %s: %d, want 404", p, resp.status)
			}
		}
	})
	t.Run("too large", func(t *testing.T) {
		resp := do(t, http.MethodPost, url(port, "/tiny"), []byte(`"123456789"`), nil) // 11 bytes
		if resp.status != http.StatusRequestEntityTooLarge {
			t.Errorf("11-byte body: %d %q, want 413", resp.status, resp.body)
		}
		resp = do(t, http.MethodPost, url(port, "/tiny"), bytes.Repeat([]byte("x"), 10000), nil)
		if resp.status != http.StatusRequestEntityTooLarge {
			t.Errorf("10000-byte body: %d %q, want 413", resp.status, resp.body)
		}
	})
	if n := h.endOffset(topic); n != 0 {
		t.Fatalf("refused requests produced %d records", n)
	}
	if got := h.counter("kevents_source_events_received_total", "small", "tiny"); got != 0 {
		t.Errorf("events received %v after refusals only, want 0", got)
	}

	// The limit is inclusive: exactly maxPayloadSize bytes go through.
	resp := do(t, http.MethodPost, url(port, "/tiny"), []byte(`"12345678"`), nil) // 10 bytes
	if resp.status != http.StatusOK {
		t.Fatalf("10-byte body: %d %q, want 200", resp.status, resp.body)
	}
	d, _ := decodeData(t, decode(t, h.records(topic, 1)[0]).Data())
	if string(d.Body) != `"12345678"` {
		t.Errorf("body %s, want \"12345678\"", d.Body)
	}
}

func TestWebhookDefaultMaxPayloadSize(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"big"})
	h.run(parseEventSources(t, webhookYAML("big", "big", port, "/big", "")))

	body := bytes.Repeat([]byte("a"), DefaultMaxPayloadSize+1)
	resp := do(t, http.MethodPost, url(port, "/big"), body, nil)
	if resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("1 MiB + 1 body: %d %q, want 413", resp.status, resp.body)
	}
	if DefaultMaxPayloadSize != 1<<20 {
		t.Errorf("DefaultMaxPayloadSize %d, want 1 MiB (Argo's default)", DefaultMaxPayloadSize)
	}
	if n := h.endOffset("kevents.src.default.big"); n != 0 {
		t.Errorf("refused request produced %d records", n)
	}
}

// A body within the default limit is accepted by the webhook; it must then either reach Kafka
// (200) or be refused for good (413), never answered 503, which tells the caller to retry a
// request that can never succeed.
func TestWebhookBodyAtDefaultLimit(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"big"}, withPublishTimeout(3*time.Second))
	h.run(parseEventSources(t, webhookYAML("big", "big", port, "/big", "")))

	// A JSON string of exactly DefaultMaxPayloadSize bytes.
	body := append(append([]byte{'"'}, bytes.Repeat([]byte("a"), DefaultMaxPayloadSize-2)...), '"')
	resp := do(t, http.MethodPost, url(port, "/big"), body, map[string]string{"Content-Type": "application/json"})
	if resp.status != http.StatusOK {
		t.Fatalf("1 MiB body: %d %q, want 200", resp.status, resp.body)
	}
	h.records("kevents.src.default.big", 1)
}

func TestWebhookAuthSecret(t *testing.T) {
	const token = "s3cr3t-T0ken-value-0123456789"
	const yamlExtra = `      authSecret:
        name: webhook-auth
        key: token
`
	resolvers := map[string]func(t *testing.T) secrets.Resolver{
		"env": func(t *testing.T) secrets.Resolver {
			name := secrets.EnvName("webhook-auth", "token")
			if name != "KEVENTS_SECRET_WEBHOOK_AUTH__TOKEN" {
				t.Errorf("EnvName %q", name)
			}
			return secrets.Resolver{LookupEnv: func(k string) (string, bool) {
				if k == name {
					return token, true
				}
				return "", false
			}}
		},
		"dir": func(t *testing.T) secrets.Resolver {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "webhook-auth"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "webhook-auth", "token"), []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return secrets.Resolver{Dir: dir, LookupEnv: func(string) (string, bool) { return "", false }}
		},
	}
	for name, resolver := range resolvers {
		t.Run(name, func(t *testing.T) {
			port := freePort(t)
			h := newHarness(t, []string{"secure"}, withSecrets(resolver(t)))
			h.run(parseEventSources(t, webhookYAML("secure", "guarded", port, "/guarded", yamlExtra)))
			topic := "kevents.src.default.secure"
			body := []byte(`{"x": 1}`)

			for _, auth := range []string{
				"",
				"Bearer",
				"Bearer ",
				"Bearer wrong",
				"Bearer " + token + "x",
				"Bearer " + token[:len(token)-1],
				"Basic " + token,
				token,
			} {
				hdr := map[string]string{}
				if auth != "" {
					hdr["Authorization"] = auth
				}
				resp := do(t, http.MethodPost, url(port, "/guarded"), body, hdr)
				if resp.status != http.StatusUnauthorized {
					t.Errorf("Authorization %q: %d, want 401", auth, resp.status)
				}
				if strings.Contains(resp.body, token) {
					t.Errorf("Authorization %q: the 401 answer contains the token", auth)
				}
			}
			if n := h.endOffset(topic); n != 0 {
				t.Fatalf("unauthorized requests produced %d records", n)
			}

			resp := do(t, http.MethodPost, url(port, "/guarded"), body, map[string]string{
				"Authorization": "Bearer " + token,
				"X-Keep":        "kept",
			})
			if resp.status != http.StatusOK {
				t.Fatalf("correct token: %d %q, want 200", resp.status, resp.body)
			}
			r := h.records(topic, 1)[0]
			d, _ := decodeData(t, decode(t, r).Data())
			for k := range d.Header {
				if strings.EqualFold(k, "Authorization") {
					t.Errorf("event header carries %s: %q", k, d.Header[k])
				}
			}
			if got := d.Header["X-Keep"]; !reflect.DeepEqual(got, []string{"kept"}) {
				t.Errorf("header X-Keep %q, want [kept]", got)
			}
			all := [][]byte{r.Key, r.Value}
			for _, rh := range r.Headers {
				all = append(all, []byte(rh.Key), rh.Value)
			}
			if bytes.Contains(bytes.Join(all, nil), []byte(token)) {
				t.Error("the token appears in the record produced to Kafka")
			}
		})
	}
}

func TestWebhookAuthSecretUnresolved(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"secure"})
	es := parseEventSources(t, webhookYAML("secure", "guarded", port, "/guarded", `      authSecret:
        name: missing
        key: token
`))
	_, err := Run(context.Background(), h.env, es)
	if err == nil {
		t.Fatal("Run with an unresolvable authSecret: no error")
	}
	if !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("error %v does not wrap secrets.ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "authSecret") || !strings.Contains(err.Error(), "guarded") {
		t.Errorf("error %q does not name the event and field", err)
	}
}

// expect503 posts while Kafka is unreachable and checks the answer is a 503 within a few
// seconds of the 1 s PublishTimeout, counted as a publish failure. It returns false when no
// answer came in time.
func expect503(t *testing.T, h *harness, port int, published float64) bool {
	t.Helper()
	start := time.Now()
	resp, err := doWith(&http.Client{Timeout: 4 * time.Second}, http.MethodPost, url(port, "/ev"), []byte(`{"n": 2}`), nil)
	if err != nil {
		t.Logf("no answer after %v: %v", time.Since(start), err)
		return false
	}
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("Kafka down: %d %q, want 503", resp.status, resp.body)
	}
	if got := h.counter("kevents_source_publish_failures_total", "down", "ev"); got != 1 {
		t.Errorf("publish failures %v, want 1", got)
	}
	if got := h.counter("kevents_source_events_published_total", "down", "ev"); got != published {
		t.Errorf("events published %v, want %v", got, published)
	}
	return true
}

func TestWebhookKafkaUnreachable(t *testing.T) {
	t.Run("never reachable", func(t *testing.T) {
		port := freePort(t)
		h := newHarness(t, []string{"down"}, withPublishTimeout(time.Second), withDeadBroker())
		h.run(parseEventSources(t, webhookYAML("down", "ev", port, "/ev", "")))
		if !expect503(t, h, port, 0) {
			t.Fatal("no 503 within 4 s with a 1 s PublishTimeout")
		}
	})
	t.Run("went away", func(t *testing.T) {
		port := freePort(t)
		h := newHarness(t, []string{"down"}, withPublishTimeout(time.Second))
		h.run(parseEventSources(t, webhookYAML("down", "ev", port, "/ev", "")))
		// Kafka works first, so the producer has a connection, then the broker goes away.
		if resp := do(t, http.MethodPost, url(port, "/ev"), []byte(`{"n": 1}`), nil); resp.status != http.StatusOK {
			t.Fatalf("before the outage: %d %q, want 200", resp.status, resp.body)
		}
		h.cluster.Close()
		if !expect503(t, h, port, 1) {
			t.Fatal("no 503 within 4 s with a 1 s PublishTimeout after the broker went away")
		}
	})
}

func TestWebhookConcurrent(t *testing.T) {
	const n = 50
	port := freePort(t)
	h := newHarness(t, []string{"busy"})
	h.run(parseEventSources(t, webhookYAML("busy", "ev", port, "/ev", "")))

	var wg sync.WaitGroup
	statuses := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := httpClient.Post(url(port, "/ev"), "application/json", strings.NewReader(fmt.Sprintf(`{"i": %d}`, i)))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || statuses[i] != http.StatusOK {
			t.Errorf("request %d: %d %v, want 200", i, statuses[i], errs[i])
		}
	}
	recs := h.records("kevents.src.default.busy", n)
	ids := map[string]bool{}
	seen := map[float64]bool{}
	for _, r := range recs {
		e := decode(t, r)
		ids[e.ID()] = true
		d, _ := decodeData(t, e.Data())
		var b struct{ I float64 }
		if err := json.Unmarshal(d.Body, &b); err != nil {
			t.Fatal(err)
		}
		seen[b.I] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct ids in %d records, want %d", len(ids), len(recs), n)
	}
	if len(seen) != n {
		t.Errorf("%d distinct bodies in %d records, want %d", len(seen), len(recs), n)
	}
}

func TestWebhookSharedPort(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"multi", "other"})
	yaml := fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: multi
spec:
  webhook:
    first:
      port: "%[1]d"
      endpoint: /first
      method: POST
    second:
      port: "%[1]d"
      endpoint: /second
      method: PUT
---
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: other
spec:
  webhook:
    third:
      port: "%[1]d"
      endpoint: /third
      method: POST
`, port)
	h.run(parseEventSources(t, yaml))

	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/first"}, {http.MethodPut, "/second"}, {http.MethodPost, "/third"},
	} {
		if resp := do(t, c.method, url(port, c.path), []byte(`{}`), nil); resp.status != http.StatusOK {
			t.Errorf("%s %s: %d %q, want 200", c.method, c.path, resp.status, resp.body)
		}
	}
	// Each endpoint keeps its own method.
	if resp := do(t, http.MethodPost, url(port, "/second"), []byte(`{}`), nil); resp.status != http.StatusMethodNotAllowed || resp.header.Get("Allow") != http.MethodPut {
		t.Errorf("POST /second: %d Allow %q, want 405 Allow PUT", resp.status, resp.header.Get("Allow"))
	}
	var subjects []string
	for _, r := range h.records("kevents.src.default.multi", 2) {
		e := decode(t, r)
		if e.Source() != "multi" {
			t.Errorf("source %q, want multi", e.Source())
		}
		subjects = append(subjects, e.Subject())
	}
	if want := []string{"first", "second"}; !reflect.DeepEqual(subjects, want) {
		t.Errorf("subjects %v, want %v", subjects, want)
	}
	if e := decode(t, h.records("kevents.src.default.other", 1)[0]); e.Source() != "other" || e.Subject() != "third" {
		t.Errorf("other: source %q subject %q, want other third", e.Source(), e.Subject())
	}
}

func TestWebhookDuplicateEndpoint(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"dup", "dup2"})

	t.Run("one eventsource", func(t *testing.T) {
		es := parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: dup
spec:
  webhook:
    a:
      port: "%[1]d"
      endpoint: /same
      method: POST
    b:
      port: "%[1]d"
      endpoint: /same
      method: PUT
`, port))
		_, err := Run(context.Background(), h.env, es)
		if err == nil {
			t.Fatal("Run: no error for two events on one endpoint")
		}
		if !strings.Contains(err.Error(), "/same") {
			t.Errorf("error %q does not name the endpoint /same", err)
		}
	})
	t.Run("two eventsources", func(t *testing.T) {
		es := parseEventSources(t, webhookYAML("dup", "a", port, "/same", "")+"---\n"+webhookYAML("dup2", "b", port, "/same", ""))
		_, err := Run(context.Background(), h.env, es)
		if err == nil {
			t.Fatal("Run: no error for two eventsources on one endpoint")
		}
		if !strings.Contains(err.Error(), "/same") {
			t.Errorf("error %q does not name the endpoint /same", err)
		}
	})
	// Nothing was left listening by the refused runs.
	h.run(parseEventSources(t, webhookYAML("dup", "a", port, "/same", "")))
	if resp := do(t, http.MethodPost, url(port, "/same"), []byte(`{}`), nil); resp.status != http.StatusOK {
		t.Errorf("after refused runs: %d %q, want 200", resp.status, resp.body)
	}
}

func TestCheckUnsupportedType(t *testing.T) {
	es := parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: queue
spec:
  nsq:
    example:
      hostAddress: nsqlookupd:4161
      topic: events
      channel: kevents
`)[0]
	err := Check(es)
	if err == nil {
		t.Fatal("Check: no error for an nsq event")
	}
	if !errors.Is(err, api.ErrNotSupported) {
		t.Errorf("error %v does not wrap api.ErrNotSupported", err)
	}
	if !strings.Contains(err.Error(), `not supported yet: eventsource type "nsq"`) {
		t.Errorf("error %q lacks `not supported yet: eventsource type \"nsq\"`", err)
	}
	if !strings.Contains(err.Error(), "spec.nsq.example") {
		t.Errorf("error %q does not name spec.nsq.example", err)
	}

	// Run refuses it the same way, before listening anywhere.
	h := newHarness(t, []string{"queue"})
	if _, err := Run(context.Background(), h.env, []*api.EventSource{es}); !errors.Is(err, api.ErrNotSupported) {
		t.Errorf("Run: %v, want an error wrapping api.ErrNotSupported", err)
	}
}

func TestCheckWebhookTLSFields(t *testing.T) {
	for extra, want := range map[string]string{
		"      serverCertSecret:\n        name: tls\n        key: crt\n      serverKeySecret:\n        name: tls\n        key: key\n": "",
		"      serverCertSecret:\n        name: tls\n        key: crt\n":                                                              "serverKeySecret: missing",
		"      serverKeySecret:\n        name: tls\n        key: key\n":                                                               "serverCertSecret: missing",
		"      serverCertSecret:\n        name: tls\n      serverKeySecret:\n        name: tls\n        key: key\n":                   "serverCertSecret",
	} {
		err := Check(parseEventSources(t, webhookYAML("w", "e", 12000, "/e", extra))[0])
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: Check: %v", extra, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: Check: %v, want an error containing %q", extra, err, want)
		}
	}
	if e, err := types.Lookup("webhook"); err != nil || e.Spec.Summary == "" {
		t.Errorf("webhook is not registered with a summary: %v", err)
	}
}

// TestWebhookTLS serves a webhook over TLS with the certificate of serverCertSecret and
// serverKeySecret: an HTTPS request that trusts its CA gets its event, plain HTTP gets none, and
// an event on the same port without TLS is refused.
func TestWebhookTLS(t *testing.T) {
	caPEM, certPEM, keyPEM := testServerCertificate(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "hook-tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	for key, v := range map[string][]byte{"crt": certPEM, "key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, "hook-tls", key), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	resolver := secrets.Resolver{Dir: dir, LookupEnv: func(string) (string, bool) { return "", false }}
	const tlsFields = "      serverCertSecret: {name: hook-tls, key: crt}\n      serverKeySecret: {name: hook-tls, key: key}\n"
	port := freePort(t)
	h := newHarness(t, []string{"secure"}, withSecrets(resolver))
	h.run(parseEventSources(t, webhookYAML("secure", "hook", port, "/hook", tlsFields)))

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post(fmt.Sprintf("https://127.0.0.1:%d/hook", port), "application/json", strings.NewReader(`{"n":1}`))
	if err != nil {
		t.Fatalf("HTTPS request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTPS request: status %d, want 200", resp.StatusCode)
	}
	if resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/hook", port), "application/json", strings.NewReader(`{"n":2}`)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("a plain HTTP request to the TLS port was accepted")
		}
	}
	recs := h.records("kevents.src.default.secure", 1)
	if !strings.Contains(string(recs[0].Value), `"n":1`) {
		t.Errorf("event data %s, want the HTTPS request's body", recs[0].Value)
	}

	// One port is one listener: an event without TLS cannot share it.
	shared := freePort(t)
	es := parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: mixed}
spec:
  webhook:
    a: {port: "%d", endpoint: /a, method: POST, serverCertSecret: {name: hook-tls, key: crt}, serverKeySecret: {name: hook-tls, key: key}}
    b: {port: "%d", endpoint: /b, method: POST}
`, shared, shared))[0]
	h2 := newHarness(t, []string{"mixed"}, withSecrets(resolver))
	if _, err := Run(context.Background(), h2.env, []*api.EventSource{es}); err == nil || !strings.Contains(err.Error(), "plain HTTP") {
		t.Errorf("Run with TLS and plain HTTP events on one port: %v, want an error saying the port's events disagree", err)
	}
}

// Endpoints are user input that api.Validate only checks for a leading '/': Run must refuse or
// serve them, never panic (Go's ServeMux reads '{', '}' and spaces as pattern syntax).
func TestWebhookEndpointIsNotAPattern(t *testing.T) {
	for _, endpoints := range [][]string{{"/hooks/{id}"}, {"/a/{"}, {"/with space"}, {"/hooks/{a}", "/hooks/{b}"}} {
		endpoint := strings.Join(endpoints, " and ")
		t.Run(endpoint, func(t *testing.T) {
			port := freePort(t)
			h := newHarness(t, []string{"odd"})
			var docs []string
			for i, e := range endpoints {
				docs = append(docs, webhookYAML(fmt.Sprintf("odd%d", i), "e", port, fmt.Sprintf("%q", e), ""))
			}
			es := parseEventSources(t, strings.Join(docs, "---\n"))
			var panicked any
			func() {
				defer func() { panicked = recover() }()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				wait, err := Run(ctx, h.env, es)
				if err == nil {
					cancel()
					_ = wait()
				}
			}()
			if panicked != nil {
				t.Fatalf("endpoint %q: Run panicked (%v) instead of serving it or returning an error", endpoint, panicked)
			}
		})
	}
}
