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
// state it keeps for a partition (executed commands) when it is assigned one.
//
// The caller must make sure no transaction that matters is still open on the partition (a
// previous owner's is finished once the group handed out stable offsets of a partition it
// consumed), or use ReadSettledPartition. An error from fn stops the read and is returned.
func (c Config) ReadPartition(ctx context.Context, topic string, p int32, fn func(*kgo.Record) error) error {
	return c.readPartition(ctx, topic, p, false, fn)
}

// ReadSettledPartition is ReadPartition that first waits until the partition has settled, with
// no transaction open on it (its last stable offset has reached its end), so that it reads
// everything a previous writer will ever commit there: for state whose writer's transactions
// the group's stable offsets do not cover. A writer that died with an open transaction settles
// when the transaction times out or its transactional id is fenced; ctx bounds the wait.
func (c Config) ReadSettledPartition(ctx context.Context, topic string, p int32, fn func(*kgo.Record) error) error {
	return c.readPartition(ctx, topic, p, true, fn)
}

func (c Config) readPartition(ctx context.Context, topic string, p int32, settle bool, fn func(*kgo.Record) error) error {
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
	end, err := stableEnd(ctx, adm, topic, p, settle)
	if err != nil {
		return err
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

// stableEnd returns the last stable offset of partition p; with settle, once it has reached the
// partition's end (no transaction open).
func stableEnd(ctx context.Context, adm *kadm.Client, topic string, p int32, settle bool) (kadm.ListedOffset, error) {
	for {
		s, err := offsetOf(ctx, adm.ListCommittedOffsets, "stable", topic, p)
		if err != nil || !settle {
			return s, err
		}
		e, err := offsetOf(ctx, adm.ListEndOffsets, "end", topic, p)
		if err != nil {
			return s, err
		}
		if s.Offset >= e.Offset {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("read %s/%d: a transaction is still open (stable offset %d, end %d): %w", topic, p, s.Offset, e.Offset, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// offsetOf lists one kind of offset of topic and returns partition p's.
func offsetOf(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), kind, topic string, p int32) (kadm.ListedOffset, error) {
	offs, err := list(ctx, topic)
	if err != nil {
		return kadm.ListedOffset{}, fmt.Errorf("read %s/%d: list %s offsets: %w", topic, p, kind, err)
	}
	o, ok := offs.Lookup(topic, p)
	if !ok || o.Err != nil {
		return kadm.ListedOffset{}, fmt.Errorf("read %s/%d: no %s offset: %v", topic, p, kind, o.Err)
	}
	return o, nil
}
