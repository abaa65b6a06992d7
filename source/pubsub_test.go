package source

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	pubsub "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/metrics"
)

// pubsubTestServer is Google's in-process Pub/Sub fake (pstest) served on a gRPC server of the
// test's own, so that a restart can stop every connection and listen again on the same address
// while the fake keeps its topics, subscriptions and unacknowledged messages, as a server with
// storage would. The source finds it through PUBSUB_EMULATOR_HOST, as Google's client does.
type pubsubTestServer struct {
	t      *testing.T
	ps     *pstest.Server
	addr   string
	client *pubsub.Client // the test's own, on project "proj"

	mu   sync.Mutex
	gsrv *grpc.Server
}

func startPubSub(t *testing.T) *pubsubTestServer {
	t.Helper()
	ps := pstest.NewServer()
	t.Cleanup(func() { _ = ps.Close() })
	s := &pubsubTestServer{t: t, ps: ps, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	s.start()
	t.Cleanup(s.stop)
	t.Setenv("PUBSUB_EMULATOR_HOST", s.addr)
	c, err := pubsub.NewClient(context.Background(), "proj", option.WithEndpoint(s.addr),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s.client = c
	return s
}

func (s *pubsubTestServer) start() {
	s.t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	gsrv := grpc.NewServer()
	pubsubpb.RegisterPublisherServer(gsrv, &s.ps.GServer)
	pubsubpb.RegisterSubscriberServer(gsrv, &s.ps.GServer)
	go gsrv.Serve(l)
	s.mu.Lock()
	s.gsrv = gsrv
	s.mu.Unlock()
}

func (s *pubsubTestServer) stop() {
	s.mu.Lock()
	gsrv := s.gsrv
	s.gsrv = nil
	s.mu.Unlock()
	if gsrv != nil {
		gsrv.Stop()
	}
}

// publish publishes to topic (an ID in project proj) and returns the message id.
func (s *pubsubTestServer) publish(t *testing.T, topic string, data string, attrs map[string]string) string {
	t.Helper()
	return s.ps.Publish("projects/proj/topics/"+topic, []byte(data), attrs)
}

// settled reports whether every message ever published was acknowledged.
func (s *pubsubTestServer) settled() bool {
	for _, m := range s.ps.Messages() {
		if m.Acks == 0 {
			return false
		}
	}
	return true
}

func (s *pubsubTestServer) waitSettled(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !s.settled() {
		if time.Now().After(deadline) {
			t.Fatal("pubsub: messages still unacknowledged")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSubscription waits until the subscription (full name) exists and returns it.
func (s *pubsubTestServer) waitSubscription(t *testing.T, name string) *pubsubpb.Subscription {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sub, err := s.client.SubscriptionAdminClient.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: name})
		if err == nil {
			return sub
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription %s: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *pubsubTestServer) createTopic(t *testing.T, name string) {
	t.Helper()
	if _, err := s.client.TopicAdminClient.CreateTopic(context.Background(), &pubsubpb.Topic{Name: name}); err != nil {
		t.Fatal(err)
	}
}

func (s *pubsubTestServer) createSubscription(t *testing.T, sub *pubsubpb.Subscription) {
	t.Helper()
	if _, err := s.client.SubscriptionAdminClient.CreateSubscription(context.Background(), sub); err != nil {
		t.Fatal(err)
	}
}

// pubsubDataOf decodes the data of a pubSub event, checking that it has Argo's fields.
func pubsubDataOf(t *testing.T, data []byte) (d struct {
	ID          string            `json:"id"`
	Body        json.RawMessage   `json:"body"`
	Attributes  map[string]string `json:"attributes"`
	PublishTime string            `json:"publishTime"`
	Metadata    map[string]string `json:"metadata"`
}) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("event data is not a JSON object: %v\n%s", err, data)
	}
	for _, k := range []string{"id", "body", "attributes", "publishTime"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("field %q missing from the event data %s (Argo's PubSubEventData)", k, data)
		}
	}
	for k := range fields {
		switch k {
		case "id", "body", "attributes", "publishTime", "metadata":
		default:
			t.Errorf("unexpected field %q in the event data %s", k, data)
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func pubsubYAML(fields string) string {
	return fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: %s\nspec:\n  pubSub:\n    %s:\n%s",
		conformanceEventSource, conformanceEvent, fields)
}

func shortPubSubRetry(t *testing.T) {
	old := pubsubRetry
	pubsubRetry.first, pubsubRetry.limit = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { pubsubRetry = old })
}

func TestConformancePubSub(t *testing.T) {
	runConformance(t, "pubSub", func(t *testing.T) *conformanceOutside {
		s := startPubSub(t)
		return &conformanceOutside{
			eventType: "pubsub",
			fields: `      projectID: proj
      topic: orders
      subscriptionID: kevents-conf
      jsonBody: true
      metadata: {team: payments}
`,
			ready: func(t *testing.T) { s.waitSubscription(t, "projects/proj/subscriptions/kevents-conf") },
			send: func(t *testing.T, n int) {
				s.publish(t, "orders", fmt.Sprintf(`{"n": %d}`, n), map[string]string{"n": fmt.Sprint(n)})
			},
			marker: func(t *testing.T, data []byte) int {
				d := pubsubDataOf(t, data)
				if d.ID == "" || d.PublishTime == "" || !reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
					t.Errorf("id %q publishTime %q metadata %v; want the message's and the event's metadata", d.ID, d.PublishTime, d.Metadata)
				}
				n := conformanceMarker(t, d.Body)
				if d.Attributes["n"] != fmt.Sprint(n) {
					t.Errorf("attributes %v, want n=%d", d.Attributes, n)
				}
				return n
			},
			sendBad: func(t *testing.T) { s.publish(t, "orders", "not json {", nil) },
			badLog:  "pubSub: message rejected and acknowledged (the subscription has no dead-letter policy)",
			settled: func(*testing.T) bool { return s.settled() },
			// The acks of the last messages are sent in batches: a restart before they are
			// sent delivers those messages again (same event id), as Pub/Sub does. Restart
			// the idle server, so that exactly once stays checkable.
			outage: func(t *testing.T) func(*testing.T) {
				s.waitSettled(t)
				s.stop()
				return func(*testing.T) { s.start() }
			},
		}
	})
}

// Without subscriptionID the source creates Argo's subscription, "<event>-<hash of the spec>",
// on the topic in topicProjectID (creating the topic). Without jsonBody the body is base64;
// the id is the message id, the time and publishTime the message's publish time, the type
// Argo's "pubsub".
func TestPubSubDataAndDefaultSubscription(t *testing.T) {
	s := startPubSub(t)
	h, _ := newConformanceHarness(t)
	runSources(t, h.env, parseEventSources(t, pubsubYAML(`      projectID: proj
      topicProjectID: other
      topic: orders
      metadata: {team: payments}
`)))
	// Argo's hash, written out: FNV-32a of the event name and the spec as Argo encodes it.
	hash := fnv.New32a()
	hash.Write([]byte(conformanceEvent + `{"projectID":"proj","topicProjectID":"other","topic":"orders","subscriptionID":"","metadata":{"team":"payments"}}`))
	subName := fmt.Sprintf("projects/proj/subscriptions/%s-%d", conformanceEvent, hash.Sum32())
	if sub := s.waitSubscription(t, subName); sub.Topic != "projects/other/topics/orders" {
		t.Errorf("subscription %s reads %s, want projects/other/topics/orders", subName, sub.Topic)
	}
	id := s.ps.Publish("projects/other/topics/orders", []byte("raw \x00 bytes"), map[string]string{"k": "v"})
	topic := h.topo.SourceTopic("", conformanceEventSource)
	deadline := time.Now().Add(20 * time.Second)
	for len(h.committedEvents(topic)) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := h.committedEvents(topic)[0]
	published := s.ps.Message(id).PublishTime.UTC()
	if e.ID() != id || e.Type() != "pubsub" || e.Source() != conformanceEventSource || e.Subject() != conformanceEvent || !e.Time().Equal(published) {
		t.Errorf("id %q type %q source %q subject %q time %v; want %q, pubsub, %s, %s, %v",
			e.ID(), e.Type(), e.Source(), e.Subject(), e.Time(), id, conformanceEventSource, conformanceEvent, published)
	}
	d := pubsubDataOf(t, e.Data())
	want := `"` + base64.StdEncoding.EncodeToString([]byte("raw \x00 bytes")) + `"`
	if d.ID != id || string(d.Body) != want || !reflect.DeepEqual(d.Attributes, map[string]string{"k": "v"}) ||
		d.PublishTime != published.String() || !reflect.DeepEqual(d.Metadata, map[string]string{"team": "payments"}) {
		t.Errorf("data %s; want id %s, body %s, attributes k=v, publishTime %q (Go's time.String, as Argo) and the metadata", e.Data(), id, want, published.String())
	}
	s.waitSettled(t)
}

// An existing subscription is read as is without topic, and checked against topic when it is
// set; a missing subscription without topic is an error. Errors are logged and retried.
func TestPubSubExistingSubscription(t *testing.T) {
	shortPubSubRetry(t)
	s := startPubSub(t)
	s.createTopic(t, "projects/proj/topics/orders")
	s.createTopic(t, "projects/proj/topics/other")
	s.createSubscription(t, &pubsubpb.Subscription{Name: "projects/proj/subscriptions/existing", Topic: "projects/proj/topics/orders"})
	h, logs := newConformanceHarness(t)
	m2 := *h.env
	m2.Metrics = metrics.New()
	yaml := fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: %s\nspec:\n  pubSub:\n", conformanceEventSource) +
		"    wrong:\n      projectID: proj\n      topic: other\n      subscriptionID: existing\n" +
		"    missing:\n      projectID: proj\n      subscriptionID: missing\n" +
		"    " + conformanceEvent + ":\n      projectID: proj\n      subscriptionID: existing\n"
	runSources(t, h.env, parseEventSources(t, yaml))
	deadline := time.Now().Add(20 * time.Second)
	for _, want := range []string{
		"subscription projects/proj/subscriptions/existing reads topic projects/proj/topics/orders; expected projects/proj/topics/other",
		"subscription projects/proj/subscriptions/missing does not exist; set topic to have it created",
	} {
		for strings.Count(logs.String(), want) < 2 { // logged, and retried
			if time.Now().After(deadline) {
				t.Fatalf("the log does not say %q twice:\n%s", want, logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	s.publish(t, "orders", "hello", nil)
	topic := h.topo.SourceTopic("", conformanceEventSource)
	for len(h.committedEvents(topic)) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no event from the existing subscription")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, e := range h.committedEvents(topic) {
		if e.Subject() != conformanceEvent {
			t.Errorf("event of %q, want only %q", e.Subject(), conformanceEvent)
		}
	}
}

// Every member reads the same subscription: each message becomes one event, whichever member
// receives it, and both members take part.
func TestPubSubMembersCompete(t *testing.T) {
	s := startPubSub(t)
	h, _ := newConformanceHarness(t)
	m2 := *h.env
	m2.Member, m2.Metrics = "m2", metrics.New()
	yaml := pubsubYAML("      projectID: proj\n      topic: orders\n      subscriptionID: shared\n      jsonBody: true\n")
	runSources(t, h.env, parseEventSources(t, yaml))
	runSources(t, &m2, parseEventSources(t, yaml))
	s.waitSubscription(t, "projects/proj/subscriptions/shared")
	published := func() (float64, float64) {
		return h.counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent),
			(&harness{t: t, metrics: m2.Metrics}).counter("kevents_source_events_published_total", conformanceEventSource, conformanceEvent)
	}
	// The fake hands new messages to its first stream unless several arrive at once: publish
	// bursts until both members published some.
	n := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		a, b := published()
		if a > 0 && b > 0 && a+b == float64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members published %v and %v events of %d messages; want all, by both", a, b, n)
		}
		if a+b == float64(n) && n < 500 { // the previous burst is in: send the next
			for range 20 {
				s.publish(t, "orders", fmt.Sprintf(`{"n": %d}`, n), nil)
				n++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	seen := map[int]int{}
	for _, e := range h.committedEvents(h.topo.SourceTopic("", conformanceEventSource)) {
		seen[conformanceMarker(t, pubsubDataOf(t, e.Data()).Body)]++
	}
	for i := range n {
		if seen[i] != 1 {
			t.Errorf("message %d: %d events, want 1", i, seen[i])
		}
	}
	s.waitSettled(t)
}

// With a dead-letter policy, a message that cannot become an event is nacked until Pub/Sub
// moves it to the dead-letter topic.
func TestPubSubDeadLetter(t *testing.T) {
	s := startPubSub(t)
	s.createTopic(t, "projects/proj/topics/orders")
	s.createTopic(t, "projects/proj/topics/dead")
	s.createSubscription(t, &pubsubpb.Subscription{Name: "projects/proj/subscriptions/dead", Topic: "projects/proj/topics/dead"})
	s.createSubscription(t, &pubsubpb.Subscription{
		Name: "projects/proj/subscriptions/orders", Topic: "projects/proj/topics/orders",
		DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{DeadLetterTopic: "projects/proj/topics/dead", MaxDeliveryAttempts: 5},
	})
	h, logs := newConformanceHarness(t)
	runSources(t, h.env, parseEventSources(t, pubsubYAML("      projectID: proj\n      topic: orders\n      subscriptionID: orders\n      jsonBody: true\n")))
	s.publish(t, "orders", "not json {", nil)
	s.publish(t, "orders", `{"n": 1}`, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var dead []string
	for len(dead) == 0 {
		resp, err := s.client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{Subscription: "projects/proj/subscriptions/dead", MaxMessages: 10})
		if err != nil {
			t.Fatalf("pull the dead-letter subscription: %v\n%s", err, logs)
		}
		for _, m := range resp.ReceivedMessages {
			dead = append(dead, string(m.Message.Data))
		}
	}
	if !reflect.DeepEqual(dead, []string{"not json {"}) {
		t.Errorf("dead-lettered %q, want the bad message only", dead)
	}
	if !strings.Contains(logs.String(), "pubSub: message rejected and nacked for the subscription's dead-letter topic") {
		t.Error("the rejection is not logged")
	}
	topic := h.topo.SourceTopic("", conformanceEventSource)
	events := h.committedEvents(topic)
	if len(events) != 1 || conformanceMarker(t, pubsubDataOf(t, events[0].Data()).Body) != 1 {
		t.Errorf("%d events, want the good message's", len(events))
	}
}

// Argo's filter runs on Argo's data; a message it drops is acknowledged, as in Argo.
func TestPubSubFilter(t *testing.T) {
	s := startPubSub(t)
	h, _ := newConformanceHarness(t)
	runSources(t, h.env, parseEventSources(t, pubsubYAML("      projectID: proj\n      topic: orders\n      subscriptionID: filtered\n      filter: {expression: 'attributes.kind == \"keep\"'}\n")))
	s.waitSubscription(t, "projects/proj/subscriptions/filtered")
	s.publish(t, "orders", "dropped", map[string]string{"kind": "drop"})
	kept := s.publish(t, "orders", "kept", map[string]string{"kind": "keep"})
	s.waitSettled(t)
	events := h.committedEvents(h.topo.SourceTopic("", conformanceEventSource))
	if len(events) != 1 || events[0].ID() != kept {
		t.Errorf("%d events, want the kept message's (%s) only", len(events), kept)
	}
}

// credentialSecret must hold a service account key, as in Argo; errors name the Secret, never
// its contents. A key works with the emulator, which ignores credentials.
func TestPubSubCredentials(t *testing.T) {
	s := startPubSub(t)
	yaml := pubsubYAML("      projectID: proj\n      topic: orders\n      subscriptionID: creds\n      credentialSecret: {name: gcp, key: key.json}\n")
	for _, tc := range []struct{ name, value, want string }{
		{"not json", "s3cret-not-json", "credentialSecret: secret gcp/key.json is not JSON; expected a service account key"},
		{"other type", `{"type": "authorized_user", "refresh_token": "s3cret-token"}`, `holds credentials of type "authorized_user"; expected a service account key (type "service_account")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newConformanceHarness(t)
			h.env.Secrets = mapSecrets(map[string]string{"gcp/key.json": tc.value})
			_, err := Run(t.Context(), h.env, parseEventSources(t, yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v; want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the Secret: %v", err)
			}
		})
	}
	h, logs := newConformanceHarness(t)
	h.env.Secrets = mapSecrets(map[string]string{"gcp/key.json": `{"type": "service_account", "project_id": "proj", "client_email": "a@proj.iam.gserviceaccount.com", "private_key_id": "1", "private_key": "s3cret-key"}`})
	runSources(t, h.env, parseEventSources(t, yaml))
	s.waitSubscription(t, "projects/proj/subscriptions/creds")
	s.publish(t, "orders", "x", nil)
	s.waitSettled(t)
	if strings.Contains(logs.String(), "s3cret") {
		t.Error("the key is in the logs")
	}
}

func TestCheckPubSub(t *testing.T) {
	check := func(fields string) error {
		t.Helper()
		return Check(parseEventSources(t, pubsubYAML(fields))[0])
	}
	for _, ok := range []string{
		"      topic: orders\n",
		"      subscriptionID: my-sub\n",
		"      projectID: proj\n      topicProjectID: other\n      topic: orders\n      subscriptionID: s-1.x~y+z%20\n      jsonBody: true\n      metadata: {a: b}\n      credentialSecret: {name: gcp, key: key.json}\n",
		"      topic: orders\n      filter: {expression: 'body != nil'}\n",
	} {
		if err := check(ok); err != nil {
			t.Errorf("valid %q: %v", ok, err)
		}
	}
	for _, tc := range []struct{ name, fields, want string }{
		{"neither", "      projectID: proj\n", "spec.pubSub.ev: topic, subscriptionID: both missing"},
		{"topic project alone", "      subscriptionID: s12\n      topicProjectID: other\n", `topicProjectID: "other" set without topic`},
		{"bad topic", "      topic: 1orders\n", `topic: "1orders"; expected a Pub/Sub ID`},
		{"goog", "      subscriptionID: google-sub\n", `subscriptionID: "google-sub"; expected a Pub/Sub ID`},
		{"short", "      subscriptionID: ab\n", `subscriptionID: "ab"`},
		{"project", "      topic: orders\n      projectID: projects/p\n", `projectID: "projects/p"; expected a project ID`},
		{"credentials", "      topic: orders\n      credentialSecret: {name: gcp}\n", "credentialSecret: a secret name and key are required"},
		{"delete", "      topic: orders\n      deleteSubscriptionOnFinish: true\n", `not supported yet: pubSub eventsource field "deleteSubscriptionOnFinish" (every member reads the one subscription`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.fields)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v; want an error containing %q", err, tc.want)
			}
			if tc.name == "delete" != errors.Is(err, api.ErrNotSupported) {
				t.Errorf("%v: wraps ErrNotSupported %v", err, errors.Is(err, api.ErrNotSupported))
			}
		})
	}
	docs := api.Parse("x.yaml", []byte(pubsubYAML("      topic: orders\n      subscription: s\n")))
	if len(docs) != 1 || docs[0].Err == nil || !strings.Contains(docs[0].Err.Error(), "subscription") {
		t.Errorf("unknown field: %v; want one document refused, naming the field", docs)
	}
}

// Argo's example loads and passes Check.
func TestPubSubArgoExample(t *testing.T) {
	b, err := os.ReadFile("../../shared/argo-examples/event-sources/gcp-pubsub.yaml")
	if err != nil {
		t.Skipf("Argo examples not found beside the repository: %v", err)
	}
	if err := Check(parseEventSources(t, string(b))[0]); err != nil {
		t.Error(err)
	}
}
