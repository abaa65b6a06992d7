package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/kevents/kevents/api"
)

// The gitlab source receives GitLab webhook deliveries on its webhook endpoint.
//
// Acknowledgement: GitLab counts a delivery as successful on a 2xx answer and retries failed
// ones. The source answers 200 only after Kafka acknowledged the event, 503 when Kafka did not
// in time (PublishTimeout), and 4xx for deliveries it refuses for good. GitLab keeps the
// Idempotency-Key header of a delivery across its retries (GitLab 17.4 and later); it is the
// event id when present, so an event Kafka did keep despite the 503 is recognisable downstream.
//
// Hooks: with accessToken and webhook.url set (Argo's condition), the source creates the hook
// on each project and group through the GitLab REST API at gitlabBaseURL, reusing a hook with
// the same URL, checks again every minute (recreating a hook deleted meanwhile), and deletes
// the hooks on stop when deleteHookOnFinish is set.
func init() {
	Register("gitlab", Spec{
		Summary: "GitLab webhook deliveries (X-Gitlab-Token checked, events filtered by X-Gitlab-Event); creates the hooks through the GitLab API with accessToken.",
		Check:   checkGitlab,
	}, newGitlab)
}

// gitlabEvents maps the event names of Argo's gitlab events field (the flags of go-gitlab's
// AddProjectHookOptions, which Argo sets by name) to the hook API parameter and the
// X-Gitlab-Event header GitLab sends with such an event.
var gitlabEvents = map[string]struct{ param, header string }{
	"PushEvents":                {"push_events", "Push Hook"},
	"TagPushEvents":             {"tag_push_events", "Tag Push Hook"},
	"IssuesEvents":              {"issues_events", "Issue Hook"},
	"ConfidentialIssuesEvents":  {"confidential_issues_events", "Confidential Issue Hook"},
	"NoteEvents":                {"note_events", "Note Hook"},
	"ConfidentialNoteEvents":    {"confidential_note_events", "Confidential Note Hook"},
	"MergeRequestsEvents":       {"merge_requests_events", "Merge Request Hook"},
	"JobEvents":                 {"job_events", "Job Hook"},
	"PipelineEvents":            {"pipeline_events", "Pipeline Hook"},
	"WikiPageEvents":            {"wiki_page_events", "Wiki Page Hook"},
	"DeploymentEvents":          {"deployment_events", "Deployment Hook"},
	"ReleasesEvents":            {"releases_events", "Release Hook"},
	"EmojiEvents":               {"emoji_events", "Emoji Hook"},
	"ResourceAccessTokenEvents": {"resource_access_token_events", "Resource Access Token Hook"},
	"VulnerabilityEvents":       {"vulnerability_events", "Vulnerability Hook"},
}

// gitlabEventNames lists the names gitlabEvents knows, for messages.
func gitlabEventNames() string {
	return strings.Join(slices.Sorted(maps.Keys(gitlabEvents)), ", ")
}

func checkGitlab(ev api.Event) error {
	g, specErr := specOf[api.GitlabEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(gitHookCheckContext("gitlab", g.Webhook))
	// Argo requires events, gitlabBaseURL and accessToken.
	if len(g.Events) == 0 {
		add(fmt.Errorf("events: empty; expected at least one of %s", gitlabEventNames()))
	}
	for i, e := range g.Events {
		if _, ok := gitlabEvents[e]; !ok {
			add(fmt.Errorf("events[%d]: %q; expected one of %s", i, e, gitlabEventNames()))
		}
	}
	if g.GitlabBaseURL == "" {
		add(errors.New("gitlabBaseURL: missing; expected the GitLab URL such as https://gitlab.com"))
	}
	add(gitHookCheckURL("gitlabBaseURL", g.GitlabBaseURL))
	if g.AccessToken == nil {
		add(errors.New("accessToken: missing; expected the secret holding a GitLab access token"))
	}
	add(gitHookCheckSecret("accessToken", g.AccessToken))
	add(gitHookCheckSecret("secretToken", g.SecretToken))
	for i, p := range g.Projects {
		if p == "" {
			add(fmt.Errorf("projects[%d]: empty; expected a project id or path", i))
		}
	}
	for i, gr := range g.Groups {
		if gr == "" {
			add(fmt.Errorf("groups[%d]: empty; expected a group id or path", i))
		}
	}
	return errors.Join(errs...)
}

// gitlabProjects is Argo's GetProjects: projects, or the deprecated projectID.
func gitlabProjects(g api.GitlabEventSource) []string {
	if len(g.Projects) > 0 {
		return g.Projects
	}
	if g.DeprecatedProjectID != "" {
		return []string{g.DeprecatedProjectID}
	}
	return nil
}

type gitlabSource struct {
	ep      *gitHookEndpoint
	cfg     api.GitlabEventSource
	token   []byte          // secretToken; nil when deliveries carry none
	headers map[string]bool // X-Gitlab-Event values of the events listened to
}

func newGitlab(b Build) (Source, error) {
	cfg, specErr := specOf[api.GitlabEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	ep, err := newGitHookEndpoint(b, "gitlab", cfg.Webhook)
	if err != nil {
		return nil, err
	}
	g := &gitlabSource{ep: ep, cfg: cfg, headers: map[string]bool{}}
	for _, e := range cfg.Events {
		g.headers[gitlabEvents[e].header] = true
	}
	var secretToken string
	// Argo reads secretToken only when it creates hooks, and then checks it; it is checked here
	// whenever it is set.
	if cfg.SecretToken != nil {
		if secretToken, err = gitHookSecret(b, "secretToken", cfg.SecretToken); err != nil {
			return nil, err
		}
		g.token = []byte(secretToken)
	}
	var mgr Source
	if cfg.AccessToken != nil && cfg.Webhook != nil && cfg.Webhook.URL != "" {
		if mgr, err = newGitlabHooks(b, cfg, secretToken); err != nil {
			return nil, err
		}
	}
	if err := ep.register(g); err != nil {
		return nil, err
	}
	return mgr, nil
}

// ServeHTTP checks X-Gitlab-Token, drops the events the source does not listen to (answering
// 200, so GitLab does not count them as failed), and answers 200 only once Kafka acknowledged
// the event.
func (g *gitlabSource) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !g.ep.accept(rw, r) {
		return
	}
	if g.token != nil {
		got := r.Header.Get("X-Gitlab-Token")
		if got == "" {
			http.Error(rw, "missing X-Gitlab-Token header: this endpoint requires the hook's secret token", http.StatusUnauthorized)
			return
		}
		if !gitHookEqual(got, g.token) {
			http.Error(rw, "X-Gitlab-Token does not match the secret token", http.StatusForbidden)
			return
		}
	}
	body, ok := g.ep.readBody(rw, r)
	if !ok {
		return
	}
	event := r.Header.Get("X-Gitlab-Event")
	if !g.headers[event] {
		_, _ = fmt.Fprintf(rw, "ignored: X-Gitlab-Event %q is not one of the events this endpoint listens to\n", event)
		return
	}
	if !json.Valid(body) {
		// Argo cannot encode such an event either and answers 400.
		http.Error(rw, "the body is not JSON", http.StatusBadRequest)
		return
	}
	header := r.Header.Clone()
	header.Del("Authorization")
	header.Del("X-Gitlab-Token") // the secret token itself
	id := gitHookID(r.Header.Get("Idempotency-Key"))
	g.ep.publish(rw, r, id, gitHookData{Headers: header, Body: body, Metadata: g.cfg.Metadata})
}

// --- GitLab hooks -------------------------------------------------------------------------

// gitlabHook is a project or group hook as the GitLab REST API shows it.
type gitlabHook struct {
	ID  int64  `json:"id"`
	URL string `json:"url"`
}

type gitlabHooks struct {
	hookSet                 // base: the API base URL ending in api/v4/
	hook     map[string]any // the hook to create
	url      string
	projects []string
	groups   []string
}

// ensure finds or creates the hook on every group and project, as Argo does: a hook with the
// same URL is reused.
func (h *gitlabHooks) ensure(ctx context.Context) error {
	return h.ensureAll(ctx, h.paths(), h.ensureOne)
}

func (h *gitlabHooks) remove(ctx context.Context) error { return h.removeAll(ctx, h.paths()) }

// gitlabAPIBase is go-gitlab's setBaseURL: a trailing slash, then api/v4/ unless the URL
// already ends with it.
func gitlabAPIBase(base string) string {
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	if !strings.HasSuffix(base, "api/v4/") {
		base += "api/v4/"
	}
	return base
}

func newGitlabHooks(b Build, cfg api.GitlabEventSource, secretToken string) (Source, error) {
	tok, err := gitHookSecret(b, "accessToken", cfg.AccessToken)
	if err != nil {
		return nil, err
	}
	a := newGitHookAPI(b)
	a.secrets = append(a.secrets, tok)
	a.authorize = func(_ context.Context, req *http.Request) error {
		req.Header.Set("PRIVATE-TOKEN", tok)
		return nil
	}
	u := gitHookURL(cfg.Webhook)
	// As Argo: every event flag explicitly off but the listed ones.
	hook := map[string]any{"url": u, "enable_ssl_verification": cfg.EnableSSLVerification}
	for _, e := range gitlabEvents {
		hook[e.param] = false
	}
	for _, e := range cfg.Events {
		hook[gitlabEvents[e].param] = true
	}
	if secretToken != "" {
		a.secrets = append(a.secrets, secretToken)
		hook["token"] = secretToken
	}
	h := &gitlabHooks{
		hookSet:  hookSet{api: a, kind: "gitlab", base: gitlabAPIBase(cfg.GitlabBaseURL), ids: map[string]int64{}},
		hook:     hook,
		url:      u,
		projects: gitlabProjects(cfg),
		groups:   cfg.Groups,
	}
	return newGitHookManager(b, "gitlab", h.ensure, h.remove, cfg.DeleteHookOnFinish), nil
}

// paths lists the hooks collections of the groups and projects; ids and paths such as
// group/project are escaped as one path segment, as go-gitlab does.
func (h *gitlabHooks) paths() []string {
	var out []string
	for _, g := range h.groups {
		out = append(out, "groups/"+neturl.PathEscape(g)+"/hooks")
	}
	for _, p := range h.projects {
		out = append(out, "projects/"+neturl.PathEscape(p)+"/hooks")
	}
	return out
}

func (h *gitlabHooks) ensureOne(ctx context.Context, p string) (id int64, created bool, err error) {
	for page := 1; page <= gitHookMaxPages; page++ {
		var hooks []gitlabHook
		if err := h.api.do(ctx, http.MethodGet, h.base+p+"?per_page=100&page="+strconv.Itoa(page), nil, &hooks); err != nil {
			return 0, false, fmt.Errorf("list hooks: %w", err)
		}
		for _, hk := range hooks {
			if hk.URL == h.url {
				return hk.ID, false, nil
			}
		}
		if len(hooks) < 100 {
			break
		}
	}
	var out gitlabHook
	if err := h.api.do(ctx, http.MethodPost, h.base+p, h.hook, &out); err != nil {
		return 0, false, fmt.Errorf("create hook: %w", err)
	}
	return out.ID, true, nil
}
