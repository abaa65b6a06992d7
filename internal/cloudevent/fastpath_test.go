package cloudevent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFromRecordFastPathMatchesBinding decodes binary-mode 1.0 records with FromRecord's direct
// path and with the SDK's binding, and wants the same event or the same failure from both.
func TestFromRecordFastPathMatchesBinding(t *testing.T) {
	h := func(kv ...string) []kgo.RecordHeader {
		var hs []kgo.RecordHeader
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	base := []string{"ce_specversion", "1.0", "ce_id", "id-1", "ce_source", "/src/a", "ce_type", "push"}
	cases := map[string]*kgo.Record{
		"minimal": {Headers: h(base...)},
		"every attribute and data": {Value: []byte(`{"n":1}`), Headers: h(append(base, "content-type", "application/json",
			"ce_subject", "main", "ce_time", "2026-11-22T01:02:03.456789Z", "ce_dataschema", "https://example.com/s.json")...)},
		"extensions":                 {Headers: h(append(base, "ce_partitionkey", "k1", "ce_traceparent", "00-abc", "ce_custom", "x")...)},
		"spaces trimmed":             {Headers: h("ce_specversion", "1.0", "ce_id", " id ", "ce_source", "s", "ce_type", " t ", "ce_subject", " ")},
		"repeated header, last wins": {Headers: h(append(base, "ce_id", "id-2")...)},
		"time with an offset":        {Headers: h(append(base, "ce_time", "2026-11-22T02:02:03+01:00")...)},
		"other headers ignored":      {Headers: h(append(base, "kevents-trace", "x")...)},
		"empty value":                {Value: []byte{}, Headers: h(base...)},
		"no id":                      {Headers: h("ce_specversion", "1.0", "ce_source", "s", "ce_type", "t")},
		"blank id":                   {Headers: h("ce_specversion", "1.0", "ce_id", "  ", "ce_source", "s", "ce_type", "t")},
		"malformed time":             {Headers: h(append(base, "ce_time", "yesterday")...)},
		"malformed source":           {Headers: h("ce_specversion", "1.0", "ce_id", "i", "ce_source", "%zz", "ce_type", "t")},
		"bad extension name":         {Headers: h(append(base, "ce_bad-name", "x")...)},
		"blank type":                 {Headers: h("ce_specversion", "1.0", "ce_id", "i", "ce_source", "s", "ce_type", " ")},
		"blank source":               {Headers: h("ce_specversion", "1.0", "ce_id", "i", "ce_source", " ", "ce_type", "t")},
		"malformed content type":     {Headers: h(append(base, "content-type", "application/")...)},
		"blank content type":         {Headers: h(append(base, "content-type", " ")...)},
		"content type with params":   {Headers: h(append(base, "content-type", "text/plain; charset=utf-8")...)},
	}
	// Twice: the second pass decodes with the source and media type caches filled.
	for pass := range 2 {
		for name, r := range cases {
			t.Run(fmt.Sprintf("%s/pass-%d", name, pass+1), func(t *testing.T) {
				fast, ok, fastErr := fromBinaryV1(r)
				if !ok {
					t.Fatal("the direct path declined a lower-case 1.0 record")
				}
				m := recordMessage{rec: r, version: specs.Version("1.0")}
				slow, slowErr := binding.ToEvent(context.Background(), &m)
				if slowErr == nil {
					slowErr = slow.Validate()
				}
				if (fastErr == nil) != (slowErr == nil) {
					t.Fatalf("direct path error %v, binding error %v", fastErr, slowErr)
				}
				if fastErr != nil {
					return
				}
				fj, _ := fast.MarshalJSON()
				sj, _ := slow.MarshalJSON()
				if string(fj) != string(sj) {
					t.Errorf("direct path %s\nbinding     %s", fj, sj)
				}
			})
		}
	}
	if _, ok, _ := fromBinaryV1(&kgo.Record{Headers: h(append(base, "CE_Subject", "x")...)}); ok {
		t.Error("an upper-case header name must go to the binding, which matches names case-insensitively")
	}
}

// TestSourceIsSourceString decodes records of more distinct sources than Source has slots, in
// several rounds, and wants Source to give what the event's own Source gives for each, as well as
// for events that were not decoded here.
func TestSourceIsSourceString(t *testing.T) {
	var sources []string
	for i := range 600 {
		sources = append(sources, fmt.Sprintf("/src/%d", i), fmt.Sprintf("https://user@host-%d.example.com:8443/p/%d?q=%d#f", i%7, i, i))
	}
	sources = append(sources, "https://example.com", "urn:kevents:x", "a b", "", "/ü/%41")
	for round := range 3 {
		for i, src := range sources {
			r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte("1")},
				{Key: "ce_source", Value: []byte(src)}, {Key: "ce_type", Value: []byte("t")}}}
			e, err := FromRecord(r)
			if err != nil {
				if src == "" {
					continue // no source is not an event
				}
				t.Fatalf("source %q: %v", src, err)
			}
			if got, want := Source(e), e.Source(); got != want {
				t.Fatalf("round %d, source %d %q: Source %q, want %q", round, i, src, got, want)
			}
		}
	}
	e := event.New()
	e.SetSource("https://not.decoded.example.com/x")
	if got := Source(&e); got != e.Source() {
		t.Fatalf("an event built by hand: Source %q, want %q", got, e.Source())
	}
}

// TestParseTimeIsTimeParse holds parseTime to time.Parse(RFC3339Nano): the same time, to the
// location, or an error, over random times in every fraction length and strings that are not
// quite the fast path's form.
func TestParseTimeIsTimeParse(t *testing.T) {
	inputs := []string{"2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-12-06T24:00:00Z",
		"2026-12-06T23:60:00Z", "2026-12-06T23:59:60Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
		"2026-12-06T15:00:00.Z", "2026-12-06T15:00:00.1234567891Z", "2026-12-06T15:00:00,5Z", "2026-12-06t15:00:00z",
		"2026-12-06T15:00:00+01:00", "2026-12-06T15:00:00.5-00:00", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
		"2026-1a-01T00:00:00Z", "2026-12-06T15:00:00", "2026-12-06 15:00:00Z", "", "Z", "2026-12-06T15:00:0Z"}
	rng := rand.New(rand.NewPCG(7, 8))
	lo, hi := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
	for range 100000 {
		ns := rng.Int64N(1e9)
		ns -= ns % []int64{1, 10, 1000, 1e6, 1e8, 1e9}[rng.IntN(6)]
		tm := time.Unix(lo+rng.Int64N(hi-lo), ns).UTC()
		inputs = append(inputs, tm.Format(time.RFC3339Nano), tm.Format("2006-01-02T15:04:05.000000Z"))
	}
	for _, in := range inputs {
		want, wantErr := time.Parse(time.RFC3339Nano, in)
		got, err := parseTime([]byte(in))
		if (err == nil) != (wantErr == nil) || got != want {
			t.Fatalf("%q: parseTime = %v (%v), time.Parse = %v (%v)", in, got, err, want, wantErr)
		}
	}
}
