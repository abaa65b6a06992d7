package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"sigs.k8s.io/yaml"

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
		Short: "Create, inspect or render the Kafka topics kevents uses",
		Long: `topology manages kevents' topics on the cluster given by --brokers: the internal topics
(matches, state, commands, executed, dlq, sources) and one topic per EventSource found in the
definitions given with -f. 'render' prints them, and a Kafka user per stage, as Strimzi
resources instead.`,
	}
	cmd.PersistentFlags().StringArrayVarP(&paths, "file", "f", nil, "definitions whose EventSource topics to include (repeatable)")

	// onCluster loads the definitions, connects to --brokers and runs fn with the topology and
	// the source topics the definitions name.
	onCluster := func(cmd *cobra.Command, fn func(ctx context.Context, t *topology.Topology, adm *kadm.Client, topics []string) error) error {
		if g.brokers == "" {
			return errors.New("--brokers: missing; topology needs a cluster (the embedded broker of a running 'kevents run' is at 127.0.0.1:9092 by default)")
		}
		t, topics, err := loadSourceTopics(g, paths)
		if err != nil {
			return err
		}
		kc, err := g.kafka(false)
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
		return fn(ctx, t, kadm.NewClient(cl), topics)
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
	cmd.AddCommand(apply, describe, newRenderCmd(g, &paths))
	return cmd
}

// loadSourceTopics returns the topology of the global flags and the source topics of the
// definitions under paths. A document that does not load is an error: rendering or creating
// topics without it would leave its EventSource's topic out.
func loadSourceTopics(g *globalFlags, paths []string) (*topology.Topology, []string, error) {
	t, err := g.topology()
	if err != nil {
		return nil, nil, err
	}
	if len(paths) == 0 {
		return t, nil, nil
	}
	docs, err := api.LoadPaths(paths...)
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, d := range docs {
		if d.Err != nil {
			errs = append(errs, d.Err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return t, sourceTopics(t, docs), nil
}

func newRenderCmd(g *globalFlags, paths *[]string) *cobra.Command {
	var (
		format string
		o      topology.StrimziOptions
	)
	cmd := &cobra.Command{
		Use:   "render --format strimzi",
		Short: "Print Strimzi KafkaTopic and KafkaUser resources for kevents' topics and stages",
		Long: `render prints, as YAML for kubectl apply, what Strimzi's Topic and User Operators need to run
kevents without letting it create topics or use a superuser:

  - a KafkaTopic for every topic kevents uses (the internal topics and the topics of the
    EventSources found with -f), with the partitions, replication factor and configs that
    'topology apply' would set;
  - a KafkaUser per stage (<prefix>-source, <prefix>-sensor, <prefix>-executor) with simple
    authorization: ACLs that allow what that stage does and nothing else.

With -f, the source and sensor users get each EventSource topic by name; without, by the prefix
<prefix>.src., so EventSources can be added without rendering users again. Render again and
apply after adding EventSources with -f. To create topics on a cluster directly instead, use
'kevents topology apply'. No cluster is contacted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "strimzi" {
				return fmt.Errorf("--format: %q; expected strimzi (to create the topics on a cluster directly, use 'kevents topology apply')", format)
			}
			t, topics, err := loadSourceTopics(g, *paths)
			if err != nil {
				return err
			}
			res, err := t.Strimzi(o, topics...)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for i, obj := range res.Objects() {
				data, err := yaml.Marshal(obj)
				if err != nil {
					return err
				}
				if i > 0 {
					fmt.Fprintln(w, "---")
				}
				if _, err := w.Write(data); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "strimzi", "output format: strimzi (KafkaTopic and KafkaUser custom resources)")
	f.StringVar(&o.Cluster, "cluster", "my-cluster", "name of the Strimzi Kafka resource (the strimzi.io/cluster label)")
	f.StringVarP(&o.Namespace, "namespace", "n", "", "namespace of the resources; empty: left to kubectl (the operators watch the Kafka cluster's namespace by default)")
	f.StringVar(&o.APIVersion, "strimzi-api", topology.StrimziV1, "kafka.strimzi.io version: v1 (Strimzi 0.49 and later) or v1beta2 (Strimzi 0.22 to 0.49)")
	f.StringVar(&o.Authentication, "authentication", topology.AuthTLS, "KafkaUser authentication: tls or scram-sha-512")
	return cmd
}
