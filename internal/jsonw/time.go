package jsonw

import "time"

// AppendTime appends t as t.AppendFormat(b, time.RFC3339Nano) does. Times in UTC, the ones
// commands, events and join state carry, are written by hand: formatting was a tenth of the
// sensor's work per event, for a command's two times. Others are left to AppendFormat.
func AppendTime(b []byte, t time.Time) []byte {
	if t.Location() != time.UTC {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	secs := t.Unix()
	days := secs / 86400
	if secs%86400 < 0 {
		days--
	}
	year, month, day := civil(days)
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	clock := int(secs - days*86400)
	// Written into an array and appended once: appending digit by digit checked capacity for
	// each.
	var d [30]byte
	put4(d[0:4], int(year))
	d[4] = '-'
	put2(d[5:7], month)
	d[7] = '-'
	put2(d[8:10], day)
	d[10] = 'T'
	put2(d[11:13], clock/3600)
	d[13] = ':'
	put2(d[14:16], clock/60%60)
	d[16] = ':'
	put2(d[17:19], clock%60)
	n := 19
	if ns := t.Nanosecond(); ns != 0 {
		d[19] = '.'
		put2(d[20:22], ns/10000000)
		put2(d[22:24], ns/100000%100)
		put2(d[24:26], ns/1000%100)
		put2(d[26:28], ns/10%100)
		d[28] = byte('0' + ns%10)
		n = 29
		for d[n-1] == '0' {
			n--
		}
	}
	d[n] = 'Z'
	return append(b, d[:n+1]...)
}

// civil converts days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
// civil_from_days).
func civil(days int64) (year int64, month, day int) {
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097                                  // day of era, [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // year of era, [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // day of year from March 1, [0, 365]
	mp := (5*doy + 2) / 153                                // month from March, [0, 11]
	day = int(doy - (153*mp+2)/5 + 1)
	month = int(mp + 3)
	if month > 12 {
		month -= 12
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
}

func put2(d []byte, v int) {
	d[1] = byte('0' + v%10)
	d[0] = byte('0' + v/10)
}

func put4(d []byte, v int) {
	put2(d[2:4], v%100)
	put2(d[0:2], v/100)
}
