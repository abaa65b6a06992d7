package cloudevent

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// TestFromJSONMatchesSDK decodes JSON events with FromJSON's direct path and with the SDK, and
// wants the same event or a failure from both.
func TestFromJSONMatchesSDK(t *testing.T) {
	written := func(edit func(e *event.Event)) string {
		e := event.New()
		e.SetID("id-1")
		e.SetSource("/src/a")
		e.SetType("push")
		e.SetTime(time.Date(2026, 11, 22, 1, 2, 3, 456789000, time.UTC))
		// Data as the sensor's events hold it, decoded from a record: not base64.
		e.SetDataContentType(event.ApplicationJSON)
		e.DataEncoded = []byte(`{"n":1,"s":"x"}`)
		if edit != nil {
			edit(&e)
		}
		raw, err := e.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	cases := map[string]struct {
		raw    string
		direct bool // the direct path must take it
	}{
		"as kevents writes it":           {written(nil), true},
		"with a subject":                 {written(func(e *event.Event) { e.SetSubject("main") }), true},
		"no time, no data":               {`{"specversion":"1.0","id":"i","source":"s","type":"t"}`, true},
		"data first":                     {`{"data":[1,2],"specversion":"1.0","id":"i","source":"s","type":"t"}`, true},
		"data string":                    {`{"specversion":"1.0","id":"i","source":"s","type":"t","datacontenttype":"application/json","data":"x"}`, true},
		"data null":                      {`{"specversion":"1.0","id":"i","source":"s","type":"t","data":null}`, true},
		"whitespace and escapes":         {"{ \"specversion\" : \"1.0\", \"id\":\"\\u00e9\\n\", \"source\":\"s\", \"type\":\"t\",\n \"data\" : { \"a\" : 1 } }", true},
		"data after a colon in a string": {`{"specversion":"1.0","id":"a:b","source":"s","type":"t","data":{"k":"v:w"}}`, true},
		"empty subject":                  {`{"specversion":"1.0","id":"i","source":"s","type":"t","subject":""}`, true},
		"offset time":                    {`{"specversion":"1.0","id":"i","source":"s","type":"t","time":"2026-11-22T02:02:03+01:00"}`, true},
		"extension":                      {written(func(e *event.Event) { e.SetExtension("partitionkey", "k") }), false},
		"base64 data":                    {written(func(e *event.Event) { _ = e.SetData("application/octet-stream", []byte{0, 1, 2}) }), false},
		"text data":                      {written(func(e *event.Event) { _ = e.SetData("text/plain", []byte("hello")) }), false},
		"dataschema":                     {written(func(e *event.Event) { e.SetDataSchema("https://example.com/s") }), false},
		"spec version 0.3":               {`{"specversion":"0.3","id":"i","source":"s","type":"t"}`, false},
		"spec version twice":             {`{"specversion":"1.0","specversion":"1.0","id":"i","source":"s","type":"t"}`, false},
		"no spec version":                {`{"id":"i","source":"s","type":"t"}`, false},
		"empty source":                   {`{"specversion":"1.0","id":"i","source":"","type":"t"}`, false},
		"malformed source":               {`{"specversion":"1.0","id":"i","source":"%zz","type":"t"}`, false},
		"malformed time":                 {`{"specversion":"1.0","id":"i","source":"s","type":"t","time":"yesterday"}`, false},
		"number id":                      {`{"specversion":"1.0","id":1,"source":"s","type":"t"}`, false},
		"null subject":                   {`{"specversion":"1.0","id":"i","source":"s","type":"t","subject":null}`, false},
		"not JSON":                       {`{"specversion":"1.0",`, false},
		"not an object":                  {`["specversion"]`, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, direct := fromJSONV1([]byte(c.raw))
			if direct != c.direct {
				t.Errorf("direct path taken = %v, want %v for %s", direct, c.direct, c.raw)
			}
			got, gotErr := FromJSON([]byte(c.raw))
			want := event.New()
			wantErr := want.UnmarshalJSON([]byte(c.raw))
			if (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("FromJSON error %v, SDK error %v", gotErr, wantErr)
			}
			if gotErr != nil {
				return
			}
			if !reflect.DeepEqual(got.Context, want.Context) {
				t.Errorf("context\n got %s\nwant %s", got.Context, want.Context)
			}
			if !bytes.Equal(got.DataEncoded, want.DataEncoded) || got.DataBase64 != want.DataBase64 {
				t.Errorf("data %q (base64 %v), want %q (base64 %v)", got.DataEncoded, got.DataBase64, want.DataEncoded, want.DataBase64)
			}
		})
	}
}

// TestAppendJSONMatchesSDK writes events with AppendJSON and with the SDK, and wants both to
// read back as the same event.
func TestAppendJSONMatchesSDK(t *testing.T) {
	base := func(edit func(e *event.Event)) *event.Event {
		e := event.New()
		e.SetID("id-1")
		e.SetSource("/src/a")
		e.SetType("push")
		e.SetTime(time.Date(2026, 11, 22, 1, 2, 3, 456789000, time.FixedZone("x", 3600)))
		e.SetDataContentType(event.ApplicationJSON)
		e.DataEncoded = []byte(`{"n":1,"s":"x"}`)
		if edit != nil {
			edit(&e)
		}
		return &e
	}
	cases := map[string]*event.Event{
		"as the sensor holds it": base(nil),
		"subject":                base(func(e *event.Event) { e.SetSubject("main") }),
		"no time, no data":       base(func(e *event.Event) { e.Context.(*event.EventContextV1).Time = nil; e.DataEncoded = nil }),
		"no content type":        base(func(e *event.Event) { e.Context.(*event.EventContextV1).DataContentType = nil }),
		"escapes":                base(func(e *event.Event) { e.SetID("a \"quoted\" <id>\n é"); e.SetSubject("tab\there") }),
		"url source":             base(func(e *event.Event) { e.SetSource("https://example.com/a?b=c#d") }),
		"extension":              base(func(e *event.Event) { e.SetExtension("partitionkey", "k") }),
		"base64 data":            base(func(e *event.Event) { _ = e.SetData("application/octet-stream", []byte{0, 1, 2}) }),
		"text data":              base(func(e *event.Event) { e.SetDataContentType("text/plain"); e.DataEncoded = []byte("hello") }),
		"dataschema":             base(func(e *event.Event) { e.SetDataSchema("https://example.com/s") }),
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := AppendJSON([]byte("prefix"), e)
			if err != nil {
				t.Fatal(err)
			}
			if string(got[:6]) != "prefix" {
				t.Fatalf("AppendJSON lost what it appended to: %q", got)
			}
			want, err := e.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			a, b := event.New(), event.New()
			if err := a.UnmarshalJSON(got[6:]); err != nil {
				t.Fatalf("AppendJSON wrote %s: %v", got[6:], err)
			}
			if err := b.UnmarshalJSON(want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a.Context, b.Context) || !bytes.Equal(a.DataEncoded, b.DataEncoded) || a.DataBase64 != b.DataBase64 {
				t.Errorf("AppendJSON %s\n       SDK %s", got[6:], want)
			}
		})
	}
}
