package sensor

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/trigger"
)

var paramEventTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// newEvent builds a CloudEvent as a kevents source would: source is the EventSource, subject the
// event name, type the source type.
func newEvent(t *testing.T, id, contentType, data string) *cloudevents.Event {
	t.Helper()
	e := cloudevents.New()
	e.SetID(id)
	e.SetSource("webhook-es")
	e.SetSubject("example-1")
	e.SetType("webhook")
	e.SetTime(paramEventTime)
	if err := e.SetData(contentType, []byte(data)); err != nil {
		t.Fatalf("SetData: %v", err)
	}
	return &e
}

func ptr(s string) *string { return &s }

func show(s *string) string {
	if s == nil {
		return "nil"
	}
	return fmt.Sprintf("%q", *s)
}

// jsonEqual reports whether two JSON documents hold the same value, whatever their layout.
func jsonEqual(t *testing.T, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("result is not JSON: %v: %s", err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("bad expectation %s: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

const paramData = `{"name": {"first": "fake", "last": "user"}, "reviews": 8, "rating": 4.5, "isActive" : true, "isVerified" : false, "countries": ["ca", "us", "mx"], "nothing": null}`

func paramEvents(t *testing.T) params {
	return params{
		"dep":  newEvent(t, "1", "application/json", paramData),
		"text": newEvent(t, "2", "text/plain", "hello, not json"),
	}
}

// TestParamsValue covers how one parameter source resolves (Argo's ResolveParamValue).
func TestParamsValue(t *testing.T) {
	p := paramEvents(t)
	tests := []struct {
		name    string
		src     *api.TriggerParameterSource
		want    *string // nil: resolves to nothing
		wantErr string
	}{
		{name: "data key", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "name.first"}, want: ptr("fake")},
		{name: "context key subject", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "subject"}, want: ptr("example-1")},
		{name: "context key source", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "source"}, want: ptr("webhook-es")},
		{name: "context key type", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "type"}, want: ptr("webhook")},
		{name: "context key id", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "id"}, want: ptr("1")},
		{name: "context key datacontenttype", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "datacontenttype"}, want: ptr("application/json")},
		{name: "context key specversion", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "specversion"}, want: ptr("1.0")},
		{name: "context key time", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "time"}, want: ptr("2024-05-06T07:08:09Z")},
		{name: "value alone is the value", src: &api.TriggerParameterSource{DependencyName: "dep", Value: ptr("hello")}, want: ptr("hello")},
		{name: "data key wins over context key", src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "subject", DataKey: "name.first"}, want: ptr("fake")},
		{name: "data template", src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ .Input.name.first }}"}, want: ptr("fake")},
		{name: "data template with sprig", src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ upper .Input.name.first }}"}, want: ptr("FAKE")},
		{name: "data template over a number", src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ .Input.reviews }} reviews"}, want: ptr("8 reviews")},
		{name: "data template with sprig join", src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: `{{ join "," .Input.countries }}`}, want: ptr("ca,us,mx")},
		{name: "context template", src: &api.TriggerParameterSource{DependencyName: "dep", ContextTemplate: "{{ .Input.subject }}"}, want: ptr("example-1")},
		{name: "context template with sprig", src: &api.TriggerParameterSource{DependencyName: "dep", ContextTemplate: `{{ .Input.subject | replace "-" "_" }}`}, want: ptr("example_1")},
		{name: "data template wins over context template",
			src: &api.TriggerParameterSource{DependencyName: "dep", ContextTemplate: "{{ .Input.subject }}", DataTemplate: "{{ .Input.name.first }}"}, want: ptr("fake")},
		{name: "template wins over key",
			src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ .Input.name.last }}", DataKey: "name.first"}, want: ptr("user")},
		{name: "template with no value falls back to the key",
			src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ .Input.name.non_exist }}", DataKey: "name.first"}, want: ptr("fake")},
		{name: "template that does not parse falls back to the key",
			src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ no }}", DataKey: "name.first"}, want: ptr("fake")},
		{name: "template with no value falls back to the default",
			src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ .Input.nope }}", Value: ptr("dflt")}, want: ptr("dflt")},
		{name: "template with no value and nothing to fall back to is an error",
			src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ .Input.nope }}"}, wantErr: "no value"},
		{name: "raw data: string", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "name.first", UseRawData: true}, want: ptr("fake")},
		{name: "raw data: object", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "name", UseRawData: true}, want: ptr(`{"first": "fake", "last": "user"}`)},
		{name: "raw data: list", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "countries", UseRawData: true}, want: ptr(`["ca", "us", "mx"]`)},
		{name: "object without raw data is its JSON text", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "name"}, want: ptr(`{"first": "fake", "last": "user"}`)},
		{name: "integer", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "reviews"}, want: ptr("8")},
		{name: "float", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "rating"}, want: ptr("4.5")},
		{name: "true", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "isActive"}, want: ptr("true")},
		{name: "false", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "isVerified"}, want: ptr("false")},
		{name: "null", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "nothing"}, want: ptr("null")},
		{name: "array element", src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "countries.1"}, want: ptr("us")},
		{name: "missing data key falls back to the default",
			src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "nope", Value: ptr("dflt")}, want: ptr("dflt")},
		{name: "missing data key without default is an error naming dependency and key",
			src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "nope"}, wantErr: `"nope"`},
		{name: "missing context key falls back to the default",
			src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "nope", Value: ptr("dflt")}, want: ptr("dflt")},
		{name: "absent dependency gives the default",
			src: &api.TriggerParameterSource{DependencyName: "other", DataKey: "name.first", Value: ptr("dflt")}, want: ptr("dflt")},
		{name: "absent dependency without default gives nothing, without error",
			src: &api.TriggerParameterSource{DependencyName: "other", DataKey: "name.first"}, want: nil},
		{name: "data that is not JSON falls back to the default",
			src: &api.TriggerParameterSource{DependencyName: "text", DataKey: "k", Value: ptr("dflt")}, want: ptr("dflt")},
		{name: "data that is not JSON without default is an error",
			src: &api.TriggerParameterSource{DependencyName: "text", DataKey: "k"}, wantErr: "not JSON"},
		{name: "context of an event whose data is not JSON",
			src: &api.TriggerParameterSource{DependencyName: "text", ContextKey: "datacontenttype"}, want: ptr("text/plain")},
		{name: "no source is an error", src: nil, wantErr: "src"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Value(tc.src)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Value error = %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Value: unexpected error %v", err)
			}
			switch {
			case tc.want == nil && got != nil:
				t.Fatalf("Value = %q; want nil", *got)
			case tc.want != nil && got == nil:
				t.Fatalf("Value = nil; want %q", *tc.want)
			case tc.want != nil && *got != *tc.want:
				t.Fatalf("Value = %q; want %q", *got, *tc.want)
			}
		})
	}
	t.Run("missing key error names the dependency", func(t *testing.T) {
		_, err := p.Value(&api.TriggerParameterSource{DependencyName: "dep", DataKey: "nope"})
		if err == nil || !strings.Contains(err.Error(), `"dep"`) {
			t.Fatalf("error = %v; want it to name dependency \"dep\"", err)
		}
	})
}

// TestParamsWholeEvent: a source with neither key, template nor value resolves to the whole
// event, context and data.
func TestParamsWholeEvent(t *testing.T) {
	p := paramEvents(t)
	got, err := p.Value(&api.TriggerParameterSource{DependencyName: "dep"})
	if err != nil || got == nil {
		t.Fatalf("Value = %v, %v", got, err)
	}
	var whole struct {
		Context map[string]string `json:"context"`
		Data    []byte            `json:"data"` // base64 in JSON, as Argo marshals its Event.Data
	}
	if err := json.Unmarshal([]byte(*got), &whole); err != nil {
		t.Fatalf("whole event is not JSON: %v: %s", err, *got)
	}
	for k, want := range map[string]string{"id": "1", "source": "webhook-es", "subject": "example-1", "type": "webhook", "datacontenttype": "application/json", "specversion": "1.0"} {
		if whole.Context[k] != want {
			t.Errorf("context.%s = %q; want %q", k, whole.Context[k], want)
		}
	}
	if string(whole.Data) != paramData {
		t.Errorf("data = %s; want %s", whole.Data, paramData)
	}

	// Data that is not JSON is carried the same way.
	got, err = p.Value(&api.TriggerParameterSource{DependencyName: "text"})
	if err != nil || got == nil {
		t.Fatalf("Value = %v, %v", got, err)
	}
	if err := json.Unmarshal([]byte(*got), &whole); err != nil {
		t.Fatalf("whole event is not JSON: %v: %s", err, *got)
	}
	if string(whole.Data) != "hello, not json" {
		t.Errorf("data = %s; want the text", whole.Data)
	}
}

// TestParamsApply covers parameters applied to a document (Argo's ApplyParams).
func TestParamsApply(t *testing.T) {
	p := params{"dep": newEvent(t, "1", "application/json",
		`{"name": {"first": "fake", "last": "user"}, "age": 100, "active": true, "nothing": null, "countries": ["ca", "us", "mx"] }`)}
	key := func(k string, raw bool) *api.TriggerParameterSource {
		return &api.TriggerParameterSource{DependencyName: "dep", DataKey: k, UseRawData: raw}
	}
	tests := []struct {
		name    string
		doc     string
		params  []api.TriggerParameter
		want    string
		wantErr string
	}{
		{name: "no operation overwrites", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "name"}}, want: `{"name": "fake"}`},
		{name: "prepend", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "name", Operation: "prepend"}}, want: `{"name": "fakefaker"}`},
		{name: "append", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "name", Operation: "append"}}, want: `{"name": "fakerfake"}`},
		{name: "overwrite", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "name", Operation: "overwrite"}}, want: `{"name": "fake"}`},
		{name: "object without raw data becomes its JSON text", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: key("name", false), Dest: "name", Operation: "overwrite"}},
			want:   `{"name": "{\"first\": \"fake\", \"last\": \"user\"}"}`},
		{name: "object with raw data stays an object", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: key("name", true), Dest: "name", Operation: "overwrite"}},
			want:   `{"name": {"first": "fake", "last": "user"}}`},
		{name: "raw number, appended number and appended list", doc: `{"age": "this-gets-over-written", "ageWithYears": "Years: "}`,
			params: []api.TriggerParameter{
				{Src: key("age", true), Dest: "age", Operation: "overwrite"},
				{Src: key("age", true), Dest: "ageWithYears", Operation: "append"},
				{Src: key("countries", true), Dest: "countries", Operation: "append"},
			},
			want: `{"age": 100, "ageWithYears": "Years: 100", "countries": ["ca", "us", "mx"]}`},
		{name: "number without raw data is a string", doc: `{}`,
			params: []api.TriggerParameter{{Src: key("age", false), Dest: "age"}}, want: `{"age": "100"}`},
		{name: "raw bool", doc: `{}`,
			params: []api.TriggerParameter{{Src: key("active", true), Dest: "active"}}, want: `{"active": true}`},
		{name: "bool without raw data is a string", doc: `{}`,
			params: []api.TriggerParameter{{Src: key("active", false), Dest: "active"}}, want: `{"active": "true"}`},
		{name: "raw null", doc: `{"x": 1}`,
			params: []api.TriggerParameter{{Src: key("nothing", true), Dest: "x"}}, want: `{"x": null}`},
		{name: "raw data with a string value stays a string", doc: `{}`,
			params: []api.TriggerParameter{{Src: key("name.first", true), Dest: "n"}}, want: `{"n": "fake"}`},
		{name: "raw data does not apply to a template result", doc: `{}`,
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "dep", DataTemplate: "{{ .Input.age }}", UseRawData: true}, Dest: "age"}},
			want:   `{"age": "100"}`},
		{name: "raw data does not apply to a default value", doc: `{}`,
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "dep", DataKey: "nope", Value: ptr("42"), UseRawData: true}, Dest: "n"}},
			want:   `{"n": "42"}`},
		{name: "nested dest is created", doc: `{"kind": "Workflow"}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "spec.arguments.parameters.name"}},
			want:   `{"kind": "Workflow", "spec": {"arguments": {"parameters": {"name": "fake"}}}}`},
		{name: "nested dest keeps its siblings", doc: `{"metadata": {"name": "x", "labels": {"a": "b"}}}`,
			params: []api.TriggerParameter{{Src: key("name.last", false), Dest: "metadata.labels.user"}},
			want:   `{"metadata": {"name": "x", "labels": {"a": "b", "user": "user"}}}`},
		{name: "dest into an array element", doc: `{"args": ["a", "b"]}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "args.1"}}, want: `{"args": ["a", "fake"]}`},
		{name: "append to a missing dest sets the value", doc: `{}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "name", Operation: "append"}}, want: `{"name": "fake"}`},
		{name: "prepend a raw number to a string makes a string", doc: `{"v": "-years"}`,
			params: []api.TriggerParameter{{Src: key("age", true), Dest: "v", Operation: "prepend"}}, want: `{"v": "100-years"}`},
		{name: "a later parameter overwrites an earlier one", doc: `{}`,
			params: []api.TriggerParameter{{Src: key("name.first", false), Dest: "n"}, {Src: key("name.last", false), Dest: "n"}}, want: `{"n": "user"}`},
		{name: "context key", doc: `{}`,
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "dep", ContextKey: "subject"}, Dest: "subject"}}, want: `{"subject": "example-1"}`},
		{name: "absent dependency without default leaves the document alone", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "other", DataKey: "x"}, Dest: "name"}}, want: `{"name": "faker"}`},
		{name: "absent dependency with default sets the default", doc: `{"name": "faker"}`,
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "other", DataKey: "x", Value: ptr("dflt")}, Dest: "name"}}, want: `{"name": "dflt"}`},
		{name: "unresolvable parameter is an error naming its index", doc: `{}`,
			params:  []api.TriggerParameter{{Src: key("name.first", false), Dest: "a"}, {Src: key("nope", false), Dest: "b"}},
			wantErr: "parameters[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Apply([]byte(tc.doc), tc.params)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Apply error = %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !jsonEqual(t, got, []byte(tc.want)) {
				t.Fatalf("Apply = %s; want %s", got, tc.want)
			}
		})
	}
}

// TestParamsPayload covers payloads built from parameters alone (Argo's ConstructPayload).
func TestParamsPayload(t *testing.T) {
	p := params{
		"fake-dependency":         newEvent(t, "1", "application/json", `{"firstName": "fake"}`),
		"another-fake-dependency": newEvent(t, "2", "application/json", `{"lastName": "foo"}`),
		"use-event-data-type":     newEvent(t, "3", "application/json", `{"age": 100, "isActive": false, "countries": ["ca", "us", "mx"], "body": {"a": [1, 2]}, "nothing": null}`),
	}
	payload := []api.TriggerParameter{
		{Src: &api.TriggerParameterSource{DependencyName: "fake-dependency", DataKey: "firstName", Value: ptr("faker")}, Dest: "firstName"},
		{Src: &api.TriggerParameterSource{DependencyName: "another-fake-dependency", DataKey: "lastName", Value: ptr("bar")}, Dest: "lastName"},
		{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "age", UseRawData: true}, Dest: "age"},
		{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "isActive", UseRawData: true}, Dest: "isActive"},
		{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "age"}, Dest: "typelessAge"},
		{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "isActive"}, Dest: "typelessIsActive"},
	}
	got, err := p.Payload(payload)
	if err != nil {
		t.Fatalf("Payload: %v", err)
	}
	want := `{"firstName": "fake", "lastName": "foo", "age": 100, "isActive": false, "typelessAge": "100", "typelessIsActive": "false"}`
	if !jsonEqual(t, got, []byte(want)) {
		t.Errorf("Payload = %s; want %s", got, want)
	}

	// Keys that do not exist fall back to the defaults.
	payload[0].Src.DataKey = "unknown"
	payload[1].Src.DataKey = "unknown"
	got, err = p.Payload(payload)
	if err != nil {
		t.Fatalf("Payload with defaults: %v", err)
	}
	want = `{"firstName": "faker", "lastName": "bar", "age": 100, "isActive": false, "typelessAge": "100", "typelessIsActive": "false"}`
	if !jsonEqual(t, got, []byte(want)) {
		t.Errorf("Payload with defaults = %s; want %s", got, want)
	}

	tests := []struct {
		name    string
		params  []api.TriggerParameter
		want    string // exact bytes
		wantErr string
	}{
		{name: "empty dest returns the raw value as the whole payload",
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "body", UseRawData: true}}},
			want:   `{"a": [1, 2]}`},
		{name: "empty dest with a string value returns the bare string",
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "fake-dependency", DataKey: "firstName"}}},
			want:   `fake`},
		{name: "empty dest wins over parameters before it",
			params: []api.TriggerParameter{
				{Src: &api.TriggerParameterSource{DependencyName: "fake-dependency", DataKey: "firstName"}, Dest: "first"},
				{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "countries", UseRawData: true}},
				{Src: &api.TriggerParameterSource{DependencyName: "another-fake-dependency", DataKey: "lastName"}, Dest: "last"},
			},
			want: `["ca", "us", "mx"]`},
		{name: "empty dest of an absent dependency is skipped",
			params: []api.TriggerParameter{
				{Src: &api.TriggerParameterSource{DependencyName: "absent", DataKey: "x"}},
				{Src: &api.TriggerParameterSource{DependencyName: "fake-dependency", DataKey: "firstName"}, Dest: "first"},
			},
			want: `{"first":"fake"}`},
		{name: "raw null is kept",
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "nothing", UseRawData: true}, Dest: "n"}},
			want:   `{"n":null}`},
		{name: "nested dests",
			params: []api.TriggerParameter{
				{Src: &api.TriggerParameterSource{DependencyName: "fake-dependency", DataKey: "firstName"}, Dest: "user.first"},
				{Src: &api.TriggerParameterSource{DependencyName: "use-event-data-type", DataKey: "age", UseRawData: true}, Dest: "user.age"},
			},
			want: `{"user":{"first":"fake","age":100}}`},
		{name: "nothing resolved gives no payload",
			params: []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "absent", DataKey: "x"}, Dest: "x"}},
			want:   ``},
		{name: "unresolvable parameter is an error naming its index",
			params:  []api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "fake-dependency", DataKey: "nope"}, Dest: "x"}},
			wantErr: "payload[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Payload(tc.params)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Payload error = %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Payload: %v", err)
			}
			if string(got) != tc.want {
				t.Fatalf("Payload = %q; want %q", got, tc.want)
			}
		})
	}

	t.Run("empty dest without key is the whole event", func(t *testing.T) {
		got, err := p.Payload([]api.TriggerParameter{{Src: &api.TriggerParameterSource{DependencyName: "fake-dependency", UseRawData: true}}})
		if err != nil {
			t.Fatalf("Payload: %v", err)
		}
		var whole map[string]json.RawMessage
		if err := json.Unmarshal(got, &whole); err != nil {
			t.Fatalf("payload is not JSON: %v: %s", err, got)
		}
		if whole["context"] == nil || whole["data"] == nil {
			t.Fatalf("payload %s; want an object with context and data", got)
		}
	})
}

// TestParamsNumberText: Argo reads a JSON number by key with gjson's Result.String, which
// normalises any number that is not a plain integer (1.50 -> "1.5", 1e3 -> "1000"). kevents
// keeps the number's raw text.
func TestParamsNumberText(t *testing.T) {
	p := params{"dep": newEvent(t, "1", "application/json", `{"price": 1.50, "big": 1e3, "n": 8}`)}
	for key, want := range map[string]string{"price": "1.5", "big": "1000", "n": "8"} {
		got, err := p.Value(&api.TriggerParameterSource{DependencyName: "dep", DataKey: key})
		if err != nil || got == nil || *got != want {
			t.Errorf("dataKey %q = %s, %v; want %q", key, show(got), err, want)
		}
	}
}

// TestStaticRender checks that a command body is shared across events only when it cannot
// depend on them: each trigger renders two different events, and only the fixed http trigger
// may give both the same body.
func TestStaticRender(t *testing.T) {
	docs := api.Parse("static.yaml", []byte(`apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: s}
spec:
  dependencies:
    - {name: d, eventSourceName: src, eventName: e}
  triggers:
    - template: {name: fixed, http: {url: "http://sink.invalid/x"}}
    - template: {name: log, log: {}}
    - template:
        name: payload
        http:
          url: "http://sink.invalid/x"
          payload: [{src: {dependencyName: d, dataKey: n}, dest: n}]
    - template:
        name: header
        http:
          url: "http://sink.invalid/x"
          dynamicHeaders: [{src: {dependencyName: d, dataKey: n}, dest: X-N}]
    - template: {name: trigger-level, http: {url: "http://sink.invalid/x"}}
      parameters: [{src: {dependencyName: d, dataKey: n}, dest: http.url, operation: append}]
`))
	if len(docs) != 1 || docs[0].Err != nil {
		t.Fatalf("sensor: %+v", docs)
	}
	c, err := compile(docs[0].Sensor)
	if err != nil {
		t.Fatal(err)
	}
	first := firedEvents{{dep: "d", e: newEvent(t, "1", "application/json", `{"n":"1"}`)}}
	second := firedEvents{{dep: "d", e: newEvent(t, "2", "application/json", `{"n":"2"}`)}}
	for _, ct := range c.triggers {
		_, a, err := ct.renderSpec(first)
		if err != nil {
			t.Fatalf("%s: %v", ct.name, err)
		}
		_, b, err := ct.renderSpec(second)
		if err != nil {
			t.Fatalf("%s: %v", ct.name, err)
		}
		if same, static := string(a) == string(b), ct.name == "fixed"; same != static {
			t.Errorf("%s: same body for both events = %v, want %v\nfirst  %s\nsecond %s", ct.name, same, static, a, b)
		}
		if static := ct.static.ok; static != (ct.name == "fixed") {
			t.Errorf("%s: rendered once = %v", ct.name, static)
		}
	}
}

// TestCommandRecord checks the record a command is produced as: keyed by its id (by its trigger
// when ordered), stamped with its creation time, its id in the kevents-command-id header, and
// its JSON as the value.
func TestCommandRecord(t *testing.T) {
	cmd := &trigger.Command{ID: "0123abcd", Namespace: "ns", Sensor: "s", Trigger: "t", Type: "log", Spec: json.RawMessage(`{"a":1}`),
		Events: []trigger.EventRef{{Dependency: "d", ID: "e1", EventSource: "src", EventName: "e"}}, CreatedAt: time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)}
	rec := commandRecord("kevents.commands", cmd)
	if !rec.Timestamp.Equal(cmd.CreatedAt) {
		t.Errorf("timestamp %v; want the command's creation time %v", rec.Timestamp, cmd.CreatedAt)
	}
	if rec.Topic != "kevents.commands" || string(rec.Key) != cmd.ID {
		t.Errorf("topic %q key %q; want kevents.commands, %s", rec.Topic, rec.Key, cmd.ID)
	}
	ordered := *cmd
	ordered.Ordered = true
	if k := commandRecord("kevents.commands", &ordered).Key; string(k) != "ns/s/t" {
		t.Errorf("ordered command key %q; want its trigger, ns/s/t", k)
	}
	if len(rec.Headers) != 1 || rec.Headers[0].Key != "kevents-command-id" || string(rec.Headers[0].Value) != cmd.ID {
		t.Errorf("headers %+v; want kevents-command-id: %s", rec.Headers, cmd.ID)
	}
	var got trigger.Command
	if err := json.Unmarshal(rec.Value, &got); err != nil {
		t.Fatalf("value %s: %v", rec.Value, err)
	}
	if got.ID != cmd.ID || got.Trigger != "t" || string(got.Spec) != `{"a":1}` || len(got.Events) != 1 {
		t.Errorf("value decodes to %+v", got)
	}
	// Appending to the key must not overwrite the id, nor the id the value.
	_ = append(rec.Key, "xxxxxxxxxxxx"...)
	_ = append(rec.Headers[0].Value, "xxxx"...)
	if string(rec.Headers[0].Value) != cmd.ID || rec.Value[0] != '{' {
		t.Errorf("the key, id and value overlap: id %q value %q", rec.Headers[0].Value, rec.Value)
	}
}
