package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// IdempotencyKeyHeader carries the command id on HTTP calls, so a target can drop a repeat.
const IdempotencyKeyHeader = "Idempotency-Key"

// defaultHTTPTimeout is Argo's default for the http trigger.
const defaultHTTPTimeout = 60 * time.Second

// HTTPRequest is the rendered request of an http trigger. It carries no secret: TLS, BasicAuth
// and SecureHeaders hold Secret (or ConfigMap) references, resolved by the executor on each call.
type HTTPRequest struct {
	URL            string            `json:"url"`
	Method         string            `json:"method"`
	Headers        map[string]string `json:"headers,omitempty"` // canonical names
	Host           string            `json:"host,omitempty"`    // overrides the Host header, as Argo's http.host
	Body           []byte            `json:"body,omitempty"`
	TimeoutSeconds int64             `json:"timeoutSeconds,omitempty"`
	// TLS is Argo's http.tls: a CA, a client certificate and key (PEM Secrets), insecureSkipVerify.
	TLS *api.TLSConfig `json:"tls,omitempty"`
	// BasicAuth is Argo's http.basicAuth: user name and password Secrets, each optional (empty).
	BasicAuth *api.BasicAuth `json:"basicAuth,omitempty"`
	// SecureHeaders are Argo's http.secureHeaders, each valued from a Secret (valueFrom.secretKeyRef)
	// or a ConfigMap (valueFrom.configMapKeyRef).
	SecureHeaders []*api.SecureHeader `json:"secureHeaders,omitempty"`
}

func init() {
	Register("http", Spec{
		Summary: "Calls an HTTP endpoint with a payload built from the events.",
		Render:  renderHTTP,
		Check:   checkHTTP,
	}, func(env Env) (Executor, error) {
		client := env.HTTPClient
		if client == nil {
			client = &http.Client{Transport: newHTTPTransport()}
		}
		return &httpExecutor{client: client, secrets: env.Secrets, tlsClients: map[string]*http.Client{}}, nil
	})
}

// newHTTPTransport is the transport of the default client and of the clients of TLS targets. It
// keeps a connection per concurrently running command to the same host: Go's default of 2 idle
// connections per host makes a busy pool open and close one per call.
func newHTTPTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	return tr
}

func checkHTTP(t *api.TriggerTemplate) error {
	_, err := checkHTTPSecurity(t.HTTP)
	return err
}

// httpSecurity is the part of an http trigger that refers to Secrets.
type httpSecurity struct {
	tls           *api.TLSConfig
	basicAuth     *api.BasicAuth
	secureHeaders []*api.SecureHeader
}

// checkHTTPSecurity validates tls, basicAuth and secureHeaders (every reference has a name and
// key) and returns them.
func checkHTTPSecurity(h *api.HTTPTrigger) (httpSecurity, error) {
	s := httpSecurity{tls: h.TLS, basicAuth: h.BasicAuth, secureHeaders: h.SecureHeaders}
	if s.tls != nil {
		if err := s.tls.Check("http.tls"); err != nil {
			return httpSecurity{}, err
		}
	}
	if a := s.basicAuth; a != nil {
		// Argo sends an empty user name or password for one that is not set.
		if a.Username == nil && a.Password == nil {
			return httpSecurity{}, errors.New("http.basicAuth: set username, password or both")
		}
		if a.Username != nil {
			if err := a.Username.Check("http.basicAuth.username"); err != nil {
				return httpSecurity{}, err
			}
		}
		if a.Password != nil {
			if err := a.Password.Check("http.basicAuth.password"); err != nil {
				return httpSecurity{}, err
			}
		}
	}
	for i, sh := range s.secureHeaders {
		if err := checkSecureHeader(i, sh); err != nil {
			return httpSecurity{}, err
		}
	}
	return s, nil
}

func checkSecureHeader(i int, sh *api.SecureHeader) error {
	field := fmt.Sprintf("http.secureHeaders[%d]", i)
	if sh == nil || sh.Name == "" {
		return fmt.Errorf("%s.name: required", field)
	}
	field = fmt.Sprintf("%s (%s)", field, sh.Name)
	v := sh.ValueFrom
	switch {
	case v == nil || v.SecretKeyRef == nil && v.ConfigMapKeyRef == nil:
		return fmt.Errorf("%s.valueFrom: set secretKeyRef or configMapKeyRef", field)
	case v.SecretKeyRef != nil && v.ConfigMapKeyRef != nil:
		return fmt.Errorf("%s.valueFrom: set secretKeyRef or configMapKeyRef, not both", field)
	case v.ConfigMapKeyRef != nil && (v.ConfigMapKeyRef.Name == "" || v.ConfigMapKeyRef.Key == ""):
		return fmt.Errorf("%s.valueFrom.configMapKeyRef: a ConfigMap name and key are required", field)
	case v.ConfigMapKeyRef != nil:
		return nil
	}
	return v.SecretKeyRef.Check(field + ".valueFrom.secretKeyRef")
}

func renderHTTP(in RenderInput) (json.RawMessage, error) {
	h := *in.Template.HTTP
	if len(h.Parameters) > 0 {
		doc, err := json.Marshal(h)
		if err != nil {
			return nil, err
		}
		if doc, err = in.Params.Apply(doc, h.Parameters); err != nil {
			return nil, fmt.Errorf("http.parameters: %w", err)
		}
		h = api.HTTPTrigger{}
		if err := json.Unmarshal(doc, &h); err != nil {
			return nil, fmt.Errorf("http.parameters: result is not an http trigger: %w", err)
		}
	}
	u, err := url.Parse(h.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http.url: %q; expected an absolute http or https URL", h.URL)
	}
	// Again after the parameters, which may have rewritten the references.
	sec, err := checkHTTPSecurity(&h)
	if err != nil {
		return nil, err
	}
	req := HTTPRequest{
		URL: h.URL, Method: h.Method, Host: h.Host, TimeoutSeconds: h.Timeout, Headers: map[string]string{},
		TLS: sec.tls, BasicAuth: sec.basicAuth, SecureHeaders: sec.secureHeaders,
	}
	if req.Method == "" {
		req.Method = http.MethodPost
	}
	// Canonical names, so "content-type" and "Content-Type" are one header.
	for k, v := range h.Headers {
		req.Headers[http.CanonicalHeaderKey(k)] = v
	}
	for i, p := range h.DynamicHeaders {
		v, err := in.Params.Value(p.Src)
		if err != nil {
			return nil, fmt.Errorf("http.dynamicHeaders[%d]: %w", i, err)
		}
		if v != nil {
			req.Headers[http.CanonicalHeaderKey(p.Dest)] = *v
		}
	}
	if len(h.Payload) > 0 {
		body, err := in.Params.Payload(h.Payload)
		if err != nil {
			return nil, fmt.Errorf("http.payload: %w", err)
		}
		req.Body = body
		if _, set := req.Headers["Content-Type"]; !set && json.Valid(body) {
			req.Headers["Content-Type"] = "application/json"
		}
	}
	return json.Marshal(req)
}

// httpExecutor calls targets with client, or for a target with a TLS configuration with a
// client of its own, built on first use and shared by the commands with the same configuration.
type httpExecutor struct {
	client  *http.Client
	secrets secrets.Resolver

	mu         sync.Mutex
	tlsClients map[string]*http.Client // by the JSON of the TLS references
}

// ErrHTTPStatus marks a call the target answered with a status outside 2xx.
var ErrHTTPStatus = errors.New("http trigger: unexpected status")

func (x *httpExecutor) Execute(ctx context.Context, cmd *Command) error {
	var r HTTPRequest
	if err := json.Unmarshal(cmd.Spec, &r); err != nil {
		return fmt.Errorf("http trigger: malformed command %s: %w", cmd.ID, err)
	}
	timeout := defaultHTTPTimeout
	if r.TimeoutSeconds > 0 {
		timeout = time.Duration(r.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return fmt.Errorf("http trigger: request %s %s: %w", r.Method, r.URL, err)
	}
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	// Argo's order: headers, dynamic headers (rendered into Headers), secure headers, basic auth.
	if err := x.setSecrets(req, &r); err != nil {
		return fmt.Errorf("http trigger: %s %s: %w", r.Method, r.URL, err)
	}
	req.Header.Set(IdempotencyKeyHeader, cmd.ID)
	if r.Host != "" {
		req.Host = r.Host
	}
	client := x.client
	if r.TLS != nil {
		if client, err = x.tlsClient(r.TLS); err != nil {
			return fmt.Errorf("http trigger: %s %s: %w", r.Method, r.URL, err)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http trigger: %s %s: %w", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // lets the connection be reused
	if !statusAllowed(resp.StatusCode, cmd.AllowStatus) {
		return fmt.Errorf("%w: %s %s answered %s", ErrHTTPStatus, r.Method, r.URL, resp.Status)
	}
	return nil
}

// setSecrets sets the secure headers and basic auth of r on req, resolving their Secrets and
// ConfigMaps now so that a rotated value is used by the next call. Errors name references, never
// values.
func (x *httpExecutor) setSecrets(req *http.Request, r *HTTPRequest) error {
	for i, sh := range r.SecureHeaders {
		if err := checkSecureHeader(i, sh); err != nil {
			return err
		}
		field := fmt.Sprintf("http.secureHeaders[%d] (%s)", i, sh.Name)
		var v string
		var err error
		if ref := sh.ValueFrom.ConfigMapKeyRef; ref != nil {
			// A ConfigMap, never a Secret of the same name.
			if v, err = x.secrets.ResolveConfigMap(ref.Name, ref.Key); err != nil {
				return fmt.Errorf("%s: %w", field, err)
			}
		} else if v, err = x.secrets.Ref(field, sh.ValueFrom.SecretKeyRef); err != nil {
			return err
		}
		req.Header.Set(sh.Name, v)
	}
	if a := r.BasicAuth; a != nil {
		var user, pass string
		var err error
		if a.Username != nil {
			if user, err = x.secrets.Ref("http.basicAuth.username", a.Username); err != nil {
				return err
			}
		}
		if a.Password != nil {
			if pass, err = x.secrets.Ref("http.basicAuth.password", a.Password); err != nil {
				return err
			}
		}
		req.SetBasicAuth(user, pass)
	}
	return nil
}

// tlsClient returns the client for a TLS configuration, building it on first use. Its Secrets
// are read then: a rotated certificate is picked up when the executor restarts. The client
// copies the executor's client, with a clone of its transport when that is an *http.Transport
// and otherwise the default client's transport, and the TLS configuration on it.
func (x *httpExecutor) tlsClient(t *api.TLSConfig) (*http.Client, error) {
	id, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if c, ok := x.tlsClients[string(id)]; ok {
		return c, nil
	}
	if err := t.Check("http.tls"); err != nil {
		return nil, err
	}
	cfg, err := x.secrets.TLSConfig("http.tls", t)
	if err != nil {
		return nil, err
	}
	var tr *http.Transport
	if base, ok := x.client.Transport.(*http.Transport); ok {
		tr = base.Clone()
	} else {
		tr = newHTTPTransport()
	}
	tr.TLSClientConfig = cfg
	c := *x.client
	c.Transport = tr
	x.tlsClients[string(id)] = &c
	return &c, nil
}

// statusAllowed reports whether an HTTP status counts as success: one of allow (Argo's
// policy.status.allow) when set, 2xx otherwise.
func statusAllowed(status int, allow []int) bool {
	if len(allow) == 0 {
		return status >= 200 && status <= 299
	}
	for _, a := range allow {
		if a == status {
			return true
		}
	}
	return false
}
