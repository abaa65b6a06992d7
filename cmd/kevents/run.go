package main

import (
	"context"
	"encoding/json"
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
	"github.com/twmb/franz-go/pkg/kerr"

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

// stages are the parts of the pipeline a process runs.
type stages int

const (
	stageSources stages = 1 << iota
	stageSensor
	stageExecutor
	allStages = stageSources | stageSensor | stageExecutor
)

func (s stages) has(x stages) bool { return s&x != 0 }

// kinds are the definition kinds the stages read.
func (s stages) kinds() []string {
	var k []string
	if s.has(stageSources) {
		k = append(k, api.KindEventSource)
	}
	if s.has(stageSensor) {
		k = append(k, api.KindSensor)
	}
	return k
}

// runConfig is everything `kevents run` and the one-stage commands need; tests fill it directly.
type runConfig struct {
	stages         stages // zero means all
	paths          []string
	watchCluster   bool           // read definitions from the Kubernetes API instead of files
	watchNamespace string         // namespace watched with watchCluster; allNamespaces for every one
	watchArgo      bool           // also watch argoproj.io EventSources and Sensors
	kafka          kclient.Config // brokers empty: start the embedded broker
	externalTopics bool           // topics are managed elsewhere: never create or alter them
	dataDir        string
	brokerPort     int
	topology       *topology.Topology
	metricsAddr    string
	member         string
	secretsDir     string
	secretsNS      string // namespace of the Secrets and ConfigMaps read from the API; empty: the pod's
	kubeconfig     string
	publishTimeout time.Duration
	// readyNeedsSources: see --ready-needs-sources.
	readyNeedsSources bool
	reloadInterval    time.Duration // how often definition files are checked for changes; 0: never
	logger            *slog.Logger
	out               io.Writer // where the startup banner goes
	metrics           *metrics.Metrics
}

// running is what runAll reports once every stage is up.
type running struct {
	brokers     []string
	metricsAddr string
}

func newRunCmd(g *globalFlags) *cobra.Command {
	return newStageCmd(g, allStages, "run -f PATH [-f PATH...]", "Run sources, sensors and the executor in one process",
		`run loads the EventSources and Sensors under the given files and folders (or, with
--watch-cluster, from the Kubernetes API) and runs every stage in this process: the sources, the
sensor pool member and the executor pool member.

Without --brokers it starts an embedded Kafka-protocol broker that keeps its topics, records
and offsets in --data-dir, so a restart neither loses nor repeats anything; it prints the
broker's address, which any Kafka client (kcat, say) can use. With --brokers it uses that
cluster. Either way it creates the topics it needs first (see 'kevents topology').`)
}

// newStageCommands are `kevents source`, `kevents sensor` and `kevents executor`: one stage per
// process, each scaled by adding replicas to its consumer group.
func newStageCommands(g *globalFlags) []*cobra.Command {
	const shared = `

It needs --brokers: the stages of one installation meet in a shared Kafka cluster. Stop it with
SIGTERM: it leaves its consumer group cleanly, so its partitions move at once.`
	return []*cobra.Command{
		newStageCmd(g, stageSources, "source", "Run the EventSources only",
			"source runs the EventSources (webhooks, queues, schedules, ...) and writes their events to Kafka."+shared),
		newStageCmd(g, stageSensor, "sensor", "Run a sensor pool member only",
			"sensor runs a member of the sensor pool: it matches events, keeps join state and emits commands."+shared),
		newStageCmd(g, stageExecutor, "executor", "Run an executor pool member only",
			"executor runs a member of the executor pool: it runs the commands the sensors emit. It needs no\ndefinitions."+shared),
	}
}

func newStageCmd(g *globalFlags, st stages, use, short, long string) *cobra.Command {
	cfg := runConfig{stages: st}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.kafka, err = g.kafka(st == allStages); err != nil {
				return err
			}
			cfg.externalTopics = !g.manageTopic
			if err := cfg.checkFlags(); err != nil {
				return err
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
	if st.has(stageSources | stageSensor) {
		f.StringArrayVarP(&cfg.paths, "file", "f", nil, "a definitions file or folder (repeatable)")
		f.BoolVar(&cfg.watchCluster, "watch-cluster", false, "read EventSources and Sensors (kevents.io/v1alpha1) from the Kubernetes API and apply changes live, instead of -f")
		f.StringVar(&cfg.watchNamespace, "watch-namespace", defaultWatchNamespace(), "namespace watched with --watch-cluster; * for all namespaces")
		f.BoolVar(&cfg.watchArgo, "watch-argo", false, "with --watch-cluster, also run argoproj.io/v1alpha1 EventSources and Sensors (for clusters without Argo Events' controller)")
		f.DurationVar(&cfg.reloadInterval, "reload-interval", 2*time.Second, "how often to check the -f files for changes (0: never)")
	}
	if st == allStages {
		f.StringVar(&cfg.dataDir, "data-dir", defaultDataDir(), "folder of the embedded broker's data (ignored with --brokers)")
		f.IntVar(&cfg.brokerPort, "broker-port", 9092, "port of the embedded broker on 127.0.0.1 (ignored with --brokers)")
	}
	f.StringVar(&cfg.metricsAddr, "metrics-addr", "127.0.0.1:9090", "address serving /metrics, /healthz and /readyz")
	f.StringVar(&cfg.member, "member", host, "name of this member in the sensor, executor and owned-sources pools; stable across restarts and unique in the pool")
	f.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig file for --watch-cluster and the k8s and argoWorkflow triggers (default: $KUBECONFIG, else the pod's service account)")
	if st.has(stageSources | stageExecutor) {
		f.StringVar(&cfg.secretsDir, "secrets-dir", "", "folder with one folder per Secret and one file per key (<dir>/<name>/<key>); environment variables KEVENTS_SECRET_<NAME>__<KEY> are read too")
		f.StringVar(&cfg.secretsNS, "secrets-namespace", "", "namespace whose Secrets and ConfigMaps are read from the Kubernetes API when neither --secrets-dir nor the environment holds them (default: the pod's namespace, else default)")
	}
	if st.has(stageSources) {
		f.DurationVar(&cfg.publishTimeout, "publish-timeout", 10*time.Second, "how long a webhook waits for Kafka to acknowledge an event before answering 503")
		f.BoolVar(&cfg.readyNeedsSources, "ready-needs-sources", true, "/readyz fails while a source cannot reach its outside server (a broker, queue or API); turn off where webhooks share the process and must keep taking requests")
	}
	return cmd
}

// checkFlags enforces what the flags cannot say alone.
func (cfg *runConfig) checkFlags() error {
	needDefs := cfg.stages.has(stageSources | stageSensor)
	switch {
	case needDefs && len(cfg.paths) > 0 && cfg.watchCluster:
		return errors.New("-f and --watch-cluster: use one; definitions come from files or from the cluster")
	case needDefs && len(cfg.paths) == 0 && !cfg.watchCluster:
		return errors.New("-f: missing; give definition files or folders, or --watch-cluster")
	case cfg.watchArgo && !cfg.watchCluster:
		return errors.New("--watch-argo: only with --watch-cluster")
	case cfg.stages != allStages && len(cfg.kafka.Brokers) == 0:
		return errors.New("--brokers: missing; a single stage meets the others in a shared Kafka cluster (kevents run starts an embedded one)")
	}
	return nil
}

// runAll runs the configured stages until ctx ends. onReady, if set, is called once they are up.
func runAll(ctx context.Context, cfg runConfig, onReady func(running)) error {
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.out == nil {
		cfg.out = io.Discard
	}
	if cfg.stages == 0 {
		cfg.stages = allStages
	}
	m := cfg.metrics
	if m == nil {
		m = metrics.New()
	}

	kube, err := kubeConfig(cfg.kubeconfig)
	if err != nil {
		return err
	}
	kubeSecrets, err := secrets.NewKube(kube, cfg.secretsNS)
	if err != nil {
		return err
	}
	var (
		sources []*api.EventSource
		sensors []*api.Sensor
		loaded  []api.Document
		watch   *clusterWatch
	)
	switch {
	case cfg.watchCluster:
		if watch, err = newClusterWatch(kube, cfg.watchNamespace, cfg.watchArgo, cfg.stages.kinds(), log); err != nil {
			return err
		}
	case len(cfg.paths) > 0:
		docs, err := checkDocuments(cfg.paths)
		if err != nil {
			return err
		}
		var errs []error
		for _, d := range docs {
			if d.Err != nil {
				errs = append(errs, d.Err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("definitions cannot run (see 'kevents validate'):\n%w", err)
		}
		sources, sensors, loaded = split(docs)
		if len(sources)+len(sensors) == 0 {
			return fmt.Errorf("-f %s: no EventSource or Sensor found", strings.Join(cfg.paths, ", "))
		}
	}

	kc := cfg.kafka
	brokers := kc.Brokers
	if len(brokers) == 0 {
		b, err := broker.Start(cfg.dataDir, cfg.brokerPort)
		if err != nil {
			return err
		}
		defer b.Close()
		brokers = b.Addrs()
		fmt.Fprintf(cfg.out, "embedded Kafka broker listening on %s (data in %s)\n", strings.Join(brokers, ","), b.DataDir())
	}
	kc.Brokers = brokers

	admClient, err := kc.NewClient()
	if err != nil {
		return err
	}
	defer admClient.Close()
	adm := kadm.NewClient(admClient)
	applyTopics := func(ctx context.Context, docs []api.Document) error {
		if cfg.externalTopics {
			return nil
		}
		applyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		results, err := cfg.topology.Apply(applyCtx, adm, sourceTopics(cfg.topology, docs)...)
		for _, r := range results {
			log.Debug("topology", "result", r.String())
		}
		return err
	}
	if err := applyTopics(ctx, loaded); err != nil {
		return fmt.Errorf("topology: %w", err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	metricsAddr, err := m.Serve(runCtx, cfg.metricsAddr)
	if err != nil {
		return err
	}
	m.AddReadyCheck("kafka", admClient.Ping)
	// Lag of the groups whose members commit what they processed. The owned sources' group
	// (<prefix>.sources) only hands out partitions and commits nothing: its lag would be the
	// size of the topic, not work waiting.
	var groups []string
	if cfg.stages.has(stageSensor) {
		groups = append(groups, sensor.GroupID(cfg.topology))
	}
	if cfg.stages.has(stageExecutor) {
		groups = append(groups, trigger.GroupID(cfg.topology))
	}
	stopLag := m.ConsumerLag.Watch(adm.Lag, log, groups...)
	defer stopLag() // before admClient closes

	var wg sync.WaitGroup
	stageErrs := make(chan error, 4)
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
	if cfg.stages.has(stageExecutor) {
		goStage("executor", func() error {
			return trigger.RunExecutor(runCtx, trigger.ExecutorConfig{
				Kafka: kc, Topology: cfg.topology, Member: cfg.member, Metrics: m, Logger: log,
				Env: trigger.Env{Logger: log, Secrets: secrets.Resolver{Dir: cfg.secretsDir, Kube: kubeSecrets}, Kube: kube},
			})
		})
	}
	sensorUpdates := make(chan []*api.Sensor, 1)
	if cfg.stages.has(stageSensor) {
		goStage("sensor", func() error {
			return sensor.Run(runCtx, sensor.Config{
				Kafka: kc, Topology: cfg.topology, Sensors: sensors, Member: cfg.member, Metrics: m, Logger: log,
				Updates: sensorUpdates,
			})
		})
	}
	sourceUpdates := make(chan []*api.EventSource, 1)
	if cfg.stages.has(stageSources) {
		producer, err := kc.NewClient(source.ProducerOpts()...)
		if err != nil {
			stop()
			wg.Wait()
			return err
		}
		defer producer.Close()
		env := source.Env{
			Topology: cfg.topology, Publisher: source.KafkaPublisher{Client: producer},
			Secrets: secrets.Resolver{Dir: cfg.secretsDir, Kube: kubeSecrets}, Metrics: m, Logger: log,
			PublishTimeout: cfg.publishTimeout, Kafka: kc, Member: cfg.member, Kube: kube,
			ReadyNeedsSources: cfg.readyNeedsSources,
		}
		// Started here rather than in the stage, so that a port in use fails the start.
		waitSources, err := startSources(runCtx, env, sources, cfg.out)
		if err != nil {
			stop()
			wg.Wait()
			return err
		}
		goStage("sources", func() error { return superviseSources(runCtx, env, waitSources, sourceUpdates, cfg.out, log) })
	}

	// apply hands a new set of definitions to the stages; the newest set wins.
	var current struct{ sources, sensors string }
	current.sources, current.sensors = fingerprint(sources), fingerprint(sensors)
	apply := func(docs []checked) {
		var ok []checked
		for _, d := range docs {
			if d.Err == nil {
				ok = append(ok, d)
			}
		}
		srcs, sens, loaded := split(ok)
		if err := applyTopics(runCtx, loaded); err != nil {
			log.Error("definitions changed but their topics cannot be created; keeping the running ones", "err", err)
			return
		}
		if fp := fingerprint(sens); cfg.stages.has(stageSensor) && fp != current.sensors {
			current.sensors = fp
			replace(sensorUpdates, sens)
		}
		if fp := fingerprint(srcs); cfg.stages.has(stageSources) && fp != current.sources {
			current.sources = fp
			replace(sourceUpdates, srcs)
		}
	}
	switch {
	case watch != nil:
		goStage("definitions", func() error { return watch.run(runCtx, apply) })
	case cfg.reloadInterval > 0 && len(cfg.paths) > 0:
		go watchDefinitions(runCtx, cfg, log, apply)
	}

	what := fmt.Sprintf("%d eventsource(s), %d sensor(s)", len(sources), len(sensors))
	if watch != nil {
		what = "definitions from the Kubernetes API"
	}
	fmt.Fprintf(cfg.out, "kevents is running: %s; metrics on http://%s/metrics\n", what, metricsAddr)
	if onReady != nil {
		onReady(running{brokers: brokers, metricsAddr: metricsAddr.String()})
	}

	<-runCtx.Done()
	wg.Wait()
	if ctx.Err() != nil {
		leaveGroups(adm, cfg, log)
	}
	close(stageErrs)
	var stageErr []error
	for err := range stageErrs {
		stageErr = append(stageErr, err)
	}
	return errors.Join(stageErr...)
}

// leaveGroups takes this member out of its consumer groups after a stop that was asked for
// (SIGTERM, Ctrl-C). Members are static (--member is the group instance id) so that a crashed
// member restarted under its name takes its partitions back at once, and static members do not
// leave by closing; after a deliberate stop, leaving moves the partitions now instead of after
// the session timeout. A stage that failed does not leave: its supervisor restarts it.
func leaveGroups(adm *kadm.Client, cfg runConfig, log *slog.Logger) {
	var groups []string
	if cfg.stages.has(stageSensor) {
		groups = append(groups, sensor.GroupID(cfg.topology))
	}
	if cfg.stages.has(stageExecutor) {
		groups = append(groups, trigger.GroupID(cfg.topology))
	}
	if cfg.stages.has(stageSources) {
		groups = append(groups, cfg.topology.Sources()) // the owned sources' group
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, g := range groups {
		resps, err := adm.LeaveGroup(ctx, kadm.LeaveGroup(g).InstanceIDs(cfg.member))
		if errors.Is(err, kerr.GroupIDNotFound) {
			continue // never joined: no owned sources, say
		}
		if err != nil {
			log.Warn("cannot leave the consumer group; its partitions move after the session timeout", "group", g, "err", err)
			continue
		}
		for _, r := range resps {
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownMemberID) {
				log.Warn("cannot leave the consumer group; its partitions move after the session timeout", "group", g, "err", r.Err)
			}
		}
	}
}

// split sorts checked documents into EventSources and Sensors.
func split(docs []checked) (sources []*api.EventSource, sensors []*api.Sensor, loaded []api.Document) {
	for _, d := range docs {
		switch {
		case d.EventSource != nil:
			sources = append(sources, d.EventSource)
		case d.Sensor != nil:
			sensors = append(sensors, d.Sensor)
		}
		loaded = append(loaded, d.Document)
	}
	return sources, sensors, loaded
}

// fingerprint identifies a set of definitions by content, so unchanged sets are not reapplied.
func fingerprint[T any](defs []T) string {
	b, _ := json.Marshal(defs)
	return string(b)
}

// replace puts v in a one-slot channel, dropping a value not yet taken: only the newest matters.
func replace[T any](ch chan T, v T) {
	select {
	case <-ch:
	default:
	}
	ch <- v
}

// startSources runs a set of EventSources and prints their webhook addresses.
func startSources(ctx context.Context, env source.Env, sources []*api.EventSource, out io.Writer) (wait func() error, err error) {
	wait, err = source.Run(ctx, &env, sources)
	if err != nil {
		return nil, err
	}
	for _, es := range sources {
		for _, ev := range es.Spec.Events() {
			if ev.Webhook != nil {
				fmt.Fprintf(out, "webhook %s/%s: %s http://localhost:%s%s\n", es.Metadata.Name, ev.Name, ev.Webhook.Method, ev.Webhook.Port, ev.Webhook.Endpoint)
			}
		}
	}
	return wait, nil
}

// superviseSources runs the sources until ctx ends, restarting them with each new set. A
// restart stops the old set first (its webhooks answer until then, and acknowledge only what
// Kafka took), so ports are free for the new one. A set that cannot start is reported and the
// sources stay down until the next set: the stage keeps running and readiness says so.
func superviseSources(ctx context.Context, env source.Env, wait func() error, updates <-chan []*api.EventSource, out io.Writer, log *slog.Logger) error {
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	watch := func(wait func() error) { go func() { done <- wait() }() }
	running := wait != nil
	if running {
		watch(wait)
	}
	for {
		select {
		case <-ctx.Done():
			cancel()
			if running {
				return <-done
			}
			return nil
		case err := <-done:
			// An empty set, or pull sources that all finished, end without error: wait for
			// the next set. A source that failed takes the stage down.
			running = false
			if err != nil {
				cancel()
				return err
			}
		case next := <-updates:
			cancel()
			if running {
				if err := <-done; err != nil {
					return err
				}
			}
			log.Info("eventsources changed; restarting the sources", "eventsources", len(next))
			runCtx, cancel = context.WithCancel(ctx)
			w, err := startSources(runCtx, env, next, out)
			running = err == nil
			if err != nil {
				log.Error("the new eventsources cannot start; no sources run until they change", "err", err)
				continue
			}
			watch(w)
		}
	}
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
		log.Info("definitions changed; reloading")
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
