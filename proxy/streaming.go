package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// isEventStream reports whether a response is SSE. Flowise decides to
// stream per flow, whatever the client asked, so only the response's
// Content-Type tells. A prefix test: parsing the media type of every JSON
// answer cost two allocations a request.
func isEventStream(h http.Header) bool {
	const sse = "text/event-stream"
	ct := h.Get("Content-Type")
	if len(ct) < len(sse) || !strings.EqualFold(ct[:len(sse)], sse) {
		return false
	}
	return len(ct) == len(sse) || ct[len(sse)] == ';' || ct[len(sse)] == ' '
}

// upstreamBody wraps an upstream response body on its way to the client. It
// never holds bytes back. It re-arms the idle timer on every read, and when
// the upstream cuts a response short it makes sure the client cannot take
// it for complete: an SSE client gets a Flowise error frame, and every
// client gets a connection closed without the final chunk (the error
// returned here makes ReverseProxy abort the handler).
type upstreamBody struct {
	rc io.ReadCloser
	st *reqState
	// flowiseSSE: an SSE answer of a Flowise flow route, which always ends
	// with an "end" event; an EOF before it is a cut.
	flowiseSSE bool
	sse        bool
	tail       []byte // last bytes seen, to find the end event
	tailBuf    [48]byte
	pending    error // error held back while its bytes are delivered
	done       bool
	eof        bool // the upstream's answer was read to its end
}

var endEvent = []byte(`"data":"[DONE]"}`)

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.pending != nil {
		return b.fail(p, b.pending)
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		b.st.rearm()
		if b.flowiseSSE {
			b.keepTail(p[:n])
		}
	}
	if err == nil {
		return n, nil
	}
	if err == io.EOF {
		if !b.flowiseSSE || bytes.HasSuffix(bytes.TrimRight(b.tail, "\r\n"), endEvent) {
			b.eof = true
			return n, io.EOF
		}
		err = errStreamIncomplete
	}
	if n > 0 {
		// Deliver what arrived before saying anything about the failure.
		b.pending = err
		return n, nil
	}
	return b.fail(p, err)
}

// fail ends the response. It reports the cut (metrics, passive health) and,
// for SSE, hands over an error frame in Flowise's format.
func (b *upstreamBody) fail(p []byte, err error) (int, error) {
	b.done = true
	st := b.st
	clientGone := st.clientCtx.Err() != nil
	reason := "upstream_error"
	switch {
	case clientGone:
		reason = "client_closed"
	case errors.Is(err, errStreamIncomplete):
		reason = "stream_incomplete"
	case context.Cause(st.attemptCtx) == errIdleTimeout:
		reason = "upstream_idle"
	default:
		st.g.passiveFailure(st.up, "body_read")
	}
	st.cut = reason
	if clientGone {
		return 0, err
	}
	st.g.metrics.ResponseCut(reason)
	if !b.sse {
		return 0, err
	}
	frame := errorFrame(b.tail, "flowgate: the upstream ended the stream early ("+reason+"); the answer is incomplete")
	if len(frame) > len(p) {
		return 0, err
	}
	return copy(p, frame), err
}

func (b *upstreamBody) keepTail(p []byte) {
	if len(p) >= len(b.tailBuf) {
		b.tail = append(b.tailBuf[:0], p[len(p)-len(b.tailBuf):]...)
		return
	}
	keep := len(b.tailBuf) - len(p)
	if len(b.tail) > keep {
		b.tail = append(b.tailBuf[:0], b.tail[len(b.tail)-keep:]...)
	}
	b.tail = append(b.tail, p...)
}

func (b *upstreamBody) Close() error { return b.rc.Close() }

// errorFrame builds `message:\ndata:{"event":"error","data":"..."}\n\n`,
// preceded by a blank line when the upstream stopped in the middle of a
// frame, so the error is parsed as a frame of its own.
func errorFrame(tail []byte, msg string) []byte {
	f := make([]byte, 0, 64+len(msg))
	if len(tail) > 0 && !bytes.HasSuffix(tail, []byte("\n\n")) {
		f = append(f, "\n\n"...)
	}
	f = append(f, "message:\ndata:{\"event\":\"error\",\"data\":"...)
	f = strconv.AppendQuote(f, msg)
	f = append(f, "}\n\n"...)
	return f
}
