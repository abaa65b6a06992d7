package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	iampb "cloud.google.com/go/iam/apiv1/iampb"
	pubsub "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kerr"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/kevents/kevents/api"
)

// The pubSub source receives the messages of a Google Cloud Pub/Sub subscription (streaming
// pull) and publishes each one to the EventSource's topic.
//
// Acknowledgement: a message is acked only after Kafka acknowledged its event. When Kafka did
// not (within PublishTimeout) the message is nacked, after a pause growing with the failures in
// a row (1 s, 2 s, 4 s, ... up to 30 s; the client keeps extending its ack deadline meanwhile),
// and Pub/Sub delivers it again, to this member or another one. Delivery is therefore at least
// once: a message whose ack is lost (the process dies, the connection drops before the batched
// ack is sent), or whose event Kafka wrote after the publish timed out, is delivered and
// published again, with the same CloudEvent id (the Pub/Sub message id). Messages are handled
// concurrently (up to the client's 1,000 outstanding), so events follow the order of Pub/Sub's
// deliveries only for a subscription with message ordering, per ordering key.
//
// A message that can never become an event (jsonBody set and the body is not JSON, or an event
// larger than Kafka accepts) is nacked when the subscription has a dead-letter policy (the
// message carries a delivery attempt), so Pub/Sub moves it to the dead-letter topic after its
// maximum attempts; otherwise it is acked and dropped, with an error log, rather than delivered
// again forever. Argo nacks it in both cases.
//
// Scaling: Pub/Sub is a competing-consumer model. Every member runs every pubSub event and
// pulls from the same subscription; Pub/Sub hands each message to one of them. Members derive
// the same default subscription ID, and the first to find it missing creates it (and the topic,
// when topic is set and it is missing); the others find it created. The messages a member held
// when it died (or lost its connection) are delivered again after the stream's ack deadline,
// set to 10 s (the client's default is 60 s).
//
// Subscription setup, as Argo: an existing subscription is used as is, or checked against
// topic when topic is set; a missing one is created on topic (in topicProjectID, else
// projectID), creating the topic too when it is missing. A missing subscription without topic
// is an error. Without subscriptionID the subscription is "<event name>-<hash>", the hash Argo
// computes from the spec, so kevents reads the subscription Argo created for the same spec.
// Setup and streaming failures are logged and retried after 1 s, doubling up to 30 s. The event
// is reported connected (kevents_source_connected, readiness) while it receives with a
// connection to Pub/Sub open, and not while the setup fails or every connection is lost (the
// client then retries by itself; see pubsubConnWatch).
//
// Credentials: credentialSecret holds a service account key (JSON), as in Argo; without it the
// Google default credentials (GOOGLE_APPLICATION_CREDENTIALS, Workload Identity, the metadata
// server). PUBSUB_EMULATOR_HOST points the client at an emulator, without credentials: Google's
// client reads it by itself, and the existence check then uses GetSubscription, as Argo does.
//
// Events carry Argo's attributes; their type is "pubsub", as Argo spells it. Argo's filter
// (an expression on the event data) is applied by Run, as to every source type (see
// source.go): a message whose event it drops is acked, as in Argo.
//
// Differences from Argo: an empty projectID is detected from GOOGLE_CLOUD_PROJECT or the
// credentials (on GKE and GCE that is the metadata server's project; Argo asks the metadata
// server only). The event time is the message's publish time (Argo: the time it dispatches).
// deleteSubscriptionOnFinish is refused: every member reads the one subscription, so the first
// member to stop would delete it under the others (and lose the messages it holds).

func init() {
	Register("pubSub", Spec{
		Summary: "Google Cloud Pub/Sub subscription (streaming pull); a message is acked only after Kafka acknowledged its event. Members compete on the subscription.",
		Check:   checkPubSub,
	}, newPubSub)
}

// pubsubEventType is the CloudEvent type of pubSub events: Argo spells it in lower case, unlike
// the field name.
const pubsubEventType = "pubsub"

// pubsubAckDeadline is the stream's ack deadline (see session).
const pubsubAckDeadline = 10 * time.Second

// pubsubRetry is the wait before setting the subscription up again after a failure, doubling
// up to limit: a variable so that tests can shorten it.
var pubsubRetry = struct{ first, limit time.Duration }{time.Second, 30 * time.Second}

// pubsubData is the data of a pubSub event, as Argo's PubSubEventData: body is the message as
// base64 (Go's encoding of bytes), or embedded JSON with jsonBody; publishTime is Go's
// time.Time.String of the publish time, as Argo writes it.
type pubsubData struct {
	ID          string            `json:"id"`
	Body        any               `json:"body"`
	Attributes  map[string]string `json:"attributes"`
	PublishTime string            `json:"publishTime"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// pubsubIDPattern is Pub/Sub's rule for topic and subscription IDs.
var pubsubIDPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$`)

func checkPubSubID(field, id string) error {
	if id == "" {
		return nil
	}
	if !pubsubIDPattern.MatchString(id) || strings.HasPrefix(strings.ToLower(id), "goog") {
		return fmt.Errorf("%s: %q; expected a Pub/Sub ID: 3-255 letters, digits and - _ . ~ + %%, starting with a letter, not with \"goog\"", field, id)
	}
	return nil
}

func checkPubSubProject(field, id string) error {
	if id != "" && (strings.ContainsAny(id, "/ \t\r\n")) {
		return fmt.Errorf("%s: %q; expected a project ID such as my-project, without '/' or whitespace", field, id)
	}
	return nil
}

func checkPubSub(ev api.Event) error {
	p, specErr := specOf[api.PubSubEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	if p.Topic == "" && p.SubscriptionID == "" {
		errs = append(errs, errors.New("topic, subscriptionID: both missing; expected subscriptionID (an existing subscription) or topic (the subscription is created on it), or both"))
	}
	if p.TopicProjectID != "" && p.Topic == "" {
		errs = append(errs, fmt.Errorf("topicProjectID: %q set without topic; expected topic too (topicProjectID is the project of topic)", p.TopicProjectID))
	}
	for _, err := range []error{
		checkPubSubProject("projectID", p.ProjectID),
		checkPubSubProject("topicProjectID", p.TopicProjectID),
		checkPubSubID("topic", p.Topic),
		checkPubSubID("subscriptionID", p.SubscriptionID),
	} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if p.CredentialSecret != nil {
		if err := p.CredentialSecret.Check("credentialSecret"); err != nil {
			errs = append(errs, err)
		}
	}
	if p.DeleteSubscriptionOnFinish {
		errs = append(errs, fmt.Errorf("%w (every member reads the one subscription, so the first member to stop would delete it under the others; delete it yourself when you remove the event)",
			api.NotSupported("pubSub eventsource field", "deleteSubscriptionOnFinish")))
	}
	return errors.Join(errs...)
}

type pubsubSource struct {
	b    Build
	cfg  api.PubSubEventSource
	opts []option.ClientOption
	log  *slog.Logger

	failures atomic.Int64 // publishes Kafka did not acknowledge in a row: they pace the nacks
	received atomic.Int64 // messages received, to tell a working session from a failing one
}

func newPubSub(b Build) (Source, error) {
	cfg := b.Event.Spec.(api.PubSubEventSource) // checkPubSub verified the type
	p := &pubsubSource{b: b, cfg: cfg}
	if cfg.CredentialSecret != nil {
		opt, err := pubsubCredentials(b, cfg.CredentialSecret)
		if err != nil {
			return nil, err
		}
		p.opts = append(p.opts, opt)
	}
	p.log = b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name)
	return p, nil
}

// pubsubCredentials reads credentialSecret: a service account key, as Argo accepts. Errors name
// the Secret, never its contents.
func pubsubCredentials(b Build, ref *api.SecretKeySelector) (option.ClientOption, error) {
	v, err := b.Env.Secrets.Ref("credentialSecret", ref)
	if err != nil {
		return nil, err
	}
	var key struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(v), &key); err != nil {
		return nil, fmt.Errorf("credentialSecret: secret %s/%s is not JSON; expected a service account key (JSON)", ref.Name, ref.Key)
	}
	if key.Type != string(option.ServiceAccount) {
		return nil, fmt.Errorf("credentialSecret: secret %s/%s holds credentials of type %q; expected a service account key (type %q), as Argo", ref.Name, ref.Key, key.Type, option.ServiceAccount)
	}
	return option.WithAuthCredentialsJSON(option.ServiceAccount, []byte(v)), nil
}

// Run receives until ctx ends; failures are logged and retried. It returns nil when ctx ends,
// after the messages being handled are published (or not) and acked (or nacked).
func (p *pubsubSource) Run(ctx context.Context) error {
	health := newSourceHealth(ctx, p.b)
	defer health.stop()
	retry := pubsubRetry.first
	for {
		before := p.received.Load()
		err := p.session(ctx, health)
		if ctx.Err() != nil {
			return nil
		}
		if p.received.Load() > before {
			retry = pubsubRetry.first
		}
		if err == nil {
			err = errors.New("the streaming pull ended")
		}
		health.set(err)
		p.log.Warn("pubSub: cannot receive from the subscription; retrying", "retryIn", retry, "err", err)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		retry = min(2*retry, pubsubRetry.limit)
	}
}

// session sets the subscription up and receives from it until ctx ends or the stream fails.
// Once it receives, health follows the client's connections (see pubsubConnWatch).
func (p *pubsubSource) session(ctx context.Context, health *sourceHealth) error {
	project := p.cfg.ProjectID
	if project == "" {
		project = pubsub.DetectProjectID
	}
	watch := &pubsubConnWatch{health: health}
	opts := append([]option.ClientOption{option.WithGRPCDialOption(grpc.WithStatsHandler(watch))}, p.opts...)
	client, err := pubsub.NewClient(ctx, project, opts...)
	if err != nil {
		return fmt.Errorf("pubsub client: %w", err)
	}
	defer client.Close()
	spec := p.cfg
	spec.ProjectID = client.Project()
	if spec.TopicProjectID == "" && spec.Topic != "" {
		spec.TopicProjectID = spec.ProjectID
	}
	subID := spec.SubscriptionID
	if subID == "" {
		if subID, err = argoPubSubSubscriptionID(p.b.Event.Name, spec); err != nil {
			return err
		}
	}
	sub := client.Subscriber(subID)
	log := p.log.With("subscription", sub.String())
	if err := p.prepare(ctx, client, spec, sub.String(), log); err != nil {
		return err
	}
	// Messages handed to a stream that broke (a member gone, a connection dropped) come back
	// after the stream's ack deadline: 10 s instead of the client's default 60 s. The client
	// extends the deadline of the messages it holds every 5 s either way.
	sub.ReceiveSettings.MaxDurationPerAckExtension = pubsubAckDeadline
	log.Info("pubSub: receiving messages")
	watch.receiving() // the setup's calls were answered: connected
	return sub.Receive(ctx, func(mctx context.Context, m *pubsub.Message) { p.handle(mctx, log, m) })
}

// pubsubConnWatch is a gRPC stats handler that follows the client's connections to Pub/Sub and
// reports them to health while the session receives: connected while at least one is open, not
// once the last one closed. The streaming pull retries a lost connection by itself, for ever,
// so Receive does not return while Pub/Sub is unreachable; without this the source would look
// connected throughout. Before Receive the setup's calls report for themselves (an error ends
// the session), so a connection made for a setup that then fails is not reported connected.
type pubsubConnWatch struct {
	health *sourceHealth

	mu   sync.Mutex
	open int  // connections open
	on   bool // the session receives
}

// receiving starts the reports: the session got as far as receiving.
func (w *pubsubConnWatch) receiving() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.on = true
	w.health.set(nil)
}

// HandleConn implements stats.Handler. Reports are made under mu so that they keep the order
// of the connection events.
func (w *pubsubConnWatch) HandleConn(_ context.Context, s stats.ConnStats) {
	if !s.IsClient() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch s.(type) {
	case *stats.ConnBegin:
		w.open++
		if w.on {
			w.health.set(nil)
		}
	case *stats.ConnEnd:
		w.open--
		if w.on && w.open <= 0 {
			w.health.set(errors.New("lost the connection to Pub/Sub; the client reconnects"))
		}
	}
}

// TagConn implements stats.Handler.
func (w *pubsubConnWatch) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

// TagRPC implements stats.Handler.
func (w *pubsubConnWatch) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}

// HandleRPC implements stats.Handler.
func (w *pubsubConnWatch) HandleRPC(context.Context, stats.RPCStats) {}

// argoPubSubSubscriptionID is the subscription ID Argo derives for an event without
// subscriptionID: "<event>-<FNV-32a of the event name and the spec as JSON>", the spec as Argo
// encodes its PubSubEventSource once projectID and topicProjectID are filled in.
func argoPubSubSubscriptionID(event string, s api.PubSubEventSource) (string, error) {
	type secretKeySelector struct { // corev1.SecretKeySelector
		Name     string `json:"name,omitempty"`
		Key      string `json:"key"`
		Optional *bool  `json:"optional,omitempty"`
	}
	spec := struct {
		ProjectID                  string                 `json:"projectID"`
		TopicProjectID             string                 `json:"topicProjectID"`
		Topic                      string                 `json:"topic"`
		SubscriptionID             string                 `json:"subscriptionID"`
		CredentialSecret           *secretKeySelector     `json:"credentialSecret,omitempty"`
		DeleteSubscriptionOnFinish bool                   `json:"deleteSubscriptionOnFinish,omitempty"`
		JSONBody                   bool                   `json:"jsonBody,omitempty"`
		Metadata                   map[string]string      `json:"metadata,omitempty"`
		Filter                     *api.EventSourceFilter `json:"filter,omitempty"`
	}{s.ProjectID, s.TopicProjectID, s.Topic, s.SubscriptionID, nil, s.DeleteSubscriptionOnFinish, s.JSONBody, s.Metadata, s.Filter}
	if c := s.CredentialSecret; c != nil {
		spec.CredentialSecret = &secretKeySelector{Name: c.Name, Key: c.Key, Optional: c.Optional}
	}
	body, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("derive the subscription ID: %w", err)
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(event + string(body)))
	return fmt.Sprintf("%s-%d", event, h.Sum32()), nil
}

// prepare makes sure the subscription exists and reads topic, following Argo's table:
//
//	subscription exists | topic set | action
//	no                  | no        | error
//	yes                 | no        | use it
//	yes                 | yes       | check that it reads topic
//	no                  | yes       | create it (and the topic when missing)
func (p *pubsubSource) prepare(ctx context.Context, client *pubsub.Client, spec api.PubSubEventSource, sub string, log *slog.Logger) error {
	exists, err := pubsubSubscriptionExists(ctx, client, sub)
	if err != nil {
		return err
	}
	if spec.Topic == "" {
		if !exists {
			return fmt.Errorf("subscription %s does not exist; set topic to have it created", sub)
		}
		return nil
	}
	topic := fmt.Sprintf("projects/%s/topics/%s", spec.TopicProjectID, spec.Topic)
	if exists {
		return pubsubCheckTopic(ctx, client, sub, topic)
	}
	create := func() error {
		_, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic})
		return err
	}
	err = create()
	if status.Code(err) == codes.NotFound {
		_, err = client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic})
		switch status.Code(err) {
		case codes.OK:
			log.Info("pubSub: topic created", "topic", topic)
		case codes.AlreadyExists: // another member created it meanwhile
		default:
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
		err = create()
	}
	switch status.Code(err) {
	case codes.OK:
		log.Info("pubSub: subscription created", "topic", topic)
		return nil
	case codes.AlreadyExists: // another member created it meanwhile
		return pubsubCheckTopic(ctx, client, sub, topic)
	}
	return fmt.Errorf("create subscription %s on %s: %w", sub, topic, err)
}

// pubsubSubscriptionExists tells whether sub exists. As Argo, it asks whether this client may
// consume from it (TestIamPermissions), which needs no permission to read the subscription;
// on an emulator (PUBSUB_EMULATOR_HOST, or a server without IAM) it reads the subscription.
func pubsubSubscriptionExists(ctx context.Context, client *pubsub.Client, sub string) (bool, error) {
	if os.Getenv("PUBSUB_EMULATOR_HOST") == "" {
		resp, err := client.SubscriptionAdminClient.TestIamPermissions(ctx, &iampb.TestIamPermissionsRequest{
			Resource: sub, Permissions: []string{"pubsub.subscriptions.consume"},
		})
		switch status.Code(err) {
		case codes.OK:
			if len(resp.GetPermissions()) == 1 {
				return true, nil
			}
			return false, fmt.Errorf("subscription %s: the credentials lack the permission pubsub.subscriptions.consume", sub)
		case codes.NotFound:
			return false, nil
		case codes.Unimplemented:
		default:
			return false, fmt.Errorf("subscription %s: test permissions: %w", sub, err)
		}
	}
	_, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: sub})
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.NotFound:
		return false, nil
	}
	return false, fmt.Errorf("subscription %s: %w", sub, err)
}

// pubsubCheckTopic checks that the existing subscription sub reads topic.
func pubsubCheckTopic(ctx context.Context, client *pubsub.Client, sub, topic string) error {
	s, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: sub})
	if err != nil {
		return fmt.Errorf("subscription %s: read it to check its topic: %w", sub, err)
	}
	switch s.GetTopic() {
	case topic:
		return nil
	case "_deleted-topic_":
		return fmt.Errorf("subscription %s: its topic was deleted; expected it to read %s", sub, topic)
	}
	return fmt.Errorf("subscription %s reads topic %s; expected %s (topic, topicProjectID)", sub, s.GetTopic(), topic)
}

// handle publishes one message and acks it once Kafka acknowledged the event (see the file's
// comment). The publish outlives mctx, which ends when Receive stops: a message received is
// published or nacked, never half done.
func (p *pubsubSource) handle(mctx context.Context, log *slog.Logger, m *pubsub.Message) {
	env := p.b.Env
	ns, es, name := p.b.EventSource.Metadata.Namespace, p.b.EventSource.Metadata.Name, p.b.Event.Name
	p.received.Add(1)
	env.Metrics.EventsReceived.WithLabelValues(es, name).Inc()
	e, size, err := p.event(m)
	if err != nil {
		p.reject(log, m, err)
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(mctx), env.PublishTimeout)
	err = env.Publisher.Publish(pctx, p.b.Topic, e)
	cancel()
	switch {
	case err == nil:
		env.Metrics.Published(ns, es, name, 1)
		p.failures.Store(0)
		m.Ack()
	case errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge):
		env.Metrics.PublishFailed(ns, es, name, 1)
		p.reject(log, m, fmt.Errorf("the event (%d bytes) is larger than Kafka accepts: %w", size, err))
	default:
		env.Metrics.PublishFailed(ns, es, name, 1)
		delay := natsNakDelay(uint64(p.failures.Add(1)))
		log.Warn("pubSub: Kafka did not acknowledge the event; the message is nacked for redelivery", "messageId", m.ID, "nackIn", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-mctx.Done():
		case <-t.C:
		}
		t.Stop()
		m.Nack()
	}
}

// reject handles a message that can never become an event: nacked for the dead-letter topic
// when the subscription has one, else acked and dropped.
func (p *pubsubSource) reject(log *slog.Logger, m *pubsub.Message, err error) {
	if m.DeliveryAttempt != nil {
		log.Error("pubSub: message rejected and nacked for the subscription's dead-letter topic", "messageId", m.ID, "deliveryAttempt", *m.DeliveryAttempt, "err", err)
		m.Nack()
		return
	}
	log.Error("pubSub: message rejected and acknowledged (the subscription has no dead-letter policy)", "messageId", m.ID, "err", err)
	m.Ack()
}

// event builds the CloudEvent of a message: Argo's data, the message id as event id (the same
// on every delivery) and the publish time. It also returns the size of the data.
func (p *pubsubSource) event(m *pubsub.Message) (cloudevents.Event, int, error) {
	d := pubsubData{ID: m.ID, Body: m.Data, Attributes: m.Attributes, PublishTime: m.PublishTime.String(), Metadata: p.cfg.Metadata}
	if p.cfg.JSONBody {
		switch {
		case len(m.Data) == 0:
			d.Body = nil // Argo's empty json.RawMessage pointer: null
		case !json.Valid(m.Data):
			return cloudevents.Event{}, 0, errors.New("jsonBody is set and the body is not JSON")
		default:
			d.Body = json.RawMessage(m.Data)
		}
	}
	data, err := json.Marshal(d)
	if err != nil {
		return cloudevents.Event{}, 0, fmt.Errorf("encode the event data: %w", err)
	}
	e, err := p.b.NewEvent(m.ID, m.PublishTime.UTC(), json.RawMessage(data))
	if err != nil {
		return cloudevents.Event{}, 0, err
	}
	e.SetType(pubsubEventType)
	return e, len(data), nil
}
