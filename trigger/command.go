// Package trigger is the executor side of kevents: the command a sensor emits, the registry of
// trigger types, and the pool that executes commands from the commands topic.
package trigger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
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
	// DLQ is the trigger's dlqTrigger, rendered from the same events: the executor issues it as
	// a command of its own when this one fails after its retries.
	DLQ       *Command  `json:"dlq,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
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
}

// Key is the Kafka record key of a command: commands of one trigger share a partition so the
// executor runs them in order.
func (c *Command) Key() string { return c.Namespace + "/" + c.Sensor + "/" + c.Trigger }

// CommandID hashes the sensor, the trigger and the ids of the input events (in dependency
// order) into the command's idempotency key, so that re-processing the same events after a
// crash yields the same id.
func CommandID(namespace, sensor, trigger string, events []EventRef) string {
	refs := events
	if !sort.SliceIsSorted(refs, func(i, j int) bool { return refs[i].Dependency < refs[j].Dependency }) {
		refs = append([]EventRef(nil), events...)
		sort.Slice(refs, func(i, j int) bool { return refs[i].Dependency < refs[j].Dependency })
	}
	h := sha256.New()
	for _, s := range []string{namespace, "\x00", sensor, "\x00", trigger} {
		io.WriteString(h, s)
	}
	for _, r := range refs {
		for _, s := range []string{"\x00", r.Dependency, "=", r.EventSource, "/", r.EventName, "/", r.ID} {
			io.WriteString(h, s)
		}
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}
