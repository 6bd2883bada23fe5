package metering

import (
	"math"
	"unicode/utf8"
)

// bpeEncoding counts the tokens of OpenAI's BPE encodings (o200k_base,
// cl100k_base) exactly as tiktoken-go v0.1.8's len(EncodeOrdinary(text))
// does, without its pre-tokenizer's regexp2 (a backtracking engine that
// was most of metering's CPU) and without building the token slice: the
// pre-tokenizer is written out by hand (pretok.go), and the byte-pair
// merge only counts.
type bpeEncoding struct {
	ranks map[string]int
	piece func(text []byte, i int) int // the end of the piece at i
}

// count returns the number of tokens tiktoken-go's EncodeOrdinary gives
// for text. regexp2 matches runes, so each byte of invalid UTF-8 is a
// U+FFFD there, and in the pieces tiktoken-go encodes: count replaces
// them first.
func (e *bpeEncoding) count(text []byte) int {
	if !utf8.Valid(text) {
		text = replaceInvalid(text)
	}
	var stack [258][2]int
	parts := stack[:0]
	n := 0
	for i := 0; i < len(text); {
		end := e.piece(text, i)
		if end <= i { // cannot happen (every rune starts a piece); never loop
			_, size := utf8.DecodeRune(text[i:])
			end = i + size
		}
		piece := text[i:end]
		if len(piece) == 1 {
			n++
		} else if _, ok := e.ranks[string(piece)]; ok {
			n++
		} else {
			var k int
			k, parts = mergeCount(piece, e.ranks, parts)
			n += k
		}
		i = end
	}
	return n
}

// replaceInvalid returns text with each byte that does not begin a valid
// UTF-8 sequence replaced by U+FFFD, as Go's []rune(string) does.
func replaceInvalid(text []byte) []byte {
	out := make([]byte, 0, len(text)+len(text)/2)
	for len(text) > 0 {
		r, size := utf8.DecodeRune(text)
		out = utf8.AppendRune(out, r)
		text = text[size:]
	}
	return out
}

// mergeCount is tiktoken-go's bytePairMerge, counting the parts instead
// of building them; parts is scratch space, returned for reuse.
func mergeCount(piece []byte, ranks map[string]int, parts [][2]int) (int, [][2]int) {
	parts = parts[:0]
	for i := 0; i <= len(piece); i++ {
		parts = append(parts, [2]int{i, math.MaxInt})
	}
	rank := func(parts [][2]int, i, skip int) int {
		if i+skip+2 < len(parts) {
			if r, ok := ranks[string(piece[parts[i][0]:parts[i+skip+2][0]])]; ok {
				return r
			}
		}
		return math.MaxInt
	}
	for i := 0; i < len(parts)-2; i++ {
		parts[i][1] = rank(parts, i, 0)
	}
	for len(parts) > 1 {
		minRank, i := math.MaxInt, -1
		for j := 0; j < len(parts)-1; j++ {
			if parts[j][1] < minRank {
				minRank, i = parts[j][1], j
			}
		}
		if minRank == math.MaxInt {
			break
		}
		parts[i][1] = rank(parts, i, 1)
		if i > 0 {
			parts[i-1][1] = rank(parts, i-1, 1)
		}
		parts = append(parts[:i+1], parts[i+2:]...)
	}
	return len(parts) - 1, parts[:0]
}
