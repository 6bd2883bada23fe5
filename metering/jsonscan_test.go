package metering

import (
	"encoding/json"
	"strings"
	"testing"
)

// unquoteCases are JSON strings (with their quotes) whose decoding must
// match encoding/json's.
var unquoteCases = []string{
	`""`, `"plain"`, `"a\"b\\c\/d"`, `"\b\f\n\r\t"`, `"\u0000\u001f\u0041\u00e9\u20ac"`,
	`"\ud83d\ude00"`, `"\uD83D\uDE00"`, `"\ud83d"`, `"\ud83dx"`, `"\ud83d\u0041"`, `"\ude00\ud83d"`,
	`"\ud83d\ud83d\ude00"`, `"\udbff\udfff"`, "\"caf\xc3\xa9\"", "\"bad \xff byte\"", "\"\xed\xa0\x80\"",
	"\"cut \xe2\x82\"", `"日本語"`, "\"\U0001F600\"",
}

func TestAppendUnquote(t *testing.T) {
	for _, q := range unquoteCases {
		var want string
		if err := json.Unmarshal([]byte(q), &want); err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		raw, _, ok := stringContent([]byte(q))
		if !ok {
			t.Fatalf("%q: not a string", q)
		}
		got, n := appendUnquote(nil, raw, 1<<20)
		if string(got) != want || n != int64(len(want)) {
			t.Errorf("%q: got %q (%d), want %q", q, got, n, want)
		}
		// Cut at every limit: a prefix of whole characters, full length.
		for limit := 0; limit <= len(want); limit++ {
			got, n := appendUnquote(nil, raw, limit)
			if !strings.HasPrefix(want, string(got)) || len(got) > limit || n != int64(len(want)) {
				t.Errorf("%q limit %d: got %q (%d)", q, limit, got, n)
			}
		}
	}
}

func TestMember(t *testing.T) {
	obj := []byte(` { "a" : 1 , "b":{"c":[1,{"d":"}]"}]},"\u0065vent":"x", "a":"last", "s":"q\"uo\\\"te" } `)
	tests := []struct{ key, want string }{
		{"a", `"last"`},
		{"b", `{"c":[1,{"d":"}]"}]}`},
		{"event", `"x"`},
		{"s", `"q\"uo\\\"te"`},
		{"c", ``},
		{"A", ``},
	}
	for _, tc := range tests {
		if got := string(member(obj, tc.key)); got != tc.want {
			t.Errorf("member(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
	for _, bad := range []string{``, `[]`, `{`, `{"a"`, `{"a":`, `{"a":"x`, `{"a":[1,2}`, `{1:2}`, `"a"`, `{"a" 1}`} {
		if got := member([]byte(bad), "a"); got != nil {
			t.Errorf("member(%q) = %q, want nil", bad, got)
		}
	}
	it, ok := arrayElems([]byte(` [1, "two" ,{"3":[3]} ,[4]] `))
	var got []string
	for v, ok := it.next(); ok; v, ok = it.next() {
		got = append(got, string(v))
	}
	if !ok || strings.Join(got, "|") != `1|"two"|{"3":[3]}|[4]` {
		t.Errorf("elements %q", got)
	}
}

func TestAppendCompact(t *testing.T) {
	in := " {\n  \"a b\" : [ 1 , 2 ],\t\"s\": \"x  \\\" y\" } "
	want := `{"a b":[1,2],"s":"x  \" y"}`
	got, n := appendCompact(nil, []byte(in), 100)
	if string(got) != want || n != int64(len(want)) {
		t.Errorf("got %q %d", got, n)
	}
	got, n = appendCompact(nil, []byte(in), 5)
	if string(got) != want[:5] || n != int64(len(want)) {
		t.Errorf("cut: got %q %d", got, n)
	}
}
