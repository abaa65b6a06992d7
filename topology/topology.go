// Package topology is the one place where kevents declares its Kafka topics:
// their names, partition counts and configs. Every other package asks a
// *Topology for a topic name instead of spelling one.
//
// The topics, for a prefix p (default "kevents"):
//
//	p.src.<ns>.<eventsource>  events of one EventSource, as CloudEvents
//	p.matches                 stage 1 → stage 2: dependency events by join key
//	p.state                   join state, compacted, co-partitioned with p.matches
//	p.commands                rendered commands for the executor
//	p.executed                executor outcomes by command id, compacted,
//	                          co-partitioned with p.commands
//	p.dlq                     commands that failed after their retries
//	p.sources                 pull-source ownership and calendar last fires, compacted
//
// Co-partitioned means equal partition counts: partition i of p.state holds
// the state for the keys of partition i of p.matches, so a member restores
// exactly the state it needs for the partitions it is assigned.
//
// Apply creates what is missing and aligns configs; Describe reports what a
// cluster has and whether kevents can run on it. Neither ever adds partitions.
package topology

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults used by New when no option overrides them.
const (
	DefaultPrefix            = "kevents"
	DefaultPartitions  int32 = 12
	DefaultReplication int16 = -1 // the broker's default.replication.factor
)

// MaxRecordBytes is the largest record kevents writes to a topic that carries whole events
// (source topics, matches, commands, dlq): an event with a body at Argo's default 1 MiB webhook
// limit, its headers and encoding. Producers set their batch limit to it and those topics their
// max.message.bytes; a larger event is refused as too large, never retried.
const MaxRecordBytes = 4 << 20

// Sentinel errors. Errors returned by this package wrap one of these and add
// the topic or setting and the values involved; branch with errors.Is.
var (
	// ErrInvalidOption: New was given an option value it cannot use.
	ErrInvalidOption = errors.New("topology: invalid option")
	// ErrInvalidTopicName: a source topic name passed to Apply or Describe
	// is not a legal Kafka topic name.
	ErrInvalidTopicName = errors.New("topology: invalid topic name")
	// ErrMissingTopic: a topic kevents needs does not exist.
	ErrMissingTopic = errors.New("topology: missing topic")
	// ErrNotCoPartitioned: two topics that must have equal partition counts
	// (matches and state, commands and executed) do not.
	ErrNotCoPartitioned = errors.New("topology: topics not co-partitioned")
	// ErrTooFewPartitions: an existing topic has fewer partitions than
	// configured. Apply reports it and leaves the topic alone: adding
	// partitions changes which partition a key hashes to, which would
	// separate a key's state from its matches and reorder its commands.
	ErrTooFewPartitions = errors.New("topology: too few partitions")
)

// Retention and compaction settings. Kafka takes them as strings of
// milliseconds; these are the durations they come from.
const (
	day = 24 * time.Hour

	eventRetention = 7 * day  // source topics, matches, commands
	dlqRetention   = 30 * day // dead letters wait for a human

	// executed is compacted for dedupe but its keys (command ids) never
	// repeat, so compaction alone would keep every outcome forever and make
	// each executor restore read all of history. Deleting after 14 days
	// keeps an outcome as long as its command can be redelivered: commands
	// are kept 7 days, and a commands segment can outlive retention.ms by up
	// to its segment.ms (Kafka's default, 7 days).
	executedRetention = 14 * day

	// Kafka never compacts the active segment, and by default a segment
	// rolls only after 7 days, so without this a restore would read a
	// week of superseded values.
	compactSegment = time.Hour
	// Compact once 10% of the log is superseded (Kafka's default is 50%):
	// these topics are read in full on every rebalance, so a smaller dirty
	// share means faster restores, for a little more cleaner work.
	compactDirtyRatio = "0.1"

	// sourcesPartitions is the partition count of p.sources, capped by the
	// configured partitions. Pull sources (calendar, resource watch, ...)
	// are few, so more partitions buy nothing; 6 still spreads them over up
	// to 6 members and divides evenly among 1, 2, 3 or 6, and restoring
	// 6 tiny compacted partitions is instant.
	sourcesPartitions int32 = 6
)

// maxTopicLen is Kafka's limit on topic name length.
const maxTopicLen = 249

// Topic name suffixes, after "<prefix>.".
const (
	sfxSource   = "src"
	sfxMatches  = "matches"
	sfxState    = "state"
	sfxCommands = "commands"
	sfxExecuted = "executed"
	sfxDLQ      = "dlq"
	sfxSources  = "sources"

	longestSuffix = "." + sfxExecuted
)

// Opt configures a Topology; see New.
type Opt interface{ apply(*Topology) }

type opt struct{ fn func(*Topology) }

func (o opt) apply(t *Topology) { o.fn(t) }

// Prefix sets the prefix of every topic name, overriding "kevents". It must
// be 1 to 240 characters of [a-zA-Z0-9._-], so that every internal topic name
// is a legal Kafka topic name. Distinct prefixes let several kevents
// installations share one cluster.
func Prefix(p string) Opt { return opt{func(t *Topology) { t.prefix = p }} }

// Partitions sets the partition count of source topics, matches, state,
// commands, executed and dlq, overriding 12. It bounds how many members of
// each pool can work in parallel, and it cannot be raised later without
// recreating topics (see ErrTooFewPartitions), so choose for the largest
// pool you expect. It must be at least 1.
func Partitions(n int32) Opt { return opt{func(t *Topology) { t.partitions = n }} }

// ReplicationFactor sets the replication factor of every topic, overriding
// -1, which lets the broker use its default.replication.factor. It must be
// -1 or at least 1.
func ReplicationFactor(rf int16) Opt { return opt{func(t *Topology) { t.rf = rf }} }

// Topology names kevents' topics and knows their specs. It is immutable and
// safe for concurrent use.
type Topology struct {
	prefix     string
	partitions int32
	rf         int16
}

// New returns a Topology with the defaults overridden by opts, or an error
// wrapping ErrInvalidOption that names the first bad setting and its value.
func New(opts ...Opt) (*Topology, error) {
	t := &Topology{
		prefix:     DefaultPrefix,
		partitions: DefaultPartitions,
		rf:         DefaultReplication,
	}
	for _, o := range opts {
		o.apply(t)
	}
	if err := t.validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// validate checks every setting once all options are applied, so the result
// does not depend on option order.
func (t *Topology) validate() error {
	if err := checkTopicChars(t.prefix); err != nil {
		return fmt.Errorf("%w: Prefix %q: %v", ErrInvalidOption, t.prefix, err)
	}
	// The prefix must leave room for the longest internal topic name.
	if limit := maxTopicLen - len(longestSuffix); len(t.prefix) > limit {
		return fmt.Errorf("%w: Prefix %q: %d characters, at most %d fit before %q in Kafka's %d-character topic name limit",
			ErrInvalidOption, t.prefix, len(t.prefix), limit, longestSuffix, maxTopicLen)
	}
	if t.partitions < 1 {
		return fmt.Errorf("%w: Partitions %d: must be at least 1", ErrInvalidOption, t.partitions)
	}
	if t.rf != -1 && t.rf < 1 {
		return fmt.Errorf("%w: ReplicationFactor %d: must be -1 (broker default) or at least 1", ErrInvalidOption, t.rf)
	}
	return nil
}

// Prefix returns the topic name prefix.
func (t *Topology) Prefix() string { return t.prefix }

func (t *Topology) name(suffix string) string { return t.prefix + "." + suffix }

// SourceTopic returns the topic of one EventSource:
// "<prefix>.src.<namespace>.<eventSource>", with namespace "default" when
// namespace is empty. Names are Kubernetes object names, whose characters
// are all legal in topic names, and since a namespace holds no '.' the name
// maps back to one (namespace, eventSource). SourceTopic does not validate;
// Apply and Describe reject a name Kafka would not accept.
func (t *Topology) SourceTopic(namespace, eventSource string) string {
	if namespace == "" {
		namespace = "default"
	}
	return t.prefix + "." + sfxSource + "." + namespace + "." + eventSource
}

// Matches returns "<prefix>.matches": match records from stage 1, keyed
// "<sensor>/<trigger>/<correlation key>", input of the join.
func (t *Topology) Matches() string { return t.name(sfxMatches) }

// State returns "<prefix>.state": the compacted join state, co-partitioned
// with Matches.
func (t *Topology) State() string { return t.name(sfxState) }

// Commands returns "<prefix>.commands": rendered commands for the executor.
func (t *Topology) Commands() string { return t.name(sfxCommands) }

// Executed returns "<prefix>.executed": the compacted executor outcomes by
// command id, co-partitioned with Commands.
func (t *Topology) Executed() string { return t.name(sfxExecuted) }

// DLQ returns "<prefix>.dlq": commands that failed after their retries.
func (t *Topology) DLQ() string { return t.name(sfxDLQ) }

// Sources returns "<prefix>.sources": a small compacted topic whose
// partition assignment decides which member runs each pull source, and
// which holds calendar last-fire times.
func (t *Topology) Sources() string { return t.name(sfxSources) }

// coPartitioned lists the topic pairs that must have equal partition counts.
func (t *Topology) coPartitioned() [][2]string {
	return [][2]string{
		{t.Matches(), t.State()},
		{t.Commands(), t.Executed()},
	}
}

// partners maps each co-partitioned topic to the other topic of its pair.
func (t *Topology) partners() map[string]string {
	m := make(map[string]string)
	for _, p := range t.coPartitioned() {
		m[p[0]], m[p[1]] = p[1], p[0]
	}
	return m
}

// TopicSpec is what kevents wants one topic to be.
type TopicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16             // -1: the broker default
	Configs           map[string]string // topic configs kevents sets; others are left to the cluster
	Purpose           string            // one line for humans, shown by describe
}

// Topics returns the specs of the internal topics followed by one spec per
// distinct source topic given (names from SourceTopic), in that order. The
// specs are fresh copies that callers may modify. A name given twice, or
// given that is also an internal topic, appears once.
func (t *Topology) Topics(sourceTopics ...string) []TopicSpec {
	var (
		deleteAfter = func(d time.Duration) map[string]string {
			return map[string]string{"cleanup.policy": "delete", "retention.ms": millis(d)}
		}
		// Topics that carry whole events (sources, matches, commands, dlq) accept records up
		// to MaxRecordBytes: Kafka's 1 MB default is smaller than an event with a 1 MiB body.
		carriesEvents = func(d time.Duration) map[string]string {
			c := deleteAfter(d)
			c["max.message.bytes"] = strconv.Itoa(MaxRecordBytes)
			return c
		}
		compacted = func() map[string]string {
			return map[string]string{
				"cleanup.policy":            "compact",
				"segment.ms":                millis(compactSegment),
				"min.cleanable.dirty.ratio": compactDirtyRatio,
			}
		}
		n = t.partitions
	)
	executed := compacted()
	executed["cleanup.policy"] = "compact,delete"
	executed["retention.ms"] = millis(executedRetention)

	specs := []TopicSpec{
		{t.Matches(), n, t.rf, carriesEvents(eventRetention), "stage 1 → join: dependency events keyed <sensor>/<trigger>/<correlation key>"},
		{t.State(), n, t.rf, compacted(), "join state per key; partition i is restored before " + t.Matches() + " partition i"},
		{t.Commands(), n, t.rf, carriesEvents(eventRetention), "rendered trigger commands with idempotency ids, for the executor"},
		{t.Executed(), n, t.rf, executed, "executor outcomes by command id: dedupe, audit"},
		{t.DLQ(), n, t.rf, carriesEvents(dlqRetention), "commands that failed after their retries, with the error"},
		{t.Sources(), min(sourcesPartitions, n), t.rf, compacted(), "pull-source ownership by partition, calendar last-fire times"},
	}
	seen := make(map[string]bool, len(specs)+len(sourceTopics))
	for _, s := range specs {
		seen[s.Name] = true
	}
	for _, name := range sourceTopics {
		if seen[name] {
			continue
		}
		seen[name] = true
		specs = append(specs, TopicSpec{name, n, t.rf, carriesEvents(eventRetention), t.sourcePurpose(name)})
	}
	return specs
}

func (t *Topology) sourcePurpose(name string) string {
	rest, ok := strings.CutPrefix(name, t.prefix+"."+sfxSource+".")
	if ns, es, found := strings.Cut(rest, "."); ok && found {
		return "CloudEvents of EventSource " + ns + "/" + es
	}
	return "CloudEvents of an EventSource"
}

func millis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// checkTopicChars reports whether s is a non-empty string of the characters
// Kafka allows in topic names.
func checkTopicChars(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q at byte %d: only [a-zA-Z0-9._-] are legal in Kafka topic names", rune(c), i)
		}
	}
	return nil
}

// checkTopicName returns an error wrapping ErrInvalidTopicName if Kafka
// would reject name.
func checkTopicName(name string) error {
	err := checkTopicChars(name)
	switch {
	case err != nil:
	case name == "." || name == "..":
		err = errors.New(`"." and ".." are reserved`)
	case len(name) > maxTopicLen:
		err = fmt.Errorf("%d characters, Kafka allows at most %d", len(name), maxTopicLen)
	}
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidTopicName, name, err)
	}
	return nil
}

// checkSpecs validates every spec's name before any request is sent.
func checkSpecs(specs []TopicSpec) error {
	var errs []error
	for _, s := range specs {
		if err := checkTopicName(s.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
