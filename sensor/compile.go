// Package sensor is stage 1 and 2 of kevents: it matches events against the dependencies of
// every loaded sensor, applies filters, and emits trigger commands in Kafka transactions.
package sensor

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/trigger"
)

// compiled is a sensor ready to run: every filter parsed, every trigger checked.
type compiled struct {
	namespace, name string
	deps            map[string]*dependency
	triggers        []*compiledTrigger
}

type dependency struct {
	api.EventDependency
	transform *transformer
	data      []dataFilter
	dataOr    bool
	exprs     []exprFilter
	exprOr    bool
	context   *api.EventContext
	time      *timeFilter
	script    *scriptFilter
	filtersOr bool
	// triggers are those that one event of this dependency fires on its own.
	triggers []*compiledTrigger
	// joins are those whose condition needs this dependency together with others: its events
	// go to the join stage.
	joins []*compiledTrigger
}

type compiledTrigger struct {
	def   api.Trigger
	name  string
	retry *trigger.Retry
	cond  condition
	// corr maps each dependency to the path of its correlation value; nil: one join per trigger.
	corr map[string]string
	// window bounds how long a join key waits after its first event; 0: no limit.
	window time.Duration
	// resets are the conditionsReset schedules: a key whose first event precedes a reset time
	// that has passed starts over.
	resets    []cron.Schedule
	rateLimit *trigger.RateLimit
	// ordered commands are keyed by trigger, to run in order on one member (trigger.Ordered).
	ordered     bool
	allowStatus []int
	labelPolicy *trigger.LabelPolicy
	// dlq is the dlqTrigger, rendered with the same events into every command of this trigger.
	dlq *compiledTrigger
	// deps is the signature of what the trigger waits for (its dependencies' events and
	// correlation paths); join state written under another signature is dropped.
	deps string
	// static is the command body, when it does not depend on the events.
	static staticSpec
	// renderer renders the template without trigger-level parameters, which could change its
	// type.
	renderer trigger.Renderer
}

// Check loads a sensor as the pool would and returns every reason it cannot run, naming the
// sensor, dependency or trigger. Errors for parts kevents does not run yet wrap
// api.ErrNotSupported.
func Check(s *api.Sensor) error {
	_, err := compile(s)
	return err
}

func compile(s *api.Sensor) (*compiled, error) {
	c := &compiled{namespace: namespaceOf(s.Metadata), name: s.Metadata.Name, deps: map[string]*dependency{}}
	var errs []error
	for i, d := range s.Spec.Dependencies {
		path := fmt.Sprintf("spec.dependencies[%d] (%s)", i, d.Name)
		dep := &dependency{EventDependency: d, filtersOr: d.FiltersLogicalOperator == "or"}
		var err error
		dep.transform, err = compileTransform(path+".transform", d.Transform)
		errs = append(errs, err)
		if f := d.Filters; f != nil {
			dep.data, err = compileDataFilters(path+".filters.data", f.Data)
			errs = append(errs, err)
			dep.dataOr = f.DataLogicalOperator == "or"
			dep.exprs, err = compileExprFilters(path+".filters.exprs", f.Exprs)
			errs = append(errs, err)
			dep.exprOr = f.ExprLogicalOperator == "or"
			if f.Context != nil {
				errs = append(errs, checkContextFilter(path+".filters.context", f.Context))
				dep.context = f.Context
			}
			dep.time, err = compileTimeFilter(path+".filters.time", f.Time)
			errs = append(errs, err)
			dep.script, err = compileScriptFilter(path+".filters.script", f.Script)
			errs = append(errs, err)
		}
		c.deps[d.Name] = dep
	}
	for i := range s.Spec.Triggers {
		t := s.Spec.Triggers[i]
		path := fmt.Sprintf("spec.triggers[%d]", i)
		if t.Template == nil {
			continue // api.Validate reported it
		}
		path += " (" + t.Template.Name + ")"
		ct := &compiledTrigger{def: t, name: t.Template.Name, ordered: trigger.Ordered(&t)}
		if err := trigger.Check(t.Template); err != nil {
			errs = append(errs, fmt.Errorf("%s.template: %w", path, err))
		} else {
			ct.renderer, _ = trigger.NewRenderer(t.Template) // Check looked the type up
		}
		for i, r := range t.Template.ConditionsReset {
			sched, err := compileReset(r)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.template.conditionsReset[%d].byTime: %w", path, i, err))
				continue
			}
			ct.resets = append(ct.resets, sched)
		}
		if d := t.DlqTrigger; d != nil {
			dlq, err := compileDLQ(d)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.dlqTrigger: %w", path, err))
			}
			ct.dlq = dlq
		}
		if rl := t.RateLimit; rl != nil {
			per, ok := map[string]time.Duration{"": time.Second, "Second": time.Second, "Minute": time.Minute, "Hour": time.Hour}[rl.Unit]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s.rateLimit.unit: %q; expected Second, Minute or Hour", path, rl.Unit))
			case rl.RequestsPerUnit <= 0:
				errs = append(errs, fmt.Errorf("%s.rateLimit.requestsPerUnit: %d; expected a positive number", path, rl.RequestsPerUnit))
			default:
				ct.rateLimit = &trigger.RateLimit{Requests: int(rl.RequestsPerUnit), Per: per}
			}
		}
		if pol := t.Policy; pol != nil {
			if pol.K8s != nil {
				lp, err := compileLabelPolicy(t.Template, pol.K8s)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.policy.k8s: %w", path, err))
				}
				ct.labelPolicy = lp
			}
			if pol.Status != nil {
				for _, code := range pol.Status.Allow {
					if code < 100 || code > 599 {
						errs = append(errs, fmt.Errorf("%s.policy.status.allow: %d; expected HTTP status codes", path, code))
					}
					ct.allowStatus = append(ct.allowStatus, int(code))
				}
			}
		}
		retry, err := compileRetry(t.RetryStrategy)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.retryStrategy: %w", path, err))
		}
		ct.retry = retry
		names := make([]string, len(s.Spec.Dependencies))
		for i, d := range s.Spec.Dependencies {
			names[i] = d.Name
		}
		cond, err := parseConditions(t.Template.Conditions, names)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.template.conditions: %w", path, err))
		} else {
			ct.cond = cond
			deps, join := route(cond)
			ct.deps = depsSignature(deps, c.deps, t.Kevents)
			if c := t.Kevents; c != nil && c.Correlation != nil {
				ct.corr = c.Correlation.Keys
				ct.window, _ = time.ParseDuration(c.Correlation.Window) // api.Validate checked it
				for _, d := range deps {
					if _, ok := ct.corr[d]; !ok {
						errs = append(errs, fmt.Errorf("%s.kevents.correlation.keys: no path for dependency %q of the condition", path, d))
					}
				}
			}
			for _, name := range deps {
				if d := c.deps[name]; d != nil && join {
					d.joins = append(d.joins, ct)
				} else if d != nil {
					d.triggers = append(d.triggers, ct)
				}
			}
		}
		c.triggers = append(c.triggers, ct)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sensor %s/%s: %w", c.namespace, c.name, err)
	}
	return c, nil
}

// depsSignature names what a trigger's join waits for: each dependency's event source, event
// and correlation path, in name order.
func depsSignature(names []string, deps map[string]*dependency, ext *api.TriggerExtensions) string {
	var b strings.Builder
	for _, n := range names {
		d := deps[n]
		if d == nil {
			continue
		}
		fmt.Fprintf(&b, "%s=%s/%s", n, d.EventSourceName, d.EventName)
		if ext != nil && ext.Correlation != nil {
			fmt.Fprintf(&b, "@%s", ext.Correlation.Keys[n])
		}
		b.WriteByte(';')
	}
	return b.String()
}

// route returns the dependencies a condition mentions and whether they need the join stage:
// when one event of each satisfies the condition on its own (one dependency, or only ||), the
// trigger fires straight from stage 1; otherwise every event of the trigger goes through the
// join, where the condition is evaluated over the latest event of each dependency, and firing
// clears them all, as Argo does.
func route(cond condition) (deps []string, join bool) {
	seen := map[string]bool{}
	for _, d := range cond.deps(nil) {
		if seen[d] {
			continue
		}
		seen[d] = true
		deps = append(deps, d)
		if !cond.holds(func(x string) bool { return x == d }) {
			join = true
		}
	}
	sort.Strings(deps)
	return deps, join
}

// compileDLQ compiles a dlqTrigger: a trigger of its own type and retries, fired with the
// events of the command that failed. It cannot have a dlqTrigger itself.
func compileDLQ(d *api.Trigger) (*compiledTrigger, error) {
	if d.Template == nil {
		return nil, errors.New("template: missing")
	}
	var errs []error
	if err := trigger.Check(d.Template); err != nil {
		errs = append(errs, fmt.Errorf("template: %w", err))
	}
	if d.DlqTrigger != nil {
		errs = append(errs, errors.New("dlqTrigger: a dlqTrigger cannot have a dlqTrigger of its own"))
	}
	retry, err := compileRetry(d.RetryStrategy)
	if err != nil {
		errs = append(errs, fmt.Errorf("retryStrategy: %w", err))
	}
	renderer, _ := trigger.NewRenderer(d.Template) // the zero Renderer when Check failed
	return &compiledTrigger{def: *d, name: d.Template.Name, retry: retry, renderer: renderer, ordered: trigger.Ordered(d)}, errors.Join(errs...)
}

// resetParser reads conditionsReset crons as Argo does: five fields, no seconds.
var resetParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func compileReset(r api.ConditionsResetCriteria) (cron.Schedule, error) {
	if r.ByTime == nil || r.ByTime.Cron == "" {
		return nil, errors.New("cron: missing")
	}
	loc := time.UTC
	if r.ByTime.Timezone != "" {
		l, err := time.LoadLocation(r.ByTime.Timezone)
		if err != nil {
			return nil, fmt.Errorf("timezone: %q is not a known time zone", r.ByTime.Timezone)
		}
		loc = l
	}
	sched, err := resetParser.Parse(r.ByTime.Cron)
	if err != nil {
		return nil, fmt.Errorf("cron: %q: %w", r.ByTime.Cron, err)
	}
	if spec, ok := sched.(*cron.SpecSchedule); ok {
		spec.Location = loc
	}
	return sched, nil
}

// compileRetry turns Argo's retryStrategy into durations. Argo reads an integer duration as
// nanoseconds and a string as a Go duration; a retryStrategy without steps makes 5 attempts
// (Argo's default backoff), without duration waits 1 s, without factor keeps the wait.
// compileLabelPolicy reads a policy.k8s. Argo applies it to the objects the k8s and
// argoWorkflow triggers act on; on other types it would be silently ignored, so it is an error.
func compileLabelPolicy(t *api.TriggerTemplate, p *api.K8sResourcePolicy) (*trigger.LabelPolicy, error) {
	if typ, _ := t.Type(); typ != "k8s" && typ != "argoWorkflow" {
		return nil, fmt.Errorf("set on a %s trigger; it applies to k8s and argoWorkflow triggers only", typ)
	}
	if len(p.Labels) == 0 {
		return nil, errors.New("labels: missing; the policy waits for these labels on the object")
	}
	b := p.Backoff
	if b == nil {
		b = &api.Backoff{}
	}
	r, err := compileRetry(b)
	if err != nil {
		return nil, fmt.Errorf("backoff.%w", err)
	}
	return &trigger.LabelPolicy{Labels: p.Labels, Backoff: *r, ErrorOnTimeout: p.ErrorOnBackoffTimeout}, nil
}

func compileRetry(b *api.Backoff) (*trigger.Retry, error) {
	if b == nil {
		return nil, nil
	}
	r := &trigger.Retry{Steps: int(b.Steps), Duration: time.Second, Factor: 1}
	if r.Steps < 1 {
		r.Steps = 5
	}
	if len(b.Duration) > 0 {
		s := strings.Trim(string(b.Duration), `"`)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			r.Duration = time.Duration(n)
		} else if d, err := time.ParseDuration(s); err == nil {
			r.Duration = d
		} else {
			return nil, fmt.Errorf("duration: %s; expected a duration such as \"3s\"", b.Duration)
		}
	}
	if len(b.Factor) > 0 {
		f, err := strconv.ParseFloat(strings.Trim(string(b.Factor), `"`), 64)
		if err != nil || f <= 0 {
			return nil, fmt.Errorf("factor: %s; expected a positive number", b.Factor)
		}
		r.Factor = f
	}
	if len(b.Jitter) > 0 {
		j, err := strconv.ParseFloat(strings.Trim(string(b.Jitter), `"`), 64)
		if err != nil || j < 0 {
			return nil, fmt.Errorf("jitter: %s; expected a number >= 0", b.Jitter)
		}
		r.Jitter = j
	}
	return r, nil
}

func namespaceOf(m api.ObjectMeta) string {
	if m.Namespace == "" {
		return "default"
	}
	return m.Namespace
}
