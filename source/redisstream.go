package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kevents/kevents/api"
)

// The redisStream source reads Redis streams through a consumer group and publishes every
// entry to the EventSource's topic.
//
// Acknowledgement: an entry is acknowledged (XACK) only after Kafka acknowledged its event.
// Entries of one stream are published in order; at the first one Kafka does not acknowledge
// the source stops reading, waits (1 s, doubling up to 30 s), and reads its pending entries
// again from the start, so nothing later overtakes it. An entry published whose XACK was lost
// is published again, with the same event id ("<eventsource>:<event>:<hostAddress>:<db>:
// <stream>:<entry id>") and time (the entry id's), so consumers can recognise the repeat.
//
// Consumer group: as in Argo, consumerGroup (default argo-events-cg) is created on every stream
// at its last entry ("$") when missing; a stream that does not exist yet is waited for (Argo
// fails). Every member of the source pool runs every redisStream event as its own consumer of
// the group, named after the member (--member), so the members share the entries (Argo names
// every consumer argo-events-worker). A member reads its own pending entries first when it
// starts, so a restart under the same name resumes what it had read but not acknowledged; the
// pending entries of a member gone for good are claimed (XAUTOCLAIM) by another one once they
// have been idle for redisStreamClaimIdle.
//
// Permanent rejections are acknowledged with an error log, so they do not block the stream: an
// entry whose event is larger than Kafka accepts, and a pending entry deleted from the stream.
//
// Connection: a failed Redis call is logged and the source reads again after 1 s, doubling up to
// 30 s; the event is reported not connected (kevents_source_connected, readiness) from such a
// failure until Redis answers again. A stream that does not exist yet is no connection failure.

func init() {
	Register("redisStream", Spec{
		Summary: "Redis streams through a consumer group shared by the members; an entry is acknowledged (XACK) only after Kafka acknowledged its event.",
		Check:   checkRedisStream,
	}, newRedisStream)
}

const (
	// redisStreamGroup is Argo's consumer group when consumerGroup is empty.
	redisStreamGroup = "argo-events-cg"
	// redisStreamCount is Argo's XREADGROUP COUNT when maxMsgCountPerRead is 0.
	redisStreamCount = 10
	// redisStreamBlock bounds an XREADGROUP waiting for entries, and so how long a stop waits.
	redisStreamBlock = time.Second
)

// redisStreamClaimIdle is how long an entry stays pending with a consumer before another member
// claims it: longer than a member retrying a publish waits, so live members keep their own. A
// variable so that tests can shorten it.
var redisStreamClaimIdle = func(publishTimeout time.Duration) time.Duration {
	return max(time.Minute, 3*publishTimeout)
}

// redisStreamData is the data of a redisStream event, as Argo's RedisStreamEventData.
type redisStreamData struct {
	Stream   string            `json:"stream"`
	ID       string            `json:"message_id"`
	Values   map[string]any    `json:"values"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func checkRedisStream(ev api.Event) error {
	r, specErr := specOf[api.RedisStreamEventSource](ev)
	if specErr != nil {
		return specErr
	}
	errs := checkRedisConn(r.HostAddress, r.DB, r.Password, r.TLS)
	errs = append(errs, checkRedisNames("streams", "stream", r.Streams)...)
	if r.MaxMsgCountPerRead < 0 {
		errs = append(errs, fmt.Errorf("maxMsgCountPerRead: %d; expected a count > 0 (0 means %d)", r.MaxMsgCountPerRead, redisStreamCount))
	}
	return errors.Join(errs...)
}

type redisStreamSource struct {
	b         Build
	cfg       api.RedisStreamEventSource
	opts      *redis.Options
	group     string
	consumer  string
	count     int64
	claimIdle time.Duration
	log       *slog.Logger
}

func newRedisStream(b Build) (Source, error) {
	cfg := b.Event.Spec.(api.RedisStreamEventSource) // checkRedisStream verified the type
	opts, err := redisOptions(b, cfg.HostAddress, cfg.DB, cfg.Username, cfg.Password, cfg.TLS)
	if err != nil {
		return nil, err
	}
	s := &redisStreamSource{b: b, cfg: cfg, opts: opts, group: cfg.ConsumerGroup, consumer: b.Env.Member,
		count: int64(cfg.MaxMsgCountPerRead), claimIdle: redisStreamClaimIdle(b.Env.PublishTimeout)}
	if s.group == "" {
		s.group = redisStreamGroup
	}
	if s.consumer == "" {
		s.consumer = "kevents"
	}
	if s.count == 0 {
		s.count = redisStreamCount
	}
	s.log = b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name,
		"hostAddress", cfg.HostAddress, "db", cfg.DB, "streams", strings.Join(cfg.Streams, ","),
		"group", s.group, "consumer", s.consumer)
	return s, nil
}

// errRedisStreamKafka ends a read when Kafka did not acknowledge an event.
var errRedisStreamKafka = errors.New("kafka did not acknowledge an event")

// Run reads until ctx ends, starting over with its pending entries after every failure.
func (s *redisStreamSource) Run(ctx context.Context) error {
	rdb := redis.NewClient(s.opts)
	defer rdb.Close()
	health := newSourceHealth(ctx, s.b)
	defer health.stop()
	var backoff redisBackoff
	for {
		read, err := s.consume(ctx, rdb, health)
		if ctx.Err() != nil {
			return nil
		}
		if read {
			backoff.reset()
		}
		// A Kafka failure was logged with its entry, and says nothing about Redis; a stream
		// that does not exist yet is no failure of the connection either.
		if !errors.Is(err, errRedisStreamKafka) && !errors.Is(err, errRedisStreamMissing) {
			health.set(err)
		}
		if !errors.Is(err, errRedisStreamKafka) {
			s.log.Warn("redisStream: cannot read the streams; retrying", "retryIn", max(backoff.next, redisRetry.first), "err", err)
		}
		if _, ok := backoff.wait(ctx); !ok {
			return nil
		}
	}
}

// errRedisStreamMissing ends a read when a stream does not exist yet.
var errRedisStreamMissing = errors.New("the consumer group is created once it does")

// consume creates the group where missing, then reads this consumer's pending entries and new
// ones until ctx ends (nil) or something fails. read reports whether it got as far as reading.
// Redis answering is reported to health; the caller reports the failures.
func (s *redisStreamSource) consume(ctx context.Context, rdb *redis.Client, health *sourceHealth) (read bool, err error) {
	for _, stream := range s.cfg.Streams {
		err := rdb.XGroupCreate(ctx, stream, s.group, "$").Err()
		switch {
		case err == nil:
			s.log.Info("redisStream: consumer group created at the end of the stream", "stream", stream)
		case strings.HasPrefix(err.Error(), "BUSYGROUP"):
		case strings.Contains(err.Error(), "requires the key to exist"):
			health.set(nil) // Redis answered
			return false, fmt.Errorf("stream %s does not exist yet; %w", stream, errRedisStreamMissing)
		default:
			return false, fmt.Errorf("create consumer group %s on stream %s: %w", s.group, stream, err)
		}
	}
	s.log.Info("redisStream: reading")
	// "0": this consumer's pending entries after the given id; ">": new entries.
	cursors := make(map[string]string, len(s.cfg.Streams))
	for _, stream := range s.cfg.Streams {
		cursors[stream] = "0"
	}
	args := make([]string, 2*len(s.cfg.Streams))
	var lastClaim time.Time
	for ctx.Err() == nil {
		if time.Since(lastClaim) > s.claimIdle/2 {
			if err := s.claim(ctx, rdb, cursors); err != nil {
				return true, err
			}
			lastClaim = time.Now()
		}
		for i, stream := range s.cfg.Streams {
			args[i], args[len(s.cfg.Streams)+i] = stream, cursors[stream]
		}
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: s.group, Consumer: s.consumer, Streams: args, Count: s.count, Block: redisStreamBlock,
		}).Result()
		if ctx.Err() != nil {
			continue
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return true, fmt.Errorf("XREADGROUP: %w", err)
		}
		health.set(nil) // redis.Nil: no entries within the block time
		if err != nil {
			continue
		}
		for _, st := range res {
			if cursors[st.Stream] != ">" && len(st.Messages) == 0 {
				cursors[st.Stream] = ">" // no more pending entries
				continue
			}
			last, err := s.handle(ctx, rdb, st.Stream, st.Messages)
			if cursors[st.Stream] != ">" && last != "" {
				cursors[st.Stream] = last
			}
			if err != nil {
				return true, err
			}
		}
	}
	return true, nil
}

// claim takes over the entries of other consumers idle for longer than claimIdle, and has them
// read as this consumer's pending entries.
func (s *redisStreamSource) claim(ctx context.Context, rdb *redis.Client, cursors map[string]string) error {
	for _, stream := range s.cfg.Streams {
		start := "0-0"
		for {
			ids, next, err := rdb.XAutoClaimJustID(ctx, &redis.XAutoClaimArgs{
				Stream: stream, Group: s.group, MinIdle: s.claimIdle, Start: start, Count: 100, Consumer: s.consumer,
			}).Result()
			if err != nil {
				return fmt.Errorf("XAUTOCLAIM on stream %s: %w", stream, err)
			}
			if len(ids) > 0 {
				s.log.Info("redisStream: claimed entries idle with another consumer", "stream", stream, "entries", len(ids), "minIdle", s.claimIdle)
				cursors[stream] = "0"
			}
			if next == "0-0" || next == "" {
				break
			}
			start = next
		}
	}
	return nil
}

// handle publishes the entries of one stream in order, acknowledging those Kafka acknowledged
// (and permanent rejections). It returns the id of the last entry it acknowledged, and
// errRedisStreamKafka at the first entry Kafka did not acknowledge.
func (s *redisStreamSource) handle(ctx context.Context, rdb *redis.Client, stream string, msgs []redis.XMessage) (string, error) {
	env := s.b.Env
	ns, es, name := s.b.EventSource.Metadata.Namespace, s.b.EventSource.Metadata.Name, s.b.Event.Name
	done := make([]string, 0, len(msgs))
	var failed error
	for _, m := range msgs {
		log := s.log.With("stream", stream, "entry", m.ID)
		if m.Values == nil {
			log.Warn("redisStream: pending entry no longer in the stream (deleted or trimmed); acknowledged")
			done = append(done, m.ID)
			continue
		}
		env.Metrics.EventsReceived.WithLabelValues(es, name).Inc()
		e, err := s.event(stream, m)
		if err != nil {
			log.Error("redisStream: entry rejected and acknowledged", "err", err)
			done = append(done, m.ID)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, env.PublishTimeout)
		err = env.Publisher.Publish(pctx, s.b.Topic, e)
		cancel()
		if errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
			env.Metrics.PublishFailed(ns, es, name, 1)
			log.Error("redisStream: event larger than Kafka accepts; entry acknowledged and dropped", "bytes", len(e.Data()), "err", err)
			done = append(done, m.ID)
			continue
		}
		if err != nil {
			env.Metrics.PublishFailed(ns, es, name, 1)
			log.Warn("redisStream: Kafka did not acknowledge the event; the entry stays pending and is published again after a pause", "err", err)
			failed = fmt.Errorf("%w: %w", errRedisStreamKafka, err)
			break
		}
		env.Metrics.Published(ns, es, name, 1)
		done = append(done, m.ID)
	}
	if len(done) == 0 {
		return "", failed
	}
	// The events are in Kafka: the acknowledgement goes out even when the source is stopping.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := rdb.XAck(actx, stream, s.group, done...).Err(); err != nil {
		return "", errors.Join(failed, fmt.Errorf("XACK of entries whose events are in Kafka (they will be published again): %w", err))
	}
	return done[len(done)-1], failed
}

// event builds the CloudEvent of an entry. Its id and time derive from the entry, so a
// redelivered entry yields the same event.
func (s *redisStreamSource) event(stream string, m redis.XMessage) (cloudevents.Event, error) {
	id := fmt.Sprintf("%s:%s:%s:%d:%s:%s", s.b.EventSource.Metadata.Name, s.b.Event.Name, s.cfg.HostAddress, s.cfg.DB, stream, m.ID)
	return s.b.NewEvent(id, redisStreamTime(m.ID), redisStreamData{Stream: stream, ID: m.ID, Values: m.Values, Metadata: s.cfg.Metadata})
}

// redisStreamTime is the time in an entry id ("<unix ms>-<seq>"), or now for an id set by hand
// that holds none.
func redisStreamTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	if n, err := strconv.ParseInt(ms, 10, 64); err == nil && n > 0 {
		return time.UnixMilli(n).UTC()
	}
	return time.Now().UTC()
}
