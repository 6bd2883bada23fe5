package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testredis"
	"github.com/flowgate/flowgate/ledger"
	"github.com/flowgate/flowgate/metering"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/quota"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// roundTrips records what a Redis client sends, one entry per round trip
// (a command, or a pipeline), as the lower-cased command names.
type roundTrips struct {
	mu   sync.Mutex
	sent [][]string
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.add(cmds)
		return next(ctx, cmds)
	}
}
func (h *roundTrips) add(cmds []redis.Cmder) {
	var names []string
	for _, c := range cmds {
		names = append(names, strings.ToLower(c.Name()))
	}
	h.mu.Lock()
	h.sent = append(h.sent, names)
	h.mu.Unlock()
}

// take returns the round trips since the last call that touched the cache
// or the quota (the background loops' version polls are left out).
func (h *roundTrips) take() [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out [][]string
	for _, rt := range h.sent {
		for _, n := range rt {
			if n == "evalsha" || n == "eval" || n == "pttl" {
				out = append(out, rt)
				break
			}
		}
	}
	h.sent = nil
	return out
}

// With the cache and a quota on one workflow and Redis shared, a request
// costs one round trip for both: the admission script and the cache's
// lookup travel in one pipeline. A hit from Redis (cached by another
// replica) is counted by the rate and gives its execution back.
func TestQuotaAndCacheShareOneRoundTrip(t *testing.T) {
	rs := testredis.Start(t)
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })

	replica := func(hook redis.Hook) *gw {
		rdb := redis.NewClient(cache.RedisOptions(rs.Addr(), "", 0))
		if hook != nil {
			rdb.AddHook(hook)
		}
		t.Cleanup(func() { rdb.Close() })
		qc := config.Quota{OnRedisError: "open", Workflows: map[string]config.QuotaPolicy{
			flowID: {Budgets: []config.Budget{{Window: config.Duration(24 * 3600e9), Executions: 2}}},
		}}
		q, err := quota.New(quota.Options{Config: qc, Redis: rdb, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Close)
		st, err := cache.NewStore(cache.Options{MaxMemory: 64 << 20, Redis: rdb, Metrics: metrics.New(prometheus.NewRegistry()), Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return newGWWith(t, []string{up.URL()}, func(c *config.Config) {
			c.Cache.Default.Enabled = ptr(true)
			c.Quota = qc
		}, func(o *gwOptions) { o.Cache, o.Quota = st, q })
	}
	a := replica(nil)
	hook := &roundTrips{}
	b := replica(hook)

	if x, code, _ := ask(t, a, `{"question":"one"}`, nil); x != "MISS" || code != 200 {
		t.Fatalf("first ask on a: %s %d", x, code)
	}
	check := redis.NewClient(cache.RedisOptions(rs.Addr(), "", 0))
	t.Cleanup(func() { check.Close() })
	storedInRedis(t, check, 1, 5e9)

	hook.take()
	for i := range 3 {
		x, code, _ := ask(t, b, `{"question":"one"}`, nil)
		if code != 200 || x != "HIT" {
			t.Fatalf("ask %d on b: %s %d", i, x, code)
		}
		rts := hook.take()
		if i == 0 {
			// From Redis: one pipeline carried the lookup and the script.
			if len(rts) != 1 || !contains(rts[0], "get") || !contains(rts[0], "evalsha") {
				t.Fatalf("round trips for a hit from Redis: %v, want one pipeline with get and evalsha", rts)
			}
		} else if len(rts) != 1 || contains(rts[0], "get") {
			// From b's memory now: only the admission.
			t.Fatalf("round trips for a hit from memory: %v, want the admission alone", rts)
		}
	}
	// Three hits spent nothing: the budget of 2 still has one run.
	if x, code, _ := ask(t, b, `{"question":"two"}`, nil); code != 200 || x != "MISS" {
		t.Fatalf("second run: %s %d", x, code)
	}
	if _, code, body := ask(t, a, `{"question":"three"}`, nil); code != 429 || !strings.Contains(body, "quota_exceeded") {
		t.Fatalf("third run: %d %s, want 429", code, body)
	}
	if got := up.Server().Stats().Predictions; got != 2 {
		t.Fatalf("fakeflow ran %d, want 2", got)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// quotaGW is a gateway in front of up with an in-process quota.
func quotaGW(t *testing.T, up string, qc config.Quota, mutate func(*config.Config)) *gw {
	t.Helper()
	q, err := quota.New(quota.Options{Config: qc, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return newGWWith(t, []string{up}, func(c *config.Config) {
		c.Quota = qc
		if mutate != nil {
			mutate(c)
		}
	}, func(o *gwOptions) { o.Quota = q })
}

func budgetOf(n int64) config.Quota {
	return config.Quota{OnRedisError: "open", Workflows: map[string]config.QuotaPolicy{
		flowID: {Budgets: []config.Budget{{Window: config.Duration(24 * time.Hour), Executions: n}}},
	}}
}

// Admitted requests that never ran give their execution back: the flow
// server refused them (a wrong API key), or no upstream could be reached.
// Anyone could otherwise spend a protected flow's budget without its key.
func TestQuotaRefundsRunsThatNeverRan(t *testing.T) {
	var ran atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"statusCode":401,"success":false,"message":"Unauthorized Access"}`)
			return
		}
		ran.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	g := quotaGW(t, up.URL, budgetOf(2), nil)
	for range 5 {
		if _, code, _ := ask(t, g, `{"question":"hi"}`, map[string]string{"Authorization": "Bearer bad"}); code != 401 {
			t.Fatalf("wrong key: %d, want the upstream's 401", code)
		}
	}
	for i, want := range []int{200, 200, 429} {
		if _, code, _ := ask(t, g, `{"question":"hi"}`, map[string]string{"Authorization": "Bearer good"}); code != want {
			t.Fatalf("good key, run %d: %d, want %d", i, code, want)
		}
	}

	// No upstream at all: nothing was sent, nothing is spent.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	g = quotaGW(t, deadURL, budgetOf(1), func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	for range 3 {
		if _, code, _ := ask(t, g, `{"question":"hi"}`, nil); code != 502 && code != 503 {
			t.Fatalf("dead upstream: %d", code)
		}
	}
	if _, code, body := ask(t, g, `{"question":"hi"}`, nil); code == 429 {
		t.Fatalf("the budget was spent by requests that never reached a flow server: %s", body)
	}
}

// per_caller: ip reads every X-Forwarded-For line from a trusted proxy, as
// the forwarded header does: a proxy that appends its own line leaves the
// client's forged one first, and that one must not name the caller.
func TestQuotaPerIPReadsEveryForwardedLine(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	qc := budgetOf(1)
	p := qc.Workflows[flowID]
	p.PerCaller = "ip"
	qc.Workflows[flowID] = p
	g := quotaGW(t, up.URL(), qc, func(c *config.Config) { c.Proxy.TrustedProxies = []string{"127.0.0.0/8"} })
	codes := []int{}
	for _, forged := range []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"} {
		req, _ := http.NewRequest("POST", g.URL+predictPath, strings.NewReader(`{"question":"hi"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("X-Forwarded-For", forged)    // the client's own
		req.Header.Add("X-Forwarded-For", "9.9.9.9") // the trusted proxy's
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		codes = append(codes, res.StatusCode)
	}
	if codes[0] != 200 || codes[1] != 429 || codes[2] != 429 {
		t.Fatalf("codes %v: one caller (9.9.9.9) with a budget of 1, want [200 429 429]", codes)
	}
}

// MCP's initialize, tools/list and notifications spend nothing; a
// tools/call is a run.
func TestQuotaCountsOnlyMCPToolCalls(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	t.Cleanup(up.Close)
	g := quotaGW(t, up.URL, budgetOf(1), nil)
	mcp := func(body string) int {
		res, err := http.Post(g.URL+"/api/v1/mcp/"+flowID, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, m := range []string{`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, `[{"jsonrpc":"2.0","id":3,"method":"ping"}]`} {
		if code := mcp(m); code != 200 {
			t.Fatalf("%s: %d", m, code)
		}
	}
	if code := mcp(`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"x"}}`); code != 200 {
		t.Fatalf("first tools/call: %d", code)
	}
	if code := mcp(`[{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x"}}]`); code != 429 {
		t.Fatalf("second tools/call (in a batch): %d, want 429", code)
	}
}

// A client that hangs up before the answer's headers does not escape
// metering: Flowise finishes the run anyway, so it is recorded, with the
// tokens its request shows (estimated), and settled against the budgets.
func TestHangUpStillMetered(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "ledger.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	led, err := ledger.NewBolt(db, ledger.Options{Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	g := newGWWith(t, []string{up.URL()}, nil, func(o *gwOptions) { o.Prices, o.Ledger = metering.Bundled(), led })
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", g.URL+predictPath, strings.NewReader(`{"question":"a question that the flow will still answer"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(fakeflow.HeaderLatency, "300ms")
	go func() {
		// Hang up once the flow server has the request.
		for up.Server().Stats().InFlight == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the request was not cut")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rep, err := led.Report(context.Background(), ledger.Query{Workflow: flowID, From: time.Now().UTC(), To: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		if rep.TotalExecutions == 1 {
			if rep.EstimatedExecutions != 1 || rep.InputTokens <= 0 || rep.OutputTokens != 0 || rep.TotalCostNano <= 0 {
				t.Fatalf("report %+v: want one estimated run with input tokens and a cost", rep)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hung-up run was never recorded: %+v", rep)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
