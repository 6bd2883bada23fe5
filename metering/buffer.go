package metering

// Buffer sizes. Every byte of capacity a Meter holds is taken from its
// Budget first.
const (
	// maxRequestText bounds the question, history and form text kept for
	// the input estimate; the rest is counted, not kept.
	maxRequestText = 256 << 10
	// maxAnswerText bounds the answer text kept for the output estimate.
	maxAnswerText = 1 << 20
	// maxAnswerJSON bounds a JSON answer buffered for parsing; a larger
	// one is estimated from its byte count.
	maxAnswerJSON = 8 << 20

	// growStep is the Budget's granularity: above it, capacity grows in
	// whole steps (doubling while that is allowed, else one step).
	growStep = 64 << 10
	// minCap is a buffer's first capacity: most answers are short.
	minCap = 512
	// keepCap: Release keeps a buffer up to this capacity for the next
	// execution (uncharged while the Meter is idle) and drops larger ones.
	keepCap = 16 << 10
)

// textBuf is a bounded buffer that keeps a prefix of what it is offered
// and counts all of it.
type textBuf struct {
	b       []byte
	charged int64 // capacity of b taken from the Budget
	total   int64 // bytes offered, kept or not
	full    bool  // stopped keeping: bound reached or Budget refused
}

// room makes space for up to n more bytes, b's capacity staying within
// limit, and returns how many may be appended without reallocating (at
// most n). Growth is taken from bud first; when it refuses, what capacity
// there is is all the room there is.
func (t *textBuf) room(bud *Budget, n, limit int) int {
	if t.full || n <= 0 {
		return 0
	}
	if c := int64(cap(t.b)); c > t.charged {
		// A buffer kept from an earlier execution is charged on first use.
		if bud.take(c - t.charged) {
			t.charged = c
		} else {
			t.b, t.charged = nil, 0
		}
	}
	want := min(len(t.b)+n, limit)
	if want <= cap(t.b) {
		return max(want-len(t.b), 0)
	}
	newCap := clampCap(max(want, 2*cap(t.b), minCap), limit)
	if !bud.take(int64(newCap) - t.charged) {
		least := clampCap(want, limit)
		if least == newCap || !bud.take(int64(least)-t.charged) {
			return cap(t.b) - len(t.b)
		}
		newCap = least
	}
	nb := make([]byte, len(t.b), newCap)
	copy(nb, t.b)
	t.b, t.charged = nb, int64(newCap)
	return want - len(t.b)
}

// clampCap rounds a capacity above growStep up to whole steps, at most
// limit.
func clampCap(c, limit int) int {
	if c > growStep {
		c = (c + growStep - 1) / growStep * growStep
	}
	return min(c, limit)
}

// appendString appends the decoded JSON string content raw, as far as
// limit and bud allow.
func (t *textBuf) appendString(bud *Budget, raw []byte, limit int) {
	// Decoding never more than triples a string (an invalid UTF-8 byte
	// becomes U+FFFD); escapes only shrink it.
	r := t.room(bud, 3*len(raw), limit)
	before := len(t.b)
	var n int64
	t.b, n = appendUnquote(t.b, raw, before+r)
	t.total += n
	if int64(len(t.b)-before) < n {
		t.full = true
	}
}

// appendJSON appends the JSON value v compacted, as far as limit and bud
// allow.
func (t *textBuf) appendJSON(bud *Budget, v []byte, limit int) {
	r := t.room(bud, len(v), limit)
	before := len(t.b)
	var n int64
	t.b, n = appendCompact(t.b, v, before+r)
	t.total += n
	if int64(len(t.b)-before) < n {
		t.full = true
	}
}

// appendRaw appends p, as far as limit and bud allow; false when some of
// it was not kept.
func (t *textBuf) appendRaw(bud *Budget, p []byte, limit int) bool {
	t.total += int64(len(p))
	r := t.room(bud, len(p), limit)
	if r < len(p) {
		t.b = append(t.b, p[:r]...)
		t.full = true
		return false
	}
	t.b = append(t.b, p...)
	return true
}

// drop gives back the buffer's memory and its charge, keeping nothing.
func (t *textBuf) drop(bud *Budget) {
	bud.give(t.charged)
	*t = textBuf{}
}

// reset empties the buffer for a new execution: it gives back the charge,
// keeps a small buffer for reuse and drops a large one.
func (t *textBuf) reset(bud *Budget) {
	bud.give(t.charged)
	b := t.b[:0]
	if cap(b) > keepCap {
		b = nil
	}
	*t = textBuf{b: b}
}

// clear empties the buffer, keeping its memory and charge.
func (t *textBuf) clear() {
	t.b, t.total, t.full = t.b[:0], 0, false
}
