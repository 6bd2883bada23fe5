package metering

import (
	"strings"
	"testing"

	tiktoken "github.com/pkoukk/tiktoken-go"
)

// TestOfflineEncodings: tiktoken-go-loader embeds o200k_base and
// cl100k_base (and p50k_base, r50k_base), so nothing is fetched.
func TestOfflineEncodings(t *testing.T) {
	setRefLoader()
	for _, name := range []string{"o200k_base", "cl100k_base", "p50k_base", "r50k_base"} {
		if _, err := tiktoken.GetEncoding(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if o200k() == nil || cl100k() == nil {
		t.Fatal("encodings not loaded")
	}
	if encodingFor("gpt-4o-mini") != o200k() || encodingFor("cl100k-model") != cl100k() {
		t.Error("encodingFor picks the wrong encoding")
	}
}

func TestUsesO200k(t *testing.T) {
	for model, want := range map[string]bool{
		"gpt-4o": true, "gpt-4o-mini-2024-07-18": true, "openai/gpt-4.1-nano": true, "gpt-5": true, "GPT-5-mini": true,
		"o1": true, "o1-mini": true, "o3": true, "o3-mini": true, "o4-mini": true, "chatgpt-4o-latest": true, "gpt-4.5-preview": true,
		"gpt-4": false, "gpt-4-turbo": false, "gpt-3.5-turbo": false, "claude-3-5-sonnet": false, "o10": false, "": false, "omni": false,
	} {
		if got := usesO200k(model); got != want {
			t.Errorf("usesO200k(%q) = %v", model, got)
		}
	}
}

// TestChunkedCount: tokenizing in segments cut at clean cuts counts what
// the whole text counts; forced cuts in long runs are close.
func TestChunkedCount(t *testing.T) {
	texts := []string{
		strings.Repeat("Hello from the fake OpenAI server. ", 2500), // > tokenChunk
		strings.Repeat("The quick brown fox, jumping 1234567 times! Über café — naïve text.\n\n", 1200),
		strings.Repeat("word ", 14000) + " " + strings.Repeat("  spaced   out \t\n ", 1000),
		strings.Repeat("café\u00a0 naïve\u3000 x  日本語 ", 2000),
	}
	for _, e := range testEncodings(t) {
		enc, ref := e.ours, e.ref
		for i, s := range texts {
			whole := int64(len(ref.EncodeOrdinary(s)))
			if got := countTokens(enc, []byte(s)); got != whole {
				t.Errorf("text %d: chunked %d, whole %d", i, got, whole)
			}
		}
		// Runs without a clean cut: within one token per forced cut.
		for _, s := range []string{
			strings.Repeat("日本語のテキストです。", 300),
			strings.Repeat(`{"a":[1,2,3],"b":"c"},`, 300),
			strings.Repeat("x", 5000),
		} {
			whole := int64(len(ref.EncodeOrdinary(s)))
			got := countTokens(enc, []byte(s))
			if cuts := int64(len(s) / maxRun); got < whole-cuts || got > whole+cuts {
				t.Errorf("%.20q: chunked %d, whole %d", s, got, whole)
			}
		}
	}
	if got := countTokens(nil, []byte("12345")); got != 2 {
		t.Errorf("no encoder: %d", got)
	}
}

// TestLongRun: one endless word costs linear time (without the forced
// cuts, 256 KiB of it would take tiktoken-go about 20 s).
func TestLongRun(t *testing.T) {
	s := []byte(strings.Repeat("x", 256<<10))
	if got := countTokens(o200k(), s); got < int64(len(s))/8 || got > int64(len(s))/2 {
		t.Errorf("%d tokens", got)
	}
}

func TestScaleTokens(t *testing.T) {
	for _, tc := range []struct{ tok, total, kept, want int64 }{
		{10, 100, 100, 10},
		{10, 300, 100, 30},
		{0, 400, 0, 100},
		{10, 1 << 62, 3, maxTokens},
		{maxTokens * 2, 1, 1, maxTokens},
	} {
		if got := scaleTokens(tc.tok, tc.total, tc.kept); got != tc.want {
			t.Errorf("scaleTokens(%d, %d, %d) = %d, want %d", tc.tok, tc.total, tc.kept, got, tc.want)
		}
	}
}
