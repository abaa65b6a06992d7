package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/jsonw"
)

// LogRequest is the rendered body of a log trigger: the events that fired it.
type LogRequest struct {
	IntervalSeconds uint64     `json:"intervalSeconds,omitempty"`
	Events          []LogEvent `json:"events"`
}

// LogEvent is one event printed by a log trigger.
type LogEvent struct {
	Dependency string `json:"dependency"`
	Data       string `json:"data"`
}

func init() {
	Register("log", Spec{
		Summary: "Prints the events that fired the trigger to the log.",
		Render:  renderLog,
		// The interval is counted in the executor's memory.
		OneMember: func(t *api.TriggerTemplate, params []api.TriggerParameter) bool {
			return t.Log.IntervalSeconds > 0 || setsField(params, "log.intervalSeconds")
		},
	}, func(env Env) (Executor, error) {
		logger := env.Logger
		if logger == nil {
			logger = slog.Default()
		}
		return &logExecutor{logger: logger, last: map[string]time.Time{}}, nil
	})
}

// renderLog writes the LogRequest as json.Marshal would, by hand: a log trigger renders for
// every firing, and the events' data made reflection its costliest step.
func renderLog(in RenderInput) (json.RawMessage, error) {
	size := 32
	deps := make([]string, 0, len(in.Events))
	for d, e := range in.Events {
		deps = append(deps, d)
		size += len(d) + 2*len(e.Data()) + 32
	}
	slices.Sort(deps)
	b := make([]byte, 0, size)
	b = append(b, '{')
	if n := in.Template.Log.IntervalSeconds; n != 0 {
		b = append(b, `"intervalSeconds":`...)
		b = strconv.AppendUint(b, n, 10)
		b = append(b, ',')
	}
	b = append(b, `"events":`...)
	if len(deps) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
	}
	for i, d := range deps {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"dependency":`...)
		b = jsonw.AppendString(b, d)
		b = append(b, `,"data":`...)
		b = jsonw.AppendBytes(b, in.Events[d].Data())
		b = append(b, '}')
	}
	if len(deps) > 0 {
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

type logExecutor struct {
	logger *slog.Logger
	mu     sync.Mutex
	last   map[string]time.Time // by trigger (TriggerPath), for intervalSeconds
}

func (x *logExecutor) Execute(_ context.Context, cmd *Command) error {
	var r LogRequest
	if err := json.Unmarshal(cmd.Spec, &r); err != nil {
		return fmt.Errorf("log trigger: malformed command %s: %w", cmd.ID, err)
	}
	if r.IntervalSeconds > 0 {
		// Argo's intervalSeconds: print at most once per interval per trigger.
		trig := cmd.TriggerPath()
		x.mu.Lock()
		now := time.Now()
		if now.Sub(x.last[trig]) < time.Duration(r.IntervalSeconds)*time.Second {
			x.mu.Unlock()
			return nil
		}
		x.last[trig] = now
		x.mu.Unlock()
	}
	refs := make(map[string]EventRef, len(cmd.Events))
	for _, ref := range cmd.Events {
		refs[ref.Dependency] = ref
	}
	for _, e := range r.Events {
		ref := refs[e.Dependency]
		x.logger.Info("log trigger",
			"sensor", cmd.Sensor, "trigger", cmd.Trigger, "dependency", e.Dependency,
			"eventSource", ref.EventSource, "event", ref.EventName, "eventID", ref.ID,
			"commandID", cmd.ID, "data", e.Data)
	}
	return nil
}
