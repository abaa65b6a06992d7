package sensor

import (
	"fmt"
	"time"

	"github.com/kevents/kevents/api"
)

// timeFilter is a compiled `time` filter: a daily window [start, stop) in a time zone. It is
// immutable after compileTimeFilter and safe for concurrent use.
type timeFilter struct {
	start, stop timeOfDay
	loc         *time.Location
}

// timeOfDay is a clock time.
type timeOfDay struct{ hour, min, sec, nsec int }

// compileTimeFilter parses a `time` filter once, at load time: start and stop as hh:mm:ss (as
// Argo parses them: the hour may have one digit, a fraction of a second may follow, 24:00:00 is
// invalid) and timezone as an IANA name, UTC when empty. A bad value is an error naming
// path.start, path.stop or path.timezone and the text. As in Argo's validation, start equal to
// stop is an error (Argo's matching would pass the whole day). A nil filter compiles to nil, which
// passes every event.
func compileTimeFilter(path string, f *api.TimeFilter) (*timeFilter, error) {
	if f == nil {
		return nil, nil
	}
	tf := &timeFilter{loc: time.UTC}
	var err error
	if tf.start, err = parseTimeOfDay(path+".start", f.Start); err != nil {
		return nil, err
	}
	if tf.stop, err = parseTimeOfDay(path+".stop", f.Stop); err != nil {
		return nil, err
	}
	if f.Timezone != "" {
		if tf.loc, err = time.LoadLocation(f.Timezone); err != nil {
			return nil, fmt.Errorf("%s.timezone: %q is not a known IANA time zone: %w", path, f.Timezone, err)
		}
	}
	if tf.start == tf.stop {
		return nil, fmt.Errorf("%s.stop: %q is the same time as start %q; a window needs them to differ", path, f.Stop, f.Start)
	}
	return tf, nil
}

func parseTimeOfDay(path, s string) (timeOfDay, error) {
	if s == "" {
		return timeOfDay{}, fmt.Errorf("%s: missing; expected hh:mm:ss", path)
	}
	t, err := time.Parse("15:04:05", s)
	if err != nil {
		return timeOfDay{}, fmt.Errorf("%s: %q; expected hh:mm:ss: %w", path, s, err)
	}
	return timeOfDay{t.Hour(), t.Minute(), t.Second(), t.Nanosecond()}, nil
}

// match reports whether eventTime falls in the window, with Argo's filterTime semantics. The
// window is taken on the event's date in the filter's time zone: start is inclusive and stop
// exclusive; when stop is before start the window spans midnight, so it is [start, midnight)
// together with [midnight, stop) of the same date. On days when daylight saving time changes,
// a clock time that does not exist or exists twice resolves as Go's time.Date does, as in Argo.
// A nil filter passes everything. The error is always nil: every problem is a load-time error.
func (f *timeFilter) match(eventTime time.Time) (bool, error) {
	if f == nil {
		return true, nil
	}
	t := eventTime.In(f.loc)
	y, m, d := t.Date()
	start := time.Date(y, m, d, f.start.hour, f.start.min, f.start.sec, f.start.nsec, f.loc)
	stop := time.Date(y, m, d, f.stop.hour, f.stop.min, f.stop.sec, f.stop.nsec, f.loc)
	if start.Before(stop) {
		return !t.Before(start) && t.Before(stop), nil
	}
	return !t.Before(start) || t.Before(stop), nil
}
