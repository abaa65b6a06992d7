package source

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/kevents/kevents/api"
)

// The SNS tests run goaws (github.com/Admiral-Piett/goaws v0.5.4, built and started by
// goawsBinary and runGoaws of sqs_test.go) as the SNS server. What is real: goaws' SNS API in
// the AWS query protocol that aws-sdk-go-v2's sns client speaks (CreateTopic, Subscribe,
// ConfirmSubscription, which goaws checks against the token it sent, Publish), and goaws'
// HTTP deliveries: on Subscribe with protocol http it POSTs a SubscriptionConfirmation to the
// endpoint, and on Publish it POSTs the Notification (synchronously, once: goaws does not retry).
// The subscription's endpoint (webhook.url) is a recording proxy in front of the webhook, which
// notes each delivery's answer. goaws signs with a certificate served over plain http from
// 127.0.0.1, which validateSignature refuses (as Argo does); for signatures the proxy re-signs
// goaws' deliveries as SNS would, with a key whose certificate an httptest TLS server serves,
// and the test widens snsSigningCertHost to 127.0.0.1. Malformed bodies, forged confirmations
// and tampered signatures are posted by the test itself.

const (
	snsAccessKey = "AKIDsnsTEST0001"
	snsSecretKey = "SNS-secret-KEY-abcdefghijklmnop"
)

func snsSecrets() harnessOpt {
	return withSecrets(mapSecrets(map[string]string{"aws/access": snsAccessKey, "aws/secret": snsSecretKey}))
}

func snsYAML(name, fields string) string {
	return `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: ` + name + `
spec:
  sns:
    ev:
` + fields
}

// snsFields are the fields of an sns event delivered through hookURL to the webhook on port,
// subscribing to topicArn at the SNS API apiURL.
func snsFields(port int, hookURL, topicArn, apiURL, extra string) string {
	return fmt.Sprintf(`      webhook: {port: "%d", endpoint: /sns, method: POST, url: %s}
      topicArn: %s
      region: us-east-1
      endpoint: %s
      accessKey: {name: aws, key: access}
      secretKey: {name: aws, key: secret}
`, port, hookURL, topicArn, apiURL) + extra
}

// snsFastRetry makes failed Subscribe calls retry after 50 ms.
func snsFastRetry(t *testing.T) {
	old := snsRetry
	snsRetry.first, snsRetry.limit = 50*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { snsRetry = old })
}

func snsTestClient(endpoint string) *sns.Client {
	return sns.New(sns.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
}

func snsCreateTopic(t *testing.T, c *sns.Client, name string) string {
	t.Helper()
	out, err := c.CreateTopic(context.Background(), &sns.CreateTopicInput{Name: aws.String(name)})
	if err != nil {
		t.Fatalf("CreateTopic %s: %v", name, err)
	}
	return aws.ToString(out.TopicArn)
}

func snsPublish(t *testing.T, c *sns.Client, topicArn, subject, message string) {
	t.Helper()
	in := &sns.PublishInput{TopicArn: aws.String(topicArn), Message: aws.String(message)}
	if subject != "" {
		in.Subject = aws.String(subject)
	}
	if _, err := c.Publish(context.Background(), in); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

// snsAPICall is one call the source made to the SNS API.
type snsAPICall struct {
	action, topicArn, protocol, endpoint, token, keyID string
	status                                             int
}

// snsAPIProxy sits between the source and goaws and records the calls and goaws' answers.
type snsAPIProxy struct {
	URL   string
	mu    sync.Mutex
	calls []snsAPICall
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func startSNSAPIProxy(t *testing.T, target string) *snsAPIProxy {
	t.Helper()
	u, err := neturl.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &snsAPIProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := neturl.ParseQuery(string(body))
		c := snsAPICall{action: form.Get("Action"), topicArn: form.Get("TopicArn"), protocol: form.Get("Protocol"),
			endpoint: form.Get("Endpoint"), token: form.Get("Token")}
		if m := sigv4Credential.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			c.keyID = m[1]
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(rec, r)
		c.status = rec.status
		p.mu.Lock()
		p.calls = append(p.calls, c)
		p.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// find returns the calls of action on topicArn.
func (p *snsAPIProxy) find(action, topicArn string) []snsAPICall {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []snsAPICall
	for _, c := range p.calls {
		if c.action == action && c.topicArn == topicArn {
			out = append(out, c)
		}
	}
	return out
}

// snsDelivery is one delivery goaws made and the webhook's answer.
type snsDelivery struct {
	typ    string // x-amz-sns-message-type
	status int
	body   []byte // as the webhook got it
}

// snsDeliveryProxy is the subscription's endpoint: it forwards goaws' deliveries to the webhook,
// rewritten by rewrite when set, and records the webhook's answers.
type snsDeliveryProxy struct {
	URL     string
	mu      sync.Mutex
	got     []snsDelivery
	rewrite func([]byte) ([]byte, error)
}

func startSNSDeliveryProxy(t *testing.T, target string) *snsDeliveryProxy {
	t.Helper()
	p := &snsDeliveryProxy{}
	client := &http.Client{Timeout: 20 * time.Second}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		rewrite := p.rewrite
		p.mu.Unlock()
		if rewrite != nil {
			var err error
			if body, err = rewrite(body); err != nil {
				t.Errorf("rewrite a delivery: %v", err)
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		req, _ := http.NewRequest(r.Method, target, bytes.NewReader(body))
		req.Header = r.Header.Clone()
		d := snsDelivery{typ: r.Header.Get("X-Amz-Sns-Message-Type"), body: body}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		} else {
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			d.status = resp.StatusCode
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(answer)
		}
		p.mu.Lock()
		p.got = append(p.got, d)
		p.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *snsDeliveryProxy) setRewrite(f func([]byte) ([]byte, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rewrite = f
}

// last returns the last delivery of type typ, if any.
func (p *snsDeliveryProxy) last(typ string) (snsDelivery, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.got) - 1; i >= 0; i-- {
		if p.got[i].typ == typ {
			return p.got[i], true
		}
	}
	return snsDelivery{}, false
}

func (p *snsDeliveryProxy) count(typ string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, d := range p.got {
		if d.typ == typ {
			n++
		}
	}
	return n
}

// snsWaitDelivery waits for the n-th delivery of type typ and returns it.
func snsWaitDelivery(t *testing.T, p *snsDeliveryProxy, typ string, n int) snsDelivery {
	t.Helper()
	ghEventually(t, fmt.Sprintf("delivery %d of a %s", n, typ), func() bool { return p.count(typ) >= n })
	d, _ := p.last(typ)
	return d
}

// snsEdit decodes an SNS message, lets edit change it, and encodes it again.
func snsEdit(body []byte, edit func(m map[string]any)) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	edit(m)
	return json.Marshal(m)
}

// snsSigner signs messages as SNS does, with a key whose certificate a TLS server serves.
type snsSigner struct {
	key     *rsa.PrivateKey
	certURL string
	srv     *httptest.Server
	fetches atomic.Int32
}

func newSNSSigner(t *testing.T) *snsSigner {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "sns.us-east-1.amazonaws.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	s := &snsSigner{key: key}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/SimpleNotificationService-test.pem" {
			http.NotFound(w, r)
			return
		}
		s.fetches.Add(1)
		_, _ = w.Write(certPEM)
	}))
	t.Cleanup(s.srv.Close)
	s.certURL = s.srv.URL + "/SimpleNotificationService-test.pem"
	return s
}

// snsCanonical is the string SNS signs (AWS's "Verifying the signatures of Amazon SNS
// messages"): name and value lines of these fields in this order, Subject only when present.
func snsCanonical(m map[string]any) []byte {
	keys := []string{"Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"}
	if m["Type"] != "Notification" {
		keys = []string{"Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"}
	}
	var b bytes.Buffer
	for _, k := range keys {
		if v, _ := m[k].(string); v != "" {
			fmt.Fprintf(&b, "%s\n%s\n", k, v)
		}
	}
	return b.Bytes()
}

// sign signs body with SignatureVersion version ("1": SHA1, "2": SHA256) and points its
// SigningCertURL at the signer's certificate.
func (s *snsSigner) sign(body []byte, version string) ([]byte, error) {
	return snsEdit(body, func(m map[string]any) {
		m["SignatureVersion"] = version
		m["SigningCertURL"] = s.certURL
		h, sum := crypto.SHA1, []byte(nil)
		if version == "2" {
			d := sha256.Sum256(snsCanonical(m))
			h, sum = crypto.SHA256, d[:]
		} else {
			d := sha1.Sum(snsCanonical(m))
			sum = d[:]
		}
		sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, h, sum)
		if err != nil {
			panic(err)
		}
		m["Signature"] = base64.StdEncoding.EncodeToString(sig)
	})
}

// snsTrust has the source accept and fetch the signer's certificate.
func snsTrust(t *testing.T, s *snsSigner) {
	host, client := snsSigningCertHost, snsCertClient
	snsSigningCertHost, snsCertClient = regexp.MustCompile(`^127\.0\.0\.1$`), s.srv.Client()
	t.Cleanup(func() { snsSigningCertHost, snsCertClient = host, client })
}

// snsData is Argo's SNSEventData as a test reads it.
type snsData struct {
	Header   http.Header       `json:"header"`
	Body     json.RawMessage   `json:"body"`
	Metadata map[string]string `json:"metadata"`
}

func TestSNSWithGoaws(t *testing.T) {
	goaws, _ := runGoaws(t, goawsBinary(t), freePort(t))
	apiProxy := startSNSAPIProxy(t, goaws)
	client := snsTestClient(goaws)

	t.Run("subscribe confirm notify", func(t *testing.T) {
		snsFastRetry(t)
		port := freePort(t)
		h := newHarness(t, []string{"sns1"}, snsSecrets())
		logs := ghCaptureLog(h)
		dp := startSNSDeliveryProxy(t, url(port, "/sns"))
		topicArn := "arn:aws:sns:us-east-1:100010001000:kevents-sns1"
		ghStart(t, h, parseEventSources(t, snsYAML("sns1", snsFields(port, dp.URL, topicArn, apiProxy.URL, "      metadata: {team: ops}\n"))))

		// The topic does not exist yet: SNS refuses the Subscribe and the source tries again.
		ghEventually(t, "a refused Subscribe", func() bool {
			calls := apiProxy.find("Subscribe", topicArn)
			return len(calls) > 0 && calls[0].status == http.StatusBadRequest
		})
		// Not subscribed: reported so, naming the event and saying what fails.
		if err := h.waitConnected("sns1", "ev", 0, "a refused Subscribe"); !strings.Contains(err.Error(), "subscribe") {
			t.Errorf("sources ready check: %v; want it to say the Subscribe fails", err)
		}
		if got := snsCreateTopic(t, client, "kevents-sns1"); got != topicArn {
			t.Fatalf("CreateTopic: ARN %q, want %q", got, topicArn)
		}
		conf := snsWaitDelivery(t, dp, "SubscriptionConfirmation", 1)
		if conf.status != http.StatusOK {
			t.Fatalf("SubscriptionConfirmation answered %d, want 200 after ConfirmSubscription", conf.status)
		}
		var sub snsAPICall
		ghEventually(t, "an accepted Subscribe", func() bool {
			for _, c := range apiProxy.find("Subscribe", topicArn) {
				if c.status == http.StatusOK {
					sub = c
				}
			}
			return sub.status == http.StatusOK
		})
		_ = h.waitConnected("sns1", "ev", 1, "an accepted Subscribe")
		if sub.protocol != "http" || sub.endpoint != dp.URL+"/sns" || sub.keyID != snsAccessKey {
			t.Errorf("Subscribe protocol %q endpoint %q key %q, want http, %s/sns, the accessKey", sub.protocol, sub.endpoint, sub.keyID, dp.URL)
		}
		var confToken string
		_ = json.Unmarshal(conf.body, &struct {
			Token *string `json:"Token"`
		}{&confToken})
		confirms := apiProxy.find("ConfirmSubscription", topicArn)
		if len(confirms) != 1 || confirms[0].status != http.StatusOK || confirms[0].token != confToken || confToken == "" {
			t.Fatalf("ConfirmSubscription calls %+v, want one accepted with the delivered token", confirms)
		}

		snsPublish(t, client, topicArn, "new order", `{"order": 7}`)
		n := snsWaitDelivery(t, dp, "Notification", 1)
		if n.status != http.StatusOK {
			t.Fatalf("Notification answered %d, want 200", n.status)
		}

		// Refusals, posted by the test.
		u := url(port, "/sns")
		for name, b := range map[string]string{"not JSON": "not json", "no Type": `{"Message":"x"}`, "not an object": `[1]`} {
			if resp := do(t, http.MethodPost, u, []byte(b), nil); resp.status != http.StatusBadRequest {
				t.Errorf("%s: %d %q, want 400", name, resp.status, resp.body)
			}
		}
		if resp := do(t, http.MethodPost, u, []byte(`{"Type":"UnsubscribeConfirmation","MessageId":"u1","TopicArn":"`+topicArn+`","Token":"t"}`), nil); resp.status != http.StatusOK || !strings.Contains(resp.body, "ignored") {
			t.Errorf("UnsubscribeConfirmation: %d %q, want 200 ignored", resp.status, resp.body)
		}
		forged, err := snsEdit(conf.body, func(m map[string]any) { m["Token"] = "forged-token" })
		if err != nil {
			t.Fatal(err)
		}
		if resp := do(t, http.MethodPost, u, forged, nil); resp.status != http.StatusBadGateway {
			t.Errorf("confirmation with a token SNS does not know: %d %q, want 502", resp.status, resp.body)
		}
		if confirms := apiProxy.find("ConfirmSubscription", topicArn); len(confirms) != 2 || confirms[1].status == http.StatusOK {
			t.Errorf("ConfirmSubscription calls %+v, want the forged one refused by SNS", confirms)
		}

		e := decode(t, h.records("kevents.src.default.sns1", 1)[0])
		var delivered struct{ MessageId, Message, Subject, TopicArn string }
		if err := json.Unmarshal(n.body, &delivered); err != nil {
			t.Fatal(err)
		}
		var d snsData
		if err := json.Unmarshal(e.Data(), &d); err != nil {
			t.Fatal(err)
		}
		if e.Type() != "sns" || e.Source() != "sns1" || e.Subject() != "ev" || e.ID() != delivered.MessageId || delivered.MessageId == "" {
			t.Errorf("event type %q source %q subject %q id %q: want sns, sns1, ev, the SNS MessageId %q", e.Type(), e.Source(), e.Subject(), e.ID(), delivered.MessageId)
		}
		if !jsonEqual(t, d.Body, n.body) || delivered.Message != `{"order": 7}` || delivered.Subject != "new order" || delivered.TopicArn != topicArn {
			t.Errorf("data.body %s: want the delivered SNS message", d.Body)
		}
		if d.Header.Get("X-Amz-Sns-Message-Type") != "Notification" || d.Header.Get("X-Amz-Sns-Topic-Arn") != topicArn || d.Metadata["team"] != "ops" {
			t.Errorf("data.header %v metadata %v: want the request headers and the metadata", d.Header, d.Metadata)
		}
		if l := logs.String(); strings.Contains(l, snsSecretKey) || strings.Contains(l, confToken) {
			t.Error("the secret key or the confirmation token appears in the log")
		}
	})

	t.Run("Kafka refuses", func(t *testing.T) {
		port := freePort(t)
		h := newHarness(t, []string{"sns2"}, snsSecrets(), withDeadBroker(), withPublishTimeout(time.Second))
		dp := startSNSDeliveryProxy(t, url(port, "/sns"))
		topicArn := snsCreateTopic(t, client, "kevents-sns2")
		ghStart(t, h, parseEventSources(t, snsYAML("sns2", snsFields(port, dp.URL, topicArn, apiProxy.URL, ""))))
		if conf := snsWaitDelivery(t, dp, "SubscriptionConfirmation", 1); conf.status != http.StatusOK {
			t.Fatalf("SubscriptionConfirmation answered %d, want 200 (no Kafka needed)", conf.status)
		}
		snsPublish(t, client, topicArn, "", "lost?")
		n := snsWaitDelivery(t, dp, "Notification", 1)
		if n.status != http.StatusServiceUnavailable {
			t.Fatalf("Notification with Kafka unreachable answered %d, want 503 so that SNS retries", n.status)
		}
		// SNS's retry of the same delivery gets the same answer.
		if resp := do(t, http.MethodPost, url(port, "/sns"), n.body, map[string]string{"X-Amz-Sns-Message-Type": "Notification"}); resp.status != http.StatusServiceUnavailable {
			t.Errorf("retried delivery: %d %q, want 503", resp.status, resp.body)
		}
		if got := h.counter("kevents_source_publish_failures_total", "sns2", "ev"); got != 2 {
			t.Errorf("publish failures %v, want 2", got)
		}
		if got := h.counter("kevents_source_events_published_total", "sns2", "ev"); got != 0 {
			t.Errorf("events published %v, want 0", got)
		}
	})

	t.Run("signatures", func(t *testing.T) {
		signer := newSNSSigner(t)
		snsTrust(t, signer)
		port := freePort(t)
		h := newHarness(t, []string{"sns3"}, snsSecrets())
		dp := startSNSDeliveryProxy(t, url(port, "/sns"))
		dp.setRewrite(func(b []byte) ([]byte, error) { return signer.sign(b, "1") })
		topicArn := snsCreateTopic(t, client, "kevents-sns3")
		ghStart(t, h, parseEventSources(t, snsYAML("sns3", snsFields(port, dp.URL, topicArn, apiProxy.URL, "      validateSignature: true\n"))))

		// goaws' confirmation, signed as SNS signs (version 1, SHA1), is verified and confirmed.
		if conf := snsWaitDelivery(t, dp, "SubscriptionConfirmation", 1); conf.status != http.StatusOK {
			t.Fatalf("signed SubscriptionConfirmation answered %d, want 200", conf.status)
		}
		dp.setRewrite(func(b []byte) ([]byte, error) { return signer.sign(b, "2") })
		snsPublish(t, client, topicArn, "signed", "version 2")
		n := snsWaitDelivery(t, dp, "Notification", 1)
		if n.status != http.StatusOK {
			t.Fatalf("Notification signed with version 2 answered %d, want 200", n.status)
		}
		// goaws' own signature: its certificate is on http://127.0.0.1, not an https SNS host.
		dp.setRewrite(nil)
		snsPublish(t, client, topicArn, "", "goaws-signed")
		if d := snsWaitDelivery(t, dp, "Notification", 2); d.status != http.StatusForbidden {
			t.Errorf("goaws-signed Notification (SigningCertURL %s) answered %d, want 403", snsField(d.body, "SigningCertURL"), d.status)
		}

		u := url(port, "/sns")
		post := func(name string, body []byte, want int) {
			t.Helper()
			if resp := do(t, http.MethodPost, u, body, nil); resp.status != want {
				t.Errorf("%s: %d %q, want %d", name, resp.status, resp.body, want)
			}
		}
		must := func(b []byte, err error) []byte {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		noSubject := must(snsEdit(n.body, func(m map[string]any) { m["MessageId"] = "no-subject"; delete(m, "Subject") }))
		post("version 1 without a Subject", must(signer.sign(noSubject, "1")), http.StatusOK)
		signed := must(signer.sign(n.body, "1"))
		post("message altered after signing", must(snsEdit(signed, func(m map[string]any) { m["Message"] = "altered" })), http.StatusForbidden)
		post("Subject altered after signing", must(snsEdit(signed, func(m map[string]any) { m["Subject"] = "" })), http.StatusForbidden)
		other := newSNSSigner(t)
		post("signed with another key", must(snsEdit(must(other.sign(n.body, "1")), func(m map[string]any) { m["SigningCertURL"] = signer.certURL })), http.StatusForbidden)
		fetches := signer.fetches.Load()
		post("certificate not on an SNS host", must(snsEdit(signed, func(m map[string]any) {
			m["SigningCertURL"] = "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem"
		})), http.StatusForbidden)
		post("certificate over http", must(snsEdit(signed, func(m map[string]any) {
			m["SigningCertURL"] = strings.Replace(signer.certURL, "https://", "http://", 1)
		})), http.StatusForbidden)
		post("certificate missing", must(snsEdit(signed, func(m map[string]any) { m["SigningCertURL"] = signer.srv.URL + "/missing.pem" })), http.StatusBadGateway)
		post("no signature", must(snsEdit(signed, func(m map[string]any) { delete(m, "Signature") })), http.StatusUnauthorized)
		post("signature not base64", must(snsEdit(signed, func(m map[string]any) { m["Signature"] = "%%%" })), http.StatusUnauthorized)
		post("SignatureVersion 3", must(snsEdit(signed, func(m map[string]any) { m["SignatureVersion"] = "3" })), http.StatusUnauthorized)
		if got := signer.fetches.Load(); got != fetches || got != 1 {
			t.Errorf("certificate fetched %d times (%d before the refusals), want once: cached, and never for refused URLs", got, fetches)
		}

		recs := h.records("kevents.src.default.sns3", 2)
		if id := decode(t, recs[1]).ID(); id != "no-subject" {
			t.Errorf("second event id %q, want no-subject", id)
		}
	})
}

// snsField reads a top-level string field of a JSON object, for messages.
func snsField(body []byte, field string) string {
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	s, _ := m[field].(string)
	return s
}

// TestSNSSigningCertHost checks Argo's pattern of SNS certificate hosts.
func TestSNSSigningCertHost(t *testing.T) {
	for host, want := range map[string]bool{
		"sns.us-east-1.amazonaws.com":               true,
		"sns.cn-north-1.amazonaws.com.cn":           true,
		"sns.eu-west-3.amazonaws.com":               true,
		"sns.us-east-1.amazonaws.com.evil.example":  false,
		"evil-sns.us-east-1.amazonaws.com":          false,
		"sns.x.amazonaws.com":                       false,
		"127.0.0.1":                                 false,
		"s3.us-east-1.amazonaws.com":                false,
		"sns.us-east-1.amazonaws.com.cn.example.io": false,
	} {
		if got := snsSigningCertHost.MatchString(host); got != want {
			t.Errorf("%s: allowed %v, want %v", host, got, want)
		}
	}
}

func TestCheckSNS(t *testing.T) {
	base := func(extra string) string {
		return `      webhook: {port: "12000", endpoint: /sns, method: POST, url: https://kevents.example.com}
      topicArn: arn:aws:sns:us-east-1:123456789012:orders
      region: us-east-1
` + extra
	}
	cases := []struct {
		name, fields string
		want         []string
		notSupported bool
	}{
		{"minimal", base(""), nil, false},
		{"all fields", base(`      accessKey: {name: aws, key: a}
      secretKey: {name: aws, key: s}
      roleARN: arn:aws:iam::123456789012:role/r
      metadata: {a: b}
      validateSignature: true
      endpoint: http://localhost:4566
`), nil, false},
		{"no topicArn", `      webhook: {port: "12000", endpoint: /sns, method: POST, url: https://k.example.com}
      region: us-east-1
`, []string{"topicArn: missing"}, false},
		{"topicArn not an ARN", strings.Replace(base(""), "arn:aws:sns:us-east-1:123456789012:orders", "orders", 1), []string{`topicArn: "orders" is not an SNS topic ARN`}, false},
		{"topicArn of SQS", strings.Replace(base(""), "aws:sns:", "aws:sqs:", 1), []string{"is not an SNS topic ARN"}, false},
		{"no region", strings.Replace(base(""), "      region: us-east-1\n", "", 1), []string{"region: missing"}, false},
		{"no webhook", "      topicArn: arn:aws:sns:us-east-1:1:t\n      region: us-east-1\n", []string{"webhook: missing"}, false},
		{"no webhook url", strings.Replace(base(""), ", url: https://kevents.example.com", "", 1), []string{"webhook.url: missing"}, false},
		{"webhook url not a URL", strings.Replace(base(""), "https://kevents.example.com", "kevents.example.com", 1), []string{"webhook.url:"}, false},
		{"webhook port", strings.Replace(base(""), `"12000"`, `"http"`, 1), []string{"webhook.port:"}, false},
		{"webhook endpoint", strings.Replace(base(""), "endpoint: /sns", "endpoint: sns", 1), []string{"webhook.endpoint:"}, false},
		{"webhook method GET", strings.Replace(base(""), "method: POST", "method: GET", 1), []string{`webhook.method: "GET"; expected POST`}, false},
		{"accessKey alone", base("      accessKey: {name: aws, key: a}\n"), []string{"secretKey: missing"}, false},
		{"secretKey without key", base("      accessKey: {name: aws, key: a}\n      secretKey: {name: aws}\n"), []string{"secretKey: expected both name and key"}, false},
		{"endpoint not a URL", base("      endpoint: localhost:4566\n"), []string{`endpoint: "localhost:4566"`}, false},
		{"filter", base("      filter: {expression: \"body.n ==\"}\n"), []string{`filter.expression: "body.n =="`}, false},
		{"webhook TLS without key", strings.Replace(base(""), "url: https://kevents.example.com", "url: https://kevents.example.com, serverCertSecret: {name: s, key: c}", 1), []string{"webhook.serverKeySecret: missing"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, snsYAML("es", c.fields))[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range append(c.want, "spec.sns.ev") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != c.notSupported {
				t.Errorf("errors.Is(err, ErrNotSupported) = %v, want %v: %v", got, c.notSupported, err)
			}
		})
	}
}

// TestSNSArgoExample: Argo's own aws-sns example loads and passes Check.
func TestSNSArgoExample(t *testing.T) {
	b, err := os.ReadFile("../../shared/argo-examples/event-sources/aws-sns.yaml")
	if err != nil {
		t.Skipf("Argo's examples are not here: %v", err)
	}
	es := parseEventSources(t, string(b))[0]
	if err := Check(es); err != nil {
		t.Fatalf("Check: %v", err)
	}
	s := es.Spec.SNS["example"]
	if s.TopicArn != "arn:aws:sns:us-east-1:XXXXXXXX:test" || s.Webhook == nil || s.Webhook.URL != "http://url-that-is-reachable-from-AWS" || s.SecretKey == nil || s.SecretKey.Key != "secretkey" {
		t.Errorf("spec %+v: not read as written", s)
	}
}
