package source

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/topology"
)

// DefaultMaxPayloadSize is Argo's default limit on a webhook request body.
const DefaultMaxPayloadSize = 1 << 20

func init() {
	Register("webhook", Spec{
		Summary: "HTTP endpoint; answers 200 only after Kafka acknowledged the event.",
		Check:   checkWebhook,
	}, newWebhook)
}

func checkWebhook(ev api.Event) error {
	return checkServerTLS("", ev.Webhook.ServerCertSecret, ev.Webhook.ServerKeySecret)
}

// serverTLS is the certificate a webhook port serves, from an event's serverCertSecret and
// serverKeySecret (PEM), read when the source starts. Events sharing a port must name the same
// Secrets, or none: one port is one listener.
type serverTLS struct {
	refs string // the two references, to compare the events of a port
	cert tls.Certificate
}

// checkServerTLS is the load-time rule of serverCertSecret and serverKeySecret: both or neither,
// each naming a Secret key. prefix is the fields' path ("" or "webhook.").
func checkServerTLS(prefix string, cert, key *api.SecretKeySelector) error {
	switch {
	case cert == nil && key == nil:
		return nil
	case cert == nil:
		return fmt.Errorf("%sserverCertSecret: missing; expected it with serverKeySecret, to serve TLS", prefix)
	case key == nil:
		return fmt.Errorf("%sserverKeySecret: missing; expected it with serverCertSecret, to serve TLS", prefix)
	}
	return errors.Join(cert.Check(prefix+"serverCertSecret"), key.Check(prefix+"serverKeySecret"))
}

// loadServerTLS reads the certificate and key the references name; nil when there are none.
// Errors never show the Secrets' contents.
func loadServerTLS(b Build, prefix string, cert, key *api.SecretKeySelector) (*serverTLS, error) {
	if cert == nil || key == nil {
		return nil, nil
	}
	certPEM, err := b.Env.Secrets.Resolve(cert.Name, cert.Key)
	if err != nil {
		return nil, fmt.Errorf("%sserverCertSecret: %w", prefix, err)
	}
	keyPEM, err := b.Env.Secrets.Resolve(key.Name, key.Key)
	if err != nil {
		return nil, fmt.Errorf("%sserverKeySecret: %w", prefix, err)
	}
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("%sserverCertSecret/serverKeySecret (secrets %s/%s, %s/%s): not a PEM certificate and its private key: %w",
			prefix, cert.Name, cert.Key, key.Name, key.Key, err)
	}
	return &serverTLS{refs: cert.Name + "/" + cert.Key + " " + key.Name + "/" + key.Key, cert: pair}, nil
}

// webhookData is the event data of a webhook event, as Argo Events shapes it.
type webhookData struct {
	Header   http.Header       `json:"header"`
	Body     json.RawMessage   `json:"body"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type webhook struct {
	b       Build
	cfg     api.WebhookEventSource
	token   []byte // bearer token; nil when the endpoint is open
	maxBody int64
}

func newWebhook(b Build) (Source, error) {
	w := &webhook{b: b, cfg: *b.Event.Webhook, maxBody: DefaultMaxPayloadSize}
	if w.cfg.MaxPayloadSize != nil {
		w.maxBody = *w.cfg.MaxPayloadSize
	}
	if s := w.cfg.AuthSecret; s != nil {
		tok, err := b.Env.Secrets.Resolve(s.Name, s.Key)
		if err != nil {
			return nil, fmt.Errorf("authSecret: %w", err)
		}
		if tok == "" {
			return nil, fmt.Errorf("authSecret: secret %s/%s is empty", s.Name, s.Key)
		}
		w.token = []byte(tok)
	}
	tlsCert, err := loadServerTLS(b, "", w.cfg.ServerCertSecret, w.cfg.ServerKeySecret)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(w.cfg.Port) // api.Validate checked it
	owner := fmt.Sprintf("eventsource %s event %s", b.EventSource.Metadata.Name, b.Event.Name)
	return nil, b.Env.routes.add(port, w.cfg.Endpoint, owner, tlsCert, w)
}

// ServeHTTP answers 200 only after Kafka acknowledged the event, and 503 when it did not in time,
// so that a caller that retries on failure never loses an event.
func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	env := w.b.Env
	ns, es, name := w.b.EventSource.Metadata.Namespace, w.b.EventSource.Metadata.Name, w.b.Event.Name
	if r.Method != w.cfg.Method {
		rw.Header().Set("Allow", w.cfg.Method)
		http.Error(rw, fmt.Sprintf("method %s not allowed; this endpoint accepts %s", r.Method, w.cfg.Method), http.StatusMethodNotAllowed)
		return
	}
	if w.token != nil {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), w.token) != 1 {
			http.Error(rw, "invalid or missing bearer token in the Authorization header", http.StatusUnauthorized)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(rw, fmt.Sprintf("request body larger than maxPayloadSize (%d bytes)", w.maxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "cannot read the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	env.Metrics.EventsReceived.WithLabelValues(es, name).Inc()

	header := r.Header.Clone()
	if w.token != nil {
		header.Del("Authorization") // the token is a secret: never copied into the event
	}
	if !json.Valid(body) {
		body, _ = json.Marshal(string(body))
	}
	data, err := json.Marshal(webhookData{Header: header, Body: body, Metadata: w.cfg.Metadata})
	if err != nil {
		http.Error(rw, "cannot encode the event: "+err.Error(), http.StatusInternalServerError)
		return
	}
	e := cloudevents.New()
	e.SetID(uuid.NewString())
	e.SetSource(es)
	e.SetSubject(name)
	e.SetType("webhook")
	e.SetTime(time.Now().UTC())
	if err := e.SetData("application/json", data); err != nil {
		http.Error(rw, "cannot encode the event: "+err.Error(), http.StatusInternalServerError)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), env.PublishTimeout)
	defer cancel()
	if err := env.Publisher.Publish(ctx, w.b.Topic, e); errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
		// Permanent: answering 503 would have the caller retry forever.
		env.Metrics.PublishFailed(ns, es, name, 1)
		http.Error(rw, fmt.Sprintf("event of %d bytes is larger than Kafka accepts (%d bytes)", len(data), topology.MaxRecordBytes), http.StatusRequestEntityTooLarge)
		return
	} else if err != nil {
		env.Metrics.PublishFailed(ns, es, name, 1)
		env.Logger.Warn("webhook: Kafka did not acknowledge the event; answered 503", "eventsource", es, "event", name, "err", err)
		http.Error(rw, "event not accepted: Kafka did not acknowledge it in time; retry later", http.StatusServiceUnavailable)
		return
	}
	env.Metrics.Published(ns, es, name, 1)
	_, _ = io.WriteString(rw, "success\n")
}
