package trigger

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
	"github.com/kevents/kevents/trigger/customtrigger"
)

// CustomCommandIDMetadata is the gRPC metadata key that carries the command id on the three
// calls of a custom trigger, so that a server can drop a repeat. Argo's messages have no field
// for it and Argo sends nothing; servers that do not look for it are not affected.
const CustomCommandIDMetadata = "kevents-command-id"

// customCallTimeout bounds each of the three calls. No field sets it; Argo waits without limit.
const customCallTimeout = 60 * time.Second

// CustomRequest is the rendered command of a custom trigger (Argo's gRPC trigger protocol).
//
// Argo fetches the resource, applies the trigger's parameters to it, executes it and applies
// the policy, all in the sensor. In kevents the sensor resolves the parameters from the events
// (the resource does not exist yet) and the executor makes the calls: FetchResource with Spec,
// the resolved parameters applied to the resource it returns, Execute with that resource and
// Payload, and ApplyPolicy with Execute's response. The CA certificate stays a Secret reference.
type CustomRequest struct {
	ServerURL          string                 `json:"serverURL"`
	Secure             bool                   `json:"secure,omitempty"`
	CertSecret         *api.SecretKeySelector `json:"certSecret,omitempty"`
	ServerNameOverride string                 `json:"serverNameOverride,omitempty"`
	// Spec is what FetchResource is sent: the trigger's spec as YAML, byte for byte as Argo
	// sends it.
	Spec []byte `json:"spec"`
	// Parameters are the trigger's parameters, resolved; they are applied to the resource.
	Parameters []Resolved `json:"parameters,omitempty"`
	// Payload is Argo's ConstructPayload of the trigger's payload; empty when it has none.
	Payload []byte `json:"payload,omitempty"`
}

func init() {
	Register("custom", Spec{
		Summary: "Hands the trigger to a gRPC server speaking Argo's custom trigger protocol " +
			"(FetchResource, Execute, ApplyPolicy), optionally over TLS with a CA from a Secret.",
		Render: renderCustom,
		Check:  checkCustom,
	}, func(env Env) (Executor, error) {
		return &customExecutor{secrets: env.Secrets, conns: map[string]*grpc.ClientConn{}}, nil
	})
}

// checkCustom applies Argo's validation (serverURL and spec are required, and certSecret when
// secure is set) and checks the server address. Trigger-level parameters can change these
// fields, so renderCustom checks them again.
func checkCustom(t *api.TriggerTemplate) error {
	c := t.Custom
	var errs []error
	if err := checkCustomServerURL(c.ServerURL); err != nil {
		errs = append(errs, err)
	}
	if c.Spec == nil {
		errs = append(errs, errors.New("custom.spec: missing; expected the map of strings the trigger server interprets"))
	}
	if c.Secure { // as in Argo, certSecret is ignored without secure
		if c.CertSecret == nil {
			errs = append(errs, errors.New("custom.certSecret: missing; secure: true needs the CA certificate of the server (a Secret reference)"))
		} else {
			errs = append(errs, c.CertSecret.Check("custom.certSecret"))
		}
	}
	errs = append(errs, notifyCheckParameters("custom", c.Parameters))
	return errors.Join(errs...)
}

// checkCustomServerURL accepts a gRPC target ("host:port", "dns:///host:port"), which is what
// Argo hands to grpc.NewClient; an http(s) URL is a common mistake that would only fail later.
func checkCustomServerURL(s string) error {
	if s == "" {
		return errors.New("custom.serverURL: missing; expected the gRPC address of the trigger server, e.g. my-trigger.argo-events.svc:9000")
	}
	if u, err := url.Parse(s); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return fmt.Errorf("custom.serverURL: %q; expected a gRPC target such as %s, not an http URL", s, u.Host)
	}
	return nil
}

func renderCustom(in RenderInput) (json.RawMessage, error) {
	c := in.Template.Custom
	if err := checkCustom(in.Template); err != nil {
		return nil, err
	}
	// Argo marshals the spec with ghodss/yaml; sigs.k8s.io/yaml is its fork and writes the same.
	spec, err := yaml.Marshal(c.Spec)
	if err != nil {
		return nil, fmt.Errorf("custom.spec: %w", err)
	}
	params, err := in.Params.Resolve(c.Parameters)
	if err != nil {
		return nil, fmt.Errorf("custom.parameters: %w", err)
	}
	var payload []byte
	if len(c.Payload) > 0 {
		if payload, err = in.Params.Payload(c.Payload); err != nil {
			return nil, fmt.Errorf("custom.payload: %w", err)
		}
	}
	return json.Marshal(CustomRequest{
		ServerURL: c.ServerURL, Secure: c.Secure, CertSecret: c.CertSecret, ServerNameOverride: c.ServerNameOverride,
		Spec: spec, Parameters: params, Payload: payload,
	})
}

// ErrCustomPolicy marks an execution whose ApplyPolicy answered success: false. Argo v1.9.11
// only logs that answer; its documentation, and kevents, count it as a failure.
var ErrCustomPolicy = errors.New("custom trigger: the server's policy failed the execution")

// customExecutor keeps one gRPC connection per server and TLS configuration, made on first use;
// gRPC reconnects it when it drops.
type customExecutor struct {
	secrets secrets.Resolver

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func (x *customExecutor) Execute(ctx context.Context, cmd *Command) error {
	var r CustomRequest
	if err := json.Unmarshal(cmd.Spec, &r); err != nil {
		return Terminal(fmt.Errorf("custom trigger: malformed command %s: %w", cmd.ID, err))
	}
	if err := checkCustomServerURL(r.ServerURL); err != nil {
		return Terminal(fmt.Errorf("custom trigger: command %s: %w", cmd.ID, err))
	}
	conn, err := x.conn(&r)
	if err != nil {
		return fmt.Errorf("custom trigger: server %s: %w", r.ServerURL, err)
	}
	client := customtrigger.NewClient(conn)
	ctx = metadata.AppendToOutgoingContext(ctx, CustomCommandIDMetadata, cmd.ID)
	call := func(name string, f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, customCallTimeout)
		defer cancel()
		if err := f(ctx); err != nil {
			err = fmt.Errorf("custom trigger: %s on %s: %w", name, r.ServerURL, err)
			if customTerminal(err) {
				return Terminal(err)
			}
			return err
		}
		return nil
	}

	var resource []byte
	if err := call("FetchResource", func(ctx context.Context) (err error) {
		resource, err = client.FetchResource(ctx, r.Spec)
		return err
	}); err != nil {
		return err
	}
	if len(r.Parameters) > 0 {
		// As in Argo, parameters apply only to a resource that is a JSON object.
		var obj map[string]any
		if err := json.Unmarshal(resource, &obj); err != nil {
			return Terminal(fmt.Errorf("custom trigger: FetchResource on %s returned a resource that is not a JSON object, which custom.parameters need: %w", r.ServerURL, err))
		}
		if resource, err = ApplyResolved(resource, r.Parameters); err != nil {
			return Terminal(fmt.Errorf("custom trigger: custom.%w", err))
		}
	}
	var response []byte
	if err := call("Execute", func(ctx context.Context) (err error) {
		response, err = client.Execute(ctx, resource, r.Payload)
		return err
	}); err != nil {
		return err
	}
	var success bool
	var message string
	if err := call("ApplyPolicy", func(ctx context.Context) (err error) {
		success, message, err = client.ApplyPolicy(ctx, response)
		return err
	}); err != nil {
		return err
	}
	if !success {
		return fmt.Errorf("%w: server %s: %q", ErrCustomPolicy, r.ServerURL, message)
	}
	return nil
}

// customTerminal tells the gRPC statuses that say the request itself is wrong, which a retry
// would send again unchanged. Plain errors returned by a Go server arrive as Unknown and are
// retried, as are Unavailable, DeadlineExceeded, ResourceExhausted and the like.
func customTerminal(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.Unauthenticated:
		return true
	}
	return false
}

// conn returns the connection for the request's server and TLS settings. grpc.NewClient does
// not connect: the first call does, and fails with Unavailable when the server cannot be
// reached. The CA certificate is read when the connection is made: a rotated one is picked up
// when the executor restarts.
func (x *customExecutor) conn(r *CustomRequest) (*grpc.ClientConn, error) {
	key, err := json.Marshal([]any{r.ServerURL, r.Secure, r.CertSecret, r.ServerNameOverride}) // references, not values
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return nil, errors.New("executor closed")
	}
	if c := x.conns[string(key)]; c != nil {
		return c, nil
	}
	creds := insecure.NewCredentials()
	if r.Secure {
		// As Argo's credentials.NewClientTLSFromFile: the Secret's certificates are the only
		// roots, and serverNameOverride is the name the server's certificate must carry.
		ca, err := x.secrets.Ref("custom.certSecret", r.CertSecret)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(ca)) {
			return nil, fmt.Errorf("custom.certSecret: secret %s/%s holds no PEM certificate", r.CertSecret.Name, r.CertSecret.Key)
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: r.ServerNameOverride, MinVersion: tls.VersionTLS12})
	}
	c, err := grpc.NewClient(r.ServerURL, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	x.conns[string(key)] = c
	return c, nil
}

// Close closes the executor's connections. Commands executed afterwards fail.
func (x *customExecutor) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.closed = true
	var errs []error
	for _, c := range x.conns {
		errs = append(errs, c.Close())
	}
	x.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}
