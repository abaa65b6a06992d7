package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/notification"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/metrics"
)

// The minio tests run a real MinIO server: `make minio` (part of `make test-servers`) builds it
// from hack/minio into ~/.cache/kevents/minio (KEVENTS_MINIO_DIR overrides the folder). It is
// MinIO of May 2021 (the Go module proxy here refuses the newer versions tried), in its
// single-folder mode; its listen API is today's, except that it keeps the stream alive with bare
// spaces instead of JSON pings. Without the binary the tests skip, or fail with KEVENTS_REQUIRE_SERVERS.
//
// The source reaches MinIO through a reverse proxy of the test's own (minioListenProxy), which
// forwards every request unchanged and counts the listen streams MinIO answered: that is how a
// test knows the source listens, since MinIO tells no one. Only what no real server sends (a
// line that is not a notification, a stream gone silent) is tested against a stream the test
// writes itself (TestMinioUnreadableLine, TestMinioSilentStream).

const (
	minioUser     = "kevents-minio"
	minioPassword = "kevents-minio-pa55"
	minioBucket   = "conf-bucket"
)

// minioTestServer is a MinIO server run by the test on a free port with its data in a
// temporary folder, so that a restart keeps the buckets.
type minioTestServer struct {
	t      *testing.T
	bin    string
	port   int
	dir    string
	certs  string
	cmd    *exec.Cmd
	exited chan struct{}
	output *syncBuffer
	roots  *x509.CertPool // with TLS: the CA of the server's certificate
	client *minio.Client  // the test's own client
}

// minioBinary is where `make minio` puts the server.
func minioBinary() string {
	if d := os.Getenv("KEVENTS_MINIO_DIR"); d != "" {
		return filepath.Join(d, "minio")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = ".cache"
	}
	return filepath.Join(cache, "kevents", "minio", "minio")
}

// startMinio starts MinIO, or skips the test when it is not built (fails with
// KEVENTS_REQUIRE_SERVERS set, as in CI).
func startMinio(t *testing.T) *minioTestServer {
	t.Helper()
	return startMinioServer(t, nil, nil, nil)
}

// startMinioTLS starts MinIO serving HTTPS with a certificate signed by a CA of the test's own,
// returned as PEM.
func startMinioTLS(t *testing.T) (*minioTestServer, []byte) {
	t.Helper()
	caPEM, cert, key, _, _ := natsTestPKI(t)
	return startMinioServer(t, caPEM, cert, key), caPEM
}

func startMinioServer(t *testing.T, caPEM, cert, key []byte) *minioTestServer {
	t.Helper()
	bin := minioBinary()
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("KEVENTS_REQUIRE_SERVERS") != "" {
			t.Fatalf("no MinIO server at %s and KEVENTS_REQUIRE_SERVERS is set: run `make minio` (part of make test-servers; about 3 minutes, once)", bin)
		}
		t.Skipf("no MinIO server at %s: run `make minio` (part of make test-servers; about 3 minutes, once) to run this test", bin)
	}
	s := &minioTestServer{t: t, bin: bin, port: freePort(t), dir: t.TempDir(), certs: t.TempDir()}
	opts := &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPassword, "")}
	if caPEM != nil {
		// MinIO serves HTTPS when its certs folder holds public.crt and private.key.
		for name, b := range map[string][]byte{"public.crt": cert, "private.key": key} {
			if err := os.WriteFile(filepath.Join(s.certs, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s.roots = x509.NewCertPool()
		s.roots.AppendCertsFromPEM(caPEM)
		opts.Secure = true
		opts.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}}
	}
	s.start()
	t.Cleanup(s.stop)
	c, err := minio.New(s.addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	return s
}

func (s *minioTestServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

func (s *minioTestServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "server", "--quiet", "--address", s.addr(), "--certs-dir", s.certs, s.dir)
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPassword,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.output = &syncBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start minio: %v", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(s.cmd, s.exited)
	ready, hc := "http://"+s.addr()+"/minio/health/ready", http.DefaultClient
	if s.roots != nil {
		ready = "https://" + s.addr() + "/minio/health/ready"
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}}}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		select {
		case <-s.exited:
			s.t.Fatalf("minio exited:\n%s", s.output)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("minio not ready on %s: %v\n%s", s.addr(), err, s.output)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts the server down (SIGTERM).
func (s *minioTestServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

func (s *minioTestServer) restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

func (s *minioTestServer) makeBucket(name string) {
	s.t.Helper()
	if err := s.client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		s.t.Fatalf("make bucket %s: %v", name, err)
	}
}

func (s *minioTestServer) put(key, body string) {
	s.t.Helper()
	_, err := s.client.PutObject(context.Background(), minioBucket, key, strings.NewReader(body), int64(len(body)),
		minio.PutObjectOptions{ContentType: "application/json"})
	if err != nil {
		s.t.Fatalf("put %s: %v", key, err)
	}
}

func (s *minioTestServer) remove(key string) {
	s.t.Helper()
	if err := s.client.RemoveObject(context.Background(), minioBucket, key, minio.RemoveObjectOptions{}); err != nil {
		s.t.Fatalf("remove %s: %v", key, err)
	}
}

// minioListenProxy forwards requests to a MinIO server as they are (the Host header too, so
// signatures hold) and counts the listen streams MinIO answered that are still open.
type minioListenProxy struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	opened int          // listen streams answered so far
	open   map[int]bool // those still open
	seen   int          // streams opened before the last ready
}

func newMinioListenProxy(t *testing.T, backend string) *minioListenProxy {
	p := &minioListenProxy{t: t, open: map[int]bool{}}
	rp := httputil.NewSingleHostReverseProxy(&neturl.URL{Scheme: "http", Host: backend})
	rp.FlushInterval = -1                    // a notification goes through at once
	rp.ErrorLog = log.New(io.Discard, "", 0) // MinIO down while a test restarts it is expected
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !r.URL.Query().Has("ping") {
			rp.ServeHTTP(w, r)
			return
		}
		lw := &listenWriter{ResponseWriter: w, p: p}
		defer lw.closed()
		rp.ServeHTTP(lw, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *minioListenProxy) addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// openStreams is the number of listen streams open now.
func (p *minioListenProxy) openStreams() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open)
}

// ready waits until a listen stream answered since the previous ready is open: MinIO has
// subscribed it before answering, so what happens from now on reaches the source.
func (p *minioListenProxy) ready(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		fresh := false
		for id := range p.open {
			if id > p.seen {
				fresh = true
			}
		}
		if fresh {
			p.seen = p.opened
		}
		p.mu.Unlock()
		if fresh {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the source opened no listen stream")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type listenWriter struct {
	http.ResponseWriter
	p  *minioListenProxy
	id int
}

func (w *listenWriter) WriteHeader(code int) {
	if code == http.StatusOK && w.id == 0 {
		w.p.mu.Lock()
		w.p.opened++
		w.id = w.p.opened
		w.p.open[w.id] = true
		w.p.mu.Unlock()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *listenWriter) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

func (w *listenWriter) closed() {
	if w.id != 0 {
		w.p.mu.Lock()
		delete(w.p.open, w.id)
		w.p.mu.Unlock()
	}
}

// minioRecord is the part of a notification record the tests read.
type minioRecord struct {
	EventName   string `json:"eventName"`
	EventSource string `json:"eventSource"`
	EventTime   string `json:"eventTime"`
	S3          struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			Key       string `json:"key"`
			Sequencer string `json:"sequencer"`
		} `json:"object"`
	} `json:"s3"`
}

// minioDataOf decodes the data of a minio event, checking Argo's fields: one record per
// notification, as MinIO sends them.
func minioDataOf(t *testing.T, data []byte) (rec minioRecord, metadata map[string]string) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("event data is not a JSON object: %v\n%s", err, data)
	}
	for k := range fields {
		if k != "notification" && k != "metadata" {
			t.Errorf("unexpected field %q in the event data %s", k, data)
		}
	}
	var d struct {
		Notification []minioRecord     `json:"notification"`
		Metadata     map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Notification) != 1 {
		t.Fatalf("%d records in %s, want 1", len(d.Notification), data)
	}
	r := d.Notification[0]
	if r.EventSource != "minio:s3" || r.EventTime == "" || r.S3.Object.Sequencer == "" {
		t.Errorf("record %s: want MinIO's eventSource, eventTime and sequencer", data)
	}
	return r, d.Metadata
}

// minioYAML is an EventSource with one minio event reaching endpoint with the test's keys,
// listening to s3:ObjectCreated:* unless extra sets events.
func minioYAML(endpoint, extra string) string {
	if !strings.Contains(extra, "events:") {
		extra += `      events: ["s3:ObjectCreated:*"]` + "\n"
	}
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  minio:
    %s:
      endpoint: %s
      bucket: {name: %s}
      insecure: true
      accessKey: {name: minio, key: accesskey}
      secretKey: {name: minio, key: secretkey}
%s`, conformanceEventSource, conformanceEvent, endpoint, minioBucket, strings.TrimRight(extra, "\n")+"\n")
}

var minioSecrets = map[string]string{"minio/accesskey": minioUser, "minio/secretkey": minioPassword}

func TestConformanceMinio(t *testing.T) {
	runConformance(t, "minio", func(t *testing.T) *conformanceOutside {
		s := startMinio(t)
		s.makeBucket(minioBucket)
		p := newMinioListenProxy(t, s.addr())
		return &conformanceOutside{
			fields: fmt.Sprintf(`      endpoint: %s
      bucket: {name: %s}
      insecure: true
      accessKey: {name: minio, key: accesskey}
      secretKey: {name: minio, key: secretkey}
      events: ["s3:ObjectCreated:*"]
      filter: {prefix: "conf/", suffix: ".json"}
      metadata: {team: payments}
`, p.addr(), minioBucket),
			secrets: minioSecrets,
			ready:   p.ready,
			send:    func(t *testing.T, n int) { s.put(fmt.Sprintf("conf/%d.json", n), fmt.Sprintf(`{"n": %d}`, n)) },
			marker: func(t *testing.T, data []byte) int {
				r, md := minioDataOf(t, data)
				if r.EventName != "s3:ObjectCreated:Put" || r.S3.Bucket.Name != minioBucket || !reflect.DeepEqual(md, map[string]string{"team": "payments"}) {
					t.Errorf("event %s on bucket %s with metadata %v; want s3:ObjectCreated:Put on %s and the event's metadata", r.EventName, r.S3.Bucket.Name, md, minioBucket)
				}
				if r.S3.Object.Key == "conf/bad.json" {
					return -1
				}
				n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(r.S3.Object.Key, "conf/"), ".json"))
				if err != nil {
					t.Fatalf("object key %q, want conf/<n>.json", r.S3.Object.Key)
				}
				return n
			},
			// MinIO sends only notifications it made: there is no bad one to send through a real
			// server (TestMinioUnreadableLine covers an unreadable line). An object whose content
			// is not JSON is an ordinary notification, kept as Argo keeps it.
			sendBad:    func(t *testing.T) { s.put("conf/bad.json", "not json {") },
			badKept:    true,
			atMostOnce: "MinIO's listen API has no acknowledgement and sends a notification only to the listeners connected when it happens",
			outage: func(*testing.T) func(*testing.T) {
				s.stop()
				return func(*testing.T) { s.start() }
			},
		}
	})
}

// The filter and the event names go to MinIO: only matching notifications arrive. A missing
// bucket is an error the source logs and retries until the bucket exists.
func TestMinioFilterAndMissingBucket(t *testing.T) {
	s := startMinio(t)
	p := newMinioListenProxy(t, s.addr())
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(minioSecrets)
	runSources(t, h.env, parseEventSources(t, minioYAML(p.addr(), `      events: ["s3:ObjectCreated:Put"]
      filter: {prefix: "in/", suffix: ".csv"}
`)))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "minio: cannot listen to bucket notifications") {
		if time.Now().After(deadline) {
			t.Fatal("listening to a missing bucket is not logged as a failure")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "bucket does not exist") {
		t.Errorf("the log does not say the bucket is missing")
	}
	s.makeBucket(minioBucket)
	p.ready(t)
	s.put("in/a.txt", "x")  // suffix
	s.put("out/a.csv", "x") // prefix
	s.put("in/b.csv", "x")
	s.remove("in/b.csv") // event name
	s.put("in/c.csv", "x")
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline = time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	// MinIO sends in order on one stream: anything for the earlier objects came before c.
	var keys []string
	ids := map[string]bool{}
	for _, e := range h.committedEvents(topic) {
		r, _ := minioDataOf(t, e.Data())
		keys = append(keys, r.S3.Object.Key)
		ids[e.ID()] = true
		if want, _ := time.Parse(time.RFC3339Nano, r.EventTime); !e.Time().Equal(want) {
			t.Errorf("event time %v, want the record's eventTime %s", e.Time(), r.EventTime)
		}
	}
	if want := []string{"in/b.csv", "in/c.csv"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("events for %q, want %q", keys, want)
	}
	if len(ids) != len(keys) {
		t.Errorf("event ids %v: want one per notification", ids)
	}
	if strings.Contains(logs.String(), minioPassword) {
		t.Error("the secret key is in the logs")
	}
}

// MinIO down at the start: the source keeps retrying, logs it, and listens once MinIO is up; a
// restart of MinIO is a stream that broke, reopened without a false unreadable notification
// (this MinIO keeps its stream alive with bare spaces).
func TestMinioServerDown(t *testing.T) {
	s := startMinio(t)
	s.makeBucket(minioBucket)
	s.stop()
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(minioSecrets)
	runSources(t, h.env, parseEventSources(t, minioYAML(s.addr(), "")))
	waitLog := func(what, line string, n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(logs.String(), line) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the log does not say %q %d times", what, line, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog("MinIO down", "minio: cannot listen to bucket notifications", 1)
	s.start()
	waitLog("MinIO up", "minio: listening to bucket notifications", 1)
	s.put("up", "1")
	topic := h.topo.SourceTopic("", conformanceEventSource)
	waitEvents := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(h.committedEvents(topic)) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d events, want %d", len(h.committedEvents(topic)), n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitEvents(1)
	time.Sleep(1200 * time.Millisecond) // a few keep-alive spaces on the stream
	s.restart()
	waitLog("MinIO restarted", "minio: listening to bucket notifications", 2)
	s.put("again", "2")
	waitEvents(2)
	if strings.Contains(logs.String(), "could not be read") {
		t.Errorf("the end of a stream kept alive with spaces is logged as an unreadable notification")
	}
}

// Over HTTPS, the server's certificate is verified with caCertificate from a Secret; without
// it, the system's roots refuse the certificate and the source keeps retrying.
func TestMinioTLS(t *testing.T) {
	s, caPEM := startMinioTLS(t)
	s.makeBucket(minioBucket)
	h, logs := newConformanceHarness(t)
	secrets := map[string]string{"minio-ca/ca.crt": string(caPEM)}
	for k, v := range minioSecrets {
		secrets[k] = v
	}
	h.env.Secrets = mapSecrets(secrets)
	yaml := strings.Replace(minioYAML(s.addr(), "      caCertificate: {name: minio-ca, key: ca.crt}\n"), "      insecure: true\n", "", 1)
	runSources(t, h.env, parseEventSources(t, yaml))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "minio: listening to bucket notifications") {
		if time.Now().After(deadline) {
			t.Fatal("the source does not listen over HTTPS")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.put("secure", "x")
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline = time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no event over HTTPS")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The same server without the CA: the certificate is refused.
	h2, logs2 := newConformanceHarness(t)
	h2.env.Secrets = mapSecrets(minioSecrets)
	runSources(t, h2.env, parseEventSources(t, strings.Replace(minioYAML(s.addr(), ""), "      insecure: true\n", "", 1)))
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(logs2.String(), "minio: cannot listen to bucket notifications") {
		if time.Now().After(deadline) {
			t.Fatal("a certificate of an unknown CA is not refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs2.String(), "certificate") {
		t.Error("the refusal does not mention the certificate")
	}
}

// The event runs on one member only: with two members, one listen stream is open and each
// notification is published once.
func TestMinioOwnedOnce(t *testing.T) {
	s := startMinio(t)
	s.makeBucket(minioBucket)
	p := newMinioListenProxy(t, s.addr())
	h, _ := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(minioSecrets)
	m2 := *h.env
	m2.Member, m2.Metrics = "m2", metrics.New()
	yaml := minioYAML(p.addr(), "")
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, &m2, parseEventSources(t, yaml))
	adm := kadm.NewClient(h.client)
	deadline := time.Now().Add(20 * time.Second)
	for {
		groups, err := adm.DescribeGroups(context.Background(), h.topo.Sources())
		g := groups[h.topo.Sources()]
		if err == nil && g.State == "Stable" && len(g.Members) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: state %q with %d members (%v), want Stable with 2", h.topo.Sources(), g.State, len(g.Members), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.ready(t)
	if got := p.openStreams(); got != 1 {
		t.Errorf("%d listen streams open, want 1 in the cluster", got)
	}
	const n = 5
	for i := range n {
		s.put(fmt.Sprintf("o/%d", i), "x")
	}
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline = time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(h.committedEvents(topic)); got != n {
		t.Errorf("%d events for %d notifications, want one each (one listener in the cluster)", got, n)
	}
	a := h.counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	b := (&harness{t: t, metrics: m2.Metrics}).counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	if a+b != n || (a != 0 && b != 0) {
		t.Errorf("members published %v and %v, want %d by one of them", a, b, n)
	}
}

// minioFakeStream is a listen endpoint written by the test, not MinIO: each listen request
// gets the next script, whose lines it writes before holding the stream open.
func minioFakeStream(t *testing.T, scripts ...[]string) (addr string, requests func() int) {
	var (
		mu sync.Mutex
		n  int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || strings.Trim(r.URL.Path, "/") != minioBucket || !r.URL.Query().Has("ping") {
			http.Error(w, "not a listen request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		i := n
		n++
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if i < len(scripts) {
			for _, l := range scripts[i] {
				fmt.Fprintln(w, l)
				w.(http.Flusher).Flush()
			}
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func minioLine(t *testing.T, key, sequencer string) string {
	t.Helper()
	var ev notification.Event
	ev.EventVersion, ev.EventSource, ev.EventName = "2.0", "minio:s3", "s3:ObjectCreated:Put"
	ev.EventTime = "2026-01-02T03:04:05.678Z"
	ev.S3.Bucket.Name, ev.S3.Object.Key, ev.S3.Object.Sequencer = minioBucket, key, sequencer
	b, err := json.Marshal(notification.Info{Records: []notification.Event{ev}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A line that is not a notification (no real MinIO sends one, so a stream of the test's own
// does) is logged and counted; minio-go reopens the stream and what follows is delivered.
func TestMinioUnreadableLine(t *testing.T) {
	addr, requests := minioFakeStream(t,
		[]string{minioLine(t, "a", "1"), "not json {"},
		[]string{minioLine(t, "b", "2")})
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(minioSecrets)
	// region: no bucket location lookup, which this stream does not answer.
	runSources(t, h.env, parseEventSources(t, minioYAML(addr, "      region: us-east-1\n")))
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d events after %d listen requests, want 2", len(h.committedEvents(topic)), requests())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var keys []string
	for _, e := range h.committedEvents(topic) {
		r, _ := minioDataOf(t, e.Data())
		keys = append(keys, r.S3.Object.Key)
	}
	if !reflect.DeepEqual(keys, []string{"a", "b"}) {
		t.Errorf("events for %q, want a and b", keys)
	}
	if !strings.Contains(logs.String(), "minio: notification could not be read and is dropped") {
		t.Error("the unreadable line is not logged")
	}
	// The unreadable line was received and rejected: not a publish failure (Kafka refused nothing).
	received := h.counter("kevents_source_events_received_total", conformanceEventSource, conformanceEvent)
	published := h.counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	failed := h.counter("kevents_source_publish_failures_total", conformanceEventSource, conformanceEvent)
	if received != 3 || published != 2 || failed != 0 {
		t.Errorf("received %v, published %v, publish failures %v; want 3, 2 and 0", received, published, failed)
	}
}

// A stream silent for longer than minioIdle (a real MinIO writes at least every 10 s) is closed
// and opened again.
func TestMinioSilentStream(t *testing.T) {
	idle := minioIdle
	minioIdle = 200 * time.Millisecond
	t.Cleanup(func() { minioIdle = idle })
	addr, requests := minioFakeStream(t, nil, []string{minioLine(t, "after", "1")})
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(minioSecrets)
	runSources(t, h.env, parseEventSources(t, minioYAML(addr, "      region: us-east-1\n")))
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no event after %d listen requests; want the silent stream reopened", requests())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "listen stream silent for 200ms") {
		t.Error("the silent stream is not logged")
	}
}

// The id comes from the records: the same notification has the same id, another one another.
func TestMinioEventID(t *testing.T) {
	h, _ := newConformanceHarness(t)
	es := parseEventSources(t, minioYAML("minio:9000", ""))[0]
	src := &minioSource{b: Build{EventSource: es, Event: es.Spec.Events()[0], Env: h.env}, cfg: es.Spec.Minio[conformanceEvent]}
	info := func(key, seq string) notification.Info {
		var n notification.Info
		if err := json.Unmarshal([]byte(minioLine(t, key, seq)), &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	id := func(n notification.Info) string {
		e, err := src.event(n)
		if err != nil {
			t.Fatal(err)
		}
		return e.ID()
	}
	a := id(info("k", "16A"))
	if a == "" || a != id(info("k", "16A")) {
		t.Errorf("ids %q and %q for one notification, want the same", a, id(info("k", "16A")))
	}
	if a == id(info("k", "16B")) || a == id(info("k2", "16A")) {
		t.Error("two notifications have the same id")
	}
}

func TestCheckMinio(t *testing.T) {
	check := func(fields string) error {
		t.Helper()
		return Check(parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: chk\nspec:\n  minio:\n    ev:\n"+fields)[0])
	}
	const keys = "      accessKey: {name: s, key: a}\n      secretKey: {name: s, key: s}\n"
	for _, ok := range []string{
		"      endpoint: minio:9000\n      bucket: {name: input, key: ignored}\n      events: [\"s3:ObjectCreated:Put\"]\n" + keys,
		"      endpoint: minio.example.com\n      bucket: {name: input}\n      region: eu-west-1\n      insecure: true\n      events: [\"s3:ObjectCreated:*\", \"s3:ObjectRemoved:Delete\", \"s3:ObjectAccessed:Get\", \"s3:BucketCreated:*\"]\n      filter: {prefix: a/, suffix: .csv}\n      metadata: {a: b}\n      caCertificate: {name: ca, key: pem}\n" + keys,
	} {
		if err := check(ok); err != nil {
			t.Errorf("valid: %v", err)
		}
	}
	for _, tc := range []struct{ name, fields, want string }{
		{"no endpoint", "      bucket: {name: input}\n" + keys, "spec.minio.ev: endpoint: missing"},
		{"scheme", "      endpoint: http://minio:9000\n      bucket: {name: input}\n" + keys, `endpoint: "http://minio:9000"; expected host:port without a scheme`},
		{"path", "      endpoint: minio:9000/x\n      bucket: {name: input}\n" + keys, `endpoint: "minio:9000/x"`},
		{"no bucket", "      endpoint: minio:9000\n" + keys, "bucket.name: missing"},
		{"empty bucket", "      endpoint: minio:9000\n      bucket: {name: \"\"}\n" + keys, "bucket.name: missing"},
		{"bad bucket", "      endpoint: minio:9000\n      bucket: {name: Bad_Bucket}\n" + keys, `bucket.name: "Bad_Bucket"`},
		{"no access key", "      endpoint: minio:9000\n      bucket: {name: input}\n      secretKey: {name: s, key: s}\n", "accessKey: a secret name and key are required"},
		{"no secret key", "      endpoint: minio:9000\n      bucket: {name: input}\n      accessKey: {name: s, key: a}\n", "secretKey: a secret name and key are required"},
		{"ca", "      endpoint: minio:9000\n      bucket: {name: input}\n      caCertificate: {name: ca}\n" + keys, "caCertificate: a secret name and key are required"},
		{"no events", "      endpoint: minio:9000\n      bucket: {name: input}\n" + keys, "events: missing; expected at least one MinIO event name"},
		{"event", "      endpoint: minio:9000\n      bucket: {name: input}\n      events: [\"s3:ObjectCreated:*\", \"s3:ObjectCreated:put\"]\n" + keys, `events[1]: "s3:ObjectCreated:put"; expected a MinIO event name such as s3:ObjectCreated:*`},
		{"unknown field", "      endpoint: minio:9000\n      bucket: {name: input}\n      buckets: x\n" + keys, "buckets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.name == "unknown field" {
				docs := api.Parse("test.yaml", []byte("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: chk\nspec:\n  minio:\n    ev:\n"+tc.fields))
				err = docs[0].Err
			} else {
				err = check(tc.fields)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// The keys are read from Secrets: a missing one fails the start, naming the field and the Secret.
func TestMinioMissingSecret(t *testing.T) {
	h, _ := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"minio/accesskey": minioUser})
	_, err := Run(context.Background(), h.env, parseEventSources(t, minioYAML("minio:9000", "")))
	if err == nil || !strings.Contains(err.Error(), "secretKey") || !strings.Contains(err.Error(), "minio") {
		t.Fatalf("Run: %v; want an error naming secretKey and the Secret", err)
	}
	if strings.Contains(err.Error(), minioUser) {
		t.Error("the error holds a secret value")
	}
}

// Argo's own example loads and passes Check.
func TestMinioArgoExample(t *testing.T) {
	b, err := os.ReadFile("../../shared/argo-examples/event-sources/minio.yaml")
	if err != nil {
		t.Skipf("Argo examples not found beside the repository: %v", err)
	}
	if err := Check(parseEventSources(t, string(b))[0]); err != nil {
		t.Error(err)
	}
}
