package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
	"github.com/flowgate/flowgate/internal/testcert"
	"github.com/flowgate/flowgate/internal/testredis"
)

// The workflows of the dashboard test, each configured for one kind of
// traffic.
const (
	dashWfPlain  = "33333333-0000-4000-8000-000000000001" // chatflow: JSON, streams, failures, a cut
	dashWfCached = "33333333-0000-4000-8000-000000000002" // cache on: hits
	dashWfQuota  = "33333333-0000-4000-8000-000000000003" // 2 executions an hour: 429s
	dashWfAgent  = "33333333-0000-4000-8000-000000000004" // agentflow with usage, under a token budget
)

// dashboardFile is the Grafana dashboard the gateway ships.
var dashboardFile = filepath.Join("..", "..", "dashboards", "flowgate.json")

// seedExcepted is the one query of the seed's dashboard that cannot return
// anything: its heatmap names the histogram bare, and a histogram has no
// series of that name (only _bucket, _sum and _count), so the panel could
// show nothing on the seed's own setup either.
const seedExcepted = "flowise_workflow_execution_duration_seconds"

// A real Prometheus scrapes the running gateway while traffic of every kind
// goes through it; then every query of every panel of the shipped dashboard,
// and every query of the seed's dashboard, is evaluated by Prometheus and
// returns something (acceptance of issue 10).
func TestDashboardQueriesOnPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary, Redis and Prometheus")
	}
	promBin := prometheusBin(t)
	start := time.Now()

	// Upstreams: fakeflow, and a port that was just closed, so that the
	// health checks mark one upstream down.
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	dead := dashFreeAddr(t)
	rds := testredis.Start(t)

	dir := t.TempDir()
	certFile, keyFile, roots := dashSelfSigned(t, dir)
	cfg := filepath.Join(dir, "flowgate.yaml")
	y := `server:
  listen: 127.0.0.1:0
  metrics_listen: 127.0.0.1:0
  admin_listen: ""
upstreams:
  - {url: ` + up.URL() + `, name: fakeflow}
  - {url: http://` + dead + `, name: dead}
proxy:
  idle_timeout: 1s              # a stream whose tokens come slower is cut (upstream_idle)
  response_header_timeout: 1s   # a slower JSON answer is a 504 (an upstream failure)
health:
  active: {interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1}
redis:
  addr: ` + rds.Addr() + `
cache:
  workflows:
    "` + dashWfCached + `": {enabled: true}
quota:
  on_redis_error: open
  workflows:
    "` + dashWfQuota + `":
      budgets: [{window: 1h, executions: 2}]
    "` + dashWfAgent + `":
      budgets: [{window: 24h, tokens: 1000000}]
tls:
  mode: files
  listen: 127.0.0.1:0
  redirect_http: false
  cert_file: ` + certFile + `
  key_file: ` + keyFile + `
`
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := testbin.Start(t, testbin.Build(t), nil, "-config", cfg)
	if gw.Metrics == "" || gw.TLS == "" {
		t.Fatalf("flowgate started without its metrics (%q) or TLS (%q) listener", gw.Metrics, gw.TLS)
	}
	prom := startPrometheus(t, promBin, gw.Metrics)
	t.Logf("flowgate, Redis and Prometheus up after %v", time.Since(start).Round(time.Millisecond))

	tr := &dashTraffic{
		t:        t,
		gw:       gw,
		plain:    &http.Client{Timeout: 10 * time.Second},
		tlsRoot:  roots,
		statuses: map[string]map[int]int{},
	}
	tr.https = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "localhost"},
		ForceAttemptHTTP2: true,
	}}
	// Rounds a scrape or two apart, so every counter has samples before
	// and after an increase, and rate() over 1m has at least two.
	for round := 1; round <= 3; round++ {
		tr.round(round)
		tr.settle(prom)
	}
	// Redis goes away for two rounds: the cache, the quota enforcer and
	// the ledger count their errors (and serve without it).
	rds.Kill()
	for round := 4; round <= 5; round++ {
		tr.redisRound(round)
		tr.settle(prom)
	}
	rds.Restart()
	tr.round(6)
	tr.settle(prom)
	tr.checkStatuses()
	// The dead upstream is out of rotation (a 0 series for the health
	// panel and the no-healthy-upstream alert's expression).
	if n, err := prom.count(`flowgate_upstream_healthy{upstream="dead"} == 0`); err != nil || n != 1 {
		t.Errorf("flowgate_upstream_healthy{upstream=\"dead\"} is not 0 (%d series, %v)", n, err)
	}
	t.Logf("traffic scraped after %v (%d requests)", time.Since(start).Round(time.Millisecond), tr.sent)

	// The seed's dashboard.
	var fails []string
	seed := loadSeedDashboard(t)
	for _, p := range seed.Panels {
		for _, expr := range p.Exprs {
			n, err := prom.count(expr)
			switch {
			case err != nil:
				fails = append(fails, fmt.Sprintf("seed panel %q (%s): %s\n\t%v", p.Title, p.Type, expr, err))
			case expr == seedExcepted:
				// Documented, not merely tolerated: empty, though the
				// histogram has series.
				if n != 0 {
					fails = append(fails, fmt.Sprintf("seed panel %q (%s): %s\n\texpected no series (a bare histogram name), got %d", p.Title, p.Type, expr, n))
				}
				if b, err := prom.count(expr + "_bucket"); err != nil || b == 0 {
					fails = append(fails, fmt.Sprintf("seed panel %q: %s_bucket has no series (%v): the heatmap is empty for want of data, not only for its bare name", p.Title, expr, err))
				}
			case n == 0:
				fails = append(fails, fmt.Sprintf("seed panel %q (%s): %s\n\tempty result", p.Title, p.Type, expr))
			}
		}
	}

	// The shipped dashboard.
	nq := 0
	d, err := loadDashboard(dashboardFile)
	if err != nil {
		fails = append(fails, fmt.Sprintf("the dashboard: %v", err))
	} else {
		vars := d.variables()
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					continue
				}
				nq++
				q, unknown := dashSubst(tg.Expr, vars)
				if len(unknown) > 0 {
					fails = append(fails, fmt.Sprintf("panel %q (%s) target %s: %s\n\tunknown variables %v", p.Title, p.Type, tg.RefID, tg.Expr, unknown))
					continue
				}
				n, err := prom.count(q)
				if err != nil {
					fails = append(fails, fmt.Sprintf("panel %q (%s) target %s: %s\n\t%v", p.Title, p.Type, tg.RefID, q, err))
				} else if n == 0 {
					fails = append(fails, fmt.Sprintf("panel %q (%s) target %s: %s\n\tempty result", p.Title, p.Type, tg.RefID, q))
				}
			}
		}
		if nq == 0 {
			fails = append(fails, "the dashboard has no panel with a Prometheus query (targets[].expr)")
		}
		for _, v := range d.Templating.List {
			q := v.queryString()
			if q == "" || (v.Type != "query" && v.Type != "") {
				continue
			}
			q, unknown := dashSubst(q, vars)
			if len(unknown) > 0 {
				fails = append(fails, fmt.Sprintf("variable %q: %s\n\tunknown variables %v", v.Name, q, unknown))
				continue
			}
			if err := prom.checkVariable(q); err != nil {
				fails = append(fails, fmt.Sprintf("variable %q: %s\n\t%v", v.Name, q, err))
			}
		}
	}
	t.Logf("evaluated %d seed queries and %d dashboard queries; whole test %v", seed.count(), nq, time.Since(start).Round(time.Millisecond))
	if len(fails) > 0 {
		t.Errorf("%d queries failed on Prometheus:\n%s", len(fails), strings.Join(fails, "\n"))
	}
}

// prometheusBin is Debian's prometheus server (the package that also has
// promtool; scripts/test installs it). Under CI its absence is a failure.
func prometheusBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus is missing (apt-get install prometheus)")
		}
		t.Skip("prometheus is missing (apt-get install prometheus)")
	}
	return p
}

// dashFreeAddr is a loopback address nobody listens on (a moment ago).
func dashFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// dashSelfSigned writes a self-signed certificate for localhost and
// 127.0.0.1, valid 90 days, and returns its files and a pool that trusts it.
func dashSelfSigned(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	return certFile, keyFile, testcert.Write(t, certFile, keyFile, time.Now().UnixNano(), 90*24*time.Hour)
}

// ---- Prometheus ----

// promServer is a running Prometheus and its HTTP API.
type promServer struct {
	t    *testing.T
	base string // http://127.0.0.1:port
	c    *http.Client
}

// startPrometheus runs prometheus scraping target every second, and returns
// once /-/ready answers 200. It is killed when the test ends.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	y := "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n" +
		"scrape_configs:\n" +
		"  - job_name: flowgate\n" +
		"    static_configs:\n" +
		"      - targets: [\"" + target + "\"]\n"
	if err := os.WriteFile(conf, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	// The free port can be taken between the probe and Prometheus's
	// bind: a few tries.
	var lastErr error
	for try := range 3 {
		addr := dashFreeAddr(t)
		var out dashLog
		cmd := exec.Command(bin,
			"--config.file="+conf,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", try)),
			"--web.listen-address="+addr,
			"--web.enable-lifecycle",
			"--log.level=warn",
		)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		p := &promServer{t: t, base: "http://" + addr, c: &http.Client{Timeout: 5 * time.Second}}
		lastErr = p.waitReady(exited, 20*time.Second)
		if lastErr == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("prometheus output:\n%s", out.String())
				}
			})
			return p
		}
		select {
		case <-exited:
		default:
			stop()
		}
		lastErr = fmt.Errorf("%v\n%s", lastErr, out.String())
	}
	t.Fatalf("prometheus did not start: %v", lastErr)
	return nil
}

func (p *promServer) waitReady(exited chan error, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("prometheus exited: %v", err)
		default:
		}
		if res, err := p.c.Get(p.base + "/-/ready"); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/-/ready not 200 after %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// promAPI is the envelope of every answer of Prometheus's HTTP API.
type promAPI struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

func (p *promServer) get(path string, q url.Values) (json.RawMessage, error) {
	res, err := p.c.Get(p.base + path + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	var a promAPI
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("HTTP %d: %v: %.300s", res.StatusCode, err, body)
	}
	if a.Status != "success" {
		return nil, fmt.Errorf("status %q (HTTP %d): %s: %s", a.Status, res.StatusCode, a.ErrorType, a.Error)
	}
	return a.Data, nil
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix seconds, "value"]
}

// query evaluates expr now. The result is the samples of a vector, one
// sample for a scalar or a string, or the series of a matrix (Value
// unset).
func (p *promServer) query(expr string) ([]promSample, error) {
	data, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var d struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	switch d.ResultType {
	case "vector", "matrix":
		var s []promSample
		if err := json.Unmarshal(d.Result, &s); err != nil {
			return nil, err
		}
		return s, nil
	case "scalar", "string":
		var v [2]any
		if err := json.Unmarshal(d.Result, &v); err != nil {
			return nil, err
		}
		return []promSample{{Value: v}}, nil
	}
	return nil, fmt.Errorf("result type %q", d.ResultType)
}

// count is how many series (or 1 for a scalar) expr returns now.
func (p *promServer) count(expr string) (int, error) {
	s, err := p.query(expr)
	return len(s), err
}

// scalar is the value of the first sample of expr, and whether there was one.
func (p *promServer) scalar(expr string) (float64, bool) {
	s, err := p.query(expr)
	if err != nil || len(s) == 0 {
		return 0, false
	}
	str, _ := s[0].Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	return v, err == nil
}

// dashPoll polls until ok, up to d; false when it never was.
func dashPoll(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

var (
	labelValuesRE  = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	labelValues1RE = regexp.MustCompile(`^\s*label_values\(\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	queryResultRE  = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
)

// checkVariable proves a templating variable's query has values: a
// label_values(selector, label) through the label values API (as Grafana
// asks it), a query_result(expr) through a query.
func (p *promServer) checkVariable(q string) error {
	var label string
	params := url.Values{}
	switch {
	case labelValuesRE.MatchString(q):
		m := labelValuesRE.FindStringSubmatch(q)
		label = m[2]
		params.Set("match[]", m[1])
	case labelValues1RE.MatchString(q):
		label = labelValues1RE.FindStringSubmatch(q)[1]
	case queryResultRE.MatchString(q):
		n, err := p.count(queryResultRE.FindStringSubmatch(q)[1])
		if err == nil && n == 0 {
			err = errors.New("empty result")
		}
		return err
	default:
		p.t.Logf("variable query %q: not label_values or query_result, not checked", q)
		return nil
	}
	data, err := p.get("/api/v1/label/"+url.PathEscape(label)+"/values", params)
	if err != nil {
		return err
	}
	var vals []string
	if err := json.Unmarshal(data, &vals); err != nil {
		return err
	}
	if len(vals) == 0 {
		return fmt.Errorf("no values of label %s", label)
	}
	return nil
}

// dashLog is a process's output, safe for its writer and a reader.
type dashLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *dashLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 64<<10 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *dashLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ---- traffic ----

// dashTraffic drives requests through the gateway and counts them.
type dashTraffic struct {
	t          *testing.T
	gw         *testbin.Proc
	plain      *http.Client
	https      *http.Client
	tlsRoot    *x509.CertPool
	sent       int                    // answers received, which flowgate counts
	statuses   map[string]map[int]int // by kind of request: status -> how many
	statusesMu sync.Mutex
}

type dashReq struct {
	kind   string // what the request is for, for the status check
	method string
	path   string
	body   string
	mode   string // X-Fakeflow-Mode
	header map[string]string
	https  bool
}

func (tr *dashTraffic) do(r dashReq) {
	tr.t.Helper()
	base, c := "http://"+tr.gw.Listen, tr.plain
	if r.https {
		base, c = "https://"+tr.gw.TLS, tr.https
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		tr.t.Error(err)
		return
	}
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.mode != "" {
		req.Header.Set(fakeflow.HeaderMode, r.mode)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		// Errorf, not Fatalf: some requests run on their own goroutine.
		tr.t.Errorf("%s %s (%s): %v", r.method, r.path, r.kind, err)
		return
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	tr.statusesMu.Lock()
	tr.sent++
	if tr.statuses[r.kind] == nil {
		tr.statuses[r.kind] = map[int]int{}
	}
	tr.statuses[r.kind][res.StatusCode]++
	tr.statusesMu.Unlock()
}

func dashPredict(question string, stream bool) string {
	b, _ := json.Marshal(map[string]any{"question": question, "streaming": stream})
	return string(b)
}

// round sends one of each kind of traffic.
func (tr *dashTraffic) round(n int) {
	tr.t.Helper()
	pred := func(id string) string { return "/api/v1/prediction/" + id }
	// A stream whose tokens come slower than proxy.idle_timeout: cut
	// (upstream_idle). It runs beside the rest of the round.
	var wg sync.WaitGroup
	wg.Go(func() {
		tr.do(dashReq{kind: "cut", method: "POST", path: pred(dashWfPlain), body: dashPredict("slow", true),
			mode: fakeflow.ModeChatflow, header: map[string]string{fakeflow.HeaderTokenDelay: "3s", fakeflow.HeaderTokens: "3"}})
	})
	// An answer slower than proxy.response_header_timeout: 504, an
	// upstream failure (upstream_timeout) that takes no upstream out.
	wg.Go(func() {
		tr.do(dashReq{kind: "timeout", method: "POST", path: pred(dashWfPlain), body: dashPredict("slow", false),
			mode: fakeflow.ModeChatflow, header: map[string]string{fakeflow.HeaderLatency: "3s"}})
	})
	q := fmt.Sprintf("question %d", n)
	for _, r := range []dashReq{
		{kind: "json", method: "POST", path: pred(dashWfPlain), body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		{kind: "json", method: "POST", path: pred(dashWfPlain), body: dashPredict(q+"?", false), mode: fakeflow.ModeChatflow},
		{kind: "stream", method: "POST", path: pred(dashWfPlain), body: dashPredict(q, true), mode: fakeflow.ModeChatflow},
		{kind: "stream", method: "POST", path: "/api/v1/internal-prediction/" + dashWfPlain, body: dashPredict(q, true), mode: fakeflow.ModeChatflow},
		// The same question every round: a miss the first time, hits after.
		{kind: "cached", method: "POST", path: pred(dashWfCached), body: dashPredict("always the same", false), mode: fakeflow.ModeChatflow},
		{kind: "cached", method: "POST", path: pred(dashWfCached), body: dashPredict("always the same", false), mode: fakeflow.ModeChatflow},
		{kind: "cached", method: "POST", path: pred(dashWfCached), body: dashPredict("always streamed", true), mode: fakeflow.ModeChatflow},
		{kind: "cached", method: "POST", path: pred(dashWfCached), body: dashPredict("always streamed", true), mode: fakeflow.ModeChatflow},
		// Two executions an hour: past them, 429.
		{kind: "quota", method: "POST", path: pred(dashWfQuota), body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		{kind: "quota", method: "POST", path: pred(dashWfQuota), body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		{kind: "quota", method: "POST", path: pred(dashWfQuota), body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		// Agentflow answers report their usage and nodes.
		{kind: "agent", method: "POST", path: pred(dashWfAgent), body: dashPredict(q, false), mode: fakeflow.ModeAgentflow},
		{kind: "agent", method: "POST", path: pred(dashWfAgent), body: dashPredict(q, true), mode: fakeflow.ModeAgentflow},
		// Failures: a stream that fails after it started, a 500, a 404, a 400.
		{kind: "stream-error", method: "POST", path: pred(dashWfPlain), body: dashPredict(q, true), mode: fakeflow.ModeStreamError},
		{kind: "fail", method: "POST", path: pred(dashWfPlain), body: dashPredict(q, false), mode: fakeflow.ModeFail},
		{kind: "404", method: "GET", path: "/api/v1/no-such-route"},
		{kind: "400", method: "POST", path: "/api/v1/prediction/not-a-uuid", body: `{"question":"hi"}`},
		{kind: "ping", method: "GET", path: "/api/v1/ping"},
		// The HTTPS listener: a prediction over HTTP/2.
		{kind: "https", method: "POST", path: pred(dashWfPlain), body: dashPredict(q, true), mode: fakeflow.ModeChatflow, https: true},
	} {
		tr.do(r)
	}
	// Handshakes the TLS policy refuses (TLS 1.1) or that end early.
	if c, err := tls.Dial("tcp", tr.gw.TLS, &tls.Config{RootCAs: tr.tlsRoot, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		tr.t.Errorf("a TLS 1.1 handshake succeeded")
	}
	if c, err := net.Dial("tcp", tr.gw.TLS); err == nil {
		c.Close()
	}
	wg.Wait()
}

// redisRound is traffic that meets Redis down: the cache (a new question,
// so both levels are asked), the quota enforcer, the ledger.
func (tr *dashTraffic) redisRound(n int) {
	tr.t.Helper()
	q := fmt.Sprintf("redis down %d", n)
	for _, r := range []dashReq{
		{kind: "redis-down", method: "POST", path: "/api/v1/prediction/" + dashWfCached, body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		{kind: "redis-down", method: "POST", path: "/api/v1/prediction/" + dashWfCached, body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		{kind: "redis-down", method: "POST", path: "/api/v1/prediction/" + dashWfAgent, body: dashPredict(q, false), mode: fakeflow.ModeAgentflow},
		{kind: "redis-down-quota", method: "POST", path: "/api/v1/prediction/" + dashWfQuota, body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		{kind: "json", method: "POST", path: "/api/v1/prediction/" + dashWfPlain, body: dashPredict(q, false), mode: fakeflow.ModeChatflow},
		{kind: "stream", method: "POST", path: "/api/v1/prediction/" + dashWfPlain, body: dashPredict(q, true), mode: fakeflow.ModeChatflow},
	} {
		tr.do(r)
	}
}

// settle waits until Prometheus has scraped everything sent so far, and
// then once more, for what is counted after the answer (metering).
func (tr *dashTraffic) settle(p *promServer) {
	tr.t.Helper()
	// flowgate counts a request after its last byte: its own scrape
	// first.
	tr.statusesMu.Lock()
	want := float64(tr.sent)
	tr.statusesMu.Unlock()
	var local float64
	if !dashPoll(5*time.Second, func() bool { local = tr.localRequests(); return local >= want }) {
		tr.t.Logf("flowgate counts %v requests of the %v answered", local, want)
		want = local
	}
	if !dashPoll(20*time.Second, func() bool {
		v, ok := p.scalar(`sum(flowgate_requests_total{job="flowgate"})`)
		return ok && v >= want
	}) {
		up, _ := p.scalar(`up{job="flowgate"}`)
		tr.t.Fatalf("Prometheus has not scraped %v requests after 20s (up: %v)", want, up)
	}
	last, _ := p.scalar(`timestamp(up{job="flowgate"})`)
	if !dashPoll(5*time.Second, func() bool { v, ok := p.scalar(`timestamp(up{job="flowgate"})`); return ok && v > last }) {
		tr.t.Fatal("Prometheus scrapes no more")
	}
}

// localRequests is the sum of flowgate_requests_total on flowgate's own
// scrape.
func (tr *dashTraffic) localRequests() float64 {
	res, err := tr.plain.Get("http://" + tr.gw.Metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flowgate_requests_total{") && !strings.HasPrefix(line, "flowgate_requests_total ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// checkStatuses fails when the traffic was not what it was meant to be:
// the panels would then prove less than they claim.
func (tr *dashTraffic) checkStatuses() {
	tr.t.Helper()
	tr.statusesMu.Lock()
	defer tr.statusesMu.Unlock()
	only := func(kind string, codes ...int) {
		for code, n := range tr.statuses[kind] {
			ok := false
			for _, c := range codes {
				ok = ok || code == c
			}
			if !ok {
				tr.t.Errorf("%d %s requests answered %d (want %v)", n, kind, code, codes)
			}
		}
		if len(tr.statuses[kind]) == 0 {
			tr.t.Errorf("no %s request sent", kind)
		}
	}
	only("json", 200)
	only("stream", 200)
	only("cached", 200)
	only("agent", 200)
	only("https", 200)
	only("cut", 200)
	only("stream-error", 200)
	only("fail", 500)
	only("timeout", 504)
	only("404", 404)
	only("400", 400)
	only("redis-down", 200)
	only("redis-down-quota", 200) // quota.on_redis_error: open
	only("quota", 200, 429)
	if tr.statuses["quota"][429] == 0 {
		tr.t.Errorf("the quota never refused: %v", tr.statuses["quota"])
	}
}

// ---- dashboards ----

// seedDashboard is testdata/seed-dashboard.json: the panels of the seed's
// grafana-dashboard.json, reduced to their titles, types and queries.
type seedDashboard struct {
	Panels []struct {
		Title string   `json:"title"`
		Type  string   `json:"type"`
		Exprs []string `json:"exprs"`
	} `json:"panels"`
}

func (s seedDashboard) count() (n int) {
	for _, p := range s.Panels {
		n += len(p.Exprs)
	}
	return n
}

func loadSeedDashboard(t *testing.T) seedDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "seed-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s seedDashboard
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("testdata/seed-dashboard.json: %v", err)
	}
	excepted := 0
	for _, p := range s.Panels {
		for _, e := range p.Exprs {
			if e == seedExcepted {
				excepted++
			}
		}
	}
	if s.count() != 5 || excepted != 1 {
		t.Fatalf("testdata/seed-dashboard.json: %d queries, %d of them %s; the seed had 5, one of them that", s.count(), excepted, seedExcepted)
	}
	return s
}

// grafanaPanel is what the test reads of a Grafana panel; a row's panels
// (collapsed rows keep theirs inside) are read too.
type grafanaPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaVar struct {
	Name    string          `json:"name"`
	Type    string          `json:"type"`
	Query   json.RawMessage `json:"query"` // a string, or {"query": "..."}
	Current struct {
		Value json.RawMessage `json:"value"`
	} `json:"current"`
}

// queryString is the variable's query, in either of Grafana's forms.
func (v grafanaVar) queryString() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &o) == nil {
		return o.Query
	}
	return ""
}

type grafanaDashboard struct {
	Panels []grafanaPanel `json:"panels"`
	Rows   []struct {     // the schema before Grafana 5
		Panels []grafanaPanel `json:"panels"`
	} `json:"rows"`
	Templating struct {
		List []grafanaVar `json:"list"`
	} `json:"templating"`
}

func loadDashboard(path string) (*grafanaDashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return &d, nil
}

// allPanels is every panel, those inside rows too.
func (d *grafanaDashboard) allPanels() []grafanaPanel {
	var out []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, r := range d.Rows {
		walk(r.Panels)
	}
	return out
}

// variables maps each name a query may use to what the test puts there:
// Grafana's built-ins for a dashboard covering the test's traffic, and
// "All" (.*) for the dashboard's query and custom variables.
func (d *grafanaDashboard) variables() map[string]string {
	v := map[string]string{
		"__rate_interval": "1m",
		"__interval":      "15s",
		"__interval_ms":   "15000",
		"__range":         "5m",
		"__range_s":       "300",
		"__range_ms":      "300000",
		"instance":        ".*",
		"workflow_id":     ".*",
	}
	for _, tv := range d.Templating.List {
		if _, ok := v[tv.Name]; ok || tv.Name == "" {
			continue
		}
		switch tv.Type {
		case "query", "custom", "":
			v[tv.Name] = ".*"
		case "interval", "constant", "textbox":
			var cur string
			if json.Unmarshal(tv.Current.Value, &cur) == nil && cur != "" {
				v[tv.Name] = cur
			} else if q := tv.queryString(); q != "" {
				v[tv.Name] = strings.TrimSpace(strings.Split(q, ",")[0])
			}
		}
	}
	return v
}

// dashVarRE matches Grafana's variable syntaxes: ${name}, ${name:format},
// $name and [[name]] (or [[name:format]]).
var dashVarRE = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// dashSubst replaces the variables of expr by their values in vars. Names
// not in vars are left alone ($1 in label_replace is no variable) and
// returned when they look like one a dashboard would define.
func dashSubst(expr string, vars map[string]string) (string, []string) {
	var unknown []string
	out := dashVarRE.ReplaceAllStringFunc(expr, func(m string) string {
		sm := dashVarRE.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		if v, ok := vars[name]; ok {
			return v
		}
		if _, err := strconv.Atoi(name); err != nil {
			unknown = append(unknown, m)
		}
		return m
	})
	return out, unknown
}
