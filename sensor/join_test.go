package sensor

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
)

func TestExpired(t *testing.T) {
	reset, err := compileReset(api.ConditionsResetCriteria{ByTime: &api.ConditionsResetByTime{Cron: "0 12 * * *", Timezone: "America/New_York"}})
	if err != nil {
		t.Fatal(err)
	}
	ny, _ := time.LoadLocation("America/New_York")
	first := time.Date(2026, 11, 21, 11, 0, 0, 0, ny)
	st := &joinState{First: first}
	cases := []struct {
		name string
		trig *compiledTrigger
		now  time.Time
		want bool
	}{
		{"no window, no reset", &compiledTrigger{}, first.Add(1000 * time.Hour), false},
		{"inside the window", &compiledTrigger{window: time.Hour}, first.Add(59 * time.Minute), false},
		{"past the window", &compiledTrigger{window: time.Hour}, first.Add(61 * time.Minute), true},
		{"before the reset time (noon in New York)", &compiledTrigger{resets: []cron.Schedule{reset}}, first.Add(59 * time.Minute), false},
		{"at the reset time", &compiledTrigger{resets: []cron.Schedule{reset}}, first.Add(time.Hour), true},
		{"a day later", &compiledTrigger{resets: []cron.Schedule{reset}}, first.Add(25 * time.Hour), true},
	}
	for _, c := range cases {
		if got := expired(st, c.trig, c.now); got != c.want {
			t.Errorf("%s: expired = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestJoinStoreCommitAndAbort(t *testing.T) {
	s := newJoinStore()
	s.parts[0] = map[string]*joinState{}
	a := &joinState{Trigger: "t", Events: map[string]json.RawMessage{}}
	s.prepare([]int32{0, 1})
	s.put(0, "k", a)
	if s.get(0, "k") != a {
		t.Fatal("a batch must see its own pending change")
	}
	s.abort()
	if s.get(0, "k") != nil {
		t.Fatal("an aborted change must leave no trace")
	}
	s.prepare([]int32{0, 1})
	s.put(0, "k", a)
	s.put(1, "other", a) // partition 1 is not owned: its change is not kept
	s.commit()
	if s.parts[0]["k"] != a || s.pendingKeys() != 1 {
		t.Fatalf("committed state %v, %d keys", s.parts, s.pendingKeys())
	}
	s.prepare([]int32{0})
	s.put(0, "k", nil)
	s.commit()
	if s.pendingKeys() != 0 {
		t.Fatal("a committed tombstone must remove the key")
	}
	s.parts[0]["k"] = a
	s.drop([]int32{0})
	if s.restored(0) {
		t.Fatal("a revoked partition must be forgotten")
	}
}

// TestStateRecordsOnePerKey: a batch writes each changed key once, as the batch leaves it; a key
// that came and went within the batch writes nothing, and one committed before gets its
// tombstone.
func TestStateRecordsOnePerKey(t *testing.T) {
	s := newJoinStore()
	waiting := &joinState{Trigger: "t", Events: map[string]json.RawMessage{"a": json.RawMessage(`{"id":"1"}`)}}
	s.parts[0] = map[string]*joinState{"committed-then-fired": waiting}
	s.prepare([]int32{0})
	s.put(0, "committed-then-fired", nil)
	s.put(0, "met-and-fired-in-batch", waiting)
	s.put(0, "met-and-fired-in-batch", nil)
	s.put(0, "still-waiting", &joinState{Trigger: "t", Events: map[string]json.RawMessage{"a": json.RawMessage(`{"id":"1"}`)}})
	s.put(0, "still-waiting", waiting)
	got := map[string][]byte{}
	for _, r := range s.stateRecords("state", 0) {
		if r.Topic != "state" || r.Partition != 0 {
			t.Errorf("record for %s on %s/%d, want state/0", r.Key, r.Topic, r.Partition)
		}
		if _, dup := got[string(r.Key)]; dup {
			t.Errorf("key %s written twice in one batch", r.Key)
		}
		got[string(r.Key)] = r.Value
	}
	if v, ok := got["committed-then-fired"]; !ok || v != nil {
		t.Errorf("committed-then-fired: written %v, value %q; want a tombstone", ok, v)
	}
	if _, ok := got["met-and-fired-in-batch"]; ok {
		t.Error("met-and-fired-in-batch: written; want nothing, no committed state of it exists")
	}
	if v := got["still-waiting"]; string(v) != string(waiting.appendJSON(nil)) {
		t.Errorf("still-waiting: value %q, want the last state %q", v, waiting.appendJSON(nil))
	}
	if len(got) != 2 {
		t.Errorf("%d records, want 2: %v", len(got), got)
	}
}

// TestStateRecordRoundTrip: restore reads a state's trigger and first time from the record's
// headers and decodes its events only when the key is used again.
func TestStateRecordRoundTrip(t *testing.T) {
	first := time.Date(2026, 11, 21, 10, 0, 0, 123, time.UTC)
	in := &joinState{Namespace: "ns", Sensor: "s", Trigger: "t", First: first,
		Events: map[string]json.RawMessage{"a": json.RawMessage(`{"id":"1"}`)}}
	rec := stateRecord("state", 3, "ns/s/t/k", in)
	if rec.Partition != 3 || len(rec.Headers) != 3 {
		t.Fatalf("record %+v", rec)
	}
	got, err := restoredState(rec, map[string][3]string{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Namespace != "ns" || got.Sensor != "s" || got.Trigger != "t" || !got.First.Equal(first) || got.Events != nil {
		t.Fatalf("restored %+v; want names and first time from the headers, events not decoded yet", got)
	}
	events, err := got.events()
	if err != nil || string(events["a"]) != `{"id":"1"}` {
		t.Fatalf("events %+v, %v; want the decoded events", events, err)
	}
	if c := got.withEvents(events); c.raw != nil || string(c.Events["a"]) != `{"id":"1"}` || c.First != got.First {
		t.Fatalf("copy %+v; want the decoded events and no record", c)
	}
	tomb := stateRecord("state", 3, "k", nil)
	if tomb.Value != nil || tomb.Partition != 3 {
		t.Errorf("tombstone %+v", tomb)
	}
	if _, err := restoredState(&kgo.Record{Value: []byte("not json")}, map[string][3]string{}); err == nil {
		t.Error("a record without headers and with a broken value must be an error")
	}
}

// TestStateJSON holds the hand-written state encoding to what json.Marshal writes.
func TestStateJSON(t *testing.T) {
	st := &joinState{Namespace: "ns", Sensor: "s", Trigger: `t"quoted\`, Deps: "a,b", First: time.Date(2026, 11, 22, 1, 2, 3, 456, time.UTC),
		Events: map[string]json.RawMessage{"b": json.RawMessage(`{"id":"2","data":{"x":[1,2]}}`), "a": json.RawMessage(`{"id":"1"}`), "é": json.RawMessage(`{}`)}}
	got := st.appendJSON(nil)
	want, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("hand-written state is not JSON: %v\n%s", err, got)
	}
	json.Unmarshal(want, &w)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("hand-written state\n%s\njson.Marshal\n%s", got, want)
	}
}

// TestDecodeMatch reads match records as stage 1 writes them, as versions before the headers
// wrote them, and refuses malformed ones.
func TestDecodeMatch(t *testing.T) {
	jr := joinRecord{Namespace: "ns", Sensor: "s", Trigger: "t", Dependency: "d", Event: json.RawMessage(`{"id":"1"}`)}
	got, err := decodeMatch(matchRecord("m", joinMatch{key: "k", jr: jr}))
	if err != nil || !reflect.DeepEqual(got, jr) {
		t.Errorf("current format: %+v, %v; want %+v", got, err, jr)
	}
	old, _ := json.Marshal(jr)
	if got, err := decodeMatch(&kgo.Record{Value: old}); err != nil || !reflect.DeepEqual(got, jr) {
		t.Errorf("previous format: %+v, %v; want %+v", got, err, jr)
	}
	bad := matchRecord("m", joinMatch{key: "k", jr: jr})
	bad.Value = []byte(`{"id":`)
	if _, err := decodeMatch(bad); err == nil {
		t.Error("a match whose event is not JSON was accepted")
	}
	bad = matchRecord("m", joinMatch{key: "k", jr: jr})
	bad.Headers[0].Value = []byte("no-slashes")
	if _, err := decodeMatch(bad); err == nil || !strings.Contains(err.Error(), "kevents-trigger") {
		t.Errorf("a malformed trigger header: %v; want an error naming it", err)
	}
}

// TestMatchPartitionIsKafkas holds matchPartition to kgo's default partitioner, which places
// keys as Kafka's does: members of earlier versions, which produced matches through it, must
// agree on every key's partition.
func TestMatchPartitionIsKafkas(t *testing.T) {
	kafkas := kgo.StickyKeyPartitioner(nil).ForTopic("")
	keys := []string{"", "a", "ab", "abc", "abcd", "abcde", "default/join/t/", "default/join/t/p1", "ns/s/t/é€😀", strings.Repeat("x", 1000)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		keys = append(keys, string(b))
	}
	for _, partitions := range []int{1, 3, 12, 100} {
		for _, key := range keys {
			want := int32(kafkas.Partition(&kgo.Record{Key: []byte(key)}, partitions))
			if got := matchPartition(key, partitions); got != want {
				t.Fatalf("key %q, %d partitions: partition %d, Kafka's is %d", key, partitions, got, want)
			}
		}
	}
}
