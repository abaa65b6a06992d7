package sensor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"text/template"
	"time"

	sprig "github.com/Masterminds/sprig/v3"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/trigger"
)

// params resolves Argo's trigger parameters against the events that fired a trigger, with
// Argo's semantics: a template wins over a key, a key over the default value, and a value that
// cannot be resolved falls back to the default when there is one.
type params map[string]*cloudevents.Event

// valueKind tells whether a resolved value is a plain string or raw JSON (object, array, number,
// bool), which matters for useRawData.
type valueKind int

const (
	kindString valueKind = iota
	kindRaw
)

func (p params) Value(src *api.TriggerParameterSource) (*string, error) {
	v, _, err := p.resolve(src)
	return v, err
}

func (p params) resolve(src *api.TriggerParameterSource) (*string, valueKind, error) {
	if src == nil {
		return nil, kindString, errors.New("src: missing")
	}
	e, ok := p[src.DependencyName]
	if !ok {
		// The dependency did not take part in this firing (an || condition): only the default.
		return src.Value, kindString, nil
	}
	var (
		doc       []byte
		key, tmpl string
		err       error
	)
	switch {
	case src.DataKey != "" || src.DataTemplate != "":
		key, tmpl = src.DataKey, src.DataTemplate
		doc, err = dataAsJSON(e)
	case src.ContextKey != "" || src.ContextTemplate != "":
		key, tmpl = src.ContextKey, src.ContextTemplate
		doc, err = contextAsJSON(e)
	default:
		if src.Value != nil {
			return src.Value, kindString, nil
		}
		// The whole event, shaped as Argo marshals it: the context, and the data as base64.
		whole, err := json.Marshal(struct {
			Context map[string]string `json:"context"`
			Data    []byte            `json:"data"`
		}{contextMap(e), e.Data()})
		s := string(whole)
		return &s, kindString, err
	}
	if err != nil {
		if src.Value != nil {
			return src.Value, kindString, nil
		}
		return nil, kindString, fmt.Errorf("dependency %q: %w", src.DependencyName, err)
	}
	var errs []error
	if tmpl != "" {
		out, err := executeTemplate(tmpl, doc)
		if err == nil {
			return &out, kindString, nil
		}
		errs = append(errs, err)
	}
	if key != "" {
		res := gjson.GetBytes(doc, key)
		if res.Exists() {
			// As Argo: objects, arrays and null keep their JSON text, strings are unquoted, and
			// numbers and booleans are normalised by gjson (1.50 → "1.5").
			s, kind := res.String(), kindRaw
			switch res.Type {
			case gjson.String:
				kind = kindString
			case gjson.JSON, gjson.Null:
				s = res.Raw
			}
			return &s, kind, nil
		}
		errs = append(errs, fmt.Errorf("key %q does not exist in the event", key))
	}
	if src.Value != nil {
		return src.Value, kindString, nil
	}
	return nil, kindString, fmt.Errorf("dependency %q: cannot resolve the parameter: %w", src.DependencyName, errors.Join(errs...))
}

// Apply sets each parameter at its dest in doc, as Argo's ApplyParams does.
func (p params) Apply(doc []byte, ps []api.TriggerParameter) ([]byte, error) {
	rs, err := p.Resolve(ps)
	if err != nil {
		return nil, err
	}
	return trigger.ApplyResolved(doc, rs)
}

// Resolve implements trigger.Params.
func (p params) Resolve(ps []api.TriggerParameter) ([]trigger.Resolved, error) {
	var out []trigger.Resolved
	for i, param := range ps {
		v, kind, err := p.resolve(param.Src)
		if err != nil {
			return nil, fmt.Errorf("parameters[%d]: %w", i, err)
		}
		if v == nil {
			continue
		}
		out = append(out, trigger.Resolved{Index: i, Dest: param.Dest, Value: *v,
			Raw: param.Src.UseRawData && kind == kindRaw, Operation: param.Operation})
	}
	return out, nil
}

// Payload builds a document from parameters alone, as Argo's ConstructPayload does: a parameter
// with an empty dest is the whole payload.
func (p params) Payload(ps []api.TriggerParameter) ([]byte, error) {
	var doc []byte
	for i, param := range ps {
		v, kind, err := p.resolve(param.Src)
		if err != nil {
			return nil, fmt.Errorf("payload[%d]: %w", i, err)
		}
		if param.Dest == "" {
			if v != nil {
				return []byte(*v), nil
			}
			continue
		}
		if v == nil {
			continue
		}
		if doc, err = setValue(doc, param.Dest, *v, kind, param.Src.UseRawData); err != nil {
			return nil, fmt.Errorf("payload[%d].dest %q: %w", i, param.Dest, err)
		}
	}
	return doc, nil
}

func setValue(doc []byte, dest, value string, kind valueKind, raw bool) ([]byte, error) {
	if raw && kind == kindRaw {
		return sjson.SetRawBytes(doc, dest, []byte(value))
	}
	return sjson.SetBytes(doc, dest, value)
}

func executeTemplate(tmpl string, doc []byte) (string, error) {
	t, err := template.New("param").Funcs(sprig.TxtFuncMap()).Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("template %q: %w", tmpl, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, map[string]any{"Input": gjson.ParseBytes(doc).Value()}); err != nil {
		return "", fmt.Errorf("template %q: %w", tmpl, err)
	}
	out := buf.String()
	if out == "" || out == "<no value>" {
		return "", fmt.Errorf("template %q evaluated to no value", tmpl)
	}
	return out, nil
}

// dataAsJSON returns the event's data as JSON; Argo's parameters and filters read JSON only.
func dataAsJSON(e *cloudevents.Event) ([]byte, error) {
	data := e.Data()
	if !json.Valid(data) {
		return nil, fmt.Errorf("event data is not JSON (content type %q)", e.DataContentType())
	}
	return data, nil
}

// contextMap is the event context as Argo names its fields; time is UTC with second precision,
// as Argo's metav1.Time renders it.
func contextMap(e *cloudevents.Event) map[string]string {
	return map[string]string{
		"id": e.ID(), "source": e.Source(), "specversion": e.SpecVersion(), "type": e.Type(),
		"datacontenttype": e.DataContentType(), "subject": e.Subject(), "time": e.Time().UTC().Format(time.RFC3339),
	}
}

func contextAsJSON(e *cloudevents.Event) ([]byte, error) { return json.Marshal(contextMap(e)) }
