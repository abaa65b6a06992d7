package sensor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/jsonw"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
)

// A record on the matches topic is one dependency's event for one trigger, routed by stage 1 to
// the partition of its join key: the value is the CloudEvent in JSON format, and headers name the
// trigger (headerTrigger) and the dependency (headerDependency), so stage 2 reads them without
// parsing the event.
const headerDependency = "kevents-dependency"

// joinRecord is a match record, decoded.
type joinRecord struct {
	Namespace  string          `json:"namespace"`
	Sensor     string          `json:"sensor"`
	Trigger    string          `json:"trigger"`
	Dependency string          `json:"dependency"`
	Event      json.RawMessage `json:"event"`
}

// joinMatch is a match on its way to stage 2, with the matches partition of its key.
type joinMatch struct {
	partition int32
	key       string
	jr        joinRecord
	// event is jr.Event decoded, for a match that did not go through the matches topic: if it
	// completes the condition, firing does not decode it again. Nil otherwise; never kept in
	// the join state.
	event *cloudevents.Event
}

// matchPartition places a join key as Kafka's default partitioner does (murmur2 of the key, its
// sign bit cleared, modulo the partitions), so members of different versions agree, and stage 1
// knows the partition before producing. Computed here rather than through kgo's partitioner,
// which needs a record and a copy of the key: two allocations per match.
// TestMatchPartitionIsKafkas holds it to kgo's.
func matchPartition(key string, partitions int) int32 {
	return int32((murmur2(key) & 0x7fffffff) % uint32(partitions))
}

// murmur2 is the 32-bit MurmurHash2 with Kafka's seed.
func murmur2(key string) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	n := len(key)
	h := uint32(seed) ^ uint32(n)
	for ; len(key) >= 4; key = key[4:] {
		k := uint32(key[0]) | uint32(key[1])<<8 | uint32(key[2])<<16 | uint32(key[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h = h*m ^ k
	}
	switch len(key) {
	case 3:
		h ^= uint32(key[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(key[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(key[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// matchRecord builds the match record of an event (in JSON format) for a trigger.
func matchRecord(topic string, m joinMatch) *kgo.Record {
	jr := m.jr
	return &kgo.Record{Topic: topic, Partition: m.partition, Key: []byte(m.key), Value: jr.Event, Headers: []kgo.RecordHeader{
		{Key: headerTrigger, Value: []byte(jr.Namespace + "/" + jr.Sensor + "/" + jr.Trigger)},
		{Key: headerDependency, Value: []byte(jr.Dependency)},
	}}
}

// decodeMatch reads a match record. Records written before the headers existed carry the whole
// joinRecord as JSON in the value; they are still read, so an upgrade loses no pending match.
func decodeMatch(r *kgo.Record) (joinRecord, error) {
	var jr joinRecord
	var trig string
	for _, h := range r.Headers {
		switch h.Key {
		case headerTrigger:
			trig = string(h.Value)
		case headerDependency:
			jr.Dependency = string(h.Value)
		}
	}
	if trig == "" {
		err := json.Unmarshal(r.Value, &jr)
		return jr, err
	}
	parts := strings.SplitN(trig, "/", 3)
	if len(parts) != 3 || jr.Dependency == "" {
		return jr, fmt.Errorf("headers %s %q and %s %q: expected <namespace>/<sensor>/<trigger> and a dependency", headerTrigger, trig, headerDependency, jr.Dependency)
	}
	if !json.Valid(r.Value) {
		return jr, errors.New("value: not a CloudEvent in JSON format")
	}
	jr.Namespace, jr.Sensor, jr.Trigger, jr.Event = parts[0], parts[1], parts[2], r.Value
	return jr, nil
}

// joinState is what a join key waits with: the latest event of each dependency met so far. It
// is the value of the key's record on the state topic.
type joinState struct {
	Namespace string                     `json:"namespace"`
	Sensor    string                     `json:"sensor"`
	Trigger   string                     `json:"trigger"`
	Events    map[string]json.RawMessage `json:"events"` // by dependency
	// First is when the key's first pending event reached the join (its match record's
	// timestamp, so reprocessing a batch computes the same), for correlation windows.
	First time.Time `json:"first"`
	// Deps is the signature of the trigger's dependencies when the state was written; state of
	// a trigger whose dependencies changed since is dropped.
	Deps string `json:"deps"`

	// raw is the state record a restored state came from. Restore reads only the record's
	// headers (trigger and first time); Events is decoded from raw when the key is next used,
	// so a restore does not pay for decoding keys that may never be touched.
	raw []byte
}

// State record headers: what restore and expiry need without decoding the value.
const (
	headerTrigger = "kevents-trigger" // <namespace>/<sensor>/<trigger>
	headerFirst   = "kevents-first"   // First, Unix nanoseconds
	headerDeps    = "kevents-deps"    // Deps
)

// events returns the state's events, decoding a restored state's record; callers must not
// change them.
func (s *joinState) events() (map[string]json.RawMessage, error) {
	if s.Events != nil || s.raw == nil {
		return s.Events, nil
	}
	var full joinState
	if err := json.Unmarshal(s.raw, &full); err != nil {
		return nil, err
	}
	return full.Events, nil
}

// withEvents returns a copy of the state with a copy of events (s.events()), which the caller
// may change.
func (s *joinState) withEvents(events map[string]json.RawMessage) *joinState {
	c := *s
	c.raw = nil
	c.Events = make(map[string]json.RawMessage, len(events)+1)
	maps.Copy(c.Events, events)
	return &c
}

// stateRecord is the state topic record for key in partition p: the state, or a tombstone when
// st is nil. A join writes one for nearly every event: it is a pooled record (see pooledRecord).
func stateRecord(topic string, p int32, key string, st *joinState) *kgo.Record {
	size := len(key)
	if st != nil {
		size += 256 + len(st.Namespace) + len(st.Sensor) + len(st.Trigger) + 2*len(st.Deps)
		for d, e := range st.Events {
			size += len(d) + len(e) + 4
		}
	}
	r, buf := newPooledRecord(size)
	buf = append(buf, key...)
	k := len(buf)
	if st == nil {
		r.rec = kgo.Record{Topic: topic, Partition: p, Key: buf[:k:k]}
		r.buf = buf
		return &r.rec
	}
	buf = append(append(append(append(append(buf, st.Namespace...), '/'), st.Sensor...), '/'), st.Trigger...)
	trigger := len(buf)
	buf = strconv.AppendInt(buf, st.First.UnixNano(), 10)
	first := len(buf)
	buf = append(buf, st.Deps...)
	deps := len(buf)
	buf = st.appendJSON(buf)
	r.headers = [3]kgo.RecordHeader{
		{Key: headerTrigger, Value: buf[k:trigger:trigger]},
		{Key: headerFirst, Value: buf[trigger:first:first]},
		{Key: headerDeps, Value: buf[first:deps:deps]},
	}
	r.rec = kgo.Record{Topic: topic, Partition: p, Key: buf[:k:k], Value: buf[deps:], Headers: r.headers[:]}
	r.buf = buf
	return &r.rec
}

// appendJSON appends the state as JSON, the document json.Marshal would write (events in
// dependency order). Written by hand because json.Marshal re-validates and compacts every
// event it embeds, which made the state record the join's costliest step; the events are
// valid JSON already (decodeMatch checked them).
func (s *joinState) appendJSON(b []byte) []byte {
	b = append(b, `{"namespace":`...)
	b = jsonw.AppendString(b, s.Namespace)
	b = append(b, `,"sensor":`...)
	b = jsonw.AppendString(b, s.Sensor)
	b = append(b, `,"trigger":`...)
	b = jsonw.AppendString(b, s.Trigger)
	b = append(b, `,"events":{`...)
	var inline [4]string // a trigger rarely has more dependencies
	deps := inline[:0]
	for d := range s.Events {
		deps = append(deps, d)
	}
	slices.Sort(deps)
	for i, d := range deps {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonw.AppendString(b, d)
		b = append(b, ':')
		b = append(b, s.Events[d]...)
	}
	b = append(b, `},"first":"`...)
	b = jsonw.AppendTime(b, s.First)
	b = append(b, `","deps":`...)
	b = jsonw.AppendString(b, s.Deps)
	return append(b, '}')
}

// restoredState builds a state from a record's headers, keeping the value to decode later;
// names interns the trigger strings, which every key of a trigger shares.
func restoredState(r *kgo.Record, names map[string][3]string) (*joinState, error) {
	var trig, first, deps string
	for _, h := range r.Headers {
		switch h.Key {
		case headerTrigger:
			trig = string(h.Value)
		case headerFirst:
			first = string(h.Value)
		case headerDeps:
			deps = string(h.Value)
		}
	}
	n, ok := names[trig]
	if !ok {
		parts := strings.SplitN(trig, "/", 3)
		if len(parts) != 3 {
			// Not written by this version: decode the whole value.
			var st joinState
			if err := json.Unmarshal(r.Value, &st); err != nil {
				return nil, err
			}
			return &st, nil
		}
		n = [3]string{parts[0], parts[1], parts[2]}
		names[trig] = n
	}
	nanos, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("header %s: %q: %w", headerFirst, first, err)
	}
	return &joinState{Namespace: n[0], Sensor: n[1], Trigger: n[2], First: time.Unix(0, nanos).UTC(), Deps: deps, raw: r.Value}, nil
}

// joinKey is the key of a trigger's join state: one pending set per trigger, as in Argo, or
// one per correlation value when the trigger correlates.
func joinKey(namespace, sensor, trigger, correlation string) string {
	return namespace + "/" + sensor + "/" + trigger + "/" + correlation
}

// joinStore holds the join state of the matches partitions this member owns.
//
// Invariants: a partition is in parts only once it was restored from the state topic, and it
// leaves parts when the partition is revoked or lost, so state is never read from a partition
// another member may be writing. Changes of the batch in progress stay in pending until the
// batch's transaction committed (commit) or aborted (abort): an aborted batch is processed again
// from the same committed state, so it must not have changed it.
type joinStore struct {
	mu sync.Mutex
	// owned are the matches partitions assigned to this member, restored or not: stage 1 joins
	// the matches of their keys itself instead of sending them through the matches topic.
	owned map[int32]bool
	parts map[int32]map[string]*joinState
	// pending holds the batch's changes per partition; a nil state means the key is done
	// (tombstoned). Partitions are independent, so stage 2 runs them in parallel: each
	// goroutine touches only its own partition's maps, created beforehand by prepare.
	pending map[int32]map[string]*joinState
}

func newJoinStore() *joinStore {
	return &joinStore{owned: map[int32]bool{}, parts: map[int32]map[string]*joinState{}, pending: map[int32]map[string]*joinState{}}
}

// own records matches partitions assigned to this member.
func (s *joinStore) own(ps []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		s.owned[p] = true
	}
}

// ownedPartitions is a copy of the partitions assigned to this member, for one batch. A
// partition revoked while the batch runs aborts the batch's transaction (GroupTransactSession),
// so the batch may act as its owner until it ends.
func (s *joinStore) ownedPartitions() map[int32]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.owned)
}

func (s *joinStore) restored(p int32) bool {
	_, ok := s.parts[p]
	return ok
}

// prepare makes room for the pending changes of partitions ps, before they are processed
// concurrently. Callers hold s.mu.
func (s *joinStore) prepare(ps []int32) {
	for _, p := range ps {
		if s.pending[p] == nil {
			s.pending[p] = map[string]*joinState{}
		}
	}
}

// get returns the state of key as this batch sees it; callers must clone before changing it.
func (s *joinStore) get(p int32, key string) *joinState {
	if st, ok := s.pending[p][key]; ok {
		return st
	}
	return s.parts[p][key]
}

// put records a change of the batch; the partition must be prepared.
func (s *joinStore) put(p int32, key string, st *joinState) {
	s.pending[p][key] = st
}

// stateRecords returns the state topic records of partition p's pending changes: one per key,
// the state as the batch leaves it. Only a key's last record in a transaction matters (the
// topic is compacted and read only by restore, after the transaction), so a key whose
// dependencies all arrived in one batch writes its tombstone alone, or nothing at all when no
// committed state of it exists: the state records a join writes drop with the batch size.
// The partition must be prepared, and its changes must not be touched meanwhile.
func (s *joinStore) stateRecords(topic string, p int32) []*kgo.Record {
	changes := s.pending[p]
	out := make([]*kgo.Record, 0, len(changes))
	for key, st := range changes {
		if st == nil {
			if _, committed := s.parts[p][key]; !committed {
				continue
			}
		}
		out = append(out, stateRecord(topic, p, key, st))
	}
	return out
}

// commit applies the committed batch's changes to partitions still owned.
func (s *joinStore) commit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, changes := range s.pending {
		part, owned := s.parts[p]
		if !owned {
			continue
		}
		for key, st := range changes {
			if st == nil {
				delete(part, key)
			} else {
				part[key] = st
			}
		}
	}
	clear(s.pending)
}

func (s *joinStore) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.pending)
}

// drop forgets partitions this member no longer owns.
func (s *joinStore) drop(parts []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range parts {
		delete(s.owned, p)
		delete(s.parts, p)
	}
}

// pendingKeys counts the keys waiting in owned partitions.
func (s *joinStore) pendingKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, part := range s.parts {
		n += len(part)
	}
	return n
}

// restorePartition reads partition p of the state topic from its start up to its last stable
// offset, as of now, and returns the pending state it holds.
//
// It runs once this member is assigned matches partition p, between transactions when some
// loaded trigger joins, else when a batch first has a match of p to join; always before the
// member writes state there itself. A previous owner may still have a transaction open on
// the partition: one that joined matches of its own source partitions without consuming
// matches partition p, which the group's stable offsets do not wait for. That transaction
// either commits or aborts (it aborts if it ends after the previous owner lost p), so the read
// first waits until the partition has settled (ReadSettledPartition): everything it reads is
// final.
func restorePartition(ctx context.Context, kc kclient.Config, topic string, p int32, m *metrics.Metrics) (map[string]*joinState, error) {
	m.SensorRestoringPartitions.Inc()
	defer m.SensorRestoringPartitions.Dec()
	state := map[string]*joinState{}
	names := map[string][3]string{}
	err := kc.ReadSettledPartition(ctx, topic, p, func(r *kgo.Record) error {
		m.SensorRestoreRecords.Inc()
		key := string(r.Key)
		if r.Value == nil {
			delete(state, key)
			return nil
		}
		// A record we cannot read would lose a pending event silently: the error stops restore.
		st, err := restoredState(r, names)
		if err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
		state[key] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("restore join state: %w", err)
	}
	return state, nil
}

// restoreTimeout bounds one partition's restore; a restore that fails aborts the batch, which
// is then processed again.
const restoreTimeout = 2 * time.Minute

// expired reports whether a key's state is gone at now: its trigger's dependencies changed
// since it was written, it is past its trigger's correlation window, or a conditionsReset time
// passed since its first event.
func expired(st *joinState, t *compiledTrigger, now time.Time) bool {
	if st.Deps != t.deps {
		return true
	}
	if t.window > 0 && now.Sub(st.First) > t.window {
		return true
	}
	for _, r := range t.resets {
		if !r.Next(st.First).After(now) {
			return true
		}
	}
	return false
}

// sweepInterval is how often a member looks for join keys past their window.
const sweepInterval = 5 * time.Second

// expire returns tombstones for the owned keys that expired at now, or whose trigger is no
// longer loaded, and records their removal as pending. Callers hold s.mu.
func (s *joinStore) expire(stateTopic string, triggerOf func(*joinState) *compiledTrigger, now time.Time) []*kgo.Record {
	var out []*kgo.Record
	for p, part := range s.parts {
		s.prepare([]int32{p})
		for key, committed := range part {
			st := committed
			if pending, ok := s.pending[p][key]; ok {
				st = pending
			}
			if st == nil {
				continue
			}
			if t := triggerOf(st); t != nil && !expired(st, t, now) {
				continue
			}
			s.put(p, key, nil)
			out = append(out, stateRecord(stateTopic, p, key, nil))
		}
	}
	return out
}
