package proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/proxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The whole gateway path in process: ServeHTTP called directly (no client
// socket), forwarding over loopback to a fakeflow handler in an httptest
// server. ns/op includes fakeflow's own work and one loopback round trip;
// BenchmarkUpstreamRoundTrip measures that floor alone, so the gateway's
// share is the difference. bench/ compares the real binaries.

// benchGateway builds a gateway in front of upstream, logging as
// cmd/flowgate does (JSON encoder) to io.Discard.
func benchGateway(b *testing.B, upstream string, accessLog bool) *proxy.Gateway {
	b.Helper()
	cfg := config.Default()
	cfg.Upstreams = []config.Upstream{{URL: upstream}}
	off := false
	cfg.Health.Active.Enabled = &off // no probes in the measurement
	cfg.Log.AccessLog = &accessLog
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "time"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zap.InfoLevel))
	g, err := proxy.New(cfg, proxy.Options{Logger: log, Metrics: metrics.New(prometheus.NewRegistry()), AccessLog: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	g.Start()
	b.Cleanup(g.Close)
	return g
}

func benchUpstream(b *testing.B) *httptest.Server {
	b.Helper()
	up := httptest.NewServer(fakeflow.New(fakeflow.Options{}))
	b.Cleanup(up.Close)
	return up
}

const (
	benchJSON   = `{"question":"hi"}`
	benchStream = `{"question":"hi","streaming":true}`
)

func serveOnce(b *testing.B, h http.Handler, body string) {
	req := httptest.NewRequest(http.MethodPost, predictPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

func BenchmarkGatewayServeHTTP(b *testing.B) {
	up := benchUpstream(b)
	for _, c := range []struct {
		name      string
		body      string
		accessLog bool
	}{
		{"json/access-log", benchJSON, true},
		{"json/no-access-log", benchJSON, false},
		{"sse-6-tokens/access-log", benchStream, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			g := benchGateway(b, up.URL, c.accessLog)
			serveOnce(b, g, c.body) // dial the upstream connection
			b.ReportAllocs()
			for b.Loop() {
				serveOnce(b, g, c.body)
			}
		})
	}
}

func BenchmarkGatewayServeHTTPParallel(b *testing.B) {
	up := benchUpstream(b)
	g := benchGateway(b, up.URL, true)
	serveOnce(b, g, benchJSON)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			serveOnce(b, g, benchJSON)
		}
	})
}

// BenchmarkUpstreamRoundTrip is the floor under BenchmarkGatewayServeHTTP:
// the same prediction sent straight to the same upstream by an
// http.Transport, no gateway.
func BenchmarkUpstreamRoundTrip(b *testing.B) {
	up := benchUpstream(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	rt := func() {
		req, _ := http.NewRequest(http.MethodPost, up.URL+predictPath, strings.NewReader(benchJSON))
		req.Header.Set("Content-Type", "application/json")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	rt()
	b.ReportAllocs()
	for b.Loop() {
		rt()
	}
}

// BenchmarkGatewayOverSocket serves the gateway on a loopback listener, as
// in production: client socket, server goroutine, upstream socket.
func BenchmarkGatewayOverSocket(b *testing.B) {
	up := benchUpstream(b)
	g := benchGateway(b, up.URL, true)
	srv := httptest.NewServer(g)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	rt := func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+predictPath, strings.NewReader(benchJSON))
		req.Header.Set("Content-Type", "application/json")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		_, _ = io.Copy(io.Discard, br)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	rt()
	b.ReportAllocs()
	for b.Loop() {
		rt()
	}
}

// BenchmarkObserveRequest is the metrics observation made once per
// request (a counter and a histogram, by route template).
func BenchmarkObserveRequest(b *testing.B) {
	m := metrics.New(prometheus.NewRegistry())
	d := 1500 * time.Microsecond
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.ObserveRequest(flow.RoutePrediction, http.MethodPost, http.StatusOK, d)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.ObserveRequest(flow.RoutePrediction, http.MethodPost, http.StatusOK, d)
			}
		})
	})
}
