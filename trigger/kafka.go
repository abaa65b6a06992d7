package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/secrets"
)

// KafkaCommandIDHeader is the record header that carries the command id, so a consumer of the
// target topic can drop a repeat.
const KafkaCommandIDHeader = "kevents-command-id"

// kafkaDeliveryTimeout bounds one produce, whatever the caller's context: a record that the
// brokers did not acknowledge by then fails.
const kafkaDeliveryTimeout = 60 * time.Second

// KafkaRequest is the rendered record of a kafka trigger and the connection to produce it with.
// It carries no secret: TLS and SASL hold Secret references, resolved by the executor.
type KafkaRequest struct {
	// Brokers are the seed brokers: Argo's comma-separated url, split and trimmed.
	Brokers []string `json:"brokers"`
	Topic   string   `json:"topic"`
	// Key is the record key (Argo's partitioningKey); nil produces a record without a key.
	Key *string `json:"key,omitempty"`
	// Value is the payload built from the trigger's payload parameters.
	Value []byte `json:"value"`
	// Headers are the trigger's headers; the executor adds KafkaCommandIDHeader.
	Headers map[string]string `json:"headers,omitempty"`
	// RequiredAcks is -1 (all in-sync replicas, Argo's default) or 1 (the leader only).
	RequiredAcks int16 `json:"requiredAcks"`
	// Compress compresses record batches with snappy, as Argo does.
	Compress bool           `json:"compress,omitempty"`
	TLS      *api.TLSConfig `json:"tls,omitempty"`
	// SASL has its mechanism normalised: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	SASL *api.SASLConfig `json:"sasl,omitempty"`
}

func init() {
	Register("kafka", Spec{
		Summary: "Produces a record built from the events to a Kafka topic.",
		Render:  renderKafka,
		Check:   func(t *api.TriggerTemplate) error { return checkKafka(t.Kafka) },
	}, func(env Env) (Executor, error) {
		x := &kafkaExecutor{secrets: env.Secrets, clients: map[string]*kafkaClient{}}
		if env.Bus != nil {
			x.once = &onceProducer{bus: env.Bus}
		}
		return x, nil
	})
}

// kafkaVersion is what Argo (sarama.ParseKafkaVersion) accepts as a Kafka version.
var kafkaVersion = regexp.MustCompile(`^(\d+\.\d+\.\d+|0\.\d+\.\d+\.\d+)$`)

// checkKafka validates a kafka trigger; Render runs it again once the parameters are applied.
func checkKafka(k *api.KafkaTrigger) error {
	if len(k.SchemaRegistry) > 0 && string(k.SchemaRegistry) != "null" {
		return api.NotSupported("kafka trigger field", "schemaRegistry")
	}
	if len(k.SecureHeaders) > 0 {
		return api.NotSupported("kafka trigger field", "secureHeaders")
	}
	if len(kafkaBrokers(k.URL)) == 0 {
		return fmt.Errorf("kafka.url: %q; expected one or more comma-separated brokers", k.URL)
	}
	if k.Topic == "" {
		return errors.New("kafka.topic: must not be empty")
	}
	if k.Payload == nil {
		return errors.New("kafka.payload: must not be empty")
	}
	if _, err := kafkaAcks(k.RequiredAcks); err != nil {
		return err
	}
	if k.Version != "" && !kafkaVersion.MatchString(k.Version) {
		return fmt.Errorf("kafka.version: %q; expected a Kafka version such as 2.8.1", k.Version)
	}
	if k.SASL != nil {
		if _, err := kafkaMechanism(k.SASL.Mechanism); err != nil {
			return err
		}
		if k.SASL.UserSecret == nil || k.SASL.PasswordSecret == nil {
			return errors.New("kafka.sasl: userSecret and passwordSecret are both required")
		}
	}
	if k.TLS != nil {
		return k.TLS.Check("kafka.tls")
	}
	return nil
}

// kafkaBrokers splits Argo's comma-separated url.
func kafkaBrokers(url string) []string {
	var out []string
	for _, b := range strings.Split(url, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// kafkaAcks maps Argo's requiredAcks: 0 is unset, which Argo's code (not its doc, which says 1)
// turns into all in-sync replicas.
func kafkaAcks(v int32) (int16, error) {
	switch v {
	case 0, -1:
		return -1, nil
	case 1:
		return 1, nil
	}
	return 0, fmt.Errorf("kafka.requiredAcks: %d; expected 1 (leader) or -1 (all in-sync replicas, the default)", v)
}

// kafkaMechanism normalises a SASL mechanism. Argo falls back to PLAIN for an empty value.
func kafkaMechanism(m string) (string, error) {
	switch u := strings.ToUpper(m); u {
	case "", "PLAIN":
		return "PLAIN", nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		return u, nil
	case "OAUTHBEARER", "GSSAPI":
		return "", api.NotSupported("kafka trigger sasl mechanism", u)
	}
	return "", fmt.Errorf("kafka.sasl.mechanism: %q; expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", m)
}

func renderKafka(in RenderInput) (json.RawMessage, error) {
	k := *in.Template.Kafka
	if len(k.Parameters) > 0 {
		doc, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		if doc, err = in.Params.Apply(doc, k.Parameters); err != nil {
			return nil, fmt.Errorf("kafka.parameters: %w", err)
		}
		k = api.KafkaTrigger{}
		if err := json.Unmarshal(doc, &k); err != nil {
			return nil, fmt.Errorf("kafka.parameters: result is not a kafka trigger: %w", err)
		}
	}
	if err := checkKafka(&k); err != nil {
		return nil, err
	}
	value, err := in.Params.Payload(k.Payload)
	if err != nil {
		return nil, fmt.Errorf("kafka.payload: %w", err)
	}
	acks, _ := kafkaAcks(k.RequiredAcks)
	req := KafkaRequest{
		Brokers: kafkaBrokers(k.URL), Topic: k.Topic, Key: k.PartitioningKey, Value: value,
		Headers: k.Headers, RequiredAcks: acks, Compress: k.Compress, TLS: k.TLS,
	}
	if k.SASL != nil {
		s := *k.SASL
		s.Mechanism, _ = kafkaMechanism(s.Mechanism)
		req.SASL = &s
	}
	return json.Marshal(req)
}

// kafkaExecutor keeps one producer per connection (brokers, TLS, SASL, acks, compression),
// created on first use and shared by concurrent commands.
type kafkaExecutor struct {
	secrets secrets.Resolver
	opts    []kgo.Opt // extra client options, for tests
	// once writes to the bus exactly once; nil when the bus is unknown (tests of the type alone).
	once *onceProducer

	mu      sync.Mutex
	clients map[string]*kafkaClient
}

// kafkaClient is a producer and the last error connecting to its brokers: kgo retries a broker
// that is down or refuses the credentials until the record times out, and the produce error
// alone says only that.
type kafkaClient struct {
	*kgo.Client
	mu      sync.Mutex
	connErr error // nil once a connection succeeds
}

// OnBrokerConnect implements kgo.HookBrokerConnect; err covers dialing, TLS and SASL.
func (c *kafkaClient) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		err = fmt.Errorf("%s: %w", net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)
	}
	c.mu.Lock()
	c.connErr = err
	c.mu.Unlock()
}

func (c *kafkaClient) lastConnErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connErr
}

var _ io.Closer = (*kafkaExecutor)(nil)

func (x *kafkaExecutor) Execute(ctx context.Context, cmd *Command) error {
	var r KafkaRequest
	if err := json.Unmarshal(cmd.Spec, &r); err != nil {
		return fmt.Errorf("kafka trigger: malformed command %s: %w", cmd.ID, err)
	}
	if len(r.Brokers) == 0 || r.Topic == "" {
		return fmt.Errorf("kafka trigger: malformed command %s: no brokers or no topic", cmd.ID)
	}
	target := fmt.Sprintf("topic %s on %s", r.Topic, strings.Join(r.Brokers, ","))
	cl, err := x.client(&r)
	if err != nil {
		return fmt.Errorf("kafka trigger: %s: %w", target, err)
	}
	rec := &kgo.Record{Topic: r.Topic, Value: r.Value}
	if rec.Value == nil {
		rec.Value = []byte{} // a null value is a tombstone; an empty payload is not
	}
	if r.Key != nil {
		rec.Key = []byte(*r.Key)
	}
	names := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		if k != KafkaCommandIDHeader {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(r.Headers[k])})
	}
	rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: KafkaCommandIDHeader, Value: []byte(cmd.ID)})

	ctx, cancel := context.WithTimeout(ctx, kafkaDeliveryTimeout)
	defer cancel()
	if x.once != nil && x.once.bus.onTheBus(&r) {
		if err := x.once.produce(ctx, cmd, rec); err != nil {
			return fmt.Errorf("kafka trigger: produce to %s exactly once: %w", target, err)
		}
		return nil
	}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		if connErr := cl.lastConnErr(); connErr != nil {
			return fmt.Errorf("kafka trigger: produce to %s: %w (last connection error: %w)", target, err, connErr)
		}
		return fmt.Errorf("kafka trigger: produce to %s: %w", target, err)
	}
	return nil
}

// client returns the producer for r's connection, creating it on first use.
func (x *kafkaExecutor) client(r *KafkaRequest) (*kafkaClient, error) {
	id, _ := json.Marshal([]any{r.Brokers, r.TLS, r.SASL, r.RequiredAcks, r.Compress})
	x.mu.Lock()
	defer x.mu.Unlock()
	if cl, ok := x.clients[string(id)]; ok {
		return cl, nil
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(r.Brokers...),
		// Argo's sarama asks brokers to create a missing topic when they allow it.
		kgo.AllowAutoTopicCreation(),
		// Sarama's hash partitioner, so a key lands on the partition it did under Argo.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaCompatHasher(kafkaFNV1a))),
		kgo.RecordDeliveryTimeout(kafkaDeliveryTimeout),
	}
	// kgo compresses with snappy by default; Argo does only when compress is set.
	if r.Compress {
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	} else {
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	}
	if r.RequiredAcks == 1 {
		// Idempotent writes need acks from all in-sync replicas.
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	}
	if r.TLS != nil {
		cfg, err := x.secrets.TLSConfig("kafka.tls", r.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if r.SASL != nil {
		m, err := kclient.SASL(x.secrets, "kafka.sasl", r.SASL.Mechanism, r.SASL)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	cl := &kafkaClient{}
	opts = append(opts, kgo.WithHooks(cl))
	var err error
	if cl.Client, err = kgo.NewClient(append(opts, x.opts...)...); err != nil {
		return nil, err
	}
	x.clients[string(id)] = cl
	return cl, nil
}

// Close closes the producers.
func (x *kafkaExecutor) Close() error {
	if x.once != nil {
		x.once.close()
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, cl := range x.clients {
		cl.Close()
		delete(x.clients, id)
	}
	return nil
}

func kafkaFNV1a(b []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(b)
	return h.Sum32()
}
