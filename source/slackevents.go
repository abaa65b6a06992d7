package source

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kevents/kevents/api"
)

// The slack source receives requests of a Slack app on its webhook endpoint: Events API
// callbacks, interactions (a form with a payload field) and slash commands (a form with a
// command field).
//
// Verification: every request must carry X-Slack-Signature, "v0=" and the hex HMAC-SHA256 of
// "v0:<X-Slack-Request-Timestamp>:<body>" with signingSecret, made less than slackTolerance
// ago, as Slack's libraries check it: 401 when it is missing, unreadable or too old, 403 when it
// does not match (Argo answers 401 to all). Events API requests must also carry the app's
// verification token (token), as in Argo: 403 otherwise (Argo answers 500).
//
// The url_verification handshake is answered with its challenge. The event data is Argo's: for
// an event callback, {"type": the inner event's type, "Data": the inner event}; for an
// interaction, the payload object; for a slash command, its fields as slack-go's SlashCommand
// names them. Unlike Argo, the verification token is left out of interactions and slash
// commands (a credential, as the signature headers are), and metadata, which Argo drops, is
// added as a top-level "metadata" field. The event id of a callback is its event_id, which
// Slack's retries keep. Malformed requests are answered 400 (Argo answers 500, which Slack
// retries).
func init() {
	Register("slack", Spec{
		Summary: "Slack Events API callbacks, interactions and slash commands (X-Slack-Signature checked with signingSecret, url_verification answered).",
		Check:   checkSlack,
	}, newSlack)
}

// slackTolerance is how old a request may be: slack-go's.
const slackTolerance = 5 * time.Minute

func checkSlack(ev api.Event) error {
	s, specErr := specOf[api.SlackEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(gitHookCheckContext("slack", s.Webhook))
	// Both are required, as in Argo.
	if s.Token == nil {
		add(errors.New("token: missing; expected the secret holding the Slack app's verification token"))
	}
	if s.SigningSecret == nil {
		add(errors.New("signingSecret: missing; expected the secret holding the Slack app's signing secret"))
	}
	add(gitHookCheckSecret("token", s.Token))
	add(gitHookCheckSecret("signingSecret", s.SigningSecret))
	return errors.Join(errs...)
}

type slackSource struct {
	ep            *gitHookEndpoint
	cfg           api.SlackEventSource
	token         string
	signingSecret []byte
}

func newSlack(b Build) (Source, error) {
	cfg, specErr := specOf[api.SlackEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	ep, err := newGitHookEndpoint(b, "slack", cfg.Webhook)
	if err != nil {
		return nil, err
	}
	s := &slackSource{ep: ep, cfg: cfg}
	if s.token, err = gitHookSecret(b, "token", cfg.Token); err != nil {
		return nil, err
	}
	secret, err := gitHookSecret(b, "signingSecret", cfg.SigningSecret)
	if err != nil {
		return nil, err
	}
	s.signingSecret = []byte(secret)
	return nil, ep.register(s)
}

// slackSlashCommand is slack-go's SlashCommand, without the token.
type slackSlashCommand struct {
	TeamID              string            `json:"team_id"`
	TeamDomain          string            `json:"team_domain"`
	EnterpriseID        string            `json:"enterprise_id,omitempty"`
	EnterpriseName      string            `json:"enterprise_name,omitempty"`
	IsEnterpriseInstall bool              `json:"is_enterprise_install"`
	ChannelID           string            `json:"channel_id"`
	ChannelName         string            `json:"channel_name"`
	UserID              string            `json:"user_id"`
	UserName            string            `json:"user_name"`
	Command             string            `json:"command"`
	Text                string            `json:"text"`
	ResponseURL         string            `json:"response_url"`
	TriggerID           string            `json:"trigger_id"`
	APIAppID            string            `json:"api_app_id"`
	Metadata            map[string]string `json:"metadata,omitempty"`
}

// slackCallback is the data of an Events API callback: slack-go's EventsAPIInnerEvent, as
// Argo encodes it.
type slackCallback struct {
	Type     string            `json:"type"`
	Data     json.RawMessage   `json:"Data"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func (s *slackSource) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !s.ep.accept(rw, r) {
		return
	}
	body, ok := s.ep.readBody(rw, r)
	if !ok {
		return
	}
	if status, msg := slackVerify(r.Header, body, s.signingSecret, time.Now()); status != 0 {
		http.Error(rw, msg, status)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		s.serveForm(rw, r, body)
		return
	}
	var req struct {
		Token     string          `json:"token"`
		Type      string          `json:"type"`
		Challenge string          `json:"challenge"`
		EventID   string          `json:"event_id"`
		Event     json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(rw, "the body is not a Slack Events API request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !gitHookEqual(req.Token, []byte(s.token)) {
		http.Error(rw, "the request's token does not match the app's verification token", http.StatusForbidden)
		return
	}
	switch req.Type {
	case "url_verification":
		rw.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(rw, req.Challenge)
	case "event_callback":
		var inner struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(req.Event, &inner); err != nil || inner.Type == "" {
			http.Error(rw, "event_callback: event: expected a JSON object with a type", http.StatusBadRequest)
			return
		}
		data := slackCallback{Type: inner.Type, Data: req.Event, Metadata: s.cfg.Metadata}
		s.ep.publishEvents(rw, r, []hookEvent{{id: gitHookID(req.EventID), data: data}})
	default:
		// Such as app_rate_limited: answered, not published, as in Argo.
		_, _ = io.WriteString(rw, "success\n")
	}
}

// serveForm handles interactions and slash commands.
func (s *slackSource) serveForm(rw http.ResponseWriter, r *http.Request, body []byte) {
	form, err := neturl.ParseQuery(string(body))
	if err != nil {
		http.Error(rw, "the form body cannot be read: "+err.Error(), http.StatusBadRequest)
		return
	}
	switch {
	case form.Get("payload") != "":
		var payload map[string]json.RawMessage
		if err := json.Unmarshal([]byte(form.Get("payload")), &payload); err != nil || payload == nil {
			http.Error(rw, "interaction: payload: expected a JSON object", http.StatusBadRequest)
			return
		}
		delete(payload, "token")
		if len(s.cfg.Metadata) > 0 {
			payload["metadata"], _ = json.Marshal(s.cfg.Metadata) // a string map always encodes
		}
		var trigger string
		_ = json.Unmarshal(payload["trigger_id"], &trigger)
		s.ep.publishEvents(rw, r, []hookEvent{{id: gitHookID(trigger), data: payload}})
	case form.Get("command") != "":
		install, _ := strconv.ParseBool(form.Get("is_enterprise_install"))
		cmd := slackSlashCommand{
			TeamID: form.Get("team_id"), TeamDomain: form.Get("team_domain"),
			EnterpriseID: form.Get("enterprise_id"), EnterpriseName: form.Get("enterprise_name"), IsEnterpriseInstall: install,
			ChannelID: form.Get("channel_id"), ChannelName: form.Get("channel_name"),
			UserID: form.Get("user_id"), UserName: form.Get("user_name"),
			Command: form.Get("command"), Text: form.Get("text"), ResponseURL: form.Get("response_url"),
			TriggerID: form.Get("trigger_id"), APIAppID: form.Get("api_app_id"), Metadata: s.cfg.Metadata,
		}
		s.ep.publishEvents(rw, r, []hookEvent{{id: gitHookID(cmd.TriggerID), data: cmd}})
	default:
		http.Error(rw, "form body: expected a payload (interaction) or a command (slash command) field", http.StatusBadRequest)
	}
}

// slackVerify checks the request's signature at time now. It returns 0 when it holds, else the
// status to answer and why.
func slackVerify(h http.Header, body, secret []byte, now time.Time) (int, string) {
	sig, ts := h.Get("X-Slack-Signature"), h.Get("X-Slack-Request-Timestamp")
	if sig == "" || ts == "" {
		return http.StatusUnauthorized, "missing X-Slack-Signature or X-Slack-Request-Timestamp header: this endpoint requires requests signed with the app's signing secret"
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return http.StatusUnauthorized, "X-Slack-Request-Timestamp: expected a Unix time in seconds"
	}
	if d := now.Sub(time.Unix(unix, 0)); d > slackTolerance || d < -slackTolerance {
		return http.StatusUnauthorized, fmt.Sprintf("X-Slack-Request-Timestamp: %d is more than %v away from now; expected a fresh request", unix, slackTolerance)
	}
	sum, ok := strings.CutPrefix(sig, "v0=")
	got, err := hex.DecodeString(sum)
	if !ok || err != nil || len(got) == 0 {
		return http.StatusUnauthorized, "X-Slack-Signature: expected v0=<hex digest>"
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("v0:" + ts + ":"))
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), got) {
		return http.StatusForbidden, "X-Slack-Signature does not match the request: wrong signing secret or altered request"
	}
	return 0, ""
}
