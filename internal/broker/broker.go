// Package broker runs the embedded Kafka-protocol broker (franz-go's kfake) that `kevents run`
// uses when no --brokers are given. It speaks the real wire protocol, so kcat and any Kafka
// client can connect to it.
package broker

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	dataDir string
}

// Start opens (or creates) the broker's data directory and listens on 127.0.0.1:port (0 picks a
// free port). Topics, records, committed offsets and transactions survive a restart on the same
// data directory.
func Start(dataDir string, port int) (*Broker, error) {
	if dataDir == "" {
		return nil, fmt.Errorf("embedded broker: data dir is empty; expected a folder path")
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded broker: port %d; expected 0-65535", port)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded broker: data dir %q: %w", dataDir, err)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(dataDir),
		// kfake compacts only when the cleaner runs; a short backoff keeps compacted topics
		// (state, executed) from growing without bound in long quickstart runs.
		kfake.BrokerConfigs(map[string]string{
			"log.cleaner.backoff.ms": strconv.Itoa(int((30 * time.Second).Milliseconds())),
		}),
		// A member that dies is noticed after the session timeout; kfake's minimum is 6 s.
		kfake.GroupMinSessionTimeout(6*time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: start on port %d with data dir %q: %w", port, dataDir, err)
	}
	return &Broker{cluster: c, dataDir: dataDir}, nil
}

// Addrs returns the addresses clients connect to.
func (b *Broker) Addrs() []string { return b.cluster.ListenAddrs() }

// DataDir returns the folder holding the broker's data.
func (b *Broker) DataDir() string { return b.dataDir }

// Close stops the broker and flushes its data to disk.
func (b *Broker) Close() { b.cluster.Close() }
