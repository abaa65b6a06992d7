package trigger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/awsconfig"
	"github.com/kevents/kevents/internal/secrets"
)

// AWSLambdaEndpointEnv names the environment variable that overrides the endpoint of the Lambda
// API (default: the AWS endpoint of the trigger's region). The executor reads it once, when it
// is built. It exists for tests and for LocalStack-like targets (http://localhost:4566). The
// SDK's own AWS_ENDPOINT_URL_LAMBDA works too; this variable wins over it.
const AWSLambdaEndpointEnv = "KEVENTS_AWS_LAMBDA_ENDPOINT"

// LambdaCommandIDKey is the key of the command id in the custom part of the client context
// that synchronous (RequestResponse) invocations carry: context.clientContext.custom in
// Node.js, context.client_context.custom in Python. Argo sends nothing.
const LambdaCommandIDKey = "kevents-command-id"

// lambdaInvokeTimeout bounds one invocation: Lambda's longest function timeout (15 minutes),
// which a synchronous invocation may wait for, plus a margin.
const lambdaInvokeTimeout = 16 * time.Minute

// LambdaInvocation is the rendered command of an awsLambda trigger: the trigger's parameters
// are applied and the payload is built. Credentials stay Secret references.
type LambdaInvocation struct {
	FunctionName string                 `json:"functionName"`
	Region       string                 `json:"region"`
	AccessKey    *api.SecretKeySelector `json:"accessKey,omitempty"`
	SecretKey    *api.SecretKeySelector `json:"secretKey,omitempty"`
	RoleARN      string                 `json:"roleARN,omitempty"`
	// InvocationType is RequestResponse (when empty), Event or DryRun.
	InvocationType string `json:"invocationType,omitempty"`
	// Payload is Argo's ConstructPayload of the trigger's payload parameters.
	Payload []byte `json:"payload"`
}

func init() {
	Register("awsLambda", Spec{
		Summary: "Invokes an AWS Lambda function with a payload built from the events; credentials are " +
			"Secret references or the AWS default chain, roleARN is assumed through STS. " +
			AWSLambdaEndpointEnv + " overrides the Lambda endpoint.",
		Render: renderAWSLambda,
		Check:  checkAWSLambda,
	}, newAWSLambdaExecutor)
}

// lambdaInvocationTypes are the values Lambda accepts for the invocation type.
var lambdaInvocationTypes = map[string]bool{
	string(lambdatypes.InvocationTypeRequestResponse): true,
	string(lambdatypes.InvocationTypeEvent):           true,
	string(lambdatypes.InvocationTypeDryRun):          true,
}

// setByParameter reports whether one of ps sets field or a part of it.
func setByParameter(ps []api.TriggerParameter, field string) bool {
	for _, p := range ps {
		if p.Dest == field || strings.HasPrefix(p.Dest, field+".") {
			return true
		}
	}
	return false
}

// checkAWSLambda applies Argo's validation (functionName, region and payload are required) and
// checks the credentials and invocation type, unless a parameter sets them: those are checked
// when rendering.
func checkAWSLambda(t *api.TriggerTemplate) error {
	l := t.AWSLambda
	var errs []error
	if l.FunctionName == "" {
		errs = append(errs, errors.New("awsLambda.functionName: missing; expected a function name or ARN"))
	}
	if l.Region == "" {
		errs = append(errs, errors.New("awsLambda.region: missing; expected the AWS region of the function, e.g. us-east-1"))
	}
	if len(l.Payload) == 0 {
		// Argo refuses such a trigger too ("payload parameters are not specified").
		errs = append(errs, errors.New("awsLambda.payload: missing; the function's input is built from its parameters"))
	}
	if !setByParameter(l.Parameters, "accessKey") && !setByParameter(l.Parameters, "secretKey") {
		errs = append(errs, checkLambdaKeys(l))
	}
	if !setByParameter(l.Parameters, "invocationType") {
		errs = append(errs, checkLambdaInvocationType(l.InvocationType))
	}
	errs = append(errs, notifyCheckParameters("awsLambda", l.Parameters))
	return errors.Join(errs...)
}

func checkLambdaKeys(l *api.AWSLambdaTrigger) error {
	switch {
	case l.AccessKey != nil && l.SecretKey == nil:
		return errors.New("awsLambda.secretKey: missing; accessKey and secretKey go together")
	case l.AccessKey == nil && l.SecretKey != nil:
		return errors.New("awsLambda.accessKey: missing; accessKey and secretKey go together")
	case l.AccessKey == nil:
		return nil
	}
	return errors.Join(l.AccessKey.Check("awsLambda.accessKey"), l.SecretKey.Check("awsLambda.secretKey"))
}

func checkLambdaInvocationType(t *string) error {
	if t == nil || lambdaInvocationTypes[*t] {
		return nil
	}
	return fmt.Errorf("awsLambda.invocationType: %q; expected RequestResponse, Event or DryRun", *t)
}

func renderAWSLambda(in RenderInput) (json.RawMessage, error) {
	l := *in.Template.AWSLambda
	if len(l.Parameters) > 0 {
		doc, err := json.Marshal(l)
		if err != nil {
			return nil, err
		}
		if doc, err = in.Params.Apply(doc, l.Parameters); err != nil {
			return nil, fmt.Errorf("awsLambda.parameters: %w", err)
		}
		l = api.AWSLambdaTrigger{}
		if err := json.Unmarshal(doc, &l); err != nil {
			return nil, fmt.Errorf("awsLambda.parameters: result is not an awsLambda trigger: %w", err)
		}
	}
	// Parameters may have set any field: check the result as a whole.
	applied := l
	applied.Parameters = nil
	if err := checkAWSLambda(&api.TriggerTemplate{AWSLambda: &applied}); err != nil {
		return nil, err
	}
	payload, err := in.Params.Payload(l.Payload)
	if err != nil {
		return nil, fmt.Errorf("awsLambda.payload: %w", err)
	}
	inv := LambdaInvocation{
		FunctionName: l.FunctionName, Region: l.Region, AccessKey: l.AccessKey, SecretKey: l.SecretKey,
		RoleARN: l.RoleARN, Payload: payload,
	}
	if l.InvocationType != nil {
		inv.InvocationType = *l.InvocationType
	}
	return json.Marshal(inv)
}

func newAWSLambdaExecutor(env Env) (Executor, error) {
	x := &lambdaExecutor{secrets: env.Secrets, clients: map[string]*lambda.Client{}}
	if env.HTTPClient != nil {
		x.httpClient = env.HTTPClient
	}
	if v, ok := os.LookupEnv(AWSLambdaEndpointEnv); ok && v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s: %q; expected an absolute http or https URL such as http://localhost:4566", AWSLambdaEndpointEnv, v)
		}
		x.endpoint = v
	}
	return x, nil
}

// lambdaExecutor keeps one Lambda client per region and credentials, made on first use.
type lambdaExecutor struct {
	secrets    secrets.Resolver
	httpClient aws.HTTPClient // nil: the SDK's default
	endpoint   string         // empty: the SDK resolves it from the region

	mu      sync.Mutex
	clients map[string]*lambda.Client // by region, credential references and role
}

// ErrLambdaFunction marks an invocation in which the function failed: Lambda answered with
// X-Amz-Function-Error (Unhandled, or Handled for some runtimes). Argo counts it as a success;
// kevents retries it and sends it to the DLQ after the retries, as it does a failed call.
var ErrLambdaFunction = errors.New("awsLambda trigger: the function failed")

// Execute invokes the function once: the SDK's own retries are off, so that the trigger's
// retryStrategy alone decides how often a function runs.
func (x *lambdaExecutor) Execute(ctx context.Context, cmd *Command) error {
	var inv LambdaInvocation
	if err := json.Unmarshal(cmd.Spec, &inv); err != nil {
		return Terminal(fmt.Errorf("awsLambda trigger: malformed command %s: %w", cmd.ID, err))
	}
	client, err := x.client(ctx, &inv)
	if err != nil {
		return fmt.Errorf("awsLambda trigger: function %s in %s: %w", inv.FunctionName, inv.Region, err)
	}
	in := &lambda.InvokeInput{
		FunctionName:   aws.String(inv.FunctionName),
		Payload:        inv.Payload,
		InvocationType: lambdatypes.InvocationType(inv.InvocationType),
	}
	if in.InvocationType == "" || in.InvocationType == lambdatypes.InvocationTypeRequestResponse {
		// Invoke has no idempotency key, Lambda passes no request header to the function, and
		// the payload must stay Argo's: the command id travels in the client context, which
		// Lambda hands to the function for synchronous invocations only.
		cc, err := json.Marshal(map[string]map[string]string{"custom": {LambdaCommandIDKey: cmd.ID}})
		if err != nil {
			return err
		}
		in.ClientContext = aws.String(base64.StdEncoding.EncodeToString(cc))
	}
	ctx, cancel := context.WithTimeout(ctx, lambdaInvokeTimeout)
	defer cancel()
	out, err := client.Invoke(ctx, in)
	if err != nil {
		err = fmt.Errorf("awsLambda trigger: invoke %s in %s: %w", inv.FunctionName, inv.Region, err)
		if lambdaTerminal(err) {
			return Terminal(err)
		}
		return err
	}
	if out.FunctionError != nil {
		return fmt.Errorf("%w: %s: %s (%s)", ErrLambdaFunction, inv.FunctionName, aws.ToString(out.FunctionError), lambdaErrorSummary(out.Payload))
	}
	if !statusAllowed(int(out.StatusCode), cmd.AllowStatus) {
		return fmt.Errorf("awsLambda trigger: invoke %s in %s: status %d; expected one of policy.status.allow %v", inv.FunctionName, inv.Region, out.StatusCode, cmd.AllowStatus)
	}
	return nil
}

// client returns the client for the invocation's region and credentials, building it on first
// use. A client is kept only once it could be built, so a missing Secret is looked up again by
// the next command.
func (x *lambdaExecutor) client(ctx context.Context, inv *LambdaInvocation) (*lambda.Client, error) {
	key, err := json.Marshal([]any{inv.Region, inv.AccessKey, inv.SecretKey, inv.RoleARN}) // references, not values
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if c := x.clients[string(key)]; c != nil {
		return c, nil
	}
	if err := checkLambdaKeys(&api.AWSLambdaTrigger{AccessKey: inv.AccessKey, SecretKey: inv.SecretKey}); err != nil {
		return nil, err
	}
	cfg, err := awsconfig.Load(ctx, awsconfig.Options{
		Region: inv.Region, AccessKey: inv.AccessKey, SecretKey: inv.SecretKey, RoleARN: inv.RoleARN,
		Secrets: x.secrets, HTTPClient: x.httpClient,
	})
	if err != nil {
		return nil, err
	}
	c := lambda.NewFromConfig(cfg, func(o *lambda.Options) {
		o.Retryer = aws.NopRetryer{}
		if x.endpoint != "" {
			o.BaseEndpoint = aws.String(x.endpoint)
		}
	})
	x.clients[string(key)] = c
	return c, nil
}

// lambdaTerminal tells the errors no retry fixes: Lambda refused the request with a 4xx (no
// such function, access denied, invalid payload, payload too large), except throttling, a
// function being updated (ResourceConflictException) and expired credentials, which pass.
func lambdaTerminal(err error) bool {
	var status interface{ HTTPStatusCode() int }
	if !errors.As(err, &status) || status.HTTPStatusCode() < 400 || status.HTTPStatusCode() > 499 {
		return false
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "TooManyRequestsException", "ResourceConflictException", "ExpiredTokenException", "ExpiredToken":
			return false
		}
	}
	return status.HTTPStatusCode() != 429
}

// lambdaErrorSummary shortens the error document a failed function returns
// ({"errorType": ..., "errorMessage": ...}) for the error message.
func lambdaErrorSummary(payload []byte) string {
	var e struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	s := strings.TrimSpace(string(payload))
	if json.Unmarshal(payload, &e) == nil && (e.Type != "" || e.Message != "") {
		s = strings.TrimPrefix(e.Type+": "+e.Message, ": ")
	}
	const n = 300
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
