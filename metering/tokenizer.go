package metering

import (
	"math"
	"math/bits"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// Token estimates use OpenAI's BPE encodings through tiktoken-go, with the
// encodings read from tiktoken-go-loader's embedded copies (it embeds
// cl100k_base, o200k_base, p50k_base and r50k_base), so nothing is
// downloaded at run time. They are exact for OpenAI models and a fair
// estimate for others, whose tokenizers are not public or not in Go. The
// counting itself is ours (bpecount.go): it gives tiktoken-go's counts
// without its regexp2 pre-tokenizer.

// bytesPerToken turns byte counts into tokens where no text was kept to
// tokenize (a JSON answer too large to buffer, or a Budget that refused):
// about 4 bytes a token for English text in OpenAI's encodings.
const bytesPerToken = 4

// maxTokens caps any token count: no execution comes near a trillion
// tokens, so a larger number is an error or an attack, not usage.
const maxTokens = 1_000_000_000_000

var (
	// Each encoding is loaded on first use, once: its ranks cost memory
	// (about 9 MB of heap for o200k_base, 4 MB for cl100k_base) and
	// 90-200 ms, and a deployment of agentflows may never need one.
	o200k  = sync.OnceValue(func() *bpeEncoding { return loadEncoding("o200k_base", o200kPiece) })
	cl100k = sync.OnceValue(func() *bpeEncoding { return loadEncoding("cl100k_base", cl100kPiece) })
)

// loadEncoding returns the encoding, with the ranks tiktoken-go's
// GetEncoding would load through the offline loader, or nil if they
// cannot be loaded (then estimates fall back to bytesPerToken).
func loadEncoding(name string, piece func([]byte, int) int) *bpeEncoding {
	ranks, err := tiktoken_loader.NewOfflineLoader().LoadTiktokenBpe(name + ".tiktoken")
	if err != nil || len(ranks) == 0 {
		return nil
	}
	return &bpeEncoding{ranks: ranks, piece: piece}
}

// encodingFor returns the encoding of a model: o200k_base for OpenAI's
// gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and o-series models, cl100k_base for
// everything else (older OpenAI models, and a stand-in for other vendors).
// Were o200k_base missing from the offline loader (it is in v0.0.2),
// cl100k_base would stand in for it: the nearest encoding, within a few
// percent on English text.
func encodingFor(model string) *bpeEncoding {
	if usesO200k(model) {
		if enc := o200k(); enc != nil {
			return enc
		}
	}
	return cl100k()
}

func usesO200k(model string) bool {
	s := stripProvider(strings.ToLower(strings.TrimSpace(model)))
	for _, p := range [...]string{"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	for _, p := range [...]string{"o1", "o3", "o4"} {
		if s == p || strings.HasPrefix(s, p+"-") {
			return true
		}
	}
	return false
}

// Tokenizing is done in segments, for two reasons. A segment is at most
// tokenChunk bytes (a bound from tiktoken-go, whose memory was several
// times its text; bpeEncoding.count allocates only a copy of a segment
// holding invalid UTF-8). And the byte-pair merge is quadratic in the
// length of one pre-tokenized piece (70 KB of "xxx…" takes 1.6 s), so a
// hostile answer of one endless word would cost seconds of CPU: a run of
// maxRun bytes without a clean cut is cut anyway.
const (
	tokenChunk = 64 << 10
	maxRun     = 256
)

// countTokens counts the tokens of text, or estimates them from its length
// when enc is nil.
//
// Segments end at clean cuts where they can: before a space that follows a
// character other than white space. Both encodings' pre-tokenizers start a
// new piece there (a piece holds white space only at its start, or is all
// white space, and looks ahead but never behind), so cutting there counts
// exactly what the whole text counts. Only a run of maxRun bytes without a
// clean cut (one long word, CJK text, minified JSON, a long run of white
// space) is cut elsewhere, at a character boundary, which may add a token
// per cut: under 2% even for CJK text, where 256 bytes are 60 or more
// tokens.
func countTokens(enc *bpeEncoding, text []byte) int64 {
	if enc == nil {
		return int64(len(text)+bytesPerToken-1) / bytesPerToken
	}
	var n int64
	count := func(seg []byte) {
		if len(seg) > 0 {
			n += int64(enc.count(seg))
		}
	}
	start, clean := 0, 0 // the segment's start; the last clean cut in it
	for i := 1; i < len(text); i++ {
		if text[i] == ' ' && afterNonSpace(text[:i]) {
			clean = i
			if i-start >= tokenChunk {
				count(text[start:i])
				start = i
			}
			continue
		}
		if i-clean >= maxRun && utf8.RuneStart(text[i]) {
			count(text[start:i])
			start, clean = i, i
		}
	}
	count(text[start:])
	return n
}

// afterNonSpace reports whether b ends with a character that is not white
// space to the pre-tokenizer's \s (ASCII white space, U+0085 and the
// Unicode separators, as unicode.IsSpace has them) nor invalid UTF-8.
func afterNonSpace(b []byte) bool {
	if c := b[len(b)-1]; c < utf8.RuneSelf {
		return c > ' ' && c != 0x7f
	}
	r, _ := utf8.DecodeLastRune(b)
	return r != utf8.RuneError && !unicode.IsSpace(r)
}

// scaleTokens extrapolates the tokens of a kept prefix to the whole: tokens
// × total / kept, or total / bytesPerToken when nothing was kept. The
// result is capped at maxTokens.
func scaleTokens(tokens, total, kept int64) int64 {
	switch {
	case total <= kept:
	case kept <= 0:
		tokens = total / bytesPerToken
	default:
		hi, lo := bits.Mul64(uint64(tokens), uint64(total))
		if hi >= uint64(kept) {
			return maxTokens
		}
		q, _ := bits.Div64(hi, lo, uint64(kept))
		if q > math.MaxInt64 {
			return maxTokens
		}
		tokens = int64(q)
	}
	return min(tokens, maxTokens)
}
