package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// newTransport is tuned for a few upstreams taking heavy keep-alive traffic:
// a large idle pool per upstream so sustained load does not churn
// connections, and no transparent decompression so bytes pass as sent.
func newTransport(dialTimeout time.Duration, idlePerHost int, idleTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: nil, // never route upstream traffic via HTTP_PROXY
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newUpstreamConn(c), nil
		},
		MaxIdleConns:          0, // bounded per host below
		MaxIdleConnsPerHost:   idlePerHost,
		IdleConnTimeout:       idleTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		// Read and write buffers stay at net/http's 4 KiB: each open
		// stream holds one of each, and bodies larger than the buffer are
		// read straight into the copy buffer anyway.
	}
}

// errPeerClosed fails a write on a pooled connection the upstream has
// already closed.
var errPeerClosed = errors.New("upstream closed the pooled connection")

// upstreamConn guards the one moment a keep-alive pool can lose a request
// that never reached the upstream: a request written on a pooled
// connection that the upstream closed (Node's 5 s keep-alive timeout, or a
// crash) before net/http noticed. Before the first write that reuses the
// connection it peeks whether the peer hung up; if so the write fails with
// nothing written, which net/http treats as safe and retries on a fresh
// connection, and a dead upstream then surfaces as a dial error that the
// gateway retries elsewhere. One non-blocking recv per reused request.
type upstreamConn struct {
	net.Conn
	raw    syscall.RawConn // nil when the conn offers none
	reused atomic.Bool     // a response was read: the next write reuses the conn
}

func newUpstreamConn(c net.Conn) net.Conn {
	uc := &upstreamConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		uc.raw, _ = sc.SyscallConn()
	}
	return uc
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reused.Store(true)
	}
	return n, err
}

func (c *upstreamConn) Write(p []byte) (int, error) {
	if c.reused.Load() {
		c.reused.Store(false)
		if c.raw != nil && peerClosed(c.raw) {
			return 0, errPeerClosed
		}
	}
	return c.Conn.Write(p)
}

// copyBufferSize is the ReverseProxy copy buffer. An open stream holds one
// for its whole life, and SSE frames are small, so it is nginx's
// proxy_buffer_size scale rather than io.Copy's 32 KiB.
const copyBufferSize = 8 << 10

// bufferPool gives ReverseProxy reusable copy buffers instead of a fresh
// one per response.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
