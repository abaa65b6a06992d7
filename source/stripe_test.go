package source

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
)

const (
	stripeSecret = "whsec_SIGNING-secret-0123456789"
	stripeKey    = "sk_test_API-key-abcdefghijklmnop"
)

// stripeSign is a Stripe-Signature header for body at time at.
func stripeSign(secret string, at time.Time, body []byte) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil)) + ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
}

func stripeYAML(fields string) string {
	return `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: st
spec:
  stripe:
` + fields
}

func TestStripeDeliveries(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"st"}, withSecrets(mapSecrets(map[string]string{"stripe/signing": stripeSecret})))
	logs := ghCaptureLog(h)
	ghStart(t, h, parseEventSources(t, stripeYAML(fmt.Sprintf(`    pay:
      webhook: {port: "%d", endpoint: /stripe, method: POST, maxPayloadSize: 512}
      eventFilter: [charge.succeeded]
      metadata: {team: billing}
      kevents:
        signingSecret: {name: stripe, key: signing}
`, port))))
	u := url(port, "/stripe")
	body := []byte(`{"id":"evt_1","object":"event","type":"charge.succeeded","data":{"object":{"id":"ch_1","amount":100}}}`)
	now := time.Now()
	for _, c := range []struct {
		name, sig string
		status    int
	}{
		{"unsigned", "", http.StatusUnauthorized},
		{"unreadable", "v1=zz", http.StatusUnauthorized},
		{"stale", stripeSign(stripeSecret, now.Add(-10*time.Minute), body), http.StatusUnauthorized},
		{"wrong secret", stripeSign("whsec_other", now, body), http.StatusForbidden},
	} {
		if resp := do(t, http.MethodPost, u, body, map[string]string{"Stripe-Signature": c.sig}); resp.status != c.status {
			t.Errorf("%s: %d %q, want %d", c.name, resp.status, resp.body, c.status)
		}
	}
	if resp := do(t, http.MethodPost, u, body, map[string]string{"Stripe-Signature": stripeSign(stripeSecret, now, body)}); resp.status != http.StatusOK {
		t.Fatalf("signed delivery: %d %q", resp.status, resp.body)
	}
	other := []byte(`{"id":"evt_2","type":"customer.created"}`)
	if resp := do(t, http.MethodPost, u, other, map[string]string{"Stripe-Signature": stripeSign(stripeSecret, now, other)}); resp.status != http.StatusOK || !strings.Contains(resp.body, "ignored") {
		t.Errorf("event outside eventFilter: %d %q, want 200 ignored", resp.status, resp.body)
	}
	for name, b := range map[string][]byte{"malformed JSON": []byte(`{"id":`), "no type": []byte(`{"id":"evt_3"}`)} {
		if resp := do(t, http.MethodPost, u, b, map[string]string{"Stripe-Signature": stripeSign(stripeSecret, now, b)}); resp.status != http.StatusBadRequest {
			t.Errorf("%s: %d %q, want 400 as Argo", name, resp.status, resp.body)
		}
	}
	big := []byte(`{"type":"charge.succeeded","x":"` + strings.Repeat("a", 600) + `"}`)
	if resp := do(t, http.MethodPost, u, big, map[string]string{"Stripe-Signature": stripeSign(stripeSecret, now, big)}); resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized: %d %q, want 413", resp.status, resp.body)
	}
	e := decode(t, h.records("kevents.src.default.st", 1)[0])
	var d struct {
		Event    json.RawMessage   `json:"event"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(e.Data(), &d); err != nil {
		t.Fatal(err)
	}
	if e.ID() != "evt_1" || e.Type() != "stripe" || string(d.Event) != string(body) || d.Metadata["team"] != "billing" {
		t.Errorf("event id %q type %q data %s: want the Stripe event id and Argo's {event, metadata}", e.ID(), e.Type(), e.Data())
	}
	if strings.Contains(logs.String(), stripeSecret) {
		t.Error("the signing secret appears in the log")
	}
}

// stripeFakeAPI stands in for the Stripe API under /v1/.
type stripeFakeAPI struct {
	srv *httptest.Server

	mu        sync.Mutex
	endpoints []stripeEndpoint
	calls     []string // method, path and form of every call but GETs
	badAuth   int
}

func newStripeFakeAPI(t *testing.T) *stripeFakeAPI {
	f := &stripeFakeAPI{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	t.Setenv(StripeAPIURLEnv, f.srv.URL)
	return f
}

func (f *stripeFakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+stripeKey {
		f.badAuth++
		http.Error(w, `{"error":{"message":"Invalid API Key"}}`, http.StatusUnauthorized)
		return
	}
	events := func(form neturl.Values) []string {
		var out []string
		for i := 0; form.Has("enabled_events[" + strconv.Itoa(i) + "]"); i++ {
			out = append(out, form.Get("enabled_events["+strconv.Itoa(i)+"]"))
		}
		return out
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/webhook_endpoints":
		// One endpoint per page: the source follows starting_after.
		i := 0
		if after := r.URL.Query().Get("starting_after"); after != "" {
			for j, ep := range f.endpoints {
				if ep.ID == after {
					i = j + 1
				}
			}
		}
		page := f.endpoints[min(i, len(f.endpoints)):min(i+1, len(f.endpoints))]
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": page, "has_more": i+1 < len(f.endpoints)})
	case r.Method == http.MethodPost:
		if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			http.Error(w, "form expected", http.StatusBadRequest)
			return
		}
		_ = r.ParseForm()
		f.calls = append(f.calls, r.URL.Path+" "+r.PostForm.Encode())
		if r.URL.Path == "/v1/webhook_endpoints" {
			ep := stripeEndpoint{ID: fmt.Sprintf("we_%d", len(f.endpoints)+1), URL: r.PostForm.Get("url"), EnabledEvents: events(r.PostForm)}
			f.endpoints = append(f.endpoints, ep)
			_ = json.NewEncoder(w).Encode(map[string]any{"id": ep.ID, "url": ep.URL, "enabled_events": ep.EnabledEvents, "secret": "whsec_created"})
			return
		}
		for i, ep := range f.endpoints {
			if "/v1/webhook_endpoints/"+ep.ID == r.URL.Path {
				f.endpoints[i].EnabledEvents = events(r.PostForm)
				_ = json.NewEncoder(w).Encode(f.endpoints[i])
				return
			}
		}
		http.NotFound(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *stripeFakeAPI) state() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.calls...)
}

// TestStripeCreateWebhook: an endpoint with the URL but other events is updated, a missing one
// created (every event without eventFilter), and the checks that follow change nothing.
func TestStripeCreateWebhook(t *testing.T) {
	ghFastHooks(t)
	f := newStripeFakeAPI(t)
	f.endpoints = []stripeEndpoint{
		{ID: "we_1", URL: "https://other.example.com/x", EnabledEvents: []string{"*"}},
		{ID: "we_2", URL: "https://kevents.example.com/a", EnabledEvents: []string{"charge.failed"}},
	}
	h := newHarness(t, []string{"st"}, withSecrets(mapSecrets(map[string]string{"stripe/key": stripeKey})))
	logs := ghCaptureLog(h)
	stop := ghStart(t, h, parseEventSources(t, stripeYAML(fmt.Sprintf(`    a:
      webhook: {port: "%d", endpoint: /a, method: POST, url: https://kevents.example.com}
      createWebhook: true
      apiKey: {name: stripe, key: key}
      eventFilter: [charge.succeeded, charge.refunded]
    b:
      webhook: {port: "%d", endpoint: /b, method: POST, url: https://kevents.example.com}
      createWebhook: true
      apiKey: {name: stripe, key: key}
`, freePort(t), freePort(t)))))
	ghEventually(t, "both endpoints", func() bool { return len(f.state()) == 2 })
	time.Sleep(300 * time.Millisecond) // resyncs: nothing more to do
	stop()
	calls := f.state()
	sort.Strings(calls)
	want := []string{
		"/v1/webhook_endpoints " + neturl.Values{"enabled_events[0]": {"*"}, "url": {"https://kevents.example.com/b"}}.Encode(),
		"/v1/webhook_endpoints/we_2 " + neturl.Values{"enabled_events[0]": {"charge.succeeded"}, "enabled_events[1]": {"charge.refunded"}}.Encode(),
	}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	if f.badAuth != 0 {
		t.Errorf("%d calls without the API key", f.badAuth)
	}
	if l := logs.String(); strings.Contains(l, stripeKey) || strings.Contains(l, "whsec_created") || !strings.Contains(l, "set kevents.signingSecret") {
		t.Errorf("want no secret in the log and a hint to set kevents.signingSecret:\n%s", l)
	}
}

func TestCheckStripe(t *testing.T) {
	webhook := "      webhook: {port: \"12000\", endpoint: /stripe, method: POST}\n"
	cases := []struct {
		name, fields string
		want         []string
	}{
		{"receiver", webhook, nil},
		{"signed", webhook + "      kevents: {signingSecret: {name: s, key: k}}\n", nil},
		{"create", strings.Replace(webhook, "POST", "POST, url: https://k.example.com", 1) + "      createWebhook: true\n      apiKey: {name: s, key: k}\n", nil},
		{"create without key or url", webhook + "      createWebhook: true\n", []string{"apiKey: missing", "webhook.url: missing"}},
		{"empty filter entry", webhook + "      eventFilter: ['']\n", []string{"eventFilter[0]: empty"}},
		{"secret without key", webhook + "      kevents: {signingSecret: {name: s}}\n", []string{"kevents.signingSecret: expected both name and key"}},
		{"no webhook", "      createWebhook: false\n", []string{"webhook: missing"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, stripeYAML("    ev:\n"+c.fields))[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range append(c.want, "spec.stripe.ev") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if errors.Is(err, api.ErrNotSupported) {
				t.Errorf("a mistake, not 'not supported yet': %v", err)
			}
		})
	}
}
