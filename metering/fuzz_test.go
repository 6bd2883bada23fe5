package metering

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// refToken is the reference for a token event, built on encoding/json: the
// string data of a frame that json.Unmarshal accepts as an object (into a
// map[string]any, as flow.FlowiseEvent's verdict is defined) whose last
// "event" key is the string "token".
func refToken(frame []byte) (string, bool) {
	var probe map[string]any
	if json.Unmarshal(frame, &probe) != nil {
		return "", false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(frame, &m) != nil {
		return "", false
	}
	var ev string
	if json.Unmarshal(m["event"], &ev) != nil || ev != "token" {
		return "", false
	}
	raw := bytes.TrimSpace(m["data"])
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// FuzzMeterEvent feeds frames (the input's lines) to a Meter: it never
// panics, keeps exactly the text encoding/json decodes from the token
// events, and finishes with sane numbers.
func FuzzMeterEvent(f *testing.F) {
	for _, name := range []string{"11-prediction-stream.txt", "21-agentflow-stream.txt"} {
		var lines []string
		for _, l := range strings.Split(string(sampleBody(f, name)), "\n") {
			if d, ok := strings.CutPrefix(l, "data:"); ok {
				lines = append(lines, d)
			}
		}
		f.Add(strings.Join(lines, "\n"))
	}
	for _, s := range []string{
		`{"event":"token","data":"caf\u00e9 \ud83d\ude00 \ud800 \"x\" \\ \/"}`,
		`{"data":"reversed","event":"token"}`,
		`{ "event" : "token" , "data" : "spaced" }`,
		`{"event":"token","data":"a","data":"last"}`,
		`{"event":"token","event":"start","data":"not a token"}`,
		`{"ev\u0065nt":"tok\u0065n","d\u0061ta":"escaped keys"}`,
		"{\"event\":\"token\",\"data\":\"bad \xff utf8\"}",
		`{"event":"token","data":42}`,
		`{"event":"token","data":null}`,
		`{"event":"token","data":"x",}`,
		`{"event":"token","data":"x"`,
		`{"event":"token","data":"x","n":1e400}`,
		`{"EVENT":"token","DATA":"case"}`,
		`[{"event":"token","data":"array"}]`,
		`{"event":"usageMetadata","data":{"input_tokens":-3,"output_tokens":"9e99"}}`,
		`{"event":"agentFlowExecutedData","data":[{"data":{"output":{"usageMetadata":{"input_tokens":1e308,"output_tokens":99999999999999999999,"total_cost":-1}}}},{},[],null,"x"]}`,
		`{"event":"agentFlowExecutedData","data":{"not":"an array"}}`,
		`{"event":"agentFlowExecutedData","data":[{"data":{"output":{"usageMetadata":{"input_tokens":1,"output_tokens":2,"total_cost":"1e-9"},"responseMetadata":{"model_name":"\u0067pt-4o"}}}}]}`,
	} {
		f.Add(s)
	}
	m := new(Meter)
	b := NewBudget(64 << 20)
	f.Fuzz(func(t *testing.T, in string) {
		m.Reset(testConfig, b, "wf")
		var want []byte
		for _, fr := range strings.Split(in, "\n") {
			data := []byte(fr)
			m.Event(data)
			if s, ok := refToken(data); ok {
				want = append(want, s...)
			}
		}
		if m.ans.total != int64(len(want)) || !bytes.HasPrefix(want, m.ans.b) || len(m.ans.b) < min(len(want), maxAnswerText-3) {
			t.Fatalf("kept %q (of %d bytes), want %q", m.ans.b, m.ans.total, want)
		}
		u := m.Finish()
		if u.Source != SourceReported && u.Source != SourceEstimated {
			t.Fatalf("Source %q", u.Source)
		}
		for _, mu := range u.Models {
			if mu.Input < 0 || mu.Output < 0 || mu.CostNano < 0 || mu.Input > maxTokens || mu.Output > maxTokens {
				t.Fatalf("bad usage %+v", mu)
			}
		}
		if u.Source == SourceEstimated && u.Output() != countTokens(encodingFor("gpt-4o-mini"), want) {
			t.Fatalf("estimated output %d, want the tokens of %q", u.Output(), want)
		}
		m.Release()
		if b.Used() != 0 {
			t.Fatalf("Budget.Used %d after Release", b.Used())
		}
	})
}

// FuzzMeterAnswer feeds a request body and a JSON answer: no panic, sane
// numbers, budget given back.
func FuzzMeterAnswer(f *testing.F) {
	f.Add(`{"question":"hi","history":[{"role":"user","content":"a"},{"type":"apiMessage","message":"b"}]}`, string(sampleBody(f, "20-agentflow-nonstream.txt")))
	f.Add(`{"question":"hi"}`, string(sampleBody(f, "10-prediction-nonstream.txt")))
	f.Add(`{"form":{"a":[1,{"b":"c"}]},"history":[{"content":[{"text":"x"}]}]}`, `{"json":{"a":1},"usage":{"prompt_tokens":-1,"completion_tokens":"2"}}`)
	f.Add(`{"question":"\ud800`, `{"text":"\u`)
	m := new(Meter)
	b := NewBudget(64 << 20)
	f.Fuzz(func(t *testing.T, req, answer string) {
		m.Reset(testConfig, b, "wf")
		m.Request([]byte(req))
		feedJSON(m, []byte(answer), 7)
		u := m.Finish()
		if u.Source != SourceReported && u.Source != SourceEstimated && len(answer) > 0 {
			t.Fatalf("Source %q", u.Source)
		}
		for _, mu := range u.Models {
			if mu.Input < 0 || mu.Output < 0 || mu.CostNano < 0 || mu.Input > maxTokens || mu.Output > maxTokens {
				t.Fatalf("bad usage %+v", mu)
			}
		}
		m.Release()
		if b.Used() != 0 {
			t.Fatalf("Budget.Used %d after Release", b.Used())
		}
	})
}
