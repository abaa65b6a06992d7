package topology

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ApplyResult is what Apply did to one topic.
type ApplyResult struct {
	Topic      string
	Created    bool           // Apply created the topic; false: it already existed
	Partitions int32          // partitions the topic has now; 0 if unknown because of Err
	Altered    []ConfigChange // configs Apply set on an existing topic to match its spec
	Err        error          // why the topic does not match its spec; also part of Apply's error
}

// ConfigChange is one topic config Apply set.
type ConfigChange struct {
	Name string
	Old  string // value before, as the broker described it; "" if it had none
	New  string
}

// String describes the result in one line, for logs and the CLI.
func (r ApplyResult) String() string {
	var b strings.Builder
	b.WriteString(r.Topic)
	b.WriteString(": ")
	if r.Created {
		fmt.Fprintf(&b, "created, %d partitions", r.Partitions)
	} else {
		b.WriteString("existed")
	}
	for _, c := range r.Altered {
		fmt.Fprintf(&b, ", set %s %s -> %s", c.Name, orNone(c.Old), c.New)
	}
	if r.Err != nil {
		fmt.Fprintf(&b, ": %v", r.Err)
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// Apply makes the cluster hold every topic of Topics(sourceTopics...) and is
// safe to run any number of times, also concurrently (a topic someone else
// creates first counts as existing).
//
//   - A missing topic is created from its spec, except that a co-partitioned
//     topic whose partner exists takes the partner's partition count, so the
//     pair stays usable.
//   - An existing topic gets the spec's configs set where they differ
//     (an incremental alter: configs the spec does not name are kept).
//   - An existing topic with fewer partitions than its spec is left alone
//     and reported with ErrTooFewPartitions: adding partitions would move keys.
//   - A pair that ends up with different partition counts is reported with
//     ErrNotCoPartitioned.
//
// Apply returns one result per topic, in Topics order, and an error joining
// every topic's Err and any pairing error; the results are valid even then.
// It returns no results if a name is invalid (ErrInvalidTopicName, before any
// request is sent), if listing the topics or describing their configs fails,
// or if ctx ends.
func (t *Topology) Apply(ctx context.Context, adm *kadm.Client, sourceTopics ...string) ([]ApplyResult, error) {
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

	results := make([]ApplyResult, len(specs))
	partners := t.partners()
	var existing []int // indexes into specs of topics that existed
	for i, s := range specs {
		results[i].Topic = s.Name
		if _, ok := have[s.Name]; ok {
			existing = append(existing, i)
			continue
		}
		n := s.Partitions
		if p, ok := have[partners[s.Name]]; ok {
			n = p.partitions
		}
		resp, err := adm.CreateTopic(ctx, n, s.ReplicationFactor, configPtrs(s.Configs), s.Name)
		switch {
		case err == nil:
			results[i].Created = true
			results[i].Partitions = resp.NumPartitions
			if resp.NumPartitions <= 0 { // brokers before Kafka 2.4 do not say
				results[i].Partitions = n
			}
		case errors.Is(err, kerr.TopicAlreadyExists):
			existing = append(existing, i) // created by someone else since we listed
		case ctx.Err() != nil:
			return nil, fmt.Errorf("topology: creating topic %q: %w", s.Name, ctx.Err())
		default:
			results[i].Err = fmt.Errorf("topology: creating topic %q with %d partitions: %w", s.Name, n, err)
		}
	}

	if len(existing) > 0 {
		if err := t.alignExisting(ctx, adm, specs, existing, have, results); err != nil {
			return nil, err
		}
	}

	var created []string
	for _, r := range results {
		if r.Created {
			created = append(created, r.Topic)
		}
	}
	if len(created) > 0 {
		// Our first listing left "unknown topic" answers in the client's
		// metadata cache (see listTopics). Listing the new topics replaces
		// them, so other kadm calls on this client see the topics now and
		// not MetadataMinAge later. Best effort: the topics exist either way.
		_, _ = listTopics(ctx, adm, created)
	}

	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	counts := make(map[string]int32, len(results))
	for _, r := range results {
		if r.Partitions > 0 {
			counts[r.Topic] = r.Partitions
		}
	}
	errs = append(errs, t.checkPairs(counts)...)
	return results, errors.Join(errs...)
}

// alignExisting fills results for the topics that existed: their partition
// counts, ErrTooFewPartitions, and any configs set to match the spec.
func (t *Topology) alignExisting(ctx context.Context, adm *kadm.Client, specs []TopicSpec, existing []int, have map[string]topicInfo, results []ApplyResult) error {
	names := make([]string, 0, len(existing))
	var raced []string // existed only by the time we tried to create them
	for _, i := range existing {
		names = append(names, specs[i].Name)
		if _, ok := have[specs[i].Name]; !ok {
			raced = append(raced, specs[i].Name)
		}
	}
	if len(raced) > 0 {
		more, err := listTopics(ctx, adm, raced)
		if err != nil {
			return err
		}
		for k, v := range more {
			have[k] = v
		}
	}
	current, err := describeConfigs(ctx, adm, names)
	if err != nil {
		return err
	}

	for _, i := range existing {
		s, r := specs[i], &results[i]
		info, ok := have[s.Name]
		if !ok { // created and deleted again between our requests
			r.Err = fmt.Errorf("%w: %q vanished while applying", ErrMissingTopic, s.Name)
			continue
		}
		r.Partitions = info.partitions
		if info.partitions < s.Partitions {
			r.Err = tooFew(s.Name, info.partitions, s.Partitions)
		}

		cfg, ok := current[s.Name]
		if !ok {
			r.Err = errors.Join(r.Err, fmt.Errorf("%w: %q vanished while applying", ErrMissingTopic, s.Name))
			continue
		}
		var alters []kadm.AlterConfig
		var changes []ConfigChange
		for _, k := range sortedKeys(s.Configs) {
			want := s.Configs[k]
			if old := cfg[k]; !sameConfig(k, old, want) {
				alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: kadm.StringPtr(want)})
				changes = append(changes, ConfigChange{Name: k, Old: old, New: want})
			}
		}
		if len(alters) == 0 {
			continue
		}
		resps, err := adm.AlterTopicConfigs(ctx, alters, s.Name)
		if err == nil {
			var resp kadm.AlterConfigsResponse
			if resp, err = resps.On(s.Name, nil); err == nil {
				err = resp.Err
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("topology: altering configs of topic %q: %w", s.Name, ctx.Err())
			}
			r.Err = errors.Join(r.Err, fmt.Errorf("topology: setting configs %s of topic %q: %w", changeList(changes), s.Name, err))
			continue
		}
		r.Altered = changes
	}
	return nil
}

func tooFew(topic string, have, want int32) error {
	return fmt.Errorf("%w: topic %q has %d partitions, want %d; kevents does not add partitions because that moves keys to other partitions: recreate the topic or configure %d partitions",
		ErrTooFewPartitions, topic, have, want, have)
}

// checkPairs returns an ErrNotCoPartitioned error for each pair whose
// partition counts both appear in counts and differ.
func (t *Topology) checkPairs(counts map[string]int32) []error {
	var errs []error
	for _, p := range t.coPartitioned() {
		a, aok := counts[p[0]]
		b, bok := counts[p[1]]
		if aok && bok && a != b {
			errs = append(errs, fmt.Errorf("%w: %q has %d partitions and %q has %d; partition i of one must pair with partition i of the other",
				ErrNotCoPartitioned, p[0], a, p[1], b))
		}
	}
	return errs
}

func changeList(cs []ConfigChange) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Name + "=" + c.New
	}
	return strings.Join(parts, ",")
}

// topicInfo is what metadata tells about one existing topic.
type topicInfo struct {
	partitions int32
	rf         int16
}

// listTopics returns the topics among names that exist. It asks the cluster
// every time: kadm.ListTopics otherwise answers from the client's metadata
// cache, which keeps even "unknown topic" answers for up to MetadataMinAge
// (5s by default), so a Describe right after an Apply on the same client
// would report the new topics missing. Asking for authorized operations is
// how kadm is told to bypass its cache.
//
// A topic that exists but is briefly without a leader (as right after its
// creation) is asked for again, for up to about a second.
func listTopics(ctx context.Context, adm *kadm.Client, names []string) (map[string]topicInfo, error) {
	have := make(map[string]topicInfo, len(names))
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		tds, err := adm.ListTopics(kadm.WithAuthorizedOps(ctx), names...)
		if err != nil {
			return nil, fmt.Errorf("topology: listing topics: %w", err)
		}
		var retry []string
		for _, name := range names {
			td, ok := tds[name]
			if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
				continue
			}
			if td.Err != nil {
				if kerr.IsRetriable(td.Err) && attempt < 5 {
					retry = append(retry, name)
					continue
				}
				return nil, fmt.Errorf("topology: listing topic %q: %w", name, td.Err)
			}
			info := topicInfo{partitions: int32(len(td.Partitions))}
			if p, ok := td.Partitions[0]; ok {
				info.rf = int16(len(p.Replicas))
			}
			have[name] = info
		}
		if len(retry) == 0 {
			return have, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("topology: listing topics: %w", ctx.Err())
		case <-time.After(backoff):
		}
		backoff *= 2
		names = retry
	}
}

// describeConfigs returns the current config values of each named topic
// that exists.
func describeConfigs(ctx context.Context, adm *kadm.Client, names []string) (map[string]map[string]string, error) {
	rcs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("topology: describing configs of %s: %w", strings.Join(names, ", "), err)
	}
	out := make(map[string]map[string]string, len(rcs))
	for _, rc := range rcs {
		if errors.Is(rc.Err, kerr.UnknownTopicOrPartition) {
			continue
		}
		if rc.Err != nil {
			return nil, fmt.Errorf("topology: describing configs of topic %q: %w", rc.Name, rc.Err)
		}
		m := make(map[string]string, len(rc.Configs))
		for _, c := range rc.Configs {
			if c.Value != nil {
				m[c.Key] = *c.Value
			}
		}
		out[rc.Name] = m
	}
	return out, nil
}

// sameConfig reports whether the broker's value have already means want:
// list values compare as sets ("delete,compact" is "compact,delete") and
// numbers by value ("0.10" is "0.1").
func sameConfig(key, have, want string) bool {
	have, want = strings.TrimSpace(have), strings.TrimSpace(want)
	if have == want {
		return true
	}
	if key == "cleanup.policy" {
		return slices.Equal(listSet(have), listSet(want))
	}
	h, herr := strconv.ParseFloat(have, 64)
	w, werr := strconv.ParseFloat(want, 64)
	return herr == nil && werr == nil && h == w
}

func listSet(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func configPtrs(m map[string]string) map[string]*string {
	out := make(map[string]*string, len(m))
	for k, v := range m {
		out[k] = kadm.StringPtr(v)
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
