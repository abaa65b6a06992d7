package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kubetest"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/sensor"
	"github.com/kevents/kevents/topology"
	"github.com/kevents/kevents/trigger"
)

const (
	deployDir   = "../../deploy"
	strimziCRDs = "../../../shared/strimzi-crds"
)

// decodeObjects splits a YAML stream into objects.
func decodeObjects(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

func byKindName(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		m[o.GetKind()+"/"+o.GetName()] = o
	}
	return m
}

func TestRenderStrimzi(t *testing.T) {
	out, err := runCLI("topology", "render", "--format", "strimzi", "--cluster", "events", "-n", "kafka", "-f", "../../examples/quickstart")
	if err != nil {
		t.Fatalf("render: %v\n%s", err, out)
	}
	objs := byKindName(decodeObjects(t, []byte(out)))
	topo, err := topology.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{topo.Matches(), topo.Sources(), topo.SourceTopic("", "webhook")} {
		kt := objs["KafkaTopic/"+name]
		if kt == nil || kt.GetNamespace() != "kafka" || kt.GetLabels()[topology.StrimziClusterLabel] != "events" {
			t.Errorf("KafkaTopic %s: %v; want it in namespace kafka for cluster events", name, kt)
		}
	}
	// The ACLs name the consumer groups the stages really use.
	groups := map[string]string{}
	for _, c := range []string{topology.ComponentSensor, topology.ComponentExecutor} {
		u := objs["KafkaUser/"+topo.StrimziUserName(c)]
		if u == nil {
			t.Fatalf("no KafkaUser %s in:\n%s", topo.StrimziUserName(c), out)
		}
		acls, _, _ := unstructured.NestedSlice(u.Object, "spec", "authorization", "acls")
		for _, a := range acls {
			r := a.(map[string]any)["resource"].(map[string]any)
			if r["type"] == "group" {
				groups[c] = r["name"].(string)
			}
		}
	}
	if want := map[string]string{"sensor": sensor.GroupID(topo), "executor": trigger.GroupID(topo)}; !reflect.DeepEqual(groups, want) {
		t.Errorf("group ACLs %v, want %v", groups, want)
	}

	if _, err := runCLI("topology", "render", "--format", "kafka"); err == nil || !strings.Contains(err.Error(), `--format: "kafka"; expected strimzi`) {
		t.Errorf("--format kafka: %v", err)
	}
	if _, err := runCLI("topology", "render", "--strimzi-api", "v1alpha1"); err == nil || !strings.Contains(err.Error(), `APIVersion "v1alpha1"`) {
		t.Errorf("--strimzi-api v1alpha1: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata: {name: x}\nspec: {webhook: {a: {port: 1, bogus: 2}}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI("topology", "render", "-f", bad); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("render of a broken definition: %v; want an error naming the file", err)
	}
}

// kustomize renders a kustomization with the kubectl built beside the test API server.
func kustomize(t *testing.T, kubectl, dir string) []byte {
	t.Helper()
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return out
}

// strimziInstall lays out the kustomization docs/install.md describes: the KafkaTopics and
// KafkaUsers rendered from the quickstart's definitions, and deploy/overlays/strimzi.
func strimziInstall(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	defs := filepath.Join(dir, "definitions")
	files, err := filepath.Glob("../../examples/quickstart/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("quickstart definitions: %v, %d files", err, len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(defs, filepath.Base(f)), string(data))
	}
	rendered, err := runCLI("topology", "render", "--format", "strimzi", "--cluster", "my-cluster", "-f", defs)
	if err != nil {
		t.Fatalf("render: %v\n%s", err, rendered)
	}
	writeFile(t, filepath.Join(dir, "strimzi.yaml"), rendered)
	abs, err := filepath.Abs(filepath.Join(deployDir, "overlays/strimzi"))
	if err != nil {
		t.Fatal(err)
	}
	overlay, err := filepath.Rel(dir, abs) // kustomize takes relative paths only
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "kustomization.yaml"), `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - `+overlay+`
  - strimzi.yaml
images:
  - name: ghcr.io/kevents/kevents
    newName: registry.example.com/kevents
    newTag: v0.1.0
`)
	return dir
}

// TestKustomizeDeploy renders deploy/base, and deploy/overlays/strimzi as docs/install.md uses
// it, and applies both with a server-side dry run and strict field validation to a real
// kube-apiserver: core kinds against the server's own schemas, KafkaTopic and KafkaUser against
// Strimzi 1.2.0's CRDs. ScaledObject, TriggerAuthentication and ServiceMonitor get the minimal
// CRDs of deploy/testdata (apiVersion, kind and metadata checked, spec not); their fields that
// must agree with kevents are checked here.
func TestKustomizeDeploy(t *testing.T) {
	server := kubetest.Start(t)
	// The Strimzi CRDs are shared test data beside the repository, not part of it: without
	// them the overlay is not checked, and the test says so.
	_, noStrimzi := os.Stat(strimziCRDs)
	if noStrimzi == nil {
		server.Apply(t, filepath.Join(strimziCRDs, "1.2.0/043-Crd-kafkatopic.yaml"), filepath.Join(strimziCRDs, "1.2.0/044-Crd-kafkauser.yaml"))
	}
	server.Apply(t, filepath.Join(deployDir, "testdata/crds.yaml"))
	kubectl := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.Command(server.Kubectl, append([]string{"--kubeconfig", server.Kubeconfig}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	dryRun := []string{"apply", "--server-side", "--dry-run=server", "--validate=strict", "--field-manager=kevents-test", "-n", "kevents", "-f", "-"}
	if out, err := kubectl(nil, "create", "namespace", "kevents"); err != nil {
		t.Fatalf("create namespace: %v\n%s", err, out)
	}
	// The dry run has teeth: a field the schema does not know is refused.
	bogus := []byte("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1, bogus: 2}]}\n")
	if out, err := kubectl(bogus, dryRun...); err == nil || !strings.Contains(out, "bogus: field not declared in schema") {
		t.Fatalf("a Service with an unknown field: %v\n%s; want it refused", err, out)
	}

	topo, err := topology.New()
	if err != nil {
		t.Fatal(err)
	}
	components := []string{topology.ComponentSource, topology.ComponentSensor, topology.ComponentExecutor}
	for name, dir := range map[string]func(*testing.T) string{
		"base":    func(*testing.T) string { return filepath.Join(deployDir, "base") },
		"strimzi": strimziInstall,
	} {
		t.Run(name, func(t *testing.T) {
			if name == "strimzi" && noStrimzi != nil {
				t.Skipf("Strimzi CRDs not found beside the repository: %v", noStrimzi)
			}
			rendered := kustomize(t, server.Kubectl, dir(t))
			objs := byKindName(decodeObjects(t, rendered))
			for _, c := range components {
				checkDeployment(t, objs, "kevents-"+c, c)
			}
			checkCRDs(t, objs)
			if name == "strimzi" {
				checkStrimziOverlay(t, objs, topo, components)
			}
			out, err := kubectl(rendered, dryRun...)
			if err != nil {
				t.Fatalf("dry run: %v\n%s", err, out)
			}
			if n := strings.Count(out, "serverside-applied (server dry run)"); n != len(objs) {
				t.Errorf("%d of %d objects applied:\n%s", n, len(objs), out)
			}
		})
	}
}

// checkDeployment checks what every stage's Deployment must have: its command, probes on the
// metrics port, requests, a non-root read-only container, a PodDisruptionBudget.
func checkDeployment(t *testing.T, objs map[string]*unstructured.Unstructured, name, component string) {
	t.Helper()
	d := objs["Deployment/"+name]
	if d == nil {
		t.Fatalf("no Deployment %s", name)
	}
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	c := containers[0].(map[string]any)
	if args, _, _ := unstructured.NestedStringSlice(c, "args"); len(args) < 2 || args[0] != component || args[1] != "--brokers=$(KAFKA_BROKERS)" {
		t.Errorf("%s: args %v; want %s --brokers=$(KAFKA_BROKERS) ...", name, args, component)
	}
	args, _, _ := unstructured.NestedStringSlice(c, "args")
	// The binary must accept every flag the manifests pass: parse them as it would.
	if sub, rest, err := newRootCmd().Find(args); err != nil || sub.Name() != component {
		t.Errorf("%s: args %v do not name the %s command: %v", name, args, component, err)
	} else if err := sub.ParseFlags(rest); err != nil {
		t.Errorf("%s: kevents %s refuses the args %v: %v", name, component, rest, err)
	}
	if watches := slices.Contains(args, "--watch-cluster"); watches != (component != topology.ComponentExecutor) {
		t.Errorf("%s: args %v; the source and sensor stages, and only they, read definitions with --watch-cluster", name, args)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		got, _, _ := unstructured.NestedString(c, probe, "httpGet", "path")
		port, _, _ := unstructured.NestedFieldNoCopy(c, probe, "httpGet", "port")
		if got != path || port != "metrics" {
			t.Errorf("%s: %s %s on port %v; want %s on metrics", name, probe, got, port, path)
		}
	}
	if ports, _, _ := unstructured.NestedSlice(c, "ports"); !hasPort(ports, "metrics", 9090) {
		t.Errorf("%s: ports %v; want metrics on 9090", name, ports)
	}
	if cpu, _, _ := unstructured.NestedString(c, "resources", "requests", "cpu"); cpu == "" {
		t.Errorf("%s: no CPU request", name)
	}
	nonRoot, _, _ := unstructured.NestedBool(d.Object, "spec", "template", "spec", "securityContext", "runAsNonRoot")
	readOnly, _, _ := unstructured.NestedBool(c, "securityContext", "readOnlyRootFilesystem")
	escalation, _, _ := unstructured.NestedBool(c, "securityContext", "allowPrivilegeEscalation")
	if !nonRoot || !readOnly || escalation {
		t.Errorf("%s: runAsNonRoot %v, readOnlyRootFilesystem %v, allowPrivilegeEscalation %v", name, nonRoot, readOnly, escalation)
	}
	if sa, _, _ := unstructured.NestedString(d.Object, "spec", "template", "spec", "serviceAccountName"); objs["ServiceAccount/"+sa] == nil || objs["RoleBinding/"+sa] == nil {
		t.Errorf("%s: service account %q has no ServiceAccount and RoleBinding", name, sa)
	}
	if objs["PodDisruptionBudget/"+name] == nil {
		t.Errorf("%s: no PodDisruptionBudget", name)
	}
}

func hasPort(ports []any, name string, port int) bool {
	for _, p := range ports {
		m := p.(map[string]any)
		// The YAML decoder gives JSON numbers, float64 here.
		if m["name"] == name && m["containerPort"] == float64(port) {
			return true
		}
	}
	return false
}

// checkCRDs checks that the CRDs serve the apiVersion the definitions loader accepts.
func checkCRDs(t *testing.T, objs map[string]*unstructured.Unstructured) {
	t.Helper()
	for _, plural := range []string{"eventsources", "sensors"} {
		crd := objs["CustomResourceDefinition/"+plural+".kevents.io"]
		if crd == nil {
			t.Errorf("no CRD %s.kevents.io", plural)
			continue
		}
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		if v := versions[0].(map[string]any)["name"]; group+"/"+v.(string) != api.KeventsAPIVersion {
			t.Errorf("CRD %s serves %s/%v, want %s", crd.GetName(), group, v, api.KeventsAPIVersion)
		}
	}
}

// checkStrimziOverlay checks that the overlay agrees with kevents: each stage mounts its own
// KafkaUser's Secret, and KEDA watches the consumer groups the stages use.
func checkStrimziOverlay(t *testing.T, objs map[string]*unstructured.Unstructured, topo *topology.Topology, components []string) {
	t.Helper()
	if objs["KafkaTopic/"+topo.SourceTopic("", "webhook")] == nil {
		t.Error("no KafkaTopic for the quickstart's webhook EventSource")
	}
	for _, c := range components {
		user := topo.StrimziUserName(c)
		if objs["KafkaUser/"+user] == nil {
			t.Errorf("no KafkaUser %s", user)
		}
		volumes, _, _ := unstructured.NestedSlice(objs["Deployment/kevents-"+c].Object, "spec", "template", "spec", "volumes")
		secrets := map[string]string{}
		for _, v := range volumes {
			m := v.(map[string]any)
			if s, ok := m["secret"].(map[string]any); ok {
				secrets[m["name"].(string)] = s["secretName"].(string)
			}
		}
		if want := map[string]string{"kafka-user": user, "kafka-ca": "my-cluster-cluster-ca-cert"}; !reflect.DeepEqual(secrets, want) {
			t.Errorf("kevents-%s mounts Secrets %v, want %v", c, secrets, want)
		}
	}
	for name, want := range map[string]map[string]any{
		"kevents-sensor":   {"consumerGroup": sensor.GroupID(topo), "bootstrapServersFromEnv": "KAFKA_BROKERS", "tls": "enable"},
		"kevents-executor": {"consumerGroup": trigger.GroupID(topo), "topic": topo.Commands(), "bootstrapServersFromEnv": "KAFKA_BROKERS", "tls": "enable"},
	} {
		so := objs["ScaledObject/"+name]
		if so == nil {
			t.Errorf("no ScaledObject %s", name)
			continue
		}
		triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
		tr := triggers[0].(map[string]any)
		md := tr["metadata"].(map[string]any)
		for k, v := range want {
			if md[k] != v {
				t.Errorf("ScaledObject %s: metadata.%s %v, want %v", name, k, md[k], v)
			}
		}
		auth, _, _ := unstructured.NestedString(tr, "authenticationRef", "name")
		if objs["TriggerAuthentication/"+auth] == nil {
			t.Errorf("ScaledObject %s: authenticationRef %q names no TriggerAuthentication", name, auth)
		}
		if target, _, _ := unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "name"); objs["Deployment/"+target] == nil {
			t.Errorf("ScaledObject %s scales %q, which is no Deployment", name, target)
		}
	}
	sm := objs["ServiceMonitor/kevents"]
	if sm == nil {
		t.Fatal("no ServiceMonitor kevents")
	}
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if svc := objs["Service/kevents-metrics"]; svc == nil || !labelsMatch(sel, svc.GetLabels()) {
		t.Errorf("ServiceMonitor selector %v does not select Service kevents-metrics", sel)
	}
}

func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// TestDeployGrafanaMetrics checks that every metric the dashboard queries is one kevents serves.
func TestDeployGrafanaMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, "grafana/kevents.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana/kevents.json: %v", err)
	}
	served := servedMetrics(t)
	name := regexp.MustCompile(`\b(kevents|process|go)_[a-z_]+\b`)
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				queried++
				if !served[m] {
					t.Errorf("panel %q queries %s, which kevents does not serve", p.Title, m)
				}
			}
		}
	}
	if queried == 0 {
		t.Fatal("the dashboard queries no metric")
	}
}

// servedMetrics returns the names of the series kevents exports, histograms' included.
func servedMetrics(t *testing.T) map[string]bool {
	m := metrics.New()
	names := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	// Vectors without observations export nothing yet, so their names come from their Descs.
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() || v.Field(i).Type() == reflect.TypeFor[*prometheus.Registry]() {
			continue
		}
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		descs := make(chan *prometheus.Desc)
		go func() { c.Describe(descs); close(descs) }()
		_, histogram := c.(*prometheus.HistogramVec)
		for d := range descs {
			s := fqName.FindStringSubmatch(d.String())
			if s == nil {
				t.Fatalf("metrics: no name in %s", d)
			}
			names[s[1]] = true
			if histogram {
				names[s[1]+"_bucket"], names[s[1]+"_sum"], names[s[1]+"_count"] = true, true, true
			}
		}
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		names[f.GetName()] = true
	}
	return names
}
