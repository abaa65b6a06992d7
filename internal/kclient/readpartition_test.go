package kclient

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReadSettledPartition: while a producer's transaction is open on the partition,
// ReadSettledPartition waits (and gives up with ctx, saying why); a read that started
// while it was open returns, once it committed, with the transaction's records.
func TestReadSettledPartition(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kc := Config{Brokers: c.ListenAddrs()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	read := func(ctx context.Context) ([]string, error) {
		var got []string
		err := kc.ReadSettledPartition(ctx, "state", 0, func(r *kgo.Record) error {
			got = append(got, string(r.Key)+"="+string(r.Value))
			return nil
		})
		return got, err
	}

	if got, err := read(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty partition: %v, %v", got, err)
	}
	prod, err := kc.NewClient(kgo.TransactionalID("writer"), kgo.DefaultProduceTopic("state"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Long enough for the first admin requests even on a loaded CI runner (300 ms once ran out
	// inside ListOffsets, before any wait); short enough to keep the test quick.
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	_, err = read(short)
	cancelShort()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "transaction is still open") {
		t.Fatalf("with a transaction open: %v; want it to wait and say a transaction is still open", err)
	}

	type result struct {
		got []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := read(ctx)
		done <- result{got, err}
	}()
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || len(r.got) != 1 || r.got[0] != "k=v" {
		t.Errorf("read across the commit: %v, %v; want [k=v]", r.got, r.err)
	}
}
