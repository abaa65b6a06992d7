package source

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/awsconfig"
)

// The sns source receives AWS SNS HTTP/S deliveries on its webhook endpoint.
//
// Subscription: at start the source calls SNS Subscribe(topicArn, protocol http or https as
// webhook.url starts, endpoint webhook.url + webhook.endpoint), retrying until SNS answers, as
// Argo does once at start. SNS then posts a SubscriptionConfirmation, which the source confirms
// with the ConfirmSubscription API (topicArn and the message's Token) through its own client and
// credentials, as Argo does; it never follows the message's SubscribeURL, which would have it GET
// any URL a caller names. 200 means SNS accepted the confirmation, 502 that it did not (a
// confirmation with a token SNS does not know, or SNS unreachable). UnsubscribeConfirmation and
// other types are answered 200 and dropped, as in Argo.
//
// Acknowledgement: a Notification is answered 200 only after Kafka acknowledged its event, 503
// when it did not in time (PublishTimeout), so SNS retries it under the subscription's delivery
// policy (SNS retries 5xx and timeouts; by default three times, 20 s apart, and waits 15 s for
// an answer). 4xx answers are final for SNS: 400 for a body that is not an SNS message, 401/403
// for signatures, 413 for events larger than Kafka accepts. The event id is the SNS MessageId,
// which a retried delivery keeps, so an event Kafka did keep despite a 503 is recognisable
// downstream. The event data is Argo's SNSEventData: {"header": the request headers (without
// Authorization), "body": the SNS message as delivered, "metadata"}.
//
// validateSignature: the message's Signature must verify with the certificate at its
// SigningCertURL, which must be an https URL on an SNS host (sns.<region>.amazonaws.com[.cn],
// Argo's check): SignatureVersion 1 is RSA with SHA1, 2 RSA with SHA256 (Argo checks SHA1 only).
// 401 when the message carries no usable signature, 403 when the certificate URL is not an SNS
// one or the signature does not match, 502 when the certificate cannot be fetched (SNS retries).
// Certificates are cached by URL.
//
// Scaling: every member serves the endpoint (behind one Service) and subscribes at start; SNS
// keeps one subscription per topic, protocol and endpoint, so the members' Subscribe calls are
// the same subscription and each message is delivered once, to whichever member the Service
// picks. Any member can confirm. Argo unsubscribes when its one pod stops; kevents does not:
// a member stopping in a rolling update or a scale-down would remove the subscription every
// other member shares. Remove the subscription in SNS when the EventSource is deleted.
//
// Connection: the event is reported not connected (kevents_source_connected, readiness) while
// Subscribe fails, and connected once SNS accepted it.
//
// Credentials: accessKey and secretKey from Secrets, else the AWS default chain; with roleARN
// they assume the role (see internal/awsconfig). endpoint replaces AWS's SNS endpoint.
func init() {
	Register("sns", Spec{
		Summary: "AWS SNS HTTP/S subscription: subscribes webhook.url at start, confirms, publishes notifications (signatures checked with validateSignature).",
		Check:   checkSNS,
	}, newSNS)
}

// SNS message types (the Type of a delivery's body).
const (
	snsNotification             = "Notification"
	snsSubscriptionConfirmation = "SubscriptionConfirmation"
	snsUnsubscribeConfirmation  = "UnsubscribeConfirmation"
)

// snsCallTimeout bounds one call to the SNS API.
const snsCallTimeout = 10 * time.Second

// snsCertMaxBytes bounds a signing certificate's size, as Argo does.
const snsCertMaxBytes = 65 * 1024

// snsCertCacheSize bounds the signing certificates kept; SNS uses a handful.
const snsCertCacheSize = 32

// The signing certificate's origin and how it is fetched. Variables so that tests can serve a
// certificate of their own over TLS from 127.0.0.1; read when an event is built.
var (
	// snsSigningCertHost is the host a SigningCertURL must have: Argo's pattern of SNS hosts.
	snsSigningCertHost = regexp.MustCompile(`^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$`)
	// snsCertClient fetches signing certificates; redirects are never followed.
	snsCertClient = &http.Client{Timeout: 10 * time.Second}
)

// snsRetry is the wait between failed Subscribe calls, doubling up to a limit. A variable so
// that tests can shorten it; read when an event is built.
var snsRetry = struct{ first, limit time.Duration }{2 * time.Second, time.Minute}

func checkSNS(ev api.Event) error {
	s, specErr := specOf[api.SNSEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(gitHookCheckContext("sns", s.Webhook))
	if w := s.Webhook; w != nil {
		if w.URL == "" {
			add(errors.New("webhook.url: missing; expected the public URL SNS delivers to (the subscription's endpoint is webhook.url + webhook.endpoint)"))
		}
		switch w.Method {
		case "", http.MethodPost:
		case http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead:
			add(fmt.Errorf("webhook.method: %q; expected POST (what SNS sends)", w.Method))
		}
	}
	switch {
	case s.TopicArn == "":
		add(errors.New("topicArn: missing; expected the ARN of the SNS topic, e.g. arn:aws:sns:us-east-1:123456789012:my-topic"))
	case !snsTopicARN(s.TopicArn):
		add(fmt.Errorf("topicArn: %q is not an SNS topic ARN; expected arn:<partition>:sns:<region>:<account>:<topic>", s.TopicArn))
	}
	if s.Region == "" {
		add(errors.New("region: missing; expected the AWS region of the topic, e.g. us-east-1"))
	}
	switch {
	case s.AccessKey != nil && s.SecretKey == nil:
		add(errors.New("secretKey: missing; accessKey and secretKey go together"))
	case s.AccessKey == nil && s.SecretKey != nil:
		add(errors.New("accessKey: missing; accessKey and secretKey go together"))
	}
	add(gitHookCheckSecret("accessKey", s.AccessKey))
	add(gitHookCheckSecret("secretKey", s.SecretKey))
	if s.Endpoint != "" {
		u, err := neturl.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(fmt.Errorf("endpoint: %q; expected an http or https URL such as http://localhost:4566", s.Endpoint))
		}
	}
	return errors.Join(errs...)
}

// snsTopicARN reports whether s has the shape of an SNS topic ARN.
func snsTopicARN(s string) bool {
	p := strings.Split(s, ":")
	if len(p) != 6 || p[0] != "arn" || p[2] != "sns" {
		return false
	}
	for _, f := range []string{p[1], p[3], p[4], p[5]} {
		if f == "" {
			return false
		}
	}
	return true
}

// snsMessage is the JSON body of an SNS HTTP/S delivery. Every field stays the string SNS sent,
// since the signature covers those exact strings.
type snsMessage struct {
	Type             string `json:"Type"`
	MessageID        string `json:"MessageId"`
	Token            string `json:"Token"`
	TopicArn         string `json:"TopicArn"`
	Subject          string `json:"Subject"`
	Message          string `json:"Message"`
	SubscribeURL     string `json:"SubscribeURL"`
	Timestamp        string `json:"Timestamp"`
	SignatureVersion string `json:"SignatureVersion"`
	Signature        string `json:"Signature"`
	SigningCertURL   string `json:"SigningCertURL"`
}

// snsEventData is Argo's SNSEventData.
type snsEventData struct {
	Header   http.Header       `json:"header"`
	Body     json.RawMessage   `json:"body"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type snsSource struct {
	ep     *gitHookEndpoint
	cfg    api.SNSEventSource
	client *sns.Client
	certs  *snsCerts // nil without validateSignature
}

func newSNS(b Build) (Source, error) {
	cfg, specErr := specOf[api.SNSEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	ep, err := newGitHookEndpoint(b, "sns", cfg.Webhook)
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsconfig.Load(context.Background(), awsconfig.Options{
		Region: cfg.Region, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey, RoleARN: cfg.RoleARN, Secrets: b.Env.Secrets,
	})
	if err != nil {
		return nil, err
	}
	client := sns.NewFromConfig(awsCfg, func(o *sns.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	s := &snsSource{ep: ep, cfg: cfg, client: client}
	if cfg.ValidateSignature {
		hc := *snsCertClient
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		s.certs = &snsCerts{host: snsSigningCertHost, client: &hc, byURL: map[string]*rsa.PublicKey{}}
	}
	if err := ep.register(s); err != nil {
		return nil, err
	}
	endpoint := gitHookURL(cfg.Webhook)
	protocol := "http"
	if strings.HasPrefix(endpoint, "https://") {
		protocol = "https"
	}
	return &snsSubscriber{
		b: b, client: client, topic: cfg.TopicArn, protocol: protocol, endpoint: endpoint,
		first: snsRetry.first, limit: snsRetry.limit,
	}, nil
}

// ServeHTTP checks the signature (with validateSignature), confirms subscriptions, and answers a
// Notification 200 only once Kafka acknowledged its event.
func (s *snsSource) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !s.ep.accept(rw, r) {
		return
	}
	body, ok := s.ep.readBody(rw, r)
	if !ok {
		return
	}
	var m snsMessage
	if err := json.Unmarshal(body, &m); err != nil || m.Type == "" {
		http.Error(rw, "the body is not an SNS message: expected a JSON object with a Type (Notification, SubscriptionConfirmation)", http.StatusBadRequest)
		return
	}
	if s.certs != nil {
		if status, msg := s.certs.verify(r.Context(), &m); status != 0 {
			http.Error(rw, msg, status)
			return
		}
	}
	switch m.Type {
	case snsSubscriptionConfirmation:
		s.confirm(rw, r, &m)
	case snsNotification:
		header := r.Header.Clone()
		header.Del("Authorization") // the bearer token of webhook.authSecret, or basic auth of the URL
		s.ep.publishEvents(rw, r, []hookEvent{{id: gitHookID(m.MessageID), data: snsEventData{Header: header, Body: body, Metadata: s.cfg.Metadata}}})
	default:
		// Such as UnsubscribeConfirmation: answered, not published, as in Argo.
		_, _ = fmt.Fprintf(rw, "ignored: SNS message type %q\n", m.Type)
	}
}

// confirm confirms a subscription through the SNS API, as Argo does.
func (s *snsSource) confirm(rw http.ResponseWriter, r *http.Request, m *snsMessage) {
	b := s.ep.b
	log := b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name, "topicArn", s.cfg.TopicArn)
	if m.Token == "" {
		http.Error(rw, "SubscriptionConfirmation without a Token", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), snsCallTimeout)
	defer cancel()
	out, err := s.client.ConfirmSubscription(ctx, &sns.ConfirmSubscriptionInput{TopicArn: aws.String(s.cfg.TopicArn), Token: aws.String(m.Token)})
	if err != nil {
		log.Warn("sns: cannot confirm the subscription; answered 502", "err", err)
		http.Error(rw, "cannot confirm the subscription with SNS: "+err.Error(), http.StatusBadGateway)
		return
	}
	log.Info("sns: subscription confirmed", "subscriptionArn", aws.ToString(out.SubscriptionArn))
	_, _ = io.WriteString(rw, "subscription confirmed\n")
}

// snsSubscriber subscribes the endpoint to the topic once, retrying until SNS answers.
type snsSubscriber struct {
	b                         Build
	client                    *sns.Client
	topic, protocol, endpoint string
	first, limit              time.Duration
}

func (s *snsSubscriber) Run(ctx context.Context) error {
	shown := s.endpoint
	if u, err := neturl.Parse(s.endpoint); err == nil {
		shown = u.Redacted() // SNS takes basic auth credentials in the endpoint URL
	}
	log := s.b.Env.Logger.With("eventsource", s.b.EventSource.Metadata.Name, "event", s.b.Event.Name,
		"topicArn", s.topic, "protocol", s.protocol, "endpoint", shown)
	// Reported not connected while Subscribe fails, connected once SNS accepted it.
	health := newSourceHealth(ctx, s.b)
	defer health.stop()
	retry := s.first
	for {
		cctx, cancel := context.WithTimeout(ctx, snsCallTimeout)
		out, err := s.client.Subscribe(cctx, &sns.SubscribeInput{
			TopicArn: aws.String(s.topic), Protocol: aws.String(s.protocol), Endpoint: aws.String(s.endpoint),
		})
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			// For a new subscription SNS says "pending confirmation": the confirmation follows.
			health.set(nil)
			log.Info("sns: subscribed", "subscriptionArn", aws.ToString(out.SubscriptionArn))
			return nil
		}
		// SNS may quote the endpoint, whose user info can hold basic auth credentials: the
		// message is rewritten with the redacted endpoint (so err is not wrapped).
		health.set(fmt.Errorf("subscribe %s to topic %s: %s", shown, s.topic, strings.ReplaceAll(err.Error(), s.endpoint, shown)))
		log.Warn("sns: cannot subscribe; retrying", "err", err, "retryIn", retry)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		retry = min(2*retry, s.limit)
	}
}

// snsCerts verifies message signatures with the signing certificates, cached by URL.
type snsCerts struct {
	host   *regexp.Regexp
	client *http.Client

	mu    sync.Mutex
	byURL map[string]*rsa.PublicKey
}

// verify returns 0 when m's signature holds, else the status to answer and why.
func (c *snsCerts) verify(ctx context.Context, m *snsMessage) (int, string) {
	var h crypto.Hash
	switch m.SignatureVersion {
	case "1":
		h = crypto.SHA1
	case "2":
		h = crypto.SHA256
	default:
		return http.StatusUnauthorized, fmt.Sprintf("SignatureVersion %q: expected 1 or 2 (validateSignature requires signed SNS messages)", m.SignatureVersion)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if m.Signature == "" || err != nil {
		return http.StatusUnauthorized, "Signature: missing or not base64 (validateSignature requires signed SNS messages)"
	}
	signed, ok := snsStringToSign(m)
	if !ok {
		return http.StatusUnauthorized, fmt.Sprintf("Type %q: not a message type SNS signs", m.Type)
	}
	u, err := neturl.Parse(m.SigningCertURL)
	if err != nil || u.Scheme != "https" || !c.host.MatchString(u.Hostname()) {
		return http.StatusForbidden, fmt.Sprintf("SigningCertURL %q: expected an https URL on an SNS host (%s)", m.SigningCertURL, c.host)
	}
	key, err := c.key(ctx, m.SigningCertURL)
	if err != nil {
		return http.StatusBadGateway, "cannot fetch the signing certificate: " + err.Error()
	}
	var digest []byte
	if h == crypto.SHA1 {
		d := sha1.Sum(signed)
		digest = d[:]
	} else {
		d := sha256.Sum256(signed)
		digest = d[:]
	}
	if rsa.VerifyPKCS1v15(key, h, digest, sig) != nil {
		return http.StatusForbidden, "Signature does not match the message: altered, or not signed by SNS"
	}
	return 0, ""
}

// key returns the RSA key of the certificate at url, fetching it once.
func (c *snsCerts) key(ctx context.Context, url string) (*rsa.PublicKey, error) {
	c.mu.Lock()
	k := c.byURL[url]
	c.mu.Unlock()
	if k != nil {
		return k, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, snsCertMaxBytes))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	p, _ := pem.Decode(body)
	if p == nil {
		return nil, fmt.Errorf("%s: no PEM certificate", url)
	}
	cert, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	k, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: the certificate's key is %T; expected RSA", url, cert.PublicKey)
	}
	c.mu.Lock()
	if len(c.byURL) >= snsCertCacheSize {
		clear(c.byURL)
	}
	c.byURL[url] = k
	c.mu.Unlock()
	return k, nil
}

// snsStringToSign is what SNS signs: "<name>\n<value>\n" for the fields of the message's type,
// in this order, leaving out those that are empty (Subject when a notification has none).
func snsStringToSign(m *snsMessage) ([]byte, bool) {
	type field struct{ name, value string }
	var fields []field
	switch m.Type {
	case snsNotification:
		fields = []field{{"Message", m.Message}, {"MessageId", m.MessageID}, {"Subject", m.Subject},
			{"Timestamp", m.Timestamp}, {"TopicArn", m.TopicArn}, {"Type", m.Type}}
	case snsSubscriptionConfirmation, snsUnsubscribeConfirmation:
		fields = []field{{"Message", m.Message}, {"MessageId", m.MessageID}, {"SubscribeURL", m.SubscribeURL},
			{"Timestamp", m.Timestamp}, {"Token", m.Token}, {"TopicArn", m.TopicArn}, {"Type", m.Type}}
	default:
		return nil, false
	}
	var b strings.Builder
	for _, f := range fields {
		if f.value != "" {
			b.WriteString(f.name + "\n" + f.value + "\n")
		}
	}
	return []byte(b.String()), true
}
