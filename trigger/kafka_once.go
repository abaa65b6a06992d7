package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/topology"
)

// Bus is the Kafka cluster kevents itself runs on, as trigger types may need it: a kafka
// trigger whose target is this cluster produces exactly once (see onceProducer).
type Bus struct {
	Kafka    kclient.Config
	Topology *topology.Topology
}

// onTheBus reports whether a kafka trigger's target is the bus and can be written exactly once:
// it names one of the bus's brokers, and sets no TLS, SASL or leader-only acks of its own (its
// record then goes out with the bus's connection settings; transactions need all acks).
// A target reached under another address is not recognised and gets at-least-once delivery.
func (b *Bus) onTheBus(r *KafkaRequest) bool {
	if b == nil || b.Topology == nil || r.TLS != nil || r.SASL != nil || r.RequiredAcks == 1 {
		return false
	}
	for _, t := range r.Brokers {
		for _, own := range b.Kafka.Brokers {
			if t == own {
				return true
			}
		}
	}
	return false
}

// onceProducer writes a kafka trigger's record to the bus exactly once: the record and the
// command's outcome go to Kafka in one transaction, so a command redelivered after a crash
// either finds its outcome (and is skipped) or finds no record written (and runs again).
//
// Invariant: one transactional id per commands partition, "<prefix>.executor.kafka.p<N>". The
// member that runs partition N's commands loads the producer id before its first transaction,
// which fences a previous owner still running (a zombie); it then looks in the executed
// partition for the command, which the zombie may have committed just before being fenced.
type onceProducer struct {
	bus *Bus

	mu    sync.Mutex
	parts map[int32]*onceClient
}

type onceClient struct {
	mu sync.Mutex // one transaction at a time per transactional id
	cl *kgo.Client
}

func (o *onceProducer) client(p int32) *onceClient {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.parts == nil {
		o.parts = map[int32]*onceClient{}
	}
	c := o.parts[p]
	if c == nil {
		c = &onceClient{}
		o.parts[p] = c
	}
	return c
}

// produce writes rec and the outcome of cmd, in partition p of the executed topic, in one
// transaction.
func (o *onceProducer) produce(ctx context.Context, cmd *Command, rec *kgo.Record) error {
	p := cmd.partition
	c := o.client(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if c.cl == nil {
			cl, done, err := o.takeOver(ctx, p, cmd.ID)
			if err != nil {
				return err
			}
			if done {
				return nil
			}
			c.cl = cl
		}
		err := o.transact(ctx, c.cl, p, cmd, rec)
		if err == nil {
			return nil
		}
		if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
			// Another member took the partition since: start over as its owner, once.
			c.cl.Close()
			c.cl = nil
			if attempt == 0 {
				continue
			}
		}
		return err
	}
}

// takeOver creates partition p's transactional client, fencing any previous owner, and reports
// whether command id was committed already.
func (o *onceProducer) takeOver(ctx context.Context, p int32, id string) (*kgo.Client, bool, error) {
	executed := o.bus.Topology.Executed()
	cl, err := o.bus.Kafka.NewClient(
		kgo.TransactionalID(o.bus.Topology.Prefix()+".executor.kafka.p"+strconv.Itoa(int(p))),
		kgo.TransactionTimeout(30*time.Second),
		kgo.RecordPartitioner(outcomePartitioner{executed: executed}),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(topology.MaxRecordBytes),
	)
	if err != nil {
		return nil, false, err
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		cl.Close()
		return nil, false, fmt.Errorf("kafka trigger: take over transactions of commands partition %d: %w", p, err)
	}
	done := false
	err = o.bus.Kafka.ReadPartition(ctx, executed, p, func(r *kgo.Record) error {
		if string(r.Key) == id {
			done = true
		}
		return nil
	})
	if err != nil {
		cl.Close()
		return nil, false, fmt.Errorf("kafka trigger: read executed partition %d: %w", p, err)
	}
	return cl, done, nil
}

func (o *onceProducer) transact(ctx context.Context, cl *kgo.Client, p int32, cmd *Command, rec *kgo.Record) error {
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	out, _ := json.Marshal(Outcome{ID: cmd.ID, Namespace: cmd.Namespace, Sensor: cmd.Sensor, Trigger: cmd.Trigger,
		Succeeded: true, Attempts: 1, FinishedAt: time.Now().UTC()})
	var (
		mu      sync.Mutex
		prodErr error
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			prodErr = errors.Join(prodErr, err)
			mu.Unlock()
		}
	}
	cl.Produce(ctx, rec, done)
	cl.Produce(ctx, &kgo.Record{Topic: o.bus.Topology.Executed(), Partition: p, Key: []byte(cmd.ID), Value: out}, done)
	if err := cl.Flush(ctx); err != nil {
		prodErr = errors.Join(prodErr, err)
	}
	mu.Lock()
	commit := prodErr == nil
	mu.Unlock()
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return errors.Join(prodErr, err)
	}
	if !commit {
		return fmt.Errorf("kafka trigger: transaction aborted: %w", prodErr)
	}
	return nil
}

func (o *onceProducer) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, c := range o.parts {
		if c.cl != nil {
			c.cl.Close()
		}
	}
}
