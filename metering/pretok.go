package metering

import (
	"unicode"
	"unicode/utf8"
)

// The pre-tokenizers of o200k_base and cl100k_base, written out by hand.
// Each returns the end of the piece that starts at text[i] (i < len(text),
// text valid UTF-8): the match tiktoken-go's pattern, run by regexp2,
// finds there. Every rune starts a match (a letter, mark, digit, symbol or
// white space each has an alternative that takes it), so the pieces tile
// the text and each match starts where the last ended. Where regexp2's
// .NET semantics could part from a reading of the pattern:
//
//   - \s is unicode.IsSpace (regexp2's \s: \t-\r, space, U+0085 and the
//     White_Space separators); \p{L}, \p{N}, \p{Lu}... are Go's unicode
//     tables, which regexp2 uses too;
//   - (?i:'s|'t|'re|'ve|'m|'ll|'d) compares unicode.ToLower of the input
//     with the pattern: no non-ASCII rune lowers to s, t, r, e, v, m, l or
//     d (only U+0130 → i and U+212A → k reach ASCII), so the letters are
//     compared in ASCII case only (ſ U+017F is not s);
//   - regexp2 backtracks: each alternative is tried in order, greedy
//     repetitions longest first, and the comments below say which match
//     that order picks.
//
// The tests check both against regexp2 itself and tiktoken-go's counts.

// Character classes of ASCII runes.
const (
	cLower   = 1 << iota // \p{Ll}
	cUpper               // \p{Lu}
	cDigit               // \p{N}
	cSpace               // \s
	cNewline             // \r or \n
)

var asciiClass = func() (t [utf8.RuneSelf]uint8) {
	for c := range t {
		switch {
		case 'a' <= c && c <= 'z':
			t[c] = cLower
		case 'A' <= c && c <= 'Z':
			t[c] = cUpper
		case '0' <= c && c <= '9':
			t[c] = cDigit
		case c == '\r' || c == '\n':
			t[c] = cSpace | cNewline
		case c == ' ' || '\t' <= c && c <= '\r':
			t[c] = cSpace
		}
	}
	return t
}()

func decode(text []byte, i int) (rune, int) {
	if c := text[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRune(text[i:])
}

func isLetter(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&(cLower|cUpper) != 0
	}
	return unicode.IsLetter(r)
}

func isNumber(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&cDigit != 0
	}
	return unicode.IsNumber(r)
}

func isWhite(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&cSpace != 0
	}
	return unicode.IsSpace(r)
}

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r] == 0
	}
	return !unicode.IsSpace(r) && !unicode.IsLetter(r) && !unicode.IsNumber(r)
}

// isPrefix is [^\r\n\p{L}\p{N}].
func isPrefix(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&(cLower|cUpper|cDigit|cNewline) == 0
	}
	return !unicode.IsLetter(r) && !unicode.IsNumber(r)
}

// isUpperish is o200k's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}].
func isUpperish(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&cUpper != 0
	}
	return unicode.IsLetter(r) && !unicode.IsLower(r) || unicode.IsMark(r)
}

// isLowerish is o200k's [\p{Ll}\p{Lm}\p{Lo}\p{M}].
func isLowerish(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&cLower != 0
	}
	return unicode.IsLetter(r) && !unicode.IsUpper(r) && !unicode.IsTitle(r) || unicode.IsMark(r)
}

// runEnd returns the end of the run of runes in class from i.
func runEnd(text []byte, i int, class func(rune) bool) int { return runEndN(text, i, class, -1) }

// runEndN is runEnd with at most n runes (n < 0: no bound).
func runEndN(text []byte, i int, class func(rune) bool, n int) int {
	for ; n != 0 && i < len(text); n-- {
		r, size := decode(text, i)
		if !class(r) {
			break
		}
		i += size
	}
	return i
}

// contraction returns the length of the contraction at text[i], 0 if
// none: 's, 't, 're, 've, 'm, 'll or 'd, letters in either ASCII case.
func contraction(text []byte, i int) int {
	if i+1 >= len(text) || text[i] != '\'' {
		return 0
	}
	second := func(c byte) int {
		if i+2 < len(text) && text[i+2]|0x20 == c {
			return 3
		}
		return 0
	}
	switch text[i+1] | 0x20 { // ASCII lower case; other bytes match nothing below
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		return second('e')
	case 'l':
		return second('l')
	}
	return 0
}

// spaces is the end of a piece that starts with white space at i, after
// the alternatives that take a letter, digit or symbol failed:
// \s*[\r\n]+|\s+(?!\S)|\s+. \s*[\r\n]+ takes the run of white space up to
// its last \r or \n (\s* gives runes back from the end of the run until
// [\r\n]+ matches, then [\r\n]+ cannot go on past that last line break).
// Without a line break, \s+(?!\S) takes the run when the text ends after
// it (or, in the o200k and cl100k patterns, at nothing else: the run is
// followed by a non-space), else the run less its last rune, which is
// followed by white space, when that leaves one rune or more; else \s+
// takes the single rune.
func spaces(text []byte, i int) int {
	end, lastBreak, lastSize := i, -1, 0
	for end < len(text) {
		r, size := decode(text, end)
		if !isWhite(r) {
			break
		}
		if r == '\r' || r == '\n' {
			lastBreak = end
		}
		end, lastSize = end+size, size
	}
	switch {
	case lastBreak >= 0:
		return lastBreak + 1
	case end == len(text) || end-lastSize == i:
		return end
	default:
		return end - lastSize
	}
}

// cl100kPiece splits as
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func cl100kPiece(text []byte, i int) int {
	if n := contraction(text, i); n > 0 {
		return i + n
	}
	r0, size0 := decode(text, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+: the prefix if it is one and a letter
	// follows, else none if r0 is a letter (the two exclude each other).
	if isLetter(r0) {
		return runEnd(text, i+size0, isLetter)
	}
	if isPrefix(r0) && i+size0 < len(text) {
		if r1, size1 := decode(text, i+size0); isLetter(r1) {
			return runEnd(text, i+size0+size1, isLetter)
		}
	}
	if isNumber(r0) {
		return digits(text, i)
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*': with the space first, then without
	// (r0 a space is not a symbol).
	j := i
	if r0 == ' ' {
		j++
	}
	if j < len(text) {
		if r, _ := decode(text, j); isOther(r) {
			j = runEnd(text, j, isOther)
			for j < len(text) && (text[j] == '\r' || text[j] == '\n') {
				j++
			}
			return j
		}
	}
	return spaces(text, i) // r0 is white space
}

// digits is \p{N}{1,3} at a number i.
func digits(text []byte, i int) int { return runEndN(text, i, isNumber, 3) }

// o200kPiece splits as
// [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
// [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
// \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
func o200kPiece(text []byte, i int) int {
	r0, size0 := decode(text, i)
	prefix := isPrefix(r0)
	// The two word alternatives, each with the prefix first, then without.
	if prefix {
		if end := upperLower(text, i+size0); end >= 0 {
			return end
		}
	}
	if end := upperLower(text, i); end >= 0 {
		return end
	}
	if prefix {
		if end := upperThenLower(text, i+size0); end >= 0 {
			return end
		}
	}
	if end := upperThenLower(text, i); end >= 0 {
		return end
	}
	if isNumber(r0) {
		return digits(text, i)
	}
	j := i
	if r0 == ' ' {
		j++
	}
	if j < len(text) {
		if r, _ := decode(text, j); isOther(r) {
			j = runEnd(text, j, isOther)
			for j < len(text) && (text[j] == '\r' || text[j] == '\n' || text[j] == '/') {
				j++
			}
			return j
		}
	}
	return spaces(text, i)
}

// upperLower matches [U]*[W]+C? at s (U upper-ish, W lower-ish, C a
// contraction) and returns its end, or -1. [U]* takes the run of U and
// gives runes back from its end until [W]+ can start: at the first
// position t, from the run's end back to s, whose rune is in W. [W]+ then
// takes the run of W from t and C? a contraction if there is one; neither
// can fail, so that is the match.
func upperLower(text []byte, s int) int {
	e := runEnd(text, s, isUpperish)
	for t := e; ; {
		if t < len(text) {
			if r, size := decode(text, t); isLowerish(r) {
				w := runEnd(text, t+size, isLowerish)
				return w + contraction(text, w)
			}
		}
		if t == s {
			return -1
		}
		_, size := utf8.DecodeLastRune(text[s:t])
		t -= size
	}
}

// upperThenLower matches [U]+[W]*C? at s and returns its end, or -1:
// greedy all through, and nothing after it can fail.
func upperThenLower(text []byte, s int) int {
	e := runEnd(text, s, isUpperish)
	if e == s {
		return -1
	}
	w := runEnd(text, e, isLowerish)
	return w + contraction(text, w)
}
