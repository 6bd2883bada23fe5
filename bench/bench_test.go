package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
)

// The harness itself runs for minutes and is not run by tests; these check
// its arithmetic and its configs.

func TestPct(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0, 1}, {99.9, 100}} {
		if got := pct(ds, c.p); got != c.want {
			t.Errorf("pct(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if pct(nil, 50) != 0 {
		t.Error("pct of nothing")
	}
}

func TestSpreadOf(t *testing.T) {
	s := spreadOf([]float64{3, 1, 2})
	if s != (spread{2, 1, 3}) {
		t.Errorf("spreadOf = %+v", s)
	}
	if s := spreadOf([]float64{4, 1}); s.Med != 2.5 {
		t.Errorf("even median %v", s.Med)
	}
	if s := spreadOf(nil); !math.IsNaN(s.Med) {
		t.Errorf("empty spread %+v", s)
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 37570.4: "37,570", -1234567: "-1,234,567"} {
		if got := fmtInt(in); got != want {
			t.Errorf("fmtInt(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{812: "812 µs", 1540: "1.54 ms", 12900: "12.9 ms"} {
		if got := fmtUS(in); got != want {
			t.Errorf("fmtUS(%v) = %q, want %q", in, got, want)
		}
	}
	if got := ratio(2, 4); got != "0.50" {
		t.Errorf("ratio = %q", got)
	}
}

func TestReadStatSelf(t *testing.T) {
	st, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != os.Getppid() {
		t.Errorf("ppid %d, want %d", st.ppid, os.Getppid())
	}
}

// The configs listen on loopback only and carry what the comparison claims.
func TestConfigs(t *testing.T) {
	n := nginxConf("/tmp/x", 18080, "127.0.0.1:3000")
	for _, want := range []string{
		"listen 127.0.0.1:18080;", "keepalive 256;", "proxy_http_version 1.1;", "client_max_body_size 100m;",
		"gzip_min_length 1024;", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Real-IP $remote_addr",
		"access_log /tmp/x/access.log main;", "worker_processes auto;", "Content-Security-Policy",
	} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	c := caddyfile("/tmp/x", 18080, "127.0.0.1:3000")
	for _, want := range []string{"bind 127.0.0.1", "admin off", "lb_policy least_conn", "output file /tmp/x/access.log"} {
		if !strings.Contains(c, want) {
			t.Errorf("Caddyfile lacks %q", want)
		}
	}
	f := flowgateConf(18080, 18090, "http://127.0.0.1:3000", true)
	for _, want := range []string{`listen: "127.0.0.1:18080"`, `metrics_listen: "127.0.0.1:18090"`, "access_log: true"} {
		if !strings.Contains(f, want) {
			t.Errorf("flowgate config lacks %q", want)
		}
	}
}

// TestNginxConfValid asks nginx itself, where it is installed.
func TestNginxConfValid(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Skip("nginx not installed")
		}
		bin = "/usr/sbin/nginx"
	}
	if _, err := os.Stat("/etc/nginx/mime.types"); err != nil {
		t.Skip("no /etc/nginx/mime.types")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(dir, 18080, "127.0.0.1:3000")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// TestCaddyfileValid asks caddy itself, where it is installed.
func TestCaddyfileValid(t *testing.T) {
	bin, err := exec.LookPath("caddy")
	if err != nil {
		t.Skip("caddy not installed")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(caddyfile(dir, 18080, "127.0.0.1:3000")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "validate", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
}

// Values not measured (NaN) must not stop results.json from being written.
func TestReportJSONWithNaN(t *testing.T) {
	rep := report{
		JSON:   map[string]*jsonAgg{"direct": {Rounds: []jsonRound{{CPUus: nan}}, CPU: spreadOf(nil)}},
		Rate:   []*rateAgg{{Targets: map[string][]rateRound{"direct": {{AddedP50: nan, AddedP99: nan}}}}},
		Stream: map[string]*streamAgg{"direct": {Rounds: []streamRound{{AddedP50: nan, AddedP99: nan, AddedTTFTP50: nan}}}},
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"CPUus":null`) {
		t.Errorf("NaN not written as null: %s", b)
	}
}

// The cache-hit target's config parses, turns the cache on for the
// benchmark's flow only, and leaves the rest as the plain flowgate target's.
func TestCacheTargetConfig(t *testing.T) {
	text := flowgateConf(18080, 18090, "http://127.0.0.1:3000", true) + flowgateCacheSection(flowID)
	c, err := config.Parse([]byte(text), "flowgate.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if p := c.Cache.Policy(flowID); !p.Enabled || p.TTL != time.Hour {
		t.Errorf("policy of the benchmark's flow: %+v", p)
	}
	if c.Cache.Policy("another").Enabled {
		t.Error("the cache is on for other flows too")
	}
	if c.Redis.Addr != "" {
		t.Errorf("redis.addr %q: the target is memory only", c.Redis.Addr)
	}
	if c.Server.Listen != "127.0.0.1:18080" {
		t.Errorf("listen %q", c.Server.Listen)
	}
	if !slices.Contains(allTargets, cacheTarget) || !jsonOnly(cacheTarget) || jsonOnly("flowgate") {
		t.Error("flowgate-cache: in the default targets, JSON scenario only")
	}
}

func TestCacheCounts(t *testing.T) {
	before, err := parseCacheCounts(strings.NewReader(`# HELP flowgate_cache_requests_total Flow requests ...
# TYPE flowgate_cache_requests_total counter
flowgate_cache_requests_total{result="hit"} 10
flowgate_cache_requests_total{result="miss"} 1
flowgate_requests_total{method="POST",route="prediction",status="200"} 11
`))
	if err != nil {
		t.Fatal(err)
	}
	if before["hit"] != 10 || before["miss"] != 1 || len(before) != 2 {
		t.Fatalf("parsed %v", before)
	}
	after, _ := parseCacheCounts(strings.NewReader("flowgate_cache_requests_total{result=\"hit\"} 1.00064e+06\nflowgate_cache_requests_total{result=\"miss\"} 1\n"))
	d := after.since(before)
	if d.Hits != 1000630 || d.Others != nil {
		t.Fatalf("delta %+v", d)
	}
	if err := d.allHits(1000600, 64); err != nil {
		t.Errorf("all hits refused: %v", err)
	}
	if err := d.allHits(1000700, 64); err == nil {
		t.Error("fewer hits than requests accepted")
	}
	if err := d.allHits(1000630-128, 64); err != nil {
		t.Errorf("the tails of the warm-up and of the run refused: %v", err)
	}
	if err := d.allHits(1000630-129, 64); err == nil {
		t.Error("more hits than requests in flight could explain accepted")
	}
	moved, _ := parseCacheCounts(strings.NewReader("flowgate_cache_requests_total{result=\"hit\"} 20\nflowgate_cache_requests_total{result=\"miss\"} 2\nflowgate_cache_requests_total{result=\"coalesced\"} 3\n"))
	if err := moved.since(before).allHits(10, 64); err == nil || !strings.Contains(err.Error(), "miss") {
		t.Errorf("a miss during the run accepted: %v", err)
	}
}

// The quota targets' configs parse; the quota is on for the benchmark's
// flow only, never refuses in a run, and Redis is set only for the Redis
// target. Every flowgate gets its own store directory.
func TestQuotaTargetConfig(t *testing.T) {
	base := flowgateConf(18080, 18090, "http://127.0.0.1:3000", true)
	for _, withRedis := range []bool{false, true} {
		text := base + flowgateQuotaSection(flowID)
		if withRedis {
			text += flowgateRedisSection("127.0.0.1:16379")
		}
		c, err := config.Parse([]byte(text), "flowgate.yaml")
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		p, ok := c.Quota.Workflows[flowID]
		if !ok || len(c.Quota.Workflows) != 1 || !c.Quota.Default.IsZero() {
			t.Fatalf("quota %+v", c.Quota)
		}
		if p.Rate == nil || p.Rate.Limit != quotaRate || p.Rate.Per.D() != time.Second || p.PerCaller != "" {
			t.Errorf("rate %+v, per_caller %q", p.Rate, p.PerCaller)
		}
		if len(p.Budgets) != 1 || p.Budgets[0].Executions != quotaExecutions || p.Budgets[0].Window.D() != 24*time.Hour {
			t.Errorf("budgets %+v", p.Budgets)
		}
		if want := map[bool]string{false: "", true: "127.0.0.1:16379"}[withRedis]; c.Redis.Addr != want {
			t.Errorf("redis.addr %q, want %q", c.Redis.Addr, want)
		}
		if c.Cache.AnyEnabled() {
			t.Error("the cache is on")
		}
	}
	for _, k := range []string{quotaTarget, quotaRedisTarget} {
		if !slices.Contains(allTargets, k) || !jsonOnly(k) || !isQuota(k) || !slices.Contains(knownTargets, k) {
			t.Errorf("%s: in the default targets, JSON scenario only", k)
		}
	}
	if isQuota("flowgate") || isQuota(cacheTarget) {
		t.Error("isQuota of a target without a quota")
	}
	e := &env{flowgateEnv: []string{"GOGC=400"}}
	a, b := e.flowgateEnvFor("/run/flowgate"), e.flowgateEnvFor("/run/flowgate-quota")
	if a[0] != "FLOWGATE_METERING_STORE_DIR=/run/flowgate/state" || b[0] == a[0] || a[len(a)-1] != "GOGC=400" {
		t.Errorf("store dirs %q, %q", a, b)
	}
}

func TestParseMetricSums(t *testing.T) {
	text := `# HELP flowgate_quota_rejections_total ...
# TYPE flowgate_quota_rejections_total counter
flowgate_quota_rejections_total{reason="rate_limited",workflow_id="a"} 3
flowgate_quota_rejections_total{reason="quota_exceeded",workflow_id="b"} 1e+00
flowgate_quota_rejections_total_other 7
flowgate_requests_total{method="POST",route="prediction",status="200"} 11
`
	got, err := parseMetricSums(strings.NewReader(text), quotaMetrics)
	if err != nil {
		t.Fatal(err)
	}
	if got["flowgate_quota_rejections_total"] != 4 || got["flowgate_quota_redis_errors_total"] != 0 || len(got) != 2 {
		t.Errorf("sums %v", got)
	}
	if err := quotaMoved(got, got); err != nil {
		t.Errorf("nothing moved: %v", err)
	}
	after := map[string]float64{"flowgate_quota_rejections_total": 4, "flowgate_quota_redis_errors_total": 2}
	if err := quotaMoved(got, after); err == nil || !strings.Contains(err.Error(), "redis_errors_total +2") {
		t.Errorf("a Redis error accepted: %v", err)
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=1001,usec=9000,usec_per_call=8.99,rejected_calls=0,failed_calls=1\r\n" +
		"cmdstat_eval:calls=1,usec=80,usec_per_call=80.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_hincrby:calls=3000,usec=3000,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_exec:calls=5,usec=50,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=9,usec=900,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n"
	c, err := parseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	if c.Admits != 1001 || c.Transactions != 5 || c.Commands != 1001+1+3000+5 {
		t.Errorf("counts %+v", c)
	}
	d := redisCounts{Admits: 1100}.since(redisCounts{Admits: 100})
	if err := d.oneAdmitEach(1000, 64); err != nil {
		t.Errorf("one admit per request refused: %v", err)
	}
	if err := d.oneAdmitEach(1001, 64); err == nil {
		t.Error("fewer admits than requests accepted")
	}
	if err := d.oneAdmitEach(1000-128, 64); err != nil {
		t.Errorf("the tails of the warm-up and of the run refused: %v", err)
	}
	if err := d.oneAdmitEach(500, 64); err == nil {
		t.Error("two admits per request accepted")
	}
	if _, err := parseCommandStats("# Server\r\n"); err == nil {
		t.Error("an answer without commandstats accepted")
	}
}

// The quota paragraph pairs rounds and gives Redis admits per request.
func TestRenderQuota(t *testing.T) {
	round := func(n int, cpu float64, reqs int64, rd *redisDelta) jsonRound {
		r := jsonRound{Round: n, CPUus: f64(cpu), Wrk: wrkOut{Requests: reqs, DurationUS: 8e6}, Redis: rd}
		if rd != nil {
			r.RedisCPUus = f64(rd.CPUus / float64(reqs))
		}
		return r
	}
	agg := func(rs ...jsonRound) *jsonAgg {
		a := &jsonAgg{Rounds: rs}
		var cpu, rc []float64
		for _, r := range rs {
			cpu = append(cpu, float64(r.CPUus))
			if r.Redis != nil {
				rc = append(rc, float64(r.RedisCPUus))
			}
		}
		a.CPU, a.Redis = spreadOf(cpu), spreadOf(rc)
		return a
	}
	rep := report{JSON: map[string]*jsonAgg{
		"nginx":          agg(round(1, 20, 1000, nil), round(2, 20, 1000, nil)),
		"flowgate":       agg(round(1, 50, 1000, nil), round(2, 60, 1000, nil)),
		quotaTarget:      agg(round(1, 52, 1000, nil), round(2, 59, 1000, nil)),
		quotaRedisTarget: agg(round(1, 70, 1000, &redisDelta{Admits: 1000, Transactions: 80, CPUus: 20000}), round(2, 72, 1000, &redisDelta{Admits: 1010, Transactions: 80, CPUus: 22000})),
	}}
	out := rep.renderQuota()
	for _, want := range []string{
		"| on, in the process | 55.5 µs (52.0–59.0) | 2.77 | +0.5 µs (-1.0–2.0) |",
		"| on, in Redis | 71.0 µs (70.0–72.0) | 3.55 | +16.0 µs (12.0–20.0) | 21.0 µs (20.0–22.0) | 1.0050 (2,010 for 2,000 requests) | 10 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
}

// The metrics-off target's config parses, turns the request path's
// metrics off and leaves the rest as the plain flowgate target's (no
// quota, cache off, no Redis, the metrics listener still there); the plain
// target keeps the metrics on (the default).
func TestNoMetricsTargetConfig(t *testing.T) {
	base := flowgateConf(18080, 18090, "http://127.0.0.1:3000", true)
	plain, err := config.Parse([]byte(base), "flowgate.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, base)
	}
	if !config.Bool(plain.Metrics.Enabled, true) {
		t.Error("the plain flowgate target has its metrics off")
	}
	text := base + flowgateNoMetricsSection()
	c, err := config.Parse([]byte(text), "flowgate.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if c.Metrics.Enabled == nil || *c.Metrics.Enabled || config.Bool(c.Metrics.Enabled, true) {
		t.Errorf("metrics.enabled %v: want false", c.Metrics.Enabled)
	}
	if c.Server.Listen != "127.0.0.1:18080" || c.Server.MetricsListen != "127.0.0.1:18090" || c.Server.AdminListen != "" {
		t.Errorf("listeners %q, %q, %q", c.Server.Listen, c.Server.MetricsListen, c.Server.AdminListen)
	}
	if len(c.Quota.Workflows) != 0 || !c.Quota.Default.IsZero() || c.Cache.AnyEnabled() || c.Redis.Addr != "" {
		t.Errorf("not the plain target's: quota %+v, cache on %v, redis %q", c.Quota, c.Cache.AnyEnabled(), c.Redis.Addr)
	}
	c.Metrics.Enabled = nil
	cj, err1 := json.Marshal(c)
	pj, err2 := json.Marshal(plain)
	if err1 != nil || err2 != nil || string(cj) != string(pj) {
		t.Errorf("differs from the plain target's beyond metrics.enabled (%v, %v):\n%s\n%s", err1, err2, cj, pj)
	}

	k := noMetricsTarget
	if !slices.Contains(knownTargets, k) || !slices.Contains(allTargets, k) || jsonOnly(k) || isQuota(k) {
		t.Errorf("%s: a known target, in the default set, not JSON only, no quota", k)
	}
	for sc, want := range map[string]bool{"json": true, "stream": true, "rate": false, "memory": false} {
		if measuredIn(k, sc) != want {
			t.Errorf("measuredIn(%s, %s) = %v", k, sc, !want)
		}
	}
	for _, k := range []string{cacheTarget, quotaTarget, quotaRedisTarget} {
		if !measuredIn(k, "json") || measuredIn(k, "stream") || measuredIn(k, "rate") || measuredIn(k, "memory") {
			t.Errorf("%s: JSON scenario only", k)
		}
	}
	for _, sc := range []string{"json", "rate", "stream", "memory"} {
		if !measuredIn("flowgate", sc) || !measuredIn("nginx", sc) {
			t.Errorf("flowgate or nginx not in %s", sc)
		}
	}
	if measuredInAny(k, map[string]bool{"rate": true, "memory": true}) || !measuredInAny(k, map[string]bool{"stream": true}) ||
		measuredInAny(cacheTarget, map[string]bool{"stream": true, "rate": true}) || !measuredInAny(cacheTarget, map[string]bool{"json": true}) {
		t.Error("measuredInAny")
	}
}

// The metrics-cost paragraph pairs rounds: throughput as a ratio, CPU as
// a difference, and says whether the loss is within issue 10's 3 %.
func TestRenderMetricsCost(t *testing.T) {
	agg := func(rs ...jsonRound) *jsonAgg {
		a := &jsonAgg{Rounds: rs}
		var rps, cpu, p99 []float64
		for _, r := range rs {
			rps, cpu, p99 = append(rps, r.RPS), append(cpu, float64(r.CPUus)), append(p99, r.Wrk.P99)
		}
		a.RPS, a.CPU, a.P99 = spreadOf(rps), spreadOf(cpu), spreadOf(p99)
		return a
	}
	round := func(n int, rps, cpu float64, on bool) jsonRound {
		counted := 0.0
		if on {
			counted = rps * 8
		}
		return jsonRound{Round: n, RPS: rps, CPUus: f64(cpu), Wrk: wrkOut{P99: 10000, Requests: int64(rps * 8)}, Counted: &counted}
	}
	rep := report{JSON: map[string]*jsonAgg{
		"flowgate":      agg(round(1, 19000, 60, true), round(2, 19600, 58, true), round(3, 18000, 66, true)),
		noMetricsTarget: agg(round(1, 20000, 57, false), round(2, 20000, 55.5, false), round(3, 18000, 62, false)),
	}}
	out := rep.renderMetricsCost()
	for _, want := range []string{
		"is **0.980 ×** flowgate-nometrics's (0.950–1.000, min–max over 3 paired rounds; ratio of the medians 0.950)",
		"a throughput loss of 2.0 % (0.0 to 5.0 % over rounds), within issue 10's limit of 3 %",
		"proxy CPU per request +3.0 µs (2.5–4.0) with metrics on",
		"| req/s | 19,000 (18,000–19,600) | 20,000 (18,000–20,000) | 0.980 (0.950–1.000) × |",
		"| proxy CPU/req | 60.0 µs (58.0–66.0) | 57.0 µs (55.5–62.0) | +3.0 µs (2.5–4.0) |",
		"flowgate's `flowgate_requests_total` counted 452,800 requests for 452,800 completed by wrk (over the rounds); flowgate-nometrics's counted 0 for 464,000.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	rep.JSON["flowgate"].Rounds[1].RPS = 19000 // round 2: 0.950; median 0.950
	if out := rep.renderMetricsCost(); !strings.Contains(out, "loss of 5.0 %") || !strings.Contains(out, "over issue 10's limit") {
		t.Errorf("a 5 %% loss not over the limit:\n%s", out)
	}
	rep.JSON[noMetricsTarget].Rounds = []jsonRound{round(9, 1, 1, false)}
	if out := rep.renderMetricsCost(); !strings.Contains(out, "not measured") {
		t.Errorf("no paired round:\n%s", out)
	}
	full := (&report{JSON: map[string]*jsonAgg{"flowgate": rep.JSON["flowgate"]}}).render(options{rounds: 3})
	if strings.Contains(full, "Metrics cost") {
		t.Error("metrics cost rendered without flowgate-nometrics")
	}
}

func TestMetricsAsConfigured(t *testing.T) {
	if err := metricsAsConfigured(noMetricsTarget, 0, 0, 1000, 64); err != nil {
		t.Errorf("metrics off, nothing counted: %v", err)
	}
	if err := metricsAsConfigured(noMetricsTarget, 0, 3, 1000, 64); err == nil {
		t.Error("metrics off, yet requests counted: accepted")
	}
	for _, c := range []struct {
		after float64
		ok    bool
	}{{1000, true}, {1000 - 64, true}, {1000 - 65, false}, {1000 + 128, true}, {1000 + 129, false}, {0, false}} {
		if err := metricsAsConfigured("flowgate", 50, 50+c.after, 1000, 64); (err == nil) != c.ok {
			t.Errorf("metrics on, %v counted for 1000: %v", c.after, err)
		}
	}
	if !comparesMetrics("flowgate") || !comparesMetrics(noMetricsTarget) || comparesMetrics(quotaTarget) || comparesMetrics("nginx") {
		t.Error("comparesMetrics")
	}
}

// Issue 12: the floor target, the TLS targets, the sweeps and the verdicts.

func TestFloorTarget(t *testing.T) {
	if !slices.Contains(allTargets, floorTarget) || !slices.Contains(knownTargets, floorTarget) || targetLabel[floorTarget] == "" {
		t.Error("floor: in the default targets, with a row and a label")
	}
	for _, sc := range []string{"json", "rate", "stream", "memory"} {
		if !measuredIn(floorTarget, sc) {
			t.Errorf("floor not measured in %s", sc)
		}
	}
	if serveFloor([]string{"-upstream", "::bad"}) != 2 {
		t.Error("serve-floor accepted a bad upstream")
	}
}

func TestTLSTargets(t *testing.T) {
	got := withTLSTargets([]string{"direct", "nginx", "flowgate", nginxTLSTarget}, true)
	if want := []string{"direct", "nginx", "flowgate", nginxTLSTarget, flowgateTLSTarget}; !slices.Equal(got, want) {
		t.Errorf("with TLS: %v, want %v", got, want)
	}
	if got := withTLSTargets([]string{"nginx", flowgateTLSTarget}, false); !slices.Equal(got, []string{"nginx"}) {
		t.Errorf("without TLS: %v", got)
	}
	if got := withTLSTargets([]string{"flowgate"}, true); !slices.Equal(got, []string{"flowgate", flowgateTLSTarget}) {
		t.Errorf("flowgate alone: %v", got)
	}
	for _, k := range []string{nginxTLSTarget, flowgateTLSTarget} {
		if !jsonOnly(k) || !isTLS(k) || !slices.Contains(knownTargets, k) || targetLabel[k] == "" || measuredIn(k, "memory") {
			t.Errorf("%s: JSON scenario only, with a row and a label", k)
		}
	}
}

func TestSelfSignedCert(t *testing.T) {
	c, k, err := selfSignedCert(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA || leaf.VerifyHostname("127.0.0.1") != nil || leaf.VerifyHostname("localhost") != nil {
		t.Errorf("certificate: %v, hosts %v %v", leaf.PublicKeyAlgorithm, leaf.IPAddresses, leaf.DNSNames)
	}
}

func TestTLSConfigs(t *testing.T) {
	dir := t.TempDir()
	e := &env{dir: dir}
	if err := e.ensureCert(); err != nil {
		t.Fatal(err)
	}
	first := e.certFile
	if err := e.ensureCert(); err != nil || e.certFile != first {
		t.Error("a second certificate in one run")
	}
	n := nginxTLSConf(nginxConf(dir, 18443, "127.0.0.1:3000"), 18443, e.certFile, e.keyFile)
	for _, want := range []string{"listen 127.0.0.1:18443 ssl;", "ssl_certificate " + e.certFile + ";", "ssl_protocols TLSv1.2 TLSv1.3;",
		"ECDHE-ECDSA-AES128-GCM-SHA256", "CHACHA20-POLY1305", "keepalive 256;", "access_log " + dir + "/access.log main;"} {
		if !strings.Contains(n, want) {
			t.Errorf("TLS nginx.conf lacks %q", want)
		}
	}
	if strings.Contains(n, "listen 127.0.0.1:18443;") {
		t.Error("TLS nginx.conf still listens in plain HTTP")
	}
	if bin, err := exec.LookPath("nginx"); err == nil {
		if _, err := os.Stat("/etc/nginx/mime.types"); err == nil {
			conf := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(conf, []byte(n), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")).CombinedOutput(); err != nil {
				t.Errorf("nginx -t: %v\n%s", err, out)
			}
		}
	}
	text := flowgateConf(18080, 18090, "http://127.0.0.1:3000", true) + flowgateTLSSection(18443, e.certFile, e.keyFile)
	c, err := config.Parse([]byte(text), filepath.Join(dir, "flowgate.yaml"))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if c.TLS.Mode != "files" || c.TLS.Listen != "127.0.0.1:18443" || c.TLS.RedirectHTTP == nil || *c.TLS.RedirectHTTP ||
		c.TLS.CertFile != e.certFile || c.TLS.KeyFile != e.keyFile {
		t.Errorf("tls %+v", c.TLS)
	}
}

func TestNginxHoldsTenThousandStreams(t *testing.T) {
	n := nginxConf("/tmp/x", 18080, "127.0.0.1:3000")
	// Two connections per stream (client and upstream), all of them
	// possibly on one worker.
	for _, want := range []string{"worker_connections 65536;", "worker_rlimit_nofile 200000;"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
}

func TestLists(t *testing.T) {
	if got := intList(" 16,64, x,0,1024"); !slices.Equal(got, []int{16, 64, 1024}) {
		t.Errorf("intList %v", got)
	}
	if got := strList("a, ,b"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("strList %v", got)
	}
}

// i12Report is a run in which every target of issue 12 is met but the
// TLS one.
func i12Report() *report {
	agg := func(rps, p99, cpu float64) *jsonAgg {
		return &jsonAgg{Rounds: []jsonRound{{Round: 1}}, RPS: spread{rps, rps, rps}, P99: spread{p99, p99, p99}, CPU: spread{cpu, cpu, cpu}}
	}
	rate := func(p50, p99, a50, a99 float64) []rateRound {
		return []rateRound{{Round: 1, P50: p50, P99: p99, AddedP50: f64(a50), AddedP99: f64(a99)}}
	}
	stream := func(ttft, a99 float64) *streamAgg {
		return &streamAgg{Rounds: []streamRound{{Round: 1, TTFTP50: ttft, AddedP99: f64(a99), DelayP99: 2000}}}
	}
	return &report{
		JSON: map[string]*jsonAgg{
			"nginx": agg(40000, 4000, 20), "flowgate": agg(38000, 4200, 30), floorTarget: agg(42000, 3000, 15),
			quotaTarget: agg(37000, 4500, 33), cacheTarget: agg(130000, 1000, 10),
			nginxTLSTarget: agg(30000, 5000, 28), flowgateTLSTarget: agg(27000, 6000, 40),
		},
		Rate: []*rateAgg{{Rate: 12000, Why: "30% of nginx's throughput", Targets: map[string][]rateRound{
			"nginx": rate(300, 900, 100, 400), "flowgate": rate(310, 950, 110, 450)}}},
		Stream: map[string]*streamAgg{"nginx": stream(1000, 300), "flowgate": stream(1100, 800)},
		Memory: map[string]*memAgg{"flowgate": {Streams: 2000, Opened: 2000, PerStreamKiB: 20}},
		Sweep: &sweepOut{Streams: map[string][]*memAgg{"flowgate": {
			{Streams: 100, Opened: 100, HeldKiB: 30 << 10},
			{Streams: 10000, Opened: 10000, IdleKiB: 20 << 10, HeldKiB: 250 << 10, PerStreamKiB: 23}}}},
	}
}

func TestIssue12Verdicts(t *testing.T) {
	rep := i12Report()
	vs := rep.issue12()
	if len(vs) != 11 {
		t.Fatalf("%d verdicts", len(vs))
	}
	for _, v := range vs {
		want := !strings.HasPrefix(v.goal, "TLS")
		if !v.measured || v.met != want {
			t.Errorf("%q: measured %v met %v (%s)", v.goal, v.measured, v.met, v.result)
		}
	}
	// Off by a little: not met.
	rep.JSON[quotaTarget].RPS.Med = 35000
	rep.Sweep.Streams["flowgate"][1].HeldKiB = 351 << 10
	vs = rep.issue12()
	if vs[0].met || vs[8].met || !strings.Contains(vs[8].result, "HTTP/1.1: 10,000 open streams, flowgate RSS **351.0 MiB**") {
		t.Errorf("%+v\n%+v", vs[0], vs[8])
	}
	// HTTP/1.1 short of 10,000 (the open-files limit), HTTP/2 holding them.
	rep.Sweep.Streams["flowgate"][1].Opened = 9990
	rep.Sweep.Streams["flowgate"][1].HeldKiB = 300 << 10
	rep.Sweep.Streams[flowgateH2Target] = []*memAgg{{Streams: 10000, Opened: 10000, HeldKiB: 340 << 10}}
	if v := rep.issue12()[8]; !v.met || !strings.Contains(v.result, "HTTP/2 over TLS: 10,000 open streams, flowgate RSS **340.0 MiB**") {
		t.Errorf("HTTP/2: %+v", v)
	}
	rep.Sweep.Streams[flowgateH2Target][0].Opened = 9999
	if v := rep.issue12()[8]; v.met {
		t.Errorf("9,999 streams held counted as 10,000: %+v", v)
	}
	rep.Sweep.Streams["flowgate"][1].HeldKiB = 351 << 10
	rep.Sweep.Streams["flowgate"][1].Opened = 10000
	delete(rep.Sweep.Streams, flowgateH2Target)
	// Not measured: an empty run.
	for _, v := range (&report{}).issue12() {
		if v.measured {
			t.Errorf("%q measured in an empty run", v.goal)
		}
	}
	text := rep.renderIssue12(options{threads: 2, sweepConns: []int{16}, sweepStreams: []int{100, 10000}})
	for _, want := range []string{"of flowgate's CPU per request is above the floor", "| TLS | 30,000 | 27,000 | 0.90 |",
		"10,000 open streams: flowgate RSS 351.0 MiB", "| flowgate | 30.0 MiB"} {
		if !strings.Contains(text, want) {
			t.Errorf("render lacks %q:\n%s", want, text)
		}
	}
}

func TestCharts(t *testing.T) {
	dir := t.TempDir()
	s := &sweepOut{
		JSON: map[string][]sweepPoint{
			"nginx":    {{Conns: 16, RPS: 30000, P99: 900}, {Conns: 1024, RPS: 35000, P99: 60000}},
			"flowgate": {{Conns: 16, RPS: 20000, P99: 1200}, {Conns: 1024, RPS: 21000, P99: 90000}},
		},
		Streams: map[string][]*memAgg{"flowgate": {{Streams: 100, HeldKiB: 30 << 10}, {Streams: 10000, HeldKiB: 200 << 10}}},
	}
	if err := drawCharts(&env{dir: dir}, s, options{charts: filepath.Join(dir, "docs")}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(dir, "charts"), filepath.Join(dir, "docs")} {
		for _, f := range chartFiles {
			b, err := os.ReadFile(filepath.Join(d, f))
			if err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
				t.Errorf("%s/%s: %v", d, f, err)
			}
		}
	}
}

// The run's access logs go at the end (they fill the disk over a few
// runs); everything else in the output directory stays.
func TestPruneAccessLogs(t *testing.T) {
	dir := t.TempDir()
	files := map[string]bool{ // path: removed
		"flowgate/access.log":                  true,
		"caddy/access-2026-12-01T18-44.log.gz": true,
		"caddy/access.log":                     true,
		"flowgate/flowgate.yaml":               false,
		"nginx/error.log":                      false,
		"results.md":                           false,
		"access.log.bak":                       false,
	}
	for p := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("0123456789"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if freed := pruneAccessLogs(dir); freed != 30 {
		t.Errorf("freed %d bytes, want 30", freed)
	}
	for p, removed := range files {
		_, err := os.Stat(filepath.Join(dir, p))
		if gone := os.IsNotExist(err); gone != removed {
			t.Errorf("%s: removed %v, want %v", p, gone, removed)
		}
	}
}

// flowgate-base is an opt-in A/B target: measured where flowgate is, never
// by default, and it names the flag it needs rather than starting the
// wrong binary.
func TestBaseTarget(t *testing.T) {
	if slices.Contains(allTargets, baseTarget) || !slices.Contains(knownTargets, baseTarget) || targetLabel[baseTarget] == "" {
		t.Error("flowgate-base: known, labelled, not in the default targets")
	}
	for _, sc := range []string{"json", "rate", "stream", "memory"} {
		if measuredIn(baseTarget, sc) != measuredIn("flowgate", sc) {
			t.Errorf("%s: flowgate-base measured %v, flowgate %v", sc, measuredIn(baseTarget, sc), measuredIn("flowgate", sc))
		}
	}
	e := &env{dir: t.TempDir(), flowgate: "/bin/false"}
	if _, err := e.startTarget(baseTarget, ""); err == nil || !strings.Contains(err.Error(), "-base") {
		t.Errorf("flowgate-base without -base: %v, want an error naming -base", err)
	}
}
