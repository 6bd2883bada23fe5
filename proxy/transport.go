package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// newProbeTransport is the health checks' own transport: probes must not
// queue behind, or take connections from, real traffic.
func newProbeTransport(timeout, idleTimeout time.Duration, tlsConf *tls.Config) *http.Transport {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:               nil, // never route upstream traffic via HTTP_PROXY
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     idleTimeout,
		DisableCompression:  true,
		TLSClientConfig:     tlsConf,
	}
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
