package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/robfig/cron/v3"

	"github.com/kevents/kevents/api"
)

// calendarMaxFiresPerCommit bounds one transaction when a calendar catches up on many fires.
const calendarMaxFiresPerCommit = 500

func init() {
	RegisterOwned("calendar", Spec{
		Summary: "Fires on a cron schedule or at an interval, once in the cluster: the member that owns its partition of <prefix>.sources runs it and records each fire there, so a failover never repeats a fire and, with persistence.catchup, misses none.",
		Check: func(ev api.Event) error {
			c, specErr := specOf[api.CalendarEventSource](ev)
			if specErr != nil {
				return specErr
			}
			_, err := parseCalendar(c)
			return err
		},
	}, newCalendar)
}

// calendarParser reads schedules as Argo's calendar does: five fields, no descriptors.
var calendarParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// calendarEventData is Argo's CalendarEventData.
type calendarEventData struct {
	EventTime string            `json:"eventTime"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// calendarState is what a calendar commits with each fire: the scheduled time of its last fire.
type calendarState struct {
	LastFire time.Time `json:"lastFire"`
}

// calendarSettings is a calendar event's spec, checked and normalised.
type calendarSettings struct {
	schedule   cron.Schedule
	loc        *time.Location // where the schedule is read and fire times are shown
	exclusions []time.Time
	catchup    bool
	maxCatchup time.Duration // with bounded: how far back a catch-up goes
	bounded    bool
}

// parseCalendar validates a calendar event and returns its settings. Errors name the field
// (the caller adds spec.calendar.<event>), the value and what was expected.
func parseCalendar(c api.CalendarEventSource) (*calendarSettings, error) {
	s := &calendarSettings{loc: time.UTC}
	var errs []error
	if c.Timezone != "" {
		loc, err := time.LoadLocation(c.Timezone)
		if err != nil {
			errs = append(errs, fmt.Errorf("timezone: %q: %w; expected an IANA time zone name such as \"America/New_York\"", c.Timezone, err))
		} else {
			s.loc = loc
		}
	}
	switch {
	case c.Schedule != "" && c.Interval != "":
		errs = append(errs, fmt.Errorf("schedule %q and interval %q: both are set; expected one of them (Argo uses schedule and ignores interval)", c.Schedule, c.Interval))
	case strings.HasPrefix(strings.TrimSpace(c.Schedule), "@"):
		errs = append(errs, fmt.Errorf("schedule: %q; expected 5 cron fields (minute hour day-of-month month day-of-week) such as \"*/5 * * * *\": Argo's calendar accepts no descriptors such as @every or @daily (for a fixed period, use interval)", c.Schedule))
	case c.Schedule != "":
		sched, err := calendarParser.Parse(c.Schedule)
		if err != nil {
			errs = append(errs, fmt.Errorf("schedule: %q: %w; expected 5 cron fields (minute hour day-of-month month day-of-week) such as \"30 * * * *\"", c.Schedule, err))
			break
		}
		// Without a TZ= prefix the schedule is read in the calendar's time zone (Argo: the pod's
		// when none is set, UTC in its images), never in this machine's.
		if spec, ok := sched.(*cron.SpecSchedule); ok && spec.Location == time.Local {
			spec.Location = s.loc
		}
		if sched.Next(time.Now()).IsZero() {
			errs = append(errs, fmt.Errorf("schedule: %q matches no date; expected a schedule that fires", c.Schedule))
			break
		}
		s.schedule = sched
	case c.Interval != "":
		d, err := time.ParseDuration(c.Interval)
		if err != nil || d < time.Second {
			errs = append(errs, fmt.Errorf("interval: %q; expected a Go duration of at least 1s such as \"10s\" or \"1h30m\"", c.Interval))
			break
		}
		s.schedule = cron.ConstantDelaySchedule{Delay: d}
	default:
		errs = append(errs, errors.New("schedule and interval: neither is set; expected a cron schedule such as \"30 * * * *\" or an interval such as \"10s\""))
	}
	for i, v := range c.ExclusionDates {
		dates, err := parseExclusionDates(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("exclusionDates[%d]: %q: %w; expected EXDATE:YYYYMMDDTHHMMSSZ such as \"EXDATE:20190102T150405Z\" (several dates: comma-separated after one EXDATE:)", i, v, err))
		}
		s.exclusions = append(s.exclusions, dates...)
	}
	if p := c.Persistence; p != nil && p.Catchup != nil {
		s.catchup = p.Catchup.Enabled
		if m := p.Catchup.MaxDuration; m != "" {
			d, err := time.ParseDuration(m)
			if err != nil || d < 0 {
				errs = append(errs, fmt.Errorf("persistence.catchup.maxDuration: %q; expected a Go duration such as \"5m\" (empty: no limit)", m))
			}
			s.maxCatchup, s.bounded = d, true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// parseExclusionDates reads one RFC 5545 EXDATE value as Argo does. Argo silently ignores a
// value without the EXDATE: prefix; here it is an error, since it excludes nothing.
func parseExclusionDates(v string) ([]time.Time, error) {
	rest, ok := strings.CutPrefix(v, "EXDATE:")
	if !ok {
		return nil, errors.New("no EXDATE: prefix")
	}
	var out []time.Time
	for _, d := range strings.Split(rest, ",") {
		t, err := time.Parse("20060102T150405Z", d)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// next returns the first fire time after t that no exclusion date skips, or the zero time when
// the schedule has none.
func (s *calendarSettings) next(t time.Time) time.Time {
	for {
		n := s.schedule.Next(t)
		if n.IsZero() || !s.excluded(n) {
			return n
		}
		t = n
	}
}

// excluded reports whether t falls on an exclusion date. As in Argo, the date of the exclusion
// (in UTC) is compared with the date of the fire in the calendar's time zone.
func (s *calendarSettings) excluded(t time.Time) bool {
	t = t.In(s.loc)
	for _, x := range s.exclusions {
		if x.Year() == t.Year() && x.Month() == t.Month() && x.Day() == t.Day() {
			return true
		}
	}
	return false
}

// start returns the time after which the calendar fires next, given its last recorded fire
// (zero: none) and now. With catch-up it is the last fire, or now minus maxDuration when that is
// later; without, it is now (Argo fires nothing missed), but never before the last fire, so a
// member whose clock lags the previous owner's does not fire it again.
func (s *calendarSettings) start(last, now time.Time) time.Time {
	switch {
	case last.IsZero():
		return now
	case !s.catchup:
		if last.After(now) {
			return last
		}
		return now
	case s.bounded && now.Sub(last) > s.maxCatchup:
		return now.Add(-s.maxCatchup)
	}
	return last
}

// calendar is the calendar source (Argo's calendar event source), run by the member that owns
// it (see OwnedSource).
//
// Fire times are the scheduled times, computed from the last recorded fire, not the moments a
// timer woke up: each is fired once, in order, whoever owns the calendar. The event's data is
// Argo's CalendarEventData: eventTime is the scheduled time in the calendar's time zone (UTC
// when none is set), formatted as Go's time.Time.String (as Argo, without Argo's monotonic clock
// suffix), and metadata. The event id is derived from the calendar's key and the fire time, so
// consumers can dedupe too. The CloudEvent time is the moment of publishing, as in Argo.
//
// Catch-up (persistence.catchup.enabled): a member that takes the calendar over first fires,
// in order, every fire missed since the last recorded one, bounded by maxDuration. Argo needs a
// ConfigMap for this (persistence.configMap); kevents keeps the last fire in <prefix>.sources
// and ignores configMap. Without catch-up, fires missed while no member ran the calendar (a
// failover takes up to the group's session timeout) are not fired, as in Argo.
type calendar struct {
	b   Build
	cfg api.CalendarEventSource
	set *calendarSettings
	key string
	log *slog.Logger
}

func newCalendar(b Build) (OwnedSource, error) {
	cfg, specErr := specOf[api.CalendarEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	set, err := parseCalendar(cfg)
	if err != nil {
		return nil, err
	}
	return &calendar{b: b, cfg: cfg, set: set, key: ownedKey(b),
		log: b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name)}, nil
}

// RunOwned implements OwnedSource.
func (c *calendar) RunOwned(ctx context.Context, state []byte, commit Commit) error {
	env := c.b.Env
	ns, es, name := c.b.EventSource.Metadata.Namespace, c.b.EventSource.Metadata.Name, c.b.Event.Name
	var last calendarState
	if state != nil {
		if err := json.Unmarshal(state, &last); err != nil {
			c.log.Error("calendar: unreadable last fire record; starting as if it had never fired", "err", err)
			last = calendarState{}
		}
	}
	cursor := c.set.start(last.LastFire, time.Now())
	log := c.log
	if !last.LastFire.IsZero() {
		log = log.With("lastFire", last.LastFire)
	}
	log.Info("calendar: running", "firesAfter", cursor, "catchup", c.set.catchup)
	for {
		now := time.Now()
		var fires []time.Time
		for t := c.set.next(cursor); !t.IsZero() && !t.After(now) && len(fires) < calendarMaxFiresPerCommit; t = c.set.next(t) {
			fires = append(fires, t)
		}
		if len(fires) == 0 {
			next := c.set.next(cursor)
			if next.IsZero() {
				c.log.Warn("calendar: the schedule has no more fire times")
				<-ctx.Done()
				return nil
			}
			timer := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil
			case <-timer.C:
			}
			continue
		}
		events := make([]cloudevents.Event, 0, len(fires))
		for _, t := range fires {
			e, err := c.event(t)
			if err != nil {
				return err
			}
			events = append(events, e)
		}
		newState, err := json.Marshal(calendarState{LastFire: fires[len(fires)-1].UTC()})
		if err != nil {
			return fmt.Errorf("encode the last fire: %w", err)
		}
		env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(fires)))
		if err := commit(ctx, events, newState); err != nil {
			env.Metrics.PublishFailed(ns, es, name, len(fires))
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		env.Metrics.Published(ns, es, name, len(fires))
		if len(fires) > 1 {
			c.log.Info("calendar: caught up on missed fires", "fires", len(fires), "from", fires[0], "to", fires[len(fires)-1])
		} else {
			c.log.Debug("calendar: fired", "time", fires[0])
		}
		cursor = fires[len(fires)-1]
	}
}

// event builds the CloudEvent of the fire at t.
func (c *calendar) event(t time.Time) (cloudevents.Event, error) {
	return c.b.NewEvent(calendarEventID(c.key, t), time.Now().UTC(), calendarEventData{EventTime: t.In(c.set.loc).String(), Metadata: c.cfg.Metadata})
}

// calendarEventID is the id of the fire at t of the calendar with the given key: the same
// whichever member fires it.
func calendarEventID(key string, t time.Time) string {
	sum := sha256.Sum256([]byte(key + "@" + t.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(sum[:16])
}
