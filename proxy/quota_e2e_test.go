package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
	"github.com/flowgate/flowgate/internal/testredis"
)

// The quota and metering acceptance tests run the real binary: several
// replicas sharing one redis-server, the embedded store across restarts,
// and the admin API over its own listener.

const (
	quotaFlow = "0b4a2c1e-5d6f-4a8b-9c0d-1e2f3a4b5c6d"
	rateFlow  = "0b4a2c1e-5d6f-4a8b-9c0d-1e2f3a4b5c6e"
)

// startGW runs the binary with a config body (listeners added) and extra
// environment; store pins the embedded store's directory ("" for a fresh
// one).
func startGW(t *testing.T, upstream, yaml, store string) *testbin.Proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	cfg := filepath.Join(t.TempDir(), "flowgate.yaml")
	body := "server:\n  listen: 127.0.0.1:0\n  metrics_listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\nlog:\n  access_log: false\nupstreams:\n  - url: " + upstream + "\n" + yaml
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"FLOWGATE_ADMIN_TOKEN=" + adminToken}
	if store != "" {
		env = append(env, "FLOWGATE_METERING_STORE_DIR="+store)
	}
	return testbin.Start(t, testbin.Build(t), env, "-config", cfg)
}

func stopGW(t *testing.T, p *testbin.Proc) {
	t.Helper()
	p.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.Exited:
	case <-time.After(20 * time.Second):
		t.Fatal("flowgate did not stop on SIGINT")
	}
}

// quotaClient has room for many connections at once.
var quotaClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}, Timeout: 30 * time.Second}

type predictResult struct {
	status int
	hdr    http.Header
	body   []byte
}

func runFlow(t *testing.T, addr, flowID string, hdr map[string]string, body string) predictResult {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/prediction/"+flowID, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := quotaClient.Do(req)
	if err != nil {
		t.Error(err)
		return predictResult{}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Error(err)
	}
	return predictResult{res.StatusCode, res.Header, b}
}

func adminDo(t *testing.T, p *testbin.Proc, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.Admin+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: not JSON: %q", method, path, raw)
	}
	return res.StatusCode, out
}

// usage polls a replica's report until cond holds (the ledger is written
// off the request path) and returns it.
func usage(t *testing.T, p *testbin.Proc, flowID string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, rep := adminDo(t, p, "GET", "/admin/v1/usage/"+flowID+"?range=1d", adminToken, "")
		if code == 200 && cond(rep) {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage report of %s never matched: %d %v", flowID, code, rep)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func num(m map[string]any, k string) float64 { f, _ := m[k].(float64); return f }

func TestQuotaExactAcrossReplicas(t *testing.T) {
	rs := testredis.Start(t)
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	yaml := "redis:\n  addr: " + rs.Addr() + "\nquota:\n  workflows:\n    \"" + quotaFlow + "\":\n      budgets:\n        - {window: 24h, executions: 100}\n"
	var gws []*testbin.Proc
	for range 3 {
		gws = append(gws, startGW(t, up.URL(), yaml, ""))
	}
	const n = 1000
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := runFlow(t, gws[i%3].Listen, quotaFlow, nil, `{"question":"hi"}`)
			switch r.status {
			case 200:
				ok.Add(1)
				if r.hdr.Get("RateLimit-Limit") != "100" {
					t.Errorf("admitted answer: RateLimit-Limit %q, want 100", r.hdr.Get("RateLimit-Limit"))
				}
			case 429:
				refused.Add(1)
				var body map[string]any
				if err := json.Unmarshal(r.body, &body); err != nil {
					t.Errorf("429 body not JSON: %q", r.body)
					return
				}
				ra, _ := strconv.Atoi(r.hdr.Get("Retry-After"))
				if body["code"] != "quota_exceeded" || body["success"] != false || num(body, "statusCode") != 429 ||
					body["workflowId"] != quotaFlow || num(body, "limit") != 100 || body["window"] != "24h" || ra < 1 || ra > 86400 {
					t.Errorf("429: Retry-After %q body %v", r.hdr.Get("Retry-After"), body)
				}
				if r.hdr.Get("RateLimit-Remaining") != "0" {
					t.Errorf("429: RateLimit-Remaining %q", r.hdr.Get("RateLimit-Remaining"))
				}
			default:
				t.Errorf("status %d: %s", r.status, r.body)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok.Load() != 100 || refused.Load() != 900 {
		t.Fatalf("admitted %d, refused %d; want 100 and 900", ok.Load(), refused.Load())
	}
	if got := up.Server().Stats().Predictions; got != 100 {
		t.Fatalf("fakeflow ran %d predictions, want exactly 100", got)
	}
	for i, g := range gws {
		rep := usage(t, g, quotaFlow, func(r map[string]any) bool { return num(r, "totalExecutions") == 100 && num(r, "rejected") == 900 })
		// fakeflow answers as a classic chatflow here: estimated tokens.
		if num(rep, "estimatedExecutions") != 100 || num(rep, "inputTokens") <= 0 {
			t.Errorf("replica %d: %v", i, rep)
		}
	}
}

func TestRateLimitBurst(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	for _, shared := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "redis"}[shared], func(t *testing.T) {
			yaml := "quota:\n  workflows:\n    \"" + quotaFlow + "\":\n      rate: {limit: 5, per: 1s, burst: 5}\n"
			if shared {
				yaml += "redis:\n  addr: " + testredis.Start(t).Addr() + "\n"
			}
			gw := startGW(t, up.URL(), yaml, "")
			wave := func() (pass int, retry []string) {
				var mu sync.Mutex
				var wg sync.WaitGroup
				for range 50 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := runFlow(t, gw.Listen, quotaFlow, nil, `{"question":"hi"}`)
						mu.Lock()
						defer mu.Unlock()
						if r.status == 200 {
							pass++
						} else if r.status == 429 && bytes.Contains(r.body, []byte(`"code":"rate_limited"`)) {
							retry = append(retry, r.hdr.Get("Retry-After"))
						} else {
							t.Errorf("status %d: %s", r.status, r.body)
						}
					}()
				}
				wg.Wait()
				return pass, retry
			}
			before := up.Server().Stats().Predictions
			pass, retry := wave()
			if pass != 5 {
				t.Fatalf("first wave: %d passed, want 5", pass)
			}
			for _, ra := range retry {
				if ra != "1" {
					t.Fatalf("Retry-After %q, want 1 (a request passes within 200ms)", ra)
				}
			}
			// The limit is about time: a second later the bucket is full.
			time.Sleep(time.Second)
			if pass, _ = wave(); pass != 5 {
				t.Fatalf("a second later: %d passed, want 5", pass)
			}
			if got := up.Server().Stats().Predictions - before; got != 10 {
				t.Fatalf("fakeflow ran %d, want 10: a refused request reached the upstream", got)
			}
		})
	}
}

// fakeflow's Agentflow numbers: input = 10 + ceil(runes/4), output = the
// token frames, cost = gpt-4o-mini's 0.15/0.60 USD per 1M tokens.
func agentUsage(question string, tokens int) (in, out, costNano int64) {
	in = 10 + int64((len([]rune(question))+3)/4)
	out = int64(tokens)
	return in, out, (in*150_000 + out*600_000 + 500) / 1000
}

func TestMeteringExact(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{Tokens: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	gw := startGW(t, up.URL(), "", "")
	const agentJSON, agentStream, classic = "11111111-0000-4000-8000-000000000001", "11111111-0000-4000-8000-000000000002", "11111111-0000-4000-8000-000000000003"
	agent := map[string]string{fakeflow.HeaderMode: fakeflow.ModeAgentflow}
	questions := []string{"hi", "what is the weather in Paris today?", "a longer question with ünïcödé"}
	var wantIn, wantOut, wantCost int64
	for _, q := range questions {
		body, _ := json.Marshal(map[string]any{"question": q})
		if r := runFlow(t, gw.Listen, agentJSON, agent, string(body)); r.status != 200 {
			t.Fatalf("agentflow JSON: %d %s", r.status, r.body)
		}
		in, out, c := agentUsage(q, 7)
		wantIn, wantOut, wantCost = wantIn+in, wantOut+out, wantCost+c
	}
	for _, id := range []string{agentJSON} {
		rep := usage(t, gw, id, func(r map[string]any) bool { return num(r, "totalExecutions") == 3 })
		if num(rep, "inputTokens") != float64(wantIn) || num(rep, "outputTokens") != float64(wantOut) ||
			num(rep, "totalCostNano") != float64(wantCost) || num(rep, "estimatedExecutions") != 0 {
			t.Errorf("agentflow JSON report %v; want in %d out %d cost %d nano", rep, wantIn, wantOut, wantCost)
		}
	}
	// Streamed: the usageMetadata event repeats a node and is not added.
	var sIn, sOut, sCost int64
	for _, q := range questions {
		body, _ := json.Marshal(map[string]any{"question": q, "streaming": true})
		r := runFlow(t, gw.Listen, agentStream, agent, string(body))
		if r.status != 200 || !bytes.Contains(r.body, []byte(`"event":"end"`)) {
			t.Fatalf("agentflow stream: %d %s", r.status, r.body)
		}
		in, out, c := agentUsage(q, 7)
		sIn, sOut, sCost = sIn+in, sOut+out, sCost+c
	}
	rep := usage(t, gw, agentStream, func(r map[string]any) bool { return num(r, "totalExecutions") == 3 })
	if num(rep, "inputTokens") != float64(sIn) || num(rep, "outputTokens") != float64(sOut) || num(rep, "totalCostNano") != float64(sCost) {
		t.Errorf("agentflow stream report %v; want in %d out %d cost %d nano", rep, sIn, sOut, sCost)
	}
	// A classic chatflow reports nothing: estimated, and said so.
	for _, stream := range []bool{false, true} {
		body, _ := json.Marshal(map[string]any{"question": "hi", "streaming": stream})
		if r := runFlow(t, gw.Listen, classic, nil, string(body)); r.status != 200 {
			t.Fatalf("classic: %d %s", r.status, r.body)
		}
	}
	rep = usage(t, gw, classic, func(r map[string]any) bool { return num(r, "totalExecutions") == 2 })
	in, out := int64(num(rep, "inputTokens")), int64(num(rep, "outputTokens"))
	if num(rep, "estimatedExecutions") != 2 || in <= 0 || out <= 0 {
		t.Fatalf("classic report %v: want 2 estimated executions with tokens", rep)
	}
	if got, want := int64(num(rep, "totalCostNano")), (in*150_000+out*600_000+500)/1000; got < want-1 || got > want+1 {
		t.Errorf("classic cost %d nano, want tokens x price = %d", got, want)
	}
	// The metrics say the same, by source.
	m := scrape(t, gw.Metrics)
	if !strings.Contains(m, `flowgate_tokens_total{direction="input",model="gpt-4o-mini",source="estimated",workflow_id="`+classic+`"}`) ||
		!strings.Contains(m, `flowgate_tokens_total{direction="output",model="gpt-4o-mini",source="reported",workflow_id="`+agentJSON+`"} `+strconv.FormatInt(wantOut, 10)) {
		t.Errorf("token metrics missing:\n%s", grepLines(m, "flowgate_tokens_total"))
	}
	// The seed dashboard's run counters, from the same requests.
	for _, want := range []string{
		`flowise_workflow_executions_total{status="started",workflow_id="` + agentJSON + `"} 3`,
		`flowise_workflow_executions_total{status="completed",workflow_id="` + agentStream + `"} 3`,
		`flowise_workflow_execution_duration_seconds_count{workflow_id="` + classic + `"} 2`,
		`flowise_node_executions_total{node_type="llmAgentflow",status="success"} 6`,
		`flowise_node_executions_total{node_type="startAgentflow",status="success"} 6`,
		// Three agentflow streams and one classic one, each with its
		// first token timed; their frames counted.
		`flowgate_stream_ttft_seconds_count{workflow_id="` + agentStream + `"} 3`,
		`flowgate_stream_ttft_seconds_count{workflow_id="` + classic + `"} 1`,
		`flowgate_stream_frames_count 4`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("missing %s:\n%s", want, grepLines(m, "flowise_workflow"))
		}
	}
	// Every attempt that got an answer: 3 + 3 + 2 runs.
	if !strings.Contains(m, `flowgate_upstream_ttfb_seconds_count{upstream="`+strings.TrimPrefix(up.URL(), "http://")+`"} 8`) {
		t.Errorf("ttfb:\n%s", grepLines(m, "flowgate_upstream_ttfb_seconds_count"))
	}
	// 7 tokens + start, metadata, usage, executed data, end...: an
	// agentflow stream has more frames than tokens; none has more than 64.
	if !strings.Contains(m, `flowgate_stream_frames_bucket{le="4"} 0`) || !strings.Contains(m, `flowgate_stream_frames_bucket{le="64"} 4`) {
		t.Errorf("frames:\n%s", grepLines(m, "flowgate_stream_frames"))
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestUsageSurvivesRestart(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{Tokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	agent := map[string]string{fakeflow.HeaderMode: fakeflow.ModeAgentflow}
	yaml := "quota:\n  workflows:\n    \"" + quotaFlow + "\":\n      budgets:\n        - {window: 24h, executions: 4}\n"
	t.Run("embedded", func(t *testing.T) {
		store := t.TempDir()
		gw := startGW(t, up.URL(), yaml, store)
		for range 3 {
			runFlow(t, gw.Listen, quotaFlow, agent, `{"question":"hi"}`)
		}
		before := usage(t, gw, quotaFlow, func(r map[string]any) bool { return num(r, "totalExecutions") == 3 })
		stopGW(t, gw)
		gw = startGW(t, up.URL(), yaml, store)
		after := usage(t, gw, quotaFlow, func(map[string]any) bool { return true })
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Fatalf("report changed across a restart:\nbefore %v\nafter  %v", before, after)
		}
		// The budget window survived too: one more run, then refused.
		if r := runFlow(t, gw.Listen, quotaFlow, agent, `{"question":"hi"}`); r.status != 200 {
			t.Fatalf("4th run: %d", r.status)
		}
		if r := runFlow(t, gw.Listen, quotaFlow, agent, `{"question":"hi"}`); r.status != 429 {
			t.Fatalf("5th run: %d, want 429 (the window forgot the runs before the restart)", r.status)
		}
	})
	t.Run("redis-aof", func(t *testing.T) {
		rs := testredis.StartWith(t, testredis.Options{AppendOnly: true})
		y := yaml + "redis:\n  addr: " + rs.Addr() + "\n"
		gw := startGW(t, up.URL(), y, "")
		for range 3 {
			runFlow(t, gw.Listen, quotaFlow, agent, `{"question":"hi"}`)
		}
		before := usage(t, gw, quotaFlow, func(r map[string]any) bool { return num(r, "totalExecutions") == 3 })
		rs.Kill() // no shutdown save: only the append-only file brings it back
		rs.Restart()
		after := usage(t, gw, quotaFlow, func(r map[string]any) bool { return num(r, "totalExecutions") == 3 })
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Fatalf("report changed across a Redis restart:\nbefore %v\nafter  %v", before, after)
		}
	})
}

func TestQuotaAdminAPI(t *testing.T) {
	rs := testredis.Start(t)
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	yaml := "redis:\n  addr: " + rs.Addr() + "\n"
	a, b := startGW(t, up.URL(), yaml, ""), startGW(t, up.URL(), yaml, "")

	for _, tok := range []string{"", "wrong-token"} {
		for _, path := range []string{"/admin/v1/quotas", "/admin/v1/quotas/" + quotaFlow, "/admin/v1/usage", "/admin/v1/usage/" + quotaFlow} {
			if code, body := adminDo(t, a, "GET", path, tok, ""); code != 401 || body["code"] == nil {
				t.Errorf("GET %s with token %q: %d %v, want 401", path, tok, code, body)
			}
		}
		if code, _ := adminDo(t, a, "PUT", "/admin/v1/quotas/"+quotaFlow, tok, `{}`); code != 401 {
			t.Errorf("PUT with token %q: %d, want 401", tok, code)
		}
	}
	for _, tc := range []struct{ method, path, body, field string }{
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"rate":`, ""},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"rate":{"limit":5,"bogus":1}}`, "rate.bogus"},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"ratez":{}}`, "ratez"},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"rate":{"limit":-1}}`, "rate.limit"},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"rate":{"limit":"5"}}`, "rate.limit"},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"budgets":[{"window":"1x","executions":5}]}`, "budgets[0].window"},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"budgets":[{"window":"24h","executions":-5}]}`, "budgets[0].executions"},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"budgets":[{"window":"24h","cost_usd":-5}]}`, "budgets[0].cost_usd"},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"budgets":[{"window":"24h","executions":5}]}{}`, ""},
		{"PUT", "/admin/v1/quotas/" + quotaFlow, `{"per_caller":"everyone"}`, "per_caller"},
		{"GET", "/admin/v1/usage/" + quotaFlow + "?range=abc", "", "range"},
		{"GET", "/admin/v1/usage/" + quotaFlow + "?range=0d", "", "range"},
		{"GET", "/admin/v1/usage?range=9999d", "", "range"},
		{"GET", "/admin/v1/usage/" + quotaFlow + "?from=2026-13-01", "", "from"},
		{"GET", "/admin/v1/usage/" + quotaFlow + "?from=2026-11-02&to=2026-11-01", "", "from"},
		{"GET", "/admin/v1/usage/" + quotaFlow + "?to=yesterday&from=2026-11-01", "", "to"},
		{"GET", "/admin/v1/usage?range=7d&bogus=1", "", "bogus"},
	} {
		code, body := adminDo(t, a, tc.method, tc.path, adminToken, tc.body)
		if code != 400 || body["code"] != "invalid_request" || body["field"] != tc.field || !strings.Contains(fmt.Sprint(body["message"]), tc.field) {
			t.Errorf("%s %s %s: %d %v; want 400 naming %q", tc.method, tc.path, tc.body, code, body, tc.field)
		}
	}
	// Empty reports are zeros, never NaN, and list no days.
	code, rep := adminDo(t, a, "GET", "/admin/v1/usage/"+quotaFlow+"?range=30d", adminToken, "")
	if code != 200 || rep["averageDuration"] != float64(0) || rep["totalCost"] != float64(0) || fmt.Sprint(rep["usageByDay"]) != "[]" {
		t.Fatalf("empty report: %d %v", code, rep)
	}
	// A PUT through one replica holds on the other within 5 s.
	if code, body := adminDo(t, a, "PUT", "/admin/v1/quotas/"+quotaFlow, adminToken, `{"budgets":[{"window":"1h","executions":2}]}`); code != 200 || body["source"] != "admin" {
		t.Fatalf("PUT: %d %v", code, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, e := adminDo(t, b, "GET", "/admin/v1/quotas/"+quotaFlow, adminToken, "")
		if e["source"] == "admin" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica b still has %v after 5s", e)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, want := range []int{200, 200, 429} {
		if r := runFlow(t, b.Listen, quotaFlow, nil, `{"question":"hi"}`); r.status != want {
			t.Fatalf("run %d on b: %d, want %d", i, r.status, want)
		}
	}
	if code, _ := adminDo(t, a, "DELETE", "/admin/v1/quotas/"+quotaFlow, adminToken, ""); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := adminDo(t, a, "DELETE", "/admin/v1/quotas/"+quotaFlow, adminToken, ""); code != 404 {
		t.Fatalf("second DELETE: %d, want 404", code)
	}
	_, list := adminDo(t, b, "GET", "/admin/v1/quotas", adminToken, "")
	if list["redis"] != "shared" {
		t.Errorf("quota list: %v", list)
	}
}

func TestQuotaRedisOutage(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	for _, mode := range []string{"open", "closed"} {
		t.Run(mode, func(t *testing.T) {
			rs := testredis.Start(t)
			yaml := "redis:\n  addr: " + rs.Addr() + "\nquota:\n  on_redis_error: " + mode + "\n  workflows:\n    \"" + quotaFlow + "\":\n      budgets:\n        - {window: 24h, executions: 1000}\n" +
				"    \"" + rateFlow + "\":\n      rate: {limit: 2, per: 1m, burst: 2}\n"
			gw := startGW(t, up.URL(), yaml, "")
			if r := runFlow(t, gw.Listen, quotaFlow, nil, `{"question":"hi"}`); r.status != 200 {
				t.Fatalf("before: %d", r.status)
			}
			rs.Kill()
			r := runFlow(t, gw.Listen, quotaFlow, nil, `{"question":"hi"}`)
			switch mode {
			case "open":
				if r.status != 200 {
					t.Fatalf("open, Redis down: %d %s", r.status, r.body)
				}
				// Served, and still limited: by this process alone.
				var codes []int
				for range 4 {
					codes = append(codes, runFlow(t, gw.Listen, rateFlow, nil, `{"question":"hi"}`).status)
				}
				if fmt.Sprint(codes) != "[200 200 429 429]" {
					t.Fatalf("open, Redis down, rate 2 per minute: %v, want [200 200 429 429]", codes)
				}
			case "closed":
				if r.status != 503 || !bytes.Contains(r.body, []byte(`"code":"quota_unavailable"`)) || r.hdr.Get("Retry-After") == "" {
					t.Fatalf("closed, Redis down: %d %s", r.status, r.body)
				}
			}
			// A workflow without limits never needs Redis.
			if r := runFlow(t, gw.Listen, "99999999-0000-4000-8000-000000000000", nil, `{"question":"hi"}`); r.status != 200 {
				t.Fatalf("unlimited workflow while Redis is down: %d", r.status)
			}
			rs.Restart()
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := runFlow(t, gw.Listen, quotaFlow, nil, `{"question":"hi"}`)
				if r.status == 200 && r.hdr.Get("RateLimit-Limit") == "1000" {
					_, list := adminDo(t, gw, "GET", "/admin/v1/quotas", adminToken, "")
					if list["redis"] == "shared" {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no recovery after Redis came back: %d %s", r.status, r.body)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
