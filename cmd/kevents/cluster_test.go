package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/kevents/kevents/internal/kubetest"
	"github.com/kevents/kevents/topology"
)

const clusterSensor = `apiVersion: kevents.io/v1alpha1
kind: Sensor
metadata: {name: %s, namespace: default}
spec:
  dependencies:
    - {name: d, eventSourceName: hooks, eventName: %s}
  triggers:
    - template: {name: say, log: {}}
`

func createObject(t *testing.T, dyn dynamic.Interface, manifest string) {
	t.Helper()
	var obj unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatal(err)
	}
	gvr := resourceOf(obj.GroupVersionKind().Group, obj.GetKind())
	if _, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(context.Background(), &obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", obj.GetName(), err)
	}
}

// TestClusterWatch applies Sensors to a real API server while the watch runs: each change
// arrives as a new set, a bad Sensor is reported in its status and left out without stopping
// the others, and a deleted Sensor leaves the set.
func TestClusterWatch(t *testing.T) {
	srv := kubetest.Start(t)
	srv.Apply(t, "../../deploy/base/crds.yaml")
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	w, err := newClusterWatch(srv.Config, "default", false, []string{"EventSource", "Sensor"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	w.debounce = 20 * time.Millisecond
	sets := make(chan []checked, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, func(docs []checked) { sets <- docs }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	// next waits for a set that satisfies want, skipping intermediate ones.
	next := func(what string, want func([]checked) bool) []checked {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case docs := <-sets:
				if want(docs) {
					return docs
				}
			case <-timeout:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	running := func(docs []checked) (names []string) {
		for _, d := range docs {
			if d.Err == nil && d.Sensor != nil {
				names = append(names, d.Sensor.Metadata.Name+"="+d.Sensor.Spec.Dependencies[0].EventName)
			}
		}
		return names
	}
	next("the first, empty set", func(docs []checked) bool { return len(docs) == 0 })

	createObject(t, dyn, strings.ReplaceAll(strings.ReplaceAll(clusterSensor, "%s", "good"), "eventName: good", "eventName: push"))
	next("the new sensor", func(docs []checked) bool { return strings.Join(running(docs), ",") == "good=push" })

	createObject(t, dyn, `apiVersion: kevents.io/v1alpha1
kind: Sensor
metadata: {name: bad, namespace: default}
spec:
  dependencies: [{name: d, eventSourceName: hooks, eventName: e, filterz: {}}]
  triggers: [{template: {name: say, log: {}}}]
`)
	docs := next("the bad sensor", func(docs []checked) bool { return len(docs) == 2 })
	if got := strings.Join(running(docs), ","); got != "good=push" {
		t.Errorf("running %q beside a bad sensor; want the good one only", got)
	}
	sensors := dyn.Resource(resourceOf(keventsGroup, "Sensor")).Namespace("default")
	status := func(name string) readyCondition {
		var c readyCondition
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			obj, err := sensors.Get(context.Background(), name, metav1.GetOptions{})
			if err == nil {
				if cur, ok := currentCondition(obj); ok {
					return cur
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		return c
	}
	if c := status("bad"); c.Status != "False" || c.Reason != "Invalid" || !strings.Contains(c.Message, "filterz") {
		t.Errorf("bad sensor's condition %+v; want Ready False, Invalid, naming the field", c)
	}
	if c := status("good"); c.Status != "True" || c.ObservedGeneration != 1 {
		t.Errorf("good sensor's condition %+v; want Ready True for generation 1", c)
	}

	good, err := sensors.Get(context.Background(), "good", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deps, _, _ := unstructured.NestedSlice(good.Object, "spec", "dependencies")
	deps[0].(map[string]any)["eventName"] = "tag"
	unstructured.SetNestedSlice(good.Object, deps, "spec", "dependencies")
	if _, err := sensors.Update(context.Background(), good, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	next("the changed sensor", func(docs []checked) bool { return strings.Join(running(docs), ",") == "good=tag" })

	if err := sensors.Delete(context.Background(), "good", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next("the sensor gone", func(docs []checked) bool { return len(running(docs)) == 0 })
}

// TestRunFromCluster runs `kevents run --watch-cluster` and applies an EventSource and a Sensor to
// a real API server while it runs: the webhook starts answering and its events fire the trigger;
// a changed Sensor takes effect; a deleted EventSource stops its webhook.
func TestRunFromCluster(t *testing.T) {
	srv := kubetest.Start(t)
	srv.Apply(t, "../../deploy/base/crds.yaml")
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	sk := newSink(t)
	port := freePort(t)
	topo, err := topology.New(topology.Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	in := start(t, runConfig{
		watchCluster: true, watchNamespace: "default", kubeconfig: srv.Kubeconfig,
		dataDir: filepath.Join(t.TempDir(), "broker"), brokerPort: freePort(t), topology: topo,
		metricsAddr: "127.0.0.1:0", member: "cluster", publishTimeout: 5 * time.Second,
		logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	defer in.stop(t)

	createObject(t, dyn, fmt.Sprintf(`apiVersion: kevents.io/v1alpha1
kind: EventSource
metadata: {name: hooks, namespace: default}
spec:
  webhook:
    push: {port: "%d", endpoint: /push, method: POST}
`, port))
	sensor := `apiVersion: kevents.io/v1alpha1
kind: Sensor
metadata: {name: deploy, namespace: default}
spec:
  dependencies: [{name: push, eventSourceName: hooks, eventName: push}]
  triggers:
    - template:
        name: notify
        http:
          url: %s/%s
          payload: [{src: {dependencyName: push, dataKey: body.ref}, dest: ref}]
`
	createObject(t, dyn, fmt.Sprintf(sensor, sk.srv.URL, "v1"))
	hook := fmt.Sprintf("http://127.0.0.1:%d/push", port)
	accepted := func(body string) func() bool {
		return func() bool {
			resp, err := http.Post(hook, "application/json", strings.NewReader(body))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}
	}
	waitFor(t, "the webhook from the cluster's EventSource", accepted(`{"ref":"main"}`))
	waitFor(t, "the trigger of the cluster's Sensor", func() bool { return len(sk.requests()) >= 1 })
	if r := sk.requests()[0]; r.path != "/v1" || string(r.body) != `{"ref":"main"}` {
		t.Errorf("trigger sent %s %s; want /v1 with the event's ref", r.path, r.body)
	}

	sensors := dyn.Resource(resourceOf(keventsGroup, "Sensor")).Namespace("default")
	obj, err := sensors.Get(context.Background(), "deploy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var changed unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(fmt.Sprintf(sensor, sk.srv.URL, "v2")), &changed.Object); err != nil {
		t.Fatal(err)
	}
	obj.Object["spec"] = changed.Object["spec"]
	if _, err := sensors.Update(context.Background(), obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changed Sensor to fire to /v2", func() bool {
		accepted(`{"ref":"next"}`)()
		for _, r := range sk.requests() {
			if r.path == "/v2" {
				return true
			}
		}
		return false
	})

	es := dyn.Resource(resourceOf(keventsGroup, "EventSource")).Namespace("default")
	if err := es.Delete(context.Background(), "hooks", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted EventSource's webhook to stop", func() bool {
		resp, err := http.Post(hook, "application/json", strings.NewReader(`{}`))
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
}
