package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

const (
	glSecretToken = "gl-SECRET-token-9876543210"
	glAccessToken = "glpat-ACCESS-token-abcdef"
)

func glYAML(name, event string, fields string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  gitlab:
    %s:
%s`, name, event, strings.TrimRight(fields, "\n")+"\n")
}

// glFields are the fields Argo requires, without webhook.url (so no hooks are created), with
// extra appended.
func glFields(port int, extra string) string {
	return fmt.Sprintf(`      webhook:
        port: "%d"
        endpoint: /gitlab
        method: POST
      gitlabBaseURL: https://gitlab.example.com
      accessToken:
        name: gitlab
        key: access
`, port) + extra
}

const glSecretField = `      secretToken:
        name: gitlab
        key: secret
`

func glHeaders(event, key, token string) map[string]string {
	h := map[string]string{
		"Content-Type":          "application/json",
		"User-Agent":            "GitLab/17.5.0",
		"X-Gitlab-Instance":     "https://gitlab.example.com",
		"X-Gitlab-Event-UUID":   "b2c1fa3a-9e5f-4e52-8f3a-1d2f3b4c5d6e",
		"X-Gitlab-Webhook-UUID": "0f4c4a4e-5b1a-4f5e-9d3c-2b1a0f9e8d7c",
	}
	if event != "" {
		h["X-Gitlab-Event"] = event
	}
	if key != "" {
		h["Idempotency-Key"] = key
	}
	if token != "" {
		h["X-Gitlab-Token"] = token
	}
	return h
}

func TestGitlabPublishesCloudEvent(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gl"}, withSecrets(mapSecrets(map[string]string{"gitlab/secret": glSecretToken})))
	h.run(parseEventSources(t, glYAML("gl", "push", glFields(port, glSecretField+`      events: [PushEvents]
      metadata:
        team: platform
`))))
	topic := "kevents.src.default.gl"

	body := []byte(`{"object_kind":"push","ref":"refs/heads/main","project_id":15,"big":98765432109876543210,"project":{"path_with_namespace":"group/project"}}`)
	before := time.Now().Add(-time.Second)
	resp := do(t, http.MethodPost, url(port, "/gitlab"), body, glHeaders("Push Hook", "9b6e7d5c-2f1a-4b3c-8d9e-0a1b2c3d4e5f", glSecretToken))
	if resp.status != http.StatusOK || strings.TrimSpace(resp.body) != "success" {
		t.Fatalf("POST: %d %q, want 200 success", resp.status, resp.body)
	}
	r := h.records(topic, 1)[0]
	e := decode(t, r)
	if e.ID() != "9b6e7d5c-2f1a-4b3c-8d9e-0a1b2c3d4e5f" {
		t.Errorf("id %q, want the Idempotency-Key", e.ID())
	}
	if e.Source() != "gl" || e.Subject() != "push" || e.Type() != "gitlab" {
		t.Errorf("source %q subject %q type %q, want gl push gitlab", e.Source(), e.Subject(), e.Type())
	}
	if e.Time().Before(before) || e.Time().After(time.Now().Add(time.Second)) {
		t.Errorf("time %v, want about now", e.Time())
	}
	if e.DataContentType() != "application/json" {
		t.Errorf("datacontenttype %q", e.DataContentType())
	}
	var raw struct {
		Body json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(e.Data(), &raw); err != nil {
		t.Fatal(err)
	}
	// Argo's GitLabEventData: the body as sent.
	if !jsonEqual(t, raw.Body, body) || !strings.Contains(string(raw.Body), "98765432109876543210") {
		t.Errorf("body %s, want %s", raw.Body, body)
	}
	d, fields := ghDecodeData(t, e.Data())
	for k := range fields {
		switch k {
		case "headers", "body", "metadata":
		default:
			t.Errorf("unexpected field %q in event data (Argo's GitLabEventData has headers, body, metadata)", k)
		}
	}
	if got := d.Headers["X-Gitlab-Event"]; !reflect.DeepEqual(got, []string{"Push Hook"}) {
		t.Errorf("headers X-Gitlab-Event %q, want [Push Hook]", got)
	}
	if got := d.Headers["X-Gitlab-Instance"]; !reflect.DeepEqual(got, []string{"https://gitlab.example.com"}) {
		t.Errorf("headers X-Gitlab-Instance %q", got)
	}
	if _, ok := d.Headers["X-Gitlab-Token"]; ok {
		t.Error("the event carries X-Gitlab-Token")
	}
	if !reflect.DeepEqual(d.Metadata, map[string]string{"team": "platform"}) {
		t.Errorf("metadata %v", d.Metadata)
	}
	if ghRecordHolds(r, glSecretToken) {
		t.Error("the secret token appears in the record")
	}
	for fam, want := range map[string]float64{
		"kevents_source_events_received_total":  1,
		"kevents_source_events_published_total": 1,
		"kevents_source_publish_failures_total": 0,
	} {
		if got := h.counter(fam, "gl", "push"); got != want {
			t.Errorf("%s %v, want %v", fam, got, want)
		}
	}
}

func TestGitlabSecretToken(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gl"}, withSecrets(mapSecrets(map[string]string{"gitlab/secret": glSecretToken})))
	h.run(parseEventSources(t, glYAML("gl", "push", glFields(port, glSecretField+"      events: [PushEvents]\n"))))
	topic := "kevents.src.default.gl"
	body := []byte(`{"object_kind":"push"}`)
	for _, c := range []struct {
		token  string
		status int
	}{
		{"", http.StatusUnauthorized},
		{"wrong", http.StatusForbidden},
		{glSecretToken + "x", http.StatusForbidden},
		{glSecretToken[:len(glSecretToken)-1], http.StatusForbidden},
		{strings.ToUpper(glSecretToken), http.StatusForbidden},
	} {
		resp := do(t, http.MethodPost, url(port, "/gitlab"), body, glHeaders("Push Hook", "", c.token))
		if resp.status != c.status {
			t.Errorf("X-Gitlab-Token %q: %d %q, want %d", c.token, resp.status, resp.body, c.status)
		}
		if strings.Contains(resp.body, glSecretToken) {
			t.Errorf("X-Gitlab-Token %q: the answer contains the secret token", c.token)
		}
	}
	if n := h.endOffset(topic); n != 0 {
		t.Fatalf("refused deliveries produced %d records", n)
	}
	if resp := do(t, http.MethodPost, url(port, "/gitlab"), body, glHeaders("Push Hook", "", glSecretToken)); resp.status != http.StatusOK {
		t.Fatalf("right token: %d %q", resp.status, resp.body)
	}
	e := decode(t, h.records(topic, 1)[0])
	if e.ID() == "" {
		t.Error("empty id without Idempotency-Key")
	}
}

func TestGitlabNoSecretToken(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gl"})
	h.run(parseEventSources(t, glYAML("gl", "push", glFields(port, "      events: [PushEvents]\n"))))
	body := []byte(`{"object_kind":"push"}`)
	if resp := do(t, http.MethodPost, url(port, "/gitlab"), body, glHeaders("Push Hook", "k1", "")); resp.status != http.StatusOK {
		t.Fatalf("no secretToken configured: %d %q, want 200", resp.status, resp.body)
	}
	h.records("kevents.src.default.gl", 1)
}

func TestGitlabEventsFilter(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gl"})
	h.run(parseEventSources(t, glYAML("gl", "mr", glFields(port, "      events: [MergeRequestsEvents, ConfidentialIssuesEvents, TagPushEvents]\n"))))
	topic := "kevents.src.default.gl"
	body := []byte(`{"object_kind":"merge_request"}`)
	for _, ev := range []string{"Push Hook", "Issue Hook", "System Hook", "merge request hook", "MergeRequestsEvents", ""} {
		resp := do(t, http.MethodPost, url(port, "/gitlab"), body, glHeaders(ev, "", ""))
		if resp.status != http.StatusOK || !strings.HasPrefix(resp.body, "ignored") {
			t.Errorf("X-Gitlab-Event %q: %d %q, want 200 ignored", ev, resp.status, resp.body)
		}
	}
	if n := h.endOffset(topic); n != 0 {
		t.Fatalf("events not listed produced %d records", n)
	}
	want := []string{"Merge Request Hook", "Confidential Issue Hook", "Tag Push Hook"}
	for i, ev := range want {
		if resp := do(t, http.MethodPost, url(port, "/gitlab"), body, glHeaders(ev, "k"+strconv.Itoa(i), "")); resp.status != http.StatusOK {
			t.Errorf("%s: %d %q, want 200", ev, resp.status, resp.body)
		}
	}
	for i, r := range h.records(topic, len(want)) {
		d, _ := ghDecodeData(t, decode(t, r).Data())
		if got := d.Headers["X-Gitlab-Event"]; !reflect.DeepEqual(got, []string{want[i]}) {
			t.Errorf("record %d: X-Gitlab-Event %q, want %q", i, got, want[i])
		}
	}
}

func TestGitlabRefusals(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gl"})
	h.run(parseEventSources(t, glYAML("gl", "push", strings.Replace(glFields(port, "      events: [PushEvents]\n"), "method: POST", "method: POST\n        maxPayloadSize: 100", 1))))
	for name, b := range map[string]string{"not JSON": `object_kind=push`, "empty": ``, "truncated": `{"a":`} {
		if resp := do(t, http.MethodPost, url(port, "/gitlab"), []byte(b), glHeaders("Push Hook", "", "")); resp.status != http.StatusBadRequest {
			t.Errorf("%s body: %d %q, want 400", name, resp.status, resp.body)
		}
	}
	big := []byte(`{"a":"` + strings.Repeat("x", 200) + `"}`)
	if resp := do(t, http.MethodPost, url(port, "/gitlab"), big, glHeaders("Push Hook", "", "")); resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("body over maxPayloadSize: %d, want 413", resp.status)
	}
	if resp := do(t, http.MethodPut, url(port, "/gitlab"), []byte(`{}`), glHeaders("Push Hook", "", "")); resp.status != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", resp.status)
	}
	if n := h.endOffset("kevents.src.default.gl"); n != 0 {
		t.Errorf("refused requests produced %d records", n)
	}
}

func TestGitlabKafkaUnreachable(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"gl"}, withPublishTimeout(time.Second), withDeadBroker())
	h.run(parseEventSources(t, glYAML("gl", "push", glFields(port, "      events: [PushEvents]\n"))))
	resp, err := doWith(&http.Client{Timeout: 4 * time.Second}, http.MethodPost, url(port, "/gitlab"), []byte(`{"object_kind":"push"}`), glHeaders("Push Hook", "retry", ""))
	if err != nil {
		t.Fatalf("no answer within 4 s with a 1 s PublishTimeout: %v", err)
	}
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("Kafka down: %d %q, want 503", resp.status, resp.body)
	}
	if got := h.counter("kevents_source_publish_failures_total", "gl", "push"); got != 1 {
		t.Errorf("publish failures %v, want 1", got)
	}
}

func TestGitlabSecretUnresolved(t *testing.T) {
	h := newHarness(t, []string{"gl"})
	_, err := Run(context.Background(), h.env, parseEventSources(t, glYAML("gl", "push", glFields(freePort(t), glSecretField+"      events: [PushEvents]\n"))))
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "secretToken") {
		t.Fatalf("Run: %v, want an error naming secretToken and wrapping secrets.ErrNotFound", err)
	}
}

func TestCheckGitlab(t *testing.T) {
	base := glFields(12000, "")
	cases := []struct {
		name, fields string
		want         []string
		notSupported bool
	}{
		{"valid", base + "      events: [PushEvents]\n      projects: [\"1\", group/project]\n", nil, false},
		{"no events", base, []string{"events: empty"}, false},
		{"unknown event", base + "      events: [PushEvents, push]\n", []string{`events[1]: "push"; expected one of`, "MergeRequestsEvents"}, false},
		{"no base URL", strings.Replace(base, "      gitlabBaseURL: https://gitlab.example.com\n", "", 1) + "      events: [PushEvents]\n", []string{"gitlabBaseURL: missing"}, false},
		{"bad base URL", strings.Replace(base, "https://gitlab.example.com", "gitlab", 1) + "      events: [PushEvents]\n", []string{`gitlabBaseURL: "gitlab"`}, false},
		{"no access token", strings.Replace(base, "      accessToken:\n        name: gitlab\n        key: access\n", "", 1) + "      events: [PushEvents]\n", []string{"accessToken: missing"}, false},
		{"no webhook", "      gitlabBaseURL: https://gitlab.example.com\n      accessToken:\n        name: a\n        key: b\n      events: [PushEvents]\n", []string{"webhook: missing"}, false},
		{"bad port", strings.Replace(base, `"12000"`, `"0"`, 1) + "      events: [PushEvents]\n", []string{`webhook.port: "0"`}, false},
		{"secret token without key", base + "      events: [PushEvents]\n      secretToken:\n        name: x\n", []string{"secretToken: expected both name and key"}, false},
		{"empty project", base + "      events: [PushEvents]\n      projects: [\"\"]\n", []string{"projects[0]: empty"}, false},
		{"filter", base + "      events: [PushEvents]\n      filter:\n        expression: body.object_kind == \"push\"\n", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, glYAML("gl", "ev", c.fields))[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			if !strings.Contains(err.Error(), "spec.gitlab.ev") {
				t.Errorf("error %q does not name spec.gitlab.ev", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != c.notSupported {
				t.Errorf("errors.Is(ErrNotSupported) = %v, want %v", got, c.notSupported)
			}
		})
	}
	if e, err := types.Lookup("gitlab"); err != nil || e.Spec.Summary == "" {
		t.Errorf("gitlab is not registered with a summary: %v", err)
	}
}

// --- hook management against a fake GitLab API --------------------------------------------

type glCreated struct {
	Path string
	Hook map[string]any
}

// glFakeAPI stands in for the GitLab REST API under /api/v4/.
type glFakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	hooks   map[string][]gitlabHook // escaped collection path → hooks
	created []glCreated
	deleted []string
	nextID  int64
	badAuth int
}

func newGLFakeAPI(t *testing.T) *glFakeAPI {
	f := &glFakeAPI{t: t, hooks: map[string][]gitlabHook{}, nextID: 200}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *glFakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.EscapedPath()
	if r.Header.Get("PRIVATE-TOKEN") != glAccessToken {
		f.badAuth++
		http.Error(w, `{"message":"401 Unauthorized"}`, http.StatusUnauthorized)
		return
	}
	switch {
	case strings.HasSuffix(p, "/hooks") && r.Method == http.MethodGet:
		hooks := f.hooks[p]
		if r.URL.Query().Get("page") != "1" {
			hooks = nil
		}
		_ = json.NewEncoder(w).Encode(append([]gitlabHook{}, hooks...))
	case strings.HasSuffix(p, "/hooks") && r.Method == http.MethodPost:
		var hk map[string]any
		if err := json.NewDecoder(r.Body).Decode(&hk); err != nil {
			f.t.Errorf("create hook body: %v", err)
		}
		f.created = append(f.created, glCreated{Path: p, Hook: hk})
		f.nextID++
		u, _ := hk["url"].(string)
		f.hooks[p] = append(f.hooks[p], gitlabHook{ID: f.nextID, URL: u})
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"id": f.nextID, "url": u, "push_events": hk["push_events"]})
	case r.Method == http.MethodDelete:
		i := strings.LastIndex(p, "/")
		coll, id := p[:i], p[i+1:]
		for j, hk := range f.hooks[coll] {
			if strconv.FormatInt(hk.ID, 10) == id {
				f.hooks[coll] = append(f.hooks[coll][:j:j], f.hooks[coll][j+1:]...)
				f.deleted = append(f.deleted, p)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		http.Error(w, `{"message":"404 Not found"}`, http.StatusNotFound)
	default:
		f.t.Errorf("unexpected request %s %s", r.Method, p)
		http.Error(w, `{"message":"404 Not found"}`, http.StatusNotFound)
	}
}

func (f *glFakeAPI) state() ([]glCreated, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]glCreated{}, f.created...), append([]string{}, f.deleted...)
}

func TestGitlabHooks(t *testing.T) {
	ghFastHooks(t)
	f := newGLFakeAPI(t)
	// The group already has a hook with this URL: reused.
	f.hooks["/api/v4/groups/platform/hooks"] = []gitlabHook{{ID: 5, URL: "https://other.example.com/x"}, {ID: 6, URL: "https://kevents.example.com/gitlab"}}

	port := freePort(t)
	h := newHarness(t, []string{"gl"}, withSecrets(mapSecrets(map[string]string{"gitlab/access": glAccessToken, "gitlab/secret": glSecretToken})))
	logs := ghCaptureLog(h)
	stop := ghStart(t, h, parseEventSources(t, glYAML("gl", "push", fmt.Sprintf(`      webhook:
        port: "%d"
        endpoint: /gitlab
        method: POST
        url: https://kevents.example.com
      gitlabBaseURL: %s
      accessToken:
        name: gitlab
        key: access
      secretToken:
        name: gitlab
        key: secret
      events: [PushEvents, MergeRequestsEvents]
      enableSSLVerification: true
      projects: ["42", group/sub/project]
      groups: [platform]
      deleteHookOnFinish: true
`, port, f.srv.URL))))

	ghEventually(t, "the project hooks", func() bool {
		created, _ := f.state()
		return len(created) == 2
	})
	body := []byte(`{"object_kind":"push"}`)
	if resp := do(t, http.MethodPost, url(port, "/gitlab"), body, glHeaders("Push Hook", "k", glSecretToken)); resp.status != http.StatusOK {
		t.Errorf("delivery: %d %q", resp.status, resp.body)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	created, deleted := f.state()
	var paths []string
	for _, c := range created {
		paths = append(paths, c.Path)
	}
	// Projects are one escaped path segment, as go-gitlab sends them.
	if want := []string{"/api/v4/projects/42/hooks", "/api/v4/projects/group%2Fsub%2Fproject/hooks"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("created on %v, want %v", paths, want)
	}
	hk := created[0].Hook
	if hk["url"] != "https://kevents.example.com/gitlab" || hk["token"] != glSecretToken || hk["enable_ssl_verification"] != true {
		t.Errorf("hook %v: want url, token and enable_ssl_verification", hk)
	}
	var on, off []string
	for k, v := range hk {
		if strings.HasSuffix(k, "_events") {
			if v == true {
				on = append(on, k)
			} else {
				off = append(off, k)
			}
		}
	}
	sort.Strings(on)
	if !reflect.DeepEqual(on, []string{"merge_requests_events", "push_events"}) {
		t.Errorf("events on %v, want merge_requests_events and push_events", on)
	}
	if len(off) != len(gitlabEvents)-2 {
		t.Errorf("events explicitly off %v, want every other one", off)
	}
	sort.Strings(deleted)
	want := []string{"/api/v4/groups/platform/hooks/6", "/api/v4/projects/42/hooks/201", "/api/v4/projects/group%2Fsub%2Fproject/hooks/202"}
	if !reflect.DeepEqual(deleted, want) {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
	if f.badAuth != 0 {
		t.Errorf("%d requests without the access token", f.badAuth)
	}
	for _, s := range []string{glAccessToken, glSecretToken} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("a secret appears in the log:\n%s", logs.String())
		}
	}
	r := h.records("kevents.src.default.gl", 1)[0]
	for _, s := range []string{glAccessToken, glSecretToken} {
		if ghRecordHolds(r, s) {
			t.Error("a secret appears in the record")
		}
	}
}

func TestGitlabAPIBase(t *testing.T) {
	for in, want := range map[string]string{
		"https://gitlab.com":         "https://gitlab.com/api/v4/",
		"https://gitlab.com/":        "https://gitlab.com/api/v4/",
		"https://gitlab.com/api/v4":  "https://gitlab.com/api/v4/",
		"https://gitlab.com/api/v4/": "https://gitlab.com/api/v4/",
		"https://example.com/gitlab": "https://example.com/gitlab/api/v4/",
	} {
		if got := gitlabAPIBase(in); got != want {
			t.Errorf("gitlabAPIBase(%q) = %q, want %q", in, got, want)
		}
	}
}
