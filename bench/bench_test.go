package main

import (
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
