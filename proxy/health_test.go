package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Configured status codes count as passive failures and take the upstream
// out; the other upstream then takes all traffic.
func TestPassiveStatusFailuresTakeUpstreamOut(t *testing.T) {
	bad := startFlow(t, fakeflow.Options{FailureRate: 1})
	good := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{bad.URL(), good.URL()}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Health.Passive.UnhealthyStatuses = []int{500}
		c.Health.Passive.MaxFails = 2
		c.Health.Passive.Cooldown = config.Duration(time.Hour)
	})
	// Least-connections alternates between the two idle upstreams; drive
	// traffic until the failing one has failed twice.
	for i := 0; g.Upstreams()[0].Healthy(time.Now()); i++ {
		if i > 50 {
			t.Fatal("failing upstream never taken out")
		}
		readAll(t, predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil))
	}
	before := bad.Server().Stats().Predictions
	for range 10 {
		if resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil); readAll(t, resp) == "" || resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if bad.Server().Stats().Predictions != before {
		t.Fatal("an upstream in cool-down got traffic")
	}
}

// A client that gives up does not count against the upstream.
func TestClientCancelDoesNotPenalize(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Health.Passive.MaxFails = 1
	})
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.URL+predictPath, strings.NewReader(`{"question":"hi"}`))
		req.Header.Set("X-Fakeflow-Mode", "hang")
		_, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			t.Fatal("hung request answered")
		}
	}
	if !g.Upstreams()[0].Healthy(time.Now()) {
		t.Fatal("client cancellations took the upstream out")
	}
	if n := testutil.CollectAndCount(g.reg, "flowgate_upstream_failures_total"); n != 0 {
		t.Fatalf("%d upstream failure series after client cancels", n)
	}
}

// One access log line per request with nginx's main fields plus the
// gateway's own.
func TestAccessLogLine(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, nil)
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, map[string]string{"User-Agent": "t/1", "X-Request-ID": "abc-1"})
	readAll(t, resp)
	line := g.nextAccessLine(t)
	want := map[string]any{
		"remote_addr": "127.0.0.1", "request": "POST " + predictPath + " HTTP/1.1", "status": float64(200),
		"http_user_agent": "t/1", "request_id": "abc-1", "workflow_id": flowID,
		"route": "/api/v1/prediction/{id}", "upstream": strings.TrimPrefix(ff.URL(), "http://"),
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v (%T), want %v", k, line[k], line[k], v)
		}
	}
	for _, k := range []string{"body_bytes_sent", "request_time", "http_referer", "http_x_forwarded_for", "remote_user"} {
		if _, ok := line[k]; !ok {
			t.Errorf("missing %s", k)
		}
	}
}

// Requests ReverseProxy refuses itself (an invalid Upgrade) never count
// against an upstream: no client can push upstreams out of rotation.
func TestClientErrorsDoNotPenalizeUpstreams(t *testing.T) {
	a := startFlow(t, fakeflow.Options{})
	b := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{a.URL(), b.URL()}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Health.Passive.MaxFails = 1
	})
	for range 6 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(conn, "GET /api/v1/ping HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: \xff\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("invalid upgrade: status %d, want 400", resp.StatusCode)
		}
	}
	for _, u := range g.Upstreams() {
		if !u.Healthy(time.Now()) {
			t.Fatalf("upstream %s taken out by client errors", u.Name)
		}
	}
}

// Passive checks never take out the last healthy upstream.
func TestPassiveChecksKeepTheLastUpstream(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{FailureRate: 1})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Health.Passive.UnhealthyStatuses = []int{500}
		c.Health.Passive.MaxFails = 1
	})
	for range 5 {
		if resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil); readAll(t, resp) == "" || resp.StatusCode != 500 {
			t.Fatalf("status %d, want the upstream's own 500", resp.StatusCode)
		}
	}
}

// An upstream status above 599 is passed on, not a crash.
func TestOddUpstreamStatusIsPassedOn(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok")
		brw.Flush()
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Health.Passive.UnhealthyStatuses = []int{502}
	})
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
	if body := readAll(t, resp); resp.StatusCode != 999 || body != "ok" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if line := g.nextAccessLine(t); line["status"] != float64(999) {
		t.Fatalf("logged status %v", line["status"])
	}
}

// Readiness waits for a passing probe: a gateway in front of a flow server
// that never came up is not ready, and becomes ready when it answers.
func TestReadyOnlyAfterAProbePasses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	g := newGW(t, []string{"http://" + addr}, nil)
	if g.Ready() {
		t.Fatal("ready before any upstream answered a probe")
	}
	ff, err := fakeflow.Start(addr, fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	g.waitHealth(t, 5*time.Second, g.Ready)
}
