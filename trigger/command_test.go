package trigger

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
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
		CreatedAt:   at}
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
