package jsonx

import (
	"encoding/json"
	"testing"
)

func TestAppendString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"hi", `"hi"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"<&>", `"<&>"`},
		{"\u2028\u00e9\U0001F600", "\"\u2028\u00e9\U0001F600\""},
		{"\n\r\t\b\f\x01\x1f\x7f", `"\n\r\t\b\f\u0001\u001f` + "\x7f\""},
		{"bad\xffutf8", "\"bad\ufffdutf8\""},
	}
	for _, tc := range cases {
		got := string(AppendString(nil, tc.in))
		if got != tc.want {
			t.Errorf("AppendString(%q) = %s, want %s", tc.in, got, tc.want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("%s is not valid JSON: %v", got, err)
		}
	}
}

// Client-supplied strings cannot break or forge a hand-written JSON line.
func TestAppendStringRoundTrips(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "new\nline\r\t", "ctl \x00\x01\x1f",
		"bad utf8 \xff\xfe end", "ünïcødé ✓", "}\n{\"forged\":true",
	} {
		b := AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %s: %v", s, b, err)
		}
		if want := string([]rune(s)); got != want { // invalid bytes become U+FFFD
			t.Errorf("%q round-trips to %q", s, got)
		}
	}
}
