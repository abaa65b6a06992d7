package sensor

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/trigger"
)

func testSensor(deps []api.EventDependency, triggers ...api.Trigger) *api.Sensor {
	return &api.Sensor{
		APIVersion: api.ArgoAPIVersion, Kind: api.KindSensor,
		Metadata: api.ObjectMeta{Name: "s", Namespace: "ns"},
		Spec:     api.SensorSpec{Dependencies: deps, Triggers: triggers},
	}
}

func testDep(name string) api.EventDependency {
	return api.EventDependency{Name: name, EventSourceName: "es", EventName: name}
}

func logTrigger(name, conditions string) api.Trigger {
	return api.Trigger{Template: &api.TriggerTemplate{Name: name, Conditions: conditions, Log: &api.LogTrigger{}}}
}

func deps(names ...string) []api.EventDependency {
	out := make([]api.EventDependency, len(names))
	for i, n := range names {
		out[i] = testDep(n)
	}
	return out
}

func TestCheck(t *testing.T) {
	withFilters := func(f *api.EventDependencyFilter) []api.EventDependency {
		d := testDep("a")
		d.Filters = f
		return []api.EventDependency{d}
	}
	modify := func(tr api.Trigger, f func(*api.Trigger)) api.Trigger { f(&tr); return tr }

	tests := []struct {
		name         string
		sensor       *api.Sensor
		wantErr      []string // substrings; nil means Check passes
		notSupported bool     // the error wraps api.ErrNotSupported
	}{
		{name: "one dependency and a log trigger", sensor: testSensor(deps("a"), logTrigger("t", ""))},
		{name: "one dependency named in conditions", sensor: testSensor(deps("a"), logTrigger("t", "a"))},
		{name: "a || b", sensor: testSensor(deps("a", "b"), logTrigger("t", "a || b"))},
		{name: "(a || b) || c with extra spaces", sensor: testSensor(deps("a", "b", "c"), logTrigger("t", " ( a||b ) ||  c "))},
		{name: "http trigger", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: "http://example.com"}}})},
		{name: "data filters that compile", sensor: testSensor(withFilters(&api.EventDependencyFilter{
			Data: []api.DataFilter{str("k", "", "v"), num("n", ">", "1")}, DataLogicalOperator: "or",
		}), logTrigger("t", ""))},

		{name: "default AND of two dependencies", sensor: testSensor(deps("a", "b"), logTrigger("t", ""))},
		{name: "a && b", sensor: testSensor(deps("a", "b"), logTrigger("t", "a && b"))},
		{name: "a || (b && c)", sensor: testSensor(deps("a", "b", "c"), logTrigger("t", "a || (b && c)"))},
		{name: "correlation without a path for every dependency", sensor: testSensor(deps("a", "b"), modify(logTrigger("t", "a && b"), func(tr *api.Trigger) {
			tr.Kevents = &api.TriggerExtensions{Correlation: &api.Correlation{Keys: map[string]string{"a": "body.id"}}}
		})), wantErr: []string{`spec.triggers[0] (t).kevents.correlation.keys: no path for dependency "b"`}},
		{name: "negation", sensor: testSensor(deps("a", "b"), logTrigger("t", "!a || b")),
			wantErr: []string{"conditions"}, notSupported: true},
		{name: "conditions naming an unknown dependency", sensor: testSensor(deps("a", "b"), logTrigger("t", "a || c")),
			wantErr: []string{"spec.triggers[0] (t).template.conditions", `"c"`}},
		{name: "conditions naming no dependency", sensor: testSensor(deps("a", "b"), logTrigger("t", "( || )")),
			wantErr: []string{`"( || )": unexpected "||"; expected a dependency name or (`}},

		{name: "exprs filter", sensor: testSensor(withFilters(&api.EventDependencyFilter{Exprs: []api.ExprFilter{{Expr: "a == 1", Fields: []api.PayloadField{{Path: "x", Name: "a"}}}}}), logTrigger("t", ""))},
		{name: "exprs filter without fields", sensor: testSensor(withFilters(&api.EventDependencyFilter{Exprs: []api.ExprFilter{{Expr: "a == 1"}}}), logTrigger("t", "")),
			wantErr: []string{"spec.dependencies[0] (a).filters.exprs[0].fields: missing"}},
		{name: "context filter", sensor: testSensor(withFilters(&api.EventDependencyFilter{Context: &api.EventContext{Type: "webhook"}}), logTrigger("t", ""))},
		{name: "time filter", sensor: testSensor(withFilters(&api.EventDependencyFilter{Time: &api.TimeFilter{Start: "01:00:00", Stop: "02:00:00"}}), logTrigger("t", ""))},
		{name: "time filter with a bad start", sensor: testSensor(withFilters(&api.EventDependencyFilter{Time: &api.TimeFilter{Start: "1am", Stop: "02:00:00"}}), logTrigger("t", "")),
			wantErr: []string{"filters.time.start"}},
		{name: "script filter", sensor: testSensor(withFilters(&api.EventDependencyFilter{Script: "return true"}), logTrigger("t", ""))},
		{name: "script filter that does not parse", sensor: testSensor(withFilters(&api.EventDependencyFilter{Script: "return (("}), logTrigger("t", "")),
			wantErr: []string{"filters.script"}},
		{name: "transform", sensor: func() *api.Sensor {
			d := testDep("a")
			d.Transform = &api.EventDependencyTransformer{JQ: "."}
			return testSensor([]api.EventDependency{d}, logTrigger("t", ""))
		}()},
		{name: "transform with jq that does not parse", sensor: func() *api.Sensor {
			d := testDep("a")
			d.Transform = &api.EventDependencyTransformer{JQ: ".a |"}
			return testSensor([]api.EventDependency{d}, logTrigger("t", ""))
		}(), wantErr: []string{"spec.dependencies[0] (a).transform.jq"}},

		{name: "data filter with an invalid regex is a plain error naming the path",
			sensor:  testSensor(withFilters(&api.EventDependencyFilter{Data: []api.DataFilter{str("k", "", "(")}}), logTrigger("t", "")),
			wantErr: []string{"spec.dependencies[0] (a).filters.data[0].value[0]"}},
		{name: "data filter with a bad number is a plain error naming the path",
			sensor:  testSensor(withFilters(&api.EventDependencyFilter{Data: []api.DataFilter{str("k", "", "v"), num("n", "", "ten")}}), logTrigger("t", "")),
			wantErr: []string{"spec.dependencies[0] (a).filters.data[1].value[0]", `"ten"`}},

		{name: "k8s trigger without a source", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{Operation: "create"}}}),
			wantErr: []string{`spec.triggers[0] (t).template`, `k8s.source: missing`}},
		{name: "k8s trigger with a bad inline object", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
			Source: &api.ArtifactLocation{Inline: ptr("kind: [")}}}}),
			wantErr: []string{`k8s.source.inline: not a YAML or JSON object`}},
		{name: "k8s trigger from S3", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
			Source: &api.ArtifactLocation{S3: json.RawMessage(`{"bucket":{"name":"b"}}`)}}}}),
			wantErr: []string{`k8s.source.s3: not supported yet`}, notSupported: true},
		{name: "k8s trigger with an unknown operation", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
			Operation: "replace", Source: &api.ArtifactLocation{File: &api.FileArtifact{Path: "/x.yaml"}}}}}),
			wantErr: []string{`k8s.operation: "replace"; expected create, update, patch or delete`}},
		{name: "argoWorkflow trigger with CLI args", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", ArgoWorkflow: &api.ArgoWorkflowTrigger{
			Args: []string{"--serviceaccount", "x"}, Source: &api.ArtifactLocation{File: &api.FileArtifact{Path: "/x.yaml"}}}}}),
			wantErr: []string{`argoWorkflow.args: not supported yet`}, notSupported: true},
		{name: "http trigger with a ConfigMap secure header", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: "http://x",
			SecureHeaders: []*api.SecureHeader{{Name: "A", ValueFrom: &api.ValueFromSource{ConfigMapKeyRef: &api.ConfigMapKeySelector{Name: "c", Key: "k"}}}}}}})},
		{name: "trigger with no type", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t"}}),
			wantErr: []string{"no trigger type"}},
		{name: "trigger with two types", sensor: testSensor(deps("a"), api.Trigger{Template: &api.TriggerTemplate{Name: "t", Log: &api.LogTrigger{}, HTTP: &api.HTTPTrigger{URL: "http://x"}}}),
			wantErr: []string{"several trigger types"}},
		{name: "conditionsReset", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.Template.ConditionsReset = []api.ConditionsResetCriteria{{ByTime: &api.ConditionsResetByTime{Cron: "0 * * * *", Timezone: "Europe/Paris"}}}
		}))},
		{name: "conditionsReset with a bad cron and zone", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.Template.ConditionsReset = []api.ConditionsResetCriteria{
				{ByTime: &api.ConditionsResetByTime{Cron: "61 * * * *"}},
				{ByTime: &api.ConditionsResetByTime{Cron: "0 0 * * *", Timezone: "Mars/Olympus"}},
			}
		})), wantErr: []string{`conditionsReset[0].byTime: cron: "61 * * * *"`, `conditionsReset[1].byTime: timezone: "Mars/Olympus"`}},
		{name: "dlqTrigger", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			dlq := logTrigger("dlq", "")
			tr.DlqTrigger = &dlq
		}))},
		{name: "dlqTrigger with a dlqTrigger", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			inner := logTrigger("inner", "")
			dlq := logTrigger("dlq", "")
			dlq.DlqTrigger = &inner
			tr.DlqTrigger = &dlq
		})), wantErr: []string{"dlqTrigger: dlqTrigger: a dlqTrigger cannot have a dlqTrigger of its own"}},
		{name: "rateLimit", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.RateLimit = &api.RateLimit{Unit: "Second", RequestsPerUnit: 1}
		}))},
		{name: "rateLimit with a bad unit", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.RateLimit = &api.RateLimit{Unit: "Day", RequestsPerUnit: 1}
		})), wantErr: []string{`rateLimit.unit: "Day"`}},
		{name: "policy.status", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.Policy = &api.TriggerPolicy{Status: &api.StatusPolicy{Allow: []int32{200, 404}}}
		}))},
		{name: "policy.k8s on a log trigger", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.Policy = &api.TriggerPolicy{K8s: &api.K8sResourcePolicy{Labels: map[string]string{"a": "b"}}}
		})), wantErr: []string{"policy.k8s: set on a log trigger; it applies to k8s and argoWorkflow triggers only"}},
		{name: "policy.k8s without labels", sensor: testSensor(deps("a"), api.Trigger{
			Template: &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{Source: &api.ArtifactLocation{File: &api.FileArtifact{Path: "/x.yaml"}}}},
			Policy:   &api.TriggerPolicy{K8s: &api.K8sResourcePolicy{}}}),
			wantErr: []string{"policy.k8s: labels: missing"}},

		{name: "retryStrategy duration as a string", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.RetryStrategy = &api.Backoff{Duration: json.RawMessage(`"3s"`), Steps: 3}
		}))},
		{name: "retryStrategy duration in nanoseconds", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.RetryStrategy = &api.Backoff{Duration: json.RawMessage(`1000000000`)}
		}))},
		{name: "retryStrategy with a bad duration", sensor: testSensor(deps("a"), modify(logTrigger("t", ""), func(tr *api.Trigger) {
			tr.RetryStrategy = &api.Backoff{Duration: json.RawMessage(`"soon"`)}
		})), wantErr: []string{"spec.triggers[0] (t).retryStrategy", "duration", `"soon"`}},

		{name: "every problem is reported at once",
			sensor: testSensor(withFilters(&api.EventDependencyFilter{Exprs: []api.ExprFilter{{Expr: "x"}}}),
				api.Trigger{Template: &api.TriggerTemplate{Name: "k", OpenWhisk: json.RawMessage(`{}`)}},
				logTrigger("l", "a || zz")),
			wantErr: []string{"filters.exprs", `trigger type "openWhisk"`, `"zz"`}, notSupported: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.sensor)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Check: unexpected error %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check passed; want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), "sensor ns/s") {
				t.Errorf("error %q does not name the sensor", err)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != tc.notSupported {
				t.Errorf("errors.Is(err, api.ErrNotSupported) = %v; want %v (err: %v)", got, tc.notSupported, err)
			}
		})
	}
}

// TestCompileWiring checks what compile builds: which dependencies fire which trigger.
func TestCompileWiring(t *testing.T) {
	d := testDep("b")
	d.Filters = &api.EventDependencyFilter{Data: []api.DataFilter{str("k", "", "v")}, DataLogicalOperator: "or"}
	s := testSensor(append(deps("a"), d, testDep("c")),
		logTrigger("either", "b || a"),
		logTrigger("only-c", "c"))
	s.Metadata.Namespace = ""
	c, err := compile(s)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	if c.namespace != "default" || c.name != "s" {
		t.Errorf("compiled %s/%s; want default/s", c.namespace, c.name)
	}
	fires := func(dep string) []string {
		var names []string
		for _, tr := range c.deps[dep].triggers {
			names = append(names, tr.name)
		}
		return names
	}
	for dep, want := range map[string][]string{"a": {"either"}, "b": {"either"}, "c": {"only-c"}} {
		if got := fires(dep); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("dependency %s fires %v; want %v", dep, got, want)
		}
	}
	if !c.deps["b"].dataOr || len(c.deps["b"].data) != 1 {
		t.Errorf("dependency b: dataOr=%v, %d data filters; want or and 1", c.deps["b"].dataOr, len(c.deps["b"].data))
	}
	if c.deps["a"].dataOr {
		t.Errorf("dependency a: dataOr set without filters")
	}
	if len(c.triggers) != 2 {
		t.Errorf("%d compiled triggers; want 2", len(c.triggers))
	}
}

func TestRoute(t *testing.T) {
	for _, c := range []struct {
		expr  string
		deps  string
		join  bool
		names []string
	}{
		{"c || a || c", "a,c", false, []string{"a", "b", "c"}},
		{"dep-1||dep_2", "dep-1,dep_2", false, []string{"dep-1", "dep_2"}},
		{"", "a,b", true, []string{"a", "b"}},
		{"a && b", "a,b", true, []string{"a", "b", "c"}},
		// Once any dependency needs company, every event of the trigger goes through the join.
		{"a || (b && c)", "a,b,c", true, []string{"a", "b", "c"}},
	} {
		cond, err := parseConditions(c.expr, c.names)
		if err != nil {
			t.Fatal(err)
		}
		deps, join := route(cond)
		if strings.Join(deps, ",") != c.deps || join != c.join {
			t.Errorf("%q: deps %v join %v; want %s join %v", c.expr, deps, join, c.deps, c.join)
		}
	}
}

func TestCompileRetry(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		name    string
		in      *api.Backoff
		want    *trigger.Retry
		wantErr string
	}{
		{name: "none", in: nil, want: nil},
		{name: "empty strategy: defaults", in: &api.Backoff{Steps: 1}, want: &trigger.Retry{Steps: 1, Duration: time.Second, Factor: 1}},
		{name: "duration as a string", in: &api.Backoff{Duration: raw(`"3s"`), Steps: 3}, want: &trigger.Retry{Steps: 3, Duration: 3 * time.Second, Factor: 1}},
		{name: "duration as a compound string", in: &api.Backoff{Duration: raw(`"1m30s"`), Steps: 2}, want: &trigger.Retry{Steps: 2, Duration: 90 * time.Second, Factor: 1}},
		{name: "duration as integer nanoseconds", in: &api.Backoff{Duration: raw(`1000000000`), Steps: 2}, want: &trigger.Retry{Steps: 2, Duration: time.Second, Factor: 1}},
		{name: "factor as a number", in: &api.Backoff{Duration: raw(`"1s"`), Factor: raw(`2`), Steps: 4}, want: &trigger.Retry{Steps: 4, Duration: time.Second, Factor: 2}},
		{name: "factor as a string", in: &api.Backoff{Factor: raw(`"1.5"`), Steps: 2}, want: &trigger.Retry{Steps: 2, Duration: time.Second, Factor: 1.5}},
		{name: "jitter", in: &api.Backoff{Jitter: raw(`0.2`), Steps: 2}, want: &trigger.Retry{Steps: 2, Duration: time.Second, Factor: 1, Jitter: 0.2}},
		{name: "bad duration", in: &api.Backoff{Duration: raw(`"soon"`)}, wantErr: "duration"},
		{name: "duration with a bad unit", in: &api.Backoff{Duration: raw(`"3 parsecs"`)}, wantErr: "duration"},
		{name: "zero factor", in: &api.Backoff{Factor: raw(`0`)}, wantErr: "factor"},
		{name: "bad factor", in: &api.Backoff{Factor: raw(`"double"`)}, wantErr: "factor"},
		{name: "bad jitter", in: &api.Backoff{Jitter: raw(`"lots"`)}, wantErr: "jitter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := compileRetry(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("compileRetry error = %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("compileRetry: %v", err)
			}
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Fatalf("compileRetry = %+v; want %+v", got, tc.want)
			}
		})
	}
}

// TestCompileRetryDefaultSteps: Argo's Convert2WaitBackoff (pkg/shared/util/retry.go) uses
// DefaultBackoff.Steps = 5 when a retryStrategy is given without steps (only a trigger with no
// retryStrategy at all gets {Steps: 1}).
func TestCompileRetryDefaultSteps(t *testing.T) {
	got, err := compileRetry(&api.Backoff{Duration: json.RawMessage(`"3s"`)})
	if err != nil {
		t.Fatal(err)
	}
	if got.Steps != 5 {
		t.Errorf("steps = %d; want 5 as in Argo", got.Steps)
	}
}
