// Command bench measures flowgate against nginx and Caddy in front of the
// same fakeflow upstream, on this machine, in one run:
//
//	go run ./bench            # full run, about 10 minutes
//	go run ./bench -quick     # smoke run: 1 round of 3 s, 500 held streams
//	go run ./bench -profile   # also CPU, allocation and per-stream heap profiles of flowgate
//	go run ./bench -sweep     # also the sweeps and their charts in docs/bench/, about 5 minutes more
//
// It installs wrk, nginx and caddy from Debian's packages when they are
// missing (as root), builds flowgate and fakeflow, starts fakeflow with no
// latency, and then, alternating the targets over several rounds:
//
//   - JSON throughput: wrk, keep-alive, fixed connections, a small
//     prediction POST; requests/s, p50 and p99 latency, CPU per request;
//     also flowgate answering the same input from its cache (every
//     request after the first a hit, checked), flowgate with a quota
//     on the flow, in the process and in Redis (every request admitted
//     and, with Redis, one admit script per request, checked), and
//     flowgate with its request-path metrics off (the metrics' cost);
//   - moderate load: fixed rates (30% of the slowest proxy's throughput, and
//     30% of nginx's) from an open-loop client; latency added over direct;
//   - streaming: fakeflow stamps each token frame with its write time, the
//     client notes when it read it: added delay per frame, time to first token;
//   - memory: RSS of each proxy holding 2,000 open streams, minus idle, per stream;
//   - the floor (target "floor", issue 12): net/http's server and flowgate's
//     own upstream client with nothing else (proxy.Floor, served by this
//     program's subcommand serve-floor), in every scenario;
//   - TLS (-tls, on by default): nginx and flowgate terminating TLS with one
//     self-signed ECDSA certificate made for the run, in the JSON scenario;
//   - sweeps (-sweep): JSON throughput and p99 at 16, 64, 256 and 1,024
//     connections, RSS holding 100, 1,000 and 10,000 open streams, drawn
//     with gonum/plot into docs/bench/*.png; then issue 12's targets, each
//     judged met or not on the run's figures.
//
// Everything listens on 127.0.0.1 only. Every process started is ended on
// success, error and Ctrl-C. Configs, logs, raw results and profiles stay in
// the -out directory (a new temporary one by default).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	quick      bool
	rounds     int
	duration   time.Duration
	conns      int
	threads    int
	only       map[string]bool
	targets    []string
	rate       int
	rateDur    time.Duration
	rateConns  int
	streams    int // concurrent streams in the streaming scenario
	perWorker  int // streams each of them runs in a row
	tokens     int
	tokenDelay time.Duration
	memStreams int
	profile    bool
	out        string
	install    bool
	// Experiments: another flowgate binary, its environment, its access log.
	flowgateBin       string
	baseBin           string
	keepLogs          bool
	flowgateEnv       []string
	flowgateAccessLog bool
	// Issue 12: TLS on both sides (nginx-tls, flowgate-tls in the JSON
	// scenario), and the sweeps with their charts.
	tls            bool
	sweep          bool
	sweepDuration  time.Duration
	sweepConns     []int
	sweepStreams   []int
	sweepTargets   []string
	sweepMemTarget []string
	charts         string
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "serve-plain":
			os.Exit(servePlain(os.Args[2:]))
		case "serve-floor":
			os.Exit(serveFloor(os.Args[2:]))
		case "charts":
			os.Exit(redrawCharts(os.Args[2:]))
		}
	}
	os.Exit(run())
}

func run() int {
	var o options
	var only, targets string
	flag.BoolVar(&o.quick, "quick", false, "smoke run: 1 round, 3 s per load, 500 held streams")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; every target is measured once per round, in rotating order")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "wrk duration per target per round")
	flag.IntVar(&o.conns, "conns", 64, "wrk keep-alive connections")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.StringVar(&only, "only", "json,rate,stream,memory", "scenarios: json, rate, stream, memory")
	flag.StringVar(&targets, "targets", strings.Join(allTargets, ","), "targets: direct, nginx, caddy, flowgate, flowgate-cache (a second flowgate serving cache hits; JSON scenario only), "+
		"flowgate-quota and flowgate-quota-redis (flowgate with a quota that never refuses, counted in the process or in a redis-server the harness starts; JSON scenario only), "+
		"flowgate-nometrics (flowgate with metrics: {enabled: false}, for the metrics' cost; JSON and stream scenarios only), "+
		"and httputil (a bare httputil.ReverseProxy, for reference)")
	flag.IntVar(&o.rate, "rate", 0, "requests/s of the moderate-load scenario (0: 30% of the slowest proxy's and 30% of nginx's measured throughput)")
	flag.DurationVar(&o.rateDur, "rate-duration", 5*time.Second, "moderate-load duration per target per round")
	flag.IntVar(&o.rateConns, "rate-conns", 32, "moderate-load keep-alive connections")
	flag.IntVar(&o.streams, "streams", 50, "concurrent streams in the streaming scenario")
	flag.IntVar(&o.perWorker, "streams-each", 3, "streams each concurrent client runs in a row")
	flag.IntVar(&o.tokens, "tokens", 50, "tokens per stream")
	flag.DurationVar(&o.tokenDelay, "token-delay", 20*time.Millisecond, "delay between tokens")
	flag.IntVar(&o.memStreams, "mem-streams", 2000, "open streams held in the memory scenario")
	flag.BoolVar(&o.profile, "profile", false, "also profile flowgate (CPU, allocations) under wrk load")
	flag.StringVar(&o.out, "out", "", "directory for configs, logs, raw results and profiles (default: a new temp dir)")
	flag.BoolVar(&o.install, "install", true, "install missing wrk, nginx, caddy with apt-get (needs root)")
	var fgEnv string
	flag.StringVar(&o.flowgateBin, "flowgate", "", "benchmark this flowgate binary instead of building ./cmd/flowgate (for experiments)")
	flag.StringVar(&o.baseBin, "base", "", "target "+baseTarget+": this other flowgate binary, configured as flowgate, in the same rounds (A/B of a change)")
	flag.StringVar(&fgEnv, "flowgate-env", "", "extra environment for flowgate, comma-separated (e.g. GOGC=400)")
	flag.BoolVar(&o.flowgateAccessLog, "flowgate-access-log", true, "flowgate's access log (off only for experiments)")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "keep the proxies' access logs in the -out directory (a full run writes several GiB)")
	flag.BoolVar(&o.tls, "tls", true, "also measure JSON throughput with TLS on both sides (targets nginx-tls and flowgate-tls, one self-signed ECDSA certificate per run)")
	flag.BoolVar(&o.sweep, "sweep", false, "also sweep connections (JSON throughput, p99) and open streams (RSS), and draw the charts")
	flag.DurationVar(&o.sweepDuration, "sweep-duration", 5*time.Second, "wrk duration per target per point of the connections sweep")
	var sweepConns, sweepStreams, sweepTargets, sweepMem string
	flag.StringVar(&sweepConns, "sweep-conns", "16,64,256,1024", "connections of the sweep")
	flag.StringVar(&sweepStreams, "sweep-streams", "100,1000,10000", "open streams of the sweep")
	flag.StringVar(&sweepTargets, "sweep-targets", "direct,nginx,floor,flowgate,"+quotaTarget, "targets of the connections sweep (those measured in the run)")
	flag.StringVar(&sweepMem, "sweep-mem-targets", "nginx,floor,flowgate,"+flowgateH2Target, "targets of the open-streams sweep ("+flowgateH2Target+": flowgate-tls holding them as HTTP/2 streams)")
	flag.StringVar(&o.charts, "charts", "docs/bench", "directory (relative to the module root) for the sweep's PNG charts; empty: the -out directory only")
	flag.Parse()
	o.sweepConns, o.sweepStreams = intList(sweepConns), intList(sweepStreams)
	o.sweepTargets, o.sweepMemTarget = strList(sweepTargets), strList(sweepMem)
	for _, kv := range strings.Split(fgEnv, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			o.flowgateEnv = append(o.flowgateEnv, kv)
		}
	}
	if o.quick {
		o.rounds = 1
		o.duration = 3 * time.Second
		o.rateDur = 2 * time.Second
		o.perWorker = 1
		if o.memStreams > 500 {
			o.memStreams = 500
		}
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.only[s] = true
		}
	}
	for _, s := range strings.Split(targets, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.targets = append(o.targets, s)
		}
	}
	o.targets = withTLSTargets(o.targets, o.tls)
	if o.quick {
		o.sweepDuration = 2 * time.Second
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "\nbench: interrupted; stopping every process it started")
		cleanup()
		os.Exit(130)
	}()
	defer cleanup()

	if err := bench(o); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func bench(o options) error {
	began := time.Now()
	raiseNoFile()
	if err := ensureTools(o.install, needsRedis(o)); err != nil {
		return err
	}
	dir := o.out
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "flowgate-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dir, _ = filepath.Abs(dir)
	logf("output directory %s", dir)

	// Each flowgate's embedded usage ledger lives in its own directory of
	// the run (env.flowgateEnvFor), not in /var/lib/flowgate.
	e := &env{dir: dir, flowgateEnv: o.flowgateEnv, flowgateAccessLog: o.flowgateAccessLog}
	if err := e.build(); err != nil {
		return err
	}
	if o.flowgateBin != "" {
		bin, err := filepath.Abs(o.flowgateBin)
		if err != nil {
			return err
		}
		e.flowgate = bin
		logf("flowgate under test: %s %s", e.flowgate, strings.Join(o.flowgateEnv, " "))
	}
	if o.baseBin != "" {
		bin, err := filepath.Abs(o.baseBin)
		if err != nil {
			return err
		}
		e.base = bin
	}
	// fakeflow in its fast mode: no latency, no token delay unless a
	// request asks for one (the streaming scenarios do, by header).
	upPort, err := freePort()
	if err != nil {
		return err
	}
	e.upAddr = fmt.Sprintf("127.0.0.1:%d", upPort)
	e.upURL = "http://" + e.upAddr
	e.up, err = startProc("fakeflow", e.fakeflow, []string{"-listen", e.upAddr}, nil, filepath.Join(dir, "fakeflow.log"), false)
	if err != nil {
		return err
	}
	if err := waitReady(e.up, e.upURL, 10*time.Second); err != nil {
		return fmt.Errorf("fakeflow: %w", err)
	}

	m := machineInfo()
	var rep report
	rep.Machine = m
	rep.Command = "go run ./bench " + strings.Join(os.Args[1:], " ")
	rep.Started = began

	needTargets := o.only["json"] || o.only["rate"] || o.only["stream"]
	var ts []*target
	if needTargets {
		for _, k := range o.targets {
			if !measuredInAny(k, o.only) {
				continue
			}
			t, err := e.startTarget(k, "")
			if err != nil {
				return err
			}
			ts = append(ts, t)
			logf("%s listening on %s", k, t.url)
		}
	}
	if o.only["json"] {
		if rep.JSON, err = jsonScenario(e, ts, o); err != nil {
			return err
		}
	}
	// The cache-hit and quota targets answer the JSON scenario only; the
	// other scenarios are about proxying (see measuredIn).
	in := func(scenario string) []*target {
		var out []*target
		for _, t := range ts {
			if measuredIn(t.name, scenario) {
				out = append(out, t)
			}
		}
		return out
	}
	if rated := in("rate"); o.only["rate"] && len(rated) > 0 {
		for _, rate := range moderateRates(o, rep.JSON) {
			rep.Rate = append(rep.Rate, rateScenario(rated, rate.rps, rate.why, o))
		}
	}
	if streamed := in("stream"); o.only["stream"] && len(streamed) > 0 {
		rep.Stream = streamScenario(streamed, o)
	}
	if o.sweep {
		rep.Sweep = &sweepOut{}
		var swept []*target
		for _, k := range o.sweepTargets {
			for _, t := range ts {
				if t.name == k {
					swept = append(swept, t)
				}
			}
		}
		rep.Sweep.JSON = connsSweep(e, swept, o)
	}
	for _, t := range ts {
		if t.p != nil {
			t.p.stop()
		}
	}
	e.stopRedis()
	if o.only["memory"] {
		rep.Memory = memoryScenario(e, o)
	}
	if o.sweep {
		rep.Sweep.Streams = streamsSweep(e, o)
		if err := drawCharts(e, rep.Sweep, o); err != nil {
			logf("charts: %v", err)
		}
	}
	if o.profile {
		prof, err := profileScenario(e, o)
		if err != nil {
			logf("profile failed: %v", err)
		}
		rep.Profile = prof
	}
	rep.Elapsed = time.Since(began).Round(time.Second).String()
	if !o.keepLogs {
		// A full run writes gigabytes of access logs (flowgate's lines at
		// 20,000 requests a second, per target); they are written for a
		// fair comparison, not read: runs in a row would fill the disk.
		logf("removed %d MiB of access logs (-keep-logs keeps them)", pruneAccessLogs(dir)>>20)
	}

	text := rep.render(o)
	fmt.Print(text)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(text), 0o644); err != nil {
		return fmt.Errorf("results.md: %w", err)
	}
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("results.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), j, 0o644); err != nil {
		return err
	}
	logf("done in %s; configs, logs and raw results in %s", rep.Elapsed, dir)
	return nil
}

// build compiles flowgate and fakeflow from this module, and finds this
// program's own binary for the profiled gateway.
func (e *env) build() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "bin"), 0o755); err != nil {
		return err
	}
	e.flowgate = filepath.Join(e.dir, "bin", "flowgate")
	e.fakeflow = filepath.Join(e.dir, "bin", "fakeflow")
	for _, b := range [][2]string{{e.flowgate, "./cmd/flowgate"}, {e.fakeflow, "./cmd/fakeflow"}} {
		logf("go build -o %s %s", b[0], b[1])
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	e.self, err = os.Executable()
	return err
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run bench from inside the flowgate module (go run ./bench)")
	}
	return filepath.Dir(gomod), nil
}

// needsRedis reports whether the run measures flowgate-quota-redis.
func needsRedis(o options) bool {
	return o.only["json"] && slices.Contains(o.targets, quotaRedisTarget)
}

// ensureTools installs wrk, nginx and caddy from Debian's packages when
// they are missing, and redis-server when withRedis.
func ensureTools(install, withRedis bool) error {
	if !strings.Contains(":"+os.Getenv("PATH")+":", ":/usr/sbin:") {
		os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin") // nginx lives there
	}
	var missing []string
	tools := []string{"wrk", "nginx", "caddy"}
	if withRedis {
		tools = append(tools, "redis-server") // the command and Debian's package have one name
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !install || os.Geteuid() != 0 {
		return fmt.Errorf("missing %s: run as root to install them (apt-get install -y %s)",
			strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	apt := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(out, 2000))
		}
		return nil
	}
	logf("installing %s with apt-get", strings.Join(missing, ", "))
	args := append([]string{"install", "-y", "-qq"}, missing...)
	if err := apt(args...); err != nil {
		logf("apt-get install failed; running apt-get update first")
		if err := apt("update", "-qq"); err != nil {
			return err
		}
		if err := apt(args...); err != nil {
			return err
		}
	}
	// Where Debian starts the packaged services, they listen on port 80,
	// not on the ports used here, and are left alone.
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// wantNoFile is the open-files limit the sweep needs: 10,000 held streams
// are 10,000 client connections here, and 20,000 in the proxy (client and
// upstream side).
const wantNoFile = 200_000

// raiseNoFile lifts the open-files limit: to wantNoFile where the process
// may raise the hard limit (root), else to the hard maximum. Children (the
// proxies, fakeflow, wrk) inherit it.
func raiseNoFile() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	if rl.Max < wantNoFile {
		up := syscall.Rlimit{Cur: wantNoFile, Max: wantNoFile}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			logf("open-files limit raised to %d", wantNoFile)
			return
		}
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	if rl.Max < wantNoFile {
		logf("open-files limit %d, and it cannot be raised here: a proxy process holds at most about %d streams over HTTP/1.1 (2 descriptors each)", rl.Max, rl.Max/2-16)
	}
}

func intList(s string) []int {
	var out []int
	for _, f := range strList(s) {
		var n int
		if _, err := fmt.Sscan(f, &n); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func strList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

type machine struct {
	Date, CPUs, CPUModel, Kernel, Go, Nginx, Caddy, Wrk string
}

func machineInfo() machine {
	m := machine{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), CPUs: fmt.Sprint(runtime.NumCPU()), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	first := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		s := strings.TrimSpace(string(out))
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[:i]
		}
		return s
	}
	m.Nginx = strings.TrimPrefix(first("nginx", "-v"), "nginx version: ")
	m.Caddy = first("caddy", "version")
	m.Wrk = first("wrk", "-v")
	return m
}

type rateChoice struct {
	rps int
	why string
}

// moderateRates picks the fixed rates of the added-latency scenario: 30% of
// the slowest proxy's measured throughput (every proxy well below
// saturation: the "moderate" load the target is judged at), and 30% of
// nginx's (a load moderate for nginx).
func moderateRates(o options, js map[string]*jsonAgg) []rateChoice {
	if o.rate > 0 {
		return []rateChoice{{o.rate, "set with -rate"}}
	}
	round := func(f float64) int { return int(math.Max(100, math.Round(f/100)*100)) }
	slowest, slowName := math.Inf(1), ""
	for name, a := range js {
		if name != "direct" && measuredIn(name, "rate") && a.RPS.Med < slowest {
			slowest, slowName = a.RPS.Med, name
		}
	}
	var out []rateChoice
	if slowName != "" {
		out = append(out, rateChoice{round(0.3 * slowest), "30% of the slowest proxy's throughput (" + slowName + "'s): every proxy under 30% load"})
	}
	if n, ok := js["nginx"]; ok && slowName != "nginx" {
		out = append(out, rateChoice{round(0.3 * n.RPS.Med), "30% of nginx's throughput"})
	}
	if len(out) == 0 {
		out = append(out, rateChoice{2000, "a fixed 2,000 req/s (no throughput measured in this run)"})
	}
	return out
}

// rotate returns ts starting at index r, so each round measures in a
// different order.
func rotate(ts []*target, r int) []*target {
	out := make([]*target, 0, len(ts))
	for i := range ts {
		out = append(out, ts[(i+r)%len(ts)])
	}
	return out
}

// httpGet fetches url into a file.
func httpGet(url, path string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(b))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// pruneAccessLogs removes the proxies' access logs under dir (access.log,
// and Caddy's rotated access-*.log.gz) and returns the bytes freed.
func pruneAccessLogs(dir string) int64 {
	var freed int64
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		name := d.Name()
		if name != "access.log" && !(strings.HasPrefix(name, "access-") && strings.HasSuffix(name, ".log.gz")) {
			return nil
		}
		if fi, err := d.Info(); err == nil && os.Remove(path) == nil {
			freed += fi.Size()
		}
		return nil
	})
	return freed
}
