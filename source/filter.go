package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	sprig "github.com/Masterminds/sprig/v3"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/kevents/kevents/api"
)

// Every event whose spec has Argo's filter (a field of type *api.EventSourceFilter: the
// resource source's filter is a ResourceFilter and minio's an S3Filter, other things) runs each
// of its events through the expression before they reach Kafka, in one place for every source
// type: Run gives the event an Env whose Publisher, and for owned sources a Commit, drops the
// events the filter does not pass and reports them delivered. The source then acknowledges its
// outside system (a webhook answers 200, a queue message is deleted, an offset committed), as
// Argo does: its dispatch returns nil for a dropped event. The drops are counted in
// kevents_source_events_filtered_total{reason="false"|"error"}, not as published.
//
// What Argo Events v1.9 does (v1.9.11: pkg/eventsources/eventing.go, where GetEventingServers
// collects the filter of every type that has one and the dispatch function of
// EventSourceAdaptor.run calls filterEvent; pkg/shared/expr/eval.go, EvalBool and GetFuncMap),
// and this code does the same:
//   - The expression is an expr program (antonmedv/expr v1.15 in Argo, its successor
//     expr-lang/expr here: the same language) run on the event's data, the JSON that becomes
//     the CloudEvent's data, unmarshalled into a map: a webhook's filter reads body.x,
//     header["X-Y"][0] and metadata.z, a NATS filter subject and body, and so on.
//   - In the top-level keys '-' becomes '_' and dotted keys ("a.b") become nested maps
//     (bellows.Expand after removeConflicts: a dotted key wins over its plain parent). Next to
//     the data the expression sees asInt, asFloat, toJson and sprig (sprig's generic functions
//     but env and expandenv). Numbers are float64, as JSON gives them; names the data lacks
//     are nil, so body.missing == nil is true and missing.x is an error.
//   - The event is published when the result is true. false drops it; so do data that is not a
//     JSON object, an evaluation error and a result that is not a bool, which are logged.
//
// Differences from Argo:
//   - The expression is compiled once, when the EventSource loads: a syntax error, an empty
//     expression, or a result that can never be a bool (1 + 2, "yes") is an error naming
//     spec.<type>.<event>.filter.expression. Argo compiles on every event and drops them all.
//   - jsonpath(json, path) is not supported (Argo's JSONPath library is not a dependency here);
//     an expression calling it is refused as not supported.
//   - Argo keys filters by event name alone, so an event without a filter takes the filter of a
//     same-named event of another type in its EventSource; here each event has its own.

// eventFilterType is the type of Argo's filter field.
var eventFilterType = reflect.TypeFor[*api.EventSourceFilter]()

// filterField returns ev's filter and the JSON name of its field, found by reflection on the
// typed spec so that every source type with the field gets filtering; nil when the type has
// none or the event sets none.
func filterField(ev api.Event) (*api.EventSourceFilter, string) {
	v := reflect.ValueOf(ev.Spec)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil, ""
	}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Type != eventFilterType || !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		return v.Field(i).Interface().(*api.EventSourceFilter), name
	}
	return nil, ""
}

// filterFuncs are the functions Argo's GetFuncMap puts next to the data, shared read-only by
// every evaluation.
var filterFuncs = func() map[string]any {
	sp := sprig.GenericFuncMap()
	// As in Argo: an expression must not read the process environment.
	delete(sp, "env")
	delete(sp, "expandenv")
	return map[string]any{
		"asInt":   builtin.Int,
		"asFloat": builtin.Float,
		"toJson": func(v any) string {
			b, err := json.Marshal(v)
			if err != nil {
				return ""
			}
			return string(b)
		},
		"sprig": sp,
	}
}()

// eventFilter is the compiled filter of one event.
type eventFilter struct {
	expression string
	program    *vm.Program
	b          Build // names and logs the drops
}

// compileEventFilter compiles ev's filter; nil when it has none. An error starts with the
// field's path below the event (filter.expression: ...).
func compileEventFilter(ev api.Event) (*eventFilter, error) {
	f, field := filterField(ev)
	if f == nil {
		return nil, nil
	}
	path := field + ".expression"
	if strings.TrimSpace(f.Expression) == "" {
		return nil, fmt.Errorf("%s: empty; expected an expression on the event data that is true for the events to publish, such as body.action == \"opened\" (Argo drops every event when it is empty)", path)
	}
	program, err := expr.Compile(f.Expression, expr.Env(filterFuncs), expr.AllowUndefinedVariables(), expr.AsBool())
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a valid expression: %s; expected an expr-lang expression that gives a bool", path, f.Expression, exprError(err))
	}
	var jsonpath jsonpathCall
	node := program.Node()
	ast.Walk(&node, &jsonpath)
	if jsonpath {
		return nil, fmt.Errorf("%s: %w", path, api.NotSupported("eventsource filter function", "jsonpath"))
	}
	return &eventFilter{expression: f.Expression, program: program}, nil
}

// jsonpathCall records a call of Argo's jsonpath function.
type jsonpathCall bool

func (c *jsonpathCall) Visit(n *ast.Node) {
	if call, ok := (*n).(*ast.CallNode); ok {
		if id, ok := call.Callee.(*ast.IdentifierNode); ok && id.Value == "jsonpath" {
			*c = true
		}
	}
}

// exprError is an expr-lang error on one line: its message and position, without the snippet.
func exprError(err error) string {
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Line > 0 {
			return fmt.Sprintf("%s (line %d, column %d)", fe.Message, fe.Line, fe.Column)
		}
		return fe.Message
	}
	return err.Error()
}

// pass reports whether the event whose data is data passes the filter, as Argo's filterEvent
// decides: an error drops the event too.
func (f *eventFilter) pass(data []byte) (bool, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return false, fmt.Errorf("the event data is not a JSON object: %w", err)
	}
	flat := make(map[string]any, len(m))
	for k, v := range m {
		flat[strings.ReplaceAll(k, "-", "_")] = v
	}
	env := expandKeys(flat)
	for k, v := range filterFuncs {
		env[k] = v
	}
	out, err := expr.Run(f.program, env)
	if err != nil {
		return false, fmt.Errorf("evaluating %q: %s", f.expression, exprError(err))
	}
	ok, isBool := out.(bool)
	if !isBool {
		return false, fmt.Errorf("%q gave %T, not a bool", f.expression, out)
	}
	return ok, nil
}

// expandKeys nests the values of dotted keys: {"a.b": 1, "a.c": 2} becomes {"a": {"b": 1,
// "c": 2}}, as Argo's Expand does. A plain key that also has dotted children ({"a": 0,
// "a.b": 1}) gives way to them. m is returned as it is when no key has a dot.
func expandKeys(m map[string]any) map[string]any {
	var children map[string]map[string]any
	for k, v := range m {
		if head, rest, dotted := strings.Cut(k, "."); dotted {
			if children == nil {
				children = map[string]map[string]any{}
			}
			if children[head] == nil {
				children[head] = map[string]any{}
			}
			children[head][rest] = v
		}
	}
	if children == nil {
		return m
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if _, _, dotted := strings.Cut(k, "."); !dotted && children[k] == nil {
			out[k] = v
		}
	}
	for head, c := range children {
		out[head] = expandKeys(c)
	}
	return out
}

// keep runs the filter on e, logging and counting a drop.
func (f *eventFilter) keep(e cloudevents.Event) bool {
	ok, err := f.pass(e.Data())
	if ok {
		return true
	}
	f.dropped(e, err)
	return false
}

// dropped logs and counts an event the filter dropped; err is why, nil when the expression was
// false.
func (f *eventFilter) dropped(e cloudevents.Event, err error) {
	b := f.b
	log := b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name, "id", e.ID())
	reason := "false"
	if err != nil {
		reason = "error"
		log.Warn("event dropped: its filter could not be evaluated", "error", err)
	} else {
		log.Debug("event dropped: its filter is false")
	}
	b.Env.Metrics.Filtered(b.EventSource.Metadata.Namespace, b.EventSource.Metadata.Name, b.Event.Name, reason, 1)
}

// filteringPublisher publishes the events its filter passes and reports the others published,
// so that the source acknowledges them.
type filteringPublisher struct {
	next   Publisher
	filter *eventFilter
}

func (p filteringPublisher) Publish(ctx context.Context, topic string, e cloudevents.Event) error {
	if !p.filter.keep(e) {
		return nil
	}
	return p.next.Publish(ctx, topic, e)
}

// filteringAsyncPublisher is a filteringPublisher that keeps its Publisher's pipelining.
type filteringAsyncPublisher struct {
	filteringPublisher
	async AsyncPublisher
}

func (p filteringAsyncPublisher) PublishAsync(ctx context.Context, topic string, e cloudevents.Event, done func(error)) {
	if !p.filter.keep(e) {
		done(nil)
		return
	}
	p.async.PublishAsync(ctx, topic, e, done)
}

// filteringOwned commits the events of an owned source that its filter passes, with the
// source's state as it is, so the state moves past the dropped ones as well.
type filteringOwned struct {
	OwnedSource
	filter *eventFilter
}

func (o filteringOwned) RunOwned(ctx context.Context, state []byte, commit Commit) error {
	return o.OwnedSource.RunOwned(ctx, state, func(ctx context.Context, events []cloudevents.Event, state []byte) error {
		type drop struct {
			e   cloudevents.Event
			err error
		}
		kept := make([]cloudevents.Event, 0, len(events))
		var drops []drop
		for _, e := range events {
			ok, err := o.filter.pass(e.Data())
			if ok {
				kept = append(kept, e)
			} else {
				drops = append(drops, drop{e, err})
			}
		}
		if err := commit(ctx, kept, state); err != nil {
			return err // the source runs again from its committed state, and filters again
		}
		// Counted once committed: the source counts the whole batch published only then.
		for _, d := range drops {
			o.filter.dropped(d.e, d.err)
		}
		return nil
	})
}
