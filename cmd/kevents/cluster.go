package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/trigger"
)

// definitionGroups are the API groups kevents reads definitions from: its own, and Argo Events'
// for clusters that have Argo's CRDs but not its controller.
const (
	keventsGroup = "kevents.io"
	argoGroup    = "argoproj.io"
)

// inClusterNamespaceFile holds the pod's namespace.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// allNamespaces is the --watch-namespace value that watches every namespace.
const allNamespaces = "*"

// defaultWatchNamespace is the pod's namespace in a cluster, else "default".
func defaultWatchNamespace() string {
	if b, err := os.ReadFile(inClusterNamespaceFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	return "default"
}

// clusterWatch reads EventSources and Sensors from the Kubernetes API and reports every change
// as a full set, like the definition files' reload does.
//
// Contract: apply is called from one goroutine, first once the caches are filled and then after
// every change (changes within debounce are coalesced), with every object checked. Those with
// Err set cannot run and the caller runs the rest; each object's status condition "Ready" says
// which and why, so one bad object never stops the others.
type clusterWatch struct {
	dyn       dynamic.Interface
	namespace string // "" for all
	groups    []string
	// kinds are the kinds this stage runs and reports status for.
	kinds    []string
	log      *slog.Logger
	debounce time.Duration
}

func newClusterWatch(cfg *rest.Config, namespace string, watchArgo bool, kinds []string, log *slog.Logger) (*clusterWatch, error) {
	if cfg == nil {
		return nil, fmt.Errorf("--watch-cluster: %w", trigger.ErrNoKube)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("--watch-cluster: %w", err)
	}
	if namespace == allNamespaces {
		namespace = ""
	}
	groups := []string{keventsGroup}
	if watchArgo {
		groups = append(groups, argoGroup)
	}
	return &clusterWatch{dyn: dyn, namespace: namespace, groups: groups, kinds: kinds, log: log, debounce: 200 * time.Millisecond}, nil
}

func resourceOf(group, kind string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: "v1alpha1", Resource: strings.ToLower(kind) + "s"}
}

// run watches until ctx ends. It returns an error only when the watch cannot start (the CRDs are
// missing, or the role may not list them).
func (w *clusterWatch) run(ctx context.Context, apply func([]checked)) error {
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(w.dyn, 0, w.namespace, nil)
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(old, cur any) { notifyOnSpecChange(old, cur, notify) },
		DeleteFunc: func(any) { notify() },
	}
	var listers []cache.GenericLister
	for _, g := range w.groups {
		for _, kind := range w.kinds {
			gvr := resourceOf(g, kind)
			// Fail fast with a clear message when the CRD is absent or not readable.
			if _, err := w.dyn.Resource(gvr).Namespace(w.namespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
				return fmt.Errorf("--watch-cluster: list %s: %w", gvr.GroupResource(), err)
			}
			inf := factory.ForResource(gvr)
			if _, err := inf.Informer().AddEventHandler(handler); err != nil {
				return err
			}
			listers = append(listers, inf.Lister())
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for gvr, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("--watch-cluster: %s: cache not synced: %w", gvr.GroupResource(), ctx.Err())
		}
	}
	notify()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		select { // let a burst of changes (kubectl apply -f dir) settle into one reload
		case <-ctx.Done():
			return nil
		case <-time.After(w.debounce):
		}
		var objs []*unstructured.Unstructured
		for _, l := range listers {
			items, err := l.List(labels.Everything())
			if err != nil {
				w.log.Error("listing definitions from the cache", "err", err)
				continue
			}
			for _, it := range items {
				if u, ok := it.(*unstructured.Unstructured); ok && u.GetDeletionTimestamp() == nil {
					objs = append(objs, u)
				}
			}
		}
		docs := w.check(objs)
		apply(docs)
		w.report(ctx, objs, docs)
	}
}

// notifyOnSpecChange ignores updates that only touch status or metadata other than the
// generation: writing status must not trigger a reload.
func notifyOnSpecChange(old, cur any, notify func()) {
	o, ok1 := old.(*unstructured.Unstructured)
	c, ok2 := cur.(*unstructured.Unstructured)
	if ok1 && ok2 && o.GetGeneration() == c.GetGeneration() && o.GetGeneration() != 0 &&
		o.GetDeletionTimestamp().Equal(c.GetDeletionTimestamp()) {
		return
	}
	notify()
}

// check loads every object with the same strict loader as files, sorted by namespace and name
// so that reloads are deterministic.
func (w *clusterWatch) check(objs []*unstructured.Unstructured) []checked {
	sort.Slice(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		return a.GetAPIVersion()+"/"+a.GetKind()+"/"+a.GetNamespace()+"/"+a.GetName() <
			b.GetAPIVersion()+"/"+b.GetKind()+"/"+b.GetNamespace()+"/"+b.GetName()
	})
	out := make([]checked, len(objs))
	for i, o := range objs {
		out[i] = checkObject(o)
	}
	return out
}

func checkObject(o *unstructured.Unstructured) checked {
	name := fmt.Sprintf("cluster:%s/%s/%s", strings.ToLower(o.GetKind())+"s."+o.GroupVersionKind().Group, o.GetNamespace(), o.GetName())
	data, err := o.MarshalJSON()
	if err != nil {
		return checked{Document: api.Document{File: name, Kind: o.GetKind(), Name: o.GetName()}, Err: err}
	}
	docs := api.Parse(name, data)
	if len(docs) != 1 {
		return checked{Document: api.Document{File: name, Kind: o.GetKind(), Name: o.GetName()}, Err: fmt.Errorf("%s: not one document", name)}
	}
	return checkDocument(docs[0])
}

// readyCondition is the status a definition gets: whether this stage runs it, and if not why.
type readyCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
	ObservedGeneration int64  `json:"observedGeneration"`
	LastTransitionTime string `json:"lastTransitionTime"`
}

func conditionFor(c checked) readyCondition {
	switch {
	case c.Err == nil:
		return readyCondition{Type: "Ready", Status: "True", Reason: "Running", Message: "loaded and running"}
	case isOnlyUnsupported(c.Err):
		return readyCondition{Type: "Ready", Status: "False", Reason: "NotSupported", Message: c.Err.Error()}
	default:
		return readyCondition{Type: "Ready", Status: "False", Reason: "Invalid", Message: c.Err.Error()}
	}
}

// report writes each object's Ready condition when it changed. Several members may write the
// same condition; they compute it alike, so the last write wins harmlessly.
func (w *clusterWatch) report(ctx context.Context, objs []*unstructured.Unstructured, docs []checked) {
	for i, o := range objs {
		want := conditionFor(docs[i])
		want.ObservedGeneration = o.GetGeneration()
		if cur, ok := currentCondition(o); ok && cur.Status == want.Status && cur.Reason == want.Reason &&
			cur.Message == want.Message && cur.ObservedGeneration == want.ObservedGeneration {
			continue
		}
		want.LastTransitionTime = time.Now().UTC().Format(time.RFC3339)
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []readyCondition{want}}})
		gvr := resourceOf(o.GroupVersionKind().Group, o.GetKind())
		_, err := w.dyn.Resource(gvr).Namespace(o.GetNamespace()).Patch(ctx, o.GetName(), k8stypes.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: "kevents"}, "status")
		if err != nil {
			w.log.Warn("cannot write the definition's status", "kind", o.GetKind(), "namespace", o.GetNamespace(), "name", o.GetName(), "err", err)
		}
	}
}

func currentCondition(o *unstructured.Unstructured) (readyCondition, bool) {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range conds {
		b, err := json.Marshal(c)
		if err != nil {
			continue
		}
		var rc readyCondition
		if json.Unmarshal(b, &rc) == nil && rc.Type == "Ready" {
			return rc, true
		}
	}
	return readyCondition{}, false
}
