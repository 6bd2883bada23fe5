package proxy_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testredis"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/quota"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
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
