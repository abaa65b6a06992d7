package source

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kubetest"
)

// resData is the data of a resource event, Argo's ResourceEventData.
type resData struct {
	Type     string                     `json:"type"`
	Body     *unstructured.Unstructured `json:"body"`
	OldBody  *unstructured.Unstructured `json:"oldBody"`
	Group    string                     `json:"group"`
	Version  string                     `json:"version"`
	Resource string                     `json:"resource"`
	Metadata map[string]string          `json:"metadata"`
}

// resSeen lists the events of one event name as "TYPE name", in order, with their data and ids.
func resSeen(t *testing.T, evs []*cloudevents.Event, event string) (seen []string, data []resData, ids []string) {
	t.Helper()
	for _, e := range evs {
		if e.Subject() != event {
			continue
		}
		var d resData
		if err := json.Unmarshal(e.Data(), &d); err != nil {
			t.Fatalf("event data %s: %v", e.Data(), err)
		}
		seen = append(seen, d.Type+" "+d.Body.GetName())
		data = append(data, d)
		ids = append(ids, e.ID())
	}
	return seen, data, ids
}

var configMaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

func resConfigMap(name string, labels map[string]string, color string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name}, "data": map[string]any{"color": color}}}
	u.SetLabels(labels)
	return u
}

// TestResourceEvents runs ConfigMap events against a real kube-apiserver: every change of the
// namespace for one event; for another only what its filters (prefix, labels, fields,
// afterStart) let through. A restarted member reports the objects created while none ran, and
// reports again, under the same ids, the existing objects Argo reports on every start.
func TestResourceEvents(t *testing.T) {
	srv := kubetest.Start(t)
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "kev"}}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cms := dyn.Resource(configMaps).Namespace("kev")
	create := func(u *unstructured.Unstructured) {
		t.Helper()
		if _, err := cms.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	demo := map[string]string{"app": "demo"}
	create(resConfigMap("app-old", demo, "blue"))
	// afterStart compares whole seconds: the source starts in a later second than app-old.
	time.Sleep(1100 * time.Millisecond)

	c := newOwnedSrcCluster(t, "res")
	sources := parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: res
spec:
  resource:
    all:
      namespace: kev
      version: v1
      resource: configmaps
      eventTypes: [ADD, UPDATE, DELETE]
      metadata: {team: ops}
    filtered:
      namespace: kev
      version: v1
      resource: configmaps
      eventTypes: [ADD, UPDATE, DELETE]
      filter:
        prefix: app-
        afterStart: true
        labels:
          - key: app
            operation: "=="
            value: demo
        fields:
          - key: data.color
            operation: "!="
            value: ^red$
`)
	env := ownedEnv(c.topo, c.brokers, "m1", io.Discard)
	env.Kube = srv.Config
	stop := runSources(t, env, sources)
	c.wait("res", "the ADD of app-old", func(evs []*cloudevents.Event) bool {
		seen, _, _ := resSeen(t, evs, "all")
		return len(seen) == 1
	})
	for _, ev := range []string{"all", "filtered"} { // the informers listed and watch
		deadline := time.Now().Add(10 * time.Second)
		for v, _ := gaugeOf(t, env.Metrics, connectedGauge, "res", ev); v != 1; v, _ = gaugeOf(t, env.Metrics, connectedGauge, "res", ev) {
			if time.Now().After(deadline) {
				t.Fatalf("%s{res,%s} = %v, want 1 (the API server answers)", connectedGauge, ev, v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	create(resConfigMap("app-new", demo, "blue"))
	create(resConfigMap("other-new", demo, "blue"))
	create(resConfigMap("app-unlabelled", nil, "blue"))
	create(resConfigMap("app-red", demo, "red"))
	u, err := cms.Get(ctx, "app-new", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Object["data"] = map[string]any{"color": "green"}
	if _, err := cms.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "app-new", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	evs := c.wait("res", "7 events of all and 3 of filtered", func(evs []*cloudevents.Event) bool {
		all, _, _ := resSeen(t, evs, "all")
		filtered, _, _ := resSeen(t, evs, "filtered")
		return len(all) >= 7 && len(filtered) >= 3
	})
	all, allData, allIDs := resSeen(t, evs, "all")
	want := "ADD app-old, ADD app-new, ADD other-new, ADD app-unlabelled, ADD app-red, UPDATE app-new, DELETE app-new"
	if strings.Join(all, ", ") != want {
		t.Errorf("all: %s\nwant %s", strings.Join(all, ", "), want)
	}
	filtered, fData, _ := resSeen(t, evs, "filtered")
	if got := strings.Join(filtered, ", "); got != "ADD app-new, UPDATE app-new, DELETE app-new" {
		t.Errorf("filtered: %s\nwant ADD, UPDATE and DELETE of app-new only", got)
	}
	for _, d := range allData {
		if d.Group != "" || d.Version != "v1" || d.Resource != "configmaps" || d.Metadata["team"] != "ops" || d.Body.GetNamespace() != "kev" {
			t.Errorf("%s %s: group %q version %q resource %q metadata %v: want Argo's fields", d.Type, d.Body.GetName(), d.Group, d.Version, d.Resource, d.Metadata)
		}
		if (d.OldBody != nil) != (d.Type == "UPDATE") {
			t.Errorf("%s %s: oldBody %v; want the previous object on UPDATE only, else null", d.Type, d.Body.GetName(), d.OldBody)
		}
	}
	if len(fData) == 3 {
		if old, _, _ := unstructured.NestedString(fData[1].OldBody.Object, "data", "color"); old != "blue" {
			t.Errorf("UPDATE oldBody color %q, want blue", old)
		}
		if cur, _, _ := unstructured.NestedString(fData[1].Body.Object, "data", "color"); cur != "green" {
			t.Errorf("UPDATE body color %q, want green", cur)
		}
	}
	for _, e := range evs {
		if e.Type() != "resource" || e.Source() != "res" {
			t.Errorf("event type %q source %q, want resource and res", e.Type(), e.Source())
		}
	}

	// Stopped, then started again: "all" reports the existing objects again under the same ids
	// (as Argo does on a start), "filtered" only what was created meanwhile.
	stop()
	create(resConfigMap("app-meanwhile", demo, "blue"))
	runSources(t, env, sources)
	evs = c.wait("res", "the objects reported after the restart", func(evs []*cloudevents.Event) bool {
		all, _, _ := resSeen(t, evs, "all")
		filtered, _, _ := resSeen(t, evs, "filtered")
		return len(all) >= 7+5 && len(filtered) >= 4
	})
	time.Sleep(300 * time.Millisecond) // nothing more is coming
	evs = c.events("res")
	filtered, _, _ = resSeen(t, evs, "filtered")
	if got := strings.Join(filtered[3:], ", "); got != "ADD app-meanwhile" {
		t.Errorf("filtered after the restart: %s, want ADD app-meanwhile only", got)
	}
	again, _, againIDs := resSeen(t, evs, "all")
	ids := map[string]string{}
	for i, s := range all {
		ids[s] = allIDs[i]
	}
	for i, s := range again[7:] {
		if prev, ok := ids[s]; ok && prev != againIDs[7+i] {
			t.Errorf("%s reported again with id %s, first %s: want the same id", s, againIDs[7+i], prev)
		}
	}
}

// TestResourceNeedsKube: without a Kubernetes API the source refuses to start, saying so.
func TestResourceNeedsKube(t *testing.T) {
	c := newOwnedSrcCluster(t, "res")
	_, err := Run(context.Background(), ownedEnv(c.topo, c.brokers, "m1", io.Discard), parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: res
spec:
  resource:
    all:
      namespace: kev
      version: v1
      resource: configmaps
      eventTypes: [ADD]
`))
	if err == nil || !strings.Contains(err.Error(), "spec.resource.all: no Kubernetes API configured") {
		t.Fatalf("Run: %v; want the missing Kubernetes API named", err)
	}
}

func TestResourceCreatedBy(t *testing.T) {
	es := parseEventSources(t, `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: res
spec:
  resource:
    ev:
      namespace: kev
      version: v1
      resource: configmaps
      eventTypes: [ADD]
      filter:
        createdBy: 2024-01-02T15:04:05Z
`)[0]
	set, err := parseResource(es.Spec.Resource["ev"])
	if err != nil {
		t.Fatal(err)
	}
	for created, want := range map[string]bool{"2024-01-02T15:04:04Z": true, "2024-01-02T15:04:06Z": false} {
		u := resConfigMap("x", nil, "")
		at, _ := time.Parse(time.RFC3339, created)
		u.SetCreationTimestamp(metav1.NewTime(at))
		if got := set.passes(resourceChange{typ: resourceAdd, obj: u}, at, time.Time{}); got != want {
			t.Errorf("created %s: passes %v, want %v (only objects created before createdBy)", created, got, want)
		}
	}
}

func TestCheckResource(t *testing.T) {
	base := "namespace: kev\n      version: v1\n      resource: configmaps\n      "
	cases := []struct {
		name, fields string
		want         []string // substrings of the error; nil means valid
	}{
		{"valid", base + "eventTypes: [ADD, UPDATE]\n      filter:\n        labels: [{key: app, operation: in, value: 'a,b'}, {key: tier, operation: exists}]\n        fields: [{key: metadata.name, value: '^x'}]\n        createdBy: '2024-01-02T15:04:05Z'", nil},
		{"no version or resource", "namespace: kev\n      eventTypes: [ADD]", []string{"version: missing", "resource: missing"}},
		{"no event types", base + "eventTypes: []", []string{"eventTypes: empty; expected one or more of ADD, UPDATE, DELETE"}},
		{"bad event type", base + "eventTypes: [CREATE]", []string{`eventTypes[0]: "CREATE"; expected ADD, UPDATE or DELETE`}},
		{"bad label", base + "eventTypes: [ADD]\n      filter:\n        labels: [{key: app, operation: '~', value: x}]", []string{`filter.labels[0]: key "app", operation "~"`}},
		{"label without key", base + "eventTypes: [ADD]\n      filter:\n        labels: [{value: x}]", []string{"filter.labels[0]: key: missing"}},
		{"bad field operation", base + "eventTypes: [ADD]\n      filter:\n        fields: [{key: a, operation: in, value: x}]", []string{`filter.fields[0]: operation: "in"; expected =, == or !=`}},
		{"bad field regexp", base + "eventTypes: [ADD]\n      filter:\n        fields: [{key: a, value: '('}]", []string{`filter.fields[0]: value: "("`}},
		{"bad createdBy", base + "eventTypes: [ADD]\n      filter:\n        createdBy: yesterday", []string{`filter.createdBy: "yesterday"; expected an RFC 3339 time`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: r\nspec:\n  resource:\n    ev:\n      "+c.fields+"\n")[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range append(c.want, "spec.resource.ev") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if errors.Is(err, api.ErrNotSupported) {
				t.Errorf("a mistake, not 'not supported yet': %v", err)
			}
		})
	}
}
