package source

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	neturl "net/url"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"sigs.k8s.io/yaml"

	"github.com/kevents/kevents/api"
)

// The amqp source consumes a RabbitMQ (AMQP 0-9-1) queue, as Argo's amqp event source does: it
// declares the exchange (exchangeName, exchangeType, exchangeDeclare), declares the queue
// (queueDeclare), binds it with routingKey (queueBind) and consumes it (consume), then publishes
// every message to the EventSource's topic.
//
// Acknowledgement: kevents always consumes with manual acknowledgements, whatever consume.autoAck
// says (Argo's default is autoAck true, which loses every message in flight when the source or
// its bus fails). A message is acknowledged only after Kafka acknowledged its event. When Kafka did
// not, the source keeps the connection, waits (1 s, doubling with each consecutive failure, at
// most 30 s) and rejects the message with requeue, so RabbitMQ delivers it again, to this member
// or to another consumer of the queue. Closing the connection instead would delete an exclusive
// queue together with the messages it holds. On a stop, the events being published get up to
// the publish timeout to finish and are acknowledged; what is still unacknowledged when the
// connection closes goes back to the queue. At most 2×amqpBatch messages are in flight (basic.qos).
// Delivery is at least once for a durable queue with persistent messages; a message that reached
// Kafka and whose acknowledgement was lost comes again as an event with the same id when the
// publisher set a message id.
//
// Bad input: with jsonBody, a message whose body is not JSON is rejected without requeue (Argo
// drops it too): RabbitMQ dead-letters it when the queue has a dead-letter exchange and drops it
// otherwise. So is a message whose event is larger than Kafka accepts.
//
// Scaling: with a named queue that is neither exclusive (queueDeclare.exclusive) nor consumed
// exclusively (consume.exclusive), every member consumes the same queue and RabbitMQ spreads the
// messages over them (competing consumers): each message becomes one event. Otherwise, and in
// particular with Argo's default queue (queueDeclare absent: a server-named exclusive queue per
// connection, which would give every member its own copy of every message), the event runs once
// in the cluster as an owned source (see OwnedSource): the member that owns its partition of
// <prefix>.sources consumes. Its events go through the same idempotent producer as the
// competing-consumer case rather than through owned transactions: an AMQP source has no state to
// commit with its events, and a failed transaction ends the owned run, and with it the
// connection and an exclusive queue. A server-named or exclusive queue lives only as long as its
// connection: messages routed while no connection exists (a restart, a change of owner, a lost
// connection) are not kept, as in Argo. Name the queue (durable, not exclusive) to keep them.
//
// Connection: connectionBackoff (Argo's default: 1 s, factor 1, jitter 1, 5 steps) paces the
// connection attempts as for nats, without giving up: the wait grows by factor for steps
// attempts, then stays there. A lost connection (heartbeat 10 s, as Argo), a closed channel or a
// consumer cancelled by the server (its queue deleted) ends the session, and the source connects,
// declares and consumes again; the event is reported connected (kevents_source_connected,
// readiness) while it consumes, and not from the moment the connection or the channel closes
// until it consumes again. urlSecret reads the URL from a Secret. tls turns TLS on whatever
// the URL's scheme (Argo, like amqp091, uses it only with amqps:// and otherwise connects in
// plain text); auth's username and password override the URL's.
//
// Data: Argo's AMQPEventData: the message's properties (timestamp as Go prints a time, as Argo
// does, in UTC),
// exchange, routingKey, body (embedded JSON with jsonBody, else the bytes, base64 in JSON) and
// metadata. kevents adds headers (the message's header table; Argo drops it), omitted when empty.
// The event id is "<message id>:<hash of the body>" when the publisher set a message id, so a
// message delivered again yields the same id while two messages that share a message id but not
// their body stay two events; without a message id it is a new UUID, as AMQP gives a message no
// other stable identity (delivery tags are per channel) and a hash of the content alone would
// merge two equal messages. The event time is when the message was received, as in Argo.
//
// Not supported: filter (the expression filter on an event source).

func init() {
	RegisterOwned("amqp", Spec{
		Summary: "RabbitMQ (AMQP 0-9-1) queue; a message is acknowledged only after Kafka acknowledged its event. Every member consumes a named shared queue; Argo's default exclusive queue runs once in the cluster.",
		Check:   checkAMQP,
	}, newAMQP)
}

const (
	// amqpBatch bounds the deliveries published together; twice as many may be in flight.
	amqpBatch = 100
	// amqpDialTimeout bounds the TCP connection and the TLS and AMQP handshakes.
	amqpDialTimeout = 10 * time.Second
	// amqpHeartbeat is Argo's heartbeat interval.
	amqpHeartbeat = 10 * time.Second
)

// amqpExchangeTypes are the exchange types RabbitMQ has built in; plugins add types named x-...
var amqpExchangeTypes = map[string]bool{"direct": true, "fanout": true, "topic": true, "headers": true}

// amqpData is the data of an amqp event, as Argo's AMQPEventData plus headers.
type amqpData struct {
	ContentType     string            `json:"contentType"`
	ContentEncoding string            `json:"contentEncoding"`
	DeliveryMode    int               `json:"deliveryMode"`
	Priority        int               `json:"priority"`
	CorrelationID   string            `json:"correlationId"`
	ReplyTo         string            `json:"replyTo"`
	Expiration      string            `json:"expiration"`
	MessageID       string            `json:"messageId"`
	Timestamp       string            `json:"timestamp"`
	Type            string            `json:"type"`
	AppID           string            `json:"appId"`
	Exchange        string            `json:"exchange"`
	RoutingKey      string            `json:"routingKey"`
	Headers         map[string]any    `json:"headers,omitempty"`
	Body            any               `json:"body"`
	Metadata        map[string]string `json:"metadata,omitempty"`
}

func checkAMQP(ev api.Event) error {
	a, specErr := specOf[api.AMQPEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	switch {
	case a.URL == "" && a.URLSecret == nil:
		errs = append(errs, errors.New("url: missing; expected amqp://host:port (or amqps://), or urlSecret"))
	case a.URL != "" && a.URLSecret != nil:
		errs = append(errs, errors.New("url and urlSecret: both set; expected only one of them"))
	case a.URL != "":
		if err := checkAMQPURL("url", a.URL); err != nil {
			errs = append(errs, err)
		}
	default:
		if err := a.URLSecret.Check("urlSecret"); err != nil {
			errs = append(errs, err)
		}
	}
	if a.ExchangeName == "" {
		errs = append(errs, errors.New("exchangeName: missing; expected the exchange to bind the queue to (the default exchange cannot be declared or bound)"))
	}
	if err := checkAMQPExchangeType(a.ExchangeType); err != nil {
		errs = append(errs, err)
	}
	if a.RoutingKey == "" {
		errs = append(errs, errors.New("routingKey: missing; expected the key that binds the queue to the exchange (required as in Argo, even where the exchange type ignores it)"))
	}
	if _, err := parseBackoff(a.ConnectionBackoff); err != nil {
		errs = append(errs, fmt.Errorf("connectionBackoff.%w", err))
	}
	if a.QueueDeclare != nil {
		if _, err := amqpArguments(a.QueueDeclare.Arguments); err != nil {
			errs = append(errs, err)
		}
	}
	if a.TLS != nil {
		if err := a.TLS.Check("tls"); err != nil {
			errs = append(errs, err)
		}
	}
	if a.Auth != nil {
		errs = append(errs, a.Auth.Username.Check("auth.username"), a.Auth.Password.Check("auth.password"))
	}
	return errors.Join(errs...)
}

// checkAMQPURL accepts what amqp091 connects to: amqp:// or amqps://, with a port that is a
// number. Errors never show user info.
func checkAMQPURL(field, s string) error {
	const want = "expected amqp://user:password@host:port/vhost (or amqps://)"
	if _, err := amqp.ParseURI(s); err != nil {
		// ParseURI's errors may quote the whole URL, password included.
		return fmt.Errorf("%s: %q; %s", field, redactAMQPURL(s), want)
	}
	return nil
}

// redactAMQPURL hides the user info of a URL, even one that does not parse.
func redactAMQPURL(s string) string {
	if u, err := neturl.Parse(s); err == nil {
		return u.Redacted()
	}
	if at := strings.LastIndex(s, "@"); at >= 0 {
		start := 0
		if i := strings.Index(s, "://"); i >= 0 && i < at {
			start = i + len("://")
		}
		return s[:start] + "redacted" + s[at:]
	}
	return s
}

func checkAMQPExchangeType(t string) error {
	if t == "" {
		return errors.New("exchangeType: missing; expected direct, fanout, topic, headers or a plugin's x-... type")
	}
	if !amqpExchangeTypes[t] && (!strings.HasPrefix(t, "x-") || len(t) == len("x-")) {
		return fmt.Errorf("exchangeType: %q; expected direct, fanout, topic, headers or a plugin's x-... type", t)
	}
	return nil
}

// amqpArguments reads queueDeclare.arguments, a YAML mapping in a string (Argo's format), into
// an AMQP table. Unlike Argo, which reads every number as a float (which RabbitMQ refuses for
// x-max-length and the like), whole numbers become integers, and nested mappings tables.
func amqpArguments(s string) (amqp.Table, error) {
	const field = "queueDeclare.arguments"
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	j, err := yaml.YAMLToJSON([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not YAML (%w); expected a mapping such as \"x-queue-type: quorum\"", field, s, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(j)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: %q; expected a mapping such as \"x-queue-type: quorum\"", field, s)
	}
	t, _ := amqpTableValue(m).(amqp.Table)
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return t, nil
}

// amqpTableValue turns decoded JSON into AMQP field values.
func amqpTableValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		t := amqp.Table{}
		for k, e := range v {
			t[k] = amqpTableValue(e)
		}
		return t
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = amqpTableValue(e)
		}
		return out
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		f, _ := v.Float64()
		return f
	default:
		return v
	}
}

// amqpSettings is an event's configuration with Argo's defaults filled in.
type amqpSettings struct {
	exchange api.AMQPExchangeDeclareConfig
	queue    api.AMQPQueueDeclareConfig
	bind     api.AMQPQueueBindConfig
	consume  api.AMQPConsumeConfig
	args     amqp.Table
}

func newAMQPSettings(cfg api.AMQPEventSource) (amqpSettings, error) {
	s := amqpSettings{
		exchange: api.AMQPExchangeDeclareConfig{Durable: true},
		queue:    api.AMQPQueueDeclareConfig{Exclusive: true},
	}
	if cfg.ExchangeDeclare != nil {
		s.exchange = *cfg.ExchangeDeclare
	}
	if cfg.QueueDeclare != nil {
		s.queue = *cfg.QueueDeclare
	}
	if cfg.QueueBind != nil {
		s.bind = *cfg.QueueBind
	}
	if cfg.Consume != nil {
		s.consume = *cfg.Consume
	}
	var err error
	s.args, err = amqpArguments(s.queue.Arguments)
	return s, err
}

// shared reports whether every member may consume the queue at once: a named queue, neither
// exclusive to one connection nor consumed exclusively.
func (s amqpSettings) shared() bool {
	return s.queue.Name != "" && !s.queue.Exclusive && !s.consume.Exclusive
}

type amqpSource struct {
	b        Build
	cfg      api.AMQPEventSource
	set      amqpSettings
	url      string // the URL to dial, from url or urlSecret: never logged
	scheme   string
	host     string
	backoff  connBackoff
	tls      *tls.Config
	user     string
	password string
	log      *slog.Logger

	fails int // consecutive batches Kafka did not acknowledge, for the requeue delay
}

func newAMQP(b Build) (OwnedSource, error) {
	cfg := b.Event.Spec.(api.AMQPEventSource) // checkAMQP verified the type
	a := &amqpSource{b: b, cfg: cfg, url: cfg.URL}
	var err error
	if a.set, err = newAMQPSettings(cfg); err != nil {
		return nil, err
	}
	if a.backoff, err = parseBackoff(cfg.ConnectionBackoff); err != nil {
		return nil, fmt.Errorf("connectionBackoff.%w", err)
	}
	if cfg.URLSecret != nil {
		if a.url, err = b.Env.Secrets.Ref("urlSecret", cfg.URLSecret); err != nil {
			return nil, err
		}
		if err := checkAMQPURL(fmt.Sprintf("urlSecret (secret %s/%s)", cfg.URLSecret.Name, cfg.URLSecret.Key), a.url); err != nil {
			return nil, err
		}
	}
	uri, err := amqp.ParseURI(a.url)
	if err != nil { // checked above; never quote the URL
		return nil, fmt.Errorf("url: %q: not an AMQP URL", redactAMQPURL(a.url))
	}
	a.scheme, a.host = uri.Scheme, uri.Host
	if cfg.TLS != nil {
		if a.tls, err = b.Env.Secrets.TLSConfig("tls", cfg.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.Auth != nil {
		if a.user, err = b.Env.Secrets.Ref("auth.username", cfg.Auth.Username); err != nil {
			return nil, err
		}
		if a.password, err = b.Env.Secrets.Ref("auth.password", cfg.Auth.Password); err != nil {
			return nil, err
		}
	}
	queue := a.set.queue.Name
	if queue == "" {
		queue = "(server-named)"
	}
	a.log = b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name,
		"url", redactAMQPURL(a.url), "exchange", cfg.ExchangeName, "queue", queue)
	if a.set.queue.Name == "" && !a.set.queue.Exclusive && !a.set.queue.AutoDelete {
		a.log.Warn("amqp: the queue is server-named, neither exclusive nor auto-deleted: each connection declares a new one, and those of earlier connections stay bound and keep collecting messages; name the queue")
	}
	return a, nil
}

// everyMember implements everyMemberSource: a shared queue is consumed by every member.
func (a *amqpSource) everyMember() bool { return a.set.shared() }

// RunOwned implements OwnedSource: the owner consumes as Run does. The state and the commit are
// unused (see the package comment for why events go through the Publisher).
func (a *amqpSource) RunOwned(ctx context.Context, _ []byte, _ Commit) error {
	return a.Run(ctx)
}

// Run implements Source: it consumes until ctx ends, reconnecting after any failure.
func (a *amqpSource) Run(ctx context.Context) error {
	health := newSourceHealth(ctx, a.b)
	defer health.stop()
	attempt := 0
	for {
		consumed, err := a.session(ctx, health)
		if ctx.Err() != nil {
			return nil
		}
		if consumed {
			attempt = 0
		}
		health.set(err)
		wait := a.backoff.wait(attempt)
		attempt++
		a.log.Warn("amqp: not connected; reconnecting", "retryIn", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// dial connects, with TLS when tls is set whatever the scheme, and gives up at once when ctx
// ends, even during a handshake.
func (a *amqpSource) dial(ctx context.Context) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(fmt.Sprintf("kevents %s/%s %s", a.b.EventSource.Metadata.Name, a.b.Event.Name, a.b.Env.Member))
	cfg := amqp.Config{Heartbeat: amqpHeartbeat, Locale: "en_US", Properties: props}
	if a.cfg.Auth != nil {
		cfg.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: a.user, Password: a.password}}
	}
	if a.tls != nil && a.scheme == "amqps" {
		cfg.TLSClientConfig = a.tls.Clone()
	}
	var stop func() bool
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: amqpDialTimeout}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// amqp091 clears the deadline once the AMQP handshake is done.
		_ = conn.SetDeadline(time.Now().Add(amqpDialTimeout))
		stop = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
		if a.tls != nil && a.scheme != "amqps" {
			tc := a.tls.Clone()
			if tc.ServerName == "" {
				tc.ServerName = a.host
			}
			tconn := tls.Client(conn, tc)
			if err := tconn.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, fmt.Errorf("tls: %w", err)
			}
			return tconn, nil
		}
		return conn, nil
	}
	conn, err := amqp.DialConfig(a.url, cfg)
	if stop != nil {
		stop()
	}
	if err != nil {
		// url.Error and the like quote addresses, never the URL's user info; be sure anyway.
		msg := err.Error()
		if a.password != "" {
			msg = strings.ReplaceAll(msg, a.password, "xxxxx")
		}
		if u, perr := neturl.Parse(a.url); perr == nil && u.User != nil {
			if p, ok := u.User.Password(); ok && p != "" {
				msg = strings.ReplaceAll(msg, p, "xxxxx")
			}
		}
		return nil, fmt.Errorf("connect: %s", msg)
	}
	return conn, nil
}

// session connects, declares, consumes and publishes until ctx ends (nil) or the connection,
// the channel or the consumer ends (the reason). consumed reports whether consuming started;
// health hears it at once, and hears a closed connection or channel as soon as RabbitMQ or the
// heartbeat reports it, even while a batch is being published.
func (a *amqpSource) session(ctx context.Context, health *sourceHealth) (consumed bool, err error) {
	conn, err := a.dial(ctx)
	if err != nil {
		return false, err
	}
	// Closing hands what is unacknowledged back to the queue; a server that does not answer
	// must not hold up a stop.
	defer func() { _ = conn.CloseDeadline(time.Now().Add(amqpDialTimeout)) }()
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open a channel: %w", err)
	}
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	deliveries, queue, err := a.declare(ch)
	if err != nil {
		return false, err
	}
	health.set(nil)
	// The deliveries end when the connection or the channel closes, but the loop below sees
	// that only after the batch in hand is settled: health hears it at once.
	connLost := conn.NotifyClose(make(chan *amqp.Error, 1))
	chLost := ch.NotifyClose(make(chan *amqp.Error, 1))
	watched := make(chan struct{})
	defer close(watched)
	go func() {
		var e *amqp.Error
		select {
		case <-watched:
			return
		case e = <-connLost:
		case e = <-chLost:
		}
		if e != nil { // nil: closed on purpose
			health.set(fmt.Errorf("connection or channel closed: %w", e))
		}
	}()
	a.log.Info("amqp: consuming", "queueName", queue, "exclusiveQueue", a.set.queue.Exclusive, "everyMember", a.set.shared())
	for {
		var batch []amqp.Delivery
		select {
		case <-ctx.Done():
			return true, nil
		case d, ok := <-deliveries:
			if !ok {
				return true, amqpClosedReason(connClosed, chClosed)
			}
			batch = append(batch, d)
		}
		batch = drainReady(batch, deliveries, amqpBatch)
		a.deliver(ctx, ch, batch)
	}
}

// declare declares the exchange and the queue, binds them and starts consuming, as Argo does.
func (a *amqpSource) declare(ch *amqp.Channel) (<-chan amqp.Delivery, string, error) {
	s, cfg := a.set, a.cfg
	if err := ch.Qos(2*amqpBatch, 0, false); err != nil {
		return nil, "", fmt.Errorf("set the prefetch count: %w", err)
	}
	if err := ch.ExchangeDeclare(cfg.ExchangeName, cfg.ExchangeType, s.exchange.Durable, s.exchange.AutoDelete, s.exchange.Internal, s.exchange.NoWait, nil); err != nil {
		return nil, "", fmt.Errorf("declare exchange %s of type %s: %w", cfg.ExchangeName, cfg.ExchangeType, err)
	}
	q, err := ch.QueueDeclare(s.queue.Name, s.queue.Durable, s.queue.AutoDelete, s.queue.Exclusive, s.queue.NoWait, s.args)
	if err != nil {
		return nil, "", fmt.Errorf("declare queue %q: %w", s.queue.Name, err)
	}
	if err := ch.QueueBind(q.Name, cfg.RoutingKey, cfg.ExchangeName, s.bind.NoWait, nil); err != nil {
		return nil, "", fmt.Errorf("bind queue %q to exchange %s with routing key %q: %w", q.Name, cfg.ExchangeName, cfg.RoutingKey, err)
	}
	// autoAck is never used: kevents acknowledges after Kafka.
	deliveries, err := ch.Consume(q.Name, s.consume.ConsumerTag, false, s.consume.Exclusive, s.consume.NoLocal, s.consume.NoWait, nil)
	if err != nil {
		return nil, "", fmt.Errorf("consume queue %q: %w", q.Name, err)
	}
	return deliveries, q.Name, nil
}

// amqpClosedReason is why the deliveries ended: the connection's or the channel's error, or a
// consumer cancelled by the server.
func amqpClosedReason(conn, ch <-chan *amqp.Error) error {
	for _, c := range []<-chan *amqp.Error{conn, ch} {
		select {
		case e, ok := <-c:
			if ok && e != nil {
				return fmt.Errorf("connection or channel closed: %w", e)
			}
		default:
		}
	}
	return errors.New("the server ended the consumer (queue deleted?) or the connection closed")
}

// deliver publishes the events of a batch concurrently and settles each delivery: acknowledged
// once Kafka acknowledged its event, rejected without requeue when it can never become one, and,
// when Kafka did not acknowledge it, rejected with requeue after a delay so that RabbitMQ
// delivers it again. The publishes outlive a stop by up to the publish timeout, so that what
// reached Kafka is acknowledged.
func (a *amqpSource) deliver(ctx context.Context, ch *amqp.Channel, batch []amqp.Delivery) {
	env := a.b.Env
	ns, es, name := a.b.EventSource.Metadata.Namespace, a.b.EventSource.Metadata.Name, a.b.Event.Name
	env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(batch)))

	const (
		ok       = iota
		drop     // never an event: bad input
		tooLarge // never in Kafka
		retry    // Kafka did not acknowledge it
	)
	outcome := make([]int, len(batch))
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	pubCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), env.PublishTimeout)
	defer cancel()
	for i, d := range batch {
		e, err := a.event(d)
		if err != nil {
			outcome[i] = drop
			a.log.Error("amqp: message rejected; it is dead-lettered if the queue has a dead-letter exchange, else dropped", "messageId", d.MessageId, "routingKey", d.RoutingKey, "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := env.Publisher.Publish(pubCtx, a.b.Topic, e)
			switch {
			case err == nil:
				outcome[i] = ok
			case errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge):
				outcome[i] = tooLarge
				a.log.Error("amqp: event larger than Kafka accepts; message rejected", "messageId", d.MessageId, "bytes", len(e.Data()), "err", err)
			default:
				outcome[i], errs[i] = retry, err
			}
		}()
	}
	wg.Wait()

	var (
		retries           []amqp.Delivery
		firstErr          error
		published, failed int
	)
	for i, o := range outcome {
		switch o {
		case ok:
			published++
		case tooLarge:
			failed++
		case retry:
			failed++
			retries = append(retries, batch[i])
			firstErr = cmp.Or(firstErr, errs[i])
		}
	}
	all := published == len(batch)
	if published > 0 {
		env.Metrics.Published(ns, es, name, published)
	}
	if failed > 0 {
		env.Metrics.PublishFailed(ns, es, name, failed)
	}
	// Settling fails only when the channel is gone, and then RabbitMQ requeues what was not
	// acknowledged: the session ends at the next receive.
	if all {
		_ = ch.Ack(batch[len(batch)-1].DeliveryTag, true)
	} else {
		for i, d := range batch {
			switch outcome[i] {
			case ok:
				_ = d.Ack(false)
			case drop, tooLarge:
				_ = d.Reject(false)
			}
		}
	}
	if len(retries) == 0 {
		a.fails = 0
		return
	}
	a.fails++
	wait := amqpRequeueDelay(a.fails)
	a.log.Warn("amqp: Kafka did not acknowledge the events; their messages stay unacknowledged and are requeued for delivery again",
		"messages", len(retries), "requeueIn", wait, "err", firstErr)
	t := time.NewTimer(wait)
	select {
	case <-ctx.Done(): // closing the connection requeues them
		t.Stop()
		return
	case <-t.C:
	}
	for _, d := range retries {
		_ = d.Nack(false, true)
	}
}

// amqpRequeueDelay is the wait before requeueing messages Kafka did not acknowledge, after
// fails consecutive failures: 1 s doubled per failure, at most 30 s.
func amqpRequeueDelay(fails int) time.Duration {
	if fails > 5 {
		return 30 * time.Second
	}
	return time.Second << max(fails-1, 0)
}

// event builds the CloudEvent of a delivery in Argo's shape.
func (a *amqpSource) event(d amqp.Delivery) (cloudevents.Event, error) {
	data := amqpData{
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    int(d.DeliveryMode),
		Priority:        int(d.Priority),
		CorrelationID:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		Expiration:      d.Expiration,
		MessageID:       d.MessageId,
		Timestamp:       d.Timestamp.UTC().String(),
		Type:            d.Type,
		AppID:           d.AppId,
		Exchange:        d.Exchange,
		RoutingKey:      d.RoutingKey,
		Body:            d.Body, // base64, as Argo
		Metadata:        a.cfg.Metadata,
	}
	if len(d.Headers) > 0 {
		data.Headers, _ = amqpJSONValue(d.Headers).(map[string]any)
	}
	if a.cfg.JSONBody {
		if !json.Valid(d.Body) {
			return cloudevents.Event{}, errors.New("jsonBody is set and the body is not JSON (Argo drops such messages too)")
		}
		data.Body = json.RawMessage(d.Body)
	}
	id := uuid.NewString()
	if d.MessageId != "" {
		sum := sha256.Sum256(d.Body)
		id = d.MessageId + ":" + hex.EncodeToString(sum[:8])
	}
	return a.b.NewEvent(id, time.Now().UTC(), data)
}

// amqpJSONValue turns an AMQP field value into one JSON can encode: tables become objects,
// decimals and non-finite floats strings; bytes stay bytes (base64), times times (RFC 3339).
func amqpJSONValue(v any) any {
	switch v := v.(type) {
	case amqp.Table:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = amqpJSONValue(e)
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = amqpJSONValue(e)
		}
		return out
	case amqp.Decimal:
		return fmt.Sprintf("%de-%d", v.Value, v.Scale)
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Sprint(v)
		}
		return v
	case float32:
		return amqpJSONValue(float64(v))
	default:
		return v
	}
}
