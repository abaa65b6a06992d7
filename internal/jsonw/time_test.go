package jsonw

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestAppendTime holds AppendTime to AppendFormat(RFC3339Nano) byte for byte, over times from
// year 0 to 9999, whole seconds and every fraction length, and times outside UTC.
func TestAppendTime(t *testing.T) {
	times := []time.Time{
		{}, time.Unix(0, 0).UTC(), time.Unix(-1, 0).UTC(), time.Unix(-1, 999999999).UTC(),
		time.Date(2024, 2, 29, 23, 59, 59, 100, time.UTC), time.Date(2100, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 6, 15, 0, 0, 120000000, time.FixedZone("", 3600)), time.Now(), time.Now().UTC(),
	}
	rng := rand.New(rand.NewPCG(5, 6))
	lo, hi := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
	for range 200000 {
		ns := rng.Int64N(1e9)
		ns -= ns % []int64{1, 10, 1000, 1e6, 1e8, 1e9}[rng.IntN(6)]
		times = append(times, time.Unix(lo+rng.Int64N(hi-lo), ns).UTC())
	}
	for _, tm := range times {
		want := tm.AppendFormat([]byte("x"), time.RFC3339Nano)
		if got := AppendTime([]byte("x"), tm); string(got) != string(want) {
			t.Fatalf("%v: wrote %s, AppendFormat writes %s", tm, got, want)
		}
	}
}

func BenchmarkAppendTime(b *testing.B) {
	tm := time.Date(2026, 12, 6, 15, 0, 0, 123456789, time.UTC)
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = AppendTime(buf[:0], tm)
	}
}
