package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

type report struct {
	Machine machine
	Command string
	Started time.Time
	Elapsed string
	JSON    map[string]*jsonAgg   `json:",omitempty"`
	Rate    []*rateAgg            `json:",omitempty"`
	Stream  map[string]*streamAgg `json:",omitempty"`
	Memory  map[string]*memAgg    `json:",omitempty"`
	Profile *profileOut           `json:",omitempty"`
	Sweep   *sweepOut             `json:",omitempty"`
}

// ---- JSON throughput ------------------------------------------------------

type jsonRound struct {
	Round   int
	Wrk     wrkOut
	CPUus   f64     // proxy CPU per request; NaN (null) for direct
	UpCPUus float64 // fakeflow CPU per request
	RPS     float64
	// Cache is what the cache-hit target's metrics counted during the
	// measured run (nil for the other targets).
	Cache *cacheDelta `json:",omitempty"`
	// Redis is what flowgate-quota-redis's redis-server counted during
	// the measured run (nil for the other targets); RedisCPUus is its CPU
	// per request.
	Redis      *redisDelta `json:",omitempty"`
	RedisCPUus f64         `json:",omitempty"`
	// Counted is what flowgate_requests_total counted during the
	// measured run, for flowgate (metrics on) and flowgate-nometrics
	// (off: 0); nil for the other targets.
	Counted *float64 `json:",omitempty"`
}

type jsonAgg struct {
	Rounds                 []jsonRound
	RPS, P50, P99, CPU, Up spread
	Redis                  spread // redis-server's CPU per request (flowgate-quota-redis)
	Errors                 int64
}

func jsonScenario(e *env, ts []*target, o options) (map[string]*jsonAgg, error) {
	logf("JSON throughput: wrk -t%d -c%d, %s per target, %d rounds", o.threads, o.conns, o.duration, o.rounds)
	agg := map[string]*jsonAgg{}
	for r := 0; r < o.rounds; r++ {
		for _, t := range rotate(ts, r) {
			ctx := context.Background()
			if t.name == cacheTarget {
				// The first request of the input may be a miss; the
				// one after must be a hit, or nothing here measures hits.
				if err := probeHit(t.url); err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
			}
			if isQuota(t.name) {
				// Admitted, with the quota's headers: the quota is on.
				if err := probeQuota(t.url); err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
			}
			if _, err := runWrk(ctx, e.dir, t.url, o.threads, o.conns, time.Second); err != nil { // warm-up
				logf("%s warm-up: %v", t.name, err)
			}
			var c0 cacheCounts
			if t.name == cacheTarget {
				var err error
				if c0, err = readCacheCounts(t.metricsURL); err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
			}
			var q0 map[string]float64
			var r0 redisCounts
			if isQuota(t.name) {
				var err error
				if q0, err = readMetricSums(t.metricsURL, quotaMetrics); err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
				if t.redis != nil {
					if r0, err = t.redis.counts(); err != nil {
						return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
					}
				}
			}
			var n0 float64
			if comparesMetrics(t.name) {
				var err error
				if n0, err = readRequestsCounted(t.metricsURL); err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
			}
			var cpu0 time.Duration
			if t.p != nil {
				cpu0 = t.p.cpuTime()
			}
			up0 := e.up.cpuTime()
			w, err := runWrk(ctx, e.dir, t.url, o.threads, o.conns, o.duration)
			// CPU read before the checks below scrape the target.
			var cpu1 time.Duration
			if t.p != nil {
				cpu1 = t.p.cpuTime()
			}
			up1 := e.up.cpuTime()
			if err != nil {
				logf("%s round %d: %v", t.name, r+1, err)
				continue
			}
			jr := jsonRound{Round: r + 1, Wrk: w, RPS: w.rps(), CPUus: nan}
			if t.name == cacheTarget {
				c1, err := readCacheCounts(t.metricsURL)
				if err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
				d := c1.since(c0)
				jr.Cache = &d
				if err := d.allHits(w.Requests, int64(o.conns)); err != nil {
					return nil, fmt.Errorf("%s round %d: wrk's requests were not all cache hits: %w", t.name, r+1, err)
				}
			}
			if isQuota(t.name) {
				q1, err := readMetricSums(t.metricsURL, quotaMetrics)
				if err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
				if err := quotaMoved(q0, q1); err != nil {
					return nil, fmt.Errorf("%s round %d: not every request was admitted by the quota as configured: %w", t.name, r+1, err)
				}
				if t.redis != nil {
					r1, err := t.redis.counts()
					if err != nil {
						return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
					}
					d := r1.since(r0)
					jr.Redis = &d
					if err := d.oneAdmitEach(w.Requests, int64(o.conns)); err != nil {
						return nil, fmt.Errorf("%s round %d: not one Redis admit per request: %w", t.name, r+1, err)
					}
				}
			}
			if comparesMetrics(t.name) {
				n1, err := readRequestsCounted(t.metricsURL)
				if err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
				if err := metricsAsConfigured(t.name, n0, n1, w.Requests, int64(o.conns)); err != nil {
					return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
				}
				d := n1 - n0
				jr.Counted = &d
			}
			if w.Requests > 0 {
				if t.p != nil {
					jr.CPUus = f64(us(cpu1-cpu0) / float64(w.Requests))
				}
				jr.UpCPUus = us(up1-up0) / float64(w.Requests)
				if jr.Redis != nil {
					jr.RedisCPUus = f64(jr.Redis.CPUus / float64(w.Requests))
				}
			}
			a := agg[t.name]
			if a == nil {
				a = &jsonAgg{}
				agg[t.name] = a
			}
			a.Rounds = append(a.Rounds, jr)
			a.Errors += w.errors()
			logf("  %-8s round %d: %s req/s  p50 %s  p99 %s  proxy CPU %s/req  errors %d%s%s",
				t.name, r+1, fmtInt(jr.RPS), fmtUS(w.P50), fmtUS(w.P99), fmtUS(float64(jr.CPUus)), w.errors(), jr.Cache.String(), jr.Redis.String())
		}
	}
	for _, a := range agg {
		var rps, p50, p99, cpu, up, rcpu []float64
		for _, r := range a.Rounds {
			rps = append(rps, r.RPS)
			p50 = append(p50, r.Wrk.P50)
			p99 = append(p99, r.Wrk.P99)
			if !math.IsNaN(float64(r.CPUus)) {
				cpu = append(cpu, float64(r.CPUus))
			}
			up = append(up, r.UpCPUus)
			if r.Redis != nil {
				rcpu = append(rcpu, float64(r.RedisCPUus))
			}
		}
		a.RPS, a.P50, a.P99, a.CPU, a.Up = spreadOf(rps), spreadOf(p50), spreadOf(p99), spreadOf(cpu), spreadOf(up)
		a.Redis = spreadOf(rcpu)
	}
	return agg, nil
}

// ---- moderate load (open loop, fixed rate) -------------------------------

type rateRound struct {
	Round               int
	Sent, OK, Errors    int64
	Late                int64
	P50, P90, P99, P999 float64 // µs
	AddedP50, AddedP99  f64     // over direct in the same round, µs; NaN (null) without direct
}

type rateAgg struct {
	Rate    int
	Why     string
	Targets map[string][]rateRound
}

func rateScenario(ts []*target, rate int, why string, o options) *rateAgg {
	logf("fixed-rate load: %d req/s (%s), open loop over %d connections, %s per target, %d rounds", rate, why, o.rateConns, o.rateDur, o.rounds)
	ra := &rateAgg{Rate: rate, Why: why, Targets: map[string][]rateRound{}}
	for r := 0; r < o.rounds; r++ {
		got := map[string]*rateRound{}
		for _, t := range rotate(ts, r) {
			_, _ = runRate(t.url, rate, 500*time.Millisecond, o.rateConns) // warm-up
			out, err := runRate(t.url, rate, o.rateDur, o.rateConns)
			if err != nil {
				logf("%s: %v", t.name, err)
				continue
			}
			rr := &rateRound{Round: r + 1, Sent: out.Sent, OK: out.OK, Errors: out.Errors, Late: out.Late,
				P50: us(pct(out.Lat, 50)), P90: us(pct(out.Lat, 90)), P99: us(pct(out.Lat, 99)), P999: us(pct(out.Lat, 99.9)),
				AddedP50: nan, AddedP99: nan}
			got[t.name] = rr
			logf("  %-8s round %d: p50 %s  p99 %s  p99.9 %s  (%d ok, %d errors, %d late)",
				t.name, r+1, fmtUS(rr.P50), fmtUS(rr.P99), fmtUS(rr.P999), rr.OK, rr.Errors, rr.Late)
		}
		for name, rr := range got {
			if d, ok := got["direct"]; ok {
				rr.AddedP50, rr.AddedP99 = f64(rr.P50-d.P50), f64(rr.P99-d.P99)
			}
			ra.Targets[name] = append(ra.Targets[name], *rr)
		}
	}
	return ra
}

// ---- streaming -----------------------------------------------------------

type streamRound struct {
	Round                            int
	Frames, Streams, Errors          int
	FirstError                       string `json:",omitempty"`
	DelayP50, DelayP99, DelayP999    float64
	TTFTP50, TTFTP99                 float64
	AddedP50, AddedP99, AddedTTFTP50 f64 // NaN (null) without direct
}

type streamAgg struct {
	Rounds []streamRound
}

func streamScenario(ts []*target, o options) map[string]*streamAgg {
	logf("streaming: %d concurrent streams x %d in a row, %d tokens each, %s apart, %d rounds",
		o.streams, o.perWorker, o.tokens, o.tokenDelay, o.rounds)
	agg := map[string]*streamAgg{}
	for r := 0; r < o.rounds; r++ {
		got := map[string]*streamRound{}
		for _, t := range rotate(ts, r) {
			out := runStreams(t.url, o.streams, o.perWorker, o.tokens, o.tokenDelay)
			sr := &streamRound{Round: r + 1, Frames: len(out.Delay), Streams: out.Streams, Errors: out.Errors, FirstError: out.FirstErr,
				DelayP50: us(pct(out.Delay, 50)), DelayP99: us(pct(out.Delay, 99)), DelayP999: us(pct(out.Delay, 99.9)),
				TTFTP50: us(pct(out.TTFT, 50)), TTFTP99: us(pct(out.TTFT, 99)),
				AddedP50: nan, AddedP99: nan, AddedTTFTP50: nan}
			got[t.name] = sr
			logf("  %-8s round %d: frame delay p50 %s p99 %s  TTFT p50 %s p99 %s  (%d streams, %d errors %s)",
				t.name, r+1, fmtUS(sr.DelayP50), fmtUS(sr.DelayP99), fmtUS(sr.TTFTP50), fmtUS(sr.TTFTP99), sr.Streams, sr.Errors, sr.FirstError)
		}
		for name, sr := range got {
			if d, ok := got["direct"]; ok {
				sr.AddedP50, sr.AddedP99, sr.AddedTTFTP50 = f64(sr.DelayP50-d.DelayP50), f64(sr.DelayP99-d.DelayP99), f64(sr.TTFTP50-d.TTFTP50)
			}
			if agg[name] == nil {
				agg[name] = &streamAgg{}
			}
			agg[name].Rounds = append(agg[name].Rounds, *sr)
		}
	}
	return agg
}

// ---- memory ----------------------------------------------------------------

type memAgg struct {
	Streams, Opened int
	IdleKiB         int64
	HeldKiB         int64
	PerStreamKiB    float64
	Error           string `json:",omitempty"`
}

func memoryScenario(e *env, o options) map[string]*memAgg {
	logf("memory: RSS holding %d open streams, minus idle RSS, per stream", o.memStreams)
	out := map[string]*memAgg{}
	for _, kind := range o.targets {
		if kind == "direct" || !measuredIn(kind, "memory") {
			continue
		}
		out[kind] = memoryRun(e, kind, o.memStreams, "-mem")
	}
	return out
}

// memoryRun starts a fresh proxy of a kind, measures its idle RSS, holds n
// open streams through it and measures again, then stops it.
func memoryRun(e *env, kind string, n int, tag string) *memAgg {
	ma := &memAgg{Streams: n}
	hold, start := holdStreams, kind
	if kind == flowgateH2Target {
		hold, start = holdStreamsH2, flowgateTLSTarget
	}
	t, err := e.startTarget(start, tag)
	if err != nil {
		ma.Error = err.Error()
		logf("  %s: %v", kind, err)
		return ma
	}
	// Warm the paths a stream takes, then let the process settle.
	if kind == flowgateH2Target {
		closeWarm, _, _ := holdStreamsH2(t.url, 10, 0)
		time.Sleep(200 * time.Millisecond)
		closeWarm()
	} else {
		_ = runStreams(t.url, 10, 1, 5, 0)
		_, _ = runRate(t.url, 200, time.Second, 4)
	}
	time.Sleep(time.Second)
	ma.IdleKiB = t.p.rssKiB()
	closeAll, opened, err := hold(t.url, n, time.Minute)
	ma.Opened = opened
	if err != nil {
		ma.Error = err.Error()
	}
	time.Sleep(2 * time.Second)
	for i := 0; i < 3; i++ {
		if v := t.p.rssKiB(); v > ma.HeldKiB {
			ma.HeldKiB = v
		}
		time.Sleep(500 * time.Millisecond)
	}
	closeAll()
	if opened > 0 {
		ma.PerStreamKiB = float64(ma.HeldKiB-ma.IdleKiB) / float64(opened)
	}
	logf("  %-8s idle %d KiB, holding %d of %d streams %d KiB: %.1f KiB/stream %s",
		kind, ma.IdleKiB, opened, n, ma.HeldKiB, ma.PerStreamKiB, ma.Error)
	t.p.stop()
	// Let fakeflow notice the closed streams (more time for more of them).
	time.Sleep(time.Second + time.Duration(n/5000)*time.Second)
	return ma
}

// ---- profile ---------------------------------------------------------------

type profileOut struct {
	RPS       float64
	CPUFile   string
	AllocFile string
	TopCum    string
	TopFlat   string
	AllocTop  string
	// Heap in use while holding streams, by allocation site.
	HeapFile    string
	HeapStreams int
	HeapTop     string
	MemStats    string // runtime.MemStats lines while holding the streams
	Goroutines  string
	HeldRSSKiB  int64
}

func profileScenario(e *env, o options) (*profileOut, error) {
	dir := filepath.Join(e.dir, "profile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, _ := freePort()
	mport, _ := freePort()
	pport, _ := freePort()
	conf := filepath.Join(dir, "flowgate.yaml")
	if err := os.WriteFile(conf, []byte(flowgateConf(port, mport, e.upURL, e.flowgateAccessLog)), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc("flowgate-profiled", e.flowgate, []string{"-config", conf, "-pprof", fmt.Sprintf("127.0.0.1:%d", pport)},
		e.flowgateEnvFor(dir), filepath.Join(dir, "access.log"), false)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitReady(p, url, 15*time.Second); err != nil {
		return nil, err
	}
	d := o.duration
	if d < 5*time.Second {
		d = 5 * time.Second
	}
	logf("profile: flowgate -pprof under wrk -c%d for %s", o.conns, d)
	_, _ = runWrk(context.Background(), e.dir, url, o.threads, o.conns, time.Second)
	type res struct {
		w   wrkOut
		err error
	}
	ch := make(chan res, 1)
	go func() {
		w, err := runWrk(context.Background(), e.dir, url, o.threads, o.conns, d)
		ch <- res{w, err}
	}()
	time.Sleep(time.Second)
	po := &profileOut{CPUFile: filepath.Join(dir, "cpu.pprof"), AllocFile: filepath.Join(dir, "allocs.pprof")}
	secs := int((d - 2*time.Second) / time.Second)
	perr := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", pport, secs), po.CPUFile, d+10*time.Second)
	rr := <-ch
	if rr.err != nil {
		return nil, rr.err
	}
	po.RPS = rr.w.rps()
	if perr != nil {
		return po, perr
	}
	if err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/allocs", pport), po.AllocFile, 10*time.Second); err != nil {
		return po, err
	}
	pp := func(args ...string) string {
		out, err := exec.Command("go", append([]string{"tool", "pprof"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("go tool pprof: %v: %s", err, out)
		}
		return string(out)
	}
	po.TopCum = pp("-top", "-cum", "-nodecount=45", po.CPUFile)
	po.TopFlat = pp("-top", "-nodecount=30", po.CPUFile)
	po.AllocTop = pp("-top", "-sample_index=alloc_space", "-nodecount=25", po.AllocFile)

	// What an open stream holds: the in-use heap with streams open.
	closeAll, opened, err := holdStreams(url, o.memStreams, time.Minute)
	defer closeAll()
	if err != nil {
		logf("profile: holding streams: %v", err)
	}
	time.Sleep(2 * time.Second)
	po.HeapFile, po.HeapStreams = filepath.Join(dir, "heap-streams.pprof"), opened
	if err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", pport), po.HeapFile, 10*time.Second); err != nil {
		return po, err
	}
	po.HeapTop = pp("-top", "-sample_index=inuse_space", "-nodecount=25", po.HeapFile)
	txt := filepath.Join(dir, "heap-streams.txt")
	if err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?debug=1", pport), txt, 10*time.Second); err == nil {
		b, _ := os.ReadFile(txt)
		for _, l := range strings.Split(string(b), "\n") {
			for _, k := range []string{"# HeapAlloc", "# HeapSys", "# HeapInuse", "# HeapIdle", "# HeapReleased", "# Stack", "# Sys", "# NumGC"} {
				if strings.HasPrefix(l, k+" ") {
					po.MemStats += l + "\n"
				}
			}
		}
	}
	gtxt := filepath.Join(dir, "goroutines-streams.txt")
	if err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", pport), gtxt, 10*time.Second); err == nil {
		b, _ := os.ReadFile(gtxt)
		if i := bytes.IndexByte(b, '\n'); i > 0 {
			po.Goroutines = string(b[:i])
		}
	}
	po.HeldRSSKiB = p.rssKiB()
	return po, nil
}
