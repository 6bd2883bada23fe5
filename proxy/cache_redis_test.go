package proxy_test

// The cache shared by two flowgate processes through a real Redis: entries
// cached by one are hits on the other, invalidation through one's admin
// API reaches the other, and a Redis outage fails no request.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
	"github.com/flowgate/flowgate/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// replicas starts two flowgate binaries sharing rs, caching every workflow,
// and waits until both listen for invalidations.
func replicas(t *testing.T, rs *testredis.Server, upstream string) (a, b *testbin.Proc) {
	t.Helper()
	yaml := "log:\n  level: debug\n  access_log: false\nredis:\n  addr: " + rs.Addr() + "\ncache:\n  default: {enabled: true}\n"
	a = startFlowgate(t, upstream, yaml)
	b = startFlowgate(t, upstream, yaml)
	a.WaitLog(t, "cache: invalidation channel subscribed", 10*time.Second)
	b.WaitLog(t, "cache: invalidation channel subscribed", 10*time.Second)
	return a, b
}

// askAt posts a prediction to one replica and returns X-Cache and status.
func askAt(t *testing.T, p *testbin.Proc, body string) (string, int) {
	t.Helper()
	resp, err := http.Post("http://"+p.Listen+predictPath, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Cache"), resp.StatusCode
}

// storedInRedis waits until n cache entries are in Redis: the replicas
// write them there in the background.
func storedInRedis(t *testing.T, rdb *redis.Client, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		keys, err := rdb.Keys(context.Background(), "flowgate:cache:v1:*").Result()
		if err == nil && len(keys) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d cache entries in Redis after %v, want %d (%v)", len(keys), within, n, err)
		}
		time.Sleep(20 * time.Millisecond) // polling another process's state: no signal to wait on
	}
}

func adminDelete(t *testing.T, p *testbin.Proc, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, "http://"+p.Admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCacheSharedByReplicas(t *testing.T) {
	rs := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ff := startFlow(t, fakeflow.Options{})
	a, b := replicas(t, rs, ff.URL())

	if xc, _ := askAt(t, a, `{"question":"shared"}`); xc != "MISS" {
		t.Fatalf("first request on a: %s", xc)
	}
	storedInRedis(t, rdb, 1, 5*time.Second)
	if xc, _ := askAt(t, b, `{"question":"shared"}`); xc != "HIT" {
		t.Fatalf("b did not get a's entry: %s", xc)
	}
	if p := ff.Server().Stats().Predictions; p != 1 {
		t.Fatalf("%d predictions, want 1", p)
	}

	// Invalidation through a's admin API: b forgets too.
	b.DrainLogs()
	status, body := adminDelete(t, a, "/admin/v1/cache/"+flowID)
	if status != http.StatusOK || !strings.Contains(body, `"removed":1`) {
		t.Fatalf("admin DELETE: %d %s", status, body)
	}
	b.WaitLog(t, "cache: invalidation received", 5*time.Second)
	if xc, _ := askAt(t, b, `{"question":"shared"}`); xc != "MISS" {
		t.Fatalf("b after invalidation: %s", xc)
	}
	// And the whole cache, with a's memory holding the entry this time.
	storedInRedis(t, rdb, 1, 5*time.Second)
	if xc, _ := askAt(t, a, `{"question":"shared"}`); xc != "HIT" {
		t.Fatalf("a before invalidating all: %s", xc)
	}
	a.DrainLogs()
	if status, body := adminDelete(t, b, "/admin/v1/cache"); status != http.StatusOK || !strings.Contains(body, `"removed":1`) {
		t.Fatalf("admin DELETE all: %d %s", status, body)
	}
	a.WaitLog(t, "cache: invalidation received", 5*time.Second)
	if xc, _ := askAt(t, a, `{"question":"shared"}`); xc != "MISS" {
		t.Fatalf("a after invalidating all: %s", xc)
	}
	// The admin API needs its token.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+a.Admin+"/admin/v1/cache", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("invalidation without a token: %d", resp.StatusCode)
	}
}

func TestCacheSurvivesRedisOutage(t *testing.T) {
	rs := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ff := startFlow(t, fakeflow.Options{})
	a, b := replicas(t, rs, ff.URL())

	askAt(t, a, `{"question":"before"}`)
	rs.Kill()
	// Every request still succeeds: misses go upstream, hits come from
	// memory.
	for i := range 5 {
		for _, p := range []*testbin.Proc{a, b} {
			if _, status := askAt(t, p, fmt.Sprintf(`{"question":"down %d"}`, i)); status != http.StatusOK {
				t.Fatalf("request during the outage: %d", status)
			}
		}
	}
	if xc, status := askAt(t, a, `{"question":"before"}`); xc != "HIT" || status != http.StatusOK {
		t.Fatalf("memory hit during the outage: %s %d", xc, status)
	}

	rs.Restart()
	restarted := time.Now()
	// Within 15 s, without restarting flowgate, an answer cached by a is
	// a hit on b again.
	for i := 0; ; i++ {
		q := fmt.Sprintf(`{"question":"after %d"}`, i)
		askAt(t, a, q)
		keys, _ := rdb.Keys(context.Background(), "flowgate:cache:v1:*").Result()
		if len(keys) > 0 {
			storedInRedis(t, rdb, 1, time.Second)
			if xc, _ := askAt(t, b, q); xc != "HIT" {
				t.Fatalf("b after Redis came back: %s", xc)
			}
			t.Logf("shared again %v after the restart", time.Since(restarted).Round(time.Millisecond))
			return
		}
		if time.Since(restarted) > 15*time.Second {
			t.Fatal("replicas did not share entries within 15 s of Redis coming back")
		}
		time.Sleep(100 * time.Millisecond) // a's breaker retries on its own schedule
	}
}
