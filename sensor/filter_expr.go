package sensor

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"github.com/tidwall/gjson"

	"github.com/kevents/kevents/api"
)

// Argo evaluates `exprs` filters with govaluate (github.com/Knetic/govaluate, the 2017 revision
// Argo Events v1.9.11 pins). kevents reads the same language with its own tokenizer and parser,
// which follow govaluate's lexical rules and precedence, and translates the tree into a fully
// parenthesised expr-lang program (github.com/expr-lang/expr) compiled once at load time.
// Operators whose govaluate semantics expr-lang lacks or defines differently run as small
// helper functions, so results match govaluate's:
//
//	a =~ "re"   _reN(a)            regular expression compiled at load time; a must be a string
//	a !~ "re"   (!_reN(a))         (a null value is an error, as in govaluate, not a non-match)
//	a =~ b      _match(a, b)       pattern taken from the event, compiled per evaluation
//	a !~ b      (!_match(a, b))
//	a + b       _add(a, b)         numbers add; if either side is a string, both are concatenated
//	a % b       _mod(a, b)         math.Mod on numbers
//	& | ^ << >> ~                  bitwise helpers on numbers truncated to integers
//	a in (x, y) _in(a, [x, y])     membership in a list, by Go equality
//	a && b      (a && _bool(b))    b must be a boolean too (unless its syntax makes it one)
//	c ? x       (c ? x : nil)      govaluate's ternary: c ? x : y is (c ? x) : y
//	x : y, x ?? y  (x ?? y)        the left side unless it is nil
//
// Everything else (== != < <= > >= && || ! unary -, - * / **) maps to the expr-lang operator of
// the same meaning; all numbers are float64, as in govaluate.

// exprFilter is one compiled `exprs` filter. It is immutable after compileExprFilters and safe
// for concurrent use.
type exprFilter struct {
	path    string // names the filter in errors, e.g. spec.dependencies[0] (d).filters.exprs[1]
	text    string // the expression as written
	fields  []exprField
	program *vm.Program
}

// exprField is a declared field: where its value comes from in the event data, and the key the
// program reads it under ("" when the expression does not use it; its path must still exist).
type exprField struct {
	path string
	key  string
}

// compileExprFilters compiles Argo `exprs` filters once, at load time. Every problem is an error
// that names the filter (path[i].expr, path[i].fields[j].name, ...) and the offending text:
// an empty expression or field list, a field without path or name (Argo's validation), a syntax
// error, a name the expression uses but the fields do not declare (even in a branch govaluate
// would short-circuit past), an invalid regular expression literal, syntax govaluate does not
// accept (function calls, name.member accessors), and an expression expr-lang's type checker
// can tell never yields a boolean or compares values of incompatible types (such as "x" or
// 1 < "a"). On error it returns no filters and every problem joined.
func compileExprFilters(path string, fs []api.ExprFilter) ([]exprFilter, error) {
	if len(fs) == 0 {
		return nil, nil
	}
	out := make([]exprFilter, 0, len(fs))
	var errs []error
	for i, f := range fs {
		fp := fmt.Sprintf("%s[%d]", path, i)
		ef, err := compileExprFilter(fp, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, ef)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func compileExprFilter(fp string, f api.ExprFilter) (exprFilter, error) {
	var errs []error
	if strings.TrimSpace(f.Expr) == "" {
		errs = append(errs, fmt.Errorf("%s.expr: missing", fp))
	}
	if len(f.Fields) == 0 {
		errs = append(errs, fmt.Errorf("%s.fields: missing; an expression reads the event through its fields", fp))
	}
	declared := map[string]bool{}
	for j, fd := range f.Fields {
		if fd.Path == "" {
			errs = append(errs, fmt.Errorf("%s.fields[%d].path: missing", fp, j))
		}
		if fd.Name == "" {
			errs = append(errs, fmt.Errorf("%s.fields[%d].name: missing", fp, j))
		}
		declared[fd.Name] = true
	}
	if len(errs) > 0 {
		return exprFilter{}, errors.Join(errs...)
	}
	tree, err := parseGovaluate(f.Expr)
	if err != nil {
		return exprFilter{}, fmt.Errorf("%s.expr: %q: %w", fp, f.Expr, err)
	}
	used := gvNames(tree)
	for _, name := range used {
		if !declared[name] {
			return exprFilter{}, fmt.Errorf("%s.expr: %q uses %q, which is not one of its fields (%s)", fp, f.Expr, name, exprFieldNames(f.Fields))
		}
	}
	keys := exprEnvKeys(used)
	tr := gvTranslator{keys: keys}
	code := tr.emit(tree)
	if tr.err != nil {
		return exprFilter{}, fmt.Errorf("%s.expr: %q: %w", fp, f.Expr, tr.err)
	}
	env := types.Map{} // every field is of any type: its JSON decides at run time
	for _, k := range keys {
		env[k] = types.Any
	}
	opts := append([]expr.Option{expr.Env(env), expr.AsBool(), expr.DisableAllBuiltins()}, exprHelpers...)
	for i, h := range tr.regexps {
		opts = append(opts, expr.Function(fmt.Sprintf("_re%d", i), h))
	}
	program, err := expr.Compile(code, opts...)
	if err != nil {
		return exprFilter{}, fmt.Errorf("%s.expr: %q: %s", fp, f.Expr, exprMessage(err))
	}
	ef := exprFilter{path: fp, text: f.Expr, program: program}
	for _, fd := range f.Fields {
		ef.fields = append(ef.fields, exprField{path: fd.Path, key: keys[fd.Name]})
	}
	return ef, nil
}

// matchExprs applies compiled `exprs` filters to event data with Argo's filterExpr semantics:
// no filters or no data (nil or empty) passes; data that is not JSON is an error. Each filter
// reads every declared field with gjson (numbers are float64, as govaluate expects) and
// evaluates its expression. With "and" (or false) every filter must pass, and a field path
// missing from the data or an evaluation error is an error; with "or" one passing filter is
// enough, and such problems are reported only when no filter passed. A result that is not a
// boolean is an evaluation error here; Argo counts it as not passing without an error, so the
// outcome (pass or not) is the same.
func matchExprs(filters []exprFilter, or bool, data []byte) (bool, error) {
	if len(filters) == 0 || len(data) == 0 {
		return true, nil
	}
	if !gjson.ValidBytes(data) {
		return false, errors.New("expr filter: event data is not valid JSON")
	}
	return combineFilters("expr filter", len(filters), or, func(i int) (bool, error) { return filters[i].match(data) })
}

// exprRun is the per-evaluation scratch space: a VM (its stack is reused) and the env map.
type exprRun struct {
	vm  vm.VM
	env map[string]any
}

var exprRuns = sync.Pool{New: func() any { return &exprRun{env: map[string]any{}} }}

// match evaluates one filter against valid JSON data.
func (f *exprFilter) match(data []byte) (bool, error) {
	run := exprRuns.Get().(*exprRun)
	defer func() {
		clear(run.env) // drop references to event values before the next use
		exprRuns.Put(run)
	}()
	for j, fd := range f.fields {
		res := gjson.GetBytes(data, fd.path)
		if !res.Exists() {
			return false, fmt.Errorf("%s.fields[%d]: path %q does not exist in the event", f.path, j, fd.path)
		}
		if fd.key != "" {
			run.env[fd.key] = res.Value() // a later field of the same name wins, as in Argo
		}
	}
	out, err := run.vm.Run(f.program, run.env)
	if err != nil {
		return false, fmt.Errorf("%s: %q: %s", f.path, f.text, exprMessage(err))
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("%s: %q evaluated to %s, not a boolean", f.path, f.text, exprDescribe(out))
	}
	return b, nil
}

// exprMessage is an expr-lang error without the snippet of translated code it carries.
func exprMessage(err error) string {
	var fe *file.Error
	if errors.As(err, &fe) {
		return fe.Message
	}
	return err.Error()
}

func exprDescribe(v any) string {
	if v == nil {
		return "nil"
	}
	return fmt.Sprintf("%T %v", v, v)
}

func exprFieldNames(fs []api.PayloadField) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = strconv.Quote(f.Name)
	}
	return "declared: " + strings.Join(names, ", ")
}

// exprEnvKeys maps every field name the expression uses to the identifier the translated program
// reads it by: the name itself when expr-lang accepts it as a plain identifier, otherwise a
// generated _vN (names like my-field, written [my-field] in govaluate, or expr-lang keywords).
func exprEnvKeys(names []string) map[string]string {
	keys := make(map[string]string, len(names))
	n := 0
	for _, name := range names {
		if exprPlainIdent(name) {
			keys[name] = name
			continue
		}
		keys[name] = fmt.Sprintf("_v%d", n)
		n++
	}
	return keys
}

var exprReservedNames = func() map[string]bool {
	m := map[string]bool{
		"true": true, "false": true, "nil": true, "not": true, "and": true, "or": true, "in": true,
		"matches": true, "contains": true, "startsWith": true, "endsWith": true, "let": true,
		"if": true, "else": true,
	}
	for _, b := range builtin.Builtins {
		m[b.Name] = true
	}
	return m
}()

func exprPlainIdent(s string) bool {
	if s == "" || exprReservedNames[s] {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r == '_' || r >= '0' && r <= '9'):
		default:
			return false
		}
	}
	return true
}

// ---- govaluate's language: tokens ----

type gvKind int

const (
	gvNumber gvKind = iota
	gvString
	gvTime // a string literal govaluate reads as a date: it becomes Unix seconds
	gvBool
	gvVariable
	gvAccessor // a.b: govaluate's struct accessor, meaningless for JSON fields
	gvOpen
	gvClose
	gvComma
	gvOperator
	gvPrefix // - ! ~ where a value is expected
)

type gvToken struct {
	kind gvKind
	text string // operator symbol, variable name or string value
	num  float64
	pos  int // byte offset in the expression, for errors
}

func (t gvToken) String() string {
	switch t.kind {
	case gvString, gvTime:
		return strconv.Quote(t.text)
	case gvOpen:
		return "("
	case gvClose:
		return ")"
	case gvComma:
		return ","
	}
	return fmt.Sprintf("%q", t.text)
}

var gvOperators = map[string]bool{
	// modifiers
	"+": true, "-": true, "*": true, "/": true, "%": true, "**": true,
	"&": true, "|": true, "^": true, "<<": true, ">>": true,
	// logical
	"&&": true, "||": true,
	// comparators
	"==": true, "!=": true, ">": true, ">=": true, "<": true, "<=": true, "=~": true, "!~": true, "in": true,
	// ternary
	"?": true, ":": true, "??": true,
}

// tokenizeGovaluate splits an expression the way govaluate's lexer does:
//   - a string starts with ' or " and ends at the next unescaped ' or " (either one); a
//     backslash makes the next character literal, so "\d" is d and "\\d" is \d;
//   - a string that parses as a date or time in one of govaluate's formats is a date;
//   - a number is a run of digits and dots; a name starts with a letter and goes on with
//     letters, digits, _, . and backslash-escaped runes (my\-field is my-field); true and
//     false are booleans, in and IN the membership operator;
//   - [any text] is a name, with backslash escapes, for names such as my-field;
//   - any other run of symbol characters must be one operator as a whole, so a==-1 is an
//     error (write a == -1), as in govaluate; - ! ~ are prefix operators where a value is due.
func tokenizeGovaluate(s string) ([]gvToken, error) {
	var toks []gvToken
	prefixAllowed := func() bool {
		if len(toks) == 0 {
			return true
		}
		switch toks[len(toks)-1].kind {
		case gvOperator, gvPrefix, gvOpen, gvComma:
			return true
		}
		return false
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		start := i
		switch {
		case unicode.IsSpace(r):
			i += size
		case unicode.IsDigit(r) || r == '.':
			for i < len(s) {
				r, size := utf8.DecodeRuneInString(s[i:])
				if !unicode.IsDigit(r) && r != '.' {
					break
				}
				i += size
			}
			text := s[start:i]
			f, err := strconv.ParseFloat(text, 64)
			if err != nil {
				return nil, fmt.Errorf("at %d: %q is not a number", start+1, text)
			}
			toks = append(toks, gvToken{kind: gvNumber, text: text, num: f, pos: start})
		case r == ',':
			i++
			toks = append(toks, gvToken{kind: gvComma, pos: start})
		case r == '(':
			i++
			toks = append(toks, gvToken{kind: gvOpen, pos: start})
		case r == ')':
			i++
			toks = append(toks, gvToken{kind: gvClose, pos: start})
		case r == '[':
			name, next, ok := readEscaped(s, i+size, func(r rune) bool { return r == ']' })
			if !ok {
				return nil, fmt.Errorf("at %d: [ without a closing ]", start+1)
			}
			i = next
			toks = append(toks, gvToken{kind: gvVariable, text: name, pos: start})
		case r == '\'' || r == '"':
			str, next, ok := readEscaped(s, i+size, func(r rune) bool { return r == '\'' || r == '"' })
			if !ok {
				return nil, fmt.Errorf("at %d: string without a closing quote (a string ends at the next ' or \")", start+1)
			}
			i = next
			if t, ok := govaluateTime(str); ok {
				toks = append(toks, gvToken{kind: gvTime, text: str, num: float64(t.Unix()), pos: start})
			} else {
				toks = append(toks, gvToken{kind: gvString, text: str, pos: start})
			}
		case unicode.IsLetter(r):
			var b strings.Builder
			for i < len(s) {
				r, size := utf8.DecodeRuneInString(s[i:])
				if r == '\\' && i+size < len(s) { // govaluate lets a backslash escape any rune in a name
					i += size
					r, size = utf8.DecodeRuneInString(s[i:])
				} else if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' && r != '.' {
					break
				}
				b.WriteRune(r)
				i += size
			}
			word := b.String()
			switch {
			case word == "true" || word == "false":
				toks = append(toks, gvToken{kind: gvBool, text: word, pos: start})
			case word == "in" || word == "IN":
				toks = append(toks, gvToken{kind: gvOperator, text: "in", pos: start})
			case strings.Contains(word, "."):
				toks = append(toks, gvToken{kind: gvAccessor, text: word, pos: start})
			default:
				toks = append(toks, gvToken{kind: gvVariable, text: word, pos: start})
			}
		default:
			i += size // at least this rune, so that a stray ] is reported rather than looped on
			for i < len(s) {
				r, size := utf8.DecodeRuneInString(s[i:])
				if unicode.IsSpace(r) || unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(`()[]'"`, r) {
					break
				}
				i += size
			}
			sym := s[start:i]
			switch {
			case prefixAllowed() && (sym == "-" || sym == "!" || sym == "~"):
				toks = append(toks, gvToken{kind: gvPrefix, text: sym, pos: start})
			case gvOperators[sym]:
				toks = append(toks, gvToken{kind: gvOperator, text: sym, pos: start})
			default:
				return nil, fmt.Errorf("at %d: %q is not an operator", start+1, sym)
			}
		}
	}
	return toks, nil
}

// readEscaped reads from s[i:] up to the first unescaped rune for which end is true, which it
// consumes; a backslash makes the next rune literal, as in govaluate.
func readEscaped(s string, i int, end func(rune) bool) (string, int, bool) {
	var b strings.Builder
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == '\\':
			if i >= len(s) {
				return "", i, false
			}
			r, size = utf8.DecodeRuneInString(s[i:])
			i += size
			b.WriteRune(r)
		case end(r):
			return b.String(), i, true
		default:
			b.WriteRune(r)
		}
	}
	return "", i, false
}

// govaluateTimeFormats are the layouts govaluate tries on every string literal. A literal that
// parses (in the process's local time zone, as govaluate does) is a date, compared as Unix
// seconds: ts > "2024-01-01T00:00:00Z" works on a numeric timestamp, and d == "2024-01-01"
// is never true for a string d, in Argo and here alike.
var govaluateTimeFormats = []string{
	time.ANSIC,
	time.UnixDate,
	time.RubyDate,
	time.Kitchen,
	time.RFC3339,
	time.RFC3339Nano,
	"2006-01-02",
	"2006-01-02 15:04",
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05-07:00",
	"2006-01-02T15Z0700",
	"2006-01-02T15:04Z0700",
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04:05.999999999Z0700",
}

func govaluateTime(s string) (time.Time, bool) {
	if !strings.ContainsAny(s, ":-") {
		return time.Time{}, false // every layout has one; skip the parse attempts
	}
	for _, layout := range govaluateTimeFormats {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// ---- govaluate's language: syntax tree ----

type gvNode struct {
	tok  gvToken   // the literal, name or operator
	args []*gvNode // operands: one for a prefix operator, two for a binary one, any for a list
	list bool      // a comma-separated list, as in a in (1, 2)
}

// gvLevels are govaluate's binary precedence levels, loosest first. Operators of one level
// associate to the left; prefix operators bind tighter than any binary operator, so -2 ** 2 is
// 4 and !a == b is (!a) == b.
var gvLevels = []map[string]bool{
	{"?": true, ":": true, "??": true},
	{"||": true},
	{"&&": true},
	{"==": true, "!=": true, ">": true, ">=": true, "<": true, "<=": true, "=~": true, "!~": true, "in": true},
	{"&": true, "|": true, "^": true},
	{"<<": true, ">>": true},
	{"+": true, "-": true},
	{"*": true, "/": true, "%": true},
	{"**": true},
}

type gvParser struct {
	toks []gvToken
	i    int
}

// parseGovaluate parses an expression in govaluate's syntax.
func parseGovaluate(s string) (*gvNode, error) {
	toks, err := tokenizeGovaluate(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, errors.New("empty expression")
	}
	p := &gvParser{toks: toks}
	n, err := p.list()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, p.unexpected()
	}
	return n, nil
}

func (p *gvParser) peek() (gvToken, bool) {
	if p.i < len(p.toks) {
		return p.toks[p.i], true
	}
	return gvToken{}, false
}

func (p *gvParser) unexpected() error {
	t, ok := p.peek()
	if !ok {
		return errors.New("unexpected end of expression")
	}
	return fmt.Errorf("at %d: unexpected %s", t.pos+1, t)
}

// list is a comma-separated list (govaluate's separator, the loosest operator) or one item.
func (p *gvParser) list() (*gvNode, error) {
	first, err := p.binary(0)
	if err != nil {
		return nil, err
	}
	t, ok := p.peek()
	if !ok || t.kind != gvComma {
		return first, nil
	}
	n := &gvNode{tok: t, list: true, args: []*gvNode{first}}
	for {
		t, ok := p.peek()
		if !ok || t.kind != gvComma {
			return n, nil
		}
		p.i++
		item, err := p.binary(0)
		if err != nil {
			return nil, err
		}
		n.args = append(n.args, item)
	}
}

func (p *gvParser) binary(level int) (*gvNode, error) {
	if level == len(gvLevels) {
		return p.unary()
	}
	left, err := p.binary(level + 1)
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.peek()
		if !ok || t.kind != gvOperator || !gvLevels[level][t.text] {
			return left, nil
		}
		p.i++
		right, err := p.binary(level + 1)
		if err != nil {
			return nil, err
		}
		left = &gvNode{tok: t, args: []*gvNode{left, right}}
	}
}

func (p *gvParser) unary() (*gvNode, error) {
	t, ok := p.peek()
	if !ok {
		return nil, errors.New("unexpected end of expression; a value is missing")
	}
	p.i++
	switch t.kind {
	case gvPrefix:
		operand, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &gvNode{tok: t, args: []*gvNode{operand}}, nil
	case gvNumber, gvString, gvTime, gvBool:
		return &gvNode{tok: t}, nil
	case gvVariable:
		if next, ok := p.peek(); ok && next.kind == gvOpen {
			return nil, fmt.Errorf("at %d: %s(...): function calls are not supported", t.pos+1, t.text)
		}
		return &gvNode{tok: t}, nil
	case gvAccessor:
		return nil, fmt.Errorf("at %d: %q: accessors (name.member) are not supported; declare a field for the JSON path, or write [%s] for a field named %s", t.pos+1, t.text, t.text, t.text)
	case gvOpen:
		if next, ok := p.peek(); ok && next.kind == gvClose {
			return nil, fmt.Errorf("at %d: empty parentheses", t.pos+1)
		}
		n, err := p.list()
		if err != nil {
			return nil, err
		}
		if next, ok := p.peek(); !ok || next.kind != gvClose {
			if !ok {
				return nil, fmt.Errorf("at %d: ( without a closing )", t.pos+1)
			}
			return nil, p.unexpected()
		}
		p.i++
		return n, nil
	}
	p.i--
	return nil, p.unexpected()
}

// gvNames lists the field names an expression reads, each once, in order of appearance.
func gvNames(n *gvNode) []string {
	var names []string
	var walk func(*gvNode)
	walk = func(n *gvNode) {
		if len(n.args) == 0 && n.tok.kind == gvVariable && !slices.Contains(names, n.tok.text) {
			names = append(names, n.tok.text)
		}
		for _, a := range n.args {
			walk(a)
		}
	}
	walk(n)
	return names
}

// ---- translation to expr-lang ----

type gvTranslator struct {
	keys    map[string]string
	regexps []func(params ...any) (any, error)
	err     error // the first invalid regular expression literal
}

// gvHelperOps maps the govaluate operators expr-lang lacks, or treats otherwise, to the helper
// functions that implement them.
var gvHelperOps = map[string]string{
	"+": "_add", "%": "_mod", "&": "_band", "|": "_bor", "^": "_bxor", "<<": "_shl", ">>": "_shr", "in": "_in",
}

// emit writes n as expr-lang source, every operation in parentheses so that expr-lang's own
// precedence never applies.
func (tr *gvTranslator) emit(n *gvNode) string {
	if n.list {
		items := make([]string, len(n.args))
		for i, a := range n.args {
			items[i] = tr.emit(a)
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	t := n.tok
	switch t.kind {
	case gvNumber, gvTime:
		return exprFloat(t.num)
	case gvString:
		return strconv.Quote(t.text)
	case gvBool:
		return t.text
	case gvVariable:
		return tr.keys[t.text]
	case gvPrefix:
		x := tr.emit(n.args[0])
		switch t.text {
		case "-":
			return "(-" + x + ")"
		case "!":
			return "(!" + x + ")"
		default: // ~
			return "_bnot(" + x + ")"
		}
	}
	l, r := tr.emit(n.args[0]), n.args[1]
	switch t.text {
	case "=~", "!~":
		var call string
		if r.tok.kind == gvString && !r.list && len(r.args) == 0 {
			re, err := regexp.Compile(r.tok.text)
			if err != nil && tr.err == nil {
				tr.err = fmt.Errorf("at %d: %q is not a regular expression: %w", r.tok.pos+1, r.tok.text, err)
			}
			call = fmt.Sprintf("_re%d(%s)", len(tr.regexps), l)
			tr.regexps = append(tr.regexps, exprRegexHelper(re, t.text))
		} else {
			call = fmt.Sprintf("_match(%s, %s)", l, tr.emit(r))
		}
		if t.text == "!~" {
			return "(!" + call + ")"
		}
		return call
	case "+", "%", "&", "|", "^", "<<", ">>", "in":
		return gvHelperOps[t.text] + "(" + l + ", " + tr.emit(r) + ")"
	case "?":
		return "(" + l + " ? " + tr.emit(r) + " : nil)"
	case ":", "??":
		return "(" + l + " ?? " + tr.emit(r) + ")"
	case "&&", "||":
		// expr-lang checks that the left operand is a bool but yields the right one as it is;
		// govaluate requires both to be bools. The check costs a call, so only where the right
		// operand is not a boolean by its syntax.
		right := tr.emit(r)
		if !gvIsBoolean(r) {
			right = "_bool(" + right + ")"
		}
		return "(" + l + " " + t.text + " " + right + ")"
	}
	// == != < <= > >= && || - * / **
	return "(" + l + " " + t.text + " " + tr.emit(r) + ")"
}

// gvIsBoolean tells whether n yields a bool (or fails) whatever its operands hold.
func gvIsBoolean(n *gvNode) bool {
	if n.list {
		return false
	}
	switch n.tok.kind {
	case gvBool:
		return true
	case gvPrefix:
		return n.tok.text == "!"
	case gvOperator:
		switch n.tok.text {
		case "==", "!=", "<", "<=", ">", ">=", "=~", "!~", "in", "&&", "||":
			return true
		}
	}
	return false
}

// exprFloat writes f so that expr-lang reads a float64, as every govaluate number is.
func exprFloat(f float64) string {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	if f < 0 {
		return "(" + s + ")"
	}
	return s
}

// ---- helpers with govaluate's semantics ----

var exprHelpers = []expr.Option{
	expr.Function("_add", func(p ...any) (any, error) {
		l, r := p[0], p[1]
		_, ls := l.(string)
		_, rs := r.(string)
		if ls || rs {
			return fmt.Sprintf("%v%v", l, r), nil
		}
		return exprNumeric2("+", l, r, func(a, b float64) float64 { return a + b })
	}),
	expr.Function("_bool", func(p ...any) (any, error) {
		if _, ok := p[0].(bool); !ok {
			return nil, exprOperandError("&& or ||", p[0], "a boolean")
		}
		return p[0], nil
	}),
	expr.Function("_mod", func(p ...any) (any, error) { return exprNumeric2("%", p[0], p[1], math.Mod) }),
	expr.Function("_band", func(p ...any) (any, error) {
		return exprNumeric2("&", p[0], p[1], func(a, b float64) float64 { return float64(int64(a) & int64(b)) })
	}),
	expr.Function("_bor", func(p ...any) (any, error) {
		return exprNumeric2("|", p[0], p[1], func(a, b float64) float64 { return float64(int64(a) | int64(b)) })
	}),
	expr.Function("_bxor", func(p ...any) (any, error) {
		return exprNumeric2("^", p[0], p[1], func(a, b float64) float64 { return float64(int64(a) ^ int64(b)) })
	}),
	expr.Function("_shl", func(p ...any) (any, error) {
		return exprNumeric2("<<", p[0], p[1], func(a, b float64) float64 { return float64(uint64(a) << uint64(b)) })
	}),
	expr.Function("_shr", func(p ...any) (any, error) {
		return exprNumeric2(">>", p[0], p[1], func(a, b float64) float64 { return float64(uint64(a) >> uint64(b)) })
	}),
	expr.Function("_bnot", func(p ...any) (any, error) {
		x, ok := p[0].(float64)
		if !ok {
			return nil, exprOperandError("~", p[0], "a number")
		}
		return float64(^int64(x)), nil
	}),
	expr.Function("_in", func(p ...any) (any, error) {
		list, ok := p[1].([]any)
		if !ok {
			return nil, exprOperandError("in", p[1], "a list")
		}
		for _, v := range list {
			if exprGoEqual(p[0], v) {
				return true, nil
			}
		}
		return false, nil
	}),
	expr.Function("_match", func(p ...any) (any, error) {
		s, ok := p[0].(string)
		if !ok {
			return nil, exprOperandError("=~", p[0], "a string")
		}
		pattern, ok := p[1].(string)
		if !ok {
			return nil, exprOperandError("=~", p[1], "a string (a regular expression)")
		}
		re, err := regexp.Compile(pattern)
		if err != nil {
			return nil, fmt.Errorf("%q is not a regular expression: %w", pattern, err)
		}
		return re.MatchString(s), nil
	}),
}

func exprRegexHelper(re *regexp.Regexp, op string) func(params ...any) (any, error) {
	return func(p ...any) (any, error) {
		s, ok := p[0].(string)
		if !ok {
			return nil, exprOperandError(op, p[0], "a string")
		}
		return re.MatchString(s), nil
	}
}

func exprNumeric2(op string, l, r any, f func(a, b float64) float64) (any, error) {
	a, ok := l.(float64)
	if !ok {
		return nil, exprOperandError(op, l, "a number")
	}
	b, ok := r.(float64)
	if !ok {
		return nil, exprOperandError(op, r, "a number")
	}
	return f(a, b), nil
}

func exprOperandError(op string, v any, want string) error {
	return fmt.Errorf("%s cannot be used with %s: it is not %s", exprDescribe(v), op, want)
}

// exprGoEqual is Go's == on interface values (govaluate's `in`), false where == would panic.
func exprGoEqual(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if reflect.TypeOf(a) != reflect.TypeOf(b) || !reflect.TypeOf(a).Comparable() {
		return false
	}
	return a == b
}
