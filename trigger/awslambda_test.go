package trigger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// No real Lambda can run here: these tests drive the executor against lambdaServer, a net/http
// server that speaks Lambda's Invoke REST API as AWS documents it
// (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html), through the real AWS SDK.

const (
	lambdaTestAccessKey = "AKIDLAMBDATEST000001"
	lambdaTestSecretKey = "lambda-very-secret-key"
)

func lambdaTestSecrets() secrets.Resolver {
	vals := map[string]string{
		secrets.EnvName("aws-creds", "access"): lambdaTestAccessKey,
		secrets.EnvName("aws-creds", "secret"): lambdaTestSecretKey,
	}
	return secrets.Resolver{LookupEnv: func(name string) (string, bool) { v, ok := vals[name]; return v, ok }}
}

var (
	lambdaAccessRef = &api.SecretKeySelector{Name: "aws-creds", Key: "access"}
	lambdaSecretRef = &api.SecretKeySelector{Name: "aws-creds", Key: "secret"}
)

// sigv4Auth parses a SigV4 Authorization header: access key id, date, region and service.
var sigv4Auth = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, SignedHeaders=[^,]+, Signature=[0-9a-f]{64}$`)

// lambdaCall is one Invoke as the test server saw it.
type lambdaCall struct {
	function       string
	accessKey      string
	region         string
	securityToken  string
	invocationType string
	clientContext  string // decoded
	payload        string
}

// lambdaServer answers POST /2015-03-31/functions/{name}/invocations by function name:
// "fails" fails inside the function (X-Amz-Function-Error), "missing" is 404
// ResourceNotFoundException, "throttled" is 429 TooManyRequestsException, "broken" is 500
// ServiceException, and any other function returns its input. Event invocations answer 202 and
// DryRun 204, as Lambda does. Requests not signed with SigV4 for the lambda service are 403.
type lambdaServer struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	calls []lambdaCall
}

var lambdaInvokePath = regexp.MustCompile(`^/2015-03-31/functions/([^/]+)/invocations$`)

func newLambdaServer(t *testing.T) *lambdaServer {
	t.Helper()
	s := &lambdaServer{t: t}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func lambdaError(w http.ResponseWriter, status int, typ, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"Type":"User","message":%q}`, message)
}

func (s *lambdaServer) serve(w http.ResponseWriter, r *http.Request) {
	m := lambdaInvokePath.FindStringSubmatch(r.URL.EscapedPath())
	if r.Method != http.MethodPost || m == nil {
		lambdaError(w, http.StatusNotFound, "UnknownOperationException", "unknown operation "+r.Method+" "+r.URL.Path)
		return
	}
	auth := sigv4Auth.FindStringSubmatch(r.Header.Get("Authorization"))
	if auth == nil || auth[4] != "lambda" {
		lambdaError(w, http.StatusForbidden, "IncompleteSignatureException", "missing or malformed SigV4 Authorization: "+r.Header.Get("Authorization"))
		return
	}
	name, _ := url.PathUnescape(m[1])
	body, _ := io.ReadAll(r.Body)
	c := lambdaCall{
		function: name, accessKey: auth[1], region: auth[3], securityToken: r.Header.Get("X-Amz-Security-Token"),
		invocationType: r.Header.Get("X-Amz-Invocation-Type"), payload: string(body),
	}
	if cc := r.Header.Get("X-Amz-Client-Context"); cc != "" {
		raw, err := base64.StdEncoding.DecodeString(cc)
		if err != nil {
			lambdaError(w, http.StatusBadRequest, "InvalidRequestContentException", "client context is not base64")
			return
		}
		c.clientContext = string(raw)
	}
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()

	switch name {
	case "missing":
		lambdaError(w, http.StatusNotFound, "ResourceNotFoundException", "Function not found: arn:aws:lambda:us-west-2:123456789012:function:missing")
		return
	case "throttled":
		w.Header().Set("Retry-After", "1")
		lambdaError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Rate Exceeded.")
		return
	case "broken":
		lambdaError(w, http.StatusInternalServerError, "ServiceException", "internal failure")
		return
	}
	w.Header().Set("X-Amz-Executed-Version", "$LATEST")
	switch c.invocationType {
	case "Event":
		w.WriteHeader(http.StatusAccepted)
		return
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if name == "fails" {
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		io.WriteString(w, `{"errorType":"Error","errorMessage":"boom: order 42 is invalid","trace":["at handler (index.js:3)"]}`)
		return
	}
	w.Write(body)
}

func (s *lambdaServer) invocations() []lambdaCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]lambdaCall(nil), s.calls...)
}

// isolateAWS keeps the developer's AWS files, profile, credentials and endpoints out of a test
// and points the executor at endpoint.
func isolateAWS(t *testing.T, endpoint string) {
	t.Helper()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, v := range []string{"AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL_STS"} {
		t.Setenv(v, "")
	}
	t.Setenv(AWSLambdaEndpointEnv, endpoint)
}

func lambdaExecutorForTest(t *testing.T, env Env) Executor {
	t.Helper()
	e, err := types.Lookup("awsLambda")
	if err != nil {
		t.Fatal(err)
	}
	x, err := e.New(env)
	if err != nil {
		t.Fatalf("awsLambda executor: %v", err)
	}
	return x
}

func renderLambdaForTest(t *testing.T, l *api.AWSLambdaTrigger, p Params) (LambdaInvocation, json.RawMessage, error) {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "invoke", AWSLambda: l}, Params: p})
	if err != nil {
		return LambdaInvocation{}, nil, err
	}
	if typ != "awsLambda" {
		t.Fatalf("Render type = %q; want awsLambda", typ)
	}
	var inv LambdaInvocation
	if err := json.Unmarshal(spec, &inv); err != nil {
		t.Fatalf("rendered spec is not a LambdaInvocation: %v: %s", err, spec)
	}
	return inv, spec, nil
}

func lambdaCommand(t *testing.T, inv LambdaInvocation) *Command {
	t.Helper()
	spec, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	id := CommandID("ns", "s", "invoke", []EventRef{{Dependency: "d", ID: "e-" + inv.FunctionName, EventSource: "es", EventName: "ev"}})
	return &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "invoke", Type: "awsLambda", Spec: spec}
}

func lambdaPayloadParam() []api.TriggerParameter {
	return []api.TriggerParameter{{Src: src("order"), Dest: "order"}}
}

// TestAWSLambdaRenderThenInvoke: the sensor renders the template (a trigger parameter sets the
// function name) and the executor invokes the function once, signed with the keys from the
// Secrets, with Argo's payload and the command id in the client context.
func TestAWSLambdaRenderThenInvoke(t *testing.T) {
	ls := newLambdaServer(t)
	isolateAWS(t, ls.srv.URL)
	inv, spec, err := renderLambdaForTest(t, &api.AWSLambdaTrigger{
		FunctionName: "placeholder", Region: "us-west-2",
		AccessKey: lambdaAccessRef, SecretKey: lambdaSecretRef,
		Payload:    lambdaPayloadParam(),
		Parameters: []api.TriggerParameter{{Src: src("fn"), Dest: "functionName"}},
	}, fakeParams{values: map[string]string{"fn": "arn:aws:lambda:us-west-2:123456789012:function:orders:live"}, payload: []byte(`{"order":{"id":42}}`)})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if inv.FunctionName != "arn:aws:lambda:us-west-2:123456789012:function:orders:live" {
		t.Errorf("rendered functionName %q; want the parameter's value", inv.FunctionName)
	}
	for _, secret := range []string{lambdaTestAccessKey, lambdaTestSecretKey} {
		if strings.Contains(string(spec), secret) {
			t.Fatalf("the rendered spec holds a credential: %s", spec)
		}
	}
	x := lambdaExecutorForTest(t, Env{Secrets: lambdaTestSecrets()})
	cmd := lambdaCommand(t, inv)
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	calls := ls.invocations()
	if len(calls) != 1 {
		t.Fatalf("%d invocations; want 1", len(calls))
	}
	c := calls[0]
	if c.function != inv.FunctionName || c.accessKey != lambdaTestAccessKey || c.region != "us-west-2" || c.securityToken != "" {
		t.Errorf("invoked %q signed by %q in %q (token %q); want %q signed by %q in us-west-2", c.function, c.accessKey, c.region, c.securityToken, inv.FunctionName, lambdaTestAccessKey)
	}
	if c.payload != `{"order":{"id":42}}` {
		t.Errorf("payload %s; want the rendered payload", c.payload)
	}
	if c.invocationType != "" && c.invocationType != "RequestResponse" {
		t.Errorf("invocation type %q; want RequestResponse (or none, Lambda's default)", c.invocationType)
	}
	var cc struct {
		Custom map[string]string `json:"custom"`
	}
	if err := json.Unmarshal([]byte(c.clientContext), &cc); err != nil || cc.Custom[LambdaCommandIDKey] != cmd.ID {
		t.Errorf("client context %q (%v); want custom.%s = %s", c.clientContext, err, LambdaCommandIDKey, cmd.ID)
	}

	// A second command reuses the client; an Event invocation carries no client context, which
	// Lambda would not pass to the function anyway.
	event := "Event"
	inv.InvocationType = event
	if err := x.Execute(context.Background(), lambdaCommand(t, inv)); err != nil {
		t.Fatalf("Execute Event: %v", err)
	}
	if calls = ls.invocations(); len(calls) != 2 || calls[1].invocationType != "Event" || calls[1].clientContext != "" {
		t.Errorf("Event invocation %+v; want X-Amz-Invocation-Type Event and no client context", calls[len(calls)-1])
	}
}

// TestAWSLambdaFailures: each failure is one invocation (the SDK does not retry on its own) and
// is terminal only when Lambda refused the request for good.
func TestAWSLambdaFailures(t *testing.T) {
	ls := newLambdaServer(t)
	isolateAWS(t, ls.srv.URL)
	x := lambdaExecutorForTest(t, Env{Secrets: lambdaTestSecrets()})
	for _, tc := range []struct {
		function string
		terminal bool
		is       error
		want     string
	}{
		{"fails", false, ErrLambdaFunction, "Unhandled (Error: boom: order 42 is invalid)"},
		{"missing", true, nil, "ResourceNotFoundException"},
		{"throttled", false, nil, "TooManyRequestsException"},
		{"broken", false, nil, "ServiceException"},
	} {
		t.Run(tc.function, func(t *testing.T) {
			before := len(ls.invocations())
			err := x.Execute(context.Background(), lambdaCommand(t, LambdaInvocation{
				FunctionName: tc.function, Region: "eu-central-1", AccessKey: lambdaAccessRef, SecretKey: lambdaSecretRef,
				Payload: []byte(`{"order":{"id":42}}`),
			}))
			if err == nil {
				t.Fatal("Execute: no error")
			}
			if got := len(ls.invocations()) - before; got != 1 {
				t.Errorf("%d invocations; want 1", got)
			}
			if errors.Is(err, ErrTerminal) != tc.terminal {
				t.Errorf("error %v: terminal %v; want %v", err, errors.Is(err, ErrTerminal), tc.terminal)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.function) {
				t.Errorf("error %q; want it to name the function and %q", err, tc.want)
			}
			if strings.Contains(err.Error(), lambdaTestSecretKey) {
				t.Errorf("error %q holds the secret key", err)
			}
		})
	}
}

// TestAWSLambdaStatusPolicy: policy.status.allow applies to Lambda's status, as in Argo.
func TestAWSLambdaStatusPolicy(t *testing.T) {
	ls := newLambdaServer(t)
	isolateAWS(t, ls.srv.URL)
	x := lambdaExecutorForTest(t, Env{Secrets: lambdaTestSecrets()})
	cmd := lambdaCommand(t, LambdaInvocation{FunctionName: "f", Region: "us-east-1", AccessKey: lambdaAccessRef,
		SecretKey: lambdaSecretRef, InvocationType: "Event", Payload: []byte(`{}`)})
	cmd.AllowStatus = []int{200}
	if err := x.Execute(context.Background(), cmd); err == nil || !strings.Contains(err.Error(), "status 202") {
		t.Errorf("Event invocation (202) with allow [200]: %v; want an error naming status 202", err)
	}
	cmd.AllowStatus = []int{200, 202}
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Errorf("Event invocation (202) with allow [200 202]: %v", err)
	}
}

// TestAWSLambdaDefaultChainAndRoleARN: without keys the AWS default chain signs (here the
// environment); with roleARN those credentials assume the role through STS and the assumed
// credentials sign the invocation.
func TestAWSLambdaDefaultChainAndRoleARN(t *testing.T) {
	ls := newLambdaServer(t)
	isolateAWS(t, ls.srv.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT0")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-from-environment")
	const role = "arn:aws:iam::100010001000:role/kevents-invoker"
	var mu sync.Mutex
	var stsCalls []string // access key that signed each call, action and role
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		key := ""
		if m := sigv4Auth.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			key = m[1]
		}
		mu.Lock()
		stsCalls = append(stsCalls, key+" "+r.Form.Get("Action")+" "+r.Form.Get("RoleArn"))
		mu.Unlock()
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
      <Arn>arn:aws:sts::100010001000:assumed-role/kevents-invoker/s</Arn>
      <AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleResponse>`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer sts.Close()
	t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)

	x := lambdaExecutorForTest(t, Env{Secrets: lambdaTestSecrets()})
	for _, tc := range []struct {
		name               string
		inv                LambdaInvocation
		wantKey, wantToken string
		wantSTS            []string
	}{
		{"default chain", LambdaInvocation{FunctionName: "f", Region: "us-east-1"}, "AKIDFROMENVIRONMENT0", "", nil},
		{"roleARN with the default chain", LambdaInvocation{FunctionName: "f", Region: "us-east-1", RoleARN: role},
			"ASIAASSUMEDROLE00001", "assumed-session-token", []string{"AKIDFROMENVIRONMENT0 AssumeRole " + role}},
		{"roleARN with Secrets", LambdaInvocation{FunctionName: "f", Region: "us-east-1", RoleARN: role, AccessKey: lambdaAccessRef, SecretKey: lambdaSecretRef},
			"ASIAASSUMEDROLE00001", "assumed-session-token", []string{lambdaTestAccessKey + " AssumeRole " + role}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			stsCalls = nil
			mu.Unlock()
			tc.inv.Payload = []byte(`{}`)
			if err := x.Execute(context.Background(), lambdaCommand(t, tc.inv)); err != nil {
				t.Fatalf("Execute: %v", err)
			}
			calls := ls.invocations()
			c := calls[len(calls)-1]
			if c.accessKey != tc.wantKey || c.securityToken != tc.wantToken {
				t.Errorf("signed by %q with token %q; want %q and %q", c.accessKey, c.securityToken, tc.wantKey, tc.wantToken)
			}
			mu.Lock()
			got := stsCalls
			mu.Unlock()
			if fmt.Sprint(got) != fmt.Sprint(tc.wantSTS) {
				t.Errorf("STS calls %q; want %q", got, tc.wantSTS)
			}
		})
	}
}

// TestAWSLambdaMissingSecret: a Secret that cannot be read fails the command (to be retried, it
// may appear) with an error that names it; the next command looks again.
func TestAWSLambdaMissingSecret(t *testing.T) {
	ls := newLambdaServer(t)
	isolateAWS(t, ls.srv.URL)
	present := false
	res := secrets.Resolver{LookupEnv: func(name string) (string, bool) {
		if !present {
			return "", false
		}
		return lambdaTestSecrets().LookupEnv(name)
	}}
	x := lambdaExecutorForTest(t, Env{Secrets: res})
	cmd := lambdaCommand(t, LambdaInvocation{FunctionName: "f", Region: "us-east-1", AccessKey: lambdaAccessRef, SecretKey: lambdaSecretRef, Payload: []byte(`{}`)})
	err := x.Execute(context.Background(), cmd)
	if err == nil || !errors.Is(err, secrets.ErrNotFound) || errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "accessKey") {
		t.Fatalf("Execute without the Secret: %v; want a retryable secrets.ErrNotFound naming accessKey", err)
	}
	if n := len(ls.invocations()); n != 0 {
		t.Errorf("%d invocations without credentials; want 0", n)
	}
	present = true
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute once the Secret exists: %v", err)
	}
}

func TestAWSLambdaEndpointEnv(t *testing.T) {
	isolateAWS(t, "localhost:4566")
	e, _ := types.Lookup("awsLambda")
	if _, err := e.New(Env{}); err == nil || !strings.Contains(err.Error(), AWSLambdaEndpointEnv) {
		t.Errorf("executor with %s=localhost:4566: %v; want an error naming the variable", AWSLambdaEndpointEnv, err)
	}
}

func TestCheckAWSLambda(t *testing.T) {
	bad := "Sync"
	ok := func() *api.AWSLambdaTrigger {
		return &api.AWSLambdaTrigger{FunctionName: "f", Region: "us-east-1", Payload: lambdaPayloadParam()}
	}
	for _, tc := range []struct {
		name string
		edit func(l *api.AWSLambdaTrigger)
		want string // "" for no error
	}{
		{"minimal", func(*api.AWSLambdaTrigger) {}, ""},
		{"keys", func(l *api.AWSLambdaTrigger) { l.AccessKey, l.SecretKey = lambdaAccessRef, lambdaSecretRef }, ""},
		{"no function", func(l *api.AWSLambdaTrigger) { l.FunctionName = "" }, "awsLambda.functionName: missing"},
		{"no region", func(l *api.AWSLambdaTrigger) { l.Region = "" }, "awsLambda.region: missing"},
		{"no payload", func(l *api.AWSLambdaTrigger) { l.Payload = nil }, "awsLambda.payload: missing"},
		{"access key alone", func(l *api.AWSLambdaTrigger) { l.AccessKey = lambdaAccessRef }, "awsLambda.secretKey: missing"},
		{"secret key without a key", func(l *api.AWSLambdaTrigger) {
			l.AccessKey, l.SecretKey = lambdaAccessRef, &api.SecretKeySelector{Name: "aws-creds"}
		}, "awsLambda.secretKey: a secret name and key are required"},
		{"invocation type", func(l *api.AWSLambdaTrigger) { l.InvocationType = &bad }, `awsLambda.invocationType: "Sync"; expected RequestResponse, Event or DryRun`},
		{"invocation type from a parameter", func(l *api.AWSLambdaTrigger) {
			l.InvocationType = &bad
			l.Parameters = []api.TriggerParameter{{Src: src("type"), Dest: "invocationType"}}
		}, ""},
		{"parameter without dest", func(l *api.AWSLambdaTrigger) {
			l.Parameters = []api.TriggerParameter{{Src: src("x")}}
		}, "awsLambda.parameters[0].dest: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := ok()
			tc.edit(l)
			err := Check(&api.TriggerTemplate{Name: "invoke", AWSLambda: l})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check: %v; want %q", err, tc.want)
			}
		})
	}

	// A parameter that sets a bad value is caught when rendering.
	l := ok()
	l.Parameters = []api.TriggerParameter{{Src: src("type"), Dest: "invocationType"}}
	_, _, err := renderLambdaForTest(t, l, fakeParams{values: map[string]string{"type": "Sync"}})
	if err == nil || !strings.Contains(err.Error(), "awsLambda.invocationType") {
		t.Errorf("Render with invocationType Sync from a parameter: %v; want an error naming the field", err)
	}
}
