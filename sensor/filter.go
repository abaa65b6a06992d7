package sensor

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	sprig "github.com/Masterminds/sprig/v3"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/tidwall/gjson"

	"github.com/kevents/kevents/api"
)

// dataFilter is a compiled `data` filter: regular expressions, numbers, booleans and templates
// are parsed once at load time, so a bad one is a load error rather than a dropped event.
type dataFilter struct {
	api.DataFilter
	regexps  []*regexp.Regexp
	numbers  []float64
	bools    []bool
	template *template.Template
}

func compileDataFilters(path string, fs []api.DataFilter) ([]dataFilter, error) {
	out := make([]dataFilter, len(fs))
	var errs []error
	for i, f := range fs {
		fp := fmt.Sprintf("%s[%d]", path, i)
		d := dataFilter{DataFilter: f}
		if f.Path == "" {
			errs = append(errs, fmt.Errorf("%s.path: missing", fp))
		}
		switch f.Type {
		case "string":
			switch f.Comparator {
			case "", "=", "!=":
			default:
				errs = append(errs, fmt.Errorf("%s.comparator: %q; expected = or != for type string", fp, f.Comparator))
			}
			for j, v := range f.Value {
				re, err := regexp.Compile(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.value[%d]: %q is not a regular expression: %w", fp, j, v, err))
				}
				d.regexps = append(d.regexps, re)
			}
		case "number":
			switch f.Comparator {
			case "", "=", "!=", "<", "<=", ">", ">=":
			default:
				errs = append(errs, fmt.Errorf("%s.comparator: %q; expected one of = != < <= > >=", fp, f.Comparator))
			}
			for j, v := range f.Value {
				n, err := strconv.ParseFloat(v, 64)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.value[%d]: %q; expected a number", fp, j, v))
				}
				d.numbers = append(d.numbers, n)
			}
		case "bool":
			switch f.Comparator {
			case "", "=", "!=":
			default:
				errs = append(errs, fmt.Errorf("%s.comparator: %q; expected = or != for type bool", fp, f.Comparator))
			}
			for j, v := range f.Value {
				b, err := strconv.ParseBool(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.value[%d]: %q; expected true or false", fp, j, v))
				}
				d.bools = append(d.bools, b)
			}
		default:
			errs = append(errs, fmt.Errorf("%s.type: %q; expected string, number or bool", fp, f.Type))
		}
		if f.Template != "" {
			t, err := template.New("filter").Funcs(sprig.TxtFuncMap()).Parse(f.Template)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.template: %q: %w", fp, f.Template, err))
			}
			d.template = t
		}
		out[i] = d
	}
	return out, errors.Join(errs...)
}

// matchData applies data filters to JSON data with Argo's semantics: with "and" every filter must
// pass and a missing path or empty value list is an error; with "or" one passing filter is
// enough and such problems only count when nothing passed.
func matchData(filters []dataFilter, or bool, data []byte) (bool, error) {
	if len(filters) == 0 || data == nil {
		return true, nil
	}
	if !gjson.ValidBytes(data) {
		return false, errors.New("data filter: event data is not valid JSON")
	}
	return combineFilters("data filter", len(filters), or, func(i int) (bool, error) { return filters[i].match(data) })
}

// combineFilters applies Argo's rule for the n filters of one kind: with "and" every filter
// must pass and the first problem (a missing path, say) is an error; with "or" one passing
// filter is enough, and problems are reported only when none passed.
func combineFilters(kind string, n int, or bool, match func(i int) (bool, error)) (bool, error) {
	var problems []string
	for i := 0; i < n; i++ {
		ok, err := match(i)
		if err != nil {
			if !or {
				return false, fmt.Errorf("%s: %w", kind, err)
			}
			problems = append(problems, err.Error())
			continue
		}
		if or && ok {
			return true, nil
		}
		if !or && !ok {
			return false, nil
		}
	}
	if or && len(problems) > 0 {
		return false, fmt.Errorf("%s: %s", kind, strings.Join(problems, "; "))
	}
	return !or, nil
}

func (f *dataFilter) match(data []byte) (bool, error) {
	res := gjson.GetBytes(data, f.Path)
	if !res.Exists() {
		return false, fmt.Errorf("path %q does not exist", f.Path)
	}
	if len(f.Value) == 0 {
		return false, fmt.Errorf("path %q: no values to compare with", f.Path)
	}
	if f.template != nil {
		var buf bytes.Buffer
		if err := f.template.Execute(&buf, map[string]any{"Input": res.String()}); err != nil {
			return false, fmt.Errorf("path %q: template: %w", f.Path, err)
		}
		out := buf.String()
		if out == "" || out == "<no value>" {
			return false, fmt.Errorf("path %q: template %q evaluated to no value", f.Path, f.Template)
		}
		res = gjson.Parse(strconv.Quote(out))
	}
	switch f.Type {
	case "bool":
		for _, b := range f.bools {
			if (b == res.Bool()) == (f.Comparator != "!=") {
				return true, nil
			}
		}
	case "number":
		got := res.Float() // numbers inside JSON strings are coerced, as in Argo
		for _, want := range f.numbers {
			if compare(got, want, f.Comparator) {
				return true, nil
			}
		}
	case "string":
		s := res.String()
		for _, re := range f.regexps {
			if re.MatchString(s) == (f.Comparator != "!=") {
				return true, nil
			}
		}
	}
	return false, nil
}

func compare(got, want float64, comparator string) bool {
	switch comparator {
	case ">":
		return got > want
	case ">=":
		return got >= want
	case "<":
		return got < want
	case "<=":
		return got <= want
	case "!=":
		return got != want
	}
	return got == want
}

// accept runs a dependency's transform and filters on an event, with Argo's semantics: the
// transform first, then every filter kind that is set (exprs, data, context, time, script).
// An error in any kind fails the event, in both modes; otherwise with filtersLogicalOperator
// "and" (the default) every set kind must pass, and with "or" one is enough. It returns the
// event the triggers see: the transformed one.
func (d *dependency) accept(e *cloudevents.Event) (*cloudevents.Event, bool, error) {
	e, err := d.transform.apply(e)
	if err != nil {
		return nil, false, fmt.Errorf("transform: %w", err)
	}
	if d.Filters == nil {
		return e, true, nil
	}
	var passed, failed int
	var errs []error
	note := func(ok bool, err error) {
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			passed++
		default:
			failed++
		}
	}
	if len(d.exprs) > 0 {
		note(matchExprs(d.exprs, d.exprOr, e.Data()))
	}
	if len(d.data) > 0 {
		note(matchData(d.data, d.dataOr, e.Data()))
	}
	if d.context != nil {
		note(matchContext(d.context, e), nil)
	}
	if d.time != nil {
		note(d.time.match(e.Time()))
	}
	if d.script != nil {
		note(d.script.match(e))
	}
	if len(errs) > 0 {
		return nil, false, errors.Join(errs...)
	}
	if d.filtersOr {
		return e, passed > 0, nil
	}
	return e, failed == 0, nil
}
