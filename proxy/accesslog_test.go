package proxy

import (
	"encoding/json"
	"testing"
)

// Client-supplied strings cannot break or forge an access log line.
func TestAppendJSONStringEscapes(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "new\nline\r\t", "ctl \x00\x01\x1f",
		"bad utf8 \xff\xfe end", "ünïcødé ✓", "}\n{\"forged\":true",
	} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %s: %v", s, b, err)
		}
		want := string([]rune(s)) // invalid bytes become U+FFFD, as encoding/json does
		if got != want {
			t.Errorf("%q round-trips to %q", s, got)
		}
	}
	b := appendJSONString3(nil, "GET", "/a\"b", "HTTP/1.1")
	var got string
	if err := json.Unmarshal(b, &got); err != nil || got != `GET /a"b HTTP/1.1` {
		t.Fatalf("request line %s -> %q %v", b, got, err)
	}
}
