package sensor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"github.com/twmb/franz-go/pkg/kadm"
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
	// Updates delivers a new set of sensors to run instead of the current one (definitions
	// changed). The topics they read must exist. Nil: the sensors never change.
	Updates <-chan []*api.Sensor
}

// GroupID is the consumer group of the sensor pool.
func GroupID(t *topology.Topology) string { return t.Prefix() + ".sensor" }

// index maps (source topic, event name) to the dependencies waiting for it, so that each event
// is read once by the pool whatever the number of sensors; and join keys' triggers by name.
type index struct {
	byEvent  map[string]map[string][]depRef
	triggers map[string]triggerRef // by joinKey without correlation
	joins    bool                  // some trigger needs several events: matches and join state are used
}

type depRef struct {
	sensor *compiled
	dep    *dependency
	// matched counts the events that passed the dependency's filters, looked up once: a
	// labelled lookup per event was a twentieth of stage 1.
	matched prometheus.Counter
}

type triggerRef struct {
	sensor  *compiled
	trigger *compiledTrigger
}

func buildIndex(t *topology.Topology, m *metrics.Metrics, sensors []*api.Sensor) (*index, error) {
	idx := &index{byEvent: map[string]map[string][]depRef{}, triggers: map[string]triggerRef{}}
	var errs []error
	for _, s := range sensors {
		c, err := compile(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, d := range c.deps {
			topic := t.SourceTopic(c.namespace, d.EventSourceName)
			if idx.byEvent[topic] == nil {
				idx.byEvent[topic] = map[string][]depRef{}
			}
			idx.byEvent[topic][d.EventName] = append(idx.byEvent[topic][d.EventName],
				depRef{sensor: c, dep: d, matched: m.EventsMatched.WithLabelValues(c.name, d.Name)})
			idx.joins = idx.joins || len(d.joins) > 0
		}
		for _, ct := range c.triggers {
			idx.triggers[joinKey(c.namespace, c.name, ct.name, "")] = triggerRef{sensor: c, trigger: ct}
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

// Run consumes the source topics of the loaded sensors and the matches topic as a member of
// the sensor pool until ctx ends.
//
// Stage 1 matches source events against the index: a trigger that one event satisfies gets its
// command at once; events of triggers that need several dependencies go to the matches topic,
// keyed by join key. Stage 2 reads the matches partitions this member owns, restoring the state
// topic's partition of the same number first, and keeps the latest event per dependency until
// the trigger's condition holds.
//
// Contract: for each polled batch, every output (commands, matches, state) and the batch's input
// offsets are committed in one Kafka transaction; a crash or rebalance at any point neither
// loses nor duplicates a command for read_committed readers.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Member == "" {
		return errors.New("sensor: member name is empty; expected a stable name unique in the pool")
	}
	idx, err := buildIndex(cfg.Topology, cfg.Metrics, cfg.Sensors)
	if err != nil {
		return err
	}
	topics := idx.topics(cfg.Topology)
	store := newJoinStore()
	dropMatches := func(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
		store.drop(parts[cfg.Topology.Matches()])
	}
	ownMatches := func(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
		store.own(parts[cfg.Topology.Matches()])
	}
	sess, err := kgo.NewGroupTransactSession(cfg.Kafka.Opts(
		kgo.TransactionalID(cfg.Topology.Prefix()+".sensor."+cfg.Member),
		kgo.TransactionTimeout(10*time.Second),
		kgo.ConsumerGroup(GroupID(cfg.Topology)),
		kgo.InstanceID(cfg.Member),
		kgo.SessionTimeout(kclient.SessionTimeout),
		kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.OnPartitionsAssigned(ownMatches),
		kgo.OnPartitionsRevoked(dropMatches),
		kgo.OnPartitionsLost(dropMatches),
		// State and match records carry their partition (see statePartitioner).
		kgo.RecordPartitioner(statePartitioner{state: cfg.Topology.State(), matches: cfg.Topology.Matches()}),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(topology.MaxRecordBytes),
	)...)
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	defer sess.Close()
	cfg.Metrics.AddReadyCheck("sensor", sess.Client().Ping)
	cfg.Logger.Info("sensor: consuming", "topics", topics, "group", GroupID(cfg.Topology), "member", cfg.Member)
	matchParts, err := topicPartitions(ctx, sess.Client(), cfg.Topology.Matches(), cfg.Logger)
	if err != nil {
		return nil
	}
	st := &stage{cfg: cfg, idx: idx, store: store, matchParts: matchParts}
	commands, state := cfg.Topology.Commands(), cfg.Topology.State()

	for {
		select {
		case sensors := <-cfg.Updates:
			st.reload(sess.Client(), sensors)
		default:
		}
		// Polls time out so that an idle member still expires join keys past their window and
		// picks up changed definitions.
		pollCtx, cancel := context.WithTimeout(ctx, pollTimeout)
		fetches := sess.PollRecords(pollCtx, maxBatchRecords)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		for _, e := range fetches.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) {
				cfg.Logger.Warn("sensor: fetch", "topic", e.Topic, "partition", e.Partition, "err", e.Err)
			}
		}
		if err := st.restoreOwned(ctx); err != nil && ctx.Err() == nil {
			cfg.Logger.Warn("sensor: restoring join state; the batch will try again", "err", err)
		}
		// A poll without records still opens a transaction when the sweep is due, for the
		// tombstones of expired join keys.
		if fetches.NumRecords() == 0 && time.Since(st.lastSweep) < sweepInterval {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("sensor: begin transaction: %w", err)
		}
		var (
			mu         sync.Mutex
			produceErr error
		)
		fail := func(err error) {
			mu.Lock()
			produceErr = errors.Join(produceErr, err)
			mu.Unlock()
		}
		// Outputs are produced as the batch makes them, so that the client sends while the
		// rest is matched and joined, and flushed once: a round trip per batch, not per output.
		// Any failure aborts the transaction, and the batch runs again.
		// One promise for the batch, not a closure per record.
		promise := func(rec *kgo.Record, err error) {
			if err != nil {
				fail(err)
			}
			// Every record of these two topics comes from newPooledRecord (commandRecord,
			// stateRecord), and the client is done with it.
			if rec.Topic == commands || rec.Topic == state {
				recyclePooledRecord(rec)
			}
		}
		emit := func(rec *kgo.Record) { sess.Produce(ctx, rec, promise) }
		emitted, batchErr := st.batch(ctx, fetches, emit)
		if batchErr != nil {
			fail(batchErr)
		}
		if err := sess.Client().Flush(ctx); err != nil && ctx.Err() == nil {
			fail(err)
		}
		mu.Lock()
		commit := produceErr == nil
		mu.Unlock()
		committed, err := sess.End(ctx, kgo.TransactionEndTry(commit))
		switch {
		case err != nil:
			store.abort()
			if ctx.Err() != nil {
				return nil
			}
			cfg.Logger.Warn("sensor: transaction not committed; the batch will be processed again", "err", err)
		case !committed:
			store.abort()
			cfg.Logger.Warn("sensor: transaction aborted; the batch will be processed again", "produceErr", produceErr)
		default:
			store.commit()
			cfg.Metrics.JoinPendingKeys.Set(float64(store.pendingKeys()))
			for t, n := range emitted {
				cfg.Metrics.CommandsEmitted.WithLabelValues(t[0], t[1]).Add(float64(n))
			}
		}
	}
}

// maxBatchRecords caps one batch, so that a backlog is worked off in transactions that each end
// well within their timeout (10 s) and hold a bounded number of outputs in memory: 50,000
// events take ~0.3 s to match and commit on one member of 2 cores (docs/benchmarks.md). Much
// smaller caps cost throughput: at 1,000 records per batch the benchmarks ran at half the rate.
const maxBatchRecords = 50000

// pollTimeout bounds how long a member waits for records before it looks at changed
// definitions and expired join keys.
const pollTimeout = time.Second

// topics lists what a member consumes: the matches topic and the source topics of the index.
func (idx *index) topics(t *topology.Topology) []string {
	topics := []string{t.Matches()}
	for topic := range idx.byEvent {
		topics = append(topics, topic)
	}
	sort.Strings(topics)
	return topics
}

// reload switches to a new set of sensors between batches: new source topics are consumed,
// topics no sensor reads any more are dropped, and the next sweep tombstones the join state of
// triggers that are gone or whose dependencies changed.
func (st *stage) reload(cl *kgo.Client, sensors []*api.Sensor) {
	idx, err := buildIndex(st.cfg.Topology, st.cfg.Metrics, sensors)
	if err != nil {
		st.cfg.Logger.Error("sensor: new definitions cannot run; keeping the current ones", "err", err)
		return
	}
	old := map[string]bool{}
	for _, t := range st.idx.topics(st.cfg.Topology) {
		old[t] = true
	}
	var added []string
	for _, t := range idx.topics(st.cfg.Topology) {
		if !old[t] {
			added = append(added, t)
		}
		delete(old, t)
	}
	var removed []string
	for t := range old {
		removed = append(removed, t)
	}
	if len(added) > 0 {
		cl.AddConsumeTopics(added...)
	}
	if len(removed) > 0 {
		cl.PurgeTopicsFromConsuming(removed...)
	}
	st.idx = idx
	st.lastSweep = time.Time{}
	st.cfg.Logger.Info("sensor: definitions reloaded", "sensors", len(sensors), "topicsAdded", added, "topicsRemoved", removed)
}

// stage processes batches for one member.
type stage struct {
	cfg        Config
	idx        *index
	store      *joinStore
	matchParts int // partitions of the matches topic
	lastSweep  time.Time
}

// topicPartitions returns the partition count of topic, waiting until the cluster knows it; it
// fails only when ctx ends. The count of the matches topic never changes (topology refuses to
// add partitions to keyed topics), so it is read once.
func topicPartitions(ctx context.Context, cl *kgo.Client, topic string, log *slog.Logger) (int, error) {
	adm := kadm.NewClient(cl)
	for {
		topics, err := adm.ListTopics(ctx, topic)
		if err == nil {
			if td, ok := topics[topic]; ok && td.Err == nil && len(td.Partitions) > 0 {
				return len(td.Partitions), nil
			} else if ok && td.Err != nil {
				err = td.Err
			}
		}
		log.Warn("sensor: waiting for the matches topic", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// triggerOf returns the loaded trigger of a join key's state, or nil.
func (st *stage) triggerOf(s *joinState) *compiledTrigger {
	if ref, ok := st.idx.triggers[joinKey(s.Namespace, s.Sensor, s.Trigger, "")]; ok {
		return ref.trigger
	}
	return nil
}

// batch turns a polled batch into the records to produce in its transaction. The join changes
// it makes stay pending in the store until the caller commits or aborts them.
func (st *stage) batch(ctx context.Context, fetches kgo.Fetches, emit func(*kgo.Record)) (emitted, error) {
	var errs []error
	commands := st.cfg.Topology.Commands()
	// Stage 1 is stateless: source partitions are matched in parallel, each in order, and their
	// outputs are appended in partition order, so per-partition order carries to the outputs.
	var sourceParts, joinParts []kgo.FetchTopicPartition
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Topic == st.cfg.Topology.Matches() {
			joinParts = append(joinParts, p)
		} else if len(p.Records) > 0 {
			sourceParts = append(sourceParts, p)
		}
	})
	// Matches of a key whose matches partition this member owns skip the matches topic: they
	// are joined in this batch, as if consumed from it. Their state and the batch's input
	// offsets commit together, and a revoke during the batch aborts it, so the shortcut keeps
	// every guarantee of the topic; it saves producing, storing, fetching and decoding them.
	owned := st.store.ownedPartitions()
	matches := st.cfg.Topology.Matches()
	// Commands are encoded here too, in parallel: encoding is a good part of the work per event.
	// Only their counts are kept until the commit, not the commands.
	fired := make([]emitted, len(sourceParts))
	local := make([][]joinMatch, len(sourceParts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, p := range sourceParts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fired[i] = emitted{}
			var out matched
			for _, r := range p.Records {
				st.match(r, &out)
				for _, m := range out.joins {
					if owned[m.partition] {
						local[i] = append(local[i], m)
					} else {
						emit(matchRecord(matches, m))
					}
				}
				for _, cmd := range out.cmds {
					emit(commandRecord(commands, cmd))
					fired[i].add(cmd)
				}
			}
		}()
	}
	wg.Wait()
	counts := emitted{}
	for _, f := range fired {
		counts.merge(f)
	}

	// Stage 2 changes the join store. Matches partitions hold disjoint keys, so they run in
	// parallel, each in order: the records consumed from the matches topic (made by earlier
	// batches), then this batch's own matches. A partition first seen is restored from the
	// state topic first.
	fromTopic := map[int32][]*kgo.Record{}
	var parts []int32
	for _, p := range joinParts {
		fromTopic[p.Partition] = p.Records
		parts = append(parts, p.Partition)
	}
	fromBatch := map[int32][]joinMatch{}
	for _, ms := range local {
		for _, m := range ms {
			if _, ok := fromTopic[m.partition]; !ok && fromBatch[m.partition] == nil {
				parts = append(parts, m.partition)
			}
			fromBatch[m.partition] = append(fromBatch[m.partition], m)
		}
	}
	st.store.mu.Lock()
	defer st.store.mu.Unlock()
	if err := st.restore(ctx, parts); err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	st.store.prepare(parts)
	joined := make([]emitted, len(parts))
	jerrs := make([][]error, len(parts))
	now := time.Now()
	for i, p := range parts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			joined[i] = emitted{}
			add := func(cmd *trigger.Command, err error) {
				if err != nil {
					jerrs[i] = append(jerrs[i], err)
				} else if cmd != nil {
					emit(commandRecord(commands, cmd))
					joined[i].add(cmd)
				}
			}
			for _, r := range fromTopic[p] {
				add(st.join(r))
			}
			for _, m := range fromBatch[p] {
				add(st.joinMatch(m, now))
			}
			for _, rec := range st.store.stateRecords(st.cfg.Topology.State(), p) {
				emit(rec)
			}
		}()
	}
	wg.Wait()
	for i := range joined {
		counts.merge(joined[i])
		errs = append(errs, jerrs[i]...)
	}
	if now := time.Now(); now.Sub(st.lastSweep) >= sweepInterval {
		st.lastSweep = now
		for _, rec := range st.store.expire(st.cfg.Topology.State(), st.triggerOf, now) {
			emit(rec)
		}
	}
	return counts, errors.Join(errs...)
}

// emitted counts a batch's commands by sensor and trigger, for the metrics once the batch
// committed.
type emitted map[[2]string]int

func (c emitted) add(cmd *trigger.Command) { c[[2]string{cmd.Sensor, cmd.Trigger}]++ }

func (c emitted) merge(o emitted) {
	for k, n := range o {
		c[k] += n
	}
}

// matched is what stage 1 makes of one source record: the matches it sends to the join and the
// commands it fires on its own. Reused from record to record, so that its slices are not
// allocated for every event.
type matched struct {
	joins []joinMatch
	cmds  []*trigger.Command
	// slots hold the commands in cmds: a record's commands are encoded before the next record
	// is matched and kept nowhere, so their memory is reused too.
	slots []oneEventCommand
}

// slot returns room for one more command of this record.
func (m *matched) slot() *oneEventCommand {
	m.slots = append(m.slots, oneEventCommand{})
	return &m.slots[len(m.slots)-1]
}

// match is stage 1 for one source record; it replaces out's contents. A record that is not a
// CloudEvent, or an event no filter passes, yields nothing.
func (st *stage) match(r *kgo.Record, out *matched) {
	cfg := st.cfg
	clear(out.joins) // let the previous record's events go
	clear(out.cmds)
	clear(out.slots)
	out.joins, out.cmds, out.slots = out.joins[:0], out.cmds[:0], out.slots[:0]
	byEvent := st.idx.byEvent[r.Topic]
	if byEvent == nil {
		return
	}
	in, err := cloudevent.FromRecord(r)
	if err != nil {
		cfg.Logger.Warn("sensor: skipping a record that is not a CloudEvent", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	for _, ref := range byEvent[in.Subject()] {
		// e is the event as this dependency's transform left it.
		e, ok, err := ref.dep.accept(in)
		if err != nil || !ok {
			cfg.Logger.Debug("sensor: event filtered out", "sensor", ref.sensor.name, "dependency", ref.dep.Name, "eventID", in.ID(), "err", err)
			continue
		}
		ref.matched.Inc()
		if len(ref.dep.triggers) > 0 {
			events := firedEvents{{dep: ref.dep.Name, e: e}}
			for _, t := range ref.dep.triggers {
				c := out.slot()
				if err := renderInto(&c.cmd, c.ref[:], ref.sensor, t, events); err != nil {
					cfg.Logger.Error("sensor: cannot render trigger; not fired", "sensor", ref.sensor.name, "trigger", t.name, "eventID", e.ID(), "err", err)
					continue
				}
				out.cmds = append(out.cmds, &c.cmd)
			}
		}
		if len(ref.dep.joins) == 0 {
			continue
		}
		ev, err := cloudevent.AppendJSON(make([]byte, 0, 256+len(e.DataEncoded)), e)
		if err != nil {
			cfg.Logger.Error("sensor: cannot encode event for the join", "sensor", ref.sensor.name, "eventID", e.ID(), "err", err)
			continue
		}
		for _, t := range ref.dep.joins {
			var corr string
			if t.corr != nil {
				v := gjson.GetBytes(e.Data(), t.corr[ref.dep.Name])
				if !v.Exists() {
					cfg.Logger.Warn("sensor: event has no correlation value; not joined", "sensor", ref.sensor.name, "trigger", t.name,
						"dependency", ref.dep.Name, "path", t.corr[ref.dep.Name], "eventID", e.ID())
					continue
				}
				corr = v.String()
			}
			key := joinKey(ref.sensor.namespace, ref.sensor.name, t.name, corr)
			out.joins = append(out.joins, joinMatch{partition: matchPartition(key, st.matchParts), key: key,
				jr: joinRecord{Namespace: ref.sensor.namespace, Sensor: ref.sensor.name, Trigger: t.name, Dependency: ref.dep.Name, Event: ev}, event: e})
		}
	}
}

// restore reads the state of the given matches partitions that are not restored yet, in
// parallel. A partition revoked before the restore ended is not kept: it was dropped already, and
// keeping it would make a later assignment skip its restore. Callers hold st.store.mu, which
// keeps revokes and assignments out until the restore ended.
func (st *stage) restore(ctx context.Context, parts []int32) error {
	cfg := st.cfg
	var todo []int32
	for _, p := range parts {
		if !st.store.restored(p) {
			todo = append(todo, p)
		}
	}
	restored := make([]map[string]*joinState, len(todo))
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	for i, p := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, restoreTimeout)
			defer cancel()
			start := time.Now()
			restored[i], errs[i] = restorePartition(rctx, cfg.Kafka, cfg.Topology.State(), p, cfg.Metrics)
			if errs[i] == nil {
				cfg.Logger.Info("sensor: restored join state", "partition", p, "keys", len(restored[i]), "took", time.Since(start))
			}
		}()
	}
	wg.Wait()
	for i, p := range todo {
		if errs[i] == nil && st.store.owned[p] {
			st.store.parts[p] = restored[i]
		}
	}
	return errors.Join(errs...)
}

// restoreOwned restores the matches partitions assigned to this member that are not restored
// yet, when some loaded trigger joins. It runs between transactions: restore may wait for a
// previous owner's transaction to end (up to the transaction timeout when that owner died),
// which must not eat into the timeout of the transaction of the batch. A batch still restores a
// partition it needs that was assigned since, or whose matches outlived their trigger.
func (st *stage) restoreOwned(ctx context.Context) error {
	if !st.idx.joins {
		return nil
	}
	st.store.mu.Lock()
	defer st.store.mu.Unlock()
	return st.restore(ctx, slices.Collect(maps.Keys(st.store.owned)))
}

// join is stage 2 for one match record: it adds the event to its key's state and fires the
// trigger when the condition holds, returning its command. The key's new state (or its removal
// once fired) stays pending in the store; the batch writes it to the state topic after the
// partition's last match (joinStore.stateRecords).
func (st *stage) join(r *kgo.Record) (*trigger.Command, error) {
	jr, err := decodeMatch(r)
	if err != nil {
		st.cfg.Logger.Error("sensor: skipping a malformed match record", "partition", r.Partition, "offset", r.Offset, "err", err)
		return nil, nil
	}
	return st.joinMatch(joinMatch{partition: r.Partition, key: string(r.Key), jr: jr}, r.Timestamp)
}

// joinMatch is join for a match of matches partition m.partition that reached the join at
// (its match record's timestamp, or the batch's time for a match that skipped the topic).
func (st *stage) joinMatch(m joinMatch, at time.Time) (*trigger.Command, error) {
	cfg := st.cfg
	jr, key := m.jr, m.key
	ref, ok := st.idx.triggers[joinKey(jr.Namespace, jr.Sensor, jr.Trigger, "")]
	if !ok {
		cfg.Logger.Warn("sensor: match for a trigger that is not loaded; dropped", "key", key)
		return nil, nil
	}
	// cur is the key's state before this match; its events are read, never changed: a state
	// is copied only when it stays pending, not when this match completes it.
	cur := st.store.get(m.partition, key)
	if cur != nil && expired(cur, ref.trigger, at) {
		cur = nil
	}
	var pending map[string]json.RawMessage
	if cur != nil {
		var err error
		if pending, err = cur.events(); err != nil {
			return nil, fmt.Errorf("join state %q: %w", key, err)
		}
	}
	// The latest event of a dependency wins, by event time: events of one dependency may come
	// from different source partitions, whose relative order Kafka does not keep.
	prev, had := pending[jr.Dependency]
	latest := !had || !eventTime(prev).After(eventTime(jr.Event)) // this match's event is its dependency's latest

	met := func(d string) bool { _, ok := pending[d]; return ok || d == jr.Dependency }
	if !ref.trigger.cond.holds(met) {
		state := &joinState{Namespace: jr.Namespace, Sensor: jr.Sensor, Trigger: jr.Trigger, First: at, Deps: ref.trigger.deps}
		if cur != nil {
			state = cur.withEvents(pending)
		}
		if latest {
			if state.Events == nil {
				state.Events = make(map[string]json.RawMessage, 1)
			}
			state.Events[jr.Dependency] = jr.Event
		}
		st.store.put(m.partition, key, state)
		return nil, nil
	}
	// The condition holds: fire with the latest event of every dependency met, and start over.
	events := make(firedEvents, 0, len(pending)+1)
	for d, raw := range pending {
		if d == jr.Dependency && latest {
			continue
		}
		e, err := cloudevent.FromJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("join state %q, dependency %s: %w", key, d, err)
		}
		events = append(events, firedEvent{dep: d, e: e})
	}
	if latest {
		e := m.event
		if e == nil {
			var err error
			if e, err = cloudevent.FromJSON(jr.Event); err != nil {
				return nil, fmt.Errorf("join state %q, dependency %s: %w", key, jr.Dependency, err)
			}
		}
		events = append(events, firedEvent{dep: jr.Dependency, e: e})
	}
	slices.SortFunc(events, func(a, b firedEvent) int { return strings.Compare(a.dep, b.dep) })
	st.store.put(m.partition, key, nil)
	cmd, err := render(ref.sensor, ref.trigger, events)
	if err != nil {
		cfg.Logger.Error("sensor: cannot render trigger; not fired", "sensor", ref.sensor.name, "trigger", ref.trigger.name, "err", err)
		return nil, nil
	}
	return cmd, nil
}

// statePartitioner writes state records to the partition of their join key's matches, so that
// partition i of the state topic always belongs with partition i of the matches topic, and match
// records to the partition stage 1 computed (matchPartition); every other record is hashed by
// key as Kafka's default partitioner does.
type statePartitioner struct{ state, matches string }

func (p statePartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.state || topic == p.matches {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic)
}

// firedEvent is the event that met dependency dep when a trigger fired.
type firedEvent struct {
	dep string
	e   *cloudevents.Event
}

// firedEvents are the events a trigger fires with, one per dependency met, ordered by
// dependency. A slice, not a map: most triggers fire with one event and a static body, and a map
// per event was two of the sensor's allocations per event; renderers get the map when they need
// it (byDependency).
type firedEvents []firedEvent

func (f firedEvents) byDependency() map[string]*cloudevents.Event {
	m := make(map[string]*cloudevents.Event, len(f))
	for _, fe := range f {
		m[fe.dep] = fe.e
	}
	return m
}

// oneEventCommand is a command fired by one event, with room for its event reference: most
// commands are.
type oneEventCommand struct {
	cmd trigger.Command
	ref [1]trigger.EventRef
}

func render(s *compiled, t *compiledTrigger, events firedEvents) (*trigger.Command, error) {
	if len(events) == 1 {
		c := &oneEventCommand{}
		if err := renderInto(&c.cmd, c.ref[:], s, t, events); err != nil {
			return nil, err
		}
		return &c.cmd, nil
	}
	cmd := &trigger.Command{}
	if err := renderInto(cmd, make([]trigger.EventRef, len(events)), s, t, events); err != nil {
		return nil, err
	}
	return cmd, nil
}

// renderInto renders the trigger's command for the events into cmd, with refs, one per event,
// as its event references.
func renderInto(cmd *trigger.Command, refs []trigger.EventRef, s *compiled, t *compiledTrigger, events firedEvents) error {
	typ, spec, err := t.renderSpec(events)
	if err != nil {
		return err
	}
	for i, fe := range events {
		e := fe.e
		refs[i] = trigger.EventRef{Dependency: fe.dep, ID: e.ID(), EventSource: cloudevent.Source(e), EventName: e.Subject(), Time: e.Time()}
	}
	*cmd = trigger.Command{
		ID:        trigger.CommandID(s.namespace, s.name, t.name, refs),
		Namespace: s.namespace, Sensor: s.name, Trigger: t.name, Type: typ,
		Events: refs, Spec: spec, Retry: t.retry, RateLimit: t.rateLimit, AllowStatus: t.allowStatus, LabelPolicy: t.labelPolicy, Ordered: t.ordered, CreatedAt: time.Now().UTC(),
	}
	if t.dlq != nil {
		if cmd.DLQ, err = render(s, t.dlq, events); err != nil {
			return fmt.Errorf("dlqTrigger: %w", err)
		}
	}
	return nil
}

// renderSpec renders the trigger's type and command body for the events. A body that does not
// depend on the events is rendered once and shared (see staticSpec).
func (t *compiledTrigger) renderSpec(events firedEvents) (string, json.RawMessage, error) {
	if len(t.def.Parameters) == 0 {
		t.static.once.Do(func() { t.static.probe(t.renderer, t.def.Template, events.byDependency()) })
		if t.static.ok {
			return t.static.typ, t.static.spec, nil
		}
	}
	byDep := events.byDependency()
	return renderTemplate(t.renderer, t.def.Template, t.def.Parameters, byDep, params(byDep))
}

// renderTemplate applies the trigger-level parameters to tmpl, then renders it by its type:
// with r, tmpl's renderer, when there are none.
func renderTemplate(r trigger.Renderer, tmpl *api.TriggerTemplate, parameters []api.TriggerParameter, events map[string]*cloudevents.Event, p trigger.Params) (string, json.RawMessage, error) {
	if len(parameters) > 0 {
		doc, err := json.Marshal(tmpl)
		if err != nil {
			return "", nil, err
		}
		if doc, err = p.Apply(doc, parameters); err != nil {
			return "", nil, err
		}
		tmpl = &api.TriggerTemplate{}
		if err := json.Unmarshal(doc, tmpl); err != nil {
			return "", nil, fmt.Errorf("parameters: result is not a trigger template: %w", err)
		}
		r = trigger.Renderer{}
	}
	// A copy: the template is shared by the goroutines of stage 1.
	own := *tmpl
	return r.Render(trigger.RenderInput{Template: &own, Events: events, Params: p})
}

// staticSpec holds a trigger's command body when it is the same whatever the events: most
// triggers without parameters (a fixed URL, a fixed object), for which rendering was a third of
// the sensor's work per event. Renderers are pure functions of their input (the contract of
// trigger.RenderInput), so a body is static when rendering it reads no parameter and the
// events make no difference: probe renders with the first events and with none, and compares.
type staticSpec struct {
	once sync.Once
	ok   bool
	typ  string
	spec json.RawMessage
}

func (st *staticSpec) probe(r trigger.Renderer, tmpl *api.TriggerTemplate, events map[string]*cloudevents.Event) {
	with := &probeParams{params: params(events)}
	typ, spec, err := renderTemplate(r, tmpl, nil, events, with)
	if err != nil || with.used {
		return
	}
	without := &probeParams{params: params{}}
	typ2, spec2, err := renderTemplate(r, tmpl, nil, nil, without)
	if err != nil || without.used || typ2 != typ || !bytes.Equal(spec2, spec) {
		return
	}
	st.ok, st.typ, st.spec = true, typ, spec
}

// probeParams records whether a renderer consulted the parameters.
type probeParams struct {
	params
	used bool
}

func (p *probeParams) Apply(doc []byte, ps []api.TriggerParameter) ([]byte, error) {
	p.used = true
	return p.params.Apply(doc, ps)
}

func (p *probeParams) Payload(ps []api.TriggerParameter) ([]byte, error) {
	p.used = true
	return p.params.Payload(ps)
}

func (p *probeParams) Resolve(ps []api.TriggerParameter) ([]trigger.Resolved, error) {
	p.used = true
	return p.params.Resolve(ps)
}

func (p *probeParams) Value(src *api.TriggerParameterSource) (*string, error) {
	p.used = true
	return p.params.Value(src)
}

// commandRecord is cmd's record in topic: keyed as Command.Key says (by trigger when ordered,
// else by id), with the command id in a header. It is a pooled record (see pooledRecord): this
// runs for every command, and was the sensor's largest allocation.
func commandRecord(topic string, cmd *trigger.Command) *kgo.Record {
	// Room for either key, the id header and the value.
	r, buf := newPooledRecord(len(cmd.Namespace) + len(cmd.Sensor) + len(cmd.Trigger) + 2 + 2*len(cmd.ID) + cmd.JSONSize())
	buf = cmd.AppendKey(buf)
	key := len(buf)
	buf = append(buf, cmd.ID...)
	id := len(buf)
	buf = cmd.AppendJSON(buf)
	r.headers[0] = kgo.RecordHeader{Key: "kevents-command-id", Value: buf[key:id:id]}
	// The creation time as the record's: the client would read the clock again.
	r.rec = kgo.Record{Topic: topic, Key: buf[:key:key], Value: buf[id:], Headers: r.headers[:1], Timestamp: cmd.CreatedAt}
	r.buf = buf
	return &r.rec
}

// pooledRecord is a record the stage produces for nearly every event (a command, a join state)
// with room for its headers and one buffer for its key, header values and value. They come
// from a pool and go back to it from the batch's promise (recyclePooledRecord). rec comes
// first: a promise gets &rec, which is the address of the whole.
type pooledRecord struct {
	rec     kgo.Record
	headers [3]kgo.RecordHeader
	buf     []byte
}

var pooledRecords = sync.Pool{New: func() any { return new(pooledRecord) }}

// newPooledRecord returns a record from the pool and its empty buffer, of at least size bytes;
// the caller stores the filled buffer back in r.buf.
func newPooledRecord(size int) (r *pooledRecord, buf []byte) {
	r = pooledRecords.Get().(*pooledRecord)
	if cap(r.buf) < size {
		r.buf = make([]byte, 0, size)
	}
	return r, r.buf[:0]
}

// recyclePooledRecord returns a record newPooledRecord made to the pool. It must be called
// only from the record's promise, once, and with nothing else holding the record: the client
// does not touch a record after its promise (it reads what it needs before calling it).
func recyclePooledRecord(rec *kgo.Record) {
	r := (*pooledRecord)(unsafe.Pointer(rec))
	r.rec, r.headers = kgo.Record{}, [3]kgo.RecordHeader{}
	pooledRecords.Put(r)
}

// eventTime reads the time attribute of a CloudEvent in JSON format; zero when absent.
func eventTime(raw json.RawMessage) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, gjson.GetBytes(raw, "time").String())
	return t
}
