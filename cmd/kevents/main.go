// Command kevents is Argo Events, Kafka-native: one binary that runs event sources, sensors and
// the trigger executor against an embedded broker or any Kafka cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/topology"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globalFlags are the flags every command shares.
type globalFlags struct {
	brokers     string
	topicPrefix string
	partitions  int32
	replication int16
	logLevel    string
	manageTopic bool
	security    kafkaSecurity
}

func (g *globalFlags) topology() (*topology.Topology, error) {
	return topology.New(topology.Prefix(g.topicPrefix), topology.Partitions(g.partitions), topology.ReplicationFactor(g.replication))
}

// kafka is the Kafka connection the flags describe; brokers may be empty only when allowed.
func (g *globalFlags) kafka(brokersOptional bool) (kclient.Config, error) {
	var c kclient.Config
	if g.brokers != "" || !brokersOptional {
		b, err := kclient.ParseBrokers(g.brokers)
		if err != nil {
			return c, err
		}
		c.Brokers = b
	}
	if err := g.security.apply(&c); err != nil {
		return c, err
	}
	if len(c.Brokers) == 0 && (c.TLS != nil || c.SASL != nil) {
		return c, errors.New("--kafka-tls* and --kafka-sasl-*: only with --brokers; the embedded broker speaks plaintext")
	}
	return c, nil
}

// bindEnv gives every flag an environment variable, KEVENTS_ and the flag's name in capitals
// with - as _ (KEVENTS_BROKERS, KEVENTS_KAFKA_SASL_MECHANISM), used when the flag is not given:
// containers are configured through the environment.
func bindEnv(cmd *cobra.Command) error {
	var errs []error
	set := func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		name := "KEVENTS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %q: %w", name, v, err))
			}
		}
	}
	cmd.Flags().VisitAll(set)
	cmd.InheritedFlags().VisitAll(set)
	return errors.Join(errs...)
}

func (g *globalFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %q; expected debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "kevents",
		Short: "Argo Events, Kafka-native: event sources, sensors and triggers on Kafka",
		Long: `kevents reads Argo Events EventSource and Sensor YAML and runs them on Kafka:
sources produce CloudEvents to Kafka topics, sensors match them in Kafka transactions and
emit trigger commands, and the executor runs the triggers.

Without --brokers, 'kevents run' starts an embedded Kafka-protocol broker.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return bindEnv(cmd) },
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.brokers, "brokers", "", "Kafka bootstrap brokers host:port[,host:port...]; empty: 'run' starts the embedded broker")
	pf.StringVar(&g.topicPrefix, "topic-prefix", "kevents", "prefix of every topic kevents uses")
	pf.Int32Var(&g.partitions, "partitions", 12, "partitions of the topics kevents creates")
	pf.Int16Var(&g.replication, "replication-factor", -1, "replication factor of the topics kevents creates (-1: the broker's default)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.BoolVar(&g.manageTopic, "manage-topics", true, "create kevents' topics and align their configs at start; false where they are managed elsewhere (Strimzi KafkaTopics, see 'kevents topology render')")
	g.security.addFlags(pf)
	root.AddCommand(newRunCmd(g), newValidateCmd(), newTopologyCmd(g), newVersionCmd())
	root.AddCommand(newStageCommands(g)...)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kevents version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "kevents %s\n", version)
		},
	}
}

func defaultDataDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "kevents", "broker")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "kevents: "+strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}
