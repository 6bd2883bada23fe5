package proxy_test

import (
	"bufio"
	"bytes"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testredis"
	"github.com/flowgate/flowgate/ledger"
	"github.com/flowgate/flowgate/metering"
	"github.com/flowgate/flowgate/proxy"
	"github.com/flowgate/flowgate/quota"
	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// ---- quotas and metering (issue 8) ----------------------------------------
//
// BenchmarkGatewayQuotaMemory is BenchmarkGatewayServeHTTP's JSON request
// (access log on) with a quota policy on the workflow, counted in the
// process (no Redis), beside the same gateway without one, for benchstat
// -col /quota:
//
//	off              no quota (the enforcer is there, the workflow unlimited: a policy lookup)
//	on               a rate and a 24 h execution budget for the whole workflow, never refusing
//	on-per-caller    the same split by caller (the Authorization header, hashed)
//
// Metering is off in every variant (no Prices), so the difference is the
// quota check alone; with metering on, a run with a quota is priced as one
// without (the ledger is there in both). cpu-ns/op is the process's CPU
// per request (see cpuPerOp): run with -cpu 1 to compare the work, as for
// the cache benchmarks. mode=parallel keeps both cores busy (4 requests
// in flight per core). The target: at most 5 µs of CPU per request
// for the quota check without Redis.
//
// BenchmarkGatewayQuotaMetered compares quota=off and quota=on with
// metering on in both, as the binary runs.
//
// BenchmarkGatewayQuotaRedis is the same with the counts in a redis-server
// (internal/testredis): ns/op includes the admit script's round trip over
// loopback, cpu-ns/op only this process's share of it (redis-server's CPU
// is not counted).
//
// BenchmarkGatewayMeteredStream is a streamed prediction of 50 token frames
// through ServeHTTP, metering off (no Prices) and on (the bundled prices
// and a bbolt usage ledger, as cmd/flowgate runs it), for a classic
// chatflow (tokens estimated by the tokenizer, in the metering worker) and
// an Agentflow (usage reported in its events). ns/frame and cpu-ns/frame
// divide by every frame of the answer (start, tokens, metadata, end);
// the worker's pricing is in the process's CPU, so cpu-ns/frame counts
// all of metering's work, spread over the frames.
//
// BenchmarkGatewayMeteredStreamDelay measures the target itself, the delay
// metering adds per frame at p99: a gateway on a loopback socket in front
// of fakeflow stamping each token frame with its write time, 1 ms between
// tokens, the client noting when it read each frame (as bench/ does, in
// one process). p50-frame-ns and p99-frame-ns are over every token frame
// of the run, metering off and on.

// benchGatewayOpts builds a gateway as benchGatewayWith does, then lets opts add
// the quota, prices and ledger.
func benchGatewayOpts(b *testing.B, upstream string, mutate func(*config.Config), opts func(*proxy.Options, config.Config)) *proxy.Gateway {
	b.Helper()
	// Closed before the quota's and the ledger's (registered earlier).
	return benchGatewayFull(b, upstream, true, mutate, opts)
}

// benchQuotaPolicy never refuses during a run: a billion requests a second
// and a trillion executions a day, as bench/'s flowgate-quota target.
func benchQuotaPolicy(perCaller string) config.QuotaPolicy {
	return config.QuotaPolicy{
		Rate:      &config.RateLimit{Limit: 1_000_000_000, Per: config.Duration(time.Second)},
		Budgets:   []config.Budget{{Window: config.Duration(24 * time.Hour), Executions: 1_000_000_000_000}},
		PerCaller: perCaller,
	}
}

// withQuota sets pol on flowID (nil: no policy) and gives the gateway an
// enforcer built as cmd/flowgate builds it, on rdb when it is not nil.
func withQuota(b *testing.B, pol *config.QuotaPolicy, rdb redis.UniversalClient) (func(*config.Config), func(*proxy.Options, config.Config)) {
	mutate := func(c *config.Config) {
		if pol != nil {
			c.Quota.Workflows = map[string]config.QuotaPolicy{flowID: *pol}
		}
	}
	opts := func(o *proxy.Options, c config.Config) {
		q, err := quota.New(quota.Options{Config: c.Quota, Redis: rdb, CredentialHeaders: c.Cache.VaryHeaders, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(q.Close)
		o.Quota = q
	}
	return mutate, opts
}

// expectQuota fails the benchmark unless a request is admitted with (or,
// with want false, without) the quota's RateLimit headers.
func expectQuota(b *testing.B, h http.Handler, want bool, hdr ...string) {
	b.Helper()
	rec := serveReq(b, h, benchJSON, hdr...)
	if got := rec.Header().Get("Ratelimit-Limit") != ""; got != want {
		b.Fatalf("RateLimit-Limit %q: quota on is %v, want %v", rec.Header().Get("Ratelimit-Limit"), got, want)
	}
}

var quotaCases = []struct {
	name string
	pol  *config.QuotaPolicy
	hdr  []string
}{
	{"quota=off", nil, nil},
	{"quota=on", policyRef(benchQuotaPolicy("")), nil},
	{"quota=on-per-caller", policyRef(benchQuotaPolicy("authorization")), []string{"Authorization", "Bearer bench-caller-token"}},
}

func policyRef(p config.QuotaPolicy) *config.QuotaPolicy { return &p }

func benchQuota(b *testing.B, rdb func() redis.UniversalClient) {
	up := benchUpstream(b)
	for _, mode := range []string{"serial", "parallel"} {
		for _, c := range quotaCases {
			b.Run("mode="+mode+"/"+c.name, func(b *testing.B) {
				var client redis.UniversalClient
				if rdb != nil {
					client = rdb()
				}
				mutate, opts := withQuota(b, c.pol, client)
				g := benchGatewayOpts(b, up.URL, mutate, opts)
				expectQuota(b, g, c.pol != nil, c.hdr...) // dials the upstream (and Redis)
				b.ReportAllocs()
				if mode == "serial" {
					done := cpuPerOp(b)
					for b.Loop() {
						serveReq(b, g, benchJSON, c.hdr...)
					}
					done()
				} else {
					b.SetParallelism(4)
					b.ResetTimer()
					done := cpuPerOp(b)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							serveReq(b, g, benchJSON, c.hdr...)
						}
					})
					done()
				}
				expectQuota(b, g, c.pol != nil, c.hdr...) // still admitted
			})
		}
	}
}

func BenchmarkGatewayQuotaMemory(b *testing.B) { benchQuota(b, nil) }

// BenchmarkGatewayQuotaMetered is BenchmarkGatewayQuotaMemory's quota=off
// and quota=on with metering on in both, as cmd/flowgate runs them (the
// bundled prices and a bbolt ledger): what the quota adds to a request
// that is metered anyway (its decision carried to the metering worker,
// settled there, the ledger's record). cpu-ns/op includes the worker's
// pricing of each run (the tokenizer's estimate of a classic chatflow's
// answer), the same in both.
func BenchmarkGatewayQuotaMetered(b *testing.B) {
	up := benchUpstream(b)
	for _, mode := range []string{"serial", "parallel"} {
		for _, c := range quotaCases[:2] {
			b.Run("mode="+mode+"/"+c.name, func(b *testing.B) {
				mutate, withQ := withQuota(b, c.pol, nil)
				metered := withMetering(b, true)
				g := benchGatewayOpts(b, up.URL, mutate, func(o *proxy.Options, cfg config.Config) {
					withQ(o, cfg)
					metered(o, cfg)
				})
				expectQuota(b, g, c.pol != nil)
				b.ReportAllocs()
				done := cpuPerOp(b)
				if mode == "serial" {
					for b.Loop() {
						serveReq(b, g, benchJSON)
					}
				} else {
					b.SetParallelism(4)
					b.ResetTimer()
					done = cpuPerOp(b)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							serveReq(b, g, benchJSON)
						}
					})
				}
				done()
			})
		}
	}
}

func BenchmarkGatewayQuotaRedis(b *testing.B) {
	srv := testredis.Start(b)
	benchQuota(b, func() redis.UniversalClient {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		b.Cleanup(func() { _ = rdb.Close() })
		return rdb
	})
}

// ---- metering a stream -------------------------------------------------------

const benchStreamTokens = 50

// withMetering turns metering on as cmd/flowgate does without Redis: the
// bundled prices and the usage ledger in a bbolt file.
func withMetering(b *testing.B, on bool) func(*proxy.Options, config.Config) {
	return func(o *proxy.Options, _ config.Config) {
		if !on {
			return
		}
		db, err := bbolt.Open(filepath.Join(b.TempDir(), "flowgate.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		led, err := ledger.NewBolt(db, ledger.Options{Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = led.Close() })
		o.Prices, o.Ledger = metering.Bundled(), led
	}
}

// countFrames counts the SSE events of an answer.
func countFrames(body []byte) int { return bytes.Count(body, []byte("\n\n")) }

func BenchmarkGatewayMeteredStream(b *testing.B) {
	up := benchUpstream(b)
	for _, flowKind := range []string{fakeflow.ModeChatflow, fakeflow.ModeAgentflow} {
		for _, metered := range []bool{false, true} {
			name := "flow=" + flowKind + "/metering=" + map[bool]string{false: "off", true: "on"}[metered]
			b.Run(name, func(b *testing.B) {
				g := benchGatewayOpts(b, up.URL, nil, withMetering(b, metered))
				hdr := []string{fakeflow.HeaderTokens, strconv.Itoa(benchStreamTokens), fakeflow.HeaderMode, flowKind}
				rec := serveReq(b, g, benchStream, hdr...)
				frames := countFrames(rec.Body.Bytes())
				if frames < benchStreamTokens || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
					b.Fatalf("%d frames, Content-Type %q", frames, rec.Header().Get("Content-Type"))
				}
				b.ReportAllocs()
				t0 := time.Now()
				c0 := processCPU(b)
				for b.Loop() {
					serveReq(b, g, benchStream, hdr...)
				}
				if n := float64(b.N) * float64(frames); n > 0 {
					b.ReportMetric(float64(processCPU(b)-c0)/n, "cpu-ns/frame")
					b.ReportMetric(float64(time.Since(t0))/n, "ns/frame")
					b.ReportMetric(float64(frames), "frames/op")
				}
			})
		}
	}
}

// BenchmarkGatewayMeteredStreamDelay: one stream at a time over real
// sockets; each op is a stream of benchDelayTokens frames 1 ms apart.
const benchDelayTokens = 20

func BenchmarkGatewayMeteredStreamDelay(b *testing.B) {
	up := benchUpstream(b)
	for _, metered := range []bool{false, true} {
		b.Run("metering="+map[bool]string{false: "off", true: "on"}[metered], func(b *testing.B) {
			g := benchGatewayOpts(b, up.URL, nil, withMetering(b, metered))
			srv := httptest.NewServer(g)
			b.Cleanup(srv.Close)
			host := strings.TrimPrefix(srv.URL, "http://")
			req := []byte("POST " + predictPath + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\n" +
				fakeflow.HeaderTokens + ": " + strconv.Itoa(benchDelayTokens) + "\r\n" +
				fakeflow.HeaderTokenDelay + ": 1ms\r\n" + fakeflow.HeaderStamp + ": 1\r\n" +
				"Content-Length: " + strconv.Itoa(len(benchStream)) + "\r\n\r\n" + benchStream)
			c, err := net.Dial("tcp", host)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			br := bufio.NewReaderSize(c, 16<<10)
			var delays []time.Duration
			stream := func(keep bool) {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				rd := bufio.NewReaderSize(resp.Body, 4096)
				seen := 0
				for {
					line, err := rd.ReadSlice('\n')
					now := time.Now()
					if ns, ok := frameStamp(line); ok {
						seen++
						if keep {
							delays = append(delays, time.Duration(now.UnixNano()-ns))
						}
					}
					if err != nil {
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || seen != benchDelayTokens {
					b.Fatalf("status %d, %d of %d token frames", resp.StatusCode, seen, benchDelayTokens)
				}
			}
			stream(false) // dial the upstream
			b.ReportAllocs()
			for b.Loop() {
				stream(true)
			}
			if len(delays) > 0 {
				slices.Sort(delays)
				at := func(p float64) float64 { // nearest rank, as bench/ computes it
					return float64(delays[max(0, min(len(delays)-1, int(math.Ceil(p*float64(len(delays))))-1))])
				}
				b.ReportMetric(at(0.50), "p50-frame-ns")
				b.ReportMetric(at(0.99), "p99-frame-ns")
				b.ReportMetric(float64(len(delays)), "frames")
			}
		})
	}
}

var stampKey = []byte(`"` + fakeflow.StampField + `":`)

// frameStamp reads fakeflow's write stamp from a token frame's data line.
func frameStamp(line []byte) (int64, bool) {
	i := bytes.Index(line, stampKey)
	if i < 0 {
		return 0, false
	}
	d := line[i+len(stampKey):]
	j := 0
	for j < len(d) && d[j] >= '0' && d[j] <= '9' {
		j++
	}
	ns, err := strconv.ParseInt(string(d[:j]), 10, 64)
	return ns, err == nil
}
