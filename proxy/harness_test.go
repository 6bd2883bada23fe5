package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/proxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const flowID = "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11"

var predictPath = "/api/v1/prediction/" + flowID

// gw is a gateway under test, served on a real loopback socket.
type gw struct {
	*proxy.Gateway
	URL    string
	srv    *httptest.Server
	logs   *observer.ObservedLogs
	reg    *prometheus.Registry
	access *lineWriter
}

// lineWriter is the access log under test: it parses each line (proving
// it is valid JSON), keeps it, and announces it so tests wait on the log
// instead of sleeping.
type lineWriter struct {
	t     *testing.T
	mu    sync.Mutex
	lines []map[string]any
	ch    chan map[string]any
}

func (w *lineWriter) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil || p[len(p)-1] != '\n' {
		w.t.Errorf("access log line is not one JSON line: %v: %q", err, p)
		return len(p), nil
	}
	w.mu.Lock()
	w.lines = append(w.lines, m)
	w.mu.Unlock()
	select {
	case w.ch <- m:
	default:
	}
	return len(p), nil
}

func (w *lineWriter) all() []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]map[string]any(nil), w.lines...)
}

// newGW starts a gateway in front of upstreams. Health checks run fast so
// tests wait on signals, not on the defaults.
func newGW(t *testing.T, upstreams []string, mutate func(*config.Config)) *gw {
	t.Helper()
	return newGWWith(t, upstreams, mutate, nil)
}

type gwOptions = proxy.Options

// newGWWith is newGW with a hook on the gateway's options (a cache store).
func newGWWith(t *testing.T, upstreams []string, mutate func(*config.Config), opts func(*gwOptions)) *gw {
	t.Helper()
	cfg := config.Default()
	cfg.Upstreams = nil
	for _, u := range upstreams {
		cfg.Upstreams = append(cfg.Upstreams, config.Upstream{URL: u})
	}
	cfg.Health.Active.Interval = config.Duration(20 * time.Millisecond)
	cfg.Health.Active.Timeout = config.Duration(200 * time.Millisecond)
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	core, logs := observer.New(zap.DebugLevel)
	access := &lineWriter{t: t, ch: make(chan map[string]any, 10000)}
	reg := prometheus.NewRegistry()
	o := proxy.Options{Logger: zap.New(core), Metrics: metrics.New(reg), AccessLog: access}
	if opts != nil {
		opts(&o)
	}
	g, err := proxy.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	srv := httptest.NewServer(g)
	t.Cleanup(func() {
		srv.Close()
		g.Close()
	})
	return &gw{Gateway: g, URL: srv.URL, srv: srv, logs: logs, reg: reg, access: access}
}

func startFlow(t *testing.T, o fakeflow.Options) *fakeflow.Instance {
	t.Helper()
	ff, err := fakeflow.Start("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ff.Close() })
	return ff
}

func predict(t *testing.T, c *http.Client, url, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+predictPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// post is predict for worker goroutines: errors are returned, since only
// the test's own goroutine may stop the test. A transport error is status 0.
func post(c *http.Client, url, body string, hdr map[string]string) (int, string) {
	req, err := http.NewRequest(http.MethodPost, url+predictPath, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// frame is one SSE frame as Flowise writes it.
type frame struct {
	raw string
	at  time.Time
}

// readFrames reads SSE frames until the body ends; err is the read error
// that ended it (nil for a clean end).
func readFrames(body io.Reader, each func(frame)) error {
	br := bufio.NewReader(body)
	var cur bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		cur.WriteString(line)
		if line == "\n" && cur.Len() > 1 {
			each(frame{raw: cur.String(), at: time.Now()})
			cur.Reset()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// nextAccessLine waits for the next access log line.
func (g *gw) nextAccessLine(t *testing.T) map[string]any {
	t.Helper()
	select {
	case l := <-g.access.ch:
		return l
	case <-time.After(5 * time.Second):
		t.Fatal("no access log line")
		return nil
	}
}

// waitHealth blocks until cond holds, re-checking whenever any upstream's
// health changes; it fails the test after limit.
func (g *gw) waitHealth(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(limit)
	for {
		ch := g.HealthChanged()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("health condition not reached in time")
		}
	}
}
