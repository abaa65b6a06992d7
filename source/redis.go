package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kevents/kevents/api"
)

// The redis source subscribes to Redis pub/sub channels and publishes every message to the
// EventSource's topic.
//
// Delivery is at most once, by protocol: Redis pub/sub has no acknowledgement and no
// redelivery, and it delivers a message only to the subscribers connected when it is published.
// A message published while the source is disconnected, moving to another member, or waiting
// for Kafka after a failed commit is lost; so are the messages received but not yet committed
// when the source stops. Losses while connected are logged and counted in PublishFailures.
//
// Once in the cluster: every subscriber receives every message, so running the event on each
// member would publish each message once per member. It is an owned source (see OwnedSource):
// the member that owns its partition of <prefix>.sources subscribes, and commits the messages
// it receives in transactions (a batch of what arrived while the previous commit ran).
//
// Channels are subscribed with SUBSCRIBE, as Argo does: a channel name with '*' matches only a
// channel of that very name, and the event's pattern is always empty.
//
// Connection: the subscription is kept for ever; when Redis is unreachable the source retries
// after 1 s, doubling up to 30 s, and logs each change between subscribed and not. It reports
// the same changes as its connection state (kevents_source_connected, readiness), on the owner.

func init() {
	RegisterOwned("redis", Spec{
		Summary: "Redis pub/sub channels (SUBSCRIBE); runs once in the cluster. At most once: Redis pub/sub has no acknowledgement or redelivery.",
		Check:   checkRedis,
	}, newRedis)
}

const (
	// redisBatch bounds the messages of one commit.
	redisBatch = 500
	// redisReceiveTimeout is how long the subscription may be silent before a PING checks that
	// the connection is alive (a peer gone without a reset would otherwise go unnoticed).
	redisReceiveTimeout = 30 * time.Second
)

// redisRetry is the wait before reconnecting to Redis: first, doubling up to limit.
var redisRetry = struct{ first, limit time.Duration }{time.Second, 30 * time.Second}

// redisData is the data of a redis event, as Argo's RedisEventData: body is the message as a
// string, or embedded JSON with jsonBody.
type redisData struct {
	Channel  string            `json:"channel"`
	Pattern  string            `json:"pattern"`
	Body     any               `json:"body"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func checkRedis(ev api.Event) error {
	r, specErr := specOf[api.RedisEventSource](ev)
	if specErr != nil {
		return specErr
	}
	errs := checkRedisConn(r.HostAddress, r.DB, r.Password, r.TLS)
	errs = append(errs, checkRedisNames("channels", "channel", r.Channels)...)
	return errors.Join(errs...)
}

// checkRedisConn checks the connection fields the redis and redisStream sources share.
func checkRedisConn(host string, db int32, password *api.SecretKeySelector, tls *api.TLSConfig) []error {
	var errs []error
	if h, port, err := net.SplitHostPort(host); err != nil || h == "" || !validPort(port) {
		errs = append(errs, fmt.Errorf("hostAddress: %q; expected host:port, e.g. redis.argo-events.svc:6379", host))
	}
	if db < 0 {
		errs = append(errs, fmt.Errorf("db: %d; expected a database number >= 0 (0 when unset)", db))
	}
	if password != nil {
		if err := password.Check("password"); err != nil {
			errs = append(errs, err)
		}
	}
	if tls != nil {
		if err := tls.Check("tls"); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func validPort(s string) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p > 0 && p <= 65535
}

// checkRedisNames checks a required list of channel or stream names.
func checkRedisNames(field, what string, names []string) []error {
	if len(names) == 0 {
		return []error{fmt.Errorf("%s: missing; expected at least one %s name", field, what)}
	}
	var errs []error
	for i, n := range names {
		if n == "" {
			errs = append(errs, fmt.Errorf("%s[%d]: empty; expected a %s name", field, i, what))
		}
	}
	return errs
}

// redisOptions builds the client options of a redis or redisStream event, resolving the
// password from its Secret. Errors name the field and the Secret, never its value.
func redisOptions(b Build, host string, db int32, username string, password *api.SecretKeySelector, tls *api.TLSConfig) (*redis.Options, error) {
	opts := &redis.Options{
		Addr:     host,
		DB:       int(db),
		Username: username,
	}
	if password != nil {
		v, err := b.Env.Secrets.Ref("password", password)
		if err != nil {
			return nil, err
		}
		opts.Password = v
	}
	if tls != nil {
		cfg, err := b.Env.Secrets.TLSConfig("tls", tls)
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = cfg
	}
	return opts, nil
}

// redisBackoff is the wait between attempts while Redis fails: redisRetry.first, doubling up
// to redisRetry.limit, back to the start after a success.
type redisBackoff struct{ next time.Duration }

func (r *redisBackoff) reset() { r.next = 0 }

// wait sleeps before the next attempt; false when ctx ended first.
func (r *redisBackoff) wait(ctx context.Context) (time.Duration, bool) {
	d := max(r.next, redisRetry.first)
	r.next = min(2*d, redisRetry.limit)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return d, false
	case <-t.C:
		return d, true
	}
}

type redisSource struct {
	b    Build
	cfg  api.RedisEventSource
	opts *redis.Options
	log  *slog.Logger
}

func newRedis(b Build) (OwnedSource, error) {
	cfg := b.Event.Spec.(api.RedisEventSource) // checkRedis verified the type
	opts, err := redisOptions(b, cfg.HostAddress, cfg.DB, cfg.Username, cfg.Password, cfg.TLS)
	if err != nil {
		return nil, err
	}
	log := b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name,
		"hostAddress", cfg.HostAddress, "db", cfg.DB, "channels", strings.Join(cfg.Channels, ","))
	return &redisSource{b: b, cfg: cfg, opts: opts, log: log}, nil
}

// RunOwned implements OwnedSource: it subscribes while this member owns the event and commits
// what arrives. It returns the error of a failed commit (the messages of that commit are lost)
// and nil once ctx ended. The state is unused: nothing survives a restart in pub/sub.
func (r *redisSource) RunOwned(ctx context.Context, _ []byte, commit Commit) error {
	rdb := redis.NewClient(r.opts)
	defer rdb.Close()
	ctx, cancel := context.WithCancel(ctx)
	ps := rdb.Subscribe(ctx, r.cfg.Channels...)
	// A blocked read ends only when the connection closes: closing it is how a stop gets through.
	context.AfterFunc(ctx, func() { _ = ps.Close() })
	msgs := make(chan *redis.Message, redisBatch)
	health := newSourceHealth(ctx, r.b)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.receive(ctx, ps, msgs, health)
	}()
	// The receiver must be gone before the next owner may subscribe.
	defer func() {
		cancel()
		wg.Wait()
		health.stop()
	}()

	env := r.b.Env
	ns, es, name := r.b.EventSource.Metadata.Namespace, r.b.EventSource.Metadata.Name, r.b.Event.Name
	for {
		var batch []*redis.Message
		select {
		case <-ctx.Done():
			r.dropQueued(msgs)
			return nil
		case m := <-msgs:
			batch = append(batch, m)
		}
		batch = drainReady(batch, msgs, redisBatch)
		env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(batch)))
		events := make([]cloudevents.Event, 0, len(batch))
		for _, m := range batch {
			e, err := r.event(m)
			if err != nil {
				r.log.Error("redis: message rejected and dropped", "channel", m.Channel, "err", err)
				continue
			}
			events = append(events, e)
		}
		if len(events) == 0 {
			continue
		}
		if err := commit(ctx, events, nil); err != nil {
			env.Metrics.PublishFailed(ns, es, name, len(events))
			if ctx.Err() != nil {
				return nil
			}
			r.log.Error("redis: Kafka did not commit the events; messages lost (Redis pub/sub does not redeliver)", "messages", len(events), "err", err)
			return fmt.Errorf("commit %d redis events: %w", len(events), err)
		}
		env.Metrics.Published(ns, es, name, len(events))
	}
}

// dropQueued logs the messages received but not committed when the source stops.
func (r *redisSource) dropQueued(msgs chan *redis.Message) {
	if n := len(msgs); n > 0 {
		r.log.Warn("redis: source stopped with messages received but not committed; they are lost (Redis pub/sub does not redeliver)", "messages", n)
	}
}

// receive reads the subscription into msgs until ctx ends. go-redis reconnects and subscribes
// again on the call after a failure; receive paces those calls, logs each change and reports it
// to health.
func (r *redisSource) receive(ctx context.Context, ps *redis.PubSub, msgs chan<- *redis.Message, health *sourceHealth) {
	var (
		backoff    redisBackoff
		subscribed bool
		failing    bool
	)
	for {
		v, err := ps.ReceiveTimeout(ctx, redisReceiveTimeout)
		if ctx.Err() != nil {
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// Silence: a PING answered shows the connection alive; a failure reconnects on the
			// next receive.
			_ = ps.Ping(ctx)
			continue
		}
		if err != nil {
			subscribed = false
			health.set(err)
			if !failing {
				r.log.Warn("redis: cannot receive from the subscription; reconnecting, messages published meanwhile are lost", "err", err)
				failing = true
			}
			d, ok := backoff.wait(ctx)
			if !ok {
				return
			}
			r.log.Debug("redis: reconnecting", "waited", d)
			continue
		}
		failing = false
		backoff.reset()
		switch v := v.(type) {
		case *redis.Subscription:
			if v.Kind == "subscribe" && !subscribed {
				subscribed = true
				health.set(nil)
				r.log.Info("redis: subscribed")
			}
		case *redis.Message:
			select {
			case msgs <- v:
			case <-ctx.Done():
				return
			}
		}
	}
}

// event builds the CloudEvent of a message: Argo's data, a new UUID and the time received.
func (r *redisSource) event(m *redis.Message) (cloudevents.Event, error) {
	d := redisData{Channel: m.Channel, Pattern: m.Pattern, Body: m.Payload, Metadata: r.cfg.Metadata}
	if r.cfg.JSONBody {
		if !json.Valid([]byte(m.Payload)) {
			return cloudevents.Event{}, errors.New("jsonBody is set and the message is not JSON (Argo drops such messages too)")
		}
		d.Body = json.RawMessage(m.Payload)
	}
	return r.b.NewEvent(uuid.NewString(), time.Now().UTC(), d)
}
