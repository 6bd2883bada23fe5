package flow

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// refFlowiseEvent is FlowiseEvent's definition: what encoding/json makes of
// the frame.
func refFlowiseEvent(data []byte) (string, bool) {
	var m map[string]any
	if json.Unmarshal(data, &m) != nil {
		return "", false
	}
	s, ok := m["event"].(string)
	return s, ok
}

// Frames as Flowise 3.1.2 sends them (see /work/shared/samples).
const (
	frameStart    = `{"event":"start","data":""}`
	frameToken    = `{"event":"token","data":" OpenAI"}`
	frameMetadata = `{"event":"metadata","data":{"chatId":"d38ea7ab-c284-4b42-b230-6f6b7af7454f","chatMessageId":"ed89a0bb-4253-4dbd-a160-9df81879b672","question":"hi","sessionId":"d38ea7ab-c284-4b42-b230-6f6b7af7454f","memoryType":"Buffer Memory"}}`
	frameUsage    = `{"event":"usageMetadata","data":{"input_tokens":11,"output_tokens":6,"total_tokens":17,"input_token_details":{},"output_token_details":{}}}`
	frameExecuted = `{"event":"agentFlowExecutedData","data":[{"nodeId":"llmAgentflow_0","nodeLabel":"Translator","data":{"id":"llmAgentflow_0","name":"llmAgentflow","input":{"messages":[{"role":"user","content":"hi"}],"llmModelConfig":{"temperature":0.7,"streaming":true,"basepath":"http://127.0.0.1:3312/v1","allowImageUploads":false}},"output":{"content":"Hello from the fake OpenAI server.","usageMetadata":{"input_tokens":11,"input_cost":0.0000016499999999999999,"base_input_cost":1.5e-7,"base_output_cost":6e-7}},"state":{},"chatHistory":[]},"previousNodeIds":["startAgentflow_0"],"status":"FINISHED"}]}`
	frameEnd      = `{"event":"end","data":"[DONE]"}`
)

func TestFlowiseEvent(t *testing.T) {
	deep := func(n int) string {
		return `{"data":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `,"event":"end"}`
	}
	tests := []struct {
		name, in string
		want     string // "" with ok false
		ok       bool
	}{
		{"start", frameStart, "start", true},
		{"token", frameToken, "token", true},
		{"metadata", frameMetadata, "metadata", true},
		{"usage", frameUsage, "usageMetadata", true},
		{"executed", frameExecuted, "agentFlowExecutedData", true},
		{"end", frameEnd, "end", true},
		{"end from Go", `{"data":"[DONE]","event":"end"}`, "end", true},
		{"end from Python", `{"event": "end", "data": "[DONE]"}`, "end", true},
		{"whitespace around", " \t\r\n{ \"event\" :\n\"end\" } \n", "end", true},
		{"event only", `{"event":"end"}`, "end", true},
		{"empty name", `{"event":""}`, "", true},
		{"last duplicate wins", `{"event":"end","event":"token"}`, "token", true},
		{"last duplicate not a string", `{"event":"end","event":1}`, "", false},
		{"duplicate after non-string", `{"event":null,"event":"end"}`, "end", true},
		{"nested event ignored", `{"data":{"event":"end"}}`, "", false},
		{"nested event before", `{"data":{"event":"x"},"event":"end"}`, "end", true},
		{"escaped key", `{"\u0065vent":"end"}`, "end", true},
		{"escaped key, other name", `{"\u0065vents":"end"}`, "", false},
		{"escaped value", `{"event":"\u0065nd"}`, "end", true},
		{"escaped quote in value", `{"event":"a\"b"}`, `a"b`, true},
		{"escape in other value", `{"event":"end","data":"a\"}b\\"}`, "end", true},
		{"invalid UTF-8 value", "{\"event\":\"e\xffnd\"}", "e\uFFFDnd", true},
		{"invalid UTF-8 elsewhere", "{\"event\":\"end\",\"d\":\"\xff\"}", "end", true},
		{"lone surrogate", `{"event":"\ud800"}`, "\uFFFD", true},
		{"number event", `{"event":1}`, "", false},
		{"no event", `{"data":"[DONE]"}`, "", false},
		{"empty object", `{}`, "", false},
		{"truncated", `{"event":"end","data":"[DO`, "", false},
		{"truncated after value", `{"event":"end"`, "", false},
		{"trailing comma", `{"event":"end",}`, "", false},
		{"two values", `{"event":"end"}{}`, "", false},
		{"trailing garbage", `{"event":"end"}x`, "", false},
		{"array", `["event","end"]`, "", false},
		{"null", `null`, "", false},
		{"string", `"end"`, "", false},
		{"empty", ``, "", false},
		{"single quotes", `{'event':'end'}`, "", false},
		{"control char in string", "{\"event\":\"e\nd\"}", "", false},
		{"bad escape", `{"event":"\x41"}`, "", false},
		{"short unicode escape", `{"event":"\u00"}`, "", false},
		{"leading zero", `{"event":"end","n":01}`, "", false},
		{"bare minus", `{"event":"end","n":-}`, "", false},
		{"dot without digits", `{"event":"end","n":1.}`, "", false},
		{"exponent without digits", `{"event":"end","n":1e}`, "", false},
		{"numbers", `{"event":"end","n":[-0,0.5,-1.25e+3,1E-7,0e0,123456789012345678901234567890]}`, "end", true},
		{"float overflow", `{"event":"end","n":1e400}`, "", false},
		{"float overflow near max", `{"event":"end","n":1.7976931348623159e308}`, "", false},
		{"float max", `{"event":"end","n":1.7976931348623157e308}`, "end", true},
		{"float underflow", `{"event":"end","n":1e-400}`, "end", true},
		{"long zero fraction", `{"event":"end","n":0.` + strings.Repeat("0", 400) + `1e400}`, "end", true},
		{"long mantissa overflow", `{"event":"end","n":` + strings.Repeat("9", 310) + `}`, "", false},
		{"literals", `{"a":true,"b":false,"c":null,"event":"end"}`, "end", true},
		{"bad literal", `{"a":tru,"event":"end"}`, "", false},
		{"mismatched brackets", `{"a":[1},"event":"end"}`, "", false},
		{"key not string", `{event:"end"}`, "", false},
		{"missing colon", `{"event" "end"}`, "", false},
		{"depth 10000", deep(10000), "end", true},
		{"depth 10001", deep(10001), "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, ok := FlowiseEvent([]byte(tc.in))
			if string(name) != tc.want || ok != tc.ok {
				t.Errorf("FlowiseEvent = %q, %v; want %q, %v", name, ok, tc.want, tc.ok)
			}
			if rn, rok := refFlowiseEvent([]byte(tc.in)); rn != tc.want || rok != tc.ok {
				t.Errorf("the test is wrong: encoding/json says %q, %v", rn, rok)
			}
			if end := IsFlowiseEnd([]byte(tc.in)); end != (tc.ok && tc.want == "end") {
				t.Errorf("IsFlowiseEnd = %v", end)
			}
		})
	}
}

func TestFlowiseEventZeroCopy(t *testing.T) {
	data := []byte(frameMetadata)
	name, ok := FlowiseEvent(data)
	if !ok || &name[0] != &data[len(`{"event":"`)] {
		t.Fatalf("name %q does not point into the frame", name)
	}
	for _, f := range []string{frameToken, frameExecuted, frameEnd} {
		data := []byte(f)
		if n := testing.AllocsPerRun(100, func() { IsFlowiseEnd(data) }); n != 0 {
			t.Errorf("IsFlowiseEnd(%.30s…) allocates %v times", f, n)
		}
	}
}

// TestNumberOverflow sweeps numbers around the float64 limit, where
// json.Unmarshal into an any starts to fail.
func TestNumberOverflow(t *testing.T) {
	for _, mant := range []string{"1", "1.7976931348623157", "1.7976931348623158", "1.7976931348623159",
		"17976931348623157", "0.00017976931348623159", "9.999", "99", "0.0", "-1.8"} {
		for exp := 290; exp <= 330; exp++ {
			for _, e := range []string{"e", "E+", "e0"} {
				data := []byte(fmt.Sprintf(`{"event":"end","n":%s%s%d}`, mant, e, exp))
				_, want := refFlowiseEvent(data)
				if got := IsFlowiseEnd(data); got != want {
					t.Errorf("IsFlowiseEnd(%s) = %v, encoding/json says %v", data, got, want)
				}
			}
		}
	}
}

func FuzzFlowiseEvent(f *testing.F) {
	for _, s := range []string{
		frameStart, frameToken, frameMetadata, frameUsage, frameExecuted, frameEnd,
		`{"data":"[DONE]","event":"end"}`, `{"event": "end", "data": "[DONE]"}`,
		`{"event":"end","event":"x"}`, `{"\u0065vent":"end"}`, `{"event":"\u0065nd"}`,
		"{\"event\":\"e\xffnd\"}", `{"event":"end","data":"[DO`, `{"event":"end","n":1e308}`,
		`{"event":"end","n":-9.99e307}`, `{"event":"end","n":0.0001e312}`, `[[[{}]]]`,
		` {"a":[{"b":[1,2,{"c":null}]}],"event":"token"} `, `{"event":true}`, `1`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantOK := refFlowiseEvent(data)
		name, ok := FlowiseEvent(data)
		if ok != wantOK || string(name) != want {
			t.Fatalf("FlowiseEvent(%q) = %q, %v; encoding/json says %q, %v", data, name, ok, want, wantOK)
		}
		if IsFlowiseEnd(data) != (wantOK && want == "end") {
			t.Fatalf("IsFlowiseEnd(%q) = %v", data, !(wantOK && want == "end"))
		}
		// The validator alone, on any JSON value, not only objects.
		var v any
		if valid := json.Unmarshal(data, &v) == nil; scanJSON(data).ok != valid {
			t.Fatalf("scanJSON(%q).ok = %v; encoding/json says %v", data, !valid, valid)
		}
	})
}

func BenchmarkFlowiseEvent(b *testing.B) {
	for _, c := range []struct{ name, frame string }{
		{"token", frameToken},
		{"metadata", frameMetadata},
		{"agentFlowExecutedData", frameExecuted},
		{"end", frameEnd},
	} {
		data := []byte(c.frame)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				FlowiseEvent(data)
			}
		})
	}
}
