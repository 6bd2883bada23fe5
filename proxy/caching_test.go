package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/sse"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// cachedGW is a gateway with the cache on for every workflow, memory only.
func cachedGW(t *testing.T, upstream string, mutate func(*config.Config)) *gw {
	t.Helper()
	return newGWWith(t, []string{upstream}, func(c *config.Config) {
		c.Cache.Default.Enabled = ptr(true)
		if mutate != nil {
			mutate(c)
		}
	}, func(o *gwOptions) {
		st, err := cache.NewStore(cache.Options{MaxMemory: 64 << 20, Metrics: metrics.New(prometheus.NewRegistry()), Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		o.Cache = st
	})
}

// ask posts body to the prediction route and returns the answer's X-Cache,
// status and body.
func ask(t *testing.T, g *gw, body string, hdr map[string]string) (xcache string, status int, got string) {
	t.Helper()
	resp := predict(t, http.DefaultClient, g.URL, body, hdr)
	got = readAll(t, resp)
	return resp.Header.Get("X-Cache"), resp.StatusCode, got
}

func TestCacheHitsAndMisses(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := cachedGW(t, ff.URL(), nil)
	preds := func() int64 { return ff.Server().Stats().Predictions }

	xc, _, first := ask(t, g, `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2}}`, nil)
	if xc != "MISS" || preds() != 1 {
		t.Fatalf("first request: X-Cache %q, %d predictions", xc, preds())
	}
	cases := []struct {
		name, body string
		hdr        map[string]string
		want       string
	}{
		{"same request", `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2}}`, nil, "HIT"},
		{"keys reordered, spaced", "{ \"overrideConfig\" : {\"temperature\": 0.2},\n \"question\": \"What is 2+2?\" }", nil, "HIT"},
		{"streaming false is not in the key", `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2},"streaming":false}`, nil, "HIT"},
		{"another question", `{"question":"What is 3+3?","overrideConfig":{"temperature":0.2}}`, nil, "MISS"},
		{"another caller", `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2}}`, map[string]string{"Authorization": "Bearer other"}, "MISS"},
		{"no-store", `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2}}`, map[string]string{"Cache-Control": "no-store"}, "BYPASS"},
		{"no-cache refreshes", `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2}}`, map[string]string{"Cache-Control": "no-cache"}, "REFRESH"},
		{"chatId", `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2},"chatId":"c1"}`, nil, "BYPASS"},
		{"sessionId", `{"question":"What is 2+2?","overrideConfig":{"temperature":0.2,"sessionId":"s1"}}`, nil, "BYPASS"},
		{"humanInput", `{"question":"What is 2+2?","humanInput":{"type":"proceed"}}`, nil, "BYPASS"},
	}
	for _, tc := range cases {
		before := preds()
		xc, status, body := ask(t, g, tc.body, tc.hdr)
		if xc != tc.want || status != http.StatusOK {
			t.Errorf("%s: X-Cache %q status %d, want %s", tc.name, xc, status, tc.want)
		}
		if reached := preds() - before; (tc.want == "HIT") != (reached == 0) {
			t.Errorf("%s: %d predictions reached fakeflow", tc.name, reached)
		}
		if tc.want == "HIT" && !sameAnswer(t, first, body) {
			t.Errorf("%s: hit answer differs: %s vs %s", tc.name, first, body)
		}
	}
	// The same session twice is never served from the cache.
	for range 2 {
		if xc, _, _ := ask(t, g, `{"question":"hi","chatId":"c2"}`, nil); xc != "BYPASS" {
			t.Fatalf("a chat turn was served from the cache: %s", xc)
		}
	}
	line := g.access.all()
	if hits := countCache(line, "HIT"); hits != 3 {
		t.Errorf("%d access log lines with cache HIT, want 3", hits)
	}
}

func countCache(lines []map[string]any, result string) (n int) {
	for _, l := range lines {
		if l["cache"] == result {
			n++
		}
	}
	return n
}

// sameAnswer compares two JSON answers but for their per-request ids,
// which a hit replaces with fresh ones.
func sameAnswer(t *testing.T, a, b string) bool {
	t.Helper()
	var ma, mb map[string]any
	if json.Unmarshal([]byte(a), &ma) != nil || json.Unmarshal([]byte(b), &mb) != nil {
		return false
	}
	for _, k := range []string{"chatId", "chatMessageId", "sessionId", "executionId"} {
		delete(ma, k)
		delete(mb, k)
	}
	ja, _ := json.Marshal(ma)
	jb, _ := json.Marshal(mb)
	return string(ja) == string(jb)
}

// A hit carries fresh ids, never the ones another caller received, and
// keeps chatId and sessionId equal when they were.
func TestCacheHitsHaveFreshIDs(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{Agentflow: true})
	g := cachedGW(t, ff.URL(), nil)
	_, _, a := ask(t, g, `{"question":"ids"}`, nil)
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"ids"}`, nil)
	b := readAll(t, resp)
	if xc := resp.Header.Get("X-Cache"); xc != "HIT" {
		t.Fatalf("X-Cache %q", xc)
	}
	if age, err := strconv.Atoi(resp.Header.Get("Age")); err != nil || age < 0 {
		t.Fatalf("Age %q on a hit", resp.Header.Get("Age"))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("a hit's Content-Type %q, not the upstream's", ct)
	}
	var ma, mb map[string]any
	json.Unmarshal([]byte(a), &ma)
	json.Unmarshal([]byte(b), &mb)
	for _, k := range []string{"chatId", "chatMessageId", "sessionId", "executionId"} {
		if ma[k] == nil || ma[k] == mb[k] {
			t.Errorf("%s: miss %v, hit %v: not fresh", k, ma[k], mb[k])
		}
	}
	if mb["chatId"] != mb["sessionId"] {
		t.Errorf("hit chatId %v != sessionId %v", mb["chatId"], mb["sessionId"])
	}
	if !sameAnswer(t, a, b) {
		t.Errorf("hit differs beyond its ids:\n%s\n%s", a, b)
	}
}

// A streamed miss then a streamed hit: the same events in the same order,
// the same token texts, fresh ids, every data line JSON.
func TestCacheReplaysStreams(t *testing.T) {
	for _, agent := range []bool{false, true} {
		t.Run(fmt.Sprintf("agentflow=%v", agent), func(t *testing.T) {
			ff := startFlow(t, fakeflow.Options{Agentflow: agent, Tokens: 12})
			g := cachedGW(t, ff.URL(), nil)
			body := `{"question":"stream me","streaming":true}`
			x1, ev1 := streamEvents(t, g, body)
			x2, ev2 := streamEvents(t, g, body)
			if x1 != "MISS" || x2 != "HIT" || ff.Server().Stats().Predictions != 1 {
				t.Fatalf("X-Cache %s then %s, %d predictions", x1, x2, ff.Server().Stats().Predictions)
			}
			if len(ev1) != len(ev2) {
				t.Fatalf("%d events then %d", len(ev1), len(ev2))
			}
			for i := range ev1 {
				n1, d1 := ev1[i]["event"], ev1[i]["data"]
				n2, d2 := ev2[i]["event"], ev2[i]["data"]
				if n1 != n2 {
					t.Fatalf("event %d: %v then %v", i, n1, n2)
				}
				switch n1 {
				case "token", "start", "end":
					if d1 != d2 {
						t.Fatalf("event %d (%v): %q then %q", i, n1, d1, d2)
					}
				case "metadata":
					m1, m2 := d1.(map[string]any), d2.(map[string]any)
					if m1["chatId"] == m2["chatId"] || m1["chatMessageId"] == m2["chatMessageId"] {
						t.Fatalf("metadata ids not fresh: %v then %v", m1, m2)
					}
				}
			}
			// A JSON request is another answer: a miss, not a made-up one.
			if xc, _, _ := ask(t, g, `{"question":"stream me"}`, nil); xc != "MISS" {
				t.Fatalf("JSON request after a stream: X-Cache %s", xc)
			}
		})
	}
}

// streamEvents reads a streamed answer's events, checking each data line
// is JSON as Flowise's SDK requires.
func streamEvents(t *testing.T, g *gw, body string) (string, []map[string]any) {
	t.Helper()
	resp := predict(t, http.DefaultClient, g.URL, body, nil)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	var p sse.Parser
	p.Feed(raw, func(ev *sse.Event) {
		var m map[string]any
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			t.Fatalf("data line is not JSON: %q", ev.Data)
		}
		out = append(out, m)
	})
	if !p.AtBoundary() {
		t.Fatalf("stream ends mid-event: %q", raw[max(0, len(raw)-80):])
	}
	return resp.Header.Get("X-Cache"), out
}

// Errors are never cached: a 500, a stream with an error frame, a cut
// stream.
func TestCacheNeverStoresFailures(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := cachedGW(t, ff.URL(), nil)
	for _, tc := range []struct {
		name, body, mode string
	}{
		{"500", `{"question":"a"}`, "fail"},
		{"error frame", `{"question":"b","streaming":true}`, "stream-error"},
	} {
		ask(t, g, tc.body, map[string]string{"X-Fakeflow-Mode": tc.mode})
		if xc, _, _ := ask(t, g, tc.body, nil); xc != "MISS" {
			t.Errorf("%s: the next request was %s", tc.name, xc)
		}
	}
	// An upstream answer that says no-store or private is not stored.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "private")
		io.WriteString(w, `{"text":"mine"}`)
	}))
	defer up.Close()
	g2 := cachedGW(t, up.URL, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	ask(t, g2, `{"question":"x"}`, nil)
	if xc, _, _ := ask(t, g2, `{"question":"x"}`, nil); xc != "MISS" {
		t.Errorf("a private answer was cached: %s", xc)
	}
}

// 50 identical concurrent requests reach the upstream once.
func TestCacheCoalescesConcurrentMisses(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := cachedGW(t, ff.URL(), nil)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body := post(http.DefaultClient, g.URL, `{"question":"together"}`, map[string]string{"X-Fakeflow-Latency": "300ms"})
			if status != http.StatusOK || !strings.Contains(body, "Hello") {
				errs <- fmt.Sprintf("%d %s", status, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if p := ff.Server().Stats().Predictions; p != 1 {
		t.Fatalf("%d identical concurrent requests reached fakeflow %d times, want once", n, p)
	}
	// They waited for the one upstream, not for a stored entry after it.
	if c := cacheResults(t, g)["coalesced"]; c < 1 {
		t.Fatalf("no request was answered by the flight in progress: %v", cacheResults(t, g))
	}
}

// cacheResults reads flowgate_cache_requests_total by result.
func cacheResults(t *testing.T, g *gw) map[string]float64 {
	t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "flowgate_cache_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// Workflows whose cache is off get no X-Cache and are never stored.
func TestCacheOffForUnlistedWorkflows(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := cachedGW(t, ff.URL(), func(c *config.Config) {
		c.Cache.Default.Enabled = ptr(false)
		c.Cache.Workflows = map[string]config.CachePolicy{"00000000-0000-4000-8000-000000000000": {Enabled: ptr(true)}}
	})
	for range 2 {
		if xc, _, _ := ask(t, g, `{"question":"q"}`, nil); xc != "" {
			t.Fatalf("X-Cache %q on a workflow without cache", xc)
		}
	}
	if p := ff.Server().Stats().Predictions; p != 2 {
		t.Fatalf("%d predictions, want 2", p)
	}
}

// A hit carries the upstream's CORS headers, and Origin splits the key, so
// a browser on another origin is never given headers for the first one.
func TestCacheHitsKeepCORSHeaders(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := cachedGW(t, ff.URL(), nil)
	get := func(origin string) *http.Response {
		resp := predict(t, http.DefaultClient, g.URL, `{"question":"cors"}`, map[string]string{"Origin": origin})
		readAll(t, resp)
		return resp
	}
	get("https://a.example")
	hit := get("https://a.example")
	if hit.Header.Get("X-Cache") != "HIT" || hit.Header.Get("Access-Control-Allow-Origin") != "https://a.example" ||
		!strings.Contains(strings.Join(hit.Header.Values("Vary"), ","), "Origin") {
		t.Fatalf("hit headers %v", hit.Header)
	}
	other := get("https://b.example")
	if other.Header.Get("X-Cache") != "MISS" || other.Header.Get("Access-Control-Allow-Origin") != "https://b.example" {
		t.Fatalf("another origin: %v", other.Header)
	}
}

// The query is part of the key: Langflow takes its API key there.
func TestCacheKeysTheQuery(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("x-api-key") != "secret" {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"detail":"forbidden"}`)
			return
		}
		io.WriteString(w, `{"outputs":[{"text":"protected"}]}`)
	}))
	defer up.Close()
	g := cachedGW(t, up.URL, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	run := func(query string) (string, int) {
		resp, err := http.Post(g.URL+"/api/v1/run/myflow"+query, "application/json", strings.NewReader(`{"input_value":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Cache"), resp.StatusCode
	}
	for _, tc := range []struct {
		query, xcache string
		status        int
	}{
		{"?x-api-key=secret", "MISS", 200},
		{"", "MISS", 403},
		{"?x-api-key=wrong", "MISS", 403},
		{"?x-api-key=secret", "HIT", 200},
	} {
		if xc, status := run(tc.query); xc != tc.xcache || status != tc.status {
			t.Errorf("query %q: %s %d, want %s %d", tc.query, xc, status, tc.xcache, tc.status)
		}
	}
}

// The gateway reads "streaming" as Flowise does, so no caller can store a
// stream where JSON callers look (or the reverse).
func TestCacheStreamVariantCannotBePoisoned(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := cachedGW(t, ff.URL(), nil)
	// Flowise streams this one ("stre\u0061ming" is "streaming"), so it
	// is a streaming request, cached as one.
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"p","stre\u0061ming":true}`, nil)
	readAll(t, resp)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("not streamed: %s", ct)
	}
	if xc, _, body := ask(t, g, `{"question":"p"}`, nil); xc != "MISS" || strings.HasPrefix(body, "message:") {
		t.Fatalf("a JSON request got %s %.30q", xc, body)
	}
	// Flowise reads the exact key: "Streaming" is not "streaming".
	resp = predict(t, http.DefaultClient, g.URL, `{"question":"q","streaming":false,"Streaming":true}`, nil)
	readAll(t, resp)
	if x, ev := streamEvents(t, g, `{"question":"q","streaming":true}`); x != "MISS" || len(ev) == 0 {
		t.Fatalf("a streaming request got %s with %d events", x, len(ev))
	}
}

// When the leader's answer cannot be stored, the requests that waited go
// upstream together, not one after another.
func TestCacheWaitersGoTogetherAfterAnUnstorableAnswer(t *testing.T) {
	var inflight, peak atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		io.Copy(io.Discard, r.Body)
		time.Sleep(200 * time.Millisecond) // the upstream's latency, not a synchronisation
		w.Header().Set("Cache-Control", "private")
		io.WriteString(w, `{"text":"mine"}`)
	}))
	defer up.Close()
	g := cachedGW(t, up.URL, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			post(http.DefaultClient, g.URL, `{"question":"private"}`, nil)
		}()
	}
	wg.Wait()
	if p := peak.Load(); p < 2 {
		t.Fatalf("at most %d request upstream at a time: the waiters queued", p)
	}
}

// One flow, one policy and one set of entries, whatever the case of its id.
func TestCacheWorkflowIDCase(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := cachedGW(t, ff.URL(), func(c *config.Config) {
		c.Cache.Workflows = map[string]config.CachePolicy{strings.ToUpper(flowID): {Enabled: ptr(false)}}
	})
	if xc, _, _ := ask(t, g, `{"question":"case"}`, nil); xc != "" {
		t.Fatalf("policy of the upper-case id not applied to the lower-case one: X-Cache %q", xc)
	}
}

// An answer fetched while its workflow was invalidated is not stored.
func TestCacheInvalidationDuringAMiss(t *testing.T) {
	started := make(chan struct{}, 1)
	ff := startFlow(t, fakeflow.Options{OnRequest: func(r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v1/prediction/") {
			select {
			case started <- struct{}{}:
			default:
			}
		}
	}})
	g := cachedGW(t, ff.URL(), nil)
	done := make(chan string)
	go func() {
		_, body := post(http.DefaultClient, g.URL, `{"question":"changing"}`, map[string]string{"X-Fakeflow-Latency": "300ms"})
		done <- body
	}()
	<-started
	if _, err := g.CacheStore().Invalidate(context.Background(), flowID); err != nil {
		t.Fatal(err)
	}
	<-done
	if xc, _, _ := ask(t, g, `{"question":"changing"}`, nil); xc != "MISS" {
		t.Fatalf("an answer fetched across an invalidation was stored: %s", xc)
	}
}

// A large hit is written piece by piece and arrives whole, ids fresh.
func TestCacheLargeHit(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{Tokens: 20000})
	g := cachedGW(t, ff.URL(), nil)
	_, _, a := ask(t, g, `{"question":"big"}`, nil)
	xc, _, b := ask(t, g, `{"question":"big"}`, nil)
	if xc != "HIT" || len(a) < 64<<10 || len(a) != len(b) || !sameAnswer(t, a, b) {
		t.Fatalf("X-Cache %s, %d then %d bytes", xc, len(a), len(b))
	}
}
