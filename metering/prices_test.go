package metering

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBundled(t *testing.T) {
	p := Bundled()
	if p != Bundled() {
		t.Error("Bundled is not parsed once")
	}
	required := []string{
		"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini", "o4-mini",
		"gpt-3.5-turbo", "gpt-4-turbo", "gpt-5", "gpt-5-mini", "gpt-5-nano",
		"claude-3-5-sonnet", "claude-3-5-haiku", "claude-3-7-sonnet", "claude-sonnet-4", "claude-opus-4", "claude-3-haiku", "claude-3-opus",
		"gemini-1.5-pro", "gemini-1.5-flash", "gemini-2.0-flash", "gemini-2.5-pro", "gemini-2.5-flash",
		"mistral-large", "mistral-small", "mistral-medium", "codestral", "open-mistral-nemo",
	}
	for _, name := range required {
		pr, got, ok := p.Lookup(name)
		if !ok || got != name || pr.Input <= 0 || pr.Output < pr.Input {
			t.Errorf("Lookup(%q) = %+v, %q, %v", name, pr, got, ok)
		}
	}
	// Flowise's own base_input_cost 1.5e-7 and base_output_cost 6e-7 per
	// token in the samples.
	if pr, _, _ := p.Lookup("gpt-4o-mini"); pr != (Price{Input: 150_000, Output: 600_000}) {
		t.Errorf("gpt-4o-mini = %+v, want 0.15 and 0.60 USD per 1M tokens", pr)
	}
	if p.Len() != len(mustModels(t)) {
		t.Errorf("Len %d", p.Len())
	}
}

func mustModels(t *testing.T) []string {
	var names []string
	for _, line := range strings.Split(string(bundledJSON), "\n") {
		if k, _, ok := strings.Cut(strings.TrimSpace(line), `":`); ok && strings.Contains(line, `"input"`) {
			names = append(names, strings.TrimPrefix(k, `"`))
		}
	}
	return names
}

func TestLookup(t *testing.T) {
	tests := []struct{ model, want string }{
		{"gpt-4o-mini", "gpt-4o-mini"},
		{"GPT-4o-Mini", "gpt-4o-mini"},
		{"  gpt-4o  ", "gpt-4o"},
		{"openai/gpt-4o", "gpt-4o"},
		{"models/gemini-1.5-pro", "gemini-1.5-pro"},
		{"gpt-4o-mini-2024-07-18", "gpt-4o-mini"},
		{"gpt-4o-2024-08-06", "gpt-4o"},
		{"gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"},
		{"gpt-4-turbo-2024-04-09", "gpt-4-turbo"},
		{"gpt-4-0613", "gpt-4"},
		{"gpt-3.5-turbo-0125", "gpt-3.5-turbo"},
		{"claude-3-5-sonnet-20241022", "claude-3-5-sonnet"},
		{"claude-3-5-sonnet-latest", "claude-3-5-sonnet"},
		{"claude-sonnet-4-20250514", "claude-sonnet-4"},
		{"claude-sonnet-4-5-20250929", "claude-sonnet-4-5"},
		{"claude-opus-4-1-20250805", "claude-opus-4-1"},
		{"claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"},
		{"anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"},
		{"us.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"},
		{"gemini-2.0-flash-001", "gemini-2.0-flash"},
		{"gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"},
		{"models/gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"},
		{"mistral-large-latest", "mistral-large"},
		{"codestral-2501", "codestral"},
		{"o3-mini-2025-01-31", "o3-mini"},
		{"o1-2024-12-17", "o1"},
		{"openrouter/openai/gpt-5-mini", "gpt-5-mini"},
		{"gpt-4o:ft-acme", "gpt-4o"},
		// Not priced.
		{"", ""},
		{"gpt", ""},
		{"gpt-4o2", ""},
		{"gpt-4.1x", ""},
		{"llama3", ""},
		{"-gpt-4o", ""},
		{"my-azure-deployment", ""},
		{"o", ""},
	}
	p := Bundled()
	for _, tc := range tests {
		_, got, ok := p.Lookup(tc.model)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tc.model, got, ok, tc.want)
		}
	}
	var none *Prices
	if _, _, ok := none.Lookup("gpt-4o"); ok || none.Len() != 0 {
		t.Error("nil Prices priced something")
	}
}

func TestParsePricesErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"models":{"gpt-4o":{"input":"abc","output":"1"}}}`, `models."gpt-4o".input: "abc" is not a price in USD per 1M tokens`},
		{`{"models":{"gpt-4o":{"input":"1","output":true}}}`, `models."gpt-4o".output: true is not a price in USD per 1M tokens`},
		{`{"models":{"gpt-4o":{"input":"-1","output":"1"}}}`, `models."gpt-4o".input: "-1" is not a price in USD per 1M tokens: negative`},
		{`{"models":{"gpt-4o":{"input":0.1234567,"output":"1"}}}`, `models."gpt-4o".input: 0.1234567 is not a price in USD per 1M tokens: more than 6 decimals`},
		{`{"models":{"gpt-4o":{"input":"1e9","output":"1"}}}`, `models."gpt-4o".input: "1e9" is not a price in USD per 1M tokens: more than 1000000`},
		{`{"models":{"gpt-4o":{"input":"1"}}}`, `models."gpt-4o".output: missing`},
		{`{"models":{"gpt-4o":[1,2]}}`, `models."gpt-4o": want an object {"input": price, "output": price}`},
		{`{"models":{"gpt-4o":null}}`, `models."gpt-4o": want an object {"input": price, "output": price}`},
		{`{"models":{"GPT-4o":{"input":1,"output":1},"gpt-4o":{"input":1,"output":1}}}`, `models."gpt-4o": same model as "gpt-4o" (names are case-insensitive)`},
		{`{"models":{" ":{"input":1,"output":1}}}`, `models." ": empty model name`},
		{`{"models":{}}`, `models: no models in the price table`},
		{`{}`, `models: no models in the price table`},
		{`{"unit":"USD per 1K tokens","models":{"a":{"input":1,"output":1}}}`, `unit: "USD per 1K tokens" is not supported: prices are in "USD per 1M tokens"`},
		{`{"models":`, `price table: unexpected end of JSON input`},
		{`[]`, `price table: json: cannot unmarshal array into Go value of type struct { Unit *string "json:\"unit\""; Models map[string]json.RawMessage "json:\"models\"" }`},
	}
	for _, tc := range tests {
		_, err := ParsePrices([]byte(tc.in))
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParsePrices(%s)\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

func TestParsePrices(t *testing.T) {
	p, err := ParsePrices([]byte(`{"updated":"x","unit":"usd per 1m tokens","models":{"My-Model":{"input":0.5,"output":" 2 ","cached_input":"0.25"},"free":{"input":0,"output":"0.000001"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if pr, name, ok := p.Lookup("my-model-v2"); !ok || name != "my-model" || pr != (Price{500_000, 2_000_000}) {
		t.Errorf("my-model: %+v %q %v", pr, name, ok)
	}
	if pr, _, ok := p.Lookup("FREE"); !ok || pr != (Price{0, 1}) {
		t.Errorf("free: %+v %v", pr, ok)
	}
}

func TestLoadPrices(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prices.json")
	if err := os.WriteFile(path, []byte(`{"unit":"USD per 1M tokens","models":{"gpt-4o-mini":{"input":"1","output":"2"},"house-llm":{"input":"0.01","output":"0.02"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPrices(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file replaces the bundled table whole.
	if pr, _, _ := p.Lookup("gpt-4o-mini"); pr != (Price{1_000_000, 2_000_000}) {
		t.Errorf("gpt-4o-mini %+v", pr)
	}
	if _, _, ok := p.Lookup("gpt-4o"); ok {
		t.Error("gpt-4o priced from a table that does not list it")
	}
	// A Meter prices with it.
	m := new(Meter)
	m.Reset(&Config{Prices: p, DefaultModel: "house-llm"}, nil, "wf")
	m.Event(frame("usageMetadata", `{"input_tokens":1000,"output_tokens":500}`))
	if got := m.Finish(); got.Models[0].Model != "house-llm" || got.CostNano() != 20_000 {
		t.Errorf("Finish = %+v", got)
	}

	os.WriteFile(path, []byte(`{"models":{"x":{"input":"abc","output":"1"}}}`), 0o600)
	if _, err := LoadPrices(path); err == nil || err.Error() != path+`: models."x".input: "abc" is not a price in USD per 1M tokens` {
		t.Errorf("error %v", err)
	}
	if _, err := LoadPrices(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestCostNano(t *testing.T) {
	mini := Price{Input: 150_000, Output: 600_000}
	tests := []struct {
		p       Price
		in, out int64
		want    int64
	}{
		{mini, 11, 6, 5250},
		{mini, 1, 8, 4950},
		{mini, 0, 0, 0},
		{Price{Input: 1}, 500, 0, 1}, // 0.5 nano rounds up
		{Price{Input: 1}, 499, 0, 0},
		{Price{Input: 1}, 1500, 0, 2},
		{Price{Input: 1, Output: 1}, 250, 250, 1},
		{mini, -5, 6, 3600},                             // negative counts are 0
		{Price{Input: -1, Output: 600_000}, 5, 6, 3600}, // and negative prices
		{Price{Input: 75_000_000, Output: 150_000_000}, maxTokens, maxTokens, 225_000_000_000_000_000}, // $225e9: fits
		{Price{Input: math.MaxInt64, Output: math.MaxInt64}, math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{Price{Input: 1e12}, 1e12, 0, math.MaxInt64}, // 1e21 nano: saturates
	}
	for _, tc := range tests {
		if got := tc.p.CostNano(tc.in, tc.out); got != tc.want {
			t.Errorf("%+v.CostNano(%d, %d) = %d, want %d", tc.p, tc.in, tc.out, got, tc.want)
		}
	}
}
