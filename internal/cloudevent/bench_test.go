package cloudevent_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/internal/cloudevent"
)

// benchEvent is a typical source event: a webhook body of 256 bytes with the
// attributes kevents sources set and a trace context.
func benchEvent(b *testing.B) event.Event {
	e := event.New()
	e.SetID("0d1b0c4e-3f7a-4e55-9f0e-2b7f4f6c9a11")
	e.SetSource("webhook-eventsource")
	e.SetType("webhook")
	e.SetSubject("example")
	e.SetTime(time.Date(2026, 11, 21, 10, 11, 12, 123456789, time.UTC))
	e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	body := append([]byte(`{"message":"`), bytes.Repeat([]byte("x"), 256-15)...)
	body = append(body, `"}`...)
	if err := e.SetData(event.ApplicationJSON, body); err != nil {
		b.Fatal(err)
	}
	return e
}

func BenchmarkToRecord(b *testing.B) {
	e := benchEvent(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudevent.ToRecord(ctx, e, "kevents.src.default.webhook", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFromRecord(b *testing.B) {
	r, err := cloudevent.ToRecord(context.Background(), benchEvent(b), "kevents.src.default.webhook", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cloudevent.FromRecord(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKafkaSaramaReference measures the SDK's own Kafka binding on the
// same event, for comparison (codec only, no broker).
func BenchmarkKafkaSaramaReference(b *testing.B) {
	e := benchEvent(b)
	ctx := context.Background()
	b.Run("write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pm := &sarama.ProducerMessage{Topic: "kevents.src.default.webhook"}
			if err := kafka_sarama.WriteProducerMessage(ctx, binding.ToMessage(&e), pm); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read", func(b *testing.B) {
		r, err := cloudevent.ToRecord(ctx, e, "kevents.src.default.webhook", nil)
		if err != nil {
			b.Fatal(err)
		}
		cm := &sarama.ConsumerMessage{Topic: r.Topic, Value: r.Value}
		for _, h := range r.Headers {
			cm.Headers = append(cm.Headers, &sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := binding.ToEvent(ctx, kafka_sarama.NewMessageFromConsumerMessage(cm)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
