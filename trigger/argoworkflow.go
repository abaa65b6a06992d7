package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/kevents/kevents/api"
)

// Argo Workflows' API group and the labels its controller and CLI read.
const (
	argoAPIVersion        = "argoproj.io/v1alpha1"
	labelWorkflow         = "workflows.argoproj.io/workflow"
	labelCompleted        = "workflows.argoproj.io/completed"
	labelWorkflowTemplate = "workflows.argoproj.io/workflow-template"
	labelCronWorkflow     = "workflows.argoproj.io/cron-workflow"
	labelResubmittedFrom  = "workflows.argoproj.io/resubmitted-from-workflow"
	annotationNodeID      = "workflows.argoproj.io/node-id"
	// annotationRetriedBy records the command that retried a workflow, so that the command
	// running again after a crash does not fail on a workflow it already set running.
	annotationRetriedBy = "events.kevents.io/retried-by"
)

var argoOperations = []string{"submit", "submit-from", "suspend", "resubmit", "retry", "resume", "terminate", "stop"}

func init() {
	Register("argoWorkflow", Spec{
		Summary: "Submits an Argo Workflow, or suspends, resumes, retries, resubmits, stops or terminates one, through the Kubernetes API (no argo CLI).",
		Render: func(in RenderInput) (json.RawMessage, error) {
			w := in.Template.ArgoWorkflow
			op := w.Operation
			if op == "" {
				op = "submit"
			}
			return renderKube(in, "argoWorkflow", w.Source, w.Parameters, KubeRequest{Operation: op})
		},
		Check: checkArgoWorkflow,
	}, func(env Env) (Executor, error) { return argoExecutor{newKubeAccess(env)}, nil })
}

func checkArgoWorkflow(t *api.TriggerTemplate) error {
	w := t.ArgoWorkflow
	if w.Operation != "" && !contains(argoOperations, w.Operation) {
		return fmt.Errorf("argoWorkflow.operation: %q; expected one of %s", w.Operation, strings.Join(argoOperations, ", "))
	}
	if len(w.Args) > 0 {
		// Args are flags of the argo CLI, which kevents replaces with API calls.
		return fmt.Errorf("argoWorkflow.args: %w", api.NotSupported("argoWorkflow field", "args"))
	}
	return checkSource("argoWorkflow.source", w.Source)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type argoExecutor struct{ kube *kubeAccess }

// Execute does through the API what Argo Events runs the argo CLI for. submit creates the
// Workflow (named from the command id when it has only a generateName, so a retry does not
// submit twice); submit-from creates a Workflow from a WorkflowTemplate or CronWorkflow;
// suspend, resume, stop and terminate set the spec fields the workflow controller acts on;
// resubmit creates a copy of a workflow; retry resets a failed workflow's failed nodes as
// `argo retry` does without options.
func (x argoExecutor) Execute(ctx context.Context, cmd *Command) error {
	var req KubeRequest
	if err := json.Unmarshal(cmd.Spec, &req); err != nil {
		return Terminal(fmt.Errorf("argoWorkflow command: %w", err))
	}
	obj, err := x.kube.object(ctx, cmd, &req)
	if err != nil {
		return err
	}
	if obj.GetName() == "" && req.Operation != "submit" {
		return Terminal(fmt.Errorf("argoWorkflow %s: the object has no metadata.name", req.Operation))
	}
	var target *unstructured.Unstructured
	switch req.Operation {
	case "submit":
		if obj.GetKind() != "Workflow" {
			return Terminal(fmt.Errorf("argoWorkflow submit: kind %q; expected Workflow", obj.GetKind()))
		}
		target = obj
	case "submit-from":
		if target, err = x.fromTemplate(ctx, cmd, obj); err != nil {
			return err
		}
	default:
		target = workflowRef(obj.GetNamespace(), obj.GetName())
	}
	ri, _, err := x.kube.resource(target, cmd.Namespace)
	if err != nil {
		return err
	}
	name := target.GetName()
	switch req.Operation {
	case "submit", "submit-from":
		created, err := create(ctx, ri, cmd, target)
		if err != nil {
			return err
		}
		name = created.GetName()
	case "suspend":
		err = mergePatch(ctx, ri, name, map[string]any{"spec": map[string]any{"suspend": true}})
	case "terminate", "stop":
		shutdown := map[string]string{"terminate": "Terminate", "stop": "Stop"}[req.Operation]
		err = mergePatch(ctx, ri, name, map[string]any{"spec": map[string]any{"shutdown": shutdown}})
	case "resume":
		err = updateWorkflow(ctx, ri, name, resume)
	case "retry":
		err = updateWorkflow(ctx, ri, name, func(wf *unstructured.Unstructured) (bool, error) { return retryWorkflow(wf, cmd.ID) })
		if err == nil {
			err = x.deleteRetriedPods(ctx, target.GetNamespace(), name)
		}
	case "resubmit":
		name, err = x.resubmit(ctx, ri, cmd, name)
	default:
		return Terminal(fmt.Errorf("argoWorkflow.operation: %q; expected one of %s", req.Operation, strings.Join(argoOperations, ", ")))
	}
	if err != nil {
		return err
	}
	return waitForLabels(ctx, ri, name, cmd.LabelPolicy)
}

func workflowRef(namespace, name string) *unstructured.Unstructured {
	wf := &unstructured.Unstructured{Object: map[string]any{}}
	wf.SetAPIVersion(argoAPIVersion)
	wf.SetKind("Workflow")
	wf.SetNamespace(namespace)
	wf.SetName(name)
	return wf
}

// fromTemplate builds the Workflow that `argo submit --from` would: one referring to a
// WorkflowTemplate, or a copy of a CronWorkflow's workflowSpec.
func (x argoExecutor) fromTemplate(ctx context.Context, cmd *Command, from *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	wf := workflowRef(from.GetNamespace(), "")
	wf.SetGenerateName(from.GetName() + "-")
	switch from.GetKind() {
	case "WorkflowTemplate":
		wf.SetLabels(map[string]string{labelWorkflowTemplate: from.GetName()})
		wf.Object["spec"] = map[string]any{"workflowTemplateRef": map[string]any{"name": from.GetName()}}
	case "CronWorkflow":
		ri, _, err := x.kube.resource(from, cmd.Namespace)
		if err != nil {
			return nil, err
		}
		cron, err := ri.Get(ctx, from.GetName(), metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("argoWorkflow submit-from: get CronWorkflow %s: %w", from.GetName(), err)
		}
		spec, ok, _ := unstructured.NestedMap(cron.Object, "spec", "workflowSpec")
		if !ok {
			return nil, Terminal(fmt.Errorf("argoWorkflow submit-from: CronWorkflow %s has no spec.workflowSpec", from.GetName()))
		}
		labels, _, _ := unstructured.NestedStringMap(cron.Object, "spec", "workflowMetadata", "labels")
		if labels == nil {
			labels = map[string]string{}
		}
		labels[labelCronWorkflow] = from.GetName()
		wf.SetLabels(labels)
		if ann, _, _ := unstructured.NestedStringMap(cron.Object, "spec", "workflowMetadata", "annotations"); len(ann) > 0 {
			wf.SetAnnotations(ann)
		}
		wf.Object["spec"] = spec
	default:
		return nil, Terminal(fmt.Errorf("argoWorkflow submit-from: kind %q; expected WorkflowTemplate or CronWorkflow", from.GetKind()))
	}
	return wf, nil
}

func mergePatch(ctx context.Context, ri dynamic.ResourceInterface, name string, patch map[string]any) error {
	body, err := json.Marshal(patch)
	if err != nil {
		return Terminal(err)
	}
	if _, err := ri.Patch(ctx, name, k8stypes.MergePatchType, body, metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
		return classify(fmt.Errorf("patch workflow %s: %w", name, err))
	}
	return nil
}

// updateWorkflow reads, changes and writes a workflow, again on a write conflict with the
// workflow controller. change reports whether it changed anything.
func updateWorkflow(ctx context.Context, ri dynamic.ResourceInterface, name string, change func(*unstructured.Unstructured) (bool, error)) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		wf, err := ri.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get workflow %s: %w", name, err)
		}
		changed, err := change(wf)
		if err != nil || !changed {
			return err
		}
		_, err = ri.Update(ctx, wf, metav1.UpdateOptions{FieldManager: fieldManager})
		if err != nil && !apierrors.IsConflict(err) {
			return classify(fmt.Errorf("update workflow %s: %w", name, err))
		}
		return err
	})
}

// resume clears spec.suspend and completes the workflow's running suspend nodes, which is what
// `argo resume` does.
func resume(wf *unstructured.Unstructured) (bool, error) {
	unstructured.RemoveNestedField(wf.Object, "spec", "suspend")
	nodes, _, _ := unstructured.NestedMap(wf.Object, "status", "nodes")
	now := time.Now().UTC().Format(time.RFC3339)
	for id, n := range nodes {
		node, ok := n.(map[string]any)
		if ok && node["type"] == "Suspend" && node["phase"] == "Running" {
			node["phase"], node["finishedAt"], node["message"] = "Succeeded", now, ""
			nodes[id] = node
		}
	}
	if nodes != nil {
		if err := unstructured.SetNestedMap(wf.Object, nodes, "status", "nodes"); err != nil {
			return false, Terminal(err)
		}
	}
	return true, nil
}

// retryWorkflow sets a Failed or Error workflow running again: succeeded and skipped nodes stay,
// failed pod nodes are removed so the controller runs them again, and the other unfinished
// nodes (steps, DAGs) go back to Running.
func retryWorkflow(wf *unstructured.Unstructured, commandID string) (bool, error) {
	if wf.GetAnnotations()[annotationRetriedBy] == commandID {
		return false, nil // this command already retried it
	}
	phase, _, _ := unstructured.NestedString(wf.Object, "status", "phase")
	if phase != "Failed" && phase != "Error" {
		return false, Terminal(fmt.Errorf("retry workflow %s: phase %q; only Failed or Error workflows can be retried", wf.GetName(), phase))
	}
	nodes, _, _ := unstructured.NestedMap(wf.Object, "status", "nodes")
	for id, n := range nodes {
		node, ok := n.(map[string]any)
		if !ok {
			continue
		}
		switch node["phase"] {
		case "Succeeded", "Skipped":
			continue
		}
		if node["type"] == "Pod" {
			delete(nodes, id)
			continue
		}
		node["phase"] = "Running"
		delete(node, "finishedAt")
		delete(node, "message")
		nodes[id] = node
	}
	if nodes != nil {
		if err := unstructured.SetNestedMap(wf.Object, nodes, "status", "nodes"); err != nil {
			return false, Terminal(err)
		}
	}
	unstructured.SetNestedField(wf.Object, "Running", "status", "phase")
	unstructured.RemoveNestedField(wf.Object, "status", "finishedAt")
	unstructured.RemoveNestedField(wf.Object, "status", "message")
	labels := wf.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[labelCompleted] = "false"
	wf.SetLabels(labels)
	ann := wf.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[annotationRetriedBy] = commandID
	wf.SetAnnotations(ann)
	return true, nil
}

// deleteRetriedPods deletes the pods of the nodes a retry removed, as `argo retry` does, so the
// controller can create them again under the same names.
func (x argoExecutor) deleteRetriedPods(ctx context.Context, namespace, name string) error {
	dyn, _, err := x.kube.clients()
	if err != nil {
		return err
	}
	wf, err := dyn.Resource(workflowGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get workflow %s: %w", name, err)
	}
	nodes, _, _ := unstructured.NestedMap(wf.Object, "status", "nodes")
	pods := dyn.Resource(podGVR).Namespace(namespace)
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: labelWorkflow + "=" + name})
	if err != nil {
		return fmt.Errorf("list pods of workflow %s: %w", name, err)
	}
	for _, p := range list.Items {
		id := p.GetAnnotations()[annotationNodeID]
		if _, kept := nodes[id]; kept || id == "" {
			continue
		}
		if err := pods.Delete(ctx, p.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s of workflow %s: %w", p.GetName(), name, err)
		}
	}
	return nil
}

// resubmit creates a new workflow with the spec of an existing one, as `argo resubmit` does.
func (x argoExecutor) resubmit(ctx context.Context, ri dynamic.ResourceInterface, cmd *Command, name string) (string, error) {
	old, err := ri.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("resubmit: get workflow %s: %w", name, err)
	}
	wf := workflowRef(old.GetNamespace(), "")
	wf.SetGenerateName(name + "-")
	labels := map[string]string{}
	for k, v := range old.GetLabels() {
		// Labels the controller or kevents set describe the old run, not the new one.
		if !strings.HasPrefix(k, "workflows.argoproj.io/") && k != LabelCommandID && k != LabelActionTimestamp {
			labels[k] = v
		}
	}
	labels[labelResubmittedFrom] = name
	wf.SetLabels(labels)
	spec, _, _ := unstructured.NestedMap(old.Object, "spec")
	// A resubmitted copy of a stopped or suspended workflow must run.
	delete(spec, "shutdown")
	delete(spec, "suspend")
	wf.Object["spec"] = spec
	created, err := create(ctx, ri, cmd, wf)
	if err != nil {
		return "", err
	}
	return created.GetName(), nil
}
