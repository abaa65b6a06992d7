package topology

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
)

func TestNewValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Opt
		want []string // substrings of the error
	}{
		{"empty prefix", []Opt{Prefix("")}, []string{"Prefix", `""`, "empty"}},
		{"space in prefix", []Opt{Prefix("my events")}, []string{"Prefix", `"my events"`, `' '`}},
		{"slash in prefix", []Opt{Prefix("a/b")}, []string{"Prefix", `"a/b"`, "[a-zA-Z0-9._-]"}},
		{"non-ascii prefix", []Opt{Prefix("évents")}, []string{"Prefix", `"évents"`}},
		{"long prefix", []Opt{Prefix(strings.Repeat("p", 241))}, []string{"Prefix", "241 characters", "at most 240"}},
		{"zero partitions", []Opt{Partitions(0)}, []string{"Partitions 0", "at least 1"}},
		{"negative partitions", []Opt{Partitions(-4)}, []string{"Partitions -4"}},
		{"zero rf", []Opt{ReplicationFactor(0)}, []string{"ReplicationFactor 0", "-1"}},
		{"rf -2", []Opt{ReplicationFactor(-2)}, []string{"ReplicationFactor -2"}},
		// Options apply in order, validation happens once at the end.
		{"later option wins", []Opt{Partitions(3), Partitions(0)}, []string{"Partitions 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo, err := New(tc.opts...)
			if topo != nil || !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("New = %v, %v; want nil and ErrInvalidOption", topo, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	for _, opts := range [][]Opt{
		nil,
		{Prefix("team-a_prod.kevents"), Partitions(1), ReplicationFactor(3)},
		{Prefix(strings.Repeat("p", 240))},
		{Partitions(0), Partitions(5)}, // a bad value overridden is fine
	} {
		if _, err := New(opts...); err != nil {
			t.Errorf("New: %v", err)
		}
	}
}

func TestNames(t *testing.T) {
	d := mustNew(t)
	for got, want := range map[string]string{
		d.Prefix():                              "kevents",
		d.SourceTopic("", "webhook"):            "kevents.src.default.webhook",
		d.SourceTopic("prod", "calendar.daily"): "kevents.src.prod.calendar.daily",
		d.Matches():                             "kevents.matches",
		d.State():                               "kevents.state",
		d.Commands():                            "kevents.commands",
		d.Executed():                            "kevents.executed",
		d.DLQ():                                 "kevents.dlq",
		d.Sources():                             "kevents.sources",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	p := mustNew(t, Prefix("acme"))
	if got := p.Matches(); got != "acme.matches" {
		t.Errorf("Matches with prefix acme = %q", got)
	}
	if got := p.SourceTopic("ns", "es"); got != "acme.src.ns.es" {
		t.Errorf("SourceTopic with prefix acme = %q", got)
	}
}

func TestTopics(t *testing.T) {
	topo := mustNew(t, Partitions(4), ReplicationFactor(2))
	src := topo.SourceTopic("ns", "webhook")
	specs := topo.Topics(src, src, topo.Matches())
	want := []string{topo.Matches(), topo.State(), topo.Commands(), topo.Executed(), topo.DLQ(), topo.Sources(), src}
	if len(specs) != len(want) {
		t.Fatalf("got %d specs, want %d: %+v", len(specs), len(want), specs)
	}
	byName := make(map[string]TopicSpec)
	for i, s := range specs {
		if s.Name != want[i] {
			t.Errorf("spec %d is %q, want %q", i, s.Name, want[i])
		}
		if s.ReplicationFactor != 2 {
			t.Errorf("%s: replication factor %d, want 2", s.Name, s.ReplicationFactor)
		}
		if s.Purpose == "" {
			t.Errorf("%s: no purpose", s.Name)
		}
		byName[s.Name] = s
	}
	for name, n := range map[string]int32{topo.Matches(): 4, topo.State(): 4, topo.Commands(): 4, topo.Executed(): 4, topo.DLQ(): 4, src: 4, topo.Sources(): 4} {
		if got := byName[name].Partitions; got != n {
			t.Errorf("%s: %d partitions, want %d", name, got, n)
		}
	}
	if got := mustNew(t).Topics()[5]; got.Name != "kevents.sources" || got.Partitions != 6 {
		t.Errorf("default sources spec = %s with %d partitions, want 6", got.Name, got.Partitions)
	}
	if p := byName[src].Purpose; !strings.Contains(p, "ns/webhook") {
		t.Errorf("source purpose %q does not name ns/webhook", p)
	}

	// Callers get copies.
	specs[0].Configs["retention.ms"] = "1"
	if got := topo.Topics()[0].Configs["retention.ms"]; got == "1" {
		t.Error("Topics shares its config maps between calls")
	}
}

// wantConfigs are the configs each kind of topic must carry, written out
// here rather than taken from Topics so the test checks the values.
var (
	wantDelete7d = map[string]string{"cleanup.policy": "delete", "retention.ms": "604800000"}
	wantCompact  = map[string]string{"cleanup.policy": "compact", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.1"}
	wantExecuted = map[string]string{"cleanup.policy": "compact,delete", "retention.ms": "1209600000", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.1"}
	wantDLQ      = map[string]string{"cleanup.policy": "delete", "retention.ms": "2592000000"}
)

func TestApplyCreatesAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	adm := newBroker(t)
	topo := mustNew(t)
	srcs := []string{topo.SourceTopic("", "webhook"), topo.SourceTopic("prod", "calendar")}

	results, err := topo.Apply(ctx, adm, srcs...)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(results) != 8 {
		t.Fatalf("Apply returned %d results, want 8: %v", len(results), results)
	}
	for _, r := range results {
		if !r.Created || r.Err != nil || len(r.Altered) > 0 {
			t.Errorf("first Apply: %v; want created", r)
		}
	}

	want := map[string]struct {
		partitions int
		configs    map[string]string
	}{
		"kevents.matches":             {12, wantDelete7d},
		"kevents.state":               {12, wantCompact},
		"kevents.commands":            {12, wantDelete7d},
		"kevents.executed":            {12, wantExecuted},
		"kevents.dlq":                 {12, wantDLQ},
		"kevents.sources":             {6, wantCompact},
		"kevents.src.default.webhook": {12, wantDelete7d},
		"kevents.src.prod.calendar":   {12, wantDelete7d},
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	// A plain ListTopics answers from the client's metadata cache, so this
	// also checks that Apply left the cache current.
	tds, err := adm.ListTopics(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		if got := len(tds[name].Partitions); got != w.partitions {
			t.Errorf("%s: %d partitions, want %d", name, got, w.partitions)
		}
		rc, err := rcs.On(name, nil)
		if err != nil || rc.Err != nil {
			t.Fatalf("%s: configs: %v %v", name, err, rc.Err)
		}
		for k, v := range w.configs {
			if got := configValue(rc, k); got != v {
				t.Errorf("%s: %s = %q, want %q", name, k, got, v)
			}
		}
	}

	again, err := topo.Apply(ctx, adm, srcs...)
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	for _, r := range again {
		if r.Created || r.Err != nil || len(r.Altered) > 0 || r.Partitions != int32(want[r.Topic].partitions) {
			t.Errorf("second Apply: %v; want existed, unchanged", r)
		}
	}
}

func TestApplyConcurrent(t *testing.T) {
	ctx := context.Background()
	adm := newBroker(t)
	topo := mustNew(t, Partitions(3))
	const n = 4
	type out struct {
		rs  []ApplyResult
		err error
	}
	ch := make(chan out, n)
	for range n {
		go func() {
			rs, err := topo.Apply(ctx, adm)
			ch <- out{rs, err}
		}()
	}
	created := make(map[string]int)
	for range n {
		o := <-ch
		if o.err != nil {
			t.Errorf("concurrent Apply: %v", o.err)
		}
		for _, r := range o.rs {
			if r.Created {
				created[r.Topic]++
			}
		}
	}
	for _, s := range topo.Topics() {
		if created[s.Name] != 1 {
			t.Errorf("%s created %d times", s.Name, created[s.Name])
		}
	}
}

func TestApplyAltersConfigs(t *testing.T) {
	ctx := context.Background()
	c, adm := newCluster(t)
	topo := mustNew(t)
	// Someone made state by hand as a plain delete topic, and matches with
	// an extra config of their own that Apply must keep.
	if err := c.CreateTopic(topo.State(), 12, map[string]string{"cleanup.policy": "delete", "retention.ms": "1000"}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(topo.Matches(), 12, map[string]string{"retention.ms": "86400000", "max.message.bytes": "4194304", "compression.type": "zstd"}); err != nil {
		t.Fatal(err)
	}

	results, err := topo.Apply(ctx, adm)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	byName := make(map[string]ApplyResult)
	for _, r := range results {
		byName[r.Topic] = r
	}
	state := byName[topo.State()]
	if state.Created || len(state.Altered) != 3 {
		t.Fatalf("state: %v; want existed with 3 configs set", state)
	}
	if c := state.Altered[0]; c.Name != "cleanup.policy" || c.Old != "delete" || c.New != "compact" {
		t.Errorf("state change %+v; want cleanup.policy delete -> compact", c)
	}
	if s := state.String(); !strings.Contains(s, "existed, set cleanup.policy delete -> compact") {
		t.Errorf("String() = %q", s)
	}
	matches := byName[topo.Matches()]
	// cleanup.policy was unset, and the broker's default (delete) is what
	// the spec wants, so only retention.ms needs setting.
	if len(matches.Altered) != 1 || matches.Altered[0] != (ConfigChange{"retention.ms", "86400000", "604800000"}) {
		t.Errorf("matches: %v; want only retention.ms set", matches)
	}

	rcs, err := adm.DescribeTopicConfigs(ctx, topo.State(), topo.Matches())
	if err != nil {
		t.Fatal(err)
	}
	st, _ := rcs.On(topo.State(), nil)
	for k, v := range wantCompact {
		if got := configValue(st, k); got != v {
			t.Errorf("state: %s = %q after Apply, want %q", k, got, v)
		}
	}
	m, _ := rcs.On(topo.Matches(), nil)
	if got := configValue(m, "compression.type"); got != "zstd" {
		t.Errorf("matches: Apply changed compression.type, a config it does not own, to %q", got)
	}

	again, err := topo.Apply(ctx, adm)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range again {
		if len(r.Altered) > 0 {
			t.Errorf("second Apply altered %v", r)
		}
	}
}

func TestApplyTooFewPartitions(t *testing.T) {
	ctx := context.Background()
	c, adm := newCluster(t)
	topo := mustNew(t)
	if err := c.CreateTopic(topo.Commands(), 3, nil); err != nil {
		t.Fatal(err)
	}

	results, err := topo.Apply(ctx, adm)
	if !errors.Is(err, ErrTooFewPartitions) {
		t.Fatalf("Apply error %v; want ErrTooFewPartitions", err)
	}
	if errors.Is(err, ErrNotCoPartitioned) {
		t.Errorf("Apply error %v: executed should have been created with commands' 3 partitions", err)
	}
	if w := `"kevents.commands" has 3 partitions, want 12`; !strings.Contains(err.Error(), w) {
		t.Errorf("error %q does not say %q", err, w)
	}
	for _, r := range results {
		switch r.Topic {
		case topo.Commands():
			if r.Created || r.Partitions != 3 || !errors.Is(r.Err, ErrTooFewPartitions) {
				t.Errorf("commands: %v", r)
			}
		case topo.Executed():
			if !r.Created || r.Partitions != 3 || r.Err != nil {
				t.Errorf("executed: %v; want created with its partner's 3 partitions", r)
			}
		default:
			if !r.Created || r.Err != nil {
				t.Errorf("%v; want created", r)
			}
		}
	}
	tds, err := adm.ListTopics(ctx, topo.Commands())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tds[topo.Commands()].Partitions); n != 3 {
		t.Errorf("Apply changed commands to %d partitions", n)
	}
}

func TestDescribeMissingThenApplied(t *testing.T) {
	ctx := context.Background()
	adm := newBroker(t)
	topo := mustNew(t)
	src := topo.SourceTopic("ns", "webhook")

	rep, err := topo.Describe(ctx, adm, src)
	if !errors.Is(err, ErrMissingTopic) {
		t.Fatalf("Describe before Apply: %v; want ErrMissingTopic", err)
	}
	if errors.Is(err, ErrNotCoPartitioned) {
		t.Errorf("missing topics reported as not co-partitioned: %v", err)
	}
	for _, name := range []string{topo.Matches(), topo.State(), topo.Sources(), src} {
		if !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	for _, st := range rep.Topics {
		if st.Exists || len(st.Problems) != 1 || st.Problems[0] != "missing" {
			t.Errorf("%s: %+v; want missing", st.Spec.Name, st)
		}
	}

	if _, err := topo.Apply(ctx, adm, src); err != nil {
		t.Fatal(err)
	}
	// Same client, right away: must not be answered from stale metadata.
	rep, err = topo.Describe(ctx, adm, src)
	if err != nil {
		t.Fatalf("Describe after Apply: %v", err)
	}
	for _, st := range rep.Topics {
		if !st.Exists || len(st.Problems) > 0 || st.ReplicationFactor != 1 {
			t.Errorf("%s: %+v; want as specified", st.Spec.Name, st)
		}
	}
	var b strings.Builder
	if err := rep.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	for _, w := range []string{
		"TOPIC", "RETENTION",
		"kevents.state  ", "compact ",
		"kevents.dlq", "30d",
		"kevents.executed", "compact,delete", "14d",
		"kevents.src.ns.webhook", "7d", "ok",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("table does not contain %q", w)
		}
	}
	if lines := strings.Count(out, "\n"); lines != 8 {
		t.Errorf("table has %d lines, want header + 7", lines)
	}
}

func TestDescribeNotCoPartitioned(t *testing.T) {
	ctx := context.Background()
	c, adm := newCluster(t)
	topo := mustNew(t)
	if err := c.CreateTopic(topo.Matches(), 12, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(topo.State(), 4, nil); err != nil {
		t.Fatal(err)
	}

	// Apply creates the rest and fixes configs, but cannot fix the pair.
	_, err := topo.Apply(ctx, adm)
	if !errors.Is(err, ErrNotCoPartitioned) || !errors.Is(err, ErrTooFewPartitions) {
		t.Fatalf("Apply: %v; want ErrNotCoPartitioned and ErrTooFewPartitions", err)
	}

	rep, err := topo.Describe(ctx, adm)
	if !errors.Is(err, ErrNotCoPartitioned) {
		t.Fatalf("Describe: %v; want ErrNotCoPartitioned", err)
	}
	if errors.Is(err, ErrMissingTopic) {
		t.Errorf("Describe: %v; Apply created every other topic", err)
	}
	if w := `"kevents.matches" has 12 partitions and "kevents.state" has 4`; !strings.Contains(err.Error(), w) {
		t.Errorf("error %q does not say %q", err, w)
	}
	if rep == nil {
		t.Fatal("no report with the error")
	}
	for _, st := range rep.Topics {
		switch st.Spec.Name {
		case topo.State():
			if st.Partitions != 4 || !hasProblem(st, "4 partitions, want 12") || !hasProblem(st, "not co-partitioned with kevents.matches (12 partitions)") {
				t.Errorf("state: %+v", st)
			}
			if st.CleanupPolicy != "compact" {
				t.Errorf("state: cleanup.policy %q, Apply should have set compact", st.CleanupPolicy)
			}
		case topo.Matches():
			if !hasProblem(st, "not co-partitioned with kevents.state (4 partitions)") {
				t.Errorf("matches: %+v", st)
			}
		default:
			if len(st.Problems) > 0 {
				t.Errorf("%s: %v", st.Spec.Name, st.Problems)
			}
		}
	}
	var b strings.Builder
	if err := rep.Write(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "not co-partitioned with kevents.matches") {
		t.Errorf("table hides the problem:\n%s", b.String())
	}
}

func TestDescribeReportsDrift(t *testing.T) {
	ctx := context.Background()
	adm := newBroker(t)
	topo := mustNew(t, Partitions(2))
	if _, err := topo.Apply(ctx, adm); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("3600000")}}, topo.DLQ()); err != nil {
		t.Fatal(err)
	}
	rep, err := topo.Describe(ctx, adm)
	if err != nil {
		t.Fatalf("Describe: %v; config drift is not an error", err)
	}
	for _, st := range rep.Topics {
		if st.Spec.Name == topo.DLQ() && !hasProblem(st, "retention.ms is 3600000, want 2592000000") {
			t.Errorf("dlq: %+v", st)
		}
	}
	var b strings.Builder
	_ = rep.Write(&b)
	if !strings.Contains(b.String(), "1h0m0s") {
		t.Errorf("table does not show the 1h retention:\n%s", b.String())
	}
}

func TestInvalidSourceTopic(t *testing.T) {
	topo := mustNew(t)
	long := topo.SourceTopic("ns", strings.Repeat("e", 240))
	// No broker: the names must be rejected before any request.
	_, err := topo.Apply(context.Background(), nil, "bad name", long)
	if !errors.Is(err, ErrInvalidTopicName) {
		t.Fatalf("Apply: %v; want ErrInvalidTopicName", err)
	}
	for _, w := range []string{`"bad name"`, "character ' '", "at most 249"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if _, err := topo.Describe(context.Background(), nil, ".."); !errors.Is(err, ErrInvalidTopicName) {
		t.Errorf("Describe(..): %v; want ErrInvalidTopicName", err)
	}
}

func TestSameConfig(t *testing.T) {
	for _, tc := range []struct {
		k, have, want string
		same          bool
	}{
		{"cleanup.policy", "delete,compact", "compact,delete", true},
		{"cleanup.policy", "compact", "compact,delete", false},
		{"min.cleanable.dirty.ratio", "0.10", "0.1", true},
		{"retention.ms", "604800000", "604800000", true},
		{"retention.ms", "", "604800000", false},
		{"retention.ms", "86400000", "604800000", false},
	} {
		if got := sameConfig(tc.k, tc.have, tc.want); got != tc.same {
			t.Errorf("sameConfig(%s, %q, %q) = %v", tc.k, tc.have, tc.want, got)
		}
	}
}

func hasProblem(st TopicStatus, p string) bool {
	for _, q := range st.Problems {
		if q == p {
			return true
		}
	}
	return false
}

func configValue(rc kadm.ResourceConfig, key string) string {
	for _, c := range rc.Configs {
		if c.Key == key && c.Value != nil {
			return *c.Value
		}
	}
	return ""
}

func mustNew(t *testing.T, opts ...Opt) *Topology {
	t.Helper()
	topo, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}
