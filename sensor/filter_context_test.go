package sensor

import (
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/api"
)

// TestMatchContext covers Argo's context filter (filterContext in Argo Events v1.9.11): its
// own cases first, then each compared field, and the fields Argo ignores.
func TestMatchContext(t *testing.T) {
	e := cloudevents.New()
	e.SetID("1")
	e.SetSource("webhook-gateway")
	e.SetType("webhook")
	e.SetSubject("example-1")
	e.SetTime(time.Date(2024, 7, 15, 10, 0, 0, 0, time.UTC))
	if err := e.SetData("application/json", map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		want  *api.EventContext
		event *cloudevents.Event
		pass  bool
	}{
		// Argo's cases.
		{name: "different type", want: &api.EventContext{Type: "calendar"}, event: &e, pass: false},
		{name: "same type and source", want: &api.EventContext{Type: "webhook", Source: "webhook-gateway"}, event: &e, pass: true},
		{name: "no event", want: &api.EventContext{}, event: nil, pass: false},
		{name: "no filter", want: nil, event: &e, pass: true},
		{name: "no filter, no event", want: nil, event: nil, pass: true},

		// Each compared field.
		{name: "type", want: &api.EventContext{Type: "webhook"}, event: &e, pass: true},
		{name: "source", want: &api.EventContext{Source: "webhook-gateway"}, event: &e, pass: true},
		{name: "other source", want: &api.EventContext{Source: "calendar-gateway"}, event: &e, pass: false},
		{name: "subject", want: &api.EventContext{Subject: "example-1"}, event: &e, pass: true},
		{name: "other subject", want: &api.EventContext{Subject: "example-2"}, event: &e, pass: false},
		{name: "data content type", want: &api.EventContext{DataContentType: "application/json"}, event: &e, pass: true},
		{name: "other data content type", want: &api.EventContext{DataContentType: "text/plain"}, event: &e, pass: false},
		{name: "all four", want: &api.EventContext{Type: "webhook", Source: "webhook-gateway", Subject: "example-1", DataContentType: "application/json"}, event: &e, pass: true},
		{name: "all four, one differs", want: &api.EventContext{Type: "webhook", Source: "webhook-gateway", Subject: "example-2", DataContentType: "application/json"}, event: &e, pass: false},
		{name: "comparison is case-sensitive", want: &api.EventContext{Type: "Webhook"}, event: &e, pass: false},
		{name: "comparison is exact, not a pattern", want: &api.EventContext{Subject: "example-.*"}, event: &e, pass: false},
		{name: "no prefix match", want: &api.EventContext{Source: "webhook"}, event: &e, pass: false},
		{name: "empty filter passes any event", want: &api.EventContext{}, event: &e, pass: true},

		// Fields Argo never compares.
		{name: "id is ignored", want: &api.EventContext{Type: "webhook", ID: "other"}, event: &e, pass: true},
		{name: "specversion is ignored", want: &api.EventContext{Type: "webhook", SpecVersion: "0.3"}, event: &e, pass: true},
		{name: "time is ignored", want: &api.EventContext{Type: "webhook", Time: "2000-01-01T00:00:00Z"}, event: &e, pass: true},
		{name: "only ignored fields pass any event", want: &api.EventContext{ID: "other"}, event: &e, pass: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchContext(tt.want, tt.event); got != tt.pass {
				t.Fatalf("matchContext = %v; want %v", got, tt.pass)
			}
		})
	}
}

func TestMatchContextEventWithoutSubjectOrContentType(t *testing.T) {
	e := cloudevents.New()
	e.SetID("1")
	e.SetSource("s")
	e.SetType("t")
	if !matchContext(&api.EventContext{Type: "t"}, &e) {
		t.Error("type filter on an event without subject failed")
	}
	if matchContext(&api.EventContext{Subject: "x"}, &e) {
		t.Error("subject filter passed an event without subject")
	}
	if matchContext(&api.EventContext{DataContentType: "application/json"}, &e) {
		t.Error("datacontenttype filter passed an event without data")
	}
}

func TestCheckContextFilter(t *testing.T) {
	const p = "spec.dependencies[0] (d).filters.context"
	for _, ok := range []*api.EventContext{nil, {Type: "t"}, {Source: "s"}, {Subject: "x"}, {DataContentType: "application/json"}} {
		if err := checkContextFilter(p, ok); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []*api.EventContext{{}, {ID: "1"}, {SpecVersion: "1.0", Time: "2024-01-01T00:00:00Z"}} {
		err := checkContextFilter(p, bad)
		if err == nil || !strings.Contains(err.Error(), p+": sets none of type, subject, source, datacontenttype") {
			t.Errorf("%+v: error = %v", bad, err)
		}
	}
}
