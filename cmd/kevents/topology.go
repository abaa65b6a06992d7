package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/sensor"
	"github.com/kevents/kevents/topology"
)

// sourceTopics lists the topics of the loaded EventSources and of the EventSources the loaded
// Sensors read.
func sourceTopics(t *topology.Topology, docs []api.Document) []string {
	seen := map[string]bool{}
	var sensors []*api.Sensor
	for _, d := range docs {
		if d.EventSource != nil {
			ns := d.EventSource.Metadata.Namespace
			seen[t.SourceTopic(ns, d.EventSource.Metadata.Name)] = true
		}
		if d.Sensor != nil {
			sensors = append(sensors, d.Sensor)
		}
	}
	for _, topic := range sensor.SourceTopics(t, sensors) {
		seen[topic] = true
	}
	out := make([]string, 0, len(seen))
	for topic := range seen {
		out = append(out, topic)
	}
	sort.Strings(out)
	return out
}

func newTopologyCmd(g *globalFlags) *cobra.Command {
	var paths []string
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "Create and inspect the Kafka topics kevents uses",
		Long: `topology manages kevents' topics on the cluster given by --brokers: the internal topics
(matches, state, commands, executed, dlq, sources) and one topic per EventSource found in the
definitions given with -f.`,
	}
	cmd.PersistentFlags().StringArrayVarP(&paths, "file", "f", nil, "definitions whose EventSource topics to include (repeatable)")

	// onCluster loads the definitions, connects to --brokers and runs fn with the topology and
	// the source topics the definitions name.
	onCluster := func(cmd *cobra.Command, fn func(ctx context.Context, t *topology.Topology, adm *kadm.Client, topics []string) error) error {
		if g.brokers == "" {
			return errors.New("--brokers: missing; topology needs a cluster (the embedded broker of a running 'kevents run' is at 127.0.0.1:9092 by default)")
		}
		t, err := g.topology()
		if err != nil {
			return err
		}
		var docs []api.Document
		if len(paths) > 0 {
			if docs, err = api.LoadPaths(paths...); err != nil {
				return err
			}
		}
		kc, err := g.kafka()
		if err != nil {
			return err
		}
		cl, err := kc.NewClient()
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
		defer cancel()
		return fn(ctx, t, kadm.NewClient(cl), sourceTopics(t, docs))
	}

	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create missing topics and align their configs (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return onCluster(cmd, func(ctx context.Context, t *topology.Topology, adm *kadm.Client, topics []string) error {
				results, err := t.Apply(ctx, adm, topics...)
				for _, r := range results {
					fmt.Fprintln(cmd.OutOrStdout(), r)
				}
				return err
			})
		},
	}
	describe := &cobra.Command{
		Use:   "describe",
		Short: "Show the topics and check co-partitioning (matches/state, commands/executed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return onCluster(cmd, func(ctx context.Context, t *topology.Topology, adm *kadm.Client, topics []string) error {
				report, err := t.Describe(ctx, adm, topics...)
				if report != nil {
					if werr := report.Write(cmd.OutOrStdout()); werr != nil {
						return werr
					}
				}
				return err
			})
		},
	}
	cmd.AddCommand(apply, describe)
	return cmd
}
