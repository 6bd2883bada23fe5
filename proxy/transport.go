package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
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
