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
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"net/http"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/topology"
)

// The github source receives GitHub webhook deliveries on its webhook endpoint.
//
// Acknowledgement: GitHub counts a delivery as successful on a 2xx answer. The source answers
// 200 only after Kafka acknowledged the event, 503 when Kafka did not in time (PublishTimeout),
// and 4xx for deliveries it refuses for good. A delivery answered 503 shows as failed in GitHub
// and can be redelivered; the redelivery carries the same X-GitHub-Delivery, which is the
// event id, so an event Kafka did keep despite the 503 is recognisable downstream.
//
// Hooks: with apiToken or githubApp and webhook.url set (Argo's condition), the source creates
// the hook on each repository or organization through the GitHub REST API at githubBaseURL
// (default https://api.github.com/), reusing a hook with the same URL and events, checks again
// every minute (recreating a hook deleted meanwhile), and deletes the hooks on stop when
// deleteHookOnFinish is set.
func init() {
	Register("github", Spec{
		Summary: "GitHub webhook deliveries (X-Hub-Signature-256 checked); creates the hooks through the GitHub API with apiToken or githubApp.",
		Check:   checkGithub,
	}, newGithub)
}

// Headers GitHub sets on a delivery.
const (
	githubEventHeader     = "X-GitHub-Event"
	githubDeliveryHeader  = "X-GitHub-Delivery"
	githubSignature256    = "X-Hub-Signature-256"
	githubSignatureLegacy = "X-Hub-Signature"
)

// githubDefaultAPI is the GitHub REST API go-github (Argo's client) uses by default.
const githubDefaultAPI = "https://api.github.com/"

// Timing of the hook managers of github and gitlab: a random delay before the first attempt
// (several replicas then rarely create the same hook twice, as in Argo) and the interval of the
// checks that recreate missing hooks. Variables so tests can shorten them; read when an event
// is built.
var (
	gitHookJitter = 2 * time.Second
	gitHookResync = time.Minute
)

func checkGithub(ev api.Event) error {
	g, specErr := specOf[api.GithubEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(gitHookCheckContext("github", g.Webhook))
	repos := githubRepositories(g)
	switch {
	case len(repos) == 0 && len(g.Organizations) == 0:
		add(errors.New("repositories, organizations: both empty; expected one of them (repositories: [{owner, names}] or organizations: [name])"))
	case len(repos) > 0 && len(g.Organizations) > 0:
		add(errors.New("repositories, organizations: both set; expected only one of them"))
	}
	for i, r := range g.Repositories {
		if r.Owner == "" {
			add(fmt.Errorf("repositories[%d].owner: missing", i))
		}
		if len(r.Names) == 0 {
			add(fmt.Errorf("repositories[%d].names: empty; expected at least one repository name", i))
		}
		for j, n := range r.Names {
			if n == "" {
				add(fmt.Errorf("repositories[%d].names[%d]: empty", i, j))
			}
		}
	}
	for i, o := range g.Organizations {
		if o == "" {
			add(fmt.Errorf("organizations[%d]: empty", i))
		}
	}
	for i, e := range g.Events {
		if e == "" {
			add(fmt.Errorf("events[%d]: empty; expected a GitHub event name such as push, or *", i))
		}
	}
	if githubNeedsHooks(g) && len(g.Events) == 0 {
		add(errors.New("events: empty; expected the GitHub events of the hook to create (push, pull_request, ... or *)"))
	}
	switch g.ContentType {
	case "", "json", "form":
	default:
		add(fmt.Errorf("contentType: %q; expected json or form", g.ContentType))
	}
	// As in Argo: both or neither, so that a typo never sends the token to public GitHub.
	switch {
	case g.GithubBaseURL != "" && g.GithubUploadURL == "":
		add(errors.New("githubUploadURL: missing; required when githubBaseURL is set"))
	case g.GithubBaseURL == "" && g.GithubUploadURL != "":
		add(errors.New("githubBaseURL: missing; required when githubUploadURL is set"))
	}
	add(gitHookCheckURL("githubBaseURL", g.GithubBaseURL))
	add(gitHookCheckURL("githubUploadURL", g.GithubUploadURL))
	add(gitHookCheckSecret("apiToken", g.APIToken))
	add(gitHookCheckSecret("webhookSecret", g.WebhookSecret))
	if a := g.GithubApp; a != nil {
		if a.PrivateKey == nil {
			add(errors.New("githubApp.privateKey: missing"))
		} else {
			add(gitHookCheckSecret("githubApp.privateKey", a.PrivateKey))
		}
		if a.AppID <= 0 {
			add(fmt.Errorf("githubApp.appID: %d; expected the GitHub App's id", a.AppID))
		}
		if a.InstallationID <= 0 {
			add(fmt.Errorf("githubApp.installationID: %d; expected the id of the App's installation", a.InstallationID))
		}
	}
	return errors.Join(errs...)
}

// githubRepositories is Argo's GetOwnedRepositories: repositories, or the deprecated
// owner/repository pair.
func githubRepositories(g api.GithubEventSource) []api.OwnedRepositories {
	if len(g.Repositories) > 0 {
		return g.Repositories
	}
	if g.DeprecatedOwner != "" && g.DeprecatedRepository != "" {
		return []api.OwnedRepositories{{Owner: g.DeprecatedOwner, Names: []string{g.DeprecatedRepository}}}
	}
	return nil
}

// githubNeedsHooks is Argo's NeedToCreateHooks.
func githubNeedsHooks(g api.GithubEventSource) bool {
	return (g.APIToken != nil || (g.GithubApp != nil && g.GithubApp.PrivateKey != nil)) && g.Webhook != nil && g.Webhook.URL != ""
}

type githubSource struct {
	ep     *gitHookEndpoint
	cfg    api.GithubEventSource
	secret []byte // webhookSecret; nil when deliveries are not signed
}

func newGithub(b Build) (Source, error) {
	cfg, specErr := specOf[api.GithubEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	ep, err := newGitHookEndpoint(b, "github", cfg.Webhook)
	if err != nil {
		return nil, err
	}
	g := &githubSource{ep: ep, cfg: cfg}
	var hookSecret string
	if cfg.WebhookSecret != nil {
		if hookSecret, err = gitHookSecret(b, "webhookSecret", cfg.WebhookSecret); err != nil {
			return nil, err
		}
		g.secret = []byte(hookSecret)
	}
	var mgr Source
	if githubNeedsHooks(cfg) {
		if mgr, err = newGithubHooks(b, cfg, hookSecret); err != nil {
			return nil, err
		}
	}
	if err := ep.register(g); err != nil {
		return nil, err
	}
	return mgr, nil
}

// ServeHTTP checks the delivery's signature, drops the events the source does not listen to
// (answering 200, so GitHub does not report them as failed), and answers 200 only once Kafka
// acknowledged the event.
func (g *githubSource) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !g.ep.accept(rw, r) {
		return
	}
	body, ok := g.ep.readBody(rw, r)
	if !ok {
		return
	}
	if g.secret != nil {
		if status, msg := githubVerify(r.Header, body, g.secret); status != 0 {
			http.Error(rw, msg, status)
			return
		}
	}
	event := r.Header.Get(githubEventHeader)
	if event == "ping" && !slices.Contains(g.cfg.Events, "ping") {
		// GitHub's handshake when a hook is created: answered, not published.
		_, _ = io.WriteString(rw, "pong\n")
		return
	}
	if !githubWants(g.cfg.Events, event) {
		_, _ = fmt.Fprintf(rw, "ignored: event %q is not one of the events this endpoint listens to\n", event)
		return
	}
	payload, err := githubPayload(r.Header, body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	header := r.Header.Clone()
	// Credentials never go into the event: the bearer token of authSecret, and the HMACs of
	// the body with the webhook secret.
	for _, h := range []string{"Authorization", githubSignature256, githubSignatureLegacy} {
		header.Del(h)
	}
	id := gitHookID(r.Header.Get(githubDeliveryHeader))
	g.ep.publish(rw, r, id, gitHookData{Headers: header, Body: payload, Metadata: g.cfg.Metadata})
}

// githubWants reports whether events (empty: every event, as Argo, which does not filter)
// lets event through; "*" is every event.
func githubWants(events []string, event string) bool {
	return len(events) == 0 || slices.Contains(events, "*") || (event != "" && slices.Contains(events, event))
}

// githubVerify checks the delivery's HMAC as go-github's ValidatePayload does for Argo:
// X-Hub-Signature-256 when present, else the legacy X-Hub-Signature, "<algo>=<hex>" with algo
// sha1, sha256 or sha512, over the raw body. It returns 0 when the signature holds, else the
// status to answer: 401 when there is no usable signature, 403 when it does not match (Argo
// answers 400 to both; GitHub treats every non-2xx answer alike).
func githubVerify(h http.Header, body, secret []byte) (int, string) {
	sig, name := h.Get(githubSignature256), githubSignature256
	if sig == "" {
		sig, name = h.Get(githubSignatureLegacy), githubSignatureLegacy
	}
	if sig == "" {
		return http.StatusUnauthorized, "missing " + githubSignature256 + " header: this endpoint requires deliveries signed with the webhook secret"
	}
	algo, sum, _ := strings.Cut(sig, "=")
	var newHash func() hash.Hash
	switch algo {
	case "sha1":
		newHash = sha1.New
	case "sha256":
		newHash = sha256.New
	case "sha512":
		newHash = sha512.New
	default:
		return http.StatusUnauthorized, fmt.Sprintf("%s: expected sha256=<hex digest>", name)
	}
	want, err := hex.DecodeString(sum)
	if err != nil || len(want) == 0 {
		return http.StatusUnauthorized, fmt.Sprintf("%s: the digest is not hexadecimal", name)
	}
	mac := hmac.New(newHash, secret)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), want) {
		return http.StatusForbidden, fmt.Sprintf("%s does not match the body: wrong webhook secret or altered delivery", name)
	}
	return 0, ""
}

// githubPayload returns the event body as Argo builds it: the JSON payload (the body, or its
// payload form field for contentType form) with the X-GitHub-Event and X-GitHub-Delivery
// headers added as top-level fields.
func githubPayload(h http.Header, body []byte) (json.RawMessage, error) {
	ct := h.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, fmt.Errorf("Content-Type %q: expected application/json or application/x-www-form-urlencoded", ct)
	}
	var payload []byte
	switch mt {
	case "application/json":
		payload = body
	case "application/x-www-form-urlencoded":
		form, err := neturl.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("form body: %v", err)
		}
		payload = []byte(form.Get("payload"))
	default:
		return nil, fmt.Errorf("Content-Type %q: expected application/json or application/x-www-form-urlencoded", ct)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
		return nil, errors.New("the payload is not a JSON object")
	}
	for _, k := range []string{githubEventHeader, githubDeliveryHeader} {
		v, _ := json.Marshal(h.Get(k))
		obj[k] = v
	}
	return json.Marshal(obj)
}

// --- GitHub hooks -------------------------------------------------------------------------

// githubHook is a repository or organization webhook as the GitHub REST API shows it.
type githubHook struct {
	ID     int64          `json:"id"`
	Name   string         `json:"name,omitempty"`
	Events []string       `json:"events,omitempty"`
	Active bool           `json:"active"`
	Config map[string]any `json:"config,omitempty"`
}

// githubHooks keeps the hooks of one github event.
type githubHooks struct {
	hookSet // base: the API base URL, with a trailing slash
	hook    githubHook
	url     string // the hook's target URL: webhook.url + webhook.endpoint
	events  []string
	repos   []api.OwnedRepositories
	orgs    []string
}

// ensure finds or creates the hook on every repository or organization, as Argo does: a hook
// with the same URL and the same events (or both "*") is reused.
func (h *githubHooks) ensure(ctx context.Context) error {
	return h.ensureAll(ctx, h.paths(), h.ensureOne)
}

func (h *githubHooks) remove(ctx context.Context) error { return h.removeAll(ctx, h.paths()) }

func newGithubHooks(b Build, cfg api.GithubEventSource, hookSecret string) (Source, error) {
	base := githubDefaultAPI
	if cfg.GithubBaseURL != "" {
		base = strings.TrimRight(cfg.GithubBaseURL, "/") + "/"
	}
	a := newGitHookAPI(b)
	if hookSecret != "" {
		a.secrets = append(a.secrets, hookSecret)
	}
	switch {
	case cfg.APIToken != nil:
		tok, err := gitHookSecret(b, "apiToken", cfg.APIToken)
		if err != nil {
			return nil, err
		}
		a.secrets = append(a.secrets, tok)
		a.authorize = func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "token "+tok)
			return nil
		}
	default:
		pemKey, err := gitHookSecret(b, "githubApp.privateKey", cfg.GithubApp.PrivateKey)
		if err != nil {
			return nil, err
		}
		key, err := githubParseKey([]byte(pemKey))
		if err != nil {
			return nil, fmt.Errorf("githubApp.privateKey: %w", err)
		}
		app := &githubAppAuth{api: a, base: base, appID: cfg.GithubApp.AppID, installationID: cfg.GithubApp.InstallationID, key: key}
		a.authorize = app.authorize
	}
	config := map[string]any{"url": gitHookURL(cfg.Webhook), "insecure_ssl": "0"}
	if cfg.Insecure {
		config["insecure_ssl"] = "1"
	}
	if cfg.ContentType != "" {
		config["content_type"] = cfg.ContentType
	}
	if hookSecret != "" {
		config["secret"] = hookSecret
	}
	h := &githubHooks{
		hookSet: hookSet{api: a, kind: "github", base: base, ids: map[string]int64{}},
		hook:    githubHook{Name: "web", Events: cfg.Events, Active: cfg.Active, Config: config},
		url:     gitHookURL(cfg.Webhook),
		events:  cfg.Events,
		repos:   githubRepositories(cfg),
		orgs:    cfg.Organizations,
	}
	return newGitHookManager(b, "github", h.ensure, h.remove, cfg.DeleteHookOnFinish), nil
}

// paths lists the hooks collections of the repositories or organizations.
func (h *githubHooks) paths() []string {
	var out []string
	for _, o := range h.orgs {
		out = append(out, "orgs/"+neturl.PathEscape(o)+"/hooks")
	}
	for _, r := range h.repos {
		for _, n := range r.Names {
			out = append(out, "repos/"+neturl.PathEscape(r.Owner)+"/"+neturl.PathEscape(n)+"/hooks")
		}
	}
	return out
}

func (h *githubHooks) ensureOne(ctx context.Context, p string) (id int64, created bool, err error) {
	for page := 1; page <= gitHookMaxPages; page++ {
		var hooks []githubHook
		if err := h.api.do(ctx, http.MethodGet, h.base+p+"?per_page=100&page="+strconv.Itoa(page), nil, &hooks); err != nil {
			return 0, false, fmt.Errorf("list hooks: %w", err)
		}
		for _, hk := range hooks {
			if githubSameHook(hk, h.url, h.events) {
				return hk.ID, false, nil
			}
		}
		if len(hooks) < 100 {
			break
		}
	}
	var out githubHook
	if err := h.api.do(ctx, http.MethodPost, h.base+p, h.hook, &out); err != nil {
		return 0, false, fmt.Errorf("create hook: %w", err)
	}
	return out.ID, true, nil
}

// githubSameHook is Argo's compareHook.
func githubSameHook(hk githubHook, target string, events []string) bool {
	if u, _ := hk.Config["url"].(string); u != target {
		return false
	}
	a, b := slices.Clone(hk.Events), slices.Clone(events)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b) || (slices.Contains(a, "*") && slices.Contains(b, "*"))
}

// githubAppAuth authenticates as a GitHub App installation: a JWT signed with the App's
// private key buys an installation token, kept until a minute before it expires.
type githubAppAuth struct {
	api            *gitHookAPI
	base           string
	appID          int64
	installationID int64
	key            *rsa.PrivateKey

	mu      sync.Mutex
	token   string
	expires time.Time
}

func (a *githubAppAuth) authorize(ctx context.Context, req *http.Request) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == "" || time.Until(a.expires) < time.Minute {
		jwt, err := githubAppJWT(a.key, a.appID, time.Now())
		if err != nil {
			return err
		}
		var out struct {
			Token     string    `json:"token"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		u := fmt.Sprintf("%sapp/installations/%d/access_tokens", a.base, a.installationID)
		err = a.api.send(ctx, http.MethodPost, u, nil, &out, func(r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+jwt)
			return nil
		})
		if err != nil {
			return fmt.Errorf("github app installation token: %w", err)
		}
		if out.Token == "" {
			return errors.New("github app installation token: the answer holds no token")
		}
		a.api.addSecret(out.Token)
		a.token, a.expires = out.Token, out.ExpiresAt
		if a.expires.IsZero() {
			a.expires = time.Now().Add(time.Hour)
		}
	}
	req.Header.Set("Authorization", "token "+a.token)
	return nil
}

// githubAppJWT is the RS256 JWT GitHub wants from an App: issued 30 s in the past against
// clock drift, valid for 5 minutes, issuer the App id.
func githubAppJWT(key *rsa.PrivateKey, appID int64, now time.Time) (string, error) {
	iat := now.Add(-30 * time.Second).Unix()
	claims, _ := json.Marshal(map[string]any{"iat": iat, "exp": iat + 5*60, "iss": strconv.FormatInt(appID, 10)})
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign the github app JWT: %w", err)
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// githubParseKey reads the App's PEM private key, PKCS#1 (as GitHub hands it out) or PKCS#8.
// Errors never quote the key.
func githubParseKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not a PEM encoded key")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not an RSA private key in PKCS#1 or PKCS#8 form")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T key; expected an RSA key", k)
	}
	return rk, nil
}

// --- shared by github and gitlab ----------------------------------------------------------

// gitHookData is the event data of github and gitlab events, as Argo's GithubEventData and
// GitLabEventData: the request headers, the body and the user's metadata.
type gitHookData struct {
	Headers  http.Header       `json:"headers"`
	Body     json.RawMessage   `json:"body"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// gitHookCheckContext validates the webhook context of a github or gitlab event; api.Validate
// only checks the webhook source's own.
func gitHookCheckContext(typ string, w *api.WebhookContext) error {
	if w == nil {
		return errors.New("webhook: missing; expected the port, endpoint and method to receive deliveries on")
	}
	var errs []error
	if port, err := strconv.Atoi(w.Port); err != nil || port < 1 || port > 65535 {
		errs = append(errs, fmt.Errorf("webhook.port: %q; expected a TCP port number 1-65535", w.Port))
	}
	if !strings.HasPrefix(w.Endpoint, "/") {
		errs = append(errs, fmt.Errorf("webhook.endpoint: %q; expected a path starting with /", w.Endpoint))
	}
	switch w.Method {
	case "", http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodGet, http.MethodDelete, http.MethodHead:
	default:
		errs = append(errs, fmt.Errorf("webhook.method: %q; expected POST (what %s sends)", w.Method, typ))
	}
	if w.MaxPayloadSize != nil && *w.MaxPayloadSize <= 0 {
		errs = append(errs, fmt.Errorf("webhook.maxPayloadSize: %d; expected a positive number of bytes", *w.MaxPayloadSize))
	}
	if w.URL != "" {
		errs = append(errs, gitHookCheckURL("webhook.url", w.URL))
	}
	errs = append(errs, gitHookCheckSecret("webhook.authSecret", w.AuthSecret))
	errs = append(errs, checkServerTLS("webhook.", w.ServerCertSecret, w.ServerKeySecret))
	return errors.Join(errs...)
}

func gitHookCheckURL(field, s string) error {
	if s == "" {
		return nil
	}
	u, err := neturl.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: %q; expected an absolute http or https URL", field, s)
	}
	return nil
}

func gitHookCheckSecret(field string, s *api.SecretKeySelector) error {
	if s != nil && (s.Name == "" || s.Key == "") {
		return fmt.Errorf("%s: expected both name and key of a secret", field)
	}
	return nil
}

// gitHookSecret resolves a secret; an empty value is refused, since it would silently turn off
// what the secret protects.
func gitHookSecret(b Build, field string, s *api.SecretKeySelector) (string, error) {
	v, err := b.Env.Secrets.Resolve(s.Name, s.Key)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	if v == "" {
		return "", fmt.Errorf("%s: secret %s/%s is empty", field, s.Name, s.Key)
	}
	return v, nil
}

// gitHookURL is the URL the hook posts to, Argo's FormattedURL(webhook.url, webhook.endpoint).
func gitHookURL(w *api.WebhookContext) string {
	ep := w.Endpoint
	if !strings.HasPrefix(ep, "/") {
		ep = "/" + ep
	}
	return strings.TrimRight(w.URL, "/") + ep
}

// gitHookID is the CloudEvent id: the delivery id the outside system gives (it stays the same
// when a delivery is retried or redelivered), or a fresh UUID when there is none fit for an id.
func gitHookID(delivery string) string {
	ok := delivery != "" && len(delivery) <= 128
	for _, c := range delivery {
		if c <= ' ' || c > '~' {
			ok = false
		}
	}
	if ok {
		return delivery
	}
	return uuid.NewString()
}

// gitHookEndpoint is the HTTP side of a github or gitlab event.
type gitHookEndpoint struct {
	b       Build
	typ     string
	port    int
	path    string
	method  string
	bearer  []byte // webhook.authSecret; nil when not set
	maxBody int64
	tls     *serverTLS // nil: plain HTTP
}

func newGitHookEndpoint(b Build, typ string, w *api.WebhookContext) (*gitHookEndpoint, error) {
	if w == nil {
		return nil, errors.New("webhook: missing")
	}
	port, err := strconv.Atoi(w.Port)
	if err != nil {
		return nil, fmt.Errorf("webhook.port: %q is not a port number", w.Port)
	}
	e := &gitHookEndpoint{b: b, typ: typ, port: port, path: w.Endpoint, method: w.Method, maxBody: DefaultMaxPayloadSize}
	if e.method == "" {
		e.method = http.MethodPost
	}
	if w.MaxPayloadSize != nil {
		e.maxBody = *w.MaxPayloadSize
	}
	if w.AuthSecret != nil {
		tok, err := gitHookSecret(b, "webhook.authSecret", w.AuthSecret)
		if err != nil {
			return nil, err
		}
		e.bearer = []byte(tok)
	}
	if e.tls, err = loadServerTLS(b, "webhook.", w.ServerCertSecret, w.ServerKeySecret); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *gitHookEndpoint) register(h http.Handler) error {
	owner := fmt.Sprintf("eventsource %s event %s", e.b.EventSource.Metadata.Name, e.b.Event.Name)
	return e.b.Env.routes.add(e.port, e.path, owner, e.tls, h)
}

// accept checks the method and, with webhook.authSecret, the bearer token (checked by Argo's
// webhook router for every webhook-based source). False means it answered.
func (e *gitHookEndpoint) accept(rw http.ResponseWriter, r *http.Request) bool {
	if r.Method != e.method {
		rw.Header().Set("Allow", e.method)
		http.Error(rw, fmt.Sprintf("method %s not allowed; this endpoint accepts %s", r.Method, e.method), http.StatusMethodNotAllowed)
		return false
	}
	if e.bearer != nil {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !gitHookEqual(got, e.bearer) {
			http.Error(rw, "invalid or missing bearer token in the Authorization header", http.StatusUnauthorized)
			return false
		}
	}
	return true
}

// gitHookEqual compares a presented secret with the expected one in constant time, length
// included.
func gitHookEqual(got string, want []byte) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256(want)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (e *gitHookEndpoint) readBody(rw http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, e.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(rw, fmt.Sprintf("request body larger than maxPayloadSize (%d bytes)", e.maxBody), http.StatusRequestEntityTooLarge)
			return nil, false
		}
		http.Error(rw, "cannot read the request body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

// publish produces the event and answers 200 only once Kafka acknowledged it, 503 when it did
// not in time, and 413 when the event can never fit in a record.
func (e *gitHookEndpoint) publish(rw http.ResponseWriter, r *http.Request, id string, d gitHookData) {
	env := e.b.Env
	ns, es, name := e.b.EventSource.Metadata.Namespace, e.b.EventSource.Metadata.Name, e.b.Event.Name
	env.Metrics.EventsReceived.WithLabelValues(es, name).Inc()
	data, err := json.Marshal(d)
	if err != nil {
		http.Error(rw, "cannot encode the event: "+err.Error(), http.StatusInternalServerError)
		return
	}
	ev := cloudevents.New()
	ev.SetID(id)
	ev.SetSource(es)
	ev.SetSubject(name)
	ev.SetType(e.typ)
	ev.SetTime(time.Now().UTC())
	if err := ev.SetData("application/json", data); err != nil {
		http.Error(rw, "cannot encode the event: "+err.Error(), http.StatusInternalServerError)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), env.PublishTimeout)
	defer cancel()
	if err := env.Publisher.Publish(ctx, e.b.Topic, ev); errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
		env.Metrics.PublishFailed(ns, es, name, 1)
		http.Error(rw, fmt.Sprintf("event of %d bytes is larger than Kafka accepts (%d bytes)", len(data), topology.MaxRecordBytes), http.StatusRequestEntityTooLarge)
		return
	} else if err != nil {
		env.Metrics.PublishFailed(ns, es, name, 1)
		env.Logger.Warn(e.typ+": Kafka did not acknowledge the event; answered 503", "eventsource", es, "event", name, "err", err)
		http.Error(rw, "event not accepted: Kafka did not acknowledge it in time; retry later", http.StatusServiceUnavailable)
		return
	}
	env.Metrics.Published(ns, es, name, 1)
	_, _ = io.WriteString(rw, "success\n")
}

// gitHookMaxPages bounds the pages of hooks read from one repository, project or group.
const gitHookMaxPages = 20

// gitHookAPI calls the GitHub or GitLab REST API with net/http. Error texts never carry the
// tokens or secrets it knows of.
type gitHookAPI struct {
	client    *http.Client
	log       *slog.Logger
	authorize func(ctx context.Context, req *http.Request) error

	mu      sync.Mutex
	secrets []string
}

func newGitHookAPI(b Build) *gitHookAPI {
	return &gitHookAPI{
		client: &http.Client{Timeout: 30 * time.Second},
		log:    b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name),
	}
}

func (a *gitHookAPI) addSecret(s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.secrets = append(a.secrets, s)
}

// scrub replaces every known secret in s.
func (a *gitHookAPI) scrub(s string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range a.secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

// do sends an authorized request with in as JSON body (nil: none) and decodes a 2xx answer
// into out (nil: ignored).
func (a *gitHookAPI) do(ctx context.Context, method, u string, in, out any) error {
	return a.send(ctx, method, u, in, out, func(r *http.Request) error { return a.authorize(ctx, r) })
}

func (a *gitHookAPI) send(ctx context.Context, method, u string, in, out any, prepare func(*http.Request) error) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return errors.New(a.scrub(err.Error()))
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "kevents")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := prepare(req); err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return errors.New(a.scrub(err.Error()))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	where := method + " " + req.URL.Redacted()
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(raw))
		var e struct {
			Message json.RawMessage `json:"message"`
			Error   string          `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil {
			switch {
			case len(e.Message) > 0:
				var s string
				if json.Unmarshal(e.Message, &s) == nil {
					msg = s
				} else {
					msg = string(e.Message)
				}
			case e.Error != "":
				msg = e.Error
			}
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return errors.New(a.scrub(fmt.Sprintf("%s: %s: %s", where, resp.Status, msg)))
	}
	if out != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return errors.New(a.scrub(fmt.Sprintf("%s: unexpected answer: %v", where, err)))
		}
	}
	return nil
}

// gitHookManager runs the hook upkeep of a github or gitlab event: ensure at start and every
// gitHookResync until the source stops, then remove when deleteHookOnFinish is set. Failures
// are logged, never fatal: the endpoint keeps receiving what hooks already exist, as in Argo.
type gitHookManager struct {
	typ            string
	log            *slog.Logger
	jitter, resync time.Duration
	ensure, remove func(context.Context) error
	deleteOnFinish bool
}

func newGitHookManager(b Build, typ string, ensure, remove func(context.Context) error, deleteOnFinish bool) *gitHookManager {
	return &gitHookManager{
		typ:            typ,
		log:            b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name),
		jitter:         gitHookJitter,
		resync:         gitHookResync,
		ensure:         ensure,
		remove:         remove,
		deleteOnFinish: deleteOnFinish,
	}
}

func (m *gitHookManager) Run(ctx context.Context) error {
	if m.jitter > 0 {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(m.jitter)))
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(n.Int64())):
		}
	}
	t := time.NewTicker(m.resync)
	defer t.Stop()
	for ctx.Err() == nil {
		if err := m.ensure(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn(m.typ+": cannot set up every hook; retrying in "+m.resync.String(), "err", err)
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	if m.deleteOnFinish {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.remove(dctx); err != nil {
			m.log.Warn(m.typ+": cannot delete every hook", "err", err)
		}
	}
	return nil
}

// hookSet is what the github and gitlab hook managers share: the hook id per hooks collection
// (repos/o/n/hooks, projects/x/hooks, ...) and the loops over the collections.
type hookSet struct {
	api  *gitHookAPI
	kind string // "github", "gitlab": prefixes log messages
	base string // API base URL
	ids  map[string]int64
}

// ensureAll runs ensureOne for every hooks collection and remembers the hook ids; a collection
// that fails does not stop the others.
func (s *hookSet) ensureAll(ctx context.Context, paths []string, ensureOne func(context.Context, string) (int64, bool, error)) error {
	var errs []error
	for _, p := range paths {
		id, created, err := ensureOne(ctx, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if created || s.ids[p] != id {
			s.api.log.Info(s.kind+": hook in place", "hooks", p, "id", id, "created", created)
		}
		s.ids[p] = id
	}
	return errors.Join(errs...)
}

// removeAll deletes the hooks this source found or created.
func (s *hookSet) removeAll(ctx context.Context, paths []string) error {
	var errs []error
	for _, p := range paths {
		id, ok := s.ids[p]
		if !ok {
			continue
		}
		if err := s.api.do(ctx, http.MethodDelete, s.base+p+"/"+strconv.FormatInt(id, 10), nil, nil); err != nil {
			errs = append(errs, fmt.Errorf("delete hook %d: %w", id, err))
			continue
		}
		delete(s.ids, p)
		s.api.log.Info(s.kind+": hook deleted", "hooks", p, "id", id)
	}
	return errors.Join(errs...)
}
