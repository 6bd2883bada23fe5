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
// streams when it forwarded a body it was still reading.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody keeps one huge upload from pinning its buffer in the pool.
const maxPooledBody = 1 << 20

type bodyError struct {
	status int
	code   string
	msg    string
}

// readBody reads r.Body into a pooled buffer, at most limit bytes. The
// caller returns the buffer with putBody once no attempt needs it.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) (*bytes.Buffer, *bodyError) {
	if r.ContentLength > limit {
		return nil, &bodyError{http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the gateway's limit"}
	}
	rc := http.NewResponseController(w)
	if timeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(timeout))
		// Cleared again so the deadline cannot fire on the connection
		// while a long stream is being answered.
		defer rc.SetReadDeadline(time.Time{})
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err == nil && int64(buf.Len()) > limit {
		putBody(buf)
		return nil, &bodyError{http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the gateway's limit"}
	}
	if err != nil {
		putBody(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, &bodyError{http.StatusRequestTimeout, "body_timeout", "request body was not received in time"}
		}
		if r.Context().Err() != nil {
			return nil, &bodyError{StatusClientClosed, "client_closed", "client closed the request"}
		}
		return nil, &bodyError{http.StatusBadRequest, "body_unreadable", "request body could not be read"}
	}
	return buf, nil
}

func putBody(b *bytes.Buffer) {
	if b != nil && b.Cap() <= maxPooledBody {
		bodyPool.Put(b)
	}
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
