package sse

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/flowgate/flowgate/flow"
)

// feed feeds chunks to p and returns the events, copied out of the callback.
func feed(p *Parser, chunks ...[]byte) []refEvent {
	var got []refEvent
	for _, c := range chunks {
		p.Feed(c, func(e *Event) {
			got = append(got, refEvent{string(e.Type), string(e.Data), string(e.ID), e.Truncated})
		})
	}
	return got
}

// splits returns the ways a test feeds in: whole, in two at every byte, and
// one byte at a time.
func splits(in []byte) [][][]byte {
	all := [][][]byte{{in}}
	for k := range len(in) + 1 {
		all = append(all, [][]byte{in[:k], in[k:]})
	}
	var bytewise [][]byte
	for k := range in {
		bytewise = append(bytewise, in[k:k+1])
	}
	return append(all, bytewise)
}

func msg(data string) refEvent { return refEvent{Type: "message", Data: data} }

func TestParser(t *testing.T) {
	flowise := `{"event":"token","data":"Hello"}`
	tests := []struct {
		name string
		in   string
		max  int
		want []refEvent
	}{
		{"LF", "data: a\n\n", 0, []refEvent{msg("a")}},
		{"CR", "data: a\r\r", 0, []refEvent{msg("a")}},
		{"CRLF", "data: a\r\n\r\n", 0, []refEvent{msg("a")}},
		{"mixed line ends", "data: a\r\ndata:b\rdata:c\n\r\ndata:d\r\r\n", 0, []refEvent{msg("a\nb\nc"), msg("d")}},
		{"LF CR is two line ends", "data:a\n\rdata:b\n\n", 0, []refEvent{msg("a"), msg("b")}},
		{"CR CR LF", "data:a\r\r\n", 0, []refEvent{msg("a")}},
		{"no space", "data:a\n\n", 0, []refEvent{msg("a")}},
		{"only one space removed", "data:  a \n\n", 0, []refEvent{msg(" a ")}},
		{"tab kept", "data:\ta\n\n", 0, []refEvent{msg("\ta")}},
		{"colon in value", "data: a:b: c\n\n", 0, []refEvent{msg("a:b: c")}},
		{"multi-line data", "data:a\ndata: b\ndata:c\n\n", 0, []refEvent{msg("a\nb\nc")}},
		{"empty data dispatches", "data\n\ndata:\n\n", 0, []refEvent{msg(""), msg("")}},
		{"empty data lines", "data:\ndata\n\n", 0, []refEvent{msg("\n")}},
		{"no data, no dispatch", "event:x\n\nid:1\n\n\n\n", 0, nil},
		{"type reset by blank line", "event:x\n\ndata:a\n\n", 0, []refEvent{msg("a")}},
		{"event field", "event: custom\ndata:a\n\ndata:b\n\n", 0, []refEvent{{"custom", "a", "", false}, msg("b")}},
		{"empty event field", "event:x\nevent\ndata:a\n\n", 0, []refEvent{msg("a")}},
		{"event field after data", "data:a\nevent:x\n\n", 0, []refEvent{{"x", "a", "", false}}},
		{"id persists", "id: 1\ndata:a\n\ndata:b\n\nid\ndata:c\n\n", 0,
			[]refEvent{{"message", "a", "1", false}, {"message", "b", "1", false}, msg("c")}},
		{"id without data", "id:7\n\ndata:a\n\n", 0, []refEvent{{"message", "a", "7", false}}},
		{"id with NUL ignored", "id:1\ndata:a\n\nid:2\x003\ndata:b\n\n", 0,
			[]refEvent{{"message", "a", "1", false}, {"message", "b", "1", false}}},
		{"comments", ":heartbeat\n\n: x\ndata:a\n:\n\n", 0, []refEvent{msg("a")}},
		{"unknown fields", "message:\nretry:100\nretry:x\nfoo\nfoo:bar\ndata:a\n\n", 0, []refEvent{msg("a")}},
		{"names are case-sensitive", "Data:a\nEVENT:x\n\n", 0, nil},
		{"space before colon", "data :a\n\n", 0, nil},
		{"longer names", "datas:a\nevents:x\nids:1\ndata:b\n\n", 0, []refEvent{msg("b")}},
		{"BOM", "\xEF\xBB\xBFdata:a\n\n", 0, []refEvent{msg("a")}},
		{"BOM only once", "\xEF\xBB\xBF\xEF\xBB\xBFdata:a\n\ndata:b\n\n", 0, []refEvent{msg("b")}},
		{"half a BOM", "\xEF\xBBdata:a\n\ndata:b\n\n", 0, []refEvent{msg("b")}},
		{"BOM later is data", "data:\xEF\xBB\xBFa\n\n", 0, []refEvent{msg("\xEF\xBB\xBFa")}},
		{"BOM then blank line", "\xEF\xBB\xBF\ndata:a\n\n", 0, []refEvent{msg("a")}},
		{"invalid UTF-8 passed through", "data:\xff\xfe\n\n", 0, []refEvent{msg("\xff\xfe")}},
		{"incomplete event discarded", "data:a\n\ndata:b\n", 0, []refEvent{msg("a")}},
		{"incomplete line discarded", "data:a\n\ndata:b", 0, []refEvent{msg("a")}},
		{"Flowise frames", "message:\ndata:" + flowise + "\n\nmessage:\ndata:" + flowise + "\n\n", 0,
			[]refEvent{msg(flowise), msg(flowise)}},
		{"Flowise heartbeat", ":heartbeat\n\nmessage:\ndata:" + flowise + "\n\n:heartbeat\n\n", 0, []refEvent{msg(flowise)}},

		{"truncated", "data:abcdef\n\ndata:ab\n\n", 4, []refEvent{{"message", "abcd", "", true}, msg("ab")}},
		{"exactly the bound", "data:abcd\n\n", 4, []refEvent{msg("abcd")}},
		{"truncated across lines", "data:ab\ndata:cd\n\n", 4, []refEvent{{"message", "ab\nc", "", true}}},
		{"joined exactly the bound", "data:ab\ndata:c\n\n", 4, []refEvent{msg("ab\nc")}},
		{"newline past the bound", "data:abcd\ndata\n\n", 4, []refEvent{{"message", "abcd", "", true}}},
		{"bound of one", "data:ab\n\ndata:\ndata:\n\ndata\n\n", 1,
			[]refEvent{{"message", "a", "", true}, {"message", "\n", "", false}, msg("")}},
		{"type truncated", "event:abcdef\ndata:a\n\n", 3, []refEvent{{"abc", "a", "", true}}},
		{"default type not truncated", "data:a\n\n", 3, []refEvent{msg("a")}},
		{"long type replaced", "event:abcdef\nevent:ab\ndata:a\n\n", 3, []refEvent{{"ab", "a", "", false}}},
		{"id truncated while it persists", "id:abcdef\ndata:a\n\ndata:b\n\nid:x\ndata:c\n\n", 3,
			[]refEvent{{"message", "a", "abc", true}, {"message", "b", "abc", true}, {"message", "c", "x", false}}},
		{"NUL past the bound", "id:x\n\nid:abcd\x00\ndata:a\n\n", 3, []refEvent{{"message", "a", "x", false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			ref := refParse(in, tc.max)
			if !reflect.DeepEqual(ref.Events, tc.want) {
				t.Fatalf("the reference decoder gives %+v, the test wants %+v", ref.Events, tc.want)
			}
			p := &Parser{MaxEventBytes: tc.max}
			for _, chunks := range splits(in) {
				p.Reset()
				got := feed(p, chunks...)
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("fed as %q: got %+v, want %+v", chunks, got, tc.want)
				}
				if p.Events() != len(tc.want) {
					t.Fatalf("fed as %q: Events() = %d", chunks, p.Events())
				}
				if p.AtBoundary() != ref.AtBoundary || p.AfterCR() != ref.AfterCR {
					t.Fatalf("fed as %q: AtBoundary, AfterCR = %v, %v; want %v, %v",
						chunks, p.AtBoundary(), p.AfterCR(), ref.AtBoundary, ref.AfterCR)
				}
			}
		})
	}
}

func TestBoundary(t *testing.T) {
	tests := []struct {
		in               string
		boundary, lastCR bool
	}{
		{"", true, false},
		{"data:a\n\n", true, false},
		{"data:a\r\r", true, true},
		{"data:a\r\n\r", true, true},
		{"data:a\r\n\r\n", true, false},
		{"data:a\n", false, false},
		{"data:a\r", false, true},
		{"data:a", false, false},
		{"message:\n", false, false},
		{"message:", false, false},
		{"id:1\n\n", true, false},
		{":heartbeat\n", true, false},
		{":heartbeat", false, false},
		{"data:a\n\n:heartbeat\n", true, false},
		{"\xEF\xBB\xBF", true, false},
		{"\xEF\xBB", false, false},
		{"\xEF\xBB\n", false, false},
		{"\n", true, false},
	}
	for _, tc := range tests {
		for _, chunks := range splits([]byte(tc.in)) {
			var p Parser
			feed(&p, chunks...)
			if p.AtBoundary() != tc.boundary || p.AfterCR() != tc.lastCR {
				t.Errorf("%q fed as %q: AtBoundary, AfterCR = %v, %v; want %v, %v",
					tc.in, chunks, p.AtBoundary(), p.AfterCR(), tc.boundary, tc.lastCR)
			}
		}
		if r := refParse([]byte(tc.in), 0); r.AtBoundary != tc.boundary || r.AfterCR != tc.lastCR {
			t.Errorf("%q: the reference decoder says %v, %v", tc.in, r.AtBoundary, r.AfterCR)
		}
	}
}

// The bodies of real Flowise 3.1.2 streams, as /work/shared/samples has
// them, without the HTTP head and curl's timing line.
var samples = []struct {
	file   string
	events []string // the Flowise event names, in order
}{
	{"prediction-stream.txt", []string{"start", "token", "token", "token", "token", "token", "token", "metadata", "end"}},
	{"agentflow-stream.txt", []string{
		"agentFlowEvent", "nextAgentFlow", "nextAgentFlow", "agentFlowExecutedData", "nextAgentFlow",
		"token", "token", "token", "token", "token", "token", "token", "token", "token",
		"calledTools", "usageMetadata", "nextAgentFlow", "agentFlowExecutedData", "agentFlowEvent", "metadata", "end"}},
}

func readSample(t testing.TB, file string) []byte {
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lineEnds returns body with its LFs written each way a server may.
func lineEnds(body []byte) map[string][]byte {
	return map[string][]byte{
		"LF":   body,
		"CRLF": bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")),
		"CR":   bytes.ReplaceAll(body, []byte("\n"), []byte("\r")),
		"BOM+heartbeats": append([]byte("\xEF\xBB\xBF:heartbeat\n\n"),
			bytes.ReplaceAll(body, []byte("\n\nmessage:"), []byte("\n\n:heartbeat\n\nmessage:"))...),
	}
}

func TestSamples(t *testing.T) {
	for _, s := range samples {
		for ends, body := range lineEnds(readSample(t, s.file)) {
			t.Run(s.file+"/"+ends, func(t *testing.T) {
				var p Parser
				want := feed(&p, body)
				var names []string
				for k, e := range want {
					if e.Type != "message" || e.ID != "" || e.Truncated {
						t.Errorf("event %d: %+v", k, e)
					}
					name, ok := flow.FlowiseEvent([]byte(e.Data))
					if !ok {
						t.Errorf("event %d: data is not a Flowise frame: %q", k, e.Data)
					}
					names = append(names, string(name))
					if end := flow.IsFlowiseEnd([]byte(e.Data)); end != (k == len(want)-1) {
						t.Errorf("event %d: IsFlowiseEnd = %v", k, end)
					}
				}
				if !reflect.DeepEqual(names, s.events) {
					t.Fatalf("events %q, want %q", names, s.events)
				}
				if !p.AtBoundary() {
					t.Error("not at a boundary after the end frame")
				}
				if ref := refParse(body, 0); !reflect.DeepEqual(ref.Events, want) {
					t.Fatalf("the reference decoder disagrees")
				}
				for _, chunks := range splits(body) {
					p.Reset()
					if got := feed(&p, chunks...); !reflect.DeepEqual(got, want) {
						t.Fatalf("fed in %d chunks (first %d bytes): events differ", len(chunks), len(chunks[0]))
					}
				}
			})
		}
	}
}

// chunked cuts b into pieces of n bytes.
func chunked(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// frames cuts b after each blank line, as Flowise writes one frame a write.
func frames(b []byte) [][]byte {
	var out [][]byte
	for {
		i := bytes.Index(b, []byte("\n\n"))
		if i < 0 {
			return append(out, b)
		}
		out = append(out, b[:i+2])
		b = b[i+2:]
	}
}

func TestNoAllocs(t *testing.T) {
	body := readSample(t, "agentflow-stream.txt")
	ways := map[string][][]byte{"whole": {body}, "frames": frames(body)}
	for _, n := range []int{1, 7, 64, 512, 4096} {
		ways[fmt.Sprintf("chunks of %d", n)] = chunked(body, n)
	}
	for name, chunks := range ways {
		var p Parser
		n := 0
		emit := func(e *Event) { n += len(e.Data) }
		run := func() {
			p.Reset()
			for _, c := range chunks {
				p.Feed(c, emit)
			}
		}
		run() // grows the buffers
		if a := testing.AllocsPerRun(50, run); a != 0 {
			t.Errorf("%s: %v allocations a stream after the first", name, a)
		}
		if p.Events() != 21 {
			t.Errorf("%s: %d events", name, p.Events())
		}
	}
}

func TestZeroCopy(t *testing.T) {
	in := []byte("message:\ndata:{\"event\":\"token\"}\n\n")
	var p Parser
	p.Feed(in, func(e *Event) {
		if &e.Data[0] != &in[len("message:\ndata:")] {
			t.Error("a data line wholly in the input was copied")
		}
	})
	if p.Events() != 1 {
		t.Fatal("no event")
	}
}

// TestMemoryBound feeds lines far longer than MaxEventBytes with no line end
// in sight: the parser may hold at most MaxEventBytes of them, and nothing
// of a comment or an unknown field.
func TestMemoryBound(t *testing.T) {
	const max = 1 << 10
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	for _, head := range []string{"data:", "event:", "id:", ":", "message:", "aaaaaaaa"} {
		p := Parser{MaxEventBytes: max}
		p.Feed([]byte("data:x\n"+head), nil)
		for range 256 { // 16 MiB
			p.Feed(chunk, nil)
		}
		held := cap(p.data) + cap(p.typ) + cap(p.id) + cap(p.idNext)
		if held > max+64 {
			t.Errorf("%q: holds %d bytes", head, held)
		}
		var got []refEvent
		p.Feed([]byte("\n\n"), func(e *Event) {
			got = append(got, refEvent{string(e.Type), "", string(e.ID), e.Truncated})
			if len(e.Data) > max || len(e.Type) > max || len(e.ID) > max {
				t.Errorf("%q: event of %d bytes", head, len(e.Data))
			}
		})
		if len(got) != 1 || got[0].Truncated != (head == "data:" || head == "event:" || head == "id:") {
			t.Errorf("%q: events %+v", head, got)
		}
	}
}

func BenchmarkFeed(b *testing.B) {
	big := []byte("message:\ndata:{\"event\":\"agentFlowExecutedData\",\"data\":[" +
		strings.Repeat(`{"nodeId":"llmAgentflow_0","output":{"content":"Hello from the fake OpenAI server."}},`, 800) +
		"{}]}\n\n")
	streams := []struct {
		name string
		body []byte
	}{
		{"prediction", readSample(b, "prediction-stream.txt")},
		{"agentflow", readSample(b, "agentflow-stream.txt")},
		{"64KiB-frame", big},
	}
	for _, s := range streams {
		for _, w := range []struct {
			name   string
			chunks [][]byte
		}{
			{"whole", [][]byte{s.body}},
			{"frames", frames(s.body)},
			{"4KiB", chunked(s.body, 4096)},
			{"64B", chunked(s.body, 64)},
		} {
			b.Run(s.name+"/"+w.name, func(b *testing.B) {
				var p Parser
				b.SetBytes(int64(len(s.body)))
				b.ReportAllocs()
				for b.Loop() {
					p.Reset()
					for _, c := range w.chunks {
						p.Feed(c, func(*Event) {})
					}
				}
			})
		}
	}
}
