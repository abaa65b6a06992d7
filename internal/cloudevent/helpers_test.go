package cloudevent_test

import (
	"bytes"
	"context"
	"sort"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

const topic = "t"

// newCluster starts an embedded single-broker Kafka with topic "t" (one partition).
func newCluster(t testing.TB) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatalf("kfake.NewCluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// newClient returns a kgo client that produces without linger and consumes
// topic "t" from the start.
func newClient(t testing.TB, addrs []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.ProducerLinger(0),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce writes records synchronously, in order.
func produce(t testing.TB, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, r := range recs {
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
}

// consume polls until it has n records of topic "t", in offset order.
func consume(t testing.TB, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), n, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		out = append(out, fs.Records()...)
	}
	if len(out) != n {
		t.Fatalf("consumed %d records, want %d", len(out), n)
	}
	return out
}

type namedEvent struct {
	name string
	e    event.Event
}

var eventTime = time.Date(2026, 11, 21, 10, 11, 12, 123456789, time.FixedZone("CET", 3600))

// sampleEvents covers every attribute, every extension type, spec 0.3, binary
// data, and events without data or optional attributes.
func sampleEvents(t testing.TB) []namedEvent {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	full := event.New()
	full.SetID("0d1b0c4e-3f7a-4e55-9f0e-2b7f4f6c9a11")
	full.SetSource("https://kevents.example/ns/default/eventsource/webhook")
	full.SetType("webhook")
	full.SetSubject("example")
	full.SetTime(eventTime)
	full.SetDataSchema("https://kevents.example/schema.json")
	must(full.SetData(event.ApplicationJSON, map[string]any{"body": map[string]any{"message": "hello"}, "n": 1}))
	full.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	full.SetExtension("partitionkey", "user-42")
	full.SetExtension("attempt", int32(7))
	full.SetExtension("retried", true)
	full.SetExtension("received", eventTime.Add(time.Second))
	full.SetExtension("raw", []byte{0, 1, 2, 0xff})

	minimal := event.New()
	minimal.SetID("1")
	minimal.SetSource("calendar")
	minimal.SetType("calendar")

	binary := event.New()
	binary.SetID("2")
	binary.SetSource("file")
	binary.SetType("file")
	binary.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	payload := make([]byte, 512)
	for i := range payload {
		payload[i] = byte(i)
	}
	must(binary.SetData("application/octet-stream", payload))

	noContentType := event.New()
	noContentType.SetID("3")
	noContentType.SetSource("/redis")
	noContentType.SetType("redis")
	noContentType.SetSubject("channel-a")
	noContentType.DataEncoded = []byte("plain bytes, no content type")

	v03 := event.New(event.CloudEventsVersionV03)
	v03.SetID("4")
	v03.SetSource("https://kevents.example/v03")
	v03.SetType("legacy")
	v03.SetSubject("old")
	v03.SetTime(eventTime)
	v03.SetDataSchema("https://kevents.example/v03.json")
	must(v03.SetData(event.TextPlain, "text data"))
	v03.SetExtension("legacyext", "x")

	out := []namedEvent{
		{"full", full},
		{"minimal", minimal},
		{"binary-data", binary},
		{"no-content-type", noContentType},
		{"specversion-0.3", v03},
	}
	for _, ne := range out {
		if err := ne.e.Validate(); err != nil {
			t.Fatalf("sample %s is invalid: %v", ne.name, err)
		}
	}
	return out
}

// assertSameEvent checks that got carries the same attributes, extensions (in
// canonical string form, since the Kafka binding carries no types) and data as
// want. Extensions named in ignore are not compared.
func assertSameEvent(t testing.TB, want, got event.Event, ignore ...string) {
	t.Helper()
	eq := func(what, w, g string) {
		t.Helper()
		if w != g {
			t.Errorf("%s: got %q, want %q", what, g, w)
		}
	}
	eq("specversion", want.SpecVersion(), got.SpecVersion())
	eq("id", want.ID(), got.ID())
	eq("source", want.Source(), got.Source())
	eq("type", want.Type(), got.Type())
	eq("subject", want.Subject(), got.Subject())
	eq("datacontenttype", want.DataContentType(), got.DataContentType())
	eq("dataschema", want.DataSchema(), got.DataSchema())
	if !want.Time().Equal(got.Time()) {
		t.Errorf("time: got %v, want %v", got.Time(), want.Time())
	}
	if !bytes.Equal(want.Data(), got.Data()) {
		t.Errorf("data: got %q, want %q", got.Data(), want.Data())
	}

	skip := map[string]bool{}
	for _, n := range ignore {
		skip[n] = true
	}
	canon := func(m map[string]any) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if skip[k] {
				continue
			}
			s, err := types.Format(v)
			if err != nil {
				t.Fatalf("extension %s: %v", k, err)
			}
			out[k] = s
		}
		return out
	}
	we, ge := canon(want.Extensions()), canon(got.Extensions())
	for k, w := range we {
		g, ok := ge[k]
		if !ok {
			t.Errorf("extension %s: missing, want %q", k, w)
			continue
		}
		if w != g && !sameTime(w, g) {
			t.Errorf("extension %s: got %q, want %q", k, g, w)
		}
	}
	for k, g := range ge {
		if _, ok := we[k]; !ok {
			t.Errorf("extension %s: unexpected %q", k, g)
		}
	}
}

// sameTime reports whether a and b are RFC 3339 forms of the same instant:
// the SDK's JSON format writes timestamp extensions in their own zone, while
// the binary mode writes them in UTC.
func sameTime(a, b string) bool {
	ta, err1 := time.Parse(time.RFC3339Nano, a)
	tb, err2 := time.Parse(time.RFC3339Nano, b)
	return err1 == nil && err2 == nil && ta.Equal(tb)
}

// headerList returns headers as sorted "key=value" strings.
func headerList(hs []kgo.RecordHeader) []string {
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Key+"="+string(h.Value))
	}
	sort.Strings(out)
	return out
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}
