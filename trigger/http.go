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
	"time"

	"github.com/kevents/kevents/api"
)

// IdempotencyKeyHeader carries the command id on HTTP calls, so a target can drop a repeat.
const IdempotencyKeyHeader = "Idempotency-Key"

// defaultHTTPTimeout is Argo's default for the http trigger.
const defaultHTTPTimeout = 60 * time.Second

// HTTPRequest is the rendered request of an http trigger.
type HTTPRequest struct {
	URL            string            `json:"url"`
	Method         string            `json:"method"`
	Headers        map[string]string `json:"headers,omitempty"` // canonical names
	Host           string            `json:"host,omitempty"`    // overrides the Host header, as Argo's http.host
	Body           []byte            `json:"body,omitempty"`
	TimeoutSeconds int64             `json:"timeoutSeconds,omitempty"`
}

func init() {
	Register("http", Spec{
		Summary: "Calls an HTTP endpoint with a payload built from the events.",
		Render:  renderHTTP,
		Check:   checkHTTP,
	}, func(env Env) (Executor, error) {
		client := env.HTTPClient
		if client == nil {
			// Keep a connection per concurrently running command to the same host: Go's default
			// of 2 idle connections per host makes a busy pool open and close one per call.
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 256
			client = &http.Client{Transport: tr}
		}
		return &httpExecutor{client: client}, nil
	})
}

func checkHTTP(t *api.TriggerTemplate) error {
	h := t.HTTP
	for field, set := range map[string]bool{
		"tls": len(h.TLS) > 0, "basicAuth": len(h.BasicAuth) > 0, "secureHeaders": len(h.SecureHeaders) > 0,
	} {
		if set {
			return api.NotSupported("http trigger field", field)
		}
	}
	return nil
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
	req := HTTPRequest{URL: h.URL, Method: h.Method, Host: h.Host, TimeoutSeconds: h.Timeout, Headers: map[string]string{}}
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

type httpExecutor struct{ client *http.Client }

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
	req.Header.Set(IdempotencyKeyHeader, cmd.ID)
	if r.Host != "" {
		req.Host = r.Host
	}
	resp, err := x.client.Do(req)
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
