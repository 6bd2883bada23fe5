package sse

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/flowgate/flowgate/flow"
)

// FuzzParse feeds a stream in pieces and compares the Parser with the
// reference decoder. An input is two control bytes and the stream: the
// first picks how the stream is cut, the second MaxEventBytes (below 0x80
// the default; else 1 to 128, so truncation is exercised).
func FuzzParse(f *testing.F) {
	for _, s := range samples {
		for _, body := range lineEnds(readSample(f, s.file)) {
			f.Add(append([]byte{0, 0}, body...))
			f.Add(append([]byte{0x1e, 0x80 | 60}, body...))
		}
	}
	for _, s := range []string{
		"data:a\r\n\r\ndata:b\r\rdata:c\n\n",
		"\xEF\xBB\xBFdata:a\n\n",
		"\xEF\xBBdata:a\n\ndata:b\n\n",
		"id:1\ndata:a\n\nid:2\x00\ndata:b\n\nid\ndata:c\n\n",
		":heartbeat\n\nmessage:\ndata:{\"event\":\"end\",\"data\":\"[DONE]\"}\n\n",
		"message:\ndata:{\"event\":\"end\",\"data\":\"[DO",
		"event:abcdefgh\ndata:abcdefgh\ndata:\n\nevent\ndata\n\n",
		"data:{\"data\":\"[DONE]\",\"event\":\"end\"}\r\n\r\n",
		"retry:10\nfoo:bar\ndata :x\ndata:y\n\n",
	} {
		for _, ctl := range [][2]byte{{0, 0}, {1, 0}, {6, 0x81}, {0x2b, 0x84}} {
			f.Add(append(ctl[:], s...))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var seed, bound byte
		if len(in) > 0 {
			seed, in = in[0], in[1:]
		}
		if len(in) > 0 {
			bound, in = in[0], in[1:]
		}
		max := 0
		if bound >= 0x80 {
			max = int(bound&0x7f) + 1
		}
		chunks := cut(in, seed)
		ref := refParse(in, max)

		p := &Parser{MaxEventBytes: max}
		for pass := range 2 { // the second pass checks that Reset forgets all
			p.Reset()
			var got []refEvent
			emit := func(e *Event) {
				got = append(got, refEvent{string(e.Type), string(e.Data), string(e.ID), e.Truncated})
			}
			fed := 0
			for k, c := range chunks {
				p.Feed(c, emit)
				fed += len(c)
				if pass == 0 && (k < 16 || k%16 == 0) { // a prefix is a stream too
					r := refParse(in[:fed], max)
					if p.Events() != len(r.Events) || len(got) != len(r.Events) ||
						p.AtBoundary() != r.AtBoundary || p.AfterCR() != r.AfterCR {
						t.Fatalf("after %d bytes: events %d (%d), AtBoundary %v, AfterCR %v; reference %d, %v, %v",
							fed, p.Events(), len(got), p.AtBoundary(), p.AfterCR(), len(r.Events), r.AtBoundary, r.AfterCR)
					}
				}
			}
			if !reflect.DeepEqual(got, ref.Events) {
				t.Fatalf("pass %d, fed as %q:\n got %+v\nwant %+v", pass, chunks, got, ref.Events)
			}
			if p.Events() != len(got) || p.AtBoundary() != ref.AtBoundary || p.AfterCR() != ref.AfterCR {
				t.Fatalf("pass %d: Events %d, AtBoundary %v, AfterCR %v; reference %d, %v, %v",
					pass, p.Events(), p.AtBoundary(), p.AfterCR(), len(ref.Events), ref.AtBoundary, ref.AfterCR)
			}
		}

		// The end-of-stream verdict, against encoding/json.
		if len(ref.Events) > 0 {
			last := ref.Events[len(ref.Events)-1].Data
			var m map[string]any
			want := json.Unmarshal([]byte(last), &m) == nil && m["event"] == "end"
			if flow.IsFlowiseEnd([]byte(last)) != want {
				t.Fatalf("IsFlowiseEnd(%q) = %v", last, !want)
			}
		}
	})
}

// cut splits b as seed says: whole, a byte at a time, or in pseudo-random
// pieces of 0 to seed/4+1 bytes.
func cut(b []byte, seed byte) [][]byte {
	switch seed % 4 {
	case 0:
		return [][]byte{b}
	case 1:
		return chunked(b, 1)
	}
	var out [][]byte
	x := uint32(seed)*2654435761 + 1
	for len(b) > 0 {
		x = x*1664525 + 1013904223
		n := min(int(x>>16)%(int(seed/4)+2), len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}
