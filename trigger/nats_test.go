package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// startNATS runs an in-process NATS server on a free port (or opts.Port) until the test ends.
func startNATS(t *testing.T, opts server.Options) *server.Server {
	t.Helper()
	opts.Host = "127.0.0.1"
	if opts.Port == 0 {
		opts.Port = -1
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(&opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// natsSubscribe listens on subject as a user of the trigger would, with nats.go.
func natsSubscribe(t *testing.T, s *server.Server, subject string, opts ...nats.Option) *nats.Subscription {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("subscriber connect: %v", err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

func nextNATSMsg(t *testing.T, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no message on %s: %v", sub.Subject, err)
	}
	return m
}

func natsExecutorForTest(t *testing.T, env Env) *natsExecutor {
	t.Helper()
	xs, err := newExecutors(env)
	if err != nil {
		t.Fatalf("newExecutors: %v", err)
	}
	x, ok := xs["nats"].(*natsExecutor)
	if !ok {
		t.Fatalf("nats executor is %T", xs["nats"])
	}
	t.Cleanup(func() { _ = x.Close() })
	return x
}

func natsCommand(t *testing.T, id string, req NATSRequest) *Command {
	t.Helper()
	spec, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "t", Type: "nats", Spec: spec}
}

func renderNATSForTest(t *testing.T, n *api.NATSTrigger, p Params) (json.RawMessage, NATSRequest, error) {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", NATS: n}, Params: p})
	if err != nil {
		return nil, NATSRequest{}, err
	}
	if typ != "nats" {
		t.Fatalf("Render type = %q; want nats", typ)
	}
	var req NATSRequest
	if err := json.Unmarshal(spec, &req); err != nil {
		t.Fatalf("rendered spec is not a NATSRequest: %v: %s", err, spec)
	}
	return spec, req, nil
}

func natsPayload() []api.TriggerParameter {
	return []api.TriggerParameter{{Src: src("order"), Dest: "order"}}
}

// natsSecrets is a secrets.Resolver over a fixed environment.
func natsSecrets(env map[string]string) secrets.Resolver {
	return secrets.Resolver{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
}

// natsLogBuffer is a log sink that nats.go's callback goroutines may write while a test reads.
type natsLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *natsLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *natsLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRenderThenExecuteNATS: what the sensor renders is what a subscriber receives, with the
// command id in the Nats-Msg-Id header.
func TestRenderThenExecuteNATS(t *testing.T) {
	s := startNATS(t, server.Options{})
	sub := natsSubscribe(t, s, "orders.>")
	p := fakeParams{payload: []byte(`{"order":7}`)}
	_, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", NATS: &api.NATSTrigger{
		URL: s.ClientURL(), Subject: "orders.created", Payload: natsPayload(),
	}}, Params: p})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	id := CommandID("ns", "s", "t", []EventRef{{Dependency: "d", ID: "e1", EventSource: "es", EventName: "ev"}})
	cmd := &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "t", Type: "nats", Spec: spec}
	x := natsExecutorForTest(t, Env{})
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	m := nextNATSMsg(t, sub)
	if m.Subject != "orders.created" || string(m.Data) != `{"order":7}` {
		t.Errorf("received %s %q; want orders.created {\"order\":7}", m.Subject, m.Data)
	}
	if v := m.Header.Values("Nats-Msg-Id"); len(v) != 1 || v[0] != id {
		t.Errorf("Nats-Msg-Id = %q; want [%q]", v, id)
	}
	if len(m.Header) != 1 {
		t.Errorf("headers = %v; want only Nats-Msg-Id", m.Header)
	}
}

// TestNATSPublishIsFlushed: Execute returns after the server has the message, so a subscriber
// that only drains what is already there sees it.
func TestNATSPublishIsFlushed(t *testing.T) {
	s := startNATS(t, server.Options{})
	sub := natsSubscribe(t, s, "flushed")
	x := natsExecutorForTest(t, Env{})
	for i := range 50 {
		if err := x.Execute(context.Background(), natsCommand(t, fmt.Sprint("c", i), NATSRequest{URL: s.ClientURL(), Subject: "flushed", Data: []byte("x")})); err != nil {
			t.Fatalf("Execute %d: %v", i, err)
		}
	}
	// The server routes to the subscriber asynchronously; give it a moment, not a publish.
	deadline := time.Now().Add(5 * time.Second)
	for n, _, _ := sub.Pending(); n < 50 && time.Now().Before(deadline); n, _, _ = sub.Pending() {
		time.Sleep(10 * time.Millisecond)
	}
	if n, _, _ := sub.Pending(); n != 50 {
		t.Errorf("subscriber has %d messages; want 50", n)
	}
	if v, err := s.Varz(nil); err != nil || v.InMsgs != 50 {
		t.Errorf("server received %+v messages (%v); want 50", v.InMsgs, err)
	}
}

// TestNATSJetStreamDedupe: a redelivered command (same id) is stored once by a JetStream
// stream, thanks to the Nats-Msg-Id header.
func TestNATSJetStreamDedupe(t *testing.T) {
	s := startNATS(t, server.Options{JetStream: true, StoreDir: t.TempDir()})
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.*"}}); err != nil {
		t.Fatalf("AddStream: %v", err)
	}
	x := natsExecutorForTest(t, Env{})
	for _, id := range []string{"cmd-1", "cmd-1", "cmd-2", "cmd-1"} {
		if err := x.Execute(context.Background(), natsCommand(t, id, NATSRequest{URL: s.ClientURL(), Subject: "orders.created", Data: []byte(id)})); err != nil {
			t.Fatalf("Execute %s: %v", id, err)
		}
	}
	// The stream stores core publishes asynchronously but in order: once a JetStream publish
	// after them is acknowledged, they have been stored or dropped.
	if _, err := js.Publish("orders.sentinel", []byte("s")); err != nil {
		t.Fatal(err)
	}
	info, err := js.StreamInfo("ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("stream holds %d messages; want 3 (cmd-1 once, cmd-2 once and the sentinel)", info.State.Msgs)
	}
}

func TestRenderNATSParameters(t *testing.T) {
	s := startNATS(t, server.Options{})
	sub := natsSubscribe(t, s, "billing.invoices")
	p := fakeParams{
		values:  map[string]string{"subject": "billing.invoices", "url": s.ClientURL()},
		payload: []byte(`{"invoice":1}`),
	}
	n := &api.NATSTrigger{
		URL: "nats://placeholder:4222", Subject: "placeholder", Payload: natsPayload(),
		Parameters: []api.TriggerParameter{{Src: src("url"), Dest: "url"}, {Src: src("subject"), Dest: "subject"}},
	}
	if err := Check(&api.TriggerTemplate{Name: "t", NATS: n}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	spec, req, err := renderNATSForTest(t, n, p)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if req.URL != s.ClientURL() || req.Subject != "billing.invoices" || string(req.Data) != `{"invoice":1}` {
		t.Errorf("rendered %+v; want the url and subject from the parameters", req)
	}
	if n.URL != "nats://placeholder:4222" || n.Subject != "placeholder" {
		t.Errorf("Render changed the template: %+v", n)
	}
	if err := natsExecutorForTest(t, Env{}).Execute(context.Background(), &Command{ID: "c1", Type: "nats", Spec: spec}); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if m := nextNATSMsg(t, sub); string(m.Data) != `{"invoice":1}` {
		t.Errorf("received %q", m.Data)
	}
}

func TestRenderNATSErrors(t *testing.T) {
	p := fakeParams{values: map[string]string{"wild": "orders.*", "bad": "http://x"}, payload: []byte(`{}`)}
	ok := func() *api.NATSTrigger {
		return &api.NATSTrigger{URL: "nats://localhost:4222", Subject: "a.b", Payload: natsPayload()}
	}
	for _, tc := range []struct {
		name    string
		mod     func(*api.NATSTrigger)
		p       Params
		wantErr string
	}{
		{name: "parameter that fails", mod: func(n *api.NATSTrigger) { n.Parameters = []api.TriggerParameter{{Src: src("fail"), Dest: "subject"}} }, p: p, wantErr: "nats.parameters"},
		{name: "parameter setting a wildcard subject", mod: func(n *api.NATSTrigger) { n.Parameters = []api.TriggerParameter{{Src: src("wild"), Dest: "subject"}} }, p: p, wantErr: "nats.subject"},
		{name: "parameter setting a bad url", mod: func(n *api.NATSTrigger) { n.Parameters = []api.TriggerParameter{{Src: src("bad"), Dest: "url"}} }, p: p, wantErr: "nats.url"},
		{name: "payload that fails", mod: func(*api.NATSTrigger) {}, p: fakeParams{payloadErr: errors.New("boom")}, wantErr: "nats.payload"},
		{name: "no payload", mod: func(n *api.NATSTrigger) { n.Payload = nil }, p: p, wantErr: "nats.payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := ok()
			tc.mod(n)
			_, _, err := renderNATSForTest(t, n, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Render error = %v; want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestNATSToken: the token comes from secrets.Resolver at execution; it is in neither the
// rendered spec, nor errors, nor logs.
func TestNATSToken(t *testing.T) {
	const token = "tok-9f8e7d6c5b4a"
	s := startNATS(t, server.Options{Authorization: token})
	sub := natsSubscribe(t, s, "secure.events", nats.Token(token))
	auth := &api.NATSAuth{Token: &api.SecretKeySelector{Name: "nats-auth", Key: "token"}}
	n := &api.NATSTrigger{URL: s.ClientURL(), Subject: "secure.events", Payload: natsPayload(), Auth: auth}
	if err := Check(&api.TriggerTemplate{Name: "t", NATS: n}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	spec, _, err := renderNATSForTest(t, n, fakeParams{payload: []byte(`"hello"`)})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if strings.Contains(string(spec), token) {
		t.Fatalf("the rendered spec holds the token: %s", spec)
	}
	var logs natsLogBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	good := natsSecrets(map[string]string{secrets.EnvName("nats-auth", "token"): token})
	x := natsExecutorForTest(t, Env{Secrets: good, Logger: logger})
	if err := x.Execute(context.Background(), &Command{ID: "c1", Type: "nats", Spec: spec}); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if m := nextNATSMsg(t, sub); string(m.Data) != `"hello"` || m.Header.Get("Nats-Msg-Id") != "c1" {
		t.Errorf("received %q with id %q", m.Data, m.Header.Get("Nats-Msg-Id"))
	}

	const wrong = "tok-wrong-0000"
	bad := natsSecrets(map[string]string{secrets.EnvName("nats-auth", "token"): wrong})
	err = natsExecutorForTest(t, Env{Secrets: bad, Logger: logger}).Execute(context.Background(), &Command{ID: "c2", Type: "nats", Spec: spec})
	if err == nil || !strings.Contains(err.Error(), s.ClientURL()) {
		t.Errorf("wrong token: Execute = %v; want an error naming %s", err, s.ClientURL())
	}
	missing := natsExecutorForTest(t, Env{Secrets: natsSecrets(nil), Logger: logger})
	err2 := missing.Execute(context.Background(), &Command{ID: "c3", Type: "nats", Spec: spec})
	if !errors.Is(err2, secrets.ErrNotFound) || !strings.Contains(err2.Error(), "nats-auth/token") {
		t.Errorf("missing secret: Execute = %v; want ErrNotFound naming nats-auth/token", err2)
	}
	for _, leak := range []string{token, wrong} {
		for what, text := range map[string]string{"error": fmt.Sprint(err), "missing-secret error": fmt.Sprint(err2), "log": logs.String()} {
			if strings.Contains(text, leak) {
				t.Errorf("the %s holds a token: %s", what, text)
			}
		}
	}
}

// TestNATSBasicAuth: user and password come from secrets; a URL with user info is redacted in
// errors.
func TestNATSBasicAuth(t *testing.T) {
	const user, password = "kevents", "pw-1a2b3c4d"
	s := startNATS(t, server.Options{Username: user, Password: password})
	sub := natsSubscribe(t, s, "basic", nats.UserInfo(user, password))
	res := natsSecrets(map[string]string{
		secrets.EnvName("nats-basic", "user"):     user,
		secrets.EnvName("nats-basic", "password"): password,
	})
	x := natsExecutorForTest(t, Env{Secrets: res})
	auth := &api.NATSAuth{Basic: &api.BasicAuth{
		Username: &api.SecretKeySelector{Name: "nats-basic", Key: "user"},
		Password: &api.SecretKeySelector{Name: "nats-basic", Key: "password"},
	}}
	spec, _, err := renderNATSForTest(t, &api.NATSTrigger{URL: s.ClientURL(), Subject: "basic", Payload: natsPayload(), Auth: auth}, fakeParams{payload: []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(spec), password) {
		t.Fatalf("the rendered spec holds the password: %s", spec)
	}
	if err := x.Execute(context.Background(), &Command{ID: "c1", Type: "nats", Spec: spec}); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if m := nextNATSMsg(t, sub); string(m.Data) != "b" {
		t.Errorf("received %q", m.Data)
	}

	// Credentials in the URL itself never show in an error.
	const urlPassword = "in-url-secret"
	u := strings.Replace(s.ClientURL(), "nats://", "nats://"+user+":"+urlPassword+"@", 1)
	err = natsExecutorForTest(t, Env{}).Execute(context.Background(), natsCommand(t, "c2", NATSRequest{URL: u, Subject: "basic", Data: []byte("b")}))
	if err == nil || strings.Contains(err.Error(), urlPassword) || strings.Contains(err.Error(), user+":") {
		t.Errorf("URL with a wrong password: Execute = %v; want an error without the user info", err)
	}
	host := strings.TrimPrefix(s.ClientURL(), "nats://")
	if err == nil || !strings.Contains(err.Error(), host) {
		t.Errorf("URL with a wrong password: Execute = %v; want an error naming %s", err, host)
	}
}

// TestNATSServerDown: a server that goes away gives an error naming the URL, within the
// caller's deadline, and a server that comes back on the same address is used again.
func TestNATSServerDown(t *testing.T) {
	s := startNATS(t, server.Options{})
	url := s.ClientURL()
	port := s.Addr().(*net.TCPAddr).Port
	x := natsExecutorForTest(t, Env{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	cmd := natsCommand(t, "c", NATSRequest{URL: url, Subject: "down", Data: []byte("x")})
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	s.Shutdown()
	s.WaitForShutdown()

	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		err := x.Execute(ctx, cmd)
		elapsed := time.Since(start)
		cancel()
		t.Logf("attempt %d with the server down: %v after %v", i, err, elapsed.Round(time.Millisecond))
		if err == nil || !strings.Contains(err.Error(), url) {
			t.Errorf("attempt %d with the server down: Execute = %v; want an error naming %s", i, err, url)
		}
		if elapsed > 2500*time.Millisecond {
			t.Errorf("attempt %d took %v; want it within its 2s deadline", i, elapsed)
		}
	}

	s2 := startNATS(t, server.Options{Port: port})
	sub := natsSubscribe(t, s2, "down")
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := x.Execute(ctx, cmd)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server is back but Execute still fails: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	nextNATSMsg(t, sub)
}

// TestNATSNeverUp: nothing listens at the URL.
func TestNATSNeverUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close()
	x := natsExecutorForTest(t, Env{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start0 := time.Now()
	err = x.Execute(ctx, natsCommand(t, "c", NATSRequest{URL: url, Subject: "x", Data: []byte("x")}))
	t.Logf("nothing listening: %v after %v", err, time.Since(start0).Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), url) {
		t.Errorf("Execute = %v; want an error naming %s", err, url)
	}

	// A caller's deadline shorter than the dial is honoured and wrapped.
	blackhole := "nats://10.255.255.1:4222" // not routed: the dial hangs
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	start := time.Now()
	err = x.Execute(ctx2, natsCommand(t, "c", NATSRequest{URL: blackhole, Subject: "x", Data: []byte("x")}))
	t.Logf("unroutable address: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), blackhole) {
		t.Errorf("Execute = %v; want an error naming %s", err, blackhole)
	}
	if !errors.Is(err, context.DeadlineExceeded) && time.Since(start) > time.Second {
		t.Errorf("Execute = %v after %v; want the caller's deadline", err, time.Since(start))
	}
}

// TestNATSConnectionShared: concurrent commands share one connection per (URL, auth); a closed
// connection is replaced.
func TestNATSConnectionShared(t *testing.T) {
	s := startNATS(t, server.Options{})
	sub := natsSubscribe(t, s, "shared.*")
	x := natsExecutorForTest(t, Env{})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- x.Execute(context.Background(), natsCommand(t, fmt.Sprint("c", i), NATSRequest{URL: s.ClientURL(), Subject: fmt.Sprint("shared.", i%4), Data: []byte("x")}))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Execute: %v", err)
		}
	}
	for range 40 {
		nextNATSMsg(t, sub)
	}
	if n := s.NumClients(); n != 2 {
		t.Errorf("server has %d clients; want 2 (the subscriber and one executor connection)", n)
	}

	// Another auth is another connection, even to the same URL.
	tokenAuth := &api.NATSAuth{Token: &api.SecretKeySelector{Name: "n", Key: "t"}}
	x.secrets = natsSecrets(map[string]string{secrets.EnvName("n", "t"): "any"}) // the server has no auth: ignored
	if err := x.Execute(context.Background(), natsCommand(t, "tok", NATSRequest{URL: s.ClientURL(), Subject: "shared.t", Data: []byte("x"), Auth: tokenAuth})); err != nil {
		t.Fatalf("Execute with a token: %v", err)
	}
	nextNATSMsg(t, sub)
	if n := s.NumClients(); n != 3 {
		t.Errorf("server has %d clients; want 3", n)
	}

	// A connection closed for good is replaced on the next command.
	x.mu.Lock()
	for _, c := range x.conns {
		c.nc.Close()
	}
	x.mu.Unlock()
	if err := x.Execute(context.Background(), natsCommand(t, "after", NATSRequest{URL: s.ClientURL(), Subject: "shared.x", Data: []byte("x")})); err != nil {
		t.Fatalf("Execute after the connection closed: %v", err)
	}
	if m := nextNATSMsg(t, sub); m.Header.Get("Nats-Msg-Id") != "after" {
		t.Errorf("received %q", m.Header.Get("Nats-Msg-Id"))
	}
}

func TestNATSExecuteErrors(t *testing.T) {
	x := natsExecutorForTest(t, Env{})
	err := x.Execute(context.Background(), &Command{ID: "broken-1", Type: "nats", Spec: json.RawMessage(`"not a request"`)})
	if err == nil || !strings.Contains(err.Error(), "broken-1") {
		t.Errorf("malformed spec: error = %v; want one naming the command", err)
	}
	err = x.Execute(context.Background(), natsCommand(t, "c", NATSRequest{URL: "nats://127.0.0.1:1", Subject: "a b\r\nPUB x 1", Data: []byte("x")}))
	if err == nil || !strings.Contains(err.Error(), "nats.subject") {
		t.Errorf("bad subject: error = %v; want one naming nats.subject", err)
	}
	auth := &api.NATSAuth{NKey: &api.SecretKeySelector{Name: "n", Key: "seed"}}
	err = x.Execute(context.Background(), natsCommand(t, "c", NATSRequest{URL: "nats://127.0.0.1:1", Subject: "a", Auth: auth}))
	if !errors.Is(err, api.ErrNotSupported) {
		t.Errorf("nkey auth: error = %v; want ErrNotSupported", err)
	}
}

func TestCheckNATS(t *testing.T) {
	sel := func(name, key string) *api.SecretKeySelector { return &api.SecretKeySelector{Name: name, Key: key} }
	ok := func() *api.NATSTrigger {
		return &api.NATSTrigger{URL: "nats://nats.svc:4222", Subject: "orders.created", Payload: natsPayload()}
	}
	for name, n := range map[string]*api.NATSTrigger{
		"minimal":             ok(),
		"host:port":           {URL: "nats.svc:4222", Subject: "a", Payload: natsPayload()},
		"several servers":     {URL: "nats://a:4222, nats://b:4222", Subject: "a", Payload: natsPayload()},
		"token":               {URL: "nats://a:4222", Subject: "a", Payload: natsPayload(), Auth: &api.NATSAuth{Token: sel("s", "token")}},
		"basic":               {URL: "nats://a:4222", Subject: "a", Payload: natsPayload(), Auth: &api.NATSAuth{Basic: &api.BasicAuth{Username: sel("s", "u"), Password: sel("s", "p")}}},
		"url from parameter":  {Subject: "a", Payload: natsPayload(), Parameters: []api.TriggerParameter{{Src: src("u"), Dest: "url"}}},
		"subject from param":  {URL: "nats://a:4222", Payload: natsPayload(), Parameters: []api.TriggerParameter{{Src: src("s"), Dest: "subject"}}},
		"payload from params": {URL: "nats://a:4222", Subject: "a", Parameters: []api.TriggerParameter{{Src: src("p"), Dest: "payload"}}},
	} {
		if err := Check(&api.TriggerTemplate{Name: "t", NATS: n}); err != nil {
			t.Errorf("%s: Check = %v", name, err)
		}
	}
	for _, tc := range []struct {
		name, want  string
		unsupported bool
		mod         func(*api.NATSTrigger)
	}{
		{name: "no url", want: "nats.url", mod: func(n *api.NATSTrigger) { n.URL = "" }},
		{name: "http url", want: `nats.url: "http://nats.svc"`, mod: func(n *api.NATSTrigger) { n.URL = "http://nats.svc" }},
		{name: "url with no host", want: "nats.url", mod: func(n *api.NATSTrigger) { n.URL = "nats://" }},
		{name: "second server bad", want: "nats.url", mod: func(n *api.NATSTrigger) { n.URL = "nats://a:4222,https://b" }},
		{name: "url user info redacted", want: `"nats://redacted@:4222"`, mod: func(n *api.NATSTrigger) { n.URL = "nats://user:s3cret@:4222" }},
		{name: "no subject", want: "nats.subject", mod: func(n *api.NATSTrigger) { n.Subject = "" }},
		{name: "wildcard subject", want: `nats.subject: "orders.*"`, mod: func(n *api.NATSTrigger) { n.Subject = "orders.*" }},
		{name: "full wildcard subject", want: "nats.subject", mod: func(n *api.NATSTrigger) { n.Subject = "orders.>" }},
		{name: "empty token", want: "nats.subject", mod: func(n *api.NATSTrigger) { n.Subject = "orders..created" }},
		{name: "space in subject", want: "nats.subject", mod: func(n *api.NATSTrigger) { n.Subject = "orders created" }},
		{name: "no payload", want: "nats.payload", mod: func(n *api.NATSTrigger) { n.Payload = nil }},
		{name: "tls", want: "tls", unsupported: true, mod: func(n *api.NATSTrigger) { n.TLS = &api.TLSConfig{InsecureSkipVerify: true} }},
		{name: "nkey", want: "auth.nkey", unsupported: true, mod: func(n *api.NATSTrigger) { n.Auth = &api.NATSAuth{NKey: sel("s", "seed")} }},
		{name: "credential", want: "auth.credential", unsupported: true, mod: func(n *api.NATSTrigger) { n.Auth = &api.NATSAuth{Credential: sel("s", "creds")} }},
		{name: "basic without password", want: "nats.auth.basic.password", mod: func(n *api.NATSTrigger) {
			n.Auth = &api.NATSAuth{Basic: &api.BasicAuth{Username: sel("s", "u")}}
		}},
		{name: "token without key", want: "nats.auth.token", mod: func(n *api.NATSTrigger) { n.Auth = &api.NATSAuth{Token: sel("s", "")} }},
		{name: "two auths", want: "nats.auth", mod: func(n *api.NATSTrigger) {
			n.Auth = &api.NATSAuth{Token: sel("s", "t"), Basic: &api.BasicAuth{Username: sel("s", "u"), Password: sel("s", "p")}}
		}},
	} {
		n := ok()
		tc.mod(n)
		err := Check(&api.TriggerTemplate{Name: "t", NATS: n})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check = %v; want an error containing %q", tc.name, err, tc.want)
		}
		if got := errors.Is(err, api.ErrNotSupported); got != tc.unsupported {
			t.Errorf("%s: Check = %v; ErrNotSupported %v, want %v", tc.name, err, got, tc.unsupported)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: Check error holds the URL's password: %v", tc.name, err)
		}
	}
	if e, err := types.Lookup("nats"); err != nil || e.Spec.Summary == "" {
		t.Errorf("nats is not registered with a summary: %v", err)
	}
}
