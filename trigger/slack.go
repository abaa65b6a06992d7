package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// SlackAPIURLEnv names the environment variable that overrides the base URL of Slack's Web API
// (default DefaultSlackAPIURL). The executor reads it once, when it is built; messages are posted
// to <base>/chat.postMessage. It exists for tests and for proxies or Slack-compatible servers.
const SlackAPIURLEnv = "KEVENTS_SLACK_API_URL"

// DefaultSlackAPIURL is the base URL of Slack's Web API.
const DefaultSlackAPIURL = "https://slack.com/api"

// SlackMessage is the rendered command of a slack trigger: one call of Slack's chat.postMessage.
// The token stays a Secret reference, resolved by the executor.
type SlackMessage struct {
	Token api.SecretKeySelector `json:"token"`
	// Channel is a channel id or name, without the leading '#' (Argo strips it).
	Channel string `json:"channel"`
	Text    string `json:"text,omitempty"`
	// Attachments and Blocks are JSON arrays, passed to Slack as they are.
	Attachments json.RawMessage `json:"attachments,omitempty"`
	Blocks      json.RawMessage `json:"blocks,omitempty"`
	Username    string          `json:"username,omitempty"`
	// IconEmoji (":robot_face:") or IconURL: sender.icon, sorted the way Argo sorts it.
	IconEmoji string `json:"iconEmoji,omitempty"`
	IconURL   string `json:"iconURL,omitempty"`
	// ThreadKey is thread.messageAggregationKey: the messages of a trigger that share it go to
	// one thread, started by the first of them.
	ThreadKey string `json:"threadKey,omitempty"`
	// Broadcast is thread.broadcastMessageToChannel: a reply in a thread is also shown in the
	// channel.
	Broadcast bool `json:"broadcast,omitempty"`
}

func init() {
	Register("slack", Spec{
		Summary: "Posts a message to a Slack channel (chat.postMessage); the token is a Secret reference.",
		Render:  renderSlack,
		Check:   checkSlack,
		// A thread's first message is remembered in the executor's memory.
		OneMember: func(t *api.TriggerTemplate, params []api.TriggerParameter) bool {
			return t.Slack.Thread != nil || setsField(t.Slack.Parameters, "thread") || setsField(params, "slack.thread")
		},
	}, newSlackExecutor)
}

// validSlackIconEmoji is how Argo (notifications-engine) tells an emoji icon from a URL.
var validSlackIconEmoji = regexp.MustCompile(`^:.+:$`)

// slackIcon sorts sender.icon into an emoji or a URL.
func slackIcon(icon string) (emoji, iconURL string, err error) {
	if icon == "" {
		return "", "", nil
	}
	if validSlackIconEmoji.MatchString(icon) {
		return icon, "", nil
	}
	if u, err := url.Parse(icon); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return "", icon, nil
	}
	return "", "", fmt.Errorf("slack.sender.icon: %q; expected an emoji such as :robot_face: or an http(s) URL", icon)
}

// slackJSONArray checks a field that holds a JSON array as a string (attachments, blocks).
func slackJSONArray(field, s string) (json.RawMessage, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal([]byte(s), &items); err != nil {
		return nil, fmt.Errorf("slack.%s: %q; expected a JSON array: %v", field, slackTruncate(s, 80), err)
	}
	return json.RawMessage(s), nil
}

func slackTruncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// checkSlack applies Argo's validation (slackToken is required) and checks the literal values
// it can. Channel and text may come from trigger-level parameters, which a template does not
// show, so their absence is reported when rendering, as Argo reports it when executing.
func checkSlack(t *api.TriggerTemplate) error {
	s := t.Slack
	var errs []error
	switch {
	case s.SlackToken == nil:
		errs = append(errs, errors.New("slack.slackToken: missing; expected a Secret reference (name, key)"))
	case s.SlackToken.Name == "" || s.SlackToken.Key == "":
		errs = append(errs, fmt.Errorf("slack.slackToken: name %q, key %q; expected both", s.SlackToken.Name, s.SlackToken.Key))
	}
	if _, err := slackJSONArray("attachments", s.Attachments); err != nil {
		errs = append(errs, err)
	}
	if _, err := slackJSONArray("blocks", s.Blocks); err != nil {
		errs = append(errs, err)
	}
	if s.Sender != nil {
		if _, _, err := slackIcon(s.Sender.Icon); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, notifyCheckParameters("slack", s.Parameters))
	return errors.Join(errs...)
}

// notifyCheckParameters checks what a template's own parameters need whatever the events.
func notifyCheckParameters(typ string, ps []api.TriggerParameter) error {
	var errs []error
	for i, p := range ps {
		if p.Src == nil {
			errs = append(errs, fmt.Errorf("%s.parameters[%d].src: missing", typ, i))
		}
		if p.Dest == "" {
			errs = append(errs, fmt.Errorf("%s.parameters[%d].dest: missing", typ, i))
		}
	}
	return errors.Join(errs...)
}

func renderSlack(in RenderInput) (json.RawMessage, error) {
	s := *in.Template.Slack
	if len(s.Parameters) > 0 {
		doc, err := json.Marshal(s)
		if err != nil {
			return nil, err
		}
		if doc, err = in.Params.Apply(doc, s.Parameters); err != nil {
			return nil, fmt.Errorf("slack.parameters: %w", err)
		}
		s = api.SlackTrigger{}
		if err := json.Unmarshal(doc, &s); err != nil {
			return nil, fmt.Errorf("slack.parameters: result is not a slack trigger: %w", err)
		}
	}
	if s.SlackToken == nil || s.SlackToken.Name == "" || s.SlackToken.Key == "" {
		return nil, errors.New("slack.slackToken: missing; expected a Secret reference (name, key)")
	}
	msg := SlackMessage{Token: *s.SlackToken, Channel: strings.TrimPrefix(s.Channel, "#"), Text: s.Message}
	if msg.Channel == "" {
		return nil, fmt.Errorf("slack.channel: %q; expected a channel name or id", s.Channel)
	}
	var err error
	if msg.Attachments, err = slackJSONArray("attachments", s.Attachments); err != nil {
		return nil, err
	}
	if msg.Blocks, err = slackJSONArray("blocks", s.Blocks); err != nil {
		return nil, err
	}
	if msg.Text == "" && msg.Attachments == nil && msg.Blocks == nil {
		return nil, errors.New("slack: nothing to post; expected at least one of message, attachments and blocks")
	}
	if s.Sender != nil {
		msg.Username = s.Sender.Username
		if msg.IconEmoji, msg.IconURL, err = slackIcon(s.Sender.Icon); err != nil {
			return nil, err
		}
	}
	if s.Thread != nil {
		msg.ThreadKey = s.Thread.MessageAggregationKey
		msg.Broadcast = s.Thread.BroadcastMessageToChannel
	}
	return json.Marshal(msg)
}

// ErrSlack marks a message Slack refused: an answer with "ok": false, or an HTTP error status
// (429 when rate limited).
var ErrSlack = errors.New("slack trigger: Slack refused the message")

func newSlackExecutor(env Env) (Executor, error) {
	base := DefaultSlackAPIURL
	if v, ok := os.LookupEnv(SlackAPIURLEnv); ok && v != "" {
		base = v
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: %q; expected an absolute http or https URL", SlackAPIURLEnv, base)
	}
	client := env.HTTPClient
	if client == nil {
		client = &http.Client{}
	}
	return &slackExecutor{
		client:   client,
		secrets:  env.Secrets,
		endpoint: strings.TrimRight(base, "/") + "/chat.postMessage",
		threads:  map[string]*slackThread{},
	}, nil
}

type slackExecutor struct {
	client   *http.Client
	secrets  secrets.Resolver
	endpoint string

	mu sync.Mutex
	// threads holds, per sensor, channel and messageAggregationKey, the timestamp of the
	// message that started the thread. Like Argo, which keeps them in the sensor's memory, they
	// live in this executor's memory only: after a restart, or on another member, the next
	// message of a key starts a new thread. The map grows with the number of keys, as Argo's.
	threads map[string]*slackThread
}

type slackThread struct {
	mu sync.Mutex // held while a message of the thread is posted, so the first one starts it
	ts string
}

func (x *slackExecutor) thread(cmd *Command, m *SlackMessage) *slackThread {
	key := strings.Join([]string{cmd.Namespace, cmd.Sensor, m.Channel, m.ThreadKey}, "\x00")
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.threads[key]
	if t == nil {
		t = &slackThread{}
		x.threads[key] = t
	}
	return t
}

// slackPostMessage is the JSON body of chat.postMessage.
type slackPostMessage struct {
	Channel        string          `json:"channel"`
	Text           string          `json:"text,omitempty"`
	Attachments    json.RawMessage `json:"attachments,omitempty"`
	Blocks         json.RawMessage `json:"blocks,omitempty"`
	Username       string          `json:"username,omitempty"`
	IconEmoji      string          `json:"icon_emoji,omitempty"`
	IconURL        string          `json:"icon_url,omitempty"`
	ThreadTS       string          `json:"thread_ts,omitempty"`
	ReplyBroadcast bool            `json:"reply_broadcast,omitempty"`
}

// slackAnswer is what chat.postMessage answers.
type slackAnswer struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	TS    string `json:"ts"`
}

// Execute posts the message. Slack has no idempotency key for chat.postMessage: a command that
// is retried after Slack took it but before the answer arrived is posted twice.
func (x *slackExecutor) Execute(ctx context.Context, cmd *Command) error {
	var m SlackMessage
	if err := json.Unmarshal(cmd.Spec, &m); err != nil {
		return fmt.Errorf("slack trigger: malformed command %s: %w", cmd.ID, err)
	}
	token, err := x.secrets.Resolve(m.Token.Name, m.Token.Key)
	if err != nil {
		return fmt.Errorf("slack trigger: token for channel %s: %w", m.Channel, err)
	}
	body := slackPostMessage{
		Channel: m.Channel, Text: m.Text, Attachments: m.Attachments, Blocks: m.Blocks,
		Username: m.Username, IconEmoji: m.IconEmoji, IconURL: m.IconURL,
	}
	var thread *slackThread
	if m.ThreadKey != "" {
		thread = x.thread(cmd, &m)
		thread.mu.Lock()
		defer thread.mu.Unlock()
		if thread.ts != "" {
			body.ThreadTS = thread.ts
			body.ReplyBroadcast = m.Broadcast
		}
	}
	ts, err := x.post(ctx, token, &body)
	if err != nil {
		return fmt.Errorf("slack trigger: post to channel %s via %s: %w", m.Channel, x.endpoint, err)
	}
	if thread != nil && thread.ts == "" {
		thread.ts = ts
	}
	return nil
}

func (x *slackExecutor) post(ctx context.Context, token string, body *slackPostMessage) (string, error) {
	doc, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, defaultHTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.endpoint, bytes.NewReader(doc))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := x.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return "", fmt.Errorf("%w: ratelimited (HTTP %s, Retry-After %q)", ErrSlack, resp.Status, resp.Header.Get("Retry-After"))
	}
	var a slackAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return "", fmt.Errorf("%w: HTTP %s", ErrSlack, resp.Status)
		}
		return "", fmt.Errorf("answer is not Slack's JSON (HTTP %s): %w", resp.Status, err)
	}
	if !a.OK {
		e := a.Error
		if e == "" {
			e = "no error given"
		}
		return "", fmt.Errorf("%w: %s (HTTP %s)", ErrSlack, e, resp.Status)
	}
	return a.TS, nil
}
