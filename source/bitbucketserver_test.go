package source

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
)

const (
	bbsSecret = "bbs-WEBHOOK-s3cret-0123456789"
	bbsToken  = "bbs-ACCESS-token-abcdefghijkl"
)

// bbsCall is one call the fake Bitbucket Server API received.
type bbsCall struct {
	Method, Path string
	Body         map[string]any
}

// bbsFakeAPI stands in for the Bitbucket Server REST API under /rest/api/1.0/.
type bbsFakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	hooks   map[string][]bbsHook // by hooks collection path
	prs     map[string]string    // commit → pull request state
	calls   []bbsCall            // every call but GETs
	badAuth int
	nextID  int64
}

func newBBSFakeAPI(t *testing.T) *bbsFakeAPI {
	f := &bbsFakeAPI{t: t, hooks: map[string][]bbsHook{}, prs: map[string]string{}, nextID: 100}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *bbsFakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+bbsToken || r.Header.Get("X-Atlassian-Token") != "no-check" {
		f.badAuth++
		http.Error(w, `{"errors":[{"message":"unauthorized"}]}`, http.StatusUnauthorized)
		return
	}
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/rest/")
	page := func(values any, last bool, next int) {
		_ = json.NewEncoder(w).Encode(map[string]any{"values": values, "isLastPage": last, "nextPageStart": next})
	}
	var body map[string]any
	if r.Method != http.MethodGet {
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.calls = append(f.calls, bbsCall{r.Method, p, body})
	}
	switch {
	case r.Method == http.MethodGet && p == "api/1.0/projects/TEAM/repos":
		// Two pages: the source follows nextPageStart.
		repo := func(slug string) map[string]any {
			return map[string]any{"slug": slug, "project": map[string]any{"key": "TEAM"}}
		}
		if r.URL.Query().Get("start") == "0" {
			page([]any{repo("repo2")}, false, 1)
		} else {
			page([]any{repo("repo3")}, true, 0)
		}
	case strings.Contains(p, "/commits/"):
		commit := strings.Split(p, "/")[7]
		page([]map[string]string{{"state": f.prs[commit]}}, true, 0)
	case strings.HasSuffix(p, "/webhooks") && r.Method == http.MethodGet:
		page(f.hooks[p], true, 0)
	case strings.HasSuffix(p, "/webhooks") && r.Method == http.MethodPost:
		f.nextID++
		f.hooks[p] = append(f.hooks[p], bbsFakeHook(f.nextID, body))
		_ = json.NewEncoder(w).Encode(map[string]any{"id": f.nextID})
	case r.Method == http.MethodPut || r.Method == http.MethodDelete:
		i := strings.LastIndexByte(p, '/')
		coll, id := p[:i], p[i+1:]
		hooks := f.hooks[coll]
		for j, hk := range hooks {
			if fmt.Sprint(hk.ID) != id {
				continue
			}
			if r.Method == http.MethodPut {
				hooks[j] = bbsFakeHook(hk.ID, body)
			} else {
				f.hooks[coll] = append(hooks[:j:j], hooks[j+1:]...)
			}
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// bbsFakeHook is the hook a create or update body describes, as the server then lists it.
func bbsFakeHook(id int64, body map[string]any) bbsHook {
	raw, _ := json.Marshal(body)
	var hk bbsHook
	_ = json.Unmarshal(raw, &hk)
	hk.ID = id
	return hk
}

func (f *bbsFakeAPI) callsSoFar() []bbsCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bbsCall{}, f.calls...)
}

func bbsYAML(fields string) string {
	return `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: bbs
spec:
  bitbucketserver:
    push:
` + fields
}

func bbsHeaders(key, id string, body []byte, sig string) map[string]string {
	h := map[string]string{"Content-Type": "application/json", "X-Event-Key": key, "X-Request-Id": id}
	if sig != "" {
		h["X-Hub-Signature"] = sig
	}
	return h
}

func bbsSign(body []byte) string { return ghSign(sha256.New, "sha256", bbsSecret, body) }

// refsChangedBody is a repo:refs_changed delivery with a branch change whose commit has an open
// pull request (aaa), one whose pull request is merged (bbb) and a tag (ccc).
const refsChangedBody = `{"eventKey":"repo:refs_changed","date":"2024-01-02T15:04:05+0000","actor":{"name":"admin"},
"repository":{"slug":"repo1","project":{"key":"PROJ"}},
"changes":[{"ref":{"id":"refs/heads/a","type":"BRANCH"},"toHash":"aaa","type":"UPDATE"},
{"ref":{"id":"refs/heads/b","type":"BRANCH"},"toHash":"bbb","type":"UPDATE"},
{"ref":{"id":"refs/tags/c","type":"TAG"},"toHash":"ccc","type":"ADD"}]}`

func TestBitbucketServerDeliveries(t *testing.T) {
	f := newBBSFakeAPI(t)
	f.prs["aaa"], f.prs["bbb"] = "OPEN", "MERGED"
	port := freePort(t)
	h := newHarness(t, []string{"bbs"}, withSecrets(mapSecrets(map[string]string{"bbs/secret": bbsSecret, "bbs/token": bbsToken})))
	logs := ghCaptureLog(h)
	ghStart(t, h, parseEventSources(t, bbsYAML(fmt.Sprintf(`      webhook:
        port: "%d"
        endpoint: /bbs
        method: POST
        maxPayloadSize: 2048
      bitbucketserverBaseURL: %s/rest
      events: [repo:refs_changed, pr:opened]
      webhookSecret: {name: bbs, key: secret}
      accessToken: {name: bbs, key: token}
      skipBranchRefsChangedOnOpenPR: true
      oneEventPerChange: true
      metadata: {team: scm}
`, port, f.srv.URL))))
	u := url(port, "/bbs")

	pr := []byte(`{"eventKey":"pr:opened","pullRequest":{"id":7}}`)
	for _, c := range []struct {
		name   string
		sig    string
		status int
	}{
		{"unsigned", "", http.StatusUnauthorized},
		{"other algorithm", ghSign(sha256.New, "sha1", bbsSecret, pr), http.StatusUnauthorized},
		{"wrong secret", ghSign(sha256.New, "sha256", "other", pr), http.StatusForbidden},
	} {
		if resp := do(t, http.MethodPost, u, pr, bbsHeaders("pr:opened", "r0", pr, c.sig)); resp.status != c.status {
			t.Errorf("%s: %d %q, want %d", c.name, resp.status, resp.body, c.status)
		}
	}
	if resp := do(t, http.MethodPost, u, pr, bbsHeaders("pr:opened", "req-1", pr, bbsSign(pr))); resp.status != http.StatusOK {
		t.Fatalf("signed delivery: %d %q", resp.status, resp.body)
	}
	ping := []byte(`{"test":true}`)
	if resp := do(t, http.MethodPost, u, ping, bbsHeaders("diagnostics:ping", "r2", ping, bbsSign(ping))); resp.status != http.StatusOK || !strings.Contains(resp.body, "pong") {
		t.Errorf("ping: %d %q, want 200 pong", resp.status, resp.body)
	}
	other := []byte(`{"eventKey":"repo:modified"}`)
	if resp := do(t, http.MethodPost, u, other, bbsHeaders("repo:modified", "r3", other, bbsSign(other))); resp.status != http.StatusOK || !strings.Contains(resp.body, "ignored") {
		t.Errorf("unlisted event: %d %q, want 200 ignored", resp.status, resp.body)
	}
	bad := []byte(`{not json`)
	if resp := do(t, http.MethodPost, u, bad, bbsHeaders("pr:opened", "r4", bad, bbsSign(bad))); resp.status != http.StatusBadRequest {
		t.Errorf("malformed JSON: %d %q, want 400", resp.status, resp.body)
	}
	big := []byte(`{"x":"` + strings.Repeat("a", 3000) + `"}`)
	if resp := do(t, http.MethodPost, u, big, bbsHeaders("pr:opened", "r5", big, bbsSign(big))); resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized: %d %q, want 413", resp.status, resp.body)
	}
	rc := []byte(refsChangedBody)
	if resp := do(t, http.MethodPost, u, rc, bbsHeaders("repo:refs_changed", "req-2", rc, bbsSign(rc))); resp.status != http.StatusOK {
		t.Fatalf("refs_changed: %d %q", resp.status, resp.body)
	}
	onlyOpen := []byte(strings.Replace(refsChangedBody, `"changes":[`, `"changes":[{"ref":{"type":"BRANCH"},"toHash":"aaa","type":"UPDATE"}],"x":[`, 1))
	if resp := do(t, http.MethodPost, u, onlyOpen, bbsHeaders("repo:refs_changed", "req-3", onlyOpen, bbsSign(onlyOpen))); resp.status != http.StatusOK || !strings.Contains(resp.body, "ignored") {
		t.Errorf("refs_changed with open pull requests only: %d %q, want 200 ignored", resp.status, resp.body)
	}

	// pr:opened, then the two changes kept of refs_changed, one event each.
	recs := h.records("kevents.src.default.bbs", 3)
	var ids []string
	var hashes []string
	for i, r := range recs {
		e := decode(t, r)
		ids = append(ids, e.ID())
		if e.Type() != "bitbucketserver" || e.Source() != "bbs" || e.Subject() != "push" {
			t.Errorf("event %d: type %q source %q subject %q", i, e.Type(), e.Source(), e.Subject())
		}
		d, _ := ghDecodeData(t, e.Data())
		if d.Metadata["team"] != "scm" || http.Header(d.Headers).Get("X-Event-Key") == "" || http.Header(d.Headers).Get("X-Hub-Signature") != "" {
			t.Errorf("event %d: metadata %v, headers %v: want the metadata and the headers without the signature", i, d.Metadata, d.Headers)
		}
		if i == 0 {
			continue
		}
		var changes []struct {
			ToHash string `json:"toHash"`
		}
		_ = json.Unmarshal(d.Body["changes"], &changes)
		for _, c := range changes {
			hashes = append(hashes, c.ToHash)
		}
		if len(changes) != 1 || string(d.Body["date"]) == "" || !strings.Contains(string(d.Body["repository"]), "repo1") {
			t.Errorf("event %d body %v: want one change and the rest of the delivery", i, d.Body)
		}
	}
	if !reflect.DeepEqual(ids, []string{"req-1", "req-2-0", "req-2-1"}) {
		t.Errorf("ids %v, want the X-Request-Id, with the change's index when split", ids)
	}
	if !reflect.DeepEqual(hashes, []string{"bbb", "ccc"}) {
		t.Errorf("changes published %v, want bbb and ccc (aaa has an open pull request)", hashes)
	}
	for _, r := range recs {
		if ghRecordHolds(r, bbsSecret) || ghRecordHolds(r, bbsToken) {
			t.Error("a secret appears in a record")
		}
	}
	if strings.Contains(logs.String(), bbsSecret) || strings.Contains(logs.String(), bbsToken) {
		t.Errorf("a secret appears in the log:\n%s", logs.String())
	}
}

func TestBitbucketServerHooks(t *testing.T) {
	ghFastHooks(t)
	f := newBBSFakeAPI(t)
	const hookURL = "https://kevents.example.com/bbs"
	f.hooks["api/1.0/projects/PROJ/repos/repo1/webhooks"] = []bbsHook{{ID: 5, URL: "https://other.example.com"}, {ID: 6, URL: hookURL, Events: []string{"repo:refs_changed"}}}
	f.hooks["api/1.0/projects/TEAM/repos/repo3/webhooks"] = []bbsHook{{ID: 9, URL: hookURL, Events: []string{"pr:opened", "repo:refs_changed"}, Configuration: map[string]string{"secret": bbsSecret}}}
	port := freePort(t)
	h := newHarness(t, []string{"bbs"}, withSecrets(mapSecrets(map[string]string{"bbs/secret": bbsSecret, "bbs/token": bbsToken})))
	logs := ghCaptureLog(h)
	stop := ghStart(t, h, parseEventSources(t, bbsYAML(fmt.Sprintf(`      webhook:
        port: "%d"
        endpoint: /bbs
        method: POST
        url: https://kevents.example.com
      bitbucketserverBaseURL: %s/rest/
      repositories:
        - projectKey: PROJ
          repositorySlug: repo1
      projects: [TEAM]
      events: [repo:refs_changed, pr:opened]
      webhookSecret: {name: bbs, key: secret}
      accessToken: {name: bbs, key: token}
      deleteHookOnFinish: true
`, port, f.srv.URL))))
	ghEventually(t, "the hooks in place", func() bool { return len(f.callsSoFar()) >= 2 })
	time.Sleep(300 * time.Millisecond) // resyncs: nothing more to do
	stop()

	calls := f.callsSoFar()
	var got []string
	for _, c := range calls {
		got = append(got, c.Method+" "+c.Path)
	}
	sort.Strings(got)
	want := []string{
		"DELETE api/1.0/projects/PROJ/repos/repo1/webhooks/6",
		"DELETE api/1.0/projects/TEAM/repos/repo2/webhooks/101",
		"DELETE api/1.0/projects/TEAM/repos/repo3/webhooks/9",
		"POST api/1.0/projects/TEAM/repos/repo2/webhooks",
		"PUT api/1.0/projects/PROJ/repos/repo1/webhooks/6",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range calls {
		if c.Method != http.MethodPost && c.Method != http.MethodPut {
			continue
		}
		cfg, _ := c.Body["configuration"].(map[string]any)
		if c.Body["url"] != hookURL || c.Body["active"] != true || fmt.Sprint(c.Body["events"]) != "[repo:refs_changed pr:opened]" || cfg["secret"] != bbsSecret {
			t.Errorf("%s %s body %v: want the URL, active, the events and the secret", c.Method, c.Path, c.Body)
		}
	}
	if f.badAuth != 0 {
		t.Errorf("%d calls without the access token or Argo's headers", f.badAuth)
	}
	if strings.Contains(logs.String(), bbsSecret) || strings.Contains(logs.String(), bbsToken) {
		t.Errorf("a secret appears in the log:\n%s", logs.String())
	}
}

// TestBitbucketServerAPIErrorsScrubbed: an API answer that echoes the token is logged without it.
func TestBitbucketServerAPIErrorsScrubbed(t *testing.T) {
	ghFastHooks(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad token "+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), http.StatusForbidden)
	}))
	t.Cleanup(api.Close)
	h := newHarness(t, []string{"bbs"}, withSecrets(mapSecrets(map[string]string{"bbs/token": bbsToken})))
	logs := ghCaptureLog(h)
	stop := ghStart(t, h, parseEventSources(t, bbsYAML(fmt.Sprintf(`      webhook: {port: "%d", endpoint: /bbs, method: POST, url: https://kevents.example.com}
      bitbucketserverBaseURL: %s
      repositories: [{projectKey: P, repositorySlug: r}]
      events: [repo:refs_changed]
      accessToken: {name: bbs, key: token}
`, freePort(t), api.URL))))
	ghEventually(t, "the failure logged", func() bool { return strings.Contains(logs.String(), "403 Forbidden") })
	stop()
	if strings.Contains(logs.String(), bbsToken) || !strings.Contains(logs.String(), "[redacted]") {
		t.Errorf("want the token redacted in the log:\n%s", logs.String())
	}
}

func TestCheckBitbucketServer(t *testing.T) {
	webhook := "      webhook: {port: \"12000\", endpoint: /push, method: POST}\n"
	base := webhook + "      bitbucketserverBaseURL: https://bb.example.com/rest\n"
	cases := []struct {
		name, fields string
		want         []string
		notSupported bool
	}{
		{"receiver", base, nil, false},
		{"hooks", strings.Replace(base, "method: POST", "method: POST, url: https://k.example.com", 1) + "      repositories: [{projectKey: P, repositorySlug: r}]\n      events: [repo:refs_changed]\n      accessToken: {name: a, key: b}\n      checkInterval: 30s\n", nil, false},
		{"no base URL", webhook, []string{"bitbucketserverBaseURL: missing"}, false},
		{"bad base URL", webhook + "      bitbucketserverBaseURL: bb.example.com\n", []string{`bitbucketserverBaseURL: "bb.example.com"; expected an absolute http or https URL`}, false},
		{"bad interval", base + "      checkInterval: often\n", []string{`checkInterval: "often"; expected a positive Go duration`}, false},
		{"hooks without events", strings.Replace(base, "method: POST", "method: POST, url: https://k.example.com", 1) + "      projects: [P]\n      accessToken: {name: a, key: b}\n", []string{"events: empty"}, false},
		{"incomplete repository", base + "      repositories: [{projectKey: P}]\n", []string{"repositories[0].repositorySlug: missing"}, false},
		{"skip without token", base + "      skipBranchRefsChangedOnOpenPR: true\n", []string{"skipBranchRefsChangedOnOpenPR: set without accessToken"}, false},
		{"half TLS", base + "      tls: {clientCertSecret: {name: a, key: b}}\n", []string{"tls.clientCertSecret, tls.clientKeySecret: only one is set"}, false},
		{"no webhook", "      bitbucketserverBaseURL: https://bb.example.com\n", []string{"webhook: missing"}, false},
		{"filter", base + "      filter: {expression: \"body.eventKey == 'repo:refs_changed'\"}\n", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, bbsYAML(c.fields))[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range append(c.want, "spec.bitbucketserver.push") {
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
