package sensor

import (
	"fmt"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/api"
)

// matchContext applies a `context` filter with Argo's filterContext semantics: type, subject,
// source and datacontenttype are compared for exact (case-sensitive) equality, each only when
// the filter sets it; an empty field means any value. The filter's id, specversion and time
// are never compared, as in Argo. A nil filter passes every event; a nil event passes no
// filter.
func matchContext(want *api.EventContext, e *cloudevents.Event) bool {
	if want == nil {
		return true
	}
	if e == nil {
		return false
	}
	return (want.Type == "" || want.Type == e.Type()) &&
		(want.Subject == "" || want.Subject == e.Subject()) &&
		(want.Source == "" || want.Source == e.Source()) &&
		(want.DataContentType == "" || want.DataContentType == e.DataContentType())
}

// checkContextFilter is Argo's validation of a `context` filter, for load time: it must set at
// least one of the fields matchContext compares, since one that sets none passes every event.
// The error names path and the fields.
func checkContextFilter(path string, want *api.EventContext) error {
	if want == nil {
		return nil
	}
	if want.Type == "" && want.Subject == "" && want.Source == "" && want.DataContentType == "" {
		return fmt.Errorf("%s: sets none of type, subject, source, datacontenttype; the context filter compares only these", path)
	}
	return nil
}
