// Package source runs EventSources: it turns outside events into CloudEvents and produces them
// to each EventSource's own topic, acknowledging the outside system only after Kafka did.
package source

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kgo"
	"k8s.io/client-go/rest"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/cloudevent"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/internal/registry"
	"github.com/kevents/kevents/internal/secrets"
	"github.com/kevents/kevents/topology"
)

// Publisher hands events to Kafka. Publish returns only once Kafka acknowledged the record (or
// ctx ended, or Kafka refused it): callers acknowledge their outside system after it returns nil.
type Publisher interface {
	Publish(ctx context.Context, topic string, e cloudevents.Event) error
}

// ProducerOpts are the client options of a source's producer: no linger (a webhook caller
// waits for the acknowledgement, and concurrent requests batch anyway while a produce is in
// flight) and room for events up to topology.MaxRecordBytes.
func ProducerOpts() []kgo.Opt {
	return []kgo.Opt{kgo.ProducerLinger(0), kgo.ProducerBatchMaxBytes(topology.MaxRecordBytes)}
}

// AsyncPublisher is a Publisher that can start a publish without waiting for it: PublishAsync
// calls done exactly once, with Publish's outcome. Calls for one topic are written in call order.
// Sources that keep many events in flight (the kafka source) use it when the Publisher has it.
type AsyncPublisher interface {
	Publisher
	PublishAsync(ctx context.Context, topic string, e cloudevents.Event, done func(error))
}

// KafkaPublisher produces with franz-go's idempotent producer; build its client with
// ProducerOpts.
type KafkaPublisher struct{ Client *kgo.Client }

// Publish implements Publisher. Concurrent calls are batched by the client. It returns when
// ctx ends even if the record is still in flight: franz-go's idempotent producer keeps retrying
// a batch it is unsure about until Kafka is back, and the caller must get its answer in time.
// Such a record may still be written later; a caller that retries then yields a duplicate event,
// never a lost one.
func (p KafkaPublisher) Publish(ctx context.Context, topic string, e cloudevents.Event) error {
	done := make(chan error, 1)
	p.PublishAsync(ctx, topic, e, func(err error) { done <- err })
	return <-done
}

// PublishAsync implements AsyncPublisher, with Publish's timing: done runs when Kafka answered
// or ctx ended, whichever comes first.
func (p KafkaPublisher) PublishAsync(ctx context.Context, topic string, e cloudevents.Event, done func(error)) {
	rec, err := cloudevent.ToRecord(ctx, e, topic, nil)
	if err != nil {
		done(err)
		return
	}
	var once sync.Once
	finish := func(err error) { once.Do(func() { done(err) }) }
	stop := context.AfterFunc(ctx, func() {
		finish(fmt.Errorf("kafka did not acknowledge the event: %w", ctx.Err()))
	})
	p.Client.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		stop()
		finish(err)
	})
}

// Env is what source types may use.
type Env struct {
	Topology  *topology.Topology
	Publisher Publisher
	Secrets   secrets.Resolver
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
	// PublishTimeout bounds how long a push source waits for Kafka before answering its caller
	// with a failure (503 for webhooks), and how long an owned source waits for its transaction.
	PublishTimeout time.Duration
	// Kafka, Member and SessionTimeout are for owned sources (see RegisterOwned), which open
	// their own clients: the group client of <prefix>.sources, with Member as its static group
	// instance id, and one transactional producer per owned partition. SessionTimeout 0 means
	// kclient.SessionTimeout. The kafka source appends Member to a configured group instance id.
	Kafka          kclient.Config
	Member         string
	SessionTimeout time.Duration
	// Kube reaches the Kubernetes API, for the resource source; nil when none is configured.
	Kube *rest.Config
	// ReadyNeedsSources makes the ready check fail while a source event cannot reach its outside
	// server (see Build.Connected).
	ReadyNeedsSources bool
	routes            *routes
}

// Build is what a constructor gets: one event of one EventSource.
type Build struct {
	EventSource *api.EventSource
	Event       api.Event
	Topic       string
	Env         *Env
}

// NewEvent is an event of b in Argo's shape: type the source type, source the EventSource's
// name, subject the event's name, and data as JSON. An event larger than Kafka accepts is an
// error, so the caller can acknowledge and drop its message instead of retrying it forever.
func (b Build) NewEvent(id string, at time.Time, data any) (cloudevents.Event, error) {
	d, err := json.Marshal(data)
	if err != nil {
		return cloudevents.Event{}, fmt.Errorf("encode the event data: %w", err)
	}
	if len(d) > topology.MaxRecordBytes {
		return cloudevents.Event{}, fmt.Errorf("the event (%d bytes) is larger than Kafka accepts (%d bytes)", len(d), topology.MaxRecordBytes)
	}
	e := cloudevents.New()
	e.SetID(id)
	e.SetSource(b.EventSource.Metadata.Name)
	e.SetSubject(b.Event.Name)
	e.SetType(b.Event.Type)
	e.SetTime(at)
	if err := e.SetData("application/json", d); err != nil {
		return cloudevents.Event{}, fmt.Errorf("encode the event: %w", err)
	}
	return e, nil
}

// Connected reports whether the event reaches its outside server: nil once it connected, else
// why it cannot while it retries. Sources with a connection of their own call it on every
// change; it drives kevents_source_connected and, with Env.ReadyNeedsSources, readiness.
func (b Build) Connected(err error) {
	b.Env.Metrics.SourceConnected(b.EventSource.Metadata.Namespace, b.EventSource.Metadata.Name, b.Event.Name, err)
}

// specOf returns an event's spec as its type declares it; a mismatch is a programming error in
// the registry, reported rather than panicking.
func specOf[T any](ev api.Event) (T, error) {
	spec, ok := ev.Spec.(T)
	if !ok {
		return spec, fmt.Errorf("%s event %q has spec %T; expected %T", ev.Type, ev.Name, ev.Spec, spec)
	}
	return spec, nil
}

// Source is a running pull source. Push sources (webhooks) register HTTP routes instead and
// return a nil Source.
type Source interface {
	Run(ctx context.Context) error
}

// Spec describes a source type and drives validation and docs.
type Spec struct {
	Summary string
	// Check validates one event of this type at load time; nil means no extra checks.
	Check func(ev api.Event) error
}

// Constructor builds the runtime of one event.
type Constructor func(b Build) (Source, error)

// constructors holds the constructor of a type: exactly one of them is set.
type constructors struct {
	source Constructor
	owned  OwnedConstructor
}

var types = registry.New[Spec, constructors]("eventsource type")

// Register adds a source type under the name of its field in Argo's EventSource spec. It
// panics on a duplicate: that is a programming error.
func Register(name string, spec Spec, ctor Constructor) {
	types.Register(name, spec, constructors{source: ctor})
}

// RegisterOwned adds a source type whose events must run exactly once in the cluster (see
// OwnedSource), like Register.
func RegisterOwned(name string, spec Spec, ctor OwnedConstructor) {
	types.Register(name, spec, constructors{owned: ctor})
}

// Check returns every reason the EventSource cannot run; errors for source types kevents does
// not run yet wrap api.ErrNotSupported.
func Check(es *api.EventSource) error {
	var errs []error
	for _, ev := range es.Spec.Events() {
		e, lookupErr := types.Lookup(ev.Type)
		err := lookupErr
		if err == nil && e.Spec.Check != nil {
			err = e.Spec.Check(ev)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.%s.%s: %w", ev.Type, ev.Name, err))
		}
		if lookupErr == nil { // a type kevents runs: its filter must compile too
			if _, err := compileEventFilter(ev); err != nil {
				errs = append(errs, fmt.Errorf("spec.%s.%s.%w", ev.Type, ev.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Run builds every event of the given EventSources, serves the HTTP routes push sources
// registered, runs pull sources, and takes part in the ownership of owned sources (running
// those of the <prefix>.sources partitions this member is assigned), until ctx ends. It returns
// once the HTTP listeners are bound (so callers can send requests), with a wait function that
// blocks until everything stopped.
func Run(ctx context.Context, env *Env, sources []*api.EventSource) (wait func() error, err error) {
	if env.Logger == nil {
		env.Logger = slog.Default()
	}
	if env.PublishTimeout <= 0 {
		env.PublishTimeout = 10 * time.Second
	}
	env.routes = &routes{byPort: map[int]*endpoints{}}
	var (
		pulls   []Source
		builds  []Build // of every event, to forget their connection state when they stop
		owned   []ownedEntry
		errs    []error
		started = map[[2]string]int{} // events per namespace and EventSource
	)
	for _, es := range sources {
		if err := Check(es); err != nil {
			errs = append(errs, fmt.Errorf("eventsource %s: %w", es.Metadata.Name, err))
			continue
		}
		for _, ev := range es.Spec.Events() {
			e, _ := types.Lookup(ev.Type)
			b := Build{EventSource: es, Event: ev, Topic: env.Topology.SourceTopic(es.Metadata.Namespace, es.Metadata.Name), Env: env}
			filter, err := compileEventFilter(ev)
			if err != nil {
				errs = append(errs, fmt.Errorf("eventsource %s: spec.%s.%s.%w", es.Metadata.Name, ev.Type, ev.Name, err))
				continue
			}
			if filter != nil {
				filter.b = b
				// The event's own Env: its Publisher drops what the filter does not pass.
				fenv := *env
				fp := filteringPublisher{next: env.Publisher, filter: filter}
				fenv.Publisher = fp
				if a, ok := env.Publisher.(AsyncPublisher); ok {
					fenv.Publisher = filteringAsyncPublisher{filteringPublisher: fp, async: a}
				}
				b.Env = &fenv
			}
			var src Source
			if e.New.owned != nil {
				var o OwnedSource
				if o, err = e.New.owned(b); err == nil {
					if s, ok := o.(everyMemberSource); ok && s.everyMember() {
						src = s // publishes through b.Env.Publisher
					} else {
						if filter != nil {
							o = filteringOwned{OwnedSource: o, filter: filter}
						}
						owned = append(owned, newOwnedEntry(b, o))
					}
				}
			} else {
				src, err = e.New.source(b)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("eventsource %s: spec.%s.%s: %w", es.Metadata.Name, ev.Type, ev.Name, err))
				continue
			}
			if src != nil {
				pulls = append(pulls, src)
			}
			builds = append(builds, b)
			started[[2]string{es.Metadata.Namespace, es.Metadata.Name}]++
		}
	}
	if len(owned) > 0 {
		if err := checkOwnedEnv(env); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(owned) > 0 {
		pulls = append(pulls, &ownedRunner{env: env, entries: owned})
	}
	servers, err := env.routes.listen()
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(pulls)+len(servers))
	for _, s := range servers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("webhook server on %s: %w", s.ln.Addr(), err)
			}
		}()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			// In-flight requests finish (and get their answer from Kafka) before we return.
			shutdownCtx, cancel := context.WithTimeout(context.Background(), env.PublishTimeout+time.Second)
			defer cancel()
			_ = s.srv.Shutdown(shutdownCtx)
		}()
	}
	for _, p := range pulls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Run(ctx); err != nil && ctx.Err() == nil {
				errc <- err
			}
		}()
	}
	// Argo counts an event service running from its start until it stops; here an event runs
	// from now until every source of this set stopped. Owned sources count on every member
	// taking part in their ownership, not only on their owner.
	for k, n := range started {
		env.Metrics.EventServicesRunning(k[0], k[1], n)
	}
	if env.ReadyNeedsSources {
		env.Metrics.AddReadyCheck("sources", env.Metrics.SourcesReady)
	}
	return func() error {
		wg.Wait()
		for k, n := range started {
			env.Metrics.EventServicesRunning(k[0], k[1], -n)
		}
		for _, b := range builds {
			env.Metrics.SourceStopped(b.EventSource.Metadata.Namespace, b.EventSource.Metadata.Name, b.Event.Name)
		}
		close(errc)
		var errs []error
		for err := range errc {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}, nil
}

// routes collects the HTTP handlers of push sources: several events may share a port, as in
// Argo, each on its own endpoint. Endpoints match the request path exactly; they are user input,
// so they are never read as http.ServeMux patterns.
type routes struct {
	byPort map[int]*endpoints
}

// endpoints serves one port: exact path → handler.
type endpoints struct {
	handlers map[string]http.Handler
	owners   map[string]string // to name the first owner when a second claims the endpoint
	tls      *serverTLS        // nil: plain HTTP
	tlsOwner string            // the event that set tls, for errors
}

// describeTLS names what a port serves, for comparing and for errors.
func describeTLS(t *serverTLS) string {
	if t == nil {
		return "plain HTTP"
	}
	return "TLS with secrets " + t.refs
}

func (e *endpoints) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := e.handlers[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h.ServeHTTP(w, r)
}

func (r *routes) add(port int, path, owner string, tlsCert *serverTLS, h http.Handler) error {
	eps := r.byPort[port]
	if eps == nil {
		eps = &endpoints{handlers: map[string]http.Handler{}, owners: map[string]string{}, tls: tlsCert, tlsOwner: owner}
		r.byPort[port] = eps
	}
	if other, dup := eps.owners[path]; dup {
		return fmt.Errorf("endpoint %s on port %d is already served by %s", path, port, other)
	}
	if describeTLS(tlsCert) != describeTLS(eps.tls) {
		return fmt.Errorf("port %d: %s serves %s but %s on the same port serves %s; expected the events of a port to share serverCertSecret/serverKeySecret or to have none",
			port, owner, describeTLS(tlsCert), eps.tlsOwner, describeTLS(eps.tls))
	}
	eps.owners[path] = owner
	eps.handlers[path] = h
	return nil
}

type server struct {
	srv *http.Server
	ln  net.Listener
}

func (r *routes) listen() ([]server, error) {
	ports := make([]int, 0, len(r.byPort))
	for p := range r.byPort {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	var out []server
	for _, p := range ports {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			for _, s := range out {
				s.ln.Close()
			}
			return nil, fmt.Errorf("webhook port %d: %w", p, err)
		}
		if t := r.byPort[p].tls; t != nil {
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{t.cert}, MinVersion: tls.VersionTLS12})
		}
		out = append(out, server{srv: &http.Server{Handler: r.byPort[p], ReadHeaderTimeout: 10 * time.Second}, ln: ln})
	}
	return out, nil
}

// drainReady appends to batch what ch holds right now, without waiting, up to max in all: a
// source commits what arrived together in one Kafka transaction. A closed ch ends it; the
// caller's next blocking receive sees the close.
func drainReady[T any](batch []T, ch <-chan T, max int) []T {
	for len(batch) < max {
		select {
		case v, ok := <-ch:
			if !ok {
				return batch
			}
			batch = append(batch, v)
		default:
			return batch
		}
	}
	return batch
}
