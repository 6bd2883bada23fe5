package proxy

import (
	"bufio"
	"net"
	"net/http"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// responseWriter is the one wrapper around the client's ResponseWriter. It
// records status and bytes for the log and metrics, compresses when the
// proxy decided so from the upstream's headers, and keeps Flusher, Hijacker
// and Unwrap so SSE flushing, WebSocket upgrades and
// http.ResponseController still reach the connection.
type responseWriter struct {
	w           http.ResponseWriter
	status      int
	bytes       int64 // bytes written to the client (compressed size)
	wroteHeader bool
	compress    bool // set before WriteHeader by the proxy's response hook
	gz          *gzip.Writer
}

func (rw *responseWriter) reset(w http.ResponseWriter) {
	*rw = responseWriter{w: w}
}

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		rw.w.WriteHeader(code) // informational: the real answer follows
		return
	}
	if rw.wroteHeader {
		return
	}
	rw.wroteHeader = true
	rw.status = code
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
	if rw.gz != nil {
		return rw.gz.Write(b)
	}
	n, err := rw.w.Write(b)
	rw.bytes += int64(n)
	return n, err
}

// countingWriter lets the gzip writer write through while bytes are counted.
type countingWriter struct{ rw *responseWriter }

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.rw.w.Write(b)
	c.rw.bytes += int64(n)
	return n, err
}

func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// FlushError is preferred by http.ResponseController.
func (rw *responseWriter) FlushError() error {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.gz != nil {
		if err := rw.gz.Flush(); err != nil {
			return err
		}
	}
	if f, ok := rw.w.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	return http.NewResponseController(rw.w).Flush()
}

func (rw *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(rw.w).Hijack()
}

func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

// finish completes a compressed body; without it the gzip trailer is missing.
func (rw *responseWriter) finish() {
	if rw.gz != nil {
		_ = rw.gz.Close()
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
