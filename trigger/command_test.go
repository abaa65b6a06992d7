package trigger

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
)

// TestCommandAppendJSON holds the hand-written command encoding to json.Marshal's: both decode
// to the same command.
func TestCommandAppendJSON(t *testing.T) {
	at := time.Date(2026, 11, 22, 1, 2, 3, 4000, time.UTC)
	full := &Command{ID: "abc", Namespace: "ns", Sensor: "s", Trigger: `quote"and\back`, Type: "http",
		Events:    []EventRef{{Dependency: "a", ID: "e1", EventSource: "src", EventName: "push", Time: at}, {Dependency: "é", ID: "e2", Time: at.Add(time.Second)}},
		Spec:      json.RawMessage(`{"url":"http://x","body":"eyJuIjoxfQ=="}`),
		Retry:     &Retry{Steps: 3, Duration: time.Second, Factor: 1.5},
		RateLimit: &RateLimit{Requests: 2, Per: time.Minute}, AllowStatus: []int{200, 404},
		LabelPolicy: &LabelPolicy{Labels: map[string]string{"a": "b"}, Backoff: Retry{Steps: 2, Duration: time.Millisecond, Factor: 2}},
		Ordered:     true, CreatedAt: at}
	withDLQ := *full
	withDLQ.DLQ = &Command{ID: "dlq", Type: "log", Spec: json.RawMessage(`{}`), CreatedAt: at}
	for name, c := range map[string]*Command{"minimal": {ID: "x", Spec: json.RawMessage(`{}`)}, "no spec": {ID: "x"}, "full": full, "with a dlq": &withDLQ} {
		got := c.AppendJSON(nil)
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var g, w Command
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: not JSON: %v\n%s", name, err, got)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: hand-written\n%s\njson.Marshal\n%s", name, got, want)
		}
	}
}

// TestCommandIDStable pins the id of a command: ids must not change between versions, or a
// command redelivered across an upgrade would run again. Dependencies are hashed in name order.
func TestCommandIDStable(t *testing.T) {
	refs := []EventRef{{Dependency: "b", ID: "e2", EventSource: "src2", EventName: "tag"}, {Dependency: "a", ID: "e1", EventSource: "src", EventName: "push"}}
	if got := CommandID("ns", "s", "t", refs); got != "af7ecdceaf606f063c23242523da417b" {
		t.Errorf("CommandID = %s; it changed since the previous version", got)
	}
}

// TestRetryJitter: a wait grows by at most its jitter share, and without jitter stays as is.
func TestRetryJitter(t *testing.T) {
	r := &Retry{Jitter: 0.5}
	spread := map[time.Duration]bool{}
	for i := 0; i < 200; i++ {
		w := r.jittered(time.Second)
		if w < time.Second || w > 1500*time.Millisecond {
			t.Fatalf("jittered wait %v outside [1s, 1.5s]", w)
		}
		spread[w] = true
	}
	if len(spread) < 100 {
		t.Errorf("only %d distinct waits in 200; jitter does not spread them", len(spread))
	}
	if w := (&Retry{}).jittered(time.Second); w != time.Second {
		t.Errorf("no jitter: %v", w)
	}
}

// TestOrdered: a trigger's commands are ordered, keyed by trigger, exactly when the user asks,
// it has a rate limit, or its type keeps the trigger's state in the executor's memory; any other
// trigger's commands are keyed by id.
func TestOrdered(t *testing.T) {
	token := &api.SecretKeySelector{Name: "slack", Key: "token"}
	slack := func(s api.SlackTrigger) *api.TriggerTemplate {
		s.SlackToken, s.Channel, s.Message = token, "general", "hi"
		return &api.TriggerTemplate{Name: "t", Slack: &s}
	}
	param := func(dest string) []api.TriggerParameter {
		return []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "d", DataKey: "body.x"}, Dest: dest}}
	}
	for _, c := range []struct {
		name string
		tr   api.Trigger
		want bool
	}{
		{"http", api.Trigger{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: "http://x"}}}, false},
		{"kevents.ordered", api.Trigger{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: "http://x"}}, Kevents: &api.TriggerExtensions{Ordered: true}}, true},
		{"atLeastOnce", api.Trigger{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: "http://x"}}, AtLeastOnce: true}, true},
		{"rateLimit", api.Trigger{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: "http://x"}}, RateLimit: &api.RateLimit{Unit: "Second", RequestsPerUnit: 1}}, true},
		{"log", api.Trigger{Template: &api.TriggerTemplate{Name: "t", Log: &api.LogTrigger{}}}, false},
		{"log intervalSeconds", api.Trigger{Template: &api.TriggerTemplate{Name: "t", Log: &api.LogTrigger{IntervalSeconds: 5}}}, true},
		{"log intervalSeconds from a parameter", api.Trigger{Template: &api.TriggerTemplate{Name: "t", Log: &api.LogTrigger{}}, Parameters: param("log.intervalSeconds")}, true},
		{"slack", api.Trigger{Template: slack(api.SlackTrigger{})}, false},
		{"slack with a parameter elsewhere", api.Trigger{Template: slack(api.SlackTrigger{Parameters: param("message")})}, false},
		{"slack thread", api.Trigger{Template: slack(api.SlackTrigger{Thread: &api.SlackThread{MessageAggregationKey: "build"}})}, true},
		{"slack thread from a slack parameter", api.Trigger{Template: slack(api.SlackTrigger{Parameters: param("thread.messageAggregationKey")})}, true},
		{"slack thread from a trigger parameter", api.Trigger{Template: slack(api.SlackTrigger{}), Parameters: param("slack.thread")}, true},
	} {
		if got := Ordered(&c.tr); got != c.want {
			t.Errorf("%s: Ordered = %v; want %v", c.name, got, c.want)
		}
		if err := Check(c.tr.Template); err != nil {
			t.Errorf("%s: the template is not valid: %v", c.name, err)
		}
	}
}

// TestCommandKey: an ordered command is keyed by its trigger, any other by its id.
func TestCommandKey(t *testing.T) {
	c := Command{ID: "0a1b", Namespace: "ns", Sensor: "s", Trigger: "t"}
	if k := c.Key(); k != "0a1b" {
		t.Errorf("key %q; want the id 0a1b", k)
	}
	c.Ordered = true
	if k := c.Key(); k != "ns/s/t" || c.TriggerPath() != "ns/s/t" {
		t.Errorf("ordered key %q, trigger path %q; want ns/s/t", k, c.TriggerPath())
	}
}
