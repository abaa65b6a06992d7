package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/time/rate"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kclient"
)

// kafkaSourcePollRecords bounds the records handled between two chances to rebalance.
const kafkaSourcePollRecords = 500

// kafkaSourceMaxBackoff caps the wait between two attempts to publish the same record, unless
// connectionBackoff.duration is longer.
const kafkaSourceMaxBackoff = 30 * time.Second

func init() {
	Register("kafka", Spec{
		Summary: "Consumes a topic of your Kafka cluster in a consumer group; commits a record's offset only after the bus acknowledged its event.",
		Check: func(ev api.Event) error {
			k, specErr := specOf[api.KafkaEventSource](ev)
			if specErr != nil {
				return specErr
			}
			_, err := parseKafkaSource(k)
			return err
		},
	}, newKafkaSource)
}

// kafkaEventData is the data of a kafka event, as Argo Events shapes it (events.KafkaEventData):
// the key and headers as strings, the partition, the record timestamp as Go's time.Time.String
// in UTC (Argo formats it in the pod's time zone, UTC in its images), and the value as body:
// with jsonBody the JSON value itself, else the bytes (base64 in JSON). A record without a value
// has a null body.
type kafkaEventData struct {
	Topic     string            `json:"topic"`
	Key       string            `json:"key"`
	Partition int               `json:"partition"`
	Body      any               `json:"body"`
	Timestamp string            `json:"timestamp"`
	Headers   map[string]string `json:"headers"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// kafkaSourceSettings is an event's spec, checked and normalised.
type kafkaSourceSettings struct {
	brokers   []string
	group     string // empty: derived from the source topic and event name
	partition int32  // the only partition to consume; -1: all
	oldest    bool
	balancer  kgo.GroupBalancer
	limit     int64
	backoff   kafkaSourceBackoff
	mechanism string // normalised SASL mechanism, when SASL is set
	config    *kafkaConfig
}

// kafkaSourceBackoff is the wait between attempts to publish one record: duration, multiplied
// by factor after each failure up to kafkaSourceMaxBackoff, plus up to jitter times it at
// random. Argo's steps is not used: the source retries until the record is published, since
// giving up would skip it.
type kafkaSourceBackoff struct {
	first, max     time.Duration
	factor, jitter float64
}

func (b kafkaSourceBackoff) next(d time.Duration) time.Duration {
	n := time.Duration(float64(d) * b.factor)
	if n > b.max || n <= 0 {
		n = b.max
	}
	return n
}

func (b kafkaSourceBackoff) withJitter(d time.Duration) time.Duration {
	if b.jitter <= 0 {
		return d
	}
	return d + time.Duration(rand.Float64()*b.jitter*float64(d)) //nolint:gosec // spreading retries
}

// kafkaSourceVersion is what Argo (sarama.ParseKafkaVersion) accepts as a Kafka version.
var kafkaSourceVersion = regexp.MustCompile(`^(\d+\.\d+\.\d+|0\.\d+\.\d+\.\d+)$`)

// parseKafkaSource validates a kafka event and returns its settings. Errors name the field (the
// caller adds spec.kafka.<event>) and never a secret value: the spec holds only references.
func parseKafkaSource(k api.KafkaEventSource) (*kafkaSourceSettings, error) {
	const what = "kafka eventsource field"
	set := func(o api.Opaque) bool { return len(o) > 0 && string(o) != "null" }
	switch {
	case set(k.SchemaRegistry):
		return nil, api.NotSupported(what, "schemaRegistry")
	case set(k.AWSMSKIAMAuth):
		return nil, api.NotSupported(what, "awsMskIamAuth")
	}
	s := &kafkaSourceSettings{partition: -1, limit: k.LimitEventsPerSecond}
	var errs []error
	for _, b := range strings.Split(k.URL, ",") {
		if b = strings.TrimSpace(b); b != "" {
			s.brokers = append(s.brokers, b)
		}
	}
	if len(s.brokers) == 0 {
		errs = append(errs, fmt.Errorf("url: %q; expected one or more comma-separated brokers (host:port)", k.URL))
	}
	if k.Topic == "" {
		errs = append(errs, errors.New("topic: missing"))
	}
	if k.Partition != "" {
		p, err := strconv.ParseInt(k.Partition, 10, 32)
		if err != nil || p < 0 {
			errs = append(errs, fmt.Errorf("partition: %q; expected a partition number", k.Partition))
		} else if k.ConsumerGroup == nil {
			s.partition = int32(p)
		}
	}
	if k.ConsumerGroup == nil && k.Partition == "" {
		errs = append(errs, errors.New("consumerGroup or partition: neither is set; expected one (Argo requires it too)"))
	}
	s.balancer = kgo.RangeBalancer()
	if g := k.ConsumerGroup; g != nil {
		s.group = g.GroupName
		s.oldest = g.Oldest
		switch g.RebalanceStrategy {
		case "", "range":
		case "sticky":
			s.balancer = kgo.StickyBalancer()
		case "roundrobin":
			s.balancer = kgo.RoundRobinBalancer()
		default:
			errs = append(errs, fmt.Errorf("consumerGroup.rebalanceStrategy: %q; expected range (the default), sticky or roundrobin", g.RebalanceStrategy))
		}
	}
	if k.LimitEventsPerSecond < 0 {
		errs = append(errs, fmt.Errorf("limitEventsPerSecond: %d; expected a number of events >= 0 (0: no limit)", k.LimitEventsPerSecond))
	}
	if k.Version != "" && !kafkaSourceVersion.MatchString(k.Version) {
		errs = append(errs, fmt.Errorf("version: %q; expected a Kafka version such as 2.8.1", k.Version))
	}
	if k.SASL != nil {
		switch u := strings.ToUpper(k.SASL.Mechanism); u {
		case "", "PLAIN": // Argo falls back to PLAIN
			s.mechanism = "PLAIN"
		case "SCRAM-SHA-256", "SCRAM-SHA-512":
			s.mechanism = u
		case "OAUTHBEARER", "GSSAPI":
			return nil, api.NotSupported("kafka eventsource sasl mechanism", u)
		default:
			errs = append(errs, fmt.Errorf("sasl.mechanism: %q; expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.SASL.Mechanism))
		}
		for _, ref := range []struct {
			field string
			sel   *api.SecretKeySelector
		}{{"sasl.userSecret", k.SASL.UserSecret}, {"sasl.passwordSecret", k.SASL.PasswordSecret}} {
			if ref.sel == nil || ref.sel.Name == "" || ref.sel.Key == "" {
				errs = append(errs, fmt.Errorf("%s: missing; expected a secret name and key", ref.field))
			}
		}
	}
	if t := k.TLS; t != nil {
		cert, key := t.ClientCertSecret != nil, t.ClientKeySecret != nil
		// Argo's GetTLSConfig: insecureSkipVerify alone is enough, else something must be set.
		if !t.InsecureSkipVerify && !t.Enabled && t.CACertSecret == nil && !cert && !key {
			errs = append(errs, errors.New("tls: empty; set enabled, insecureSkipVerify, caCertSecret or clientCertSecret and clientKeySecret"))
		}
		if cert != key {
			errs = append(errs, errors.New("tls: clientCertSecret and clientKeySecret go together"))
		}
	}
	b, err := parseKafkaSourceBackoff(k.ConnectionBackoff)
	if err != nil {
		errs = append(errs, err)
	}
	s.backoff = b
	if s.config, err = parseKafkaConfig(k.Config); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// parseKafkaSourceBackoff reads Argo's connectionBackoff: an integer duration is nanoseconds, a
// string a Go duration; factor and jitter are numbers (or numeric strings).
func parseKafkaSourceBackoff(b *api.Backoff) (kafkaSourceBackoff, error) {
	out := kafkaSourceBackoff{first: time.Second, factor: 2, max: kafkaSourceMaxBackoff}
	if b == nil {
		return out, nil
	}
	if len(b.Duration) > 0 && string(b.Duration) != "null" {
		s := strings.Trim(string(b.Duration), `"`)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			out.first = time.Duration(n)
		} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
			out.first = d
		} else {
			return out, fmt.Errorf("connectionBackoff.duration: %s; expected a positive duration such as \"10s\"", b.Duration)
		}
	}
	if len(b.Factor) > 0 && string(b.Factor) != "null" {
		f, err := strconv.ParseFloat(strings.Trim(string(b.Factor), `"`), 64)
		if err != nil || f < 1 {
			return out, fmt.Errorf("connectionBackoff.factor: %s; expected a number >= 1", b.Factor)
		}
		out.factor = f
	}
	if len(b.Jitter) > 0 && string(b.Jitter) != "null" {
		j, err := strconv.ParseFloat(strings.Trim(string(b.Jitter), `"`), 64)
		if err != nil || j < 0 {
			return out, fmt.Errorf("connectionBackoff.jitter: %s; expected a number >= 0", b.Jitter)
		}
		out.jitter = j
	}
	if out.first > out.max {
		out.max = out.first
	}
	return out, nil
}

// kafkaSource is the kafka source: it consumes a topic of the user's Kafka cluster (not
// kevents' bus) and turns every record into an event.
//
// Consumer group. kevents always consumes in a consumer group of the user's cluster, so that
// several kevents source members compete for the topic's partitions and the position survives
// restarts:
//   - consumerGroup.groupName names the group, as in Argo (so a kevents member can take over
//     from, or run beside, Argo's sarama members: the balancer protocol names are the same).
//   - Without consumerGroup (or with an empty groupName) the group is derived from the
//     EventSource and event: "<source topic>.<event>", e.g. "kevents.src.default.kafka.example".
//     Argo then reads the single partition `partition` with a plain partition consumer that
//     starts at the newest offset on every start and commits nothing: events produced while it
//     is down are lost, and two replicas would both deliver every record. kevents keeps the
//     meaning of `partition` (only that partition is consumed; the others the group assigns to
//     a member are paused and never committed) but reads it in the derived group: one member
//     at a time owns it, and a restart resumes where the last one stopped.
//   - With consumerGroup, `partition` is ignored, as in Argo.
//
// Start offset. consumerGroup.oldest (or config's consumer.offsets.initial: -2) starts a
// partition without a committed offset at its first record, else at its end (Argo: sarama's Offsets.Initial, newest by default). When a partition
// without a committed offset is assigned, kevents commits that starting offset before reading:
// from then on a restart resumes there, even if nothing was delivered yet. Without it a source
// that was stopped before its first commit would restart "at the end" and skip what arrived.
//
// Acknowledgement. A record's offset is marked for commit only after Publisher.Publish returned
// nil for its event (Kafka, the bus, acknowledged it), and the marks are committed every second
// (sarama's interval), when partitions are revoked and on shutdown (AutoCommitMarks). The events
// of one partition's polled records are published concurrently and marked in offset order; when
// Publish fails the same record is published again after a backoff until it succeeds or the
// source stops, and no later record of that partition is marked meanwhile, so a committed offset
// never passes an event that is not in Kafka. Later records may be in Kafka before a retried
// one: after a failure the bus can see a partition's events out of order (Argo's Kafka source
// publishes them one at a time). Rebalances wait for the records being handled (BlockRebalanceOnPoll): a member whose
// bus is down for longer than the group's rebalance timeout is dropped from the group, and the
// records it was retrying are delivered by the next owner from the last commit. A crash after a
// publish and before the commit delivers that record again: duplicates, with the same event id,
// never loss.
//
// Permanent rejections are skipped (their offset is committed) with an error log, so they do not
// stop the partition forever: a jsonBody record whose value is not JSON (Argo also drops it) and
// an event larger than the bus accepts (topology.MaxRecordBytes).
//
// config is Argo's sarama YAML; the settings franz-go has an equivalent for are applied on top
// of the defaults above (see kafkaConfig).
//
// limitEventsPerSecond caps the events this member publishes per second for the event, over all
// its partitions (Argo sleeps 1/limit after each record of each partition it consumes). version
// is only checked: kgo negotiates protocol versions with the brokers.
//
// Event. id is Argo's "<eventsource>:<event>:<first url>:<topic>:<partition>:<offset>", stable
// across redeliveries; data is Argo's KafkaEventData (see kafkaEventData).
type kafkaSource struct {
	b       Build
	cfg     api.KafkaEventSource
	set     *kafkaSourceSettings
	group   string
	limiter *rate.Limiter // nil: no limit
	log     *slog.Logger
	opts    []kgo.Opt

	connMu      sync.Mutex
	lastConnErr string // the last connection error logged, to log each change once
	// health is set by Run before the client exists, so kgo's hooks see it.
	health *sourceHealth
}

func newKafkaSource(b Build) (Source, error) {
	cfg, specErr := specOf[api.KafkaEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	set, err := parseKafkaSource(cfg)
	if err != nil {
		return nil, err
	}
	s := &kafkaSource{b: b, cfg: cfg, set: set, group: set.group}
	if s.group == "" {
		s.group = b.Topic + "." + b.Event.Name
	}
	s.log = b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name,
		"brokers", strings.Join(set.brokers, ","), "topic", cfg.Topic, "group", s.group)
	if set.limit > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(set.limit), 1)
	}
	// As in Argo, consumerGroup.oldest wins over the config's consumer.offsets.initial.
	set.oldest = set.oldest || set.config.oldest
	reset := kgo.NewOffset().AtEnd()
	if set.oldest {
		reset = kgo.NewOffset().AtStart()
	}
	isolation, commitEvery := kgo.ReadCommitted(), time.Second
	if set.config.readUncommitted {
		isolation = kgo.ReadUncommitted()
	}
	if set.config.commitInterval > 0 {
		commitEvery = set.config.commitInterval
	}
	s.opts = []kgo.Opt{
		kgo.SeedBrokers(set.brokers...),
		kgo.ClientID("kevents-source"),
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(reset),
		kgo.Balancers(set.balancer),
		// Records of aborted transactions are not events, unless the config asks for them.
		kgo.FetchIsolationLevel(isolation),
		kgo.BlockRebalanceOnPoll(),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(commitEvery),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.WithHooks(s),
	}
	// The config's options come after the defaults above, so they replace them.
	s.opts = append(s.opts, set.config.opts...)
	if id := set.config.instanceID; id != "" {
		// Every member runs the same spec: the member name keeps their static ids apart, and
		// stable across a member's restarts.
		if b.Env.Member != "" {
			id += "-" + b.Env.Member
		}
		s.opts = append(s.opts, kgo.InstanceID(id))
	}
	if len(set.config.noEffect) > 0 {
		s.log.Warn("kafka source: config settings accepted without effect", "settings", strings.Join(set.config.noEffect, "; "))
	}
	if cfg.TLS != nil {
		tc, err := s.b.Env.Secrets.TLSConfig("tls", cfg.TLS)
		if err != nil {
			return nil, err
		}
		s.opts = append(s.opts, kgo.DialTLSConfig(tc))
	}
	if cfg.SASL != nil {
		m, err := kclient.SASL(s.b.Env.Secrets, "sasl", s.set.mechanism, cfg.SASL)
		if err != nil {
			return nil, err
		}
		s.opts = append(s.opts, kgo.SASL(m))
	}
	return s, nil
}

// Run consumes until ctx ends.
func (s *kafkaSource) Run(ctx context.Context) error {
	s.health = newSourceHealth(ctx, s.b)
	defer s.health.stop()
	cl, err := kgo.NewClient(s.opts...)
	if err != nil {
		return fmt.Errorf("kafka eventsource %s event %s: %w", s.b.EventSource.Metadata.Name, s.b.Event.Name, err)
	}
	defer s.close(cl)
	s.log.Info("kafka source: consuming")
	var lastFetchErr string
	for {
		fetches := cl.PollRecords(ctx, kafkaSourcePollRecords)
		if ctx.Err() != nil {
			// Records polled but not handled are not marked: the next owner reads them again.
			cl.AllowRebalance()
			return nil
		}
		var fetchErr error
		for _, e := range fetches.Errors() {
			if !errors.Is(e.Err, context.Canceled) && !errors.Is(e.Err, context.DeadlineExceeded) {
				fetchErr = e.Err
				if msg := e.Err.Error(); msg != lastFetchErr {
					lastFetchErr = msg
					s.log.Warn("kafka source: fetch", "partition", e.Partition, "err", e.Err)
				}
			}
		}
		if fetchErr == nil {
			s.health.set(nil) // records came from the cluster
		}
		s.handleAll(ctx, cl, fetches)
		cl.AllowRebalance()
		if fetchErr != nil && fetches.NumRecords() == 0 {
			// kgo retries by itself; this only keeps a persistent error from spinning.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// close commits what was marked and leaves the group, bounded in time: the user's cluster may be
// the reason the source stops.
func (s *kafkaSource) close(cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		s.log.Warn("kafka source: final commit failed; the last events will be delivered again", "err", err)
	}
	_ = cl.LeaveGroupContext(ctx)
	cl.Close()
}

// handleAll handles the polled records: the partitions concurrently, each with
// handlePartition.
func (s *kafkaSource) handleAll(ctx context.Context, cl *kgo.Client, fetches kgo.Fetches) {
	byPartition := map[int32][]*kgo.Record{}
	var order []int32
	fetches.EachRecord(func(r *kgo.Record) {
		if r.Topic != s.cfg.Topic || (s.set.partition >= 0 && r.Partition != s.set.partition) {
			return // a partition this event does not read (paused; never committed)
		}
		if _, ok := byPartition[r.Partition]; !ok {
			order = append(order, r.Partition)
		}
		byPartition[r.Partition] = append(byPartition[r.Partition], r)
	})
	var wg sync.WaitGroup
	for _, p := range order {
		wg.Add(1)
		go func(recs []*kgo.Record) {
			defer wg.Done()
			s.handlePartition(ctx, cl, recs)
		}(byPartition[p])
	}
	wg.Wait()
}

// kafkaSourceInFlight bounds the events of one partition waiting for Kafka at once.
const kafkaSourceInFlight = kafkaSourcePollRecords

// handlePartition publishes the records of one partition and marks them in offset order, each
// once its event is in Kafka, stopping at the first that is not. With a Publisher that can
// pipeline (AsyncPublisher), first attempts are started in offset order without waiting for
// each other, up to kafkaSourceInFlight (one at a time under limitEventsPerSecond), so the
// producer batches them instead of waiting a round trip per record; a failed one is retried by
// itself, in order, before any later record is marked.
func (s *kafkaSource) handlePartition(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) {
	type pending struct {
		r      *kgo.Record
		e      cloudevents.Event
		skip   bool
		result chan error // the first attempt's outcome
	}
	env := s.b.Env
	async, pipelined := env.Publisher.(AsyncPublisher)
	if !pipelined {
		for _, r := range recs {
			if e, ok := s.prepare(r); ok {
				if s.limiter != nil && s.limiter.Wait(ctx) != nil {
					return
				}
				if !s.publish(ctx, r, e, nil) {
					return
				}
			}
			cl.MarkCommitRecords(r)
		}
		return
	}
	todo := make([]pending, 0, len(recs))
	sem := make(chan struct{}, kafkaSourceInFlight)
	for _, r := range recs {
		e, ok := s.prepare(r)
		p := pending{r: r, e: e, skip: !ok}
		if ok {
			if s.limiter != nil && s.limiter.Wait(ctx) != nil {
				break
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			pctx, cancel := context.WithTimeout(ctx, env.PublishTimeout)
			result := make(chan error, 1)
			p.result = result
			async.PublishAsync(pctx, s.b.Topic, e, func(err error) {
				cancel()
				result <- err
				<-sem
			})
		}
		todo = append(todo, p)
	}
	for _, p := range todo {
		if !p.skip && !s.publish(ctx, p.r, p.e, p.result) {
			return
		}
		cl.MarkCommitRecords(p.r)
	}
}

// prepare counts a received record and builds its event; false means the record is rejected
// for good (logged) and may be committed.
func (s *kafkaSource) prepare(r *kgo.Record) (cloudevents.Event, bool) {
	s.b.Env.Metrics.EventsReceived.WithLabelValues(s.b.EventSource.Metadata.Name, s.b.Event.Name).Inc()
	e, err := s.event(r)
	if err != nil {
		s.log.Error("kafka source: record rejected and skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
		return e, false
	}
	return e, true
}

// publish waits for the outcome of the first attempt, when one was started (first not nil), and
// publishes e, again and again with the backoff, until Kafka acknowledged it. It returns true when the record may be committed (published, or
// permanently rejected) and false when ctx ended first.
func (s *kafkaSource) publish(ctx context.Context, r *kgo.Record, e cloudevents.Event, first <-chan error) bool {
	env := s.b.Env
	ns, es, name := s.b.EventSource.Metadata.Namespace, s.b.EventSource.Metadata.Name, s.b.Event.Name
	log := s.log.With("partition", r.Partition, "offset", r.Offset)
	wait := s.set.backoff.first
	for attempt := 1; ; attempt++ {
		var err error
		if attempt == 1 && first != nil {
			err = <-first
		} else {
			pctx, cancel := context.WithTimeout(ctx, env.PublishTimeout)
			err = env.Publisher.Publish(pctx, s.b.Topic, e)
			cancel()
		}
		if err == nil {
			env.Metrics.Published(ns, es, name, 1)
			return true
		}
		env.Metrics.PublishFailed(ns, es, name, 1)
		if errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
			log.Error("kafka source: event larger than Kafka accepts; record skipped", "bytes", len(e.Data()), "err", err)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d := s.set.backoff.withJitter(wait)
		log.Warn("kafka source: Kafka did not acknowledge the event; retrying the same record, offset not committed",
			"attempt", attempt, "retryIn", d, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
		wait = s.set.backoff.next(wait)
	}
}

// event builds the CloudEvent of a record.
func (s *kafkaSource) event(r *kgo.Record) (cloudevents.Event, error) {
	d := kafkaEventData{
		Topic: r.Topic, Key: string(r.Key), Partition: int(r.Partition),
		Timestamp: r.Timestamp.UTC().String(), Headers: make(map[string]string, len(r.Headers)), Metadata: s.cfg.Metadata,
	}
	for _, h := range r.Headers {
		d.Headers[h.Key] = string(h.Value)
	}
	switch {
	case !s.cfg.JSONBody:
		d.Body = r.Value // nil (no value) is null, else base64
	case len(r.Value) == 0:
		d.Body = nil
	case !json.Valid(r.Value):
		return cloudevents.Event{}, errors.New("jsonBody is set and the record value is not JSON (Argo drops such records too)")
	default:
		d.Body = json.RawMessage(r.Value)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return cloudevents.Event{}, fmt.Errorf("encode the event data: %w", err)
	}
	e := cloudevents.New()
	// Argo's genUniqueID: stable across redeliveries of the record.
	e.SetID(fmt.Sprintf("%s:%s:%s:%s:%d:%d", s.b.EventSource.Metadata.Name, s.b.Event.Name,
		strings.Split(s.cfg.URL, ",")[0], r.Topic, r.Partition, r.Offset))
	e.SetSource(s.b.EventSource.Metadata.Name)
	e.SetSubject(s.b.Event.Name)
	e.SetType("kafka")
	e.SetTime(time.Now().UTC())
	if err := e.SetData("application/json", data); err != nil {
		return cloudevents.Event{}, fmt.Errorf("encode the event: %w", err)
	}
	return e, nil
}

// assigned runs before kgo fetches the committed offsets of newly assigned partitions: it pauses
// the partitions this event does not read and commits the start offset of those that have none.
func (s *kafkaSource) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	var mine, others []int32
	for _, p := range assigned[s.cfg.Topic] {
		if s.set.partition >= 0 && p != s.set.partition {
			others = append(others, p)
		} else {
			mine = append(mine, p)
		}
	}
	if len(others) > 0 {
		cl.PauseFetchPartitions(map[string][]int32{s.cfg.Topic: others})
	}
	if len(mine) == 0 {
		return
	}
	s.log.Info("kafka source: partitions assigned", "partitions", mine)
	if err := s.commitStart(ctx, cl, mine); err != nil {
		s.log.Warn("kafka source: cannot commit the start offset of new partitions; a restart before the first commit starts over from the reset offset", "err", err)
	}
}

// commitStart commits, for each partition without a committed offset, the offset the consumer
// starts at (the end, or the start with oldest).
func (s *kafkaSource) commitStart(ctx context.Context, cl *kgo.Client, parts []int32) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	committed, err := adm.FetchOffsets(ctx, s.group)
	if err != nil {
		return fmt.Errorf("fetch committed offsets: %w", err)
	}
	var missing []int32
	for _, p := range parts {
		if o, ok := committed.Lookup(s.cfg.Topic, p); !ok || o.Err != nil || o.At < 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var listed kadm.ListedOffsets
	if s.set.oldest {
		listed, err = adm.ListStartOffsets(ctx, s.cfg.Topic)
	} else {
		listed, err = adm.ListEndOffsets(ctx, s.cfg.Topic)
	}
	if err != nil {
		return fmt.Errorf("list offsets: %w", err)
	}
	start := map[int32]kgo.EpochOffset{}
	for _, p := range missing {
		if o, ok := listed.Lookup(s.cfg.Topic, p); ok && o.Err == nil && o.Offset >= 0 {
			start[p] = kgo.EpochOffset{Epoch: o.LeaderEpoch, Offset: o.Offset}
		}
	}
	if len(start) == 0 {
		return nil
	}
	var cerr error
	cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{s.cfg.Topic: start},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				cerr = err
				return
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						cerr = err
					}
				}
			}
		})
	return cerr
}

// revoked commits what was marked before the partitions go, bounded in time (the default would
// retry for as long as the client's retry timeout).
func (s *kafkaSource) revoked(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		s.log.Warn("kafka source: commit on revoke failed; the last events will be delivered again", "err", err)
	}
}

// OnBrokerConnect implements kgo.HookBrokerConnect: connection errors (dialing, TLS, SASL) are
// logged once each time they change, as kgo retries them by itself, and every outcome is the
// source's connection state: a connection made is connected, a failed one is not, until the
// next one is made (or records arrive).
func (s *kafkaSource) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client is closing
	}
	broker := net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))
	if err != nil {
		s.health.set(fmt.Errorf("broker %s: %w", broker, err))
	} else {
		s.health.set(nil)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.connMu.Lock()
	changed := msg != s.lastConnErr
	s.lastConnErr = msg
	s.connMu.Unlock()
	if changed && err != nil {
		s.log.Warn("kafka source: cannot connect to the broker", "broker", broker, "err", err)
	}
}
