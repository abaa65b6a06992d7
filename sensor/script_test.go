package sensor

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

// dataEvent is a CloudEvent carrying data as is (nil: no data at all).
func dataEvent(t testing.TB, data []byte) *cloudevents.Event {
	t.Helper()
	e := cloudevents.New()
	e.SetID("evt-1")
	e.SetSource("webhook")
	e.SetType("webhook")
	e.SetSubject("example")
	e.SetTime(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	e.SetExtension("partitionkey", "k1")
	if data != nil {
		e.SetDataContentType(cloudevents.ApplicationJSON)
		e.DataEncoded = data
	}
	return &e
}

const scriptPath = "spec.dependencies[0] (a).filters.script"

func TestScriptFilter(t *testing.T) {
	cases := []struct {
		name   string
		script string
		data   string // "<nil>": the event has no data
		want   bool
		errHas []string // non-empty: match must fail with all of these
	}{
		// Argo's own cases, reworded.
		{name: "field equals", script: `if event.a == "hello" then return true else return false end`,
			data: `{"a":"hello"}`, want: true},
		{name: "two fields, script says no", script: `if event.a == "hello" and event.b == "world" then return false else return true end`,
			data: `{"a":"hello","b":"world"}`, want: false},
		{name: "indexing an undefined global", script: `if a.a == "hello" then return true else return false end`,
			data: `{"a":"hello"}`, errHas: []string{scriptPath, "script:1:", "attempt to index"}},

		// The shape of `event`.
		{name: "expression result", script: `return event.a == "hello"`, data: `{"a":"bye"}`, want: false},
		{name: "nested object", script: `return event.body.d.e == "z"`, data: `{"body":{"a":"b","d":{"e":"z"}}}`, want: true},
		{name: "array items are 1-based", script: `return event.items[1] == "x" and event.items[2].n == 2 and #event.items == 2`,
			data: `{"items":["x",{"n":2}]}`, want: true},
		{name: "nested arrays", script: `return event.m[2][1] == 3`, data: `{"m":[[1,2],[3,4]]}`, want: true},
		{name: "null keeps later items in place", script: `return event.a[1] == 1 and event.a[2] == nil and event.a[3] == 3`,
			data: `{"a":[1,null,3]}`, want: true},
		{name: "numbers", script: `return event.n > 3 and event.f == 1.5 and event.neg < 0`, data: `{"n":4,"f":1.5,"neg":-2e3}`, want: true},
		{name: "booleans", script: `return event.yes and not event.no`, data: `{"yes":true,"no":false}`, want: true},
		{name: "null is absent", script: `return event.x == nil`, data: `{"x":null}`, want: true},
		{name: "escaped strings", script: `return event.s == "a\"b\n☃"`, data: `{"s":"a\"b\n\u2603"}`, want: true},
		{name: "only data, never the context", script: `return event.context == nil and event.id == nil and event.a == 1`,
			data: `{"a":1}`, want: true},
		{name: "null data is an empty table", script: `return next(event) == nil`, data: `null`, want: true},
		{name: "no data passes without running", script: `error("must not run")`, data: "<nil>", want: true},
		{name: "empty data passes without running", script: `error("must not run")`, data: "", want: true},

		// The libraries.
		{name: "string methods", script: `return event.s:upper() == "ABC" and string.format("%d-%s", 3, event.s) == "3-abc"`,
			data: `{"s":"abc"}`, want: true},
		{name: "string patterns", script: `return string.match(event.ref, "^refs/heads/(.+)$") == "main"`, data: `{"ref":"refs/heads/main"}`, want: true},
		{name: "math and table", script: `local t = {3, 1, 2}; table.sort(t); return math.floor(2.7) == 2 and table.concat(t, ",") == "1,2,3"`,
			data: `{}`, want: true},
		{name: "local helper functions", script: "local function big(x) return x > 10 end\nreturn big(event.n)", data: `{"n":11}`, want: true},
		{name: "global helper functions", script: "function big(x) return x > 10 end\nreturn big(event.n)", data: `{"n":9}`, want: false},
		{name: "os.time and os.date", script: `return os.time() > 1700000000 and type(os.date("%Y")) == "string"`, data: `{}`, want: true},
		{name: "pcall catches errors", script: `local ok = pcall(function() return event.x.y end); return not ok`, data: `{}`, want: true},
		{name: "print is harmless", script: `print("debug", event.a); return true`, data: `{"a":1}`, want: true},

		// The sandbox.
		{name: "no io", script: `return io == nil`, data: `{}`, want: true},
		{name: "no os.execute", script: `return os.execute == nil and os.getenv == nil and os.remove == nil and os.exit == nil`, data: `{}`, want: true},
		{name: "no module loading", script: `return require == nil and module == nil and package == nil and dofile == nil and loadfile == nil`, data: `{}`, want: true},
		{name: "no debug library", script: `return debug == nil`, data: `{}`, want: true},
		{name: "calling os.execute fails", script: `os.execute("true"); return true`, data: `{}`,
			errHas: []string{scriptPath, "attempt to call a non-function object"}},

		// The return value.
		{name: "last returned value decides, as in Argo", script: `return false, true`, data: `{}`, want: true},
		{name: "returns a string", script: `return "yes"`, data: `{}`, errHas: []string{scriptPath, `returned "yes" (a string)`, "true or false"}},
		{name: "returns a number", script: `return 1`, data: `{}`, errHas: []string{"returned 1 (a number)"}},
		{name: "returns nil", script: `return nil`, data: `{}`, errHas: []string{"returned nil"}},
		{name: "returns nothing", script: `local x = 1`, data: `{}`, errHas: []string{scriptPath, "returned nothing"}},
		{name: "error()", script: `error("bad event")`, data: `{}`, errHas: []string{scriptPath, "bad event"}},

		// The data.
		{name: "data is not JSON", script: `return true`, data: `not json`, errHas: []string{scriptPath, "not JSON"}},
		{name: "data is truncated JSON", script: `return true`, data: `{"a":`, errHas: []string{"not JSON"}},
		{name: "data is an array", script: `return true`, data: `[1,2]`, errHas: []string{scriptPath, "a JSON array, not a JSON object"}},
		{name: "data is a string", script: `return true`, data: `"s"`, errHas: []string{"a JSON string, not a JSON object"}},
		{name: "data is a number", script: `return true`, data: `42`, errHas: []string{"a JSON number"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := compileScriptFilter(scriptPath, tc.script)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			var data []byte
			if tc.data != "<nil>" {
				data = []byte(tc.data)
			}
			got, err := f.match(dataEvent(t, data))
			if len(tc.errHas) > 0 {
				if err == nil {
					t.Fatalf("match = %v, nil; want an error", got)
				}
				t.Logf("error: %v", err)
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				if strings.Contains(err.Error(), "stack traceback") {
					t.Errorf("error %q carries a stack trace", err)
				}
				if got {
					t.Errorf("match = true with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("match: %v", err)
			}
			if got != tc.want {
				t.Errorf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCompileScriptFilter(t *testing.T) {
	cases := []struct {
		name, script string
		errHas       []string
	}{
		// Argo reports this one per event, at run time; kevents at load.
		{name: "missing then", script: "\nif event.a == \"hello\" return false else return true end\n",
			errHas: []string{scriptPath, "not a valid Lua script", "line:2", "syntax error"}},
		{name: "unclosed string", script: `return event.a == "x`, errHas: []string{scriptPath, "not a valid Lua script"}},
		{name: "unclosed block", script: `if true then return true`, errHas: []string{scriptPath, "not a valid Lua script"}},
		{name: "break outside a loop", script: `break`, errHas: []string{scriptPath, "not a valid Lua script"}},
		{name: "valid", script: `return true`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := compileScriptFilter(scriptPath, tc.script)
			if len(tc.errHas) == 0 {
				if err != nil || f == nil {
					t.Fatalf("compile = %v, %v", f, err)
				}
				return
			}
			if err == nil {
				t.Fatal("compile succeeded; want an error")
			}
			t.Logf("error: %v", err)
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans several lines", err)
			}
		})
	}

	t.Run("empty script matches everything", func(t *testing.T) {
		f, err := compileScriptFilter(scriptPath, "")
		if f != nil || err != nil {
			t.Fatalf("compile = %v, %v; want nil, nil", f, err)
		}
		if ok, err := f.match(dataEvent(t, []byte(`{}`))); !ok || err != nil {
			t.Errorf("nil filter: match = %v, %v", ok, err)
		}
	})
	t.Run("nil event", func(t *testing.T) {
		f, _ := compileScriptFilter(scriptPath, "return true")
		if _, err := f.match(nil); err == nil || !strings.Contains(err.Error(), scriptPath) {
			t.Errorf("match(nil) error = %v", err)
		}
	})
}

// A pooled state must not carry anything from one event to the next.
func TestScriptFilterIsolation(t *testing.T) {
	f, err := compileScriptFilter(scriptPath, `
seen = (seen or 0) + 1
event.mutated = true
return seen == 1 and event.mutated_before == nil`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ok, err := f.match(dataEvent(t, []byte(`{"a":1}`)))
		if err != nil || !ok {
			t.Fatalf("run %d: match = %v, %v; a global leaked from an earlier run", i, ok, err)
		}
	}
}

func TestScriptFilterTimeout(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"busy loop", `while true do end`},
		{"pcall cannot swallow the deadline", `while true do pcall(function() while true do end end) end`},
		{"recursion in a loop", `local function f(n) if n == 0 then return 0 end return f(n - 1) end while true do f(100) end`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := compileScriptFilter(scriptPath, tc.script)
			if err != nil {
				t.Fatal(err)
			}
			f.prog.timeout = 50 * time.Millisecond
			start := time.Now()
			ok, err := f.match(dataEvent(t, []byte(`{}`)))
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("match took %s", took)
			}
			if ok || err == nil || !strings.Contains(err.Error(), "ran longer than 50ms") || !strings.Contains(err.Error(), scriptPath) {
				t.Fatalf("match = %v, %v; want a timeout error naming the path", ok, err)
			}
		})
	}

	t.Run("default bound", func(t *testing.T) {
		f, err := compileScriptFilter(scriptPath, `while true do end`)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = f.match(dataEvent(t, []byte(`{}`)))
		took := time.Since(start)
		if err == nil || took < scriptTimeout || took > scriptTimeout+2*time.Second {
			t.Errorf("match took %s, err %v; want a timeout after %s", took, err, scriptTimeout)
		}
	})
}

// After errors and timeouts the filter keeps working, and it is safe to share between
// goroutines (run with -race).
func TestScriptFilterConcurrent(t *testing.T) {
	f, err := compileScriptFilter(scriptPath, `
if event.spin then while true do end end
if event.fail then error("asked to fail") end
total = 0
for _, v in ipairs(event.values) do total = total + v end
return total == event.want`)
	if err != nil {
		t.Fatal(err)
	}
	f.prog.timeout = 500 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				var data string
				want := (g+i)%2 == 0
				spin := g%4 == 0 && i == 25
				switch {
				case spin:
					data = `{"spin":true}`
				case i%11 == 3:
					data = `{"fail":true}`
				default:
					sum := g + i
					if !want {
						sum++
					}
					data = fmt.Sprintf(`{"values":[%d,%d],"want":%d}`, g, i, sum)
				}
				ok, err := f.match(dataEvent(t, []byte(data)))
				switch {
				case spin || i%11 == 3:
					if err == nil {
						errs <- fmt.Errorf("goroutine %d run %d: no error for %s", g, i, data)
						return
					}
				case err != nil:
					errs <- fmt.Errorf("goroutine %d run %d: %v", g, i, err)
					return
				case ok != want:
					errs <- fmt.Errorf("goroutine %d run %d: match = %v, want %v for %s", g, i, ok, want, data)
					return
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

func BenchmarkScriptFilter(b *testing.B) {
	f, err := compileScriptFilter(scriptPath, `return event.body.a == "b" and event.body.d.e == "z" and #event.body.items > 1`)
	if err != nil {
		b.Fatal(err)
	}
	e := dataEvent(b, []byte(`{"header":{"Content-Type":["application/json"]},"body":{"a":"b","d":{"e":"z"},"items":[1,2,3]}}`))
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ok, err := f.match(e); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ok, err := f.match(e); !ok || err != nil {
					b.Error(ok, err)
					return
				}
			}
		})
	})
}
