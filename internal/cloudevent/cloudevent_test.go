package cloudevent_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/cloudevent"
)

// TestRoundTrip produces every sample event with ToRecord to a real (embedded)
// broker, consumes it and decodes it with FromRecord: every attribute,
// extension, the data, the subject and the time survive.
func TestRoundTrip(t *testing.T) {
	cl := newClient(t, newCluster(t))
	samples := sampleEvents(t)
	ctx := context.Background()
	for _, s := range samples {
		r, err := cloudevent.ToRecord(ctx, s.e, topic, []byte("key-"+s.name))
		if err != nil {
			t.Fatalf("%s: ToRecord: %v", s.name, err)
		}
		produce(t, cl, r)
	}
	recs := consume(t, cl, len(samples))
	for i, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			r := recs[i]
			if got, want := string(r.Key), "key-"+s.name; got != want {
				t.Errorf("key: got %q, want %q", got, want)
			}
			got, err := cloudevent.FromRecord(r)
			if err != nil {
				t.Fatalf("FromRecord: %v", err)
			}
			assertSameEvent(t, s.e, *got)
			if got.Time().Location().String() != "UTC" && !got.Time().IsZero() {
				t.Errorf("time zone: got %v, want UTC", got.Time().Location())
			}
		})
	}
}

// TestToRecordWireFormat checks the binary content mode headers and value on a
// record that went through the broker, and the key mapping.
func TestToRecordWireFormat(t *testing.T) {
	cl := newClient(t, newCluster(t))
	full := sampleEvents(t)[0].e
	minimal := sampleEvents(t)[1].e
	ctx := context.Background()

	var recs []*kgo.Record
	for _, c := range []struct {
		e   event.Event
		key []byte
	}{
		{full, []byte("explicit")}, // explicit key wins over partitionkey
		{full, nil},                // partitionkey extension becomes the key
		{minimal, nil},             // no key at all
	} {
		r, err := cloudevent.ToRecord(ctx, c.e, topic, c.key)
		if err != nil {
			t.Fatal(err)
		}
		if r.Topic != topic {
			t.Fatalf("topic: got %q, want %q", r.Topic, topic)
		}
		recs = append(recs, r)
	}
	produce(t, cl, recs...)
	got := consume(t, cl, len(recs))

	want := []string{
		"ce_attempt=7",
		"ce_dataschema=https://kevents.example/schema.json",
		"ce_id=0d1b0c4e-3f7a-4e55-9f0e-2b7f4f6c9a11",
		"ce_partitionkey=user-42",
		"ce_raw=AAEC/w==",
		"ce_received=2026-11-21T09:11:13.123456789Z",
		"ce_retried=true",
		"ce_source=https://kevents.example/ns/default/eventsource/webhook",
		"ce_specversion=1.0",
		"ce_subject=example",
		"ce_time=2026-11-21T09:11:12.123456789Z",
		"ce_traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"ce_type=webhook",
		"content-type=application/json",
	}
	if h := headerList(got[0].Headers); !slices.Equal(h, want) {
		t.Errorf("headers:\n got %q\nwant %q", h, want)
	}
	if string(got[0].Value) != string(full.Data()) {
		t.Errorf("value: got %q, want %q", got[0].Value, full.Data())
	}
	// Attributes come in the binding's order for spec 1.0, before the extensions.
	var order []string
	for _, h := range got[0].Headers[:8] {
		order = append(order, h.Key)
	}
	if wantOrder := []string{"ce_id", "ce_source", "ce_specversion", "ce_type", "content-type", "ce_dataschema", "ce_subject", "ce_time"}; !slices.Equal(order, wantOrder) {
		t.Errorf("attribute header order: got %q, want %q", order, wantOrder)
	}

	if k := string(got[0].Key); k != "explicit" {
		t.Errorf("explicit key: got %q", k)
	}
	if k := string(got[1].Key); k != "user-42" {
		t.Errorf("key from partitionkey: got %q, want %q", k, "user-42")
	}
	if got[2].Key != nil {
		t.Errorf("minimal event key: got %q, want nil", got[2].Key)
	}
	if h := headerList(got[2].Headers); !slices.Equal(h, []string{"ce_id=1", "ce_source=calendar", "ce_specversion=1.0", "ce_type=calendar"}) {
		t.Errorf("minimal headers: %q", h)
	}
	if len(got[2].Value) != 0 {
		t.Errorf("minimal value: got %q, want empty", got[2].Value)
	}
}

// TestToRecordInvalidEvent: an event that is not a valid CloudEvent is not encoded.
func TestToRecordInvalidEvent(t *testing.T) {
	e := event.New()
	e.SetSource("s")
	e.SetType("t") // no id
	if r, err := cloudevent.ToRecord(context.Background(), e, topic, nil); err == nil {
		t.Fatalf("ToRecord of an event without id: got record %v, want error", r)
	}
}

// TestFromRecordStructured decodes a structured content mode record
// (application/cloudevents+json) that went through the broker.
func TestFromRecordStructured(t *testing.T) {
	cl := newClient(t, newCluster(t))
	full := sampleEvents(t)[0].e
	js, err := full.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	// The media type as the SDK's format lookup reads it: any case, spaces around it.
	contentTypes := []string{"application/cloudevents+json; charset=utf-8", " Application/CloudEvents+JSON "}
	for _, ct := range contentTypes {
		produce(t, cl, &kgo.Record{Topic: topic, Headers: []kgo.RecordHeader{{Key: "Content-Type", Value: []byte(ct)}}, Value: js})
	}
	for i, r := range consume(t, cl, len(contentTypes)) {
		got, err := cloudevent.FromRecord(r)
		if err != nil {
			t.Fatalf("content-type %q: FromRecord: %v", contentTypes[i], err)
		}
		assertSameEvent(t, full, *got)
	}
}

// TestFromRecordNotCloudEvent: records that carry no CloudEvent give an error
// wrapping ErrNotCloudEvent; records that claim to be one but are malformed
// give another error.
func TestFromRecordNotCloudEvent(t *testing.T) {
	cl := newClient(t, newCluster(t))
	h := func(kv ...string) []kgo.RecordHeader {
		var hs []kgo.RecordHeader
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	cases := []struct {
		name    string
		headers []kgo.RecordHeader
		value   string
		notCE   bool // wants ErrNotCloudEvent; otherwise another error
	}{
		{"no headers", nil, `{"specversion":"1.0","id":"1","source":"s","type":"t"}`, true},
		{"other headers only", h("traceparent", "00-x", "ce_", "bare prefix"), "x", true},
		{"plain content-type", h("content-type", "application/json"), `{"a":1}`, true},
		{"ce_ attributes without specversion", h("ce_id", "1", "ce_source", "s", "ce_type", "t"), "x", true},
		{"unknown specversion", h("ce_specversion", "9.9", "ce_id", "1", "ce_source", "s", "ce_type", "t"), "x", true},
		{"batched content mode", h("content-type", "application/cloudevents-batch+json"), `[]`, true},
		{"binary without id", h("ce_specversion", "1.0", "ce_source", "s", "ce_type", "t"), "x", false},
		{"binary with bad time", h("ce_specversion", "1.0", "ce_id", "1", "ce_source", "s", "ce_type", "t", "ce_time", "yesterday"), "x", false},
		{"structured with bad JSON", h("content-type", "application/cloudevents+json"), `{"specversion":`, false},
	}
	for _, c := range cases {
		produce(t, cl, &kgo.Record{Topic: topic, Headers: c.headers, Value: []byte(c.value)})
	}
	recs := consume(t, cl, len(cases))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := cloudevent.FromRecord(recs[i])
			if err == nil {
				t.Fatalf("got event %v, want error", e)
			}
			if errors.Is(err, cloudevent.ErrNotCloudEvent) != c.notCE {
				t.Fatalf("errors.Is(%v, ErrNotCloudEvent) = %v, want %v", err, !c.notCE, c.notCE)
			}
		})
	}
	if _, err := cloudevent.FromRecord(nil); !errors.Is(err, cloudevent.ErrNotCloudEvent) {
		t.Errorf("FromRecord(nil): got %v, want ErrNotCloudEvent", err)
	}
}

// TestFromRecordHeaderCase: header names are matched case-insensitively and
// unknown ce_ headers become extensions.
func TestFromRecordHeaderCase(t *testing.T) {
	cl := newClient(t, newCluster(t))
	produce(t, cl, &kgo.Record{Topic: topic, Value: []byte("{}"), Headers: []kgo.RecordHeader{
		{Key: "CE_SpecVersion", Value: []byte("1.0")},
		{Key: "ce_ID", Value: []byte("1")},
		{Key: "ce_source", Value: []byte("s")},
		{Key: "ce_type", Value: []byte("t")},
		{Key: "Content-Type", Value: []byte("application/json")},
		{Key: "ce_MyExt", Value: []byte("v")},
		{Key: "unrelated", Value: []byte("ignored")},
	}})
	got, err := cloudevent.FromRecord(consume(t, cl, 1)[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != "1" || got.DataContentType() != "application/json" || got.Extensions()["myext"] != "v" || len(got.Extensions()) != 1 {
		t.Errorf("got %v", got)
	}
}
