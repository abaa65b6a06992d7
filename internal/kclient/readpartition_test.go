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

// TestAwaitSettled: while a producer's transaction is open on the partition, AwaitSettled waits
// (and gives up with ctx, saying why); once it committed, it returns, and ReadPartition sees the
// transaction's records.
func TestAwaitSettled(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kc := Config{Brokers: c.ListenAddrs()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := kc.AwaitSettled(ctx, "state", 0); err != nil {
		t.Fatalf("empty partition: %v", err)
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

	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	err = kc.AwaitSettled(short, "state", 0)
	cancelShort()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "transaction is still open") {
		t.Fatalf("with a transaction open: %v; want it to wait and say a transaction is still open", err)
	}

	done := make(chan error, 1)
	go func() { done <- kc.AwaitSettled(ctx, "state", 0) }()
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("after the commit: %v", err)
	}
	var got []string
	if err := kc.ReadPartition(ctx, "state", 0, func(r *kgo.Record) error {
		got = append(got, string(r.Key)+"="+string(r.Value))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "k=v" {
		t.Errorf("read %v after settling, want [k=v]", got)
	}
}
