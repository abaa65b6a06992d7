package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/cloudevent"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/topology"
)

// ownedTransactionTimeout bounds how long a crashed owner's open transaction can hold back
// read_committed readers of the source topic when no new owner fences it sooner.
const ownedTransactionTimeout = 10 * time.Second

// ownedRetry is the wait before a member takes a partition over again after its sources
// stopped on an error.
const ownedRetry = time.Second

// OwnedSource is one event of a source type that must run exactly once in the cluster and has
// no competing-consumer model of its own (calendar, file, resource, redis pub/sub, mqtt, amqp with a server-named queue, minio, generic). Ownership goes by partition assignment,
// without leader election:
//
//   - Every owned source has a key, "<namespace>/<eventsource>/<event>", which maps to a
//     partition of the compacted <prefix>.sources topic as Kafka's default partitioner maps a
//     record key (murmur2), so a record keyed by the source lands in its partition.
//   - Every member joins the consumer group <prefix>.sources on that topic (static membership:
//     the group instance id is the member name). A member runs the owned sources of the
//     partitions it is assigned, and stops them before a revoke or loss returns.
//   - The owner of partition N writes through a transactional producer whose id is
//     "<prefix>.sources.p<N>". Taking a partition over starts with InitProducerID for that id,
//     which aborts the previous owner's open transaction and fences it: from then on it can
//     commit nothing. Only then does the new owner read the partition up to its last stable
//     offset, so it sees every state the previous owner committed.
//   - A source commits its events and its new state (its last fire, for a calendar) in one
//     transaction, keyed by the source in partition N. An event is therefore in the source topic
//     for read_committed readers exactly when the state that accounts for it is.
//
// A member that goes silent (a long pause, a network partition) may still believe it owns a
// partition after the group gave it to another member; its next commit fails as fenced and its
// sources stop. Events are never committed twice for one state, whoever commits them.
type OwnedSource interface {
	// RunOwned runs the source while this member owns it, starting from state, the value it
	// last committed (nil: none). It returns nil once ctx ended, or the error of a commit that
	// failed. After an error the source is started again from the state read back from Kafka,
	// which also settles whether a commit whose outcome was unknown went through.
	RunOwned(ctx context.Context, state []byte, commit Commit) error
}

// everyMemberSource is an OwnedSource whose settings may spread its work over the members by
// themselves (an MQTT shared subscription): when everyMember reports true, Run runs it on every
// member as a plain Source instead of owning it.
type everyMemberSource interface {
	OwnedSource
	Source
	everyMember() bool
}

// Commit writes events, in order, to the source's topic (keyed by the event name, so that they
// stay in order on one partition) and state as the source's new state, in one Kafka
// transaction. It returns nil once the transaction is committed. Commits of the sources of one
// partition are serialized.
type Commit func(ctx context.Context, events []cloudevents.Event, state []byte) error

// OwnedConstructor builds the runtime of one event of an owned type.
type OwnedConstructor func(b Build) (OwnedSource, error)

// ownedEntry is one owned source with what the runner needs to place and commit it.
type ownedEntry struct {
	key   string // "<namespace>/<eventsource>/<event>": its record key in <prefix>.sources
	topic string // the EventSource's topic
	event string // the event name: the key of its events
	src   OwnedSource
	// namespace and eventSource name the event in metrics (with event).
	namespace, eventSource string
}

func newOwnedEntry(b Build, src OwnedSource) ownedEntry {
	return ownedEntry{key: ownedKey(b), topic: b.Topic, event: b.Event.Name, src: src,
		namespace: b.EventSource.Metadata.Namespace, eventSource: b.EventSource.Metadata.Name}
}

// ownedKey is the key of an owned source; an empty namespace is "default", as in topic names.
func ownedKey(b Build) string {
	ns := b.EventSource.Metadata.Namespace
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + b.EventSource.Metadata.Name + "/" + b.Event.Name
}

// ownedPartition maps a source key to its partition of <prefix>.sources, as Kafka's default
// partitioner would place a record with that key.
func ownedPartition(key string, partitions int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: []byte(key)}, partitions))
}

// ownedTransactionalID is the transactional id of the owner of partition p.
func ownedTransactionalID(sources string, p int32) string {
	return fmt.Sprintf("%s.p%d", sources, p)
}

func checkOwnedEnv(env *Env) error {
	var errs []error
	if len(env.Kafka.Brokers) == 0 {
		errs = append(errs, errors.New("owned sources (calendar, file, resource, redis, mqtt, amqp, minio, generic): no Kafka brokers configured; expected the cluster's brokers"))
	}
	if env.Member == "" {
		errs = append(errs, errors.New("owned sources (calendar, file, resource, redis, mqtt, amqp, minio, generic): member name is empty; expected a stable name unique among members (--member)"))
	}
	return errors.Join(errs...)
}

// ownedRunner is this member's part in owning the owned sources: it is a pull source whose Run
// takes part in the group and runs the sources of the partitions it is assigned.
//
// Concurrency: the group callbacks (assigned, revoked) run one at a time on kgo's group
// goroutine; each owned partition runs on a goroutine of its own (a worker), started by assigned
// and stopped, and waited for, by revoked or when Run ends.
type ownedRunner struct {
	env     *Env
	entries []ownedEntry

	// Set by Run before the group client exists.
	ctx         context.Context
	session     time.Duration
	byPartition map[int32][]ownedEntry

	mu      sync.Mutex
	workers map[int32]*ownedWorker
}

type ownedWorker struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Run takes part in the group of <prefix>.sources until ctx ends.
func (r *ownedRunner) Run(ctx context.Context) error {
	env := r.env
	topic := env.Topology.Sources()
	n, err := r.partitionCount(ctx, topic)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	r.ctx = ctx
	r.session = env.SessionTimeout
	if r.session <= 0 {
		r.session = kclient.SessionTimeout
	}
	r.byPartition = map[int32][]ownedEntry{}
	r.workers = map[int32]*ownedWorker{}
	for _, e := range r.entries {
		p := ownedPartition(e.key, n)
		r.byPartition[p] = append(r.byPartition[p], e)
	}
	cl, err := env.Kafka.NewClient(
		kgo.ConsumerGroup(topic),
		kgo.ConsumeTopics(topic),
		kgo.InstanceID(env.Member),
		kgo.SessionTimeout(r.session),
		kgo.HeartbeatInterval(min(3*time.Second, r.session/3)),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.revoked),
		kgo.OnPartitionsLost(r.revoked),
	)
	if err != nil {
		return fmt.Errorf("owned sources: %w", err)
	}
	// The group is only for the assignment: owners read their partitions with ReadPartition.
	cl.PauseFetchTopics(topic)
	env.Logger.Info("owned sources: joining the group", "group", topic, "member", env.Member, "sources", len(r.entries), "partitions", n)
	<-ctx.Done()
	cl.Close()
	r.mu.Lock()
	parts := make([]int32, 0, len(r.workers))
	for p := range r.workers {
		parts = append(parts, p)
	}
	r.mu.Unlock()
	r.stop(parts)
	return nil
}

// partitionCount returns the partition count of topic, waiting while Kafka is unreachable.
func (r *ownedRunner) partitionCount(ctx context.Context, topic string) (int, error) {
	cl, err := r.env.Kafka.NewClient()
	if err != nil {
		return 0, fmt.Errorf("owned sources: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		topics, err := adm.ListTopics(ctx, topic)
		if err == nil {
			td, ok := topics[topic]
			switch {
			case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
				return 0, fmt.Errorf("owned sources: topic %s: missing; expected it to exist (kevents topology apply creates it)", topic)
			case td.Err == nil && len(td.Partitions) > 0:
				return len(td.Partitions), nil
			}
			err = td.Err
		}
		r.env.Logger.Warn("owned sources: cannot read the partitions of the sources topic; retrying", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(ownedRetry):
		}
	}
}

func (r *ownedRunner) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range assigned[r.env.Topology.Sources()] {
		entries := r.byPartition[p]
		if len(entries) == 0 || r.workers[p] != nil || r.ctx.Err() != nil {
			continue
		}
		ctx, cancel := context.WithCancel(r.ctx)
		w := &ownedWorker{cancel: cancel, done: make(chan struct{})}
		r.workers[p] = w
		go func() {
			defer close(w.done)
			r.runPartition(ctx, p, entries)
		}()
	}
}

// revoked stops the sources of the partitions going away and returns once they stopped, so
// that the next owner never runs them at the same time as this member.
func (r *ownedRunner) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	r.stop(revoked[r.env.Topology.Sources()])
}

// stop stops the sources of parts and waits for them. Their connection state is forgotten
// (SourceStopped): the new owner reports theirs, and this member must not keep reporting an
// event it no longer runs, down or up, for as long as it lives.
func (r *ownedRunner) stop(parts []int32) {
	var (
		stopping []*ownedWorker
		stopped  []int32
	)
	r.mu.Lock()
	for _, p := range parts {
		if w := r.workers[p]; w != nil {
			delete(r.workers, p)
			w.cancel()
			stopping = append(stopping, w)
			stopped = append(stopped, p)
		}
	}
	r.mu.Unlock()
	for _, w := range stopping {
		<-w.done
	}
	// The sources have returned, and their sourceHealth is stopped: nothing reports them again.
	for _, p := range stopped {
		for _, e := range r.byPartition[p] {
			r.env.Metrics.SourceStopped(e.namespace, e.eventSource, e.event)
		}
	}
	if len(stopped) > 0 {
		r.env.Logger.Info("owned sources: stopped the sources of partitions this member no longer owns", "partitions", stopped)
	}
}

// runPartition runs the sources of partition p until ctx ends, taking the partition over again
// whenever they stop on an error.
func (r *ownedRunner) runPartition(ctx context.Context, p int32, entries []ownedEntry) {
	log := r.env.Logger.With("topic", r.env.Topology.Sources(), "partition", p)
	for {
		err := r.ownPartition(ctx, p, entries, log)
		if ctx.Err() != nil {
			return
		}
		wait := ownedRetry
		if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
			// Another member took the partition over, and the group will revoke it here soon;
			// taking it back at once would only fence that member in turn.
			wait = r.session
			log.Warn("owned sources: fenced by another owner of the partition; waiting for the group to revoke it", "retryIn", wait, "err", err)
		} else {
			log.Warn("owned sources: sources stopped; taking the partition over again from the state in Kafka", "retryIn", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// ownPartition takes partition p over and runs its sources until ctx ends (nil) or one of them
// fails (its error; the others are stopped first).
func (r *ownedRunner) ownPartition(ctx context.Context, p int32, entries []ownedEntry, log *slog.Logger) error {
	env := r.env
	topic := env.Topology.Sources()
	cl, err := env.Kafka.NewClient(
		kgo.TransactionalID(ownedTransactionalID(topic, p)),
		kgo.TransactionTimeout(ownedTransactionTimeout),
		kgo.RecordPartitioner(ownedPartitioner{sources: topic}),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(topology.MaxRecordBytes),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	// Loading the producer id (InitProducerID) is what takes the partition over: it aborts the
	// previous owner's open transaction and fences it, so the read below sees every state it
	// committed, and it can commit nothing more.
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("take over %s partition %d: %w", topic, p, err)
	}
	states := make(map[string][]byte, len(entries))
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		states[e.key] = nil
		keys = append(keys, e.key)
	}
	err = env.Kafka.ReadPartition(ctx, topic, p, func(rec *kgo.Record) error {
		if _, ours := states[string(rec.Key)]; ours {
			states[string(rec.Key)] = rec.Value // a tombstone (nil) clears the state
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(keys)
	log.Info("owned sources: partition taken over", "sources", keys, "took", time.Since(start))

	tx := &ownedTxn{cl: cl, sources: topic, partition: p, timeout: env.PublishTimeout}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(entries))
	for _, e := range entries {
		go func() {
			err := e.src.RunOwned(runCtx, states[e.key], func(ctx context.Context, events []cloudevents.Event, state []byte) error {
				return tx.commit(ctx, e, events, state)
			})
			if err != nil {
				err = fmt.Errorf("%s: %w", e.key, err)
			}
			errc <- err
		}()
	}
	var first error
	for range entries {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// ownedTxn is the transactional producer of one owned partition.
type ownedTxn struct {
	mu        sync.Mutex // one transaction at a time
	cl        *kgo.Client
	sources   string
	partition int32
	timeout   time.Duration
}

// commit implements Commit for the source e.
func (t *ownedTxn) commit(ctx context.Context, e ownedEntry, events []cloudevents.Event, state []byte) error {
	recs := make([]*kgo.Record, 0, len(events)+1)
	for _, ev := range events {
		rec, err := cloudevent.ToRecord(ctx, ev, e.topic, []byte(e.event))
		if err != nil {
			return err
		}
		recs = append(recs, rec)
	}
	recs = append(recs, &kgo.Record{Topic: t.sources, Partition: t.partition, Key: []byte(e.key), Value: state})

	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, t.timeout)
	produceErr := t.cl.ProduceSync(pctx, recs...).FirstErr()
	cancel()
	// Ending the transaction gets a deadline of its own: canceling it midway would leave its
	// outcome unknown.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.timeout)
	defer cancel()
	if produceErr != nil {
		_ = t.cl.AbortBufferedRecords(ectx)
		if err := t.cl.EndTransaction(ectx, kgo.TryAbort); err != nil {
			return errors.Join(fmt.Errorf("produce: %w", produceErr), fmt.Errorf("abort: %w", err))
		}
		return fmt.Errorf("produce: %w", produceErr)
	}
	if err := t.cl.EndTransaction(ectx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// ownedPartitioner writes state records to the partition set on them (the owned partition) and
// hashes events by key, as Kafka's default partitioner does.
type ownedPartitioner struct{ sources string }

func (p ownedPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.sources {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic)
}

// sourceHealth reports whether one run of a source reaches its outside server, through
// Build.Connected (kevents_source_connected, and readiness with Env.ReadyNeedsSources). A source
// makes one when a run starts and stops it when the run returns. Reports after the run's ctx
// ended are dropped, so a connection closed on purpose by a stop is not reported down, and a
// client library's callback that fires late cannot bring back an event that Run or the owned
// runner already forgot (SourceStopped). A "connected" report repeating the last one is dropped,
// so a loop may report each successful call cheaply.
type sourceHealth struct {
	b   Build
	ctx context.Context

	mu      sync.Mutex
	stopped bool
	up      bool // the last report was "connected"
}

func newSourceHealth(ctx context.Context, b Build) *sourceHealth {
	return &sourceHealth{b: b, ctx: ctx}
}

// set reports err: nil once (re)connected, else why the source cannot reach its server while it
// retries. err must not hold secrets other than URL user info, which is redacted.
func (h *sourceHealth) set(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || h.ctx.Err() != nil || (err == nil && h.up) {
		return
	}
	h.up = err == nil
	h.b.Connected(err)
}

// stop drops every later report; call it before the run returns.
func (h *sourceHealth) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
}
