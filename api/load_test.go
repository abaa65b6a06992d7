package api

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSeveralDocuments(t *testing.T) {
	docs := Parse("defs.yaml", []byte(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    push:
      port: "12000"
      endpoint: /push
      method: POST
      maxPayloadSize: 2048
---
# an empty document is dropped
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: on-push
spec:
  dependencies:
    - name: p
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: print
        log:
          intervalSeconds: 5
---
apiVersion: argoproj.io/v1alpha1
kind: ConfigMap
metadata:
  name: other
`))
	if len(docs) != 3 {
		t.Fatalf("got %d documents, want 3", len(docs))
	}
	es := docs[0].EventSource
	if docs[0].Err != nil || es == nil {
		t.Fatalf("document 1: %v", docs[0].Err)
	}
	ev := es.Spec.Events()
	if len(ev) != 1 || ev[0].Type != "webhook" || ev[0].Name != "push" || *ev[0].Webhook.MaxPayloadSize != 2048 {
		t.Errorf("events %+v", ev)
	}
	if docs[1].Err != nil || docs[1].Sensor == nil || docs[1].Index != 3 || docs[1].Sensor.Spec.Triggers[0].Template.Log.IntervalSeconds != 5 {
		t.Errorf("document 3: %+v", docs[1])
	}
	if docs[2].Skipped == "" || docs[2].Err != nil {
		t.Errorf("a ConfigMap must be skipped, got %+v", docs[2])
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown field", `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: x}
spec:
  webhook:
    e: {port: "1", endpoint: /e, method: POST, maxPayload: 3}
`, []string{"line 6", "spec.webhook.e.maxPayload: unknown field", "maxPayloadSize"}},
		{"wrong type", `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: x}
spec:
  webhook:
    e: {port: 12000, endpoint: /e, method: POST}
`, []string{"spec.webhook.e.port: expected a string (quote it: \"12000\")"}},
		{"misplaced", `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: x}
spec:
  dependencies: [{name: d, eventSourceName: a, eventName: b}]
  triggers:
    - template: {name: t, log: {}, retryStrategy: {steps: 2}}
`, []string{"spec.triggers[0].template.retryStrategy: unknown field", `"retryStrategy" belongs one level up, in spec.triggers[0]`}},
		{"bad apiVersion", "apiVersion: v1\nkind: Sensor\nmetadata: {name: x}\n", []string{`apiVersion: "v1"`}},
		{"no kind", "apiVersion: argoproj.io/v1alpha1\nmetadata: {name: x}\n", []string{"kind: missing"}},
		{"bad port", `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: x}
spec:
  webhook:
    e: {port: "99999", endpoint: e, method: FETCH}
`, []string{`spec.webhook.e.port: "99999"`, `spec.webhook.e.endpoint: "e"`, `spec.webhook.e.method: "FETCH"`}},
		{"unknown dependency in parameter", `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: x}
spec:
  dependencies: [{name: d, eventSourceName: a, eventName: b}]
  triggers:
    - template: {name: t, log: {}}
      parameters: [{src: {dependencyName: nope, dataKey: a}, dest: name}]
`, []string{`spec.triggers[0].parameters[0].src.dependencyName: "nope"`}},
		{"two trigger types", `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: x}
spec:
  dependencies: [{name: d, eventSourceName: a, eventName: b}]
  triggers:
    - template: {name: t, log: {}, http: {url: "http://x"}}
`, []string{"several trigger types set (http, log)"}},
		{"broken yaml", "kind: [", []string{"invalid YAML"}},
		{"correlation", `apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: x}
spec:
  dependencies: [{name: d, eventSourceName: a, eventName: b}]
  triggers:
    - template: {name: t, log: {}}
      kevents:
        correlation: {keys: {d: "", e: body.x}, window: soon}
`, []string{`spec.triggers[0].kevents.correlation.keys: "e" is not a dependency`,
			`spec.triggers[0].kevents.correlation.keys.d: empty path`,
			`spec.triggers[0].kevents.correlation.window: "soon"; expected a positive duration`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs := Parse("f.yaml", []byte(c.yaml))
			if len(docs) != 1 || docs[0].Err == nil {
				t.Fatalf("want one document with an error, got %+v", docs)
			}
			if docs[0].EventSource != nil || docs[0].Sensor != nil {
				t.Error("a refused document must not carry a definition")
			}
			msg := docs[0].Err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not contain %q", msg, w)
				}
			}
		})
	}
}

func TestNotSupported(t *testing.T) {
	err := NotSupported("eventsource type", "sqs")
	if !errors.Is(err, ErrNotSupported) || err.Error() != `not supported yet: eventsource type "sqs"` {
		t.Errorf("got %q", err)
	}
}

func TestPayloadWithoutDest(t *testing.T) {
	docs := Parse("f.yaml", []byte(`apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: x}
spec:
  dependencies: [{name: d, eventSourceName: a, eventName: b}]
  triggers:
    - template:
        name: t
        http:
          url: http://example.com
          payload: [{src: {dependencyName: d, dataKey: body}}]
      parameters: [{src: {dependencyName: d, dataKey: a}}]
`))
	if len(docs) != 1 || docs[0].Err == nil {
		t.Fatalf("want an error for the trigger parameter without dest, got %+v", docs)
	}
	msg := docs[0].Err.Error()
	if !strings.Contains(msg, "spec.triggers[0].parameters[0].dest: missing") || strings.Contains(msg, "payload[0].dest") {
		t.Errorf("an empty dest is the whole payload in http.payload, and missing elsewhere; got %q", msg)
	}
}

// TestLoadPathsMountedConfigMap reads a folder laid out as Kubernetes mounts a ConfigMap: the
// files live in a hidden ..<timestamp> folder, linked through ..data from the top. Each
// definition must load once.
func TestLoadPathsMountedConfigMap(t *testing.T) {
	dir := t.TempDir()
	stamp := filepath.Join(dir, "..2026_11_22_01_00_00.123")
	if err := os.Mkdir(stamp, 0o755); err != nil {
		t.Fatal(err)
	}
	sensor := "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata: {name: s}\nspec:\n  dependencies: [{name: d, eventSourceName: e, eventName: x}]\n  triggers: [{template: {name: t, log: {}}}]\n"
	if err := os.WriteFile(filepath.Join(stamp, "sensor.yaml"), []byte(sensor), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(stamp), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "sensor.yaml"), filepath.Join(dir, "sensor.yaml")); err != nil {
		t.Fatal(err)
	}
	docs, err := LoadPaths(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].Sensor == nil {
		t.Fatalf("loaded %d documents (%v); want the one sensor once", len(docs), docs)
	}
}
