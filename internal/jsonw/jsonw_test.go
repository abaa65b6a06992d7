package jsonw

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// TestAppendString holds AppendString to json.Marshal byte for byte: commands and join state
// document themselves as what json.Marshal would write.
func TestAppendString(t *testing.T) {
	cases := []string{"", "plain", `quote " and \ backslash`, "tab\tnewline\n\r\b\f", "é ü 日本 😀", "<html> & co",
		"\x00\x1f\x7f", "bad \xff utf-8", "cut \xe6\x97", "line\u2028para\u2029end", `{"id":"p1","n":[1,2]}`}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", `"`, `\`, "<", "&", "\n", "\x01", "é", "日", "\u2028", "\xff", "\xe6\x97", "😀"}
	for range 5000 {
		s := ""
		for range rng.IntN(12) {
			s += alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, s)
	}
	// Every byte value at every position of a plain string.
	for c := range 256 {
		for pos := range 20 {
			b := []byte("abcdefghijklmnopqrst")
			b[pos] = byte(c)
			cases = append(cases, string(b))
		}
	}
	for _, s := range cases {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("%q: wrote %s, json.Marshal writes %s", s, got[1:], want)
		}
		if got := AppendBytes([]byte("x"), []byte(s)); string(got) != "x"+string(want) {
			t.Fatalf("%q: AppendBytes wrote %s, json.Marshal writes %s", s, got[1:], want)
		}
	}
}

func BenchmarkAppendString(b *testing.B) {
	s := `{"id":"p1","repository":{"name":"kevents","url":"https://example.com/kevents"},"n":42}`
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = AppendString(buf[:0], s)
	}
}
