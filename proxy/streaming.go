package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/metering"
	"github.com/flowgate/flowgate/sse"
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
// returned here makes respond abort the handler).
//
// An SSE answer is parsed as it passes (package sse): a Flowise stream is
// complete only when its last event is the end event, read as JSON, so key
// order and spacing do not matter and a token whose text is "[DONE]" is
// not an end.
type upstreamBody struct {
	rc io.ReadCloser
	st *reqState
	// parse: an uncompressed SSE answer, fed to parser. An upstream that
	// compressed its own stream is passed through unchecked.
	parse bool
	// flowiseSSE: an SSE answer of a Flowise flow route, which always ends
	// with an "end" event; an EOF before it is a cut.
	flowiseSSE bool
	parser     sse.Parser
	emit       func(*sse.Event)
	rec        *recorder       // the cache's copy of the answer; nil when not recorded
	meter      *metering.Meter // nil when the answer is not metered
	ended      bool            // the last event was Flowise's end
	ttft       time.Duration   // request start to the first token event; 0 before it
	pending    error           // error held back while its bytes are delivered
	done       bool
	eof        bool // the upstream's answer was read to its end
}

// maxCheckedEvent bounds what the stream check holds of one event. Flowise's
// end event is a few dozen bytes; a larger event is cut by the parser and so
// can never read as an end.
const maxCheckedEvent = 64 << 10

func (b *upstreamBody) init(rc io.ReadCloser, st *reqState, parse, flowiseSSE bool) {
	*b = upstreamBody{rc: rc, st: st, parse: parse, flowiseSSE: flowiseSSE && parse}
	if rec := st.cache.rec; rec != nil && !rec.failed {
		b.rec = rec
	}
	b.meter = st.meter
	if b.parse {
		b.parser.MaxEventBytes = maxCheckedEvent
		if b.rec != nil {
			// A recorded event is kept whole, up to the entry bound.
			b.parser.MaxEventBytes = max(maxCheckedEvent, b.rec.max)
		}
		if b.meter != nil {
			b.parser.MaxEventBytes = max(b.parser.MaxEventBytes, maxMeteredEvent)
		}
		if b.flowiseSSE {
			b.emit = b.onEvent
		}
	}
}

func (b *upstreamBody) onEvent(ev *sse.Event) {
	b.ended = false
	if !ev.Truncated {
		name, ok := flow.FlowiseEvent(ev.Data)
		b.ended = ok && string(name) == "end"
		if b.ttft == 0 && ok && string(name) == "token" {
			b.ttft = max(time.Since(b.st.start), 1)
		}
	}
	if b.meter != nil && !ev.Truncated {
		b.meter.Event(ev.Data)
	}
	if b.rec != nil {
		b.rec.event(ev.Data, ev.Truncated)
		if b.rec.failed {
			// Nothing more to keep: back to the stream check's bound.
			b.parser.MaxEventBytes = maxCheckedEvent
		}
	}
}

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
		if b.parse {
			b.parser.Feed(p[:n], b.emit)
		} else {
			if b.rec != nil {
				b.rec.write(p[:n])
			}
			if b.meter != nil {
				b.meter.Write(p[:n])
			}
		}
	}
	if err == nil {
		return n, nil
	}
	if err == io.EOF {
		if !b.flowiseSSE || b.ended {
			b.eof = true
			if b.rec != nil {
				b.st.g.cacheFinish(b.st) // store and land now, not after the client read it all
			}
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
	if !b.parse {
		return 0, err
	}
	frame := errorFrame(&b.parser, "flowgate: the upstream ended the stream early ("+reason+"); the answer is incomplete")
	if len(frame) > len(p) {
		return 0, err
	}
	return copy(p, frame), err
}

func (b *upstreamBody) Close() error { return b.rc.Close() }

// errorFrame builds `message:\ndata:{"event":"error","data":"..."}\n\n`,
// so that it is parsed as an event of its own wherever the upstream
// stopped: a CR it ended on would swallow our first LF as its CRLF, and a
// partial line or event is ended first (the client sees that partial event,
// then the error).
func errorFrame(p *sse.Parser, msg string) []byte {
	f := make([]byte, 0, 72+len(msg))
	if p.AfterCR() {
		f = append(f, '\n')
	}
	if !p.AtBoundary() {
		f = append(f, "\n\n"...)
	}
	f = append(f, "message:\ndata:{\"event\":\"error\",\"data\":"...)
	f = strconv.AppendQuote(f, msg)
	f = append(f, "}\n\n"...)
	return f
}
