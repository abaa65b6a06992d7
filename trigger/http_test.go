package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
)

// received is what the test server saw of one request.
type received struct {
	method, path, query, host string
	header                    http.Header
	body                      []byte
}

// recordingServer answers every request with status and reports what it received.
func recordingServer(t *testing.T, status int) (*httptest.Server, <-chan received) {
	t.Helper()
	got := make(chan received, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, host: r.Host, header: r.Header.Clone(), body: body}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "answer")
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func httpExecutorForTest(t *testing.T, env Env) Executor {
	t.Helper()
	xs, err := newExecutors(env)
	if err != nil {
		t.Fatalf("newExecutors: %v", err)
	}
	x, ok := xs["http"]
	if !ok {
		t.Fatalf("no http executor among %d executors", len(xs))
	}
	return x
}

func httpCommand(t *testing.T, id string, req HTTPRequest) *Command {
	t.Helper()
	spec, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "t", Type: "http", Spec: spec}
}

func nextRequest(t *testing.T, got <-chan received) received {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the server received no request")
		return received{}
	}
}

func TestHTTPExecute(t *testing.T) {
	srv, got := recordingServer(t, http.StatusOK)
	x := httpExecutorForTest(t, Env{})
	cmd := httpCommand(t, "cmd-0123", HTTPRequest{
		URL:    srv.URL + "/orders/42?src=kevents",
		Method: http.MethodPut,
		Headers: map[string]string{
			"X-Team":       "payments",
			"Content-Type": "application/json",
			// The command id wins over a header of the same name in the template.
			"Idempotency-Key": "from-template",
		},
		Body: []byte(`{"amount": 10}`),
	})
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	r := nextRequest(t, got)
	if r.method != http.MethodPut {
		t.Errorf("method = %s; want PUT", r.method)
	}
	if r.path != "/orders/42" || r.query != "src=kevents" {
		t.Errorf("path, query = %q, %q; want /orders/42, src=kevents", r.path, r.query)
	}
	for k, want := range map[string]string{"X-Team": "payments", "Content-Type": "application/json", IdempotencyKeyHeader: "cmd-0123"} {
		if v := r.header.Values(k); len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q; want [%q]", k, v, want)
		}
	}
	if string(r.body) != `{"amount": 10}` {
		t.Errorf("body = %q", r.body)
	}
}

func TestHTTPExecuteStatus(t *testing.T) {
	for _, status := range []int{200, 201, 202, 204, 299, 300, 400, 404, 409, 500, 503} {
		srv, got := recordingServer(t, status)
		x := httpExecutorForTest(t, Env{})
		err := x.Execute(context.Background(), httpCommand(t, "c", HTTPRequest{URL: srv.URL, Method: http.MethodPost}))
		nextRequest(t, got)
		ok := status >= 200 && status <= 299
		switch {
		case ok && err != nil:
			t.Errorf("status %d: Execute = %v; want success", status, err)
		case !ok && !errors.Is(err, ErrHTTPStatus):
			t.Errorf("status %d: Execute = %v; want an error wrapping ErrHTTPStatus", status, err)
		case !ok && !strings.Contains(err.Error(), http.StatusText(status)):
			t.Errorf("status %d: error %q does not give the status", status, err)
		}
	}
}

func TestHTTPExecuteTimeout(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	x := httpExecutorForTest(t, Env{})
	start := time.Now()
	err := x.Execute(context.Background(), httpCommand(t, "c", HTTPRequest{URL: srv.URL, Method: http.MethodGet, TimeoutSeconds: 1}))
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Execute succeeded; want a timeout")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v; want it to wrap context.DeadlineExceeded", err)
	}
	if errors.Is(err, ErrHTTPStatus) {
		t.Errorf("a timeout wraps ErrHTTPStatus: %v", err)
	}
	if elapsed < 900*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("Execute took %v; want about 1s", elapsed)
	}
}

func TestHTTPExecuteCallerCancel(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	x := httpExecutorForTest(t, Env{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := x.Execute(ctx, httpCommand(t, "c", HTTPRequest{URL: srv.URL, Method: http.MethodGet})); err == nil {
		t.Fatal("Execute succeeded; want the caller's deadline")
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Execute took %v after its context ended", elapsed)
	}
}

func TestHTTPExecuteErrors(t *testing.T) {
	x := httpExecutorForTest(t, Env{})
	err := x.Execute(context.Background(), &Command{ID: "broken-1", Type: "http", Spec: json.RawMessage(`"not a request"`)})
	if err == nil || !strings.Contains(err.Error(), "broken-1") {
		t.Errorf("malformed spec: error = %v; want one naming the command", err)
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	err = x.Execute(context.Background(), httpCommand(t, "c", HTTPRequest{URL: url, Method: http.MethodPost}))
	if err == nil || errors.Is(err, ErrHTTPStatus) {
		t.Errorf("unreachable target: error = %v; want a transport error", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHTTPExecutorUsesEnvClient(t *testing.T) {
	var calls atomic.Int32
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls.Add(1)
		return &http.Response{StatusCode: http.StatusNoContent, Status: "204 No Content", Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	})}
	x := httpExecutorForTest(t, Env{HTTPClient: client})
	if err := x.Execute(context.Background(), httpCommand(t, "c", HTTPRequest{URL: "http://example.invalid/x", Method: http.MethodPost})); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("Env.HTTPClient called %d times; want 1", calls.Load())
	}
}

// fakeParams stands in for the sensor's parameters (package sensor imports this one, so its
// tests cannot be used here): a source resolves to values[DataKey], "fail" is an error, and a
// payload is the fixed payload.
type fakeParams struct {
	values     map[string]string
	payload    []byte
	payloadErr error
}

func (f fakeParams) Value(src *api.TriggerParameterSource) (*string, error) {
	if src.DataKey == "fail" {
		return nil, errors.New("cannot resolve")
	}
	v, ok := f.values[src.DataKey]
	if !ok {
		return nil, nil
	}
	return &v, nil
}

func (f fakeParams) Apply(doc []byte, ps []api.TriggerParameter) ([]byte, error) {
	rs, err := f.Resolve(ps)
	if err != nil {
		return nil, err
	}
	return ApplyResolved(doc, rs)
}

func (f fakeParams) Resolve(ps []api.TriggerParameter) ([]Resolved, error) {
	var out []Resolved
	for i, p := range ps {
		v, err := f.Value(p.Src)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, Resolved{Index: i, Dest: p.Dest, Value: *v, Operation: p.Operation})
		}
	}
	return out, nil
}

func (f fakeParams) Payload([]api.TriggerParameter) ([]byte, error) { return f.payload, f.payloadErr }

func src(key string) *api.TriggerParameterSource {
	return &api.TriggerParameterSource{DependencyName: "d", DataKey: key}
}

func renderHTTPForTest(t *testing.T, h *api.HTTPTrigger, p Params) (HTTPRequest, error) {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", HTTP: h}, Params: p})
	if err != nil {
		return HTTPRequest{}, err
	}
	if typ != "http" {
		t.Fatalf("Render type = %q; want http", typ)
	}
	var req HTTPRequest
	if err := json.Unmarshal(spec, &req); err != nil {
		t.Fatalf("rendered spec is not an HTTPRequest: %v: %s", err, spec)
	}
	return req, nil
}

func TestRenderHTTP(t *testing.T) {
	p := fakeParams{
		values:  map[string]string{"user": "alice", "url": "https://api.example.com/v2/orders", "method": "PATCH"},
		payload: []byte(`{"n":1}`),
	}
	payload := []api.TriggerParameter{{Src: src("x"), Dest: "n"}}

	t.Run("full", func(t *testing.T) {
		h := &api.HTTPTrigger{
			URL:     "http://example.com/hook",
			Headers: map[string]string{"X-A": "1"},
			DynamicHeaders: []api.TriggerParameter{
				{Src: src("user"), Dest: "X-User"},
				{Src: src("absent"), Dest: "X-None"},
			},
			Payload: payload,
			Timeout: 7,
		}
		req, err := renderHTTPForTest(t, h, p)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		want := HTTPRequest{
			URL: "http://example.com/hook", Method: http.MethodPost, TimeoutSeconds: 7, Body: []byte(`{"n":1}`),
			Headers: map[string]string{"X-A": "1", "X-User": "alice", "Content-Type": "application/json"},
		}
		if req.URL != want.URL || req.Method != want.Method || req.TimeoutSeconds != want.TimeoutSeconds || string(req.Body) != string(want.Body) {
			t.Errorf("rendered %+v; want %+v", req, want)
		}
		if len(req.Headers) != len(want.Headers) {
			t.Errorf("headers = %v; want %v", req.Headers, want.Headers)
		}
		for k, v := range want.Headers {
			if req.Headers[k] != v {
				t.Errorf("header %s = %q; want %q", k, req.Headers[k], v)
			}
		}
		if h.Headers["X-User"] != "" || len(h.Headers) != 1 {
			t.Errorf("Render changed the template's headers: %v", h.Headers)
		}
	})
	t.Run("method is kept", func(t *testing.T) {
		req, err := renderHTTPForTest(t, &api.HTTPTrigger{URL: "https://example.com", Method: http.MethodDelete}, p)
		if err != nil || req.Method != http.MethodDelete {
			t.Errorf("Render = %+v, %v; want method DELETE", req, err)
		}
	})
	t.Run("no payload, no body", func(t *testing.T) {
		req, err := renderHTTPForTest(t, &api.HTTPTrigger{URL: "https://example.com"}, p)
		if err != nil || len(req.Body) != 0 || req.Headers["Content-Type"] != "" {
			t.Errorf("Render = %+v, %v; want no body and no Content-Type", req, err)
		}
	})
	t.Run("Content-Type of the template is kept", func(t *testing.T) {
		req, err := renderHTTPForTest(t, &api.HTTPTrigger{URL: "https://example.com", Headers: map[string]string{"Content-Type": "text/plain"}, Payload: payload}, p)
		if err != nil || req.Headers["Content-Type"] != "text/plain" {
			t.Errorf("Render = %+v, %v; want Content-Type text/plain", req, err)
		}
	})
	t.Run("payload that is not JSON gets no Content-Type", func(t *testing.T) {
		text := fakeParams{payload: []byte("plain words")}
		req, err := renderHTTPForTest(t, &api.HTTPTrigger{URL: "https://example.com", Payload: payload}, text)
		if err != nil || string(req.Body) != "plain words" || req.Headers["Content-Type"] != "" {
			t.Errorf("Render = %+v, %v; want the text body and no Content-Type", req, err)
		}
	})
	t.Run("parameters rewrite the trigger", func(t *testing.T) {
		h := &api.HTTPTrigger{URL: "http://placeholder", Parameters: []api.TriggerParameter{
			{Src: src("url"), Dest: "url"}, {Src: src("method"), Dest: "method"}, {Src: src("user"), Dest: "headers.X-User"},
		}}
		req, err := renderHTTPForTest(t, h, p)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		if req.URL != "https://api.example.com/v2/orders" || req.Method != "PATCH" || req.Headers["X-User"] != "alice" {
			t.Errorf("rendered %+v; want the url, method and header from the parameters", req)
		}
		if h.URL != "http://placeholder" {
			t.Errorf("Render changed the template: url %q", h.URL)
		}
	})
	for _, tc := range []struct {
		name    string
		h       *api.HTTPTrigger
		p       Params
		wantErr string
	}{
		{name: "ftp url", h: &api.HTTPTrigger{URL: "ftp://example.com/x"}, p: p, wantErr: "http.url"},
		{name: "relative url", h: &api.HTTPTrigger{URL: "/hook"}, p: p, wantErr: "http.url"},
		{name: "url without host", h: &api.HTTPTrigger{URL: "http://"}, p: p, wantErr: "http.url"},
		{name: "url that does not parse", h: &api.HTTPTrigger{URL: "http://exa mple.com/%zz"}, p: p, wantErr: "http.url"},
		{name: "parameter setting a bad url", h: &api.HTTPTrigger{URL: "http://ok", Parameters: []api.TriggerParameter{{Src: src("user"), Dest: "url"}}}, p: p, wantErr: "http.url"},
		{name: "parameter that fails", h: &api.HTTPTrigger{URL: "http://ok", Parameters: []api.TriggerParameter{{Src: src("fail"), Dest: "url"}}}, p: p, wantErr: "http.parameters"},
		{name: "dynamic header that fails", h: &api.HTTPTrigger{URL: "http://ok", DynamicHeaders: []api.TriggerParameter{{Src: src("user"), Dest: "A"}, {Src: src("fail"), Dest: "B"}}}, p: p, wantErr: "http.dynamicHeaders[1]"},
		{name: "payload that fails", h: &api.HTTPTrigger{URL: "http://ok", Payload: payload}, p: fakeParams{payloadErr: errors.New("boom")}, wantErr: "http.payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderHTTPForTest(t, tc.h, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Render error = %v; want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestRenderThenExecuteHTTP: what the sensor renders is what the target receives.
func TestRenderThenExecuteHTTP(t *testing.T) {
	srv, got := recordingServer(t, http.StatusAccepted)
	p := fakeParams{values: map[string]string{"user": "bob"}, payload: []byte(`{"order":7}`)}
	_, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{
		URL: srv.URL + "/hook", Method: http.MethodPost, Timeout: 2,
		Headers:        map[string]string{"X-Static": "s"},
		DynamicHeaders: []api.TriggerParameter{{Src: src("user"), Dest: "X-User"}},
		Payload:        []api.TriggerParameter{{Src: src("order"), Dest: "order"}},
	}}, Params: p})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	id := CommandID("ns", "s", "t", []EventRef{{Dependency: "d", ID: "e1", EventSource: "es", EventName: "ev"}})
	cmd := &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "t", Type: "http", Spec: spec}
	if err := httpExecutorForTest(t, Env{}).Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	r := nextRequest(t, got)
	if r.method != http.MethodPost || r.path != "/hook" || string(r.body) != `{"order":7}` {
		t.Errorf("received %s %s %q", r.method, r.path, r.body)
	}
	for k, want := range map[string]string{"X-Static": "s", "X-User": "bob", "Content-Type": "application/json", IdempotencyKeyHeader: id} {
		if v := r.header.Get(k); v != want {
			t.Errorf("header %s = %q; want %q", k, v, want)
		}
	}
}

// TestRenderHTTPContentTypeAnyCase: a template may spell the header in lower case; it must still
// count as the request's Content-Type.
func TestRenderHTTPContentTypeAnyCase(t *testing.T) {
	req, err := renderHTTPForTest(t, &api.HTTPTrigger{
		URL: "https://example.com", Headers: map[string]string{"content-type": "text/plain"},
		Payload: []api.TriggerParameter{{Src: src("x"), Dest: "x"}},
	}, fakeParams{payload: []byte(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for k, v := range req.Headers {
		if strings.EqualFold(k, "Content-Type") {
			values = append(values, v)
		}
	}
	if len(values) != 1 || values[0] != "text/plain" {
		t.Errorf("Content-Type headers = %q; want only the template's text/plain", values)
	}
}

// TestHTTPHost: Argo v1.9.11's http trigger sets request.Host from http.host
// (pkg/sensors/triggers/http/http.go: `if trigger.Host != "" { request.Host = trigger.Host }`).
func TestHTTPHost(t *testing.T) {
	srv, got := recordingServer(t, http.StatusOK)
	_, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: srv.URL, Host: "orders.internal"}}, Params: fakeParams{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := httpExecutorForTest(t, Env{}).Execute(context.Background(), &Command{ID: "c", Type: "http", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if r := nextRequest(t, got); r.host != "orders.internal" {
		t.Errorf("Host = %q; want orders.internal", r.host)
	}
}

func TestCheckHTTP(t *testing.T) {
	// tls, basicAuth and secureHeaders are supported; http_auth_test.go checks their shapes.
	for field, h := range map[string]*api.HTTPTrigger{
		"tls":           {URL: "https://x", TLS: fromJSON[*api.TLSConfig](`{"insecureSkipVerify": true}`)},
		"basicAuth":     {URL: "https://x", BasicAuth: fromJSON[*api.BasicAuth](`{"username": {"name": "s", "key": "u"}}`)},
		"secureHeaders": {URL: "https://x", SecureHeaders: fromJSON[[]*api.SecureHeader](`[{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}}]`)},
	} {
		if err := Check(&api.TriggerTemplate{Name: "t", HTTP: h}); err != nil {
			t.Errorf("%s: Check = %v; want nil", field, err)
		}
	}
	if err := Check(&api.TriggerTemplate{Name: "t", HTTP: &api.HTTPTrigger{URL: "https://x", Headers: map[string]string{"A": "b"}}}); err != nil {
		t.Errorf("plain http trigger: Check = %v", err)
	}
}

func TestRegistry(t *testing.T) {
	for _, name := range []string{"http", "log"} {
		if e, err := types.Lookup(name); err != nil || e.Spec.Summary == "" {
			t.Errorf("trigger type %s is not registered with a summary: %v", name, err)
		}
	}
	xs, err := newExecutors(Env{})
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != len(types.Names()) {
		t.Errorf("%d executors for %d types", len(xs), len(types.Names()))
	}
	_, _, err = Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", OpenWhisk: json.RawMessage(`{}`)}})
	if !errors.Is(err, api.ErrNotSupported) || !strings.Contains(err.Error(), `trigger type "openWhisk"`) {
		t.Errorf("Render of an openWhisk trigger = %v; want ErrNotSupported", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering http twice did not panic")
		}
	}()
	Register("http", Spec{}, nil)
}

// fromJSON decodes a test value written as JSON, as a definition would hold it.
func fromJSON[T any](s string) T {
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(fmt.Sprintf("test JSON %s: %v", s, err))
	}
	return v
}
