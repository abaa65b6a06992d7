package sensor

import (
	"strings"
	"testing"
	"time"

	"github.com/kevents/kevents/api"
)

func mustTimeFilter(t *testing.T, start, stop, tz string) *timeFilter {
	t.Helper()
	f, err := compileTimeFilter("filters.time", &api.TimeFilter{Start: start, Stop: stop, Timezone: tz})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func tfUTC(y int, m time.Month, d, hh, mm, ss, ns int) time.Time {
	return time.Date(y, m, d, hh, mm, ss, ns, time.UTC)
}

// TestTimeFilterArgoWindows is Argo's table: six events through one day against a window and
// against the same window reversed, which spans midnight.
func TestTimeFilterArgoWindows(t *testing.T) {
	day := func(hh, mm, ss int) time.Time { return tfUTC(2024, 5, 17, hh, mm, ss, 0) }
	events := []time.Time{day(0, 0, 0), day(4, 5, 6), day(8, 9, 10), day(12, 13, 14), day(16, 17, 18), day(20, 21, 22)}
	tests := []struct {
		name        string
		start, stop string
		want        []bool
	}{
		{name: "start before stop", start: "08:09:10", stop: "16:17:18", want: []bool{false, false, true, true, false, false}},
		{name: "stop before start spans midnight", start: "16:17:18", stop: "08:09:10", want: []bool{true, true, false, false, true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustTimeFilter(t, tt.start, tt.stop, "")
			for i, e := range events {
				got, err := f.match(e)
				if err != nil || got != tt.want[i] {
					t.Errorf("%s: %v, %v; want %v", e.Format(time.TimeOnly), got, err, tt.want[i])
				}
			}
		})
	}
}

func TestTimeFilterMatch(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	tests := []struct {
		name              string
		start, stop, zone string
		event             time.Time
		want              bool
	}{
		// Argo's time zone cases.
		{name: "UTC by default", start: "09:00:00", stop: "17:00:00", event: tfUTC(2024, 7, 15, 10, 0, 0, 0), want: true},
		{name: "New York summer, inside", start: "09:00:00", stop: "17:00:00", zone: "America/New_York", event: tfUTC(2024, 7, 15, 14, 0, 0, 0), want: true},
		{name: "New York summer, too early", start: "09:00:00", stop: "17:00:00", zone: "America/New_York", event: tfUTC(2024, 7, 15, 12, 0, 0, 0), want: false},
		{name: "New York summer, too late", start: "09:00:00", stop: "17:00:00", zone: "America/New_York", event: tfUTC(2024, 7, 15, 22, 0, 0, 0), want: false},
		{name: "London summer", start: "10:00:00", stop: "18:00:00", zone: "Europe/London", event: tfUTC(2024, 7, 15, 10, 0, 0, 0), want: true},
		{name: "Tokyo", start: "09:00:00", stop: "17:00:00", zone: "Asia/Tokyo", event: tfUTC(2024, 7, 15, 1, 0, 0, 0), want: true},
		{name: "overnight window in New York", start: "22:00:00", stop: "06:00:00", zone: "America/New_York", event: tfUTC(2024, 7, 15, 2, 0, 0, 0), want: true},
		{name: "New York winter", start: "09:00:00", stop: "17:00:00", zone: "America/New_York", event: tfUTC(2024, 1, 15, 15, 0, 0, 0), want: true},

		// Boundaries: start inclusive, stop exclusive, to the nanosecond.
		{name: "exactly at start", start: "09:00:00", stop: "17:00:00", event: tfUTC(2024, 7, 15, 9, 0, 0, 0), want: true},
		{name: "just before start", start: "09:00:00", stop: "17:00:00", event: tfUTC(2024, 7, 15, 8, 59, 59, 999999999), want: false},
		{name: "exactly at stop", start: "09:00:00", stop: "17:00:00", event: tfUTC(2024, 7, 15, 17, 0, 0, 0), want: false},
		{name: "just before stop", start: "09:00:00", stop: "17:00:00", event: tfUTC(2024, 7, 15, 16, 59, 59, 999999999), want: true},
		{name: "fractional start", start: "09:00:00.5", stop: "17:00:00", event: tfUTC(2024, 7, 15, 9, 0, 0, 400000000), want: false},
		{name: "one-digit hour", start: "9:00:00", stop: "17:00:00", event: tfUTC(2024, 7, 15, 9, 30, 0, 0), want: true},
		{name: "window from midnight", start: "00:00:00", stop: "06:00:00", event: tfUTC(2024, 7, 15, 0, 0, 0, 0), want: true},
		{name: "window to the last second", start: "18:00:00", stop: "23:59:59", event: tfUTC(2024, 7, 15, 23, 59, 59, 0), want: false},
		{name: "overnight: at midnight", start: "22:00:00", stop: "06:00:00", event: tfUTC(2024, 7, 15, 0, 0, 0, 0), want: true},
		{name: "overnight: at stop", start: "22:00:00", stop: "06:00:00", event: tfUTC(2024, 7, 15, 6, 0, 0, 0), want: false},
		{name: "overnight: at start", start: "22:00:00", stop: "06:00:00", event: tfUTC(2024, 7, 15, 22, 0, 0, 0), want: true},
		{name: "overnight: midday", start: "22:00:00", stop: "06:00:00", event: tfUTC(2024, 7, 15, 12, 0, 0, 0), want: false},

		// The event's own zone does not matter, only the instant.
		{name: "event in another zone", start: "09:00:00", stop: "17:00:00", event: time.Date(2024, 7, 15, 11, 0, 0, 0, ny), want: true},
		{name: "event in another zone, outside", start: "09:00:00", stop: "17:00:00", event: time.Date(2024, 7, 15, 14, 0, 0, 0, ny), want: false},
		// The date is the event's date in the filter's zone, which may differ from UTC's.
		{name: "Tokyo morning is the previous day in UTC", start: "08:00:00", stop: "09:00:00", zone: "Asia/Tokyo", event: tfUTC(2024, 7, 14, 23, 30, 0, 0), want: true},
		{name: "explicit UTC", start: "08:00:00", stop: "09:00:00", zone: "UTC", event: tfUTC(2024, 7, 14, 8, 30, 0, 0), want: true},

		// A window across the spring-forward hour in New York (2024-03-10, 02:00 EST → 03:00 EDT).
		{name: "spring forward: 01:30 EST", start: "01:00:00", stop: "04:00:00", zone: "America/New_York", event: tfUTC(2024, 3, 10, 6, 30, 0, 0), want: true},
		{name: "spring forward: 03:30 EDT", start: "01:00:00", stop: "04:00:00", zone: "America/New_York", event: tfUTC(2024, 3, 10, 7, 30, 0, 0), want: true},
		{name: "spring forward: 04:00 EDT", start: "01:00:00", stop: "04:00:00", zone: "America/New_York", event: tfUTC(2024, 3, 10, 8, 0, 0, 0), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mustTimeFilter(t, tt.start, tt.stop, tt.zone).match(tt.event)
			if err != nil || got != tt.want {
				t.Fatalf("match(%s) = %v, %v; want %v", tt.event, got, err, tt.want)
			}
		})
	}
}

func TestCompileTimeFilterErrors(t *testing.T) {
	tests := []struct {
		name              string
		start, stop, zone string
		wantErr           string
	}{
		{name: "missing start", stop: "17:00:00", wantErr: "filters.time.start: missing; expected hh:mm:ss"},
		{name: "missing stop", start: "09:00:00", wantErr: "filters.time.stop: missing"},
		{name: "no seconds", start: "09:00", stop: "17:00:00", wantErr: `filters.time.start: "09:00"; expected hh:mm:ss`},
		{name: "hour out of range", start: "09:00:00", stop: "24:00:00", wantErr: `filters.time.stop: "24:00:00"`},
		{name: "minute out of range", start: "09:60:00", stop: "17:00:00", wantErr: `filters.time.start: "09:60:00"`},
		{name: "one-digit minute", start: "09:0:00", stop: "17:00:00", wantErr: `filters.time.start: "09:0:00"`},
		{name: "trailing text", start: "09:00:00Z", stop: "17:00:00", wantErr: `filters.time.start: "09:00:00Z"`},
		{name: "leading space", start: " 09:00:00", stop: "17:00:00", wantErr: `filters.time.start: " 09:00:00"`},
		{name: "12-hour clock", start: "9am", stop: "17:00:00", wantErr: `filters.time.start: "9am"`},
		{name: "unknown time zone", start: "09:00:00", stop: "17:00:00", zone: "Mars/Olympus_Mons", wantErr: `filters.time.timezone: "Mars/Olympus_Mons" is not a known IANA time zone`},
		{name: "start equals stop", start: "09:00:00", stop: "09:00:00", wantErr: `filters.time.stop: "09:00:00" is the same time as start "09:00:00"`},
		{name: "start equals stop, written differently", start: "9:00:00", stop: "09:00:00.000", wantErr: "is the same time as start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := compileTimeFilter("filters.time", &api.TimeFilter{Start: tt.start, Stop: tt.stop, Timezone: tt.zone})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v; want one containing %q", err, tt.wantErr)
			}
			if f != nil {
				t.Fatal("returned a filter with an error")
			}
		})
	}
}

func TestTimeFilterNil(t *testing.T) {
	f, err := compileTimeFilter("filters.time", nil)
	if f != nil || err != nil {
		t.Fatalf("compileTimeFilter(nil) = %v, %v", f, err)
	}
	if ok, err := f.match(time.Now()); !ok || err != nil {
		t.Fatalf("nil filter: %v, %v", ok, err)
	}
}
