package source

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kevents/kevents/api"
)

// The mqtt source subscribes to an MQTT topic filter (MQTT 3.1.1, through paho) and publishes
// every message to the EventSource's topic.
//
// Acknowledgement: the source subscribes with QoS 1 (Argo subscribes with QoS 0, which downgrades
// every message to at most once) and keeps a persistent session (clean session off, under
// clientId). A QoS 1 message is acknowledged (PUBACK) only after Kafka acknowledged its event;
// when Kafka did not, the source disconnects without acknowledging it, and the broker sends it
// again when the source reconnects and resumes the session, after connectionBackoff's wait. The
// broker also keeps the QoS 1 messages published while the source is disconnected. Delivery is
// therefore at least once (a message whose PUBACK was lost comes again, as a new event: MQTT
// gives it no stable identity). QoS 0 messages (published with QoS 0) have no acknowledgement
// and are at most once. QoS 2 messages are delivered with QoS 1.
//
// Once in the cluster: an MQTT client id has one session, and a second connection under the
// same id takes the session over, so the members cannot all subscribe as clientId. The event
// is an owned source (see OwnedSource): the member that owns its partition of <prefix>.sources
// connects as clientId, commits the messages it receives in transactions, and acknowledges them
// after the commit; a new owner resumes the same session, with what the previous one left
// unacknowledged. When topic is a shared subscription ("$share/<group>/<filter>", which the
// broker must support) the broker itself spreads the messages over the subscribers: every
// member then subscribes, as "<clientId>-<member>" (--member), and publishes through its own
// producer. A member gone for good leaves its session's unacknowledged messages with the broker.
//
// Connection: connectionBackoff (Argo's default: 1 s, factor 1, jitter 1, 5 steps) paces the
// connection attempts as for nats, without giving up: the wait grows by factor for steps
// attempts, then stays there. Each change between connected and not is logged and reported
// (kevents_source_connected, readiness): connected once subscribed, not from a lost connection
// or a failed attempt. A reconnection after Kafka refused a message is no connection failure.
//
// Bad input: with jsonBody, a message that is not JSON is rejected, as Argo does: logged,
// acknowledged and dropped. So is an event larger than Kafka accepts.

func init() {
	RegisterOwned("mqtt", Spec{
		Summary: "MQTT topic (QoS 1, persistent session); a message is acknowledged only after Kafka acknowledged its event. Runs once in the cluster, or on every member with a $share/ topic.",
		Check:   checkMQTT,
	}, newMQTT)
}

const (
	// mqttBatch bounds the messages of one commit.
	mqttBatch = 100
	// mqttConnectTimeout bounds one connection attempt; a stop waits for it, so that no
	// connection outlives the source and takes over the next owner's session.
	mqttConnectTimeout = 5 * time.Second
	// mqttSharePrefix starts a shared subscription's topic filter.
	mqttSharePrefix = "$share/"
)

// mqttSchemes are the URL schemes paho connects with (unix sockets excepted).
var mqttSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true, "mqtt+ssl": true, "tcps": true, "ws": true, "wss": true}

// mqttData is the data of an mqtt event, as Argo's MQTTEventData: body is embedded JSON with
// jsonBody, else the payload's bytes (base64 in JSON).
type mqttData struct {
	Topic     string            `json:"topic"`
	MessageID int               `json:"messageId"`
	Body      any               `json:"body"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

func checkMQTT(ev api.Event) error {
	m, specErr := specOf[api.MQTTEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	if err := checkMQTTURL(m.URL); err != nil {
		errs = append(errs, err)
	}
	if err := checkMQTTTopic(m.Topic); err != nil {
		errs = append(errs, err)
	}
	if m.ClientID == "" {
		errs = append(errs, errors.New("clientId: missing; expected the client id of the MQTT session"))
	}
	if _, err := parseBackoff(m.ConnectionBackoff); err != nil {
		errs = append(errs, fmt.Errorf("connectionBackoff.%w", err))
	}
	if m.TLS != nil {
		if err := m.TLS.Check("tls"); err != nil {
			errs = append(errs, err)
		}
	}
	if m.Auth != nil {
		errs = append(errs, m.Auth.Username.Check("auth.username"), m.Auth.Password.Check("auth.password"))
	}
	return errors.Join(errs...)
}

// checkMQTTURL accepts what paho connects to: scheme://host:port with a scheme of mqttSchemes,
// or host:port (tcp). Errors never show user info.
func checkMQTTURL(s string) error {
	if s == "" {
		return errors.New("url: missing; expected tcp://host:port (or ssl, tls, mqtt, mqtts, ws, wss)")
	}
	raw := s
	if !strings.Contains(raw, "://") {
		raw = "tcp://" + raw
	}
	u, err := neturl.Parse(raw)
	if err == nil && mqttSchemes[u.Scheme] && u.Hostname() != "" {
		return nil
	}
	shown := s
	if err == nil {
		shown = u.Redacted()
	} else if at := strings.LastIndex(s, "@"); at >= 0 {
		shown = "redacted" + s[at:]
	}
	return fmt.Errorf("url: %q; expected tcp://host:port (or ssl, tls, mqtt, mqtts, ws, wss)", shown)
}

// checkMQTTTopic accepts a topic filter: levels separated by '/', '+' a whole level, '#' the
// whole last level; a shared subscription "$share/<group>/<filter>" with a group name
// without wildcards.
func checkMQTTTopic(topic string) error {
	if topic == "" {
		return errors.New("topic: missing; expected a topic filter such as sensors/+/temperature")
	}
	filter := topic
	if rest, ok := strings.CutPrefix(topic, mqttSharePrefix); ok {
		group, f, ok := strings.Cut(rest, "/")
		if !ok || group == "" || strings.ContainsAny(group, "+#") || f == "" {
			return fmt.Errorf("topic: %q; expected a shared subscription $share/<group>/<filter>, the group without + or #", topic)
		}
		filter = f
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if (strings.ContainsAny(l, "+#") && l != "+" && l != "#") || (l == "#" && i != len(levels)-1) {
			return fmt.Errorf("topic: %q; expected levels separated by '/', '+' a whole level and '#' only as the whole last level", topic)
		}
	}
	return nil
}

type mqttSource struct {
	b        Build
	cfg      api.MQTTEventSource
	shared   bool
	clientID string
	backoff  connBackoff
	tls      *tls.Config
	user     string
	password string
	log      *slog.Logger
}

func newMQTT(b Build) (OwnedSource, error) {
	cfg := b.Event.Spec.(api.MQTTEventSource) // checkMQTT verified the type
	m := &mqttSource{b: b, cfg: cfg, shared: strings.HasPrefix(cfg.Topic, mqttSharePrefix), clientID: cfg.ClientID}
	var err error
	if m.backoff, err = parseBackoff(cfg.ConnectionBackoff); err != nil {
		return nil, fmt.Errorf("connectionBackoff.%w", err)
	}
	if m.shared && b.Env.Member != "" {
		m.clientID = cfg.ClientID + "-" + b.Env.Member
	}
	if cfg.TLS != nil {
		if m.tls, err = b.Env.Secrets.TLSConfig("tls", cfg.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.Auth != nil {
		if m.user, err = b.Env.Secrets.Ref("auth.username", cfg.Auth.Username); err != nil {
			return nil, err
		}
		if m.password, err = b.Env.Secrets.Ref("auth.password", cfg.Auth.Password); err != nil {
			return nil, err
		}
	}
	url := cfg.URL
	if u, err := neturl.Parse(url); err == nil {
		url = u.Redacted()
	}
	m.log = b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name,
		"url", url, "topic", cfg.Topic, "clientId", m.clientID)
	return m, nil
}

// everyMember implements everyMemberSource: a shared subscription runs on every member.
func (m *mqttSource) everyMember() bool { return m.shared }

// Run implements Source for a shared subscription: it publishes each message through the
// Publisher and acknowledges it once Kafka did, reconnecting after any failure, until ctx ends.
func (m *mqttSource) Run(ctx context.Context) error {
	return m.loop(ctx, m.publish)
}

// RunOwned implements OwnedSource: it commits the messages in transactions and acknowledges them
// after each commit. It returns the error of a failed commit (the messages stay with the broker,
// unacknowledged) and nil once ctx ended. The state is unused: the broker keeps the session.
func (m *mqttSource) RunOwned(ctx context.Context, _ []byte, commit Commit) error {
	return m.loop(ctx, func(ctx context.Context, batch []mqttItem) error {
		return m.commit(ctx, batch, commit)
	})
}

// mqttItem is one message received and its event; a message rejected has none.
type mqttItem struct {
	msg   mqtt.Message
	event *cloudevents.Event
}

// errMQTTConnection ends a session whose connection failed: the loop reconnects.
var errMQTTConnection = errors.New("mqtt connection")

// loop runs sessions until ctx ends (nil) or deliver fails in owned mode (its error). In shared
// mode a failed deliver only ends the session: the broker delivers again after the reconnect.
func (m *mqttSource) loop(ctx context.Context, deliver func(context.Context, []mqttItem) error) error {
	health := newSourceHealth(ctx, m.b)
	defer health.stop()
	attempt := 0
	for {
		connected, err := m.session(ctx, deliver, health)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			attempt = 0
		}
		if errors.Is(err, errMQTTConnection) {
			// A reconnect after a failed delivery is on purpose: the connection was fine.
			health.set(err)
		}
		if !errors.Is(err, errMQTTConnection) && !m.shared {
			return err
		}
		wait := m.backoff.wait(attempt)
		attempt++
		if errors.Is(err, errMQTTConnection) {
			m.log.Warn("mqtt: not connected; reconnecting", "retryIn", wait, "err", err)
		} else {
			m.log.Warn("mqtt: reconnecting to have the unacknowledged messages delivered again", "retryIn", wait, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session connects, subscribes and delivers messages in batches until ctx ends, the connection
// is lost or deliver fails. connected reports whether the subscription was made; it is reported
// to health as soon as it is (and a lost connection as soon as paho reports it).
func (m *mqttSource) session(ctx context.Context, deliver func(context.Context, []mqttItem) error, health *sourceHealth) (connected bool, err error) {
	msgs := make(chan mqtt.Message, mqttBatch)
	ended := make(chan struct{})
	defer close(ended)
	lost := make(chan error, 1)
	// paho calls the handler on its router goroutine, one message at a time, in order; it blocks
	// while the batch is full, which holds back the connection: flow control.
	handler := func(_ mqtt.Client, msg mqtt.Message) {
		select {
		case msgs <- msg:
		case <-ended:
		}
	}
	opts := mqtt.NewClientOptions().AddBroker(m.cfg.URL).SetClientID(m.clientID).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetAutoAckDisabled(true).SetOrderMatters(true).SetConnectTimeout(mqttConnectTimeout).
		// A resumed session delivers before Subscribe returns; those messages have no route yet.
		SetDefaultPublishHandler(handler).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			if err != nil {
				health.set(fmt.Errorf("connection lost: %w", err))
			}
			select {
			case lost <- err:
			default:
			}
		})
	if m.tls != nil {
		opts.SetTLSConfig(m.tls.Clone())
	}
	if m.cfg.Auth != nil {
		opts.SetUsername(m.user).SetPassword(m.password)
	}
	client := mqtt.NewClient(opts)
	// Not abandoned on a stop: a connection made after the source stopped would hold the session.
	ctok := client.Connect()
	if ctok.Wait() && ctok.Error() != nil {
		return false, fmt.Errorf("%w: connect: %w", errMQTTConnection, ctok.Error())
	}
	defer client.Disconnect(250)
	resumed := ctok.(*mqtt.ConnectToken).SessionPresent()

	// The subscription is made while messages of a resumed session are delivered: some brokers
	// (mochi-mqtt) refuse a SUBSCRIBE whose packet id one of them still holds (0x91), until it
	// is acknowledged.
	subscribed := make(chan error, 1)
	subscribe := func() {
		tok := client.Subscribe(m.cfg.Topic, 1, handler)
		tok.Wait()
		err := tok.Error()
		if code := tok.(*mqtt.SubscribeToken).Result()[m.cfg.Topic]; err == nil && code > 2 {
			err = mqttSubscribeRefused(code)
		}
		subscribed <- err
	}
	go subscribe()
	var retry <-chan time.Time
	for refusals := 0; ; {
		var batch []mqtt.Message
		select {
		case <-ctx.Done():
			return connected, nil
		case err := <-lost:
			return connected, fmt.Errorf("%w: connection lost: %w", errMQTTConnection, err)
		case err := <-subscribed:
			var refused mqttSubscribeRefused
			switch {
			case err == nil:
				connected = true
				health.set(nil)
				m.log.Info("mqtt: subscribed", "sessionResumed", resumed)
			case resumed && errors.As(err, &refused) && refused == 0x91 && refusals < 50:
				refusals++
				retry = time.After(100 * time.Millisecond)
			default:
				return false, fmt.Errorf("%w: subscribe: %w", errMQTTConnection, err)
			}
			continue
		case <-retry:
			go subscribe()
			continue
		case msg := <-msgs:
			batch = append(batch, msg)
		}
		batch = drainReady(batch, msgs, mqttBatch)
		if err := deliver(ctx, m.items(batch)); err != nil {
			return connected, err
		}
	}
}

// mqttSubscribeRefused is the return code of a SUBACK that refused the subscription.
type mqttSubscribeRefused byte

func (c mqttSubscribeRefused) Error() string {
	return fmt.Sprintf("the broker refused the subscription (return code %#x)", byte(c))
}

// items builds the events of a batch, rejecting what cannot become one.
func (m *mqttSource) items(batch []mqtt.Message) []mqttItem {
	es, name := m.b.EventSource.Metadata.Name, m.b.Event.Name
	m.b.Env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(batch)))
	out := make([]mqttItem, len(batch))
	for i, msg := range batch {
		out[i].msg = msg
		e, err := m.event(msg)
		if err != nil {
			m.log.Error("mqtt: message rejected; acknowledged and dropped", "messageTopic", msg.Topic(), "messageId", msg.MessageID(), "err", err)
			continue
		}
		out[i].event = &e
	}
	return out
}

// commit commits the events of a batch in one transaction, then acknowledges every message
// of the batch, in order.
func (m *mqttSource) commit(ctx context.Context, batch []mqttItem, commit Commit) error {
	env := m.b.Env
	ns, es, name := m.b.EventSource.Metadata.Namespace, m.b.EventSource.Metadata.Name, m.b.Event.Name
	var events []cloudevents.Event
	for _, it := range batch {
		if it.event != nil {
			events = append(events, *it.event)
		}
	}
	if len(events) > 0 {
		if err := commit(ctx, events, nil); err != nil {
			env.Metrics.PublishFailed(ns, es, name, len(events))
			m.log.Warn("mqtt: Kafka did not commit the events; their messages stay unacknowledged with the broker", "messages", len(batch), "err", err)
			return fmt.Errorf("commit %d mqtt events: %w", len(events), err)
		}
		env.Metrics.Published(ns, es, name, len(events))
	}
	for _, it := range batch {
		it.msg.Ack()
	}
	return nil
}

// publish publishes the events of a batch one after another through the Publisher,
// acknowledging each message once Kafka acknowledged its event; it stops at the first one Kafka
// did not acknowledge.
func (m *mqttSource) publish(ctx context.Context, batch []mqttItem) error {
	env := m.b.Env
	ns, es, name := m.b.EventSource.Metadata.Namespace, m.b.EventSource.Metadata.Name, m.b.Event.Name
	for _, it := range batch {
		if it.event != nil {
			pctx, cancel := context.WithTimeout(ctx, env.PublishTimeout)
			err := env.Publisher.Publish(pctx, m.b.Topic, *it.event)
			cancel()
			switch {
			case errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge):
				env.Metrics.PublishFailed(ns, es, name, 1)
				m.log.Error("mqtt: event larger than Kafka accepts; message acknowledged and dropped", "bytes", len(it.event.Data()), "err", err)
			case err != nil:
				env.Metrics.PublishFailed(ns, es, name, 1)
				m.log.Warn("mqtt: Kafka did not acknowledge the event; the message stays unacknowledged with the broker", "messageTopic", it.msg.Topic(), "err", err)
				return fmt.Errorf("publish: %w", err)
			default:
				env.Metrics.Published(ns, es, name, 1)
			}
		}
		it.msg.Ack()
	}
	return nil
}

// event builds the CloudEvent of a message: Argo's data, a new UUID and the time received.
func (m *mqttSource) event(msg mqtt.Message) (cloudevents.Event, error) {
	d := mqttData{Topic: msg.Topic(), MessageID: int(msg.MessageID()), Body: msg.Payload(), Metadata: m.cfg.Metadata}
	if m.cfg.JSONBody {
		if !json.Valid(msg.Payload()) {
			return cloudevents.Event{}, errors.New("jsonBody is set and the payload is not JSON (Argo drops such messages too)")
		}
		d.Body = json.RawMessage(msg.Payload())
	}
	return m.b.NewEvent(uuid.NewString(), time.Now().UTC(), d)
}
