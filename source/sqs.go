package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/awsconfig"
)

// The sqs source long-polls an AWS SQS queue (or any SQS-compatible endpoint) and publishes every
// message to the EventSource's topic.
//
// Acknowledgement: a message is deleted from the queue (DeleteMessageBatch) only after
// Publisher.Publish returned nil for it, that is after Kafka acknowledged its event. Messages of
// one receive are published in the order SQS returned them; at the first one Kafka does not
// acknowledge within PublishTimeout the rest of the batch is left alone too, so a FIFO queue
// keeps its order. A message that is not deleted becomes visible again when its visibility
// timeout ends and is received again (by this member or another one), and after the queue's
// maxReceiveCount SQS moves it to the queue's own dead-letter queue, if the queue has a redrive
// policy. Delivery is therefore at least once: a message whose delete failed, or whose event Kafka
// wrote after the publish timed out, is published again, with the same CloudEvent id (the SQS
// MessageId), so consumers can recognize the duplicate.
//
// Scaling: SQS is a competing-consumer queue. Every member of the source pool runs every sqs event
// and polls the same queue; SQS hands each message to one receiver at a time (the visibility
// timeout), so the members need no coordination and no ownership through the <p>.sources topic.
//
// As in Argo Events, dlq: true means the queue has a dead-letter queue: a message whose body cannot
// become an event (jsonBody: true and the body is not JSON, or the event is larger than Kafka
// accepts) is then left in the queue so that SQS moves it to the dead-letter queue after its
// maxReceiveCount; with dlq: false such a message is deleted (and logged) instead of being
// received again forever.
//
// Credentials: accessKey and secretKey (and sessionToken) from Secrets, read again every five
// minutes and when SQS answers ExpiredToken; without them the AWS default chain (environment,
// shared files, web identity, ECS/EC2 roles). With roleARN those credentials assume the role
// through STS; Argo ignores accessKey and secretKey when roleARN is set and always assumes the
// role with the default chain.
//
// Connection: failed calls are logged and retried after a pause that doubles while they fail;
// the event is reported not connected (kevents_source_connected, readiness) from a failed
// GetQueueUrl or ReceiveMessage until SQS answers again.

func init() {
	Register("sqs", Spec{
		Summary: "AWS SQS queue (long polling); a message is deleted only after Kafka acknowledged its event.",
		Check:   checkSQS,
	}, newSQS)
}

const (
	// sqsMaxMessages is the most messages one ReceiveMessage returns (SQS's limit; Argo asks for it).
	sqsMaxMessages = 10
	// sqsDefaultWait is Argo's long-poll wait when waitTimeSeconds is 0.
	sqsDefaultWait = 3
	// sqsDeleteTimeout bounds a DeleteMessageBatch call, which also runs after ctx ended.
	sqsDeleteTimeout = 10 * time.Second
)

// sqsVisibility is the visibility timeout asked for with every receive: Argo's 120 s, or longer
// when PublishTimeout is so long that a whole batch might not be published within 120 s. It is a
// variable so that tests can shorten it.
var sqsVisibility = func(publishTimeout time.Duration) time.Duration {
	return min(max(120*time.Second, sqsMaxMessages*publishTimeout+10*time.Second), 12*time.Hour) // SQS's limit
}

// sqsRetry is the wait between failed calls to SQS (Argo waits 2 s), doubling up to a limit.
var sqsRetry = struct{ first, limit time.Duration }{2 * time.Second, 30 * time.Second}

func checkSQS(ev api.Event) error {
	s, specErr := specOf[api.SQSEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	if s.Region == "" {
		errs = append(errs, errors.New("region: missing; expected the AWS region of the queue, e.g. us-east-1"))
	}
	if s.Queue == "" {
		errs = append(errs, errors.New("queue: missing; expected the name of the queue"))
	}
	if s.WaitTimeSeconds < 0 || s.WaitTimeSeconds > 20 {
		errs = append(errs, fmt.Errorf("waitTimeSeconds: %d; expected 0-20 (0 means %d)", s.WaitTimeSeconds, sqsDefaultWait))
	}
	switch {
	case s.AccessKey != nil && s.SecretKey == nil:
		errs = append(errs, errors.New("secretKey: missing; accessKey and secretKey go together"))
	case s.AccessKey == nil && s.SecretKey != nil:
		errs = append(errs, errors.New("accessKey: missing; accessKey and secretKey go together"))
	case s.AccessKey == nil && s.SessionToken != nil:
		errs = append(errs, errors.New("sessionToken: set without accessKey and secretKey; a session token only goes with them"))
	}
	for _, sel := range []struct {
		field string
		s     *api.SecretKeySelector
	}{{"accessKey", s.AccessKey}, {"secretKey", s.SecretKey}, {"sessionToken", s.SessionToken}} {
		if sel.s != nil && (sel.s.Name == "" || sel.s.Key == "") {
			errs = append(errs, fmt.Errorf("%s: name %q, key %q; expected both the Secret name and key", sel.field, sel.s.Name, sel.s.Key))
		}
	}
	if s.Endpoint != "" {
		u, err := neturl.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("endpoint: %q; expected an http or https URL such as http://localhost:4566", s.Endpoint))
		}
	}
	return errors.Join(errs...)
}

// sqsData is the event data of an sqs event, as Argo Events shapes it (events.SQSEventData).
type sqsData struct {
	MessageID         string                        `json:"messageId"`
	MessageAttributes map[string]*sqsAttributeValue `json:"messageAttributes"`
	// Body is the message body: embedded as JSON with jsonBody, else the bytes of the body, which
	// encoding/json writes as a base64 string, as Argo does.
	Body     any               `json:"body"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// sqsAttributeValue is a message attribute encoded as Argo encodes aws-sdk-go's (v1)
// sqs.MessageAttributeValue: its Go field names, null when unset, binary values in base64.
type sqsAttributeValue struct {
	BinaryListValues [][]byte
	BinaryValue      []byte
	DataType         *string
	StringListValues []string
	StringValue      *string
}

type sqsSource struct {
	b          Build
	cfg        api.SQSEventSource
	client     *sqs.Client
	creds      aws.CredentialsProvider
	wait       int32
	visibility int32
}

func newSQS(b Build) (Source, error) {
	cfg := b.Event.Spec.(api.SQSEventSource) // checkSQS verified the type
	s := &sqsSource{b: b, cfg: cfg, wait: int32(cfg.WaitTimeSeconds)}
	if s.wait == 0 {
		s.wait = sqsDefaultWait
	}
	vis := sqsVisibility(b.Env.PublishTimeout)
	s.visibility = int32((vis + time.Second - 1) / time.Second)

	awsCfg, err := awsconfig.Load(context.Background(), awsconfig.Options{
		Region: cfg.Region, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey, SessionToken: cfg.SessionToken,
		RoleARN: cfg.RoleARN, Secrets: b.Env.Secrets,
	})
	if err != nil {
		return nil, err
	}
	s.creds = awsCfg.Credentials
	s.client = sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return s, nil
}

// Run polls until ctx ends. Failures of SQS are logged and retried; Run returns nil when ctx ends.
func (s *sqsSource) Run(ctx context.Context) error {
	log := s.b.Env.Logger.With("eventsource", s.b.EventSource.Metadata.Name, "event", s.b.Event.Name, "queue", s.cfg.Queue)
	retry := sqsRetry.first
	pause := func() bool {
		t := time.NewTimer(retry)
		defer t.Stop()
		retry = min(2*retry, sqsRetry.limit)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}

	health := newSourceHealth(ctx, s.b)
	defer health.stop()
	var queueURL string
	for queueURL == "" {
		in := &sqs.GetQueueUrlInput{QueueName: aws.String(s.cfg.Queue)}
		if s.cfg.QueueAccountID != "" {
			in.QueueOwnerAWSAccountId = aws.String(s.cfg.QueueAccountID)
		}
		out, err := s.client.GetQueueUrl(ctx, in)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.expired(err, log)
			health.set(fmt.Errorf("get the URL of queue %s: %w", s.cfg.Queue, err))
			log.Warn("sqs: cannot get the queue URL; retrying", "err", err, "retryIn", retry)
			if !pause() {
				return nil
			}
			continue
		}
		queueURL = aws.ToString(out.QueueUrl)
	}
	health.set(nil) // SQS answered; a receive may wait for messages for waitTimeSeconds
	retry = sqsRetry.first
	log.Info("sqs: receiving messages", "queueURL", queueURL, "waitTimeSeconds", s.wait, "visibilityTimeout", s.visibility)

	for ctx.Err() == nil {
		out, err := s.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:              aws.String(queueURL),
			MaxNumberOfMessages:   sqsMaxMessages,
			WaitTimeSeconds:       s.wait,
			VisibilityTimeout:     s.visibility,
			MessageAttributeNames: []string{"All"},
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.expired(err, log)
			health.set(fmt.Errorf("receive from queue %s: %w", s.cfg.Queue, err))
			log.Warn("sqs: cannot receive messages; retrying", "err", err, "retryIn", retry)
			if !pause() {
				return nil
			}
			continue
		}
		health.set(nil)
		retry = sqsRetry.first
		s.handle(ctx, log, queueURL, out.Messages)
	}
	return nil
}

// expired drops cached credentials when SQS says they expired, so that the next call reads them
// again (as Argo re-reads its credentials on ExpiredToken).
func (s *sqsSource) expired(err error, log *slog.Logger) {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ExpiredToken" {
		return
	}
	if c, ok := s.creds.(*aws.CredentialsCache); ok {
		log.Info("sqs: credentials expired; reading them again")
		c.Invalidate()
	}
}

// handle publishes the messages of one receive in order and deletes those Kafka acknowledged.
func (s *sqsSource) handle(ctx context.Context, log *slog.Logger, queueURL string, msgs []sqstypes.Message) {
	env := s.b.Env
	ns, es, name := s.b.EventSource.Metadata.Namespace, s.b.EventSource.Metadata.Name, s.b.Event.Name
	var done []sqstypes.Message
	for i, m := range msgs {
		if ctx.Err() != nil {
			// Stopping: the rest become visible again after the visibility timeout.
			break
		}
		id := aws.ToString(m.MessageId)
		env.Metrics.EventsReceived.WithLabelValues(es, name).Inc()
		data, err := s.eventData(m)
		if err != nil {
			s.unusable(log, id, "the message cannot become an event", err, m, &done)
			continue
		}
		e := cloudevents.New()
		e.SetID(id)
		e.SetSource(es)
		e.SetSubject(name)
		e.SetType("sqs")
		e.SetTime(time.Now().UTC())
		if err := e.SetData("application/json", data); err != nil {
			s.unusable(log, id, "the message cannot become an event", err, m, &done)
			continue
		}
		// The publish outlives ctx: a message received is published or left, never half done.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), env.PublishTimeout)
		err = env.Publisher.Publish(pctx, s.b.Topic, e)
		cancel()
		if errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
			env.Metrics.PublishFailed(ns, es, name, 1)
			s.unusable(log, id, fmt.Sprintf("the event (%d bytes) is larger than Kafka accepts", len(data)), err, m, &done)
			continue
		}
		if err != nil {
			env.Metrics.PublishFailed(ns, es, name, 1)
			log.Warn("sqs: Kafka did not acknowledge the event; the message stays in the queue and is received again after its visibility timeout",
				"messageId", id, "left", len(msgs)-i, "visibilityTimeout", s.visibility, "err", err)
			break
		}
		env.Metrics.Published(ns, es, name, 1)
		done = append(done, m)
	}
	s.delete(ctx, log, queueURL, done)
}

// unusable handles a message that can never become an event: with dlq it is left for the queue's
// dead-letter queue, without it is deleted. Either way it does not hold up the batch.
func (s *sqsSource) unusable(log *slog.Logger, id, why string, err error, m sqstypes.Message, done *[]sqstypes.Message) {
	if s.cfg.DLQ {
		log.Error("sqs: "+why+"; left in the queue for its dead-letter queue (dlq: true)", "messageId", id, "err", err)
		return
	}
	log.Error("sqs: "+why+"; deleted (dlq: false)", "messageId", id, "err", err)
	*done = append(*done, m)
}

// eventData shapes a message as Argo's SQSEventData.
func (s *sqsSource) eventData(m sqstypes.Message) ([]byte, error) {
	d := sqsData{MessageID: aws.ToString(m.MessageId), Metadata: s.cfg.Metadata}
	if len(m.MessageAttributes) > 0 {
		d.MessageAttributes = make(map[string]*sqsAttributeValue, len(m.MessageAttributes))
		for k, v := range m.MessageAttributes {
			d.MessageAttributes[k] = &sqsAttributeValue{
				BinaryListValues: v.BinaryListValues,
				BinaryValue:      v.BinaryValue,
				DataType:         v.DataType,
				StringListValues: v.StringListValues,
				StringValue:      v.StringValue,
			}
		}
	}
	body := []byte(aws.ToString(m.Body))
	if s.cfg.JSONBody {
		if !json.Valid(body) {
			return nil, errors.New("jsonBody is set but the body is not JSON")
		}
		d.Body = json.RawMessage(body)
	} else {
		d.Body = body
	}
	return json.Marshal(d)
}

// delete removes the given messages from the queue, in batches of at most 10. It runs even after
// ctx ended: their events are in Kafka already, and a message not deleted is received again.
func (s *sqsSource) delete(ctx context.Context, log *slog.Logger, queueURL string, msgs []sqstypes.Message) {
	for len(msgs) > 0 {
		n := min(len(msgs), sqsMaxMessages)
		batch := msgs[:n]
		msgs = msgs[n:]
		entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(batch))
		for i, m := range batch {
			entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sqsDeleteTimeout)
		out, err := s.client.DeleteMessageBatch(dctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries})
		cancel()
		if err != nil {
			s.expired(err, log)
			ids := make([]string, len(batch))
			for i, m := range batch {
				ids[i] = aws.ToString(m.MessageId)
			}
			log.Warn("sqs: cannot delete messages whose events Kafka acknowledged; they will be received and published again",
				"messageIds", ids, "err", err)
			continue
		}
		for _, f := range out.Failed {
			i, _ := strconv.Atoi(aws.ToString(f.Id))
			if i < 0 || i >= len(batch) {
				i = 0
			}
			log.Warn("sqs: cannot delete a message whose event Kafka acknowledged; it will be received and published again",
				"messageId", aws.ToString(batch[i].MessageId), "code", aws.ToString(f.Code), "err", aws.ToString(f.Message))
		}
	}
}
