package proxy

import (
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

// logAccess writes one JSON line per request: the fields of nginx's "main"
// log format (remote_addr, remote_user, request, status, body_bytes_sent,
// http_referer, http_user_agent, http_x_forwarded_for) plus what a gateway
// adds. time comes from the logger's own timestamp.
func (g *Gateway) logAccess(r *http.Request, st *reqState, d time.Duration) {
	upstream := ""
	if st.up != nil {
		upstream = st.up.Name
	}
	fields := make([]zap.Field, 0, 20)
	fields = append(fields,
		zap.String("remote_addr", st.peer.String()),
		zap.String("remote_user", remoteUser(r)),
		zap.String("request", r.Method+" "+r.RequestURI+" "+r.Proto),
		zap.Int("status", st.status),
		zap.Int64("body_bytes_sent", st.rw.bytes),
		zap.String("http_referer", r.Header.Get("Referer")),
		zap.String("http_user_agent", r.Header.Get("User-Agent")),
		zap.String("http_x_forwarded_for", r.Header.Get("X-Forwarded-For")),
		zap.Int64("request_length", st.bodyLen),
		zap.Float64("request_time", d.Seconds()),
		zap.String("upstream", upstream),
		zap.Int("upstream_status", st.upstreamStatus),
		zap.Int("attempts", st.attempts),
		zap.String("request_id", st.id),
		zap.String("route", st.info.Route),
	)
	if st.info.WorkflowID != "" {
		fields = append(fields, zap.String("workflow_id", st.info.WorkflowID))
	}
	if st.sse {
		fields = append(fields, zap.Bool("stream", true))
	}
	if st.errCode != "" {
		fields = append(fields, zap.String("error", st.errCode))
	}
	if st.cut != "" {
		fields = append(fields, zap.String("cut", st.cut))
	}
	g.access.Info("request", fields...)
}

// remoteUser is nginx's $remote_user: the Basic auth user name, or "-"-less
// empty when there is none. The password is never decoded into the log.
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
