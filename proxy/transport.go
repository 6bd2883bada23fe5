package proxy

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// newTransport is tuned for a few upstreams taking heavy keep-alive traffic:
// a large idle pool per upstream so sustained load does not churn
// connections, and no transparent decompression so bytes pass as sent.
func newTransport(dialTimeout time.Duration, idlePerHost int, idleTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil, // never route upstream traffic via HTTP_PROXY
		DialContext:           d.DialContext,
		MaxIdleConns:          0, // bounded per host below
		MaxIdleConnsPerHost:   idlePerHost,
		IdleConnTimeout:       idleTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

// bufferPool gives ReverseProxy reusable copy buffers instead of a fresh
// 32 KiB per response.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
