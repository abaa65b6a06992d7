package sensor

import (
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/api"
)

// TestAccept covers how a dependency combines its transform and filter kinds
// (filtersLogicalOperator), as Argo's filterEvent does.
func TestAccept(t *testing.T) {
	ev := cloudevents.New()
	ev.SetID("1")
	ev.SetSource("es")
	ev.SetSubject("e")
	ev.SetType("webhook")
	ev.SetTime(time.Date(2026, 1, 2, 10, 30, 0, 0, time.UTC))
	_ = ev.SetData("application/json", []byte(`{"a":"x","n":5}`))

	dataX := []api.DataFilter{{Path: "a", Type: "string", Value: []string{"x"}}}
	dataY := []api.DataFilter{{Path: "a", Type: "string", Value: []string{"y"}}}
	dataMissing := []api.DataFilter{{Path: "nope", Type: "string", Value: []string{"x"}}}
	exprBig := []api.ExprFilter{{Expr: "n > 3", Fields: []api.PayloadField{{Path: "n", Name: "n"}}}}
	exprSmall := []api.ExprFilter{{Expr: "n < 3", Fields: []api.PayloadField{{Path: "n", Name: "n"}}}}

	cases := []struct {
		name      string
		op        string
		filters   *api.EventDependencyFilter
		transform *api.EventDependencyTransformer
		want      bool
		wantErr   bool
	}{
		{name: "no filters", want: true},
		{name: "and: both pass", filters: &api.EventDependencyFilter{Data: dataX, Exprs: exprBig}, want: true},
		{name: "and: one fails", filters: &api.EventDependencyFilter{Data: dataX, Exprs: exprSmall}, want: false},
		{name: "or: one passes", op: "or", filters: &api.EventDependencyFilter{Data: dataY, Exprs: exprBig}, want: true},
		{name: "or: none passes", op: "or", filters: &api.EventDependencyFilter{Data: dataY, Exprs: exprSmall}, want: false},
		{name: "and: an error fails", filters: &api.EventDependencyFilter{Data: dataMissing, Exprs: exprBig}, wantErr: true},
		{name: "or: an error fails even when another kind passes (Argo)", op: "or", filters: &api.EventDependencyFilter{Data: dataMissing, Exprs: exprBig}, wantErr: true},
		{name: "context", filters: &api.EventDependencyFilter{Context: &api.EventContext{Type: "webhook", Source: "es"}}, want: true},
		{name: "context mismatch", filters: &api.EventDependencyFilter{Context: &api.EventContext{Type: "calendar"}}, want: false},
		{name: "time window holds the event", filters: &api.EventDependencyFilter{Time: &api.TimeFilter{Start: "10:00:00", Stop: "11:00:00"}}, want: true},
		{name: "time window misses the event", filters: &api.EventDependencyFilter{Time: &api.TimeFilter{Start: "11:00:00", Stop: "12:00:00"}}, want: false},
		{name: "script", filters: &api.EventDependencyFilter{Script: `return event.a == "x"`}, want: true},
		{name: "or: script passes alone", op: "or", filters: &api.EventDependencyFilter{Data: dataY, Script: `return event.n == 5`}, want: true},
		{name: "filters see the transformed event", transform: &api.EventDependencyTransformer{JQ: `.a = "y"`},
			filters: &api.EventDependencyFilter{Data: dataY}, want: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := testDep("d")
			d.Filters, d.Transform, d.FiltersLogicalOperator = c.filters, c.transform, c.op
			s, err := compile(testSensor([]api.EventDependency{d}, logTrigger("t", "")))
			if err != nil {
				t.Fatal(err)
			}
			out, ok, err := s.deps["d"].accept(&ev)
			if (err != nil) != c.wantErr || ok != c.want {
				t.Fatalf("accept = %v, %v; want %v (error %v)", ok, err, c.want, c.wantErr)
			}
			if c.transform != nil && string(ev.Data()) != `{"a":"x","n":5}` {
				t.Errorf("the transform changed the input event: %s", ev.Data())
			}
			if ok && c.transform != nil && out == &ev {
				t.Error("the transformed event must be a copy")
			}
		})
	}
}
