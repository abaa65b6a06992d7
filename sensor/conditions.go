package sensor

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/kevents/kevents/api"
)

// condition is a trigger's `conditions` parsed once: a boolean expression over dependency
// names with &&, || and parentheses, as Argo's. The default (no conditions) is every dependency
// AND'd.
type condition interface {
	// holds reports whether the condition is true when exactly the dependencies met reports are met.
	holds(met func(dep string) bool) bool
	// deps appends the dependency names the condition mentions.
	deps(out []string) []string
}

type depRefCond string
type andCond []condition
type orCond []condition

func (c depRefCond) holds(met func(string) bool) bool { return met(string(c)) }
func (c depRefCond) deps(out []string) []string       { return append(out, string(c)) }

func (c andCond) holds(met func(string) bool) bool {
	for _, x := range c {
		if !x.holds(met) {
			return false
		}
	}
	return true
}

func (c andCond) deps(out []string) []string {
	for _, x := range c {
		out = x.deps(out)
	}
	return out
}

func (c orCond) holds(met func(string) bool) bool {
	for _, x := range c {
		if x.holds(met) {
			return true
		}
	}
	return false
}

func (c orCond) deps(out []string) []string {
	for _, x := range c {
		out = x.deps(out)
	}
	return out
}

// Dependency names may hold '-' and '.', which Argo allows in conditions too.
var (
	condTokens = regexp.MustCompile(`\s*(\|\||&&|[()!]|[A-Za-z0-9_.\-]+|\S)`)
	condName   = regexp.MustCompile(`^[A-Za-z0-9_.\-]+$`)
)

// parseConditions parses expr against the sensor's dependency names; an empty expr means all
// of them AND'd. Errors quote the expression and say what was expected where.
func parseConditions(expr string, known []string) (condition, error) {
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k] = true
	}
	if strings.TrimSpace(expr) == "" {
		all := make(andCond, len(known))
		for i, k := range known {
			all[i] = depRefCond(k)
		}
		return all, nil
	}
	var toks []string
	for _, m := range condTokens.FindAllStringSubmatch(expr, -1) {
		toks = append(toks, m[1])
	}
	p := &condParser{toks: toks, known: isKnown}
	c, err := p.or()
	if err == nil && p.pos < len(p.toks) {
		err = fmt.Errorf("unexpected %q", p.toks[p.pos])
	}
	if err != nil {
		return nil, fmt.Errorf("%q: %w", expr, err)
	}
	return c, nil
}

type condParser struct {
	toks  []string
	pos   int
	known map[string]bool
}

func (p *condParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *condParser) or() (condition, error) {
	return p.list("||", p.and, func(cs []condition) condition { return orCond(cs) })
}

func (p *condParser) and() (condition, error) {
	return p.list("&&", p.term, func(cs []condition) condition { return andCond(cs) })
}

func (p *condParser) list(op string, next func() (condition, error), build func([]condition) condition) (condition, error) {
	first, err := next()
	if err != nil {
		return nil, err
	}
	cs := []condition{first}
	for p.peek() == op {
		p.pos++
		c, err := next()
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	if len(cs) == 1 {
		return first, nil
	}
	return build(cs), nil
}

func (p *condParser) term() (condition, error) {
	switch tok := p.peek(); tok {
	case "":
		return nil, errors.New("unexpected end; expected a dependency name or (")
	case "(":
		p.pos++
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, fmt.Errorf("missing ) at %q", p.peek())
		}
		p.pos++
		return c, nil
	case "!":
		// govaluate accepts it, but a trigger that waits for an event not to arrive needs
		// timers the join does not have.
		return nil, api.NotSupported("condition operator", "!")
	default:
		if !condName.MatchString(tok) {
			return nil, fmt.Errorf("unexpected %q; expected a dependency name or (", tok)
		}
		p.pos++
		if !p.known[tok] {
			return nil, fmt.Errorf("names dependency %q, which the sensor does not have", tok)
		}
		return depRefCond(tok), nil
	}
}
