package trigger

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kubetest"
)

var (
	nsGVR   = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	wftGVR  = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "workflowtemplates"}
	cronGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "cronworkflows"}
)

// kubeCommand renders a k8s or argoWorkflow template into a command, the way the sensor does,
// with values standing in for the events' data.
func kubeCommand(t *testing.T, id string, tmpl *api.TriggerTemplate, values map[string]string) *Command {
	t.Helper()
	if err := Check(tmpl); err != nil {
		t.Fatalf("Check: %v", err)
	}
	typ, spec, err := Render(RenderInput{Template: tmpl, Params: fakeParams{values: values}})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return &Command{ID: id, Namespace: "team-a", Sensor: "s", Trigger: tmpl.Name, Type: typ, Spec: spec}
}

func param(key, dest string) api.TriggerParameter {
	return api.TriggerParameter{Src: src(key), Dest: dest}
}

func inline(s string) *api.ArtifactLocation { return &api.ArtifactLocation{Inline: &s} }

func mustGet(t *testing.T, ri dynamic.ResourceInterface, name string) *unstructured.Unstructured {
	t.Helper()
	obj, err := ri.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return obj
}

func mustCreate(t *testing.T, ri dynamic.ResourceInterface, manifest string) *unstructured.Unstructured {
	t.Helper()
	obj, err := parseObject([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	created, err := ri.Create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s: %v", obj.GetName(), err)
	}
	return created
}

func TestKubeWithoutCluster(t *testing.T) {
	x := k8sExecutor{newKubeAccess(Env{})}
	cmd := kubeCommand(t, "c1", &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
		Source: inline("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")}}, nil)
	err := x.Execute(context.Background(), cmd)
	if !errors.Is(err, ErrNoKube) || !errors.Is(err, ErrTerminal) {
		t.Fatalf("Execute without a cluster = %v; want the terminal ErrNoKube", err)
	}
}

// TestKubeTriggers runs the k8s and argoWorkflow triggers against a real kube-apiserver.
func TestKubeTriggers(t *testing.T) {
	srv := kubetest.Start(t)
	srv.Apply(t, "testdata/argo-workflows-crds.yaml")
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustCreate(t, dyn.Resource(nsGVR), "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n")
	cms := dyn.Resource(configMapGVR).Namespace("team-a")
	wfs := dyn.Resource(workflowGVR).Namespace("team-a")
	env := Env{Kube: srv.Config}
	k8s := k8sExecutor{newKubeAccess(env)}
	argo := argoExecutor{newKubeAccess(env)}

	t.Run("create from inline, once per command id", func(t *testing.T) {
		tmpl := &api.TriggerTemplate{Name: "make-cm", K8s: &api.K8sTrigger{
			Source:     inline("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: order-\ndata:\n  msg: placeholder\n"),
			Parameters: []api.TriggerParameter{param("msg", "data.msg")},
		}}
		cmd := kubeCommand(t, "0123456789abcdef", tmpl, map[string]string{"msg": "hello"})
		for i := 0; i < 2; i++ { // the second run is a redelivery after a crash
			if err := k8s.Execute(ctx, cmd); err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
		}
		list, err := cms.List(ctx, metav1.ListOptions{LabelSelector: LabelCommandID + "=0123456789abcdef"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 1 {
			t.Fatalf("%d ConfigMaps for one command; want 1", len(list.Items))
		}
		cm := list.Items[0]
		if cm.GetName() != "order-0123456789" {
			t.Errorf("name %q; want generateName plus the command id's first 10 digits", cm.GetName())
		}
		if msg, _, _ := unstructured.NestedString(cm.Object, "data", "msg"); msg != "hello" {
			t.Errorf("data.msg = %q; want the parameter's value", msg)
		}
		if l := cm.GetLabels(); l[LabelSensor] != "s" || l[LabelTrigger] != "make-cm" || l[LabelActionTimestamp] == "" {
			t.Errorf("labels %v; want Argo's sensor, trigger and action-timestamp labels", l)
		}
		if err := k8s.Execute(ctx, kubeCommand(t, "fedcba9876543210", tmpl, map[string]string{"msg": "again"})); err != nil {
			t.Fatal(err)
		}
		if list, _ := cms.List(ctx, metav1.ListOptions{LabelSelector: LabelTrigger + "=make-cm"}); len(list.Items) != 2 {
			t.Errorf("%d ConfigMaps after a second command; want 2", len(list.Items))
		}
	})

	t.Run("a cluster-scoped kind gets no namespace", func(t *testing.T) {
		cmd := kubeCommand(t, "ns1", &api.TriggerTemplate{Name: "make-ns", K8s: &api.K8sTrigger{
			Source: &api.ArtifactLocation{Resource: []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"from-trigger"}}`)}}}, nil)
		if err := k8s.Execute(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		mustGet(t, dyn.Resource(nsGVR), "from-trigger")
	})

	t.Run("a name taken by another object is a terminal error", func(t *testing.T) {
		mustCreate(t, cms, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: taken, namespace: team-a}\n")
		cmd := kubeCommand(t, "c-taken", &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
			Source: inline("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: taken}\n")}}, nil)
		if err := k8s.Execute(ctx, cmd); !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("Execute = %v; want a terminal already-exists error", err)
		}
	})

	t.Run("an object the API server rejects is a terminal error", func(t *testing.T) {
		cmd := kubeCommand(t, "c-bad", &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
			Source: inline("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_A_Name}\n")}}, nil)
		if err := k8s.Execute(ctx, cmd); !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "Not_A_Name") {
			t.Fatalf("Execute = %v; want a terminal error naming the object", err)
		}
	})

	t.Run("update merges into the live object; liveObject applies parameters to it", func(t *testing.T) {
		mustCreate(t, cms, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: team-a}\ndata: {a: '1', b: '2'}\n")
		merge := kubeCommand(t, "u1", &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{Operation: "update",
			Source: inline("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {c: '3'}\n")}}, nil)
		if err := k8s.Execute(ctx, merge); err != nil {
			t.Fatal(err)
		}
		live := kubeCommand(t, "u2", &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{Operation: "update", LiveObject: true,
			Source:     inline("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: team-a}\n"),
			Parameters: []api.TriggerParameter{param("b", "data.b")}}}, map[string]string{"b": "20"})
		if err := k8s.Execute(ctx, live); err != nil {
			t.Fatal(err)
		}
		data, _, _ := unstructured.NestedStringMap(mustGet(t, cms, "settings").Object, "data")
		if want := map[string]string{"a": "1", "b": "20", "c": "3"}; !maps.Equal(data, want) {
			t.Errorf("data %v; want %v", data, want)
		}
	})

	t.Run("patch, and patch of a missing object creates it", func(t *testing.T) {
		tmpl := &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{Operation: "patch",
			Source:     inline("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: patched}\ndata: {state: new}\n"),
			Parameters: []api.TriggerParameter{param("state", "data.state")}}}
		if err := k8s.Execute(ctx, kubeCommand(t, "p1", tmpl, nil)); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Execute(ctx, kubeCommand(t, "p2", tmpl, map[string]string{"state": "done"})); err != nil {
			t.Fatal(err)
		}
		if s, _, _ := unstructured.NestedString(mustGet(t, cms, "patched").Object, "data", "state"); s != "done" {
			t.Errorf("data.state = %q after the patch; want done", s)
		}
	})

	t.Run("delete, twice", func(t *testing.T) {
		mustCreate(t, cms, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: doomed, namespace: team-a}\n")
		cmd := kubeCommand(t, "d1", &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{Operation: "delete",
			Source: inline("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: doomed}\n")}}, nil)
		for i := 0; i < 2; i++ {
			if err := k8s.Execute(ctx, cmd); err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
		}
		if _, err := cms.Get(ctx, "doomed", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get after delete: %v; want not found", err)
		}
	})

	t.Run("sources: file, url, configmap and git", func(t *testing.T) {
		manifest := func(name string) string {
			return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {from: source}\n"
		}
		file := filepath.Join(t.TempDir(), "cm.yaml")
		if err := os.WriteFile(file, []byte(manifest("from-file")), 0o600); err != nil {
			t.Fatal(err)
		}
		web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(manifest("from-url")))
		}))
		defer web.Close()
		holder := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "manifests", "namespace": "team-a"}, "data": map[string]any{"cm": manifest("from-configmap")}}}
		if _, err := cms.Create(ctx, holder, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		repo := gitRepo(t, map[string]string{"deploy/cm.yaml": manifest("from-git")}, "release")

		for _, c := range []struct {
			name string
			src  *api.ArtifactLocation
		}{
			{"from-file", &api.ArtifactLocation{File: &api.FileArtifact{Path: file}}},
			{"from-url", &api.ArtifactLocation{URL: &api.URLArtifact{Path: web.URL + "/cm.yaml"}}},
			{"from-configmap", &api.ArtifactLocation{Configmap: &api.ConfigMapKeySelector{Name: "manifests", Key: "cm"}}},
			{"from-git", &api.ArtifactLocation{Git: &api.GitArtifact{URL: "file://" + repo, FilePath: "deploy/cm.yaml", Branch: "release",
				CloneDirectory: t.TempDir()}}},
		} {
			if err := k8s.Execute(ctx, kubeCommand(t, "src-"+c.name, &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{Source: c.src}}, nil)); err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			mustGet(t, cms, c.name)
		}
		missing := kubeCommand(t, "src-missing", &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
			Source: &api.ArtifactLocation{Git: &api.GitArtifact{URL: "file://" + repo, FilePath: "nope.yaml"}}}}, nil)
		if err := k8s.Execute(ctx, missing); !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), `"nope.yaml"`) {
			t.Errorf("missing git file: %v; want a terminal error naming the path", err)
		}
	})

	t.Run("policy.k8s waits for labels", func(t *testing.T) {
		tmpl := func(labels string) *api.TriggerTemplate {
			return &api.TriggerTemplate{Name: "t", K8s: &api.K8sTrigger{
				Source: inline("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: pol-\n  labels: {" + labels + "}\n")}}
		}
		policy := func(errorOnTimeout bool) *LabelPolicy {
			return &LabelPolicy{Labels: map[string]string{"ready": "yes"}, ErrorOnTimeout: errorOnTimeout,
				Backoff: Retry{Steps: 3, Duration: 20 * time.Millisecond, Factor: 2}}
		}
		ok := kubeCommand(t, "pol-ok", tmpl("ready: 'yes'"), nil)
		ok.LabelPolicy = policy(true)
		if err := k8s.Execute(ctx, ok); err != nil {
			t.Errorf("labels present: %v", err)
		}
		never := kubeCommand(t, "pol-never", tmpl("ready: 'no'"), nil)
		never.LabelPolicy = policy(true)
		if err := k8s.Execute(ctx, never); err == nil || !strings.Contains(err.Error(), "policy.k8s") {
			t.Errorf("labels never set, errorOnBackoffTimeout: %v; want a policy.k8s error", err)
		}
		lenient := kubeCommand(t, "pol-lenient", tmpl("ready: 'no'"), nil)
		lenient.LabelPolicy = policy(false)
		if err := k8s.Execute(ctx, lenient); err != nil {
			t.Errorf("labels never set, no errorOnBackoffTimeout: %v; want success as in Argo", err)
		}
	})

	const workflow = `apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: hello-
spec:
  entrypoint: say
  arguments:
    parameters: [{name: message, value: placeholder}]
  templates:
    - name: say
      container: {image: busybox, command: [echo, "{{workflow.parameters.message}}"]}
`
	argoCmd := func(id, op, src string, params ...api.TriggerParameter) *Command {
		return kubeCommand(t, id, &api.TriggerTemplate{Name: "wf", ArgoWorkflow: &api.ArgoWorkflowTrigger{
			Operation: op, Source: inline(src), Parameters: params}}, map[string]string{"msg": "from the event"})
	}

	t.Run("argoWorkflow submit, once per command id", func(t *testing.T) {
		cmd := argoCmd("a1b2c3d4e5f60718", "submit", workflow, param("msg", "spec.arguments.parameters.0.value"))
		for i := 0; i < 2; i++ {
			if err := argo.Execute(ctx, cmd); err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
		}
		wf := mustGet(t, wfs, "hello-a1b2c3d4e5")
		params, _, _ := unstructured.NestedSlice(wf.Object, "spec", "arguments", "parameters")
		if len(params) != 1 || params[0].(map[string]any)["value"] != "from the event" {
			t.Errorf("arguments %v; want the event's message", params)
		}
		if list, _ := wfs.List(ctx, metav1.ListOptions{LabelSelector: LabelCommandID + "=a1b2c3d4e5f60718"}); len(list.Items) != 1 {
			t.Errorf("%d workflows for one command; want 1", len(list.Items))
		}
	})

	t.Run("argoWorkflow submit-from a WorkflowTemplate and a CronWorkflow", func(t *testing.T) {
		mustCreate(t, dyn.Resource(wftGVR).Namespace("team-a"), "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: build}\nspec: {entrypoint: main}\n")
		mustCreate(t, dyn.Resource(cronGVR).Namespace("team-a"), `apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata: {name: nightly}
spec:
  schedules: ["0 2 * * *"]
  workflowMetadata: {labels: {team: a}}
  workflowSpec: {entrypoint: report}
`)
		if err := argo.Execute(ctx, argoCmd("tmpl000001", "submit-from", "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: build}\n")); err != nil {
			t.Fatal(err)
		}
		wf := mustGet(t, wfs, "build-tmpl000001")
		if ref, _, _ := unstructured.NestedString(wf.Object, "spec", "workflowTemplateRef", "name"); ref != "build" || wf.GetLabels()[labelWorkflowTemplate] != "build" {
			t.Errorf("workflow from template: spec %v, labels %v", wf.Object["spec"], wf.GetLabels())
		}
		if err := argo.Execute(ctx, argoCmd("cron000001", "submit-from", "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: nightly}\n")); err != nil {
			t.Fatal(err)
		}
		wf = mustGet(t, wfs, "nightly-cron000001")
		if ep, _, _ := unstructured.NestedString(wf.Object, "spec", "entrypoint"); ep != "report" || wf.GetLabels()["team"] != "a" || wf.GetLabels()[labelCronWorkflow] != "nightly" {
			t.Errorf("workflow from cron: spec %v, labels %v", wf.Object["spec"], wf.GetLabels())
		}
	})

	t.Run("argoWorkflow suspend, resume, stop and terminate", func(t *testing.T) {
		wf := mustCreate(t, wfs, `apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: long-run}
spec: {entrypoint: main}
status:
  phase: Running
  nodes:
    long-run-1: {id: long-run-1, type: Suspend, phase: Running}
    long-run-2: {id: long-run-2, type: Pod, phase: Running}
`)
		ref := "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: " + wf.GetName() + "}\n"
		if err := argo.Execute(ctx, argoCmd("s1", "suspend", ref)); err != nil {
			t.Fatal(err)
		}
		if s, _, _ := unstructured.NestedBool(mustGet(t, wfs, "long-run").Object, "spec", "suspend"); !s {
			t.Error("spec.suspend not set by suspend")
		}
		if err := argo.Execute(ctx, argoCmd("r1", "resume", ref)); err != nil {
			t.Fatal(err)
		}
		got := mustGet(t, wfs, "long-run")
		if _, found, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", "suspend"); found {
			t.Error("spec.suspend still set after resume")
		}
		if p, _, _ := unstructured.NestedString(got.Object, "status", "nodes", "long-run-1", "phase"); p != "Succeeded" {
			t.Errorf("suspend node phase %q after resume; want Succeeded", p)
		}
		if p, _, _ := unstructured.NestedString(got.Object, "status", "nodes", "long-run-2", "phase"); p != "Running" {
			t.Errorf("pod node phase %q after resume; want it untouched", p)
		}
		for op, want := range map[string]string{"stop": "Stop", "terminate": "Terminate"} {
			if err := argo.Execute(ctx, argoCmd(op, op, ref)); err != nil {
				t.Fatal(err)
			}
			if s, _, _ := unstructured.NestedString(mustGet(t, wfs, "long-run").Object, "spec", "shutdown"); s != want {
				t.Errorf("%s: spec.shutdown %q; want %q", op, s, want)
			}
		}
	})

	t.Run("argoWorkflow resubmit and retry", func(t *testing.T) {
		mustCreate(t, wfs, `apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: flaky
  labels: {team: a, workflows.argoproj.io/completed: "true"}
spec: {entrypoint: main, shutdown: Stop}
status:
  phase: Failed
  message: child failed
  nodes:
    flaky: {id: flaky, type: Steps, phase: Failed}
    flaky-1: {id: flaky-1, type: Pod, phase: Succeeded}
    flaky-2: {id: flaky-2, type: Pod, phase: Failed}
`)
		pods := dyn.Resource(podGVR).Namespace("team-a")
		for _, node := range []string{"flaky-1", "flaky-2"} {
			mustCreate(t, pods, `apiVersion: v1
kind: Pod
metadata:
  name: `+node+`
  labels: {workflows.argoproj.io/workflow: flaky}
  annotations: {workflows.argoproj.io/node-id: `+node+`}
spec: {containers: [{name: main, image: busybox}]}
`)
		}
		ref := "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: flaky}\n"

		if err := argo.Execute(ctx, argoCmd("resub-0000000001", "resubmit", ref)); err != nil {
			t.Fatal(err)
		}
		copyWF := mustGet(t, wfs, "flaky-resub-0000")
		if l := copyWF.GetLabels(); l[labelResubmittedFrom] != "flaky" || l["team"] != "a" || l[labelCompleted] != "" {
			t.Errorf("resubmitted labels %v; want team kept, completed dropped, resubmitted-from set", l)
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(copyWF.Object, "spec", "shutdown"); found {
			t.Error("resubmitted workflow kept spec.shutdown; it would never run")
		}

		retryCmd := argoCmd("retry-1", "retry", ref)
		for i := 0; i < 2; i++ { // the second run is a redelivery: it must not fail on a running workflow
			if err := argo.Execute(ctx, retryCmd); err != nil {
				t.Fatalf("retry run %d: %v", i+1, err)
			}
		}
		wf := mustGet(t, wfs, "flaky")
		if p, _, _ := unstructured.NestedString(wf.Object, "status", "phase"); p != "Running" || wf.GetLabels()[labelCompleted] != "false" {
			t.Errorf("after retry: phase %q, completed label %q; want Running, false", p, wf.GetLabels()[labelCompleted])
		}
		nodes, _, _ := unstructured.NestedMap(wf.Object, "status", "nodes")
		if _, ok := nodes["flaky-2"]; ok {
			t.Error("the failed pod node is still there; the controller would not run it again")
		}
		if p, _, _ := unstructured.NestedString(wf.Object, "status", "nodes", "flaky", "phase"); p != "Running" {
			t.Errorf("steps node phase %q; want Running", p)
		}
		if p, _, _ := unstructured.NestedString(wf.Object, "status", "nodes", "flaky-1", "phase"); p != "Succeeded" {
			t.Errorf("succeeded node phase %q; want it kept", p)
		}
		if _, err := pods.Get(ctx, "flaky-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("pod of the failed node: %v; want it deleted", err)
		}
		mustGet(t, pods, "flaky-1")

		if err := argo.Execute(ctx, argoCmd("retry-2", "retry", ref)); !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), `phase "Running"`) {
			t.Errorf("retry of a running workflow: %v; want a terminal error naming the phase", err)
		}
	})
}

// gitRepo makes a Git repository with files committed on branch.
func gitRepo(t *testing.T, files map[string]string, branch string) string {
	t.Helper()
	dir := t.TempDir()
	git := func(args ...string) {
		c := exec.Command("git", args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", branch)
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	git("add", ".")
	git("commit", "-q", "-m", "manifests")
	return dir
}
