package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// Request bodies are read whole before anything is sent upstream: a retry
// on another upstream needs them again, and Caddy, measured here, truncated
// streams when it forwarded a body it was still reading. Up to
// max_body_in_memory they stay in a pooled buffer; a larger body (an
// upload) continues in an unlinked temp file, so memory stays bounded
// whatever clients send.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody keeps one large body from pinning its buffer in the pool.
const maxPooledBody = 1 << 20

type requestBody struct {
	mem  *bytes.Buffer // the whole body, or its head when file is set
	file *os.File      // the whole body when it outgrew memory
	n    int64
}

// inMemory returns the body's bytes, or nil when it was spilled to disk.
func (b *requestBody) inMemory() []byte {
	if b.file != nil {
		return nil
	}
	return b.mem.Bytes()
}

// reader returns a fresh reader over the whole body, for each attempt.
func (b *requestBody) reader() io.ReadCloser {
	if b.file != nil {
		return io.NopCloser(io.NewSectionReader(b.file, 0, b.n))
	}
	return io.NopCloser(bytes.NewReader(b.mem.Bytes()))
}

func (b *requestBody) release() {
	if b.file != nil {
		b.file.Close()
	}
	if b.mem != nil && b.mem.Cap() <= maxPooledBody {
		bodyPool.Put(b.mem)
	}
	*b = requestBody{}
}

type bodyError struct {
	status int
	code   string
	msg    string
}

var errBodyTooLarge = &bodyError{http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the gateway's limit"}

// readBody reads r.Body into b, at most limit bytes, memLimit of them in
// memory. The caller releases b once no attempt needs it, also on error.
func readBody(w http.ResponseWriter, r *http.Request, b *requestBody, limit, memLimit int64, timeout time.Duration) *bodyError {
	if r.ContentLength > limit {
		return errBodyTooLarge
	}
	if timeout > 0 {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(timeout))
		// Cleared again so the deadline cannot fire on the connection
		// while a long stream is being answered.
		defer rc.SetReadDeadline(time.Time{})
	}
	b.mem = bodyPool.Get().(*bytes.Buffer)
	b.mem.Reset()
	if r.ContentLength > 0 {
		// Content-Length is the client's word: growing to it before the
		// bytes arrive would let headers alone reserve max_body_in_memory.
		b.mem.Grow(int(min(r.ContentLength, memLimit, 64<<10)))
	}
	_, err := b.mem.ReadFrom(io.LimitReader(r.Body, min(limit, memLimit)+1))
	b.n = int64(b.mem.Len())
	if err == nil && b.n > memLimit && b.n <= limit {
		err = b.spill(r.Body, limit)
	}
	if err == nil && b.n > limit {
		err = errTooLarge
	}
	if err != nil {
		return bodyReadError(r, err)
	}
	return nil
}

var errTooLarge = errors.New("body too large")

// spill moves the body to an unlinked temp file and reads the rest into it.
func (b *requestBody) spill(rest io.Reader, limit int64) error {
	f, err := os.CreateTemp("", "flowgate-body-*")
	if err != nil {
		return err
	}
	os.Remove(f.Name()) // gone from the directory; the space is freed on Close
	b.file = f
	if _, err := f.Write(b.mem.Bytes()); err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(rest, limit+1-b.n))
	b.n += n
	// The file holds every byte now; the in-memory head is not needed for
	// the rest of a possibly long upstream run.
	if b.mem.Cap() <= maxPooledBody {
		bodyPool.Put(b.mem)
	}
	b.mem = nil
	return err
}

func bodyReadError(r *http.Request, err error) *bodyError {
	switch {
	case errors.Is(err, errTooLarge):
		return errBodyTooLarge
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

var streamingKey = []byte(`"streaming"`)

// asksToStream reports whether a flow request body sets "streaming" to true
// or "true", as Flowise accepts both. Most bodies never mention the key, so
// they are not parsed at all.
func asksToStream(body []byte) bool {
	if !bytes.Contains(body, streamingKey) {
		return false
	}
	var v struct {
		Streaming any `json:"streaming"`
	}
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	switch s := v.Streaming.(type) {
	case bool:
		return s
	case string:
		return s == "true"
	}
	return false
}
