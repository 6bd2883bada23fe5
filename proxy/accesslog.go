package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowgate/flowgate/internal/jsonx"
)

// logAccess writes one JSON line per request: the fields of nginx's "main"
// log format (remote_addr, remote_user, request, status, body_bytes_sent,
// http_referer, http_user_agent, http_x_forwarded_for) plus what a gateway
// adds. The line has the shape of the zap lines around it (level, time,
// logger, msg) but is appended by hand into a pooled buffer: through zap
// it cost 6-7% of the proxy's CPU and 11% of its allocated bytes
// (BENCHMARKS.md). One Write per line, so a shared writer keeps lines whole.
func (g *Gateway) logAccess(r *http.Request, st *reqState, end time.Time, d time.Duration) {
	bp := linePool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"level":"info","time":"`...)
	b = end.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","logger":"access","msg":"request","remote_addr":"`...)
	b = st.peer.AppendTo(b)
	b = append(b, `","remote_user":`...)
	b = jsonx.AppendString(b, remoteUser(r))
	b = append(b, `,"request":`...)
	b = appendJSONString3(b, r.Method, r.RequestURI, r.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(st.status), 10)
	b = append(b, `,"body_bytes_sent":`...)
	b = strconv.AppendInt(b, st.rw.bytes, 10)
	b = append(b, `,"http_referer":`...)
	b = jsonx.AppendString(b, r.Header.Get("Referer"))
	b = append(b, `,"http_user_agent":`...)
	b = jsonx.AppendString(b, r.Header.Get("User-Agent"))
	b = append(b, `,"http_x_forwarded_for":`...)
	b = jsonx.AppendString(b, r.Header.Get("X-Forwarded-For"))
	b = append(b, `,"request_length":`...)
	b = strconv.AppendInt(b, st.reqLen, 10)
	b = append(b, `,"request_time":`...)
	b = strconv.AppendFloat(b, d.Seconds(), 'f', 6, 64)
	b = append(b, `,"upstream":`...)
	if st.up != nil {
		b = jsonx.AppendString(b, st.up.Name)
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"upstream_status":`...)
	b = strconv.AppendInt(b, int64(st.upstreamStatus), 10)
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(st.attempts), 10)
	b = append(b, `,"request_id":`...)
	b = jsonx.AppendString(b, st.id)
	b = append(b, `,"route":`...)
	b = jsonx.AppendString(b, st.info.Route)
	if st.info.WorkflowID != "" {
		b = append(b, `,"workflow_id":`...)
		b = jsonx.AppendString(b, st.info.WorkflowID)
	}
	if st.sse {
		b = append(b, `,"stream":true`...)
	}
	if st.errCode != "" {
		b = append(b, `,"error":`...)
		b = jsonx.AppendString(b, st.errCode)
	}
	if st.cut != "" {
		b = append(b, `,"cut":`...)
		b = jsonx.AppendString(b, st.cut)
	}
	if st.cache.result != "" {
		b = append(b, `,"cache":`...)
		b = jsonx.AppendString(b, st.cache.result)
	}
	b = append(b, "}\n"...)
	_, _ = g.access.Write(b)
	putLine(bp, b)
}

// putLine gives a line's buffer back (the writer copied it), unless a huge
// line grew it: the pool keeps ordinary sizes only.
func putLine(bp *[]byte, b []byte) {
	if cap(b) <= 16<<10 {
		*bp = b
		linePool.Put(bp)
	}
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// remoteUser is nginx's $remote_user: the Basic auth user name, or empty.
// The password is never decoded into the log.
func remoteUser(r *http.Request) string {
	a := r.Header.Get("Authorization")
	if !strings.HasPrefix(a, "Basic ") {
		return ""
	}
	u, _, ok := r.BasicAuth()
	if !ok {
		return ""
	}
	return u
}

// appendJSONString3 appends the JSON string "a m c" without concatenating.
func appendJSONString3(b []byte, a, m, c string) []byte {
	b = append(b, '"')
	b = jsonx.AppendEscaped(b, a)
	b = append(b, ' ')
	b = jsonx.AppendEscaped(b, m)
	b = append(b, ' ')
	b = jsonx.AppendEscaped(b, c)
	return append(b, '"')
}
