package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/time/rate"

	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// ExecutorConfig configures an executor pool member.
type ExecutorConfig struct {
	Kafka    kclient.Config
	Topology *topology.Topology
	// Member names this member, stable across restarts and unique in the pool: it is the group
	// instance id, so a restarted member takes its partitions back at once.
	Member  string
	Env     Env
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Concurrency caps the commands running at once, across keys; 0 means DefaultConcurrency.
	Concurrency int
}

// DefaultConcurrency is how many commands a member runs at once unless configured.
const DefaultConcurrency = 64

// maxInflight caps the commands a member holds (queued, running or waiting for a retry); past
// it the member stops fetching until some finish.
const maxInflight = 10000

// GroupID is the consumer group of the executor pool.
func GroupID(t *topology.Topology) string { return t.Prefix() + ".executor" }

// Outcome is what the executor records in the executed topic for a command id, when the command
// finished: it succeeded, or failed after its retries (and went to the DLQ).
type Outcome struct {
	ID         string    `json:"id"`
	Namespace  string    `json:"namespace"`
	Sensor     string    `json:"sensor"`
	Trigger    string    `json:"trigger"`
	Succeeded  bool      `json:"succeeded"`
	Attempts   int       `json:"attempts"`
	Error      string    `json:"error,omitempty"`
	DurationMs int64     `json:"durationMs"`
	FinishedAt time.Time `json:"finishedAt"`
}

// RunExecutor consumes the commands topic as a member of the executor pool until ctx ends.
//
// Contract:
//   - Commands with the same key (the commands of one ordered trigger, see Command.Key) run in
//     order; different keys run concurrently, up to cfg.Concurrency at once. A command waiting
//     for its retry holds up its own key only.
//   - Every finished command's outcome is written to the executed topic, keyed by command id, in
//     the partition of the command. A member that is assigned commands partition i first reads
//     executed partition i and skips every command recorded there: redelivery after a crash or
//     rebalance does not run a finished command again.
//   - A command that failed after its retries, or with an error wrapping ErrTerminal, goes to
//     the DLQ topic with its error.
//   - Offsets are committed only up to the last contiguous finished command of a partition.
//
// Side effects are at least once: a command running when its member dies runs again elsewhere,
// with the same id as its idempotency key.
func RunExecutor(ctx context.Context, cfg ExecutorConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Member == "" {
		return errors.New("executor: member name is empty; expected a stable name unique in the pool")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Env.Logger == nil {
		cfg.Env.Logger = cfg.Logger
	}
	if cfg.Env.Bus == nil {
		cfg.Env.Bus = &Bus{Kafka: cfg.Kafka, Topology: cfg.Topology}
	}
	executors, err := newExecutors(cfg.Env)
	if err != nil {
		return err
	}
	p := &pool{cfg: cfg, executors: executors, parts: map[int32]*partition{}, keys: map[string]*keyQueue{}, limiters: map[string]*rate.Limiter{},
		sem: make(chan struct{}, cfg.Concurrency), room: make(chan struct{}, 1)}
	cl, err := cfg.Kafka.NewClient(
		kgo.ConsumerGroup(GroupID(cfg.Topology)),
		kgo.InstanceID(cfg.Member),
		kgo.SessionTimeout(kclient.SessionTimeout),
		kgo.ConsumeTopics(cfg.Topology.Commands()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsRevoked(p.revoke),
		kgo.OnPartitionsLost(p.revoke),
		kgo.RecordPartitioner(outcomePartitioner{executed: cfg.Topology.Executed()}),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(topology.MaxRecordBytes),
	)
	if err != nil {
		return fmt.Errorf("executor: %w", err)
	}
	defer cl.Close()
	p.cl = cl
	cfg.Metrics.AddReadyCheck("executor", cl.Ping)

	runCtx, stopRunning := context.WithCancel(ctx)
	defer stopRunning()
	p.ctx = runCtx
	for ctx.Err() == nil {
		p.waitForRoom(ctx)
		pollCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fetches := cl.PollRecords(pollCtx, 1000)
		cancel()
		for _, e := range fetches.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) && !errors.Is(e.Err, context.Canceled) {
				cfg.Logger.Warn("executor: fetch", "topic", e.Topic, "partition", e.Partition, "err", e.Err)
			}
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if err := p.add(ctx, r); err != nil {
				cfg.Logger.Error("executor: cannot take a command; it will be fetched again", "partition", r.Partition, "offset", r.Offset, "err", err)
			}
		})
		p.commit(ctx)
	}
	// Stop: running commands see their context end and stay unfinished (they run again on the
	// next start); what finished is committed.
	stopRunning()
	p.wg.Wait()
	p.recording.Wait()
	p.mu.Lock()
	p.dropQueued(func(*partition) bool { return true })
	p.mu.Unlock()
	// Executors that hold connections (NATS, Kafka, ...) release them.
	for _, x := range executors {
		switch c := x.(type) {
		case interface{ Close() error }:
			_ = c.Close()
		case interface{ Close() }:
			c.Close()
		}
	}
	commitCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.commit(commitCtx)
}

// pool is one member's commands in flight.
type pool struct {
	cfg       ExecutorConfig
	executors map[string]Executor
	cl        *kgo.Client
	ctx       context.Context // ends when the member stops
	sem       chan struct{}   // a slot per running command
	room      chan struct{}   // signalled when inflight drops
	wg        sync.WaitGroup  // key workers
	recording sync.WaitGroup  // outcome writes in flight

	mu       sync.Mutex
	parts    map[int32]*partition
	keys     map[string]*keyQueue
	inflight int
	limiters map[string]*rate.Limiter // by trigger (TriggerPath), for triggers with a rateLimit
	// At most cfg.Concurrency key workers are active, that is not waiting for a retry or the
	// rate limit; keys with jobs beyond them wait in ready, first in, first out. So a backlog of
	// many keys (every unordered command is one) parks no goroutine per key, and a key that
	// waits for its retry still holds up no other.
	ready  []*keyQueue
	active int
}

// partition tracks the offsets of one commands partition this member owns.
type partition struct {
	num       int32
	epoch     int32
	revoked   bool
	done      map[string]bool // command ids finished, from the executed topic and this member
	pending   []int64         // offsets taken, in order, not yet contiguous-finished
	finished  map[int64]bool
	next      int64 // the offset after the last contiguous finished command; -1: none yet
	committed int64 // the last offset Kafka confirmed committing; -1: none
	running   map[string]bool
}

type keyQueue struct {
	key     string
	jobs    []*job
	running bool // a worker has the key, or it waits in ready for one
}

type job struct {
	part   *partition
	offset int64
	cmd    Command
	raw    []byte
	state  jobState // guarded by pool.mu
}

// jobState is where a job stands, for the pending and running gauges.
type jobState int

const (
	jobGone    jobState = iota // finished, dropped, or left to another member: not counted
	jobPending                 // queued, or waiting for a retry, the rate limit or a slot
	jobRunning                 // an attempt in progress
)

// setState moves a job between the gauges; callers hold p.mu.
func (p *pool) setState(j *job, s jobState) {
	if j.state == s {
		return
	}
	m, sensor, trig := p.cfg.Metrics, j.cmd.Sensor, j.cmd.Trigger
	switch j.state {
	case jobPending:
		m.CommandsPending.WithLabelValues(sensor, trig).Dec()
	case jobRunning:
		m.CommandsRunning.WithLabelValues(sensor, trig).Dec()
	}
	switch s {
	case jobPending:
		m.CommandsPending.WithLabelValues(sensor, trig).Inc()
	case jobRunning:
		m.CommandsRunning.WithLabelValues(sensor, trig).Inc()
	}
	j.state = s
}

func (p *pool) markState(j *job, s jobState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setState(j, s)
}

// dropQueued takes the queued jobs of the partitions drop selects off the gauges: they stay
// queued only until their key's worker forgets them. Callers hold p.mu.
func (p *pool) dropQueued(drop func(*partition) bool) {
	for _, q := range p.keys {
		for _, j := range q.jobs {
			if drop(j.part) {
				p.setState(j, jobGone)
			}
		}
	}
}

// add takes one record: it restores the partition's executed ids the first time, skips a
// command that already finished, and queues the rest behind their key.
func (p *pool) add(ctx context.Context, r *kgo.Record) error {
	p.mu.Lock()
	part := p.parts[r.Partition]
	p.mu.Unlock()
	if part == nil {
		done, err := p.restore(ctx, r.Partition)
		if err != nil {
			return err
		}
		part = &partition{num: r.Partition, done: done, finished: map[int64]bool{}, next: -1, committed: -1, running: map[string]bool{}}
		p.mu.Lock()
		p.parts[r.Partition] = part
		p.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	part.epoch = r.LeaderEpoch
	part.pending = append(part.pending, r.Offset)
	var cmd Command
	if err := json.Unmarshal(r.Value, &cmd); err != nil {
		p.cfg.Logger.Error("executor: skipping a record that is not a command", "partition", r.Partition, "offset", r.Offset, "err", err)
		part.finished[r.Offset] = true
		return nil
	}
	cmd.partition = r.Partition
	if part.done[cmd.ID] || part.running[cmd.ID] {
		p.cfg.Metrics.Skipped.WithLabelValues(cmd.Sensor, cmd.Trigger).Inc()
		part.finished[r.Offset] = true
		return nil
	}
	part.running[cmd.ID] = true
	p.inflight++
	key := cmd.Key()
	q := p.keys[key]
	if q == nil {
		q = &keyQueue{key: key}
		p.keys[key] = q
	}
	j := &job{part: part, offset: r.Offset, cmd: cmd, raw: r.Value}
	p.setState(j, jobPending)
	q.jobs = append(q.jobs, j)
	if !q.running {
		q.running = true
		p.ready = append(p.ready, q)
		p.startReady()
	}
	return nil
}

// startReady gives ready keys workers while fewer than cfg.Concurrency are active. Callers hold
// p.mu. A caller is the fetch loop or a worker, so the WaitGroup never grows from zero while
// Stop waits on it.
func (p *pool) startReady() {
	for len(p.ready) > 0 && p.active < p.cfg.Concurrency && p.ctx.Err() == nil {
		q := p.ready[0]
		p.ready[0] = nil
		p.ready = p.ready[1:]
		p.active++
		p.wg.Add(1)
		go p.work(q)
	}
}

// waiting runs wait (a retry's backoff, the rate limit) with the calling worker counted as not
// active, so that a ready key may start meanwhile.
func (p *pool) waiting(wait func() error) error {
	p.mu.Lock()
	p.active--
	p.startReady()
	p.mu.Unlock()
	err := wait()
	p.mu.Lock()
	p.active++
	p.mu.Unlock()
	return err
}

// restore reads the ids of finished commands from partition p of the executed topic.
func (p *pool) restore(ctx context.Context, part int32) (map[string]bool, error) {
	done := map[string]bool{}
	err := p.cfg.Kafka.ReadPartition(ctx, p.cfg.Topology.Executed(), part, func(r *kgo.Record) error {
		p.cfg.Metrics.ExecutorRestoreRecords.Inc()
		if r.Value == nil {
			delete(done, string(r.Key))
		} else {
			done[string(r.Key)] = true
		}
		return nil
	})
	return done, err
}

// work runs the jobs of one key, one after another, until its queue is empty; then it hands its
// place to the next ready key.
func (p *pool) work(q *keyQueue) {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		if len(q.jobs) == 0 || p.ctx.Err() != nil {
			q.running = false
			if len(q.jobs) == 0 {
				delete(p.keys, q.key)
			}
			p.active--
			p.startReady()
			p.mu.Unlock()
			return
		}
		j := q.jobs[0]
		q.jobs = q.jobs[1:]
		revoked := j.part.revoked
		p.mu.Unlock()
		if revoked {
			// The partition moved to another member, which runs this command from the last
			// committed offset; running it here too would only race it.
			p.forget(j)
			continue
		}
		p.run(j)
	}
}

// run executes a job with its retries and records how it finished.
func (p *pool) run(j *job) {
	cmd := &j.cmd
	log := p.cfg.Logger.With("sensor", cmd.Sensor, "trigger", cmd.Trigger, "commandID", cmd.ID)
	start := time.Now()
	attempts, err := p.execute(j)
	p.markState(j, jobGone)
	if p.ctx.Err() != nil {
		p.forget(j) // stopped mid-way: it runs again on the next start
		return
	}
	p.cfg.Metrics.Finished(cmd.Namespace, cmd.Sensor, cmd.Trigger, time.Since(start), err)
	out := Outcome{ID: cmd.ID, Namespace: cmd.Namespace, Sensor: cmd.Sensor, Trigger: cmd.Trigger, Succeeded: err == nil,
		Attempts: attempts, DurationMs: time.Since(start).Milliseconds(), FinishedAt: time.Now().UTC()}
	recs := []*kgo.Record{}
	if err != nil {
		out.Error = err.Error()
		log.Error("executor: trigger failed after its retries; sent to the DLQ", "attempts", attempts, "err", err)
		recs = append(recs, &kgo.Record{Topic: p.cfg.Topology.DLQ(), Key: []byte(cmd.Key()), Value: j.raw,
			Headers: []kgo.RecordHeader{{Key: "kevents-error", Value: []byte(out.Error)}, {Key: "kevents-command-id", Value: []byte(cmd.ID)}}})
		if cmd.DLQ != nil {
			// The dlqTrigger becomes a command of its own, with the same guarantees; if this
			// member dies before recording the outcome, the failed command is redelivered and
			// issues it again with the same id, which the executor then skips.
			if v, err := json.Marshal(cmd.DLQ); err == nil {
				recs = append(recs, &kgo.Record{Topic: p.cfg.Topology.Commands(), Key: []byte(cmd.DLQ.Key()), Value: v})
			}
		}
	} else {
		if first, ok := firstEventTime(cmd.Events); ok {
			p.cfg.Metrics.EndToEnd.WithLabelValues(cmd.Sensor, cmd.Trigger).Observe(time.Since(first).Seconds())
		}
		log.Debug("executor: trigger done", "attempts", attempts, "duration", time.Since(start))
	}
	v, _ := json.Marshal(out)
	recs = append(recs, &kgo.Record{Topic: p.cfg.Topology.Executed(), Partition: j.part.num, Key: []byte(cmd.ID), Value: v})
	p.record(j, recs, log)
}

// record writes a finished job's outcome (and DLQ records) and only then finishes the job: the
// outcome must be in Kafka before the offset may be committed, or a crash in between would run
// the command again with nothing to say it finished. The key's next command does not wait for
// it; a write that fails is retried until the member stops.
func (p *pool) record(j *job, recs []*kgo.Record, log *slog.Logger) {
	p.recording.Add(1)
	var (
		mu      sync.Mutex
		pending = len(recs)
		errs    []error
	)
	for _, r := range recs {
		p.cl.Produce(p.ctx, r, func(_ *kgo.Record, err error) {
			mu.Lock()
			pending--
			if err != nil {
				errs = append(errs, err)
			}
			last, failed := pending == 0, errors.Join(errs...)
			mu.Unlock()
			if !last {
				return
			}
			switch {
			case failed == nil:
				p.finish(j, true)
				p.recording.Done()
			case p.ctx.Err() != nil:
				p.forget(j)
				p.recording.Done()
			default:
				log.Warn("executor: cannot record the outcome; retrying", "err", failed)
				go func() {
					// Done only after the retry registered itself, so Wait never sees zero early.
					defer p.recording.Done()
					select {
					case <-time.After(time.Second):
						p.record(j, recs, log)
					case <-p.ctx.Done():
						p.forget(j)
					}
				}()
			}
		})
	}
}

// firstEventTime returns the earliest time of a command's input events, if any has one.
func firstEventTime(events []EventRef) (time.Time, bool) {
	var first time.Time
	for _, e := range events {
		if !e.Time.IsZero() && (first.IsZero() || e.Time.Before(first)) {
			first = e.Time
		}
	}
	return first, !first.IsZero()
}

// execute runs a job's command, retrying as its retryStrategy says; it returns the attempts made.
func (p *pool) execute(j *job) (int, error) {
	cmd := &j.cmd
	x, ok := p.executors[cmd.Type]
	if !ok {
		err := fmt.Errorf("trigger type %q: %w", cmd.Type, errors.New("no executor for it in this member"))
		p.cfg.Metrics.Attempt(cmd.Namespace, cmd.Sensor, cmd.Trigger, 0, err)
		return 1, err
	}
	attempts, wait, factor := 1, time.Duration(0), 1.0
	if r := cmd.Retry; r != nil {
		attempts, wait, factor = max(r.Steps, 1), r.Duration, r.Factor
	}
	limiter := p.limiter(cmd)
	var errs []error
	for i := 0; i < attempts; i++ {
		p.markState(j, jobPending)
		if limiter != nil {
			// Like a retry wait, a rate limit holds up only its own trigger.
			if err := p.waiting(func() error { return limiter.Wait(p.ctx) }); err != nil {
				return i, err
			}
		}
		if i > 0 {
			// Waiting holds no slot: other keys run meanwhile.
			backoff := cmd.Retry.jittered(wait)
			if err := p.waiting(func() error {
				select {
				case <-p.ctx.Done():
					return p.ctx.Err()
				case <-time.After(backoff):
					return nil
				}
			}); err != nil {
				return i, err
			}
			wait = time.Duration(float64(wait) * factor)
		}
		select {
		case p.sem <- struct{}{}:
		case <-p.ctx.Done():
			return i, p.ctx.Err()
		}
		p.markState(j, jobRunning)
		start := time.Now()
		err := x.Execute(p.ctx, cmd)
		took := time.Since(start)
		<-p.sem
		if p.ctx.Err() == nil { // an attempt cut short by stopping is no failure of the target
			p.cfg.Metrics.Attempt(cmd.Namespace, cmd.Sensor, cmd.Trigger, took, err)
		}
		if err == nil {
			return i + 1, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", i+1, err))
		if errors.Is(err, ErrTerminal) {
			return i + 1, errors.Join(errs...)
		}
	}
	return attempts, errors.Join(errs...)
}

// limiter returns the rate limiter of a command's trigger, or nil when it has no rateLimit. Each
// member limits the commands it runs; a rate-limited trigger's commands are ordered (see
// Ordered), so they all go to one partition, so to one member at a time.
func (p *pool) limiter(cmd *Command) *rate.Limiter {
	rl := cmd.RateLimit
	if rl == nil || rl.Requests <= 0 || rl.Per <= 0 {
		return nil
	}
	every := rate.Every(rl.Per / time.Duration(rl.Requests))
	p.mu.Lock()
	defer p.mu.Unlock()
	trig := cmd.TriggerPath()
	l := p.limiters[trig]
	if l == nil || l.Limit() != every {
		l = rate.NewLimiter(every, 1) // no bursts beyond the rate
		p.limiters[trig] = l
	}
	return l
}

// finish marks a job's offset finished; forget drops a job without finishing it.
func (p *pool) finish(j *job, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setState(j, jobGone)
	delete(j.part.running, j.cmd.ID)
	if done {
		j.part.done[j.cmd.ID] = true
		j.part.finished[j.offset] = true
	}
	p.inflight--
	select {
	case p.room <- struct{}{}:
	default:
	}
}

func (p *pool) forget(j *job) { p.finish(j, false) }

func (p *pool) waitForRoom(ctx context.Context) {
	for {
		p.mu.Lock()
		full := p.inflight >= maxInflight
		p.mu.Unlock()
		if !full {
			return
		}
		select {
		case <-p.room:
		case <-ctx.Done():
			return
		}
	}
}

// commit commits, for each partition, the offset after its last contiguous finished command.
func (p *pool) commit(ctx context.Context) error {
	p.mu.Lock()
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for _, part := range p.parts {
		for len(part.pending) > 0 && part.finished[part.pending[0]] {
			delete(part.finished, part.pending[0])
			part.next = part.pending[0] + 1
			part.pending = part.pending[1:]
		}
		if part.next <= part.committed || part.revoked {
			continue
		}
		if offsets[p.cfg.Topology.Commands()] == nil {
			offsets[p.cfg.Topology.Commands()] = map[int32]kgo.EpochOffset{}
		}
		offsets[p.cfg.Topology.Commands()][part.num] = kgo.EpochOffset{Epoch: part.epoch, Offset: part.next}
	}
	p.mu.Unlock()
	if len(offsets) == 0 {
		return nil
	}
	var commitErr error
	// A commit that fails is tried again on the next pass: committed moves only on success.
	defer func() {
		if commitErr != nil {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for n, eo := range offsets[p.cfg.Topology.Commands()] {
			if part := p.parts[n]; part != nil && eo.Offset > part.committed {
				part.committed = eo.Offset
			}
		}
	}()
	p.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, pt := range t.Partitions {
				if e := kerr.ErrorForCode(pt.ErrorCode); e != nil {
					commitErr = errors.Join(commitErr, fmt.Errorf("partition %d: %w", pt.Partition, e))
				}
			}
		}
	})
	if commitErr != nil {
		p.cfg.Logger.Warn("executor: offset commit failed; finished commands may be redelivered and skipped", "err", commitErr)
	}
	return commitErr
}

// revoke is the group callback for partitions this member no longer owns: what finished is
// committed, queued commands of those partitions are dropped, and their state forgotten.
func (p *pool) revoke(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	_ = p.commit(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range lost[p.cfg.Topology.Commands()] {
		if part := p.parts[n]; part != nil {
			part.revoked = true
			delete(p.parts, n)
		}
	}
	p.dropQueued(func(part *partition) bool { return part.revoked })
}

// outcomePartitioner writes an outcome to the executed partition of its command's partition,
// so that commands partition i and executed partition i belong together; other records hash.
type outcomePartitioner struct{ executed string }

func (o outcomePartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == o.executed {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic)
}
