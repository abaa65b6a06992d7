package cloudevent_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kevents/kevents/internal/cloudevent"
)

// saramaConfig returns a sarama configuration kfake accepts. Only producers and
// partition consumers are used: sarama consumer groups fail against kfake (see
// ENVIRONMENT.md).
func saramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_1_0_0
	cfg.ClientID = "cloudevent-compat-test"
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Return.Errors = true
	return cfg
}

// kafkaSaramaExtensions are added by kafka_sarama.NewMessageFromConsumerMessage
// to every event it reads.
var kafkaSaramaExtensions = []string{"kafkaoffset", "kafkapartition", "kafkatopic"}

// TestWireCompatToSarama: events produced with kgo and ToRecord decode with the
// SDK's reference Kafka binding (kafka_sarama) read through a sarama partition
// consumer.
func TestWireCompatToSarama(t *testing.T) {
	addrs := newCluster(t)
	cl := newClient(t, addrs)
	samples := sampleEvents(t)
	ctx := context.Background()
	for _, s := range samples {
		r, err := cloudevent.ToRecord(ctx, s.e, topic, nil)
		if err != nil {
			t.Fatalf("%s: ToRecord: %v", s.name, err)
		}
		produce(t, cl, r)
	}

	consumer, err := sarama.NewConsumer(addrs, saramaConfig())
	if err != nil {
		t.Fatalf("sarama.NewConsumer: %v", err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatalf("ConsumePartition: %v", err)
	}
	defer pc.Close()

	timeout := time.After(20 * time.Second)
	for i, s := range samples {
		var cm *sarama.ConsumerMessage
		select {
		case cm = <-pc.Messages():
		case err := <-pc.Errors():
			t.Fatalf("sarama consumer: %v", err)
		case <-timeout:
			t.Fatalf("sarama consumed %d of %d messages", i, len(samples))
		}
		t.Run(s.name, func(t *testing.T) {
			msg := kafka_sarama.NewMessageFromConsumerMessage(cm)
			if enc := msg.ReadEncoding(); enc != binding.EncodingBinary {
				t.Fatalf("kafka_sarama sees encoding %v, want binary", enc)
			}
			got, err := binding.ToEvent(ctx, msg)
			if err != nil {
				t.Fatalf("binding.ToEvent: %v", err)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("decoded event is invalid: %v", err)
			}
			assertSameEvent(t, s.e, *got, kafkaSaramaExtensions...)
			if pk, ok := s.e.Extensions()["partitionkey"]; ok && string(cm.Key) != pk {
				t.Errorf("key: got %q, want partitionkey %q", cm.Key, pk)
			}
		})
	}
}

// TestWireCompatFromSarama: events written by the SDK's reference Kafka binding
// (kafka_sarama.WriteProducerMessage, binary mode, and structured mode) through
// a sarama SyncProducer decode with FromRecord from records consumed with kgo;
// the binary records carry exactly the headers, key and value ToRecord writes.
func TestWireCompatFromSarama(t *testing.T) {
	addrs := newCluster(t)
	samples := sampleEvents(t)
	ctx := context.Background()

	producer, err := sarama.NewSyncProducer(addrs, saramaConfig())
	if err != nil {
		t.Fatalf("sarama.NewSyncProducer: %v", err)
	}
	defer producer.Close()
	send := func(ctx context.Context, e event.Event) {
		t.Helper()
		pm := &sarama.ProducerMessage{Topic: topic}
		if err := kafka_sarama.WriteProducerMessage(ctx, binding.ToMessage(&e), pm); err != nil {
			t.Fatalf("WriteProducerMessage: %v", err)
		}
		if _, _, err := producer.SendMessage(pm); err != nil {
			t.Fatalf("SendMessage: %v", err)
		}
	}
	for _, s := range samples {
		send(ctx, s.e) // binary mode, the default
	}
	// Structured mode, except for data that is not JSON without a
	// datacontenttype: JSON format then takes the data for JSON and the SDK
	// fails to marshal it.
	var structured []namedEvent
	for _, s := range samples {
		if s.e.DataContentType() == "" && len(s.e.Data()) > 0 {
			continue
		}
		structured = append(structured, s)
		send(binding.WithForceStructured(ctx), s.e)
	}

	recs := consume(t, newClient(t, addrs), len(samples)+len(structured))
	for i, s := range samples {
		t.Run("binary/"+s.name, func(t *testing.T) {
			r := recs[i]
			if _, ok := header(r, "ce_specversion"); !ok {
				t.Fatalf("kafka_sarama record has no ce_specversion header: %q", headerList(r.Headers))
			}
			got, err := cloudevent.FromRecord(r)
			if err != nil {
				t.Fatalf("FromRecord: %v", err)
			}
			assertSameEvent(t, s.e, *got)

			// Same bytes on the wire as ToRecord.
			mine, err := cloudevent.ToRecord(ctx, s.e, topic, nil)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := headerList(r.Headers), headerList(mine.Headers); !slices.Equal(g, w) {
				t.Errorf("headers differ:\nkafka_sarama %q\n    ToRecord %q", g, w)
			}
			if string(r.Key) != string(mine.Key) {
				t.Errorf("key: kafka_sarama %q, ToRecord %q", r.Key, mine.Key)
			}
			if string(r.Value) != string(mine.Value) {
				t.Errorf("value: kafka_sarama %q, ToRecord %q", r.Value, mine.Value)
			}
		})
	}
	for i, s := range structured {
		t.Run("structured/"+s.name, func(t *testing.T) {
			r := recs[len(samples)+i]
			if ct, _ := header(r, "content-type"); ct != event.ApplicationCloudEventsJSON {
				t.Fatalf("content-type: got %q, want %q", ct, event.ApplicationCloudEventsJSON)
			}
			got, err := cloudevent.FromRecord(r)
			if err != nil {
				t.Fatalf("FromRecord: %v", err)
			}
			assertSameEvent(t, s.e, *got)
		})
	}
}
