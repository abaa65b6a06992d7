package source

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/internal/secrets"
)

// The SQS tests run goaws (github.com/Admiral-Piett/goaws v0.5.4), an SQS emulator speaking
// the AWS JSON protocol of aws-sdk-go-v2, as a child process: its packages cannot be linked into
// this test binary, as the main module's go.sum does not list goaws' own dependencies. The test
// builds its command (app/cmd) from the module cache with goaws' own go.mod into t.TempDir() and
// runs it on a free port with a generated configuration.

// goawsModule is the SQS emulator the tests run.
const goawsModule = "github.com/Admiral-Piett/goaws@v0.5.4"

// goawsBinary builds goaws' command into t.TempDir() and returns its path.
func goawsBinary(t *testing.T) string {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("the go command is needed to build the goaws SQS emulator: not found")
		}
	}
	// goaws is not a dependency of kevents: download it (a no-op once cached) to find its folder.
	download := exec.Command(goBin, "mod", "download", "-json", goawsModule)
	download.Dir = t.TempDir()
	download.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := download.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v %s %s", goawsModule, err, mod.Error, out)
	}
	dir := mod.Dir
	bin := filepath.Join(t.TempDir(), "goaws")
	build := exec.Command(goBin, "build", "-o", bin, "./app/cmd")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build goaws in %s: %v\n%s", dir, err, out)
	}
	return bin
}

// startGoaws runs goaws on a free port until the test ends and returns its endpoint.
func startGoaws(t *testing.T) string {
	t.Helper()
	endpoint, _ := runGoaws(t, goawsBinary(t), freePort(t))
	return endpoint
}

// runGoaws runs the goaws binary bin on port until stop is called or the test ends, and
// returns its endpoint.
func runGoaws(t *testing.T, bin string, port int) (endpoint string, stop func()) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "goaws.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`Local:
  Host: 127.0.0.1
  Port: "%d"
  Region: us-east-1
  AccountId: "100010001000"
  LogToFile: false
  QueueAttributeDefaults:
    VisibilityTimeout: 30
    ReceiveMessageWaitTimeSeconds: 0
    MaximumMessageSize: 262144
`, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	var output syncBuffer
	cmd := exec.Command(bin, "-config", conf, "-loglevel", "warn", "Local")
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("start goaws: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("goaws output:\n%s", output.String())
			}
		})
	}
	t.Cleanup(stop)
	endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return endpoint, stop
			}
		}
		select {
		case <-exited:
			t.Fatalf("goaws exited:\n%s", output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("goaws not healthy on %s after 15 s: %v\n%s", endpoint, err, output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sqsCall is one request a recording proxy forwarded.
type sqsCall struct {
	action      string // AmazonSQS.ReceiveMessage, ...
	accessKeyID string // from the SigV4 Authorization header
	token       string // X-Amz-Security-Token
	entries     int    // DeleteMessageBatch: messages deleted
	kafkaEnd    int64  // DeleteMessageBatch: records in the source topic when the delete arrived
}

// sqsProxy sits between the source and goaws and records who called what. On every delete it
// notes how many records the source topic holds at that moment.
type sqsProxy struct {
	URL      string
	mu       sync.Mutex
	calls    []sqsCall
	kafkaEnd func() int64
}

var sigv4Credential = regexp.MustCompile(`Credential=([^/]+)/`)

func startSQSProxy(t *testing.T, target string, kafkaEnd func() int64) *sqsProxy {
	t.Helper()
	u, err := neturl.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &sqsProxy{kafkaEnd: kafkaEnd}
	rp := httputil.NewSingleHostReverseProxy(u)
	// Long polls the source abandons when it stops are not errors worth printing.
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := sqsCall{action: r.Header.Get("X-Amz-Target"), token: r.Header.Get("X-Amz-Security-Token")}
		if m := sigv4Credential.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			c.accessKeyID = m[1]
		}
		if c.action == "AmazonSQS.DeleteMessageBatch" || c.action == "AmazonSQS.DeleteMessage" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct{ Entries []json.RawMessage }
			_ = json.Unmarshal(body, &req)
			c.entries = max(len(req.Entries), 1)
			if p.kafkaEnd != nil {
				c.kafkaEnd = p.kafkaEnd()
			}
		}
		p.mu.Lock()
		p.calls = append(p.calls, c)
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// sourceCalls returns the calls not made by the test's own client (whose key id is "test").
func (p *sqsProxy) sourceCalls() []sqsCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []sqsCall
	for _, c := range p.calls {
		if c.accessKeyID != "test" {
			out = append(out, c)
		}
	}
	return out
}

// kafkaEndOffset counts the records of partition 0 of topic; it is used from the proxy's
// goroutines, so it reports failures as -1 instead of failing the test.
func kafkaEndOffset(cl *kgo.Client, topic string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return -1
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok || o.Err != nil {
		return -1
	}
	return o.Offset
}

// sqsTestClient talks to goaws directly, as the producer of messages and to inspect queues.
func sqsTestClient(endpoint string) *sqs.Client {
	return sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
}

func createQueue(t *testing.T, c *sqs.Client, name string, attrs map[string]string) string {
	t.Helper()
	out, err := c.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err != nil {
		t.Fatalf("CreateQueue %s: %v", name, err)
	}
	return aws.ToString(out.QueueUrl)
}

func sendMessage(t *testing.T, c *sqs.Client, queueURL, body string, attrs map[string]sqstypes.MessageAttributeValue) string {
	t.Helper()
	out, err := c.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(queueURL), MessageBody: aws.String(body), MessageAttributes: attrs})
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	return aws.ToString(out.MessageId)
}

// queueLen is the number of messages in the queue, in flight or not (deleted ones are gone).
func queueLen(t *testing.T, c *sqs.Client, queueURL string) int {
	t.Helper()
	out, err := c.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll},
	})
	if err != nil {
		t.Fatalf("GetQueueAttributes: %v", err)
	}
	n, err := strconv.Atoi(out.Attributes["ApproximateNumberOfMessages"])
	if err != nil {
		t.Fatalf("ApproximateNumberOfMessages %q: %v", out.Attributes["ApproximateNumberOfMessages"], err)
	}
	return n
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shortVisibility makes the source ask for a visibility timeout of d for the rest of the test.
func shortVisibility(t *testing.T, d time.Duration) {
	old := sqsVisibility
	sqsVisibility = func(time.Duration) time.Duration { return d }
	t.Cleanup(func() { sqsVisibility = old })
}

func sqsYAML(name, event, extra string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: %s
spec:
  sqs:
    %s:
%s`, name, event, strings.TrimRight(extra, "\n")+"\n")
}

const (
	sqsAccessKey = "AKIDSQSTEST0123456789"
	sqsSecretKey = "sqs-secret-KEY-value-0123456789abcdef"
	sqsToken     = "sqs-session-TOKEN-value-42-xyz"
)

func sqsSecrets() secrets.Resolver {
	vals := map[string]string{
		secrets.EnvName("aws-creds", "accesskey"): sqsAccessKey,
		secrets.EnvName("aws-creds", "secretkey"): sqsSecretKey,
		secrets.EnvName("aws-creds", "token"):     sqsToken,
	}
	return secrets.Resolver{LookupEnv: func(k string) (string, bool) { v, ok := vals[k]; return v, ok }}
}

const sqsCredsYAML = `      accessKey:
        name: aws-creds
        key: accesskey
      secretKey:
        name: aws-creds
        key: secretkey
      sessionToken:
        name: aws-creds
        key: token
`

// sqsEventData is the data of an sqs event, decoded loosely.
type sqsEventData struct {
	MessageID         string                     `json:"messageId"`
	MessageAttributes map[string]json.RawMessage `json:"messageAttributes"`
	Body              json.RawMessage            `json:"body"`
	Metadata          map[string]string          `json:"metadata"`
}

func decodeSQSData(t *testing.T, data []byte) (sqsEventData, map[string]json.RawMessage) {
	t.Helper()
	var d sqsEventData
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("event data is not JSON: %v\n%s", err, data)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	return d, fields
}

func TestSQSPublishesAndDeletesAfterKafka(t *testing.T) {
	h := newHarness(t, []string{"orders"}, withSecrets(sqsSecrets()))
	var logs syncBuffer
	h.env.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	topic := "kevents.src.default.orders"
	goaws := startGoaws(t)
	proxy := startSQSProxy(t, goaws, func() int64 { return kafkaEndOffset(h.client, topic) })
	c := sqsTestClient(goaws)
	q := createQueue(t, c, "orders-q", nil)

	h.run(parseEventSources(t, sqsYAML("orders", "incoming", fmt.Sprintf(`      region: us-east-1
      queue: orders-q
      waitTimeSeconds: 1
      endpoint: %s
      metadata:
        team: payments
%s`, proxy.URL, sqsCredsYAML))))

	type sent struct {
		body  string
		attrs map[string]sqstypes.MessageAttributeValue
		want  string // messageAttributes in the event data
	}
	msgs := []sent{
		{
			body: "hello, \"world\" <&>",
			attrs: map[string]sqstypes.MessageAttributeValue{
				"kind": {DataType: aws.String("String"), StringValue: aws.String("order")},
				"n":    {DataType: aws.String("Number"), StringValue: aws.String("3")},
				"raw":  {DataType: aws.String("Binary"), BinaryValue: []byte{0, 1, 2, 255}},
			},
			want: `{
				"kind": {"BinaryListValues": null, "BinaryValue": null, "DataType": "String", "StringListValues": null, "StringValue": "order"},
				"n":    {"BinaryListValues": null, "BinaryValue": null, "DataType": "Number", "StringListValues": null, "StringValue": "3"},
				"raw":  {"BinaryListValues": null, "BinaryValue": "AAEC/w==", "DataType": "Binary", "StringListValues": null, "StringValue": null}
			}`,
		},
		{body: `{"order": 7}`, want: `null`},
		{body: "third", want: `null`},
	}
	before := time.Now().Add(-time.Second)
	byID := map[string]sent{}
	for _, m := range msgs {
		byID[sendMessage(t, c, q, m.body, m.attrs)] = m
	}

	waitUntil(t, 20*time.Second, "3 events in Kafka and an empty queue", func() bool {
		return h.endOffset(topic) == 3 && queueLen(t, c, q) == 0
	})
	for _, r := range h.records(topic, 3) {
		e := decode(t, r)
		m, ok := byID[e.ID()]
		if !ok {
			t.Errorf("event id %q is not the MessageId of a message sent", e.ID())
			continue
		}
		delete(byID, e.ID())
		if e.Source() != "orders" || e.Subject() != "incoming" || e.Type() != "sqs" {
			t.Errorf("source %q subject %q type %q, want orders incoming sqs", e.Source(), e.Subject(), e.Type())
		}
		if e.Time().Before(before) || e.Time().After(time.Now().Add(time.Second)) {
			t.Errorf("time %v, want about now", e.Time())
		}
		if e.DataContentType() != "application/json" {
			t.Errorf("datacontenttype %q, want application/json", e.DataContentType())
		}
		d, fields := decodeSQSData(t, e.Data())
		var keys []string
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if want := []string{"body", "messageAttributes", "messageId", "metadata"}; !reflect.DeepEqual(keys, want) {
			t.Errorf("data fields %v, want %v", keys, want)
		}
		if d.MessageID != e.ID() {
			t.Errorf("messageId %q, want the event id %q", d.MessageID, e.ID())
		}
		// Without jsonBody Argo puts the body's bytes in the event, which JSON writes in base64.
		var b64 string
		if err := json.Unmarshal(d.Body, &b64); err != nil {
			t.Errorf("body %s is not a JSON string: %v", d.Body, err)
		} else if raw, err := base64.StdEncoding.DecodeString(b64); err != nil || string(raw) != m.body {
			t.Errorf("body %s decodes to %q (%v), want %q", d.Body, raw, err, m.body)
		}
		if !jsonEqual(t, fields["messageAttributes"], []byte(m.want)) {
			t.Errorf("messageAttributes %s, want %s", fields["messageAttributes"], m.want)
		}
		if want := map[string]string{"team": "payments"}; !reflect.DeepEqual(d.Metadata, want) {
			t.Errorf("metadata %v, want %v", d.Metadata, want)
		}
	}

	// Deleted only after Kafka acknowledged: at every delete the topic already held the events of
	// every message deleted so far.
	var deleted int
	calls := proxy.sourceCalls()
	for _, c := range calls {
		if c.entries == 0 {
			continue
		}
		deleted += c.entries
		if c.kafkaEnd < int64(deleted) {
			t.Errorf("%s of %d message(s) arrived when the topic held %d records; %d messages deleted so far", c.action, c.entries, c.kafkaEnd, deleted)
		}
	}
	if deleted != 3 {
		t.Errorf("%d messages deleted through the source's calls, want 3", deleted)
	}

	// Credentials from Secrets sign every call, and appear in no event and no log line.
	if len(calls) == 0 {
		t.Fatal("the proxy saw no call from the source")
	}
	for _, c := range calls {
		if c.accessKeyID != sqsAccessKey || c.token != sqsToken {
			t.Errorf("%s signed with key id %q and session token %q, want the ones from the Secret", c.action, c.accessKeyID, c.token)
		}
	}
	var all []byte
	for _, r := range h.records(topic, 3) {
		all = append(all, r.Key...)
		all = append(all, r.Value...)
		for _, rh := range r.Headers {
			all = append(all, rh.Key...)
			all = append(all, rh.Value...)
		}
	}
	for _, secret := range []string{sqsAccessKey, sqsSecretKey, sqsToken} {
		if bytes.Contains(all, []byte(secret)) {
			t.Errorf("a credential from the Secret appears in the records")
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a credential from the Secret appears in the logs")
		}
	}
	if got := h.counter("kevents_source_events_received_total", "orders", "incoming"); got != 3 {
		t.Errorf("events received %v, want 3", got)
	}
	if got := h.counter("kevents_source_events_published_total", "orders", "incoming"); got != 3 {
		t.Errorf("events published %v, want 3", got)
	}
	if got := h.counter("kevents_source_publish_failures_total", "orders", "incoming"); got != 0 {
		t.Errorf("publish failures %v, want 0", got)
	}
}

// With Kafka down the message is not deleted; it is received again after its visibility
// timeout, and once Kafka is back (here: another member with a working Kafka) it becomes an
// event with the same id and is deleted.
func TestSQSKafkaDownLeavesMessage(t *testing.T) {
	shortVisibility(t, 2*time.Second)
	goaws := startGoaws(t)
	proxy := startSQSProxy(t, goaws, nil)
	c := sqsTestClient(goaws)
	q := createQueue(t, c, "down-q", nil)
	es := parseEventSources(t, sqsYAML("down", "ev", fmt.Sprintf(`      region: us-east-1
      queue: down-q
      waitTimeSeconds: 1
      endpoint: %s
%s`, proxy.URL, sqsCredsYAML)))

	dead := newHarness(t, []string{"down"}, withSecrets(sqsSecrets()), withPublishTimeout(time.Second), withDeadBroker())
	var logs syncBuffer
	dead.env.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	stop := runSources(t, dead.env, es)
	id := sendMessage(t, c, q, "keep me", nil)

	waitUntil(t, 30*time.Second, "the message received twice, and twice not acknowledged by Kafka", func() bool {
		return dead.counter("kevents_source_publish_failures_total", "down", "ev") >= 2 &&
			dead.counter("kevents_source_events_received_total", "down", "ev") >= 2
	})
	stop()
	if got := dead.counter("kevents_source_events_published_total", "down", "ev"); got != 0 {
		t.Errorf("events published %v with Kafka down, want 0", got)
	}
	for _, call := range proxy.sourceCalls() {
		if call.entries > 0 {
			t.Errorf("%s of %d message(s) while Kafka was down", call.action, call.entries)
		}
	}
	if n := queueLen(t, c, q); n != 1 {
		t.Fatalf("queue holds %d messages after Kafka failures, want the 1 sent", n)
	}
	if !strings.Contains(logs.String(), "Kafka did not acknowledge") || !strings.Contains(logs.String(), id) {
		t.Errorf("no warning naming message %s in the logs:\n%s", id, logs.String())
	}
	for _, secret := range []string{sqsAccessKey, sqsSecretKey, sqsToken} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a credential from the Secret appears in the logs")
		}
	}

	live := newHarness(t, []string{"down"}, withSecrets(sqsSecrets()))
	runSources(t, live.env, es)
	topic := "kevents.src.default.down"
	waitUntil(t, 20*time.Second, "the message published once Kafka is back, and deleted", func() bool {
		return live.endOffset(topic) == 1 && queueLen(t, c, q) == 0
	})
	e := decode(t, live.records(topic, 1)[0])
	if e.ID() != id {
		t.Errorf("redelivered event id %q, want the MessageId %q", e.ID(), id)
	}
	d, _ := decodeSQSData(t, e.Data())
	if string(d.Body) != strconv.Quote(base64.StdEncoding.EncodeToString([]byte("keep me"))) {
		t.Errorf("body %s, want base64 of %q", d.Body, "keep me")
	}
}

// jsonBody embeds the body as JSON. A body that is not JSON cannot become an event: without dlq
// it is deleted; with dlq it is left, and the queue's redrive policy moves it to the dead-letter
// queue. Either way the messages after it go through.
func TestSQSJSONBodyAndDLQ(t *testing.T) {
	for _, dlq := range []bool{false, true} {
		t.Run(fmt.Sprintf("dlq=%v", dlq), func(t *testing.T) {
			shortVisibility(t, 1*time.Second)
			h := newHarness(t, []string{"js"}, withSecrets(sqsSecrets()))
			goaws := startGoaws(t)
			c := sqsTestClient(goaws)
			createQueue(t, c, "js-dlq", nil)
			q := createQueue(t, c, "js-q", map[string]string{
				"RedrivePolicy": `{"maxReceiveCount": "2", "deadLetterTargetArn": "arn:aws:sqs:us-east-1:100010001000:js-dlq"}`,
			})
			dq, err := c.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String("js-dlq")})
			if err != nil {
				t.Fatal(err)
			}
			badID := sendMessage(t, c, q, "not json {", nil)
			goodID := sendMessage(t, c, q, `{"order": 7, "items": ["a", "b"], "html": "<b>"}`, nil)
			h.run(parseEventSources(t, sqsYAML("js", "ev", fmt.Sprintf(`      region: us-east-1
      queue: js-q
      waitTimeSeconds: 1
      jsonBody: true
      dlq: %v
      endpoint: %s
%s`, dlq, goaws, sqsCredsYAML))))
			topic := "kevents.src.default.js"

			wantDLQ := 0
			if dlq {
				wantDLQ = 1
			}
			waitUntil(t, 30*time.Second, fmt.Sprintf("1 event, an empty queue and %d message(s) in the dead-letter queue", wantDLQ), func() bool {
				return h.endOffset(topic) == 1 && queueLen(t, c, q) == 0 && queueLen(t, c, aws.ToString(dq.QueueUrl)) == wantDLQ
			})
			e := decode(t, h.records(topic, 1)[0])
			if e.ID() != goodID {
				t.Errorf("event id %q, want %q (the JSON message; %q is not JSON)", e.ID(), goodID, badID)
			}
			d, _ := decodeSQSData(t, e.Data())
			if !jsonEqual(t, d.Body, []byte(`{"order": 7, "items": ["a", "b"], "html": "<b>"}`)) {
				t.Errorf("body %s, want the message's JSON embedded", d.Body)
			}
			if dlq {
				out, err := c.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: dq.QueueUrl})
				if err != nil {
					t.Fatal(err)
				}
				if len(out.Messages) != 1 || aws.ToString(out.Messages[0].Body) != "not json {" {
					t.Errorf("dead-letter queue holds %+v, want the message that is not JSON", out.Messages)
				}
			}
		})
	}
}

// SQS is a competing-consumer queue: members running the same event need no coordination, and
// each message becomes one event.
func TestSQSCompetingMembers(t *testing.T) {
	h := newHarness(t, []string{"shared"}, withSecrets(sqsSecrets()))
	goaws := startGoaws(t)
	c := sqsTestClient(goaws)
	q := createQueue(t, c, "shared-q", nil)
	es := parseEventSources(t, sqsYAML("shared", "ev", fmt.Sprintf(`      region: us-east-1
      queue: shared-q
      waitTimeSeconds: 1
      endpoint: %s
%s`, goaws, sqsCredsYAML)))
	second := *h.env
	second.Metrics = metrics.New()
	runSources(t, h.env, es)
	runSources(t, &second, es)

	const n = 30
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		want[sendMessage(t, c, q, fmt.Sprintf("message %d", i), nil)] = true
	}
	topic := "kevents.src.default.shared"
	waitUntil(t, 30*time.Second, fmt.Sprintf("%d events and an empty queue", n), func() bool {
		return h.endOffset(topic) >= n && queueLen(t, c, q) == 0
	})
	got := map[string]bool{}
	for _, r := range h.records(topic, n) {
		id := decode(t, r).ID()
		if got[id] {
			t.Errorf("message %s published twice", id)
		}
		got[id] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event ids %v, want the MessageIds sent %v", got, want)
	}
	a := h.counter("kevents_source_events_published_total", "shared", "ev")
	b := (&harness{t: t, metrics: second.Metrics}).counter("kevents_source_events_published_total", "shared", "ev")
	if a+b != n {
		t.Errorf("members published %v + %v events, want %d in all", a, b, n)
	}
	t.Logf("the members published %v and %v of the %d events", a, b, n)
}

// STS and the default credential chain: no Secrets, credentials from the environment; with
// roleARN those assume the role through STS and the assumed credentials sign the SQS calls.
func TestSQSCredentialChainAndRoleARN(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT0")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-from-environment")
	t.Setenv("AWS_SESSION_TOKEN", "")

	const role = "arn:aws:iam::100010001000:role/kevents-reader"
	var stsMu sync.Mutex
	var stsCalls []string // access key id that signed each AssumeRole, and its RoleArn
	stsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		key := ""
		if m := sigv4Credential.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			key = m[1]
		}
		stsMu.Lock()
		stsCalls = append(stsCalls, key+" "+r.Form.Get("Action")+" "+r.Form.Get("RoleArn"))
		stsMu.Unlock()
		if r.Form.Get("Action") != "AssumeRole" {
			http.Error(w, "unexpected action", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIAASSUMEDROLE00001</AccessKeyId>
      <SecretAccessKey>assumed-secret</SecretAccessKey>
      <SessionToken>assumed-session-token</SessionToken>
      <Expiration>%s</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::100010001000:assumed-role/kevents-reader/s</Arn>
      <AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleResponse>`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer stsSrv.Close()
	t.Setenv("AWS_ENDPOINT_URL_STS", stsSrv.URL)

	for _, tc := range []struct {
		name, extra, wantKey, wantToken string
		sts                             []string
	}{
		{"default chain", "", "AKIDFROMENVIRONMENT0", "", nil},
		{"roleARN with the default chain", "      roleARN: " + role + "\n", "ASIAASSUMEDROLE00001", "assumed-session-token",
			[]string{"AKIDFROMENVIRONMENT0 AssumeRole " + role}},
		{"roleARN with Secrets", "      roleARN: " + role + "\n" + sqsCredsYAML, "ASIAASSUMEDROLE00001", "assumed-session-token",
			[]string{sqsAccessKey + " AssumeRole " + role}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stsMu.Lock()
			stsCalls = nil
			stsMu.Unlock()
			h := newHarness(t, []string{"creds"}, withSecrets(sqsSecrets()))
			goaws := startGoaws(t)
			proxy := startSQSProxy(t, goaws, nil)
			c := sqsTestClient(goaws)
			q := createQueue(t, c, "creds-q", nil)
			id := sendMessage(t, c, q, "x", nil)
			h.run(parseEventSources(t, sqsYAML("creds", "ev", fmt.Sprintf(`      region: us-east-1
      queue: creds-q
      waitTimeSeconds: 1
      endpoint: %s
%s`, proxy.URL, tc.extra))))
			topic := "kevents.src.default.creds"
			waitUntil(t, 20*time.Second, "1 event and an empty queue", func() bool {
				return h.endOffset(topic) == 1 && queueLen(t, c, q) == 0
			})
			if got := decode(t, h.records(topic, 1)[0]).ID(); got != id {
				t.Errorf("event id %q, want %q", got, id)
			}
			calls := proxy.sourceCalls()
			if len(calls) == 0 {
				t.Fatal("no call from the source")
			}
			for _, c := range calls {
				if c.accessKeyID != tc.wantKey || c.token != tc.wantToken {
					t.Errorf("%s signed by %q with token %q, want %q and %q", c.action, c.accessKeyID, c.token, tc.wantKey, tc.wantToken)
				}
			}
			stsMu.Lock()
			got := stsCalls
			stsMu.Unlock()
			if !reflect.DeepEqual(got, tc.sts) {
				t.Errorf("STS calls %q, want %q", got, tc.sts)
			}
		})
	}
}

func TestSQSUnresolvedSecret(t *testing.T) {
	h := newHarness(t, []string{"nosecret"})
	es := parseEventSources(t, sqsYAML("nosecret", "ev", `      region: us-east-1
      queue: q
`+sqsCredsYAML))
	_, err := Run(context.Background(), h.env, es)
	if err == nil {
		t.Fatal("Run with unresolvable credentials: no error")
	}
	if !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("error %v does not wrap secrets.ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "accessKey") || !strings.Contains(err.Error(), "spec.sqs.ev") {
		t.Errorf("error %q does not name the event and field", err)
	}

	// Only the session token is missing: the error names it and shows none of the values found.
	partial := sqsSecrets()
	lookup := partial.LookupEnv
	partial.LookupEnv = func(k string) (string, bool) {
		if k == secrets.EnvName("aws-creds", "token") {
			return "", false
		}
		return lookup(k)
	}
	h = newHarness(t, []string{"nosecret"}, withSecrets(partial))
	_, err = Run(context.Background(), h.env, es)
	if err == nil || !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "sessionToken") {
		t.Fatalf("Run without the session token: %v, want secrets.ErrNotFound naming sessionToken", err)
	}
	for _, secret := range []string{sqsAccessKey, sqsSecretKey} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a credential: %v", err)
		}
	}
}

// A queue that does not exist, or an endpoint that does not answer, is logged and retried until
// the source stops; the logs name the queue and show no credential.
func TestSQSUnavailableQueue(t *testing.T) {
	old := sqsRetry
	sqsRetry.first, sqsRetry.limit = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { sqsRetry = old })
	goaws := startGoaws(t)
	for _, tc := range []struct{ name, endpoint, queue string }{
		{"missing queue", goaws, "no-such-queue"},
		{"endpoint down", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), "some-queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, []string{"gone"}, withSecrets(sqsSecrets()))
			var logs syncBuffer
			h.env.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			stop := runSources(t, h.env, parseEventSources(t, sqsYAML("gone", "ev", fmt.Sprintf(`      region: us-east-1
      queue: %s
      endpoint: %s
%s`, tc.queue, tc.endpoint, sqsCredsYAML))))
			waitUntil(t, 20*time.Second, "two warnings about the queue URL", func() bool {
				return strings.Count(logs.String(), "cannot get the queue URL") >= 2
			})
			stop()
			if !strings.Contains(logs.String(), "queue="+tc.queue) {
				t.Errorf("logs do not name queue %s:\n%s", tc.queue, logs.String())
			}
			for _, secret := range []string{sqsAccessKey, sqsSecretKey, sqsToken} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("a credential from the Secret appears in the logs:\n%s", logs.String())
				}
			}
			if n := h.endOffset("kevents.src.default.gone"); n != 0 {
				t.Errorf("%d records", n)
			}
		})
	}
}

func TestSQSCheck(t *testing.T) {
	for _, tc := range []struct {
		name, fields string
		want         []string // substrings of the error; none means valid
		notSupported bool
	}{
		{"minimal", "      region: us-east-1\n      queue: q\n", nil, false},
		{"everything", `      region: eu-west-1
      queue: q
      waitTimeSeconds: 20
      roleARN: arn:aws:iam::1:role/r
      jsonBody: true
      queueAccountId: "123456789012"
      dlq: true
      endpoint: https://sqs.eu-west-1.amazonaws.com
      metadata: {a: b}
` + sqsCredsYAML, nil, false},
		{"no region", "      queue: q\n", []string{"spec.sqs.ev: region: missing"}, false},
		{"no queue", "      region: us-east-1\n", []string{"spec.sqs.ev: queue: missing"}, false},
		{"wait too long", "      region: r\n      queue: q\n      waitTimeSeconds: 21\n", []string{"waitTimeSeconds: 21; expected 0-20"}, false},
		{"wait negative", "      region: r\n      queue: q\n      waitTimeSeconds: -1\n", []string{"waitTimeSeconds: -1"}, false},
		{"access key alone", "      region: r\n      queue: q\n      accessKey: {name: s, key: a}\n", []string{"secretKey: missing"}, false},
		{"secret key alone", "      region: r\n      queue: q\n      secretKey: {name: s, key: a}\n", []string{"accessKey: missing"}, false},
		{"token alone", "      region: r\n      queue: q\n      sessionToken: {name: s, key: t}\n", []string{"sessionToken: set without accessKey"}, false},
		{"selector without key", "      region: r\n      queue: q\n      accessKey: {name: s}\n      secretKey: {name: s, key: b}\n", []string{`accessKey: name "s", key ""`}, false},
		{"bad endpoint", "      region: r\n      queue: q\n      endpoint: localhost:4566\n", []string{`endpoint: "localhost:4566"`}, false},
		{"filter", "      region: r\n      queue: q\n      filter: {expression: \"body.x == 1\"}\n", nil, false},
		{"several", "      waitTimeSeconds: 30\n", []string{"region: missing", "queue: missing", "waitTimeSeconds: 30"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var es *api.EventSource
			for _, d := range api.Parse("test.yaml", []byte(sqsYAML("check", "ev", tc.fields))) {
				if d.Err != nil {
					t.Fatalf("api.Parse: %v", d.Err)
				}
				es = d.EventSource
			}
			err := Check(es)
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Check: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check: nil, want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check: %q does not contain %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != tc.notSupported {
				t.Errorf("Check: %v; errors.Is(ErrNotSupported) = %v, want %v", err, got, tc.notSupported)
			}
		})
	}

	// Argo's own example loads.
	const example = "../../shared/argo-examples/event-sources/aws-sqs.yaml"
	b, err := os.ReadFile(example)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not found", example)
	}
	if err != nil {
		t.Fatal(err)
	}
	es := parseEventSources(t, string(b))
	if err := Check(es[0]); err != nil {
		t.Errorf("Check %s: %v", example, err)
	}
}

// TestConformanceSQS runs the suite on a goaws queue; goaws keeps its queues in memory, so its
// restart creates the queue again (empty, as the suite expects: everything was received).
func TestConformanceSQS(t *testing.T) {
	shortVisibility(t, time.Second) // a message Kafka refused comes back after a second
	runConformance(t, "sqs", func(t *testing.T) *conformanceOutside {
		bin, port := goawsBinary(t), freePort(t)
		endpoint, stop := runGoaws(t, bin, port)
		c := sqsTestClient(endpoint)
		q := createQueue(t, c, "conf-q", nil)
		return &conformanceOutside{
			fields: fmt.Sprintf(`      region: us-east-1
      queue: conf-q
      waitTimeSeconds: 1
      jsonBody: true
      endpoint: %s
      metadata: {team: payments}
%s`, endpoint, sqsCredsYAML),
			secrets: map[string]string{"aws-creds/accesskey": sqsAccessKey, "aws-creds/secretkey": sqsSecretKey, "aws-creds/token": sqsToken},
			ready:   func(*testing.T) {}, // the queue holds messages until received
			send:    func(t *testing.T, n int) { sendMessage(t, c, q, fmt.Sprintf(`{"n": %d}`, n), nil) },
			marker: func(t *testing.T, data []byte) int {
				d, fields := decodeSQSData(t, data)
				if len(fields) != 4 || d.MessageID == "" || d.Metadata["team"] != "payments" {
					t.Errorf("data %s; want Argo's messageId, messageAttributes, body and the event's metadata", data)
				}
				return conformanceMarker(t, d.Body)
			},
			sendBad: func(t *testing.T) { sendMessage(t, c, q, "not json {", nil) },
			badLog:  "sqs: the message cannot become an event; deleted (dlq: false)",
			settled: func(t *testing.T) bool {
				out, err := c.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
					QueueUrl: aws.String(q), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll},
				})
				if err != nil {
					t.Fatalf("GetQueueAttributes: %v", err)
				}
				return out.Attributes["ApproximateNumberOfMessages"] == "0" && out.Attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
			},
			outage: func(t *testing.T) func(*testing.T) {
				stop()
				return func(t *testing.T) {
					endpoint, stop = runGoaws(t, bin, port)
					createQueue(t, c, "conf-q", nil)
				}
			},
		}
	})
}
