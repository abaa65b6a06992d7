package source

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kevents/kevents/api"
)

// genericTestServer is a real gRPC server of Argo's generic.Eventing service. It does not use
// package genericsource: it reads and writes the messages with protowire by the field numbers
// of generic.proto, so that it checks the client's encoding rather than sharing it. Like a real
// generic server it streams every event to every connected client.
type genericTestServer struct {
	t    *testing.T
	addr string

	mu        sync.Mutex
	token     string // the bearer token required; empty: none
	srv       *grpc.Server
	nextID    int
	streams   map[int]chan []byte // live streams by id
	lastReady int                 // the stream the last ready call saw
	calls     []genericCall
}

// genericCall is one StartEventSource call as the server received it.
type genericCall struct {
	name   string
	config []byte
	auth   []string // the authorization metadata
	other  []protowire.Number
}

// genericRawCodec hands the server the bytes of each message. Its name is "proto", the content
// subtype of every gRPC client that speaks protobuf.
type genericRawCodec struct{}

func (genericRawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (genericRawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (genericRawCodec) Name() string { return "proto" }

func startGenericServer(t *testing.T, token string) *genericTestServer {
	t.Helper()
	s := &genericTestServer{t: t, token: token, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), streams: map[int]chan []byte{}}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *genericTestServer) start() {
	s.t.Helper()
	desc := grpc.ServiceDesc{
		ServiceName: "generic.Eventing",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "StartEventSource",
			ServerStreams: true,
			Handler:       func(_ any, ss grpc.ServerStream) error { return s.handle(ss) },
		}},
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(genericRawCodec{}))
	srv.RegisterService(&desc, struct{}{})
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	go srv.Serve(l)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
}

func (s *genericTestServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

func (s *genericTestServer) restart() {
	s.stop()
	s.start()
}

func (s *genericTestServer) handle(ss grpc.ServerStream) error {
	var req []byte
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	call := genericCall{}
	for b := req; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return status.Error(codes.InvalidArgument, "bad tag")
		}
		b = b[n:]
		if typ != protowire.BytesType {
			return status.Errorf(codes.InvalidArgument, "field %d: wire type %d, want bytes", num, typ)
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return status.Error(codes.InvalidArgument, "bad bytes")
		}
		b = b[n:]
		switch num {
		case 1:
			call.name = string(v)
		case 2:
			call.config = append([]byte(nil), v...)
		default:
			call.other = append(call.other, num)
		}
	}
	md, _ := metadata.FromIncomingContext(ss.Context())
	call.auth = md.Get("authorization")
	s.mu.Lock()
	s.calls = append(s.calls, call)
	token := s.token
	s.mu.Unlock()
	if token != "" && !reflect.DeepEqual(call.auth, []string{"Bearer " + token}) {
		return status.Error(codes.Unauthenticated, "wrong or missing bearer token")
	}
	ch := make(chan []byte, 64)
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.streams[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, id)
		s.mu.Unlock()
	}()
	for {
		select {
		case <-ss.Context().Done():
			return nil
		case m := <-ch:
			if err := ss.SendMsg(&m); err != nil {
				return err
			}
		}
	}
}

// send streams an Event with payload to every connected client.
func (s *genericTestServer) send(t *testing.T, payload []byte) {
	t.Helper()
	var m []byte
	m = protowire.AppendBytes(protowire.AppendTag(m, 1, protowire.BytesType), []byte("server-side-name"))
	if len(payload) > 0 {
		m = protowire.AppendBytes(protowire.AppendTag(m, 2, protowire.BytesType), payload)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.streams) == 0 {
		t.Fatal("generic server: no client connected")
	}
	for _, ch := range s.streams {
		ch <- m
	}
}

// ready waits until a client connected after the one the previous ready call saw.
func (s *genericTestServer) ready(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		newest := 0
		for id := range s.streams {
			newest = max(newest, id)
		}
		if newest > s.lastReady {
			s.lastReady = newest
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("generic server: no new client connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *genericTestServer) received() []genericCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]genericCall(nil), s.calls...)
}

// genericDataOf decodes the data of a generic event, checking that it has only Argo's fields.
func genericDataOf(t *testing.T, data []byte) (d struct {
	Body     json.RawMessage   `json:"body"`
	Metadata map[string]string `json:"metadata"`
}) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("event data is not a JSON object: %v\n%s", err, data)
	}
	for k := range fields {
		if k != "body" && k != "metadata" {
			t.Errorf("unexpected field %q in the event data %s (Argo's GenericEventData has body and metadata)", k, data)
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func genericYAML(fields string) string {
	return fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: %s\nspec:\n  generic:\n    %s:\n%s",
		conformanceEventSource, conformanceEvent, fields)
}

func shortGenericRetry(t *testing.T) {
	old := genericRetry
	genericRetry = connBackoff{duration: 50 * time.Millisecond, factor: 2, jitter: 0, steps: 3}
	t.Cleanup(func() { genericRetry = old })
}

func TestConformanceGeneric(t *testing.T) {
	shortGenericRetry(t)
	runConformance(t, "generic", func(t *testing.T) *conformanceOutside {
		s := startGenericServer(t, "")
		return &conformanceOutside{
			fields: fmt.Sprintf(`      url: %s
      insecure: true
      config: "kind: orders"
      jsonBody: true
      metadata: {team: payments}
`, s.addr),
			ready: s.ready,
			send:  func(t *testing.T, n int) { s.send(t, fmt.Appendf(nil, `{"n": %d}`, n)) },
			marker: func(t *testing.T, data []byte) int {
				d := genericDataOf(t, data)
				if !reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
					t.Errorf("metadata %v, want the event's metadata", d.Metadata)
				}
				return conformanceMarker(t, d.Body)
			},
			sendBad:    func(t *testing.T) { s.send(t, []byte("not json {")) },
			badLog:     "generic: event rejected and dropped",
			atMostOnce: "Argo's generic protocol has no acknowledgement: the server cannot send an event again",
			outage: func(*testing.T) func(*testing.T) {
				s.stop()
				return func(*testing.T) { s.start() }
			},
		}
	})
}

// The call carries the event's name, its config and the bearer token; without jsonBody the
// payload is base64, and an empty payload is a null body, as in Argo.
func TestGenericRequestAuthAndBody(t *testing.T) {
	const token = "gen-t0ken-value"
	s := startGenericServer(t, token)
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"generic/token": token})
	runSources(t, h.env, parseEventSources(t, genericYAML(fmt.Sprintf(`      url: %s
      insecure: true
      config: |
        projects: [a, b]
      authSecret: {name: generic, key: token}
`, s.addr))))
	s.ready(t)
	calls := s.received()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	c := calls[0]
	if c.name != conformanceEvent || string(c.config) != "projects: [a, b]\n" || len(c.other) > 0 {
		t.Errorf("EventSource{name %q, config %q, other fields %v}; want name %q (the event's, as Argo) and the config", c.name, c.config, c.other, conformanceEvent)
	}
	if want := []string{"Bearer " + token}; !reflect.DeepEqual(c.auth, want) {
		t.Errorf("authorization %q, want %q", c.auth, want)
	}
	s.send(t, []byte("raw \x00 bytes"))
	s.send(t, nil)
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d events, want 2", len(h.committedEvents(topic)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	events := h.committedEvents(topic)
	var bodies []string
	for _, e := range events {
		if e.Type() != "generic" || e.Source() != conformanceEventSource || e.Subject() != conformanceEvent || e.ID() == "" {
			t.Errorf("type %q source %q subject %q id %q; want Argo's attributes", e.Type(), e.Source(), e.Subject(), e.ID())
		}
		d := genericDataOf(t, e.Data())
		if d.Metadata != nil {
			t.Errorf("metadata %v, want none", d.Metadata)
		}
		bodies = append(bodies, string(d.Body))
	}
	if want := []string{`"` + base64.StdEncoding.EncodeToString([]byte("raw \x00 bytes")) + `"`, "null"}; !reflect.DeepEqual(bodies, want) {
		t.Errorf("bodies %q, want %q", bodies, want)
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the token is in the logs")
	}
}

// A server that refuses the token: the source logs why and calls again, never logging the
// token; a server down is called again the same way, and the stream starts once it is up.
func TestGenericRefusedAndDown(t *testing.T) {
	shortGenericRetry(t)
	s := startGenericServer(t, "right-t0ken")
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"generic/token": "wrong-t0ken"})
	runSources(t, h.env, parseEventSources(t, genericYAML(fmt.Sprintf("      url: %s\n      insecure: true\n      config: x\n      authSecret: {name: generic, key: token}\n", s.addr))))
	deadline := time.Now().Add(20 * time.Second)
	for len(s.received()) < 3 || !strings.Contains(logs.String(), "Unauthenticated") {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls; want the source to call again after the refusal, logging it\n%s", len(s.received()), logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "generic: the event stream ended; calling the server again") {
		t.Error("the refusal is not logged")
	}
	if strings.Contains(logs.String(), "wrong-t0ken") {
		t.Error("the token is in the logs")
	}

	s.stop()
	s.mu.Lock()
	s.token, s.calls = "", nil
	s.mu.Unlock()
	time.Sleep(200 * time.Millisecond) // a few failed calls while the server is down
	s.start()
	s.ready(t)
	s.send(t, []byte("up"))
	deadline = time.Now().Add(20 * time.Second)
	for len(h.committedEvents(h.topo.SourceTopic("", conformanceEventSource))) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no event after the server came up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCheckGeneric(t *testing.T) {
	check := func(fields string) error {
		t.Helper()
		return Check(parseEventSources(t, genericYAML(fields))[0])
	}
	for _, ok := range []string{
		"      url: my-source.argo-events.svc:8080\n      config: x\n",
		"      url: dns:///my-source:8080\n      config: x\n      insecure: true\n      jsonBody: true\n      metadata: {a: b}\n      authSecret: {name: s, key: k}\n",
		"      url: unix:///run/source.sock\n      config: x\n      filter: {expression: 'body.a == 1'}\n",
	} {
		if err := check(ok); err != nil {
			t.Errorf("valid %q: %v", ok, err)
		}
	}
	for _, tc := range []struct{ name, fields, want string }{
		{"no url", "      config: x\n", "spec.generic.ev: url: missing; expected the gRPC address of the server"},
		{"http url", "      url: http://source:8080\n      config: x\n", `url: "http://source:8080"; expected a gRPC target such as source:8080, not a URL`},
		{"space", "      url: \"source :8080\"\n      config: x\n", "without whitespace"},
		{"no config", "      url: source:8080\n", "config: missing"},
		{"auth", "      url: source:8080\n      config: x\n      authSecret: {name: s}\n", "authSecret: a secret name and key are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.fields)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v; want an error containing %q", err, tc.want)
			}
		})
	}
	// Unknown fields are refused when loading.
	docs := api.Parse("x.yaml", []byte(genericYAML("      url: s:1\n      config: x\n      secure: true\n")))
	if len(docs) != 1 || docs[0].Err == nil || !strings.Contains(docs[0].Err.Error(), "secure") {
		t.Errorf("unknown field: %v; want one document refused, naming the field", docs)
	}
}

// A Secret that cannot be read stops the start with an error naming it.
func TestGenericSecretMissing(t *testing.T) {
	h, _ := newConformanceHarness(t)
	_, err := Run(t.Context(), h.env, parseEventSources(t, genericYAML("      url: s:1\n      config: x\n      authSecret: {name: generic, key: token}\n")))
	if err == nil || !strings.Contains(err.Error(), "authSecret: secret generic/token") {
		t.Fatalf("Run: %v; want an error naming authSecret and the Secret", err)
	}
	if errors.Is(err, api.ErrNotSupported) {
		t.Errorf("%v wraps ErrNotSupported", err)
	}
}

// Argo's example loads and passes Check.
func TestGenericArgoExample(t *testing.T) {
	b, err := os.ReadFile("../../shared/argo-examples/event-sources/generic.yaml")
	if err != nil {
		t.Skipf("Argo examples not found beside the repository: %v", err)
	}
	if err := Check(parseEventSources(t, string(b))[0]); err != nil {
		t.Error(err)
	}
}
