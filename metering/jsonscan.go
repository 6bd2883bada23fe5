package metering

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// A small zero-copy JSON reader: it finds values by key inside the bytes it
// is given and decodes the few strings the meter keeps, without building a
// tree or copying what it skips. It does not validate: callers validate
// first where the verdict matters (flow.FlowiseEvent for SSE frames,
// json.Valid for a JSON answer), and on anything malformed it returns
// "absent" rather than guessing. It never recurses, so nesting depth costs
// nothing, and it never indexes out of range, whatever it is fed.

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(d []byte, i int) int {
	for i < len(d) && isSpace(d[i]) {
		i++
	}
	return i
}

// skipString returns the index after the string whose opening quote is at
// d[i], or -1 if it does not end; esc reports a backslash inside.
func skipString(d []byte, i int) (end int, esc bool) {
	j := i + 1
	for {
		k := bytes.IndexByte(d[j:], '"')
		if k < 0 {
			return -1, false
		}
		q := j + k
		// The quote ends the string unless an odd run of backslashes
		// precedes it (a run always starts a fresh escape: no escape
		// ends in a backslash but \\ itself).
		n := 0
		for p := q - 1; p > i && d[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, bytes.IndexByte(d[i+1:q], '\\') >= 0
		}
		j = q + 1
	}
}

// skipValue returns the index after the JSON value starting at d[i] (no
// leading space), or -1 when there is none.
func skipValue(d []byte, i int) int {
	if i >= len(d) {
		return -1
	}
	switch d[i] {
	case '"':
		end, _ := skipString(d, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(d); j++ {
			switch d[j] {
			case '"':
				end, _ := skipString(d, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	default: // number, true, false, null: up to a delimiter
		j := i
		for j < len(d) && !isSpace(d[j]) && d[j] != ',' && d[j] != '}' && d[j] != ']' && d[j] != ':' {
			j++
		}
		return j
	}
}

// trimValue returns v without surrounding JSON whitespace.
func trimValue(v []byte) []byte {
	i := skipSpace(v, 0)
	j := len(v)
	for j > i && isSpace(v[j-1]) {
		j--
	}
	return v[i:j]
}

// member returns the value of the member named key in the object obj (the
// last one, as encoding/json and JavaScript keep the last of duplicate
// keys), or nil when obj is not an object or has no such member. Keys are
// compared after decoding their escapes, and exactly (JavaScript's keys are
// case-sensitive).
func member(obj []byte, key string) []byte {
	var found []byte
	if !eachMember(obj, func(k []byte, esc bool, v []byte) {
		if keyIs(k, esc, key) {
			found = v
		}
	}) {
		return nil
	}
	return found
}

// eachMember calls fn with the raw key (the string's content, esc if it
// has escapes) and the value of each member of the object obj, in order;
// false when obj is not an object or is malformed (fn may have been called
// for the members before the fault).
func eachMember(obj []byte, fn func(key []byte, esc bool, val []byte)) bool {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) {
			return false
		}
		if obj[i] == '}' {
			return true
		}
		if obj[i] != '"' {
			return false
		}
		ke, esc := skipString(obj, i)
		if ke < 0 {
			return false
		}
		k := obj[i+1 : ke-1]
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return false
		}
		i = skipSpace(obj, i+1)
		ve := skipValue(obj, i)
		if ve < 0 {
			return false
		}
		fn(k, esc, obj[i:ve])
		i = skipSpace(obj, ve)
		if i < len(obj) && obj[i] == ',' {
			i++
		}
	}
}

// keyIs compares the raw content of a JSON string with key.
func keyIs(raw []byte, esc bool, key string) bool {
	if !esc {
		return string(raw) == key
	}
	var buf [64]byte
	if len(key) >= len(buf) {
		return false // no key we look for is this long
	}
	dec, n := appendUnquote(buf[:0], raw, len(key))
	return n == int64(len(key)) && string(dec) == key
}

// elems iterates the elements of a JSON array.
type elems struct {
	d   []byte
	i   int
	bad bool
}

// arrayElems starts iterating arr; ok is false when it is not an array.
func arrayElems(arr []byte) (it elems, ok bool) {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return elems{}, false
	}
	return elems{d: arr, i: i + 1}, true
}

// next returns the next element, or false at the end of the array (or at
// anything malformed).
func (it *elems) next() ([]byte, bool) {
	if it.bad {
		return nil, false
	}
	i := skipSpace(it.d, it.i)
	if i >= len(it.d) || it.d[i] == ']' {
		it.bad = true
		return nil, false
	}
	end := skipValue(it.d, i)
	if end < 0 {
		it.bad = true
		return nil, false
	}
	v := it.d[i:end]
	it.i = skipSpace(it.d, end)
	if it.i < len(it.d) && it.d[it.i] == ',' {
		it.i++
	}
	return v, true
}

// stringContent returns the raw content of v when v is a JSON string.
func stringContent(v []byte) (raw []byte, esc, ok bool) {
	v = trimValue(v)
	if len(v) < 2 || v[0] != '"' {
		return nil, false, false
	}
	end, esc := skipString(v, 0)
	if end != len(v) {
		return nil, false, false
	}
	return v[1 : len(v)-1], esc, true
}

// appendUnquote appends raw, the content of a JSON string, decoded exactly
// as encoding/json decodes it: escapes resolved, a \u surrogate pair
// joined, a lone surrogate and each byte of invalid UTF-8 replaced by
// U+FFFD. It appends only while the result fits in limit bytes, cutting
// between characters (never inside one), and returns the decoded length
// of the whole string in n whether or not all of it fitted. dst never grows
// past max(cap(dst), limit). Invalid escapes, which encoding/json would
// reject, are decoded as the character after the backslash.
func appendUnquote(dst, raw []byte, limit int) (out []byte, n int64) {
	full := false
	emit := func(b []byte) {
		n += int64(len(b))
		if full {
			return
		}
		if room := limit - len(dst); len(b) > room {
			full = true
			return
		}
		dst = append(dst, b...)
	}
	var rb [utf8.UTFMax]byte
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c < utf8.RuneSelf && c != '\\':
			j := i + 1
			for j < len(raw) && raw[j] < utf8.RuneSelf && raw[j] != '\\' {
				j++
			}
			// ASCII can be cut anywhere: keep what fits.
			if !full {
				if room := limit - len(dst); j-i > room {
					dst = append(dst, raw[i:i+max(room, 0)]...)
					full = true
				} else {
					dst = append(dst, raw[i:j]...)
				}
			}
			n += int64(j - i)
			i = j
		case c == '\\':
			if i+1 >= len(raw) {
				emit(raw[i : i+1])
				i++
				continue
			}
			e := raw[i+1]
			i += 2
			switch e {
			case 'b':
				emit([]byte{'\b'})
			case 'f':
				emit([]byte{'\f'})
			case 'n':
				emit([]byte{'\n'})
			case 'r':
				emit([]byte{'\r'})
			case 't':
				emit([]byte{'\t'})
			case 'u':
				r := getu4(raw[i-2:])
				if r < 0 {
					emit(raw[i-1 : i]) // invalid: the 'u'
					continue
				}
				i += 4
				if utf16.IsSurrogate(r) {
					if d := utf16.DecodeRune(r, getu4(raw[i:])); d != utf8.RuneError {
						r = d
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				emit(rb[:utf8.EncodeRune(rb[:], r)])
			default: // '"', '\\', '/', and invalid escapes
				if e < utf8.RuneSelf {
					emit(raw[i-1 : i])
				} else {
					i-- // the byte after a stray backslash is decoded as usual
				}
			}
		default:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				emit(rb[:utf8.EncodeRune(rb[:], utf8.RuneError)])
			} else {
				emit(raw[i : i+size])
			}
			i += size
		}
	}
	return dst, n
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// appendCompact appends the JSON value v without the whitespace between
// its tokens, as JSON.stringify would have written it, up to limit bytes
// of dst; n is the compact length of all of v.
func appendCompact(dst, v []byte, limit int) (out []byte, n int64) {
	v = trimValue(v)
	inStr, esc := false, false
	start := 0
	flush := func(end int) {
		b := v[start:end]
		n += int64(len(b))
		if room := limit - len(dst); len(b) > room {
			b = b[:max(room, 0)]
		}
		dst = append(dst, b...)
	}
	for i, c := range v {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case isSpace(c):
			flush(i)
			start = i + 1
		}
	}
	flush(len(v))
	return dst, n
}
