package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/topology"
)

// The bitbucket source receives Bitbucket Cloud webhook deliveries on its webhook endpoint.
// Bitbucket Cloud deliveries carry no signature Argo's spec could check; webhook.authSecret
// (a bearer token) is the way to authenticate them.
//
// Acknowledgement: the source answers 200 only after Kafka acknowledged the event, 503 when
// Kafka did not in time, and 4xx for deliveries it refuses for good. The event id is the
// delivery's X-Request-UUID.
//
// Hooks: with auth (basic or oauthToken) and webhook.url set (Argo's condition), the source
// creates the hook on each repository through the Bitbucket Cloud API (BitbucketAPIURLEnv
// overrides its base URL), replacing a hook with the same URL whose events differ (Argo replaces
// it on every start), checks again every minute, and deletes the hooks on stop when
// deleteHookOnFinish is set.
func init() {
	Register("bitbucket", Spec{
		Summary: "Bitbucket Cloud webhook deliveries (events filtered by X-Event-Key); creates the hooks through the Bitbucket API with auth.basic or auth.oauthToken.",
		Check:   checkBitbucket,
	}, newBitbucket)
}

// BitbucketAPIURLEnv names the environment variable that overrides the base URL of the
// Bitbucket Cloud REST API (default DefaultBitbucketAPIURL), read when an event is built. It
// exists for tests and for proxies.
const BitbucketAPIURLEnv = "KEVENTS_BITBUCKET_API_URL"

// DefaultBitbucketAPIURL is the Bitbucket Cloud REST API.
const DefaultBitbucketAPIURL = "https://api.bitbucket.org/2.0"

func checkBitbucket(ev api.Event) error {
	b, specErr := specOf[api.BitbucketEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(gitHookCheckContext("bitbucket", b.Webhook))
	if len(bitbucketRepositories(b)) == 0 {
		add(errors.New("repositories: empty; expected at least one {owner, repositorySlug} (or the deprecated owner and repositorySlug)"))
	}
	for i, r := range b.Repositories {
		if r.Owner == "" {
			add(fmt.Errorf("repositories[%d].owner: missing; expected the workspace or user owning the repository", i))
		}
		if r.RepositorySlug == "" {
			add(fmt.Errorf("repositories[%d].repositorySlug: missing", i))
		}
	}
	if a := b.Auth; a != nil {
		switch {
		case a.Basic != nil && a.OAuthToken != nil:
			add(errors.New("auth.basic, auth.oauthToken: both set; expected one of them"))
		case a.Basic != nil:
			if a.Basic.Username == nil || a.Basic.Password == nil {
				add(errors.New("auth.basic: expected both username and password"))
			}
			add(gitHookCheckSecret("auth.basic.username", a.Basic.Username))
			add(gitHookCheckSecret("auth.basic.password", a.Basic.Password))
		case a.OAuthToken != nil:
			add(gitHookCheckSecret("auth.oauthToken", a.OAuthToken))
		default:
			add(errors.New("auth: empty; expected basic or oauthToken"))
		}
	}
	for i, e := range b.Events {
		if e == "" {
			add(fmt.Errorf("events[%d]: empty; expected a Bitbucket event key such as repo:push", i))
		}
	}
	if bitbucketNeedsHooks(b) && len(b.Events) == 0 {
		add(errors.New("events: empty; expected the Bitbucket event keys of the hook to create (repo:push, pullrequest:created, ...)"))
	}
	return errors.Join(errs...)
}

// bitbucketRepositories is Argo's GetBitbucketRepositories: repositories, or the deprecated
// owner/repositorySlug pair.
func bitbucketRepositories(b api.BitbucketEventSource) []api.BitbucketRepository {
	if len(b.Repositories) > 0 {
		return b.Repositories
	}
	if b.DeprecatedOwner != "" && b.DeprecatedRepositorySlug != "" {
		return []api.BitbucketRepository{{Owner: b.DeprecatedOwner, RepositorySlug: b.DeprecatedRepositorySlug}}
	}
	return nil
}

// bitbucketNeedsHooks is Argo's ShouldCreateWebhooks.
func bitbucketNeedsHooks(b api.BitbucketEventSource) bool {
	return b.Auth != nil && (b.Auth.Basic != nil || b.Auth.OAuthToken != nil) && b.Webhook != nil && b.Webhook.URL != ""
}

// bitbucketWants reports whether events (empty: every event) lets the event key through.
func bitbucketWants(events []string, key string) bool {
	return len(events) == 0 || slices.Contains(events, "*") || (key != "" && slices.Contains(events, key))
}

type bitbucketSource struct {
	ep  *gitHookEndpoint
	cfg api.BitbucketEventSource
}

func newBitbucket(b Build) (Source, error) {
	cfg, specErr := specOf[api.BitbucketEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	ep, err := newGitHookEndpoint(b, "bitbucket", cfg.Webhook)
	if err != nil {
		return nil, err
	}
	var mgr Source
	if bitbucketNeedsHooks(cfg) {
		if mgr, err = newBitbucketHooks(b, cfg); err != nil {
			return nil, err
		}
	}
	if err := ep.register(&bitbucketSource{ep: ep, cfg: cfg}); err != nil {
		return nil, err
	}
	return mgr, nil
}

// ServeHTTP drops the events the source does not listen to (answering 200, so Bitbucket does
// not count them as failed) and answers 200 only once Kafka acknowledged the event.
func (s *bitbucketSource) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !s.ep.accept(rw, r) {
		return
	}
	body, ok := s.ep.readBody(rw, r)
	if !ok {
		return
	}
	key := r.Header.Get("X-Event-Key")
	if !bitbucketWants(s.cfg.Events, key) {
		_, _ = fmt.Fprintf(rw, "ignored: X-Event-Key %q is not one of the events this endpoint listens to\n", key)
		return
	}
	if !json.Valid(body) {
		// Argo cannot encode such an event either and answers 400.
		http.Error(rw, "the body is not JSON", http.StatusBadRequest)
		return
	}
	header := r.Header.Clone()
	header.Del("Authorization")
	s.ep.publish(rw, r, gitHookID(r.Header.Get("X-Request-UUID")), gitHookData{Headers: header, Body: body, Metadata: s.cfg.Metadata})
}

// --- Bitbucket Cloud hooks ----------------------------------------------------------------

// bitbucketHook is a repository webhook as the Bitbucket Cloud API shows it.
type bitbucketHook struct {
	UUID        string   `json:"uuid,omitempty"`
	URL         string   `json:"url"`
	Description string   `json:"description,omitempty"`
	Active      bool     `json:"active"`
	Events      []string `json:"events"`
}

// bitbucketHooks keeps the hooks of one bitbucket event: the hook's uuid per repository
// hooks collection.
type bitbucketHooks struct {
	api   *gitHookAPI
	base  string // with a trailing slash
	hook  bitbucketHook
	repos []api.BitbucketRepository
	uuids map[string]string
}

func newBitbucketHooks(b Build, cfg api.BitbucketEventSource) (Source, error) {
	base := DefaultBitbucketAPIURL
	if v, ok := os.LookupEnv(BitbucketAPIURLEnv); ok && v != "" {
		base = v
	}
	if err := gitHookCheckURL(BitbucketAPIURLEnv, base); err != nil {
		return nil, err
	}
	a := newGitHookAPI(b)
	if basic := cfg.Auth.Basic; basic != nil {
		user, err := gitHookSecret(b, "auth.basic.username", basic.Username)
		if err != nil {
			return nil, err
		}
		pass, err := gitHookSecret(b, "auth.basic.password", basic.Password)
		if err != nil {
			return nil, err
		}
		a.secrets = append(a.secrets, pass)
		a.authorize = func(_ context.Context, req *http.Request) error {
			req.SetBasicAuth(user, pass)
			return nil
		}
	} else {
		tok, err := gitHookSecret(b, "auth.oauthToken", cfg.Auth.OAuthToken)
		if err != nil {
			return nil, err
		}
		a.secrets = append(a.secrets, tok)
		a.authorize = func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+tok)
			return nil
		}
	}
	h := &bitbucketHooks{
		api:   a,
		base:  strings.TrimRight(base, "/") + "/",
		hook:  bitbucketHook{URL: gitHookURL(cfg.Webhook), Description: "webhook managed by kevents", Active: true, Events: cfg.Events},
		repos: bitbucketRepositories(cfg),
		uuids: map[string]string{},
	}
	return newGitHookManager(b, "bitbucket", h.ensure, h.remove, cfg.DeleteHookOnFinish), nil
}

func (h *bitbucketHooks) path(r api.BitbucketRepository) string {
	return "repositories/" + neturl.PathEscape(r.Owner) + "/" + neturl.PathEscape(r.RepositorySlug) + "/hooks"
}

// ensure finds or creates the hook on every repository; a repository that fails does not stop
// the others.
func (h *bitbucketHooks) ensure(ctx context.Context) error {
	var errs []error
	for _, r := range h.repos {
		p := h.path(r)
		id, created, err := h.ensureOne(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", r.Owner, r.RepositorySlug, err))
			continue
		}
		if created || h.uuids[p] != id {
			h.api.log.Info("bitbucket: hook in place", "hooks", p, "uuid", id, "created", created)
		}
		h.uuids[p] = id
	}
	return errors.Join(errs...)
}

func (h *bitbucketHooks) ensureOne(ctx context.Context, p string) (uuid string, created bool, err error) {
	next := h.base + p + "?pagelen=100"
	for page := 0; next != "" && page < gitHookMaxPages; page++ {
		var list struct {
			Values []bitbucketHook `json:"values"`
			Next   string          `json:"next"`
		}
		if err := h.api.do(ctx, http.MethodGet, next, nil, &list); err != nil {
			return "", false, fmt.Errorf("list hooks: %w", err)
		}
		for _, hk := range list.Values {
			if hk.URL != h.hook.URL {
				continue
			}
			if hk.Active && sameSet(hk.Events, h.hook.Events) {
				return hk.UUID, false, nil
			}
			// Argo's way to bring a hook up to date: replace it.
			if err := h.api.do(ctx, http.MethodDelete, h.base+p+"/"+neturl.PathEscape(hk.UUID), nil, nil); err != nil {
				return "", false, fmt.Errorf("replace hook %s: %w", hk.UUID, err)
			}
		}
		// Pages are followed only within the API: the credentials go nowhere else.
		next = list.Next
		if next != "" && !strings.HasPrefix(next, h.base) {
			return "", false, fmt.Errorf("list hooks: next page %q is outside the API at %s", next, h.base)
		}
	}
	var out bitbucketHook
	if err := h.api.do(ctx, http.MethodPost, h.base+p, h.hook, &out); err != nil {
		return "", false, fmt.Errorf("create hook: %w", err)
	}
	return out.UUID, true, nil
}

// remove deletes the hooks this source found or created.
func (h *bitbucketHooks) remove(ctx context.Context) error {
	var errs []error
	for p, id := range h.uuids {
		if err := h.api.do(ctx, http.MethodDelete, h.base+p+"/"+neturl.PathEscape(id), nil, nil); err != nil {
			errs = append(errs, fmt.Errorf("delete hook %s: %w", id, err))
			continue
		}
		delete(h.uuids, p)
		h.api.log.Info("bitbucket: hook deleted", "hooks", p, "uuid", id)
	}
	return errors.Join(errs...)
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	sort.Strings(x)
	sort.Strings(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// --- shared by bitbucket, bitbucketserver, stripe and slack -------------------------------

// hookEvent is one event of a delivery: its id and its data, encoded as JSON.
type hookEvent struct {
	id   string
	data any
}

// publishEvents produces the events of one delivery, in order, and answers 200 only once Kafka
// acknowledged every one, 503 when it did not in time, and 413 when an event can never fit in a
// record. After a 503 the events acknowledged before keep their ids when the delivery is sent
// again, so they are recognisable downstream.
func (e *gitHookEndpoint) publishEvents(rw http.ResponseWriter, r *http.Request, events []hookEvent) {
	env := e.b.Env
	ns, es, name := e.b.EventSource.Metadata.Namespace, e.b.EventSource.Metadata.Name, e.b.Event.Name
	env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(events)))
	evs := make([]cloudevents.Event, 0, len(events))
	for _, he := range events {
		data, err := json.Marshal(he.data)
		if err != nil {
			http.Error(rw, "cannot encode the event: "+err.Error(), http.StatusInternalServerError)
			return
		}
		ev := cloudevents.New()
		ev.SetID(he.id)
		ev.SetSource(es)
		ev.SetSubject(name)
		ev.SetType(e.typ)
		ev.SetTime(time.Now().UTC())
		if err := ev.SetData("application/json", data); err != nil {
			http.Error(rw, "cannot encode the event: "+err.Error(), http.StatusInternalServerError)
			return
		}
		evs = append(evs, ev)
	}
	ctx, cancel := context.WithTimeout(r.Context(), env.PublishTimeout)
	defer cancel()
	for i, ev := range evs {
		if err := env.Publisher.Publish(ctx, e.b.Topic, ev); errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
			env.Metrics.PublishFailed(ns, es, name, len(evs)-i)
			http.Error(rw, fmt.Sprintf("event of %d bytes is larger than Kafka accepts (%d bytes)", len(ev.Data()), topology.MaxRecordBytes), http.StatusRequestEntityTooLarge)
			return
		} else if err != nil {
			env.Metrics.PublishFailed(ns, es, name, len(evs)-i)
			env.Logger.Warn(e.typ+": Kafka did not acknowledge the event; answered 503", "eventsource", es, "event", name, "err", err)
			http.Error(rw, "event not accepted: Kafka did not acknowledge it in time; retry later", http.StatusServiceUnavailable)
			return
		}
		env.Metrics.Published(ns, es, name, 1)
	}
	_, _ = io.WriteString(rw, "success\n")
}
