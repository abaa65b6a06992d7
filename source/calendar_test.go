package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/kclient"
	"github.com/kevents/kevents/internal/metrics"
	"github.com/kevents/kevents/topology"
)

// argoEventTimeLayout is how Argo's calendar reads eventTime back (after cutting the monotonic
// clock suffix): consumers that parse it keep working.
const argoEventTimeLayout = "2006-01-02 15:04:05.999999999 -0700 MST"

// ownedSession is the group session timeout of the owned-source tests: a failover takes about
// this long.
const ownedSession = 2 * time.Second

// Environment of a member run as a child process (see TestMain).
const (
	ownedMemberEnv  = "KEVENTS_TEST_OWNED_MEMBER"
	ownedBrokersEnv = "KEVENTS_TEST_OWNED_BROKERS"
	ownedYAMLEnv    = "KEVENTS_TEST_OWNED_YAML"
)

// TestMain runs an owned-source member instead of the tests when started as one by
// startOwnedMember, so that a test can SIGKILL it.
func TestMain(m *testing.M) {
	if member := os.Getenv(ownedMemberEnv); member != "" {
		os.Exit(runOwnedMember(member, strings.Split(os.Getenv(ownedBrokersEnv), ","), os.Getenv(ownedYAMLEnv)))
	}
	os.Exit(m.Run())
}

func runOwnedMember(member string, brokers []string, yaml string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var sources []*api.EventSource
	for _, d := range api.Parse("member.yaml", []byte(yaml)) {
		if d.Err != nil {
			fmt.Fprintln(os.Stderr, d.Err)
			return 2
		}
		sources = append(sources, d.EventSource)
	}
	topo, err := topology.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	env := ownedEnv(topo, brokers, member, os.Stderr)
	wait, err := Run(ctx, env, sources)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := wait(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func ownedEnv(topo *topology.Topology, brokers []string, member string, logs io.Writer) *Env {
	return &Env{
		Topology:       topo,
		Metrics:        metrics.New(),
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("member", member),
		PublishTimeout: 5 * time.Second,
		Kafka:          kclient.Config{Brokers: brokers},
		Member:         member,
		SessionTimeout: ownedSession,
	}
}

// ownedCluster is a broker with the sources topic (6 partitions, as topology makes it) and the
// topic of EventSource "cal" seeded. Its minimum session timeout is lowered so that failovers
// take ownedSession, not kfake's default minimum of 6 s.
type ownedCluster struct {
	t       *testing.T
	brokers []string
	topo    *topology.Topology
	kc      kclient.Config
}

func newOwnedCluster(t *testing.T) *ownedCluster {
	t.Helper()
	topo, err := topology.New()
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second),
		kfake.SeedTopics(6, topo.Sources()), kfake.SeedTopics(2, topo.SourceTopic("", "cal")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &ownedCluster{t: t, brokers: c.ListenAddrs(), topo: topo, kc: kclient.Config{Brokers: c.ListenAddrs()}}
}

// fire is one calendar event as a read_committed consumer sees it.
type fire struct {
	id, typ, source, subject string
	at                       time.Time // eventTime, parsed as Argo does
	data                     map[string]any
}

// fires reads every committed event of EventSource "cal", ordered by fire time.
func (c *ownedCluster) fires() []fire {
	c.t.Helper()
	var out []fire
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for p := int32(0); p < 2; p++ {
		err := c.kc.ReadPartition(ctx, c.topo.SourceTopic("", "cal"), p, func(r *kgo.Record) error {
			e := decode(c.t, r)
			var data map[string]any
			if err := json.Unmarshal(e.Data(), &data); err != nil {
				return err
			}
			s, _ := data["eventTime"].(string)
			at, err := time.Parse(argoEventTimeLayout, s)
			if err != nil {
				return fmt.Errorf("eventTime %q: %w", s, err)
			}
			out = append(out, fire{id: e.ID(), typ: e.Type(), source: e.Source(), subject: e.Subject(), at: at, data: data})
			return nil
		})
		if err != nil {
			c.t.Fatalf("read the events: %v", err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// waitFires waits until the topic holds fires satisfying ok, and returns them.
func (c *ownedCluster) waitFires(what string, timeout time.Duration, ok func([]fire) bool) []fire {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		fs := c.fires()
		if ok(fs) {
			return fs
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s; have %d fires", timeout, what, len(fs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkSequence fails unless fires are one every interval without a gap, and each once.
func checkSequence(t *testing.T, fs []fire, interval time.Duration) {
	t.Helper()
	ids := map[string]bool{}
	for i, f := range fs {
		if ids[f.id] {
			t.Errorf("fire %d at %s: id %s seen twice", i, f.at, f.id)
		}
		ids[f.id] = true
		if want := calendarEventID("default/cal/tick", f.at); f.id != want {
			t.Errorf("fire at %s: id %s, want %s", f.at, f.id, want)
		}
		if i > 0 && f.at.Sub(fs[i-1].at) != interval {
			t.Errorf("fire %d at %s follows %s: want one every %v, without gap or repeat", i, f.at, fs[i-1].at, interval)
		}
	}
}

func calendarYAML(fields string) string {
	return `apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: cal
spec:
  calendar:
    tick:
` + fields
}

// TestCalendarFires runs one member: the calendar fires every second with Argo's event shape,
// its last fire is recorded in its partition of the sources topic, and a member restarted
// without catch-up never fires a recorded time again.
func TestCalendarFires(t *testing.T) {
	c := newOwnedCluster(t)
	sources := parseEventSources(t, calendarYAML("      interval: 1s\n      metadata:\n        hello: world\n"))
	// Not a failover test: a session of ownedSession (2 s) can expire under a loaded -race run
	// of the whole suite (a 3 s gap was seen once), and the owner's restart, without catch-up,
	// rightly skips the fires missed meanwhile. A restart under the same name does not wait for
	// the session (static member).
	const session = 20 * time.Second
	env := ownedEnv(c.topo, c.brokers, "m1", io.Discard)
	env.SessionTimeout = session
	stop := runSources(t, env, sources)

	fs := c.waitFires("3 fires", 10*time.Second, func(fs []fire) bool { return len(fs) >= 3 })
	stop()
	fs = c.fires()
	checkSequence(t, fs, time.Second)
	for _, f := range fs {
		if f.typ != "calendar" || f.source != "cal" || f.subject != "tick" {
			t.Errorf("attributes type=%s source=%s subject=%s, want calendar, cal, tick", f.typ, f.source, f.subject)
		}
		if len(f.data) != 2 || fmt.Sprint(f.data["metadata"]) != "map[hello:world]" {
			t.Errorf("data %v, want Argo's {eventTime, metadata}", f.data)
		}
		if !f.at.Equal(f.at.Truncate(time.Second)) || f.at.Location().String() != "UTC" {
			t.Errorf("eventTime %s: want a whole second in UTC (the scheduled time)", f.at)
		}
	}
	if got := counter(t, env, "kevents_source_events_published_total"); got != float64(len(fs)) {
		t.Errorf("events published counter %v, want %d", got, len(fs))
	}

	// The last fire is the state of the calendar's key, in the partition the key maps to.
	key := "default/cal/tick"
	p := ownedPartition(key, 6)
	var states []calendarState
	err := c.kc.ReadPartition(context.Background(), c.topo.Sources(), p, func(r *kgo.Record) error {
		if string(r.Key) != key {
			return fmt.Errorf("record key %q in partition %d, want %q", r.Key, p, key)
		}
		var s calendarState
		states = append(states, s)
		return json.Unmarshal(r.Value, &states[len(states)-1])
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(states) == 0 || !states[len(states)-1].LastFire.Equal(fs[len(fs)-1].at) {
		t.Fatalf("last fire records %v, want the last one at %s", states, fs[len(fs)-1].at)
	}

	// Restarted under the same name, without catch-up: firing resumes after now, never before.
	time.Sleep(1500 * time.Millisecond)
	env = ownedEnv(c.topo, c.brokers, "m1", io.Discard)
	env.SessionTimeout = session
	runSources(t, env, sources)
	more := c.waitFires("fires after the restart", 10*time.Second, func(got []fire) bool { return len(got) >= len(fs)+2 })
	ids := map[string]bool{}
	for i, f := range more {
		if ids[f.id] || (i > 0 && !f.at.After(more[i-1].at)) {
			t.Fatalf("fire at %s repeated after the restart", f.at)
		}
		ids[f.id] = true
	}
	if missed := more[len(fs)].at.Sub(fs[len(fs)-1].at); missed < 2*time.Second {
		t.Errorf("first fire after the restart is %v after the last one; without catch-up the fires missed meanwhile are skipped", missed)
	}
}

func counter(t *testing.T, env *Env, family string) float64 {
	t.Helper()
	h := &harness{t: t, metrics: env.Metrics}
	return h.counter(family, "cal", "tick")
}

// startOwnedMember runs a member in a child process (this test binary, see TestMain), its logs
// in the test's log on failure. The test kills it at cleanup.
func startOwnedMember(t *testing.T, c *ownedCluster, member, yaml string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), ownedMemberEnv+"="+member, ownedBrokersEnv+"="+strings.Join(c.brokers, ","), ownedYAMLEnv+"="+yaml)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("member %s:\n%s", member, logs.String())
		}
	})
	return cmd
}

// sourcesOwner returns the member (instance id) the group assigned partition p of the sources
// topic, once the group is stable with the given number of members.
func (c *ownedCluster) sourcesOwner(p int32, members int) string {
	c.t.Helper()
	cl, err := c.kc.NewClient()
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		groups, err := adm.DescribeGroups(context.Background(), c.topo.Sources())
		g := groups[c.topo.Sources()]
		if err == nil && g.Err == nil && g.State == "Stable" && len(g.Members) == members {
			for _, m := range g.Members {
				a, ok := m.Assigned.AsConsumer()
				if !ok || m.InstanceID == nil {
					continue
				}
				for _, tp := range a.Topics {
					if tp.Topic == c.topo.Sources() && containsPartition(tp.Partitions, p) {
						return *m.InstanceID
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no stable group of %d members owning partition %d of %s", members, p, c.topo.Sources())
	return ""
}

func containsPartition(ps []int32, p int32) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// TestCalendarFailover runs two members as child processes and SIGKILLs the one that owns the
// calendar: the other takes over within the session timeout and catches up, so the fire times
// in the topic have no gap and no repeat.
func TestCalendarFailover(t *testing.T) {
	c := newOwnedCluster(t)
	yaml := calendarYAML("      interval: 1s\n      persistence:\n        catchup:\n          enabled: true\n")
	members := map[string]*exec.Cmd{
		"a": startOwnedMember(t, c, "a", yaml),
		"b": startOwnedMember(t, c, "b", yaml),
	}
	owner := c.sourcesOwner(ownedPartition("default/cal/tick", 6), 2)
	c.waitFires("2 fires before the crash", 15*time.Second, func(fs []fire) bool { return len(fs) >= 2 })

	if err := members[owner].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.waitFires("the survivor's first fire", ownedSession+8*time.Second, func(fs []fire) bool { return fs[len(fs)-1].at.After(killed) })
	took := time.Since(killed)
	t.Logf("member %s killed; the other one fired again %v later", owner, took.Round(10*time.Millisecond))
	fs := c.waitFires("3 s of fires after the crash", 10*time.Second, func(fs []fire) bool {
		return fs[len(fs)-1].at.After(killed.Add(3 * time.Second))
	})
	checkSequence(t, fs, time.Second)
}

// TestOwnedFencing takes a partition over while its owner still runs, as after a long pause
// or a network partition: the new owner's InitProducerID fences the old one, whose next commit
// fails, and the fires stay one per second without a repeat.
func TestOwnedFencing(t *testing.T) {
	c := newOwnedCluster(t)
	sources := parseEventSources(t, calendarYAML("      interval: 1s\n      persistence:\n        catchup:\n          enabled: true\n"))
	partition := func(member string) (*ownedRunner, ownedEntry) {
		env := ownedEnv(c.topo, c.brokers, member, io.Discard)
		b := Build{EventSource: sources[0], Event: sources[0].Spec.Events()[0], Topic: c.topo.SourceTopic("", "cal"), Env: env}
		src, err := newCalendar(b)
		if err != nil {
			t.Fatal(err)
		}
		return &ownedRunner{env: env, session: ownedSession}, newOwnedEntry(b, src)
	}
	p := ownedPartition("default/cal/tick", 6)
	zombie, entry := partition("zombie")
	zctx, zcancel := context.WithCancel(context.Background())
	defer zcancel()
	zerr := make(chan error, 1)
	go func() { zerr <- zombie.ownPartition(zctx, p, []ownedEntry{entry}, zombie.env.Logger) }()
	c.waitFires("2 fires of the first owner", 10*time.Second, func(fs []fire) bool { return len(fs) >= 2 })

	owner, entry := partition("owner")
	octx, ocancel := context.WithCancel(context.Background())
	oerr := make(chan error, 1)
	go func() { oerr <- owner.ownPartition(octx, p, []ownedEntry{entry}, owner.env.Logger) }()
	select {
	case err := <-zerr:
		if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) {
			t.Errorf("the first owner stopped with %v, want it fenced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first owner still runs 5 s after the partition was taken over")
	}
	taken := time.Now()
	fs := c.waitFires("2 fires of the new owner", 10*time.Second, func(fs []fire) bool {
		return fs[len(fs)-1].at.After(taken.Add(time.Second))
	})
	ocancel()
	if err := <-oerr; err != nil {
		t.Errorf("new owner: %v", err)
	}
	checkSequence(t, fs, time.Second)
}

// TestCalendarCheck: specs kevents cannot run are refused at load time, naming field, value and
// expectation.
func TestCalendarCheck(t *testing.T) {
	for _, tc := range []struct {
		name, fields string
		want         []string // substrings of the error; none: valid
		unsupported  bool
	}{
		{name: "argo example with a configMap", fields: "      schedule: \"* * * * *\"\n      persistence:\n        catchup: {enabled: true, maxDuration: 5m}\n        configMap: {createIfNotExist: true, name: test-configmap}\n"},
		{name: "timezone and exclusion dates", fields: "      schedule: \"30 * * * *\"\n      timezone: America/New_York\n      exclusionDates: [\"EXDATE:20190102T150405Z\", \"EXDATE:20190602T160210Z,20190603T160210Z\"]\n"},
		{name: "bad cron", fields: "      schedule: \"61 * * * *\"\n", want: []string{`spec.calendar.tick: schedule: "61 * * * *": `, "above maximum", "expected 5 cron fields"}},
		{name: "seconds field", fields: "      schedule: \"0 * * * * *\"\n", want: []string{`schedule: "0 * * * * *"`, "expected exactly 5 fields", "expected 5 cron fields"}},
		{name: "descriptor", fields: "      schedule: \"@every 1s\"\n", want: []string{`schedule: "@every 1s"; expected 5 cron fields`, "no descriptors", "use interval"}},
		{name: "never fires", fields: "      schedule: \"0 0 30 2 *\"\n", want: []string{`schedule: "0 0 30 2 *" matches no date`}},
		{name: "bad interval", fields: "      interval: soon\n", want: []string{`interval: "soon"; expected a Go duration of at least 1s`}},
		{name: "sub-second interval", fields: "      interval: 500ms\n", want: []string{`interval: "500ms"; expected a Go duration of at least 1s`}},
		{name: "neither", fields: "      metadata: {a: b}\n", want: []string{"schedule and interval: neither is set; expected"}},
		{name: "both", fields: "      schedule: \"* * * * *\"\n      interval: 10s\n", want: []string{`schedule "* * * * *" and interval "10s": both are set; expected one`}},
		{name: "bad timezone", fields: "      interval: 10s\n      timezone: Mars/Olympus\n", want: []string{`timezone: "Mars/Olympus": `, "expected an IANA time zone name"}},
		{name: "exclusion without prefix", fields: "      interval: 10s\n      exclusionDates: [\"2019-01-02\"]\n", want: []string{`exclusionDates[0]: "2019-01-02": no EXDATE: prefix; expected EXDATE:YYYYMMDDTHHMMSSZ`}},
		{name: "bad exclusion date", fields: "      interval: 10s\n      exclusionDates: [\"EXDATE:20190102\"]\n", want: []string{`exclusionDates[0]: "EXDATE:20190102": parsing time`}},
		{name: "bad maxDuration", fields: "      interval: 10s\n      persistence:\n        catchup: {enabled: true, maxDuration: 5 minutes}\n", want: []string{`persistence.catchup.maxDuration: "5 minutes"; expected a Go duration`}},
		{name: "filter", fields: "      interval: 10s\n      filter: {expression: \"true\"}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(parseEventSources(t, calendarYAML(tc.fields))[0])
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check accepted it; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if errors.Is(err, api.ErrNotSupported) != tc.unsupported {
				t.Errorf("errors.Is(%v, ErrNotSupported) = %v, want %v", err, !tc.unsupported, tc.unsupported)
			}
		})
	}

	// The loader is strict: a misspelt field is an error, not an ignored one.
	docs := api.Parse("cal.yaml", []byte(calendarYAML("      interval: 10s\n      persistence:\n        catchUp: {enabled: true}\n")))
	if len(docs) != 1 || docs[0].Err == nil || !strings.Contains(docs[0].Err.Error(), "spec.calendar.tick.persistence.catchUp: unknown field") {
		t.Errorf("misspelt field: %v", docs[0].Err)
	}
}

// TestCalendarSchedule checks fire times: exclusion dates skip whole days in the calendar's
// time zone, as in Argo, and the start point with and without catch-up.
func TestCalendarSchedule(t *testing.T) {
	settings := func(c api.CalendarEventSource) *calendarSettings {
		t.Helper()
		s, err := parseCalendar(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	hourly := settings(api.CalendarEventSource{Interval: "1h", ExclusionDates: []string{"EXDATE:20260102T150405Z"}})
	if got := hourly.next(utc("2026-01-01T23:00:00Z")); !got.Equal(utc("2026-01-03T00:00:00Z")) {
		t.Errorf("interval across an excluded day: next %s, want 2026-01-03T00:00:00Z", got)
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	daily := settings(api.CalendarEventSource{Schedule: "0 9 * * *", Timezone: "America/New_York",
		ExclusionDates: []string{"EXDATE:20260105T000000Z"}})
	from := time.Date(2026, 1, 4, 10, 0, 0, 0, ny)
	if got, want := daily.next(from), time.Date(2026, 1, 6, 9, 0, 0, 0, ny); !got.Equal(want) {
		t.Errorf("09:00 New York with Jan 5 excluded: next after %s is %s, want %s", from, got, want)
	}
	if got := daily.next(from).In(daily.loc).String(); got != "2026-01-06 09:00:00 -0500 EST" {
		t.Errorf("eventTime %q, want the time in the calendar's zone", got)
	}
	tz := settings(api.CalendarEventSource{Schedule: "TZ=Asia/Tokyo 0 9 * * *"})
	if got := tz.next(utc("2026-01-01T00:00:00Z")); !got.Equal(utc("2026-01-02T00:00:00Z")) {
		t.Errorf("TZ=Asia/Tokyo 09:00: next %s, want 2026-01-02T00:00:00Z", got)
	}

	now := utc("2026-01-01T12:00:00Z")
	last := utc("2026-01-01T11:00:00Z")
	for _, tc := range []struct {
		name string
		p    *api.EventPersistence
		last time.Time
		want time.Time
	}{
		{name: "never fired", p: &api.EventPersistence{Catchup: &api.CatchupConfiguration{Enabled: true}}, want: now},
		{name: "no catch-up", last: last, want: now},
		{name: "no catch-up, the last fire ahead of this clock", last: now.Add(2 * time.Second), want: now.Add(2 * time.Second)},
		{name: "catch-up", p: &api.EventPersistence{Catchup: &api.CatchupConfiguration{Enabled: true}}, last: last, want: last},
		{name: "catch-up within maxDuration", p: &api.EventPersistence{Catchup: &api.CatchupConfiguration{Enabled: true, MaxDuration: "2h"}}, last: last, want: last},
		{name: "catch-up beyond maxDuration", p: &api.EventPersistence{Catchup: &api.CatchupConfiguration{Enabled: true, MaxDuration: "10m"}}, last: last, want: now.Add(-10 * time.Minute)},
	} {
		s := settings(api.CalendarEventSource{Interval: "1m", Persistence: tc.p})
		if got := s.start(tc.last, now); !got.Equal(tc.want) {
			t.Errorf("%s: start %s, want %s", tc.name, got, tc.want)
		}
	}
}
