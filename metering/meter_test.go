package metering

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/sse"
)

var curlTrailer = regexp.MustCompile(`\n\[curl time_total=[^\]]*\]\n?$`)

// sampleBody returns the body of a Flowise capture: the shared ones next to
// the repo (../../shared/samples), else the copy in testdata/samples.
func sampleBody(t testing.TB, name string) []byte {
	t.Helper()
	for _, dir := range []string{filepath.Join("..", "..", "shared", "samples"), filepath.Join("testdata", "samples")} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		_, body, ok := strings.Cut(string(raw), "\r\n\r\n")
		if !ok {
			t.Fatalf("%s: no header/body separator", name)
		}
		return []byte(curlTrailer.ReplaceAllString(body, ""))
	}
	t.Fatalf("sample %s not found", name)
	return nil
}

// feedSSE splits a stream body into events with the project's SSE parser
// and hands their data to m, in pieces of chunk bytes (0: whole).
func feedSSE(m *Meter, body []byte, chunk int) {
	p := sse.Parser{MaxEventBytes: 64 << 20}
	emit := func(ev *sse.Event) { m.Event(ev.Data) }
	if chunk <= 0 {
		chunk = len(body)
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		p.Feed(body[:n], emit)
		body = body[n:]
	}
}

// feedJSON hands a JSON answer to m in pieces of chunk bytes (0: whole).
func feedJSON(m *Meter, body []byte, chunk int) {
	if chunk <= 0 {
		chunk = max(len(body), 1)
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		m.Write(body[:n])
		body = body[n:]
	}
}

// frame builds a Flowise SSE frame's data.
func frame(event, data string) []byte {
	return []byte(`{"event":"` + event + `","data":` + data + `}`)
}

var testConfig = &Config{DefaultModel: "gpt-4o-mini"}

func meterFor(c *Config, b *Budget) *Meter {
	m := new(Meter)
	m.Reset(c, b, "0f4c1c4e-7d47-4ae4-9b43-5f1d1d1d1d1d")
	return m
}

// gpt4oMiniNano is the cost of in and out tokens at gpt-4o-mini's price in
// nano-dollars: 0.15 and 0.60 USD per 1M tokens are 150,000 and 600,000
// pico-dollars per token, rounded half up to nano-dollars.
func gpt4oMiniNano(in, out int64) int64 {
	return (in*150_000 + out*600_000 + 500) / 1000
}

func tokens(t testing.TB, model, s string) int64 {
	t.Helper()
	return countTokens(encodingFor(model), []byte(s))
}

func TestSamplesAgentflow(t *testing.T) {
	want := Usage{Source: SourceReported, Models: []ModelUsage{{
		Model: "gpt-4o-mini", Input: 11, Output: 6, CostNano: 5250, FlowiseCost: true, Priced: true,
	}}}
	for _, chunk := range []int{0, 1, 7, 100} {
		t.Run(fmt.Sprintf("nonstream/chunk=%d", chunk), func(t *testing.T) {
			m := meterFor(testConfig, nil)
			m.Request([]byte(`{"question":"hi"}`))
			feedJSON(m, sampleBody(t, "20-agentflow-nonstream.txt"), chunk)
			if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
				t.Errorf("Finish = %+v, want %+v", got, want)
			}
		})
		t.Run(fmt.Sprintf("stream/chunk=%d", chunk), func(t *testing.T) {
			m := meterFor(testConfig, nil)
			m.Request([]byte(`{"question":"hi","streaming":true}`))
			feedSSE(m, sampleBody(t, "21-agentflow-stream.txt"), chunk)
			if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
				t.Errorf("Finish = %+v, want %+v", got, want)
			}
		})
	}
	// Without a configured model or a price table entry, Flowise's own cost
	// still prices the run.
	t.Run("no config", func(t *testing.T) {
		m := meterFor(nil, nil)
		feedSSE(m, sampleBody(t, "21-agentflow-stream.txt"), 0)
		if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
			t.Errorf("Finish = %+v, want %+v", got, want)
		}
	})
}

func TestSamplesChatflow(t *testing.T) {
	const model = "gpt-4o-mini"
	in := tokens(t, model, "hi")
	out := tokens(t, model, "Hello from the fake OpenAI server.")
	if in != 1 || out != 8 {
		t.Fatalf("o200k_base counts: hi = %d, answer = %d; want 1 and 8", in, out)
	}
	want := Usage{Source: SourceEstimated, Models: []ModelUsage{{
		Model: model, Input: in, Output: out, CostNano: gpt4oMiniNano(in, out), Priced: true,
	}}}
	if want.Models[0].CostNano != 4950 { // 150 + 8 × 600 nano
		t.Fatalf("cost %d", want.Models[0].CostNano)
	}
	for _, chunk := range []int{0, 3} {
		m := meterFor(testConfig, nil)
		m.Request([]byte(`{"question":"hi"}`))
		feedJSON(m, sampleBody(t, "10-prediction-nonstream.txt"), chunk)
		if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
			t.Errorf("10 nonstream chunk %d: Finish = %+v, want %+v", chunk, got, want)
		}
		m = meterFor(testConfig, nil)
		m.Request([]byte(`{"question":"hi","streaming":true}`))
		feedSSE(m, sampleBody(t, "11-prediction-stream.txt"), chunk)
		if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
			t.Errorf("11 stream chunk %d: Finish = %+v, want %+v", chunk, got, want)
		}
	}
}

// llmNode is an Agentflow V2 LLM node with usage, in Flowise's layout.
func llmNode(id, model string, in, out int, cost string) string {
	c := ""
	if cost != "" {
		c = `,"total_cost":` + cost
	}
	return `{"nodeId":"` + id + `","nodeLabel":"LLM","data":{"id":"` + id + `","name":"llmAgentflow","input":{"llmModelConfig":{"modelName":"` + model + `"}},` +
		`"output":{"content":"x","usageMetadata":{"input_tokens":` + fmt.Sprint(in) + `,"output_tokens":` + fmt.Sprint(out) + `,"total_tokens":` + fmt.Sprint(in+out) + c + `},` +
		`"responseMetadata":{"model_name":"` + model + `"}}},"previousNodeIds":[],"status":"FINISHED"}`
}

const startNode = `{"nodeId":"startAgentflow_0","nodeLabel":"Start","data":{"id":"startAgentflow_0","name":"startAgentflow","input":{"question":"hi"},"output":{"question":"hi"},"state":{}},"previousNodeIds":[],"status":"FINISHED"}`

func TestCumulativeExecutedData(t *testing.T) {
	n1 := llmNode("llmAgentflow_0", "gpt-4o-mini", 100, 20, "")
	n2 := llmNode("llmAgentflow_1", "gpt-4o", 300, 50, "")
	want := Usage{Source: SourceReported, Models: []ModelUsage{
		{Model: "gpt-4o-mini", Input: 100, Output: 20, CostNano: gpt4oMiniNano(100, 20), Priced: true},
		{Model: "gpt-4o", Input: 300, Output: 50, CostNano: (300*2_500_000 + 50*10_000_000 + 500) / 1000, Priced: true},
	}}
	stream := [][]byte{
		frame("agentFlowEvent", `"INPROGRESS"`),
		frame("agentFlowExecutedData", `[`+startNode+`]`),
		frame("token", `"x"`),
		frame("usageMetadata", `{"input_tokens":100,"output_tokens":20,"total_tokens":120}`),
		frame("agentFlowExecutedData", `[`+startNode+`,`+n1+`]`),
		frame("token", `"y"`),
		frame("usageMetadata", `{"input_tokens":300,"output_tokens":50,"total_tokens":350}`),
		frame("agentFlowExecutedData", `[`+startNode+`,`+n1+`,`+n2+`]`),
		frame("agentFlowEvent", `"FINISHED"`),
		frame("end", `"[DONE]"`),
	}
	m := meterFor(testConfig, nil)
	for _, f := range stream {
		m.Event(f)
	}
	if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
		t.Errorf("stream: Finish = %+v, want %+v", got, want)
	}

	// The same as a JSON answer, written by Go (keys in another order) and
	// by Python (spaces after ':' and ','): the same usage.
	answers := map[string]string{
		"js":     `{"text":"xy","agentFlowExecutedData":[` + startNode + `,` + n1 + `,` + n2 + `],"sessionId":"s"}`,
		"go":     `{"agentFlowExecutedData":[` + reorder(startNode) + `,` + reorder(n1) + `,` + reorder(n2) + `],"text":"xy"}`,
		"python": pythonSpacing(`{"text":"xy","agentFlowExecutedData":[` + startNode + `,` + n1 + `,` + n2 + `]}`),
		"pretty": indent(`{"text":"xy","agentFlowExecutedData":[` + startNode + `,` + n1 + `,` + n2 + `]}`),
	}
	for name, body := range answers {
		m := meterFor(testConfig, nil)
		feedJSON(m, []byte(body), 5)
		if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
			t.Errorf("%s JSON: Finish = %+v, want %+v", name, got, want)
		}
	}
	// Stream frames in Python's spacing, keys in reverse order.
	m = meterFor(testConfig, nil)
	for _, f := range stream {
		m.Event([]byte(pythonSpacing(reorder(string(f)))))
	}
	if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
		t.Errorf("python stream: Finish = %+v, want %+v", got, want)
	}
}

// reorder rewrites a JSON object with its keys sorted, as Go's
// encoding/json writes a map.
func reorder(s string) string {
	var v any
	dec := jsonDecoder(s)
	if err := dec.Decode(&v); err != nil {
		panic(err)
	}
	return mustMarshal(v)
}

// pythonSpacing rewrites JSON as Python's json.dumps writes it: ", " and ": ".
func pythonSpacing(s string) string {
	var b strings.Builder
	inStr, esc := false, false
	for _, c := range []byte(s) {
		b.WriteByte(c)
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == ',' || c == ':'):
			b.WriteByte(' ')
		}
	}
	return b.String()
}

func indent(s string) string {
	var b bytes.Buffer
	if err := jsonIndent(&b, []byte(s)); err != nil {
		panic(err)
	}
	return b.String()
}

func TestUsageMetadataEventOnly(t *testing.T) {
	// No agentFlowExecutedData came (the stream was cut): the usageMetadata
	// events are the usage, at the configured model's price.
	m := meterFor(testConfig, nil)
	m.Event(frame("token", `"Hello"`))
	m.Event(frame("usageMetadata", `{"input_tokens":11,"output_tokens":6,"total_tokens":17}`))
	want := Usage{Source: SourceReported, Models: []ModelUsage{{Model: "gpt-4o-mini", Input: 11, Output: 6, CostNano: 5250, Priced: true}}}
	if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
		t.Errorf("Finish = %+v, want %+v", got, want)
	}
}

func TestModelFallback(t *testing.T) {
	cfg := &Config{DefaultModel: "gpt-4o-mini", Models: map[string]string{"wf-claude": "claude-3-5-sonnet"}}
	tests := []struct {
		name, workflow, nodeModel string
		want                      ModelUsage
	}{
		{"priced node model, dated", "wf", "gpt-4o-2024-08-06",
			ModelUsage{Model: "gpt-4o", Input: 1000, Output: 100, CostNano: 3_500_000, Priced: true}},
		{"provider prefix", "wf", "openai/gpt-4o-mini",
			ModelUsage{Model: "gpt-4o-mini", Input: 1000, Output: 100, CostNano: 210_000, Priced: true}},
		{"unpriced node model: configured price, node's label", "wf", "my-azure-deployment",
			ModelUsage{Model: "my-azure-deployment", Input: 1000, Output: 100, CostNano: 210_000, Priced: true}},
		{"per-flow model", "wf-claude", "my-deployment",
			ModelUsage{Model: "my-deployment", Input: 1000, Output: 100, CostNano: 4_500_000, Priced: true}},
		{"no node model: configured", "wf-claude", "",
			ModelUsage{Model: "claude-3-5-sonnet", Input: 1000, Output: 100, CostNano: 4_500_000, Priced: true}},
	}
	for _, tc := range tests {
		m := new(Meter)
		m.Reset(cfg, nil, tc.workflow)
		node := `{"data":{"output":{"usageMetadata":{"input_tokens":1000,"output_tokens":100}`
		if tc.nodeModel != "" {
			node += `,"responseMetadata":{"model_name":"` + tc.nodeModel + `"}`
		}
		node += `}}}`
		m.Event(frame("agentFlowExecutedData", `[`+node+`]`))
		got := m.Finish()
		if got.Source != SourceReported || len(got.Models) != 1 || got.Models[0] != tc.want {
			t.Errorf("%s: Finish = %+v, want %+v", tc.name, got, tc.want)
		}
	}

	// Nothing priced: tokens, no cost.
	m := new(Meter)
	m.Reset(&Config{}, nil, "wf")
	m.Event(frame("agentFlowExecutedData", `[{"data":{"output":{"usageMetadata":{"input_tokens":5,"output_tokens":7},"responseMetadata":{"model_name":"Local-Llama"}}}}]`))
	want := Usage{Source: SourceReported, Models: []ModelUsage{{Model: "Local-Llama", Input: 5, Output: 7}}}
	if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
		t.Errorf("unpriced: Finish = %+v, want %+v", got, want)
	}

	// The model from the node's config when the provider did not say.
	m.Reset(&Config{}, nil, "wf")
	m.Event(frame("agentFlowExecutedData", `[{"data":{"input":{"agentModelConfig":{"modelName":"gpt-4.1-mini"}},"output":{"usageMetadata":{"input_tokens":1000,"output_tokens":1000}}}}]`))
	want = Usage{Source: SourceReported, Models: []ModelUsage{{Model: "gpt-4.1-mini", Input: 1000, Output: 1000, CostNano: 2_000_000, Priced: true}}}
	if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
		t.Errorf("agent config model: Finish = %+v, want %+v", got, want)
	}
}

func TestFlowiseCost(t *testing.T) {
	tests := []struct {
		cost string
		want int64
	}{
		{`0.00000525`, 5250},
		{`5.25e-06`, 5250},
		{`5.25E-6`, 5250},
		{`0.0000016499999999999999`, 1650},
		{`"0.00000525"`, 5250}, // a string holding the number
		{`0.0000000005`, 1},    // half a nano rounds up
		{`0.00000000049999`, 0},
		{`0`, 0},
		{`-0.5`, 0},            // negative: 0
		{`1e300`, maxCostNano}, // absurd: capped
		{`1e400`, maxCostNano}, // beyond float64: JSON answers only (see below)
		{`123456789012345678901234567890`, maxCostNano},
	}
	for _, tc := range tests {
		m := meterFor(testConfig, nil)
		feedJSON(m, []byte(`{"agentFlowExecutedData":[{"data":{"output":{"usageMetadata":{"input_tokens":11,"output_tokens":6,"total_cost":`+tc.cost+`}}}}]}`), 0)
		got := m.Finish()
		if len(got.Models) != 1 || got.Models[0].CostNano != tc.want || !got.Models[0].FlowiseCost {
			t.Errorf("total_cost %s: Finish = %+v, want cost %d from Flowise", tc.cost, got, tc.want)
		}
	}
	// A cost that is not a number: priced from the table instead.
	m := meterFor(testConfig, nil)
	m.Event(frame("agentFlowExecutedData", `[{"data":{"output":{"usageMetadata":{"input_tokens":11,"output_tokens":6,"total_cost":{}}}}}]`))
	if got := m.Finish(); got.Models[0].CostNano != 5250 || got.Models[0].FlowiseCost {
		t.Errorf("total_cost {}: Finish = %+v", got)
	}
	// input_cost + output_cost when total_cost is missing.
	m = meterFor(testConfig, nil)
	m.Event(frame("agentFlowExecutedData", `[{"data":{"output":{"usageMetadata":{"input_tokens":11,"output_tokens":6,"input_cost":0.0000016499999999999999,"output_cost":0.0000036}}}}]`))
	if got := m.Finish(); got.Models[0].CostNano != 5250 || !got.Models[0].FlowiseCost {
		t.Errorf("input_cost+output_cost: Finish = %+v", got)
	}
}

// A frame with a number beyond float64 is not valid to encoding/json
// (flow.FlowiseEvent), so the stream's frame is skipped whole, as the rest
// of the proxy skips it.
func TestEventHugeNumber(t *testing.T) {
	m := meterFor(testConfig, nil)
	m.Event(frame("agentFlowExecutedData", `[{"data":{"output":{"usageMetadata":{"input_tokens":1e400,"output_tokens":6}}}}]`))
	if got := m.Finish(); got.Source != SourceEstimated {
		t.Errorf("Finish = %+v, want the frame skipped", got)
	}
}

// When the stream's last agentFlowExecutedData is lost (here: cut by the
// SSE parser's MaxEventBytes, so it is not JSON), the usageMetadata events
// still report the usage.
func TestTruncatedExecutedData(t *testing.T) {
	srv := fakeflow.New(fakeflow.Options{Agentflow: true, Tokens: 20000})
	req := httptest.NewRequest(http.MethodPost, "/api/v1/prediction/3f1c9d4e-2b7a-4c1e-9f3a-8d2e6b5a4c10", strings.NewReader(`{"question":"hi","streaming":true}`))
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	m := meterFor(testConfig, nil)
	p := sse.Parser{MaxEventBytes: 64 << 10}
	truncated := 0
	p.Feed(rec.Body.Bytes(), func(ev *sse.Event) {
		if ev.Truncated {
			truncated++
		}
		m.Event(ev.Data)
	})
	want := Usage{Source: SourceReported, Models: []ModelUsage{{Model: "gpt-4o-mini", Input: 11, Output: 20000, CostNano: gpt4oMiniNano(11, 20000), Priced: true}}}
	if got := tokensOnly(m.Finish()); truncated != 1 || !reflect.DeepEqual(got, want) {
		t.Errorf("%d truncated; Finish = %+v, want %+v", truncated, got, want)
	}
}

func TestTokenCounts(t *testing.T) {
	tests := []struct {
		in, out         string
		wantIn, wantOut int64
	}{
		{`11`, `6`, 11, 6},
		{`"11"`, `"6"`, 11, 6},
		{`1.1e1`, `6.0`, 11, 6},
		{`-5`, `6`, 0, 6},
		{`1e300`, `99999999999999999999999`, maxTokens, maxTokens},
		{`1e400`, `6`, maxTokens, 6}, // beyond float64: JSON answers only (see below)
		{`2e12`, `0`, maxTokens, 0},
		{`null`, `6`, 0, 6},
		{`true`, `[1]`, 0, 0}, // neither is a count: not usage
	}
	for _, tc := range tests {
		m := meterFor(testConfig, nil)
		feedJSON(m, []byte(`{"agentFlowExecutedData":[{"data":{"output":{"usageMetadata":{"input_tokens":`+tc.in+`,"output_tokens":`+tc.out+`}}}}]}`), 0)
		got := m.Finish()
		if got.Input() != tc.wantIn || got.Output() != tc.wantOut {
			t.Errorf("input_tokens %s, output_tokens %s: Finish = %+v, want %d/%d", tc.in, tc.out, got, tc.wantIn, tc.wantOut)
		}
		if got.CostNano() < 0 {
			t.Errorf("negative cost %+v", got)
		}
	}
}

func TestOpenAIUsage(t *testing.T) {
	for _, body := range []string{
		`{"model":"gpt-4o-mini-2024-07-18","usage":{"prompt_tokens":11,"completion_tokens":6,"total_tokens":17},"text":"x"}`,
		`{"usage":{"input_tokens":11,"output_tokens":6},"text":"x"}`,
	} {
		m := meterFor(testConfig, nil)
		feedJSON(m, []byte(body), 0)
		want := Usage{Source: SourceReported, Models: []ModelUsage{{Model: "gpt-4o-mini", Input: 11, Output: 6, CostNano: 5250, Priced: true}}}
		if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Finish = %+v, want %+v", body, got, want)
		}
	}
}

func TestEstimateRequest(t *testing.T) {
	const model = "gpt-4o-mini"
	q, h1, h2, h3 := "What is the capital of France?", "Hello there", "Hi! How can I help?", `Ünïcödé "quotes" 😀`
	tests := []struct {
		name, body string
		wantIn     int64
	}{
		{"question", `{"question":"` + q + `"}`, tokens(t, model, q)},
		{"role/content history", `{"question":"` + q + `","history":[{"role":"userMessage","content":"` + h1 + `"},{"role":"apiMessage","content":"` + h2 + `"}]}`,
			tokens(t, model, q) + tokens(t, model, h1) + tokens(t, model, h2)},
		{"type/message history", `{"history":[{"type":"userMessage","message":"` + h1 + `"},{"type":"apiMessage","message":"` + h2 + `"}],"question":"` + q + `"}`,
			tokens(t, model, q) + tokens(t, model, h1) + tokens(t, model, h2)},
		{"content parts, escapes", `{"question":"\u00dcn\u00efc\u00f6d\u00e9 \"quotes\" \ud83d\ude00","history":[{"role":"user","content":[{"type":"text","text":"` + h1 + `"},{"type":"image_url","image_url":{"url":"data:..."}}]}]}`,
			tokens(t, model, h3) + tokens(t, model, h1)},
		{"form", `{"form":{"name": "Ada", "topic": "engines"}}`, tokens(t, model, `{"name":"Ada","topic":"engines"}`)},
		{"uploads skipped", `{"question":"` + q + `","uploads":[{"data":"data:image/png;base64,` + strings.Repeat("QUJD", 1000) + `","type":"file"}]}`, tokens(t, model, q)},
		{"not JSON", `--boundary\r\nContent-Disposition: form-data; name="question"\r\n\r\nhi`, 0},
		{"question not a string", `{"question":42}`, 0},
	}
	for _, tc := range tests {
		m := meterFor(testConfig, nil)
		m.Request([]byte(tc.body))
		m.Event(frame("token", `"ok"`))
		got := m.Finish()
		if got.Source != SourceEstimated || got.Input() != tc.wantIn || got.Output() != 1 {
			t.Errorf("%s: Finish = %+v, want input %d, output 1", tc.name, got, tc.wantIn)
		}
	}
}

func TestEstimateJSONAnswer(t *testing.T) {
	const model = "gpt-4o-mini"
	tests := []struct {
		name, body string
		wantOut    int64
	}{
		{"text", `{"text":"Hello from the fake OpenAI server.","question":"hi"}`, 8},
		{"escaped text", `{"question":"hi","text":"Hello from the fake OpenAI server.\n\n\u00e9\ud83d\ude00"}`, tokens(t, model, "Hello from the fake OpenAI server.\n\né😀")},
		{"json", `{"json": {"answer" : "Paris", "n": [1, 2]}}`, tokens(t, model, `{"answer":"Paris","n":[1,2]}`)},
		{"no text", `{"statusCode":500,"success":false,"message":"boom"}`, 0},
		{"truncated: bytes/4", `{"text":"Hello from the fake OpenAI serv`, int64(len(`{"text":"Hello from the fake OpenAI serv`)) / 4},
		{"not an object", `"Hello"`, 1},
	}
	for _, tc := range tests {
		m := meterFor(testConfig, nil)
		feedJSON(m, []byte(tc.body), 0)
		got := m.Finish()
		if got.Source != SourceEstimated || got.Output() != tc.wantOut {
			t.Errorf("%s: Finish = %+v, want output %d", tc.name, got, tc.wantOut)
		}
	}
}

func TestNothingMetered(t *testing.T) {
	m := meterFor(testConfig, NewBudget(1<<20))
	m.Request([]byte(`{"question":"hi"}`))
	if got := m.Finish(); !reflect.DeepEqual(got, Usage{}) {
		t.Errorf("Finish = %+v, want nothing", got)
	}
	m.Release()
	var zero Usage
	if zero.Input() != 0 || zero.Output() != 0 || zero.CostNano() != 0 {
		t.Error("zero Usage sums not 0")
	}
}

func TestFinishTwiceAndReuse(t *testing.T) {
	b := NewBudget(64 << 20)
	m := new(Meter)
	for i := range 3 {
		m.Reset(testConfig, b, "wf")
		m.Request([]byte(`{"question":"hi"}`))
		feedSSE(m, sampleBody(t, "21-agentflow-stream.txt"), 0)
		u1 := m.Finish()
		u2 := m.Finish()
		if !reflect.DeepEqual(u1, u2) || u1.Input() != 11 || u1.Output() != 6 || u1.CostNano() != 5250 {
			t.Fatalf("round %d: %+v then %+v", i, u1, u2)
		}
		m.Release()
		if b.Used() != 0 {
			t.Fatalf("round %d: Budget.Used = %d after Release", i, b.Used())
		}
		// The Usage returned stays valid after the Meter is reused.
		m.Reset(testConfig, b, "wf")
		m.Event(frame("agentFlowExecutedData", `[{"data":{"output":{"usageMetadata":{"input_tokens":1,"output_tokens":1},"responseMetadata":{"model_name":"o3"}}}}]`))
		m.Finish()
		if u1.Models[0].Model != "gpt-4o-mini" {
			t.Fatalf("round %d: earlier Usage changed: %+v", i, u1)
		}
		m.Release()
	}
}

func TestBounds(t *testing.T) {
	t.Run("20 MiB JSON holds at most 8 MiB", func(t *testing.T) {
		b := NewBudget(1 << 40)
		m := meterFor(testConfig, b)
		chunk := bytes.Repeat([]byte("a"), 32<<10)
		var total, peak int64
		m.Write([]byte(`{"text":"`))
		total += 9
		for total < 20<<20 {
			m.Write(chunk)
			total += int64(len(chunk))
			peak = max(peak, b.Used())
		}
		m.Write([]byte(`"}`))
		total += 2
		if peak > maxAnswerJSON {
			t.Errorf("peak Budget.Used %d > 8 MiB", peak)
		}
		if b.Used() != 0 {
			t.Errorf("Budget.Used %d after buffering stopped, want 0", b.Used())
		}
		got := m.Finish()
		if got.Source != SourceEstimated || got.Output() != total/4 {
			t.Errorf("Finish = %+v, want estimated output %d", got, total/4)
		}
		m.Release()
		if b.Used() != 0 {
			t.Errorf("Budget.Used = %d after Release", b.Used())
		}
	})

	t.Run("64 KiB Budget estimates a large answer", func(t *testing.T) {
		b := NewBudget(64 << 10)
		m := meterFor(testConfig, b)
		// An agentflow answer with usage, made large by its text.
		big := `{"text":"` + strings.Repeat("word ", 40<<10) + `","agentFlowExecutedData":[` + llmNode("llm", "gpt-4o-mini", 11, 6, "") + `]}`
		feedJSON(m, []byte(big), 4096)
		if b.Used() > 64<<10 {
			t.Errorf("Budget.Used %d > 64 KiB", b.Used())
		}
		got := m.Finish()
		if got.Source != SourceEstimated || got.Output() != int64(len(big))/4 {
			t.Errorf("Finish = %+v, want estimated output %d", got, len(big)/4)
		}
		m.Release()
		if b.Used() != 0 {
			t.Errorf("Budget.Used = %d after Release", b.Used())
		}
		// The same answer fits a larger Budget: reported.
		b = NewBudget(8 << 20)
		m = meterFor(testConfig, b)
		feedJSON(m, []byte(big), 4096)
		if got := m.Finish(); got.Source != SourceReported || got.Input() != 11 || got.Output() != 6 {
			t.Errorf("8 MiB Budget: Finish = %+v", got)
		}
		if b.Used() == 0 {
			t.Error("Budget.Used = 0 while the Meter holds the answer")
		}
		m.Release()
		if b.Used() != 0 {
			t.Errorf("Budget.Used = %d after Release", b.Used())
		}
	})

	t.Run("stream answer text kept up to 1 MiB, extrapolated", func(t *testing.T) {
		b := NewBudget(1 << 40)
		m := meterFor(testConfig, b)
		tok := frame("token", `" lorem ipsum dolor sit amet"`)
		const piece = " lorem ipsum dolor sit amet"
		n := 3 * maxAnswerText / len(piece)
		for range n {
			m.Event(tok)
		}
		if m.ans.total != int64(n*len(piece)) || len(m.ans.b) != maxAnswerText || !m.ans.full {
			t.Fatalf("kept %d of %d bytes (full %v)", len(m.ans.b), m.ans.total, m.ans.full)
		}
		if b.Used() > maxAnswerText+growStep {
			t.Errorf("Budget.Used %d", b.Used())
		}
		got := m.Finish()
		kept := tokens(t, "gpt-4o-mini", string(m.ans.b))
		want := kept * int64(n*len(piece)) / maxAnswerText
		if got.Output() != want {
			t.Errorf("output %d, want %d (kept part's %d tokens extrapolated)", got.Output(), want, kept)
		}
		m.Release()
		if b.Used() != 0 {
			t.Errorf("Budget.Used = %d after Release", b.Used())
		}
	})

	t.Run("request text kept up to 256 KiB, extrapolated", func(t *testing.T) {
		m := meterFor(testConfig, nil)
		q := strings.Repeat("hello world ", 100<<10) // 1.2 MB
		m.Request([]byte(`{"question":"` + q + `"}`))
		if len(m.req.b) != maxRequestText || m.req.total != int64(len(q)) {
			t.Fatalf("kept %d of %d", len(m.req.b), m.req.total)
		}
		m.Event(frame("token", `"x"`))
		got := m.Finish()
		kept := tokens(t, "gpt-4o-mini", q[:maxRequestText])
		if want := kept * int64(len(q)) / maxRequestText; got.Input() != want {
			t.Errorf("input %d, want %d", got.Input(), want)
		}
	})

	t.Run("zero Budget", func(t *testing.T) {
		b := NewBudget(0)
		m := meterFor(testConfig, b)
		m.Request([]byte(`{"question":"hello there"}`))
		m.Event(frame("token", `"Hello from the fake OpenAI server."`))
		got := m.Finish()
		// Nothing kept: both estimated at 4 bytes a token.
		if got.Input() != 11/4 || got.Output() != 34/4 || b.Used() != 0 {
			t.Errorf("Finish = %+v, Used %d", got, b.Used())
		}
	})
}

func TestBudget(t *testing.T) {
	var nilB *Budget
	if !nilB.take(1<<62) || nilB.Used() != 0 {
		t.Error("nil Budget not unbounded")
	}
	nilB.give(5)
	b := NewBudget(100)
	if !b.take(60) || b.take(41) || !b.take(40) || b.Used() != 100 {
		t.Errorf("take: Used %d", b.Used())
	}
	b.give(100)
	if b.Used() != 0 {
		t.Errorf("give: Used %d", b.Used())
	}
}

// TestTokenEventAllocs: a token event allocates nothing once the answer
// buffer has grown.
func TestTokenEventAllocs(t *testing.T) {
	m := meterFor(testConfig, NewBudget(1<<30))
	frames := [][]byte{
		frame("token", `" server."`),
		frame("token", `"caf\u00e9 \ud83d\ude00 \"q\""`),
		[]byte(`{"event": "token", "data": "Python spacing"}`),
		[]byte(`{"data":"reversed","event":"token"}`),
		frame("metadata", `{"chatId":"x"}`),
	}
	for range 1000 {
		for _, f := range frames {
			m.Event(f)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, f := range frames {
			m.Event(f)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocs per run of %d frames, want 0", allocs, len(frames))
	}
}

// TestFakeflow meters fakeflow's answers: its usage() is 10 + ceil(runes
// of the question / 4) in, one token per token frame out, and total_cost =
// in × 1.5e-7 + out × 6e-7 written as a JavaScript number, which must come
// out as exactly in × 150 + out × 600 nano-dollars.
func TestFakeflow(t *testing.T) {
	srv := fakeflow.New(fakeflow.Options{Agentflow: true})
	const id = "3f1c9d4e-2b7a-4c1e-9f3a-8d2e6b5a4c10"
	for _, question := range []string{"hi", "What is the meaning of life?", "日本語の質問です", strings.Repeat("x", 1001)} {
		for _, n := range []int{0, 1, 6, 77, 1000, 100000} {
			in := int64(10 + (utf8.RuneCountInString(question)+3)/4)
			out := int64(n)
			want := Usage{Source: SourceReported, Models: []ModelUsage{{
				Model: "gpt-4o-mini", Input: in, Output: out, CostNano: in*150 + out*600, FlowiseCost: true, Priced: true,
			}}}
			for _, stream := range []bool{false, true} {
				body := fmt.Sprintf(`{"question":%q,"streaming":%v}`, question, stream)
				req := httptest.NewRequest(http.MethodPost, "/api/v1/prediction/"+id, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(fakeflow.HeaderTokens, fmt.Sprint(n))
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, req)
				m := meterFor(testConfig, nil)
				m.Request([]byte(body))
				if stream {
					feedSSE(m, rec.Body.Bytes(), 4096)
				} else {
					feedJSON(m, rec.Body.Bytes(), 4096)
				}
				if got := tokensOnly(m.Finish()); !reflect.DeepEqual(got, want) {
					t.Errorf("question %.20q, %d tokens, stream %v: Finish = %+v, want %+v", question, n, stream, got, want)
				}
			}
		}
	}
}

func TestUsageSums(t *testing.T) {
	u := Usage{Models: []ModelUsage{{Input: 1, Output: 2, CostNano: 3}, {Input: math.MaxInt64, Output: 5, CostNano: 6}}}
	if u.Input() != math.MaxInt64 || u.Output() != 7 || u.CostNano() != 9 {
		t.Errorf("sums %d %d %d", u.Input(), u.Output(), u.CostNano())
	}
}

func TestManyModels(t *testing.T) {
	var nodes []string
	for i := range maxModels + 10 {
		nodes = append(nodes, llmNode(fmt.Sprint("n", i), fmt.Sprint("model-", i), 1, 1, "0.000000001"))
	}
	m := meterFor(testConfig, nil)
	m.Event(frame("agentFlowExecutedData", "["+strings.Join(nodes, ",")+"]"))
	got := m.Finish()
	if len(got.Models) != maxModels+1 || got.Models[maxModels].Model != otherModel || got.Models[maxModels].Input != 10 {
		t.Errorf("%d models, last %+v", len(got.Models), got.Models[len(got.Models)-1])
	}
	if got.Input() != maxModels+10 || got.CostNano() != maxModels+10 {
		t.Errorf("sums %d, %d", got.Input(), got.CostNano())
	}
}

// A run whose answer never came is estimated from its request alone.
func TestNoAnswerEstimatesInput(t *testing.T) {
	var m Meter
	m.Reset(nil, nil, "wf")
	defer m.Release()
	m.Request([]byte(`{"question":"what is the capital of France?"}`))
	if u := m.Finish(); u.Source != "" {
		t.Fatalf("without NoAnswer nothing is metered, got %+v", u)
	}
	m.Reset(&Config{Prices: Bundled(), DefaultModel: "gpt-4o-mini"}, nil, "wf")
	m.Request([]byte(`{"question":"what is the capital of France?"}`))
	m.NoAnswer()
	u := m.Finish()
	if u.Source != SourceEstimated || u.Input() <= 0 || u.Output() != 0 || u.CostNano() <= 0 {
		t.Fatalf("NoAnswer: %+v", u)
	}
}

// The nodes of the last agentFlowExecutedData are reported with their
// type and status, for the seed's node metric.
func TestNodesReported(t *testing.T) {
	var m Meter
	m.Reset(nil, nil, "wf")
	defer m.Release()
	for _, ev := range []string{
		`{"event":"agentFlowExecutedData","data":[{"nodeId":"s","status":"FINISHED","data":{"name":"startAgentflow"}}]}`,
		`{"event":"agentFlowExecutedData","data":[{"nodeId":"s","status":"FINISHED","data":{"name":"startAgentflow"}},{"nodeId":"l","status":"ERROR","data":{"name":"llmAgentflow","output":{}}}]}`,
	} {
		m.Event([]byte(ev))
	}
	u := m.Finish()
	if len(u.Nodes) != 2 || u.Nodes[0] != (NodeRun{"startAgentflow", "finished"}) || u.Nodes[1] != (NodeRun{"llmAgentflow", "error"}) {
		t.Fatalf("nodes %+v", u.Nodes)
	}
}

// tokensOnly is u without its nodes: the tests of tokens and costs
// compare those alone (TestNodesReported covers the nodes).
func tokensOnly(u Usage) Usage {
	u.Nodes = nil
	return u
}
