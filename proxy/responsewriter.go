package proxy

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
)

// responseWriter is the one wrapper around the client's ResponseWriter. It
// records status and bytes for the log and metrics, compresses when the
// proxy decided so from the upstream's headers, and keeps Flusher, Hijacker
// and Unwrap so SSE flushing, WebSocket upgrades and
// http.ResponseController still reach the connection.
//
// It also bounds every write to the client (server.write_idle_timeout, like
// nginx's send_timeout): a client that stops reading is cut, which releases
// the upstream and its place in least-connections. The deadline is moved
// forward as writes go through, so a long stream to a reading client is
// never cut.
type responseWriter struct {
	w           http.ResponseWriter
	status      int
	bytes       int64 // bytes written to the client (compressed size)
	wroteHeader bool
	compress    bool // set before WriteHeader by the proxy's response hook
	http10      bool // the client speaks HTTP/1.0: no 1xx answers for it
	gz          *gzip.Writer

	dl        deadliner // nil when the writer cannot take a deadline
	writeIdle time.Duration
	rearm     time.Duration
	armedAt   time.Time // when the write deadline was last moved
	werr      error     // the first failed write to the client

	// hijacked receives the client connection when it is hijacked for an
	// upgrade (nil: not watched).
	hijacked *atomic.Pointer[net.Conn]
}

type deadliner interface{ SetWriteDeadline(time.Time) error }

// rearmEvery: the deadline moves at most this often (or a quarter of the
// timeout, if that is shorter), so a stream of small frames costs a clock
// read per write, not a timer update, and the deadline is always at least
// three quarters of the timeout ahead of a write.
const rearmEvery = time.Second

// reset starts a request. The write deadline is set at once, not at the
// first write: net/http itself writes before the handler does (100
// Continue), and a deadline left over from the connection's previous
// request may have passed.
func (rw *responseWriter) reset(w http.ResponseWriter, r *http.Request, writeIdle time.Duration) {
	*rw = responseWriter{w: w, http10: !r.ProtoAtLeast(1, 1), writeIdle: writeIdle, rearm: min(rearmEvery, writeIdle/4)}
	if writeIdle <= 0 {
		return
	}
	if d, ok := w.(deadliner); ok {
		rw.dl = d
		rw.armedAt = time.Now()
		_ = d.SetWriteDeadline(rw.armedAt.Add(writeIdle))
	}
}

// arm moves the write deadline forward before a write.
func (rw *responseWriter) arm() {
	if rw.dl == nil {
		return
	}
	if now := time.Now(); now.Sub(rw.armedAt) >= rw.rearm {
		rw.armedAt = now
		_ = rw.dl.SetWriteDeadline(now.Add(rw.writeIdle))
	}
}

// noWriteDeadline lifts the deadline from a connection about to be
// hijacked: it would outlive the request on the raw connection.
func (rw *responseWriter) noWriteDeadline() {
	if rw.dl != nil {
		_ = rw.dl.SetWriteDeadline(time.Time{})
		rw.dl = nil
	}
}

// stalled reports whether the client was cut for not reading.
func (rw *responseWriter) stalled() bool {
	return rw.werr != nil && errors.Is(rw.werr, os.ErrDeadlineExceeded)
}

func (rw *responseWriter) noteErr(err error) {
	if err != nil && rw.werr == nil {
		rw.werr = err
	}
}

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: the real answer follows. RFC 9110 (15.2) forbids
		// sending one to an HTTP/1.0 client.
		if !rw.http10 {
			rw.arm()
			rw.w.WriteHeader(code)
		}
		return
	}
	if rw.wroteHeader {
		return
	}
	rw.wroteHeader = true
	rw.status = code
	// A bodiless answer (204, 304, HEAD) is written by net/http after the
	// handler, under this deadline, with no Write to move it.
	rw.arm()
	if rw.compress {
		rw.gz = gzipPool.Get().(*gzip.Writer)
		rw.gz.Reset(countingWriter{rw})
	}
	rw.w.WriteHeader(code)
}

func (rw *responseWriter) Write(b []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	rw.arm()
	if rw.gz != nil {
		return rw.gz.Write(b)
	}
	n, err := rw.w.Write(b)
	rw.bytes += int64(n)
	rw.noteErr(err)
	return n, err
}

// countingWriter lets the gzip writer write through while bytes are counted.
type countingWriter struct{ rw *responseWriter }

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.rw.w.Write(b)
	c.rw.bytes += int64(n)
	c.rw.noteErr(err)
	return n, err
}

func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// FlushError is preferred by http.ResponseController.
func (rw *responseWriter) FlushError() error {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	rw.arm()
	if rw.gz != nil {
		if err := rw.gz.Flush(); err != nil {
			return err
		}
	}
	var err error
	if f, ok := rw.w.(interface{ FlushError() error }); ok {
		err = f.FlushError()
	} else {
		err = http.NewResponseController(rw.w).Flush()
	}
	rw.noteErr(err)
	return err
}

func (rw *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(rw.w).Hijack()
	if err == nil && rw.hijacked != nil {
		rw.hijacked.Store(&c)
	}
	return c, brw, err
}

func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

// finish completes a compressed body; without it the gzip trailer is
// missing. An aborted answer gets none: a cut gzip stream must not end
// well-formed (over HTTP/1.0 nothing else would tell the cut).
func (rw *responseWriter) finish(complete bool) {
	if rw.gz != nil {
		if complete {
			_ = rw.gz.Close()
		}
		gzipPool.Put(rw.gz)
		rw.gz = nil
	}
}

// Level 5 of klauspost's gzip is several times faster than the standard
// library's default while still compressing JS bundles and JSON well.
var gzipPool = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, 5)
	return w
}}
