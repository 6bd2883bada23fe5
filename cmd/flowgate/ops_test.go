package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/proxy"
	"go.uber.org/zap"
)

// The metrics listener: /healthz always, /readyz only with a healthy
// upstream and not draining, /metrics with the request series.
func TestOpsEndpoints(t *testing.T) {
	ff, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	cfg, err := config.LoadWith("", config.LoadOptions{Overrides: config.Overrides{Upstreams: []string{ff.URL()}}})
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry()
	g, err := proxy.New(cfg, proxy.Options{Logger: zap.NewNop(), Metrics: metrics.New(reg)})
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	defer g.Close()
	// Readiness waits for the first passing probe.
	for {
		ch := g.HealthChanged()
		if g.Ready() {
			break
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("never ready")
		}
	}
	gw := httptest.NewServer(g)
	defer gw.Close()
	ops := httptest.NewServer(opsHandler(reg, g))
	defer ops.Close()

	resp, err := http.Post(gw.URL+"/api/v1/prediction/"+flowID, "application/json", strings.NewReader(`{"question":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	get := func(path string) (int, string) {
		r, err := http.Get(ops.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d with a healthy upstream", code)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		`flowgate_requests_total{code="200",method="POST",route="/api/v1/prediction/{id}"} 1`,
		`flowgate_upstream_healthy{upstream="` + strings.TrimPrefix(ff.URL(), "http://") + `"} 1`,
		`flowgate_request_duration_seconds_bucket`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	g.Drain()
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz %d while draining", code)
	}
}
