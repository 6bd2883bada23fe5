package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"syscall"
)

// Causes given to an attempt's context when the gateway itself ends it; the
// error classification reads them back with context.Cause.
var (
	errFirstByteTimeout = errors.New("upstream sent no response headers in time")
	errIdleTimeout      = errors.New("upstream sent nothing for the idle timeout")
	errStreamIncomplete = errors.New("upstream ended the stream without its end event")
)

// failure is what the gateway concluded from an attempt's error: whether to
// retry it elsewhere, whether it counts against the upstream's health, and
// what the client is told if it is final.
type failure struct {
	status   int
	code     string // machine-readable, in the JSON error body and metrics
	message  string
	retry    bool // nothing reached the upstream: safe to send elsewhere
	penalize bool // counts as a passive health failure
}

// classify maps a transport error to a failure. clientCtx is the inbound
// request's context: when the client left, nobody is at fault upstream.
func classify(err error, clientCtx, attemptCtx context.Context) failure {
	if clientCtx.Err() != nil {
		return failure{status: StatusClientClosed, code: "client_closed", message: "client closed the request"}
	}
	switch context.Cause(attemptCtx) {
	case errFirstByteTimeout:
		// Not a health failure: Flowise hangs this way when one flow fails
		// early, while the server itself is fine.
		return failure{status: http.StatusGatewayTimeout, code: "upstream_timeout", message: "upstream sent no response headers in time"}
	case errIdleTimeout:
		return failure{status: http.StatusGatewayTimeout, code: "upstream_idle", message: "upstream stopped sending"}
	}
	var ue *upstreamError
	if !errors.As(err, &ue) {
		// The gateway refused the client's request itself (an invalid
		// Upgrade, say): nothing reached an upstream, and no client may
		// push upstreams out of rotation with such requests.
		return failure{status: http.StatusBadRequest, code: "bad_request", message: "the request cannot be forwarded"}
	}
	if errors.Is(err, errBadStatus) || errors.Is(err, errHeaderTooLarge) {
		return failure{status: http.StatusBadGateway, code: "upstream_protocol_error", message: "upstream sent an invalid answer", penalize: true}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// Out of descriptors or ports is flowgate's own trouble.
		local := errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.EADDRNOTAVAIL)
		return failure{status: http.StatusBadGateway, code: "upstream_unreachable", message: "could not connect to an upstream", retry: true, penalize: !local}
	}
	// errClosedIdle lands here too: for a POST a keep-alive race and a
	// crash with the request in hand look the same, and the crash is the
	// one that must count (idempotent requests were already re-sent).
	return failure{status: http.StatusBadGateway, code: "upstream_error", message: "upstream connection failed", penalize: true}
}

// StatusClientClosed is logged (never sent) when the client went away
// before the answer was complete, as nginx's 499.
const StatusClientClosed = 499

// abortClientGone ends a request whose client left: logged as 499, and the
// connection dropped without an answer. Returning would make net/http
// send an empty 200 to a client that half-closed and still reads, for a
// request that never ran.
func abortClientGone(st *reqState) {
	st.status = StatusClientClosed
	panic(http.ErrAbortHandler)
}

// writeError answers with Flowise's error shape ({statusCode, success,
// message}) so existing Flowise clients show the message, plus a stable code
// and the request id for support.
func writeError(w http.ResponseWriter, st *reqState, status int, code, message string) {
	if status == StatusClientClosed {
		abortClientGone(st)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Request-Id", st.id)
	h.Set("Cache-Control", "no-store")
	st.g.securityHeaders(h, h)
	body := make([]byte, 0, 160)
	body = append(body, `{"statusCode":`...)
	body = strconv.AppendInt(body, int64(status), 10)
	body = append(body, `,"success":false,"code":`...)
	body = strconv.AppendQuote(body, code)
	body = append(body, `,"message":`...)
	body = strconv.AppendQuote(body, message)
	body = append(body, `,"requestId":`...)
	body = strconv.AppendQuote(body, st.id)
	body = append(body, "}\n"...)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	st.errCode = code
}
