package trigger

import (
	"context"
	"encoding/json"
	"fmt"

	"dario.cat/mergo"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/kevents/kevents/api"
)

var patchTypes = map[string]bool{
	string(k8stypes.MergePatchType): true, string(k8stypes.StrategicMergePatchType): true,
	string(k8stypes.JSONPatchType): true, string(k8stypes.ApplyYAMLPatchType): true,
}

func init() {
	Register("k8s", Spec{
		Summary: "Creates, updates, patches or deletes a Kubernetes object built from the events.",
		Render: func(in RenderInput) (json.RawMessage, error) {
			k := in.Template.K8s
			op := k.Operation
			if op == "" {
				op = "create"
			}
			return renderKube(in, "k8s", k.Source, k.Parameters, KubeRequest{Operation: op, PatchStrategy: k.PatchStrategy, LiveObject: k.LiveObject})
		},
		Check: checkK8s,
	}, func(env Env) (Executor, error) { return k8sExecutor{newKubeAccess(env)}, nil })
}

func checkK8s(t *api.TriggerTemplate) error {
	k := t.K8s
	switch k.Operation {
	case "", "create", "update", "patch", "delete":
	default:
		return fmt.Errorf("k8s.operation: %q; expected create, update, patch or delete", k.Operation)
	}
	if k.PatchStrategy != "" && !patchTypes[k.PatchStrategy] {
		return fmt.Errorf("k8s.patchStrategy: %q; expected %s, %s, %s or %s", k.PatchStrategy,
			k8stypes.MergePatchType, k8stypes.StrategicMergePatchType, k8stypes.JSONPatchType, k8stypes.ApplyYAMLPatchType)
	}
	if k.LiveObject && k.Operation != "update" {
		return fmt.Errorf("k8s.liveObject: only works with operation update, not %q", k.Operation)
	}
	return checkSource("k8s.source", k.Source)
}

type k8sExecutor struct{ kube *kubeAccess }

// Execute performs the operation as Argo's standard k8s trigger does, with two differences:
// a created object is labelled with the command id (and named from it when it only has a
// generateName), so a retried command does not create a second object; and the API resource
// comes from discovery, so any kind the cluster serves works, namespaced or not.
func (x k8sExecutor) Execute(ctx context.Context, cmd *Command) error {
	var req KubeRequest
	if err := json.Unmarshal(cmd.Spec, &req); err != nil {
		return Terminal(fmt.Errorf("k8s command: %w", err))
	}
	obj, err := x.kube.object(ctx, cmd, &req)
	if err != nil {
		return err
	}
	ri, _, err := x.kube.resource(obj, cmd.Namespace)
	if err != nil {
		return err
	}
	name := obj.GetName()
	if name == "" && req.Operation != "create" {
		return Terminal(fmt.Errorf("k8s %s: the object has no metadata.name", req.Operation))
	}
	switch req.Operation {
	case "create":
		created, err := create(ctx, ri, cmd, obj)
		if err != nil {
			return err
		}
		name = created.GetName()
	case "update":
		live, err := ri.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if _, err := create(ctx, ri, cmd, obj); err != nil {
				return err
			}
			break
		}
		if err != nil {
			return fmt.Errorf("k8s update: get %s: %w", name, err)
		}
		if req.LiveObject {
			// The parameters apply to the object as it is in the cluster now.
			if obj, err = applyToObject(live, req.Parameters); err != nil {
				return err
			}
		} else if err := mergo.Merge(&live.Object, obj.Object, mergo.WithOverride); err != nil {
			return Terminal(fmt.Errorf("k8s update: merge into %s: %w", name, err))
		} else {
			obj = live
		}
		if _, err := ri.Update(ctx, obj, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
			return classify(fmt.Errorf("k8s update %s: %w", name, err))
		}
	case "patch":
		if _, err := ri.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			if _, err := create(ctx, ri, cmd, obj); err != nil {
				return err
			}
			break
		} else if err != nil {
			return fmt.Errorf("k8s patch: get %s: %w", name, err)
		}
		if err := patch(ctx, ri, obj, req.PatchStrategy); err != nil {
			return err
		}
	case "delete":
		err := ri.Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return classify(fmt.Errorf("k8s delete %s: %w", name, err))
		}
		return nil
	default:
		return Terminal(fmt.Errorf("k8s.operation: %q; expected create, update, patch or delete", req.Operation))
	}
	return waitForLabels(ctx, ri, name, cmd.LabelPolicy)
}

func patch(ctx context.Context, ri interface {
	Patch(ctx context.Context, name string, pt k8stypes.PatchType, data []byte, options metav1.PatchOptions, subresources ...string) (*unstructured.Unstructured, error)
}, obj *unstructured.Unstructured, strategy string) error {
	pt := k8stypes.PatchType(strategy)
	if pt == "" {
		pt = k8stypes.MergePatchType
	}
	body, err := obj.MarshalJSON()
	if err != nil {
		return Terminal(err)
	}
	opts := metav1.PatchOptions{FieldManager: fieldManager}
	if pt == k8stypes.ApplyYAMLPatchType {
		force := true
		opts.Force = &force
	}
	if _, err := ri.Patch(ctx, obj.GetName(), pt, body, opts); err != nil {
		return classify(fmt.Errorf("k8s patch %s (%s): %w", obj.GetName(), pt, err))
	}
	return nil
}
