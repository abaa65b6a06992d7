package main

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/topology"
)

const corpus = "../../../shared/argo-examples"

// TestArgoExamples loads Argo Events' own examples: every document either runs, is refused as
// "not supported yet", or has a genuine error that Argo silently ignores.
func TestArgoExamples(t *testing.T) {
	docs, err := checkDocuments([]string{corpus})
	if err != nil {
		t.Skipf("Argo examples corpus not found beside the repository: %v", err)
	}
	// The genuine errors in Argo's examples: trigger-level fields put under template:, two
	// misspelt fields (openwhisk for openWhisk, verifycert for verifyCert), and a namespace field
	// Argo's stripe event source does not have. Argo ignores the first three and the last
	// silently and reads verifycert through Go's case-insensitive JSON decoding.
	wantInvalid := map[string]string{
		"trigger-with-atleast-once-semantics.yaml": `spec.triggers[0].template.atLeastOnce: unknown field`,
		"trigger-with-policy.yaml":                 `spec.triggers[0].template.policy: unknown field`,
		"trigger-openwhisk.yaml":                   `spec.triggers[0].template.openwhisk: unknown field`,
		"url-sensor.yaml":                          `spec.triggers[0].template.k8s.source.url.verifycert: unknown field`,
		"stripe.yaml":                              `spec.stripe.example.namespace: unknown field`,
	}
	var ok, invalid, unsupported, skipped []string
	for _, d := range docs {
		name := filepath.Base(d.File)
		switch {
		case d.Err != nil && isOnlyUnsupported(d.Err):
			unsupported = append(unsupported, name)
			if !strings.Contains(d.Err.Error(), "not supported yet: ") {
				t.Errorf("%s: unsupported without saying so: %v", d.Document, d.Err)
			}
		case d.Err != nil:
			invalid = append(invalid, name)
			want, known := wantInvalid[name]
			if !known {
				t.Errorf("%s: unexpected error: %v", d.Document, d.Err)
			} else if !strings.Contains(d.Err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", d.Document, d.Err, want)
			}
		case d.Skipped != "":
			skipped = append(skipped, name)
		default:
			ok = append(ok, name)
		}
	}
	sort.Strings(invalid)
	if len(invalid) != len(wantInvalid) {
		t.Errorf("invalid documents %v, want exactly %d: the files of %v", invalid, len(wantInvalid), wantInvalid)
	}
	if len(docs) != 111 {
		t.Errorf("corpus has %d documents, want 111", len(docs))
	}
	// Loads: everything but the five genuine errors and the WorkflowTemplate beside a Sensor.
	if loaded := len(ok) + len(unsupported); loaded != 105 {
		t.Errorf("%d documents load, want 105", loaded)
	}
	// These event-source examples run; checked by path, as sensors share their file names.
	mustRun := map[string]bool{}
	for _, f := range []string{"bitbucket", "bitbucketserver", "file", "resource", "mqtt", "redis", "redis-streams"} {
		mustRun[corpus+"/event-sources/"+f+".yaml"] = true
	}
	for _, d := range docs {
		if mustRun[filepath.ToSlash(d.File)] {
			delete(mustRun, filepath.ToSlash(d.File))
			if d.Err != nil {
				t.Errorf("%s does not run; it should: %v", d.Document, d.Err)
			}
		}
	}
	if len(mustRun) > 0 {
		t.Errorf("event-source examples missing from the corpus: %v", mustRun)
	}
	for _, want := range []string{"webhook.yaml", "log.yaml", "http-trigger.yaml", "trigger-nats-messages.yaml", "slack-trigger.yaml", "email-trigger.yaml",
		"aws-lambda-trigger.yaml", "custom-trigger.yaml", "calendar.yaml", "special-workflow-trigger-submit-existing.yml",
		"trigger-standard-k8s-resource.yaml", "trigger-source-file.yaml", "trigger-source-configmap.yaml"} {
		if !contains(ok, want) {
			t.Errorf("%s does not run; it should (ok: %v)", want, ok)
		}
	}
	if len(skipped) != 1 || skipped[0] != "sensor-to-existing-workflow-template.yaml" {
		t.Errorf("skipped %v, want the WorkflowTemplate of sensor-to-existing-workflow-template.yaml", skipped)
	}

	var out bytes.Buffer
	s := writeValidation(&out, docs)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(docs)+1 {
		t.Errorf("validate printed %d lines for %d documents, want one per document and a summary", len(lines), len(docs))
	}
	if !s.failed() || !strings.HasPrefix(lines[len(lines)-1], "111 documents: ") {
		t.Errorf("summary %q, failed=%v", lines[len(lines)-1], s.failed())
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestValidateCommand(t *testing.T) {
	out, err := runCLI("validate", "-f", "../../examples/quickstart")
	if err != nil || !strings.Contains(out, "2 documents: 2 ok") {
		t.Errorf("quickstart: err %v, output:\n%s", err, out)
	}
	nsq := filepath.Join(t.TempDir(), "nsq.yaml")
	writeFile(t, nsq, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata: {name: q}\nspec:\n  nsq:\n    example: {hostAddress: \"localhost:4161\", topic: t, channel: c}\n")
	out, err = runCLI("validate", "-f", nsq)
	if err == nil || !strings.Contains(out, `not supported yet: eventsource type "nsq"`) {
		t.Errorf("nsq: want a non-zero exit and the not-supported line; err %v, output:\n%s", err, out)
	}
	if _, err = runCLI("validate", "-f", "does-not-exist.yaml"); err == nil {
		t.Error("a missing path must fail")
	}
}

// TestValidateFilter: an event source filter runs; one that cannot is reported on the
// document's line, naming the field, the expression and why.
func TestValidateFilter(t *testing.T) {
	doc := func(name, expression string) string {
		return fmt.Sprintf("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata: {name: %s}\nspec:\n  webhook:\n    pr:\n      port: \"12000\"\n      endpoint: /pr\n      method: POST\n      filter:\n        expression: %q\n", name, expression)
	}
	path := filepath.Join(t.TempDir(), "filters.yaml")
	writeFile(t, path, strings.Join([]string{
		doc("good", `body.action == "opened"`),
		doc("bad", `body.action ==`),
		doc("jsonpath", `jsonpath(toJson(body), "$.a") == 1`),
	}, "---\n"))
	out, err := runCLI("validate", "-f", path)
	if err == nil {
		t.Errorf("validate: no error with an invalid filter; output:\n%s", out)
	}
	for _, want := range []string{
		"ok          " + path + "#1 EventSource/good",
		"invalid     " + path + `#2 EventSource/bad: spec.webhook.pr.filter.expression: "body.action ==" is not a valid expression: unexpected token EOF`,
		"unsupported " + path + `#3 EventSource/jsonpath: spec.webhook.pr.filter.expression: not supported yet: eventsource filter function "jsonpath"`,
		"3 documents: 1 ok, 1 not supported yet, 1 invalid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckDocumentsNamesTheField(t *testing.T) {
	docs := api.Parse("bad.yaml", []byte(`apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: s
spec:
  dependencies:
    - name: d
      eventSourceName: es
      eventName: e
      filter: {}
  triggers:
    - template:
        name: t
        log: {}
`))
	if len(docs) != 1 || docs[0].Err == nil {
		t.Fatalf("want one document with an error, got %+v", docs)
	}
	msg := docs[0].Err.Error()
	for _, want := range []string{"bad.yaml#1", "Sensor/s", "line 10", "spec.dependencies[0].filter: unknown field", "filters"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if errors.Is(docs[0].Err, api.ErrNotSupported) {
		t.Error("an unknown field is a mistake, not 'not supported yet'")
	}
}

func TestTopologyCommands(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := "--brokers=" + strings.Join(cluster.ListenAddrs(), ",")
	if _, err := runCLI("topology", "describe", brokers); !errors.Is(err, topology.ErrMissingTopic) {
		t.Errorf("describe before apply: %v, want ErrMissingTopic", err)
	}
	out, err := runCLI("topology", "apply", brokers, "--partitions=3", "-f", "../../examples/quickstart")
	if err != nil || !strings.Contains(out, "kevents.src.default.webhook: created, 3 partitions") {
		t.Errorf("apply: %v\n%s", err, out)
	}
	out, err = runCLI("topology", "describe", brokers, "--partitions=3", "-f", "../../examples/quickstart")
	if err != nil || !strings.Contains(out, "kevents.commands") || !strings.Contains(out, "kevents.src.default.webhook") {
		t.Errorf("describe after apply: %v\n%s", err, out)
	}
	if _, err := runCLI("topology", "describe"); err == nil || !strings.Contains(err.Error(), "--brokers: missing") {
		t.Errorf("describe without --brokers: %v", err)
	}
}

// runCLI runs the kevents command line with args and returns what it printed.
func runCLI(args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}
