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
