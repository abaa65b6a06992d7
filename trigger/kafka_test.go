package trigger

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
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// kafkaCluster starts an in-process broker with the topic "out" (one partition).
func kafkaCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, "out")}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func kafkaExecutorForTest(t *testing.T, env Env) *kafkaExecutor {
	t.Helper()
	xs, err := newExecutors(env)
	if err != nil {
		t.Fatalf("newExecutors: %v", err)
	}
	x, ok := xs["kafka"].(*kafkaExecutor)
	if !ok {
		t.Fatalf("kafka executor is %T", xs["kafka"])
	}
	t.Cleanup(func() { _ = x.Close() })
	return x
}

// consumeKafka reads n records of topic from the start, as a user of the topic would.
func consumeKafka(t *testing.T, addrs []string, topic string, n int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d records of %s; want %d", len(out), topic, n)
		}
		for _, e := range fs.Errors() {
			t.Fatalf("consume %s: %v", e.Topic, e.Err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func kafkaHeaders(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func renderKafkaForTest(t *testing.T, k *api.KafkaTrigger, p Params) (KafkaRequest, json.RawMessage, error) {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", Kafka: k}, Params: p})
	if err != nil {
		return KafkaRequest{}, nil, err
	}
	if typ != "kafka" {
		t.Fatalf("Render type = %q; want kafka", typ)
	}
	var req KafkaRequest
	if err := json.Unmarshal(spec, &req); err != nil {
		t.Fatalf("rendered spec is not a KafkaRequest: %v: %s", err, spec)
	}
	return req, spec, nil
}

func kafkaCommand(t *testing.T, id string, spec json.RawMessage) *Command {
	t.Helper()
	return &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "t", Type: "kafka", Spec: spec}
}

func kafkaString(s string) *string { return &s }

var kafkaPayload = []api.TriggerParameter{{Src: src("order"), Dest: "order"}}

// TestRenderThenExecuteKafka: what the sensor renders is the record a consumer of the topic reads,
// with the trigger's parameters applied.
func TestRenderThenExecuteKafka(t *testing.T) {
	c := kafkaCluster(t)
	p := fakeParams{
		values:  map[string]string{"user": "bob", "topic": "out", "team": "payments"},
		payload: []byte(`{"order":7}`),
	}
	_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{
		URL:     " " + strings.Join(c.ListenAddrs(), " , ") + " ,",
		Topic:   "placeholder",
		Payload: kafkaPayload,
		Headers: map[string]string{"X-Static": "s", KafkaCommandIDHeader: "from-template"},
		Parameters: []api.TriggerParameter{
			{Src: src("topic"), Dest: "topic"},
			{Src: src("user"), Dest: "partitioningKey"},
			{Src: src("team"), Dest: "headers.X-Team"},
		},
	}, p)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	id := CommandID("ns", "s", "t", []EventRef{{Dependency: "d", ID: "e1", EventSource: "es", EventName: "ev"}})
	x := kafkaExecutorForTest(t, Env{})
	if err := x.Execute(context.Background(), kafkaCommand(t, id, spec)); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	r := consumeKafka(t, c.ListenAddrs(), "out", 1)[0]
	if string(r.Value) != `{"order":7}` || string(r.Key) != "bob" {
		t.Errorf("record value, key = %q, %q; want {\"order\":7}, bob", r.Value, r.Key)
	}
	want := map[string]string{"X-Static": "s", "X-Team": "payments", KafkaCommandIDHeader: id}
	got := kafkaHeaders(r)
	if len(r.Headers) != len(want) {
		t.Errorf("headers = %v; want %v", r.Headers, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q; want %q", k, got[k], v)
		}
	}
	if r.Attrs.CompressionType() != 0 {
		t.Errorf("compression = %d; want none, compress is not set", r.Attrs.CompressionType())
	}
}

func TestRenderKafka(t *testing.T) {
	p := fakeParams{values: map[string]string{"user": "alice", "acks": "2", "empty": ""}, payload: []byte(`{"n":1}`)}
	t.Run("defaults", func(t *testing.T) {
		k := &api.KafkaTrigger{URL: "a:9092,b:9092", Topic: "out", Payload: kafkaPayload, Partition: 3, FlushFrequency: 100, Version: "2.8.1"}
		req, _, err := renderKafkaForTest(t, k, p)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		if strings.Join(req.Brokers, " ") != "a:9092 b:9092" || req.Topic != "out" || string(req.Value) != `{"n":1}` {
			t.Errorf("rendered %+v", req)
		}
		if req.Key != nil || req.RequiredAcks != -1 || req.Compress || req.TLS != nil || req.SASL != nil {
			t.Errorf("rendered %+v; want no key, acks -1, no compression, no TLS, no SASL", req)
		}
	})
	t.Run("acks, compression and sasl", func(t *testing.T) {
		k := &api.KafkaTrigger{
			URL: "a:9092", Topic: "out", Payload: kafkaPayload, RequiredAcks: 1, Compress: true, PartitioningKey: kafkaString("k"),
			SASL: &api.SASLConfig{Mechanism: "scram-sha-512", UserSecret: &api.SecretKeySelector{Name: "kafka", Key: "user"}, PasswordSecret: &api.SecretKeySelector{Name: "kafka", Key: "pass"}},
		}
		req, _, err := renderKafkaForTest(t, k, p)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		if req.RequiredAcks != 1 || !req.Compress || req.Key == nil || *req.Key != "k" || req.SASL == nil || req.SASL.Mechanism != "SCRAM-SHA-512" {
			t.Errorf("rendered %+v", req)
		}
		if k.SASL.Mechanism != "scram-sha-512" {
			t.Errorf("Render changed the template's mechanism to %q", k.SASL.Mechanism)
		}
	})
	t.Run("empty mechanism is PLAIN", func(t *testing.T) {
		k := &api.KafkaTrigger{URL: "a:9092", Topic: "out", Payload: kafkaPayload,
			SASL: &api.SASLConfig{UserSecret: &api.SecretKeySelector{Name: "kafka", Key: "user"}, PasswordSecret: &api.SecretKeySelector{Name: "kafka", Key: "pass"}}}
		req, _, err := renderKafkaForTest(t, k, p)
		if err != nil || req.SASL.Mechanism != "PLAIN" {
			t.Errorf("Render = %+v, %v; want mechanism PLAIN", req.SASL, err)
		}
	})
	for _, tc := range []struct {
		name    string
		k       *api.KafkaTrigger
		p       Params
		wantErr string
	}{
		{name: "parameter that fails", k: &api.KafkaTrigger{URL: "a:9092", Topic: "out", Payload: kafkaPayload, Parameters: []api.TriggerParameter{{Src: src("fail"), Dest: "topic"}}}, p: p, wantErr: "kafka.parameters"},
		{name: "parameter of the wrong type", k: &api.KafkaTrigger{URL: "a:9092", Topic: "out", Payload: kafkaPayload, Parameters: []api.TriggerParameter{{Src: src("acks"), Dest: "requiredAcks"}}}, p: p, wantErr: "kafka.parameters: result is not a kafka trigger"},
		{name: "parameter emptying the topic", k: &api.KafkaTrigger{URL: "a:9092", Topic: "out", Payload: kafkaPayload, Parameters: []api.TriggerParameter{{Src: src("empty"), Dest: "topic"}}}, p: p, wantErr: "kafka.topic"},
		{name: "payload that fails", k: &api.KafkaTrigger{URL: "a:9092", Topic: "out", Payload: kafkaPayload}, p: fakeParams{payloadErr: errors.New("boom")}, wantErr: "kafka.payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := renderKafkaForTest(t, tc.k, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Render error = %v; want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestKafkaCompressAndLeaderAcks: compress is snappy, as in Argo; requiredAcks 1 works (it
// needs the idempotent producer off).
func TestKafkaCompressAndLeaderAcks(t *testing.T) {
	c := kafkaCluster(t)
	_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{
		URL: strings.Join(c.ListenAddrs(), ","), Topic: "out", Payload: kafkaPayload, Compress: true, RequiredAcks: 1,
	}, fakeParams{payload: []byte(strings.Repeat("compress me ", 50))})
	if err != nil {
		t.Fatal(err)
	}
	x := kafkaExecutorForTest(t, Env{})
	if err := x.Execute(context.Background(), kafkaCommand(t, "c1", spec)); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	r := consumeKafka(t, c.ListenAddrs(), "out", 1)[0]
	if r.Attrs.CompressionType() != 2 {
		t.Errorf("compression type = %d; want 2 (snappy)", r.Attrs.CompressionType())
	}
	if string(r.Value) != strings.Repeat("compress me ", 50) || r.Key != nil {
		t.Errorf("record value, key = %q, %q", r.Value, r.Key)
	}
	if h := kafkaHeaders(r); h[KafkaCommandIDHeader] != "c1" {
		t.Errorf("headers = %v; want the command id", h)
	}
}

// TestKafkaPartitioningKey: a key goes to the partition Argo's sarama producer picks (fnv-1a).
func TestKafkaPartitioningKey(t *testing.T) {
	const partitions = 8
	c := kafkaCluster(t, kfake.SeedTopics(partitions, "wide"))
	x := kafkaExecutorForTest(t, Env{})
	for _, key := range []string{"alice", "bob", "carol", "dave", "erin"} {
		_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{
			URL: strings.Join(c.ListenAddrs(), ","), Topic: "wide", Payload: kafkaPayload, PartitioningKey: kafkaString(key),
		}, fakeParams{payload: []byte(key)})
		if err != nil {
			t.Fatal(err)
		}
		if err := x.Execute(context.Background(), kafkaCommand(t, key, spec)); err != nil {
			t.Fatalf("Execute: %v", err)
		}
	}
	for _, r := range consumeKafka(t, c.ListenAddrs(), "wide", 5) {
		// sarama's hashPartitioner: int32(fnv1a(key)) % n, made positive.
		want := int32(kafkaFNV1a(r.Key)) % partitions
		if want < 0 {
			want = -want
		}
		if r.Partition != want {
			t.Errorf("key %q on partition %d; want %d, as sarama", r.Key, r.Partition, want)
		}
	}
}

// TestKafkaConcurrent: concurrent commands share one producer and all arrive.
func TestKafkaConcurrent(t *testing.T) {
	c := kafkaCluster(t)
	_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{URL: strings.Join(c.ListenAddrs(), ","), Topic: "out", Payload: kafkaPayload}, fakeParams{payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	x := kafkaExecutorForTest(t, Env{})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- x.Execute(context.Background(), kafkaCommand(t, fmt.Sprintf("c%d", i), spec))
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Execute: %v", err)
		}
	}
	ids := map[string]bool{}
	for _, r := range consumeKafka(t, c.ListenAddrs(), "out", n) {
		ids[kafkaHeaders(r)[KafkaCommandIDHeader]] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct command ids; want %d", len(ids), n)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.clients) != 1 {
		t.Errorf("%d producers; want 1 shared", len(x.clients))
	}
}

func kafkaSecrets(values map[string]string) secrets.Resolver {
	env := map[string]string{}
	for k, v := range values {
		name, key, _ := strings.Cut(k, "/")
		env[secrets.EnvName(name, key)] = v
	}
	return secrets.Resolver{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
}

func kafkaSASL(mechanism string) *api.SASLConfig {
	return &api.SASLConfig{
		Mechanism:      mechanism,
		UserSecret:     &api.SecretKeySelector{Name: "kafka-auth", Key: "user"},
		PasswordSecret: &api.SecretKeySelector{Name: "kafka-auth", Key: "password"},
	}
}

// TestKafkaSASL: user and password come from secrets, never appear in the spec or an error.
func TestKafkaSASL(t *testing.T) {
	const password = "s3cr3t-Pa55w0rd"
	for _, tc := range []struct {
		mechanism string
		consumer  kgo.Opt
	}{
		{"PLAIN", kgo.SASL(plain.Auth{User: "user", Pass: password}.AsMechanism())},
		{"SCRAM-SHA-256", kgo.SASL(scram.Auth{User: "user", Pass: password}.AsSha256Mechanism())},
	} {
		t.Run(tc.mechanism, func(t *testing.T) {
			c := kafkaCluster(t, kfake.EnableSASL(), kfake.Superuser(tc.mechanism, "user", password))
			_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{
				URL: strings.Join(c.ListenAddrs(), ","), Topic: "out", Payload: kafkaPayload, SASL: kafkaSASL(tc.mechanism),
			}, fakeParams{payload: []byte("authenticated")})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(spec), password) {
				t.Fatalf("the spec holds the password: %s", spec)
			}
			x := kafkaExecutorForTest(t, Env{Secrets: kafkaSecrets(map[string]string{"kafka-auth/user": "user", "kafka-auth/password": password})})
			if err := x.Execute(context.Background(), kafkaCommand(t, "c", spec)); err != nil {
				t.Fatalf("Execute: %v", err)
			}
			r := consumeKafka(t, c.ListenAddrs(), "out", 1, tc.consumer)[0]
			if string(r.Value) != "authenticated" {
				t.Errorf("value = %q", r.Value)
			}
		})
	}

	c := kafkaCluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "user", password))
	_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{
		URL: strings.Join(c.ListenAddrs(), ","), Topic: "out", Payload: kafkaPayload, SASL: kafkaSASL("PLAIN"),
	}, fakeParams{payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("wrong password", func(t *testing.T) {
		const wrong = "wr0ng-Pa55w0rd"
		x := kafkaExecutorForTest(t, Env{Secrets: kafkaSecrets(map[string]string{"kafka-auth/user": "user", "kafka-auth/password": wrong})})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := x.Execute(ctx, kafkaCommand(t, "c", spec))
		if err == nil {
			t.Fatal("Execute with a wrong password succeeded")
		}
		if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), password) {
			t.Errorf("error leaks a password: %v", err)
		}
		// kfake drops the connection (real brokers answer SASL_AUTHENTICATION_FAILED).
		if !strings.Contains(err.Error(), c.ListenAddrs()[0]) || !strings.Contains(err.Error(), "last connection error") {
			t.Errorf("error %q does not name the broker and the connection error", err)
		}
	})
	t.Run("missing secret", func(t *testing.T) {
		x := kafkaExecutorForTest(t, Env{Secrets: kafkaSecrets(map[string]string{"kafka-auth/user": "user"})})
		err := x.Execute(context.Background(), kafkaCommand(t, "c", spec))
		if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "kafka-auth/password") {
			t.Errorf("Execute = %v; want ErrNotFound naming kafka-auth/password", err)
		}
		// A command after the secret appears is not stuck with a failed client.
		x.secrets = kafkaSecrets(map[string]string{"kafka-auth/user": "user", "kafka-auth/password": password})
		if err := x.Execute(context.Background(), kafkaCommand(t, "c", spec)); err != nil {
			t.Errorf("Execute once the secret exists: %v", err)
		}
	})
}

// kafkaPKI is a CA with one server certificate for 127.0.0.1 and one client certificate, in PEM.
type kafkaPKI struct {
	caPEM, serverCertPEM, serverKeyPEM, clientCertPEM, clientKeyPEM []byte
}

func newKafkaPKI(t *testing.T) kafkaPKI {
	t.Helper()
	newKey := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sign := func(tmpl, parent *x509.Certificate, pub, priv any) (*x509.Certificate, []byte) {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	now := time.Now()
	caKey, _ := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	ca, caPEM := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey) // self-signed
	srvKey, srvKeyPEM := newKey()
	_, srvPEM := sign(&x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, &srvKey.PublicKey, caKey)
	cliKey, cliKeyPEM := newKey()
	_, cliPEM := sign(&x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "kevents"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, &cliKey.PublicKey, caKey)
	return kafkaPKI{caPEM: caPEM, serverCertPEM: srvPEM, serverKeyPEM: srvKeyPEM, clientCertPEM: cliPEM, clientKeyPEM: cliKeyPEM}
}

// TestKafkaTLS: the CA and the client certificate and key come from secrets (PEM); the broker
// requires a client certificate signed by the CA.
func TestKafkaTLS(t *testing.T) {
	pki := newKafkaPKI(t)
	serverCert, err := tls.X509KeyPair(pki.serverCertPEM, pki.serverKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caPEM)
	c := kafkaCluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}))
	ref := func(key string) *api.SecretKeySelector { return &api.SecretKeySelector{Name: "kafka-tls", Key: key} }
	secretValues := map[string]string{
		"kafka-tls/ca.crt": string(pki.caPEM), "kafka-tls/tls.crt": string(pki.clientCertPEM), "kafka-tls/tls.key": string(pki.clientKeyPEM),
	}
	render := func(t *testing.T, tlsCfg *api.TLSConfig) json.RawMessage {
		t.Helper()
		_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{
			URL: strings.Join(c.ListenAddrs(), ","), Topic: "out", Payload: kafkaPayload, TLS: tlsCfg,
		}, fakeParams{payload: []byte("over tls")})
		if err != nil {
			t.Fatal(err)
		}
		return spec
	}
	spec := render(t, &api.TLSConfig{CACertSecret: ref("ca.crt"), ClientCertSecret: ref("tls.crt"), ClientKeySecret: ref("tls.key")})
	if strings.Contains(string(spec), "PRIVATE KEY") {
		t.Fatalf("the spec holds the key: %s", spec)
	}
	x := kafkaExecutorForTest(t, Env{Secrets: kafkaSecrets(secretValues)})
	if err := x.Execute(context.Background(), kafkaCommand(t, "c", spec)); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	clientCert, err := tls.X509KeyPair(pki.clientCertPEM, pki.clientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	r := consumeKafka(t, c.ListenAddrs(), "out", 1, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12}))[0]
	if string(r.Value) != "over tls" {
		t.Errorf("value = %q", r.Value)
	}

	t.Run("broker certificate is verified", func(t *testing.T) {
		// No CA: the system roots do not know the test CA.
		spec := render(t, &api.TLSConfig{ClientCertSecret: ref("tls.crt"), ClientKeySecret: ref("tls.key")})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := kafkaExecutorForTest(t, Env{Secrets: kafkaSecrets(secretValues)}).Execute(ctx, kafkaCommand(t, "c", spec))
		if err == nil {
			t.Fatal("Execute trusted a broker certificate of an unknown CA")
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error %q does not say the certificate was refused", err)
		}
	})
	t.Run("bad PEM does not leak", func(t *testing.T) {
		bad := map[string]string{"kafka-tls/ca.crt": "not-a-pem-SECRETVALUE", "kafka-tls/tls.crt": string(pki.clientCertPEM), "kafka-tls/tls.key": "garbage-SECRETVALUE"}
		x := kafkaExecutorForTest(t, Env{Secrets: kafkaSecrets(bad)})
		for _, cfg := range []*api.TLSConfig{
			{CACertSecret: ref("ca.crt")},
			{ClientCertSecret: ref("tls.crt"), ClientKeySecret: ref("tls.key")},
		} {
			err := x.Execute(context.Background(), kafkaCommand(t, "c", render(t, cfg)))
			if err == nil || strings.Contains(err.Error(), "SECRETVALUE") || !strings.Contains(err.Error(), "kafka-tls/") {
				t.Errorf("Execute = %v; want an error naming the secret, not its value", err)
			}
		}
	})
}

// TestKafkaBrokerDown: a cluster that is gone gives an error naming the brokers, within the
// caller's deadline.
func TestKafkaBrokerDown(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "out"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := c.ListenAddrs()
	c.Close()
	_, spec, err := renderKafkaForTest(t, &api.KafkaTrigger{URL: strings.Join(addrs, ","), Topic: "out", Payload: kafkaPayload}, fakeParams{payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	x := kafkaExecutorForTest(t, Env{})
	x.opts = []kgo.Opt{kgo.RecordDeliveryTimeout(3 * time.Second)}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = x.Execute(ctx, kafkaCommand(t, "c", spec))
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Execute took %v after its deadline", elapsed)
	}
	if err == nil {
		t.Fatal("Execute succeeded against a closed cluster")
	}
	if !strings.Contains(err.Error(), addrs[0]) || !strings.Contains(err.Error(), "topic out") {
		t.Errorf("error %q does not name the topic and broker %s", err, addrs[0])
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v; want it to wrap context.DeadlineExceeded", err)
	}
}

func TestKafkaExecuteMalformed(t *testing.T) {
	err := kafkaExecutorForTest(t, Env{}).Execute(context.Background(), &Command{ID: "broken-1", Type: "kafka", Spec: json.RawMessage(`"nope"`)})
	if err == nil || !strings.Contains(err.Error(), "broken-1") {
		t.Errorf("Execute = %v; want an error naming the command", err)
	}
	err = kafkaExecutorForTest(t, Env{}).Execute(context.Background(), &Command{ID: "broken-2", Type: "kafka", Spec: json.RawMessage(`{"topic": "out"}`)})
	if err == nil || !strings.Contains(err.Error(), "broken-2") {
		t.Errorf("Execute without brokers = %v; want an error naming the command", err)
	}
}

func TestCheckKafka(t *testing.T) {
	base := func() *api.KafkaTrigger {
		return &api.KafkaTrigger{URL: "a:9092", Topic: "out", Payload: kafkaPayload}
	}
	with := func(f func(k *api.KafkaTrigger)) *api.KafkaTrigger { k := base(); f(k); return k }
	sec := &api.SecretKeySelector{Name: "s", Key: "k"}

	for name, k := range map[string]*api.KafkaTrigger{
		"minimal":             base(),
		"acks 1":              with(func(k *api.KafkaTrigger) { k.RequiredAcks = 1 }),
		"acks -1":             with(func(k *api.KafkaTrigger) { k.RequiredAcks = -1 }),
		"deprecated fields":   with(func(k *api.KafkaTrigger) { k.Partition = 2; k.FlushFrequency = 10; k.Version = "0.11.0.2" }),
		"sasl scram":          with(func(k *api.KafkaTrigger) { k.SASL = kafkaSASL("SCRAM-SHA-512") }),
		"tls enabled":         with(func(k *api.KafkaTrigger) { k.TLS = &api.TLSConfig{Enabled: true} }),
		"tls insecure":        with(func(k *api.KafkaTrigger) { k.TLS = &api.TLSConfig{InsecureSkipVerify: true} }),
		"tls ca":              with(func(k *api.KafkaTrigger) { k.TLS = &api.TLSConfig{CACertSecret: sec} }),
		"schemaRegistry null": with(func(k *api.KafkaTrigger) { k.SchemaRegistry = json.RawMessage(`null`) }),
	} {
		if err := Check(&api.TriggerTemplate{Name: "t", Kafka: k}); err != nil {
			t.Errorf("%s: Check = %v", name, err)
		}
	}

	for _, tc := range []struct {
		name, want   string
		notSupported bool
		k            *api.KafkaTrigger
	}{
		{name: "no url", want: "kafka.url", k: with(func(k *api.KafkaTrigger) { k.URL = " , " })},
		{name: "no topic", want: "kafka.topic", k: with(func(k *api.KafkaTrigger) { k.Topic = "" })},
		{name: "no payload", want: "kafka.payload", k: with(func(k *api.KafkaTrigger) { k.Payload = nil })},
		{name: "acks 2", want: "kafka.requiredAcks: 2", k: with(func(k *api.KafkaTrigger) { k.RequiredAcks = 2 })},
		{name: "version", want: `kafka.version: "latest"`, k: with(func(k *api.KafkaTrigger) { k.Version = "latest" })},
		{name: "mechanism", want: `kafka.sasl.mechanism: "SCRAM-SHA-1"`, k: with(func(k *api.KafkaTrigger) { k.SASL = kafkaSASL("SCRAM-SHA-1") })},
		{name: "oauth", want: "OAUTHBEARER", notSupported: true, k: with(func(k *api.KafkaTrigger) { k.SASL = kafkaSASL("OAUTHBEARER") })},
		{name: "sasl without password", want: "kafka.sasl", k: with(func(k *api.KafkaTrigger) { k.SASL = &api.SASLConfig{UserSecret: sec} })},
		{name: "empty tls", want: "kafka.tls", k: with(func(k *api.KafkaTrigger) { k.TLS = &api.TLSConfig{} })},
		{name: "client cert without key", want: "kafka.tls", k: with(func(k *api.KafkaTrigger) { k.TLS = &api.TLSConfig{Enabled: true, ClientCertSecret: sec} })},
		{name: "schemaRegistry", want: "schemaRegistry", notSupported: true, k: with(func(k *api.KafkaTrigger) { k.SchemaRegistry = json.RawMessage(`{"url": "http://sr"}`) })},
		{name: "secureHeaders", want: "secureHeaders", notSupported: true, k: with(func(k *api.KafkaTrigger) {
			k.SecureHeaders = []*api.SecureHeader{{Name: "Authorization", ValueFrom: &api.ValueFromSource{SecretKeyRef: sec}}}
		})},
	} {
		err := Check(&api.TriggerTemplate{Name: "t", Kafka: tc.k})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check = %v; want an error containing %q", tc.name, err, tc.want)
		}
		if err != nil && errors.Is(err, api.ErrNotSupported) != tc.notSupported {
			t.Errorf("%s: Check = %v; ErrNotSupported = %v, want %v", tc.name, err, !tc.notSupported, tc.notSupported)
		}
	}
}
