package source

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	neturl "net/url"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/source/genericsource"
)

// The generic source is Argo's generic event source: the user runs a gRPC server implementing
// Argo's generic.Eventing service (generic.proto, see package genericsource). The source dials
// url, calls StartEventSource with the event's name and config, and publishes every Event the
// server streams back, with Argo's data: {"body": payload, "metadata": ...}, the payload as
// base64 (Go's encoding of bytes) or, with jsonBody, embedded as JSON.
//
// Delivery is at most once, by protocol: the service has no acknowledgement, so the server
// cannot know whether an event it sent reached Kafka. Events received but not yet committed
// when the process dies, the source stops or moves to another member, or a commit fails are
// lost (logged and counted in PublishFailures when kevents sees it happen); events the server
// sends while no stream is open are up to the server.
//
// Once in the cluster: the server streams its events to every client that calls it, so running
// the event on each member would publish each event once per member. It is an owned source
// (see OwnedSource): the member that owns its partition of <prefix>.sources holds the stream
// and commits what arrives in transactions (a batch of what arrived while the previous commit
// ran).
//
// Connection: when the stream cannot start or ends (an error or the server closing it), the
// source calls StartEventSource again after 1 s, doubling up to 16 s (plus up to half as much
// at random), back to 1 s once a stream delivered an event or lasted a minute. Argo retries
// every 5 s. The event is reported connected (kevents_source_connected, readiness) while a
// stream is open, and not from its end until the next one opens.
//
// Argo's filter (an expression on the data above) is applied by Run to every event, as to
// every source type (see source.go); a filtered event is dropped.
//
// Differences from Argo: without insecure, Argo cannot connect at all (gRPC refuses a
// connection without transport credentials); kevents connects with TLS, verifying the server
// against the system's CAs. The authSecret token is read when the source starts (Argo reads
// its mounted file on each connection). A payload that is not JSON with jsonBody set is
// dropped with an error log, as in Argo.

func init() {
	RegisterOwned("generic", Spec{
		Summary: "Argo's generic gRPC event source (generic.Eventing stream); runs once in the cluster. At most once: the protocol has no acknowledgement.",
		Check:   checkGeneric,
	}, newGeneric)
}

// genericBatch bounds the events of one commit, and the events received ahead of it.
const genericBatch = 500

// genericRetry paces the calls to StartEventSource while they fail: a variable so that tests
// can shorten it.
var genericRetry = connBackoff{duration: time.Second, factor: 2, jitter: 0.5, steps: 5}

// genericData is the data of a generic event, as Argo's GenericEventData.
type genericData struct {
	Body     any               `json:"body"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func checkGeneric(ev api.Event) error {
	g, specErr := specOf[api.GenericEventSource](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	if err := checkGRPCTarget("url", g.URL); err != nil {
		errs = append(errs, err)
	}
	if g.Config == "" {
		errs = append(errs, errors.New("config: missing; expected the configuration the server receives in the EventSource message (Argo requires it too)"))
	}
	if g.AuthSecret != nil {
		if err := g.AuthSecret.Check("authSecret"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkGRPCTarget accepts what Argo hands to grpc.NewClient: host:port or a gRPC target with a
// resolver scheme (dns:///host:port, unix:///path). An http(s) URL is a common mistake that
// would only fail when dialing.
func checkGRPCTarget(field, s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("%s: missing; expected the gRPC address of the server, e.g. my-source.argo-events.svc:8080", field)
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("%s: %q; expected a gRPC target such as host:port, without whitespace", field, s)
	}
	if u, err := neturl.Parse(s); err == nil {
		switch u.Scheme {
		case "http", "https", "grpc", "grpcs":
			return fmt.Errorf("%s: %q; expected a gRPC target such as %s, not a URL", field, s, u.Host)
		}
	}
	return nil
}

type genericSource struct {
	b     Build
	cfg   api.GenericEventSource
	token string // the bearer token of authSecret; never logged
	creds credentials.TransportCredentials
	log   *slog.Logger
}

func newGeneric(b Build) (OwnedSource, error) {
	cfg := b.Event.Spec.(api.GenericEventSource) // checkGeneric verified the type
	g := &genericSource{b: b, cfg: cfg, creds: insecure.NewCredentials()}
	if !cfg.Insecure {
		g.creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	if cfg.AuthSecret != nil {
		token, err := b.Env.Secrets.Ref("authSecret", cfg.AuthSecret)
		if err != nil {
			return nil, err
		}
		if token == "" {
			return nil, fmt.Errorf("authSecret: secret %s/%s is empty; expected a bearer token", cfg.AuthSecret.Name, cfg.AuthSecret.Key)
		}
		g.token = token
	}
	g.log = b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name, "url", cfg.URL)
	return g, nil
}

// RunOwned implements OwnedSource: it holds a stream while this member owns the event and
// commits what arrives. It returns the error of a failed commit (the events of that commit are
// lost) and nil once ctx ended. The state is unused: the protocol has nothing to resume from.
func (g *genericSource) RunOwned(ctx context.Context, _ []byte, commit Commit) error {
	conn, err := grpc.NewClient(g.cfg.URL, grpc.WithTransportCredentials(g.creds))
	if err != nil { // a target gRPC cannot parse: no retry helps
		return fmt.Errorf("url: %w", err)
	}
	defer conn.Close()
	client := genericsource.NewClient(conn)
	health := newSourceHealth(ctx, g.b)
	defer health.stop()
	attempt := 0
	for {
		start := time.Now()
		received, err := g.stream(ctx, client, commit, health)
		if ctx.Err() != nil {
			return nil
		}
		var cerr *genericCommitError
		if errors.As(err, &cerr) {
			return cerr.err
		}
		if g.token != "" && err != nil && strings.Contains(err.Error(), g.token) {
			// A server may quote what it refused: the token stays out of metrics and readiness.
			err = errors.New(strings.ReplaceAll(err.Error(), g.token, "***"))
		}
		health.set(err)
		if received > 0 || time.Since(start) > time.Minute { // the stream worked: start over
			attempt = 0
		}
		wait := genericRetry.wait(attempt)
		attempt++
		g.log.Warn("generic: the event stream ended; calling the server again, events it sends meanwhile are up to the server", "retryIn", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// genericCommitError is a commit that failed: RunOwned returns it rather than calling again.
type genericCommitError struct{ err error }

func (e *genericCommitError) Error() string { return e.err.Error() }

// stream runs one StartEventSource call until it ends, ctx ends or a commit fails. It returns
// the number of events received and why it ended; the stream open is reported to health.
func (g *genericSource) stream(ctx context.Context, client *genericsource.Client, commit Commit, health *sourceHealth) (received int, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if g.token != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+g.token)
	}
	st, err := client.StartEventSource(sctx, g.b.Event.Name, []byte(g.cfg.Config))
	if err != nil {
		return 0, err
	}
	health.set(nil)
	g.log.Info("generic: event stream open")
	events := make(chan genericsource.Event, genericBatch)
	var (
		recvErr error
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(events)
		for {
			ev, err := st.Recv()
			if err != nil {
				recvErr = err // read after events is closed
				return
			}
			select {
			case events <- ev:
			case <-sctx.Done():
				return
			}
		}
	}()
	// The receiver must be gone before the next call, or the next owner's.
	defer func() {
		cancel()
		for range events {
		}
		wg.Wait()
	}()

	env := g.b.Env
	ns, es, name := g.b.EventSource.Metadata.Namespace, g.b.EventSource.Metadata.Name, g.b.Event.Name
	for {
		var batch []genericsource.Event
		select {
		case <-ctx.Done():
			if n := len(events); n > 0 {
				g.log.Warn("generic: source stopped with events received but not committed; they are lost (the protocol has no acknowledgement)", "events", n)
			}
			return received, nil
		case ev, ok := <-events:
			if !ok {
				if recvErr == nil || errors.Is(recvErr, io.EOF) {
					return received, errors.New("the server ended the stream")
				}
				return received, recvErr
			}
			batch = append(batch, ev)
		}
		batch = drainReady(batch, events, genericBatch)
		received += len(batch)
		env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(batch)))
		out := make([]cloudevents.Event, 0, len(batch))
		for _, ev := range batch {
			e, err := g.event(ev)
			if err != nil {
				g.log.Error("generic: event rejected and dropped", "bytes", len(ev.Payload), "err", err)
				continue
			}
			out = append(out, e)
		}
		if len(out) == 0 {
			continue
		}
		if err := commit(ctx, out, nil); err != nil {
			env.Metrics.PublishFailed(ns, es, name, len(out))
			if ctx.Err() != nil {
				return received, nil
			}
			g.log.Error("generic: Kafka did not commit the events; they are lost (the protocol has no acknowledgement)", "events", len(out), "err", err)
			return received, &genericCommitError{fmt.Errorf("commit %d generic events: %w", len(out), err)}
		}
		env.Metrics.Published(ns, es, name, len(out))
	}
}

// event builds the CloudEvent of a streamed event: Argo's data, a new UUID and the time
// received. An empty payload is a null body, as in Argo (proto3 leaves it unset).
func (g *genericSource) event(ev genericsource.Event) (cloudevents.Event, error) {
	d := genericData{Metadata: g.cfg.Metadata}
	switch {
	case len(ev.Payload) == 0:
	case !g.cfg.JSONBody:
		d.Body = ev.Payload
	case json.Valid(ev.Payload):
		d.Body = json.RawMessage(ev.Payload)
	default:
		return cloudevents.Event{}, errors.New("jsonBody is set and the payload is not JSON (Argo drops such events too)")
	}
	return g.b.NewEvent(uuid.NewString(), time.Now().UTC(), d)
}
