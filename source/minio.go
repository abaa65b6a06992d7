package source

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	gojson "github.com/goccy/go-json"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/notification"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/kevents/kevents/api"
)

// The minio source listens to a MinIO bucket's notifications with MinIO's own listen API
// (minio-go's ListenBucketNotification: a long GET on the bucket that streams one JSON line per
// notification) and publishes each notification to the EventSource's topic, as Argo does.
//
// Delivery is at most once, by protocol: the listen API has no acknowledgement and no replay.
// MinIO sends a notification only to the listeners connected when it happens, so notifications
// while the source is disconnected, moving to another member, or waiting for Kafka after a
// failed commit are lost; so are those received but not yet committed when the source stops.
// MinIO also drops notifications for a listener that reads too slowly; the source reads into a
// buffer while it commits, to keep up. For at-least-once delivery, configure a bucket
// notification target in MinIO (Kafka, webhook, NATS, ...) instead: MinIO queues for those.
//
// Once in the cluster: every listener receives every notification, so running the event on each
// member would publish each notification once per member. It is an owned source (see
// OwnedSource): the member that owns its partition of <prefix>.sources listens, and commits the
// notifications it receives in transactions (a batch of what arrived while the previous commit
// ran).
//
// Events: one per notification, with Argo's data ({"notification": [records], "metadata": ...},
// the records in MinIO's S3 event format); the id is derived from the records (bucket, key,
// version, sequencer, event name), so the same notification always has the same id; the time
// is the first record's eventTime.
//
// Connection: the listen request is kept open for ever. When it fails (MinIO unreachable,
// bucket missing, keys refused) the source retries after 1 s, doubling up to 30 s, and logs each
// change between listening and not. It reports them too (kevents_source_connected, readiness):
// connected from each listen MinIO answers, not once a listen cannot be made. A stream silent
// for longer than minioIdle (MinIO writes at least every 10 s) is dropped and opened again, so a
// server that hangs is noticed. Two shortcomings of minio-go v7 are worked around in the
// transport: after a line it cannot read it drains the live stream (discarding every later
// notification) before reopening it, so the source ends the stream at once; and it reads the
// keep-alive spaces older MinIO servers send as an unreadable notification when such a stream
// ends, so those spaces are dropped.
//
// Differences from Argo: endpoint, bucket name and event names are checked at load time against
// what MinIO accepts, and events are required (without them MinIO answers the request as a
// ListObjects, which Argo then reads as broken notifications); region is passed to the client
// (Argo ignores it); bucket.key is ignored, as in Argo; an unreadable notification is logged and
// counted as a publish failure, as Argo logs it.

func init() {
	RegisterOwned("minio", Spec{
		Summary: "MinIO bucket notifications (the listen API); runs once in the cluster. At most once: the listen API has no acknowledgement or replay.",
		Check:   checkMinio,
	}, newMinio)
}

const (
	// minioBatch bounds the notifications of one commit.
	minioBatch = 500
	// minioPing is the ping interval the source asks MinIO for (minio-go sends ping=10).
	minioPing = 10 * time.Second
)

// minioIdle is how long a listen stream may be silent, pings included, before it is reopened.
var minioIdle = 3 * minioPing

// minioEventNames are the event names MinIO's server accepts (its event.ParseName).
var minioEventNames = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{
		"s3:BucketCreated:*", "s3:BucketRemoved:*",
		"s3:ObjectAccessed:*", "s3:ObjectAccessed:Get", "s3:ObjectAccessed:GetRetention",
		"s3:ObjectAccessed:GetLegalHold", "s3:ObjectAccessed:Head", "s3:ObjectAccessed:Attributes",
		"s3:ObjectCreated:*", "s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectCreated:Copy",
		"s3:ObjectCreated:Post", "s3:ObjectCreated:Put", "s3:ObjectCreated:PutRetention",
		"s3:ObjectCreated:PutLegalHold", "s3:ObjectCreated:PutTagging", "s3:ObjectCreated:DeleteTagging",
		"s3:ObjectRemoved:*", "s3:ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated",
		"s3:ObjectRemoved:NoOP", "s3:ObjectRemoved:DeleteAllVersions",
		"s3:LifecycleDelMarkerExpiration:Delete",
		"s3:Replication:*", "s3:Replication:OperationFailedReplication",
		"s3:Replication:OperationCompletedReplication", "s3:Replication:OperationMissedThreshold",
		"s3:Replication:OperationReplicatedAfterThreshold", "s3:Replication:OperationNotTracked",
		"s3:ObjectRestore:*", "s3:ObjectRestore:Post", "s3:ObjectRestore:Completed",
		"s3:ObjectTransition:*", "s3:ObjectTransition:Failed", "s3:ObjectTransition:Complete",
		"s3:Scanner:ManyVersions", "s3:Scanner:LargeVersions", "s3:Scanner:BigPrefix",
	} {
		m[n] = true
	}
	return m
}()

// minioData is the data of a minio event, as Argo's MinioEventData.
type minioData struct {
	Notification []notification.Event `json:"notification"`
	Metadata     map[string]string    `json:"metadata,omitempty"`
}

func checkMinio(ev api.Event) error {
	m, specErr := specOf[api.S3Artifact](ev)
	if specErr != nil {
		return specErr
	}
	var errs []error
	switch {
	case m.Endpoint == "":
		errs = append(errs, errors.New(`endpoint: missing; expected host:port of the MinIO server, e.g. minio.argo-events:9000`))
	case strings.Contains(m.Endpoint, "://"):
		errs = append(errs, fmt.Errorf("endpoint: %q; expected host:port without a scheme (set insecure: true for http)", m.Endpoint))
	default:
		// minio.New only parses: it is the client's own check of the endpoint.
		if _, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4("", "", "")}); err != nil {
			errs = append(errs, fmt.Errorf("endpoint: %q: %w; expected host:port of the MinIO server", m.Endpoint, err))
		}
	}
	switch {
	case m.Bucket == nil || m.Bucket.Name == "":
		errs = append(errs, errors.New("bucket.name: missing; expected the bucket whose notifications to listen to"))
	default:
		if err := s3utils.CheckValidBucketNameStrict(m.Bucket.Name); err != nil {
			errs = append(errs, fmt.Errorf("bucket.name: %q: %w", m.Bucket.Name, err))
		}
	}
	for _, f := range []struct {
		name string
		ref  *api.SecretKeySelector
	}{{"accessKey", m.AccessKey}, {"secretKey", m.SecretKey}} {
		if err := f.ref.Check(f.name); err != nil {
			errs = append(errs, err)
		}
	}
	if m.CACertificate != nil {
		if err := m.CACertificate.Check("caCertificate"); err != nil {
			errs = append(errs, err)
		}
	}
	if len(m.Events) == 0 {
		// Without events, MinIO routes the request as a ListObjects, not a listen (Argo then
		// reads the listing as broken notifications).
		errs = append(errs, errors.New("events: missing; expected at least one MinIO event name, e.g. s3:ObjectCreated:*"))
	}
	for i, e := range m.Events {
		if !minioEventNames[e] {
			errs = append(errs, fmt.Errorf("events[%d]: %q; expected a MinIO event name such as s3:ObjectCreated:*, s3:ObjectCreated:Put or s3:ObjectRemoved:Delete", i, e))
		}
	}
	return errors.Join(errs...)
}

type minioSource struct {
	b      Build
	cfg    api.S3Artifact
	client *minio.Client
	tr     *minioTransport
	log    *slog.Logger
}

func newMinio(b Build) (OwnedSource, error) {
	cfg := b.Event.Spec.(api.S3Artifact) // checkMinio verified the type
	access, err := b.Env.Secrets.Ref("accessKey", cfg.AccessKey)
	if err != nil {
		return nil, err
	}
	secret, err := b.Env.Secrets.Ref("secretKey", cfg.SecretKey)
	if err != nil {
		return nil, err
	}
	base, err := minio.DefaultTransport(!cfg.Insecure)
	if err != nil {
		return nil, fmt.Errorf("minio transport: %w", err)
	}
	if cfg.CACertificate != nil {
		pem, err := b.Env.Secrets.Ref("caCertificate", cfg.CACertificate)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(pem)) {
			return nil, fmt.Errorf("caCertificate: secret %s/%s holds no PEM certificate", cfg.CACertificate.Name, cfg.CACertificate.Key)
		}
		if base.TLSClientConfig != nil {
			base.TLSClientConfig.RootCAs = pool
		}
	}
	log := b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name,
		"endpoint", cfg.Endpoint, "bucket", cfg.Bucket.Name)
	tr := &minioTransport{base: base, log: log, events: strings.Join(cfg.Events, ",")}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(access, secret, ""),
		Secure:    !cfg.Insecure,
		Region:    cfg.Region,
		Transport: tr,
		// One attempt per listen: the source paces and logs the retries itself.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("endpoint: %q: %w", cfg.Endpoint, err)
	}
	return &minioSource{b: b, cfg: cfg, client: client, tr: tr, log: log}, nil
}

// RunOwned implements OwnedSource: it listens while this member owns the event and commits what
// arrives. It returns the error of a failed commit (the notifications of that commit are lost)
// and nil once ctx ended. The state is unused: the listen API cannot resume.
func (m *minioSource) RunOwned(ctx context.Context, _ []byte, commit Commit) error {
	ctx, cancel := context.WithCancel(ctx)
	infos := make(chan notification.Info, minioBatch)
	health := newSourceHealth(ctx, m.b)
	m.tr.health.Store(health)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.receive(ctx, infos, health)
	}()
	// The listener must be gone before the next owner may listen.
	defer func() {
		cancel()
		wg.Wait()
		health.stop()
	}()

	env := m.b.Env
	ns, es, name := m.b.EventSource.Metadata.Namespace, m.b.EventSource.Metadata.Name, m.b.Event.Name
	for {
		var batch []notification.Info
		select {
		case <-ctx.Done():
			m.dropQueued(infos)
			return nil
		case n := <-infos:
			batch = append(batch, n)
		}
		batch = drainReady(batch, infos, minioBatch)
		env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(batch)))
		events := make([]cloudevents.Event, 0, len(batch))
		for _, n := range batch {
			e, err := m.event(n)
			if err != nil {
				m.log.Error("minio: notification rejected and dropped", "records", len(n.Records), "err", err)
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
			m.log.Error("minio: Kafka did not commit the events; notifications lost (MinIO's listen API does not redeliver)", "notifications", len(events), "err", err)
			return fmt.Errorf("commit %d minio events: %w", len(events), err)
		}
		env.Metrics.Published(ns, es, name, len(events))
	}
}

// dropQueued logs the notifications received but not committed when the source stops.
func (m *minioSource) dropQueued(infos chan notification.Info) {
	if n := len(infos); n > 0 {
		m.log.Warn("minio: source stopped with notifications received but not committed; they are lost (MinIO's listen API does not redeliver)", "notifications", n)
	}
}

// receive listens until ctx ends, passing notifications to infos. minio-go's listen ends its
// channel after a failed request or an error answer, and reopens by itself a stream that ended
// or broke; receive listens again after a backoff when the channel ends, and reports to health
// that it cannot listen (the transport reports each listen MinIO answers).
func (m *minioSource) receive(ctx context.Context, infos chan<- notification.Info, health *sourceHealth) {
	var backoff redisBackoff
	reported := false // the failure to listen was logged
	prefix, suffix := "", ""
	if f := m.cfg.Filter; f != nil {
		prefix, suffix = f.Prefix, f.Suffix
	}
	for {
		answered, broken := m.tr.listens.Load(), m.tr.broken.Load()
		var lastErr error
		unreadable := false // minio-go closed the stream after an unreadable line
		for n := range m.client.ListenBucketNotification(ctx, m.cfg.Bucket.Name, prefix, suffix, m.cfg.Events) {
			if n.Err != nil {
				if ctx.Err() != nil {
					continue
				}
				lastErr = n.Err
				switch {
				case isJSONError(n.Err):
					m.log.Error("minio: notification could not be read and is dropped; the stream is reopened", "err", n.Err)
					m.b.Env.Metrics.EventsReceived.WithLabelValues(m.b.EventSource.Metadata.Name, m.b.Event.Name).Inc()
					unreadable = true
					m.tr.abort()
				case unreadable:
					unreadable = false // the read on the stream minio-go closed: already said
				case m.tr.broken.Load() != broken:
					broken = m.tr.broken.Load()
					m.log.Warn("minio: listen stream broke; reopening it, notifications meanwhile are lost", "err", n.Err)
				}
				continue
			}
			select {
			case infos <- n:
			case <-ctx.Done():
			}
		}
		// The channel is closed: minio-go's listener is gone.
		if ctx.Err() != nil {
			return
		}
		if lastErr != nil {
			health.set(fmt.Errorf("listen to bucket %s: %w", m.cfg.Bucket.Name, lastErr))
		} else {
			health.set(fmt.Errorf("listen to bucket %s: the listen request ended", m.cfg.Bucket.Name))
		}
		if m.tr.listens.Load() != answered {
			// MinIO answered since the last attempt: a new failure, and the backoff starts over.
			backoff.reset()
			reported = false
		}
		if !reported {
			m.log.Warn("minio: cannot listen to bucket notifications; retrying, notifications meanwhile are lost", "err", lastErr)
			reported = true
		}
		d, ok := backoff.wait(ctx)
		if !ok {
			return
		}
		m.log.Debug("minio: listening again", "waited", d, "err", lastErr)
	}
}

// isJSONError reports whether err is minio-go's failure to decode a notification line (it
// decodes with goccy/go-json, or encoding/json with the stdlibjson build tag).
func isJSONError(err error) bool {
	var (
		gs *gojson.SyntaxError
		gt *gojson.UnmarshalTypeError
		ss *json.SyntaxError
		st *json.UnmarshalTypeError
	)
	return errors.As(err, &gs) || errors.As(err, &gt) || errors.As(err, &ss) || errors.As(err, &st)
}

// event builds the CloudEvent of a notification: Argo's data, an id derived from the records
// and the first record's time.
func (m *minioSource) event(n notification.Info) (cloudevents.Event, error) {
	h := sha256.New()
	at := time.Time{}
	for _, r := range n.Records {
		// Lengths first, so that no two different records hash alike.
		for _, s := range []string{r.S3.Bucket.Name, r.S3.Object.Key, r.S3.Object.VersionID, r.S3.Object.Sequencer, r.EventName} {
			fmt.Fprintf(h, "%d:%s", len(s), s)
		}
		if at.IsZero() {
			at, _ = time.Parse(time.RFC3339Nano, r.EventTime)
		}
	}
	if at.IsZero() {
		at = time.Now()
	}
	id := hex.EncodeToString(h.Sum(nil)[:16])
	return m.b.NewEvent(id, at.UTC(), minioData{Notification: n.Records, Metadata: m.cfg.Metadata})
}

// minioTransport counts the listen requests MinIO answered, tracks whether a listen stream is
// open (so the source logs each change between listening and not), and wraps listen streams in
// a streamBody.
type minioTransport struct {
	base      http.RoundTripper
	log       *slog.Logger
	events    string
	listens   atomic.Int64 // listen requests answered with 200
	listening atomic.Bool  // a listen stream is open
	broken    atomic.Int64 // listen streams that ended on a read error
	current   atomic.Pointer[streamBody]
	health    atomic.Pointer[sourceHealth] // of the current run
}

// abort ends the open listen stream. After an unreadable line minio-go drains the stream
// before reopening it, which on a live stream discards every later notification: ending the
// stream makes it reopen at once.
func (t *minioTransport) abort() {
	if b := t.current.Load(); b != nil {
		_ = b.rc.Close()
	}
}

func (t *minioTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	// minio-go's listen request is the GET with ping (the location lookup is a GET too).
	if err != nil || req.Method != http.MethodGet || !req.URL.Query().Has("ping") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	t.listens.Add(1)
	if h := t.health.Load(); h != nil {
		h.set(nil)
	}
	if !t.listening.Swap(true) {
		t.log.Info("minio: listening to bucket notifications", "events", t.events)
	}
	body := newStreamBody(resp.Body, minioIdle, func(failed bool) {
		t.listening.Store(false)
		if failed {
			t.broken.Add(1)
		}
	})
	t.current.Store(body)
	resp.Body = body
	return resp, nil
}

// streamBody is a listen stream as minio-go should read it:
//
//   - Spaces at the start of a line are dropped: MinIO servers before ping=N keep the stream
//     alive with bare spaces, and minio-go fails to decode the spaces left when such a stream
//     ends, reporting a notification it could not read where there was none.
//   - A stream that yields nothing, pings included, for idle is closed, which fails the read
//     pending on it: a stream from a server that hangs ends instead of waiting for ever.
type streamBody struct {
	rc        io.ReadCloser
	idle      time.Duration
	timer     *time.Timer
	timedOut  atomic.Bool
	lineStart bool
	ended     func(failed bool) // called once, when a read fails or the body is closed
	endOnce   sync.Once
}

func newStreamBody(rc io.ReadCloser, idle time.Duration, ended func(failed bool)) *streamBody {
	b := &streamBody{rc: rc, idle: idle, lineStart: true, ended: ended}
	b.timer = time.AfterFunc(idle, func() {
		b.timedOut.Store(true)
		_ = rc.Close()
	})
	return b
}

func (b *streamBody) Read(p []byte) (int, error) {
	for {
		n, err := b.rc.Read(p)
		if n > 0 {
			b.timer.Reset(b.idle)
		}
		kept := 0
		for _, c := range p[:n] {
			if c == ' ' && b.lineStart {
				continue
			}
			b.lineStart = c == '\n'
			p[kept] = c
			kept++
		}
		if err != nil {
			b.endOnce.Do(func() { b.ended(true) })
			if b.timedOut.Load() {
				err = fmt.Errorf("listen stream silent for %s, not even a ping: %w", b.idle, err)
			}
			return kept, err
		}
		// Reading nothing but keep-alive spaces is no progress to report: bufio.Scanner fails
		// after many empty reads.
		if kept > 0 || n == 0 && len(p) == 0 {
			return kept, nil
		}
	}
}

func (b *streamBody) Close() error {
	b.timer.Stop()
	b.endOnce.Do(func() { b.ended(false) })
	return b.rc.Close()
}
