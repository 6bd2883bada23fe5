package proxy

// forward.go is one attempt on an upstream, from the outbound request to the
// answer's last byte. It is what httputil.ReverseProxy did for the gateway,
// without its per-attempt request and header clones, client trace and
// media-type parsing, which were a fifth of flowgate's CPU above the floor
// (BENCHMARKS.md, issue 12). The HTTP it speaks is the same: hop-by-hop
// fields dropped both ways, client forwarding headers replaced, unparsable
// queries re-encoded, 1xx answers, trailers and upgrades passed on, and a
// body that fails part-way aborts the client's response.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
)

// hopHeaders belong to one connection (RFC 9110, 7.6.1) and are never
// forwarded, as ReverseProxy's list.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection", // non-standard, still sent by libcurl
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopByHop drops the hop-by-hop fields and those the message's
// Connection header names, except the ones in keep (nil: none).
func removeHopByHop(h http.Header, keep map[string]bool) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				if k := textproto.CanonicalMIMEHeaderKey(sf); !keep[k] {
					delete(h, k)
				}
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// upgradeType is the protocol a message asks to switch to, "" for none.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// emptyUA keeps Request.Write from sending Go's default User-Agent for a
// client that sent none. Shared: len == cap, and never appended to.
var emptyUA = []string{""}

// outHeader builds the header every attempt of the request sends. The
// client's value slices are shared, not copied: they are only read, and
// every field the gateway sets gets a slice of its own. ServeHTTP has
// refused an Upgrade that is not printable.
func (g *Gateway) outHeader(r *http.Request, st *reqState) http.Header {
	in := r.Header
	upType := upgradeType(in)
	h := make(http.Header, len(in)+8) // room for the forwarding fields
	maps.Copy(h, in)
	// A field the client names in Connection is dropped (RFC 9110, 7.6.1),
	// unless the gateway already decided on it: a cache key made with an
	// Origin or Content-Type the upstream never saw would store an answer
	// (without CORS headers, say) that every caller then gets.
	removeHopByHop(h, g.decidesOn)
	// Tells upstreams that care that trailers get through, when the
	// client said it takes them.
	if httpguts.HeaderValuesContainsToken(in["Te"], "trailers") {
		h["Te"] = []string{"trailers"}
	}
	if upType != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{upType}
	}
	// The client's forwarding fields are replaced by setForwarded.
	delete(h, "Forwarded")
	delete(h, "X-Forwarded-For")
	delete(h, "X-Forwarded-Host")
	delete(h, "X-Forwarded-Proto")
	// The body is already complete: waiting for a 100 from the upstream
	// would only add a round trip.
	delete(h, "Expect")
	if st.info.Runs {
		// A flow's answer is read on its way (stream check, cache,
		// metering), so it must come plain; the client still gets gzip
		// from the gateway when it asked.
		delete(h, "Accept-Encoding")
	}
	g.setForwarded(r, h, st)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = emptyUA
	}
	return h
}

// outURL points the request at up: its scheme and host, its path as a
// prefix when it has one, and its query before the client's.
func outURL(dst *url.URL, in *url.URL, up *url.URL) {
	*dst = *in
	dst.Scheme, dst.Host, dst.User = up.Scheme, up.Host, nil
	dst.RawQuery = cleanQuery(in.RawQuery)
	if up.Path != "" && up.Path != "/" {
		dst.Path, dst.RawPath = joinURLPath(up, in)
	}
	switch {
	case up.RawQuery == "":
	case dst.RawQuery == "":
		dst.RawQuery = up.RawQuery
	default:
		dst.RawQuery = up.RawQuery + "&" + dst.RawQuery
	}
}

// joinURLPath puts b's path under a's, with one slash between them, and
// keeps an escaped form when either had one.
func joinURLPath(a, b *url.URL) (path, rawpath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return joinPath(a.Path, b.Path), ""
	}
	ap, bp := a.EscapedPath(), b.EscapedPath()
	switch as, bs := strings.HasSuffix(ap, "/"), strings.HasPrefix(bp, "/"); {
	case as && bs:
		return a.Path + b.Path[1:], ap + bp[1:]
	case !as && !bs:
		return a.Path + "/" + b.Path, ap + "/" + bp
	}
	return a.Path + b.Path, ap + bp
}

// maxQueryParams is net/url's default bound on a query's parameters.
const maxQueryParams = 10000

// cleanQuery re-encodes a query that upstreams could split differently
// from the gateway (a ';' separator, a broken %-escape, too many
// parameters): parameter smuggling past checks made on the gateway's
// reading. A well-formed query passes untouched.
func cleanQuery(s string) string {
	if s == "" {
		return s
	}
	bad := strings.Count(s, "&") >= maxQueryParams
	for i := 0; i < len(s) && !bad; {
		switch s[i] {
		case ';':
			bad = true
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				bad = true
			}
			i += 3
		default:
			i++
		}
	}
	if !bad {
		return s
	}
	v, _ := url.ParseQuery(s)
	return v.Encode()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// forward makes one attempt on st.up. A failure before the answer's
// headers leaves st.failed set and nothing written to the client; after
// them, a failure aborts the response.
func (g *Gateway) forward(r *http.Request, st *reqState) {
	up := st.up
	up.inflight.Add(1)
	ctx, cancel := context.WithCancelCause(r.Context())
	st.attemptCtx = ctx
	d := g.headerTimeout
	if st.streamReq {
		d = g.streamHeaderTimeout
	}
	at := &attemptTimer{cancel: cancel}
	at.t = time.AfterFunc(d, at.fire)
	st.timer = at
	defer func() {
		at.t.Stop()
		cancel(nil)
		up.inflight.Add(-1)
	}()

	if st.outHdr == nil {
		st.outHdr = g.outHeader(r, st)
	}
	out := &st.outReq
	outURL(&st.outURL, r.URL, up.URL)
	*out = http.Request{} // cleared in place; a literal would sit in this frame
	out.Method, out.URL, out.Header = r.Method, &st.outURL, st.outHdr
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	if g.preserveHost {
		out.Host = r.Host
	}
	if b := st.body; b != nil && b.n > 0 {
		out.Body = b.reader()
		out.ContentLength = b.n
		out.GetBody = func() (io.ReadCloser, error) { return b.reader(), nil }
	}

	st.sentAt = time.Now()
	res, err := g.client.do(ctx, out, st)
	if err != nil {
		g.attemptFailed(st, err)
		return
	}
	g.respond(st, res)
}

// respond passes the upstream's answer to the client.
func (g *Gateway) respond(st *reqState, res *http.Response) {
	pb, _ := res.Body.(*pooledBody) // before onResponse wraps it
	if res.StatusCode == http.StatusSwitchingProtocols {
		if err := g.onResponse(res, st); err != nil {
			res.Body.Close()
			g.attemptFailed(st, err)
			return
		}
		g.upgrade(st, res)
		return
	}
	removeHopByHop(res.Header, nil)
	if err := g.onResponse(res, st); err != nil {
		res.Body.Close()
		g.attemptFailed(st, err)
		return
	}
	dst := st.rw.Header()
	mergeHeader(dst, res.Header)
	// The Trailer field is not in the parsed header: announce what the
	// upstream announced.
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	st.rw.WriteHeader(res.StatusCode)
	// Closed whatever happens below, a bug's panic included: an unclosed
	// body would keep its upstream connection open.
	defer res.Body.Close()

	// A stream (SSE, or a body of unknown length) is flushed write by
	// write, and its headers at once: a client waits on each event.
	stream := st.sse || res.ContentLength == -1
	if err := g.copyBody(st, res.Body, stream, pb); err != nil {
		// The client must not take a cut answer for whole: net/http
		// closes the connection without the final chunk.
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // fills res.Trailer

	if len(res.Trailer) > 0 {
		// Chunked, so the trailers can follow, however short the body.
		_ = st.rw.FlushError()
	}
	if len(res.Trailer) == announced {
		mergeHeader(dst, res.Trailer)
		return
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			dst.Add(http.TrailerPrefix+k, v)
		}
	}
}

// mergeHeader adds src's fields to dst. A field dst lacks takes src's
// slice as it is (src is the upstream's, read once); one it has gets
// src's values after its own, in a slice of its own, since dst's may be
// shared (security headers, the asset Cache-Control).
func mergeHeader(dst, src http.Header) {
	for k, vv := range src {
		if have, ok := dst[k]; ok {
			dst[k] = append(have[:len(have):len(have)], vv...)
		} else {
			dst[k] = vv
		}
	}
}

// copyBufferSize is the copy buffer's size: nginx's proxy_buffer_size
// scale rather than io.Copy's 32 KiB, since SSE frames are small.
const copyBufferSize = 8 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// copyBody copies the answer's body to the client. A stream waits for its
// upstream's next bytes holding no copy buffer (the buffer goes back to
// the pool between reads), so an open stream costs only what its
// connections hold.
func (g *Gateway) copyBody(st *reqState, body io.Reader, stream bool, pb *pooledBody) error {
	w := &st.rw
	if stream {
		if err := flushErr(w); err != nil {
			return err
		}
	}
	var buf *[]byte
	defer func() {
		if buf != nil {
			copyBuffers.Put(buf)
		}
	}()
	for {
		if stream && pb != nil {
			if buf != nil {
				copyBuffers.Put(buf)
				buf = nil
			}
			pb.wait()
		}
		if buf == nil {
			buf = copyBuffers.Get().(*[]byte)
		}
		n, rerr := body.Read(*buf)
		if n > 0 {
			nw, werr := w.Write((*buf)[:n])
			if werr == nil && nw < n {
				werr = io.ErrShortWrite
			}
			if werr == nil && stream {
				werr = flushErr(w)
			}
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			if !errors.Is(rerr, context.Canceled) && st.clientCtx.Err() == nil {
				// Under ReverseProxy's logger name, which operators'
				// filters know.
				g.copyLog.Warn("read error during body copy", zap.String("request_id", st.id),
					zap.String("upstream", st.up.Name), zap.Error(rerr))
			}
			return rerr
		}
	}
}

// flushErr flushes w; a writer that cannot flush is not an error (the
// answer still arrives, later), a failed flush is.
func flushErr(w *responseWriter) error {
	if err := w.FlushError(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// inform passes a 1xx answer (103 Early Hints) on to the client with the
// upstream's fields only; what the gateway already set for the real answer
// is kept for it.
func (st *reqState) inform(code int, h http.Header) error {
	dst := st.rw.Header()
	saved := maps.Clone(dst)
	clear(dst)
	maps.Copy(dst, h)
	st.rw.WriteHeader(code)
	clear(dst)
	maps.Copy(dst, saved)
	return nil
}

// attemptFailed records a failed attempt; ServeHTTP decides whether to retry
// or answer, since nothing has been written to the client yet.
func (g *Gateway) attemptFailed(st *reqState, err error) {
	st.failed = true
	st.fail = classify(err, st.clientCtx, st.attemptCtx)
	switch {
	case st.fail.status == StatusClientClosed:
	case st.fail.penalize:
		g.passiveFailure(st.up, st.fail.code)
	default:
		g.metrics.UpstreamFailure(st.up.Name, st.fail.code)
	}
	if st.fail.status != StatusClientClosed {
		g.log.Debug("upstream attempt failed", zap.String("upstream", st.up.Name),
			zap.String("request_id", st.id), zap.String("code", st.fail.code), zap.Error(err))
	}
}

// errUpgrade is an upgrade the gateway could not carry out.
func errUpgrade(format string, args ...any) error { return fmt.Errorf("upgrade: "+format, args...) }
