package sensor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/api"
)

const transformPath = "spec.dependencies[0] (a).transform"

// sameJSON compares two JSON documents by value.
func sameJSON(t *testing.T, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("output %s is not JSON: %v", got, err)
		return false
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("expected %s is not JSON: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

type transformCase struct {
	name   string
	jq     string
	script string
	data   string // "<nil>": no data
	want   string // exact bytes of the new data
	errHas []string
}

func runTransformCases(t *testing.T, cases []transformCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := compileTransform(transformPath, &api.EventDependencyTransformer{JQ: tc.jq, Script: tc.script})
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			var data []byte
			if tc.data != "<nil>" {
				data = []byte(tc.data)
			}
			in := dataEvent(t, data)
			before := in.Clone()
			out, err := tr.apply(in)
			if !reflect.DeepEqual(*in, before) {
				t.Errorf("apply modified its input: %v, was %v", in, before)
			}
			if len(tc.errHas) > 0 {
				if err == nil {
					t.Fatalf("apply = %s; want an error", out.Data())
				}
				t.Logf("error: %v", err)
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				if out != nil {
					t.Errorf("apply returned an event with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			if out == in {
				t.Fatal("apply returned its input, not a copy")
			}
			if string(out.Data()) != tc.want {
				t.Errorf("data = %s, want %s", out.Data(), tc.want)
			}
			if tc.data == "<nil>" {
				return
			}
			if ct := out.DataContentType(); ct != cloudevents.ApplicationJSON {
				t.Errorf("content type = %q", ct)
			}
			// The context travels unchanged.
			if out.ID() != in.ID() || out.Source() != in.Source() || out.Subject() != in.Subject() ||
				out.Type() != in.Type() || !out.Time().Equal(in.Time()) || out.Extensions()["partitionkey"] != "k1" {
				t.Errorf("context changed: %v", out.Context)
			}
			if err := out.Validate(); err != nil {
				t.Errorf("output is not a valid CloudEvent: %v", err)
			}
		})
	}
}

func TestTransformJQ(t *testing.T) {
	runTransformCases(t, []transformCase{
		// Argo's case.
		{name: "update two fields", jq: ".a += 1 | .b *= 2", data: `{"a":1,"b":"2"}`, want: `{"a":2,"b":"22"}`},

		{name: "identity sorts keys", jq: ".", data: `{"b":1,"a":{"d":2,"c":3}}`, want: `{"a":{"c":3,"d":2},"b":1}`},
		{name: "documented example", jq: ".body.message *= 2", data: `{"body":{"message":"hi"}}`, want: `{"body":{"message":"hihi"}}`},
		{name: "new object", jq: `{repo: .repository.name, n: (.commits | length)}`,
			data: `{"repository":{"name":"x"},"commits":[1,2,3]}`, want: `{"n":3,"repo":"x"}`},
		{name: "delete a key", jq: "del(.secret)", data: `{"secret":"s","keep":true}`, want: `{"keep":true}`},
		{name: "first of several outputs", jq: `{n: 1}, {n: 2}`, data: `{}`, want: `{"n":1}`},
		{name: "later outputs are not run", jq: `{n: 1}, error("not reached")`, data: `{}`, want: `{"n":1}`},
		{name: "null data is an empty object", jq: `.a = 1`, data: `null`, want: `{"a":1}`},
		{name: "no data: unchanged copy", jq: `error("must not run")`, data: "<nil>", want: ""},
		{name: "empty data: unchanged copy", jq: `error("must not run")`, data: "", want: ""},
		{name: "empty arrays stay arrays", jq: ".", data: `{"a":[],"b":{}}`, want: `{"a":[],"b":{}}`},
		{name: "HTML characters are not escaped", jq: ".", data: `{"h":"<a href=\"x\">&</a>"}`, want: `{"h":"<a href=\"x\">&</a>"}`},
		{name: "environment stays private", jq: `{e: env, E: $ENV}`, data: `{}`, want: `{"E":{},"e":{}}`},

		// Deliberately better than Argo, which decodes numbers to float64.
		{name: "big integers keep their digits", jq: ".", data: `{"id":1234567890123456789,"big":123456789012345678901234567890}`,
			want: `{"big":123456789012345678901234567890,"id":1234567890123456789}`},
		{name: "arithmetic on big integers", jq: ".id += 1", data: `{"id":9007199254740993}`, want: `{"id":9007199254740994}`},
		{name: "floats", jq: ".x *= 2", data: `{"x":1.25,"y":1.0,"z":1e3}`, want: `{"x":2.5,"y":1,"z":1000}`},

		{name: "no output", jq: "empty", data: `{"a":1}`, errHas: []string{transformPath + ".jq", `"empty"`, "no output"}},
		{name: "select drops the event", jq: "select(.a == 2)", data: `{"a":1}`, errHas: []string{"no output"}},
		{name: "output is a string", jq: ".b", data: `{"b":"2"}`, errHas: []string{transformPath + ".jq", `".b"`, "produced a string", "must produce a JSON object"}},
		{name: "output is an array", jq: "[.a]", data: `{"a":1}`, errHas: []string{"produced an array"}},
		{name: "output is null", jq: ".missing", data: `{"a":1}`, errHas: []string{"produced null"}},
		{name: "output is a number", jq: ".a", data: `{"a":1}`, errHas: []string{"produced a number"}},
		{name: "first output is not an object", jq: `1, {}`, data: `{}`, errHas: []string{"produced a number"}},
		{name: "runtime error", jq: ".a.b", data: `{"a":"s"}`, errHas: []string{transformPath + ".jq", `".a.b"`, "expected an object"}},
		{name: "error()", jq: `error("nope")`, data: `{}`, errHas: []string{"nope"}},
		{name: "NaN cannot be JSON", jq: `{x: nan}`, data: `{}`, errHas: []string{transformPath + ".jq", "output"}},
		{name: "data is not JSON", jq: ".", data: `<xml/>`, errHas: []string{transformPath + ".jq", "not JSON"}},
		{name: "data is an array", jq: ".", data: `[{"a":1}]`, errHas: []string{transformPath + ".jq", "a JSON array, not a JSON object"}},
		{name: "data is a string", jq: ".", data: `"x"`, errHas: []string{"a JSON string, not a JSON object"}},
	})
}

func TestTransformScript(t *testing.T) {
	runTransformCases(t, []transformCase{
		// Argo's cases.
		{name: "set an array item", script: "event.c.d[1]=4\nreturn event", data: `{"a":1,"b":"2","c":{"d":[3]}}`, want: `{"a":1,"b":"2","c":{"d":[4]}}`},
		{name: "returns a string", script: `return "hello"`, data: `{"a":1,"b":"2","c":{"d":[3]}}`,
			errHas: []string{transformPath + ".script", `returned "hello" (a string)`, "must return a table"}},
		{name: "empty array by metatable", script: "event.env = setmetatable({}, { __is_array = true })\nreturn event",
			data: `{"env":123}`, want: `{"env":[]}`},

		{name: "documented example", script: "event.body.message='updated'\nreturn event",
			data: `{"body":{"message":"hi","n":1}}`, want: `{"body":{"message":"updated","n":1}}`},
		{name: "unchanged", script: "return event", data: `{"b":true,"a":null,"n":-1.5,"s":"x"}`, want: `{"b":true,"n":-1.5,"s":"x"}`},
		{name: "new table", script: `return {repo = event.repository.name, n = #event.commits}`,
			data: `{"repository":{"name":"x"},"commits":[1,2,3]}`, want: `{"n":3,"repo":"x"}`},
		{name: "empty table is an object", script: "return {}", data: `{"a":1}`, want: `{}`},
		{name: "list table is an array", script: `return {"a", "b"}`, data: `{}`, want: `["a","b"]`},
		{name: "integers stay integers", script: "event.n = event.n * 2\nreturn event", data: `{"n":21}`, want: `{"n":42}`},
		{name: "number keys become strings", script: "return {[1.5] = true, [-1] = 2}", data: `{}`, want: `{"-1":2,"1.5":true}`},
		{name: "holes are null", script: "local t = {}\nt[1] = 1\nt[3] = 3\nreturn {t = t}", data: `{}`, want: `{"t":[1,null,3]}`},
		{name: "append to an array", script: "table.insert(event.list, 'c')\nreturn event", data: `{"list":["a","b"]}`, want: `{"list":["a","b","c"]}`},

		// Argo turns empty arrays into {} and drops null items and nested arrays; kevents keeps
		// them.
		{name: "empty arrays round-trip", script: "return event", data: `{"a":[],"b":{}}`, want: `{"a":[],"b":{}}`},
		{name: "emptied arrays stay arrays", script: "table.remove(event.a)\nreturn event", data: `{"a":[1]}`, want: `{"a":[]}`},
		{name: "null items keep their place", script: "return event", data: `{"a":[1,null,3]}`, want: `{"a":[1,null,3]}`},
		{name: "nested arrays", script: "return event", data: `{"m":[[1,2],[],[3]]}`, want: `{"m":[[1,2],[],[3]]}`},
		{name: "null data is an empty table", script: "event.a = 1\nreturn event", data: `null`, want: `{"a":1}`},
		{name: "no data: unchanged copy", script: `error("must not run")`, data: "<nil>", want: ""},

		{name: "returns nothing", script: "event.a = 1", data: `{}`, errHas: []string{transformPath + ".script", "returned nothing"}},
		{name: "returns nil", script: "return nil", data: `{}`, errHas: []string{"returned nil;"}},
		{name: "returns a boolean", script: "return true", data: `{}`, errHas: []string{"returned true (a boolean)"}},
		{name: "mixed table", script: "event[1] = 'x'\nreturn event", data: `{"a":1}`,
			errHas: []string{transformPath + ".script", "result mixes array items with the key"}},
		{name: "flagged array with keys", script: "return {a = setmetatable({k = 1}, {__is_array = true})}", data: `{}`,
			errHas: []string{`result.a mixes array items with the key "k"`}},
		{name: "function value", script: "event.f = print\nreturn event", data: `{}`, errHas: []string{"result.f is a function"}},
		{name: "boolean key", script: "return {[true] = 1}", data: `{}`, errHas: []string{"result has a boolean key"}},
		{name: "table key", script: "return {[{}] = 1}", data: `{}`, errHas: []string{"result has a table key"}},
		{name: "NaN", script: "return {x = {0/0}}", data: `{}`, errHas: []string{"result.x[0] is NaN"}},
		{name: "infinity", script: "return {x = 1/0}", data: `{}`, errHas: []string{"result.x is +Inf"}},
		{name: "cycle", script: "event.self = event\nreturn event", data: `{}`, errHas: []string{"result.self.self.self", "...", "nested more than 1000 deep"}},
		{name: "runtime error", script: "return event.a.b.c", data: `{"a":{}}`, errHas: []string{transformPath + ".script", "script:1:", "attempt to index"}},
		{name: "data is not JSON", script: "return event", data: `{`, errHas: []string{transformPath + ".script", "not JSON"}},
		{name: "data is an array", script: "return event", data: `[]`, errHas: []string{"a JSON array, not a JSON object"}},
	})
}

func TestCompileTransform(t *testing.T) {
	cases := []struct {
		name   string
		t      *api.EventDependencyTransformer
		nilOK  bool // nil, nil expected
		errHas []string
	}{
		{name: "nil", t: nil, nilOK: true},
		{name: "neither jq nor script", t: &api.EventDependencyTransformer{}, nilOK: true},
		{name: "both", t: &api.EventDependencyTransformer{JQ: ".", Script: "return event"},
			errHas: []string{transformPath, "jq and script are both set"}},
		{name: "jq syntax", t: &api.EventDependencyTransformer{JQ: ".a +"},
			errHas: []string{transformPath + ".jq", `".a +"`, "not a valid jq program"}},
		{name: "jq unknown function", t: &api.EventDependencyTransformer{JQ: "nosuch(1)"},
			errHas: []string{transformPath + ".jq", `"nosuch(1)"`, "nosuch"}},
		{name: "jq reads input", t: &api.EventDependencyTransformer{JQ: "input"},
			errHas: []string{transformPath + ".jq", `"input"`}},
		{name: "jq unknown variable", t: &api.EventDependencyTransformer{JQ: "$x"},
			errHas: []string{transformPath + ".jq", "$x"}},
		{name: "lua syntax", t: &api.EventDependencyTransformer{Script: "event.a = \nreturn event"},
			errHas: []string{transformPath + ".script", "not a valid Lua script", "syntax error"}},
		{name: "jq", t: &api.EventDependencyTransformer{JQ: ".a"}},
		{name: "lua", t: &api.EventDependencyTransformer{Script: "return event"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := compileTransform(transformPath, tc.t)
			switch {
			case tc.nilOK:
				if tr != nil || err != nil {
					t.Fatalf("compile = %v, %v; want nil, nil", tr, err)
				}
			case len(tc.errHas) > 0:
				if err == nil {
					t.Fatal("compile succeeded; want an error")
				}
				t.Logf("error: %v", err)
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
			default:
				if tr == nil || err != nil {
					t.Fatalf("compile = %v, %v", tr, err)
				}
			}
		})
	}

	t.Run("nil transformer returns its input", func(t *testing.T) {
		var tr *transformer
		e := dataEvent(t, []byte(`{}`))
		if out, err := tr.apply(e); out != e || err != nil {
			t.Errorf("apply = %v, %v", out, err)
		}
	})
	t.Run("nil event", func(t *testing.T) {
		tr, _ := compileTransform(transformPath, &api.EventDependencyTransformer{JQ: "."})
		if _, err := tr.apply(nil); err == nil || !strings.Contains(err.Error(), transformPath) {
			t.Errorf("apply(nil) error = %v", err)
		}
	})
}

func TestTransformDoesNotLeakEnvironment(t *testing.T) {
	t.Setenv("KEVENTS_TRANSFORM_SECRET", "hunter2")
	for _, tr := range []*api.EventDependencyTransformer{
		{JQ: `{e: env, E: $ENV}`},
		{Script: `return {s = (os.getenv and os.getenv("KEVENTS_TRANSFORM_SECRET")) or "none"}`},
	} {
		c, err := compileTransform(transformPath, tr)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.apply(dataEvent(t, []byte(`{}`)))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out.Data(), []byte("hunter2")) || os.Getenv("KEVENTS_TRANSFORM_SECRET") != "hunter2" {
			t.Errorf("%+v: output %s shows the environment", tr, out.Data())
		}
	}
}

func TestTransformTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    *api.EventDependencyTransformer
	}{
		{"jq reduce", &api.EventDependencyTransformer{JQ: `{n: reduce range(1e15) as $x (0; . + 1)}`}},
		{"jq recursion", &api.EventDependencyTransformer{JQ: `def f: f; f`}},
		{"lua", &api.EventDependencyTransformer{Script: "while true do end"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := compileTransform(transformPath, tc.t)
			if err != nil {
				t.Fatal(err)
			}
			tr.timeout = 50 * time.Millisecond
			if tr.script != nil {
				tr.script.timeout = 50 * time.Millisecond
			}
			start := time.Now()
			out, err := tr.apply(dataEvent(t, []byte(`{"a":1}`)))
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("apply took %s", took)
			}
			if out != nil || err == nil || !strings.Contains(err.Error(), "ran longer than 50ms") || !strings.Contains(err.Error(), transformPath) {
				t.Fatalf("apply = %v, %v; want a timeout error naming the path", out, err)
			}
		})
	}
}

// Both kinds of transform are safe to share between goroutines (run with -race), and a
// transform never writes to the event it was given, which other dependencies may share.
func TestTransformConcurrent(t *testing.T) {
	for _, def := range []*api.EventDependencyTransformer{
		{JQ: `.list += [.n] | .n += 1`},
		{Script: "table.insert(event.list, event.n)\nevent.n = event.n + 1\nreturn event"},
	} {
		tr, err := compileTransform(transformPath, def)
		if err != nil {
			t.Fatal(err)
		}
		shared := dataEvent(t, []byte(`{"list":[0],"n":1}`))
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 16 {
			wg.Go(func() {
				for i := range 50 {
					n := g*1000 + i
					own := dataEvent(t, fmt.Appendf(nil, `{"list":[0],"n":%d}`, n))
					for _, in := range []*cloudevents.Event{own, shared} {
						before := string(in.Data())
						out, err := tr.apply(in)
						if err != nil {
							errs <- err
							return
						}
						var got struct {
							List []int
							N    int
						}
						if err := json.Unmarshal(out.Data(), &got); err != nil {
							errs <- err
							return
						}
						var want struct {
							List []int
							N    int
						}
						_ = json.Unmarshal([]byte(before), &want)
						want.List = append(want.List, want.N)
						want.N++
						if !reflect.DeepEqual(got, want) || string(in.Data()) != before {
							errs <- fmt.Errorf("%+v: %s → %s (input now %s)", def, before, out.Data(), in.Data())
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

func BenchmarkTransformJQ(b *testing.B) {
	benchmarkTransform(b, &api.EventDependencyTransformer{JQ: `.body.message *= 2 | .body.count += 1`})
}

func BenchmarkTransformScript(b *testing.B) {
	benchmarkTransform(b, &api.EventDependencyTransformer{Script: "event.body.message = event.body.message .. event.body.message\nevent.body.count = event.body.count + 1\nreturn event"})
}

func benchmarkTransform(b *testing.B, def *api.EventDependencyTransformer) {
	tr, err := compileTransform(transformPath, def)
	if err != nil {
		b.Fatal(err)
	}
	e := dataEvent(b, []byte(`{"header":{"Content-Type":["application/json"]},"body":{"message":"hi","count":1,"items":[1,2,3],"d":{"e":"z"}}}`))
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tr.apply(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := tr.apply(e); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
