package source

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
)

const (
	slackSigning = "slack-SIGNING-secret-0123456789"
	slackToken   = "slack-VERIFICATION-token-abcdef"
)

// slackHeaders signs body as Slack does at time at.
func slackHeaders(secret string, at time.Time, contentType string, body []byte) map[string]string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return map[string]string{
		"Content-Type":              contentType,
		"X-Slack-Request-Timestamp": ts,
		"X-Slack-Signature":         ghSign(sha256.New, "v0", secret, []byte("v0:"+ts+":"+string(body))),
	}
}

func TestSlackRequests(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"sl"}, withSecrets(mapSecrets(map[string]string{"slack/signing": slackSigning, "slack/token": slackToken})))
	logs := ghCaptureLog(h)
	ghStart(t, h, parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: sl
spec:
  slack:
    app:
      webhook: {port: "%d", endpoint: /slack, method: POST, maxPayloadSize: 1024}
      token: {name: slack, key: token}
      signingSecret: {name: slack, key: signing}
      metadata: {team: chatops}
`, port)))
	u := url(port, "/slack")
	now := time.Now()
	const jsonCT, formCT = "application/json", "application/x-www-form-urlencoded"
	send := func(body []byte, hdr map[string]string) response { return do(t, http.MethodPost, u, body, hdr) }

	challenge := []byte(`{"token":"` + slackToken + `","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`)
	if resp := send(challenge, slackHeaders(slackSigning, now, jsonCT, challenge)); resp.status != http.StatusOK || resp.body != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" {
		t.Errorf("url_verification: %d %q, want 200 and the challenge", resp.status, resp.body)
	}
	wrongToken := []byte(strings.Replace(string(challenge), slackToken, "other", 1))
	if resp := send(wrongToken, slackHeaders(slackSigning, now, jsonCT, wrongToken)); resp.status != http.StatusForbidden {
		t.Errorf("wrong token: %d %q, want 403", resp.status, resp.body)
	}

	callback := []byte(`{"token":"` + slackToken + `","team_id":"T1","api_app_id":"A1","type":"event_callback","event_id":"Ev08MFMKH6","event_time":1234567890,
"event":{"type":"app_mention","user":"U1","text":"<@U0> deploy","ts":"1515449522.000016","channel":"C1"}}`)
	stale := slackHeaders(slackSigning, now.Add(-6*time.Minute), jsonCT, callback)
	malformed := slackHeaders(slackSigning, now, jsonCT, callback)
	malformed["X-Slack-Signature"] = "v1=" + strings.TrimPrefix(malformed["X-Slack-Signature"], "v0=")
	for _, c := range []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"unsigned", map[string]string{"Content-Type": jsonCT}, http.StatusUnauthorized},
		{"stale", stale, http.StatusUnauthorized},
		{"other version", malformed, http.StatusUnauthorized},
		{"wrong secret", slackHeaders("other", now, jsonCT, callback), http.StatusForbidden},
	} {
		if resp := send(callback, c.hdr); resp.status != c.status {
			t.Errorf("%s: %d %q, want %d", c.name, resp.status, resp.body, c.status)
		}
	}
	if resp := send(callback, slackHeaders(slackSigning, now, jsonCT, callback)); resp.status != http.StatusOK {
		t.Fatalf("event callback: %d %q", resp.status, resp.body)
	}
	limited := []byte(`{"token":"` + slackToken + `","type":"app_rate_limited","team_id":"T1","minute_rate_limited":1518467820}`)
	if resp := send(limited, slackHeaders(slackSigning, now, jsonCT, limited)); resp.status != http.StatusOK {
		t.Errorf("app_rate_limited: %d %q, want 200 and nothing published", resp.status, resp.body)
	}

	interaction := []byte("payload=" + neturl.QueryEscape(`{"type":"block_actions","token":"`+slackToken+`","trigger_id":"12466734323.1395872398","user":{"id":"U1"},"actions":[{"action_id":"27S","value":"click_me_123"}]}`))
	if resp := send(interaction, slackHeaders(slackSigning, now, formCT, interaction)); resp.status != http.StatusOK {
		t.Fatalf("interaction: %d %q", resp.status, resp.body)
	}
	command := []byte("token=" + slackToken + "&team_id=T0001&team_domain=example&channel_id=C2147483705&channel_name=test&user_id=U2147483697&user_name=Steve&command=/weather&text=94070&response_url=https://hooks.slack.com/commands/1234/5678&trigger_id=13345224609.738474920.8088930838d88f008e0&api_app_id=A123456")
	if resp := send(command, slackHeaders(slackSigning, now, formCT, command)); resp.status != http.StatusOK {
		t.Fatalf("slash command: %d %q", resp.status, resp.body)
	}
	for name, b := range map[string][]byte{"neither payload nor command": []byte("text=hi"), "bad payload": []byte("payload=%7Bnope")} {
		if resp := send(b, slackHeaders(slackSigning, now, formCT, b)); resp.status != http.StatusBadRequest {
			t.Errorf("form %s: %d %q, want 400", name, resp.status, resp.body)
		}
	}
	bad := []byte(`{"type":`)
	if resp := send(bad, slackHeaders(slackSigning, now, jsonCT, bad)); resp.status != http.StatusBadRequest {
		t.Errorf("malformed JSON: %d %q, want 400", resp.status, resp.body)
	}
	big := []byte(`{"x":"` + strings.Repeat("a", 2000) + `"}`)
	if resp := send(big, slackHeaders(slackSigning, now, jsonCT, big)); resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized: %d %q, want 413", resp.status, resp.body)
	}

	recs := h.records("kevents.src.default.sl", 3)
	var data []map[string]json.RawMessage
	var ids []string
	for _, r := range recs {
		e := decode(t, r)
		if e.Type() != "slack" || e.Source() != "sl" || e.Subject() != "app" {
			t.Errorf("event type %q source %q subject %q", e.Type(), e.Source(), e.Subject())
		}
		var d map[string]json.RawMessage
		if err := json.Unmarshal(e.Data(), &d); err != nil {
			t.Fatal(err)
		}
		data, ids = append(data, d), append(ids, e.ID())
		if string(d["metadata"]) != `{"team":"chatops"}` {
			t.Errorf("event %s: metadata %s, want the source's", e.ID(), d["metadata"])
		}
		if ghRecordHolds(r, slackToken) || ghRecordHolds(r, slackSigning) {
			t.Errorf("event %s holds a secret: %s", e.ID(), e.Data())
		}
	}
	// The callback as Argo encodes slack-go's inner event, then the interaction payload, then
	// the slash command's fields.
	var inner struct{ Type, Text string }
	_ = json.Unmarshal(data[0]["Data"], &inner)
	if ids[0] != "Ev08MFMKH6" || string(data[0]["type"]) != `"app_mention"` || inner.Type != "app_mention" || inner.Text != "<@U0> deploy" {
		t.Errorf("callback %s: %s, want {type, Data} with the inner event", ids[0], recs[0].Value)
	}
	if ids[1] != "12466734323.1395872398" || string(data[1]["type"]) != `"block_actions"` || data[1]["actions"] == nil {
		t.Errorf("interaction %s: %s, want the payload", ids[1], recs[1].Value)
	}
	if string(data[2]["command"]) != `"/weather"` || string(data[2]["text"]) != `"94070"` || string(data[2]["is_enterprise_install"]) != "false" || data[2]["token"] != nil {
		t.Errorf("slash command: %s, want slack-go's SlashCommand fields without the token", recs[2].Value)
	}
	if strings.Contains(logs.String(), slackSigning) || strings.Contains(logs.String(), slackToken) {
		t.Error("a secret appears in the log")
	}
}

func TestSlackSecretsRequiredAndResolved(t *testing.T) {
	h := newHarness(t, []string{"sl"}, withSecrets(mapSecrets(map[string]string{"slack/token": slackToken, "slack/signing": ""})))
	_, err := Run(t.Context(), h.env, parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: sl
spec:
  slack:
    app:
      webhook: {port: "12000", endpoint: /slack, method: POST}
      token: {name: slack, key: token}
      signingSecret: {name: slack, key: signing}
`))
	if err == nil || !strings.Contains(err.Error(), "signingSecret: secret slack/signing is empty") {
		t.Errorf("Run: %v; want the empty signing secret refused", err)
	}
}

func TestCheckSlack(t *testing.T) {
	webhook := "      webhook: {port: \"12000\", endpoint: /slack, method: POST}\n"
	secrets := "      token: {name: s, key: t}\n      signingSecret: {name: s, key: k}\n"
	cases := []struct {
		name, fields string
		want         []string
		notSupported bool
	}{
		{"valid", webhook + secrets, nil, false},
		{"no secrets", webhook, []string{"token: missing", "signingSecret: missing"}, false},
		{"no webhook", secrets, []string{"webhook: missing"}, false},
		{"filter", webhook + secrets + "      filter: {expression: \"body.event.type == 'app_mention'\"}\n", nil, false},
		{"TLS", strings.Replace(webhook, "POST", "POST, serverCertSecret: {name: a, key: b}, serverKeySecret: {name: a, key: c}", 1) + secrets, nil, false},
		{"TLS key without a key name", strings.Replace(webhook, "POST", "POST, serverCertSecret: {name: a, key: b}, serverKeySecret: {name: a}", 1) + secrets, []string{"webhook.serverKeySecret"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: sl\nspec:\n  slack:\n    ev:\n"+c.fields)[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range append(c.want, "spec.slack.ev") {
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
