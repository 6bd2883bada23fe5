package main

import (
	"context"
	"time"
)

// The sweeps of issue 12: JSON throughput and p99 at a range of wrk
// connections (one point per target per count, after a warm-up), and the
// RSS of a fresh proxy holding a range of open streams. They draw the
// charts in docs/bench/ (see charts.go).

type sweepOut struct {
	JSON    map[string][]sweepPoint `json:",omitempty"` // by target, in the order of the counts
	Streams map[string][]*memAgg    `json:",omitempty"` // by target, in the order of the counts
}

type sweepPoint struct {
	Conns         int
	RPS, P50, P99 float64 // req/s, µs
	CPUus         f64     // proxy CPU per request; NaN (null) for direct
	Errors        int64
}

// connsSweep runs wrk at each connection count against each target, the
// target order rotating from one count to the next.
func connsSweep(e *env, ts []*target, o options) map[string][]sweepPoint {
	out := map[string][]sweepPoint{}
	if len(ts) == 0 {
		return out
	}
	logf("sweep: JSON throughput at %v connections, wrk -t%d, %s per target per point", o.sweepConns, o.threads, o.sweepDuration)
	for i, c := range o.sweepConns {
		for _, t := range rotate(ts, i) {
			ctx := context.Background()
			if _, err := runWrk(ctx, e.dir, t.url, o.threads, c, time.Second); err != nil { // warm-up at this count
				logf("%s warm-up: %v", t.name, err)
			}
			var cpu0 time.Duration
			if t.p != nil {
				cpu0 = t.p.cpuTime()
			}
			w, err := runWrk(ctx, e.dir, t.url, o.threads, c, o.sweepDuration)
			var cpu1 time.Duration
			if t.p != nil {
				cpu1 = t.p.cpuTime()
			}
			if err != nil {
				logf("%s at %d connections: %v", t.name, c, err)
				continue
			}
			pt := sweepPoint{Conns: c, RPS: w.rps(), P50: w.P50, P99: w.P99, CPUus: nan, Errors: w.errors()}
			if t.p != nil && w.Requests > 0 {
				pt.CPUus = f64(us(cpu1-cpu0) / float64(w.Requests))
			}
			out[t.name] = append(out[t.name], pt)
			logf("  %-14s %5d conns: %s req/s  p50 %s  p99 %s  proxy CPU %s/req  errors %d",
				t.name, c, fmtInt(pt.RPS), fmtUS(pt.P50), fmtUS(pt.P99), fmtUS(float64(pt.CPUus)), pt.Errors)
		}
	}
	return out
}

// streamsSweep measures, for each target and each count, a fresh proxy's
// RSS holding that many open streams.
func streamsSweep(e *env, o options) map[string][]*memAgg {
	out := map[string][]*memAgg{}
	logf("sweep: RSS holding %v open streams, a fresh proxy each", o.sweepStreams)
	for _, n := range o.sweepStreams {
		for _, kind := range o.sweepMemTarget {
			if kind != flowgateH2Target && (kind == "direct" || !measuredIn(kind, "memory")) {
				continue
			}
			out[kind] = append(out[kind], memoryRun(e, kind, n, "-sweep"))
		}
	}
	return out
}

// heldAt is a target's memory point at n streams, or nil.
func (s *sweepOut) heldAt(kind string, n int) *memAgg {
	if s == nil {
		return nil
	}
	for _, m := range s.Streams[kind] {
		if m.Streams == n {
			return m
		}
	}
	return nil
}
