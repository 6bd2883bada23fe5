package proxy_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowgate/flowgate/cache"
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
	return benchGatewayWith(b, upstream, accessLog, nil)
}

// benchGatewayWith is benchGateway with a config hook. When the config
// turns the cache on for some workflow, the gateway gets a memory-only
// store built as cmd/flowgate builds it (no redis.addr).
func benchGatewayWith(b *testing.B, upstream string, accessLog bool, mutate func(*config.Config)) *proxy.Gateway {
	b.Helper()
	return benchGatewayFull(b, upstream, accessLog, mutate, nil)
}

// benchGatewayFull is benchGatewayWith with a hook on the Options, which
// adds what the config alone does not build (a quota, prices, a ledger).
func benchGatewayFull(b *testing.B, upstream string, accessLog bool, mutate func(*config.Config), opts func(*proxy.Options, config.Config)) *proxy.Gateway {
	b.Helper()
	cfg := config.Default()
	cfg.Upstreams = []config.Upstream{{URL: upstream}}
	off := false
	cfg.Health.Active.Enabled = &off // no probes in the measurement
	cfg.Log.AccessLog = &accessLog
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "time"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zap.InfoLevel))
	m := metrics.New(prometheus.NewRegistry())
	o := proxy.Options{Logger: log, Metrics: m, AccessLog: io.Discard}
	if cfg.Cache.AnyEnabled() {
		st, err := cache.NewStore(cache.Options{MaxMemory: int64(cfg.Cache.MaxMemory), Metrics: m, Logger: log.Named("cache")})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(st.Close)
		o.Cache = st
	}
	if opts != nil {
		opts(&o, cfg)
	}
	g, err := proxy.New(cfg, o)
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

// benchCases are the requests the gateway benchmarks serve.
var benchCases = []struct {
	name      string
	body      string
	accessLog bool
}{
	{"json/access-log", benchJSON, true},
	{"json/no-access-log", benchJSON, false},
	{"sse-6-tokens/access-log", benchStream, true},
}

func BenchmarkGatewayServeHTTP(b *testing.B) {
	up := benchUpstream(b)
	for _, c := range benchCases {
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

// ---- the response cache ----------------------------------------------------
//
// BenchmarkGatewayCacheHit is a hit's whole path in process: body read, key
// derived, entry found, its answer written with fresh ids, the access log
// line and the metrics. Nothing reaches the upstream, so ns/op is CPU; the
// cpu-ns/op metric is the process's user+system time per hit, which with
// GOMAXPROCS > 1 also counts the GC's background work and idle spinning
// on the other core. "harness-floor" is what the benchmark's own httptest
// request and recorder cost around a trivial handler: the gateway's share
// of a hit is the difference.
//
// BenchmarkGatewayCacheMiss compares the miss path with the uncached path
// on the same requests (a new input every iteration, so every request is
// a miss that is recorded and stored), for benchstat -col /path:
//
//	uncached             no cache configured (an unused full store held, see missCacheMemory)
//	uncached-small-heap  no cache configured, nothing held: BenchmarkGatewayServeHTTP's heap
//	miss                 the cache on for the workflow, full: key, lookup, flight, recorder, entry stored, one evicted
//	miss-room            the same with room in the cache: nothing evicted
//	refresh              Cache-Control: no-cache on one input: key, recorder, entry replaced
//	other-workflow       the cache on for another workflow only: this one's policy is looked up and is off
//
// One request at a time, ns/op is mostly waiting on loopback, and with
// GOMAXPROCS > 1 it measures how soon an idle core wakes (on a VM, a busier
// path can come out faster). Run with -cpu 1 to compare the work: ns/op is
// then the CPU the process spent, fakeflow's share included. The Parallel
// variant keeps both cores busy, as wrk does.

// cpuPerOp starts counting the process's CPU time; the returned func
// reports it per iteration as cpu-ns/op. Call it just before b.Loop and
// the returned func just after.
func cpuPerOp(b *testing.B) func() {
	t0 := processCPU(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU(b)-t0)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serveReq is serveOnce with extra request headers; it returns the
// recorder.
func serveReq(b *testing.B, h http.Handler, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, predictPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	return rec
}

// cacheFor turns the cache on for one workflow only, as the issue's
// config example does.
func cacheFor(workflow string) func(*config.Config) {
	return func(c *config.Config) {
		on := true
		c.Cache.Workflows = map[string]config.CachePolicy{workflow: {Enabled: &on, TTL: config.Duration(time.Hour)}}
	}
}

// expectXCache fails the benchmark unless body, sent as serveOnce sends
// it, is answered with X-Cache want.
func expectXCache(b *testing.B, h http.Handler, body, want string) {
	b.Helper()
	if got := serveReq(b, h, body).Header().Get("X-Cache"); got != want {
		b.Fatalf("X-Cache %q, want %q", got, want)
	}
}

func BenchmarkGatewayCacheHit(b *testing.B) {
	up := benchUpstream(b)
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			g := benchGatewayWith(b, up.URL, c.accessLog, cacheFor(flowID))
			expectXCache(b, g, c.body, "MISS") // stores the entry
			expectXCache(b, g, c.body, "HIT")
			b.ReportAllocs()
			done := cpuPerOp(b)
			for b.Loop() {
				serveOnce(b, g, c.body)
			}
			done()
			expectXCache(b, g, c.body, "HIT")
		})
	}
	b.Run("json/access-log/parallel", func(b *testing.B) {
		g := benchGatewayWith(b, up.URL, true, cacheFor(flowID))
		expectXCache(b, g, benchJSON, "MISS")
		expectXCache(b, g, benchJSON, "HIT")
		b.ReportAllocs()
		b.ResetTimer()
		done := cpuPerOp(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				serveOnce(b, g, benchJSON)
			}
		})
		done()
	})
	// What serveOnce costs without the gateway: the same request and
	// recorder, a handler writing an answer of the same size with as many
	// headers as a hit has.
	b.Run("harness-floor", func(b *testing.B) {
		g := benchGatewayWith(b, up.URL, true, cacheFor(flowID))
		expectXCache(b, g, benchJSON, "MISS")
		hit := serveReq(b, g, benchJSON)
		answer, hdr := hit.Body.Bytes(), hit.Header().Clone()
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			wh := w.Header()
			for k, v := range hdr {
				wh[k] = v
			}
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(answer)
		})
		b.ReportAllocs()
		done := cpuPerOp(b)
		for b.Loop() {
			serveOnce(b, h, benchJSON)
		}
		done()
	})
}

// missCacheMemory is what BenchmarkGatewayCacheMiss stores before the
// measurement: the cache's bound in "miss" (full: every miss stores one
// entry and evicts another, as in a gateway that has run for a while),
// a sixteenth of it in "miss-room" (no eviction). Every variant holds that
// much (the uncached one in an unused store of its own), so the live heap
// is the same size in all of them and none gets rarer collections from a
// larger heap.
const missCacheMemory = 16 << 20

// missCase is one variant of BenchmarkGatewayCacheMiss.
type missCase struct {
	name     string
	workflow string // the cache is on for it; "" no cache
	bound    int64  // the cache's max_memory; -1: no cache and nothing held (the heap of BenchmarkGatewayServeHTTP)
	fixed    bool   // the same input every time (else a new one)
	hdr      []string
	first    string // X-Cache of the first request
	again    string // X-Cache of the last input sent again, plainly
}

const (
	missOtherFlow = "0b9d3c1e-2a41-4f8e-9e77-5c1d2b3a4f60"
	// missFixed is refresh's input; the others' new inputs have its length.
	missFixed = `{"question":"hi 100000000"}`
)

var missCases = []missCase{
	{"path=uncached", "", 0, false, nil, "", ""},
	{"path=uncached-small-heap", "", -1, false, nil, "", ""},
	{"path=miss", flowID, missCacheMemory, false, nil, "MISS", "HIT"},
	{"path=miss-room", flowID, 16 * missCacheMemory, false, nil, "MISS", "HIT"},
	{"path=refresh", flowID, missCacheMemory, true, []string{"Cache-Control", "no-cache"}, "REFRESH", "HIT"},
	{"path=other-workflow", missOtherFlow, missCacheMemory, false, nil, "", ""},
}

// missInputs hands out new inputs of missFixed's length, from any
// goroutine.
type missInputs struct{ n atomic.Int64 }

func (m *missInputs) next(c missCase) string {
	if c.fixed {
		return missFixed
	}
	return `{"question":"hi ` + strconv.FormatInt(100000000+m.n.Add(1), 10) + `"}`
}

// missSetup builds c's gateway with the cache filled (see
// missCacheMemory) and checks the first request's X-Cache.
func missSetup(b *testing.B, up string, c missCase, in *missInputs) (g *proxy.Gateway, full *cache.Store) {
	b.Helper()
	answer, ctype := upstreamAnswer(b, up, missFixed)
	if c.workflow == "" {
		g = benchGatewayWith(b, up, true, nil)
		if c.bound == 0 {
			full = newBenchStore(b, missCacheMemory)
			fillStore(b, full, flowID, answer, ctype, missCacheMemory)
		}
	} else {
		g = benchGatewayWith(b, up, true, func(cfg *config.Config) {
			cacheFor(c.workflow)(cfg)
			cfg.Cache.MaxMemory = config.ByteSize(c.bound)
		})
		full = g.CacheStore()
		fillStore(b, full, c.workflow, answer, ctype, missCacheMemory)
	}
	body := in.next(c)
	if len(body) != len(missFixed) {
		b.Fatalf("input %q: not the length of %q", body, missFixed)
	}
	if got := serveReq(b, g, body, c.hdr...).Header().Get("X-Cache"); got != c.first {
		b.Fatalf("X-Cache %q, want %q", got, c.first)
	}
	return g, full
}

func BenchmarkGatewayCacheMiss(b *testing.B) {
	up := benchUpstream(b)
	var in missInputs
	for _, c := range missCases {
		b.Run(c.name, func(b *testing.B) {
			g, full := missSetup(b, up.URL, c, &in)
			var last string
			b.ReportAllocs()
			done := cpuPerOp(b)
			for b.Loop() {
				last = in.next(c)
				serveReq(b, g, last, c.hdr...)
			}
			done()
			// The answers were recorded and stored (or, without the
			// cache, not marked at all).
			if got := serveReq(b, g, last).Header().Get("X-Cache"); got != c.again {
				b.Fatalf("the last input again: X-Cache %q, want %q", got, c.again)
			}
			runtime.KeepAlive(full)
		})
	}
}

// BenchmarkGatewayCacheMissParallel is the same comparison with both cores
// kept busy (4 requests in flight per core): ns/op is the inverse of the
// throughput, as under wrk, and no core waits idle for loopback.
func BenchmarkGatewayCacheMissParallel(b *testing.B) {
	up := benchUpstream(b)
	var in missInputs
	for _, c := range missCases {
		b.Run(c.name, func(b *testing.B) {
			g, full := missSetup(b, up.URL, c, &in)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.ResetTimer() // RunParallel runs this function more than once: setup is not measured
			done := cpuPerOp(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					serveReq(b, g, in.next(c), c.hdr...)
				}
			})
			done()
			runtime.KeepAlive(full)
		})
	}
}

// upstreamAnswer is the upstream's answer to body, and its Content-Type.
func upstreamAnswer(b *testing.B, upstream, body string) ([]byte, string) {
	b.Helper()
	resp, err := http.Post(upstream+predictPath, "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("upstream: %d %v", resp.StatusCode, err)
	}
	return answer, resp.Header.Get("Content-Type")
}

// newBenchStore is a memory-only store as cmd/flowgate builds it.
func newBenchStore(b *testing.B, maxMemory int64) *cache.Store {
	b.Helper()
	st, err := cache.NewStore(cache.Options{MaxMemory: maxMemory, Metrics: metrics.New(prometheus.NewRegistry()), Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	return st
}

// fillStore stores distinct copies of answer under workflow until their
// weight (entry size plus key, as the store counts it) reaches maxMemory.
func fillStore(b *testing.B, st *cache.Store, workflow string, answer []byte, ctype string, maxMemory int64) {
	b.Helper()
	var weight int64
	for i := uint64(0); weight < maxMemory; i++ {
		e, err := cache.NewJSON(http.StatusOK, ctype, answer, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		k := cache.Key{Workflow: workflow}
		binary.LittleEndian.PutUint64(k.Sum[:], i)
		k.Sum[31] = 0xfe // not a sum a request derives
		st.Set(k, e, time.Hour)
		weight += int64(e.Size() + len(k.Workflow) + 1 + len(k.Sum))
	}
}
