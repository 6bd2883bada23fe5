package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// Micro-benchmarks of the request path's small pieces. The whole path is
// measured in bench_test.go; the comparison with nginx and Caddy in bench/.

func benchUpstreams(n int) []*Upstream {
	ups := make([]*Upstream, n)
	for i := range ups {
		u, _ := url.Parse(fmt.Sprintf("http://10.0.0.%d:3000", i+1))
		ups[i] = newUpstream(u.Host, u)
	}
	return ups
}

func BenchmarkLeastConnPick(b *testing.B) {
	for _, n := range []int{1, 3, 8} {
		for _, tie := range []bool{true, false} {
			name := fmt.Sprintf("upstreams=%d/ties=%v", n, tie)
			b.Run(name, func(b *testing.B) {
				ups := benchUpstreams(n)
				if !tie {
					for i, u := range ups {
						u.inflight.Store(int64(n - i)) // the last one is the least loaded
					}
				}
				lb := newLeastConn(ups, nil)
				now := time.Now()
				b.ReportAllocs()
				for b.Loop() {
					if up, _ := lb.pick(now, 0); up == nil {
						b.Fatal("no upstream")
					}
				}
			})
		}
	}
}

// BenchmarkLeastConnPickParallel is pick with the in-flight counters
// changing under it, as they do under load.
func BenchmarkLeastConnPickParallel(b *testing.B) {
	lb := newLeastConn(benchUpstreams(3), nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			up, _ := lb.pick(time.Now(), 0)
			up.inflight.Add(1)
			up.inflight.Add(-1)
		}
	})
}

func BenchmarkRequestID(b *testing.B) {
	b.Run("generated", func(b *testing.B) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/prediction/x", nil)
		b.ReportAllocs()
		for b.Loop() {
			_ = requestID(r)
		}
	})
	b.Run("from-client", func(b *testing.B) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/prediction/x", nil)
		r.Header.Set("X-Request-Id", "4bf92f3577b34da6a3ce929d0e0e4736")
		b.ReportAllocs()
		for b.Loop() {
			_ = requestID(r)
		}
	})
}

func BenchmarkAcceptsGzip(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = acceptsGzip("gzip, deflate, br, zstd")
	}
}

// BenchmarkIsEventStream runs on every response: JSON answers are the
// common case.
func BenchmarkIsEventStream(b *testing.B) {
	for _, ct := range []string{"application/json; charset=utf-8", "text/event-stream", "Text/Event-Stream; charset=utf-8"} {
		b.Run(ct, func(b *testing.B) {
			h := http.Header{"Content-Type": {ct}}
			b.ReportAllocs()
			for b.Loop() {
				_ = isEventStream(h)
			}
		})
	}
}
