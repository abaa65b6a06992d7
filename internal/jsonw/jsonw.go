// Package jsonw appends JSON by hand for the hot paths that build documents without
// encoding/json's reflection (commands, join state, events).
package jsonw

import (
	"encoding/json"
	"unicode/utf8"
	"unsafe"
)

// AppendString appends s as a JSON string, byte for byte what json.Marshal writes: <, > and &
// and U+2028/U+2029 escaped as \uXXXX, \b \f \n \r \t as such, other control bytes as \u00XX.
// Event data is JSON, full of quotes, so escaping stays on the fast path; only invalid UTF-8,
// which json.Marshal replaces rune by rune, is left to it.
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	open := len(b)
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				q, _ := json.Marshal(s)
				return append(b[:open], q...)
			}
			if r == '\u2028' || r == '\u2029' {
				b = append(b, s[start:i]...)
				b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
				start = i + size
			}
			i += size
			continue
		}
		if plain[c] {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// plain tells the ASCII bytes json.Marshal writes as they are.
var plain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// AppendBytes appends s as a JSON string, as AppendString does, without copying s into a string.
func AppendBytes(b, s []byte) []byte {
	// AppendString neither keeps nor changes s.
	return AppendString(b, unsafe.String(unsafe.SliceData(s), len(s)))
}
