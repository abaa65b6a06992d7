// Package trigger is the executor side of kevents: the command a sensor emits, the registry of
// trigger types, and the pool that executes commands from the commands topic.
package trigger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/kevents/kevents/internal/jsonw"
)

// Command is one trigger execution, fully rendered by the sensor: the executor needs nothing
// but the command (and secrets, which commands carry only as references).
type Command struct {
	// ID is the idempotency key: a hash of sensor, trigger and the input event ids (see
	// CommandID). A redelivered command has the same ID.
	ID        string     `json:"id"`
	Namespace string     `json:"namespace"`
	Sensor    string     `json:"sensor"`
	Trigger   string     `json:"trigger"`
	Type      string     `json:"type"` // trigger type: "http", "log", ...
	Events    []EventRef `json:"events"`
	// Spec is the type's rendered request (HTTPRequest for "http", LogRequest for "log").
	Spec      json.RawMessage `json:"spec"`
	Retry     *Retry          `json:"retry,omitempty"`
	RateLimit *RateLimit      `json:"rateLimit,omitempty"`
	// AllowStatus lists the HTTP statuses that count as success (Argo's policy.status.allow);
	// empty means 2xx.
	AllowStatus []int `json:"allowStatus,omitempty"`
	// LabelPolicy is Argo's policy.k8s, for the k8s and argoWorkflow types.
	LabelPolicy *LabelPolicy `json:"labelPolicy,omitempty"`
	// Ordered commands are keyed by their trigger (see Key and Ordered).
	Ordered bool `json:"ordered,omitempty"`
	// DLQ is the trigger's dlqTrigger, rendered from the same events: the executor issues it as
	// a command of its own when this one fails after its retries.
	DLQ       *Command  `json:"dlq,omitempty"`
	CreatedAt time.Time `json:"createdAt"`

	// partition is the commands partition the command was read from; the executed partition
	// of its outcome is the same.
	partition int32
}

// ErrTerminal marks an error that no retry can fix (a malformed resource, a target that rejected
// the request as invalid): the executor stops retrying and sends the command to the DLQ at once.
var ErrTerminal = errors.New("terminal")

// Terminal wraps err as terminal; errors.Is(err, ErrTerminal) holds for the result.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w (%w: not retried)", err, ErrTerminal)
}

// RateLimit caps how often one trigger's commands run: Requests per Per, without bursts.
type RateLimit struct {
	Requests int           `json:"requests"`
	Per      time.Duration `json:"per"`
}

// EventRef names one input event of a command, for logs and audit.
type EventRef struct {
	Dependency  string    `json:"dependency"`
	ID          string    `json:"id"`
	EventSource string    `json:"eventSource"`
	EventName   string    `json:"eventName"`
	Time        time.Time `json:"time"`
}

// Retry is a trigger's retryStrategy, resolved to durations.
type Retry struct {
	Steps    int           `json:"steps"`
	Duration time.Duration `json:"duration"`
	Factor   float64       `json:"factor"`
	// Jitter adds up to Jitter times each wait, at random, as Kubernetes' wait.Backoff does
	// (Argo's retryStrategy is one), so retries of many commands spread out.
	Jitter float64 `json:"jitter,omitempty"`
}

// jittered returns wait plus up to r.Jitter times wait, at random.
func (r *Retry) jittered(wait time.Duration) time.Duration {
	if r == nil || r.Jitter <= 0 {
		return wait
	}
	return wait + time.Duration(rand.Float64()*r.Jitter*float64(wait))
}

// Key is the Kafka record key of a command, and the executor's unit of order: commands with one
// key run one after another. An ordered command is keyed by its trigger (TriggerPath), so the
// trigger's commands share a partition and one member runs them in order. Any other command is
// keyed by its id: a busy trigger's commands spread over the partitions and members and run
// concurrently, and a redelivered command still lands in the partition of its first delivery,
// where the executor knows whether it finished.
func (c *Command) Key() string { return string(c.AppendKey(nil)) }

// AppendKey appends the command's record key, Key, to b.
func (c *Command) AppendKey(b []byte) []byte {
	if !c.Ordered {
		return append(b, c.ID...)
	}
	return c.appendTriggerPath(b)
}

// TriggerPath names the command's trigger: "<namespace>/<sensor>/<trigger>".
func (c *Command) TriggerPath() string { return string(c.appendTriggerPath(nil)) }

func (c *Command) appendTriggerPath(b []byte) []byte {
	return append(append(append(append(append(b, c.Namespace...), '/'), c.Sensor...), '/'), c.Trigger...)
}

// CommandID hashes the sensor, the trigger and the ids of the input events (in dependency
// order) into the command's idempotency key, so that re-processing the same events after a
// crash yields the same id.
func CommandID(namespace, sensor, trigger string, events []EventRef) string {
	refs := events
	if !sort.SliceIsSorted(refs, func(i, j int) bool { return refs[i].Dependency < refs[j].Dependency }) {
		refs = append([]EventRef(nil), events...)
		sort.Slice(refs, func(i, j int) bool { return refs[i].Dependency < refs[j].Dependency })
	}
	buf := make([]byte, 0, 256)
	buf = append(append(append(append(append(buf, namespace...), 0), sensor...), 0), trigger...)
	for _, r := range refs {
		buf = append(append(buf, 0), r.Dependency...)
		buf = append(append(buf, '='), r.EventSource...)
		buf = append(append(buf, '/'), r.EventName...)
		buf = append(append(buf, '/'), r.ID...)
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:16])
}

// JSONSize estimates the length of AppendJSON's output, so that callers size its buffer once:
// the fixed part, the strings and the spec, and room for the optional parts when set.
func (c *Command) JSONSize() int {
	n := 140 + len(c.ID) + len(c.Namespace) + len(c.Sensor) + len(c.Trigger) + len(c.Type) + len(c.Spec)
	for _, e := range c.Events {
		n += 110 + len(e.Dependency) + len(e.ID) + len(e.EventSource) + len(e.EventName)
	}
	if c.hasOptional() {
		n += 256
	}
	if c.Ordered {
		n += len(`,"ordered":true`)
	}
	if c.DLQ != nil {
		n += 8 + c.DLQ.JSONSize()
	}
	return n
}

// AppendJSON appends the command as JSON, the document json.Marshal would write. Written by hand
// for the sensor's hot path: json.Marshal re-validates and compacts the embedded spec, and with
// reflection this was a good share of the sensor's work per event. The spec must be valid JSON,
// as every Render produces it.
func (c *Command) AppendJSON(b []byte) []byte {
	str := func(name, v string) {
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = jsonw.AppendString(b, v)
	}
	b = append(b, `{"id":`...)
	b = jsonw.AppendString(b, c.ID)
	str("namespace", c.Namespace)
	str("sensor", c.Sensor)
	str("trigger", c.Trigger)
	str("type", c.Type)
	b = append(b, `,"events":`...)
	if c.Events == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
	}
	for i, e := range c.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"dependency":`...)
		b = jsonw.AppendString(b, e.Dependency)
		str("id", e.ID)
		str("eventSource", e.EventSource)
		str("eventName", e.EventName)
		b = append(b, `,"time":"`...)
		b = jsonw.AppendTime(b, e.Time)
		b = append(b, '"', '}')
	}
	if c.Events != nil {
		b = append(b, ']')
	}
	b = append(b, `,"spec":`...)
	if len(c.Spec) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, c.Spec...)
	}
	// The optional parts are small and rare: encoding/json is fine for them.
	if c.hasOptional() {
		b = c.appendOptionalJSON(b)
	}
	if c.Ordered {
		b = append(b, `,"ordered":true`...)
	}
	if c.DLQ != nil {
		b = append(b, `,"dlq":`...)
		b = c.DLQ.AppendJSON(b)
	}
	b = append(b, `,"createdAt":"`...)
	b = jsonw.AppendTime(b, c.CreatedAt)
	return append(b, '"', '}')
}

// hasOptional reports whether the command has a retry, rate limit, statuses or label policy.
func (c *Command) hasOptional() bool {
	return c.Retry != nil || c.RateLimit != nil || len(c.AllowStatus) > 0 || c.LabelPolicy != nil
}

func (c *Command) appendOptionalJSON(b []byte) []byte {
	for _, opt := range []struct {
		name string
		v    any
		set  bool
	}{{"retry", c.Retry, c.Retry != nil}, {"rateLimit", c.RateLimit, c.RateLimit != nil},
		{"allowStatus", c.AllowStatus, len(c.AllowStatus) > 0}, {"labelPolicy", c.LabelPolicy, c.LabelPolicy != nil}} {
		if opt.set {
			v, _ := json.Marshal(opt.v)
			b = append(b, ',', '"')
			b = append(b, opt.name...)
			b = append(b, '"', ':')
			b = append(b, v...)
		}
	}
	return b
}
