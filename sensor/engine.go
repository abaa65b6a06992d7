package sensor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/cloudevent"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
	"github.com/kevents/kevents/trigger"
)

// Config configures a sensor pool member.
type Config struct {
	Kafka    kclient.Config
	Topology *topology.Topology
	Sensors  []*api.Sensor
	// Member names this member; it must be stable across restarts and unique in the pool.
	// It is the transactional id, so a restarted member fences its previous incarnation and
	// aborts its open transaction at once instead of after the transaction timeout, and the
	// group instance id, so a restarted member takes its partitions back without waiting for
	// the old one's session to time out.
	Member  string
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// GroupID is the consumer group of the sensor pool.
func GroupID(t *topology.Topology) string { return t.Prefix() + ".sensor" }

// index maps (source topic, event name) to the dependencies waiting for it, so that each event
// is read once by the pool whatever the number of sensors.
type index map[string]map[string][]depRef

type depRef struct {
	sensor *compiled
	dep    *dependency
}

func buildIndex(t *topology.Topology, sensors []*api.Sensor) (index, error) {
	idx := index{}
	var errs []error
	for _, s := range sensors {
		c, err := compile(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, d := range c.deps {
			topic := t.SourceTopic(c.namespace, d.EventSourceName)
			if idx[topic] == nil {
				idx[topic] = map[string][]depRef{}
			}
			idx[topic][d.EventName] = append(idx[topic][d.EventName], depRef{sensor: c, dep: d})
		}
	}
	return idx, errors.Join(errs...)
}

// SourceTopics returns the source topics the given sensors read.
func SourceTopics(t *topology.Topology, sensors []*api.Sensor) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range sensors {
		for _, d := range s.Spec.Dependencies {
			topic := t.SourceTopic(namespaceOf(s.Metadata), d.EventSourceName)
			if !seen[topic] {
				seen[topic] = true
				out = append(out, topic)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Run consumes the source topics of the loaded sensors as a member of the sensor pool until ctx
// ends.
//
// Contract: for each polled batch, every command the batch produces and the batch's input
// offsets are committed in one Kafka transaction; a crash or rebalance at any point neither
// loses nor duplicates a command for read_committed readers.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Member == "" {
		return errors.New("sensor: member name is empty; expected a stable name unique in the pool")
	}
	idx, err := buildIndex(cfg.Topology, cfg.Sensors)
	if err != nil {
		return err
	}
	topics := make([]string, 0, len(idx))
	for t := range idx {
		topics = append(topics, t)
	}
	if len(topics) == 0 {
		cfg.Logger.Info("sensor: no sensors loaded; nothing to consume")
		cfg.Metrics.AddReadyCheck("sensor", func(context.Context) error { return nil })
		<-ctx.Done()
		return nil
	}
	sort.Strings(topics)
	sess, err := kgo.NewGroupTransactSession(cfg.Kafka.Opts(
		kgo.TransactionalID(cfg.Topology.Prefix()+".sensor."+cfg.Member),
		kgo.TransactionTimeout(10*time.Second),
		kgo.ConsumerGroup(GroupID(cfg.Topology)),
		kgo.InstanceID(cfg.Member),
		kgo.SessionTimeout(kclient.SessionTimeout),
		kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(topology.MaxRecordBytes),
	)...)
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	defer sess.Close()
	cfg.Metrics.AddReadyCheck("sensor", sess.Client().Ping)
	cfg.Logger.Info("sensor: consuming", "topics", topics, "group", GroupID(cfg.Topology), "member", cfg.Member)

	for {
		fetches := sess.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		for _, e := range fetches.Errors() {
			cfg.Logger.Warn("sensor: fetch", "topic", e.Topic, "partition", e.Partition, "err", e.Err)
		}
		if fetches.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("sensor: begin transaction: %w", err)
		}
		var (
			emitted    []*trigger.Command
			mu         sync.Mutex
			produceErr error
		)
		// Produce the whole batch asynchronously and flush once: a round trip per batch, not
		// per command. A failed record makes the transaction abort, and the batch runs again.
		fetches.EachRecord(func(r *kgo.Record) {
			for _, cmd := range process(cfg, idx, r) {
				rec, err := commandRecord(cfg.Topology, cmd)
				if err != nil {
					mu.Lock()
					produceErr = errors.Join(produceErr, err)
					mu.Unlock()
					continue
				}
				emitted = append(emitted, cmd)
				sess.Produce(ctx, rec, func(_ *kgo.Record, err error) {
					if err != nil {
						mu.Lock()
						produceErr = errors.Join(produceErr, err)
						mu.Unlock()
					}
				})
			}
		})
		if err := sess.Client().Flush(ctx); err != nil && ctx.Err() == nil {
			mu.Lock()
			produceErr = errors.Join(produceErr, err)
			mu.Unlock()
		}
		mu.Lock()
		commit := produceErr == nil
		mu.Unlock()
		committed, err := sess.End(ctx, kgo.TransactionEndTry(commit))
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			cfg.Logger.Warn("sensor: transaction not committed; the batch will be processed again", "err", err)
		case !committed:
			cfg.Logger.Warn("sensor: transaction aborted; the batch will be processed again", "produceErr", produceErr)
		default:
			for _, cmd := range emitted {
				cfg.Metrics.CommandsEmitted.WithLabelValues(cmd.Sensor, cmd.Trigger).Inc()
			}
		}
	}
}

// process matches one record against the index and returns the commands it fires. A record
// that is not a CloudEvent, or an event no filter passes, fires nothing.
func process(cfg Config, idx index, r *kgo.Record) []*trigger.Command {
	byEvent := idx[r.Topic]
	if byEvent == nil {
		return nil
	}
	e, err := cloudevent.FromRecord(r)
	if err != nil {
		cfg.Logger.Warn("sensor: skipping a record that is not a CloudEvent", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return nil
	}
	var out []*trigger.Command
	for _, ref := range byEvent[e.Subject()] {
		ok, err := matchData(ref.dep.data, ref.dep.dataOr, e.Data())
		if err != nil || !ok {
			cfg.Logger.Debug("sensor: event filtered out", "sensor", ref.sensor.name, "dependency", ref.dep.Name, "eventID", e.ID(), "err", err)
			continue
		}
		cfg.Metrics.EventsMatched.WithLabelValues(ref.sensor.name, ref.dep.Name).Inc()
		events := map[string]*cloudevents.Event{ref.dep.Name: e}
		for _, t := range ref.dep.triggers {
			cmd, err := render(ref.sensor, t, events)
			if err != nil {
				cfg.Logger.Error("sensor: cannot render trigger; not fired", "sensor", ref.sensor.name, "trigger", t.name, "eventID", e.ID(), "err", err)
				continue
			}
			out = append(out, cmd)
		}
	}
	return out
}

func render(s *compiled, t *compiledTrigger, events map[string]*cloudevents.Event) (*trigger.Command, error) {
	p := params(events)
	tmpl := *t.def.Template
	if len(t.def.Parameters) > 0 {
		doc, err := json.Marshal(tmpl)
		if err != nil {
			return nil, err
		}
		if doc, err = p.Apply(doc, t.def.Parameters); err != nil {
			return nil, err
		}
		tmpl = api.TriggerTemplate{}
		if err := json.Unmarshal(doc, &tmpl); err != nil {
			return nil, fmt.Errorf("parameters: result is not a trigger template: %w", err)
		}
	}
	typ, spec, err := trigger.Render(trigger.RenderInput{Template: &tmpl, Events: events, Params: p})
	if err != nil {
		return nil, err
	}
	refs := make([]trigger.EventRef, 0, len(events))
	for dep, e := range events {
		refs = append(refs, trigger.EventRef{Dependency: dep, ID: e.ID(), EventSource: e.Source(), EventName: e.Subject(), Time: e.Time()})
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Dependency < refs[j].Dependency })
	return &trigger.Command{
		ID:        trigger.CommandID(s.namespace, s.name, t.name, refs),
		Namespace: s.namespace, Sensor: s.name, Trigger: t.name, Type: typ,
		Events: refs, Spec: spec, Retry: t.retry, CreatedAt: time.Now().UTC(),
	}, nil
}

func commandRecord(t *topology.Topology, cmd *trigger.Command) (*kgo.Record, error) {
	v, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", cmd.ID, err)
	}
	return &kgo.Record{Topic: t.Commands(), Key: []byte(cmd.Key()), Value: v,
		Headers: []kgo.RecordHeader{{Key: "kevents-command-id", Value: []byte(cmd.ID)}}}, nil
}
