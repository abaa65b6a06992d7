package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

const slackTestToken = "xoxb-0000-very-secret"

// slackTestSecrets holds the token of Secret slack-secret, key token.
func slackTestSecrets() secrets.Resolver {
	return secrets.Resolver{LookupEnv: func(name string) (string, bool) {
		if name == secrets.EnvName("slack-secret", "token") {
			return slackTestToken, true
		}
		return "", false
	}}
}

var slackTestTokenRef = &api.SecretKeySelector{Name: "slack-secret", Key: "token"}

// slackCall is one chat.postMessage call as the test server saw it.
type slackCall struct {
	method, path string
	header       http.Header
	body         map[string]any
}

// slackServer emulates Slack's Web API: it accepts POST /chat.postMessage and answers with
// answer(n, call) for the n-th call (from 0); any other path is 404 with Slack's
// unknown_method.
func slackServer(t *testing.T, answer func(n int, c slackCall) (int, string)) (*httptest.Server, <-chan slackCall) {
	t.Helper()
	calls := make(chan slackCall, 64)
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		c := slackCall{method: r.Method, path: r.URL.Path, header: r.Header.Clone()}
		if err := json.Unmarshal(raw, &c.body); err != nil {
			t.Errorf("chat.postMessage body is not JSON: %v: %s", err, raw)
		}
		calls <- c
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		if r.URL.Path != "/api/chat.postMessage" || r.Method != http.MethodPost {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"ok":false,"error":"unknown_method"}`)
			return
		}
		mu.Lock()
		i := n
		n++
		mu.Unlock()
		status, body := answer(i, c)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, calls
}

// slackOK answers like Slack does on success, with ts unique per call.
func slackOK(n int, c slackCall) (int, string) {
	return http.StatusOK, fmt.Sprintf(`{"ok":true,"channel":"C0123","ts":"1700000000.%06d","message":{"text":%q}}`, n+1, c.body["text"])
}

// slackExecutorForTest builds the slack executor against baseURL, as the executor process does
// with KEVENTS_SLACK_API_URL set.
func slackExecutorForTest(t *testing.T, baseURL string, env Env) Executor {
	t.Helper()
	t.Setenv(SlackAPIURLEnv, baseURL)
	e, err := types.Lookup("slack")
	if err != nil {
		t.Fatal(err)
	}
	x, err := e.New(env)
	if err != nil {
		t.Fatalf("slack executor: %v", err)
	}
	return x
}

func slackCommand(t *testing.T, sensor string, m SlackMessage) *Command {
	t.Helper()
	spec, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &Command{ID: "cmd-" + sensor, Namespace: "ns", Sensor: sensor, Trigger: "notify", Type: "slack", Spec: spec}
}

func nextSlackCall(t *testing.T, calls <-chan slackCall) slackCall {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("Slack received no call")
		return slackCall{}
	}
}

func renderSlackForTest(t *testing.T, s *api.SlackTrigger, p Params) (SlackMessage, json.RawMessage, error) {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "notify", Slack: s}, Params: p})
	if err != nil {
		return SlackMessage{}, nil, err
	}
	if typ != "slack" {
		t.Fatalf("Render type = %q; want slack", typ)
	}
	var m SlackMessage
	if err := json.Unmarshal(spec, &m); err != nil {
		t.Fatalf("rendered spec is not a SlackMessage: %v: %s", err, spec)
	}
	return m, spec, nil
}

// TestRenderThenExecuteSlack: a template with parameters, rendered in the sensor and executed,
// reaches Slack as the chat.postMessage call a user would expect, with the token from secrets.
func TestRenderThenExecuteSlack(t *testing.T) {
	srv, calls := slackServer(t, slackOK)
	p := fakeParams{values: map[string]string{"channel": "#deploys", "text": "build 42 passed"}}
	_, spec, err := renderSlackForTest(t, &api.SlackTrigger{
		SlackToken:  slackTestTokenRef,
		Channel:     "#placeholder",
		Message:     "placeholder",
		Attachments: `[{"color": "good", "text": "all green"}]`,
		Blocks:      `[{"type": "section", "text": {"type": "mrkdwn", "text": "*build 42*"}}]`,
		Sender:      &api.SlackSender{Username: "kevents-bot", Icon: ":robot_face:"},
		Parameters: []api.TriggerParameter{
			{Src: src("channel"), Dest: "channel"},
			{Src: src("text"), Dest: "message"},
		},
	}, p)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if strings.Contains(string(spec), slackTestToken) {
		t.Fatalf("the rendered spec holds the token: %s", spec)
	}
	id := CommandID("ns", "s", "notify", []EventRef{{Dependency: "d", ID: "e1", EventSource: "ci", EventName: "build"}})
	cmd := &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "notify", Type: "slack", Spec: spec}
	x := slackExecutorForTest(t, srv.URL+"/api", Env{Secrets: slackTestSecrets()})
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	c := nextSlackCall(t, calls)
	if c.method != http.MethodPost || c.path != "/api/chat.postMessage" {
		t.Errorf("call %s %s; want POST /api/chat.postMessage", c.method, c.path)
	}
	if got := c.header.Get("Authorization"); got != "Bearer "+slackTestToken {
		t.Errorf("Authorization = %q; want the bearer token from the secret", got)
	}
	if got := c.header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
		t.Errorf("Content-Type = %q; want application/json", got)
	}
	var want map[string]any
	_ = json.Unmarshal([]byte(`{
		"channel": "deploys",
		"text": "build 42 passed",
		"attachments": [{"color": "good", "text": "all green"}],
		"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*build 42*"}}],
		"username": "kevents-bot",
		"icon_emoji": ":robot_face:"
	}`), &want)
	if !reflect.DeepEqual(c.body, want) {
		t.Errorf("chat.postMessage body:\n got %v\nwant %v", c.body, want)
	}
}

func TestSlackIconURLAndPlainText(t *testing.T) {
	srv, calls := slackServer(t, slackOK)
	m, spec, err := renderSlackForTest(t, &api.SlackTrigger{
		SlackToken: slackTestTokenRef, Channel: "C0123ABC", Message: "hello",
		Sender: &api.SlackSender{Icon: "https://example.com/bot.png"},
	}, fakeParams{})
	if err != nil {
		t.Fatal(err)
	}
	if m.IconURL != "https://example.com/bot.png" || m.IconEmoji != "" {
		t.Errorf("rendered icon %+v; want the URL", m)
	}
	x := slackExecutorForTest(t, srv.URL+"/api/", Env{Secrets: slackTestSecrets()}) // a trailing slash is fine
	if err := x.Execute(context.Background(), &Command{ID: "c", Type: "slack", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	c := nextSlackCall(t, calls)
	want := map[string]any{"channel": "C0123ABC", "text": "hello", "icon_url": "https://example.com/bot.png"}
	if !reflect.DeepEqual(c.body, want) {
		t.Errorf("body = %v; want %v", c.body, want)
	}
}

// TestSlackRefusals: Slack answers 200 with ok=false on failure, 429 when rate limited.
func TestSlackRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"ok false", http.StatusOK, `{"ok":false,"error":"channel_not_found"}`, "channel_not_found"},
		{"invalid token", http.StatusOK, `{"ok":false,"error":"invalid_auth"}`, "invalid_auth"},
		{"ok false without error", http.StatusOK, `{"ok":false}`, "no error given"},
		{"rate limited 429", http.StatusTooManyRequests, `{"ok":false,"error":"ratelimited"}`, "ratelimited"},
		{"rate limited in body", http.StatusOK, `{"ok":false,"error":"ratelimited"}`, "ratelimited"},
		{"server error", http.StatusBadGateway, `<html>bad gateway</html>`, "502"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, calls := slackServer(t, func(int, slackCall) (int, string) { return tc.status, tc.body })
			x := slackExecutorForTest(t, srv.URL+"/api", Env{Secrets: slackTestSecrets()})
			err := x.Execute(context.Background(), slackCommand(t, "s", SlackMessage{Token: *slackTestTokenRef, Channel: "alerts", Text: "hi"}))
			nextSlackCall(t, calls)
			if !errors.Is(err, ErrSlack) {
				t.Fatalf("Execute = %v; want an error wrapping ErrSlack", err)
			}
			msg := err.Error()
			for _, part := range []string{tc.want, "channel alerts", srv.URL + "/api/chat.postMessage"} {
				if !strings.Contains(msg, part) {
					t.Errorf("error %q does not contain %q", msg, part)
				}
			}
			if strings.Contains(msg, slackTestToken) {
				t.Errorf("error leaks the token: %q", msg)
			}
		})
	}
	t.Run("ok true but not JSON", func(t *testing.T) {
		srv, _ := slackServer(t, func(int, slackCall) (int, string) { return http.StatusOK, "ok" })
		x := slackExecutorForTest(t, srv.URL+"/api", Env{Secrets: slackTestSecrets()})
		err := x.Execute(context.Background(), slackCommand(t, "s", SlackMessage{Token: *slackTestTokenRef, Channel: "alerts", Text: "hi"}))
		if err == nil || !strings.Contains(err.Error(), "not Slack's JSON") {
			t.Errorf("Execute = %v; want an error about the answer", err)
		}
	})
}

// TestSlackThreads: messages sharing a messageAggregationKey go to the thread the first one
// started; a reply is broadcast when asked; other keys and other sensors get their own threads.
func TestSlackThreads(t *testing.T) {
	srv, calls := slackServer(t, slackOK)
	x := slackExecutorForTest(t, srv.URL+"/api", Env{Secrets: slackTestSecrets()})
	msg := func(key string, broadcast bool) SlackMessage {
		return SlackMessage{Token: *slackTestTokenRef, Channel: "builds", Text: "step", ThreadKey: key, Broadcast: broadcast}
	}
	steps := []struct {
		sensor    string
		m         SlackMessage
		threadTS  string // want; "" means a new message in the channel
		broadcast bool
	}{
		{"s", msg("build-42", true), "", false},                       // ts ...01 starts build-42
		{"s", msg("build-42", true), "1700000000.000001", true},       // reply, broadcast
		{"s", msg("build-42", false), "1700000000.000001", false},     // reply
		{"s", msg("build-43", false), "", false},                      // ts ...04 starts build-43
		{"s", msg("", true), "", false},                               // no key: never a thread
		{"s", msg("build-43", false), "1700000000.000004", false},     // reply in build-43
		{"other", msg("build-42", false), "", false},                  // ts ...07: another sensor, another thread
		{"other", msg("build-42", false), "1700000000.000007", false}, // reply there
	}
	for i, s := range steps {
		if err := x.Execute(context.Background(), slackCommand(t, s.sensor, s.m)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		c := nextSlackCall(t, calls)
		ts, _ := c.body["thread_ts"].(string)
		bc, _ := c.body["reply_broadcast"].(bool)
		if ts != s.threadTS || bc != s.broadcast {
			t.Errorf("step %d: thread_ts %q, reply_broadcast %v; want %q, %v", i, ts, bc, s.threadTS, s.broadcast)
		}
	}
}

// TestSlackThreadFailedStart: when the first message of a thread fails, the next one starts it.
func TestSlackThreadFailedStart(t *testing.T) {
	srv, calls := slackServer(t, func(n int, c slackCall) (int, string) {
		if n == 0 {
			return http.StatusOK, `{"ok":false,"error":"channel_not_found"}`
		}
		return slackOK(n, c)
	})
	x := slackExecutorForTest(t, srv.URL+"/api", Env{Secrets: slackTestSecrets()})
	m := SlackMessage{Token: *slackTestTokenRef, Channel: "builds", Text: "x", ThreadKey: "k"}
	if err := x.Execute(context.Background(), slackCommand(t, "s", m)); err == nil {
		t.Fatal("first message: want an error")
	}
	nextSlackCall(t, calls)
	for i, want := range []string{"", "1700000000.000002"} {
		if err := x.Execute(context.Background(), slackCommand(t, "s", m)); err != nil {
			t.Fatal(err)
		}
		if ts, _ := nextSlackCall(t, calls).body["thread_ts"].(string); ts != want {
			t.Errorf("message %d: thread_ts %q; want %q", i, ts, want)
		}
	}
}

// TestSlackThreadConcurrent: concurrent messages of one key start exactly one thread.
func TestSlackThreadConcurrent(t *testing.T) {
	srv, calls := slackServer(t, slackOK)
	x := slackExecutorForTest(t, srv.URL+"/api", Env{Secrets: slackTestSecrets()})
	const n = 12
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := SlackMessage{Token: *slackTestTokenRef, Channel: "builds", Text: fmt.Sprint(i), ThreadKey: "k"}
			if err := x.Execute(context.Background(), slackCommand(t, "s", m)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	starts, replies := 0, map[string]int{}
	for i := 0; i < n; i++ {
		if ts, _ := nextSlackCall(t, calls).body["thread_ts"].(string); ts == "" {
			starts++
		} else {
			replies[ts]++
		}
	}
	if starts != 1 || len(replies) != 1 {
		t.Errorf("%d thread starts and replies %v; want 1 start and %d replies to it", starts, replies, n-1)
	}
}

func TestSlackExecuteErrors(t *testing.T) {
	srv, _ := slackServer(t, slackOK)
	x := slackExecutorForTest(t, srv.URL+"/api", Env{Secrets: slackTestSecrets()})

	err := x.Execute(context.Background(), &Command{ID: "broken-1", Type: "slack", Spec: json.RawMessage(`"nope"`)})
	if err == nil || !strings.Contains(err.Error(), "broken-1") {
		t.Errorf("malformed spec: %v; want an error naming the command", err)
	}

	missing := SlackMessage{Token: api.SecretKeySelector{Name: "nope", Key: "token"}, Channel: "alerts", Text: "hi"}
	err = x.Execute(context.Background(), slackCommand(t, "s", missing))
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "nope/token") || !strings.Contains(err.Error(), "alerts") {
		t.Errorf("missing secret: %v; want ErrNotFound naming the secret and the channel", err)
	}

	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	x = slackExecutorForTest(t, url+"/api", Env{Secrets: slackTestSecrets()})
	err = x.Execute(context.Background(), slackCommand(t, "s", SlackMessage{Token: *slackTestTokenRef, Channel: "alerts", Text: "hi"}))
	if err == nil || errors.Is(err, ErrSlack) || !strings.Contains(err.Error(), url+"/api/chat.postMessage") {
		t.Errorf("Slack down: %v; want a transport error naming the URL", err)
	}
	if err != nil && strings.Contains(err.Error(), slackTestToken) {
		t.Errorf("error leaks the token: %v", err)
	}
}

func TestSlackExecuteContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // then the server notices the client going away
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	x := slackExecutorForTest(t, srv.URL, Env{Secrets: slackTestSecrets()})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := x.Execute(ctx, slackCommand(t, "s", SlackMessage{Token: *slackTestTokenRef, Channel: "alerts", Text: "hi"}))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Execute = %v; want it to wrap context.DeadlineExceeded", err)
	}
}

func TestSlackAPIURL(t *testing.T) {
	e, _ := types.Lookup("slack")
	t.Setenv(SlackAPIURLEnv, "")
	x, err := e.New(Env{})
	if err != nil {
		t.Fatal(err)
	}
	if got := x.(*slackExecutor).endpoint; got != "https://slack.com/api/chat.postMessage" {
		t.Errorf("default endpoint %q", got)
	}
	for _, bad := range []string{"slack.com/api", "ftp://slack.com", "http://"} {
		t.Setenv(SlackAPIURLEnv, bad)
		if _, err := e.New(Env{}); err == nil || !strings.Contains(err.Error(), SlackAPIURLEnv) {
			t.Errorf("%s=%q: %v; want an error naming the variable", SlackAPIURLEnv, bad, err)
		}
	}
}

func TestRenderSlackErrors(t *testing.T) {
	base := func() *api.SlackTrigger {
		return &api.SlackTrigger{SlackToken: slackTestTokenRef, Channel: "alerts", Message: "hi"}
	}
	p := fakeParams{values: map[string]string{"empty": "", "notjson": "not json", "icon": "robot"}}
	for _, tc := range []struct {
		name    string
		edit    func(*api.SlackTrigger)
		wantErr string
	}{
		{"no token", func(s *api.SlackTrigger) { s.SlackToken = nil }, "slack.slackToken"},
		{"no channel", func(s *api.SlackTrigger) { s.Channel = "" }, "slack.channel"},
		{"only a hash", func(s *api.SlackTrigger) { s.Channel = "#" }, `slack.channel: "#"`},
		{"nothing to post", func(s *api.SlackTrigger) { s.Message = "" }, "message, attachments and blocks"},
		{"parameter empties the channel", func(s *api.SlackTrigger) {
			s.Parameters = []api.TriggerParameter{{Src: src("empty"), Dest: "channel"}}
		}, "slack.channel"},
		{"parameter sets bad blocks", func(s *api.SlackTrigger) {
			s.Parameters = []api.TriggerParameter{{Src: src("notjson"), Dest: "blocks"}}
		}, `slack.blocks: "not json"`},
		{"parameter sets a bad icon", func(s *api.SlackTrigger) {
			s.Parameters = []api.TriggerParameter{{Src: src("icon"), Dest: "sender.icon"}}
		}, `slack.sender.icon: "robot"`},
		{"parameter that fails", func(s *api.SlackTrigger) {
			s.Parameters = []api.TriggerParameter{{Src: src("fail"), Dest: "channel"}}
		}, "slack.parameters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.edit(s)
			if _, _, err := renderSlackForTest(t, s, p); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Render = %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("attachments alone are enough; thread is rendered", func(t *testing.T) {
		s := base()
		s.Message = ""
		s.Attachments = `[{"text":"x"}]`
		s.Thread = &api.SlackThread{MessageAggregationKey: "k", BroadcastMessageToChannel: true}
		m, _, err := renderSlackForTest(t, s, p)
		if err != nil || m.ThreadKey != "k" || !m.Broadcast || string(m.Attachments) != `[{"text":"x"}]` {
			t.Errorf("Render = %+v, %v", m, err)
		}
	})
}

func TestCheckSlack(t *testing.T) {
	ok := api.SlackTrigger{SlackToken: slackTestTokenRef, Channel: "#alerts", Message: "hi"}
	if err := Check(&api.TriggerTemplate{Name: "t", Slack: &ok}); err != nil {
		t.Errorf("valid slack trigger: Check = %v", err)
	}
	// Channel and message may come from trigger-level parameters, unseen here.
	if err := Check(&api.TriggerTemplate{Name: "t", Slack: &api.SlackTrigger{SlackToken: slackTestTokenRef}}); err != nil {
		t.Errorf("slack trigger without channel and message: Check = %v", err)
	}
	for _, tc := range []struct {
		name    string
		edit    func(*api.SlackTrigger)
		wantErr string
	}{
		{"no token", func(s *api.SlackTrigger) { s.SlackToken = nil }, "slack.slackToken: missing"},
		{"token without key", func(s *api.SlackTrigger) { s.SlackToken = &api.SecretKeySelector{Name: "n"} }, `slack.slackToken: name "n", key ""`},
		{"attachments not JSON", func(s *api.SlackTrigger) { s.Attachments = "{oops" }, `slack.attachments: "{oops"`},
		{"blocks an object", func(s *api.SlackTrigger) { s.Blocks = `{"type":"section"}` }, "slack.blocks"},
		{"icon neither emoji nor URL", func(s *api.SlackTrigger) { s.Sender = &api.SlackSender{Icon: "robot_face"} }, `slack.sender.icon: "robot_face"`},
		{"parameter without dest", func(s *api.SlackTrigger) { s.Parameters = []api.TriggerParameter{{Src: src("x")}} }, "slack.parameters[0].dest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			if err := Check(&api.TriggerTemplate{Name: "t", Slack: &s}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Check = %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
