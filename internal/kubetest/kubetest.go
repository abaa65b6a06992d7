// Package kubetest starts a real kube-apiserver, backed by a real etcd, for the tests that
// create Kubernetes objects. Nothing is simulated: the binaries are the upstream ones, built
// once by `make kube` into a cache folder outside git (see hack/kube).
//
// A test that calls Start skips with a message naming what is missing when the binaries are
// absent, unless KEVENTS_REQUIRE_KUBE is set (CI sets it), in which case it fails.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AssetsEnv overrides the folder holding kube-apiserver and kubectl.
const AssetsEnv = "KEVENTS_KUBE_ASSETS"

// RequireEnv turns a missing binary from a skip into a failure.
const RequireEnv = "KEVENTS_REQUIRE_KUBE"

const token = "kevents-test-token"

// Server is a running kube-apiserver.
type Server struct {
	// Config reaches the server as a cluster admin.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file for the same identity, for kubectl.
	Kubeconfig string
	// Kubectl is the path of the kubectl built beside the server.
	Kubectl string
}

// AssetsDir is where `make kube` puts the binaries.
func AssetsDir() string {
	if d := os.Getenv(AssetsEnv); d != "" {
		return d
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(".cache", "kevents", "kube")
	}
	return filepath.Join(cache, "kevents", "kube")
}

// binaries finds kube-apiserver, kubectl and etcd, or says what is missing.
func binaries() (apiserver, kubectl, etcd string, err error) {
	dir := AssetsDir()
	apiserver, kubectl = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "kubectl")
	var missing []string
	for _, p := range []string{apiserver, kubectl} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p+" (run `make test-servers`; it builds it once, about 7 minutes)")
		}
	}
	if etcd, err = exec.LookPath("etcd"); err != nil {
		if _, err2 := os.Stat(filepath.Join(dir, "etcd")); err2 == nil {
			etcd, err = filepath.Join(dir, "etcd"), nil
		} else {
			missing = append(missing, "etcd (`make test-servers` installs Debian's etcd-server)")
		}
	}
	if len(missing) > 0 {
		return "", "", "", fmt.Errorf("no Kubernetes API server for this test: missing %s", strings.Join(missing, ", "))
	}
	return apiserver, kubectl, etcd, nil
}

// Start runs etcd and a kube-apiserver for the test and stops them when it ends. It takes about
// three seconds.
func Start(t testing.TB) *Server {
	t.Helper()
	apiserver, kubectl, etcd, err := binaries()
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%v (%s is set, so this is a failure, not a skip)", err, RequireEnv)
		}
		t.Skip(err.Error())
	}
	dir := t.TempDir()
	etcdURL := startEtcd(t, etcd, dir)

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(token+",admin,admin,system:masters\n"))

	port := freePort(t)
	cmd := exec.Command(apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		// No kubernetes Service endpoints: nothing in the tests needs them, and a loopback address
		// is refused as one.
		"--endpoint-reconciler-type=none",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--token-auth-file="+tokens,
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		// Without a controller manager no namespace gets its default ServiceAccount.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	host := "https://127.0.0.1:" + strconv.Itoa(port)
	cfg := &rest.Config{Host: host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
	if err := waitReady(cfg, exited); err != nil {
		t.Fatalf("kube-apiserver: %v\n%s", err, tail(logs.String(), 4000))
	}
	s := &Server{Config: cfg, Kubectl: kubectl, Kubeconfig: filepath.Join(dir, "kubeconfig")}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: host, InsecureSkipTLSVerify: true}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin", Namespace: "default"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, s.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	return s
}

func startEtcd(t testing.TB, bin, dir string) string {
	client, peer := freePort(t), freePort(t)
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	cmd := exec.Command(bin,
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		// The peer port is set too: the default 2380 would clash between parallel test binaries.
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync",
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("etcd exited:\n%s", tail(logs.String(), 4000))
		default:
		}
		if resp, err := http.Get(clientURL + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return clientURL
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("etcd not healthy after 20s:\n%s", tail(logs.String(), 4000))
	return ""
}

func waitReady(cfg *rest.Config, exited <-chan struct{}) error {
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		default:
		}
		resp, err := client.Get(cfg.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 60s: %v", last)
}

// Apply creates every object in the YAML files (several documents each), in order. A
// CustomResourceDefinition is waited for until it is established, so objects of its kind can
// follow at once.
func (s *Server) Apply(t testing.TB, files ...string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var obj unstructured.Unstructured
			if err := dec.Decode(&obj.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v", f, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			s.create(t, dyn, &obj)
		}
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func (s *Server) create(t testing.TB, dyn dynamic.Interface, obj *unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	gvk := obj.GroupVersionKind()
	if gvk.Kind != "CustomResourceDefinition" {
		t.Fatalf("kubetest.Apply creates CustomResourceDefinitions only, got %s %s", gvk.Kind, obj.GetName())
	}
	if _, err := dyn.Resource(crdGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create CRD %s: %v", obj.GetName(), err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		got, err := dyn.Resource(crdGVR).Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err == nil && established(got) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("CRD %s not established after 30s", obj.GetName())
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t testing.TB, path string, data []byte) {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
