package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// upstreamClient is the gateway's client to its upstreams. It speaks
// HTTP/1.1 to the flow servers over pooled keep-alive connections, and the
// request's own goroutine writes the request and reads the answer.
//
// net/http's Transport runs two goroutines per connection and hands every
// request and response between them over channels; in the profile those
// loops were 27% of the proxy's CPU, and their stacks a quarter of the
// memory an open stream holds (BENCHMARKS.md). Framing (chunked bodies,
// trailers, 1xx, upgrades) is still net/http's: Request.Write and
// ReadResponse.
//
// Retry safety: a pooled connection is reused only after a non-blocking
// peek shows the upstream has neither closed it nor sent anything unasked
// (Node, which runs Flowise, closes idle connections after 5 s). A
// connection that fails the peek, or a write that fails before its first
// byte, is replaced by a fresh one transparently: the request never
// reached the upstream. A dial failure surfaces as a *net.OpError with Op
// "dial", which the gateway retries on another upstream.
type upstreamClient struct {
	dialer      *net.Dialer
	tls         *tls.Config   // for https:// upstreams; ServerName set per dial
	maxIdle     int           // idle connections kept per upstream
	idleTimeout time.Duration // an idle connection older than this is closed

	mu      sync.Mutex
	idle    map[string][]*upstreamConn // by scheme://host:port, most recent last
	janitor *time.Timer                // armed while any connection is idle
	closed  bool
}

func newUpstreamClient(dialTimeout time.Duration, maxIdle int, idleTimeout time.Duration, tlsConf *tls.Config) *upstreamClient {
	return &upstreamClient{
		dialer:      &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		tls:         tlsConf,
		maxIdle:     maxIdle,
		idleTimeout: idleTimeout,
		idle:        map[string][]*upstreamConn{},
	}
}

// errStaleConn: the pooled connection was unusable; nothing was sent on it.
var errStaleConn = errors.New("pooled upstream connection was closed")

// errClosedIdle: the upstream closed a reused connection after our request
// was written and before a byte of answer: the keep-alive race the peek
// narrows but cannot close, or a crash. The upstream may have read the
// request, so only idempotent requests are sent again.
var errClosedIdle = errors.New("upstream closed the kept-alive connection before answering")

// upstreamError marks what went wrong between flowgate and the upstream,
// as opposed to errors about the client's request itself:
// only these may count against an upstream's health.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// requestError: the request could not be written for reasons of its own,
// before the connection failed; not counted against the upstream.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// max1xx bounds informational answers before the real one, as net/http does.
const max1xx = 5

// informer receives the 1xx answers that come before the real one.
type informer interface {
	inform(code int, h http.Header) error
}

// RoundTrip makes it an http.RoundTripper (the benchmarks' floor, tests).
func (c *upstreamClient) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.do(req.Context(), req, nil)
}

// do sends req under ctx, which bounds the whole exchange: a cancelled ctx
// fails any read or write on the connection at once. req's own context is
// not read. inf, when not nil, gets the 1xx answers.
func (c *upstreamClient) do(ctx context.Context, req *http.Request, inf informer) (*http.Response, error) {
	key := req.URL.Scheme + "://" + req.URL.Host
	// Only pooled connections can be stale or closed idle, and each is
	// dropped when found so, so this ends: at the latest with a fresh dial.
	for {
		uc, err := c.get(ctx, key, req.URL)
		if err != nil {
			return nil, &upstreamError{err}
		}
		resp, err := uc.roundTrip(ctx, c, req, inf)
		if err == nil {
			return resp, nil
		}
		var re *requestError
		if errors.As(err, &re) {
			return nil, err
		}
		if !errors.Is(err, errStaleConn) && !(errors.Is(err, errClosedIdle) && idempotent(req)) {
			return nil, &upstreamError{err}
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

// idempotent requests may be sent again after errClosedIdle.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	return ok
}

// get pops the most recently used idle connection (the least likely to
// have been closed) or dials a new one.
func (c *upstreamClient) get(ctx context.Context, key string, u *url.URL) (*upstreamConn, error) {
	c.mu.Lock()
	if s := c.idle[key]; len(s) > 0 {
		uc := s[len(s)-1]
		s[len(s)-1] = nil
		c.idle[key] = s[:len(s)-1]
		c.mu.Unlock()
		uc.reused = true
		return uc, nil
	}
	c.mu.Unlock()
	return c.dial(ctx, key, u)
}

func (c *upstreamClient) dial(ctx context.Context, key string, u *url.URL) (*upstreamConn, error) {
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	uc := &upstreamConn{key: key, conn: conn}
	uc.in.r = conn
	uc.br = bufio.NewReaderSize(&uc.in, 4<<10)
	if sc, ok := conn.(syscall.Conn); ok {
		uc.raw, _ = sc.SyscallConn()
	}
	if u.Scheme == "https" {
		conf := c.tls.Clone()
		if conf.ServerName == "" {
			conf.ServerName = u.Hostname()
		}
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		uc.conn = tc
		uc.raw = nil // TLS records: a raw peek cannot tell data from a close_notify
		uc.in.r = tc
	}
	return uc, nil
}

// put returns a connection whose answer was read to the end.
func (c *upstreamClient) put(uc *upstreamConn) {
	uc.idleSince = time.Now()
	c.mu.Lock()
	if c.closed || len(c.idle[uc.key]) >= c.maxIdle {
		c.mu.Unlock()
		uc.conn.Close()
		return
	}
	c.idle[uc.key] = append(c.idle[uc.key], uc)
	if c.janitor == nil {
		c.janitor = time.AfterFunc(c.idleTimeout, c.prune)
	}
	c.mu.Unlock()
}

// prune closes connections idle longer than idleTimeout, and re-arms while
// any remain, so an upstream that got no traffic holds no sockets.
func (c *upstreamClient) prune() {
	now := time.Now()
	var stale []*upstreamConn
	next := time.Duration(-1)
	c.mu.Lock()
	for k, s := range c.idle {
		i := 0
		for i < len(s) && now.Sub(s[i].idleSince) >= c.idleTimeout {
			stale = append(stale, s[i])
			i++
		}
		s = append(s[:0], s[i:]...)
		c.idle[k] = s
		if len(s) > 0 {
			if left := c.idleTimeout - now.Sub(s[0].idleSince); next < 0 || left < next {
				next = left
			}
		}
	}
	if next >= 0 && !c.closed {
		c.janitor.Reset(next)
	} else {
		c.janitor = nil
	}
	c.mu.Unlock()
	for _, uc := range stale {
		uc.conn.Close()
	}
}

// CloseIdleConnections closes every pooled connection and stops pooling.
func (c *upstreamClient) CloseIdleConnections() {
	c.mu.Lock()
	c.closed = true
	all := c.idle
	c.idle = map[string][]*upstreamConn{}
	if c.janitor != nil {
		c.janitor.Stop()
		c.janitor = nil
	}
	c.mu.Unlock()
	for _, s := range all {
		for _, uc := range s {
			uc.conn.Close()
		}
	}
}

// upstreamConn is one keep-alive connection to an upstream.
type upstreamConn struct {
	key       string
	conn      net.Conn
	raw       syscall.RawConn // for the liveness peek; nil over TLS
	in        readCounter     // conn, counted: did any answer arrive?
	br        *bufio.Reader
	reused    bool
	idleSince time.Time
}

// sentCounter counts what reached the connection, to tell a write that
// failed before its first byte (safe to send elsewhere) from one that did
// not, and keeps the connection's own error apart from the request body's.
type sentCounter struct {
	w   io.Writer
	n   int64
	err error
}

func (cw *sentCounter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	if err != nil {
		cw.err = err
	}
	return n, err
}

// readCounter counts what the upstream sent and, while limit > 0, refuses
// to read past it: an answer's status line and headers may not grow
// without bound.
//
// Its errors are sticky: once the connection failed or ended, every later
// read says so again, so a wait that peeks ahead (pooledBody.wait) cannot
// swallow a failure and let a cut body read as an ended one.
type readCounter struct {
	r     io.Reader
	n     int64
	limit int64
	err   error
}

// maxResponseHeader bounds an upstream answer's head, as net/http's
// Transport does by default.
const maxResponseHeader = 1 << 20

var (
	errHeaderTooLarge = errors.New("upstream response headers too large")
	errBadStatus      = errors.New("upstream answered with a status below 100")
)

// earlyAnswerWait bounds the wait for an answer on a connection whose
// request write failed: what the upstream sent before closing is already
// in the socket buffer.
const earlyAnswerWait = time.Second

func (rc *readCounter) Read(p []byte) (int, error) {
	if rc.limit > 0 {
		if rc.n >= rc.limit {
			return 0, errHeaderTooLarge
		}
		if left := rc.limit - rc.n; int64(len(p)) > left {
			p = p[:left]
		}
	}
	if rc.err != nil {
		return 0, rc.err
	}
	n, err := rc.r.Read(p)
	rc.n += int64(n)
	rc.err = err
	return n, err
}

// wholeWriter hides the *bufio.Writer from Request.Write, which flushes the
// headers on their own before any body it cannot see is in memory: one
// write per request instead of two. The body of a request is always complete by now.
type wholeWriter struct{ *bufio.Writer }

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// aLongTimeAgo is a deadline in the past: it fails blocked I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

func (uc *upstreamConn) roundTrip(ctx context.Context, c *upstreamClient, req *http.Request, inf informer) (*http.Response, error) {
	if uc.reused && !uc.idleAndOpen() {
		uc.conn.Close()
		return nil, errStaleConn
	}
	if err := ctx.Err(); err != nil {
		c.put(uc)
		return nil, err
	}
	// A cancelled request (client gone, first-byte or idle timeout) fails
	// the blocked read or write at once; stopped before the connection
	// goes back to the pool.
	stop := context.AfterFunc(ctx, func() { uc.conn.SetDeadline(aLongTimeAgo) })

	cw := sentCounter{w: uc.conn}
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(&cw)
	err := req.Write(wholeWriter{bw})
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writerPool.Put(bw)
	var writeErr error
	if err != nil {
		if cw.n == 0 && uc.reused && cw.err != nil && ctx.Err() == nil {
			stop()
			uc.conn.Close()
			return nil, errors.Join(errStaleConn, err)
		}
		if cw.err == nil && ctx.Err() == nil {
			// Not the connection's failure: the request itself could not
			// be written (a Host header net/http refuses, a spooled body
			// that failed to read). No upstream is at fault.
			stop()
			uc.conn.Close()
			return nil, &requestError{err}
		}
		if cw.n == 0 || ctx.Err() != nil {
			stop()
			uc.conn.Close()
			return nil, ctxErr(ctx, err)
		}
		// The connection failed part-way through the request. An upstream
		// may answer before it has read a large body (413, 404, 431) and
		// close: that answer is the one to pass on, and no failure of the
		// upstream's. Whatever it sent is already here, so a short
		// deadline only guards against a peer that sent nothing.
		writeErr = err
		uc.conn.SetReadDeadline(time.Now().Add(earlyAnswerWait))
	}

	before := uc.in.n
	for n1xx := 0; ; n1xx++ {
		uc.in.limit = uc.in.n + int64(uc.br.Buffered()) + maxResponseHeader
		resp, err := http.ReadResponse(uc.br, req)
		uc.in.limit = 0
		if err != nil {
			stop()
			uc.conn.Close()
			if writeErr != nil {
				return nil, ctxErr(ctx, writeErr)
			}
			if uc.reused && uc.in.n == before && ctx.Err() == nil {
				return nil, errors.Join(errClosedIdle, err)
			}
			return nil, ctxErr(ctx, err)
		}
		if resp.StatusCode < 100 {
			// ReadResponse takes any three digits; net/http's server
			// panics on a status below 100, so it never gets that far.
			stop()
			uc.conn.Close()
			return nil, errBadStatus
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if n1xx == max1xx {
				stop()
				uc.conn.Close()
				return nil, errors.New("upstream sent too many 1xx answers")
			}
			// 103 Early Hints and friends: the gateway passes them on;
			// the real answer follows.
			if inf != nil {
				if err := inf.inform(resp.StatusCode, resp.Header); err != nil {
					stop()
					uc.conn.Close()
					return nil, err
				}
			}
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			if !strings.EqualFold(resp.Header.Get("Upgrade"), req.Header.Get("Upgrade")) || req.Header.Get("Upgrade") == "" {
				// The gateway would refuse it without closing the body.
				stop()
				uc.conn.Close()
				return nil, errors.New("upstream switched protocols the request did not ask for")
			}
			// The gateway needs a read-write body to splice the upgraded
			// connection; it lives until either side closes.
			resp.Body = &upgradedConn{uc: uc, stop: stop}
			return resp, nil
		}
		if writeErr != nil {
			// The request was not all sent: the connection is done. The
			// body is read under the attempt's idle timer like any other:
			// a slow client must not turn it into an upstream failure.
			uc.conn.SetReadDeadline(time.Time{})
			resp.Close = true
		}
		reusable := !resp.Close && !req.Close
		if resp.Body == http.NoBody {
			uc.release(c, stop, reusable)
			return resp, nil
		}
		resp.Body = &pooledBody{rc: resp.Body, uc: uc, c: c, stop: stop, reusable: reusable}
		return resp, nil
	}
}

// idleAndOpen reports whether a pooled connection may carry a request:
// nothing buffered, and the upstream has neither closed it nor sent
// anything unasked (a late body, a 408 before closing), which would
// otherwise be read as the next request's answer.
func (uc *upstreamConn) idleAndOpen() bool {
	if uc.br.Buffered() > 0 {
		return false
	}
	if uc.raw != nil {
		return peerIdle(uc.raw)
	}
	// TLS: a read that times out at once means nothing is waiting.
	uc.conn.SetReadDeadline(time.Now())
	_, err := uc.br.Peek(1)
	uc.conn.SetReadDeadline(time.Time{})
	uc.in.err = nil // the timeout this provoked is not the connection's
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// release ends a response: the connection goes back to the pool when it
// may carry another request, else it is closed.
func (uc *upstreamConn) release(c *upstreamClient, stop func() bool, reusable bool) {
	// stop fails when cancellation already began: the connection's
	// deadline is poisoned, so it must not carry another request.
	// A read error, kept by readCounter (TLS may hand over the last bytes
	// with an EOF), means the connection is done whatever else says so.
	if stop() && reusable && uc.br.Buffered() == 0 && uc.in.err == nil {
		c.put(uc)
		return
	}
	uc.conn.Close()
}

// ctxErr prefers the context's error when cancellation caused the failure,
// so the gateway reports a timeout or a client that left, not an I/O error.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// pooledBody returns its connection to the pool once read to the end.
type pooledBody struct {
	rc       io.ReadCloser
	uc       *upstreamConn
	c        *upstreamClient
	stop     func() bool
	reusable bool
	done     bool
	cut      bool // done before the end: later reads must not say EOF
}

// errBodyCut: read again after a failure or Close; it never ended.
var errBodyCut = errors.New("upstream body read after it failed or was closed")

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.done {
		if b.cut {
			return 0, errBodyCut
		}
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.done = true
		b.uc.release(b.c, b.stop, b.reusable)
	} else if err != nil {
		b.done, b.cut = true, true
		b.stop()
		b.uc.conn.Close()
	}
	return n, err
}

// wait blocks until the upstream has sent more of the body, or failed, so
// a stream between two events is waited on holding no copy buffer. What
// it reads stays in the connection's reader; an error is read again by
// the next Read (readCounter keeps it).
func (b *pooledBody) wait() {
	if !b.done && b.uc.br.Buffered() == 0 {
		_, _ = b.uc.br.Peek(1)
	}
}

func (b *pooledBody) Close() error {
	if !b.done {
		// Unread bytes are still on the wire: the connection cannot be
		// reused without reading them, and they may never end (a stream).
		b.done, b.cut = true, true
		b.stop()
		b.uc.conn.Close()
	}
	return nil
}

// upgradedConn is the body of a 101 answer: the raw connection, with what
// the reader had already buffered read first.
type upgradedConn struct {
	uc   *upstreamConn
	stop func() bool
	once sync.Once
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.uc.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.uc.conn.Write(p) }
func (u *upgradedConn) Close() error {
	var err error
	u.once.Do(func() {
		u.stop()
		err = u.uc.conn.Close()
	})
	return err
}
