package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
)

// promtool is Prometheus's own checker (Debian's prometheus package, which
// scripts/test installs). Under CI its absence is a failure.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is missing (apt-get install prometheus)")
		}
		t.Skip("promtool is missing (apt-get install prometheus)")
	}
	return p
}

// The alert rules load, and each alert fires on the series that should
// trigger it and on no other (deploy/prometheus/alerts_test.yml).
func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	dir := filepath.Join("..", "..", "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// A scrape of the running gateway, after traffic of every kind, passes
// promtool check metrics (names, types, help, units).
func TestMetricsPassPromtool(t *testing.T) {
	bin := promtool(t)
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := startWithFakeflow(t, "cache:\n  workflows:\n    \"11111111-0000-4000-8000-000000000001\": {enabled: true}\n"+
		"quota:\n  workflows:\n    \"11111111-0000-4000-8000-000000000002\":\n      budgets: [{window: 24h, executions: 1}]\n")
	for _, r := range []struct{ id, body, mode string }{
		{"11111111-0000-4000-8000-000000000001", `{"question":"hi"}`, ""},
		{"11111111-0000-4000-8000-000000000001", `{"question":"hi"}`, ""}, // a hit
		{"11111111-0000-4000-8000-000000000002", `{"question":"hi"}`, ""},
		{"11111111-0000-4000-8000-000000000002", `{"question":"hi"}`, ""}, // refused
		{"11111111-0000-4000-8000-000000000003", `{"question":"hi","streaming":true}`, fakeflow.ModeAgentflow},
		{"11111111-0000-4000-8000-000000000003", `{"question":"hi"}`, fakeflow.ModeAgentflow},
	} {
		req, _ := http.NewRequest("POST", "http://"+p.Listen+"/api/v1/prediction/"+r.id, strings.NewReader(r.body))
		req.Header.Set("Content-Type", "application/json")
		if r.mode != "" {
			req.Header.Set(fakeflow.HeaderMode, r.mode)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	// Tokens are counted by the metering worker, after the answers: poll
	// the scrape until every family is there.
	var scrape []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + p.Metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		scrape, _ = io.ReadAll(res.Body)
		res.Body.Close()
		missing := ""
		for _, want := range []string{"flowgate_cache_requests_total", "flowgate_quota_rejections_total", "flowise_workflow_executions_total", "flowgate_tokens_total", "flowise_node_executions_total",
			"flowgate_quota_budget_used_ratio", "flowgate_stream_ttft_seconds", "flowgate_stream_frames", "flowgate_upstream_ttfb_seconds"} {
			if !bytes.Contains(scrape, []byte(want)) {
				missing = want
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scrape lacks %s", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// metrics.enabled: false records nothing on the request path: the scrape
// keeps the process and Go collectors, and the ops endpoints still answer.
func TestMetricsDisabled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := startWithFakeflow(t, "metrics:\n  enabled: false\n")
	res, err := http.Post("http://"+p.Listen+"/api/v1/prediction/11111111-0000-4000-8000-000000000001", "application/json", strings.NewReader(`{"question":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("prediction: %d", res.StatusCode)
	}
	get := func(path string) (int, string) {
		res, err := http.Get("http://" + p.Metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	code, scrape := get("/metrics")
	if code != 200 || !strings.Contains(scrape, "process_cpu_seconds_total") {
		t.Fatalf("/metrics: %d\n%s", code, scrape)
	}
	for _, off := range []string{"flowgate_requests_total", "flowise_", "flowgate_upstream_"} {
		if strings.Contains(scrape, off) {
			t.Errorf("metrics off, yet the scrape has %s", off)
		}
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
}

// startWithFakeflow runs the binary on loopback ports in front of a fresh
// fakeflow, with extra appended to its config.
func startWithFakeflow(t *testing.T, extra string) *testbin.Proc {
	t.Helper()
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	cfg := filepath.Join(t.TempDir(), "flowgate.yaml")
	y := "server:\n  listen: 127.0.0.1:0\n  metrics_listen: 127.0.0.1:0\n  admin_listen: \"\"\nupstreams:\n  - url: " + up.URL() + "\n" + extra
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return testbin.Start(t, testbin.Build(t), nil, "-config", cfg)
}
