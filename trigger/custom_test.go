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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// customServer is a real gRPC server of the service triggers.Trigger. It does not use
// package customtrigger: it reads and writes the messages with protowire by the field numbers of
// trigger.proto, so that it checks the client's encoding rather than sharing it.
type customServer struct {
	addr string
	// The handlers; nil fetch returns the spec unchanged, nil execute returns "executed", nil
	// policy answers success.
	fetch   func(spec []byte) ([]byte, error)
	execute func(resource, payload []byte) ([]byte, error)
	policy  func(request []byte) (bool, string, error)

	mu    sync.Mutex
	calls []customCall
}

type customCall struct {
	method    string
	commandID string
	fields    map[protowire.Number][]byte // the bytes fields of the request
}

// rawCodec hands the server the bytes of each message. Its name is "proto", the content subtype
// of every gRPC client that speaks protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// decodeBytesFields reads a message of bytes fields only, as all requests of trigger.proto are.
func decodeBytesFields(b []byte) (map[protowire.Number][]byte, error) {
	out := map[protowire.Number][]byte{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			return nil, fmt.Errorf("field %d has wire type %d; trigger.proto's requests have bytes fields only", num, typ)
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		out[num] = append([]byte(nil), v...)
		b = b[n:]
	}
	return out, nil
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func startCustomServer(t *testing.T, s *customServer, opts ...grpc.ServerOption) *customServer {
	t.Helper()
	handler := func(method string, answer func(fields map[protowire.Number][]byte) ([]byte, error)) grpc.MethodDesc {
		return grpc.MethodDesc{MethodName: method, Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var raw []byte
			if err := dec(&raw); err != nil {
				return nil, err
			}
			fields, err := decodeBytesFields(raw)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "%s: %v", method, err)
			}
			c := customCall{method: method, fields: fields}
			if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(CustomCommandIDMetadata)) == 1 {
				c.commandID = md.Get(CustomCommandIDMetadata)[0]
			}
			s.mu.Lock()
			s.calls = append(s.calls, c)
			s.mu.Unlock()
			out, err := answer(fields)
			if err != nil {
				return nil, err
			}
			return &out, nil
		}}
	}
	desc := grpc.ServiceDesc{
		ServiceName: "triggers.Trigger",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			handler("FetchResource", func(f map[protowire.Number][]byte) ([]byte, error) {
				resource := f[1]
				if s.fetch != nil {
					var err error
					if resource, err = s.fetch(f[1]); err != nil {
						return nil, err
					}
				}
				return appendBytesField(nil, 1, resource), nil
			}),
			handler("Execute", func(f map[protowire.Number][]byte) ([]byte, error) {
				response := []byte("executed")
				if s.execute != nil {
					var err error
					if response, err = s.execute(f[1], f[2]); err != nil {
						return nil, err
					}
				}
				return appendBytesField(nil, 1, response), nil
			}),
			handler("ApplyPolicy", func(f map[protowire.Number][]byte) ([]byte, error) {
				ok, message := true, ""
				if s.policy != nil {
					var err error
					if ok, message, err = s.policy(f[1]); err != nil {
						return nil, err
					}
				}
				var b []byte
				if ok {
					b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), 1)
				}
				if message != "" {
					b = appendBytesField(b, 2, []byte(message))
				}
				return b, nil
			}),
		},
	}
	srv := grpc.NewServer(append(opts, grpc.ForceServerCodec(rawCodec{}))...)
	srv.RegisterService(&desc, struct{}{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	s.addr = l.Addr().String()
	return s
}

func (s *customServer) received() []customCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]customCall(nil), s.calls...)
}

func customExecutorForTest(t *testing.T, env Env) Executor {
	t.Helper()
	e, err := types.Lookup("custom")
	if err != nil {
		t.Fatal(err)
	}
	x, err := e.New(env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.(interface{ Close() error }).Close() })
	return x
}

func renderCustomForTest(t *testing.T, c *api.CustomTrigger, p Params) (json.RawMessage, error) {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "run", Custom: c}, Params: p})
	if err == nil && typ != "custom" {
		t.Fatalf("Render type = %q; want custom", typ)
	}
	return spec, err
}

func customCommand(id string, spec json.RawMessage) *Command {
	return &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "run", Type: "custom", Spec: spec}
}

// TestCustomRenderThenExecute follows Argo's flow against a real gRPC server: FetchResource
// gets the spec as Argo's YAML, the parameters resolved by the sensor are applied to the
// resource the server returned, Execute gets that resource and the payload, and ApplyPolicy
// gets Execute's response. Every call carries the command id.
func TestCustomRenderThenExecute(t *testing.T) {
	const fetched = `{"apiVersion":"tekton.dev/v1","kind":"PipelineRun","metadata":{"name":"build-","namespace":"default"}}`
	s := startCustomServer(t, &customServer{
		fetch: func([]byte) ([]byte, error) { return []byte(fetched), nil },
		execute: func(resource, payload []byte) ([]byte, error) {
			return []byte(`{"created":"build-42"}`), nil
		},
	})
	spec, err := renderCustomForTest(t, &api.CustomTrigger{
		ServerURL: s.addr,
		Spec:      map[string]string{"url": "https://example.com/pipeline.yaml", "namespace": "prod", "retries": "3", "dryRun": "true"},
		Parameters: []api.TriggerParameter{
			{Src: src("ns"), Dest: "metadata.namespace"},
			{Src: src("build"), Dest: "metadata.name", Operation: "append"},
			{Src: src("absent"), Dest: "metadata.labels.x"}, // resolves to nothing: left out
		},
		Payload: []api.TriggerParameter{{Src: src("commit"), Dest: "commit"}},
	}, fakeParams{values: map[string]string{"ns": "prod", "build": "42"}, payload: []byte(`{"commit":"abc123"}`)})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	x := customExecutorForTest(t, Env{})
	if err := x.Execute(context.Background(), customCommand("cmd-1", spec)); err != nil {
		t.Fatalf("Execute: %v", err)
	}

	calls := s.received()
	if len(calls) != 3 {
		t.Fatalf("%d calls; want FetchResource, Execute, ApplyPolicy", len(calls))
	}
	want := []struct {
		method string
		fields map[int]string // by field number
	}{
		// ghodss/yaml (Argo) sorts the keys and quotes the strings YAML would read as other types.
		{"FetchResource", map[int]string{1: "dryRun: \"true\"\nnamespace: prod\nretries: \"3\"\nurl: https://example.com/pipeline.yaml\n"}},
		{"Execute", map[int]string{
			1: `{"apiVersion":"tekton.dev/v1","kind":"PipelineRun","metadata":{"name":"build-42","namespace":"prod"}}`,
			2: `{"commit":"abc123"}`,
		}},
		{"ApplyPolicy", map[int]string{1: `{"created":"build-42"}`}},
	}
	for i, w := range want {
		c := calls[i]
		if c.method != w.method || c.commandID != "cmd-1" {
			t.Errorf("call %d: %s with command id %q; want %s with cmd-1", i, c.method, c.commandID, w.method)
		}
		got := map[int]string{}
		for n, v := range c.fields {
			got[int(n)] = string(v)
		}
		if fmt.Sprint(got) != fmt.Sprint(w.fields) {
			t.Errorf("%s request fields:\n got %v\nwant %v", w.method, got, w.fields)
		}
	}
}

// TestCustomNoParametersNoPayload: without parameters the resource goes back to the server as
// it came, whatever its format, and Execute gets no payload.
func TestCustomNoParametersNoPayload(t *testing.T) {
	s := startCustomServer(t, &customServer{fetch: func([]byte) ([]byte, error) { return []byte("kind: Job\n"), nil }})
	spec, err := renderCustomForTest(t, &api.CustomTrigger{ServerURL: s.addr, Spec: map[string]string{}}, fakeParams{})
	if err != nil {
		t.Fatal(err)
	}
	if err := customExecutorForTest(t, Env{}).Execute(context.Background(), customCommand("c", spec)); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	calls := s.received()
	if len(calls) != 3 || string(calls[1].fields[1]) != "kind: Job\n" || calls[1].fields[2] != nil {
		t.Errorf("Execute got %q; want the fetched resource and no payload", calls[1].fields)
	}
}

// TestCustomFailures: a failing server fails the command; only statuses that say the request is
// wrong are terminal, and the calls after a failed one are not made.
func TestCustomFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		server   *customServer
		params   bool
		terminal bool
		is       error
		want     string
		calls    int
	}{
		{name: "execute unavailable", server: &customServer{execute: func([]byte, []byte) ([]byte, error) {
			return nil, status.Error(codes.Unavailable, "tekton is down")
		}}, want: "Execute on ADDR: rpc error: code = Unavailable desc = tekton is down", calls: 2},
		{name: "execute plain error", server: &customServer{execute: func([]byte, []byte) ([]byte, error) {
			return nil, errors.New("pipeline not created")
		}}, want: "code = Unknown desc = pipeline not created", calls: 2},
		{name: "execute invalid argument", server: &customServer{execute: func([]byte, []byte) ([]byte, error) {
			return nil, status.Error(codes.InvalidArgument, "no such pipeline")
		}}, terminal: true, want: "code = InvalidArgument desc = no such pipeline", calls: 2},
		{name: "fetch not found", server: &customServer{fetch: func([]byte) ([]byte, error) {
			return nil, status.Error(codes.NotFound, "no pipeline.yaml")
		}}, terminal: true, want: "FetchResource on ADDR", calls: 1},
		{name: "policy says no", server: &customServer{policy: func([]byte) (bool, string, error) {
			return false, "PipelineRun build-42 failed", nil
		}}, is: ErrCustomPolicy, want: `"PipelineRun build-42 failed"`, calls: 3},
		{name: "resource not JSON with parameters", server: &customServer{fetch: func([]byte) ([]byte, error) {
			return []byte("kind: Job\n"), nil
		}}, params: true, terminal: true, want: "not a JSON object, which custom.parameters need", calls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startCustomServer(t, tc.server)
			c := &api.CustomTrigger{ServerURL: s.addr, Spec: map[string]string{"a": "b"}}
			if tc.params {
				c.Parameters = []api.TriggerParameter{{Src: src("ns"), Dest: "metadata.namespace"}}
			}
			spec, err := renderCustomForTest(t, c, fakeParams{values: map[string]string{"ns": "prod"}})
			if err != nil {
				t.Fatal(err)
			}
			err = customExecutorForTest(t, Env{}).Execute(context.Background(), customCommand("c", spec))
			want := strings.ReplaceAll(tc.want, "ADDR", s.addr)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Execute: %v; want an error with %q", err, want)
			}
			if errors.Is(err, ErrTerminal) != tc.terminal {
				t.Errorf("error %v: terminal %v; want %v", err, errors.Is(err, ErrTerminal), tc.terminal)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if n := len(s.received()); n != tc.calls {
				t.Errorf("%d calls; want %d", n, tc.calls)
			}
		})
	}

	// No server at all: Unavailable, to be retried.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	spec, err := renderCustomForTest(t, &api.CustomTrigger{ServerURL: addr, Spec: map[string]string{}}, fakeParams{})
	if err != nil {
		t.Fatal(err)
	}
	err = customExecutorForTest(t, Env{}).Execute(context.Background(), customCommand("c", spec))
	if status.Code(err) != codes.Unavailable || errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), addr) {
		t.Errorf("Execute with no server: %v; want a retryable Unavailable naming %s", err, addr)
	}
}

// customTestCert makes a self-signed certificate for the name trigger.kevents.test only, so
// that reaching the server by its address needs serverNameOverride.
func customTestCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "trigger.kevents.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"trigger.kevents.test"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestCustomTLS: secure: true trusts the CA of certSecret only, and serverNameOverride names the
// certificate the server must present.
func TestCustomTLS(t *testing.T) {
	cert, caPEM := customTestCert(t)
	s := startCustomServer(t, &customServer{}, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	values := map[string]string{
		secrets.EnvName("trigger-tls", "ca.crt"): caPEM,
		secrets.EnvName("not-pem", "ca.crt"):     "just-words",
	}
	x := customExecutorForTest(t, Env{Secrets: secrets.Resolver{LookupEnv: func(k string) (string, bool) { v, ok := values[k]; return v, ok }}})
	run := func(c api.CustomTrigger) error {
		t.Helper()
		c.ServerURL, c.Spec = s.addr, map[string]string{"a": "b"}
		spec, err := renderCustomForTest(t, &c, fakeParams{})
		if err != nil {
			t.Fatal(err)
		}
		return x.Execute(context.Background(), customCommand("c", spec))
	}
	ca := &api.SecretKeySelector{Name: "trigger-tls", Key: "ca.crt"}
	if err := run(api.CustomTrigger{Secure: true, CertSecret: ca, ServerNameOverride: "trigger.kevents.test"}); err != nil {
		t.Fatalf("Execute over TLS: %v", err)
	}
	if n := len(s.received()); n != 3 {
		t.Errorf("%d calls over TLS; want 3", n)
	}
	// The certificate does not name 127.0.0.1.
	if err := run(api.CustomTrigger{Secure: true, CertSecret: ca}); err == nil || status.Code(err) != codes.Unavailable {
		t.Errorf("Execute without serverNameOverride: %v; want Unavailable (certificate not for 127.0.0.1)", err)
	}
	// Plaintext against a TLS server fails too.
	if err := run(api.CustomTrigger{}); err == nil {
		t.Error("Execute in plaintext against a TLS server: no error")
	}
	err := run(api.CustomTrigger{Secure: true, CertSecret: &api.SecretKeySelector{Name: "not-pem", Key: "ca.crt"}, ServerNameOverride: "trigger.kevents.test"})
	if err == nil || !strings.Contains(err.Error(), "custom.certSecret: secret not-pem/ca.crt holds no PEM certificate") || strings.Contains(err.Error(), "just-words") {
		t.Errorf("Execute with a CA that is not PEM: %v", err)
	}
	err = run(api.CustomTrigger{Secure: true, CertSecret: &api.SecretKeySelector{Name: "absent", Key: "ca.crt"}, ServerNameOverride: "x"})
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "custom.certSecret") {
		t.Errorf("Execute with a missing CA Secret: %v; want secret not found naming custom.certSecret", err)
	}
	if n := len(s.received()); n != 3 {
		t.Errorf("%d calls in all; want only the 3 of the first execution", n)
	}
}

func TestCheckCustom(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    api.CustomTrigger
		want string // "" for no error
	}{
		{"minimal", api.CustomTrigger{ServerURL: "trigger.argo-events.svc:9000", Spec: map[string]string{}}, ""},
		{"secure", api.CustomTrigger{ServerURL: "dns:///trigger:9000", Spec: map[string]string{}, Secure: true,
			CertSecret: &api.SecretKeySelector{Name: "tls", Key: "ca.crt"}}, ""},
		{"no server", api.CustomTrigger{Spec: map[string]string{}}, "custom.serverURL: missing"},
		{"http server", api.CustomTrigger{ServerURL: "http://trigger:9000", Spec: map[string]string{}},
			`custom.serverURL: "http://trigger:9000"; expected a gRPC target such as trigger:9000`},
		{"no spec", api.CustomTrigger{ServerURL: "trigger:9000"}, "custom.spec: missing"},
		{"secure without CA", api.CustomTrigger{ServerURL: "trigger:9000", Spec: map[string]string{}, Secure: true}, "custom.certSecret: missing"},
		{"CA without key", api.CustomTrigger{ServerURL: "trigger:9000", Spec: map[string]string{}, Secure: true,
			CertSecret: &api.SecretKeySelector{Name: "tls"}}, "custom.certSecret: a secret name and key are required"},
		{"parameter without dest", api.CustomTrigger{ServerURL: "trigger:9000", Spec: map[string]string{},
			Parameters: []api.TriggerParameter{{Src: src("x")}}}, "custom.parameters[0].dest: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(&api.TriggerTemplate{Name: "run", Custom: &tc.c})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check: %v; want %q", err, tc.want)
			}
		})
	}
}
