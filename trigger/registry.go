package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"k8s.io/client-go/rest"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/registry"
	"github.com/kevents/kevents/internal/secrets"
)

// Params applies Argo's trigger parameters against the events that fired a trigger. The sensor
// implements it; trigger types use it while rendering.
type Params interface {
	// Apply sets each parameter's value at its dest path in doc (Argo's ApplyParams).
	Apply(doc []byte, params []api.TriggerParameter) ([]byte, error)
	// Payload builds a JSON document from the parameters alone (Argo's ConstructPayload).
	Payload(params []api.TriggerParameter) ([]byte, error)
	// Resolve resolves each parameter's value without applying it; parameters that resolve to
	// nothing are left out.
	Resolve(params []api.TriggerParameter) ([]Resolved, error)
	// Value resolves one parameter source; nil when it resolves to nothing.
	Value(src *api.TriggerParameterSource) (*string, error)
}

// RenderInput is what a trigger type renders a command body from. Contract: a renderer is a
// pure function of its input (no clock, no randomness, no outside reads) and reads the events
// only through Events and Params; the sensor relies on this to render a body that does not
// depend on the events once per trigger.
type RenderInput struct {
	// Template has the trigger-level parameters already applied.
	Template *api.TriggerTemplate
	Events   map[string]*cloudevents.Event // by dependency name
	Params   Params
}

// Env is what executors may use.
type Env struct {
	Logger  *slog.Logger
	Secrets secrets.Resolver
	// HTTPClient is used by trigger types that speak HTTP; nil means a default client.
	HTTPClient *http.Client
	// Bus is the cluster kevents runs on; the executor pool sets it.
	Bus *Bus
	// Kube reaches the Kubernetes API for the k8s and argoWorkflow triggers; nil means there is
	// none, and their commands fail with a clear error.
	Kube *rest.Config
}

// Executor runs the commands of one trigger type. Execute may be called concurrently.
type Executor interface {
	Execute(ctx context.Context, cmd *Command) error
}

// Spec describes a trigger type and drives validation and docs.
type Spec struct {
	Summary string
	// Render turns a trigger template into the command spec. It runs in the sensor.
	Render func(in RenderInput) (json.RawMessage, error)
	// Check validates a template of this type at load time; nil means no extra checks.
	Check func(t *api.TriggerTemplate) error
	// OneMember reports whether this type's executor keeps a trigger's state across its
	// commands in memory (a Slack thread, a log interval), so that all of the trigger's
	// commands must run on one member; params are the trigger-level parameters, which may set
	// that state's fields. Nil means never.
	OneMember func(t *api.TriggerTemplate, params []api.TriggerParameter) bool
}

// Constructor builds the executor of a trigger type.
type Constructor func(env Env) (Executor, error)

var types = registry.New[Spec, Constructor]("trigger type")

// Register adds a trigger type under the name of its field in Argo's trigger template
// ("http", "log", ...). It panics on a duplicate name: that is a programming error.
func Register(name string, spec Spec, ctor Constructor) { types.Register(name, spec, ctor) }

// Check validates a trigger template: its type is supported and its fields make sense.
func Check(t *api.TriggerTemplate) error {
	typ, err := t.Type()
	if err != nil {
		return err
	}
	e, err := types.Lookup(typ)
	if err != nil {
		return err
	}
	if e.Spec.Check != nil {
		return e.Spec.Check(t)
	}
	return nil
}

// Ordered reports whether a trigger's commands must run one after another on one executor
// member, so that the sensor keys them by trigger (see Command.Key): the user asked for it
// (kevents.ordered), it has atLeastOnce (Argo then runs a trigger's firings one after another,
// each before the next event is acknowledged; without it, each in a goroutine of its own), one
// member enforces its rateLimit, or its type keeps the trigger's state in the executor's memory
// (Spec.OneMember). A template whose type is unknown is not ordered; Check reports it.
func Ordered(t *api.Trigger) bool {
	if t.Kevents != nil && t.Kevents.Ordered || t.AtLeastOnce || t.RateLimit != nil {
		return true
	}
	if t.Template == nil {
		return false
	}
	typ, err := t.Template.Type()
	if err != nil {
		return false
	}
	e, err := types.Lookup(typ)
	return err == nil && e.Spec.OneMember != nil && e.Spec.OneMember(t.Template, t.Parameters)
}

// setsField reports whether a parameter writes field (a dest such as "slack.thread") or a field
// inside it.
func setsField(params []api.TriggerParameter, field string) bool {
	for _, p := range params {
		if p.Dest == field || strings.HasPrefix(p.Dest, field+".") {
			return true
		}
	}
	return false
}

// Render renders the command spec of a template and returns its type.
func Render(in RenderInput) (string, json.RawMessage, error) {
	r, err := NewRenderer(in.Template)
	if err != nil {
		return "", nil, err
	}
	return r.Render(in)
}

// A Renderer renders the commands of one trigger template, with the template's type and
// renderer looked up once: Render finds the type by reflection over the template on every call.
type Renderer struct {
	typ    string
	render func(RenderInput) (json.RawMessage, error)
}

// NewRenderer looks up tmpl's type and renderer.
func NewRenderer(tmpl *api.TriggerTemplate) (Renderer, error) {
	typ, err := tmpl.Type()
	if err != nil {
		return Renderer{}, err
	}
	e, err := types.Lookup(typ)
	if err != nil {
		return Renderer{}, err
	}
	return Renderer{typ: typ, render: e.Spec.Render}, nil
}

// Render is Render for in, whose template is the one the Renderer was made for or a copy of
// it. The zero Renderer looks the type up, as Render does.
func (r Renderer) Render(in RenderInput) (string, json.RawMessage, error) {
	if r.render == nil {
		return Render(in)
	}
	spec, err := r.render(in)
	return r.typ, spec, err
}

// newExecutors builds one executor per registered type.
func newExecutors(env Env) (map[string]Executor, error) {
	out := map[string]Executor{}
	for _, name := range types.Names() {
		e, _ := types.Lookup(name)
		x, err := e.New(env)
		if err != nil {
			return nil, fmt.Errorf("trigger type %s: %w", name, err)
		}
		out[name] = x
	}
	return out, nil
}
