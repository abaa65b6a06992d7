package api

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event is one named event of an EventSource, whatever its type.
type Event struct {
	Type string // the spec field naming the source type: "webhook", "sqs", ...
	Name string
	// Webhook is set when Type is "webhook".
	Webhook *WebhookEventSource
	// Spec is the event's definition as its type declares it (GithubEventSource, ...), or
	// Opaque for types kevents does not read yet.
	Spec any
}

// Events lists the events of the spec, ordered by type then name.
func (s *EventSourceSpec) Events() []Event {
	var out []Event
	v := reflect.ValueOf(s).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() != reflect.Map || f.Type().Key().Kind() != reflect.String {
			continue
		}
		if f.Type().Elem().Kind() == reflect.String {
			continue
		}
		typ, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		for _, key := range sortedKeys(f) {
			e := Event{Type: typ, Name: key, Spec: f.MapIndex(reflect.ValueOf(key)).Interface()}
			if w, ok := e.Spec.(WebhookEventSource); ok {
				e.Webhook = &w
			}
			out = append(out, e)
		}
	}
	return out
}

func sortedKeys(m reflect.Value) []string {
	keys := make([]string, 0, m.Len())
	for _, k := range m.MapKeys() {
		keys = append(keys, k.String())
	}
	sort.Strings(keys)
	return keys
}

// Type returns the one trigger type the template sets ("http", "log", "k8s", ...).
func (t *TriggerTemplate) Type() (string, error) {
	var set []string
	v := reflect.ValueOf(t).Elem()
	for _, f := range triggerTypeFields() {
		if !v.Field(f.index).IsZero() {
			set = append(set, f.name)
		}
	}
	switch len(set) {
	case 1:
		return set[0], nil
	case 0:
		return "", errors.New("no trigger type set; expected exactly one of http, log, k8s, argoWorkflow, kafka, nats, slack, ...")
	}
	return "", fmt.Errorf("several trigger types set (%s); expected exactly one", strings.Join(set, ", "))
}

type typeField struct {
	index int
	name  string
}

// triggerTypeFields lists the fields of TriggerTemplate that are trigger types, read once:
// Type runs for every command a sensor renders.
var triggerTypeFields = sync.OnceValue(func() []typeField {
	var out []typeField
	rt := reflect.TypeOf(TriggerTemplate{})
	for i := 0; i < rt.NumField(); i++ {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		switch name {
		case "name", "conditions", "conditionsReset":
			continue
		}
		out = append(out, typeField{index: i, name: name})
	}
	return out
})

// dnsName is Kubernetes' rule for object names (RFC 1123 subdomain), which topic names and
// consumer group ids derived from them rely on.
var dnsName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

func validateMeta(m ObjectMeta) error {
	if m.Name == "" {
		return errors.New("metadata.name: missing")
	}
	if len(m.Name) > 253 || !dnsName.MatchString(m.Name) {
		return fmt.Errorf("metadata.name: %q; expected a Kubernetes object name (lower case letters, digits, '-' and '.')", m.Name)
	}
	if m.Namespace != "" && !dnsName.MatchString(m.Namespace) {
		return fmt.Errorf("metadata.namespace: %q; expected a Kubernetes namespace name", m.Namespace)
	}
	return nil
}

// Validate checks what the schema alone cannot: required fields, names and ranges.
func (es *EventSource) Validate() error {
	var errs []error
	if err := validateMeta(es.Metadata); err != nil {
		errs = append(errs, err)
	}
	events := es.Spec.Events()
	if len(events) == 0 {
		errs = append(errs, errors.New("spec: no events; expected at least one source type (webhook, calendar, ...) with a named event"))
	}
	seen := map[string]string{}
	for _, e := range events {
		path := fmt.Sprintf("spec.%s.%s", e.Type, e.Name)
		if e.Name == "" {
			errs = append(errs, fmt.Errorf("spec.%s: empty event name", e.Type))
		}
		if other, dup := seen[e.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: event name %q is also used by spec.%s; event names must be unique in an EventSource", path, e.Name, other))
		}
		seen[e.Name] = e.Type
		if e.Webhook != nil {
			if err := e.Webhook.validate(path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (w *WebhookEventSource) validate(path string) error {
	var errs []error
	port, err := strconv.Atoi(w.Port)
	if err != nil || port < 1 || port > 65535 {
		errs = append(errs, fmt.Errorf("%s.port: %q; expected a TCP port number 1-65535", path, w.Port))
	}
	if !strings.HasPrefix(w.Endpoint, "/") {
		errs = append(errs, fmt.Errorf("%s.endpoint: %q; expected a path starting with /", path, w.Endpoint))
	}
	switch w.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead:
	default:
		errs = append(errs, fmt.Errorf("%s.method: %q; expected GET, POST, PUT, PATCH, DELETE or HEAD", path, w.Method))
	}
	if w.MaxPayloadSize != nil && *w.MaxPayloadSize <= 0 {
		errs = append(errs, fmt.Errorf("%s.maxPayloadSize: %d; expected a positive number of bytes", path, *w.MaxPayloadSize))
	}
	if w.AuthSecret != nil && (w.AuthSecret.Name == "" || w.AuthSecret.Key == "") {
		errs = append(errs, fmt.Errorf("%s.authSecret: expected both name and key", path))
	}
	return errors.Join(errs...)
}

// Validate checks what the schema alone cannot: required fields, unique names, and that every
// dependency a trigger names exists.
func (s *Sensor) Validate() error {
	var errs []error
	if err := validateMeta(s.Metadata); err != nil {
		errs = append(errs, err)
	}
	if len(s.Spec.Dependencies) == 0 {
		errs = append(errs, errors.New("spec.dependencies: empty; expected at least one dependency"))
	}
	deps := map[string]bool{}
	for i, d := range s.Spec.Dependencies {
		path := fmt.Sprintf("spec.dependencies[%d]", i)
		switch {
		case d.Name == "":
			errs = append(errs, fmt.Errorf("%s.name: missing", path))
		case deps[d.Name]:
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice; dependency names must be unique", path, d.Name))
		}
		deps[d.Name] = true
		if d.EventSourceName == "" {
			errs = append(errs, fmt.Errorf("%s (%s).eventSourceName: missing", path, d.Name))
		}
		if d.EventName == "" {
			errs = append(errs, fmt.Errorf("%s (%s).eventName: missing", path, d.Name))
		}
		if err := checkLogicalOperator(path+".filtersLogicalOperator", d.FiltersLogicalOperator); err != nil {
			errs = append(errs, err)
		}
		if f := d.Filters; f != nil {
			for _, op := range []struct{ field, v string }{{"dataLogicalOperator", f.DataLogicalOperator}, {"exprLogicalOperator", f.ExprLogicalOperator}} {
				if err := checkLogicalOperator(path+".filters."+op.field, op.v); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if len(s.Spec.Triggers) == 0 {
		errs = append(errs, errors.New("spec.triggers: empty; expected at least one trigger"))
	}
	names := map[string]bool{}
	for i := range s.Spec.Triggers {
		path := fmt.Sprintf("spec.triggers[%d]", i)
		t := &s.Spec.Triggers[i]
		if t.Template != nil && t.Template.Name != "" {
			if names[t.Template.Name] {
				errs = append(errs, fmt.Errorf("%s.template.name: %q is used twice; trigger names must be unique", path, t.Template.Name))
			}
			names[t.Template.Name] = true
		}
		if err := t.validate(path, deps); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func checkLogicalOperator(path, v string) error {
	switch v {
	case "", "and", "or":
		return nil
	}
	return fmt.Errorf("%s: %q; expected and or or", path, v)
}

func (t *Trigger) validate(path string, deps map[string]bool) error {
	var errs []error
	if t.Template == nil {
		return fmt.Errorf("%s.template: missing", path)
	}
	if t.Template.Name == "" {
		errs = append(errs, fmt.Errorf("%s.template.name: missing", path))
	}
	if _, err := t.Template.Type(); err != nil {
		errs = append(errs, fmt.Errorf("%s.template: %w", path, err))
	}
	errs = append(errs, validateParameters(path+".parameters", t.Parameters, deps, false))
	if h := t.Template.HTTP; h != nil {
		hp := path + ".template.http"
		if h.URL == "" {
			errs = append(errs, fmt.Errorf("%s.url: missing", hp))
		}
		if h.Timeout < 0 {
			errs = append(errs, fmt.Errorf("%s.timeout: %d; expected seconds >= 0", hp, h.Timeout))
		}
		errs = append(errs,
			validateParameters(hp+".payload", h.Payload, deps, true),
			validateParameters(hp+".parameters", h.Parameters, deps, false),
			validateParameters(hp+".dynamicHeaders", h.DynamicHeaders, deps, false))
	}
	tp := path + ".template"
	if k := t.Template.Kafka; k != nil {
		errs = append(errs, validateParameters(tp+".kafka.payload", k.Payload, deps, true),
			validateParameters(tp+".kafka.parameters", k.Parameters, deps, false))
	}
	if n := t.Template.NATS; n != nil {
		errs = append(errs, validateParameters(tp+".nats.payload", n.Payload, deps, true),
			validateParameters(tp+".nats.parameters", n.Parameters, deps, false))
	}
	if sl := t.Template.Slack; sl != nil {
		errs = append(errs, validateParameters(tp+".slack.parameters", sl.Parameters, deps, false))
	}
	if e := t.Template.Email; e != nil {
		errs = append(errs, validateParameters(tp+".email.parameters", e.Parameters, deps, false))
	}
	if k := t.Template.K8s; k != nil {
		errs = append(errs, validateParameters(tp+".k8s.parameters", k.Parameters, deps, false))
	}
	if w := t.Template.ArgoWorkflow; w != nil {
		errs = append(errs, validateParameters(tp+".argoWorkflow.parameters", w.Parameters, deps, false))
	}
	if l := t.Template.AWSLambda; l != nil {
		errs = append(errs, validateParameters(tp+".awsLambda.payload", l.Payload, deps, true),
			validateParameters(tp+".awsLambda.parameters", l.Parameters, deps, false))
	}
	if c := t.Template.Custom; c != nil {
		errs = append(errs, validateParameters(tp+".custom.payload", c.Payload, deps, true),
			validateParameters(tp+".custom.parameters", c.Parameters, deps, false))
	}
	if t.DlqTrigger != nil {
		errs = append(errs, t.DlqTrigger.validate(path+".dlqTrigger", deps))
	}
	if t.Kevents != nil && t.Kevents.Correlation != nil {
		errs = append(errs, t.Kevents.Correlation.validate(path+".kevents.correlation", deps))
	}
	return errors.Join(errs...)
}

// validateParameters checks parameters; in a payload an empty dest is allowed and means the
// value is the whole payload, as in Argo.
func validateParameters(path string, params []TriggerParameter, deps map[string]bool, payload bool) error {
	var errs []error
	for i, p := range params {
		pp := fmt.Sprintf("%s[%d]", path, i)
		if p.Src == nil {
			errs = append(errs, fmt.Errorf("%s.src: missing", pp))
		} else if !deps[p.Src.DependencyName] {
			errs = append(errs, fmt.Errorf("%s.src.dependencyName: %q; expected the name of one of the sensor's dependencies", pp, p.Src.DependencyName))
		}
		if p.Dest == "" && !payload {
			errs = append(errs, fmt.Errorf("%s.dest: missing", pp))
		}
		switch p.Operation {
		case "", "overwrite", "append", "prepend":
		default:
			errs = append(errs, fmt.Errorf("%s.operation: %q; expected overwrite, append or prepend", pp, p.Operation))
		}
	}
	return errors.Join(errs...)
}

func (c *Correlation) validate(path string, deps map[string]bool) error {
	var errs []error
	if len(c.Keys) == 0 {
		errs = append(errs, fmt.Errorf("%s.keys: empty; expected a path in the event data for each dependency of the condition", path))
	}
	for dep, p := range c.Keys {
		if !deps[dep] {
			errs = append(errs, fmt.Errorf("%s.keys: %q is not a dependency of the sensor", path, dep))
		}
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("%s.keys.%s: empty path; expected a path in the event data such as body.commit", path, dep))
		}
	}
	if c.Window != "" {
		if d, err := time.ParseDuration(c.Window); err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s.window: %q; expected a positive duration such as 30m", path, c.Window))
		}
	}
	return errors.Join(errs...)
}

// Check reports a Secret reference without a name or a key; field names the reference in the
// error ("http.basicAuth.username").
func (s *SecretKeySelector) Check(field string) error {
	if s == nil || s.Name == "" || s.Key == "" {
		return fmt.Errorf("%s: a secret name and key are required", field)
	}
	return nil
}

// Check validates a TLS configuration as Argo's ValidateTLSConfig does: insecureSkipVerify or
// enabled is enough, else a CA or a client certificate must be set, and a client certificate
// goes with its key. field prefixes the errors ("http.tls").
func (t *TLSConfig) Check(field string) error {
	cert, key := t.ClientCertSecret != nil, t.ClientKeySecret != nil
	if !t.InsecureSkipVerify && !t.Enabled && t.CACertSecret == nil && !cert && !key {
		return fmt.Errorf("%s: set enabled, insecureSkipVerify, caCertSecret or clientCertSecret and clientKeySecret", field)
	}
	if cert != key {
		return fmt.Errorf("%s: clientCertSecret and clientKeySecret go together", field)
	}
	var errs []error
	for _, f := range []struct {
		name string
		ref  *SecretKeySelector
	}{{"caCertSecret", t.CACertSecret}, {"clientCertSecret", t.ClientCertSecret}, {"clientKeySecret", t.ClientKeySecret}} {
		if f.ref != nil {
			errs = append(errs, f.ref.Check(field+"."+f.name))
		}
	}
	return errors.Join(errs...)
}
