package proxy_test

import (
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
)

// Three upstreams with different answer latencies under 50 concurrent
// clients: least-connections sends the slow one measurably fewer requests.
func TestLeastConnectionsFavoursFastUpstreams(t *testing.T) {
	fast1 := startFlow(t, fakeflow.Options{Latency: 2 * time.Millisecond})
	fast2 := startFlow(t, fakeflow.Options{Latency: 2 * time.Millisecond})
	slow := startFlow(t, fakeflow.Options{Latency: 100 * time.Millisecond})
	g := newGW(t, []string{fast1.URL(), fast2.URL(), slow.URL()}, nil)

	const clients, perClient = 50, 30
	var wg sync.WaitGroup
	var failed atomic.Int64
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				if status, _ := post(c, g.URL, `{"question":"hi"}`, nil); status != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed", n)
	}
	f1, f2, s := fast1.Server().Stats().Predictions, fast2.Server().Stats().Predictions, slow.Server().Stats().Predictions
	t.Logf("predictions: fast1=%d fast2=%d slow=%d", f1, f2, s)
	if f1+f2+s != clients*perClient {
		t.Fatalf("upstreams served %d predictions, want %d", f1+f2+s, clients*perClient)
	}
	if s*2 > min(f1, f2) {
		t.Fatalf("slow upstream got %d, not measurably fewer than the fast ones (%d, %d)", s, f1, f2)
	}
}

// Killing an upstream mid-run loses no request that had not reached it; its
// health flips to down, and back up when it returns.
//
// "Reached" is what nginx means too: a request already on an established
// connection to the upstream when it died may be lost (a POST cannot be
// replayed blindly: Flowise may have started the run). Every other request,
// and in particular every one sent after the kill, must succeed.
func TestKilledUpstreamLosesOnlyRequestsThatReachedIt(t *testing.T) {
	a := startFlow(t, fakeflow.Options{Latency: 3 * time.Millisecond})
	b := startFlow(t, fakeflow.Options{Latency: 3 * time.Millisecond})
	victim := startFlow(t, fakeflow.Options{Latency: 3 * time.Millisecond})
	g := newGW(t, []string{a.URL(), b.URL(), victim.URL()}, nil)
	vu := g.Upstreams()[2]

	const clients, perClient = 50, 40
	var (
		wg             sync.WaitGroup
		done           atomic.Int64
		killOnce       sync.Once
		killedInFlight int
		killDone       atomic.Int64 // unix nanos once Kill returned
		mu             sync.Mutex
		failedIDs      []string
		lateFailures   []string
		c              = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perClient {
				id := fmt.Sprintf("req-%d-%d", w, i)
				sentAt := time.Now().UnixNano()
				status, body := post(c, g.URL, `{"question":"hi"}`, map[string]string{"X-Request-ID": id})
				if status != 200 {
					mu.Lock()
					failedIDs = append(failedIDs, id)
					if kd := killDone.Load(); kd != 0 && sentAt > kd {
						lateFailures = append(lateFailures, fmt.Sprintf("%s: %d %s", id, status, body))
					}
					mu.Unlock()
				}
				if done.Add(1) == clients*perClient/3 {
					killOnce.Do(func() {
						killedInFlight = victim.Kill()
						killDone.Store(time.Now().UnixNano())
					})
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("killed with %d handlers in flight; %d of %d requests failed", killedInFlight, len(failedIDs), clients*perClient)
	if len(lateFailures) > 0 {
		t.Fatalf("requests sent after the kill failed: %v", lateFailures)
	}
	// Each failure was on a connection to the victim: none was refused or
	// left without an upstream (those are retried).
	failed := map[string]bool{}
	for _, id := range failedIDs {
		failed[id] = true
	}
	for _, f := range g.access.all() {
		if !failed[f["request_id"].(string)] {
			continue
		}
		if f["error"] != "upstream_error" || f["upstream"] != vu.Name || f["status"] != float64(502) {
			t.Errorf("request %v failed other than on an established connection to the victim: %v", f["request_id"], f)
		}
	}
	g.waitHealth(t, 5*time.Second, func() bool { return !vu.Healthy(time.Now()) })

	before := victim.Server().Stats().Predictions
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	g.waitHealth(t, 5*time.Second, func() bool { return vu.Healthy(time.Now()) })
	for range 30 {
		resp := predict(t, c, g.URL, `{"question":"hi"}`, nil)
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d after the upstream returned", resp.StatusCode)
		}
	}
	if victim.Server().Stats().Predictions == before {
		t.Fatal("the returned upstream got no traffic")
	}
}

// A POST whose connection fails before it is sent is retried elsewhere.
func TestDialFailureIsRetriedOnAnotherUpstream(t *testing.T) {
	live := startFlow(t, fakeflow.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	g := newGW(t, []string{dead, live.URL()}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false) // only the retry can save these
		c.Health.Passive.Enabled = ptr(false)
	})
	for range 20 {
		resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
		if body := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"text"`) {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
	}
	if got := live.Server().Stats().Predictions; got != 20 {
		t.Fatalf("live upstream served %d, want 20", got)
	}
}

func TestNoHealthyUpstreamIs503JSON(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	g := newGW(t, []string{dead}, nil)
	g.waitHealth(t, 5*time.Second, func() bool { return !g.Upstreams()[0].Healthy(time.Now()) })
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 503 || !strings.Contains(body, `"code":"no_healthy_upstream"`) || !strings.Contains(body, `"message":`) {
		t.Fatalf("status %d body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content-type %q", ct)
	}
}

// Each SSE frame reaches the client as soon as the upstream writes it.
func TestSSEFramesAreNotBuffered(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{TokenDelay: 500 * time.Millisecond, Tokens: 2})
	g := newGW(t, []string{ff.URL()}, nil)
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, map[string]string{"Accept-Encoding": "gzip"})
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content-type %q", ct)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Fatalf("SSE was compressed (%s)", ce)
	}
	var tokens []frame
	var sawEnd bool
	err := readFrames(resp.Body, func(f frame) {
		if strings.Contains(f.raw, `"event":"token"`) {
			tokens = append(tokens, f)
		}
		sawEnd = sawEnd || strings.Contains(f.raw, `"[DONE]"`)
	})
	if err != nil || !sawEnd {
		t.Fatalf("stream err=%v end=%v", err, sawEnd)
	}
	if len(tokens) < 2 {
		t.Fatalf("got %d token frames", len(tokens))
	}
	// The first token was read a whole delay before the second: it was not
	// held back until more bytes came.
	if gap := tokens[1].at.Sub(tokens[0].at); gap < 400*time.Millisecond {
		t.Fatalf("first token arrived only %v before the second: it was buffered", gap)
	}
}

func TestFirstByteTimeoutIs504(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Proxy.StreamResponseHeaderTimeout = config.Duration(300 * time.Millisecond)
		c.Proxy.ResponseHeaderTimeout = config.Duration(600 * time.Millisecond)
	})
	for _, body := range []string{`{"question":"hi","streaming":true}`, `{"question":"hi"}`} {
		start := time.Now()
		resp := predict(t, http.DefaultClient, g.URL, body, map[string]string{"X-Fakeflow-Mode": "hang"})
		got := readAll(t, resp)
		if resp.StatusCode != 504 || !strings.Contains(got, `"code":"upstream_timeout"`) {
			t.Fatalf("%s: status %d body %s", body, resp.StatusCode, got)
		}
		t.Logf("%s: 504 after %v", body, time.Since(start))
	}
	// A hanging flow is not a sick server: it stays in rotation.
	if !g.Upstreams()[0].Healthy(time.Now()) {
		t.Fatal("first-byte timeouts took the upstream out")
	}
}

// zeros is an endless body that costs no memory.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestOversizedBodyIs413(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, nil)
	const size = 200 << 20
	for _, chunked := range []bool{false, true} {
		req, _ := http.NewRequest(http.MethodPost, g.URL+predictPath, io.LimitReader(zeros{}, size))
		if chunked {
			req.ContentLength = -1 // unknown length: the limit is found by reading
		} else {
			req.ContentLength = size
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("chunked=%v: %v", chunked, err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != 413 || !strings.Contains(body, `"code":"body_too_large"`) {
			t.Fatalf("chunked=%v: status %d body %s", chunked, resp.StatusCode, body)
		}
	}
	// Health probes reach the upstream; oversized predictions never do.
	if p := ff.Server().Stats().Predictions; p != 0 {
		t.Fatalf("%d oversized predictions reached the upstream", p)
	}
}

func TestForwardedHeadersAndTrust(t *testing.T) {
	var mu sync.Mutex
	var seen http.Header
	ff := startFlow(t, fakeflow.Options{OnRequest: func(r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v1/prediction/") {
			mu.Lock()
			seen = r.Header.Clone()
			mu.Unlock()
		}
	}})
	spoof := map[string]string{
		"X-Forwarded-For":   "203.0.113.9",
		"X-Real-IP":         "203.0.113.9",
		"X-Forwarded-Proto": "https",
		"X-Request-From":    "internal",
		"Forwarded":         "for=203.0.113.9",
		"X-Request-ID":      "client-id-1",
	}
	cases := []struct {
		name     string
		trusted  []string
		passFrom bool
		want     map[string]string // "" means absent
	}{
		{"untrusted client", nil, false, map[string]string{
			"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1", "X-Forwarded-Proto": "http",
			"X-Request-From": "", "Forwarded": "", "X-Request-Id": "client-id-1",
		}},
		{"untrusted client, pass_request_from on", nil, true, map[string]string{
			"X-Request-From": "",
		}},
		// x-request-from is dropped even from trusted proxies unless the
		// operator turned pass_request_from on.
		{"trusted proxy", []string{"127.0.0.0/8"}, false, map[string]string{
			"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Real-Ip": "203.0.113.9", "X-Forwarded-Proto": "https",
			"X-Request-From": "", "Forwarded": "for=203.0.113.9",
		}},
		{"trusted proxy, pass_request_from on", []string{"127.0.0.0/8"}, true, map[string]string{
			"X-Request-From": "internal",
		}},
		// Flowise 3's UI: the header with its session cookie, which Flowise
		// checks instead of an API key.
		{"untrusted client with a session cookie", nil, false, map[string]string{
			"X-Request-From": "internal", "Cookie": "token=eyJhbGciOi.x.y",
		}},
		{"untrusted client with an empty session cookie", nil, false, map[string]string{
			"X-Request-From": "", "Cookie": "token=",
		}},
		{"session cookie, request_from_with_session off", nil, false, map[string]string{
			"X-Request-From": "",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			off := strings.Contains(tc.name, "request_from_with_session off")
			g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
				c.Proxy.TrustedProxies = tc.trusted
				c.Proxy.PassRequestFrom = tc.passFrom
				if off {
					c.Proxy.RequestFromWithSession = new(bool)
				}
			})
			hdr := spoof
			if c, ok := tc.want["Cookie"]; ok || off {
				hdr = maps.Clone(spoof)
				hdr["Cookie"] = c
				if off {
					hdr["Cookie"] = "token=eyJhbGciOi.x.y"
				}
			}
			resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, hdr)
			readAll(t, resp)
			mu.Lock()
			defer mu.Unlock()
			for k, want := range tc.want {
				if got := strings.Join(seen.Values(k), ","); got != want {
					t.Errorf("upstream saw %s=%q, want %q", k, got, want)
				}
			}
			if resp.Header.Get("X-Request-Id") != "client-id-1" {
				t.Errorf("response X-Request-Id %q", resp.Header.Get("X-Request-Id"))
			}
		})
	}
}

func TestResponseHeadersGzipAndStaticCaching(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{Tokens: 400})
	g := newGW(t, []string{ff.URL()}, nil)

	// A large JSON answer is compressed for a client that accepts gzip.
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, map[string]string{"Accept-Encoding": "gzip"})
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("large JSON not compressed: %v", resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	resp.Body.Close()
	if err != nil || !strings.HasPrefix(string(plain), `{"text":"Hello`) {
		t.Fatalf("gunzip: %v %.60s", err, plain)
	}
	for _, h := range []string{"X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Content-Security-Policy", "X-Request-Id"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("missing %s", h)
		}
	}
	if id := resp.Header.Get("X-Request-Id"); len(id) != 32 {
		t.Errorf("generated request id %q", id)
	}

	// A small answer is not.
	resp = predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, map[string]string{"Accept-Encoding": "gzip", "X-Fakeflow-Tokens": "3"})
	readAll(t, resp)
	if resp.Header.Get("Content-Encoding") != "" {
		t.Fatal("small JSON was compressed")
	}

	// Static assets get the long-lived Cache-Control; API calls do not.
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/assets/index-abc123.js", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if cc := resp.Header.Get("Cache-Control"); cc != "public, immutable, max-age=31536000" {
		t.Fatalf("asset Cache-Control %q", cc)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("JS asset not compressed: %v", resp.Header)
	}
	if cc := readCC(t, g.URL+"/api/v1/ping"); strings.Contains(cc, "immutable") {
		t.Fatalf("API answer got the asset Cache-Control: %q", cc)
	}
}

func readCC(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	return resp.Header.Get("Cache-Control")
}

func ptr[T any](v T) *T { return &v }

// An upstream's own security header wins and is not doubled; the asset
// Cache-Control replaces the upstream's; the request id is the gateway's.
func TestGatewayHeadersAddNothingTwice(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Request-Id", "upstream-made-this-up")
		w.Write([]byte("console.log(1)"))
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/assets/app.js", nil)
	req.Header.Set("X-Request-Id", "mine-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	for k, want := range map[string]string{
		"X-Frame-Options":        "DENY",
		"Cache-Control":          "public, immutable, max-age=31536000",
		"X-Request-Id":           "mine-1",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := resp.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", k, got, want)
		}
	}
}

// Security headers are configurable: a value replaces the default, "" drops it.
func TestSecurityHeadersConfigurable(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Proxy.SecurityHeaders = map[string]string{"X-Frame-Options": "DENY", "Content-Security-Policy": ""}
	})
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
	readAll(t, resp)
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options %q, want the configured DENY", got)
	}
	if _, ok := resp.Header["Content-Security-Policy"]; ok {
		t.Error("Content-Security-Policy sent although configured off")
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("an untouched default went missing")
	}
}
