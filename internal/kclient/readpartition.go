package kclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadPartition calls fn, in offset order, for every committed data record of one partition,
// from its start up to its last stable offset as of the call: the way a member rebuilds the
// state it keeps for a partition (join state, executed commands) when it is assigned one.
//
// The caller must make sure no transaction that matters is still open on the partition (a
// previous owner's is finished once the group handed out stable offsets of a partition it
// consumed, or see AwaitSettled). An error from fn stops the read and is returned.
func (c Config) ReadPartition(ctx context.Context, topic string, p int32, fn func(*kgo.Record) error) error {
	cl, err := c.NewClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records are kept so the last offset before the stable end is always seen,
		// even when it is a transaction marker.
		kgo.KeepControlRecords(),
		kgo.FetchMaxPartitionBytes(8<<20),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("read %s/%d: list stable offsets: %w", topic, p, err)
	}
	end, ok := ends.Lookup(topic, p)
	if !ok || end.Err != nil {
		return fmt.Errorf("read %s/%d: no stable offset: %v", topic, p, end.Err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("read %s/%d: list start offsets: %w", topic, p, err)
	}
	if start, _ := starts.Lookup(topic, p); end.Offset <= start.Offset {
		return nil
	}
	for {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s/%d: %w", topic, p, err)
		}
		var errs []error
		for _, fe := range fetches.Errors() {
			errs = append(errs, fe.Err)
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("read %s/%d: %w", topic, p, err)
		}
		done := false
		var fnErr error
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end.Offset-1 {
				done = true
			}
			if fnErr != nil || r.Offset >= end.Offset || r.Attrs.IsControl() {
				return
			}
			if err := fn(r); err != nil {
				fnErr = fmt.Errorf("read %s/%d offset %d: %w", topic, p, r.Offset, err)
			}
		})
		if fnErr != nil {
			return fnErr
		}
		if done {
			return nil
		}
	}
}

// AwaitSettled returns once partition p of topic has no open transaction: its last stable
// offset has reached its end. ReadPartition then reads every record a previous writer will ever
// commit there. It polls until ctx ends; a writer that died with an open transaction settles
// when the transaction times out or its transactional id is fenced.
func (c Config) AwaitSettled(ctx context.Context, topic string, p int32) error {
	cl, err := c.NewClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		stable, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return fmt.Errorf("settle %s/%d: list stable offsets: %w", topic, p, err)
		}
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return fmt.Errorf("settle %s/%d: list end offsets: %w", topic, p, err)
		}
		s, sok := stable.Lookup(topic, p)
		e, eok := ends.Lookup(topic, p)
		if !sok || !eok || s.Err != nil || e.Err != nil {
			return fmt.Errorf("settle %s/%d: no offsets: %v", topic, p, errors.Join(s.Err, e.Err))
		}
		if s.Offset >= e.Offset {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("settle %s/%d: a transaction is still open (stable offset %d, end %d): %w", topic, p, s.Offset, e.Offset, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
