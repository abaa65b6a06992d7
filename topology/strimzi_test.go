package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/kevents/kevents/internal/kubetest"
)

// aclKeys writes each ACL rule of a user in one line, to compare permissions as sets.
func aclKeys(u KafkaUser) map[string]bool {
	out := map[string]bool{}
	for _, a := range u.Spec.Authorization.ACLs {
		out[fmt.Sprintf("%s %s %s %s", a.Resource.Type, a.Resource.PatternType, a.Resource.Name, strings.Join(a.Operations, ","))] = true
	}
	return out
}

func keys(ss ...string) map[string]bool {
	out := map[string]bool{}
	for _, s := range ss {
		out[s] = true
	}
	return out
}

func TestStrimziRender(t *testing.T) {
	topo := mustNew(t)
	src := []string{topo.SourceTopic("prod", "webhook"), topo.SourceTopic("", "calendar")}
	res, err := topo.Strimzi(StrimziOptions{Cluster: "events", Namespace: "kafka"}, src...)
	if err != nil {
		t.Fatal(err)
	}

	// One KafkaTopic per spec, with Topics' partitions, replication and configs.
	specs := topo.Topics(src...)
	if len(res.Topics) != len(specs) {
		t.Fatalf("%d KafkaTopics, want %d (one per topic)", len(res.Topics), len(specs))
	}
	for i, kt := range res.Topics {
		s := specs[i]
		if kt.APIVersion != "kafka.strimzi.io/v1" || kt.Kind != "KafkaTopic" {
			t.Errorf("%s: %s %s, want kafka.strimzi.io/v1 KafkaTopic", s.Name, kt.APIVersion, kt.Kind)
		}
		// With the default prefix every name is a valid object name, dots included.
		if kt.Metadata.Name != s.Name || kt.Spec.TopicName != "" {
			t.Errorf("%s: metadata.name %q, spec.topicName %q; want the topic name and no topicName", s.Name, kt.Metadata.Name, kt.Spec.TopicName)
		}
		if kt.Metadata.Namespace != "kafka" || kt.Metadata.Labels[StrimziClusterLabel] != "events" {
			t.Errorf("%s: namespace %q, labels %v; want kafka and %s=events", s.Name, kt.Metadata.Namespace, kt.Metadata.Labels, StrimziClusterLabel)
		}
		if kt.Spec.Partitions != s.Partitions || kt.Spec.Replicas != 0 || !reflect.DeepEqual(kt.Spec.Config, s.Configs) {
			t.Errorf("%s: spec %+v; want partitions %d, no replicas (broker default), config %v", s.Name, kt.Spec, s.Partitions, s.Configs)
		}
	}

	want := map[string]map[string]bool{
		"kevents-source": keys(
			"topic literal kevents.src.prod.webhook Write,Describe",
			"topic literal kevents.src.default.calendar Write,Describe",
			"topic literal kevents.sources Read,Write,Describe",
			"group literal kevents.sources Read,Describe",
			"transactionalId prefix kevents.sources. Write,Describe",
		),
		"kevents-sensor": keys(
			"topic literal kevents.src.prod.webhook Read,Describe",
			"topic literal kevents.src.default.calendar Read,Describe",
			"topic literal kevents.matches Read,Write,Describe",
			"topic literal kevents.state Read,Write,Describe",
			"topic literal kevents.commands Write,Describe",
			"group literal kevents.sensor Read,Describe",
			"transactionalId prefix kevents.sensor. Write,Describe",
		),
		"kevents-executor": keys(
			"topic literal kevents.commands Read,Write,Describe",
			"topic literal kevents.executed Read,Write,Describe",
			"topic literal kevents.dlq Write,Describe",
			"group literal kevents.executor Read,Describe",
		),
	}
	if len(res.Users) != 3 {
		t.Fatalf("%d KafkaUsers, want 3", len(res.Users))
	}
	for i, c := range []string{ComponentSource, ComponentSensor, ComponentExecutor} {
		u := res.Users[i]
		name := "kevents-" + c
		if u.Metadata.Name != name || topo.StrimziUserName(c) != name {
			t.Errorf("user %d: %q (StrimziUserName %q), want %q", i, u.Metadata.Name, topo.StrimziUserName(c), name)
		}
		if u.Metadata.Labels[StrimziClusterLabel] != "events" || u.Metadata.Labels["app.kubernetes.io/component"] != c {
			t.Errorf("%s: labels %v", name, u.Metadata.Labels)
		}
		if u.Spec.Authentication.Type != AuthTLS || u.Spec.Authorization.Type != "simple" {
			t.Errorf("%s: authentication %q, authorization %q; want tls and simple", name, u.Spec.Authentication.Type, u.Spec.Authorization.Type)
		}
		if got := aclKeys(u); !reflect.DeepEqual(got, want[name]) {
			t.Errorf("%s ACLs:\n got %v\nwant %v", name, got, want[name])
		}
	}

	// Without definitions the source topics are granted by prefix.
	res, err = topo.Strimzi(StrimziOptions{Cluster: "events", Authentication: AuthSCRAMSHA512, APIVersion: StrimziV1Beta2})
	if err != nil {
		t.Fatal(err)
	}
	if !aclKeys(res.Users[0])["topic prefix kevents.src. Write,Describe"] || !aclKeys(res.Users[1])["topic prefix kevents.src. Read,Describe"] {
		t.Errorf("without source topics, want prefix ACLs on kevents.src.; got source %v, sensor %v", aclKeys(res.Users[0]), aclKeys(res.Users[1]))
	}
	if u := res.Users[2]; u.APIVersion != "kafka.strimzi.io/v1beta2" || u.Spec.Authentication.Type != AuthSCRAMSHA512 || u.Metadata.Namespace != "" {
		t.Errorf("executor: %s, authentication %q, namespace %q; want v1beta2, scram-sha-512, none", u.APIVersion, u.Spec.Authentication.Type, u.Metadata.Namespace)
	}
}

// A prefix that is not a valid Kubernetes name (upper case, '_') gives derived object names that
// are valid and distinct, and spec.topicName keeps the Kafka name.
func TestStrimziNames(t *testing.T) {
	topo := mustNew(t, Prefix("Team_A"), ReplicationFactor(3))
	res, err := topo.Strimzi(StrimziOptions{Cluster: "c"}, topo.SourceTopic("ns", "a-b"), topo.SourceTopic("ns-a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, kt := range res.Topics {
		n := kt.Metadata.Name
		if msgs := validation.IsDNS1123Subdomain(n); len(msgs) > 0 {
			t.Errorf("%s: metadata.name %q is not a valid object name: %v", kt.Spec.TopicName, n, msgs)
		}
		if !strings.HasPrefix(kt.Spec.TopicName, "Team_A.") || !strings.HasPrefix(n, "team-a-") || seen[n] {
			t.Errorf("topic %q: metadata.name %q; want the topic name in spec.topicName and a distinct name starting team-a-", kt.Spec.TopicName, n)
		}
		seen[n] = true
		if kt.Spec.Replicas != 3 {
			t.Errorf("%s: replicas %d, want 3", n, kt.Spec.Replicas)
		}
	}
	for _, u := range res.Users {
		if msgs := validation.IsDNS1123Subdomain(u.Metadata.Name); len(msgs) > 0 || !strings.HasPrefix(u.Metadata.Name, "team-a-") {
			t.Errorf("user %q: not a valid object name starting team-a-: %v", u.Metadata.Name, msgs)
		}
	}
	// The ACLs name Kafka resources, not Kubernetes objects.
	if acl := res.Users[1].Spec.Authorization.ACLs[0].Resource; acl.Name != "Team_A.src.ns.a-b" {
		t.Errorf("sensor's first ACL names %q, want the topic Team_A.src.ns.a-b", acl.Name)
	}
}

func TestStrimziRenderErrors(t *testing.T) {
	topo := mustNew(t)
	for _, tc := range []struct {
		name string
		o    StrimziOptions
		src  []string
		want []string
	}{
		{"no cluster", StrimziOptions{}, nil, []string{"Cluster", "empty"}},
		{"bad cluster", StrimziOptions{Cluster: "my cluster"}, nil, []string{"Cluster", `"my cluster"`}},
		{"bad namespace", StrimziOptions{Cluster: "c", Namespace: "Kafka"}, nil, []string{"Namespace", `"Kafka"`}},
		{"api version", StrimziOptions{Cluster: "c", APIVersion: "v1beta1"}, nil, []string{"APIVersion", `"v1beta1"`, "v1", "v1beta2"}},
		{"authentication", StrimziOptions{Cluster: "c", Authentication: "plain"}, nil, []string{"Authentication", `"plain"`, "tls", "scram-sha-512"}},
		{"source topic", StrimziOptions{Cluster: "c"}, []string{"kevents.src.ns.a b"}, []string{`"kevents.src.ns.a b"`, "' '"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := topo.Strimzi(tc.o, tc.src...)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidOption) && !errors.Is(err, ErrInvalidTopicName) {
				t.Errorf("error %v wraps neither ErrInvalidOption nor ErrInvalidTopicName", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// A TLS user's name is its certificate's common name: at most 64 characters.
	long := mustNew(t, Prefix(strings.Repeat("k", 60)))
	if _, err := long.Strimzi(StrimziOptions{Cluster: "c"}); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("60-character prefix with tls: %v; want the 64-character limit", err)
	}
	if _, err := long.Strimzi(StrimziOptions{Cluster: "c", Authentication: AuthSCRAMSHA512}); err != nil {
		t.Errorf("60-character prefix with scram-sha-512: %v", err)
	}
}

// strimziCRDs is where the shared Strimzi CRDs are, beside the repository (see its README).
const strimziCRDs = "../../shared/strimzi-crds"

// TestStrimziAPIServer creates every rendered object, with dryRun=All and strict field
// validation, in a real kube-apiserver that has Strimzi's own KafkaTopic and KafkaUser CRDs:
// their schemas, not ours, decide. Each Strimzi release gets its own server, since both define
// the same CRD names.
func TestStrimziAPIServer(t *testing.T) {
	if _, err := os.Stat(strimziCRDs); err != nil {
		// Shared test data beside the repository, not part of it.
		t.Skipf("Strimzi CRDs not found beside the repository: %v", err)
	}
	var variants []*StrimziResources
	for _, v := range []struct {
		opts []Opt
		o    StrimziOptions
		src  []string
	}{
		{nil, StrimziOptions{Cluster: "my-cluster"}, nil},
		{[]Opt{Prefix("Team_A"), ReplicationFactor(3)}, StrimziOptions{Cluster: "my-cluster", Authentication: AuthSCRAMSHA512}, []string{"Team_A.src.prod.calendar.daily"}},
	} {
		topo := mustNew(t, v.opts...)
		for _, api := range []string{StrimziV1, StrimziV1Beta2} {
			v.o.APIVersion, v.o.Namespace = api, "kafka"
			res, err := topo.Strimzi(v.o, v.src...)
			if err != nil {
				t.Fatal(err)
			}
			variants = append(variants, res)
		}
	}
	for _, release := range []struct {
		dir    string
		served map[string]bool
	}{
		{"0.49.0", map[string]bool{"kafka.strimzi.io/v1": true, "kafka.strimzi.io/v1beta2": true}},
		{"1.2.0", map[string]bool{"kafka.strimzi.io/v1": true}},
	} {
		t.Run(release.dir, func(t *testing.T) {
			server := kubetest.Start(t)
			server.Apply(t,
				filepath.Join(strimziCRDs, release.dir, "043-Crd-kafkatopic.yaml"),
				filepath.Join(strimziCRDs, release.dir, "044-Crd-kafkauser.yaml"))
			cfg := rest.CopyConfig(server.Config)
			cfg.WarningHandler = rest.NoWarnings{} // v1beta2 is deprecated, which is known
			dyn, err := dynamic.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "kafka"}}}
			if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			create := func(obj *unstructured.Unstructured) error {
				gvk := obj.GroupVersionKind()
				gvr := gvk.GroupVersion().WithResource(strings.ToLower(gvk.Kind) + "s")
				_, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(ctx, obj, metav1.CreateOptions{
					DryRun:          []string{metav1.DryRunAll},
					FieldValidation: metav1.FieldValidationStrict,
				})
				return err
			}
			created := 0
			for _, res := range variants {
				for _, obj := range res.Objects() {
					u := toUnstructured(t, obj)
					err := create(u)
					switch {
					case release.served[u.GetAPIVersion()] && err != nil:
						t.Errorf("%s %s %s: %v", u.GetAPIVersion(), u.GetKind(), u.GetName(), err)
					case release.served[u.GetAPIVersion()]:
						created++
					case err == nil:
						t.Errorf("%s %s %s: accepted, but Strimzi %s does not serve %s", u.GetAPIVersion(), u.GetKind(), u.GetName(), release.dir, u.GetAPIVersion())
					}
				}
			}
			if created == 0 {
				t.Fatal("no object was created")
			}
			// The check has teeth: a field Strimzi's schema does not know is refused.
			bad := toUnstructured(t, variants[0].Users[0]) // a v1 KafkaUser
			acls := bad.Object["spec"].(map[string]any)["authorization"].(map[string]any)["acls"].([]any)
			acls[0].(map[string]any)["operation"] = "Read" // v1beta2's single operation, gone in v1
			if err := create(bad); err == nil || !strings.Contains(err.Error(), `unknown field "spec.authorization.acls[0].operation"`) {
				t.Errorf("a KafkaUser with an unknown field: %v; want it refused as an unknown field", err)
			}
			t.Logf("Strimzi %s: %d objects accepted", release.dir, created)
		})
	}
}

func toUnstructured(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(data, &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}
