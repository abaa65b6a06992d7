package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

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
}

// GroupID is the consumer group of the executor pool.
func GroupID(t *topology.Topology) string { return t.Prefix() + ".executor" }

// RunExecutor consumes the commands topic as a member of the executor pool until ctx ends.
//
// Contract (first cut): commands of one partition run one after another, partitions run
// concurrently; an offset is committed only after its command ran (successfully, or failed after
// its retries), so a crash re-runs at most the commands in flight. Failures are logged and
// counted; the DLQ and outcome records come with the full executor.
func RunExecutor(ctx context.Context, cfg ExecutorConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Member == "" {
		return errors.New("executor: member name is empty; expected a stable name unique in the pool")
	}
	if cfg.Env.Logger == nil {
		cfg.Env.Logger = cfg.Logger
	}
	executors, err := newExecutors(cfg.Env)
	if err != nil {
		return err
	}
	cl, err := cfg.Kafka.NewClient(
		kgo.ConsumerGroup(GroupID(cfg.Topology)),
		kgo.InstanceID(cfg.Member),
		kgo.SessionTimeout(kclient.SessionTimeout),
		kgo.ConsumeTopics(cfg.Topology.Commands()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.AutoCommitMarks(),
		// Commit finished commands often: after a crash, what ran since the last commit runs again.
		kgo.AutoCommitInterval(200*time.Millisecond),
		kgo.BlockRebalanceOnPoll(),
	)
	if err != nil {
		return fmt.Errorf("executor: %w", err)
	}
	defer cl.Close()
	cfg.Metrics.AddReadyCheck("executor", cl.Ping)

	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			for _, e := range errs {
				cfg.Logger.Warn("executor: fetch", "topic", e.Topic, "partition", e.Partition, "err", e.Err)
			}
		}
		var wg sync.WaitGroup
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, r := range p.Records {
					// A shutdown mid-partition leaves the rest unmarked: it runs on the next start.
					if ctx.Err() != nil {
						return
					}
					executeRecord(ctx, cfg, executors, r)
					cl.MarkCommitRecords(r)
				}
			}()
		})
		wg.Wait()
		cl.AllowRebalance()
	}
	commitCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = cl.CommitMarkedOffsets(commitCtx)
	// The last poll blocked rebalances; leaving the group on Close needs them allowed again.
	cl.AllowRebalance()
	if err != nil {
		return fmt.Errorf("executor: commit on shutdown: %w", err)
	}
	return nil
}

func executeRecord(ctx context.Context, cfg ExecutorConfig, executors map[string]Executor, r *kgo.Record) {
	var cmd Command
	if err := json.Unmarshal(r.Value, &cmd); err != nil {
		cfg.Logger.Error("executor: skipping a record that is not a command",
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	log := cfg.Logger.With("sensor", cmd.Sensor, "trigger", cmd.Trigger, "commandID", cmd.ID)
	x, ok := executors[cmd.Type]
	if !ok {
		cfg.Metrics.Failures.WithLabelValues(cmd.Sensor, cmd.Trigger).Inc()
		log.Error("executor: command of an unknown trigger type", "type", cmd.Type)
		return
	}
	start := time.Now()
	err := runWithRetry(ctx, &cmd, x)
	cfg.Metrics.ExecSeconds.WithLabelValues(cmd.Sensor, cmd.Trigger).Observe(time.Since(start).Seconds())
	if err != nil {
		cfg.Metrics.Failures.WithLabelValues(cmd.Sensor, cmd.Trigger).Inc()
		log.Error("executor: trigger failed", "err", err)
		return
	}
	cfg.Metrics.Executions.WithLabelValues(cmd.Sensor, cmd.Trigger).Inc()
	log.Debug("executor: trigger done", "duration", time.Since(start))
}

// runWithRetry runs cmd, retrying as its retryStrategy says (one attempt without one).
func runWithRetry(ctx context.Context, cmd *Command, x Executor) error {
	attempts, wait, factor := 1, time.Duration(0), 1.0
	if r := cmd.Retry; r != nil {
		attempts, wait, factor = max(r.Steps, 1), r.Duration, r.Factor
	}
	var errs []error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(append(errs, ctx.Err())...)
			case <-time.After(wait):
			}
			wait = time.Duration(float64(wait) * factor)
		}
		err := x.Execute(ctx, cmd)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", i+1, err))
	}
	return errors.Join(errs...)
}
