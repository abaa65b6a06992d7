package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Report is the state of kevents' topics in a cluster, from Describe.
type Report struct {
	Topics []TopicStatus // in Topics order
}

// TopicStatus is one topic as the cluster has it, next to its spec.
type TopicStatus struct {
	Spec              TopicSpec
	Exists            bool
	Partitions        int32
	ReplicationFactor int16
	CleanupPolicy     string // as the broker reports it
	RetentionMs       string // retention.ms as the broker reports it
	// Problems lists how the topic differs from its spec, one short phrase
	// each ("missing", "6 partitions, want 12", ...); empty if it does not.
	Problems []string
}

// Describe reports every topic of Topics(sourceTopics...) as the cluster has
// it and checks that kevents can run on it. The error joins one error
// wrapping ErrMissingTopic per missing topic and one wrapping
// ErrNotCoPartitioned per pair with different partition counts; the Report
// is returned with it. Fewer partitions than wanted and configs that differ
// from the spec are only listed as Problems: kevents runs correctly with
// them, and Apply fixes the configs.
//
// Describe returns no Report if a name is invalid (ErrInvalidTopicName) or a
// request to the cluster fails.
func (t *Topology) Describe(ctx context.Context, adm *kadm.Client, sourceTopics ...string) (*Report, error) {
	specs := t.Topics(sourceTopics...)
	if err := checkSpecs(specs); err != nil {
		return nil, err
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	have, err := listTopics(ctx, adm, names)
	if err != nil {
		return nil, err
	}
	var existing []string
	for _, n := range names {
		if _, ok := have[n]; ok {
			existing = append(existing, n)
		}
	}
	var configs map[string]map[string]string
	if len(existing) > 0 {
		if configs, err = describeConfigs(ctx, adm, existing); err != nil {
			return nil, err
		}
	}

	var (
		rep    = &Report{Topics: make([]TopicStatus, len(specs))}
		errs   []error
		counts = make(map[string]int32)
		index  = make(map[string]*TopicStatus)
	)
	for i, s := range specs {
		st := &rep.Topics[i]
		st.Spec = s
		index[s.Name] = st
		info, ok := have[s.Name]
		cfg, cok := configs[s.Name]
		if !ok || !cok { // !cok: deleted between our two requests
			st.Problems = append(st.Problems, "missing")
			errs = append(errs, fmt.Errorf("%w: %q (%s)", ErrMissingTopic, s.Name, s.Purpose))
			continue
		}
		st.Exists = true
		st.Partitions = info.partitions
		st.ReplicationFactor = info.rf
		st.CleanupPolicy = cfg["cleanup.policy"]
		st.RetentionMs = cfg["retention.ms"]
		counts[s.Name] = info.partitions

		if info.partitions < s.Partitions {
			st.Problems = append(st.Problems, fmt.Sprintf("%d partitions, want %d", info.partitions, s.Partitions))
		}
		if s.ReplicationFactor > 0 && info.rf != s.ReplicationFactor {
			st.Problems = append(st.Problems, fmt.Sprintf("replication factor %d, want %d", info.rf, s.ReplicationFactor))
		}
		for _, k := range sortedKeys(s.Configs) {
			if h, w := cfg[k], s.Configs[k]; !sameConfig(k, h, w) {
				st.Problems = append(st.Problems, fmt.Sprintf("%s is %s, want %s", k, orNone(h), w))
			}
		}
	}
	for _, p := range t.coPartitioned() {
		a, aok := counts[p[0]]
		b, bok := counts[p[1]]
		if aok && bok && a != b {
			index[p[0]].Problems = append(index[p[0]].Problems, fmt.Sprintf("not co-partitioned with %s (%d partitions)", p[1], b))
			index[p[1]].Problems = append(index[p[1]].Problems, fmt.Sprintf("not co-partitioned with %s (%d partitions)", p[0], a))
		}
	}
	errs = append(errs, t.checkPairs(counts)...)
	return rep, errors.Join(errs...)
}

// Write prints the report as a table, one topic a line:
//
//	TOPIC             PARTITIONS  RF  CLEANUP  RETENTION  STATUS  PURPOSE
//	kevents.matches   12          1   delete   7d         ok      stage 1 → join: ...
//
// RETENTION is "-" where cleanup.policy does not delete. STATUS is "ok" or
// the topic's Problems.
func (r *Report) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tRF\tCLEANUP\tRETENTION\tSTATUS\tPURPOSE")
	for _, st := range r.Topics {
		parts, rf, cleanup, retention := "-", "-", "-", "-"
		if st.Exists {
			parts = strconv.Itoa(int(st.Partitions))
			rf = strconv.Itoa(int(st.ReplicationFactor))
			cleanup = st.CleanupPolicy
			if strings.Contains(st.CleanupPolicy, "delete") {
				retention = humanMillis(st.RetentionMs)
			}
		}
		status := "ok"
		if len(st.Problems) > 0 {
			status = strings.Join(st.Problems, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", st.Spec.Name, parts, rf, cleanup, retention, status, st.Spec.Purpose)
	}
	return tw.Flush()
}

// humanMillis renders a retention.ms value: "7d", "12h", "forever".
func humanMillis(ms string) string {
	n, err := strconv.ParseInt(ms, 10, 64)
	switch {
	case err != nil:
		return ms
	case n < 0:
		return "forever"
	}
	d := time.Duration(n) * time.Millisecond
	if d >= day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}
