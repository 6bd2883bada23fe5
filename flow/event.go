package flow

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// FlowiseEvent returns the value of the top-level "event" key of a Flowise
// SSE frame's data, which is a JSON object {"event":"<name>","data":...}; ok
// is false when data is not one valid JSON object (whitespace around
// allowed) or has no string "event" key.
//
// The verdict is encoding/json's: ok exactly when json.Unmarshal into a
// map[string]any succeeds and its "event" is a string, with the last of
// duplicate keys winning, nesting limited to 10000 levels, and any number
// beyond float64's range (1e400) failing the frame as it fails Unmarshal.
// name points into data unless the key or the value is written with escapes
// or the value is invalid UTF-8; only then is the frame decoded with
// encoding/json, and allocates.
func FlowiseEvent(data []byte) (name []byte, ok bool) {
	r := scanJSON(data)
	if !r.ok || !r.object {
		return nil, false
	}
	if !r.slow {
		return r.event, r.hasEvent
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return nil, false
	}
	var s string
	if raw := m["event"]; len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

// IsFlowiseEnd reports whether data is Flowise's end frame: a valid JSON
// object whose "event" is the string "end", whatever the key order or
// spacing ({"data":"[DONE]","event":"end"} from Go, {"event": "end", "data":
// "[DONE]"} from Python).
func IsFlowiseEnd(data []byte) bool {
	name, ok := FlowiseEvent(data)
	return ok && string(name) == "end"
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// scanResult is what scanJSON learnt of one JSON value.
type scanResult struct {
	// ok: data is one JSON value that json.Unmarshal decodes into an any,
	// so valid and without a number that overflows a float64.
	ok     bool
	object bool // the value is an object
	// event is the raw content of the last top-level "event" member when it
	// is a string (hasEvent).
	event    []byte
	hasEvent bool
	// slow: a top-level key has escapes, or event has escapes or invalid
	// UTF-8, so only encoding/json can tell the decoded name.
	slow bool
}

// scanJSON validates data as encoding/json does, without recursion: one
// bit a level tells an object from an array.
func scanJSON(data []byte) (r scanResult) {
	const (
		expectValue = iota
		expectKey
		afterValue
		objectStart // a key or '}'
		arrayStart  // a value or ']'
	)
	var (
		objects   [maxDepth/64 + 1]uint64
		depth     int
		keyEvent  bool // the member being read is a top-level "event"
		eventSlow bool
		keySlow   bool
		st        = expectValue
		i         = skipSpace(data, 0)
	)
	for {
		if i >= len(data) {
			if st == afterValue && depth == 0 {
				r.ok = true
				r.slow = keySlow || (r.hasEvent && eventSlow)
			}
			return r
		}
		c := data[i]
		switch st {
		case objectStart, arrayStart:
			if c == '}' && st == objectStart || c == ']' && st == arrayStart {
				depth--
				st = afterValue
				i++
				break
			}
			if st == objectStart {
				st = expectKey
			} else {
				st = expectValue
			}
			continue
		case expectValue:
			member := depth == 1 && keyEvent
			keyEvent = false
			if member {
				r.event, r.hasEvent, eventSlow = nil, false, false
			}
			switch {
			case c == '{' || c == '[':
				if depth == maxDepth {
					return r
				}
				if depth == 0 {
					r.object = c == '{'
				}
				bit := uint64(1) << (depth % 64)
				if c == '{' {
					objects[depth/64] |= bit
					st = objectStart
				} else {
					objects[depth/64] &^= bit
					st = arrayStart
				}
				depth++
				i++
			case c == '"':
				end, esc := scanString(data, i)
				if end < 0 {
					return r
				}
				if member {
					r.event, r.hasEvent = data[i+1:end-1], true
					eventSlow = esc || !utf8.Valid(r.event)
				}
				i, st = end, afterValue
			case c == '-' || '0' <= c && c <= '9':
				i, st = scanNumber(data, i), afterValue
			case c == 't':
				i, st = literal(data, i, "true"), afterValue
			case c == 'f':
				i, st = literal(data, i, "false"), afterValue
			case c == 'n':
				i, st = literal(data, i, "null"), afterValue
			default:
				return r
			}
			if i < 0 {
				return r
			}
		case expectKey:
			if c != '"' {
				return r
			}
			end, esc := scanString(data, i)
			if end < 0 {
				return r
			}
			if depth == 1 {
				keyEvent = !esc && string(data[i+1:end-1]) == "event"
				keySlow = keySlow || esc
			}
			i = skipSpace(data, end)
			if i >= len(data) || data[i] != ':' {
				return r
			}
			st = expectValue
			i++
		case afterValue:
			if depth == 0 {
				return r // something after the value
			}
			inObject := objects[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			switch {
			case c == ',':
				st = expectValue
				if inObject {
					st = expectKey
				}
			case c == '}' && inObject, c == ']' && !inObject:
				depth--
			default:
				return r
			}
			i++
		}
		i = skipSpace(data, i)
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

func literal(data []byte, i int, lit string) int {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// plain marks the string bytes that need no second look: not the quote,
// not a backslash, not a control character. Bytes >= 0x80 are plain, as
// encoding/json accepts invalid UTF-8 in strings.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString returns the index after the string starting with the quote at
// data[i] (-1 if it is not valid) and whether it has escapes.
func scanString(data []byte, i int) (end int, esc bool) {
	j := i + 1
	for {
		for j < len(data) && plain[data[j]] {
			j++
		}
		if j >= len(data) {
			return -1, esc
		}
		switch data[j] {
		case '"':
			return j + 1, esc
		case '\\':
			esc = true
			if j+1 >= len(data) {
				return -1, esc
			}
			switch data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if len(data)-j < 6 || !isHex(data[j+2]) || !isHex(data[j+3]) || !isHex(data[j+4]) || !isHex(data[j+5]) {
					return -1, esc
				}
				j += 6
			default:
				return -1, esc
			}
		default:
			return -1, esc // a control character
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// scanNumber returns the index after the number starting at data[i], or -1
// if it is not valid JSON or overflows a float64, which json.Unmarshal
// into an any refuses.
func scanNumber(data []byte, i int) int {
	j := i
	if data[j] == '-' {
		j++
	}
	intStart := j
	switch {
	case j < len(data) && data[j] == '0':
		j++
	case j < len(data) && '1' <= data[j] && data[j] <= '9':
		j = skipDigits(data, j)
	default:
		return -1
	}
	intEnd := j
	fracStart, fracEnd := j, j
	if j < len(data) && data[j] == '.' {
		j++
		fracStart = j
		if j = skipDigits(data, j); j == fracStart {
			return -1
		}
		fracEnd = j
	}
	exp := 0
	if j < len(data) && (data[j] == 'e' || data[j] == 'E') {
		j++
		neg := false
		if j < len(data) && (data[j] == '+' || data[j] == '-') {
			neg = data[j] == '-'
			j++
		}
		k := j
		for ; j < len(data) && '0' <= data[j] && data[j] <= '9'; j++ {
			if exp < 1e9 { // saturate: far past any float64 either way
				exp = exp*10 + int(data[j]-'0')
			}
		}
		if j == k {
			return -1
		}
		if neg {
			exp = -exp
		}
	}

	// The decimal exponent of the leading digit tells overflow apart for
	// all but numbers near 1e308, which strconv decides as encoding/json
	// does.
	var lead int
	if intEnd-intStart > 1 || data[intStart] != '0' {
		lead = intEnd - intStart - 1
	} else {
		k := fracStart
		for k < fracEnd && data[k] == '0' {
			k++
		}
		if k == fracEnd {
			return j // zero
		}
		lead = fracStart - k - 1
	}
	switch mag := lead + exp; {
	case mag < 308:
		return j
	case mag > 308:
		return -1
	}
	if _, err := strconv.ParseFloat(string(data[i:j]), 64); err != nil {
		return -1
	}
	return j
}

func skipDigits(data []byte, j int) int {
	for j < len(data) && '0' <= data[j] && data[j] <= '9' {
		j++
	}
	return j
}
