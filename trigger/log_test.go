package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/api"
)

// syncBuffer is a bytes.Buffer safe for the concurrent test below.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines decodes the JSON log lines written so far.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

func logExecutorForTest(t *testing.T) (Executor, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	xs, err := newExecutors(Env{Logger: slog.New(slog.NewJSONHandler(buf, nil))})
	if err != nil {
		t.Fatalf("newExecutors: %v", err)
	}
	x, ok := xs["log"]
	if !ok {
		t.Fatal("no log executor")
	}
	return x, buf
}

func logEvent(t *testing.T, id, contentType, data string) *cloudevents.Event {
	t.Helper()
	e := cloudevents.New()
	e.SetID(id)
	e.SetSource("es")
	e.SetSubject("ev")
	e.SetType("webhook")
	e.SetTime(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
	if err := e.SetData(contentType, []byte(data)); err != nil {
		t.Fatal(err)
	}
	return &e
}

func logCommand(t *testing.T, triggerName string, req LogRequest) *Command {
	t.Helper()
	spec, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return &Command{ID: "cmd-" + triggerName, Namespace: "ns", Sensor: "s", Trigger: triggerName, Type: "log", Spec: spec}
}

func TestLogTrigger(t *testing.T) {
	x, buf := logExecutorForTest(t)
	events := map[string]*cloudevents.Event{
		"b": logEvent(t, "id-b", "text/plain", "plain words"),
		"a": logEvent(t, "id-a", "application/json", `{"k":"v"}`),
	}
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", Log: &api.LogTrigger{}}, Events: events})
	if err != nil || typ != "log" {
		t.Fatalf("Render = %q, %v", typ, err)
	}
	cmd := &Command{ID: "cmd-1", Namespace: "ns", Sensor: "s", Trigger: "t", Type: typ, Spec: spec, Events: []EventRef{
		{Dependency: "a", ID: "id-a", EventSource: "es", EventName: "ev"},
		{Dependency: "b", ID: "id-b", EventSource: "es", EventName: "ev"},
	}}
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	lines := buf.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d log lines; want one per event: %v", len(lines), lines)
	}
	for i, want := range []map[string]any{
		{"dependency": "a", "data": `{"k":"v"}`, "eventID": "id-a"},
		{"dependency": "b", "data": "plain words", "eventID": "id-b"},
	} {
		want["level"], want["msg"], want["sensor"], want["trigger"] = "INFO", "log trigger", "s", "t"
		want["eventSource"], want["event"], want["commandID"] = "es", "ev", "cmd-1"
		for k, v := range want {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v; want %v", i, k, lines[i][k], v)
			}
		}
	}
}

// TestRenderLogIsJSONMarshal holds the hand-written body to json.Marshal of its LogRequest.
func TestRenderLogIsJSONMarshal(t *testing.T) {
	for _, tc := range []struct {
		interval uint64
		events   map[string]*cloudevents.Event
	}{
		{0, nil},
		{0, map[string]*cloudevents.Event{"a": logEvent(t, "1", "application/json", `{"k":"<v> & \u2028"}`)}},
		{30, map[string]*cloudevents.Event{
			"z": logEvent(t, "1", "text/plain", "tab\tbad \xff line\u2028"),
			"b": logEvent(t, "2", "application/json", `[1,2]`),
			"a": logEvent(t, "3", "text/plain", ""),
		}},
	} {
		_, got, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", Log: &api.LogTrigger{IntervalSeconds: tc.interval}}, Events: tc.events})
		if err != nil {
			t.Fatal(err)
		}
		req := LogRequest{IntervalSeconds: tc.interval}
		for _, d := range slices.Sorted(maps.Keys(tc.events)) {
			req.Events = append(req.Events, LogEvent{Dependency: d, Data: string(tc.events[d].Data())})
		}
		want, _ := json.Marshal(req)
		if string(got) != string(want) {
			t.Errorf("body %s, json.Marshal writes %s", got, want)
		}
	}
}

func TestLogTriggerInterval(t *testing.T) {
	x, buf := logExecutorForTest(t)
	once := LogRequest{IntervalSeconds: 60, Events: []LogEvent{{Dependency: "a", Data: "x"}}}
	for i := 0; i < 3; i++ {
		if err := x.Execute(context.Background(), logCommand(t, "t", once)); err != nil {
			t.Fatalf("Execute %d: %v", i, err)
		}
	}
	if n := len(buf.lines(t)); n != 1 {
		t.Fatalf("%d lines after three runs within the interval; want 1", n)
	}
	// The interval is per trigger: another trigger prints.
	if err := x.Execute(context.Background(), logCommand(t, "other", once)); err != nil {
		t.Fatal(err)
	}
	if n := len(buf.lines(t)); n != 2 {
		t.Fatalf("%d lines after another trigger ran; want 2", n)
	}
	// Without an interval every run prints.
	always := LogRequest{Events: []LogEvent{{Dependency: "a", Data: "x"}}}
	for i := 0; i < 2; i++ {
		if err := x.Execute(context.Background(), logCommand(t, "noint", always)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(buf.lines(t)); n != 4 {
		t.Fatalf("%d lines after two runs without interval; want 4", n)
	}
}

func TestLogTriggerIntervalElapses(t *testing.T) {
	t.Parallel()
	x, buf := logExecutorForTest(t)
	req := LogRequest{IntervalSeconds: 1, Events: []LogEvent{{Dependency: "a", Data: "x"}}}
	for _, wait := range []time.Duration{0, 0, 1100 * time.Millisecond} {
		time.Sleep(wait)
		if err := x.Execute(context.Background(), logCommand(t, "t", req)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(buf.lines(t)); n != 2 {
		t.Fatalf("%d lines; want 2 (the second run suppressed, the third after the interval)", n)
	}
}

func TestLogTriggerIntervalConcurrent(t *testing.T) {
	x, buf := logExecutorForTest(t)
	req := LogRequest{IntervalSeconds: 60, Events: []LogEvent{{Dependency: "a", Data: "x"}}}
	cmd := logCommand(t, "t", req)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := x.Execute(context.Background(), cmd); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := len(buf.lines(t)); n != 1 {
		t.Fatalf("%d lines from concurrent runs within the interval; want 1", n)
	}
}

func TestLogTriggerMalformed(t *testing.T) {
	x, _ := logExecutorForTest(t)
	err := x.Execute(context.Background(), &Command{ID: "bad-7", Type: "log", Spec: json.RawMessage(`[1,2]`)})
	if err == nil || !strings.Contains(err.Error(), "bad-7") {
		t.Errorf("Execute = %v; want an error naming the command", err)
	}
}
