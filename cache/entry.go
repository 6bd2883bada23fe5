package cache

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/flowgate/flowgate/flow"
)

// Entry is one stored answer, a JSON body or a Flowise SSE stream, replayed
// to later callers with fresh per-request ids. It is immutable once built
// and safe for concurrent use.
//
// Fresh ids. Flowise answers carry ids of the run that produced them:
// chatId, chatMessageId, sessionId and, for agentflows, executionId (top
// level of a JSON answer; in a stream, in the metadata event's data). A
// caller who got a replay must never hold the ids another caller received:
// they address that caller's chat messages and execution. So at build time
// the string values of those members are collected (JSON: the answer
// object's members; stream: each event object's members and its "data"
// object's members, whatever the event), and every JSON string literal in
// the answer whose content is exactly one of those values, key or value,
// at any depth, is marked as a slot. AppendBody writes a fresh random
// UUIDv4 into each slot: one per distinct original value, so chatId and
// sessionId that were equal stay equal, and different values stay
// different. Values are matched only as whole string literals, byte for
// byte as the upstream wrote them: Flowise generates them as UUIDs and
// writes them with JSON.stringify, which writes one value the same way
// everywhere, and a UUID that is a whole literal elsewhere in the answer is
// that id, not text that happens to match. Text that merely contains an id
// (a token of the model's answer quoting it) is left alone. Empty and
// non-string values are left alone.
type Entry struct {
	stream  bool
	status  int
	ctype   string
	created time.Time
	// body is the answer as its first caller received it (for a stream, in
	// Flowise's framing), slots marking its ids in order of offset.
	body  []byte
	slots []slot
	nids  int // distinct original ids; slot.id < nids
	// outLen is the length of a replay.
	outLen int
	// hdr are response headers replayed with the answer, as name, value
	// pairs (the upstream's CORS headers: a browser drops an answer
	// without them).
	hdr []string
}

// maxHeaders bounds the replayed headers (pairs) an entry keeps.
const maxHeaders = 16

// SetHeaders sets the response headers replayed with the answer, as name,
// value pairs; at most 16 pairs and 8 KiB are kept.
func (e *Entry) SetHeaders(pairs []string) {
	n := 0
	e.hdr = e.hdr[:0]
	for i := 0; i+1 < len(pairs) && len(e.hdr) < 2*maxHeaders; i += 2 {
		if n += len(pairs[i]) + len(pairs[i+1]); n > 8<<10 {
			break
		}
		e.hdr = append(e.hdr, pairs[i], pairs[i+1])
	}
}

// Headers returns the replayed headers as name, value pairs.
func (e *Entry) Headers() []string { return e.hdr }

// slot is one id's place in the body: the bytes between its quotes.
type slot struct {
	off, n, id uint32
}

// maxBody bounds a stored body so that offsets and a replay's length fit
// in 32 bits.
const maxBody = 1 << 30

// uuidLen is the length of a fresh id, as Flowise writes its own.
const uuidLen = 36

// streamContentType is what a stream is served as; Flowise sends it
// without parameters.
const streamContentType = "text/event-stream"

// idKeys are the members whose string values are per-request ids.
var idKeys = [...]string{"chatId", "chatMessageId", "sessionId", "executionId"}

// Why an answer is not stored; the proxy may count them.
var (
	ErrStatus     = errors.New("cache: answer status is not 2xx")
	ErrNotJSON    = errors.New("cache: answer is not valid JSON")
	ErrBadEvent   = errors.New("cache: stream event is not a Flowise event")
	ErrStreamFail = errors.New("cache: stream carries an error or abort event")
	ErrIncomplete = errors.New("cache: stream does not end with its end event")
	// ErrTooLarge: slots address the body with 32-bit offsets. The
	// proxy's cache.max_entry_bytes is far below.
	ErrTooLarge = errors.New("cache: answer too large")
	// ErrPaused: the flow stopped for human input. The caller resumes it
	// with the ids of the answer, so neither the ids (another caller's)
	// nor fresh ones (unknown to Flowise) make a replay that works.
	ErrPaused = errors.New("cache: answer waits for human input")
)

// NewJSON builds an entry from a complete JSON answer body (a Flowise or
// Langflow prediction answer). The body must be valid JSON; an object with
// a non-null "action" member (Flowise waiting for human input) is refused.
// Only Flowise's id members are refreshed: Langflow's session_id is, by
// default, the flow id, not a per-request id.
func NewJSON(status int, contentType string, body []byte, created time.Time) (*Entry, error) {
	if status < 200 || status > 299 {
		return nil, ErrStatus
	}
	if len(body) > maxBody {
		return nil, ErrTooLarge
	}
	if !json.Valid(body) {
		return nil, ErrNotJSON
	}
	var ids idSet
	paused := false
	objectMembers(body, func(k string, v []byte) {
		ids.addMember(k, v)
		paused = paused || k == "action" && !isNull(v)
	})
	if paused {
		return nil, ErrPaused
	}
	e := &Entry{status: status, ctype: contentType, created: created, body: cloneExact(body)}
	e.markSlots(0, len(e.body), &ids)
	e.finish(&ids)
	return e, nil
}

// NewStream builds an entry from the data payloads of a complete Flowise
// stream's events, in order. The stream is not cacheable, and NewStream
// fails, when an event's data is not a Flowise event ({"event":"<name>",
// ...}, see flow.FlowiseEvent), when an event is "error" or "abort", when
// the flow stopped for human input (an "action" event, agentFlowEvent
// STOPPED, or a metadata event with an action), when the agentflow ended
// in ERROR or TERMINATED, or when the last event is not "end".
//
// The replay is written in Flowise's framing, "message:\ndata:" + data +
// "\n\n" per event. A data payload with a line feed (JSON whitespace; Flowise
// never sends one) is written as several data lines, which an SSE client
// joins back with line feeds; one with a carriage return is refused, as it
// could not be replayed byte for byte.
func NewStream(status int, events [][]byte, created time.Time) (*Entry, error) {
	if status < 200 || status > 299 {
		return nil, ErrStatus
	}
	if len(events) == 0 || !flow.IsFlowiseEnd(events[len(events)-1]) {
		return nil, ErrIncomplete
	}
	var ids idSet
	size := 0
	for i, data := range events {
		name, ok := flow.FlowiseEvent(data)
		if !ok || bytes.IndexByte(data, '\r') >= 0 {
			return nil, ErrBadEvent
		}
		if string(name) == "end" && i != len(events)-1 {
			return nil, ErrIncomplete // events after the end: not what Flowise sends
		}
		if err := checkEvent(string(name), data, &ids); err != nil {
			return nil, err
		}
		if size += frameLen(data); size > maxBody {
			return nil, ErrTooLarge
		}
	}
	e := &Entry{stream: true, status: status, ctype: streamContentType, created: created, body: make([]byte, 0, size)}
	for _, data := range events {
		start := len(e.body) + len(framePrefix)
		e.body = appendFrame(e.body, data)
		e.markSlots(start, len(e.body)-len(frameSuffix), &ids)
	}
	e.finish(&ids)
	return e, nil
}

// Flowise's framing of one event.
const (
	framePrefix = "message:\ndata:"
	frameSuffix = "\n\n"
)

// frameLen is the length of appendFrame's frame of data.
func frameLen(data []byte) int {
	n := len(framePrefix) + len(data) + len(frameSuffix)
	if len(data) > 0 && data[0] == ' ' {
		n++
	}
	for i, c := range data {
		if c == '\n' {
			n += len("data:")
			if i+1 < len(data) && data[i+1] == ' ' {
				n++
			}
		}
	}
	return n
}

// appendFrame appends one event in Flowise's framing, a data line per line
// of data. A line that starts with a space gets one more after "data:",
// since an SSE client strips one.
func appendFrame(dst, data []byte) []byte {
	dst = append(dst, framePrefix...)
	for first := true; ; first = false {
		line, rest, more := bytes.Cut(data, []byte{'\n'})
		if !first {
			dst = append(dst, "data:"...)
		}
		if len(line) > 0 && line[0] == ' ' {
			dst = append(dst, ' ')
		}
		dst = append(dst, line...)
		if !more {
			break
		}
		dst = append(dst, '\n')
		data = rest
	}
	return append(dst, frameSuffix...)
}

// checkEvent refuses the events that make a stream not cacheable and
// collects the ids of one event's data.
func checkEvent(name string, data []byte, ids *idSet) error {
	var fail error
	objectMembers(data, func(k string, v []byte) {
		ids.addMember(k, v)
		if k != "data" {
			return
		}
		switch name {
		case "agentFlowEvent":
			switch string(v) {
			case `"ERROR"`, `"TERMINATED"`:
				fail = ErrStreamFail
			case `"STOPPED"`:
				fail = ErrPaused
			}
		case "metadata":
			objectMembers(v, func(k string, v []byte) {
				if k == "action" && !isNull(v) {
					fail = ErrPaused
				}
			})
		}
		objectMembers(v, ids.addMember)
	})
	switch name {
	case "error", "abort":
		return ErrStreamFail
	case "action":
		return ErrPaused
	}
	return fail
}

// idSet is the distinct raw contents of the id strings of one answer.
type idSet struct {
	vals [][]byte
}

// addMember records v, the raw value of member k, if k names an id and v
// is a UUID string. Flowise makes its ids UUIDs; an id a caller chose (a
// stateless flow's sessionId "1") may also be ordinary text of the answer,
// which must not be rewritten, and it is the caller's own anyway (session
// ids are in the key of a stateless workflow).
func (s *idSet) addMember(k string, v []byte) {
	if len(v) != 2+uuidLen || v[0] != '"' || !slices.Contains(idKeys[:], k) || !isUUID(v[1:len(v)-1]) {
		return
	}
	raw := v[1 : len(v)-1]
	if s.index(raw) < 0 {
		s.vals = append(s.vals, raw)
	}
}

// isUUID reports whether b is a UUID in its 8-4-4-4-12 hex form.
func isUUID(b []byte) bool {
	if len(b) != uuidLen {
		return false
	}
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func (s *idSet) index(raw []byte) int {
	for i, v := range s.vals {
		if bytes.Equal(v, raw) {
			return i
		}
	}
	return -1
}

// markSlots adds a slot for every string literal of e.body[from:to] (valid
// JSON, possibly split into data lines, which only ever split whitespace)
// whose content is one of ids.
func (e *Entry) markSlots(from, to int, ids *idSet) {
	if len(ids.vals) == 0 {
		return
	}
	b := e.body[:to]
	for i := from; i < len(b); i++ {
		if b[i] != '"' {
			continue
		}
		end, _ := stringEnd(b, i)
		if id := ids.index(b[i+1 : end-1]); id >= 0 {
			e.slots = append(e.slots, slot{off: uint32(i + 1), n: uint32(end - i - 2), id: uint32(id)})
		}
		i = end - 1
	}
}

// finish computes what a replay needs once the slots are marked.
func (e *Entry) finish(ids *idSet) {
	e.nids = len(ids.vals)
	e.outLen = len(e.body)
	for _, s := range e.slots {
		e.outLen += uuidLen - int(s.n)
	}
	e.slots = slices.Clip(e.slots)
}

// Stream reports whether the entry is an SSE stream.
func (e *Entry) Stream() bool { return e.stream }

// Status is the upstream's 2xx status.
func (e *Entry) Status() int { return e.status }

// ContentType is the upstream's for a JSON answer, "text/event-stream" for
// a stream.
func (e *Entry) ContentType() string { return e.ctype }

// Created is when the answer was stored, for Age and the TTL.
func (e *Entry) Created() time.Time { return e.created }

// entryOverhead approximates the memory of an Entry beside its body and
// slots: the struct, its allocation headers and the cache's bookkeeping.
const entryOverhead = 160

// Size is the entry's memory footprint in bytes, for the byte-bounded
// memory level.
func (e *Entry) Size() int {
	n := entryOverhead + len(e.ctype) + cap(e.body) + cap(e.slots)*12
	for _, h := range e.hdr {
		n += 16 + len(h)
	}
	return n
}

// AppendBody appends the answer as a client receives it, with fresh ids:
// the JSON body, or the stream in Flowise's framing. It allocates only to
// grow dst, and for more than 8 distinct ids.
func (e *Entry) AppendBody(dst []byte) []byte {
	if len(e.slots) == 0 {
		return append(dst, e.body...)
	}
	var buf [8][uuidLen]byte
	fresh := e.freshIDs(&buf)
	dst = slices.Grow(dst, e.outLen)
	prev := uint32(0)
	for _, s := range e.slots {
		dst = append(dst, e.body[prev:s.off]...)
		dst = append(dst, fresh[s.id][:]...)
		prev = s.off + s.n
	}
	return append(dst, e.body[prev:]...)
}

// freshIDs makes one fresh id per distinct stored one, in buf when it is
// large enough.
func (e *Entry) freshIDs(buf *[8][uuidLen]byte) [][uuidLen]byte {
	fresh := buf[:]
	if e.nids > len(buf) {
		fresh = make([][uuidLen]byte, e.nids)
	}
	fresh = fresh[:e.nids]
	newUUIDs(fresh)
	return fresh
}

// Len is the length of a replay.
func (e *Entry) Len() int { return e.outLen }

// WriteTo writes the answer as AppendBody appends it, straight from the
// stored bytes: a hit of a large answer is not copied first, so slow
// clients reading large hits hold no memory of their own.
func (e *Entry) WriteTo(w io.Writer) (int64, error) {
	var buf [8][uuidLen]byte
	fresh := e.freshIDs(&buf)
	var n int64
	write := func(p []byte) error {
		m, err := w.Write(p)
		n += int64(m)
		return err
	}
	prev := uint32(0)
	for _, s := range e.slots {
		if err := write(e.body[prev:s.off]); err != nil {
			return n, err
		}
		if err := write(fresh[s.id][:]); err != nil {
			return n, err
		}
		prev = s.off + s.n
	}
	return n, write(e.body[prev:])
}

// objectMembers calls fn with each member of the JSON object b (valid
// JSON; anything but an object calls nothing), in document order,
// duplicates included: the key decoded, the value's raw bytes.
func objectMembers(b []byte, fn func(k string, v []byte)) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] == '}' {
			return
		}
		if b[i] == ',' {
			i++
			continue
		}
		kend, esc := stringEnd(b, i)
		var k string
		if esc {
			k = string(appendUnescaped(nil, b[i+1:kend-1]))
		} else {
			k = string(b[i+1 : kend-1])
		}
		i = skipSpace(b, skipSpace(b, kend)+1)
		end := skipValue(b, i)
		fn(k, b[i:end])
		i = end
	}
}

// skipValue returns the index after the value at b[i] of valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				end, _ := stringEnd(b, i)
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	case 't', 'n':
		return i + 4
	case 'f':
		return i + 5
	}
	return numberEnd(b, i)
}

// cloneExact copies b into a slice of capacity len(b), so that an entry's
// Size is the same whether it was built or decoded.
func cloneExact(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}

func isNull(v []byte) bool { return string(v) == "null" }

// Fresh ids come from ChaCha8 generators, each seeded from crypto/rand and
// pooled: a cryptographically strong stream, so an id is not predictable
// from others, at a fraction of a system call's cost per replay.
var rngPool = sync.Pool{New: func() any {
	var seed [32]byte
	crand.Read(seed[:]) // never fails (Go 1.24+): it crashes the program rather than return weak bytes
	return rand.NewChaCha8(seed)
}}

// newUUIDs fills ids with random UUIDv4s in Flowise's (the uuid package's)
// form: lowercase hex, 8-4-4-4-12.
func newUUIDs(ids [][uuidLen]byte) {
	g := rngPool.Get().(*rand.ChaCha8)
	for i := range ids {
		var u [16]byte
		binary.BigEndian.PutUint64(u[:8], g.Uint64())
		binary.BigEndian.PutUint64(u[8:], g.Uint64())
		u[6] = u[6]&0x0f | 0x40 // version 4
		u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
		d := &ids[i]
		hex.Encode(d[0:8], u[0:4])
		d[8] = '-'
		hex.Encode(d[9:13], u[4:6])
		d[13] = '-'
		hex.Encode(d[14:18], u[6:8])
		d[18] = '-'
		hex.Encode(d[19:23], u[8:10])
		d[23] = '-'
		hex.Encode(d[24:36], u[10:16])
	}
	rngPool.Put(g)
}

// The binary form (for Redis), version 1:
//
//	"FGE" 0x01       magic and version
//	flags            1 byte: bit 0 stream, bit 1 created is set
//	status           uvarint
//	created          varint, Unix nanoseconds (when bit 1)
//	content type     uvarint length, bytes
//	body             uvarint length, bytes
//	ids              uvarint: distinct ids
//	slots            uvarint count, then per slot uvarint gap from the
//	                 previous slot's end, uvarint length, uvarint id
//	CRC-32C          4 bytes, little-endian, of all that precedes
//
// The checksum makes a truncated or corrupted value an error rather than a
// wrong answer.
const binaryMagic = "FGE\x01"

const (
	flagStream  = 1 << 0
	flagCreated = 1 << 1
	flagHeaders = 1 << 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes the entry for the shared level.
func (e *Entry) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, len(binaryMagic)+1+3*binary.MaxVarintLen64+len(e.ctype)+len(e.body)+len(e.slots)*6+4)
	b = append(b, binaryMagic...)
	var flags byte
	if e.stream {
		flags |= flagStream
	}
	if !e.created.IsZero() {
		flags |= flagCreated
	}
	if len(e.hdr) > 0 {
		flags |= flagHeaders
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(e.status))
	if flags&flagCreated != 0 {
		b = binary.AppendVarint(b, e.created.UnixNano())
	}
	b = binary.AppendUvarint(b, uint64(len(e.ctype)))
	b = append(b, e.ctype...)
	b = binary.AppendUvarint(b, uint64(len(e.body)))
	b = append(b, e.body...)
	b = binary.AppendUvarint(b, uint64(e.nids))
	b = binary.AppendUvarint(b, uint64(len(e.slots)))
	prev := uint32(0)
	for _, s := range e.slots {
		b = binary.AppendUvarint(b, uint64(s.off-prev))
		b = binary.AppendUvarint(b, uint64(s.n))
		b = binary.AppendUvarint(b, uint64(s.id))
		prev = s.off + s.n
	}
	if flags&flagHeaders != 0 {
		b = binary.AppendUvarint(b, uint64(len(e.hdr)))
		for _, h := range e.hdr {
			b = binary.AppendUvarint(b, uint64(len(h)))
			b = append(b, h...)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

var errMalformed = errors.New("cache: malformed entry encoding")

// UnmarshalBinary decodes what MarshalBinary encoded, into e. It refuses
// malformed, truncated and corrupted input with an error, and allocates no
// more than a small multiple of len(b). It copies what it keeps of b.
func (e *Entry) UnmarshalBinary(b []byte) error {
	if len(b) < len(binaryMagic)+1+4 || string(b[:len(binaryMagic)]) != binaryMagic {
		return errMalformed
	}
	sum := binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(b[:len(b)-4], castagnoli) != sum {
		return errMalformed
	}
	d := decoder{b: b[len(binaryMagic) : len(b)-4]}
	var x Entry
	flags := d.byte()
	x.stream = flags&flagStream != 0
	x.status = int(d.uvarint(999))
	if flags&flagCreated != 0 {
		x.created = time.Unix(0, d.varint())
	}
	x.ctype = string(d.bytes())
	body := d.bytes()
	if len(body) > maxBody {
		return errMalformed
	}
	x.body = cloneExact(body)
	nids := d.uvarint(uint64(len(d.b)))
	nslots := d.uvarint(uint64(len(d.b)) / 3) // each slot takes 3 bytes at least
	if d.err != nil || flags&^(flagStream|flagCreated|flagHeaders) != 0 || x.status < 200 || x.status > 299 || nids > nslots {
		return errMalformed
	}
	x.slots = make([]slot, nslots)
	prev := uint64(0)
	for i := range x.slots {
		off := prev + d.uvarint(uint64(len(x.body)))
		n := d.uvarint(uint64(len(x.body)))
		id := d.uvarint(nids)
		// Each slot is the content of a string literal, after the previous.
		if d.err != nil || id >= nids || off == 0 || off <= prev && i > 0 || off+n >= uint64(len(x.body)) ||
			x.body[off-1] != '"' || x.body[off+n] != '"' {
			return errMalformed
		}
		x.slots[i] = slot{off: uint32(off), n: uint32(n), id: uint32(id)}
		prev = off + n
	}
	if flags&flagHeaders != 0 {
		nh := d.uvarint(2 * maxHeaders)
		if nh%2 != 0 {
			return errMalformed
		}
		for range nh {
			h := d.bytes()
			if d.err != nil {
				return errMalformed
			}
			x.hdr = append(x.hdr, string(h))
		}
	}
	if len(d.b) != 0 {
		return errMalformed
	}
	x.nids = int(nids)
	x.outLen = len(x.body)
	for _, s := range x.slots {
		x.outLen += uuidLen - int(s.n)
	}
	*e = x
	return nil
}

// decoder reads the binary form; after the first error every read returns
// zero values and err stays set.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errMalformed
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// uvarint reads an unsigned varint no greater than max.
func (d *decoder) uvarint(max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.err = errMalformed
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errMalformed
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed byte string, pointing into the input.
func (d *decoder) bytes() []byte {
	n := d.uvarint(uint64(len(d.b)))
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errMalformed
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
