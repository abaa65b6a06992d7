package sensor

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kevents/kevents/api"
)

// xfield declares one expression field; xf builds one expression filter from an expression and
// fields, to keep the tables short.
func xfield(path, name string) api.PayloadField { return api.PayloadField{Path: path, Name: name} }

func xf(expr string, fields ...api.PayloadField) api.ExprFilter {
	return api.ExprFilter{Expr: expr, Fields: fields}
}

// xfs is a list of filters.
func xfs(fs ...api.ExprFilter) []api.ExprFilter { return fs }

// xf1 is an expression over one field whose name is its path.
func xf1(expr, path string) api.ExprFilter { return xf(expr, xfield(path, path)) }

// TestMatchExprs covers Argo's expression filter semantics (filterExpr in Argo Events v1.9.11,
// evaluated there by govaluate) with filters that compile: Argo's own cases first, then the
// language, then the cases Argo's tests leave out.
func TestMatchExprs(t *testing.T) {
	const doc = `{"s": "x", "t": "y", "n": 2, "f": 0.5, "neg": -1, "e": true, "no": false, "m": null,
		"arr": ["x", "y"], "nums": [1, 2], "o": {"k": "v"}, "long": "start long string",
		"digits": "x42", "ts": 1704067201, "date": "2024-01-01", "dash": "a-b", "re": "^x$", "bad": "("}`
	tests := []struct {
		name    string
		filters []api.ExprFilter
		or      bool
		data    string
		nilData bool
		want    bool
		wantErr string // substring of the error; "" means no error
	}{
		// Argo's own cases, on their data.
		{name: "data that is not JSON is an error", filters: xfs(xf1(`a == "b"`, "a")), data: "a", wantErr: "not valid JSON"},
		{name: "event without data passes", filters: xfs(xf1(`a == "b"`, "a")), nilData: true, want: true},
		{name: "no filters pass", filters: nil, data: `{"a": "b"}`, want: true},
		{name: "string equal", filters: xfs(xf1(`a == "b"`, "a")), data: `{"a": "b"}`, want: true},
		{name: "string not equal", filters: xfs(xf1(`a != "b"`, "a")), data: `{"a": "c"}`, want: true},
		{name: "nested string compared with another value", filters: xfs(xf(`b == "b"`, xfield("a.b", "b"))), data: `{"a": {"b": "c"}}`, want: false},
		{name: "number equal", filters: xfs(xf(`b == 2`, xfield("a.b", "b"))), data: `{"a": {"b": 2}}`, want: true},
		{name: "number less than", filters: xfs(xf(`b < 1`, xfield("a.b", "b"))), data: `{"a": {"b": 2}}`, want: false},
		{name: "regex matches", filters: xfs(xf(`b =~ "start"`, xfield("a.b", "b"))), data: `{"a": {"b": "start long string"}}`, want: true},
		{name: "regex does not match", filters: xfs(xf(`b !~ "start"`, xfield("a.b", "b"))), data: `{"a": {"b": "long string"}}`, want: true},
		{name: "two filters, default operator, both pass",
			filters: xfs(xf(`b == "x"`, xfield("a.b", "b")), xf(`d == "y"`, xfield("a.d", "d"))),
			data:    `{"a": {"b": "x", "d": "y"}}`, want: true},
		{name: "two filters, and, second fails",
			filters: xfs(xf(`b == "x"`, xfield("a.b", "b")), xf(`d == "d"`, xfield("a.d", "d"))),
			data:    `{"a": {"b": "x", "d": "y"}}`, want: false},
		{name: "two filters, or, first passes",
			filters: xfs(xf(`b == "x"`, xfield("a.b", "b")), xf(`d == "d"`, xfield("a.d", "d"))), or: true,
			data: `{"a": {"b": "x", "d": "y"}}`, want: true},
		{name: "or: a missing field is reported when nothing passes",
			filters: xfs(xf(`b == "b"`, xfield("a.b", "b")), xf(`c == "c"`, xfield("a.c", "c"))), or: true,
			data: `{"a": {"b": "x", "d": "y"}}`, wantErr: `path "a.c" does not exist`},
		{name: "or: a passing filter before a missing field",
			filters: xfs(xf(`b == "x"`, xfield("a.b", "b")), xf(`c == "c"`, xfield("a.c", "c")), xf(`e == true`, xfield("a.d.e", "e"))), or: true,
			data: `{"a": {"b": "x", "d": {"e": true}}}`, want: true},
		{name: "or: a missing field, then a passing filter",
			filters: xfs(xf(`b == "b"`, xfield("a.b", "b")), xf(`c == "c"`, xfield("a.c", "c")), xf(`e == true`, xfield("a.d.e", "e"))), or: true,
			data: `{"a": {"b": "x", "d": {"e": true}}}`, want: true},
		{name: "and: a failing filter before a missing field is a plain false",
			filters: xfs(xf(`b == "b"`, xfield("a.b", "b")), xf(`c == "c"`, xfield("a.c", "c"))),
			data:    `{"a": {"b": "x", "d": "y"}}`, want: false},
		{name: "and: a missing field after a passing filter is an error",
			filters: xfs(xf(`b == "x"`, xfield("a.b", "b")), xf(`c == "c"`, xfield("a.c", "c"))),
			data:    `{"a": {"b": "x", "d": "y"}}`, wantErr: `path "a.c" does not exist`},
		{name: "and: a missing field stops before later filters",
			filters: xfs(xf(`b == "x"`, xfield("a.b", "b")), xf(`c == "c"`, xfield("a.c", "c")), xf(`e == true`, xfield("a.d.e", "e"))),
			data:    `{"a": {"b": "x", "d": {"e": true}}}`, wantErr: `path "a.c" does not exist`},
		{name: "&& inside one expression with a missing field",
			filters: xfs(xf(`b != "b" && d == true`, xfield("a.b", "b"), xfield("a.d", "d"))),
			data:    `{"a": {"b": "x", "c": {"d": true}}}`, wantErr: `path "a.d" does not exist`},
		{name: "&& inside one expression, or between filters",
			filters: xfs(xf(`b != "b" && d == true`, xfield("a.b", "b"), xfield("a.c.d", "d"))), or: true,
			data: `{"a": {"b": "x", "c": {"d": true}}}`, want: true},
		{name: "|| inside one expression",
			filters: xfs(xf(`b == "b" || d == true`, xfield("a.b", "b"), xfield("a.c.d", "d"))),
			data:    `{"a": {"b": "b", "c": {"d": false}}}`, want: true},
		// Argo's last case, `b == "b" || (d == true && e == 2)` with e undeclared, is a load
		// error in kevents: see TestCompileExprFiltersErrors.
		{name: "|| and && with parentheses",
			filters: xfs(xf(`b == "b" || (d == true && e == 2)`, xfield("a.b", "b"), xfield("a.c.d", "d"), xfield("a.e", "e"))),
			data:    `{"a": {"b": "c", "c": {"d": true}, "e": 2}}`, want: true},

		// Event data beyond Argo's cases.
		{name: "empty data passes", filters: xfs(xf1(`a == "b"`, "a")), data: "", want: true},
		{name: "truncated JSON is an error", filters: xfs(xf1(`a == "b"`, "a")), data: `{"a": "b"`, wantErr: "not valid JSON"},
		{name: "invalid JSON is an error in or mode too", filters: xfs(xf1(`a == "b"`, "a")), or: true, data: "text", wantErr: "not valid JSON"},
		{name: "JSON that is not an object has no fields", filters: xfs(xf1(`a == "b"`, "a")), data: `"b"`, wantErr: `path "a" does not exist`},
		{name: "a declared field the expression does not use must still exist",
			filters: xfs(xf(`s == "x"`, xfield("s", "s"), xfield("nope", "unused"))), data: doc, wantErr: `fields[1]: path "nope" does not exist`},
		{name: "or: problems of every filter are reported",
			filters: xfs(xf1(`a == 1`, "a"), xf1(`s < 1`, "s")), or: true, data: doc,
			wantErr: `exprs[0].fields[0]: path "a" does not exist in the event; exprs[1]: "s < 1": invalid operation`},
		{name: "or: nothing passing and no problem is a plain false",
			filters: xfs(xf1(`s == "z"`, "s"), xf1(`n > 5`, "n")), or: true, data: doc, want: false},
		{name: "a later field of the same name wins, as in Argo",
			filters: xfs(xf(`v == "y"`, xfield("s", "v"), xfield("t", "v"))), data: doc, want: true},
		{name: "gjson path syntax", filters: xfs(xf(`c == 2`, xfield("nums.#", "c"))), data: doc, want: true},
		{name: "gjson query", filters: xfs(xf(`k == "v"`, xfield(`o.k`, "k"))), data: doc, want: true},

		// Values: typed as gjson gives them.
		{name: "number against its text is false, not an error", filters: xfs(xf1(`n == "2"`, "n")), data: doc, want: false},
		{name: "bool field on its own", filters: xfs(xf1(`e`, "e")), data: doc, want: true},
		{name: "bool field negated", filters: xfs(xf1(`!no`, "no")), data: doc, want: true},
		{name: "null equals nothing else", filters: xfs(xf1(`m == "x"`, "m")), data: doc, want: false},
		{name: "null field exists", filters: xfs(xf1(`m != "x"`, "m")), data: doc, want: true},
		{name: "arrays compare by content", filters: xfs(xf(`a == b`, xfield("arr", "a"), xfield("arr", "b"))), data: doc, want: true},
		{name: "fractional literal without leading zero", filters: xfs(xf1(`f == .5`, "f")), data: doc, want: true},
		{name: "literal with trailing dot", filters: xfs(xf1(`n == 2.`, "n")), data: doc, want: true},
		{name: "negative literal", filters: xfs(xf1(`neg == -1`, "neg")), data: doc, want: true},
		{name: "strings compare lexicographically", filters: xfs(xf(`s < t`, xfield("s", "s"), xfield("t", "t"))), data: doc, want: true},
		{name: "string against number with < is an error", filters: xfs(xf1(`s < 1`, "s")), data: doc, wantErr: "invalid operation"},
		{name: "bool literals compared", filters: xfs(xf(`e == true && no == false`, xfield("e", "e"), xfield("no", "no"))), data: doc, want: true},

		// Strings: both quotes, govaluate's escapes, operators inside strings.
		{name: "single-quoted string", filters: xfs(xf1(`s == 'x'`, "s")), data: doc, want: true},
		{name: "escaped quote inside a string", filters: xfs(xf1(`s != "it\'s"`, "s")), data: doc, want: true},
		{name: "escaped quote is part of the value", filters: xfs(xf1(`q == 'it\'s'`, "q")), data: `{"q": "it's"}`, want: true},
		{name: "operators inside a string stay text", filters: xfs(xf1(`q == "a =~ b !~ c && d || !e"`, "q")), data: `{"q": "a =~ b !~ c && d || !e"}`, want: true},
		{name: "brackets and parentheses inside a string", filters: xfs(xf1(`q == "[x] (y)"`, "q")), data: `{"q": "[x] (y)"}`, want: true},
		{name: "backslash makes the next character literal", filters: xfs(xf1(`q == "a\b\\c"`, "q")), data: `{"q": "ab\\c"}`, want: true},
		{name: "unicode in strings", filters: xfs(xf1(`q == "héllo ✓"`, "q")), data: `{"q": "héllo ✓"}`, want: true},
		{name: "string with a dash is a string", filters: xfs(xf1(`dash == "a-b"`, "dash")), data: doc, want: true},
		{name: "newline and tab inside a string", filters: xfs(xf1("q == \"a\tb\nc\"", "q")), data: `{"q": "a\tb\nc"}`, want: true},

		// Regular expressions: unanchored, RE2, on strings only.
		{name: "=~ is unanchored", filters: xfs(xf1(`long =~ "long"`, "long")), data: doc, want: true},
		{name: "=~ anchored", filters: xfs(xf1(`long =~ "^long"`, "long")), data: doc, want: false},
		{name: "!~ anchored", filters: xfs(xf1(`long !~ "^long"`, "long")), data: doc, want: true},
		{name: `"\\d" is the regex \d`, filters: xfs(xf1(`digits =~ "^x\\d+$"`, "digits")), data: doc, want: true},
		{name: `"\d" is the regex d, as in govaluate`, filters: xfs(xf1(`digits =~ "\d"`, "digits")), data: doc, want: false},
		{name: "=~ with a single-quoted pattern", filters: xfs(xf1(`s =~ '^(x|z)$'`, "s")), data: doc, want: true},
		{name: "=~ on a number is an error", filters: xfs(xf1(`n =~ "2"`, "n")), data: doc, wantErr: "it is not a string"},
		{name: "=~ on null is an error", filters: xfs(xf1(`m =~ "x"`, "m")), data: doc, wantErr: "nil cannot be used with =~"},
		{name: "!~ on null is an error, not a pass", filters: xfs(xf1(`m !~ "x"`, "m")), data: doc, wantErr: "nil cannot be used with !~"},
		{name: "=~ with a pattern from the event", filters: xfs(xf(`s =~ p`, xfield("s", "s"), xfield("re", "p"))), data: doc, want: true},
		{name: "!~ with a pattern from the event", filters: xfs(xf(`t !~ p`, xfield("t", "t"), xfield("re", "p"))), data: doc, want: true},
		{name: "an invalid pattern from the event is an error", filters: xfs(xf(`s =~ p`, xfield("s", "s"), xfield("bad", "p"))), data: doc, wantErr: `"(" is not a regular expression`},
		{name: "a pattern from the event must be a string", filters: xfs(xf(`s =~ p`, xfield("s", "s"), xfield("n", "p"))), data: doc, wantErr: "not a string"},
		{name: "=~ in parentheses", filters: xfs(xf1(`(s =~ ("x"))`, "s")), data: doc, want: true},

		// Precedence and associativity, govaluate's.
		{name: "!~ binds tighter than &&", filters: xfs(xf(`s !~ "^y" && n == 2`, xfield("s", "s"), xfield("n", "n"))), data: doc, want: true},
		{name: "!~ after ||", filters: xfs(xf(`n == 3 || s !~ "x"`, xfield("s", "s"), xfield("n", "n"))), data: doc, want: false},
		{name: "!~ then == on the same level, left to right", filters: xfs(xf1(`s !~ "y" == true`, "s")), data: doc, want: true},
		{name: "=~ then == on the same level, left to right", filters: xfs(xf1(`s =~ "y" == false`, "s")), data: doc, want: true},
		{name: "! before a parenthesised regex", filters: xfs(xf(`!(s =~ "y") && !e == false`, xfield("s", "s"), xfield("e", "e"))), data: doc, want: true},
		{name: "&& binds tighter than ||", filters: xfs(xf(`s == "x" || s == "y" && n == 3`, xfield("s", "s"), xfield("n", "n"))), data: doc, want: true},
		{name: "parentheses override", filters: xfs(xf(`(s == "x" || s == "y") && n == 3`, xfield("s", "s"), xfield("n", "n"))), data: doc, want: false},
		{name: "* before +", filters: xfs(xf1(`2 + n * 4 == 10`, "n")), data: doc, want: true},
		{name: "- is left-associative", filters: xfs(xf1(`10 - n - 3 == 5`, "n")), data: doc, want: true},
		{name: "/ is left-associative", filters: xfs(xf1(`8 / n / 2 == 2`, "n")), data: doc, want: true},
		{name: "** is left-associative in govaluate", filters: xfs(xf1(`n ** 3 ** 2 == 64`, "n")), data: doc, want: true},
		{name: "prefix - binds tighter than **", filters: xfs(xf1(`-n ** 2 == 4`, "n")), data: doc, want: true},
		{name: "comparisons chain left to right", filters: xfs(xf1(`n > 1 == true`, "n")), data: doc, want: true},

		// Arithmetic and the other operators govaluate has.
		{name: "+ on numbers", filters: xfs(xf1(`n + 1 == 3`, "n")), data: doc, want: true},
		{name: "+ concatenates strings", filters: xfs(xf1(`s + "!" == "x!"`, "s")), data: doc, want: true},
		{name: "+ concatenates a string and a number", filters: xfs(xf(`s + n == "x2"`, xfield("s", "s"), xfield("n", "n"))), data: doc, want: true},
		{name: "+ on a bool is an error", filters: xfs(xf1(`e + 1 == 2`, "e")), data: doc, wantErr: "not a number"},
		{name: "- * / on numbers", filters: xfs(xf1(`(n - 1) * 3 / 2 == 1.5`, "n")), data: doc, want: true},
		{name: "- on a string is an error", filters: xfs(xf1(`s - 1 == 0`, "s")), data: doc, wantErr: "invalid operation"},
		{name: "% on numbers", filters: xfs(xf1(`n % 2 == 0`, "n")), data: doc, want: true},
		{name: "% on fractions", filters: xfs(xf1(`7.5 % n == 1.5`, "n")), data: doc, want: true},
		{name: "% on a string is an error", filters: xfs(xf1(`s % 2 == 0`, "s")), data: doc, wantErr: "not a number"},
		{name: "bitwise and", filters: xfs(xf1(`(n & 3) == 2`, "n")), data: doc, want: true},
		{name: "bitwise or", filters: xfs(xf1(`(n | 1) == 3`, "n")), data: doc, want: true},
		{name: "bitwise xor", filters: xfs(xf1(`(n ^ 3) == 1`, "n")), data: doc, want: true},
		{name: "shifts", filters: xfs(xf1(`n << 2 == 8 && n >> 1 == 1`, "n")), data: doc, want: true},
		{name: "bitwise not", filters: xfs(xf1(`~n == -3`, "n")), data: doc, want: true},
		{name: "in a literal list", filters: xfs(xf1(`s in ("x", "z")`, "s")), data: doc, want: true},
		{name: "in a literal list, no match", filters: xfs(xf1(`s in ("y", "z")`, "s")), data: doc, want: false},
		{name: "IN in capitals with numbers", filters: xfs(xf1(`n IN (1, 2, 3)`, "n")), data: doc, want: true},
		{name: "in a list from the event", filters: xfs(xf(`s in a`, xfield("s", "s"), xfield("arr", "a"))), data: doc, want: true},
		{name: "in something that is not a list is an error", filters: xfs(xf(`s in o`, xfield("s", "s"), xfield("o", "o"))), data: doc, wantErr: "not a list"},
		{name: "in one parenthesised value is an error, as in govaluate", filters: xfs(xf1(`s in ("x")`, "s")), data: doc, wantErr: "not a list"},
		{name: "ternary", filters: xfs(xf(`n > 1 ? s == "x" : s == "y"`, xfield("s", "s"), xfield("n", "n"))), data: doc, want: true},
		{name: "ternary, else branch", filters: xfs(xf(`n > 5 ? s == "x" : s == "y"`, xfield("s", "s"), xfield("n", "n"))), data: doc, want: false},
		{name: "ternary yielding false is not nil", filters: xfs(xf1(`n > 1 ? false : true`, "n")), data: doc, want: false},
		{name: "ternary without else, true", filters: xfs(xf1(`n > 1 ? true`, "n")), data: doc, want: true},
		{name: "ternary without else, false yields nil: not a boolean", filters: xfs(xf1(`n > 5 ? true`, "n")), data: doc, wantErr: "evaluated to nil, not a boolean"},
		{name: "?? on null", filters: xfs(xf1(`m ?? true`, "m")), data: doc, want: true},
		{name: "?? on a value", filters: xfs(xf1(`no ?? true`, "no")), data: doc, want: false},

		// Names.
		{name: "escaped name with a dash", filters: xfs(xf(`[my-field] == "x"`, xfield("s", "my-field"))), data: doc, want: true},
		{name: "name with a backslash-escaped dash", filters: xfs(xf(`my\-field == "x"`, xfield("s", "my-field"))), data: doc, want: true},
		{name: "escaped name with a dot", filters: xfs(xf(`[a.b] == 2`, xfield("n", "a.b"))), data: doc, want: true},
		{name: "escaped name with spaces", filters: xfs(xf(`[my field] == 2`, xfield("n", "my field"))), data: doc, want: true},
		{name: "escaped name that is govaluate's in", filters: xfs(xf(`[in] == 2`, xfield("n", "in"))), data: doc, want: true},
		{name: "name that is an expr-lang keyword", filters: xfs(xf(`matches == 2 && not == "x"`, xfield("n", "matches"), xfield("s", "not"))), data: doc, want: true},
		{name: "name that is an expr-lang builtin", filters: xfs(xf(`len == 2 && filter == "x"`, xfield("n", "len"), xfield("s", "filter"))), data: doc, want: true},
		{name: "name with digits and underscores", filters: xfs(xf(`a_1 == 2`, xfield("n", "a_1"))), data: doc, want: true},
		{name: "unicode name", filters: xfs(xf(`größe == 2`, xfield("n", "größe"))), data: doc, want: true},
		{name: "several names that need renaming", filters: xfs(xf(`[a-b] == 2 && [c d] == "x" && nil == true`, xfield("n", "a-b"), xfield("s", "c d"), xfield("e", "nil"))), data: doc, want: true},

		// Dates: govaluate reads a string literal that parses as a date as Unix seconds.
		{name: "date literal against a numeric timestamp", filters: xfs(xf1(`ts > "2024-01-01T00:00:00Z"`, "ts")), data: doc, want: true},
		{name: "date literal is not a string", filters: xfs(xf1(`date == "2024-01-01"`, "date")), data: doc, want: false},

		// Results must be booleans.
		{name: "a number result is an error", filters: xfs(xf1(`n`, "n")), data: doc, wantErr: "evaluated to float64 2, not a boolean"},
		{name: "a string result is an error", filters: xfs(xf1(`s`, "s")), data: doc, wantErr: "evaluated to string x, not a boolean"},
		{name: "arithmetic result is an error", filters: xfs(xf1(`n + 1`, "n")), data: doc, wantErr: "not a boolean"},
		{name: "a non-boolean result in or mode is reported when nothing passes", filters: xfs(xf1(`n`, "n")), or: true, data: doc, wantErr: "not a boolean"},
		{name: "a non-boolean result in or mode is skipped when another passes", filters: xfs(xf1(`n`, "n"), xf1(`e`, "e")), or: true, data: doc, want: true},
		{name: "&& with a number on the right is an error", filters: xfs(xf(`e && n`, xfield("e", "e"), xfield("n", "n"))), data: doc, wantErr: "cannot be used with && or ||"},
		{name: "|| with a number on the left is an error", filters: xfs(xf(`n || e`, xfield("e", "e"), xfield("n", "n"))), data: doc, wantErr: "not bool"},
		{name: "&& short-circuits before a bad right side", filters: xfs(xf(`no && n`, xfield("no", "no"), xfield("n", "n"))), data: doc, want: false},
		{name: "|| short-circuits before a bad right side", filters: xfs(xf(`e || n`, xfield("e", "e"), xfield("n", "n"))), data: doc, want: true},
		{name: "! on a number is an error", filters: xfs(xf1(`!n`, "n")), data: doc, wantErr: "not bool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := compileExprFilters("exprs", tt.filters)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			var data []byte
			if !tt.nilData {
				data = []byte(tt.data)
			}
			got, err := matchExprs(fs, tt.or, data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v; want one containing %q", err, tt.wantErr)
				}
				if got {
					t.Fatal("passed with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if got != tt.want {
				t.Fatalf("matchExprs = %v; want %v", got, tt.want)
			}
		})
	}
}

// TestCompileExprFiltersErrors covers load-time errors: each names the filter's path and the
// offending text.
func TestCompileExprFiltersErrors(t *testing.T) {
	const p = "spec.dependencies[0] (d).filters.exprs"
	tests := []struct {
		name    string
		filter  api.ExprFilter
		wantErr []string // substrings of the error
	}{
		// Argo's validation.
		{name: "empty expression", filter: xf("", xfield("a", "a")), wantErr: []string{p + "[0].expr: missing"}},
		{name: "blank expression", filter: xf("  ", xfield("a", "a")), wantErr: []string{p + "[0].expr: missing"}},
		{name: "no fields", filter: xf(`a == 1`), wantErr: []string{p + "[0].fields: missing"}},
		{name: "field without path", filter: xf(`a == 1`, xfield("", "a")), wantErr: []string{p + "[0].fields[0].path: missing"}},
		{name: "field without name", filter: xf(`a == 1`, xfield("a", "a"), xfield("b", "")), wantErr: []string{p + "[0].fields[1].name: missing"}},

		// Names.
		{name: "undeclared name", filter: xf(`a == 1 && b == 2`, xfield("a", "a")),
			wantErr: []string{p + `[0].expr: "a == 1 && b == 2" uses "b", which is not one of its fields (declared: "a")`}},
		// Argo's own case: govaluate never reads e, because || short-circuits on this data, but
		// kevents checks every name at load time.
		{name: "undeclared name in a branch Argo may skip", filter: xf(`b == "b" || (d == true && e == 2)`, xfield("a.b", "b"), xfield("a.c.d", "d")),
			wantErr: []string{`uses "e"`}},
		{name: "accessor", filter: xf(`a.b == 1`, xfield("a.b", "a")), wantErr: []string{`"a.b": accessors (name.member) are not supported`, "[a.b]"}},
		{name: "hanging accessor", filter: xf(`a. == 1`, xfield("a", "a")), wantErr: []string{"accessors"}},
		{name: "function call", filter: xf(`len(a) > 1`, xfield("a", "a")), wantErr: []string{"at 1: len(...): function calls are not supported"}},
		{name: "nil is a name, not a literal", filter: xf(`a == nil`, xfield("a", "a")), wantErr: []string{`uses "nil"`}},
		{name: "unclosed escaped name", filter: xf(`[a == 1`, xfield("a", "a")), wantErr: []string{"at 1: [ without a closing ]"}},

		// Syntax.
		{name: "missing right operand", filter: xf(`a ==`, xfield("a", "a")), wantErr: []string{p + `[0].expr: "a ==": unexpected end of expression`}},
		{name: "missing left operand", filter: xf(`&& a`, xfield("a", "a")), wantErr: []string{`at 1: unexpected "&&"`}},
		{name: "two values in a row", filter: xf(`a b`, xfield("a", "a"), xfield("b", "b")), wantErr: []string{`at 3: unexpected "b"`}},
		{name: "unclosed parenthesis", filter: xf(`(a == 1`, xfield("a", "a")), wantErr: []string{"( without a closing )"}},
		{name: "extra closing parenthesis", filter: xf(`a == 1)`, xfield("a", "a")), wantErr: []string{"at 7: unexpected )"}},
		{name: "empty parentheses", filter: xf(`a == ()`, xfield("a", "a")), wantErr: []string{"at 6: empty parentheses"}},
		{name: "single =", filter: xf(`a = 1`, xfield("a", "a")), wantErr: []string{`at 3: "=" is not an operator`}},
		{name: "===", filter: xf(`a === 1`, xfield("a", "a")), wantErr: []string{`"===" is not an operator`}},
		{name: "operators run together, as govaluate rejects them", filter: xf(`a ==-1`, xfield("a", "a")), wantErr: []string{`"==-" is not an operator`}},
		{name: "! after a value", filter: xf(`a ! b`, xfield("a", "a"), xfield("b", "b")), wantErr: []string{`"!" is not an operator`}},
		{name: "stray ]", filter: xf(`a ] 1`, xfield("a", "a")), wantErr: []string{`"]" is not an operator`}},
		{name: "unclosed string", filter: xf(`a == "x`, xfield("a", "a")), wantErr: []string{"at 6: string without a closing quote"}},
		{name: "a string ends at either quote", filter: xf(`a == "it's"`, xfield("a", "a")), wantErr: []string{"string without a closing quote"}},
		{name: "bad number", filter: xf(`a == 1.2.3`, xfield("a", "a")), wantErr: []string{`"1.2.3" is not a number`}},
		{name: "hex is not a number in govaluate", filter: xf(`a == 0x10`, xfield("a", "a")), wantErr: []string{`unexpected "x10"`}},
		{name: "invalid regular expression literal", filter: xf(`a =~ "("`, xfield("a", "a")), wantErr: []string{p + `[0].expr: "a =~ \"(\"": at 6: "(" is not a regular expression`}},
		{name: "invalid regular expression literal with !~", filter: xf(`a !~ "[z-a]"`, xfield("a", "a")), wantErr: []string{`"[z-a]" is not a regular expression`}},

		// Results that cannot be booleans.
		{name: "string constant", filter: xf(`"x"`, xfield("a", "a")), wantErr: []string{"expected bool, but got string"}},
		{name: "top-level list", filter: xf(`a, 1`, xfield("a", "a")), wantErr: []string{"expected bool"}},
		{name: "exponent", filter: xf(`a ** 2`, xfield("a", "a")), wantErr: []string{"expected bool, but got float64"}},
		{name: "constants of mismatched types", filter: xf(`1 < "a"`, xfield("a", "a")), wantErr: []string{"mismatched types"}},
		// govaluate evaluates these to false (or fails at run time); expr-lang's type checker
		// rejects comparisons whose operand types are known and incompatible.
		{name: "boolean compared with a number", filter: xf(`(a && b) == 2`, xfield("a", "a"), xfield("b", "b")), wantErr: []string{"mismatched types bool and float64"}},
		{name: "string constant compared with a number", filter: xf(`"x" == 1 || a`, xfield("a", "a")), wantErr: []string{"mismatched types"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := compileExprFilters(p, []api.ExprFilter{xf(`a == 1`, xfield("a", "a")), tt.filter})
			if err == nil {
				t.Fatalf("compiled %q", tt.filter.Expr)
			}
			if fs != nil {
				t.Fatal("returned filters with an error")
			}
			msg := strings.ReplaceAll(err.Error(), p+"[1]", p+"[0]") // the case is the second filter
			for _, want := range tt.wantErr {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if !strings.Contains(err.Error(), p+"[1]") {
				t.Errorf("error %q does not name %s[1]", err, p)
			}
		})
	}
}

func TestCompileExprFiltersReportsEveryFilter(t *testing.T) {
	_, err := compileExprFilters("exprs", []api.ExprFilter{xf(`a ==`, xfield("a", "a")), xf(`a == 1`, xfield("a", "a")), xf(`b`, xfield("a", "a"))})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"exprs[0].expr", "exprs[2].expr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if fs, err := compileExprFilters("exprs", nil); fs != nil || err != nil {
		t.Errorf("no filters: %v, %v", fs, err)
	}
}

// TestTranslateGovaluate pins the translation to expr-lang: every operation parenthesised,
// numbers as floats, and govaluate's operators that expr-lang lacks as helper calls.
func TestTranslateGovaluate(t *testing.T) {
	tests := []struct{ in, want string }{
		{`a == "b"`, `(a == "b")`},
		{`a == 'b'`, `(a == "b")`},
		{`a =~ "^x"`, `_re0(a)`},
		{`a !~ "^x"`, `(!_re0(a))`},
		{`a !~ "x" && b =~ 'y'`, `((!_re0(a)) && _re1(b))`},
		{`a =~ b`, `_match(a, b)`},
		{`a !~ b`, `(!_match(a, b))`},
		{`!a || b`, `((!a) || _bool(b))`},
		{`a && b == 1`, `(a && (b == 1.0))`},
		{`a == "=~ && !~"`, `(a == "=~ && !~")`},
		{`a == "q\"x"`, `(a == "q\"x")`},
		{`a == "\d"`, `(a == "d")`},
		{`-a ** 2`, `((-a) ** 2.0)`},
		{`a ** 3 ** 2`, `((a ** 3.0) ** 2.0)`},
		{`a - b - c`, `((a - b) - c)`},
		{`a + b * c`, `_add(a, (b * c))`},
		{`a % 2 == 0`, `(_mod(a, 2.0) == 0.0)`},
		{`a & 1 | 2 ^ 3`, `_bxor(_bor(_band(a, 1.0), 2.0), 3.0)`},
		{`a << 1 >> 2`, `_shr(_shl(a, 1.0), 2.0)`},
		{`~a`, `_bnot(a)`},
		{`a in (1, "x", true)`, `_in(a, [1.0, "x", true])`},
		{`a IN b`, `_in(a, b)`},
		{`a ? b : c`, `((a ? b : nil) ?? c)`},
		{`a ?? b`, `(a ?? b)`},
		{`[my-field] == 1 && [not] == 2 && len == 3`, `(((_v0 == 1.0) && (_v1 == 2.0)) && (_v2 == 3.0))`},
		{`a == 1e3`, ``}, // see below: e3 is a name in govaluate
		{`a == "2024-01-01T00:00:00Z"`, `(a == 1704067200.0)`},
		{`a == -1.5`, `(a == (-1.5))`},
		{`a == 100000000000000000000`, `(a == 100000000000000000000.0)`},
	}
	for _, tt := range tests {
		tree, err := parseGovaluate(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: parsed", tt.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		tr := gvTranslator{keys: exprEnvKeys(gvNames(tree))}
		if got := tr.emit(tree); got != tt.want {
			t.Errorf("%s\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

// TestMatchExprsConcurrent runs compiled filters from many goroutines, as stage 1 does.
func TestMatchExprsConcurrent(t *testing.T) {
	fs, err := compileExprFilters("exprs", xfs(
		xf(`n % 2 == 0 && s =~ "^even"`, xfield("n", "n"), xfield("s", "s")),
		xf(`n % 2 == 1 && s !~ "^even"`, xfield("n", "n"), xfield("s", "s")),
	))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				n := g*1000 + i
				kind := "odd"
				if n%2 == 0 {
					kind = "even"
				}
				data := fmt.Appendf(nil, `{"n": %d, "s": "%s-%d"}`, n, kind, n)
				if ok, err := matchExprs(fs, true, data); !ok || err != nil {
					t.Errorf("%s: %v, %v", data, ok, err)
					return
				}
				if ok, err := matchExprs(fs, false, data); ok || err != nil {
					t.Errorf("and %s: %v, %v", data, ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A webhook-like payload for the benchmarks.
var benchEvent = []byte(`{"action": "opened", "number": 42, "pull_request": {"title": "Fix the flaky test",
	"user": {"login": "octocat", "id": 1}, "labels": [{"name": "bug"}, {"name": "ci"}], "draft": false,
	"head": {"ref": "feature/kafka-bus", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
	"base": {"ref": "main"}, "additions": 120, "deletions": 7},
	"repository": {"full_name": "kevents/kevents", "private": false, "stargazers_count": 1234}}`)

func BenchmarkMatchExprs(b *testing.B) {
	cases := []struct {
		name    string
		filters []api.ExprFilter
		or      bool
	}{
		{name: "one-equality", filters: xfs(xf(`action == "opened"`, xfield("action", "action")))},
		{name: "one-regex", filters: xfs(xf(`ref =~ "^feature/"`, xfield("pull_request.head.ref", "ref")))},
		{name: "typical-and", filters: xfs(
			xf(`action == "opened" && repo == "kevents/kevents"`, xfield("action", "action"), xfield("repository.full_name", "repo")),
			xf(`ref !~ "^main$" && draft == false && additions + deletions < 500`,
				xfield("pull_request.head.ref", "ref"), xfield("pull_request.draft", "draft"),
				xfield("pull_request.additions", "additions"), xfield("pull_request.deletions", "deletions")),
		)},
		{name: "or-last-passes", or: true, filters: xfs(
			xf(`action == "closed"`, xfield("action", "action")),
			xf(`stars > 5000`, xfield("repository.stargazers_count", "stars")),
			xf(`label in ("bug", "security")`, xfield("pull_request.labels.0.name", "label")),
		)},
	}
	for _, c := range cases {
		fs, err := compileExprFilters("exprs", c.filters)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ok, err := matchExprs(fs, c.or, benchEvent)
				if !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
