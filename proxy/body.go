package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Request bodies are read whole before anything is sent upstream: a retry
// on another upstream needs them again, and Caddy, measured here, truncated
// streams when it forwarded a body it was still reading.
//
// Memory is bounded twice. A body larger than max_body_in_memory goes to an
// unlinked temp file. And all bodies in memory together stay within
// body_memory_budget: a body that does not fit goes to a temp file too, so
// no number of concurrent clients can make bodies exhaust memory. Buffers
// are sized exactly when Content-Length is known (bytes.Buffer doubles: an
// 8 MiB body used to sit in 16 MiB) and grow in fixed chunks otherwise, and
// the budget counts what is allocated, not what was asked for.

// bodyBudget is the process-wide account of request-body memory.
type bodyBudget struct {
	used  atomic.Int64
	limit int64
}

func (b *bodyBudget) take(n int64) bool {
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *bodyBudget) give(n int64) { b.used.Add(-n) }

// Size classes of pooled body buffers. Typical flow requests are under a
// KiB; larger bodies up to the last class are common enough (history,
// uploads as base64) to pool; past it buffers are allocated exactly.
var bodyClasses = [...]int{1 << 10, 4 << 10, 16 << 10, 64 << 10}

var bodyPools [len(bodyClasses)]sync.Pool

// chunkSize is the step by which a body of unknown length grows in memory.
const chunkSize = 64 << 10

// bufClass returns the pool class of a buffer for n bytes (-1: not pooled,
// allocated exactly) and the capacity it will have.
func bufClass(n int) (class, capacity int) {
	for c, size := range bodyClasses {
		if n <= size {
			return c, size
		}
	}
	return -1, n
}

// getBuf returns a buffer of length n from class.
func getBuf(n, class int) []byte {
	if class < 0 {
		return make([]byte, n)
	}
	if p, ok := bodyPools[class].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, bodyClasses[class])
}

func putBuf(b []byte, class int) {
	if class >= 0 {
		b = b[:cap(b)]
		bodyPools[class].Put(&b)
	}
}

type requestBody struct {
	buf    []byte   // the whole body when in memory in one piece
	chunks [][]byte // or in fixed chunks (a body over one chunk)
	class  int      // buf's pool class, -1 when not pooled
	file   *os.File // the whole body when it went to disk
	n      int64
	held   int64 // budget taken for buf
	budget *bodyBudget

	disk     *bodyBudget // body_disk_budget, once spilled
	diskHeld int64       // disk budget taken
	diskUsed int64       // bytes written to file
}

// inMemory returns the body's bytes in one piece, or nil when it went to
// disk. A body held in chunks is joined on first use (only the cache key
// and a body that mentions "streaming" need that), if the budget can hold
// the copy; else nil, as for a body on disk.
func (b *requestBody) inMemory() []byte {
	if b.file != nil {
		return nil
	}
	if b.chunks != nil {
		if !b.budget.take(b.n) {
			return nil
		}
		buf := make([]byte, 0, b.n)
		for _, c := range b.chunks {
			buf = append(buf, c...)
		}
		b.freeChunks()
		b.buf, b.class, b.held = buf, -1, b.held+b.n
	}
	return b.buf
}

// mentions reports whether the body contains key, without joining chunks.
func (b *requestBody) mentions(key []byte) bool {
	if b.chunks == nil {
		return bytes.Contains(b.buf, key)
	}
	var seam []byte
	for _, c := range b.chunks {
		if bytes.Contains(c, key) {
			return true
		}
		// A key split across two chunks: the seam holds the end of one
		// and the start of the next.
		if seam != nil {
			seam = append(seam, c[:min(len(c), len(key)-1)]...)
			if bytes.Contains(seam, key) {
				return true
			}
		}
		seam = append(seam[:0], c[max(0, len(c)-len(key)+1):]...)
	}
	return false
}

func (b *requestBody) freeChunks() {
	for _, c := range b.chunks {
		putBuf(c, len(bodyClasses)-1)
		b.budget.give(chunkSize)
		b.held -= chunkSize
	}
	b.chunks = nil
}

// reader returns a fresh reader over the whole body, for each attempt.
func (b *requestBody) reader() io.ReadCloser {
	switch {
	case b.file != nil:
		return io.NopCloser(io.NewSectionReader(b.file, 0, b.n))
	case b.chunks != nil:
		return &chunkReader{chunks: b.chunks}
	}
	return io.NopCloser(bytes.NewReader(b.buf))
}

// chunkReader reads a body held in chunks.
type chunkReader struct {
	chunks [][]byte
	off    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && r.off == len(r.chunks[0]) {
		r.chunks, r.off = r.chunks[1:], 0
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0][r.off:])
	r.off += n
	return n, nil
}

func (r *chunkReader) Close() error { return nil }

// release frees the body's memory or file. It is called once no attempt
// can need the body again: when the upstream answered, or at the end.
func (b *requestBody) release() {
	if b.file != nil {
		b.file.Close()
	}
	if b.buf != nil {
		putBuf(b.buf, b.class)
	}
	if b.chunks != nil {
		b.freeChunks()
	}
	if b.held > 0 {
		b.budget.give(b.held)
	}
	if b.diskHeld > 0 {
		b.disk.give(b.diskHeld)
	}
	*b = requestBody{}
}

type bodyError struct {
	status int
	code   string
	msg    string
}

var (
	errBodyTooLarge = &bodyError{http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the gateway's limit"}
	errTooLarge     = errors.New("body too large")
)

// bodyLimits are the gateway's bounds on request bodies.
type bodyLimits struct {
	max     int64         // proxy.max_body_bytes
	inMem   int64         // proxy.max_body_in_memory
	timeout time.Duration // server.body_read_timeout
	budget  *bodyBudget   // proxy.body_memory_budget
	disk    *bodyBudget   // proxy.body_disk_budget
}

// readBody reads r.Body into b. The caller releases b once no attempt needs
// it, also on error. On error nothing more is read from the connection,
// and the error answer closes it.
func readBody(w http.ResponseWriter, r *http.Request, b *requestBody, l *bodyLimits) *bodyError {
	rc := http.NewResponseController(w)
	if r.ContentLength > l.max {
		lingerClose(w, rc)
		return errBodyTooLarge
	}
	b.budget = l.budget
	b.class = -1
	if l.timeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(l.timeout))
	}
	var err error
	if r.ContentLength >= 0 {
		err = b.readKnown(r.Body, r.ContentLength, l)
	} else {
		err = b.readChunked(r.Body, l, -1)
	}
	if err != nil {
		be := bodyReadError(r, err)
		if be == errBodyTooLarge || errors.Is(err, errSpoolFull) {
			lingerClose(w, rc)
		} else {
			// net/http reads on after the handler to find the body's
			// end (up to 256 KiB), waiting on a client that may never
			// send it; a deadline in the past makes that fail at once.
			_ = rc.SetReadDeadline(aLongTimeAgo)
		}
		return be
	}
	if l.timeout > 0 {
		// Cleared so the deadline cannot fire on the connection while a
		// long stream is being answered.
		_ = rc.SetReadDeadline(time.Time{})
	}
	return nil
}

// readKnown reads a body of declared length n: into one exact buffer when
// it fits the in-memory limit and the budget, else to disk. Content-Length
// is the client's word, so the budget is taken as bytes arrive, a step at a
// time: headers that declare 8 MiB and send nothing hold one step, not the
// budget. A body the budget can no longer hold continues on disk. net/http
// stops the body at n bytes, and a short one fails the read.
func (b *requestBody) readKnown(body io.Reader, n int64, l *bodyLimits) error {
	if n > l.inMem {
		return b.spill(nil, body, n, l)
	}
	if n > chunkSize {
		// In chunks, each taken from the budget as it fills: a body
		// that outgrows the budget part-way leaves no half-filled large
		// buffer behind, only pooled chunks.
		return b.readChunked(body, l, n)
	}
	class, capacity := bufClass(int(n))
	// A pooled buffer's slack beyond n is accounted with the first step.
	extra := int64(capacity) - n
	if !l.budget.take(extra + min(n, budgetStep)) {
		return b.spill(nil, body, n, l)
	}
	b.held = extra + min(n, budgetStep)
	b.buf, b.class = getBuf(int(n), class), class
	var got int64
	for got < n {
		if reserved := b.held - extra; got == reserved {
			step := min(n-got, budgetStep)
			if !l.budget.take(step) {
				// The budget ran out part-way: what arrived and the
				// rest go to disk.
				head := b.buf[:got]
				err := b.spill([][]byte{head}, body, n, l)
				putBuf(b.buf, b.class)
				l.budget.give(b.held)
				b.buf, b.held = nil, 0
				return err
			}
			b.held += step
		}
		end := min(n, b.held-extra)
		m, err := io.ReadFull(body, b.buf[got:end])
		got += int64(m)
		if err != nil {
			return err
		}
	}
	b.n = n
	return nil
}

// budgetStep is how much memory budget a body takes ahead of its bytes.
const budgetStep = 64 << 10

// readChunked reads a body in fixed chunks, moving to disk when it
// outgrows the in-memory limit or the budget. size is the declared length,
// or -1.
func (b *requestBody) readChunked(body io.Reader, l *bodyLimits, size int64) error {
	var chunks [][]byte
	free := func() {
		for _, c := range chunks {
			l.budget.give(int64(cap(c)))
			putBuf(c, len(bodyClasses)-1)
		}
		chunks = nil
	}
	var total int64
	for {
		if total >= l.inMem || !l.budget.take(chunkSize) {
			err := b.spill(chunks, body, size, l)
			free()
			return err
		}
		c := getBuf(chunkSize, len(bodyClasses)-1)
		chunks = append(chunks, c)
		m, eof, err := fill(body, c)
		chunks[len(chunks)-1] = c[:m]
		total += int64(m)
		if total > l.max {
			free()
			return errTooLarge
		}
		if err != nil {
			free()
			return err
		}
		if eof || total == size {
			break
		}
	}
	b.n = total
	if len(chunks) == 1 {
		// Keep the one chunk as the body: no copy.
		b.buf, b.class, b.held = chunks[0], len(bodyClasses)-1, chunkSize
		return nil
	}
	// Kept in chunks (the budget holds them already), joined only if a
	// later step needs the body in one piece.
	b.chunks, b.held = chunks, int64(len(chunks))*chunkSize
	return nil
}

// fill reads into p until it is full or the body ends. Only a clean end
// (io.EOF) ends a body: a chunked body cut mid-way fails with
// io.ErrUnexpectedEOF, which must not pass for its end.
func fill(r io.Reader, p []byte) (n int, eof bool, err error) {
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// spill writes head, then the rest of the body, to an unlinked temp file.
// size is the declared length, or -1. Disk is bounded too: all spilled
// bodies together stay within body_disk_budget, taken ahead of the bytes
// (all of a declared length at once, so a body that cannot fit is refused
// before it is read).
func (b *requestBody) spill(head [][]byte, rest io.Reader, size int64, l *bodyLimits) error {
	b.disk = l.disk
	if size >= 0 {
		if !l.disk.take(size) {
			return errSpoolFull
		}
		b.diskHeld = size
	}
	f, err := os.CreateTemp("", "flowgate-body-*")
	if err != nil {
		return err
	}
	os.Remove(f.Name()) // gone from the directory; the space is freed on Close
	b.file = f
	w := &spoolWriter{f: f, b: b, step: size < 0}
	var n int64
	for _, c := range head {
		if _, err := w.Write(c); err != nil {
			return err
		}
		n += int64(len(c))
	}
	m, err := io.Copy(w, io.LimitReader(rest, l.max+1-n))
	b.n = n + m
	if err == nil && b.n > l.max {
		err = errTooLarge
	}
	return err
}

// spoolWriter writes a spilled body, taking disk budget as it grows when
// the body's length was not declared.
type spoolWriter struct {
	f    *os.File
	b    *requestBody
	step bool
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	if w.step {
		for w.b.diskHeld < w.b.diskUsed+int64(len(p)) {
			if !w.b.disk.take(budgetStep) {
				return 0, errSpoolFull
			}
			w.b.diskHeld += budgetStep
		}
	}
	n, err := w.f.Write(p)
	w.b.diskUsed += int64(n)
	return n, err
}

var errSpoolFull = errors.New("body spool budget exhausted")

func bodyReadError(r *http.Request, err error) *bodyError {
	switch {
	case errors.Is(err, errTooLarge):
		return errBodyTooLarge
	case errors.Is(err, errSpoolFull):
		// Too many large bodies at once: a moment later there is room.
		return &bodyError{http.StatusServiceUnavailable, "body_spool_full", "too many large request bodies are waiting; retry shortly"}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &bodyError{http.StatusRequestTimeout, "body_timeout", "request body was not received in time"}
	case r.Context().Err() != nil:
		return &bodyError{StatusClientClosed, "client_closed", "client closed the request"}
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		// The temp file could not be written: our fault, not the client's.
		return &bodyError{http.StatusInsufficientStorage, "body_spool_failed", "request body could not be buffered"}
	}
	return &bodyError{http.StatusBadRequest, "body_unreadable", "request body could not be read"}
}

// lingerRead bounds what net/http still reads of a refused body while the
// answer goes out.
const lingerRead = time.Second

// lingerClose makes net/http end the connection after the answer as it does
// when a body passes http.MaxBytesReader's limit: it sends the answer and a
// FIN, and waits a moment before closing. A client still sending a body
// that is too large then reads the 413 instead of a connection reset. The
// one byte read here is not the client's: it only trips that limit.
func lingerClose(w http.ResponseWriter, rc *http.ResponseController) {
	_, _ = http.MaxBytesReader(w, oneByte{}, 0).Read(make([]byte, 1))
	_ = rc.SetReadDeadline(time.Now().Add(lingerRead))
}

type oneByte struct{}

func (oneByte) Read(p []byte) (int, error) { return copy(p, "x"), nil }
func (oneByte) Close() error               { return nil }

var streamingKey = []byte(`"streaming"`)

// asksToStream reports whether a flow request body sets "streaming" to true
// or "true", as Flowise accepts both. Most bodies never mention the key, so
// they are not parsed at all.
func (b *requestBody) asksToStream() bool {
	return (b.mentions(streamingKey) || b.n <= maxEscapedScan && b.mentions(escapeMark)) && asksToStream(b.inMemory())
}

var escapeMark = []byte(`\u`)

// maxEscapedScan bounds the bodies parsed only because they hold an escape
// (an escaped "streaming" key is contrived; many clients escape non-ASCII
// text): a large body is parsed only when it names the key outright. A
// stream stored under the JSON variant is refused anyway (caching.go).
const maxEscapedScan = 64 << 10

// asksToStream reads "streaming" as Flowise's JSON.parse does: the key
// matched exactly after unescaping (encoding/json's struct decoding would
// also take "Streaming"), the last of duplicates winning. The gateway and
// Flowise must agree: the answer's kind is cached under what the gateway
// read, and a disagreement would let one caller store a stream where
// others expect JSON.
func asksToStream(body []byte) bool {
	if !bytes.Contains(body, streamingKey) && (len(body) > maxEscapedScan || !bytes.Contains(body, escapeMark)) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	var streaming bool
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return false
		}
		if k != "streaming" {
			continue
		}
		var v any
		_ = json.Unmarshal(raw, &v)
		streaming = v == true || v == "true"
	}
	return streaming
}
