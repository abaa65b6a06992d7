package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
)

const (
	bbUser     = "bb-user"
	bbPassword = "bb-APP-password-0123456789"
	bbOAuth    = "bb-OAUTH-token-abcdefghijkl"
)

// bbFakeAPI stands in for the Bitbucket Cloud API under /2.0/.
type bbFakeAPI struct {
	srv *httptest.Server

	mu      sync.Mutex
	auth    func(*http.Request) bool
	hooks   map[string][]bitbucketHook // by hooks collection path
	calls   []string                   // every call but GETs
	created []bitbucketHook
	badAuth int
	nextID  int
}

func newBBFakeAPI(t *testing.T, auth func(*http.Request) bool) *bbFakeAPI {
	f := &bbFakeAPI{auth: auth, hooks: map[string][]bitbucketHook{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	t.Setenv(BitbucketAPIURLEnv, f.srv.URL+"/2.0")
	return f
}

func (f *bbFakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.auth(r) {
		f.badAuth++
		http.Error(w, `{"error":{"message":"unauthorized"}}`, http.StatusUnauthorized)
		return
	}
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/2.0/")
	if r.Method != http.MethodGet {
		f.calls = append(f.calls, r.Method+" "+p)
	}
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(p, "/hooks"):
		// Two pages: the first empty but for its next link, which the source follows.
		if r.URL.Query().Get("page") == "" {
			_ = json.NewEncoder(w).Encode(map[string]any{"values": []any{}, "next": f.srv.URL + "/2.0/" + p + "?page=2"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"values": f.hooks[p]})
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/hooks"):
		var hk bitbucketHook
		_ = json.NewDecoder(r.Body).Decode(&hk)
		f.nextID++
		hk.UUID = fmt.Sprintf("{%d}", f.nextID)
		f.created = append(f.created, hk)
		f.hooks[p] = append(f.hooks[p], hk)
		_ = json.NewEncoder(w).Encode(hk)
	case r.Method == http.MethodDelete:
		i := strings.LastIndexByte(p, '/')
		coll := p[:i]
		hooks := f.hooks[coll]
		for j, hk := range hooks {
			if "/"+strings.NewReplacer("{", "%7B", "}", "%7D").Replace(hk.UUID) == p[i:] {
				f.hooks[coll] = append(hooks[:j:j], hooks[j+1:]...)
			}
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func (f *bbFakeAPI) state() (calls []string, created []bitbucketHook) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.calls...), append([]bitbucketHook{}, f.created...)
}

func bbYAML(fields string) string {
	return `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: bb
spec:
  bitbucket:
    push:
` + fields
}

func TestBitbucketDeliveries(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"bb"})
	ghStart(t, h, parseEventSources(t, bbYAML(fmt.Sprintf(`      webhook: {port: "%d", endpoint: /bb, method: POST, maxPayloadSize: 100}
      repositories: [{owner: ws, repositorySlug: r1}]
      events: [repo:push]
      metadata: {team: scm}
`, port))))
	u := url(port, "/bb")
	hdr := func(key string) map[string]string {
		return map[string]string{"Content-Type": "application/json", "X-Event-Key": key, "X-Request-UUID": "b5b1a9c0-uuid"}
	}
	body := []byte(`{"push":{"changes":[]},"repository":{"full_name":"ws/r1"}}`)
	if resp := do(t, http.MethodPost, u, body, hdr("repo:push")); resp.status != http.StatusOK {
		t.Fatalf("delivery: %d %q", resp.status, resp.body)
	}
	if resp := do(t, http.MethodPost, u, body, hdr("pullrequest:created")); resp.status != http.StatusOK || !strings.Contains(resp.body, "ignored") {
		t.Errorf("unlisted event: %d %q, want 200 ignored", resp.status, resp.body)
	}
	if resp := do(t, http.MethodPost, u, []byte("push"), hdr("repo:push")); resp.status != http.StatusBadRequest {
		t.Errorf("malformed JSON: %d %q, want 400 as Argo", resp.status, resp.body)
	}
	if resp := do(t, http.MethodPost, u, []byte(`{"x":"`+strings.Repeat("a", 200)+`"}`), hdr("repo:push")); resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized: %d %q, want 413", resp.status, resp.body)
	}
	e := decode(t, h.records("kevents.src.default.bb", 1)[0])
	d, _ := ghDecodeData(t, e.Data())
	if e.ID() != "b5b1a9c0-uuid" || e.Type() != "bitbucket" || e.Subject() != "push" || d.Metadata["team"] != "scm" ||
		string(d.Body["repository"]) != `{"full_name":"ws/r1"}` || http.Header(d.Headers).Get("X-Event-Key") != "repo:push" {
		t.Errorf("event id %q type %q subject %q data %s: want Argo's {headers, body, metadata}", e.ID(), e.Type(), e.Subject(), e.Data())
	}
}

func TestBitbucketHooks(t *testing.T) {
	ghFastHooks(t)
	f := newBBFakeAPI(t, func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		return ok && u == bbUser && p == bbPassword
	})
	const hookURL = "https://kevents.example.com/bb"
	// r1 has the hook with other events: replaced, as Argo does.
	f.hooks["repositories/ws/r1/hooks"] = []bitbucketHook{{UUID: "{old}", URL: hookURL, Active: true, Events: []string{"repo:fork"}}}
	h := newHarness(t, []string{"bb"}, withSecrets(mapSecrets(map[string]string{"bb/user": bbUser, "bb/password": bbPassword})))
	logs := ghCaptureLog(h)
	stop := ghStart(t, h, parseEventSources(t, bbYAML(fmt.Sprintf(`      webhook: {port: "%d", endpoint: /bb, method: POST, url: https://kevents.example.com}
      repositories: [{owner: ws, repositorySlug: r1}, {owner: ws, repositorySlug: r2}]
      events: [repo:push, pullrequest:created]
      auth:
        basic:
          username: {name: bb, key: user}
          password: {name: bb, key: password}
      deleteHookOnFinish: true
`, freePort(t)))))
	ghEventually(t, "the hooks", func() bool { _, created := f.state(); return len(created) == 2 })
	time.Sleep(300 * time.Millisecond) // resyncs: nothing more to do
	stop()
	calls, created := f.state()
	want := []string{
		"DELETE repositories/ws/r1/hooks/%7Bold%7D", "POST repositories/ws/r1/hooks", "POST repositories/ws/r2/hooks",
		"DELETE repositories/ws/r1/hooks/%7B1%7D", "DELETE repositories/ws/r2/hooks/%7B2%7D",
	}
	if len(calls) != len(want) || !reflect.DeepEqual(calls[:3], want[:3]) {
		t.Errorf("calls %v, want %v (the deletions at the end in any order)", calls, want)
	}
	for _, hk := range created {
		if hk.URL != hookURL || !hk.Active || !reflect.DeepEqual(hk.Events, []string{"repo:push", "pullrequest:created"}) || hk.Description == "" {
			t.Errorf("created %+v: want the URL, active, the events and a description", hk)
		}
	}
	if f.badAuth != 0 {
		t.Errorf("%d calls without the credentials", f.badAuth)
	}
	if strings.Contains(logs.String(), bbPassword) {
		t.Errorf("the password appears in the log:\n%s", logs.String())
	}
}

func TestBitbucketHooksOAuth(t *testing.T) {
	ghFastHooks(t)
	f := newBBFakeAPI(t, func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+bbOAuth })
	h := newHarness(t, []string{"bb"}, withSecrets(mapSecrets(map[string]string{"bb/oauth": bbOAuth})))
	stop := ghStart(t, h, parseEventSources(t, bbYAML(fmt.Sprintf(`      webhook: {port: "%d", endpoint: /bb, method: POST, url: https://kevents.example.com}
      owner: ws
      repositorySlug: r1
      events: [repo:push]
      auth: {oauthToken: {name: bb, key: oauth}}
`, freePort(t)))))
	ghEventually(t, "the hook", func() bool { _, created := f.state(); return len(created) == 1 })
	stop()
	if calls, _ := f.state(); len(calls) != 1 || f.badAuth != 0 {
		t.Errorf("calls %v, %d without the token: want one create and no deletion (deleteHookOnFinish unset)", calls, f.badAuth)
	}
}

func TestCheckBitbucket(t *testing.T) {
	webhook := "      webhook: {port: \"12000\", endpoint: /push, method: POST}\n"
	repos := "      repositories: [{owner: o, repositorySlug: r}]\n"
	withURL := strings.Replace(webhook, "method: POST", "method: POST, url: https://k.example.com", 1)
	cases := []struct {
		name, fields string
		want         []string
		notSupported bool
	}{
		{"receiver", webhook + repos, nil, false},
		{"hooks", withURL + repos + "      events: [repo:push]\n      auth: {oauthToken: {name: a, key: b}}\n", nil, false},
		{"no repositories", webhook, []string{"repositories: empty"}, false},
		{"incomplete repository", webhook + "      repositories: [{owner: o}]\n", []string{"repositories[0].repositorySlug: missing"}, false},
		{"hooks without events", withURL + repos + "      auth: {oauthToken: {name: a, key: b}}\n", []string{"events: empty"}, false},
		{"half basic", webhook + repos + "      auth: {basic: {username: {name: a, key: b}}}\n", []string{"auth.basic: expected both username and password"}, false},
		{"both auths", webhook + repos + "      auth: {basic: {username: {name: a, key: b}, password: {name: a, key: c}}, oauthToken: {name: a, key: d}}\n", []string{"auth.basic, auth.oauthToken: both set"}, false},
		{"empty auth", webhook + repos + "      auth: {}\n", []string{"auth: empty"}, false},
		{"no webhook", repos, []string{"webhook: missing"}, false},
		{"filter", webhook + repos + "      filter: {expression: \"body.push != nil\"}\n", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, bbYAML(c.fields))[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range append(c.want, "spec.bitbucket.push") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != c.notSupported {
				t.Errorf("errors.Is(ErrNotSupported) = %v, want %v", got, c.notSupported)
			}
		})
	}
}
