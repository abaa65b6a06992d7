package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
)

// filterOn compiles expression as the filter of a webhook event.
func filterOn(t *testing.T, expression string) *eventFilter {
	t.Helper()
	f, err := compileEventFilter(api.Event{Type: "webhook", Name: "e", Spec: api.WebhookEventSource{Filter: &api.EventSourceFilter{Expression: expression}}})
	if err != nil {
		t.Fatalf("compile %q: %v", expression, err)
	}
	if f == nil {
		t.Fatalf("compile %q: no filter", expression)
	}
	return f
}

// TestFilterExpressions evaluates expressions on event data as Argo's filterEvent does. The first
// cases are Argo's own (pkg/shared/expr/eval_test.go TestEvalBool, and the Kafka example of
// docs/eventsources/filtering.md); Argo gives the same result for every case here, an error
// meaning the event is dropped.
func TestFilterExpressions(t *testing.T) {
	argoEnv := `{"id": 1, "first_name": "John", "last_name": "Doe", "email": "johndoe@intuit.com", "gender": "Male", "dept": "devp", "uuid": "test-case-hyphen"}`
	kafkaPass := `{"topic": "topic-2", "partition": 0, "body": {"id": 4, "name": "John", "email": "john@intuit.com", "department": {"id": 1, "name": "HR", "bu": {"id": 2, "name": "devp"}}}}`
	kafkaFail := `{"topic": "topic-2", "partition": 0, "body": {"id": 2, "name": "Johnson", "email": "john@intuit.com", "department": {"id": 1, "name": "HR", "bu": {"id": 2, "name": "devp"}}}}`
	webhook := `{"header": {"X-Github-Event": ["push"], "Content-Type": ["application/json"]}, "body": {"action": "opened", "n": 3, "str": "5", "list": [1, 2], "null": null, "name": "kevents"}, "metadata": {"team": "payments"}}`
	for _, tc := range []struct {
		name, data, expression string
		pass                   bool
		err                    string // substring of the error; the event is dropped
	}{
		{"argo and", argoEnv, "(id == 1) && (last_name == 'Doe')", true, ""},
		{"argo or", argoEnv, "(id == 2) || (gender == 'Female')", false, ""},
		{"argo invalid expression", argoEnv, "invalidexpression", false, "gave <nil>, not a bool"},
		{"argo hyphen in value", argoEnv, "(uuid == 'test-case-hyphen')", true, ""},
		{"argo docs kafka pass", kafkaPass, "(body.id == 4) && (body.name != 'Joe')", true, ""},
		{"argo docs kafka fail", kafkaFail, "(body.id == 4) && (body.name != 'Joe')", false, ""},
		{"nested", kafkaPass, "body.department.bu.name == 'devp'", true, ""},

		{"header", webhook, `header["X-Github-Event"][0] == "push"`, true, ""},
		{"metadata", webhook, `metadata.team == "payments"`, true, ""},
		{"numbers are float64", webhook, `body.n == 3 && body.n == 3.0 && body.n > 2.5`, true, ""},
		{"in", webhook, `body.action in ["opened", "reopened"]`, true, ""},
		{"matches", webhook, `body.name matches "^kev"`, true, ""},
		{"false", webhook, `body.action == "closed"`, false, ""},
		{"missing field is nil", webhook, `body.missing == 1`, false, ""},
		{"missing field equals nil", webhook, `body.missing == nil`, true, ""},
		{"missing top-level name equals nil", webhook, `nothing == nil`, true, ""},
		{"null field", webhook, `body.null == nil`, true, ""},
		{"field of a missing field", webhook, `body.missing.deeper == 1`, false, "cannot fetch deeper from <nil>"},
		{"field of a missing name", webhook, `nothing.x == 1`, false, "cannot fetch x from <nil>"},
		{"index out of range", webhook, `body.list[5] == 1`, false, "index out of range"},
		{"type error", webhook, `body.name > 1`, false, "invalid operation"},
		{"not a bool", webhook, `body.n`, false, "gave float64, not a bool"},
		{"nil result", webhook, `body.missing`, false, "gave <nil>, not a bool"},

		{"asInt", webhook, `asInt(body.str) == 5`, true, ""},
		{"asFloat", webhook, `asFloat(body.str) == 5.0`, true, ""},
		{"toJson", webhook, `toJson(body.list) == "[1,2]"`, true, ""},
		{"sprig", webhook, `sprig.upper(body.name) == "KEVENTS" && sprig.contains("pen", body.action)`, true, ""},
		{"sprig env is removed", webhook, `sprig.env("HOME") != ""`, false, "call of reflect.Value.Call on zero Value"},
		{"builtins", webhook, `len(body.list) == 2 && all(body.list, {# > 0}) && upper(body.action) == "OPENED"`, true, ""},

		{"hyphen in a top-level key becomes _", `{"first-name": "x", "body": {"a-b": 1}}`, `first_name == "x" && body["a-b"] == 1`, true, ""},
		{"dotted top-level keys nest", `{"a.b": 1, "a.c.d": 2, "ab": 4}`, `a.b == 1 && a.c.d == 2 && ab == 4`, true, ""},
		{"a dotted key wins over its parent", `{"a.b": 1, "a": 3}`, `a.b == 1`, true, ""},
		{"json null data", `null`, `x == nil`, true, ""},

		{"not JSON", `hello`, `true`, false, "the event data is not a JSON object"},
		{"JSON array", `[1, 2]`, `true`, false, "the event data is not a JSON object"},
		{"JSON string", `"s"`, `true`, false, "the event data is not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pass, err := filterOn(t, tc.expression).pass([]byte(tc.data))
			if pass != tc.pass {
				t.Errorf("%s on %s: pass %v, want %v (error %v)", tc.expression, tc.data, pass, tc.pass, err)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("%s: error %v", tc.expression, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("%s: error %v, want one containing %q", tc.expression, err, tc.err)
			}
		})
	}
}

// TestFilterExpandKeys ports Argo's TestExpand and TestRemoveConflictingKeys
// (pkg/shared/expr/eval_test.go).
func TestFilterExpandKeys(t *testing.T) {
	for _, tc := range []struct {
		in, want map[string]any
	}{
		{
			in: map[string]any{"a.b": 1, "a.c.d": 2, "a": 3, "ab": 4, "abb": 5},
			want: map[string]any{
				"a":  map[string]any{"b": 1, "c": map[string]any{"d": 2}},
				"ab": 4, "abb": 5,
			},
		},
		{in: map[string]any{"a.b": 1, "a": 2}, want: map[string]any{"a": map[string]any{"b": 1}}},
		{in: map[string]any{"a": 1, "b": 2, "c.d": 3}, want: map[string]any{"a": 1, "b": 2, "c": map[string]any{"d": 3}}},
		{in: map[string]any{"a.b": 1, "a.b.c": 2}, want: map[string]any{"a": map[string]any{"b": map[string]any{"c": 2}}}},
		{in: map[string]any{"x": map[string]any{"y.z": 1}}, want: map[string]any{"x": map[string]any{"y.z": 1}}}, // top level only
	} {
		before := fmt.Sprint(tc.in)
		if got := expandKeys(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("expandKeys(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if fmt.Sprint(tc.in) != before {
			t.Errorf("expandKeys changed its input: %v, was %v", tc.in, before)
		}
	}
}

// TestFilterFieldOfEveryType: every typed spec with Argo's filter field gets filtering, found by
// its type, and the resource source's own filter (labels, fields, afterStart) is not taken for one.
func TestFilterFieldOfEveryType(t *testing.T) {
	spec := reflect.TypeFor[api.EventSourceSpec]()
	var with []string
	for i := range spec.NumField() {
		f := spec.Field(i)
		if f.Type.Kind() != reflect.Map || f.Type.Elem().Kind() != reflect.Struct {
			continue
		}
		typ, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		elem := reflect.New(f.Type.Elem()).Elem()
		field, ok := f.Type.Elem().FieldByName("Filter")
		if !ok || field.Type != eventFilterType {
			if got, _ := filterField(api.Event{Type: typ, Spec: elem.Interface()}); got != nil {
				t.Errorf("%s: filter found in a spec without Argo's filter field", typ)
			}
			continue
		}
		want := &api.EventSourceFilter{Expression: "true"}
		elem.FieldByIndex(field.Index).Set(reflect.ValueOf(want))
		got, name := filterField(api.Event{Type: typ, Spec: elem.Interface()})
		if got != want || name != "filter" {
			t.Errorf("%s: filterField = %v, %q; want the spec's filter", typ, got, name)
		}
		if got, _ := filterField(api.Event{Type: typ, Spec: reflect.New(f.Type.Elem()).Elem().Interface()}); got != nil {
			t.Errorf("%s: a filter found where none is set", typ)
		}
		with = append(with, typ)
	}
	for _, typ := range []string{"webhook", "github", "gitlab", "bitbucket", "bitbucketserver", "slack", "calendar", "file", "kafka", "mqtt", "nats", "redis", "redisStream", "sqs", "amqp", "sns", "pubSub", "generic"} {
		if !contains(with, typ) {
			t.Errorf("%s has no filter field found (types with one: %v)", typ, with)
		}
	}
	for _, typ := range []string{"resource", "stripe", "minio"} {
		if contains(with, typ) {
			t.Errorf("%s has no Argo filter; found one", typ)
		}
	}
	r := api.ResourceEventSource{Filter: &api.ResourceFilter{AfterStart: true}}
	if got, _ := filterField(api.Event{Type: "resource", Spec: r}); got != nil {
		t.Error("the resource source's filter taken for an expression filter")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCheckFilter: an expression that cannot run is an error of the spec naming the field, the
// expression and the compiler's reason, whatever the source type.
func TestCheckFilter(t *testing.T) {
	doc := func(typ, fields, expression string) string {
		return fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata: {name: es}\nspec:\n  %s:\n    ev:\n%s      filter:\n        expression: %q\n", typ, fields, expression)
	}
	types := map[string]string{
		"webhook":     "      port: \"12000\"\n      endpoint: /e\n      method: POST\n",
		"nats":        "      url: nats://h:4222\n      subject: a\n",
		"calendar":    "      interval: 10s\n",
		"redisStream": "      hostAddress: redis:6379\n      streams: [a]\n",
	}
	for typ, fields := range types {
		if err := Check(parseEventSources(t, doc(typ, fields, `body.action == "opened" && sprig.lower(header["X-A"][0]) != "x"`))[0]); err != nil {
			t.Errorf("%s: a valid filter: Check: %v", typ, err)
		}
		for _, tc := range []struct {
			expression   string
			want         []string
			notSupported bool
		}{
			{`body.action ==`, []string{`"body.action ==" is not a valid expression: unexpected token EOF (line 1, column 13)`}, false},
			{`body.a = 1`, []string{`"body.a = 1" is not a valid expression`}, false},
			{`1 + 2`, []string{`"1 + 2" is not a valid expression: expected bool, but got int`}, false},
			{`"yes"`, []string{"expected bool, but got string"}, false},
			{`asInt()`, []string{"not enough arguments to call asInt"}, false},
			{"  ", []string{"empty; expected an expression"}, false},
			{`jsonpath(toJson(body), "$.a") == 1`, []string{`not supported yet: eventsource filter function "jsonpath"`}, true},
		} {
			err := Check(parseEventSources(t, doc(typ, fields, tc.expression))[0])
			if err == nil {
				t.Errorf("%s: %q: Check accepted it", typ, tc.expression)
				continue
			}
			for _, w := range append(tc.want, "spec."+typ+".ev.filter.expression: ") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q: error %q lacks %q", typ, tc.expression, err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: %q: error on several lines: %q", typ, tc.expression, err)
			}
			if got := errors.Is(err, api.ErrNotSupported); got != tc.notSupported {
				t.Errorf("%s: %q: errors.Is(ErrNotSupported) = %v, want %v", typ, tc.expression, got, tc.notSupported)
			}
		}
	}
	// An invalid filter and another mistake of the same event are both reported.
	err := Check(parseEventSources(t, doc("nats", "      url: nats://h:4222\n      subject: \"\"\n", "(("))[0])
	if err == nil || !strings.Contains(err.Error(), "subject: required") || !strings.Contains(err.Error(), "spec.nats.ev.filter.expression: ") {
		t.Errorf("Check: %v; want both the subject and the filter errors", err)
	}
	// Run refuses it too, before listening anywhere.
	h := newHarness(t, []string{"es"})
	if _, err := Run(context.Background(), h.env, parseEventSources(t, doc("webhook", types["webhook"], "body.a =="))); err == nil || !strings.Contains(err.Error(), "filter.expression") {
		t.Errorf("Run: %v, want the filter error", err)
	}
}

func (h *harness) filtered(eventSource, event, reason string) float64 {
	return testutil.ToFloat64(h.metrics.EventsFiltered.WithLabelValues(eventSource, event, reason))
}

// TestFilterWebhook: a request whose event the filter drops is answered 200, as one that is
// published, and nothing reaches Kafka; one that passes is published.
func TestFilterWebhook(t *testing.T) {
	port := freePort(t)
	h := newHarness(t, []string{"hooks"})
	logs := h.captureLogs()
	h.run(parseEventSources(t, webhookYAML("hooks", "pr", port, "/pr", `      filter:
        expression: body.action == "opened" && header["X-Team"][0] == "payments"
`)))
	topic := "kevents.src.default.hooks"
	post := func(body, team string) {
		t.Helper()
		resp := do(t, http.MethodPost, url(port, "/pr"), []byte(body), map[string]string{"Content-Type": "application/json", "X-Team": team})
		if resp.status != http.StatusOK || strings.TrimSpace(resp.body) != "success" {
			t.Fatalf("POST %s: %d %q, want 200 success", body, resp.status, resp.body)
		}
	}

	post(`{"action": "closed"}`, "payments")
	post(`{"action": "opened"}`, "search")
	post(`plain text`, "payments") // body is a string: body.action is an error
	if n := h.endOffset(topic); n != 0 {
		t.Fatalf("%d records after three filtered requests, want 0", n)
	}
	if got := h.filtered("hooks", "pr", "false"); got != 2 {
		t.Errorf("filtered (false) %v, want 2", got)
	}
	if got := h.filtered("hooks", "pr", "error"); got != 1 {
		t.Errorf("filtered (error) %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "its filter could not be evaluated") || !strings.Contains(logs.String(), "invalid operation") {
		t.Errorf("the evaluation error is not logged:\n%s", logs)
	}

	post(`{"action": "opened", "n": 1}`, "payments")
	e := decode(t, h.records(topic, 1)[0])
	d, _ := decodeData(t, e.Data())
	if !jsonEqual(t, d.Body, []byte(`{"action": "opened", "n": 1}`)) {
		t.Errorf("published body %s, want the passing request's", d.Body)
	}
	if got := h.counter("kevents_source_events_received_total", "hooks", "pr"); got != 4 {
		t.Errorf("received %v, want 4", got)
	}
	// Dropped events are not counted as published, here nor in Argo's metric.
	if got := h.counter("kevents_source_events_published_total", "hooks", "pr"); got != 1 {
		t.Errorf("published %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.metrics.ArgoEventsSent.WithLabelValues("default", "hooks", "pr")); got != 1 {
		t.Errorf("argo_events_events_sent_total %v, want 1", got)
	}
}

// TestFilterNATSJetStream: a pull source acknowledges what its filter drops (the JetStream ack
// floor passes it) and publishes what passes.
func TestFilterNATSJetStream(t *testing.T) {
	s := natsTestServer(t, natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := natsTestConn(t, s)
	js := natsJetStream(t, nc, "deliver.orders", "")
	h := newHarness(t, []string{"orders"})
	runSources(t, h.env, parseEventSources(t, natsYAML("orders", "big", s.ClientURL(), "deliver.orders",
		"      jsonBody: true\n      filter: {expression: \"body.total > 100 && subject == 'orders.eu'\"}\n")))
	natsWaitSubscribed(t, s, "deliver.orders", 1)
	topic := "kevents.src.default.orders"

	var last uint64
	for _, m := range []struct{ subject, body string }{
		{"orders.eu", `{"total": 5}`},      // false
		{"orders.us", `{"total": 500}`},    // false
		{"orders.eu", `{"total": "many"}`}, // "many" > 100: an error
		{"orders.eu", `{"total": 250}`},    // passes
	} {
		ack, err := js.Publish(m.subject, []byte(m.body))
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	h.waitRecords(topic, 1)
	e := decode(t, h.records(topic, 1)[0])
	d, _ := natsEventData(t, e.Data())
	if d.Subject != "orders.eu" || !jsonEqual(t, d.Body, []byte(`{"total": 250}`)) {
		t.Errorf("published %s %s, want the order of 250", d.Subject, d.Body)
	}
	// Every message is acknowledged, the dropped ones included: none is delivered again.
	deadline := time.Now().Add(10 * time.Second)
	for ci := natsConsumer(t, js); ci.AckFloor.Stream != last || ci.NumAckPending != 0; ci = natsConsumer(t, js) {
		if time.Now().After(deadline) {
			t.Fatalf("ack floor %d, ack pending %d, redelivered %d; want %d, 0", ci.AckFloor.Stream, ci.NumAckPending, ci.NumRedelivered, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := h.filtered("orders", "big", "false"); got != 2 {
		t.Errorf("filtered (false) %v, want 2", got)
	}
	if got := h.filtered("orders", "big", "error"); got != 1 {
		t.Errorf("filtered (error) %v, want 1", got)
	}
	if got := h.counter("kevents_source_events_published_total", "orders", "big"); got != 1 {
		t.Errorf("published %v, want 1", got)
	}
	if n := h.endOffset(topic); n != 1 {
		t.Errorf("%d records, want 1", n)
	}
}

// TestFilterCalendarOwned: an owned source commits only the events its filter passes, and its
// state moves past the dropped ones as well (each dropped fire is still recorded as done).
func TestFilterCalendarOwned(t *testing.T) {
	c := newOwnedCluster(t)
	// eventTime is "2006-01-02 15:04:05 +0000 UTC": pass the fires of even seconds.
	sources := parseEventSources(t, calendarYAML("      interval: 1s\n      filter:\n        expression: 'eventTime matches \":[0-5][02468] \"'\n"))
	env := ownedEnv(c.topo, c.brokers, "m1", io.Discard)
	stop := runSources(t, env, sources)
	h := &harness{t: t, metrics: env.Metrics}
	c.waitFires("2 fires", 15*time.Second, func(fs []fire) bool { return len(fs) >= 2 })
	deadline := time.Now().Add(10 * time.Second)
	for h.filtered("cal", "tick", "false") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("filtered %v, want >= 2", h.filtered("cal", "tick", "false"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()

	fs := c.fires()
	checkSequence(t, fs, 2*time.Second)
	for _, f := range fs {
		if f.at.Second()%2 != 0 {
			t.Errorf("fire at %s published; its filter is false", f.at)
		}
	}
	if got := counter(t, env, "kevents_source_events_published_total"); got != float64(len(fs)) {
		t.Errorf("published %v, want %d", got, len(fs))
	}
	// The state records of the calendar's key include the dropped fires: odd seconds.
	key := "default/cal/tick"
	odd := 0
	err := c.kc.ReadPartition(context.Background(), c.topo.Sources(), ownedPartition(key, 6), func(r *kgo.Record) error {
		var s calendarState
		if err := json.Unmarshal(r.Value, &s); err != nil {
			return err
		}
		if s.LastFire.Second()%2 != 0 {
			odd++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if float64(odd) != h.filtered("cal", "tick", "false") {
		t.Errorf("%d states of dropped (odd) fires committed, want one per filtered fire (%v)", odd, h.filtered("cal", "tick", "false"))
	}
}

// TestFilterKeepsPipelining: the filter of a source whose Publisher pipelines (the kafka
// source's) keeps PublishAsync; a dropped event is answered at once, a passing one by Kafka.
func TestFilterKeepsPipelining(t *testing.T) {
	h := newHarness(t, []string{"k"})
	es := parseEventSources(t, webhookYAML("k", "e", freePort(t), "/e", "      filter: {expression: \"body.keep\"}\n"))[0]
	b := Build{EventSource: es, Event: es.Spec.Events()[0], Topic: "kevents.src.default.k", Env: h.env}
	f, err := compileEventFilter(b.Event)
	if err != nil {
		t.Fatal(err)
	}
	f.b = b
	var p Publisher = filteringAsyncPublisher{filteringPublisher: filteringPublisher{next: h.env.Publisher, filter: f}, async: h.env.Publisher.(AsyncPublisher)}
	async, ok := p.(AsyncPublisher)
	if !ok {
		t.Fatal("the filtering publisher of an AsyncPublisher is no AsyncPublisher")
	}
	results := make(chan error, 2)
	for _, keep := range []bool{false, true} {
		e, err := b.NewEvent(fmt.Sprint(keep), time.Now(), map[string]any{"body": map[string]bool{"keep": keep}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		async.PublishAsync(ctx, b.Topic, e, func(err error) { results <- err })
	}
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("PublishAsync: %v", err)
		}
	}
	if e := decode(t, h.records(b.Topic, 1)[0]); e.ID() != "true" {
		t.Errorf("published event %s, want the one whose filter is true", e.ID())
	}
	if got := h.filtered("k", "e", "false"); got != 1 {
		t.Errorf("filtered %v, want 1", got)
	}
}
