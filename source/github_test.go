package source

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

const (
	ghSecret   = "gh-WEBHOOK-s3cret-0123456789"
	ghAPIToken = "ghp_API-token-abcdefghijklmnop"
)

// ghYAML is an EventSource with one github event; fields are the event's fields, indented by 6
// spaces.
func ghYAML(name, event string, fields string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  github:
    %s:
%s`, name, event, strings.TrimRight(fields, "\n")+"\n")
}

// ghFields are the fields of a plain receiver on port, with extra appended.
func ghFields(port int, extra string) string {
	return fmt.Sprintf(`      webhook:
        port: "%d"
        endpoint: /push
        method: POST
      repositories:
        - owner: argoproj
          names: [argo-events]
`, port) + extra
}

const ghSecretField = `      webhookSecret:
        name: github
        key: secret
`

func ghSign(newHash func() hash.Hash, prefix, secret string, body []byte) string {
	m := hmac.New(newHash, []byte(secret))
	m.Write(body)
	return prefix + "=" + hex.EncodeToString(m.Sum(nil))
}

func ghHeaders(event, delivery string, body []byte, secret string) map[string]string {
	h := map[string]string{
		"Content-Type":      "application/json",
		"X-GitHub-Event":    event,
		"X-GitHub-Delivery": delivery,
		"User-Agent":        "GitHub-Hookshot/abc123",
	}
	if secret != "" {
		h["X-Hub-Signature-256"] = ghSign(sha256.New, "sha256", secret, body)
		h["X-Hub-Signature"] = ghSign(sha1.New, "sha1", secret, body)
	}
	return h
}

// ghEventData is the data of a github or gitlab event, decoded loosely.
type ghEventData struct {
	Headers  map[string][]string        `json:"headers"`
	Body     map[string]json.RawMessage `json:"body"`
	Metadata map[string]string          `json:"metadata"`
}

func ghDecodeData(t *testing.T, data []byte) (ghEventData, map[string]json.RawMessage) {
	t.Helper()
	var d ghEventData
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("event data: %v\n%s", err, data)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	return d, fields
}

// ghRecordHolds reports whether s appears anywhere in the record: key, value or headers.
func ghRecordHolds(r *kgo.Record, s string) bool {
	all := [][]byte{r.Key, r.Value}
	for _, h := range r.Headers {
		all = append(all, []byte(h.Key), h.Value)
	}
	return bytes.Contains(bytes.Join(all, []byte{0}), []byte(s))
}

func ghCaptureLog(h *harness) *syncBuffer {
	l := &syncBuffer{}
	h.env.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return l
}

// ghStart runs the sources and returns a stop function that waits until everything stopped
// (it also runs at cleanup).
func ghStart(t *testing.T, h *harness, es []*api.EventSource) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := Run(ctx, h.env, es)
	if err != nil {
		cancel()
		t.Fatalf("Run: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := wait(); err != nil {
				t.Errorf("wait: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// ghFastHooks makes hook managers start at once and check again every 100 ms.
func ghFastHooks(t *testing.T) {
	jitter, resync := gitHookJitter, gitHookResync
	gitHookJitter, gitHookResync = 0, 100*time.Millisecond
	t.Cleanup(func() { gitHookJitter, gitHookResync = jitter, resync })
}

func ghEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGithubPublishesCloudEvent(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret})))
	h.run(parseEventSources(t, ghYAML("gh", "push", ghFields(port, ghSecretField+`      events: [push]
      metadata:
        team: platform
`))))
	topic := "kevents.src.default.gh"

	body := []byte(`{"ref":"refs/heads/main","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","repository":{"id":1296269,"full_name":"argoproj/argo-events"},"big":12345678901234567890}`)
	hdr := ghHeaders("push", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body, ghSecret)
	before := time.Now().Add(-time.Second)
	resp := do(t, http.MethodPost, url(port, "/push"), body, hdr)
	if resp.status != http.StatusOK || strings.TrimSpace(resp.body) != "success" {
		t.Fatalf("POST: %d %q, want 200 success", resp.status, resp.body)
	}

	r := h.records(topic, 1)[0]
	e := decode(t, r)
	if e.ID() != "72d3162e-cc78-11e3-81ab-4c9367dc0958" {
		t.Errorf("id %q, want the X-GitHub-Delivery", e.ID())
	}
	if e.Source() != "gh" || e.Subject() != "push" || e.Type() != "github" {
		t.Errorf("source %q subject %q type %q, want gh push github", e.Source(), e.Subject(), e.Type())
	}
	if e.Time().Before(before) || e.Time().After(time.Now().Add(time.Second)) {
		t.Errorf("time %v, want about now", e.Time())
	}
	if e.DataContentType() != "application/json" {
		t.Errorf("datacontenttype %q", e.DataContentType())
	}
	d, fields := ghDecodeData(t, e.Data())
	for k := range fields {
		switch k {
		case "headers", "body", "metadata":
		default:
			t.Errorf("unexpected field %q in event data (Argo's GithubEventData has headers, body, metadata)", k)
		}
	}
	// Argo's body: the payload plus the X-GitHub-Event and X-GitHub-Delivery headers.
	want := `{"ref":"refs/heads/main","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","repository":{"id":1296269,"full_name":"argoproj/argo-events"},"big":12345678901234567890,
		"X-GitHub-Event":"push","X-GitHub-Delivery":"72d3162e-cc78-11e3-81ab-4c9367dc0958"}`
	gotBody, _ := json.Marshal(d.Body)
	if !jsonEqual(t, gotBody, []byte(want)) {
		t.Errorf("body %s, want %s", gotBody, want)
	}
	if string(d.Body["big"]) != "12345678901234567890" {
		t.Errorf("big number %s altered", d.Body["big"])
	}
	if got := d.Headers["X-Github-Event"]; !reflect.DeepEqual(got, []string{"push"}) {
		t.Errorf("headers X-Github-Event %q, want [push]", got)
	}
	if got := d.Headers["User-Agent"]; !reflect.DeepEqual(got, []string{"GitHub-Hookshot/abc123"}) {
		t.Errorf("headers User-Agent %q", got)
	}
	for k := range d.Headers {
		if strings.HasPrefix(strings.ToLower(k), "x-hub-signature") {
			t.Errorf("event headers carry %s", k)
		}
	}
	if !reflect.DeepEqual(d.Metadata, map[string]string{"team": "platform"}) {
		t.Errorf("metadata %v, want team: platform", d.Metadata)
	}
	if ghRecordHolds(r, ghSecret) {
		t.Error("the webhook secret appears in the record")
	}
	for fam, want := range map[string]float64{
		"kevents_source_events_received_total":  1,
		"kevents_source_events_published_total": 1,
		"kevents_source_publish_failures_total": 0,
	} {
		if got := h.counter(fam, "gh", "push"); got != want {
			t.Errorf("%s %v, want %v", fam, got, want)
		}
	}
}

func TestGithubSignatures(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret})))
	h.run(parseEventSources(t, ghYAML("gh", "push", ghFields(port, ghSecretField))))
	topic := "kevents.src.default.gh"
	body := []byte(`{"ref":"refs/heads/main"}`)
	other := []byte(`{"ref":"refs/heads/evil"}`)

	refused := []struct {
		name   string
		sig256 string
		sig1   string
		status int
	}{
		{"no signature", "", "", http.StatusUnauthorized},
		{"garbled", "nonsense", "", http.StatusUnauthorized},
		{"unknown algorithm", "md5=" + strings.Repeat("0", 32), "", http.StatusUnauthorized},
		{"not hex", "sha256=zz", "", http.StatusUnauthorized},
		{"empty digest", "sha256=", "", http.StatusUnauthorized},
		{"wrong secret", ghSign(sha256.New, "sha256", "not-the-secret", body), "", http.StatusForbidden},
		{"other body", ghSign(sha256.New, "sha256", ghSecret, other), "", http.StatusForbidden},
		{"secret as signature", "sha256=" + hex.EncodeToString([]byte(ghSecret)), "", http.StatusForbidden},
		{"legacy sha1 wrong", "", ghSign(sha1.New, "sha1", "not-the-secret", body), http.StatusForbidden},
		// X-Hub-Signature-256 wins when both are present, as in go-github.
		{"sha256 wrong, sha1 right", ghSign(sha256.New, "sha256", "nope", body), ghSign(sha1.New, "sha1", ghSecret, body), http.StatusForbidden},
	}
	for _, c := range refused {
		hdr := ghHeaders("push", "d-"+c.name, body, "")
		if c.sig256 != "" {
			hdr["X-Hub-Signature-256"] = c.sig256
		}
		if c.sig1 != "" {
			hdr["X-Hub-Signature"] = c.sig1
		}
		resp := do(t, http.MethodPost, url(port, "/push"), body, hdr)
		if resp.status != c.status {
			t.Errorf("%s: %d %q, want %d", c.name, resp.status, resp.body, c.status)
		}
		if strings.Contains(resp.body, ghSecret) {
			t.Errorf("%s: the answer contains the secret", c.name)
		}
	}
	if n := h.endOffset(topic); n != 0 {
		t.Fatalf("refused deliveries produced %d records", n)
	}
	if got := h.counter("kevents_source_events_received_total", "gh", "push"); got != 0 {
		t.Errorf("events received %v after refusals, want 0", got)
	}

	accepted := []struct {
		name string
		hdr  map[string]string
	}{
		{"sha256", map[string]string{"X-Hub-Signature-256": ghSign(sha256.New, "sha256", ghSecret, body)}},
		{"legacy sha1 only", map[string]string{"X-Hub-Signature": ghSign(sha1.New, "sha1", ghSecret, body)}},
		{"both", map[string]string{"X-Hub-Signature-256": ghSign(sha256.New, "sha256", ghSecret, body), "X-Hub-Signature": ghSign(sha1.New, "sha1", ghSecret, body)}},
	}
	for _, c := range accepted {
		hdr := ghHeaders("push", "d-"+c.name, body, "")
		for k, v := range c.hdr {
			hdr[k] = v
		}
		if resp := do(t, http.MethodPost, url(port, "/push"), body, hdr); resp.status != http.StatusOK {
			t.Errorf("%s: %d %q, want 200", c.name, resp.status, resp.body)
		}
	}
	for _, r := range h.records(topic, len(accepted)) {
		if ghRecordHolds(r, ghSecret) {
			t.Error("the webhook secret appears in a record")
		}
	}
}

func TestGithubUnsigned(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gh"})
	h.run(parseEventSources(t, ghYAML("gh", "push", ghFields(port, ""))))
	body := []byte(`{"zen":"Keep it logically awesome."}`)
	if resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders("issues", "abc", body, "")); resp.status != http.StatusOK {
		t.Fatalf("unsigned delivery without webhookSecret: %d %q, want 200", resp.status, resp.body)
	}
	// No events listed: every event passes, as in Argo.
	d, _ := ghDecodeData(t, decode(t, h.records("kevents.src.default.gh", 1)[0]).Data())
	if string(d.Body["X-GitHub-Event"]) != `"issues"` {
		t.Errorf("body X-GitHub-Event %s, want \"issues\"", d.Body["X-GitHub-Event"])
	}
}

func TestGithubContentTypes(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret})))
	h.run(parseEventSources(t, ghYAML("gh", "push", ghFields(port, ghSecretField+"      contentType: form\n"))))
	topic := "kevents.src.default.gh"

	payload := `{"action":"opened","number":7,"note":"a&b=c+d"}`
	form := []byte("payload=" + neturl.QueryEscape(payload))
	hdr := ghHeaders("pull_request", "form-1", form, ghSecret)
	hdr["Content-Type"] = "application/x-www-form-urlencoded"
	if resp := do(t, http.MethodPost, url(port, "/push"), form, hdr); resp.status != http.StatusOK {
		t.Fatalf("form delivery: %d %q, want 200", resp.status, resp.body)
	}
	// JSON deliveries are accepted whatever contentType says, as go-github does.
	js := []byte(payload)
	jhdr := ghHeaders("pull_request", "json-1", js, ghSecret)
	jhdr["Content-Type"] = "application/json; charset=utf-8"
	if resp := do(t, http.MethodPost, url(port, "/push"), js, jhdr); resp.status != http.StatusOK {
		t.Fatalf("json delivery: %d %q, want 200", resp.status, resp.body)
	}
	for i, r := range h.records(topic, 2) {
		d, _ := ghDecodeData(t, decode(t, r).Data())
		got, _ := json.Marshal(d.Body)
		want := fmt.Sprintf(`{"action":"opened","number":7,"note":"a&b=c+d","X-GitHub-Event":"pull_request","X-GitHub-Delivery":%q}`, []string{"form-1", "json-1"}[i])
		if !jsonEqual(t, got, []byte(want)) {
			t.Errorf("record %d: body %s, want %s", i, got, want)
		}
	}

	for name, c := range map[string]struct {
		ct   string
		body []byte
	}{
		"text/plain":           {"text/plain", js},
		"no Content-Type":      {"", js},
		"form without payload": {"application/x-www-form-urlencoded", []byte("other=1")},
		"array":                {"application/json", []byte(`[1,2]`)},
		"null":                 {"application/json", []byte(`null`)},
		"not JSON":             {"application/json", []byte(`{"a":`)},
	} {
		hdr := ghHeaders("push", "bad", c.body, ghSecret)
		if c.ct == "" {
			delete(hdr, "Content-Type")
		} else {
			hdr["Content-Type"] = c.ct
		}
		resp := do(t, http.MethodPost, url(port, "/push"), c.body, hdr)
		if resp.status != http.StatusBadRequest {
			t.Errorf("%s: %d %q, want 400", name, resp.status, resp.body)
		}
	}
	if n := h.endOffset(topic); n != 2 {
		t.Errorf("topic holds %d records after refused deliveries, want 2", n)
	}
}

func TestGithubEventsFilterAndPing(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret})))
	h.run(parseEventSources(t, ghYAML("gh", "push", ghFields(port, ghSecretField+"      events: [push, pull_request]\n"))))
	topic := "kevents.src.default.gh"
	body := []byte(`{"zen":"Design for failure.","hook_id":1}`)

	// Ping: answered, not published, still signed.
	resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders("ping", "p1", body, ghSecret))
	if resp.status != http.StatusOK || strings.TrimSpace(resp.body) != "pong" {
		t.Errorf("ping: %d %q, want 200 pong", resp.status, resp.body)
	}
	if resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders("ping", "p2", body, "wrong-secret")); resp.status != http.StatusForbidden {
		t.Errorf("ping with a wrong signature: %d %q, want 403", resp.status, resp.body)
	}
	// Events not listed: answered 200 so GitHub does not count a failure, not published.
	for _, ev := range []string{"issues", "star", ""} {
		resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders(ev, "x-"+ev, body, ghSecret))
		if resp.status != http.StatusOK || !strings.HasPrefix(resp.body, "ignored") {
			t.Errorf("event %q: %d %q, want 200 ignored", ev, resp.status, resp.body)
		}
	}
	if n := h.endOffset(topic); n != 0 {
		t.Fatalf("ping and unlisted events produced %d records", n)
	}
	for _, ev := range []string{"push", "pull_request"} {
		if resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders(ev, "ok-"+ev, body, ghSecret)); resp.status != http.StatusOK {
			t.Errorf("event %s: %d %q, want 200", ev, resp.status, resp.body)
		}
	}
	var ids []string
	for _, r := range h.records(topic, 2) {
		ids = append(ids, decode(t, r).ID())
	}
	if !reflect.DeepEqual(ids, []string{"ok-push", "ok-pull_request"}) {
		t.Errorf("ids %v", ids)
	}
	// Bodies of refused content types are refused only for listed events.
	if resp := do(t, http.MethodPost, url(port, "/push"), []byte("x"), map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": ghSign(sha256.New, "sha256", ghSecret, []byte("x"))}); resp.status != http.StatusBadRequest {
		t.Errorf("push without Content-Type: %d, want 400", resp.status)
	}
}

func TestGithubEventsStarAndPingListed(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gh"})
	h.run(parseEventSources(t, ghYAML("gh", "all", ghFields(port, "      events: [\"*\", ping]\n"))))
	body := []byte(`{"zen":"Approachable is better than simple."}`)
	for _, ev := range []string{"ping", "issues", "workflow_run"} {
		resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders(ev, "id-"+ev, body, ""))
		if resp.status != http.StatusOK || strings.TrimSpace(resp.body) != "success" {
			t.Errorf("%s: %d %q, want 200 success", ev, resp.status, resp.body)
		}
	}
	h.records("kevents.src.default.gh", 3)
}

func TestGithubKafkaUnreachable(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withPublishTimeout(time.Second), withDeadBroker(),
		withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret})))
	h.run(parseEventSources(t, ghYAML("gh", "push", ghFields(port, ghSecretField))))
	body := []byte(`{"ref":"refs/heads/main"}`)
	req := ghHeaders("push", "retry-me", body, ghSecret)
	resp, err := doWith(&http.Client{Timeout: 4 * time.Second}, http.MethodPost, url(port, "/push"), body, req)
	if err != nil {
		t.Fatalf("no answer within 4 s with a 1 s PublishTimeout: %v", err)
	}
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("Kafka down: %d %q, want 503", resp.status, resp.body)
	}
	if got := h.counter("kevents_source_publish_failures_total", "gh", "push"); got != 1 {
		t.Errorf("publish failures %v, want 1", got)
	}
	if got := h.counter("kevents_source_events_published_total", "gh", "push"); got != 0 {
		t.Errorf("events published %v, want 0", got)
	}
}

func TestGithubEndpointRefusals(t *testing.T) {
	port := freePort(t)
	const bearer = "bearer-T0KEN-for-the-endpoint"
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"hook-auth/token": bearer})))
	h.run(parseEventSources(t, ghYAML("gh", "push", fmt.Sprintf(`      webhook:
        port: "%d"
        endpoint: /push
        method: POST
        maxPayloadSize: 64
        authSecret:
          name: hook-auth
          key: token
      organizations: [argoproj]
`, port))))
	topic := "kevents.src.default.gh"
	body := []byte(`{"a":1}`)
	hdr := ghHeaders("push", "m", body, "")

	if resp := do(t, http.MethodGet, url(port, "/push"), nil, hdr); resp.status != http.StatusMethodNotAllowed || resp.header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow %q, want 405 Allow POST", resp.status, resp.header.Get("Allow"))
	}
	if resp := do(t, http.MethodPost, url(port, "/other"), body, hdr); resp.status != http.StatusNotFound {
		t.Errorf("other path: %d, want 404", resp.status)
	}
	for _, auth := range []string{"", "Bearer wrong", bearer, "Bearer " + bearer + "x"} {
		hdr["Authorization"] = auth
		if resp := do(t, http.MethodPost, url(port, "/push"), body, hdr); resp.status != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, resp.status)
		}
	}
	hdr["Authorization"] = "Bearer " + bearer
	big := []byte(`{"a":"` + strings.Repeat("x", 100) + `"}`)
	if resp := do(t, http.MethodPost, url(port, "/push"), big, hdr); resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("body over maxPayloadSize: %d, want 413", resp.status)
	}
	if n := h.endOffset(topic); n != 0 {
		t.Fatalf("refused requests produced %d records", n)
	}
	if resp := do(t, http.MethodPost, url(port, "/push"), body, hdr); resp.status != http.StatusOK {
		t.Fatalf("right bearer token: %d %q, want 200", resp.status, resp.body)
	}
	r := h.records(topic, 1)[0]
	d, _ := ghDecodeData(t, decode(t, r).Data())
	if _, ok := d.Headers["Authorization"]; ok {
		t.Error("the event carries the Authorization header")
	}
	if ghRecordHolds(r, bearer) {
		t.Error("the bearer token appears in the record")
	}
}

func TestGithubSecretUnresolved(t *testing.T) {
	h := newHarness(t, []string{"gh"})
	_, err := Run(context.Background(), h.env, parseEventSources(t, ghYAML("gh", "push", ghFields(freePort(t), ghSecretField))))
	if !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("Run: %v, want an error wrapping secrets.ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "webhookSecret") || !strings.Contains(err.Error(), "push") {
		t.Errorf("error %q does not name the event and field", err)
	}
	h2 := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ""})))
	if _, err := Run(context.Background(), h2.env, parseEventSources(t, ghYAML("gh", "push", ghFields(freePort(t), ghSecretField)))); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("Run with an empty webhook secret: %v, want an error saying it is empty", err)
	}
}

func TestCheckGithub(t *testing.T) {
	webhook := `      webhook:
        port: "12000"
        endpoint: /push
        method: POST
`
	repos := "      repositories:\n        - owner: o\n          names: [n]\n"
	cases := []struct {
		name, fields string
		want         []string // substrings of the error; nil means valid
		notSupported bool
	}{
		{"plain", webhook + repos, nil, false},
		{"deprecated owner/repository", webhook + "      owner: o\n      repository: n\n", nil, false},
		{"hooks", webhook + repos + "      events: [push]\n      apiToken:\n        name: gh\n        key: token\n", nil, false},
		{"no webhook", repos, []string{"webhook: missing"}, false},
		{"bad port", strings.Replace(webhook, `"12000"`, `"http"`, 1) + repos, []string{`webhook.port: "http"`}, false},
		{"bad endpoint", strings.Replace(webhook, "/push", "push", 1) + repos, []string{`webhook.endpoint: "push"`}, false},
		{"bad method", strings.Replace(webhook, "POST", "FETCH", 1) + repos, []string{`webhook.method: "FETCH"`}, false},
		{"bad url", strings.Replace(webhook, "method: POST", "method: POST\n        url: example.com", 1) + repos, []string{`webhook.url: "example.com"`}, false},
		{"no repositories or organizations", webhook, []string{"repositories, organizations: both empty"}, false},
		{"both", webhook + repos + "      organizations: [a]\n", []string{"repositories, organizations: both set"}, false},
		{"repository without owner", webhook + "      repositories:\n        - names: [n]\n", []string{"repositories[0].owner: missing"}, false},
		{"repository without names", webhook + "      repositories:\n        - owner: o\n", []string{"repositories[0].names: empty"}, false},
		{"content type", webhook + repos + "      contentType: xml\n", []string{`contentType: "xml"`}, false},
		{"base URL alone", webhook + repos + "      githubBaseURL: https://ghe.example.com/api/v3/\n", []string{"githubUploadURL: missing"}, false},
		{"upload URL alone", webhook + repos + "      githubUploadURL: https://ghe.example.com/api/uploads/\n", []string{"githubBaseURL: missing"}, false},
		{"bad base URL", webhook + repos + "      githubBaseURL: ghe\n      githubUploadURL: https://ghe.example.com/api/uploads/\n", []string{`githubBaseURL: "ghe"`}, false},
		{"hooks without events", strings.Replace(webhook, "method: POST", "method: POST\n        url: https://kevents.example.com", 1) + repos + "      apiToken:\n        name: gh\n        key: token\n", []string{"events: empty"}, false},
		{"secret without key", webhook + repos + "      webhookSecret:\n        name: gh\n", []string{"webhookSecret: expected both name and key"}, false},
		{"app without ids", webhook + repos + "      githubApp:\n        privateKey:\n          name: app\n          key: pem\n", []string{"githubApp.appID: 0", "githubApp.installationID: 0"}, false},
		{"app without key", webhook + repos + "      githubApp:\n        appID: 1\n        installationID: 2\n", []string{"githubApp.privateKey: missing"}, false},
		{"filter", webhook + repos + "      filter:\n        expression: body.x == 1\n", nil, false},
		{"TLS", strings.Replace(webhook, "method: POST", "method: POST\n        serverCertSecret:\n          name: tls\n          key: crt\n        serverKeySecret:\n          name: tls\n          key: key", 1) + repos, nil, false},
		{"TLS without key", strings.Replace(webhook, "method: POST", "method: POST\n        serverCertSecret:\n          name: tls\n          key: crt", 1) + repos, []string{"webhook.serverKeySecret: missing"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, ghYAML("gh", "ev", c.fields))[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			if !strings.Contains(err.Error(), "spec.github.ev") {
				t.Errorf("error %q does not name spec.github.ev", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != c.notSupported {
				t.Errorf("errors.Is(ErrNotSupported) = %v, want %v: %v", got, c.notSupported, err)
			}
		})
	}
	if e, err := types.Lookup("github"); err != nil || e.Spec.Summary == "" {
		t.Errorf("github is not registered with a summary: %v", err)
	}
}

// --- hook management against a fake GitHub API --------------------------------------------

type ghCreated struct {
	Path string
	Hook githubHook
}

// ghFakeAPI stands in for the GitHub REST API under /api/v3/.
type ghFakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	auth       string // the Authorization hooks calls must carry
	hooks      map[string][]githubHook
	created    []ghCreated
	deleted    []string
	failCreate int    // creates to fail before succeeding
	failMsg    string // message of the failures
	nextID     int64
	badAuth    int

	// GitHub App: the public key JWTs must verify with, the installation id and the token
	// handed out.
	appKey      *rsa.PublicKey
	appID       string
	appInstall  string
	appToken    string
	tokensIssue int
}

func newGHFakeAPI(t *testing.T, auth string) *ghFakeAPI {
	f := &ghFakeAPI{t: t, auth: auth, hooks: map[string][]githubHook{}, nextID: 100}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *ghFakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.EscapedPath()
	if f.appKey != nil && r.Method == http.MethodPost && p == "/api/v3/app/installations/"+f.appInstall+"/access_tokens" {
		if err := f.verifyJWT(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")); err != nil {
			f.t.Errorf("installation token request: %v", err)
			http.Error(w, `{"message":"A JSON web token could not be decoded"}`, http.StatusUnauthorized)
			return
		}
		f.tokensIssue++
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"token": f.appToken, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		return
	}
	if r.Header.Get("Authorization") != f.auth {
		f.badAuth++
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	switch {
	case strings.HasSuffix(p, "/hooks") && r.Method == http.MethodGet:
		if r.URL.Query().Get("per_page") != "100" {
			f.t.Errorf("list %s without per_page=100", p)
		}
		hooks := f.hooks[p]
		if r.URL.Query().Get("page") != "1" {
			hooks = nil
		}
		_ = json.NewEncoder(w).Encode(append([]githubHook{}, hooks...))
	case strings.HasSuffix(p, "/hooks") && r.Method == http.MethodPost:
		var hk githubHook
		if err := json.NewDecoder(r.Body).Decode(&hk); err != nil {
			f.t.Errorf("create hook body: %v", err)
		}
		if f.failCreate > 0 {
			f.failCreate--
			http.Error(w, f.failMsg, http.StatusUnprocessableEntity)
			return
		}
		f.created = append(f.created, ghCreated{Path: p, Hook: hk})
		f.nextID++
		hk.ID = f.nextID
		stored := hk
		stored.Config = map[string]any{}
		for k, v := range hk.Config {
			stored.Config[k] = v
		}
		if _, ok := stored.Config["secret"]; ok {
			stored.Config["secret"] = "********"
		}
		f.hooks[p] = append(f.hooks[p], stored)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(stored)
	case r.Method == http.MethodDelete:
		i := strings.LastIndex(p, "/")
		coll, id := p[:i], p[i+1:]
		hooks := f.hooks[coll]
		for j, hk := range hooks {
			if strconv.FormatInt(hk.ID, 10) == id {
				f.hooks[coll] = append(hooks[:j:j], hooks[j+1:]...)
				f.deleted = append(f.deleted, p)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	default:
		f.t.Errorf("unexpected request %s %s", r.Method, p)
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
	}
}

func (f *ghFakeAPI) verifyJWT(tok string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("JWT %q has %d parts", tok, len(parts))
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h struct{ Alg, Typ string }
	if err := json.Unmarshal(hdr, &h); err != nil || h.Alg != "RS256" {
		return fmt.Errorf("JWT header %s, want alg RS256", hdr)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(f.appKey, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("JWT signature: %v", err)
	}
	cl, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Iat, Exp int64
		Iss      string
	}
	if err := json.Unmarshal(cl, &c); err != nil {
		return err
	}
	now := time.Now().Unix()
	if c.Iss != f.appID || c.Iat > now || c.Exp <= now || c.Exp-c.Iat > 600 {
		return fmt.Errorf("JWT claims %s: want iss %s, iat <= now < exp, at most 10 minutes", cl, f.appID)
	}
	return nil
}

func (f *ghFakeAPI) state() (created []ghCreated, deleted []string, hooks map[string][]githubHook) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hooks = map[string][]githubHook{}
	for k, v := range f.hooks {
		hooks[k] = append([]githubHook{}, v...)
	}
	return append([]ghCreated{}, f.created...), append([]string{}, f.deleted...), hooks
}

func ghHookFields(port int, apiURL, extra string) string {
	return fmt.Sprintf(`      webhook:
        port: "%d"
        endpoint: /push
        method: POST
        url: https://kevents.example.com/
      githubBaseURL: %s/api/v3
      githubUploadURL: %s/api/uploads
      events: [push, pull_request]
      active: true
      contentType: json
      webhookSecret:
        name: github
        key: secret
`, port, apiURL, apiURL) + extra
}

func TestGithubHooksWithAPIToken(t *testing.T) {
	ghFastHooks(t)
	f := newGHFakeAPI(t, "token "+ghAPIToken)
	// argo-events already has the hook (same URL and events, other order): it is reused.
	f.hooks["/api/v3/repos/argoproj/argo-events/hooks"] = []githubHook{
		{ID: 7, Name: "web", Events: []string{"push"}, Config: map[string]any{"url": "https://kevents.example.com/push"}},
		{ID: 8, Name: "web", Events: []string{"pull_request", "push"}, Config: map[string]any{"url": "https://kevents.example.com/push"}},
	}
	// The first create fails (with an answer echoing secrets); the next check retries it.
	f.failCreate = 1
	f.failMsg = fmt.Sprintf(`{"message":"Validation Failed for secret %s with token %s"}`, ghSecret, ghAPIToken)

	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret, "github/token": ghAPIToken})))
	logs := ghCaptureLog(h)
	stop := ghStart(t, h, parseEventSources(t, ghYAML("gh", "push", ghHookFields(port, f.srv.URL, `      repositories:
        - owner: argoproj
          names: [argo-events, argo-workflows]
      deleteHookOnFinish: true
      apiToken:
        name: github
        key: token
`))))

	ghEventually(t, "the hook on argo-workflows", func() bool {
		created, _, _ := f.state()
		return len(created) == 1
	})
	created, _, _ := f.state()
	if created[0].Path != "/api/v3/repos/argoproj/argo-workflows/hooks" {
		t.Errorf("hook created on %s, want argo-workflows only (argo-events has one)", created[0].Path)
	}
	hk := created[0].Hook
	if hk.Name != "web" || !hk.Active || !reflect.DeepEqual(hk.Events, []string{"push", "pull_request"}) {
		t.Errorf("hook %+v: want name web, active, events [push pull_request]", hk)
	}
	wantConfig := map[string]any{"url": "https://kevents.example.com/push", "content_type": "json", "insecure_ssl": "0", "secret": ghSecret}
	if !reflect.DeepEqual(hk.Config, wantConfig) {
		t.Errorf("hook config %v, want %v", hk.Config, wantConfig)
	}

	// The endpoint receives meanwhile.
	body := []byte(`{"ref":"refs/heads/main"}`)
	if resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders("push", "d1", body, ghSecret)); resp.status != http.StatusOK {
		t.Errorf("delivery: %d %q", resp.status, resp.body)
	}
	// A few more checks find both hooks and create nothing.
	time.Sleep(350 * time.Millisecond)
	stop()
	created, deleted, hooks := f.state()
	if len(created) != 1 {
		t.Errorf("%d hooks created, want 1", len(created))
	}
	wantDeleted := []string{"/api/v3/repos/argoproj/argo-events/hooks/8", "/api/v3/repos/argoproj/argo-workflows/hooks/101"}
	if !reflect.DeepEqual(deleted, wantDeleted) {
		t.Errorf("deleted %v, want %v", deleted, wantDeleted)
	}
	if got := hooks["/api/v3/repos/argoproj/argo-events/hooks"]; len(got) != 1 || got[0].ID != 7 {
		t.Errorf("argo-events hooks left %+v, want only the unrelated hook 7", got)
	}
	if f.badAuth != 0 {
		t.Errorf("%d requests without the API token", f.badAuth)
	}
	out := logs.String()
	if !strings.Contains(out, "Validation Failed") || !strings.Contains(out, "[redacted]") {
		t.Errorf("the create failure is not logged (redacted):\n%s", out)
	}
	for _, s := range []string{ghSecret, ghAPIToken} {
		if strings.Contains(out, s) {
			t.Errorf("a secret appears in the log:\n%s", out)
		}
	}
	if ghRecordHolds(h.records("kevents.src.default.gh", 1)[0], ghAPIToken) {
		t.Error("the API token appears in the record")
	}
}

func TestGithubHooksOrganizationsKept(t *testing.T) {
	ghFastHooks(t)
	f := newGHFakeAPI(t, "token "+ghAPIToken)
	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret, "github/token": ghAPIToken})))
	stop := ghStart(t, h, parseEventSources(t, ghYAML("gh", "push", ghHookFields(port, f.srv.URL, `      organizations: [argoproj, kevents]
      insecure: true
      apiToken:
        name: github
        key: token
`))))
	ghEventually(t, "the organization hooks", func() bool {
		created, _, _ := f.state()
		return len(created) == 2
	})
	// Someone deletes a hook: the next check recreates it.
	f.mu.Lock()
	f.hooks["/api/v3/orgs/kevents/hooks"] = nil
	f.mu.Unlock()
	ghEventually(t, "the deleted hook to come back", func() bool {
		created, _, _ := f.state()
		return len(created) == 3
	})
	stop()
	created, deleted, _ := f.state()
	var paths []string
	for _, c := range created {
		paths = append(paths, c.Path)
		if c.Hook.Config["insecure_ssl"] != "1" {
			t.Errorf("insecure: true gave insecure_ssl %v", c.Hook.Config["insecure_ssl"])
		}
	}
	want := []string{"/api/v3/orgs/argoproj/hooks", "/api/v3/orgs/kevents/hooks", "/api/v3/orgs/kevents/hooks"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("created %v, want %v", paths, want)
	}
	if len(deleted) != 0 {
		t.Errorf("deleted %v without deleteHookOnFinish", deleted)
	}
}

func TestGithubHooksWithApp(t *testing.T) {
	ghFastHooks(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	const instToken = "ghs_INSTALLATION-token-xyz"
	f := newGHFakeAPI(t, "token "+instToken)
	f.appKey, f.appID, f.appInstall, f.appToken = &key.PublicKey, "4242", "777", instToken

	port := freePort(t)
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret, "github-app/pem": pemKey})))
	logs := ghCaptureLog(h)
	stop := ghStart(t, h, parseEventSources(t, ghYAML("gh", "push", ghHookFields(port, f.srv.URL, `      repositories:
        - owner: kevents
          names: [kevents]
      deleteHookOnFinish: true
      githubApp:
        appID: 4242
        installationID: 777
        privateKey:
          name: github-app
          key: pem
`))))
	ghEventually(t, "the hook created as the App", func() bool {
		created, _, _ := f.state()
		return len(created) == 1
	})
	time.Sleep(250 * time.Millisecond)
	stop()
	_, deleted, _ := f.state()
	if !reflect.DeepEqual(deleted, []string{"/api/v3/repos/kevents/kevents/hooks/101"}) {
		t.Errorf("deleted %v", deleted)
	}
	if f.tokensIssue != 1 {
		t.Errorf("%d installation tokens requested, want 1 (cached until it expires)", f.tokensIssue)
	}
	if f.badAuth != 0 {
		t.Errorf("%d requests without the installation token", f.badAuth)
	}
	if strings.Contains(logs.String(), instToken) || strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Errorf("a credential appears in the log:\n%s", logs.String())
	}
}

func TestGithubHooksNotWithoutURL(t *testing.T) {
	// apiToken without webhook.url: Argo creates no hook and neither does kevents; the token
	// is not even read.
	port := freePort(t)
	h := newHarness(t, []string{"gh"})
	h.run(parseEventSources(t, ghYAML("gh", "push", ghFields(port, "      events: [push]\n      apiToken:\n        name: missing\n        key: token\n"))))
	body := []byte(`{"a":1}`)
	if resp := do(t, http.MethodPost, url(port, "/push"), body, ghHeaders("push", "x", body, "")); resp.status != http.StatusOK {
		t.Errorf("delivery: %d %q", resp.status, resp.body)
	}
}

func TestGithubAppKeyErrors(t *testing.T) {
	port := freePort(t)
	const notAKey = "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----\n"
	h := newHarness(t, []string{"gh"}, withSecrets(mapSecrets(map[string]string{"github/secret": ghSecret, "github-app/pem": notAKey})))
	_, err := Run(context.Background(), h.env, parseEventSources(t, ghYAML("gh", "push", ghHookFields(port, "https://ghe.example.com", `      organizations: [o]
      githubApp:
        appID: 1
        installationID: 2
        privateKey:
          name: github-app
          key: pem
`))))
	if err == nil || !strings.Contains(err.Error(), "githubApp.privateKey") {
		t.Fatalf("Run with a broken App key: %v, want an error naming githubApp.privateKey", err)
	}
	if strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("the error quotes the key: %v", err)
	}
}
