package trigger

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/kevents/kevents/api"
)

// Labels kevents sets on the objects its triggers create. The first three are Argo's, so
// tooling written for Argo Events finds kevents' objects too.
const (
	LabelSensor          = "events.argoproj.io/sensor"
	LabelTrigger         = "events.argoproj.io/trigger"
	LabelActionTimestamp = "events.argoproj.io/action-timestamp"
	// LabelCommandID holds the id of the command that created the object: a retry of the
	// command finds its own object instead of creating a second one.
	LabelCommandID = "events.kevents.io/command-id"
)

// ErrNoKube is returned when a k8s or argoWorkflow command runs in a member that has no
// Kubernetes API to talk to.
var ErrNoKube = errors.New("no Kubernetes API configured: run in a cluster, or pass --kubeconfig or set KUBECONFIG")

// KubeRequest is the rendered command of a k8s or argoWorkflow trigger. The object itself is
// read when the command runs, as Argo reads it when the trigger fires (a file, URL, ConfigMap or
// Git repository may change between firings); the parameters travel resolved.
type KubeRequest struct {
	Source        *api.ArtifactLocation `json:"source"`
	Parameters    []Resolved            `json:"parameters,omitempty"`
	Operation     string                `json:"operation"`
	PatchStrategy string                `json:"patchStrategy,omitempty"`
	LiveObject    bool                  `json:"liveObject,omitempty"`
}

// LabelPolicy is a trigger's policy.k8s: the command succeeds only once the object it acted on
// carries Labels, polled Backoff.Steps times with a growing wait.
type LabelPolicy struct {
	Labels  map[string]string `json:"labels"`
	Backoff Retry             `json:"backoff"`
	// ErrorOnTimeout fails the command when the labels never appear; otherwise it succeeds.
	ErrorOnTimeout bool `json:"errorOnTimeout,omitempty"`
}

func renderKube(in RenderInput, field string, src *api.ArtifactLocation, params []api.TriggerParameter, req KubeRequest) (json.RawMessage, error) {
	rs, err := in.Params.Resolve(params)
	if err != nil {
		return nil, fmt.Errorf("%s.%w", field, err)
	}
	req.Source, req.Parameters = src, rs
	return json.Marshal(req)
}

// checkSource validates a trigger's source at load time. An inline object must parse, so a
// typo is reported when the sensor loads rather than when it first fires.
func checkSource(field string, s *api.ArtifactLocation) error {
	if s == nil {
		return fmt.Errorf("%s: missing; expected one of inline, resource, file, url, configmap or git", field)
	}
	var set []string
	for name, ok := range map[string]bool{"s3": len(s.S3) > 0, "inline": s.Inline != nil, "file": s.File != nil,
		"url": s.URL != nil, "configmap": s.Configmap != nil, "git": s.Git != nil, "resource": len(s.Resource) > 0} {
		if ok {
			set = append(set, name)
		}
	}
	sort.Strings(set)
	switch {
	case len(set) == 0:
		return fmt.Errorf("%s: empty; expected one of inline, resource, file, url, configmap or git", field)
	case len(set) > 1:
		return fmt.Errorf("%s: sets %s; expected exactly one", field, strings.Join(set, " and "))
	}
	switch {
	case len(s.S3) > 0:
		return fmt.Errorf("%s.s3: %w", field, api.NotSupported("trigger source", "s3"))
	case s.Inline != nil:
		_, err := parseObject([]byte(*s.Inline))
		if err != nil {
			return fmt.Errorf("%s.inline: %w", field, err)
		}
	case len(s.Resource) > 0:
		_, err := parseObject(s.Resource)
		if err != nil {
			return fmt.Errorf("%s.resource: %w", field, err)
		}
	case s.File != nil && s.File.Path == "":
		return fmt.Errorf("%s.file.path: missing", field)
	case s.URL != nil && s.URL.Path == "":
		return fmt.Errorf("%s.url.path: missing", field)
	case s.Configmap != nil && (s.Configmap.Name == "" || s.Configmap.Key == ""):
		return fmt.Errorf("%s.configmap: name and key are required", field)
	case s.Git != nil:
		return checkGit(field+".git", s.Git)
	}
	return nil
}

func checkGit(field string, g *api.GitArtifact) error {
	switch {
	case g.URL == "":
		return fmt.Errorf("%s.url: missing", field)
	case g.FilePath == "":
		return fmt.Errorf("%s.filePath: missing", field)
	case g.Creds != nil:
		return fmt.Errorf("%s.creds: %w", field, api.NotSupported("git trigger source field", "creds"))
	case g.SSHKeySecret != nil:
		return fmt.Errorf("%s.sshKeySecret: %w", field, api.NotSupported("git trigger source field", "sshKeySecret"))
	case len(g.GithubApp) > 0:
		return fmt.Errorf("%s.githubApp: %w", field, api.NotSupported("git trigger source field", "githubApp"))
	case g.Remote != nil:
		return fmt.Errorf("%s.remote: %w", field, api.NotSupported("git trigger source field", "remote"))
	}
	n := 0
	for _, s := range []string{g.Branch, g.Tag, g.Ref} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%s: set at most one of branch, tag and ref", field)
	}
	return nil
}

// parseObject reads a Kubernetes object written as YAML or JSON.
func parseObject(data []byte) (*unstructured.Unstructured, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not a YAML or JSON object: %w", err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(j); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	return obj, nil
}

// kubeAccess is the Kubernetes API as trigger types use it. Clients are built on first use, so
// a member without a cluster runs every other trigger type.
type kubeAccess struct {
	env Env

	mu     sync.Mutex
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newKubeAccess(env Env) *kubeAccess { return &kubeAccess{env: env} }

func (k *kubeAccess) clients() (dynamic.Interface, *restmapper.DeferredDiscoveryRESTMapper, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dyn != nil {
		return k.dyn, k.mapper, nil
	}
	if k.env.Kube == nil {
		return nil, nil, Terminal(ErrNoKube)
	}
	dyn, err := dynamic.NewForConfig(k.env.Kube)
	if err != nil {
		return nil, nil, Terminal(fmt.Errorf("kubernetes client: %w", err))
	}
	disc, err := discovery.NewDiscoveryClientForConfig(k.env.Kube)
	if err != nil {
		return nil, nil, Terminal(fmt.Errorf("kubernetes discovery client: %w", err))
	}
	k.dyn, k.mapper = dyn, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	return k.dyn, k.mapper, nil
}

// resource maps an object's kind to its API resource, rediscovering once when the kind is new
// (a CRD installed after the cache was filled). ns is the namespace to use: the object's, else
// defaultNS, and none for cluster-scoped kinds.
func (k *kubeAccess) resource(obj *unstructured.Unstructured, defaultNS string) (dynamic.ResourceInterface, string, error) {
	dyn, mapper, err := k.clients()
	if err != nil {
		return nil, "", err
	}
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, "", Terminal(fmt.Errorf("object: apiVersion and kind are required, got apiVersion %q, kind %q", obj.GetAPIVersion(), obj.GetKind()))
	}
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		mapper.Reset()
		m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, "", fmt.Errorf("object kind %s is not served by the cluster: %w", gvk, err)
		}
		return nil, "", fmt.Errorf("object kind %s: %w", gvk, err)
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		obj.SetNamespace("")
		return dyn.Resource(m.Resource), "", nil
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = defaultNS
	}
	obj.SetNamespace(ns)
	return dyn.Resource(m.Resource).Namespace(ns), ns, nil
}

// object reads a command's object from its source and applies the resolved parameters.
func (k *kubeAccess) object(ctx context.Context, cmd *Command, req *KubeRequest) (*unstructured.Unstructured, error) {
	data, err := k.read(ctx, cmd.Namespace, req.Source)
	if err != nil {
		return nil, err
	}
	obj, err := parseObject(data)
	if err != nil {
		return nil, Terminal(fmt.Errorf("source: %w", err))
	}
	return applyToObject(obj, req.Parameters)
}

func applyToObject(obj *unstructured.Unstructured, rs []Resolved) (*unstructured.Unstructured, error) {
	if len(rs) == 0 {
		return obj, nil
	}
	doc, err := obj.MarshalJSON()
	if err != nil {
		return nil, err
	}
	if doc, err = ApplyResolved(doc, rs); err != nil {
		return nil, Terminal(err)
	}
	out := &unstructured.Unstructured{}
	if err := out.UnmarshalJSON(doc); err != nil {
		return nil, Terminal(fmt.Errorf("parameters: the result is not a Kubernetes object: %w", err))
	}
	return out, nil
}

// read returns the bytes of a trigger source. Reads that may succeed later (a URL or ConfigMap
// not there yet) return retryable errors.
func (k *kubeAccess) read(ctx context.Context, namespace string, s *api.ArtifactLocation) ([]byte, error) {
	switch {
	case s == nil:
		return nil, Terminal(errors.New("source: missing"))
	case s.Inline != nil:
		return []byte(*s.Inline), nil
	case len(s.Resource) > 0:
		return s.Resource, nil
	case s.File != nil:
		data, err := os.ReadFile(s.File.Path)
		if err != nil {
			return nil, fmt.Errorf("source.file: %w", err)
		}
		return data, nil
	case s.URL != nil:
		return readURL(ctx, s.URL, k.env.HTTPClient)
	case s.Configmap != nil:
		return k.readConfigMap(ctx, namespace, s.Configmap)
	case s.Git != nil:
		return readGit(ctx, s.Git)
	}
	return nil, Terminal(api.NotSupported("trigger source", "s3"))
}

func readURL(ctx context.Context, u *api.URLArtifact, client *http.Client) ([]byte, error) {
	if !u.VerifyCert {
		// Argo's default: verifyCert false skips verification of the server's certificate.
		client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	} else if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Path, nil)
	if err != nil {
		return nil, Terminal(fmt.Errorf("source.url.path: %q: %w", u.Path, err))
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("source.url: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("source.url: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("source.url: GET %s: %s", u.Path, resp.Status)
	}
	return body, nil
}

var (
	configMapGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	podGVR       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	workflowGVR  = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "workflows"}
)

func (k *kubeAccess) readConfigMap(ctx context.Context, namespace string, sel *api.ConfigMapKeySelector) ([]byte, error) {
	dyn, _, err := k.clients()
	if err != nil {
		return nil, err
	}
	cm, err := dyn.Resource(configMapGVR).Namespace(namespace).Get(ctx, sel.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("source.configmap: %s/%s: %w", namespace, sel.Name, err)
	}
	v, ok, _ := unstructured.NestedString(cm.Object, "data", sel.Key)
	if !ok {
		return nil, fmt.Errorf("source.configmap: %s/%s has no key %q", namespace, sel.Name, sel.Key)
	}
	return []byte(v), nil
}

// readGit clones the repository shallowly with the git command and reads one file. A fresh
// clone per command keeps concurrent commands apart; Argo clones per firing too.
func readGit(ctx context.Context, g *api.GitArtifact) ([]byte, error) {
	parent := g.CloneDirectory
	if parent != "" {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, fmt.Errorf("source.git.cloneDirectory: %w", err)
		}
	}
	dir, err := os.MkdirTemp(parent, "kevents-git-")
	if err != nil {
		return nil, fmt.Errorf("source.git: %w", err)
	}
	defer os.RemoveAll(dir)
	git := func(args ...string) error {
		c := exec.CommandContext(ctx, "git", args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
		if g.InsecureIgnoreHostKey {
			c.Env = append(c.Env, "GIT_SSH_COMMAND=ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")
		}
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	ref := "HEAD"
	switch {
	case g.Branch != "":
		ref = "refs/heads/" + g.Branch
	case g.Tag != "":
		ref = "refs/tags/" + g.Tag
	case g.Ref != "":
		ref = g.Ref
	}
	for _, args := range [][]string{{"init", "-q"}, {"fetch", "-q", "--depth=1", g.URL, ref}, {"checkout", "-q", "FETCH_HEAD"}} {
		if err := git(args...); err != nil {
			return nil, fmt.Errorf("source.git %s: %w", g.URL, err)
		}
	}
	path := filepath.Join(dir, filepath.FromSlash(g.FilePath))
	if rel, err := filepath.Rel(dir, path); err != nil || strings.HasPrefix(rel, "..") {
		return nil, Terminal(fmt.Errorf("source.git.filePath: %q leaves the repository", g.FilePath))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Terminal(fmt.Errorf("source.git.filePath: %q: %w", g.FilePath, err))
	}
	return data, nil
}

// create creates obj for cmd, once: the object is labelled with the command id and, when it has
// only a generateName, named from it, so a retry after a crash finds the object it created.
func create(ctx context.Context, ri dynamic.ResourceInterface, cmd *Command, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelSensor] = cmd.Sensor
	labels[LabelTrigger] = cmd.Trigger
	labels[LabelActionTimestamp] = strconv.FormatInt(time.Now().UnixMilli(), 10)
	labels[LabelCommandID] = cmd.ID
	obj.SetLabels(labels)
	if obj.GetName() == "" {
		if obj.GetGenerateName() == "" {
			return nil, Terminal(errors.New("object: neither metadata.name nor metadata.generateName is set"))
		}
		obj.SetName(obj.GetGenerateName() + shortID(cmd.ID))
	}
	created, err := ri.Create(ctx, obj, metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsAlreadyExists(err) {
		existing, gerr := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if gerr == nil && existing.GetLabels()[LabelCommandID] == cmd.ID {
			return existing, nil
		}
		return nil, Terminal(fmt.Errorf("create %s %s: %w", obj.GetKind(), obj.GetName(), err))
	}
	if err != nil {
		return nil, classify(fmt.Errorf("create %s %s: %w", obj.GetKind(), obj.GetName(), err))
	}
	return created, nil
}

// fieldManager names kevents in the managed fields of the objects it writes.
const fieldManager = "kevents"

// shortID is the suffix of names derived from a command id; 10 hex digits keep names short and
// collisions among one trigger's objects negligible.
func shortID(id string) string {
	if len(id) > 10 {
		return id[:10]
	}
	return id
}

// classify marks API errors that a retry cannot fix as terminal: an invalid or forbidden object
// fails the same way every time.
func classify(err error) error {
	switch {
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsForbidden(err),
		apierrors.IsMethodNotSupported(err), apierrors.IsNotAcceptable(err), apierrors.IsUnsupportedMediaType(err):
		return Terminal(err)
	}
	return err
}

// waitForLabels applies a policy.k8s: it polls the object until it carries the policy's
// labels. A wait that times out fails the command only with errorOnBackoffTimeout, as in Argo.
func waitForLabels(ctx context.Context, ri dynamic.ResourceInterface, name string, p *LabelPolicy) error {
	if p == nil || len(p.Labels) == 0 {
		return nil
	}
	wait := p.Backoff.Duration
	for i := 0; i < max(p.Backoff.Steps, 1); i++ {
		obj, err := ri.Get(ctx, name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("policy.k8s: get %s: %w", name, err)
		}
		if err == nil && hasLabels(obj.GetLabels(), p.Labels) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = time.Duration(float64(wait) * p.Backoff.Factor)
	}
	if p.ErrorOnTimeout {
		return fmt.Errorf("policy.k8s: %s did not get the labels %v within its backoff", name, p.Labels)
	}
	return nil
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
