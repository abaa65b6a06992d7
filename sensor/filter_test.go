package sensor

import (
	"strings"
	"testing"

	"github.com/kevents/kevents/api"
)

// str, num and boolean build one data filter each, to keep the tables short.
func str(path string, cmp string, values ...string) api.DataFilter {
	return api.DataFilter{Path: path, Type: "string", Comparator: cmp, Value: values}
}

func num(path string, cmp string, values ...string) api.DataFilter {
	return api.DataFilter{Path: path, Type: "number", Comparator: cmp, Value: values}
}

func boolean(path string, cmp string, values ...string) api.DataFilter {
	return api.DataFilter{Path: path, Type: "bool", Comparator: cmp, Value: values}
}

func withTemplate(f api.DataFilter, tmpl string) api.DataFilter {
	f.Template = tmpl
	return f
}

// TestMatchData covers Argo's data filter semantics (filterData in Argo Events v1.9.11) with
// filters that compile, including cases Argo's own tests leave out.
func TestMatchData(t *testing.T) {
	const nested = `{"k": true, "k1": {"k": 3.14, "k2": "hello, world"}}`
	tests := []struct {
		name    string
		filters []api.DataFilter
		or      bool
		data    string
		nilData bool
		want    bool
		wantErr string // substring of the error; "" means no error
	}{
		// Event data.
		{name: "event without data passes", filters: []api.DataFilter{str("k", "", "v")}, nilData: true, want: true},
		{name: "data that is not JSON is an error", filters: []api.DataFilter{str("k", "", "v")}, data: "a", wantErr: "not valid JSON"},
		{name: "truncated JSON is an error", filters: []api.DataFilter{str("k", "", "v")}, data: `{"k": "v"`, wantErr: "not valid JSON"},
		{name: "data that is not JSON is an error in or mode too", filters: []api.DataFilter{str("k", "", "v")}, or: true, data: "plain text", wantErr: "not valid JSON"},
		{name: "no filters pass any JSON", filters: nil, data: `{"k": "v"}`, want: true},
		{name: "no filters pass data that is not JSON", filters: nil, data: "not json", want: true},

		// Missing paths and empty value lists.
		{name: "missing path is an error in and mode", filters: []api.DataFilter{str("nope", "", "v")}, data: `{"k": "v"}`, wantErr: `"nope" does not exist`},
		{name: "missing path is skipped in or mode when another filter passes",
			filters: []api.DataFilter{str("nope", "", "v"), str("k", "", "v")}, or: true, data: `{"k": "v"}`, want: true},
		{name: "missing path is reported in or mode when nothing passes",
			filters: []api.DataFilter{str("nope", "", "v"), str("k", "", "x")}, or: true, data: `{"k": "v"}`, wantErr: `"nope" does not exist`},
		{name: "missing path after a failing filter in and mode: the failure wins",
			filters: []api.DataFilter{str("k", "", "x"), str("nope", "", "v")}, data: `{"k": "v"}`, want: false},
		{name: "empty value list is an error in and mode", filters: []api.DataFilter{str("k", "")}, data: `{"k": "v"}`, wantErr: "no values"},
		{name: "empty value list is skipped in or mode when another filter passes",
			filters: []api.DataFilter{str("k", ""), num("n", "", "1")}, or: true, data: `{"k": "v", "n": 1}`, want: true},
		{name: "empty value list is reported in or mode when nothing passes",
			filters: []api.DataFilter{str("k", "")}, or: true, data: `{"k": "v"}`, wantErr: "no values"},
		{name: "or mode with nothing passing and no problem is a plain false",
			filters: []api.DataFilter{str("k", "", "x"), num("n", ">", "5")}, or: true, data: `{"k": "v", "n": 1}`, want: false},

		// Strings: unanchored regular expressions.
		{name: "string equal", filters: []api.DataFilter{str("k", "", "v")}, data: `{"k": "v"}`, want: true},
		{name: "string with comparator =", filters: []api.DataFilter{str("k", "=", "v")}, data: `{"k": "v"}`, want: true},
		{name: "string != another value", filters: []api.DataFilter{str("k", "!=", "b")}, data: `{"k": "v"}`, want: true},
		{name: "string != the same value", filters: []api.DataFilter{str("k", "!=", "v")}, data: `{"k": "v"}`, want: false},
		{name: "string != with a list passes when any value differs", filters: []api.DataFilter{str("k", "!=", "v", "w")}, data: `{"k": "v"}`, want: true},
		{name: "string regex is unanchored", filters: []api.DataFilter{str("k", "", "ell")}, data: `{"k": "hello"}`, want: true},
		{name: "string regex anchored at start does not match", filters: []api.DataFilter{str("k", "", "^ell")}, data: `{"k": "hello"}`, want: false},
		{name: "string regex anchored both ends", filters: []api.DataFilter{str("k", "", "^hello$")}, data: `{"k": "hello"}`, want: true},
		{name: "string regex is case sensitive", filters: []api.DataFilter{str("k", "", "HELLO")}, data: `{"k": "hello"}`, want: false},
		{name: "string value list is OR'd", filters: []api.DataFilter{str("k", "", "a", "b", "^v$")}, data: `{"k": "v"}`, want: true},
		{name: "string value list with no match", filters: []api.DataFilter{str("k", "", "a", "b")}, data: `{"k": "v"}`, want: false},
		{name: "string filter on a number compares its text", filters: []api.DataFilter{str("k", "", "^42$")}, data: `{"k": 42}`, want: true},
		{name: "string regex over a gjson multipath",
			filters: []api.DataFilter{str(`[k,k1.a.#(k2=="v2").k2]`, "=", `\bv\b.*\bv2\b`)},
			data:    `{"k": "v", "k1": {"a": [{"k2": "v2"}]}}`, want: true},
		{name: "string regex over a gjson multipath with an empty element",
			filters: []api.DataFilter{str(`[k,k1.a.#(k2=="v2").k2,,k1.a.#(k2=="v3").k2]`, "", `(\bz\b.*\bv2\b)|(\bv\b.*(\bv2\b.*\bv3\b))`)},
			data:    `{"k": "v", "k1": {"a": [{"k2": "v2"}, {"k2": "v3"}]}}`, want: true},

		// Numbers: JSON numbers and numbers inside JSON strings.
		{name: "number in a string equals", filters: []api.DataFilter{num("k", "", "1.0")}, data: `{"k": "1.0"}`, want: true},
		{name: "number in a string >", filters: []api.DataFilter{num("k", ">", "1.0")}, data: `{"k": "2.0"}`, want: true},
		{name: "number in a string <=", filters: []api.DataFilter{num("k", "<=", "1.0")}, data: `{"k": "2.0"}`, want: false},
		{name: "number in a string != the same", filters: []api.DataFilter{num("k", "!=", "1.0")}, data: `{"k": "1.0"}`, want: false},
		{name: "number in a string =", filters: []api.DataFilter{num("k", "=", "5.0")}, data: `{"k": "5.0"}`, want: true},
		{name: "number in a string without comparator", filters: []api.DataFilter{num("k", "", "10.0")}, data: `{"k": "10.0"}`, want: true},
		{name: "number in a string written differently", filters: []api.DataFilter{num("k", "", "42")}, data: `{"k": "42.000"}`, want: true},
		{name: "number equals", filters: []api.DataFilter{num("k", "", "1.0")}, data: `{"k": 1.0}`, want: true},
		{name: "number >", filters: []api.DataFilter{num("k", ">", "1.0")}, data: `{"k": 2.0}`, want: true},
		{name: "number <=", filters: []api.DataFilter{num("k", "<=", "1.0")}, data: `{"k": 2.0}`, want: false},
		{name: "number != the same", filters: []api.DataFilter{num("k", "!=", "1.0")}, data: `{"k": 1.0}`, want: false},
		{name: "number =", filters: []api.DataFilter{num("k", "=", "5.0")}, data: `{"k": 5.0}`, want: true},
		{name: "integer equals float text", filters: []api.DataFilter{num("k", "", "10.0")}, data: `{"k": 10}`, want: true},
		{name: "negative and exponent numbers", filters: []api.DataFilter{num("k", "<", "-1e2")}, data: `{"k": -150}`, want: true},
		{name: "number value list is OR'd", filters: []api.DataFilter{num("k", "", "1", "2", "3")}, data: `{"k": 2}`, want: true},
		{name: "number value list with no match", filters: []api.DataFilter{num("k", "", "1", "2", "3")}, data: `{"k": 4}`, want: false},
		{name: "number value list with > passes when any bound holds", filters: []api.DataFilter{num("k", ">", "100", "3")}, data: `{"k": 4}`, want: true},
		// As in Argo, text that is not a number reads as 0.
		{name: "non-numeric string reads as zero", filters: []api.DataFilter{num("k", "", "0")}, data: `{"k": "abc"}`, want: true},
		{name: "array length through gjson #", filters: []api.DataFilter{num("items.#", ">=", "2")}, data: `{"items": [1, 2]}`, want: true},
		{name: "nested array element", filters: []api.DataFilter{num("items.1.n", "=", "7")}, data: `{"items": [{"n": 1}, {"n": 7}]}`, want: true},

		// Booleans.
		{name: "bool true", filters: []api.DataFilter{boolean("k", "", "true")}, data: `{"k": true}`, want: true},
		{name: "bool false against true", filters: []api.DataFilter{boolean("k", "", "false")}, data: `{"k": true}`, want: false},
		{name: "bool false", filters: []api.DataFilter{boolean("k", "=", "false")}, data: `{"k": false}`, want: true},
		{name: "bool inside a string", filters: []api.DataFilter{boolean("k", "", "true")}, data: `{"k": "true"}`, want: true},
		{name: "bool value spelled 1", filters: []api.DataFilter{boolean("k", "", "1")}, data: `{"k": true}`, want: true},
		{name: "bool value list is OR'd", filters: []api.DataFilter{boolean("k", "", "true", "false")}, data: `{"k": false}`, want: true},
		// kevents honours != on bools; Argo ignores the comparator of a bool filter.
		{name: "bool != (kevents extension)", filters: []api.DataFilter{boolean("k", "!=", "true")}, data: `{"k": false}`, want: true},
		{name: "bool != the same (kevents extension)", filters: []api.DataFilter{boolean("k", "!=", "true")}, data: `{"k": true}`, want: false},

		// Several filters.
		{name: "and: one failing filter fails all",
			filters: []api.DataFilter{str("k", "", "v"), num("k1.k", "", "2.14"), str("k1.k2", "", "hello,world", "hello there")},
			data:    nested, want: false},
		{name: "explicit and: all pass",
			filters: []api.DataFilter{boolean("k", "", "true"), num("k1.k", "", "3.14"), str("k1.k2", "", "hello,world", "hello, world", "hello there")},
			data:    nested, want: true},
		{name: "or: one passing filter is enough",
			filters: []api.DataFilter{boolean("k", "", "false"), num("k1.k", "", "3.14"), str("k1.k2", "", "hello,world", "hello there")},
			or:      true, data: nested, want: true},

		// Templates, with sprig.
		{name: "template with sprig upper",
			filters: []api.DataFilter{withTemplate(str("k", "", "^ABC$"), `{{ upper .Input }}`)}, data: `{"k": "abc"}`, want: true},
		{name: "template base64 then upper",
			filters: []api.DataFilter{withTemplate(str("k", "", "HELLO WORLD"), `{{ b64dec .Input | upper }}`)}, data: `{"k": "aGVsbG8gd29ybGQ="}`, want: true},
		{name: "template result compared as a number",
			filters: []api.DataFilter{withTemplate(num("k", ">", "3.13"), `{{ b64dec .Input }}`)}, data: `{"k": "My4xNA=="}`, want: true},
		{name: "template result compared with !=",
			filters: []api.DataFilter{withTemplate(str("k", "!=", "hello world"), `{{ b64dec .Input }}`)}, data: `{"k": "aGVsbG8gd29ybGQ"}`, want: true},
		{name: "template result matched by an unanchored regex",
			filters: []api.DataFilter{withTemplate(str("k", "", "world$"), `{{ b64dec .Input }}`)}, data: `{"k": "aGVsbG8gd29ybGQ="}`, want: true},
		{name: "template result read as a bool",
			filters: []api.DataFilter{withTemplate(boolean("k", "", "true"), `{{ eq .Input "yes" }}`)}, data: `{"k": "yes"}`, want: true},
		{name: "template sees a number as its text",
			filters: []api.DataFilter{withTemplate(str("k", "", "^n=7$"), `n={{ .Input }}`)}, data: `{"k": 7}`, want: true},
		{name: "template evaluating to nothing is an error in and mode",
			filters: []api.DataFilter{withTemplate(str("k", "", "x"), `{{ trim .Input }}`)}, data: `{"k": "   "}`, wantErr: "no value"},
		{name: "template evaluating to <no value> is an error",
			filters: []api.DataFilter{withTemplate(str("k", "", "x"), `{{ .Missing }}`)}, data: `{"k": "v"}`, wantErr: "no value"},
		{name: "template evaluating to nothing is skipped in or mode",
			filters: []api.DataFilter{withTemplate(str("k", "", "x"), `{{ trim .Input }}`), str("k", "", " ")}, or: true, data: `{"k": "   "}`, want: true},
		{name: "template execution error is an error",
			filters: []api.DataFilter{withTemplate(str("k", "", "x"), `{{ fail "boom" }}`)}, data: `{"k": "v"}`, wantErr: "boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			compiled, err := compileDataFilters("filters.data", tc.filters)
			if err != nil {
				t.Fatalf("compileDataFilters: %v", err)
			}
			var data []byte
			if !tc.nilData {
				data = []byte(tc.data)
			}
			got, err := matchData(compiled, tc.or, data)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("matchData = %v, nil; want an error containing %q", got, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("matchData error = %q; want it to contain %q", err, tc.wantErr)
				}
				if got {
					t.Errorf("matchData = true with an error; want false")
				}
				return
			}
			if err != nil {
				t.Fatalf("matchData: unexpected error %v", err)
			}
			if got != tc.want {
				t.Errorf("matchData = %v; want %v", got, tc.want)
			}
		})
	}
}

// TestMatchDataComparators runs every number comparator against a value below, equal to and
// above the filter's value.
func TestMatchDataComparators(t *testing.T) {
	want := map[string][3]bool{ // results for data 1, 2, 3 against filter value 2
		"":   {false, true, false},
		"=":  {false, true, false},
		"!=": {true, false, true},
		"<":  {true, false, false},
		"<=": {true, true, false},
		">":  {false, false, true},
		">=": {false, true, true},
	}
	for cmp, results := range want {
		for i, data := range []string{`{"n": 1}`, `{"n": "2"}`, `{"n": 3.0}`} {
			compiled, err := compileDataFilters("f", []api.DataFilter{num("n", cmp, "2")})
			if err != nil {
				t.Fatalf("comparator %q: %v", cmp, err)
			}
			got, err := matchData(compiled, false, []byte(data))
			if err != nil {
				t.Fatalf("comparator %q, data %s: %v", cmp, data, err)
			}
			if got != results[i] {
				t.Errorf("comparator %q, data %s: got %v, want %v", cmp, data, got, results[i])
			}
		}
	}
}

// TestCompileDataFilters checks that mistakes Argo reports only when an event arrives are load
// errors in kevents, each naming the filter's path.
func TestCompileDataFilters(t *testing.T) {
	const base = "spec.dependencies[0] (dep).filters.data"
	tests := []struct {
		name    string
		filters []api.DataFilter
		wantErr []string // substrings that must all appear; nil means no error
	}{
		{name: "valid filters of every type", filters: []api.DataFilter{
			str("a", "!=", "^x", "y+"), num("b", ">=", "1", "-2.5", "1e3"), boolean("c", "", "true", "FALSE", "0"),
			withTemplate(str("d", "", "X"), `{{ upper .Input }}`),
		}},
		{name: "empty value list is left to run time, as in Argo", filters: []api.DataFilter{str("a", "")}},
		{name: "invalid regex", filters: []api.DataFilter{str("a", "", "ok"), str("b", "", "ok", "(unclosed")},
			wantErr: []string{base + "[1].value[1]", `"(unclosed"`, "regular expression"}},
		{name: "bad number", filters: []api.DataFilter{num("a", "", "12", "twelve")},
			wantErr: []string{base + "[0].value[1]", `"twelve"`, "number"}},
		{name: "bad bool", filters: []api.DataFilter{boolean("a", "", "maybe")},
			wantErr: []string{base + "[0].value[0]", `"maybe"`}},
		{name: "missing path", filters: []api.DataFilter{{Type: "string", Value: []string{"v"}}},
			wantErr: []string{base + "[0].path", "missing"}},
		{name: "missing type", filters: []api.DataFilter{{Path: "k", Value: []string{"v"}}},
			wantErr: []string{base + "[0].type"}},
		{name: "unknown type", filters: []api.DataFilter{{Path: "k", Type: "integer", Value: []string{"1"}}},
			wantErr: []string{base + "[0].type", `"integer"`}},
		{name: "ordering comparator on a string", filters: []api.DataFilter{str("k", ">", "a")},
			wantErr: []string{base + "[0].comparator", `">"`}},
		{name: "ordering comparator on a bool", filters: []api.DataFilter{boolean("k", "<", "true")},
			wantErr: []string{base + "[0].comparator", `"<"`}},
		{name: "unknown comparator on a number", filters: []api.DataFilter{num("k", "==", "1")},
			wantErr: []string{base + "[0].comparator", `"=="`}},
		{name: "template that does not parse", filters: []api.DataFilter{withTemplate(str("k", "", "v"), `{{ upper .Input `)},
			wantErr: []string{base + "[0].template"}},
		{name: "template calling an unknown function", filters: []api.DataFilter{withTemplate(str("k", "", "v"), `{{ nosuchfunc .Input }}`)},
			wantErr: []string{base + "[0].template", "nosuchfunc"}},
		{name: "every mistake is reported, not just the first",
			filters: []api.DataFilter{str("a", "", "["), num("b", "", "x")},
			wantErr: []string{base + "[0].value[0]", base + "[1].value[0]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := compileDataFilters(base, tc.filters)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if len(got) != len(tc.filters) {
					t.Fatalf("got %d compiled filters; want %d", len(got), len(tc.filters))
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want one containing %q", tc.wantErr)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}
