package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/topology"
)

// ownedSrcCluster is a broker with the sources topic (6 partitions, as topology makes it) and
// a one-partition topic per EventSource, for the owned sources of one member.
type ownedSrcCluster struct {
	t       *testing.T
	brokers []string
	topo    *topology.Topology
	kc      kclient.Config
}

func newOwnedSrcCluster(t *testing.T, eventSources ...string) *ownedSrcCluster {
	t.Helper()
	topo, err := topology.New()
	if err != nil {
		t.Fatal(err)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second), kfake.SeedTopics(6, topo.Sources())}
	for _, es := range eventSources {
		opts = append(opts, kfake.SeedTopics(1, topo.SourceTopic("", es)))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &ownedSrcCluster{t: t, brokers: c.ListenAddrs(), topo: topo, kc: kclient.Config{Brokers: c.ListenAddrs()}}
}

// events reads the committed events of EventSource es, in order.
func (c *ownedSrcCluster) events(es string) []*cloudevents.Event {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*cloudevents.Event
	err := c.kc.ReadPartition(ctx, c.topo.SourceTopic("", es), 0, func(r *kgo.Record) error {
		out = append(out, decode(c.t, r))
		return nil
	})
	if err != nil {
		c.t.Fatalf("read the events of %s: %v", es, err)
	}
	return out
}

// wait waits until EventSource es has events that satisfy ok, and returns them.
func (c *ownedSrcCluster) wait(es, what string, ok func([]*cloudevents.Event) bool) []*cloudevents.Event {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		evs := c.events(es)
		if ok(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			var got []string
			for _, e := range evs {
				got = append(got, e.Subject()+" "+string(e.Data()))
			}
			c.t.Fatalf("timed out waiting for %s; events so far:\n%s", what, strings.Join(got, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits until the log holds n lines containing s.
func waitLog(t *testing.T, logs *syncBuffer, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(logs.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d log lines with %q; log:\n%s", n, s, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fileData is the data of a file event, Argo's fsevent.Event.
type fileData struct {
	Name     string            `json:"name"`
	Op       uint32            `json:"op"`
	Metadata map[string]string `json:"metadata"`
}

// fileEvents returns the data of the events of one event name.
func fileEvents(t *testing.T, evs []*cloudevents.Event, event string) []fileData {
	t.Helper()
	var out []fileData
	for _, e := range evs {
		if e.Subject() != event {
			continue
		}
		var d fileData
		if err := json.Unmarshal(e.Data(), &d); err != nil {
			t.Fatalf("event data %s: %v", e.Data(), err)
		}
		out = append(out, d)
	}
	return out
}

// fileHas reports whether event has an event for the file at path with op among its ops.
func fileHas(t *testing.T, evs []*cloudevents.Event, event, path string, op uint32) bool {
	for _, d := range fileEvents(t, evs, event) {
		if d.Name == path && d.Op&op != 0 {
			return true
		}
	}
	return false
}

func fileYAML(dir string, polling bool) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: files
spec:
  file:
    created:
      watchPathConfig: {directory: %[1]q, path: x.txt}
      eventType: CREATE
      polling: %[2]v
      metadata: {team: ops}
    written:
      watchPathConfig: {directory: %[1]q, pathRegexp: '^data-.*\.log$'}
      eventType: WRITE
      polling: %[2]v
    removed:
      watchPathConfig: {directory: %[1]q, pathRegexp: '\.tmp$'}
      eventType: REMOVE
      polling: %[2]v
    renamed:
      watchPathConfig: {directory: %[1]q, pathRegexp: '^old'}
      eventType: RENAME
      polling: %[2]v
    chmodded:
      watchPathConfig: {directory: %[1]q, path: x.txt}
      eventType: CHMOD
      polling: %[2]v
`, dir+"/", polling)
}

// testFileOps runs the file operations of fileYAML's events one by one, each checked before the
// next, so that a polling scan sees them apart.
func testFileOps(t *testing.T, polling bool) {
	dir := t.TempDir()
	c := newOwnedSrcCluster(t, "files")
	logs := &syncBuffer{}
	env := ownedEnv(c.topo, c.brokers, "m1", logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("source logs:\n%s", logs.String())
		}
	})
	runSources(t, env, parseEventSources(t, fileYAML(dir, polling)))
	waitLog(t, logs, "file: watching the directory", 5)

	path := func(n string) string { return filepath.Join(dir, n) }
	write := func(n, s string) {
		if err := os.WriteFile(path(n), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("other.dat", "not watched")
	write("x.txt", "hello")
	c.wait("files", "CREATE x.txt", func(evs []*cloudevents.Event) bool { return fileHas(t, evs, "created", path("x.txt"), 1) })
	// Polling: each event of the EventSource scans on its own ticker, so the CHMOD event's
	// watcher must have seen the file before its mode changes.
	time.Sleep(3 * filePollInterval)
	if err := os.Chmod(path("x.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.wait("files", "CHMOD x.txt", func(evs []*cloudevents.Event) bool { return fileHas(t, evs, "chmodded", path("x.txt"), 16) })
	write("data-1.log", "")
	time.Sleep(3 * filePollInterval) // polling: the file exists in one scan, then grows
	write("data-1.log", "line\n")
	c.wait("files", "WRITE data-1.log", func(evs []*cloudevents.Event) bool { return fileHas(t, evs, "written", path("data-1.log"), 2) })
	write("a.tmp", "")
	time.Sleep(3 * filePollInterval)
	if err := os.Remove(path("a.tmp")); err != nil {
		t.Fatal(err)
	}
	c.wait("files", "REMOVE a.tmp", func(evs []*cloudevents.Event) bool { return fileHas(t, evs, "removed", path("a.tmp"), 4) })
	write("old.txt", "")
	time.Sleep(3 * filePollInterval)
	if err := os.Rename(path("old.txt"), path("new.txt")); err != nil {
		t.Fatal(err)
	}
	evs := c.wait("files", "RENAME old.txt", func(evs []*cloudevents.Event) bool { return fileHas(t, evs, "renamed", path("old.txt"), 8) })

	// Argo's shape: the path, the op number, the metadata (null when none); only matching files
	// and operations.
	for _, e := range evs {
		if e.Type() != "file" || e.Source() != "files" || e.ID() == "" {
			t.Errorf("event %s: type %q source %q id %q, want file, files and an id", e.Subject(), e.Type(), e.Source(), e.ID())
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(e.Data(), &raw); err != nil || len(raw) != 3 {
			t.Errorf("event %s data %s: want exactly name, op and metadata", e.Subject(), e.Data())
		}
	}
	created := fileEvents(t, evs, "created")
	if len(created) != 1 || created[0].Metadata["team"] != "ops" || created[0].Op != 1 {
		t.Errorf("created events %+v, want one CREATE of x.txt with the metadata", created)
	}
	for _, ev := range []string{"written", "removed", "renamed", "chmodded"} {
		for _, d := range fileEvents(t, evs, ev) {
			if d.Metadata != nil {
				t.Errorf("%s: metadata %v, want null", ev, d.Metadata)
			}
		}
	}
	for _, d := range fileEvents(t, evs, "written") {
		if d.Name != path("data-1.log") || d.Op&2 == 0 {
			t.Errorf("written: %+v, want WRITE events of data-1.log only", d)
		}
	}
	for _, e := range evs {
		if strings.Contains(string(e.Data()), "other.dat") || strings.Contains(string(e.Data()), "new.txt") {
			t.Errorf("event of a file not watched by it: %s %s", e.Subject(), e.Data())
		}
	}
	if got := (&harness{t: t, metrics: env.Metrics}).counter("kevents_source_events_published_total", "files", "created"); got != 1 {
		t.Errorf("published counter of created: %v, want 1", got)
	}
}

func TestFileNotify(t *testing.T)  { testFileOps(t, false) }
func TestFilePolling(t *testing.T) { testFileOps(t, true) }

// TestFileMissingDirectory: a directory that does not exist yet is watched once it does, and
// again after it was removed and created anew.
func TestFileMissingDirectory(t *testing.T) {
	retry := fileRetry
	fileRetry = 50 * time.Millisecond
	t.Cleanup(func() { fileRetry = retry })
	dir := filepath.Join(t.TempDir(), "later")
	c := newOwnedSrcCluster(t, "files")
	logs := &syncBuffer{}
	runSources(t, ownedEnv(c.topo, c.brokers, "m1", logs), parseEventSources(t, fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: files
spec:
  file:
    created:
      watchPathConfig: {directory: %q, pathRegexp: '.'}
      eventType: CREATE
`, dir)))
	waitLog(t, logs, "file: cannot watch the directory", 1)
	for round := 1; round <= 2; round++ {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		waitLog(t, logs, "file: watching the directory", round)
		name := filepath.Join(dir, fmt.Sprintf("f%d", round))
		if err := os.WriteFile(name, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		c.wait("files", "CREATE "+name, func(evs []*cloudevents.Event) bool { return fileHas(t, evs, "created", name, 1) })
		if round == 1 {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			waitLog(t, logs, "file: the directory was removed or renamed", 1)
		}
	}
}

func TestPollChangesAsInotify(t *testing.T) {
	dir := t.TempDir()
	mk := func(n string) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"keep", "gone", "moved", "replaced", "grown", "mode"} {
		mk(n)
	}
	prev, err := scanDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Files are created before any is removed: a file system may give a new file the inode
	// of one removed, which a scan cannot tell from a rename.
	mk("new")
	mk("replacement")
	must(os.Rename(filepath.Join(dir, "replacement"), filepath.Join(dir, "replaced")))
	must(os.Remove(filepath.Join(dir, "gone")))
	must(os.Rename(filepath.Join(dir, "moved"), filepath.Join(dir, "moved-to")))
	must(os.WriteFile(filepath.Join(dir, "grown"), []byte("grown and more"), 0o644))
	must(os.Chmod(filepath.Join(dir, "mode"), 0o600))
	cur, err := scanDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range pollChanges(dir, prev, cur) {
		got = append(got, filepath.Base(c.name)+" "+c.op.String())
	}
	want := "gone REMOVE, grown WRITE, mode CHMOD, moved RENAME, moved-to CREATE, new CREATE, replaced CREATE"
	if strings.Join(got, ", ") != want {
		t.Errorf("changes %q, want %q", strings.Join(got, ", "), want)
	}
}

func TestCheckFile(t *testing.T) {
	cases := []struct {
		name, fields string
		want         []string // substrings of the error; nil means valid
		notSupported bool
	}{
		{"path", "watchPathConfig: {directory: /d/, path: x.txt}\n      eventType: CREATE", nil, false},
		{"regexp", "watchPathConfig: {directory: /d, pathRegexp: '.*'}\n      eventType: CHMOD\n      polling: true", nil, false},
		{"event type", "watchPathConfig: {directory: /d, path: x}\n      eventType: create", []string{`eventType: "create"; expected one of CREATE, WRITE, REMOVE, RENAME, CHMOD`}, false},
		{"no directory", "watchPathConfig: {path: x}\n      eventType: CREATE", []string{"watchPathConfig.directory: missing"}, false},
		{"relative directory", "watchPathConfig: {directory: d, path: x}\n      eventType: CREATE", []string{`watchPathConfig.directory: "d"; expected an absolute path`}, false},
		{"neither", "watchPathConfig: {directory: /d}\n      eventType: CREATE", []string{"path, watchPathConfig.pathRegexp: neither is set"}, false},
		{"both", "watchPathConfig: {directory: /d, path: x, pathRegexp: y}\n      eventType: CREATE", []string{"both are set"}, false},
		{"nested path", "watchPathConfig: {directory: /d, path: a/x}\n      eventType: CREATE", []string{`watchPathConfig.path: "a/x"; expected the name of a file directly in the directory`}, false},
		{"bad regexp", "watchPathConfig: {directory: /d, pathRegexp: '('}\n      eventType: CREATE", []string{`watchPathConfig.pathRegexp: "("`, "missing closing )"}, false},
		{"filter", "watchPathConfig: {directory: /d, path: x}\n      eventType: CREATE\n      filter: {expression: 'name == \"x\"'}", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(parseEventSources(t, "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: f\nspec:\n  file:\n    ev:\n      "+c.fields+"\n")[0])
			if c.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range append(c.want, "spec.file.ev") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if got := errors.Is(err, api.ErrNotSupported); got != c.notSupported {
				t.Errorf("errors.Is(ErrNotSupported) = %v, want %v", got, c.notSupported)
			}
		})
	}
}

// TestFileAndOtherNewTypesLoadStrictly: the typed specs of file, resource, bitbucket,
// bitbucketserver, stripe and slack refuse unknown fields, naming them, as every typed spec does.
func TestFileAndOtherNewTypesLoadStrictly(t *testing.T) {
	for typ, fields := range map[string]string{
		"file":            "watchPathConfig: {dir: /d}",
		"resource":        "filter: {label: []}",
		"bitbucket":       "auth: {token: {name: a, key: b}}",
		"bitbucketserver": "repositories: [{project: P}]",
		"stripe":          "namespace: argo-events",
		"slack":           "signingSecrets: {name: a, key: b}",
	} {
		docs := api.Parse("t.yaml", []byte("apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: x\nspec:\n  "+typ+":\n    ev:\n      "+fields+"\n"))
		if len(docs) != 1 || docs[0].Err == nil || !strings.Contains(docs[0].Err.Error(), "spec."+typ+".ev.") || !strings.Contains(docs[0].Err.Error(), "unknown field") {
			t.Errorf("%s: %+v; want an unknown field error naming its path", typ, docs)
		}
	}
}
