package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/flowgate/flowgate/flow"
)

// Bypass reasons: why Derive found a request not cacheable. They are stable
// values for logs and metric labels.
const (
	// BypassRoute: the route runs no prediction (webhook, MCP, upserts,
	// anything that is not a flow route).
	BypassRoute = "route"
	// BypassNoBody: no body in memory (none, or spilled to disk).
	BypassNoBody = "no_body"
	// BypassNotJSON: the Content-Type is not application/json.
	BypassNotJSON = "not_json"
	// BypassBadJSON: the body is not one JSON object that the key can be
	// derived from safely (see Derive).
	BypassBadJSON = "bad_json"
	// BypassSession: the request names a conversation and the workflow is
	// not stateless.
	BypassSession = "session"
	// BypassResume: the request resumes a flow stopped for human input.
	BypassResume = "resume"
)

var (
	sessionIDKey = []byte("session_id")
	escapeMark   = []byte(`\u`)
)

// keyVersion starts every hashed key: changing the canonical form below
// changes it, so that no entry written by an older flowgate is read as if
// it had been keyed the new way.
const keyVersion = "flowgate/cache/key/v1"

// The request members that change the answer, per route family. Everything
// else (streaming, leadEmail, chatId and sessionId when stateless, ...) is
// left out of the key.
var (
	flowiseFields  = []string{"question", "form", "overrideConfig", "history", "uploads"}
	langflowFields = []string{"input_value", "input_type", "output_type", "output_component", "tweaks"}
	// On a stateless workflow the session ids are keyed too: callers in
	// different conversations do not share answers, so a replay never
	// carries another caller's chosen session id.
	flowiseStatelessFields = []string{"question", "form", "overrideConfig", "history", "uploads", "chatId", "sessionId"}
)

// maxDepth is encoding/json's nesting limit: the body's structure is
// accepted exactly when encoding/json would accept it.
const maxDepth = 10000

// Derive returns the key of r, or why r is not cacheable: bypass is "" when
// cacheable, else one of the Bypass* reasons.
//
// The key's Sum is the SHA-256 of keyVersion, the route template, each of
// the route's input fields (absent and null told apart) in canonical form,
// and the vary values, all length-prefixed. The canonical form of a JSON
// value is what a JavaScript server sees once it has parsed the body:
//   - object keys sorted (by their UTF-8 bytes) at every depth, and of
//     duplicate keys the last one kept, as JSON.parse keeps it;
//   - whitespace ignored; strings and keys compared after unescaping
//     ("\u0061" is "a");
//   - numbers by their exact decimal value: 1, 1.0, 1e0 and 10e-1 are one
//     number, and -0 is 0. Exact, not float64: two numbers a JavaScript
//     server would round to the same double get different keys (a miss,
//     never a wrong answer), and large integers stay apart for Langflow,
//     whose Python keeps them exact.
//
// Bodies are bypassed as "bad_json" when they are not one JSON object, are
// nested deeper than encoding/json allows (10000), hold a string that is not
// valid UTF-8 or has an unpaired surrogate escape (Node would replace
// these, and two different bodies could then be one input to Flowise), or
// a number whose exponent has more than 9 digits. None of these is a
// request worth caching, and each would make the canonical form harder to
// trust.
//
// Only application/json bodies are keyed (parameters such as charset
// allowed, case-insensitive): it is the only type Flowise's express.json()
// parses. A missing Content-Type is "not_json" even if the body is JSON,
// since Flowise would then not read the body at all.
//
// Sessions. Flowise reads chatId, sessionId and overrideConfig.sessionId.
// Unless r.Stateless, any presence of one of them, whatever its value
// (null included) and in any of several duplicate overrideConfig members,
// bypasses: a flow with memory answers the same question differently in
// each conversation and writes each turn to it. When r.Stateless, the flow
// has no memory by the workflow owner's word, so it is cached, with the
// session ids in the key (overrideConfig.sessionId too): callers in one
// conversation share answers, callers in different ones do not, so a
// replay never carries another caller's chosen id.
// Langflow's session_id bypasses even when stateless: Langflow echoes it
// in the answer, where it cannot be refreshed (without one it is the flow
// id, not a per-request id), so a replay would hand one caller's session
// id to another.
//
// Resumes (Flowise humanInput or action, present and not null in any
// duplicate) bypass always: they continue one stopped execution.
func Derive(r *Request) (k Key, bypass string) {
	var fields []string
	langflow := false
	switch r.Info.Route {
	case flow.RoutePrediction, flow.RouteInternalPrediction:
		fields = flowiseFields
		if r.Stateless {
			fields = flowiseStatelessFields
		}
	case flow.RouteLangflowRun:
		fields, langflow = langflowFields, true
	default:
		return Key{}, BypassRoute
	}
	if len(r.Body) == 0 {
		return Key{}, BypassNoBody
	}
	if !isJSONType(r.ContentType) {
		return Key{}, BypassNotJSON
	}
	s := scratchPool.Get().(*scratch)
	defer s.release()
	if bypass, _ = s.canonical(r, fields, langflow); bypass != "" {
		return Key{}, bypass
	}
	return Key{Workflow: r.Info.WorkflowID, Stream: r.Stream, Sum: s.sum()}, ""
}

// isJSONType reports whether a Content-Type value is application/json,
// with or without parameters.
func isJSONType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// Why a body is "bad_json"; tests tell them apart.
var (
	errSyntax    = errors.New("not valid JSON")
	errNotObject = errors.New("not a JSON object")
	errDepth     = errors.New("nested too deep")
	errUnicode   = errors.New("invalid UTF-8 or unpaired surrogate")
	errExponent  = errors.New("number exponent too long")
)

// scratch is the per-call working memory of Derive, pooled so that a key
// costs no allocation once the pool is warm. It holds offsets, not slices,
// of the body, so a pooled scratch keeps no request alive.
type scratch struct {
	body []byte
	// out is the canonical stream, or its tail once it has outgrown
	// flushAt: the head is then in h.
	out     []byte
	h       hash.Hash
	hashing bool // h holds the head of the stream
	digest  [32]byte
	flushAt int // flushAt, or less in tests
	// Per container (object or array), in document order: the offset after
	// its closing bracket, and the index of the first container after it
	// (its subtree skipped).
	ends, next []uint32
	stack      []uint32 // open containers while indexing; objBit marks objects
	mem        []member // members of the objects being emitted, a stack
	arena      []byte   // unescaped keys
}

// member is one object member: its unescaped key (in the body or, when it
// had escapes, in the arena), and its value's extent and container index
// (-1 for a scalar).
type member struct {
	koff, klen uint32
	karena     bool
	val, end   uint32
	ci         int32
}

const objBit = 1 << 31

// flushAt is the size from which the canonical stream goes to the hash as
// it is written rather than being held whole: a large body (a base64
// upload) costs no buffer of its size.
const flushAt = 16 << 10

// maxPooled bounds the buffers a pooled scratch keeps: a large body's
// scratch is left to the garbage collector rather than held forever.
const maxPooled = 64 << 10

var scratchPool = sync.Pool{New: func() any { return &scratch{flushAt: flushAt} }}

func (s *scratch) release() {
	s.body = nil
	if cap(s.out) > maxPooled || cap(s.arena) > maxPooled || cap(s.ends) > maxPooled/4 || cap(s.mem) > maxPooled/16 || cap(s.stack) > maxPooled/4 {
		return
	}
	scratchPool.Put(s)
}

func (s *scratch) key(m *member) []byte {
	if m.karena {
		return s.arena[m.koff : m.koff+m.klen]
	}
	return s.body[m.koff : m.koff+m.klen]
}

// canonical checks r's body and writes the canonical stream of r to s.out.
// It returns the bypass reason, and for "bad_json" the error behind it.
func (s *scratch) canonical(r *Request, fields []string, langflow bool) (string, error) {
	b := r.Body
	if len(b) >= math.MaxUint32/2 { // offsets are uint32; far beyond any body held in memory
		return BypassBadJSON, errSyntax
	}
	s.body = b
	s.arena = s.arena[:0]
	s.mem = s.mem[:0]
	if err := s.index(b); err != nil {
		return BypassBadJSON, err
	}

	s.members(skipSpace(b, 0), 0)
	n := len(s.mem) // s.mem[:n] are the top-level members, in document order
	session, resume, echoed := false, false, false
	for j := range n {
		m := &s.mem[j]
		k := s.key(m)
		if langflow {
			// session_id at the top, or in a component's tweaks (the
			// chat input and message history components take it there).
			// Any mention in tweaks counts, escaped forms included.
			echoed = echoed || string(k) == "session_id" ||
				string(k) == "tweaks" && (bytes.Contains(b[m.val:m.end], sessionIDKey) || bytes.Contains(b[m.val:m.end], escapeMark))
			continue
		}
		switch string(k) {
		case "humanInput", "action":
			resume = resume || b[m.val] != 'n'
		case "chatId", "sessionId":
			session = true
		case "overrideConfig":
			if b[m.val] == '{' && s.hasMember(int(m.val), int(m.ci), "sessionId") {
				session = true
			}
		}
	}
	if resume {
		return BypassResume, nil
	}
	if session && !r.Stateless || echoed {
		return BypassSession, nil
	}

	s.out, s.hashing = s.out[:0], false
	s.out = appendLenString(s.out, keyVersion)
	s.out = appendLenString(s.out, r.Info.Route)
	for _, f := range fields {
		last := -1
		for j := range n {
			if string(s.key(&s.mem[j])) == f {
				last = j
			}
		}
		if last < 0 {
			s.out = append(s.out, 0)
			continue
		}
		s.out = append(s.out, 1)
		m := s.mem[last] // a copy: emit grows s.mem
		s.emit(int(m.val), int(m.end), int(m.ci))
	}
	s.out = binary.BigEndian.AppendUint32(s.out, uint32(len(r.Vary)))
	for _, v := range r.Vary {
		s.out = appendLenString(s.out, v)
	}
	return "", nil
}

// flush moves the canonical stream written so far into the hash.
func (s *scratch) flush() {
	if !s.hashing {
		if s.h == nil {
			s.h = sha256.New()
		}
		s.h.Reset()
		s.hashing = true
	}
	s.h.Write(s.out)
	s.out = s.out[:0]
}

// write appends p to the canonical stream.
func (s *scratch) write(p []byte) {
	if len(s.out)+len(p) > s.flushAt {
		s.flush()
		if len(p) > s.flushAt {
			s.h.Write(p)
			return
		}
	}
	s.out = append(s.out, p...)
}

// sum is the SHA-256 of the canonical stream.
func (s *scratch) sum() [32]byte {
	if !s.hashing {
		return sha256.Sum256(s.out)
	}
	s.h.Write(s.out)
	s.h.Sum(s.digest[:0])
	return s.digest
}

func appendLenString(dst []byte, v string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
	return append(dst, v...)
}

// index validates b as one JSON object, as encoding/json would accept it
// (plus the stricter string and number rules in Derive), and records the
// extent of every container. It does not recurse.
func (s *scratch) index(b []byte) error {
	s.ends, s.next, s.stack = s.ends[:0], s.next[:0], s.stack[:0]
	const (
		value = iota
		afterValue
		key
		objectStart // a key or '}'
		arrayStart  // a value or ']'
	)
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		if i < len(b) && (b[i] == '[' || b[i] == '"' || b[i] == '-' || '0' <= b[i] && b[i] <= '9' || b[i] == 't' || b[i] == 'f' || b[i] == 'n') {
			return errNotObject // possibly valid JSON, but not an object
		}
		return errSyntax
	}
	st := value
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			if st == afterValue && len(s.stack) == 0 {
				return nil
			}
			return errSyntax
		}
		c := b[i]
		switch st {
		case objectStart, arrayStart:
			if c == '}' && st == objectStart || c == ']' && st == arrayStart {
				s.close(i)
				i++
				st = afterValue
				continue
			}
			if st == objectStart {
				st = key
			} else {
				st = value
			}
		case key:
			if c != '"' {
				return errSyntax
			}
			end, err := checkString(b, i)
			if err != nil {
				return err
			}
			i = skipSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return errSyntax
			}
			i++
			st = value
		case value:
			switch {
			case c == '{' || c == '[':
				if len(s.stack) == maxDepth {
					return errDepth
				}
				ci := uint32(len(s.ends))
				s.ends = append(s.ends, 0)
				s.next = append(s.next, 0)
				if c == '{' {
					s.stack = append(s.stack, ci|objBit)
					st = objectStart
				} else {
					s.stack = append(s.stack, ci)
					st = arrayStart
				}
				i++
				continue
			case c == '"':
				end, err := checkString(b, i)
				if err != nil {
					return err
				}
				i = end
			case c == '-' || '0' <= c && c <= '9':
				end, err := checkNumber(b, i)
				if err != nil {
					return err
				}
				i = end
			case c == 't':
				i = literal(b, i, "true")
			case c == 'f':
				i = literal(b, i, "false")
			case c == 'n':
				i = literal(b, i, "null")
			default:
				return errSyntax
			}
			if i < 0 {
				return errSyntax
			}
			st = afterValue
		case afterValue:
			if len(s.stack) == 0 {
				return errSyntax // something after the value
			}
			inObject := s.stack[len(s.stack)-1]&objBit != 0
			switch {
			case c == ',':
				if inObject {
					st = key
				} else {
					st = value
				}
				i++
			case c == '}' && inObject, c == ']' && !inObject:
				s.close(i)
				i++
			default:
				return errSyntax
			}
		}
	}
}

// close ends the innermost open container at its bracket b[i].
func (s *scratch) close(i int) {
	ci := s.stack[len(s.stack)-1] &^ objBit
	s.stack = s.stack[:len(s.stack)-1]
	s.ends[ci] = uint32(i + 1)
	s.next[ci] = uint32(len(s.ends))
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func literal(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// checkString validates the string starting with the quote at b[i] and
// returns the index after it: escapes as JSON defines them, surrogate
// escapes in pairs, and raw bytes valid UTF-8 without control characters.
func checkString(b []byte, i int) (int, error) {
	j := i + 1
	high := false // a byte >= 0x80 was seen
	for {
		// Eight plain ASCII bytes at a time: long strings (base64 uploads,
		// chat history) are most of a large body.
		for j+8 <= len(b) && plainASCII8(binary.LittleEndian.Uint64(b[j:])) {
			j += 8
		}
		if j >= len(b) {
			return 0, errSyntax
		}
		switch c := b[j]; {
		case c >= 0x80:
			high = true
			j++
		case c >= 0x20 && c != '"' && c != '\\':
			j++
		case c == '"':
			if high && !utf8.Valid(b[i+1:j]) {
				return 0, errUnicode
			}
			return j + 1, nil
		case c < 0x20:
			return 0, errSyntax
		default: // '\\'
			if j+1 >= len(b) {
				return 0, errSyntax
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				r, ok := hex4(b, j+2)
				if !ok {
					return 0, errSyntax
				}
				j += 6
				switch {
				case 0xDC00 <= r && r <= 0xDFFF:
					return 0, errUnicode // a low surrogate alone
				case 0xD800 <= r && r <= 0xDBFF:
					if j+1 >= len(b) || b[j] != '\\' || b[j+1] != 'u' {
						return 0, errUnicode
					}
					r2, ok := hex4(b, j+2)
					if !ok {
						return 0, errSyntax
					}
					if r2 < 0xDC00 || r2 > 0xDFFF {
						return 0, errUnicode
					}
					j += 6
				}
			default:
				return 0, errSyntax
			}
		}
	}
}

// plainASCII8 reports whether the 8 bytes of x (little-endian) are all
// printable ASCII other than '"' and '\\': no byte below 0x20, none equal
// to either, none with the high bit set.
func plainASCII8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	// (v - ones) &^ v has the high bit of each zero byte of v set (and
	// possibly of bytes above a zero byte, which only errs to "not plain");
	// likewise x - 0x20×ones for bytes below 0x20.
	t := (x - ones*0x20) | (quote-ones)&^quote | (slash-ones)&^slash | x
	return t&highs == 0
}

// hex4 decodes the four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// maxExpDigits bounds a number's exponent (leading zeros aside), so that
// the canonical exponent always fits an int64.
const maxExpDigits = 9

// checkNumber validates the number starting at b[i] and returns the index
// after it.
func checkNumber(b []byte, i int) (int, error) {
	j := i
	if b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && '1' <= b[j] && b[j] <= '9':
		j = skipDigits(b, j)
	default:
		return 0, errSyntax
	}
	if j < len(b) && b[j] == '.' {
		k := j + 1
		if j = skipDigits(b, k); j == k {
			return 0, errSyntax
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := j
		if j = skipDigits(b, k); j == k {
			return 0, errSyntax
		}
		for k < j-1 && b[k] == '0' {
			k++
		}
		if j-k > maxExpDigits {
			return 0, errExponent
		}
	}
	return j, nil
}

func skipDigits(b []byte, j int) int {
	for j < len(b) && '0' <= b[j] && b[j] <= '9' {
		j++
	}
	return j
}

// The rest works on a body index has accepted, so it does not check again.

// stringEnd returns the index after the string whose quote is at b[i],
// and whether it has escapes. A quote ends the string when an even run of
// backslashes precedes it.
func stringEnd(b []byte, i int) (int, bool) {
	j := i + 1
	for {
		q := j + bytes.IndexByte(b[j:], '"')
		k := q
		for b[k-1] == '\\' {
			k--
		}
		if (q-k)%2 == 0 {
			return q + 1, bytes.IndexByte(b[i+1:q], '\\') >= 0
		}
		j = q + 1
	}
}

func numberEnd(b []byte, i int) int {
	for i < len(b) && ('0' <= b[i] && b[i] <= '9' || b[i] == '-' || b[i] == '+' || b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		i++
	}
	return i
}

// valueEnd returns the end of the value at b[i] and its container index
// (-1 for a scalar); cur is the index of the next container in document
// order, advanced past the value.
func (s *scratch) valueEnd(b []byte, i int, cur *int) (end, ci int) {
	switch b[i] {
	case '{', '[':
		ci = *cur
		*cur = int(s.next[ci])
		return int(s.ends[ci]), ci
	case '"':
		end, _ = stringEnd(b, i)
		return end, -1
	case 't', 'n':
		return i + 4, -1
	case 'f':
		return i + 5, -1
	}
	return numberEnd(b, i), -1
}

// members appends the members of the object at b[pos] (container ci) to
// s.mem, in document order.
func (s *scratch) members(pos, ci int) {
	b := s.body
	cur := ci + 1
	i := pos + 1
	for {
		i = skipSpace(b, i)
		switch b[i] {
		case '}':
			return
		case ',':
			i++
			continue
		}
		kend, esc := stringEnd(b, i)
		m := member{koff: uint32(i + 1), klen: uint32(kend - i - 2)}
		if esc {
			off := len(s.arena)
			s.arena = appendUnescaped(s.arena, b[i+1:kend-1])
			m.koff, m.klen, m.karena = uint32(off), uint32(len(s.arena)-off), true
		}
		i = skipSpace(b, kend) + 1 // past ':'
		i = skipSpace(b, i)
		end, vci := s.valueEnd(b, i, &cur)
		m.val, m.end, m.ci = uint32(i), uint32(end), int32(vci)
		s.mem = append(s.mem, m)
		i = end
	}
}

// hasMember reports whether the object at b[pos] has a member named name.
func (s *scratch) hasMember(pos, ci int, name string) bool {
	base := len(s.mem)
	s.members(pos, ci)
	found := false
	for j := base; j < len(s.mem); j++ {
		found = found || string(s.key(&s.mem[j])) == name
	}
	s.mem = s.mem[:base]
	return found
}

// Tags of the canonical stream. Every value's encoding is self-delimiting
// (strings and numbers length-prefixed, containers closed), so the stream
// of a sequence of values decodes one way only.
const (
	tagNull   = 'n'
	tagTrue   = 't'
	tagFalse  = 'f'
	tagNumber = 'd'
	tagString = 's'
	tagObject = '{'
	tagArray  = '['
	tagEnd    = '.'
)

// emit appends the canonical form of the value b[pos:end] (container ci) to
// s.out.
func (s *scratch) emit(pos, end, ci int) {
	b := s.body
	if len(s.out) >= s.flushAt {
		s.flush()
	}
	switch b[pos] {
	case '{':
		s.emitObject(pos, ci)
	case '[':
		s.out = append(s.out, tagArray)
		cur := ci + 1
		i := pos + 1
		for {
			i = skipSpace(b, i)
			switch b[i] {
			case ']':
				s.out = append(s.out, tagEnd)
				return
			case ',':
				i++
				continue
			}
			vend, vci := s.valueEnd(b, i, &cur)
			s.emit(i, vend, vci)
			i = vend
		}
	case '"':
		_, esc := stringEnd(b, pos)
		s.appendString(b[pos+1:end-1], esc)
	case 't':
		s.out = append(s.out, tagTrue)
	case 'f':
		s.out = append(s.out, tagFalse)
	case 'n':
		s.out = append(s.out, tagNull)
	default:
		s.out = appendNumber(s.out, b[pos:end])
	}
}

func (s *scratch) emitObject(pos, ci int) {
	base := len(s.mem)
	s.members(pos, ci)
	ms := s.mem[base:]
	s.sortMembers(ms)
	s.out = append(s.out, tagObject)
	for j := range ms {
		// ms stays valid while emit grows s.mem: appends land after it,
		// or in a new array while ms keeps the old one.
		m := &ms[j]
		k := s.key(m)
		if j+1 < len(ms) && bytes.Equal(k, s.key(&ms[j+1])) {
			continue // a duplicate: the last one wins, as in JSON.parse
		}
		s.out = append(s.out, tagString)
		s.out = binary.BigEndian.AppendUint32(s.out, uint32(len(k)))
		s.out = append(s.out, k...)
		s.emit(int(m.val), int(m.end), int(m.ci))
	}
	s.out = append(s.out, tagEnd)
	s.mem = s.mem[:base]
}

// sortMembers sorts by key, stably, so that of duplicates the last in the
// document comes last. Objects are small and often sorted already:
// insertion sort, with the standard library's stable sort for large ones.
func (s *scratch) sortMembers(ms []member) {
	if len(ms) > 12 {
		slices.SortStableFunc(ms, func(a, b member) int { return bytes.Compare(s.key(&a), s.key(&b)) })
		return
	}
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && bytes.Compare(s.key(&ms[j-1]), s.key(&ms[j])) > 0; j-- {
			ms[j-1], ms[j] = ms[j], ms[j-1]
		}
	}
}

func (s *scratch) appendString(raw []byte, esc bool) {
	if !esc {
		s.out = append(s.out, tagString)
		s.out = binary.BigEndian.AppendUint32(s.out, uint32(len(raw)))
		s.write(raw)
		return
	}
	if len(raw) <= s.flushAt {
		s.out = append(s.out, tagString, 0, 0, 0, 0)
		at := len(s.out)
		s.out = appendUnescaped(s.out, raw)
		binary.BigEndian.PutUint32(s.out[at-4:], uint32(len(s.out)-at))
		return
	}
	// Large and escaped: measure, then decode one escape at a time so
	// that the stream can be flushed between them.
	s.out = append(s.out, tagString)
	s.out = binary.BigEndian.AppendUint32(s.out, uint32(unescapedLen(raw)))
	for len(raw) > 0 {
		k := bytes.IndexByte(raw, '\\')
		if k < 0 {
			s.write(raw)
			return
		}
		s.write(raw[:k])
		raw = raw[k:]
		n := escapeLen(raw)
		s.out = appendUnescaped(s.out, raw[:n])
		raw = raw[n:]
	}
}

// escapeLen is the length of the escape at the start of raw (checked by
// checkString): a surrogate pair is one escape.
func escapeLen(raw []byte) int {
	if raw[1] != 'u' {
		return 2
	}
	if r, _ := hex4(raw, 2); utf16.IsSurrogate(r) && len(raw) >= 12 && raw[6] == '\\' && raw[7] == 'u' {
		if r2, ok := hex4(raw, 8); ok && utf16.DecodeRune(r, r2) != utf8.RuneError {
			return 12
		}
	}
	return 6
}

// unescapedLen is len(appendUnescaped(nil, raw)).
func unescapedLen(raw []byte) int {
	n := 0
	for len(raw) > 0 {
		k := bytes.IndexByte(raw, '\\')
		if k < 0 {
			return n + len(raw)
		}
		n += k
		raw = raw[k:]
		e := escapeLen(raw)
		switch e {
		case 2:
			n++
		case 12:
			n += 4
		default:
			r, _ := hex4(raw, 2)
			if utf16.IsSurrogate(r) {
				r = utf8.RuneError
			}
			n += utf8.RuneLen(r)
		}
		raw = raw[e:]
	}
	return n
}

// appendUnescaped appends the string content raw (between the quotes,
// checked by checkString) with its escapes decoded.
func appendUnescaped(dst, raw []byte) []byte {
	for len(raw) > 0 {
		k := bytes.IndexByte(raw, '\\')
		if k < 0 {
			return append(dst, raw...)
		}
		dst = append(dst, raw[:k]...)
		raw = raw[k:]
		switch c := raw[1]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			// A surrogate pair makes one rune; an unpaired surrogate (which
			// index refuses, but encoding/json accepts in an answer) is
			// U+FFFD, as encoding/json decodes it.
			r, _ := hex4(raw, 2)
			raw = raw[6:]
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if len(raw) >= 6 && raw[0] == '\\' && raw[1] == 'u' {
					r2, ok = hex4(raw, 2)
				}
				if r = utf16.DecodeRune(r, r2); ok && r != utf8.RuneError {
					raw = raw[6:]
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
		raw = raw[2:]
	}
	return dst
}

// appendNumber appends the canonical form of a JSON number: its sign, its
// significant digits without leading or trailing zeros, and the power of
// ten they are multiplied by. Zero, of either sign, has no digits.
func appendNumber(dst, num []byte) []byte {
	neg := num[0] == '-'
	if neg {
		num = num[1:]
	}
	i := skipDigits(num, 0)
	ip := num[:i] // integer digits
	var fp []byte // fraction digits
	if i < len(num) && num[i] == '.' {
		j := skipDigits(num, i+1)
		fp = num[i+1 : j]
		i = j
	}
	var exp int64
	if i < len(num) { // 'e' or 'E'
		i++
		eneg := num[i] == '-'
		if num[i] == '-' || num[i] == '+' {
			i++
		}
		for _, c := range num[i:] { // at most 9 significant digits: checkNumber
			exp = exp*10 + int64(c-'0')
		}
		if eneg {
			exp = -exp
		}
	}
	// The digits are ip then fp; find the first and last that are not 0.
	n := len(ip) + len(fp)
	digit := func(k int) byte {
		if k < len(ip) {
			return ip[k]
		}
		return fp[k-len(ip)]
	}
	first, last := 0, n-1
	for first < n && digit(first) == '0' {
		first++
	}
	dst = append(dst, tagNumber)
	if first == n { // zero
		dst = append(dst, '+')
		dst = binary.BigEndian.AppendUint64(dst, 0)
		return binary.BigEndian.AppendUint32(dst, 0)
	}
	for digit(last) == '0' {
		last--
	}
	// value = digits[first..last] × 10^(exp - len(fp) + trailing zeros)
	e := exp - int64(len(fp)) + int64(n-1-last)
	if neg {
		dst = append(dst, '-')
	} else {
		dst = append(dst, '+')
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(e))
	dst = binary.BigEndian.AppendUint32(dst, uint32(last-first+1))
	switch {
	case last < len(ip):
		dst = append(dst, ip[first:last+1]...)
	case first >= len(ip):
		dst = append(dst, fp[first-len(ip):last-len(ip)+1]...)
	default:
		dst = append(dst, ip[first:]...)
		dst = append(dst, fp[:last-len(ip)+1]...)
	}
	return dst
}
