package source

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// The tests run two kfake clusters: the user's, holding the input topic, and kevents' bus (the
// harness).

// kafkaSrcCluster starts the user's cluster with topics of the given partition count.
func kafkaSrcCluster(t *testing.T, partitions int32, topics []string, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// kafkaSrcClient is a client of the user's cluster, for producing input and reading offsets.
func kafkaSrcClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func kafkaSrcProduce(t *testing.T, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce to the user's cluster: %v", err)
	}
}

// kafkaSrcCommitted returns the group's committed offsets in topic, by partition.
func kafkaSrcCommitted(t *testing.T, cl *kgo.Client, group, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{} // kfake's answer for a group that never joined or committed
	}
	if err != nil {
		t.Fatalf("FetchOffsets %s: %v", group, err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// kafkaSrcEventually polls cond until it holds or the timeout passes.
func kafkaSrcEventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kafkaSrcWaitCommitted waits until the group committed want for each partition given.
func kafkaSrcWaitCommitted(t *testing.T, cl *kgo.Client, group, topic string, want map[int32]int64) {
	t.Helper()
	var got map[int32]int64
	kafkaSrcEventually(t, 15*time.Second, fmt.Sprintf("group %s to commit %v in %s", group, want, topic), func() bool {
		got = kafkaSrcCommitted(t, cl, group, topic)
		for p, o := range want {
			if at, ok := got[p]; !ok || at != o {
				return false
			}
		}
		return true
	})
}

// kafkaSrcWaitEvents waits until the bus topic holds n records and returns them.
func kafkaSrcWaitEvents(t *testing.T, h *harness, topic string, n int) []*kgo.Record {
	t.Helper()
	kafkaSrcEventually(t, 15*time.Second, fmt.Sprintf("%d events on %s", n, topic), func() bool { return h.endOffset(topic) >= int64(n) })
	return h.records(topic, n)
}

// kafkaSrcYAML is an EventSource "kafka" with one kafka event; fields are the event's, indented
// by 6 spaces.
func kafkaSrcYAML(event, fields string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: kafka
spec:
  kafka:
    %s:
%s`, event, strings.TrimRight(fields, "\n")+"\n")
}

const kafkaSrcBusTopic = "kevents.src.default.kafka"

// TestKafkaSourceEvent: records of the user's topic arrive as CloudEvents shaped as Argo's, with
// Argo's stable id; only the configured partition is read; a jsonBody record that is not JSON is
// skipped as Argo does; offsets are committed once the events are on the bus.
func TestKafkaSourceEvent(t *testing.T) {
	user := kafkaSrcCluster(t, 2, []string{"orders"})
	in := kafkaSrcClient(t, user)
	h := newHarness(t, []string{"kafka"})
	addr := user.ListenAddrs()[0]
	runSources(t, h.env, parseEventSources(t, kafkaSrcYAML("example", fmt.Sprintf(`      url: %s
      topic: orders
      partition: "0"
      jsonBody: true
      metadata:
        team: payments
`, addr))))
	const group = kafkaSrcBusTopic + ".example"
	// The start offset is committed as soon as the partition is assigned: a record produced
	// from now on is never skipped, even across restarts.
	kafkaSrcWaitCommitted(t, in, group, "orders", map[int32]int64{0: 0})

	ts := time.UnixMilli(1700000000123)
	kafkaSrcProduce(t, in,
		&kgo.Record{Topic: "orders", Partition: 1, Value: []byte(`{"other":"partition"}`)},
		&kgo.Record{Topic: "orders", Partition: 0, Key: []byte("order-1"), Value: []byte(`{"id": 1, "items": ["a", "b"]}`), Timestamp: ts,
			Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("abc")}, {Key: "source", Value: []byte("shop")}}},
		&kgo.Record{Topic: "orders", Partition: 0, Value: []byte(`not json`), Timestamp: ts},
		&kgo.Record{Topic: "orders", Partition: 0, Value: []byte(`[1,2]`), Timestamp: ts},
	)
	recs := kafkaSrcWaitEvents(t, h, kafkaSrcBusTopic, 2)
	before := time.Now().Add(-time.Minute)

	e := decode(t, recs[0])
	if got, want := e.ID(), "kafka:example:"+addr+":orders:0:0"; got != want {
		t.Errorf("id = %q, want Argo's %q", got, want)
	}
	if e.Source() != "kafka" || e.Subject() != "example" || e.Type() != "kafka" || e.DataContentType() != "application/json" {
		t.Errorf("attributes: source %q subject %q type %q datacontenttype %q; want kafka, example, kafka, application/json",
			e.Source(), e.Subject(), e.Type(), e.DataContentType())
	}
	if e.Time().Before(before) || e.Time().After(time.Now().Add(time.Second)) {
		t.Errorf("time = %s, want about now", e.Time())
	}
	wantData := `{"topic":"orders","key":"order-1","partition":0,"body":{"id":1,"items":["a","b"]},"timestamp":"2023-11-14 22:13:20.123 +0000 UTC","headers":{"source":"shop","trace":"abc"},"metadata":{"team":"payments"}}`
	if string(e.Data()) != wantData {
		t.Errorf("data =\n%s\nwant\n%s", e.Data(), wantData)
	}
	e2 := decode(t, recs[1])
	if got, want := e2.ID(), "kafka:example:"+addr+":orders:0:2"; got != want {
		t.Errorf("second event id = %q, want %q (offset 1 is not JSON and skipped)", got, want)
	}
	wantData = `{"topic":"orders","key":"","partition":0,"body":[1,2],"timestamp":"2023-11-14 22:13:20.123 +0000 UTC","headers":{},"metadata":{"team":"payments"}}`
	if string(e2.Data()) != wantData {
		t.Errorf("data =\n%s\nwant\n%s", e2.Data(), wantData)
	}

	kafkaSrcWaitCommitted(t, in, group, "orders", map[int32]int64{0: 3})
	if got := kafkaSrcCommitted(t, in, group, "orders"); len(got) != 1 {
		t.Errorf("committed %v; want partition 0 only (partition 1 is not read)", got)
	}
	if got := h.counter("kevents_source_events_received_total", "kafka", "example"); got != 3 {
		t.Errorf("events received = %v, want 3", got)
	}
	if got := h.counter("kevents_source_events_published_total", "kafka", "example"); got != 2 {
		t.Errorf("events published = %v, want 2", got)
	}
}

// TestKafkaSourceOldestBinaryBody: with consumerGroup.oldest the records produced before the
// source started are delivered; without jsonBody the body is the value's bytes (base64 in JSON)
// and a record without a value has a null body; limitEventsPerSecond spaces the events.
func TestKafkaSourceOldestBinaryBody(t *testing.T) {
	user := kafkaSrcCluster(t, 1, []string{"raw"})
	in := kafkaSrcClient(t, user)
	kafkaSrcProduce(t, in,
		&kgo.Record{Topic: "raw", Value: []byte("plain text")},
		&kgo.Record{Topic: "raw", Key: []byte("tombstone")},
		&kgo.Record{Topic: "raw", Value: []byte{0xff, 0x00}},
		&kgo.Record{Topic: "raw", Value: []byte("4")},
		&kgo.Record{Topic: "raw", Value: []byte("5")},
	)
	h := newHarness(t, []string{"kafka"})
	start := time.Now()
	runSources(t, h.env, parseEventSources(t, kafkaSrcYAML("raw", fmt.Sprintf(`      url: %s
      topic: raw
      limitEventsPerSecond: 10
      consumerGroup:
        groupName: my-group
        oldest: true
        rebalanceStrategy: sticky
`, user.ListenAddrs()[0]))))
	recs := kafkaSrcWaitEvents(t, h, kafkaSrcBusTopic, 5)
	// Burst 1 at 10 per second: 4 waits of 100 ms.
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Errorf("5 events in %s with limitEventsPerSecond 10; want >= 400ms", d)
	}
	bodies := []string{`"cGxhaW4gdGV4dA=="`, `null`, `"/wA="`, `"NA=="`, `"NQ=="`}
	for i, r := range recs {
		var d map[string]json.RawMessage
		if err := json.Unmarshal(decode(t, r).Data(), &d); err != nil {
			t.Fatal(err)
		}
		if string(d["body"]) != bodies[i] {
			t.Errorf("event %d body = %s, want %s", i, d["body"], bodies[i])
		}
		if _, ok := d["metadata"]; ok {
			t.Errorf("event %d has metadata though none is set: %s", i, decode(t, r).Data())
		}
	}
	kafkaSrcWaitCommitted(t, in, "my-group", "raw", map[int32]int64{0: 5})
}

// TestKafkaSourceCommitsOnlyAfterBusAck: while the bus is unreachable the source keeps retrying
// the same record and commits nothing; a new source with a working bus delivers every record.
func TestKafkaSourceCommitsOnlyAfterBusAck(t *testing.T) {
	user := kafkaSrcCluster(t, 1, []string{"orders"})
	in := kafkaSrcClient(t, user)
	const group = kafkaSrcBusTopic + ".example"
	yaml := kafkaSrcYAML("example", fmt.Sprintf(`      url: %s
      topic: orders
      partition: "0"
      connectionBackoff:
        duration: 100ms
        factor: 1
`, user.ListenAddrs()[0]))

	dead := newHarness(t, []string{"kafka"}, withDeadBroker(), withPublishTimeout(300*time.Millisecond))
	stop := runSources(t, dead.env, parseEventSources(t, yaml))
	kafkaSrcWaitCommitted(t, in, group, "orders", map[int32]int64{0: 0})
	for i := range 3 {
		kafkaSrcProduce(t, in, &kgo.Record{Topic: "orders", Value: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	kafkaSrcEventually(t, 10*time.Second, "publish attempts to fail", func() bool {
		return dead.counter("kevents_source_publish_failures_total", "kafka", "example") >= 3
	})
	time.Sleep(1500 * time.Millisecond) // more than the autocommit interval
	if got := dead.counter("kevents_source_events_received_total", "kafka", "example"); got != 1 {
		t.Errorf("events received = %v; want 1: the first record is retried, the next ones wait behind it", got)
	}
	if got := kafkaSrcCommitted(t, in, group, "orders"); len(got) != 1 || got[0] != 0 {
		t.Fatalf("committed %v with the bus down; want offset 0", got)
	}
	stop()
	if got := kafkaSrcCommitted(t, in, group, "orders"); len(got) != 1 || got[0] != 0 {
		t.Fatalf("committed %v after stopping with the bus down; want offset 0", got)
	}

	h := newHarness(t, []string{"kafka"})
	runSources(t, h.env, parseEventSources(t, yaml))
	recs := kafkaSrcWaitEvents(t, h, kafkaSrcBusTopic, 3)
	for i, r := range recs {
		e := decode(t, r)
		if want := fmt.Sprintf(":orders:0:%d", i); !strings.HasSuffix(e.ID(), want) {
			t.Errorf("event %d id = %q, want suffix %q", i, e.ID(), want)
		}
		var d struct{ Body []byte }
		if err := json.Unmarshal(e.Data(), &d); err != nil || string(d.Body) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Errorf("event %d body = %q (%v)", i, d.Body, err)
		}
	}
	kafkaSrcWaitCommitted(t, in, group, "orders", map[int32]int64{0: 3})
}

// kafkaSrcRecorder is a Publisher that notes the partitions of the events it published.
type kafkaSrcRecorder struct {
	Publisher
	mu    sync.Mutex
	parts map[int]int // user partition → events
}

func (r *kafkaSrcRecorder) Publish(ctx context.Context, topic string, e cloudevents.Event) error {
	if err := r.Publisher.Publish(ctx, topic, e); err != nil {
		return err
	}
	var d struct{ Partition int }
	_ = json.Unmarshal(e.Data(), &d)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.parts[d.Partition]++
	return nil
}

func (r *kafkaSrcRecorder) partitions() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for p := range r.parts {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// TestKafkaSourceGroupSplitsPartitions: two source members in one consumer group split the
// topic's partitions, and each record becomes one event.
func TestKafkaSourceGroupSplitsPartitions(t *testing.T) {
	user := kafkaSrcCluster(t, 4, []string{"orders"})
	in := kafkaSrcClient(t, user)
	h := newHarness(t, []string{"kafka"})
	yaml := kafkaSrcYAML("example", fmt.Sprintf(`      url: %s
      topic: orders
      consumerGroup:
        groupName: shared
        rebalanceStrategy: roundrobin
`, user.ListenAddrs()[0]))
	var members []*kafkaSrcRecorder
	for range 2 {
		rec := &kafkaSrcRecorder{Publisher: h.env.Publisher, parts: map[int]int{}}
		env := *h.env
		env.Publisher = rec
		members = append(members, rec)
		runSources(t, &env, parseEventSources(t, yaml))
	}
	adm := kadm.NewClient(in)
	kafkaSrcEventually(t, 30*time.Second, "a stable group of 2 members", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, "shared")
		if err != nil {
			return false
		}
		g := gs["shared"]
		return g.Err == nil && g.State == "Stable" && len(g.Members) == 2
	})
	kafkaSrcWaitCommitted(t, in, "shared", "orders", map[int32]int64{0: 0, 1: 0, 2: 0, 3: 0})

	for p := range int32(4) {
		for i := range 2 {
			kafkaSrcProduce(t, in, &kgo.Record{Topic: "orders", Partition: p, Value: []byte(fmt.Sprintf(`{"p":%d,"i":%d}`, p, i))})
		}
	}
	recs := kafkaSrcWaitEvents(t, h, kafkaSrcBusTopic, 8)
	ids := map[string]bool{}
	for _, r := range recs {
		ids[decode(t, r).ID()] = true
	}
	if len(ids) != 8 {
		t.Errorf("%d distinct event ids among 8 events; want 8", len(ids))
	}
	a, b := members[0].partitions(), members[1].partitions()
	if len(a) == 0 || len(b) == 0 || len(a)+len(b) != 4 {
		t.Fatalf("member partitions %v and %v; want the 4 partitions split between both", a, b)
	}
	for _, p := range a {
		for _, q := range b {
			if p == q {
				t.Errorf("partition %d consumed by both members (%v, %v)", p, a, b)
			}
		}
	}
	kafkaSrcWaitCommitted(t, in, "shared", "orders", map[int32]int64{0: 2, 1: 2, 2: 2, 3: 2})
}

// TestKafkaSourceSASL: the user and password come from secrets; a wrong password delivers
// nothing and leaks into no log.
func TestKafkaSourceSASL(t *testing.T) {
	const password = "s3cr3t-Pa55w0rd"
	for _, tc := range []struct {
		mechanism string
		client    kgo.Opt
	}{
		{"PLAIN", kgo.SASL(plain.Auth{User: "user", Pass: password}.AsMechanism())},
		{"SCRAM-SHA-256", kgo.SASL(scram.Auth{User: "user", Pass: password}.AsSha256Mechanism())},
	} {
		t.Run(tc.mechanism, func(t *testing.T) {
			user := kafkaSrcCluster(t, 1, []string{"orders"}, kfake.EnableSASL(), kfake.Superuser(tc.mechanism, "user", password))
			in := kafkaSrcClient(t, user, tc.client)
			yaml := kafkaSrcYAML("example", fmt.Sprintf(`      url: %s
      topic: orders
      partition: "0"
      sasl:
        mechanism: %s
        userSecret:
          name: kafka-auth
          key: user
        passwordSecret:
          name: kafka-auth
          key: password
`, user.ListenAddrs()[0], tc.mechanism))
			const group = kafkaSrcBusTopic + ".example"

			t.Run("wrong password", func(t *testing.T) {
				const wrong = "wr0ng-Pa55w0rd"
				h := newHarness(t, []string{"kafka"}, withSecrets(mapSecrets(map[string]string{"kafka-auth/user": "user", "kafka-auth/password": wrong})))
				var logs syncBuffer
				h.env.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				stop := runSources(t, h.env, parseEventSources(t, yaml))
				kafkaSrcEventually(t, 10*time.Second, "a connection error in the log", func() bool {
					return strings.Contains(logs.String(), "cannot connect")
				})
				stop()
				if s := logs.String(); strings.Contains(s, wrong) || strings.Contains(s, password) {
					t.Errorf("the log holds a password:\n%s", s)
				}
				if got := kafkaSrcCommitted(t, in, group, "orders"); len(got) != 0 {
					t.Errorf("committed %v without authenticating", got)
				}
			})

			h := newHarness(t, []string{"kafka"}, withSecrets(mapSecrets(map[string]string{"kafka-auth/user": "user", "kafka-auth/password": password})))
			var logs syncBuffer
			h.env.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			runSources(t, h.env, parseEventSources(t, yaml))
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("source log:\n%s", logs.String())
				}
			})
			kafkaSrcWaitCommitted(t, in, group, "orders", map[int32]int64{0: 0})
			kafkaSrcProduce(t, in, &kgo.Record{Topic: "orders", Value: []byte("authenticated")})
			recs := kafkaSrcWaitEvents(t, h, kafkaSrcBusTopic, 1)
			if d := decode(t, recs[0]).Data(); strings.Contains(string(d), password) || !strings.Contains(string(d), `"YXV0aGVudGljYXRlZA=="`) {
				t.Errorf("data = %s", d)
			}
			kafkaSrcWaitCommitted(t, in, group, "orders", map[int32]int64{0: 1})
			if strings.Contains(logs.String(), password) {
				t.Errorf("the log holds the password:\n%s", logs.String())
			}
		})
	}

	t.Run("missing secret", func(t *testing.T) {
		h := newHarness(t, []string{"kafka"}, withSecrets(mapSecrets(map[string]string{"kafka-auth/user": "user"})))
		_, err := Run(context.Background(), h.env, parseEventSources(t, kafkaSrcYAML("example", `      url: 127.0.0.1:1
      topic: orders
      partition: "0"
      sasl:
        userSecret:
          name: kafka-auth
          key: user
        passwordSecret:
          name: kafka-auth
          key: password
`)))
		if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "sasl.passwordSecret") || !strings.Contains(err.Error(), "kafka-auth/password") {
			t.Errorf("Run = %v; want ErrNotFound naming sasl.passwordSecret and kafka-auth/password", err)
		}
	})
}

// TestKafkaSourceTLS: the CA, client certificate and key come from secrets; the broker requires
// a client certificate and its own certificate is verified.
func TestKafkaSourceTLS(t *testing.T) {
	newKey := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, kafkaSrcPEM("PRIVATE KEY", der)
	}
	sign := func(tmpl, parent *x509.Certificate, pub, priv any) (*x509.Certificate, []byte) {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, kafkaSrcPEM("CERTIFICATE", der)
	}
	now := time.Now()
	caKey, _ := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ca, caPEM := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	srvKey, srvKeyPEM := newKey()
	_, srvPEM := sign(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, &srvKey.PublicKey, caKey)
	cliKey, cliKeyPEM := newKey()
	_, cliPEM := sign(&x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "kevents"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, &cliKey.PublicKey, caKey)
	srvCert, err := tls.X509KeyPair(srvPEM, srvKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := tls.X509KeyPair(cliPEM, cliKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	user := kafkaSrcCluster(t, 1, []string{"orders"}, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}))
	in := kafkaSrcClient(t, user, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cliCert}, MinVersion: tls.VersionTLS12}))
	yaml := func(event, tlsFields string) string {
		return kafkaSrcYAML(event, fmt.Sprintf(`      url: %s
      topic: orders
      partition: "0"
      tls:
%s`, user.ListenAddrs()[0], tlsFields))
	}
	secretValues := mapSecrets(map[string]string{"kafka-tls/ca.crt": string(caPEM), "kafka-tls/tls.crt": string(cliPEM), "kafka-tls/tls.key": string(cliKeyPEM)})

	t.Run("unknown CA", func(t *testing.T) {
		h := newHarness(t, []string{"kafka"}, withSecrets(secretValues))
		var logs syncBuffer
		h.env.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		stop := runSources(t, h.env, parseEventSources(t, yaml("untrusted", `        clientCertSecret: {name: kafka-tls, key: tls.crt}
        clientKeySecret: {name: kafka-tls, key: tls.key}
`)))
		kafkaSrcEventually(t, 10*time.Second, "a certificate error in the log", func() bool {
			return strings.Contains(logs.String(), "certificate")
		})
		stop()
		if strings.Contains(logs.String(), "PRIVATE KEY") {
			t.Errorf("the log holds the key:\n%s", logs.String())
		}
	})

	h := newHarness(t, []string{"kafka"}, withSecrets(secretValues))
	runSources(t, h.env, parseEventSources(t, yaml("example", `        caCertSecret: {name: kafka-tls, key: ca.crt}
        clientCertSecret: {name: kafka-tls, key: tls.crt}
        clientKeySecret: {name: kafka-tls, key: tls.key}
`)))
	kafkaSrcWaitCommitted(t, in, kafkaSrcBusTopic+".example", "orders", map[int32]int64{0: 0})
	kafkaSrcProduce(t, in, &kgo.Record{Topic: "orders", Value: []byte("over tls")})
	recs := kafkaSrcWaitEvents(t, h, kafkaSrcBusTopic, 1)
	if e := decode(t, recs[0]); !strings.HasSuffix(e.ID(), ":orders:0:0") {
		t.Errorf("id = %q", e.ID())
	}
}

func kafkaSrcPEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// TestKafkaSourceConfig: Argo's sarama config is applied: consumer.offsets.initial -2 reads the
// records produced before the source started, clientID and the group instance id (with the
// member name appended) are what the cluster sees, and a setting without effect is named in a
// warning.
func TestKafkaSourceConfig(t *testing.T) {
	user := kafkaSrcCluster(t, 1, []string{"orders"})
	in := kafkaSrcClient(t, user)
	kafkaSrcProduce(t, in, &kgo.Record{Topic: "orders", Value: []byte(`{"n":1}`)}, &kgo.Record{Topic: "orders", Value: []byte(`{"n":2}`)})
	h := newHarness(t, []string{"kafka"})
	h.env.Member = "m1"
	logs := ghCaptureLog(h)
	runSources(t, h.env, parseEventSources(t, kafkaSrcYAML("example", fmt.Sprintf(`      url: %s
      topic: orders
      partition: "0"
      config: |
        clientID: shop-events
        consumer:
          offsets:
            initial: -2
            autoCommit: {interval: 200ms}
          group:
            instanceId: shop
            session: {timeout: 20s}
            heartbeat: {interval: 2s}
          maxWaitTime: 100ms
        producer:
          maxMessageBytes: 600
`, user.ListenAddrs()[0]))))
	kafkaSrcWaitEvents(t, h, kafkaSrcBusTopic, 2)
	const group = kafkaSrcBusTopic + ".example"
	kafkaSrcWaitCommitted(t, in, group, "orders", map[int32]int64{0: 2})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	described, err := kadm.NewClient(in).DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	members := described[group].Members
	if len(members) != 1 {
		t.Fatalf("group %s has %d members, want 1: %+v", group, len(members), described[group])
	}
	if m := members[0]; m.ClientID != "shop-events" || m.InstanceID == nil || *m.InstanceID != "shop-m1" {
		t.Errorf("member client id %q, instance id %v; want shop-events and shop-m1", m.ClientID, m.InstanceID)
	}
	waitLog(t, logs, "producer.maxMessageBytes (the kafka source only consumes)", 1)
}

// TestCheckKafkaSource: load-time errors name the field and value; fields kevents does not run
// are refused as not supported.
func TestCheckKafkaSource(t *testing.T) {
	for _, tc := range []struct {
		name, fields string
		want         []string
		notSupported bool
	}{
		{"ok with partition", "url: a:9092\ntopic: t\npartition: \"1\"", nil, false},
		{"ok with group", "url: a:9092, b:9092\ntopic: t\nconsumerGroup: {groupName: g, rebalanceStrategy: range}\nversion: 2.5.0", nil, false},
		{"missing url and topic", "partition: \"0\"", []string{`spec.kafka.example: url: ""`, "topic: missing"}, false},
		{"neither group nor partition", "url: a:9092\ntopic: t", []string{"consumerGroup or partition"}, false},
		{"bad partition", "url: a:9092\ntopic: t\npartition: one", []string{`partition: "one"`}, false},
		{"bad strategy", "url: a:9092\ntopic: t\nconsumerGroup: {groupName: g, rebalanceStrategy: fair}", []string{`consumerGroup.rebalanceStrategy: "fair"`}, false},
		{"bad limit", "url: a:9092\ntopic: t\npartition: \"0\"\nlimitEventsPerSecond: -1", []string{"limitEventsPerSecond: -1"}, false},
		{"bad version", "url: a:9092\ntopic: t\npartition: \"0\"\nversion: latest", []string{`version: "latest"`}, false},
		{"bad mechanism", "url: a:9092\ntopic: t\npartition: \"0\"\nsasl: {mechanism: MD5, userSecret: {name: s, key: u}, passwordSecret: {name: s, key: p}}", []string{`sasl.mechanism: "MD5"`}, false},
		{"sasl without password", "url: a:9092\ntopic: t\npartition: \"0\"\nsasl: {userSecret: {name: s, key: u}}", []string{"sasl.passwordSecret: missing"}, false},
		{"tls cert without key", "url: a:9092\ntopic: t\npartition: \"0\"\ntls: {clientCertSecret: {name: s, key: c}}", []string{"clientCertSecret and clientKeySecret"}, false},
		{"bad backoff", "url: a:9092\ntopic: t\npartition: \"0\"\nconnectionBackoff: {duration: soon}", []string{"connectionBackoff.duration: \"soon\""}, false},
		{"filter", "url: a:9092\ntopic: t\npartition: \"0\"\nfilter: {expression: \"true\"}", nil, false},
		{"config", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"ClientID: shop\\nConsumer: {Fetch: {Min: 1, Default: 1048576, Max: 0}, MaxWaitTime: 250ms, Offsets: {Initial: -2}}\\nproducer: {maxMessageBytes: 600}\"", nil, false},
		{"config unknown setting", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"consumer: {fetch: {minimum: 1}}\"", []string{"config: consumer.fetch.minimum: not a sarama setting", "consumer.fetch.min,"}, false},
		{"config bad values", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"consumer: {fetch: {min: 0}, maxWaitTime: soon, offsets: {initial: 3}}\\nclientID: 'a b'\"",
			[]string{"config: consumer.fetch.min: 0; expected an integer from 1", `config: consumer.maxWaitTime: "soon"; expected a duration`, "config: consumer.offsets.initial: 3; expected -1 (newest, the default) or -2 (oldest)", `config: clientID: "a b"; expected a client id`}, false},
		{"config heartbeat not below session", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"consumer: {group: {session: {timeout: 10s}, heartbeat: {interval: 10s}}}\"", []string{"config: consumer.group.heartbeat.interval: 10s; expected less than consumer.group.session.timeout (10s)"}, false},
		{"config tls", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"net: {tls: {enable: true}}\"", []string{"config: net.tls.enable: set tls on the event instead"}, false},
		{"config autocommit off", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"consumer: {offsets: {autoCommit: {enable: false}}}\"", []string{"config: consumer.offsets.autoCommit.enable: false; expected true"}, false},
		{"config twice", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"clientID: a\\nclientId: b\"", []string{"set twice"}, false},
		{"config not a mapping", "url: a:9092\ntopic: t\npartition: \"0\"\nconfig: \"[1, 2]\"", []string{"config: a []interface {}; expected a YAML mapping"}, false},
		{"schemaRegistry", "url: a:9092\ntopic: t\npartition: \"0\"\nschemaRegistry: {url: \"http://sr\"}", []string{`"schemaRegistry"`}, true},
		{"awsMskIamAuth", "url: a:9092\ntopic: t\nconsumerGroup: {groupName: g}\nawsMskIamAuth: {region: us-east-1}", []string{`"awsMskIamAuth"`}, true},
		{"oauth", "url: a:9092\ntopic: t\npartition: \"0\"\nsasl: {mechanism: OAUTHBEARER}", []string{`"OAUTHBEARER"`}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fields := "      " + strings.ReplaceAll(tc.fields, "\n", "\n      ")
			err := Check(parseEventSources(t, kafkaSrcYAML("example", fields))[0])
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check = nil, want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check = %v; want it to contain %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != tc.notSupported {
				t.Errorf("errors.Is(ErrNotSupported) = %v, want %v (%v)", got, tc.notSupported, err)
			}
		})
	}
}

// TestConformanceKafkaSource runs the suite on a topic of the user's cluster, which keeps its
// data and the group's offsets across a restart (a data directory).
func TestConformanceKafkaSource(t *testing.T) {
	runConformance(t, "kafka", func(t *testing.T) *conformanceOutside {
		port, dir := freePort(t), t.TempDir()
		opts := []kfake.Opt{kfake.Ports(port), kfake.DataDir(dir)}
		c := kafkaSrcCluster(t, 1, []string{"conf-in"}, opts...)
		cl := kafkaSrcClient(t, c)
		return &conformanceOutside{
			fields: fmt.Sprintf(`      url: %s
      topic: conf-in
      jsonBody: true
      metadata: {team: payments}
      consumerGroup: {groupName: conf-group, oldest: true}
      connectionBackoff: {duration: 100ms, factor: 2}
`, c.ListenAddrs()[0]),
			ready: func(*testing.T) {}, // the group starts at the oldest record
			send: func(t *testing.T, n int) {
				kafkaSrcProduce(t, cl, &kgo.Record{Topic: "conf-in", Value: []byte(fmt.Sprintf(`{"n": %d}`, n))})
			},
			marker: func(t *testing.T, data []byte) int {
				var d kafkaEventData
				var body json.RawMessage
				d.Body = &body
				if err := json.Unmarshal(data, &d); err != nil {
					t.Fatalf("event data %s: %v", data, err)
				}
				if d.Topic != "conf-in" || d.Partition != 0 || d.Timestamp == "" || d.Metadata["team"] != "payments" {
					t.Errorf("topic %q partition %d timestamp %q metadata %v; want conf-in, 0, the record's time and the event's metadata",
						d.Topic, d.Partition, d.Timestamp, d.Metadata)
				}
				return conformanceMarker(t, body)
			},
			sendBad: func(t *testing.T) { kafkaSrcProduce(t, cl, &kgo.Record{Topic: "conf-in", Value: []byte("not json {")}) },
			badLog:  "kafka source: record rejected and skipped",
			settled: func(t *testing.T) bool {
				end := kafkaEndOffset(cl, "conf-in")
				return end > 0 && kafkaSrcCommitted(t, cl, "conf-group", "conf-in")[0] == end
			},
			outage: func(t *testing.T) func(*testing.T) {
				c.Close()
				return func(t *testing.T) { c = kafkaSrcCluster(t, 1, []string{"conf-in"}, opts...) }
			},
		}
	})
}
