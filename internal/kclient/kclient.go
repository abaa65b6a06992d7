// Package kclient holds the franz-go client options every kevents stage shares, so that a
// setting (brokers, client id, TLS, SASL) is decided in one place.
package kclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
)

// SessionTimeout is the consumer-group session timeout of every stage. Members are static (the
// group instance id is the member name), so they do not leave the group on shutdown: a member
// that stopped for good hands its partitions over after this long; one that restarts under the
// same name gets them back at once.
const SessionTimeout = 15 * time.Second

// Config says how to reach the Kafka cluster.
type Config struct {
	Brokers  []string
	ClientID string
	// TLS, when set, encrypts every connection (Strimzi's TLS listener, say).
	TLS *tls.Config
	// SASL, when set, authenticates every connection.
	SASL sasl.Mechanism
}

// ParseBrokers splits a --brokers value ("host:port,host:port").
func ParseBrokers(s string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(s, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if !strings.Contains(b, ":") {
			return nil, fmt.Errorf("--brokers: %q; expected host:port", b)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, errors.New("--brokers: empty; expected host:port[,host:port...]")
	}
	return out, nil
}

// Opts returns the base options for a client of this cluster followed by extra.
func (c Config) Opts(extra ...kgo.Opt) []kgo.Opt {
	id := c.ClientID
	if id == "" {
		id = "kevents"
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.ClientID(id)}
	if c.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(c.TLS.Clone()))
	}
	if c.SASL != nil {
		opts = append(opts, kgo.SASL(c.SASL))
	}
	return append(opts, extra...)
}

// NewClient returns a client of this cluster.
func (c Config) NewClient(extra ...kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(c.Opts(extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client for %s: %w", strings.Join(c.Brokers, ","), err)
	}
	return cl, nil
}
