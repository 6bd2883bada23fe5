package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/sse"
)

// The samples are bodies captured from Flowise 3.1.2 (see
// /work/shared/samples), status line, headers and curl's timing stripped.
const (
	sampleChatJSON    = "prediction-nonstream.json"
	sampleChatStream  = "prediction-stream.txt"
	sampleAgentJSON   = "agentflow-nonstream.json"
	sampleAgentStream = "agentflow-stream.txt"
	flowiseJSONType   = "application/json; charset=utf-8"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

var testCreated = time.Date(2026, 11, 25, 17, 58, 23, 123456789, time.UTC)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseStream returns the data of each event of an SSE body.
func parseStream(t testing.TB, body []byte) [][]byte {
	t.Helper()
	var p sse.Parser
	var events [][]byte
	p.Feed(body, func(ev *sse.Event) {
		if ev.Truncated || string(ev.Type) != "message" {
			t.Fatalf("unexpected event %q truncated=%v", ev.Type, ev.Truncated)
		}
		events = append(events, bytes.Clone(ev.Data))
	})
	if !p.AtBoundary() {
		t.Fatal("stream ends inside an event")
	}
	return events
}

// topIDs returns the id members of a JSON object's top level.
func topIDs(t testing.TB, obj []byte) map[string]string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatalf("%v: %s", err, obj)
	}
	ids := map[string]string{}
	for _, k := range idKeys {
		if s, ok := m[k].(string); ok {
			ids[k] = s
		}
	}
	return ids
}

// metadataIDs returns the ids of a stream's metadata event.
func metadataIDs(t testing.TB, events [][]byte) map[string]string {
	t.Helper()
	for _, data := range events {
		if name, _ := flow.FlowiseEvent(data); string(name) == "metadata" {
			var ev struct{ Data json.RawMessage }
			if err := json.Unmarshal(data, &ev); err != nil {
				t.Fatal(err)
			}
			return topIDs(t, ev.Data)
		}
	}
	t.Fatal("no metadata event")
	return nil
}

// checkFresh checks that the replay's ids are fresh UUIDv4s, equal where
// the originals were equal and different where they differed, and returns
// the replay with the original ids put back.
func checkFresh(t *testing.T, replay []byte, orig, fresh map[string]string) []byte {
	t.Helper()
	if len(fresh) != len(orig) {
		t.Fatalf("replay ids %v, original %v", fresh, orig)
	}
	for k, o := range orig {
		f := fresh[k]
		if !uuidV4.MatchString(f) {
			t.Errorf("%s = %q, not a UUIDv4", k, f)
		}
		if bytes.Contains(replay, []byte(o)) {
			t.Errorf("replay still carries the original %s %s", k, o)
		}
		for k2, o2 := range orig {
			if (o == o2) != (f == fresh[k2]) {
				t.Errorf("%s/%s: equal originals (%v) but equal fresh ids (%v)", k, k2, o == o2, f == fresh[k2])
			}
		}
	}
	restored := replay
	for k, f := range fresh {
		restored = bytes.ReplaceAll(restored, []byte(`"`+f+`"`), []byte(`"`+orig[k]+`"`))
	}
	return restored
}

func TestEntryJSONSamples(t *testing.T) {
	for _, tt := range []struct {
		name string
		keys int // id members expected
	}{
		{sampleChatJSON, 3},
		{sampleAgentJSON, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := readSample(t, tt.name)
			e, err := NewJSON(200, flowiseJSONType, body, testCreated)
			if err != nil {
				t.Fatal(err)
			}
			if e.Stream() || e.Status() != 200 || e.ContentType() != flowiseJSONType || !e.Created().Equal(testCreated) {
				t.Fatalf("entry %v %d %q %v", e.Stream(), e.Status(), e.ContentType(), e.Created())
			}
			if e.Size() < len(body) {
				t.Errorf("Size %d < body %d", e.Size(), len(body))
			}
			orig := topIDs(t, body)
			if len(orig) != tt.keys || orig["chatId"] != orig["sessionId"] {
				t.Fatalf("sample ids %v", orig)
			}
			r1, r2 := e.AppendBody(nil), e.AppendBody([]byte("prefix"))
			if !bytes.HasPrefix(r2, []byte("prefix")) {
				t.Fatal("AppendBody dropped dst")
			}
			r2 = r2[len("prefix"):]
			if !json.Valid(r1) || !json.Valid(r2) {
				t.Fatal("replay is not valid JSON")
			}
			f1, f2 := topIDs(t, r1), topIDs(t, r2)
			for k := range orig {
				if f1[k] == f2[k] {
					t.Errorf("%s repeated between two replays", k)
				}
			}
			if restored := checkFresh(t, r1, orig, f1); !bytes.Equal(restored, body) {
				t.Errorf("replay differs beyond its ids:\n%s\n%s", restored, body)
			}
		})
	}
}

func TestEntryStreamSamples(t *testing.T) {
	for _, name := range []string{sampleChatStream, sampleAgentStream} {
		t.Run(name, func(t *testing.T) {
			body := readSample(t, name)
			events := parseStream(t, body)
			e, err := NewStream(200, events, testCreated)
			if err != nil {
				t.Fatal(err)
			}
			if !e.Stream() || e.ContentType() != "text/event-stream" || e.Status() != 200 {
				t.Fatal("not a stream entry")
			}
			r1, r2 := e.AppendBody(nil), e.AppendBody(nil)
			got := parseStream(t, r1)
			if len(got) != len(events) {
				t.Fatalf("%d events replayed, %d stored", len(got), len(events))
			}
			for i := range got {
				if !json.Valid(got[i]) {
					t.Fatalf("event %d is not JSON: %s", i, got[i])
				}
				n1, _ := flow.FlowiseEvent(got[i])
				n0, _ := flow.FlowiseEvent(events[i])
				if string(n1) != string(n0) {
					t.Fatalf("event %d is %q, stored %q", i, n1, n0)
				}
				if string(n0) == "token" && !bytes.Equal(got[i], events[i]) {
					t.Errorf("token %d: %s, stored %s", i, got[i], events[i])
				}
			}
			orig, f1, f2 := metadataIDs(t, events), metadataIDs(t, got), metadataIDs(t, parseStream(t, r2))
			if len(orig) != 3 || orig["chatId"] != orig["sessionId"] {
				t.Fatalf("sample ids %v", orig)
			}
			for k := range orig {
				if f1[k] == f2[k] {
					t.Errorf("%s repeated between two replays", k)
				}
			}
			if restored := checkFresh(t, r1, orig, f1); !bytes.Equal(restored, body) {
				t.Errorf("replay differs beyond its ids:\n%s\n%s", restored, body)
			}
		})
	}
}

// Slots are whole string literals with an id's value, anywhere, and
// nothing else.
func TestEntrySlots(t *testing.T) {
	const id, other = "dc7591eb-a7b3-4e84-8848-4c4018db3820", "11f4304d-0d79-4e38-83c9-f5bf1d1e4ac4"
	body := `{"chatId":"` + id + `","sessionId":"` + id + `","chatMessageId":"` + other + `",` +
		`"text":"quoted \"` + id + `\" and ` + id + `","nested":[{"ref":"` + id + `"},{"` + other + `":1}],` +
		`"executionId":"","memoryType":7,"prefix":"` + id + `x"}`
	e, err := NewJSON(200, "application/json", []byte(body), testCreated)
	if err != nil {
		t.Fatal(err)
	}
	replay := e.AppendBody(nil)
	var m struct {
		ChatID, SessionID, ChatMessageID, Text, ExecutionID, Prefix string
		Nested                                                      []map[string]any
	}
	if err := json.Unmarshal(replay, &m); err != nil {
		t.Fatal(err)
	}
	if !uuidV4.MatchString(m.ChatID) || m.ChatID != m.SessionID || m.ChatMessageID == m.ChatID || !uuidV4.MatchString(m.ChatMessageID) {
		t.Errorf("ids %q %q %q", m.ChatID, m.SessionID, m.ChatMessageID)
	}
	if m.Nested[0]["ref"] != m.ChatID {
		t.Errorf("nested whole literal not refreshed: %v", m.Nested[0])
	}
	if _, ok := m.Nested[1][m.ChatMessageID]; !ok {
		t.Errorf("key literal not refreshed: %v", m.Nested[1])
	}
	if m.Text != `quoted "`+id+`" and `+id || m.Prefix != id+"x" || m.ExecutionID != "" {
		t.Errorf("text changed: %q %q %q", m.Text, m.Prefix, m.ExecutionID)
	}
	if len(e.slots) != 5 || e.nids != 2 {
		t.Errorf("%d slots, %d ids", len(e.slots), e.nids)
	}
}

func TestEntryRefused(t *testing.T) {
	ev := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i := range s {
			out[i] = []byte(s[i])
		}
		return out
	}
	const (
		start = `{"event":"start","data":""}`
		token = `{"event":"token","data":"Hi"}`
		end   = `{"event":"end","data":"[DONE]"}`
	)
	streams := []struct {
		name   string
		status int
		events [][]byte
		want   error
	}{
		{"no events", 200, nil, ErrIncomplete},
		{"no end", 200, ev(start, token), ErrIncomplete},
		{"end not last", 200, ev(start, end, token, end), ErrIncomplete},
		{"error", 200, ev(start, `{"event":"error","data":"boom"}`, end), ErrStreamFail},
		{"error keys reordered", 200, ev(start, `{"data":"boom","event":"error"}`, end), ErrStreamFail},
		{"abort", 200, ev(start, `{"event":"abort","data":"[DONE]"}`, end), ErrStreamFail},
		{"agentflow error", 200, ev(`{"event":"agentFlowEvent","data":"ERROR"}`, end), ErrStreamFail},
		{"agentflow terminated", 200, ev(`{"event":"agentFlowEvent","data":"TERMINATED"}`, end), ErrStreamFail},
		{"agentflow stopped", 200, ev(`{"event":"agentFlowEvent","data":"STOPPED"}`, end), ErrPaused},
		{"action", 200, ev(start, `{"event":"action","data":{"id":"a"}}`, end), ErrPaused},
		{"metadata action", 200, ev(start, `{"event":"metadata","data":{"chatId":"c","action":{"id":"a"}}}`, end), ErrPaused},
		{"not JSON", 200, ev(start, `Hi`, end), ErrBadEvent},
		{"no event name", 200, ev(start, `{"data":"x"}`, end), ErrBadEvent},
		{"carriage return", 200, ev(start, "{\"event\":\"token\",\r\"data\":\"x\"}", end), ErrBadEvent},
		{"status 500", 500, ev(start, end), ErrStatus},
		{"status 304", 304, ev(start, end), ErrStatus},
	}
	for _, tt := range streams {
		if _, err := NewStream(tt.status, tt.events, testCreated); err != tt.want {
			t.Errorf("stream %s: %v, want %v", tt.name, err, tt.want)
		}
	}
	jsons := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"status 500", 500, `{"text":"x"}`, ErrStatus},
		{"status 199", 199, `{"text":"x"}`, ErrStatus},
		{"invalid", 200, `{"text":`, ErrNotJSON},
		{"empty", 200, ``, ErrNotJSON},
		{"human input", 200, `{"text":"x","chatId":"c","action":{"id":"a","elements":[]}}`, ErrPaused},
		{"action null", 200, `{"text":"x","action":null}`, nil},
		{"array", 200, `[{"chatId":"c"}]`, nil},
		{"status 203", 203, `{"text":"x"}`, nil},
	}
	for _, tt := range jsons {
		if _, err := NewJSON(tt.status, "application/json", []byte(tt.body), testCreated); err != tt.want {
			t.Errorf("JSON %s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// A data payload with line feeds (JSON whitespace) is replayed as several
// data lines, which a client joins back.
func TestEntryMultilineData(t *testing.T) {
	events := [][]byte{
		[]byte("{\"event\":\"metadata\",\n \"data\":{\"chatId\":\"0c0c0c0c-0000-4000-8000-000000000001\",\n\"sessionId\":\"0c0c0c0c-0000-4000-8000-000000000001\"}}"),
		[]byte(`{"event":"end","data":"[DONE]"}`),
	}
	e, err := NewStream(200, events, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	got := parseStream(t, e.AppendBody(nil))
	if len(got) != 2 || !bytes.Equal(got[1], events[1]) {
		t.Fatalf("replay %q", got)
	}
	ids := metadataIDs(t, got)
	if !uuidV4.MatchString(ids["chatId"]) || ids["chatId"] != ids["sessionId"] {
		t.Fatalf("ids %v", ids)
	}
	if restored := strings.ReplaceAll(string(got[0]), ids["chatId"], "0c0c0c0c-0000-4000-8000-000000000001"); restored != string(events[0]) {
		t.Errorf("data %q, want %q", restored, events[0])
	}
}

// Many distinct ids: more than AppendBody's stack buffer.
func TestEntryManyIDs(t *testing.T) {
	var events [][]byte
	for i := range 20 {
		events = append(events, []byte(fmt.Sprintf(`{"event":"metadata","data":{"chatMessageId":"00000000-0000-4000-8000-0000000000%02x"}}`, i)))
	}
	events = append(events, []byte(`{"event":"end","data":"[DONE]"}`))
	e, err := NewStream(200, events, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, data := range parseStream(t, e.AppendBody(nil)) {
		if name, _ := flow.FlowiseEvent(data); string(name) == "metadata" {
			id := topIDs(t, data[len(`{"event":"metadata","data":`):len(data)-1])["chatMessageId"]
			if !uuidV4.MatchString(id) || seen[id] {
				t.Fatalf("id %q", id)
			}
			seen[id] = true
		}
	}
	if len(seen) != 20 {
		t.Fatalf("%d distinct ids", len(seen))
	}
}

func sampleEntries(t testing.TB) map[string]*Entry {
	t.Helper()
	out := map[string]*Entry{}
	for _, name := range []string{sampleChatJSON, sampleAgentJSON} {
		e, err := NewJSON(200, flowiseJSONType, readSample(t, name), testCreated)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = e
	}
	for _, name := range []string{sampleChatStream, sampleAgentStream} {
		e, err := NewStream(200, parseStream(t, readSample(t, name)), testCreated)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = e
	}
	noIDs, err := NewJSON(201, "application/json", []byte(`{"outputs":[]}`), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	out["no ids"] = noIDs
	return out
}

// sameEntry compares two entries, replays included with their ids put
// back (AppendBody with the slots' original values).
func sameEntry(a, b *Entry) bool {
	return a.stream == b.stream && a.status == b.status && a.ctype == b.ctype && a.created.Equal(b.created) &&
		bytes.Equal(a.body, b.body) && slicesEqual(a.slots, b.slots) && a.nids == b.nids && a.outLen == b.outLen
}

func slicesEqual(a, b []slot) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEntryBinaryRoundTrip(t *testing.T) {
	for name, e := range sampleEntries(t) {
		t.Run(name, func(t *testing.T) {
			b, err := e.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var d Entry
			if err := d.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if !sameEntry(e, &d) {
				t.Fatal("round trip changed the entry")
			}
			if d.Size() > e.Size() {
				t.Errorf("Size %d after decoding, %d before", d.Size(), e.Size())
			}
			// The replays match once their fresh ids are aligned.
			r := d.AppendBody(nil)
			if len(r) != e.outLen || len(e.AppendBody(nil)) != e.outLen {
				t.Fatal("replay length")
			}
			// Every truncation and every flipped bit is refused.
			for n := range len(b) {
				if (&Entry{}).UnmarshalBinary(b[:n]) == nil {
					t.Fatalf("truncated to %d bytes: accepted", n)
				}
			}
			for i := range len(b) {
				c := bytes.Clone(b)
				c[i] ^= 0x10
				if (&Entry{}).UnmarshalBinary(c) == nil {
					t.Fatalf("byte %d flipped: accepted", i)
				}
			}
			// UnmarshalBinary keeps no reference to its input.
			clear(b)
			if !sameEntry(e, &d) {
				t.Fatal("decoded entry aliases its input")
			}
		})
	}
}

// FuzzUnmarshalEntry decodes each input as it is, and with a valid
// checksum appended, so that the decoder behind the checksum is fuzzed too
// (a mutation almost never keeps the checksum right).
func FuzzUnmarshalEntry(f *testing.F) {
	for _, e := range sampleEntries(f) {
		b, _ := e.MarshalBinary()
		f.Add(b)
		f.Add(b[:len(b)-4])
	}
	f.Add([]byte("FGE\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		checkDecode(t, binary.LittleEndian.AppendUint32(bytes.Clone(b), crc32.Checksum(b, castagnoli)))
	})
}

func checkDecode(t *testing.T, b []byte) {
	var e Entry
	if err := e.UnmarshalBinary(b); err != nil {
		return
	}
	if len(e.body) > len(b) || len(e.slots) > len(b) {
		t.Fatalf("decoded %d body bytes and %d slots from %d bytes", len(e.body), len(e.slots), len(b))
	}
	if r := e.AppendBody(nil); len(r) != e.outLen {
		t.Fatalf("replay of %d bytes, want %d", len(r), e.outLen)
	}
	again, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var d Entry
	if err := d.UnmarshalBinary(again); err != nil || !sameEntry(&e, &d) {
		t.Fatalf("re-encoding does not round-trip: %v", err)
	}
}

// FuzzEntryJSON: whatever the answer, an accepted entry replays as the
// same JSON but for its ids, which are fresh.
func FuzzEntryJSON(f *testing.F) {
	f.Add(readSample(f, sampleChatJSON))
	f.Add(readSample(f, sampleAgentJSON))
	f.Add([]byte(`{"chatId":"a","x":["a",{"a":"\"a\""}],"sessionId":"a","chatMessageId":"b","executionId":"\u0062"}`))
	f.Add([]byte(`{"chatId":"\ud800","sessionId":"` + "\xff" + `"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := NewJSON(200, "application/json", body, testCreated)
		if err != nil {
			return
		}
		r := e.AppendBody(nil)
		if !json.Valid(r) || len(r) != e.outLen {
			t.Fatalf("replay %q of %q", r, body)
		}
		if !bytes.Equal(e.body, body) {
			t.Fatal("stored body differs from the answer")
		}
		// Each slot of the replay holds a UUID where the body held an id.
		shift := 0
		for _, s := range e.slots {
			start := int(s.off) + shift
			if !uuidV4.Match(r[start : start+uuidLen]) {
				t.Fatalf("slot at %d: %q", start, r[start:start+uuidLen])
			}
			if r[start-1] != '"' || r[start+uuidLen] != '"' {
				t.Fatal("slot is not a whole literal")
			}
			shift += uuidLen - int(s.n)
		}
	})
}

// An entry is replayed by many requests at once.
func TestEntryConcurrentReplay(t *testing.T) {
	e := sampleEntries(t)[sampleAgentStream]
	done := make(chan map[string]string)
	for range 8 {
		go func() {
			var buf []byte
			var ids map[string]string
			for range 100 {
				buf = e.AppendBody(buf[:0])
			}
			var p sse.Parser
			p.Feed(buf, func(ev *sse.Event) {
				if name, _ := flow.FlowiseEvent(ev.Data); string(name) == "metadata" {
					var m struct{ Data map[string]string }
					json.Unmarshal(ev.Data, &m)
					ids = m.Data
				}
			})
			done <- ids
		}()
	}
	seen := map[string]bool{}
	for range 8 {
		id := (<-done)["chatMessageId"]
		if !uuidV4.MatchString(id) || seen[id] {
			t.Fatalf("chatMessageId %q", id)
		}
		seen[id] = true
	}
}

// Replayed headers survive the binary round trip, bounded in number.
func TestEntryHeadersRoundTrip(t *testing.T) {
	e, err := NewJSON(200, "application/json", []byte(`{"text":"hi"}`), time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for i := range 40 {
		pairs = append(pairs, "X-H", string(rune('a'+i%26)))
	}
	e.SetHeaders(append([]string{"Access-Control-Allow-Origin", "https://a.example", "Vary", "Origin"}, pairs...))
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var d Entry
	if err := d.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	h := d.Headers()
	if len(h) != 2*maxHeaders || h[0] != "Access-Control-Allow-Origin" || h[1] != "https://a.example" || h[3] != "Origin" {
		t.Fatalf("headers after the round trip: %q", h)
	}
	if d.Size() != e.Size() {
		t.Fatalf("size %d after decoding, %d before", d.Size(), e.Size())
	}
}

// Only UUIDs are ids: a caller-chosen session id ("1" on a stateless flow)
// and the same text elsewhere in the answer are left as they are.
func TestEntryOnlyUUIDsAreSlots(t *testing.T) {
	body := []byte(`{"text":"1","sessionId":"1","chatId":"1","chatMessageId":"0c0c0c0c-0000-4000-8000-0000000000aa","question":"1"}`)
	e, err := NewJSON(200, "application/json", body, testCreated)
	if err != nil {
		t.Fatal(err)
	}
	out := e.AppendBody(nil)
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"text", "sessionId", "chatId", "question"} {
		if m[k] != "1" {
			t.Errorf("%s rewritten to %v", k, m[k])
		}
	}
	if id, _ := m["chatMessageId"].(string); !uuidV4.MatchString(id) || id == "0c0c0c0c-0000-4000-8000-0000000000aa" {
		t.Errorf("chatMessageId %q not fresh", id)
	}
}

// WriteTo writes what AppendBody appends, ids aside.
func TestEntryWriteTo(t *testing.T) {
	for name, e := range sampleEntries(t) {
		var b bytes.Buffer
		n, err := e.WriteTo(&b)
		if err != nil || int(n) != e.Len() || b.Len() != len(e.AppendBody(nil)) {
			t.Fatalf("%s: WriteTo wrote %d (%v), Len %d, AppendBody %d", name, n, err, e.Len(), len(e.AppendBody(nil)))
		}
	}
}
