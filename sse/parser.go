// Package sse is flowgate's one parser of text/event-stream bodies. The
// stream check, the cache recorder and the usage meter all register on the
// same parse of a response as its bytes pass to the client, so each frame is
// parsed once however many listeners it has.
//
// Parser follows the event stream interpretation of the WHATWG HTML
// standard (§9.2.6) on bytes fed in arbitrary pieces. It works on bytes,
// not text: invalid UTF-8 is passed through as it came, where a browser
// would replace it with U+FFFD. It does not copy what it can point at, does
// not allocate once its buffers have grown, and bounds what one event can
// make it hold (see MaxEventBytes), so a hostile upstream cannot grow it.
package sse

import "bytes"

// Event is one dispatched event. Its slices are valid only during the
// callback and must not be modified: they point into the input or into the
// parser's buffers.
type Event struct {
	Type []byte // "message" when the event had no event field
	Data []byte // data lines joined with "\n"
	ID   []byte // last event id (persists across events, as the spec says)
	// Truncated: Data exceeded MaxEventBytes and was cut to that size, or
	// Type or ID exceeded their smaller bound (see Parser) and were cut. A
	// truncated event is not what the upstream sent: do not cache or replay
	// it as if it were.
	Truncated bool
}

// DefaultMaxEventBytes is the bound used when Parser.MaxEventBytes is 0.
const DefaultMaxEventBytes = 1 << 20

// maxNameBytes bounds the event type and the id, which no flow server sends
// long, so that a parser holds little more than MaxEventBytes in all.
const maxNameBytes = 1 << 10

// Parser parses one event stream. The zero value is ready to use.
//
// One UTF-8 BOM is skipped at the start of the stream, even when it comes
// in pieces; a BOM anywhere else is ordinary bytes.
//
// Memory: Data is cut at MaxEventBytes, the event type and the id at
// min(MaxEventBytes, 1 KiB); the bytes past a bound are dropped, and the
// events carrying the cut value are dispatched with Truncated set. A
// partial line is not held apart from the value it adds to, and comments
// and unknown fields (Flowise's "message:" line) are skipped without
// holding any of their bytes, so a parser holds at most MaxEventBytes plus
// 3 KiB, whatever it is fed.
type Parser struct {
	// MaxEventBytes bounds the memory one event may hold (data + a partial
	// line). Default (0, or less) 1 MiB.
	MaxEventBytes int

	ev      Event
	state   uint8
	field   uint8
	name    [len("event")]byte // the field name read so far
	nameLen uint8
	bom     uint8 // BOM bytes matched at the start; bomDone once decided
	afterCR bool
	dirty   bool // a field line since the last blank line
	fresh   bool // no byte of the current field value seen yet
	events  int

	data    []byte // the data lines joined, when not pointing into the input
	ref     []byte // the data, pointing into the input being fed
	hasRef  bool
	hasData bool // a data line seen: the blank line will dispatch
	dataCut bool

	typ    []byte
	typCut bool

	id, idNext []byte // the last event id, and the one being read
	idCut      bool
	idNextCut  bool
	idNUL      bool // the id being read has a NUL: it will be ignored
}

// Line states.
const (
	stStart      = iota // at the start of a line
	stName              // in a field name
	stIgnore            // in a comment or an unknown field: skip to the line end
	stValueStart        // after the colon: one space may follow
	stValue             // in the value of field
)

// Fields that matter. "retry" is left with the unknown fields: it only
// tells a browser when to reconnect, and flowgate never reconnects.
const (
	fieldData = iota
	fieldEvent
	fieldID
)

const bomDone = 3

var bom = [bomDone]byte{0xEF, 0xBB, 0xBF}

// Feed parses b and calls emit for each event completed in it. It never
// retains b. emit may be nil to only count events.
func (p *Parser) Feed(b []byte, emit func(*Event)) {
	for p.bom < bomDone && len(b) > 0 {
		if b[0] != bom[p.bom] {
			// Not a BOM after all: the bytes held back start the first line.
			held := p.bom
			p.bom = bomDone
			p.feed(bom[:held], emit)
			break
		}
		p.bom++
		b = b[1:]
	}
	p.feed(b, emit)
}

func (p *Parser) feed(b []byte, emit func(*Event)) {
	s := lineScan{b: b, lf: -1, cr: -1}
	i := 0
	for i < len(b) {
		if p.afterCR {
			p.afterCR = false
			if b[i] == '\n' { // the LF of a CRLF, maybe in a later feed than its CR
				i++
				continue
			}
		}
		switch p.state {
		case stStart:
			switch b[i] {
			case '\n', '\r':
				p.afterCR = b[i] == '\r'
				i++
				p.dispatch(emit)
				continue
			case ':':
				p.state = stIgnore
				i++
				continue
			}
			p.dirty = true
			p.state = stName
			p.nameLen = 0
			fallthrough
		case stName:
			e := s.end(i)
			n := b[i:e]
			colon := bytes.IndexByte(n, ':')
			if colon >= 0 {
				n = n[:colon]
			}
			if len(n) > len(p.name)-int(p.nameLen) {
				p.state = stIgnore // longer than any field we keep
				continue
			}
			p.nameLen += uint8(copy(p.name[p.nameLen:], n))
			switch {
			case colon >= 0:
				i += colon + 1
				p.beginValue()
			case e == len(b):
				i = e // the name goes on in the next feed
			default:
				// A line without a colon is a field with an empty value.
				p.beginValue()
				p.endLine(b[e])
				i = e + 1
			}
		case stIgnore:
			i = s.end(i)
			if i < len(b) {
				p.endLine(b[i])
				i++
			}
		case stValueStart:
			if b[i] == ' ' {
				i++
			}
			p.state = stValue
		case stValue:
			e := s.end(i)
			p.value(b[i:e], e < len(b))
			i = e
			if i < len(b) {
				p.endLine(b[i])
				i++
			}
		}
	}
	if p.hasRef {
		p.keepRef() // b is not ours after this call
	}
}

// lineScan finds line ends in b. It remembers the next CR and the next LF
// it found, so a run of one kind of line end does not rescan for the other.
type lineScan struct {
	b      []byte
	lf, cr int
}

// end returns the index of the first CR or LF at or after i, or len(b).
func (s *lineScan) end(i int) int {
	if s.lf < i {
		s.lf = indexFrom(s.b, i, '\n')
	}
	if s.cr < i {
		s.cr = indexFrom(s.b, i, '\r')
	}
	return min(s.lf, s.cr)
}

func indexFrom(b []byte, i int, c byte) int {
	if j := bytes.IndexByte(b[i:], c); j >= 0 {
		return i + j
	}
	return len(b)
}

// beginValue starts the value of the field named so far.
func (p *Parser) beginValue() {
	switch string(p.name[:p.nameLen]) {
	case "data":
		p.field = fieldData
		if p.hasData {
			if p.hasRef {
				p.keepRef()
			}
			var cut bool
			p.data, cut = appendCapped(p.data, newline, p.limit())
			p.dataCut = p.dataCut || cut
		}
		p.hasData = true
	case "event":
		p.field = fieldEvent
		p.typ, p.typCut = p.typ[:0], false
	case "id":
		p.field = fieldID
		p.idNext, p.idNextCut, p.idNUL = p.idNext[:0], false, false
	default:
		p.state = stIgnore
		return
	}
	p.state = stValueStart
	p.fresh = true
}

var newline = []byte{'\n'}

// value adds v to the current field value; whole reports that the line
// ends right after v.
func (p *Parser) value(v []byte, whole bool) {
	var cut bool
	switch p.field {
	case fieldData:
		if p.fresh && whole && len(p.data) == 0 && !p.hasRef {
			// The event's first data line lies in this input: point at it.
			p.ref, cut = capped(v, p.limit())
			p.hasRef = true
		} else {
			p.data, cut = appendCapped(p.data, v, p.limit())
		}
		p.dataCut = p.dataCut || cut
	case fieldEvent:
		p.typ, cut = appendCapped(p.typ, v, p.nameLimit())
		p.typCut = p.typCut || cut
	case fieldID:
		if p.idNUL {
			break
		}
		if bytes.IndexByte(v, 0) >= 0 {
			p.idNUL = true
			break
		}
		p.idNext, cut = appendCapped(p.idNext, v, p.nameLimit())
		p.idNextCut = p.idNextCut || cut
	}
	p.fresh = false
}

// endLine ends a non-blank line at the line end c.
func (p *Parser) endLine(c byte) {
	if p.field == fieldID && (p.state == stValueStart || p.state == stValue) && !p.idNUL {
		p.id, p.idNext = p.idNext, p.id
		p.idCut = p.idNextCut
	}
	p.state = stStart
	p.afterCR = c == '\r'
}

// dispatch handles a blank line.
func (p *Parser) dispatch(emit func(*Event)) {
	p.dirty = false
	if p.hasData {
		if len(p.typ) == 0 {
			p.typ = append(p.typ, "message"...)
		}
		data := p.data
		if p.hasRef {
			data = p.ref
		}
		p.ev = Event{Type: p.typ, Data: data, ID: p.id, Truncated: p.dataCut || p.typCut || p.idCut}
		p.events++
		if emit != nil {
			emit(&p.ev)
		}
		p.ev = Event{} // hold no reference to the input
	}
	p.data, p.ref, p.hasRef, p.hasData, p.dataCut = p.data[:0], nil, false, false, false
	p.typ, p.typCut = p.typ[:0], false
}

// keepRef copies the data pointed at into the parser's own buffer.
func (p *Parser) keepRef() {
	p.data, _ = appendCapped(p.data[:0], p.ref, p.limit())
	p.ref, p.hasRef = nil, false
}

func (p *Parser) limit() int {
	if p.MaxEventBytes > 0 {
		return p.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

func (p *Parser) nameLimit() int { return min(p.limit(), maxNameBytes) }

// capped cuts v to limit bytes, reporting whether it did.
func capped(v []byte, limit int) ([]byte, bool) {
	if len(v) > limit {
		return v[:limit], true
	}
	return v, false
}

// appendCapped appends v to dst up to limit bytes in all, reporting whether
// it dropped any. It grows dst to at most limit, never beyond.
func appendCapped(dst, v []byte, limit int) ([]byte, bool) {
	v, cut := capped(v, max(limit-len(dst), 0))
	if cap(dst)-len(dst) < len(v) {
		n := min(max(2*cap(dst), len(dst)+len(v), 64), limit)
		grown := make([]byte, len(dst), n)
		copy(grown, dst)
		dst = grown
	}
	return append(dst, v...), cut
}

// Reset makes the parser ready for a new stream, keeping its buffers.
func (p *Parser) Reset() {
	*p = Parser{
		MaxEventBytes: p.MaxEventBytes,
		data:          p.data[:0],
		typ:           p.typ[:0],
		id:            p.id[:0],
		idNext:        p.idNext[:0],
	}
}

// AtBoundary reports whether the bytes so far end exactly between events:
// no partial line and no field seen since the last dispatch (comments and
// the trailing blank line of an event leave it true).
func (p *Parser) AtBoundary() bool {
	return p.state == stStart && !p.dirty && (p.bom == 0 || p.bom == bomDone)
}

// AfterCR reports whether the last byte fed was a CR (a following LF would
// belong to that line end).
func (p *Parser) AfterCR() bool { return p.afterCR }

// Events returns how many events were dispatched since the last Reset.
func (p *Parser) Events() int { return p.events }
