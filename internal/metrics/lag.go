package metrics

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// LagFunc returns the lag of consumer groups; (*kadm.Client).Lag is one.
type LagFunc func(ctx context.Context, groups ...string) (kadm.DescribedGroupLags, error)

// lagTimeout bounds the questions one scrape asks the cluster: a slow cluster costs the lag
// series of that scrape, not the whole scrape.
const lagTimeout = 5 * time.Second

// ConsumerLag is the collector of kevents_consumer_lag: on each scrape it asks the cluster for
// the lag of the groups given to Watch. Lag lives in the cluster, not in the members, so this is
// computed when asked rather than kept up to date.
type ConsumerLag struct {
	desc *prometheus.Desc

	mu     sync.Mutex
	lag    LagFunc
	groups []string
	log    *slog.Logger
}

// Watch makes the collector report the lag of groups, asked through lag, until stop is called
// (before lag's client closes). Outside of that the collector reports nothing.
func (c *ConsumerLag) Watch(lag LagFunc, log *slog.Logger, groups ...string) (stop func()) {
	if log == nil {
		log = slog.Default()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lag, c.log, c.groups = lag, log, groups
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.lag, c.groups = nil, nil
	}
}

// Describe implements prometheus.Collector.
func (c *ConsumerLag) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector. A group or partition whose lag the cluster cannot
// tell is left out and logged: a made-up value would be worse than a gap.
func (c *ConsumerLag) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	lag, log, groups := c.lag, c.log, c.groups
	c.mu.Unlock()
	if lag == nil || len(groups) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), lagTimeout)
	defer cancel()
	lags, err := lag(ctx, groups...)
	if err != nil {
		log.Warn("metrics: cannot read consumer lag", "groups", groups, "err", err)
		return
	}
	for _, g := range lags.Sorted() {
		if err := g.Error(); err != nil {
			// A group that never started (the sources group of a process without owned
			// sources, say) has no lag to report.
			if !errors.Is(err, kerr.GroupIDNotFound) {
				log.Warn("metrics: cannot read consumer lag", "group", g.Group, "err", err)
			}
			continue
		}
		for _, l := range g.Lag.Sorted() {
			if l.Err != nil {
				log.Debug("metrics: no lag for a partition", "group", g.Group, "topic", l.Topic, "partition", l.Partition, "err", l.Err)
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(l.Lag), g.Group, l.Topic, strconv.Itoa(int(l.Partition)))
		}
	}
}
