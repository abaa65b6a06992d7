package source

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kevents/kevents/api"
)

// The stripe source receives Stripe webhook deliveries on its webhook endpoint.
//
// Signatures: Argo checks none, and its spec has no field for the endpoint's signing secret.
// With the kevents extension kevents.signingSecret, a delivery must carry a Stripe-Signature
// ("t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">", several v1 allowed) made with that
// secret less than stripeTolerance ago, as Stripe's libraries check it: 401 when it is missing,
// unreadable or too old, 403 when it does not match.
//
// Events: the body must be a Stripe event (a JSON object with a type), else 400 as in Argo.
// With eventFilter, events of other types are answered 200 and dropped (Argo answers 400, which
// has Stripe retry them for days). The event data is Argo's StripeEventData, {"event": the
// Stripe event as delivered, "metadata"}, and the event id is the Stripe event's id, which a
// retried delivery keeps.
//
// createWebhook: with apiKey and webhook.url, the source makes sure a webhook endpoint with its
// URL exists at Stripe (StripeAPIURLEnv overrides the API's base URL), enabled for eventFilter
// (every event without one), creating it or updating its events, and checks again every minute.
// Argo creates a new endpoint on every start. The signing secret of an endpoint created here is
// not kept: members could not share it; set kevents.signingSecret from the Stripe dashboard.
func init() {
	Register("stripe", Spec{
		Summary: "Stripe webhook deliveries (Stripe-Signature checked with kevents.signingSecret, eventFilter); creates the endpoint through the Stripe API with createWebhook.",
		Check:   checkStripe,
	}, newStripe)
}

// StripeAPIURLEnv names the environment variable that overrides the base URL of the Stripe API
// (default DefaultStripeAPIURL), read when an event is built. It exists for tests and proxies.
const StripeAPIURLEnv = "KEVENTS_STRIPE_API_URL"

// DefaultStripeAPIURL is the Stripe API.
const DefaultStripeAPIURL = "https://api.stripe.com"

// stripeTolerance is how old a signature may be: stripe-go's DefaultTolerance.
const stripeTolerance = 5 * time.Minute

func checkStripe(ev api.Event) error {
	s, specErr := specOf[api.StripeEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(gitHookCheckContext("stripe", s.Webhook))
	if s.CreateWebhook {
		if s.APIKey == nil {
			add(errors.New("apiKey: missing; expected the secret holding a Stripe API key, required by createWebhook"))
		}
		if s.Webhook != nil && s.Webhook.URL == "" {
			add(errors.New("webhook.url: missing; expected the public URL Stripe delivers to, required by createWebhook"))
		}
	}
	add(gitHookCheckSecret("apiKey", s.APIKey))
	if s.Kevents != nil {
		add(gitHookCheckSecret("kevents.signingSecret", s.Kevents.SigningSecret))
	}
	for i, e := range s.EventFilter {
		if e == "" {
			add(fmt.Errorf("eventFilter[%d]: empty; expected a Stripe event type such as charge.succeeded", i))
		}
	}
	return errors.Join(errs...)
}

type stripeSource struct {
	ep     *gitHookEndpoint
	cfg    api.StripeEventSource
	secret []byte // kevents.signingSecret; nil when deliveries are not checked
}

func newStripe(b Build) (Source, error) {
	cfg, specErr := specOf[api.StripeEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	ep, err := newGitHookEndpoint(b, "stripe", cfg.Webhook)
	if err != nil {
		return nil, err
	}
	s := &stripeSource{ep: ep, cfg: cfg}
	if cfg.Kevents != nil && cfg.Kevents.SigningSecret != nil {
		secret, err := gitHookSecret(b, "kevents.signingSecret", cfg.Kevents.SigningSecret)
		if err != nil {
			return nil, err
		}
		s.secret = []byte(secret)
	}
	var mgr Source
	if cfg.CreateWebhook {
		if mgr, err = newStripeEndpoints(b, cfg, s.secret != nil); err != nil {
			return nil, err
		}
	}
	if err := ep.register(s); err != nil {
		return nil, err
	}
	return mgr, nil
}

// ServeHTTP checks the signature and the event, drops event types outside eventFilter, and
// answers 200 only once Kafka acknowledged the event.
func (s *stripeSource) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !s.ep.accept(rw, r) {
		return
	}
	body, ok := s.ep.readBody(rw, r)
	if !ok {
		return
	}
	if s.secret != nil {
		if status, msg := stripeVerify(r.Header.Get("Stripe-Signature"), body, s.secret, time.Now()); status != 0 {
			http.Error(rw, msg, status)
			return
		}
	}
	var event struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(body, &event); err != nil || event.Type == "" {
		http.Error(rw, "the body is not a Stripe event: expected a JSON object with a type", http.StatusBadRequest)
		return
	}
	if len(s.cfg.EventFilter) > 0 && !slices.Contains(s.cfg.EventFilter, event.Type) {
		_, _ = fmt.Fprintf(rw, "ignored: event type %q is not in eventFilter\n", event.Type)
		return
	}
	s.ep.publishEvents(rw, r, []hookEvent{{id: gitHookID(event.ID), data: stripeEventData{Event: body, Metadata: s.cfg.Metadata}}})
}

// stripeEventData is Argo's StripeEventData.
type stripeEventData struct {
	Event    json.RawMessage   `json:"event"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// stripeVerify checks a Stripe-Signature header against the body at time now. It returns 0
// when the signature holds, else the status to answer and why.
func stripeVerify(header string, body, secret []byte, now time.Time) (int, string) {
	if header == "" {
		return http.StatusUnauthorized, "missing Stripe-Signature header: this endpoint requires deliveries signed with the endpoint's signing secret"
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if sig, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, sig)
			}
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return http.StatusUnauthorized, "Stripe-Signature: expected t=<unix time> and at least one v1=<hex signature>"
	}
	if d := now.Sub(time.Unix(unix, 0)); d > stripeTolerance || d < -stripeTolerance {
		return http.StatusUnauthorized, fmt.Sprintf("Stripe-Signature: timestamp %d is more than %v away from now; expected a fresh delivery", unix, stripeTolerance)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return 0, ""
		}
	}
	return http.StatusForbidden, "Stripe-Signature does not match the body: wrong signing secret or altered delivery"
}

// --- Stripe webhook endpoints -------------------------------------------------------------

// stripeEndpoint is a webhook endpoint as the Stripe API shows it.
type stripeEndpoint struct {
	ID            string   `json:"id"`
	URL           string   `json:"url"`
	EnabledEvents []string `json:"enabled_events"`
}

type stripeEndpoints struct {
	api    *gitHookAPI
	base   string // ends in /v1/
	url    string
	events []string
	signed bool // kevents.signingSecret is set
}

func newStripeEndpoints(b Build, cfg api.StripeEventSource, signed bool) (Source, error) {
	base := DefaultStripeAPIURL
	if v, ok := os.LookupEnv(StripeAPIURLEnv); ok && v != "" {
		base = v
	}
	if err := gitHookCheckURL(StripeAPIURLEnv, base); err != nil {
		return nil, err
	}
	key, err := gitHookSecret(b, "apiKey", cfg.APIKey)
	if err != nil {
		return nil, err
	}
	a := newGitHookAPI(b)
	a.secrets = append(a.secrets, key)
	a.authorize = func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+key)
		return nil
	}
	e := &stripeEndpoints{api: a, base: strings.TrimRight(base, "/") + "/v1/", url: gitHookURL(cfg.Webhook), events: cfg.EventFilter, signed: signed}
	if len(e.events) == 0 {
		e.events = []string{"*"} // Stripe requires enabled_events; "*" is every event
	}
	return newGitHookManager(b, "stripe", e.ensure, func(context.Context) error { return nil }, false), nil
}

// ensure finds the endpoint with the source's URL, updating its events when they differ, or
// creates it.
func (e *stripeEndpoints) ensure(ctx context.Context) error {
	found, err := e.find(ctx)
	if err != nil {
		return fmt.Errorf("list webhook endpoints: %w", err)
	}
	form := neturl.Values{}
	for i, ev := range e.events {
		form.Set("enabled_events["+strconv.Itoa(i)+"]", ev)
	}
	var out stripeEndpoint
	switch {
	case found != nil && sameSet(found.EnabledEvents, e.events):
	case found != nil:
		if err := e.call(ctx, http.MethodPost, e.base+"webhook_endpoints/"+neturl.PathEscape(found.ID), form, &out); err != nil {
			return fmt.Errorf("update webhook endpoint %s: %w", found.ID, err)
		}
		e.api.log.Info("stripe: webhook endpoint updated", "id", out.ID, "events", e.events)
	default:
		form.Set("url", e.url)
		if err := e.call(ctx, http.MethodPost, e.base+"webhook_endpoints", form, &out); err != nil {
			return fmt.Errorf("create webhook endpoint: %w", err)
		}
		msg := "stripe: webhook endpoint created"
		if !e.signed {
			msg += "; deliveries are not verified: set kevents.signingSecret to its signing secret (Stripe dashboard) to check them"
		}
		e.api.log.Info(msg, "id", out.ID, "url", e.url)
	}
	return nil
}

// find pages through the account's webhook endpoints for the one with the source's URL.
func (e *stripeEndpoints) find(ctx context.Context) (*stripeEndpoint, error) {
	after := ""
	for page := 0; page < gitHookMaxPages; page++ {
		u := e.base + "webhook_endpoints?limit=100"
		if after != "" {
			u += "&starting_after=" + neturl.QueryEscape(after)
		}
		var list struct {
			Data    []stripeEndpoint `json:"data"`
			HasMore bool             `json:"has_more"`
		}
		if err := e.call(ctx, http.MethodGet, u, nil, &list); err != nil {
			return nil, err
		}
		for _, ep := range list.Data {
			if ep.URL == e.url {
				return &ep, nil
			}
		}
		if !list.HasMore || len(list.Data) == 0 {
			return nil, nil
		}
		after = list.Data[len(list.Data)-1].ID
	}
	return nil, nil
}

// call sends a request to the Stripe API, whose bodies are form encoded (nil: none).
func (e *stripeEndpoints) call(ctx context.Context, method, u string, form neturl.Values, out any) error {
	return e.api.send(ctx, method, u, nil, out, func(req *http.Request) error {
		if form != nil {
			enc := form.Encode()
			req.Body = io.NopCloser(strings.NewReader(enc))
			req.ContentLength = int64(len(enc))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		return e.api.authorize(ctx, req)
	})
}
