package sensor

import (
	"errors"
	"strings"
	"testing"

	"github.com/kevents/kevents/api"
)

func TestConditions(t *testing.T) {
	deps := []string{"a", "b", "c", "dep-1", "x.y"}
	cases := []struct {
		expr string
		have string // comma-separated met dependencies
		want bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a || b", "b", true},
		{"a && b", "a", false},
		{"a && b", "a,b", true},
		{"a || b && c", "a", true}, // && binds tighter
		{"a || b && c", "b", false},
		{"(a || b) && c", "a", false},
		{"(a || b) && c", "b,c", true},
		{"((a))", "a", true},
		{"dep-1 && x.y", "dep-1,x.y", true},
		{"", "a,b,c,dep-1", false}, // the default is every dependency
		{"", "a,b,c,dep-1,x.y", true},
	}
	for _, c := range cases {
		cond, err := parseConditions(c.expr, deps)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		have := map[string]bool{}
		for _, d := range strings.Split(c.have, ",") {
			have[d] = true
		}
		if got := cond.holds(func(d string) bool { return have[d] }); got != c.want {
			t.Errorf("%q with %s = %v, want %v", c.expr, c.have, got, c.want)
		}
	}
}

func TestConditionErrors(t *testing.T) {
	for expr, want := range map[string]string{
		"a ||":     "unexpected end",
		"(a || b":  "missing )",
		"a b":      `unexpected "b"`,
		"a && z":   `names dependency "z"`,
		"a + b":    `unexpected "+"`,
		"&& a":     `unexpected "&&"`,
		"a || ()":  `unexpected ")"`,
		"!a || b":  `not supported yet: condition operator "!"`,
		"a & b":    `unexpected "&"`,
		"a ||| b":  `unexpected "|"`,
		"a) || (b": `unexpected ")"`,
	} {
		_, err := parseConditions(expr, []string{"a", "b"})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `"`+expr+`"`) {
			t.Errorf("%q: error %v, want one quoting the expression and saying %q", expr, err, want)
		}
		if strings.HasPrefix(expr, "!") != errors.Is(err, api.ErrNotSupported) {
			t.Errorf("%q: ErrNotSupported = %v", expr, errors.Is(err, api.ErrNotSupported))
		}
	}
}
