package source

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kevents/kevents/api"
)

// The bitbucketserver source receives Bitbucket Server (Data Center) webhook deliveries on its
// webhook endpoint.
//
// Signatures: with webhookSecret, a delivery must carry X-Hub-Signature, "sha256=" and the hex
// HMAC-SHA256 of the body (Argo checks it only when it manages the hooks; here whenever the
// secret is set). It answers 401 when the signature is missing, 403 when it does not match
// (Argo answers 400 to both).
//
// Events: repo:refs_changed deliveries may be narrowed (skipBranchRefsChangedOnOpenPR drops the
// branch changes whose commit has an open pull request, asking the REST API) and split
// (oneEventPerChange: one event per change, the rest of the body kept). Where Argo publishes the
// whole body when some changes remain after skipping, the event here holds the changes kept.
// Deliveries of events not listed in events are answered 200 and dropped; Bitbucket's
// "test connection" (diagnostics:ping) is answered and not published unless listed.
//
// Acknowledgement: 200 only after Kafka acknowledged every event of the delivery, 503 when it
// did not in time. The event id is the delivery's X-Request-Id (with the change's index when a
// delivery is split).
//
// Hooks: with accessToken, webhook.url and repositories or projects set (Argo's condition), the
// source creates the hook on each repository (projects: every repository of the project)
// through the REST API at bitbucketserverBaseURL, updates a hook with the same URL whose events
// or secret differ, checks again every checkInterval (default 1m), and deletes the hooks on stop
// when deleteHookOnFinish is set.
func init() {
	Register("bitbucketserver", Spec{
		Summary: "Bitbucket Server webhook deliveries (X-Hub-Signature checked with webhookSecret); creates the hooks through the REST API with accessToken.",
		Check:   checkBitbucketServer,
	}, newBitbucketServer)
}

// Headers Bitbucket Server sets on a delivery.
const (
	bbsEventHeader     = "X-Event-Key"
	bbsRequestHeader   = "X-Request-Id"
	bbsSignatureHeader = "X-Hub-Signature"
	bbsRefsChanged     = "repo:refs_changed"
	bbsPing            = "diagnostics:ping"
)

func checkBitbucketServer(ev api.Event) error {
	b, specErr := specOf[api.BitbucketServerEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(gitHookCheckContext("bitbucketserver", b.Webhook))
	if b.BitbucketServerBaseURL == "" {
		add(errors.New("bitbucketserverBaseURL: missing; expected the REST base URL of the server, such as https://bitbucket.example.com/rest"))
	}
	add(gitHookCheckURL("bitbucketserverBaseURL", b.BitbucketServerBaseURL))
	if b.CheckInterval != "" {
		if d, err := time.ParseDuration(b.CheckInterval); err != nil || d <= 0 {
			add(fmt.Errorf("checkInterval: %q; expected a positive Go duration such as 1m", b.CheckInterval))
		}
	}
	for i, r := range b.Repositories {
		if r.ProjectKey == "" {
			add(fmt.Errorf("repositories[%d].projectKey: missing", i))
		}
		if r.RepositorySlug == "" {
			add(fmt.Errorf("repositories[%d].repositorySlug: missing", i))
		}
	}
	for i, p := range b.Projects {
		if p == "" {
			add(fmt.Errorf("projects[%d]: empty; expected a project key", i))
		}
	}
	for i, e := range b.Events {
		if e == "" {
			add(fmt.Errorf("events[%d]: empty; expected a Bitbucket Server event key such as repo:refs_changed", i))
		}
	}
	if bbsNeedsHooks(b) && len(b.Events) == 0 {
		add(errors.New("events: empty; expected the event keys of the hook to create (repo:refs_changed, pr:opened, ...)"))
	}
	if b.SkipBranchRefsChangedOnOpenPR && b.AccessToken == nil {
		add(errors.New("skipBranchRefsChangedOnOpenPR: set without accessToken; expected accessToken to look up the pull requests of a commit"))
	}
	add(gitHookCheckSecret("accessToken", b.AccessToken))
	add(gitHookCheckSecret("webhookSecret", b.WebhookSecret))
	if t := b.TLS; t != nil {
		add(gitHookCheckSecret("tls.caCertSecret", t.CACertSecret))
		add(gitHookCheckSecret("tls.clientCertSecret", t.ClientCertSecret))
		add(gitHookCheckSecret("tls.clientKeySecret", t.ClientKeySecret))
		if (t.ClientCertSecret == nil) != (t.ClientKeySecret == nil) {
			add(errors.New("tls.clientCertSecret, tls.clientKeySecret: only one is set; expected both or neither"))
		}
	}
	return errors.Join(errs...)
}

// bbsRepositories is Argo's GetBitbucketServerRepositories: repositories, or the deprecated
// projectKey/repositorySlug pair.
func bbsRepositories(b api.BitbucketServerEventSource) []api.BitbucketServerRepository {
	if len(b.Repositories) > 0 {
		return b.Repositories
	}
	if b.DeprecatedProjectKey != "" && b.DeprecatedRepositorySlug != "" {
		return []api.BitbucketServerRepository{{ProjectKey: b.DeprecatedProjectKey, RepositorySlug: b.DeprecatedRepositorySlug}}
	}
	return nil
}

// bbsNeedsHooks is Argo's ShouldCreateWebhooks.
func bbsNeedsHooks(b api.BitbucketServerEventSource) bool {
	return b.AccessToken != nil && b.Webhook != nil && b.Webhook.URL != "" && (len(bbsRepositories(b)) > 0 || len(b.Projects) > 0)
}

type bbsSource struct {
	ep     *gitHookEndpoint
	cfg    api.BitbucketServerEventSource
	secret []byte      // webhookSecret; nil when deliveries are not signed
	api    *gitHookAPI // nil without accessToken
	base   string      // bitbucketserverBaseURL with a trailing slash
}

func newBitbucketServer(b Build) (Source, error) {
	cfg, specErr := specOf[api.BitbucketServerEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	ep, err := newGitHookEndpoint(b, "bitbucketserver", cfg.Webhook)
	if err != nil {
		return nil, err
	}
	s := &bbsSource{ep: ep, cfg: cfg, base: strings.TrimRight(cfg.BitbucketServerBaseURL, "/") + "/"}
	var hookSecret string
	if cfg.WebhookSecret != nil {
		if hookSecret, err = gitHookSecret(b, "webhookSecret", cfg.WebhookSecret); err != nil {
			return nil, err
		}
		s.secret = []byte(hookSecret)
	}
	var mgr Source
	if cfg.AccessToken != nil {
		if s.api, err = newBBSAPI(b, cfg, hookSecret); err != nil {
			return nil, err
		}
		if bbsNeedsHooks(cfg) {
			mgr = newBBSHooks(b, s, hookSecret)
		}
	}
	if err := ep.register(s); err != nil {
		return nil, err
	}
	return mgr, nil
}

// newBBSAPI is the REST client: the access token as bearer token, Argo's client headers, and
// the tls settings.
func newBBSAPI(b Build, cfg api.BitbucketServerEventSource, hookSecret string) (*gitHookAPI, error) {
	tok, err := gitHookSecret(b, "accessToken", cfg.AccessToken)
	if err != nil {
		return nil, err
	}
	a := newGitHookAPI(b)
	a.secrets = append(a.secrets, tok)
	if hookSecret != "" {
		a.secrets = append(a.secrets, hookSecret)
	}
	if cfg.TLS != nil {
		tc, err := b.Env.Secrets.TLSConfig("tls", cfg.TLS)
		if err != nil {
			return nil, err
		}
		a.client.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	a.authorize = func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Atlassian-Token", "no-check")
		req.Header.Set("X-Requested-With", "XMLHttpRequest")
		return nil
	}
	return a, nil
}

// ServeHTTP checks the signature, drops the events the source does not listen to, narrows or
// splits repo:refs_changed deliveries, and answers 200 only once Kafka acknowledged every event.
func (s *bbsSource) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !s.ep.accept(rw, r) {
		return
	}
	body, ok := s.ep.readBody(rw, r)
	if !ok {
		return
	}
	if s.secret != nil {
		if status, msg := bbsVerify(r.Header.Get(bbsSignatureHeader), body, s.secret); status != 0 {
			http.Error(rw, msg, status)
			return
		}
	}
	key := r.Header.Get(bbsEventHeader)
	if key == bbsPing && !slices.Contains(s.cfg.Events, bbsPing) {
		_, _ = fmt.Fprintln(rw, "pong")
		return
	}
	if !bitbucketWants(s.cfg.Events, key) {
		_, _ = fmt.Fprintf(rw, "ignored: %s %q is not one of the events this endpoint listens to\n", bbsEventHeader, key)
		return
	}
	if !json.Valid(body) {
		// Argo cannot encode such an event either and answers 400.
		http.Error(rw, "the body is not JSON", http.StatusBadRequest)
		return
	}
	bodies := []json.RawMessage{body}
	if key == bbsRefsChanged && (s.cfg.SkipBranchRefsChangedOnOpenPR || s.cfg.OneEventPerChange) {
		var status int
		var err error
		if bodies, status, err = s.refsChanged(r.Context(), body); err != nil {
			http.Error(rw, err.Error(), status)
			return
		}
		if len(bodies) == 0 {
			_, _ = fmt.Fprintln(rw, "ignored: no change to publish")
			return
		}
	}
	header := r.Header.Clone()
	header.Del("Authorization")
	header.Del(bbsSignatureHeader)
	id := gitHookID(r.Header.Get(bbsRequestHeader))
	events := make([]hookEvent, len(bodies))
	for i, b := range bodies {
		events[i] = hookEvent{id: id, data: gitHookData{Headers: header, Body: b, Metadata: s.cfg.Metadata}}
		if len(bodies) > 1 {
			events[i].id = id + "-" + strconv.Itoa(i)
		}
	}
	s.ep.publishEvents(rw, r, events)
}

// bbsVerify checks X-Hub-Signature ("sha256=<hex>") against the body. It returns 0 when the
// signature holds, else the status to answer and why.
func bbsVerify(sig string, body, secret []byte) (int, string) {
	if sig == "" {
		return http.StatusUnauthorized, "missing " + bbsSignatureHeader + " header: this endpoint requires deliveries signed with the webhook secret"
	}
	sum, ok := strings.CutPrefix(sig, "sha256=")
	want, err := hex.DecodeString(sum)
	if !ok || err != nil || len(want) == 0 {
		return http.StatusUnauthorized, bbsSignatureHeader + ": expected sha256=<hex digest>"
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), want) {
		return http.StatusForbidden, bbsSignatureHeader + " does not match the body: wrong webhook secret or altered delivery"
	}
	return 0, ""
}

// bbsChange is the part of a repo:refs_changed change the source reads.
type bbsChange struct {
	Ref struct {
		Type string `json:"type"`
	} `json:"ref"`
	ToHash string `json:"toHash"`
	Type   string `json:"type"`
}

// refsChanged applies skipBranchRefsChangedOnOpenPR and oneEventPerChange to a
// repo:refs_changed body and returns the bodies to publish; the fields the source does not
// read are kept as they are. On error it returns the status to answer.
func (s *bbsSource) refsChanged(ctx context.Context, body []byte) ([]json.RawMessage, int, error) {
	var obj map[string]json.RawMessage
	var changes []json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, http.StatusBadRequest, errors.New("repo:refs_changed: the body is not a JSON object")
	}
	if raw, ok := obj["changes"]; ok {
		if err := json.Unmarshal(raw, &changes); err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("repo:refs_changed: changes: %v; expected a list", err)
		}
	}
	if s.cfg.SkipBranchRefsChangedOnOpenPR {
		var repo struct {
			Slug    string `json:"slug"`
			Project struct {
				Key string `json:"key"`
			} `json:"project"`
		}
		if err := json.Unmarshal(obj["repository"], &repo); err != nil || repo.Slug == "" || repo.Project.Key == "" {
			return nil, http.StatusBadRequest, errors.New("repo:refs_changed: repository.slug and repository.project.key: missing; needed to look up pull requests")
		}
		kept := changes[:0:0]
		for i, raw := range changes {
			var c bbsChange
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, http.StatusBadRequest, fmt.Errorf("repo:refs_changed: changes[%d]: %v", i, err)
			}
			if c.Ref.Type == "BRANCH" && c.Type != "DELETE" {
				open, err := s.hasOpenPR(ctx, repo.Project.Key, repo.Slug, c.ToHash)
				if err != nil {
					// Transient as far as the source can tell: the sender may retry.
					return nil, http.StatusServiceUnavailable, fmt.Errorf("cannot look up the pull requests of commit %s: %v", c.ToHash, err)
				}
				if open {
					continue
				}
			}
			kept = append(kept, raw)
		}
		if len(kept) == 0 {
			return nil, 0, nil
		}
		changes = kept
	}
	if !s.cfg.OneEventPerChange {
		obj["changes"], _ = json.Marshal(changes) // raw messages always encode
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
		return []json.RawMessage{b}, 0, nil
	}
	out := make([]json.RawMessage, 0, len(changes))
	for _, c := range changes {
		obj["changes"], _ = json.Marshal([]json.RawMessage{c})
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
		out = append(out, b)
	}
	return out, 0, nil
}

// bbsPage is a page of a Bitbucket Server collection.
type bbsPage[T any] struct {
	Values        []T  `json:"values"`
	IsLastPage    bool `json:"isLastPage"`
	NextPageStart int  `json:"nextPageStart"`
}

// bbsList reads every page of the collection at u (a URL without query) into fn.
func bbsList[T any](ctx context.Context, a *gitHookAPI, u string, fn func(T)) error {
	start := 0
	for page := 0; page < gitHookMaxPages; page++ {
		var p bbsPage[T]
		if err := a.do(ctx, http.MethodGet, u+"?limit=500&start="+strconv.Itoa(start), nil, &p); err != nil {
			return err
		}
		for _, v := range p.Values {
			fn(v)
		}
		if p.IsLastPage || len(p.Values) == 0 {
			return nil
		}
		start = p.NextPageStart
	}
	return nil
}

// bbsRepoPath is the API path of a repository.
func bbsRepoPath(project, slug string) string {
	return "api/1.0/projects/" + neturl.PathEscape(project) + "/repos/" + neturl.PathEscape(slug)
}

// hasOpenPR reports whether the commit belongs to an open pull request.
func (s *bbsSource) hasOpenPR(ctx context.Context, project, slug, commit string) (bool, error) {
	open := false
	err := bbsList(ctx, s.api, s.base+bbsRepoPath(project, slug)+"/commits/"+neturl.PathEscape(commit)+"/pull-requests", func(pr struct {
		State string `json:"state"`
	}) {
		open = open || strings.EqualFold(pr.State, "OPEN")
	})
	return open, err
}

// --- Bitbucket Server hooks ---------------------------------------------------------------

// bbsHook is a repository webhook as the Bitbucket Server REST API shows it.
type bbsHook struct {
	ID            int64             `json:"id,omitempty"`
	Name          string            `json:"name"`
	URL           string            `json:"url"`
	Active        bool              `json:"active"`
	Events        []string          `json:"events"`
	Configuration map[string]string `json:"configuration,omitempty"`
}

type bbsHooks struct {
	hookSet  // base: bitbucketserverBaseURL with a trailing slash
	hook     bbsHook
	repos    []api.BitbucketServerRepository
	projects []string
}

func newBBSHooks(b Build, s *bbsSource, hookSecret string) Source {
	hook := bbsHook{Name: "kevents", URL: gitHookURL(s.cfg.Webhook), Active: true, Events: s.cfg.Events}
	if hookSecret != "" {
		// Without a secret the configuration is left out: Bitbucket Server refuses an empty one.
		hook.Configuration = map[string]string{"secret": hookSecret}
	}
	h := &bbsHooks{
		hookSet:  hookSet{api: s.api, kind: "bitbucketserver", base: s.base, ids: map[string]int64{}},
		hook:     hook,
		repos:    bbsRepositories(s.cfg),
		projects: s.cfg.Projects,
	}
	m := newGitHookManager(b, "bitbucketserver", h.ensure, h.remove, s.cfg.DeleteHookOnFinish)
	if s.cfg.CheckInterval != "" {
		m.resync, _ = time.ParseDuration(s.cfg.CheckInterval) // checked at load
	}
	return m
}

// paths lists the hooks collections of the repositories and of every repository of the
// projects, as the server lists them now.
func (h *bbsHooks) paths(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(project, slug string) {
		p := bbsRepoPath(project, slug) + "/webhooks"
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, r := range h.repos {
		add(r.ProjectKey, r.RepositorySlug)
	}
	var errs []error
	for _, project := range h.projects {
		err := bbsList(ctx, h.api, h.base+"api/1.0/projects/"+neturl.PathEscape(project)+"/repos", func(r struct {
			Slug    string `json:"slug"`
			Project struct {
				Key string `json:"key"`
			} `json:"project"`
		}) {
			add(r.Project.Key, r.Slug)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("list the repositories of project %s: %w", project, err))
		}
	}
	return out, errors.Join(errs...)
}

func (h *bbsHooks) ensure(ctx context.Context) error {
	paths, err := h.paths(ctx)
	return errors.Join(err, h.ensureAll(ctx, paths, h.ensureOne))
}

// remove deletes every hook this source found or created.
func (h *bbsHooks) remove(ctx context.Context) error {
	paths := make([]string, 0, len(h.ids))
	for p := range h.ids {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return h.removeAll(ctx, paths)
}

// ensureOne finds the hook with the source's URL, updating it when its events or secret
// differ (as Argo does), or creates it.
func (h *bbsHooks) ensureOne(ctx context.Context, p string) (id int64, created bool, err error) {
	var found *bbsHook
	err = bbsList(ctx, h.api, h.base+p, func(hk bbsHook) {
		if found == nil && hk.URL == h.hook.URL {
			found = &hk
		}
	})
	if err != nil {
		return 0, false, fmt.Errorf("list hooks: %w", err)
	}
	if found != nil {
		if !sameSet(found.Events, h.hook.Events) || found.Configuration["secret"] != h.hook.Configuration["secret"] {
			if err := h.api.do(ctx, http.MethodPut, h.base+p+"/"+strconv.FormatInt(found.ID, 10), h.hook, nil); err != nil {
				return 0, false, fmt.Errorf("update hook %d: %w", found.ID, err)
			}
			h.api.log.Info("bitbucketserver: hook updated", "hooks", p, "id", found.ID)
		}
		return found.ID, false, nil
	}
	var out bbsHook
	if err := h.api.do(ctx, http.MethodPost, h.base+p, h.hook, &out); err != nil {
		return 0, false, fmt.Errorf("create hook: %w", err)
	}
	return out.ID, true, nil
}
