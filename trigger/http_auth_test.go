package trigger

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kubetest"
	"github.com/kevents/kevents/internal/secrets"
)

// httpTestSecrets resolves "name/key" from values through the environment lookup, as a deployment
// with KEVENTS_SECRET_* variables does.
func httpTestSecrets(values map[string]string) secrets.Resolver {
	env := map[string]string{}
	for k, v := range values {
		name, key, _ := strings.Cut(k, "/")
		env[secrets.EnvName(name, key)] = v
	}
	return secrets.Resolver{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
}

// assertNoSecret fails when text (a rendered spec, an error) contains one of the secret values.
func assertNoSecret(t *testing.T, what, text string, values map[string]string) {
	t.Helper()
	for ref, v := range values {
		if v != "" && strings.Contains(text, v) {
			t.Errorf("%s contains the value of secret %s: %s", what, ref, text)
		}
	}
}

// renderHTTPSpec renders h as the sensor does and checks the spec holds no secret value.
func renderHTTPSpec(t *testing.T, h *api.HTTPTrigger, p Params, values map[string]string) json.RawMessage {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", HTTP: h}, Params: p})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if typ != "http" {
		t.Fatalf("Render type = %q; want http", typ)
	}
	assertNoSecret(t, "rendered spec", string(spec), values)
	return spec
}

func noRequest(t *testing.T, got <-chan received) {
	t.Helper()
	select {
	case r := <-got:
		t.Errorf("the server received %s %s; want no request", r.method, r.path)
	default:
	}
}

// TestHTTPBasicAuthAndSecureHeaders: the user name, password and a secure header come from
// Secrets at execution; the rendered spec and the errors hold only references.
func TestHTTPBasicAuthAndSecureHeaders(t *testing.T) {
	values := map[string]string{
		"hook-auth/user": "alice-the-user", "hook-auth/pass": "s3cret-pass-42", "hook-token/token": "tok-9f8e7d6c",
	}
	got := make(chan received, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body}
		if u, p, ok := r.BasicAuth(); !ok || u != values["hook-auth/user"] || p != values["hook-auth/pass"] {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.Header.Get("X-Api-Token") != values["hook-token/token"] {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	// A parameter picks the Secret of the secure header, as a parameter may rewrite any field.
	p := fakeParams{values: map[string]string{"tokenSecret": "hook-token"}, payload: []byte(`{"order":7}`)}
	h := &api.HTTPTrigger{
		URL:           srv.URL + "/hook",
		Payload:       []api.TriggerParameter{{Src: src("order"), Dest: "order"}},
		BasicAuth:     fromJSON[*api.BasicAuth](`{"username": {"name": "hook-auth", "key": "user"}, "password": {"name": "hook-auth", "key": "pass"}}`),
		SecureHeaders: fromJSON[[]*api.SecureHeader](`[{"name": "x-api-token", "valueFrom": {"secretKeyRef": {"name": "placeholder", "key": "token"}}}]`),
		Parameters:    []api.TriggerParameter{{Src: src("tokenSecret"), Dest: "secureHeaders.0.valueFrom.secretKeyRef.name"}},
	}
	spec := renderHTTPSpec(t, h, p, values)
	var req HTTPRequest
	if err := json.Unmarshal(spec, &req); err != nil {
		t.Fatal(err)
	}
	if req.BasicAuth == nil || *req.BasicAuth.Password != (api.SecretKeySelector{Name: "hook-auth", Key: "pass"}) ||
		len(req.SecureHeaders) != 1 || *req.SecureHeaders[0].ValueFrom.SecretKeyRef != (api.SecretKeySelector{Name: "hook-token", Key: "token"}) {
		t.Errorf("rendered spec %s; want the references, the header's from the parameter", spec)
	}

	cmd := &Command{ID: "cmd-auth-1", Namespace: "ns", Sensor: "s", Trigger: "t", Type: "http", Spec: spec}
	x := httpExecutorForTest(t, Env{Secrets: httpTestSecrets(values)})
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	r := nextRequest(t, got)
	if r.method != http.MethodPost || r.path != "/hook" || string(r.body) != `{"order":7}` {
		t.Errorf("received %s %s %q", r.method, r.path, r.body)
	}
	if v := r.header.Values("X-Api-Token"); len(v) != 1 || v[0] != values["hook-token/token"] {
		t.Errorf("X-Api-Token = %q; want the secret's value once", v)
	}
	if v := r.header.Get(IdempotencyKeyHeader); v != "cmd-auth-1" {
		t.Errorf("%s = %q; want the command id", IdempotencyKeyHeader, v)
	}

	t.Run("wrong password", func(t *testing.T) {
		wrong := map[string]string{"hook-auth/user": values["hook-auth/user"], "hook-auth/pass": "not-the-pass-77", "hook-token/token": values["hook-token/token"]}
		err := httpExecutorForTest(t, Env{Secrets: httpTestSecrets(wrong)}).Execute(context.Background(), cmd)
		nextRequest(t, got)
		if !errors.Is(err, ErrHTTPStatus) || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), srv.URL) {
			t.Fatalf("Execute = %v; want a 401 error naming the target", err)
		}
		assertNoSecret(t, "error", err.Error(), values)
		assertNoSecret(t, "error", err.Error(), wrong)
		t.Logf("wrong password: %v", err)
	})
	t.Run("missing secret", func(t *testing.T) {
		partial := map[string]string{"hook-auth/user": values["hook-auth/user"], "hook-auth/pass": values["hook-auth/pass"]}
		err := httpExecutorForTest(t, Env{Secrets: httpTestSecrets(partial)}).Execute(context.Background(), cmd)
		if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "hook-token/token") ||
			!strings.Contains(err.Error(), "http.secureHeaders[0]") || !strings.Contains(err.Error(), srv.URL) {
			t.Errorf("Execute = %v; want secret not found naming the field, the reference and the target", err)
		}
		assertNoSecret(t, "error", err.Error(), values)
		noRequest(t, got)
	})
	t.Run("user name only", func(t *testing.T) {
		// Argo sends an empty password when basicAuth has no password.
		only := *h
		only.Parameters = nil
		only.SecureHeaders = fromJSON[[]*api.SecureHeader](`[{"name": "X-Api-Token", "valueFrom": {"secretKeyRef": {"name": "hook-token", "key": "token"}}}]`)
		only.BasicAuth = fromJSON[*api.BasicAuth](`{"username": {"name": "hook-auth", "key": "user"}}`)
		spec := renderHTTPSpec(t, &only, p, values)
		err := x.Execute(context.Background(), &Command{ID: "c2", Type: "http", Spec: spec})
		r := nextRequest(t, got)
		if u, pass, ok := (&http.Request{Header: r.header}).BasicAuth(); !ok || u != values["hook-auth/user"] || pass != "" {
			t.Errorf("basic auth = %q, %q, %v; want the user and an empty password", u, pass, ok)
		}
		if !errors.Is(err, ErrHTTPStatus) || !strings.Contains(err.Error(), "401") {
			t.Errorf("Execute = %v; want the server's 401", err)
		}
	})
}

// TestHTTPTLSCustomCA: the CA that signed the target's certificate comes from a Secret.
func TestHTTPTLSCustomCA(t *testing.T) {
	got := make(chan received, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- received{method: r.Method, path: r.URL.Path, header: r.Header.Clone()}
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes the tests make fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	values := map[string]string{"target-tls/ca.crt": caPEM, "not-pem/ca.crt": "just-some-secret-words"}
	x := httpExecutorForTest(t, Env{Secrets: httpTestSecrets(values)})
	run := func(t *testing.T, tlsJSON, url string) error {
		t.Helper()
		spec := renderHTTPSpec(t, &api.HTTPTrigger{URL: url, Method: http.MethodGet, TLS: fromJSON[*api.TLSConfig](tlsJSON)}, fakeParams{}, values)
		err := x.Execute(context.Background(), &Command{ID: "c", Type: "http", Spec: spec})
		if err != nil {
			assertNoSecret(t, "error", err.Error(), values)
		}
		return err
	}

	if err := run(t, `{"caCertSecret": {"name": "target-tls", "key": "ca.crt"}}`, srv.URL+"/ca"); err != nil {
		t.Fatalf("Execute with the CA from a secret: %v", err)
	}
	if r := nextRequest(t, got); r.path != "/ca" {
		t.Errorf("path = %q", r.path)
	}
	// Without the CA the system's roots do not know the test server.
	var unknown *tls.CertificateVerificationError
	if err := run(t, `{"enabled": true}`, srv.URL+"/system"); !errors.As(err, &unknown) || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("Execute with the system roots = %v; want a certificate verification error naming the target", err)
	}
	noRequest(t, got)
	if err := run(t, `{"insecureSkipVerify": true}`, srv.URL+"/insecure"); err != nil {
		t.Errorf("Execute with insecureSkipVerify: %v", err)
	} else if r := nextRequest(t, got); r.path != "/insecure" {
		t.Errorf("path = %q", r.path)
	}
	if err := run(t, `{"caCertSecret": {"name": "not-pem", "key": "ca.crt"}}`, srv.URL); err == nil ||
		!strings.Contains(err.Error(), "http.tls.caCertSecret: secret not-pem/ca.crt holds no PEM certificate") {
		t.Errorf("Execute with a CA secret that is not PEM = %v", err)
	}
	if err := run(t, `{"caCertSecret": {"name": "absent", "key": "ca.crt"}}`, srv.URL); !errors.Is(err, secrets.ErrNotFound) ||
		!strings.Contains(err.Error(), "absent/ca.crt") {
		t.Errorf("Execute with a missing CA secret = %v; want secret not found naming it", err)
	}
	noRequest(t, got)

	down := httptest.NewTLSServer(http.NotFoundHandler())
	down.Close()
	if err := run(t, `{"insecureSkipVerify": true}`, down.URL); err == nil || errors.Is(err, ErrHTTPStatus) || !strings.Contains(err.Error(), down.URL) {
		t.Errorf("Execute against a target that is down = %v; want a transport error naming it", err)
	}
}

// testClientPKI is a CA and a client certificate it signed, in PEM.
type testClientPKI struct {
	pool *x509.CertPool // the CA
	// certPEM is signed by the CA for keyPEM; otherKeyPEM is a key that does not match it.
	certPEM, keyPEM, otherKeyPEM string
	commonName                   string
}

func newTestClientPKI(t *testing.T) testClientPKI {
	t.Helper()
	newKey := func() (*ecdsa.PrivateKey, string) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	}
	now := time.Now()
	caKey, _ := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client ca"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	clientKey, keyPEM := newKey()
	_, otherKeyPEM := newKey()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kevents-client"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testClientPKI{
		pool: pool, certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), keyPEM: keyPEM,
		otherKeyPEM: otherKeyPEM, commonName: "kevents-client",
	}
}

// TestHTTPMutualTLS: the target requires a client certificate signed by its CA; the certificate
// and its key come from Secrets.
func TestHTTPMutualTLS(t *testing.T) {
	pki := newTestClientPKI(t)
	peers := make(chan string, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peers <- r.TLS.PeerCertificates[0].Subject.CommonName
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{ClientCAs: pki.pool}
	srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	srv.StartTLS()
	t.Cleanup(srv.Close)

	values := map[string]string{
		"target-tls/ca.crt": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})),
		"client/tls.crt":    pki.certPEM, "client/tls.key": pki.keyPEM, "client/other.key": pki.otherKeyPEM,
	}
	x := httpExecutorForTest(t, Env{Secrets: httpTestSecrets(values)})
	run := func(t *testing.T, tlsJSON string) error {
		t.Helper()
		spec := renderHTTPSpec(t, &api.HTTPTrigger{URL: srv.URL + "/mtls", TLS: fromJSON[*api.TLSConfig](tlsJSON)}, fakeParams{}, values)
		err := x.Execute(context.Background(), &Command{ID: "c", Type: "http", Spec: spec})
		if err != nil {
			assertNoSecret(t, "error", err.Error(), values)
		}
		return err
	}

	err := run(t, `{"caCertSecret": {"name": "target-tls", "key": "ca.crt"},
		"clientCertSecret": {"name": "client", "key": "tls.crt"}, "clientKeySecret": {"name": "client", "key": "tls.key"}}`)
	if err != nil {
		t.Fatalf("Execute with a client certificate: %v", err)
	}
	select {
	case cn := <-peers:
		if cn != pki.commonName {
			t.Errorf("the server saw client %q; want %q", cn, pki.commonName)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server received no request")
	}

	if err := run(t, `{"caCertSecret": {"name": "target-tls", "key": "ca.crt"}}`); err == nil || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("Execute without a client certificate = %v; want the handshake refused, naming the target", err)
	} else {
		t.Logf("without a client certificate: %v", err)
	}
	err = run(t, `{"caCertSecret": {"name": "target-tls", "key": "ca.crt"},
		"clientCertSecret": {"name": "client", "key": "tls.crt"}, "clientKeySecret": {"name": "client", "key": "other.key"}}`)
	if err == nil || !strings.Contains(err.Error(), "client certificate client/tls.crt and key client/other.key") {
		t.Errorf("Execute with a key that does not match = %v; want an error naming both references", err)
	}
	if len(peers) != 0 {
		t.Errorf("the server received %d requests without a valid client certificate", len(peers))
	}
}

// TestHTTPTLSClientShared: commands with the same TLS references share one client, built once
// while they run concurrently; other references get a client of their own.
func TestHTTPTLSClientShared(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // connections cut at Close
	srv.StartTLS()
	t.Cleanup(srv.Close)
	values := map[string]string{"target-tls/ca.crt": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))}
	x := httpExecutorForTest(t, Env{Secrets: httpTestSecrets(values)}).(*httpExecutor)
	spec := func(tlsJSON string) json.RawMessage {
		return renderHTTPSpec(t, &api.HTTPTrigger{URL: srv.URL, TLS: fromJSON[*api.TLSConfig](tlsJSON)}, fakeParams{}, values)
	}
	withCA := spec(`{"caCertSecret": {"name": "target-tls", "key": "ca.crt"}}`)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- x.Execute(context.Background(), &Command{ID: "c", Type: "http", Spec: withCA})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Execute: %v", err)
		}
	}
	if err := x.Execute(context.Background(), &Command{ID: "c", Type: "http", Spec: spec(`{"insecureSkipVerify": true}`)}); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.tlsClients) != 2 {
		t.Fatalf("%d TLS clients; want 2, one per TLS configuration", len(x.tlsClients))
	}
	for _, c := range x.tlsClients {
		tr, ok := c.Transport.(*http.Transport)
		if !ok || tr.MaxIdleConnsPerHost != 256 || tr.TLSClientConfig == nil {
			t.Errorf("TLS client transport %#v; want an *http.Transport with MaxIdleConnsPerHost 256 and the TLS configuration", c.Transport)
		}
	}
}

// TestCheckHTTPSecurity: the shapes of tls, basicAuth and secureHeaders are checked at load time,
// and Render checks them again once the parameters are applied.
func TestCheckHTTPSecurity(t *testing.T) {
	ref := `{"name": "s", "key": "k"}`
	for _, tc := range []struct {
		name                    string
		tls, basicAuth, headers string
		wantErr                 string // empty: valid
		notSupported            bool
	}{
		{name: "all set", tls: `{"caCertSecret": ` + ref + `, "clientCertSecret": ` + ref + `, "clientKeySecret": ` + ref + `}`,
			basicAuth: `{"username": ` + ref + `, "password": ` + ref + `}`, headers: `[{"name": "A", "valueFrom": {"secretKeyRef": ` + ref + `}}]`},
		{name: "tls enabled", tls: `{"enabled": true}`},
		{name: "password only", basicAuth: `{"password": ` + ref + `}`},
		{name: "null fields", tls: `null`, basicAuth: `null`, headers: `null`},
		{name: "empty tls", tls: `{}`, wantErr: "http.tls: set enabled, insecureSkipVerify, caCertSecret or clientCertSecret and clientKeySecret"},
		{name: "cert without key", tls: `{"clientCertSecret": ` + ref + `}`, wantErr: "http.tls: clientCertSecret and clientKeySecret go together"},
		{name: "ca without key", tls: `{"caCertSecret": {"name": "s"}}`, wantErr: "http.tls.caCertSecret: a secret name and key are required"},
		{name: "empty basicAuth", basicAuth: `{}`, wantErr: "http.basicAuth: set username, password or both"},
		{name: "username without name", basicAuth: `{"username": {"key": "u"}}`, wantErr: "http.basicAuth.username: a secret name and key are required"},
		{name: "password without key", basicAuth: `{"username": ` + ref + `, "password": {"name": "s"}}`, wantErr: "http.basicAuth.password: a secret name and key are required"},
		{name: "header without name", headers: `[{"valueFrom": {"secretKeyRef": ` + ref + `}}]`, wantErr: "http.secureHeaders[0].name: required"},
		{name: "header without valueFrom", headers: `[{"name": "A"}]`, wantErr: "http.secureHeaders[0] (A).valueFrom: set secretKeyRef"},
		{name: "header with both refs", headers: `[{"name": "A", "valueFrom": {"secretKeyRef": ` + ref + `, "configMapKeyRef": ` + ref + `}}]`,
			wantErr: "http.secureHeaders[0] (A).valueFrom: set secretKeyRef or configMapKeyRef, not both"},
		{name: "header secret without key", headers: `[{"name": "A", "valueFrom": {"secretKeyRef": ` + ref + `}}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s"}}}]`,
			wantErr: "http.secureHeaders[1] (B).valueFrom.secretKeyRef: a secret name and key are required"},
		{name: "header from a ConfigMap", headers: `[{"name": "A", "valueFrom": {"configMapKeyRef": ` + ref + `}}]`},
		{name: "header ConfigMap without key", headers: `[{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c"}}}]`,
			wantErr: "http.secureHeaders[0] (A).valueFrom.configMapKeyRef: a ConfigMap name and key are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &api.HTTPTrigger{URL: "https://example.com"}
			// Misspelt or mistyped fields are the loader's to refuse (api.Parse); here the
			// shapes that parse but cannot work.
			for _, f := range []struct {
				s    string
				into any
			}{{tc.tls, &h.TLS}, {tc.basicAuth, &h.BasicAuth}, {tc.headers, &h.SecureHeaders}} {
				if f.s != "" {
					if err := json.Unmarshal([]byte(f.s), f.into); err != nil {
						t.Fatal(err)
					}
				}
			}
			checkErr := Check(&api.TriggerTemplate{Name: "t", HTTP: h})
			_, _, renderErr := Render(RenderInput{Template: &api.TriggerTemplate{Name: "t", HTTP: h}, Params: fakeParams{}})
			for what, err := range map[string]error{"Check": checkErr, "Render": renderErr} {
				switch {
				case tc.wantErr == "" && err != nil:
					t.Errorf("%s = %v; want nil", what, err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
					t.Errorf("%s = %v; want an error containing %q", what, err, tc.wantErr)
				case err != nil && errors.Is(err, api.ErrNotSupported) != tc.notSupported:
					t.Errorf("%s = %v; ErrNotSupported %v, want %v", what, err, !tc.notSupported, tc.notSupported)
				}
			}
		})
	}
}

// TestHTTPExecuteConfigMapHeader: a secure header from a ConfigMap is resolved as a ConfigMap
// (here from KEVENTS_CONFIGMAP_*), never as a Secret of the same name.
func TestHTTPExecuteConfigMapHeader(t *testing.T) {
	srv, got := recordingServer(t, http.StatusOK)
	values := map[string]string{"cm/k": "a-value-from-the-secret"}
	x := httpExecutorForTest(t, Env{Secrets: httpTestSecrets(values)})
	cmd := httpCommand(t, "c", HTTPRequest{URL: srv.URL, Method: http.MethodPost, SecureHeaders: []*api.SecureHeader{
		{Name: "A", ValueFrom: &api.ValueFromSource{ConfigMapKeyRef: &api.ConfigMapKeySelector{Name: "cm", Key: "k"}}},
	}})
	err := x.Execute(context.Background(), cmd)
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "http.secureHeaders[0] (A): configmap cm/k not found") ||
		!strings.Contains(err.Error(), secrets.ConfigMapEnvName("cm", "k")) {
		t.Errorf("Execute = %v; want configmap cm/k not found, naming the field and the variable", err)
	}
	assertNoSecret(t, "error", err.Error(), values)
	noRequest(t, got)

	env := map[string]string{secrets.ConfigMapEnvName("cm", "k"): "from-the-configmap"}
	withCM := httpExecutorForTest(t, Env{Secrets: secrets.Resolver{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}})
	if err := withCM.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute with the ConfigMap set: %v", err)
	}
	if v := nextRequest(t, got).header.Get("A"); v != "from-the-configmap" {
		t.Errorf("header A = %q; want the ConfigMap's value", v)
	}

	// A basic auth secret that is missing fails the command before any request.
	cmd = httpCommand(t, "c", HTTPRequest{URL: srv.URL, Method: http.MethodPost, BasicAuth: &api.BasicAuth{Password: &api.SecretKeySelector{Name: "nope", Key: "pass"}}})
	if err := x.Execute(context.Background(), cmd); !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "http.basicAuth.password") {
		t.Errorf("Execute = %v; want secret not found naming http.basicAuth.password", err)
	}
	noRequest(t, got)
}

// TestHTTPSecureHeadersFromKubeAPI: in a cluster, secure headers come from the ConfigMap and the
// Secret in the Kubernetes API; a Secret of the ConfigMap's name is not used.
func TestHTTPSecureHeadersFromKubeAPI(t *testing.T) {
	kube := kubetest.Start(t)
	dyn, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	secretGVR := schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	mustCreate(t, dyn.Resource(nsGVR), "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n")
	mustCreate(t, dyn.Resource(configMapGVR).Namespace("team-a"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hook}\ndata: {tenant: acme-42}\n")
	mustCreate(t, dyn.Resource(secretGVR).Namespace("team-a"), "apiVersion: v1\nkind: Secret\nmetadata: {name: hook}\nstringData: {tenant: not-this-one, token: tok-from-api-7}\n")
	kubeSecrets, err := secrets.NewKube(kube.Config, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	x := httpExecutorForTest(t, Env{Secrets: secrets.Resolver{LookupEnv: func(string) (string, bool) { return "", false }, Kube: kubeSecrets}})
	srv, got := recordingServer(t, http.StatusOK)
	header := func(key string) []*api.SecureHeader {
		return []*api.SecureHeader{
			{Name: "X-Tenant", ValueFrom: &api.ValueFromSource{ConfigMapKeyRef: &api.ConfigMapKeySelector{Name: "hook", Key: key}}},
			{Name: "X-Api-Token", ValueFrom: &api.ValueFromSource{SecretKeyRef: &api.SecretKeySelector{Name: "hook", Key: "token"}}},
		}
	}

	cmd := httpCommand(t, "c1", HTTPRequest{URL: srv.URL, Method: http.MethodPost, SecureHeaders: header("tenant")})
	if err := x.Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	r := nextRequest(t, got)
	if a, b := r.header.Get("X-Tenant"), r.header.Get("X-Api-Token"); a != "acme-42" || b != "tok-from-api-7" {
		t.Errorf("X-Tenant = %q, X-Api-Token = %q; want the ConfigMap's acme-42 and the Secret's token", a, b)
	}

	cmd = httpCommand(t, "c2", HTTPRequest{URL: srv.URL, Method: http.MethodPost, SecureHeaders: header("missing")})
	err = x.Execute(context.Background(), cmd)
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "http.secureHeaders[0] (X-Tenant)") ||
		!strings.Contains(err.Error(), `ConfigMap hook in namespace team-a has no key "missing"`) {
		t.Errorf("Execute = %v; want not found naming the header and the ConfigMap's missing key", err)
	}
	noRequest(t, got)
}
