package fakeflow

import (
	"github.com/flowgate/flowgate/internal/jsonx"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Server. The zero value is a fast, always-succeeding
// classic chatflow answering "Hello from the fake OpenAI server.".
type Options struct {
	Latency     time.Duration // wait before answering (before headers). Default 0.
	TokenDelay  time.Duration // wait between SSE token frames. Default 0.
	Tokens      int           // tokens in the answer; <= 0 means 6.
	FailureRate float64       // fraction of prediction calls answered 500 with Flowise's error body. Default 0.
	// Hang accepts prediction requests and never answers until the client
	// goes away (Flowise does this when a streaming request fails early).
	Hang bool
	// Agentflow answers as an Agentflow V2 (executionId, agentFlowExecutedData
	// with usage and costs; the stream events of sample 21).
	Agentflow bool
	// Rand is the randomness for failure decisions and ids. nil means the
	// runtime's randomly seeded, lock-free global source. A *rand.Rand is not
	// safe for concurrent use, so the Server serializes its use with a mutex.
	Rand *rand.Rand
	// OnRequest is called at handler entry for every request; may be nil.
	OnRequest func(r *http.Request)
}

// Stats are the Server's counters, read atomically one by one.
type Stats struct {
	Requests    int64 // every request served, ping, assets and 404s included
	Predictions int64 // requests to a prediction route, rejected ones included
	Streams     int64 // SSE responses started
	Failures    int64 // injected failures (fail mode, FailureRate, stream-error)
	InFlight    int64 // prediction handlers running now
}

// Server is a Flowise-compatible http.Handler, safe for concurrent use.
type Server struct {
	opts Options
	rmu  sync.Mutex // guards opts.Rand

	requests, predictions, streams, failures, inflight atomic.Int64

	// Test hooks, set only by this package's tests before serving.
	hookHang           func() // a handler started hanging
	hookPredictionDone func() // a prediction handler returned
}

// New returns a Server answering with o.
func New(o Options) *Server {
	if o.Tokens <= 0 {
		o.Tokens = len(baseWords)
	}
	if o.Tokens > maxTokens {
		o.Tokens = maxTokens
	}
	if o.Latency < 0 {
		o.Latency = 0
	}
	if o.TokenDelay < 0 {
		o.TokenDelay = 0
	}
	if !(o.FailureRate > 0) { // also NaN
		o.FailureRate = 0
	}
	if o.FailureRate > 1 {
		o.FailureRate = 1
	}
	return &Server{opts: o}
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:    s.requests.Load(),
		Predictions: s.predictions.Load(),
		Streams:     s.streams.Load(),
		Failures:    s.failures.Load(),
		InFlight:    s.inflight.Load(),
	}
}

// float64 returns a random number in [0, 1).
func (s *Server) float64() float64 {
	if s.opts.Rand == nil {
		return rand.Float64()
	}
	s.rmu.Lock()
	f := s.opts.Rand.Float64()
	s.rmu.Unlock()
	return f
}

// uuids fills us with random version-4 UUIDs.
func (s *Server) uuids(us ...*[16]byte) {
	var lo, hi uint64
	if s.opts.Rand != nil {
		s.rmu.Lock()
	}
	for _, u := range us {
		if s.opts.Rand != nil {
			lo, hi = s.opts.Rand.Uint64(), s.opts.Rand.Uint64()
		} else {
			lo, hi = rand.Uint64(), rand.Uint64()
		}
		for i := 0; i < 8; i++ {
			u[i] = byte(lo >> (8 * i))
			u[8+i] = byte(hi >> (8 * i))
		}
		u[6] = u[6]&0x0f | 0x40 // version 4
		u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	}
	if s.opts.Rand != nil {
		s.rmu.Unlock()
	}
}

// Shared header values; never mutated (len == cap, so appends copy).
var (
	hvVaryOrigin   = []string{"Origin"}
	hvJSON         = []string{"application/json; charset=utf-8"}
	hvTextPlain    = []string{"text/plain; charset=utf-8"}
	hvHTMLUTF8     = []string{"text/html; charset=utf-8"}
	hvEventStream  = []string{"text/event-stream"}
	hvNoCache      = []string{"no-cache"}
	hvKeepAlive    = []string{"keep-alive"}
	hvKeepAliveTO  = []string{"timeout=5"}
	hvAccelNo      = []string{"no"}
	hvNoSniff      = []string{"nosniff"}
	hvCSPNone      = []string{"default-src 'none'"}
	hvZero         = []string{"0"}
	hvFour         = []string{"4"}
	hvPingETag     = []string{etagOf([]byte("pong"))}
	hvAllowMethods = []string{"GET,HEAD,PUT,PATCH,POST,DELETE"}
	hvVaryPreflt   = []string{"Origin, Access-Control-Request-Headers"}
)

// nodeKeepAlive adds the connection headers Node adds to a non-streamed
// response.
func nodeKeepAlive(h http.Header) {
	h["Connection"] = hvKeepAlive
	h["Keep-Alive"] = hvKeepAliveTO
}

const (
	pathPing       = "/api/v1/ping"
	pathPrediction = "/api/v1/prediction"
	pathInternal   = "/api/v1/internal-prediction"
	// pathStreaming is asked by Flowise's JS SDK before a prediction:
	// can this flow stream? fakeflow's flows always can.
	pathStreaming = "/api/v1/chatflows-streaming"
)

// ServeHTTP routes like Flowise's Express app.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.opts.OnRequest != nil {
		s.opts.OnRequest(r)
	}
	h := w.Header()
	h["Vary"] = hvVaryOrigin
	if o := r.Header["Origin"]; len(o) > 0 {
		h["Access-Control-Allow-Origin"] = o[:1:1]
	}
	if r.Method == http.MethodOptions && len(r.Header["Access-Control-Request-Method"]) > 0 {
		s.preflight(w, r)
		return
	}
	p := r.URL.Path
	switch {
	case p == pathPing:
		switch r.Method {
		case http.MethodGet:
			nodeKeepAlive(h)
			h["Content-Type"] = hvTextPlain
			h["Content-Length"] = hvFour
			h["Etag"] = hvPingETag
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(pong)
			return
		case http.MethodHead:
			nodeKeepAlive(h)
			h["Content-Length"] = hvZero
			w.WriteHeader(http.StatusOK)
			return
		}
	case strings.HasPrefix(p, pathPrediction):
		if id, ok := flowID(p, pathPrediction); ok && r.Method == http.MethodPost {
			s.predict(w, r, id)
			return
		}
	case strings.HasPrefix(p, pathInternal):
		if id, ok := flowID(p, pathInternal); ok && r.Method == http.MethodPost {
			s.predict(w, r, id)
			return
		}
	case strings.HasPrefix(p, pathStreaming):
		if id, ok := flowID(p, pathStreaming); ok && id != "" && r.Method == http.MethodGet {
			nodeKeepAlive(h)
			h["Content-Type"] = hvJSON
			_, _ = io.WriteString(w, `{"isStreaming":true}`)
			return
		}
	case p == "/" || p == "/index.html":
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			serveAsset(w, r, &indexAsset)
			return
		}
	case strings.HasPrefix(p, "/assets/"):
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if strings.HasSuffix(p, ".css") {
				serveAsset(w, r, &cssAsset)
			} else {
				serveAsset(w, r, &jsAsset)
			}
			return
		}
	}
	notFound(w, r)
}

var pong = []byte("pong")

// flowID extracts the {id} of route+"/{id}" (one trailing slash allowed, as
// Express's non-strict routing does). ok is false when the path is not this
// route; the id is "" for route or route+"/".
func flowID(p, route string) (id string, ok bool) {
	rest := p[len(route):]
	if rest == "" {
		return "", true
	}
	if rest[0] != '/' {
		return "", false
	}
	rest = rest[1:]
	rest = strings.TrimSuffix(rest, "/")
	if strings.IndexByte(rest, '/') >= 0 {
		return "", false
	}
	return rest, true
}

// preflight answers a CORS preflight like the cors package with its
// defaults.
func (s *Server) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	nodeKeepAlive(h)
	h["Access-Control-Allow-Methods"] = hvAllowMethods
	if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
		h.Set("Access-Control-Allow-Headers", rh)
		h["Vary"] = hvVaryPreflt
	}
	h["Content-Length"] = hvZero
	w.WriteHeader(http.StatusNoContent)
}

// notFound answers like Express's final handler.
func notFound(w http.ResponseWriter, r *http.Request) {
	body := "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot " +
		html.EscapeString(r.Method+" "+encodeURL(r.RequestURI)) + "</pre>\n</body>\n</html>\n"
	h := w.Header()
	nodeKeepAlive(h)
	h["Content-Security-Policy"] = hvCSPNone
	h["X-Content-Type-Options"] = hvNoSniff
	h["Content-Type"] = hvHTMLUTF8
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusNotFound)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}

// encodeURL percent-encodes what the encodeurl package (used by Express's
// final handler) encodes: bytes outside the URL character set and '%' not
// followed by two hex digits.
func encodeURL(u string) string {
	isHex := func(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
	var b strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		keep := c == 0x21 || 0x23 <= c && c <= 0x3b || c == 0x3d || 0x3f <= c && c <= 0x5f ||
			0x61 <= c && c <= 0x7a || c == 0x7c || c == 0x7e
		if c == '%' && !(i+2 < len(u) && isHex(u[i+1]) && isHex(u[i+2])) {
			keep = false
		}
		if keep {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[c>>4])
		b.WriteByte("0123456789ABCDEF"[c&0xf])
	}
	return b.String()
}

// writeError writes Flowise's error body {statusCode,success,message,stack}
// as its error middleware does (stack is {} outside development).
func writeError(w http.ResponseWriter, code int, msg string) {
	bp := getBuf()
	defer putBuf(bp)
	b := append(*bp, `{"statusCode":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"success":false,"message":`...)
	b = jsonx.AppendString(b, msg)
	b = append(b, `,"stack":{}}`...)
	*bp = b
	writeJSON(w, code, b)
}

// writeJSON writes a JSON body like Express's res.json.
func writeJSON(w http.ResponseWriter, code int, body []byte) {
	h := w.Header()
	nodeKeepAlive(h)
	h["Content-Type"] = hvJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Etag"] = []string{etagOf(body)}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
