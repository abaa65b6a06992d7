package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kevents/kevents/api"
)

func init() {
	Register("nats", Spec{
		Summary: "NATS subject subscription; JetStream deliveries are acked only after Kafka acknowledged the event (core NATS is at most once). Several members need `queue`.",
		Check:   checkNATSSource,
	}, newNATSSource)
}

// natsData is the event data of a nats event, as Argo's NATSEventData: body is the message as
// JSON when jsonBody is set and as base64 (Go's encoding of []byte) otherwise.
type natsData struct {
	Subject  string              `json:"subject"`
	Body     any                 `json:"body"`
	Header   map[string][]string `json:"header,omitempty"`
	Metadata map[string]string   `json:"metadata,omitempty"`
}

func checkNATSSource(ev api.Event) error {
	n, specErr := specOf[api.NATSEventsSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	if err := checkNATSServerURL(n.URL); err != nil {
		errs = append(errs, err)
	}
	if err := checkNATSSubscribeSubject(n.Subject); err != nil {
		errs = append(errs, err)
	}
	if n.Queue != nil && (*n.Queue == "" || strings.ContainsAny(*n.Queue, " \t\r\n")) {
		errs = append(errs, fmt.Errorf("queue: %q; expected a queue group name without whitespace (omit queue to subscribe without one)", *n.Queue))
	}
	if _, err := parseBackoff(n.ConnectionBackoff); err != nil {
		errs = append(errs, fmt.Errorf("connectionBackoff.%w", err))
	}
	if n.TLS != nil {
		if err := n.TLS.Check("tls"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := checkNATSSourceAuth(n.Auth); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkNATSServerURL accepts what nats.Connect does: servers separated by commas, each
// host:port or a nats, tls, ws or wss URL. Errors never show user info.
func checkNATSServerURL(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("url: required; expected nats://host:port")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		raw := part
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := neturl.Parse(raw)
		switch {
		case err != nil || u.Hostname() == "":
		case u.Scheme == "nats" || u.Scheme == "tls" || u.Scheme == "ws" || u.Scheme == "wss":
			continue
		}
		return fmt.Errorf("url: %q; expected nats://host:port (or tls, ws, wss), several separated by commas", redactNATSServerURL(part))
	}
	return nil
}

// checkNATSSubscribeSubject accepts a subject a subscription may name: tokens separated by
// dots, '*' as a whole token, '>' as the last token, no whitespace.
func checkNATSSubscribeSubject(s string) error {
	if s == "" {
		return errors.New("subject: required")
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		bad := tok == "" || strings.ContainsAny(tok, " \t\r\n") ||
			(strings.ContainsAny(tok, "*>") && tok != "*" && tok != ">") ||
			(tok == ">" && i != len(toks)-1)
		if bad {
			return fmt.Errorf("subject: %q; expected dot-separated tokens such as orders.* or orders.> ('*' a whole token, '>' the last one, no whitespace)", s)
		}
	}
	return nil
}

// redactNATSServerURL hides the user info of each server of a NATS URL (a user, a password or a
// token may be written there) so the URL can appear in errors and logs.
func redactNATSServerURL(s string) string {
	parts := strings.Split(s, ",")
	for i, part := range parts {
		at := strings.LastIndex(part, "@")
		if at < 0 {
			continue
		}
		start := 0
		if j := strings.Index(part, "://"); j >= 0 && j < at {
			start = j + len("://")
		}
		parts[i] = part[:start] + "redacted" + part[at:]
	}
	return strings.Join(parts, ",")
}

func checkNATSSourceAuth(a *api.NATSAuth) error {
	if a == nil {
		return nil
	}
	n := 0
	for _, set := range []bool{a.Basic != nil, a.Token != nil, a.NKey != nil, a.Credential != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return errors.New("auth: set one of basic, token, nkey and credential (or omit auth)")
	case n > 1:
		return errors.New("auth: set only one of basic, token, nkey and credential")
	case a.Basic != nil:
		return errors.Join(
			a.Basic.Username.Check("auth.basic.username"),
			a.Basic.Password.Check("auth.basic.password"))
	case a.Token != nil:
		return a.Token.Check("auth.token")
	case a.NKey != nil:
		return a.NKey.Check("auth.nkey")
	default:
		return a.Credential.Check("auth.credential")
	}
}

// connBackoff is a source's connectionBackoff read as Argo reads it.
type connBackoff struct {
	duration time.Duration
	factor   float64
	jitter   float64
	steps    int
}

// parseBackoff reads a source's connectionBackoff, Argo's Backoff: duration an integer of
// nanoseconds or a Go duration string, factor and jitter numbers (possibly quoted), steps a
// count; Argo's defaults (1 s, factor 1, jitter 1, 5 steps) fill what is unset. Errors start
// with the field name.
func parseBackoff(b *api.Backoff) (connBackoff, error) {
	out := connBackoff{duration: time.Second, factor: 1, jitter: 1, steps: 5}
	if b == nil {
		return out, nil
	}
	if b.Steps < 0 {
		return out, fmt.Errorf("steps: %d; expected a positive number of attempts", b.Steps)
	}
	if b.Steps > 0 {
		out.steps = int(b.Steps)
	}
	if len(b.Duration) > 0 {
		s := strings.Trim(string(b.Duration), `"`)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			out.duration = time.Duration(n)
		} else if d, err := time.ParseDuration(s); err == nil && d > 0 {
			out.duration = d
		} else {
			return out, fmt.Errorf("duration: %s; expected a positive duration such as \"10s\" or a number of nanoseconds", b.Duration)
		}
	}
	if len(b.Factor) > 0 {
		f, err := strconv.ParseFloat(strings.Trim(string(b.Factor), `"`), 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) {
			return out, fmt.Errorf("factor: %s; expected a positive number", b.Factor)
		}
		out.factor = f
	}
	if len(b.Jitter) > 0 {
		j, err := strconv.ParseFloat(strings.Trim(string(b.Jitter), `"`), 64)
		if err != nil || j < 0 || math.IsInf(j, 0) {
			return out, fmt.Errorf("jitter: %s; expected a number, 0 or more", b.Jitter)
		}
		out.jitter = j
	}
	return out, nil
}

// wait is the pause before retry number attempt (0-based): duration × factor^attempt, growing
// for steps attempts and capped at a minute (or at duration when that is longer), plus up to
// jitter × that at random.
func (b connBackoff) wait(attempt int) time.Duration {
	d := float64(b.duration) * math.Pow(b.factor, float64(min(attempt, b.steps-1)))
	if limit := float64(max(b.duration, time.Minute)); d > limit {
		d = limit
	}
	if b.jitter > 0 {
		d += rand.Float64() * b.jitter * d
	}
	return time.Duration(d)
}

// natsNakDelay is the pause JetStream waits before redelivering a message whose event Kafka
// did not acknowledge: 1 s doubled per delivery, at most 30 s.
func natsNakDelay(numDelivered uint64) time.Duration {
	if numDelivered < 1 {
		numDelivered = 1
	}
	if numDelivered > 5 {
		return 30 * time.Second
	}
	return time.Second << (numDelivered - 1)
}

// natsSource subscribes to a NATS subject and produces one event per message.
//
// Acknowledgement. Each message is published to Kafka synchronously in the subscription's
// message handler, so messages of one event are produced in the order NATS delivered them.
//
//   - Core NATS has no acknowledgement and no redelivery: it is at most once by nature. A message
//     Kafka does not acknowledge within publishTimeout is lost; it is logged and counted in
//     PublishFailures. So is a message NATS drops because the source fell behind (a slow
//     consumer, logged).
//   - A message delivered by a JetStream push consumer (its reply subject is a JetStream ack
//     subject, so msg.Metadata succeeds) is acked only after Kafka acknowledged the event. When
//     Kafka did not, the message is nak'ed with a delay growing with its delivery count (1 s,
//     2 s, 4 s, ... up to 30 s), and JetStream delivers it again, to this member or to another
//     one of the queue group. An event larger than Kafka accepts is terminated (Term), as no
//     redelivery can help. The event id is derived from the stream, the stream sequence and the
//     time the stream stored the message, so a redelivered message that had reached Kafka
//     before (an ack lost on the way) yields an event with the same id; command ids derive from
//     event ids, so the executor can recognise the repeat.
//     Point the consumer's deliver subject at `subject`, give it an ack wait longer than
//     publishTimeout, and keep its ack policy explicit.
//
// Several members. Every kevents member runs every nats event. Without `queue` the source
// subscribes plainly, as Argo does, and each member receives, and publishes, every message: N
// members yield N copies of each event. Running more than one member therefore requires
// `queue`: members then form a NATS queue group and each message goes to one of them (competing
// consumers, no leader election). kevents does not derive a default queue name, because a
// JetStream push consumer without a deliver group only delivers to plain subscriptions (the
// server ignores queue subscribers as interest), so a derived queue would silence such a
// consumer; with a push consumer and several members, set the consumer's deliver group and
// `queue` to the same name.
//
// Connection. connectionBackoff (Argo's default: 1 s, factor 1, jitter 1, 5 steps) paces the
// connection attempts: the wait starts at duration and grows by factor for steps attempts,
// then stays there (at most a minute unless duration is longer), with jitter added. Unlike Argo,
// which gives up after steps attempts and relies on its pod being restarted, kevents keeps
// trying: a member runs many sources, and one that gave up would stay down until the whole
// process restarts. Once connected, nats.go reconnects with the same waits and restores the
// subscription; core NATS messages published while disconnected are lost. The event is reported
// connected (kevents_source_connected, readiness) once subscribed or reconnected, and not
// connected from a disconnection or a failed attempt until then.
type natsSource struct {
	b       Build
	cfg     api.NATSEventsSource
	url     string // redacted, for logs and errors
	backoff connBackoff
	opts    []nats.Option // TLS and auth, resolved from Secrets

	mu       sync.Mutex
	done     bool // no more messages are handled once set
	inflight sync.WaitGroup
}

func newNATSSource(b Build) (Source, error) {
	cfg := b.Event.Spec.(api.NATSEventsSource)
	n := &natsSource{b: b, cfg: cfg, url: redactNATSServerURL(cfg.URL)}
	var err error
	if n.backoff, err = parseBackoff(n.cfg.ConnectionBackoff); err != nil {
		return nil, fmt.Errorf("connectionBackoff.%w", err)
	}
	if n.cfg.TLS != nil {
		cfg, err := n.b.Env.Secrets.TLSConfig("tls", n.cfg.TLS)
		if err != nil {
			return nil, err
		}
		n.opts = append(n.opts, nats.Secure(cfg))
	}
	if n.cfg.Auth != nil {
		opt, err := n.authOption(n.cfg.Auth)
		if err != nil {
			return nil, err
		}
		n.opts = append(n.opts, opt)
	}
	if n.cfg.Queue == nil {
		b.Env.Logger.Info("nats: no queue set; every kevents member running this event receives every message, so run one member or set queue",
			"eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name, "subject", n.cfg.Subject)
	}
	return n, nil
}

// secret resolves a Secret reference; errors name the field and the Secret, never its value.
func (n *natsSource) secret(field string, ref *api.SecretKeySelector) (string, error) {
	v, err := n.b.Env.Secrets.Resolve(ref.Name, ref.Key)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	if v == "" {
		return "", fmt.Errorf("%s: secret %s/%s is empty", field, ref.Name, ref.Key)
	}
	return v, nil
}

// authOption resolves auth from Secrets. Argo mounts nkey and credential Secrets as files and
// reads them; kevents reads their contents: an nkey Secret holds a user seed (SU...), a
// credential Secret a creds file (the user JWT and its seed).
func (n *natsSource) authOption(a *api.NATSAuth) (nats.Option, error) {
	switch {
	case a.Basic != nil:
		user, err := n.secret("auth.basic.username", a.Basic.Username)
		if err != nil {
			return nil, err
		}
		password, err := n.secret("auth.basic.password", a.Basic.Password)
		if err != nil {
			return nil, err
		}
		return nats.UserInfo(user, password), nil
	case a.Token != nil:
		token, err := n.secret("auth.token", a.Token)
		if err != nil {
			return nil, err
		}
		return nats.Token(token), nil
	case a.NKey != nil:
		seed, err := n.secret("auth.nkey", a.NKey)
		if err != nil {
			return nil, err
		}
		kp, err := nkeys.ParseDecoratedUserNKey([]byte(seed))
		if err != nil { // nkeys errors are fixed messages, never the seed
			return nil, fmt.Errorf("auth.nkey: secret %s/%s holds no user nkey seed: %w", a.NKey.Name, a.NKey.Key, err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("auth.nkey: secret %s/%s: %w", a.NKey.Name, a.NKey.Key, err)
		}
		return nats.Nkey(pub, kp.Sign), nil
	case a.Credential != nil:
		creds, err := n.secret("auth.credential", a.Credential)
		if err != nil {
			return nil, err
		}
		jwt, err := nkeys.ParseDecoratedJWT([]byte(creds))
		if err != nil || jwt == "" || strings.Contains(jwt, "\n") {
			return nil, fmt.Errorf("auth.credential: secret %s/%s holds no user JWT; expected a NATS creds file", a.Credential.Name, a.Credential.Key)
		}
		kp, err := nkeys.ParseDecoratedUserNKey([]byte(creds))
		if err != nil {
			return nil, fmt.Errorf("auth.credential: secret %s/%s holds no user nkey seed: %w", a.Credential.Name, a.Credential.Key, err)
		}
		return nats.UserJWT(func() (string, error) { return jwt, nil }, kp.Sign), nil
	}
	return nil, errors.New("auth: set one of basic, token, nkey and credential")
}

func (n *natsSource) logArgs(args ...any) []any {
	return append([]any{"eventsource", n.b.EventSource.Metadata.Name, "event", n.b.Event.Name, "url", n.url, "subject", n.cfg.Subject}, args...)
}

// Run connects, subscribes and handles messages until ctx ends, reconnecting for ever (see
// the type's documentation). When ctx ends it drains the subscription: messages NATS already
// handed over are still published, for at most publishTimeout more; what remains then is not
// published (JetStream redelivers it, core NATS loses it).
func (n *natsSource) Run(ctx context.Context) error {
	env := n.b.Env
	// stopPublishing ends the publishes of a drain that outlasts publishTimeout.
	pubCtx, stopPublishing := context.WithCancel(context.Background())
	defer stopPublishing()
	defer func() {
		n.mu.Lock()
		n.done = true
		n.mu.Unlock()
		n.inflight.Wait()
	}()
	health := newSourceHealth(ctx, n.b)
	defer health.stop()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(n.backoff.wait(attempt - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		closed := make(chan struct{})
		var once sync.Once
		nc, err := n.connect(health, func() { once.Do(func() { close(closed) }) })
		if err != nil {
			health.set(fmt.Errorf("connect to %s: %w", n.url, err))
			env.Logger.Warn("nats: cannot connect; retrying", n.logArgs("attempt", attempt+1, "err", err)...)
			continue
		}
		handler := func(m *nats.Msg) { n.handle(pubCtx, nc, m) }
		if n.cfg.Queue != nil {
			_, err = nc.QueueSubscribe(n.cfg.Subject, *n.cfg.Queue, handler)
		} else {
			_, err = nc.Subscribe(n.cfg.Subject, handler)
		}
		if err == nil {
			err = nc.FlushTimeout(10 * time.Second) // the server has the subscription
		}
		if err == nil {
			err = nc.LastError() // e.g. a permissions violation on the subject
		}
		if err != nil {
			nc.Close()
			health.set(fmt.Errorf("subscribe to %s: %w", n.cfg.Subject, err))
			env.Logger.Warn("nats: cannot subscribe; reconnecting", n.logArgs("attempt", attempt+1, "err", err)...)
			continue
		}
		health.set(nil)
		env.Logger.Info("nats: subscribed", n.logArgs("queue", n.queue())...)
		select {
		case <-closed:
			// nats.go gave up on the connection (e.g. refused credentials): start over, after the
			// first wait of the backoff.
			lastErr := nc.LastError()
			if lastErr == nil {
				lastErr = errors.New("the connection was closed")
			}
			health.set(n.redact(lastErr))
			env.Logger.Warn("nats: connection closed; reconnecting", n.logArgs("err", lastErr)...)
			attempt = 0
			continue
		case <-ctx.Done():
		}
		// Drain: no new messages; the ones already received are handled, then the connection
		// closes. After publishTimeout their publishes are cut short.
		cut := time.AfterFunc(env.PublishTimeout, stopPublishing)
		if err := nc.Drain(); err != nil {
			nc.Close()
		}
		<-closed
		cut.Stop()
		return nil
	}
}

func (n *natsSource) queue() string {
	if n.cfg.Queue == nil {
		return ""
	}
	return *n.cfg.Queue
}

// connect makes one connection; nats.go itself reconnects it, with the backoff's waits and for
// ever, until it is closed. Disconnections and reconnections are reported to health.
func (n *natsSource) connect(health *sourceHealth, onClosed func()) (*nats.Conn, error) {
	env := n.b.Env
	opts := append([]nats.Option{
		nats.Name(fmt.Sprintf("kevents eventsource %s event %s", n.b.EventSource.Metadata.Name, n.b.Event.Name)),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration { return n.backoff.wait(attempts - 1) }),
		// A drain waits for the handler, which waits for Kafka at most publishTimeout after
		// the drain started; this is a backstop.
		nats.DrainTimeout(2*env.PublishTimeout + 5*time.Second),
		nats.ClosedHandler(func(*nats.Conn) { onClosed() }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				env.Logger.Warn("nats: disconnected; reconnecting", n.logArgs("err", err)...)
			}
			if nc.IsClosed() || nc.IsDraining() {
				return // closed on purpose (a stop), or given up: Run reports that
			}
			if err == nil {
				err = errors.New("disconnected")
			}
			health.set(fmt.Errorf("disconnected; reconnecting: %w", n.redact(err)))
		}),
		// Each failed attempt to reconnect: the report then says why it fails now.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				health.set(fmt.Errorf("cannot reconnect: %w", n.redact(err)))
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			env.Logger.Info("nats: reconnected", n.logArgs()...)
			health.set(nil) // nats.go subscribed again before calling this
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				env.Logger.Error("nats: messages dropped: the source fell behind (slow consumer); core NATS does not redeliver them", n.logArgs("err", err)...)
				return
			}
			env.Logger.Warn("nats: asynchronous error", n.logArgs("err", err)...)
		}),
	}, n.opts...)
	nc, err := nats.Connect(n.cfg.URL, opts...)
	if err != nil {
		return nil, n.redact(err)
	}
	return nc, nil
}

// redact replaces the configured URL, which may hold credentials, by its redacted form in err.
func (n *natsSource) redact(err error) error {
	if n.cfg.URL == n.url || !strings.Contains(err.Error(), n.cfg.URL) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), n.cfg.URL, n.url))
}

// isNATSControl reports a JetStream idle heartbeat or flow-control request: status 100, no
// body. They are answered, never turned into events.
func isNATSControl(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "100" &&
		(m.Reply == "" || strings.HasPrefix(m.Reply, "$JS.FC."))
}

func (n *natsSource) handle(pubCtx context.Context, nc *nats.Conn, m *nats.Msg) {
	env := n.b.Env
	if isNATSControl(m) {
		if m.Reply != "" { // flow control: the consumer waits for this answer
			_ = nc.Publish(m.Reply, nil)
		}
		if stalled := m.Header.Get("Nats-Consumer-Stalled"); stalled != "" {
			_ = nc.Publish(stalled, nil)
		}
		return
	}
	n.mu.Lock()
	if n.done {
		n.mu.Unlock()
		return
	}
	n.inflight.Add(1)
	n.mu.Unlock()
	defer n.inflight.Done()

	ns, es, name := n.b.EventSource.Metadata.Namespace, n.b.EventSource.Metadata.Name, n.b.Event.Name
	env.Metrics.EventsReceived.WithLabelValues(es, name).Inc()
	meta, jsErr := m.Metadata()
	jetstream := jsErr == nil
	logArgs := n.logArgs("message_subject", m.Subject)
	if jetstream {
		logArgs = append(logArgs, "stream", meta.Stream, "stream_seq", meta.Sequence.Stream, "delivered", meta.NumDelivered)
	}

	e, size, err := n.event(m, meta)
	if err != nil { // not expected: every part of the data encodes
		env.Metrics.PublishFailed(ns, es, name, 1)
		env.Logger.Error("nats: cannot encode the event; message dropped", append(logArgs, "err", err)...)
		if jetstream {
			_ = m.Term()
		}
		return
	}
	ctx, cancel := context.WithTimeout(pubCtx, env.PublishTimeout)
	err = env.Publisher.Publish(ctx, n.b.Topic, e)
	cancel()
	switch {
	case err == nil:
		env.Metrics.Published(ns, es, name, 1)
		if jetstream {
			if err := m.Ack(); err != nil {
				env.Logger.Warn("nats: event published but the JetStream ack failed; the message will be delivered again (same event id)", append(logArgs, "err", err)...)
			}
		}
	case errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge):
		env.Metrics.PublishFailed(ns, es, name, 1)
		env.Logger.Error("nats: event larger than Kafka accepts; message dropped", append(logArgs, "bytes", size, "err", err)...)
		if jetstream {
			_ = m.Term() // no redelivery can help
		}
	default:
		env.Metrics.PublishFailed(ns, es, name, 1)
		if jetstream {
			delay := natsNakDelay(meta.NumDelivered)
			env.Logger.Warn("nats: Kafka did not acknowledge the event; JetStream message nak'ed for redelivery", append(logArgs, "redelivery_in", delay, "err", err)...)
			if err := m.NakWithDelay(delay); err != nil {
				env.Logger.Warn("nats: nak failed; JetStream redelivers after the consumer's ack wait", append(logArgs, "err", err)...)
			}
			return
		}
		env.Logger.Error("nats: Kafka did not acknowledge the event; message lost (core NATS does not redeliver)", append(logArgs, "err", err)...)
	}
}

// event builds the CloudEvent of a message. The id is a UUID for core NATS; for JetStream it is
// "jetstream:<domain.>stream:<stream sequence>:<stored time in ns>", the same on every delivery
// of the message, and time is the stored time.
func (n *natsSource) event(m *nats.Msg, meta *nats.MsgMetadata) (cloudevents.Event, int, error) {
	d := natsData{Subject: m.Subject, Metadata: n.cfg.Metadata}
	if len(m.Header) > 0 {
		d.Header = map[string][]string(m.Header)
	}
	switch {
	case !n.cfg.JSONBody:
		d.Body = m.Data // base64, as Argo
	case json.Valid(m.Data):
		d.Body = json.RawMessage(m.Data)
	default:
		// Argo drops such a message with an error; kevents keeps it, with the body as a string.
		d.Body = string(m.Data)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return cloudevents.Event{}, 0, err
	}
	e := cloudevents.New()
	if meta != nil {
		stream := meta.Stream
		if meta.Domain != "" {
			stream = meta.Domain + "." + stream
		}
		e.SetID(fmt.Sprintf("jetstream:%s:%d:%d", stream, meta.Sequence.Stream, meta.Timestamp.UnixNano()))
		e.SetTime(meta.Timestamp.UTC())
	} else {
		e.SetID(uuid.NewString())
		e.SetTime(time.Now().UTC())
	}
	e.SetSource(n.b.EventSource.Metadata.Name)
	e.SetSubject(n.b.Event.Name)
	e.SetType("nats")
	if err := e.SetData("application/json", data); err != nil {
		return cloudevents.Event{}, 0, err
	}
	return e, len(data), nil
}
