package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/broker"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/internal/secrets"
	"github.com/kevents/kevents/sensor"
	"github.com/kevents/kevents/source"
	"github.com/kevents/kevents/topology"
	"github.com/kevents/kevents/trigger"
)

// runConfig is everything `kevents run` needs; tests fill it directly.
type runConfig struct {
	paths          []string
	brokers        []string // empty: start the embedded broker
	dataDir        string
	brokerPort     int
	topology       *topology.Topology
	metricsAddr    string
	member         string
	secretsDir     string
	publishTimeout time.Duration
	reloadInterval time.Duration // how often definition files are checked for changes; 0: never
	logger         *slog.Logger
	out            io.Writer // where the startup banner goes
	metrics        *metrics.Metrics
}

// running is what runAll reports once every stage is up.
type running struct {
	brokers     []string
	metricsAddr string
}

func newRunCmd(g *globalFlags) *cobra.Command {
	cfg := runConfig{}
	cmd := &cobra.Command{
		Use:   "run -f PATH [-f PATH...]",
		Short: "Run sources, sensors and the executor in one process",
		Long: `run loads the EventSources and Sensors under the given files and folders and runs every
stage in this process: the sources, the sensor pool member and the executor pool member.

Without --brokers it starts an embedded Kafka-protocol broker that keeps its topics, records
and offsets in --data-dir, so a restart neither loses nor repeats anything; it prints the
broker's address, which any Kafka client (kcat, say) can use. With --brokers it uses that
cluster. Either way it creates the topics it needs first (see 'kevents topology').`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if g.brokers != "" {
				if cfg.brokers, err = kclient.ParseBrokers(g.brokers); err != nil {
					return err
				}
			}
			if cfg.topology, err = g.topology(); err != nil {
				return err
			}
			if cfg.logger, err = g.logger(); err != nil {
				return err
			}
			cfg.out = cmd.OutOrStdout()
			return runAll(cmd.Context(), cfg, nil)
		},
	}
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringArrayVarP(&cfg.paths, "file", "f", nil, "a definitions file or folder (repeatable)")
	f.StringVar(&cfg.dataDir, "data-dir", defaultDataDir(), "folder of the embedded broker's data (ignored with --brokers)")
	f.IntVar(&cfg.brokerPort, "broker-port", 9092, "port of the embedded broker on 127.0.0.1 (ignored with --brokers)")
	f.StringVar(&cfg.metricsAddr, "metrics-addr", "127.0.0.1:9090", "address serving /metrics, /healthz and /readyz")
	f.StringVar(&cfg.member, "member", host, "name of this member in the sensor pool; stable across restarts and unique in the pool")
	f.StringVar(&cfg.secretsDir, "secrets-dir", "", "folder with one folder per Secret and one file per key (<dir>/<name>/<key>); environment variables KEVENTS_SECRET_<NAME>__<KEY> are read too")
	f.DurationVar(&cfg.publishTimeout, "publish-timeout", 10*time.Second, "how long a webhook waits for Kafka to acknowledge an event before answering 503")
	f.DurationVar(&cfg.reloadInterval, "reload-interval", 2*time.Second, "how often to check the -f files for changed Sensors (0: never); EventSource changes need a restart")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

// runAll runs every stage until ctx ends. onReady, if set, is called once all stages are up.
func runAll(ctx context.Context, cfg runConfig, onReady func(running)) error {
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.out == nil {
		cfg.out = io.Discard
	}
	m := cfg.metrics
	if m == nil {
		m = metrics.New()
	}

	docs, err := checkDocuments(cfg.paths)
	if err != nil {
		return err
	}
	var (
		sources []*api.EventSource
		sensors []*api.Sensor
		loaded  []api.Document
		errs    []error
	)
	for _, d := range docs {
		switch {
		case d.Err != nil:
			errs = append(errs, d.Err)
		case d.EventSource != nil:
			sources = append(sources, d.EventSource)
		case d.Sensor != nil:
			sensors = append(sensors, d.Sensor)
		}
		loaded = append(loaded, d.Document)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("definitions cannot run (see 'kevents validate'):\n%w", err)
	}
	if len(sources)+len(sensors) == 0 {
		return fmt.Errorf("-f %s: no EventSource or Sensor found", strings.Join(cfg.paths, ", "))
	}

	brokers := cfg.brokers
	if len(brokers) == 0 {
		b, err := broker.Start(cfg.dataDir, cfg.brokerPort)
		if err != nil {
			return err
		}
		defer b.Close()
		brokers = b.Addrs()
		fmt.Fprintf(cfg.out, "embedded Kafka broker listening on %s (data in %s)\n", strings.Join(brokers, ","), b.DataDir())
	}
	kc := kclient.Config{Brokers: brokers}

	admClient, err := kc.NewClient()
	if err != nil {
		return err
	}
	defer admClient.Close()
	applyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	results, err := cfg.topology.Apply(applyCtx, kadm.NewClient(admClient), sourceTopics(cfg.topology, loaded)...)
	cancel()
	if err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	for _, r := range results {
		log.Debug("topology", "result", r.String())
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	metricsAddr, err := m.Serve(runCtx, cfg.metricsAddr)
	if err != nil {
		return err
	}
	m.AddReadyCheck("kafka", admClient.Ping)

	var wg sync.WaitGroup
	stageErrs := make(chan error, 3)
	goStage := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				stageErrs <- fmt.Errorf("%s: %w", name, err)
				stop() // one stage down takes the process down: a supervisor restarts it whole
			}
		}()
	}
	goStage("executor", func() error {
		return trigger.RunExecutor(runCtx, trigger.ExecutorConfig{
			Kafka: kc, Topology: cfg.topology, Member: cfg.member, Metrics: m, Logger: log,
			Env: trigger.Env{Logger: log, Secrets: secrets.Resolver{Dir: cfg.secretsDir}},
		})
	})
	updates := make(chan []*api.Sensor, 1)
	goStage("sensor", func() error {
		return sensor.Run(runCtx, sensor.Config{
			Kafka: kc, Topology: cfg.topology, Sensors: sensors, Member: cfg.member, Metrics: m, Logger: log,
			Updates: updates,
		})
	})
	if cfg.reloadInterval > 0 {
		adm := kadm.NewClient(admClient)
		go watchDefinitions(runCtx, cfg, log, func(docs []checked) {
			var next []*api.Sensor
			var loaded []api.Document
			for _, d := range docs {
				if d.Sensor != nil {
					next = append(next, d.Sensor)
				}
				loaded = append(loaded, d.Document)
			}
			applyCtx, cancel := context.WithTimeout(runCtx, 30*time.Second)
			defer cancel()
			if _, err := cfg.topology.Apply(applyCtx, adm, sourceTopics(cfg.topology, loaded)...); err != nil {
				log.Error("definitions changed but their topics cannot be created; keeping the running ones", "err", err)
				return
			}
			select { // only the newest set matters
			case <-updates:
			default:
			}
			updates <- next
		})
	}

	producer, err := kc.NewClient(source.ProducerOpts()...)
	if err != nil {
		stop()
		wg.Wait()
		return err
	}
	defer producer.Close()
	waitSources, err := source.Run(runCtx, &source.Env{
		Topology: cfg.topology, Publisher: source.KafkaPublisher{Client: producer},
		Secrets: secrets.Resolver{Dir: cfg.secretsDir}, Metrics: m, Logger: log,
		PublishTimeout: cfg.publishTimeout,
	}, sources)
	if err != nil {
		stop()
		wg.Wait()
		return err
	}
	goStage("sources", waitSources)

	for _, es := range sources {
		for _, ev := range es.Spec.Events() {
			if ev.Webhook != nil {
				fmt.Fprintf(cfg.out, "webhook %s/%s: %s http://localhost:%s%s\n", es.Metadata.Name, ev.Name, ev.Webhook.Method, ev.Webhook.Port, ev.Webhook.Endpoint)
			}
		}
	}
	fmt.Fprintf(cfg.out, "kevents is running: %d eventsource(s), %d sensor(s); metrics on http://%s/metrics\n", len(sources), len(sensors), metricsAddr)
	if onReady != nil {
		onReady(running{brokers: brokers, metricsAddr: metricsAddr.String()})
	}

	<-runCtx.Done()
	wg.Wait()
	close(stageErrs)
	var stageErr []error
	for err := range stageErrs {
		stageErr = append(stageErr, err)
	}
	return errors.Join(stageErr...)
}

// watchDefinitions checks the definition files every cfg.reloadInterval and hands the new
// documents to apply when they changed and all of them can run. Definitions that cannot run are
// reported and the running ones kept: nothing accepted is dropped because of a typo.
func watchDefinitions(ctx context.Context, cfg runConfig, log *slog.Logger, apply func([]checked)) {
	last := definitionsFingerprint(cfg.paths)
	t := time.NewTicker(cfg.reloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fp := definitionsFingerprint(cfg.paths)
		if fp == last {
			continue
		}
		last = fp
		docs, err := checkDocuments(cfg.paths)
		if err != nil {
			log.Error("definitions changed but cannot be read; keeping the running ones", "err", err)
			continue
		}
		var errs []error
		for _, d := range docs {
			if d.Err != nil {
				errs = append(errs, d.Err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			log.Error("definitions changed but cannot run; keeping the running ones", "err", err)
			continue
		}
		log.Info("definitions changed; reloading sensors")
		apply(docs)
	}
}

// definitionsFingerprint summarises the definition files' names, sizes and modification times.
func definitionsFingerprint(paths []string) string {
	var b strings.Builder
	for _, p := range paths {
		_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if info, err := d.Info(); err == nil {
				fmt.Fprintf(&b, "%s %d %d\n", path, info.Size(), info.ModTime().UnixNano())
			}
			return nil
		})
	}
	return b.String()
}
