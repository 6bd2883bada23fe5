package main

import (
	"fmt"
	"math"
	"strings"
)

var targetLabel = map[string]string{
	"direct":          "direct to fakeflow (the ceiling)",
	"nginx":           "nginx",
	"caddy":           "Caddy",
	"flowgate":        "flowgate (metrics + access log + metering on; quotas off; cache off)",
	noMetricsTarget:   "flowgate, metrics off (access log + metering on; quotas off; cache off)",
	baseTarget:        "flowgate, the -base binary (configured as flowgate)",
	cacheTarget:       "flowgate serving cache hits",
	quotaTarget:       "flowgate, quota on (counted in the process)",
	quotaRedisTarget:  "flowgate, quota on (counted in Redis)",
	"httputil":        "bare httputil.ReverseProxy (reference floor for a Go proxy)",
	floorTarget:       "floor: net/http server + flowgate's upstream client, nothing else",
	nginxTLSTarget:    "nginx, TLS",
	flowgateTLSTarget: "flowgate, TLS (metrics + access log + metering on)",
	flowgateH2Target:  "flowgate, TLS, streams over HTTP/2",
}

func (rep *report) render(o options) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "\n## flowgate vs nginx vs Caddy (%s)\n\n", m.Date)
	fmt.Fprintf(&b, "- machine: %s cores, %s, Linux %s\n", m.CPUs, m.CPUModel, m.Kernel)
	fmt.Fprintf(&b, "- %s; %s; %s; %s\n", m.Go, m.Nginx, strings.TrimSpace(firstField(m.Caddy)), firstWords(m.Wrk, 2))
	fmt.Fprintf(&b, "- command: `%s` (%s)\n", strings.TrimSpace(rep.Command), rep.Elapsed)
	fmt.Fprintf(&b, "- upstream: fakeflow, no latency; everything on 127.0.0.1; wrk, the proxy and fakeflow share the %s cores, nothing pinned\n", m.CPUs)

	if rep.JSON != nil {
		fmt.Fprintf(&b, "\n### JSON prediction throughput\n\n")
		fmt.Fprintf(&b, "wrk -t%d -c%d, keep-alive, POST %s with `%s`, %s per target per round, %d round(s) in rotating order. "+
			"Median over rounds, (min–max) when more than one round; ratios are of medians. CPU is user+system time of the proxy "+
			"process(es) (nginx: master + workers) divided by requests served.\n\n",
			o.threads, o.conns, predictPath, jsonBody, o.duration, o.rounds)
		t := &table{head: []string{"target", "req/s", "× nginx", "× direct", "p50", "× nginx", "× direct", "p99", "× nginx", "× direct", "proxy CPU/req", "fakeflow CPU/req", "errors"}}
		ng, dr := rep.JSON["nginx"], rep.JSON["direct"]
		med := func(a *jsonAgg, f func(*jsonAgg) spread) float64 {
			if a == nil {
				return math.NaN()
			}
			return f(a).Med
		}
		for _, name := range knownTargets {
			a := rep.JSON[name]
			if a == nil {
				continue
			}
			rps := func(x *jsonAgg) spread { return x.RPS }
			p50 := func(x *jsonAgg) spread { return x.P50 }
			p99 := func(x *jsonAgg) spread { return x.P99 }
			cpu := fmtUS(a.CPU.Med)
			if name == "direct" {
				cpu = "–"
			}
			t.add(targetLabel[name],
				fmtSpreadInt(a.RPS, len(a.Rounds)), ratio(a.RPS.Med, med(ng, rps)), ratio(a.RPS.Med, med(dr, rps)),
				fmtSpreadUS(a.P50, len(a.Rounds)), ratio(a.P50.Med, med(ng, p50)), ratio(a.P50.Med, med(dr, p50)),
				fmtSpreadUS(a.P99, len(a.Rounds)), ratio(a.P99.Med, med(ng, p99)), ratio(a.P99.Med, med(dr, p99)),
				cpu, fmtUS(a.Up.Med), fmt.Sprint(a.Errors))
		}
		if rep.JSON[cacheTarget] == nil {
			t.add(targetLabel[cacheTarget], "not measured in this run (-targets without "+cacheTarget+")")
		}
		b.WriteString(t.String())
		if a := rep.JSON[cacheTarget]; a != nil {
			var hits, reqs int64
			for _, r := range a.Rounds {
				reqs += r.Wrk.Requests
				if r.Cache != nil {
					hits += r.Cache.Hits
				}
			}
			fmt.Fprintf(&b, "\n\"flowgate serving cache hits\" is a second flowgate, configured as the first plus `cache: {workflows: {%q: {enabled: true, ttl: 1h}}}` "+
				"(memory only), under the same wrk load: the same input on every connection. Checked in every round: a request sent as wrk sends it "+
				"came back with `X-Cache: HIT` before the run, and during the run flowgate's `flowgate_cache_requests_total` counted %s hits "+
				"(over the rounds) for %s requests completed by wrk, and no miss, refresh, bypass or coalesced answer; the fakeflow CPU/req column is what still "+
				"reached fakeflow (health probes).\n", flowID, fmtInt(float64(hits)), fmtInt(float64(reqs)))
		}
		if rep.JSON[quotaTarget] != nil || rep.JSON[quotaRedisTarget] != nil {
			b.WriteString(rep.renderQuota())
		}
		if rep.JSON["flowgate"] != nil && rep.JSON[noMetricsTarget] != nil {
			b.WriteString(rep.renderMetricsCost())
		}
	}

	for _, ra := range rep.Rate {
		fmt.Fprintf(&b, "\n### Added latency at a fixed %s req/s\n\n", fmtInt(float64(ra.Rate)))
		fmt.Fprintf(&b, "Open loop at %s req/s (%s) over %d keep-alive connections, "+
			"%s per target per round; latency from writing the request to reading the whole answer. "+
			"\"added\" is the target's percentile minus direct's in the same round (median over rounds, min–max). "+
			"\"late\" counts requests that found no free connection when due.\n\n",
			fmtInt(float64(ra.Rate)), ra.Why, o.rateConns, o.rateDur)
		t := &table{head: []string{"target", "p50", "p99", "p99.9", "added p50", "added p99", "errors", "late"}}
		for _, name := range knownTargets {
			rs := ra.Targets[name]
			if rs == nil {
				continue
			}
			var p50, p99, p999, a50, a99 []float64
			var errs, late int64
			for _, r := range rs {
				p50, p99, p999 = append(p50, r.P50), append(p99, r.P99), append(p999, r.P999)
				if !math.IsNaN(float64(r.AddedP99)) {
					a50, a99 = append(a50, float64(r.AddedP50)), append(a99, float64(r.AddedP99))
				}
				errs += r.Errors
				late += r.Late
			}
			n := len(rs)
			add50, add99 := "–", "–"
			if name != "direct" && len(a99) > 0 {
				add50, add99 = fmtSpreadUS(spreadOf(a50), n), fmtSpreadUS(spreadOf(a99), n)
			}
			t.add(targetLabel[name], fmtSpreadUS(spreadOf(p50), n), fmtSpreadUS(spreadOf(p99), n), fmtSpreadUS(spreadOf(p999), n),
				add50, add99, fmt.Sprint(errs), fmt.Sprint(late))
		}
		b.WriteString(t.String())
	}

	if rep.Stream != nil {
		fmt.Fprintf(&b, "\n### Streaming (SSE)\n\n")
		fmt.Fprintf(&b, "%d concurrent streams, each client running %d in a row on one keep-alive connection; %d tokens per stream, %s apart. "+
			"fakeflow stamps each token frame with its write time (X-Fakeflow-Stamp); delay = read time − stamp, same clock. "+
			"TTFT = request written to first token read. Added = minus direct in the same round. Median over rounds (min–max).\n\n",
			o.streams, o.perWorker, o.tokens, o.tokenDelay)
		t := &table{head: []string{"target", "frame delay p50", "frame delay p99", "added p50", "added p99", "TTFT p50", "TTFT p99", "frames", "errors"}}
		for _, name := range knownTargets {
			a := rep.Stream[name]
			if a == nil {
				continue
			}
			var d50, d99, a50, a99, t50, t99 []float64
			frames, errs := 0, 0
			first := ""
			for _, r := range a.Rounds {
				d50, d99, t50, t99 = append(d50, r.DelayP50), append(d99, r.DelayP99), append(t50, r.TTFTP50), append(t99, r.TTFTP99)
				if !math.IsNaN(float64(r.AddedP99)) {
					a50, a99 = append(a50, float64(r.AddedP50)), append(a99, float64(r.AddedP99))
				}
				frames += r.Frames
				errs += r.Errors
				if first == "" {
					first = r.FirstError
				}
			}
			n := len(a.Rounds)
			add50, add99 := "–", "–"
			if name != "direct" && len(a99) > 0 {
				add50, add99 = fmtSpreadUS(spreadOf(a50), n), fmtSpreadUS(spreadOf(a99), n)
			}
			e := fmt.Sprint(errs)
			if first != "" {
				e += " (" + first + ")"
			}
			t.add(targetLabel[name], fmtSpreadUS(spreadOf(d50), n), fmtSpreadUS(spreadOf(d99), n), add50, add99,
				fmtSpreadUS(spreadOf(t50), n), fmtSpreadUS(spreadOf(t99), n), fmtInt(float64(frames)), e)
		}
		b.WriteString(t.String())
	}

	if rep.Memory != nil {
		fmt.Fprintf(&b, "\n### Memory per open stream\n\n")
		fmt.Fprintf(&b, "A fresh proxy, warmed with a few requests; RSS (VmRSS; nginx: master + workers) idle, then holding %d open SSE streams "+
			"(each has sent its first token and waits a minute for the next); (held − idle) / streams.\n\n", o.memStreams)
		t := &table{head: []string{"proxy", "idle RSS", "RSS holding streams", "streams open", "per stream"}}
		for _, name := range knownTargets {
			ma := rep.Memory[name]
			if ma == nil {
				continue
			}
			per := fmt.Sprintf("%.1f KiB", ma.PerStreamKiB)
			if ma.Error != "" {
				per += " (" + ma.Error + ")"
			}
			t.add(targetLabel[name], fmt.Sprintf("%.1f MiB", float64(ma.IdleKiB)/1024), fmt.Sprintf("%.1f MiB", float64(ma.HeldKiB)/1024),
				fmt.Sprintf("%d of %d", ma.Opened, ma.Streams), per)
		}
		b.WriteString(t.String())
	}

	b.WriteString(rep.renderIssue12(o))

	if p := rep.Profile; p != nil {
		fmt.Fprintf(&b, "\n### Profile of flowgate under wrk load (%s req/s while profiled)\n\n", fmtInt(p.RPS))
		fmt.Fprintf(&b, "Files: %s, %s, %s\n\n", p.CPUFile, p.AllocFile, p.HeapFile)
		fmt.Fprintf(&b, "CPU, cumulative:\n\n```\n%s```\n\nCPU, flat:\n\n```\n%s```\n\nAllocated bytes over the run:\n\n```\n%s```\n\n", p.TopCum, p.TopFlat, p.AllocTop)
		fmt.Fprintf(&b, "Heap in use holding %d open streams (process RSS %.1f MiB; %s):\n\n```\n%s\n%s```\n",
			p.HeapStreams, float64(p.HeldRSSKiB)/1024, p.Goroutines, p.MemStats, p.HeapTop)
	}
	return b.String()
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return "Caddy " + f[0]
	}
	return s
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
	}
	return strings.Join(f, " ")
}

// renderQuota explains the quota targets' rows and gives their CPU per
// request over plain flowgate's, paired by round.
func (rep *report) renderQuota() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n\"flowgate, quota on\" is flowgate configured as the plain one plus "+
		"`quota: {workflows: {%q: {rate: {limit: %d, per: 1s}, budgets: [{window: 24h, executions: %d}]}}}` "+
		"(the whole workflow, no per_caller), so every request is checked and counted against a rate and a budget and none is refused; "+
		"\"counted in Redis\" adds `redis: {addr: ...}`, a redis-server the harness started (no persistence, loopback), which then also holds "+
		"the usage ledger. All three flowgate rows meter every run (classic chatflow answers: tokens estimated by the tokenizer in a worker, "+
		"the ledger in the embedded store or Redis). Checked in every round: a request sent as wrk sends it was admitted with RateLimit headers, "+
		"and flowgate counted no refusal and no failed Redis call during the run.\n\n", flowID, quotaRate, quotaExecutions)
	t := &table{head: []string{"quota", "flowgate CPU/req", "× nginx", "over quotas off (paired by round)", "redis-server CPU/req", "Redis admits per request", "ledger transactions/s"}}
	ng, off := rep.JSON["nginx"], rep.JSON["flowgate"]
	for _, name := range []string{"flowgate", quotaTarget, quotaRedisTarget} {
		a := rep.JSON[name]
		if a == nil {
			continue
		}
		n := len(a.Rounds)
		label := map[string]string{"flowgate": "off", quotaTarget: "on, in the process", quotaRedisTarget: "on, in Redis"}[name]
		over, rcpu, admits, tx := "–", "–", "–", "–"
		if name != "flowgate" && off != nil {
			if d := pairedCPU(a, off); len(d) > 0 {
				over = signed(fmtSpreadUS1(spreadOf(d), len(d)))
			}
		}
		if name == quotaRedisTarget {
			rcpu = fmtSpreadUS1(a.Redis, n)
			var ad, req, txs int64
			var secs float64
			for _, r := range a.Rounds {
				if r.Redis != nil {
					ad, txs = ad+r.Redis.Admits, txs+r.Redis.Transactions
					req += r.Wrk.Requests
					secs += float64(r.Wrk.DurationUS) / 1e6
				}
			}
			if req > 0 {
				admits = fmt.Sprintf("%.4f (%s for %s requests)", float64(ad)/float64(req), fmtInt(float64(ad)), fmtInt(float64(req)))
			}
			if secs > 0 {
				tx = fmt.Sprintf("%.0f", float64(txs)/secs)
			}
		}
		cpuRatio := "–"
		if ng != nil {
			cpuRatio = ratio(a.CPU.Med, ng.CPU.Med)
		}
		t.add(label, fmtSpreadUS1(a.CPU, n), cpuRatio, over, rcpu, admits, tx)
	}
	b.WriteString(t.String())
	b.WriteString("\n\"over quotas off\" is, in each round, the quota row's CPU per request minus plain flowgate's in the same round " +
		"(median over rounds, min–max); a signed value, since the rows' own spread is of the same order. " +
		"Admits are the EVALSHA/EVAL calls redis-server counted (INFO commandstats): one round trip per request; " +
		"the ledger's transactions are its batched writes, off the request path.\n")
	return b.String()
}

// pairedCPU is a's CPU per request minus base's, round by round.
func pairedCPU(a, base *jsonAgg) []float64 {
	return paired(a, base, func(r jsonRound) float64 { return float64(r.CPUus) }, func(x, y float64) float64 { return x - y })
}

// pairedRPS is a's throughput over base's, round by round.
func pairedRPS(a, base *jsonAgg) []float64 {
	return paired(a, base, func(r jsonRound) float64 { return r.RPS }, func(x, y float64) float64 { return x / y })
}

// paired applies op to a's value and base's of each round both measured
// (values NaN or, for a ratio, a zero base left out).
func paired(a, base *jsonAgg, val func(jsonRound) float64, op func(x, y float64) float64) []float64 {
	byRound := map[int]float64{}
	for _, r := range base.Rounds {
		if v := val(r); !math.IsNaN(v) {
			byRound[r.Round] = v
		}
	}
	var out []float64
	for _, r := range a.Rounds {
		if v, ok := byRound[r.Round]; ok && !math.IsNaN(val(r)) {
			if d := op(val(r), v); !math.IsNaN(d) && !math.IsInf(d, 0) {
				out = append(out, d)
			}
		}
	}
	return out
}

// metricsLossLimit is issue 10's acceptance: metrics on may cost at most
// 3 % of flowgate's JSON throughput against metrics off.
const metricsLossLimit = 0.03

// renderMetricsCost compares flowgate with its metrics on and off
// (noMetricsTarget), measured in the same rounds: throughput as a ratio
// and CPU per request as a difference, each paired by round.
func (rep *report) renderMetricsCost() string {
	on, off := rep.JSON["flowgate"], rep.JSON[noMetricsTarget]
	var b strings.Builder
	b.WriteString("\n### Metrics cost\n\n")
	rs, ds := pairedRPS(on, off), pairedCPU(on, off)
	r, d, n := spreadOf(rs), spreadOf(ds), len(rs)
	if n == 0 {
		b.WriteString("metrics cost: not measured (no round has both flowgate and " + noMetricsTarget + ")\n")
		return b.String()
	}
	verdict := "within"
	if 1-r.Med > metricsLossLimit {
		verdict = "over"
	}
	fmt.Fprintf(&b, "metrics cost: flowgate's JSON throughput is **%.3f ×** %s's (%s; ratio of the medians %.3f), "+
		"a throughput loss of %s, %s issue 10's limit of %.0f %%; proxy CPU per request %s with metrics on.\n\n",
		r.Med, noMetricsTarget, fmtRange(r, n, "%.3f", "min–max over %d paired rounds"), on.RPS.Med/off.RPS.Med,
		fmtLoss(r, n), verdict, metricsLossLimit*100, signed(fmtSpreadUS1(d, len(ds))))
	t := &table{head: []string{"", "metrics on (flowgate)", "metrics off (" + noMetricsTarget + ")", "on vs off, paired by round"}}
	t.add("req/s", fmtSpreadInt(on.RPS, len(on.Rounds)), fmtSpreadInt(off.RPS, len(off.Rounds)), fmtRatioSpread(r, n)+" ×")
	t.add("proxy CPU/req", fmtSpreadUS1(on.CPU, len(on.Rounds)), fmtSpreadUS1(off.CPU, len(off.Rounds)), signed(fmtSpreadUS1(d, len(ds))))
	p99 := spreadOf(paired(on, off, func(r jsonRound) float64 { return r.Wrk.P99 }, func(x, y float64) float64 { return x / y }))
	t.add("p99", fmtSpreadUS(on.P99, len(on.Rounds)), fmtSpreadUS(off.P99, len(off.Rounds)), fmtRatioSpread(p99, n)+" ×")
	b.WriteString(t.String())
	b.WriteString("\n\"metrics off\" is flowgate configured as the plain one plus `metrics: {enabled: false}` (no request-path metric recorded; " +
		"access log and metering on as in the plain one), measured in the same rounds in rotating order. The paired column is, in each round, " +
		"metrics on's value over (CPU: minus) metrics off's in the same round, median over rounds (min–max); the loss is 1 − that ratio.")
	counted := func(a *jsonAgg) (c, reqs float64, ok bool) {
		for _, r := range a.Rounds {
			if r.Counted != nil {
				c, reqs, ok = c+*r.Counted, reqs+float64(r.Wrk.Requests), true
			}
		}
		return
	}
	if c, reqs, ok := counted(on); ok {
		cOff, reqsOff, _ := counted(off)
		fmt.Fprintf(&b, " Checked in every round: flowgate's `%s` counted %s requests for %s completed by wrk (over the rounds); "+
			"%s's counted %s for %s.", requestsMetric, fmtInt(c), fmtInt(reqs), noMetricsTarget, fmtInt(cOff), fmtInt(reqsOff))
	}
	b.WriteString("\n")
	return b.String()
}

// fmtRatioSpread: "0.973 (0.950–0.990)".
func fmtRatioSpread(s spread, rounds int) string {
	if rounds <= 1 {
		return fmt.Sprintf("%.3f", s.Med)
	}
	return fmt.Sprintf("%.3f (%.3f–%.3f)", s.Med, s.Min, s.Max)
}

// fmtRange: the min–max of a spread in words, or "one round".
func fmtRange(s spread, rounds int, verb, words string) string {
	if rounds <= 1 {
		return "one round"
	}
	return fmt.Sprintf(verb+"–"+verb+", "+words, s.Min, s.Max, rounds)
}

// fmtLoss writes 1 − a throughput ratio as a percentage: "2.7 % (1.0 to
// 5.0 %)"; negative when metrics on was the faster.
func fmtLoss(r spread, rounds int) string {
	if rounds <= 1 {
		return fmt.Sprintf("%.1f %%", 100*(1-r.Med))
	}
	return fmt.Sprintf("%.1f %% (%.1f to %.1f %% over rounds)", 100*(1-r.Med), 100*(1-r.Max), 100*(1-r.Min))
}

// signed puts a + before a difference that has no sign.
func signed(s string) string {
	if s == "–" || strings.HasPrefix(s, "-") {
		return s
	}
	return "+" + s
}

// fmtUS1 is fmtUS with one decimal under 100 µs: quota costs are a few µs.
func fmtUS1(us float64) string {
	if !math.IsNaN(us) && math.Abs(us) < 100 {
		return fmt.Sprintf("%.1f µs", us)
	}
	return fmtUS(us)
}

func fmtSpreadUS1(s spread, rounds int) string {
	if rounds <= 1 {
		return fmtUS1(s.Med)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtUS1(s.Med), trimUnit(fmtUS1(s.Min)), trimUnit(fmtUS1(s.Max)))
}
