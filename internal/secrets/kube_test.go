package secrets

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/kevents/kevents/internal/kubetest"
)

// apply creates or replaces a Secret (stringData) or ConfigMap (data) in namespace ns.
func apply(t *testing.T, dyn dynamic.Interface, k kind, ns, name string, data map[string]any) {
	t.Helper()
	field := "data"
	if k == secretKind {
		field = "stringData"
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": k.name,
		"metadata": map[string]any{"name": name, "namespace": ns},
		field:      data,
	}}
	ri := dyn.Resource(k.gvr).Namespace(ns)
	ctx := context.Background()
	old, err := ri.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		obj.SetResourceVersion(old.GetResourceVersion())
		_, err = ri.Update(ctx, obj, metav1.UpdateOptions{})
	} else {
		_, err = ri.Create(ctx, obj, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("apply %s %s/%s: %v", k.name, ns, name, err)
	}
}

func newKube(t *testing.T, cfg *rest.Config, ns string) *Kube {
	t.Helper()
	k, err := NewKube(cfg, ns)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKubeSecretsAndConfigMaps resolves Secrets and ConfigMaps from a real kube-apiserver. The
// API's other refusals are covered by an unauthorized client; a forbidden one is not, as the
// test server authorizes everything (AlwaysAllow) and both take the same path.
func TestKubeSecretsAndConfigMaps(t *testing.T) {
	srv := kubetest.Start(t)
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	nsGVR := secretKind.gvr
	nsGVR.Resource = "namespaces"
	for _, ns := range []string{"team-a", "team-b"} {
		obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
		if _, err := dyn.Resource(nsGVR).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	apply(t, dyn, secretKind, "team-a", "auth", map[string]any{"token": value + "\n", "user": "alice"})
	apply(t, dyn, secretKind, "team-b", "only-b", map[string]any{"token": value})
	apply(t, dyn, configMapKind, "team-a", "settings", map[string]any{"header": "plain-value\n"})
	kube := newKube(t, srv.Config, "team-a")
	noEnv := env(nil, nil)

	t.Run("from the API", func(t *testing.T) {
		r := Resolver{LookupEnv: noEnv, Kube: kube}
		for _, c := range []struct {
			get        func(string, string) (string, error)
			name, key  string
			want, what string
		}{
			{r.Resolve, "auth", "token", value, "Secret, trailing newline dropped as from a file"},
			{r.Resolve, "auth", "user", "alice", "second key of the same Secret"},
			{r.ResolveConfigMap, "settings", "header", "plain-value", "ConfigMap"},
		} {
			if got, err := c.get(c.name, c.key); err != nil || got != c.want {
				t.Errorf("%s: %s/%s = %q, %v; want %q", c.what, c.name, c.key, got, err, c.want)
			}
		}
		// A ConfigMap is not read as a Secret of the same name, nor the reverse.
		if _, err := r.Resolve("settings", "header"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve of a ConfigMap's name: %v; want ErrNotFound", err)
		}
		if _, err := r.ResolveConfigMap("auth", "token"); !errors.Is(err, ErrNotFound) {
			t.Errorf("ResolveConfigMap of a Secret's name: %v; want ErrNotFound", err)
		}
	})

	t.Run("file and environment override the API", func(t *testing.T) {
		dir := t.TempDir()
		writeSecret(t, dir, "auth", "token", "from-file")
		vars := map[string]string{EnvName("auth", "token"): "from-env", EnvName("auth", "user"): "env-user",
			ConfigMapEnvName("settings", "header"): "env-header"}
		r := Resolver{Dir: dir, LookupEnv: env(vars, nil), Kube: kube}
		for _, c := range [][4]string{
			{"Resolve", "token", "from-file", "the file wins over the environment and the API"},
			{"Resolve", "user", "env-user", "the environment wins over the API"},
			{"ResolveConfigMap", "header", "env-header", "the environment wins over the API"},
		} {
			var got string
			var err error
			if c[0] == "Resolve" {
				got, err = r.Resolve("auth", c[1])
			} else {
				got, err = r.ResolveConfigMap("settings", c[1])
			}
			if err != nil || got != c[2] {
				t.Errorf("%s %s: %q, %v; want %q (%s)", c[0], c[1], got, err, c[2], c[3])
			}
		}
	})

	t.Run("missing key or Secret", func(t *testing.T) {
		dir := t.TempDir()
		r := Resolver{Dir: dir, LookupEnv: noEnv, Kube: kube}
		for _, c := range []struct {
			get       func(string, string) (string, error)
			name, key string
			want      []string
		}{
			{r.Resolve, "auth", "password", []string{"secret auth/password not found", filepath.Join(dir, "auth", "password"),
				EnvName("auth", "password"), `Secret auth in namespace team-a has no key "password"`}},
			{r.Resolve, "nope", "token", []string{"secret nope/token not found", filepath.Join(dir, "nope", "token"),
				EnvName("nope", "token"), "Secret nope in namespace team-a does not exist"}},
			// Another namespace's Secret is not read.
			{r.Resolve, "only-b", "token", []string{"Secret only-b in namespace team-a does not exist"}},
			{r.ResolveConfigMap, "settings", "other", []string{"configmap settings/other not found",
				ConfigMapEnvName("settings", "other"), `ConfigMap settings in namespace team-a has no key "other"`}},
			{r.ResolveConfigMap, "nope", "k", []string{"ConfigMap nope in namespace team-a does not exist"}},
		} {
			got, err := c.get(c.name, c.key)
			if !errors.Is(err, ErrNotFound) || got != "" {
				t.Errorf("%s/%s: %q, %v; want ErrNotFound", c.name, c.key, got, err)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s/%s: error %q does not say %q", c.name, c.key, err, w)
				}
			}
			if strings.Contains(err.Error(), value) {
				t.Errorf("error %q leaks a value", err)
			}
		}
	})

	t.Run("API refusal is not absence", func(t *testing.T) {
		bad := rest.CopyConfig(srv.Config)
		bad.BearerToken = "wrong-token"
		r := Resolver{LookupEnv: noEnv, Kube: newKube(t, bad, "team-a")}
		_, err := r.Resolve("auth", "token")
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("Resolve with a rejected token: %v; want an API error, not ErrNotFound", err)
		}
		for _, w := range []string{"secret auth/token", EnvName("auth", "token"), "get Secret auth in namespace team-a", "Unauthorized"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	})

	t.Run("rotation", func(t *testing.T) {
		apply(t, dyn, secretKind, "team-a", "rotating", map[string]any{"token": "v1"})
		k := newKube(t, srv.Config, "team-a")
		k.ttl = 300 * time.Millisecond
		r := Resolver{LookupEnv: noEnv, Kube: k}
		if got, err := r.Resolve("rotating", "token"); err != nil || got != "v1" {
			t.Fatalf("before rotation: %q, %v; want v1", got, err)
		}
		apply(t, dyn, secretKind, "team-a", "rotating", map[string]any{"token": "v2"})
		if got, _ := r.Resolve("rotating", "token"); got != "v1" {
			t.Errorf("within the cache TTL: %q; want the cached v1", got)
		}
		time.Sleep(k.ttl)
		// Concurrent callers share the client and the cache.
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got, err := r.Resolve("rotating", "token"); err != nil || got != "v2" {
					t.Errorf("after the TTL: %q, %v; want v2", got, err)
				}
			}()
		}
		wg.Wait()
	})
}

// TestKubeSecretUnreachable: an API that cannot be reached is reported as such, naming where it
// looked, and not as ErrNotFound.
func TestKubeSecretUnreachable(t *testing.T) {
	r := Resolver{LookupEnv: env(nil, nil), Kube: newKube(t, &rest.Config{Host: "https://127.0.0.1:1", Timeout: 5 * time.Second}, "ns")}
	_, err := r.Resolve("auth", "token")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Resolve: %v; want an API error, not ErrNotFound", err)
	}
	for _, w := range []string{"secret auth/token", "the Kubernetes API failed", "get Secret auth in namespace ns", "127.0.0.1:1"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestConfigMapWithoutKube(t *testing.T) {
	got, err := Resolver{LookupEnv: env(map[string]string{ConfigMapEnvName("cm", "k"): "v"}, nil)}.ResolveConfigMap("cm", "k")
	if err != nil || got != "v" {
		t.Errorf("from the environment: %q, %v; want v", got, err)
	}
	_, err = Resolver{LookupEnv: env(nil, nil)}.ResolveConfigMap("cm", "other")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ConfigMapEnvName("cm", "other")) || !strings.Contains(err.Error(), "no Kubernetes API configured") {
		t.Errorf("no API: %v; want ErrNotFound naming the variable and the missing API", err)
	}
	if _, err := (Resolver{}).ResolveConfigMap("../x", "k"); err == nil || !strings.Contains(err.Error(), "configmap name") {
		t.Errorf("bad name: %v", err)
	}
}

func TestKubeNamespace(t *testing.T) {
	if k, err := NewKube(nil, "ns"); k != nil || err != nil {
		t.Errorf("NewKube(nil) = %v, %v; want nil, nil", k, err)
	}
	f := filepath.Join(t.TempDir(), "namespace")
	namespaceFile = f
	t.Cleanup(func() { namespaceFile = NamespaceFile })
	if ns := DefaultNamespace(); ns != "default" {
		t.Errorf("outside a cluster: %q; want default", ns)
	}
	if err := os.WriteFile(f, []byte("team-a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	for given, want := range map[string]string{"": "team-a", "given": "given"} {
		if ns := newKube(t, cfg, given).Namespace(); ns != want {
			t.Errorf("NewKube(%q).Namespace() = %q; want %q", given, ns, want)
		}
	}
}
