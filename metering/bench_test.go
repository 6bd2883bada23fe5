package metering

import (
	"testing"
)

// BenchmarkMeterTokenEvent is the per-frame cost of a token event, the
// bulk of every stream: validate the frame (flow.FlowiseEvent), find its
// data, decode and append the text.
func BenchmarkMeterTokenEvent(b *testing.B) {
	for _, bc := range []struct{ name, data string }{
		{"plain", `{"event":"token","data":" server."}`},
		{"escaped", `{"event":"token","data":"caf\u00e9 \"quoted\"\n"}`},
		{"python", `{"event": "token", "data": " server."}`},
		{"long", `{"event":"token","data":"` + string(make80("lorem ipsum ")) + `"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := new(Meter)
			m.Reset(testConfig, NewBudget(1<<30), "wf")
			data := []byte(bc.data)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				m.Event(data)
				if m.ans.full { // keep measuring appends, not just counting
					m.ans.clear()
				}
			}
			m.Release()
		})
	}
}

func make80(s string) []byte {
	var b []byte
	for len(b) < 80 {
		b = append(b, s...)
	}
	return b[:80]
}

// BenchmarkMeterAgentflowStream meters sample 21 whole: the rare events
// parsed with the zero-copy reader, and Finish.
func BenchmarkMeterAgentflowStream(b *testing.B) {
	body := sampleBody(b, "21-agentflow-stream.txt")
	m := new(Meter)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m.Reset(testConfig, nil, "wf")
		feedSSE(m, body, 0)
		m.Finish()
		m.Release()
	}
}

// BenchmarkFinishEstimate is the tokenizer's cost for a chatflow answer of
// about 4 KB (encoding already loaded).
func BenchmarkFinishEstimate(b *testing.B) {
	m := new(Meter)
	tok := frame("token", `" The quick brown fox jumps over the lazy dog."`)
	o200k()
	b.ReportAllocs()
	for b.Loop() {
		m.Reset(testConfig, nil, "wf")
		m.Request([]byte(`{"question":"Tell me about foxes and dogs, in detail please."}`))
		for range 100 {
			m.Event(tok)
		}
		m.Finish()
		m.Release()
	}
}
