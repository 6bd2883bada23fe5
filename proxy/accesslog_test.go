package proxy

import (
	"encoding/json"
	"testing"
)

// The request line is one JSON string, escaped like any other value.
func TestAppendJSONString3(t *testing.T) {
	b := appendJSONString3(nil, "GET", "/a\"b", "HTTP/1.1")
	var got string
	if err := json.Unmarshal(b, &got); err != nil || got != `GET /a"b HTTP/1.1` {
		t.Fatalf("request line %s -> %q %v", b, got, err)
	}
}
