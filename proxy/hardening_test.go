package proxy_test

// Regression tests for the hardening issue: hostile clients and odd
// upstreams, over real sockets.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
)

// rawConn dials the gateway and returns the connection with a reader; every
// read is bounded so a test can never hang.
func rawConn(t *testing.T, g *gw) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// expectClosed fails unless the peer closes the connection: a read that
// returns EOF (or a reset), not one that times out.
func expectClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	_, err := br.ReadByte()
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after the answer (read: %v)", err)
	}
}

// errorBody decodes a gateway error answer.
func errorBody(t *testing.T, r io.Reader) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	return m
}

// A client that declares a body and stalls is answered 408 at
// body_read_timeout and its connection closed, whatever the body's size
// (net/http used to wait for bodies of 256 KiB or less to drain).
func TestStalledBodyIsCutAndClosed(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Server.BodyReadTimeout = config.Duration(300 * time.Millisecond)
	})
	cases := []struct {
		name string
		head string
		sent string
	}{
		{"small declared body", "Content-Length: 1000\r\n", "{"},
		{"large declared body", "Content-Length: 1048576\r\n", strings.Repeat("x", 300<<10)},
		{"chunked body", "Transfer-Encoding: chunked\r\n", "5\r\n{\"q\":"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, g)
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n%s", predictPath, tc.head, tc.sent)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
				t.Fatalf("status %d, close %v; want 408 and Connection: close", resp.StatusCode, resp.Close)
			}
			if m := errorBody(t, resp.Body); m["code"] != "body_timeout" {
				t.Fatalf("code %v", m["code"])
			}
			expectClosed(t, br)
		})
	}
	if p := ff.Server().Stats().Predictions; p != 0 {
		t.Fatalf("%d half-read bodies reached the upstream", p)
	}
}

// 413 and 400 close the connection too: what is left of the body must not
// be read as the next request.
func TestBodyErrorsCloseTheConnection(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) { c.Proxy.MaxBodyBytes = 1 << 20 })
	cases := []struct {
		name   string
		req    string
		status int
	}{
		{"declared too large", "Content-Length: 2000000\r\n\r\n", http.StatusRequestEntityTooLarge},
		{"chunked too large", "Transfer-Encoding: chunked\r\n\r\n" + strings.Repeat("8000\r\n"+strings.Repeat("x", 0x8000)+"\r\n", 40), http.StatusRequestEntityTooLarge},
		{"bad chunk", "Transfer-Encoding: chunked\r\n\r\nzz\r\n", http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, g)
			go fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n%s", predictPath, tc.req)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("status %d, close %v; want %d and Connection: close", resp.StatusCode, resp.Close, tc.status)
			}
			expectClosed(t, br)
		})
	}
}

// Bodies of unknown length are read whole in chunks and forwarded intact.
func TestChunkedBodiesArriveWhole(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(fmt.Sprintf("%d %d", r.ContentLength, len(b)))
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	for _, n := range []int{10, 64 << 10, 200 << 10} {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte(strings.Repeat("a", n)))
			pw.Close()
		}()
		resp, err := http.Post(g.URL+"/api/v1/other", "text/plain", pr) // unknown length: chunked
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if want := fmt.Sprintf("%d %d", n, n); got.Load() != want {
			t.Fatalf("upstream got length and bytes %v, want %s", got.Load(), want)
		}
	}
}

// CONNECT and TRACE are refused at the gateway: Node destroys the socket of
// a CONNECT, and forwarding them let any client eject a healthy upstream.
func TestConnectAndTraceAre405(t *testing.T) {
	var seen atomic.Int64
	ff := startFlow(t, fakeflow.Options{OnRequest: func(r *http.Request) {
		if r.Method == http.MethodConnect || r.Method == http.MethodTrace {
			seen.Add(1)
		}
	}})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) { c.Health.Passive.MaxFails = 1 })
	for range 5 {
		c, br := rawConn(t, g)
		fmt.Fprint(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("CONNECT: status %d", resp.StatusCode)
		}
		if m := errorBody(t, resp.Body); m["code"] != "method_not_allowed" {
			t.Fatalf("CONNECT: code %v", m["code"])
		}
	}
	req, _ := http.NewRequest(http.MethodTrace, g.URL+"/api/v1/ping", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Fatalf("TRACE: status %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if seen.Load() != 0 || !g.Upstreams()[0].Healthy(time.Now()) {
		t.Fatalf("upstream saw %d CONNECT/TRACE, healthy %v", seen.Load(), g.Upstreams()[0].Healthy(time.Now()))
	}
}

// rawUpstream serves each connection with handle; it answers nothing else.
func rawUpstream(t *testing.T, handle func(net.Conn, *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// An upstream that answers before it has read a large body, and closes,
// has its answer passed to the client and is not blamed for it.
func TestEarlyUpstreamAnswerIsPassedOn(t *testing.T) {
	const answer = `{"statusCode":413,"success":false,"message":"request entity too large"}`
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(answer), answer)
		// Closing with the body unread makes the kernel reset the
		// connection: the gateway's write fails part-way.
	})
	g := newGW(t, []string{up}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Health.Passive.MaxFails = 2
	})
	for i := range 4 {
		resp, err := http.Post(g.URL+predictPath, "application/json", io.LimitReader(zeros{}, 20<<20))
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || body != answer {
			t.Fatalf("request %d: status %d body %q; want the upstream's 413", i, resp.StatusCode, body)
		}
	}
	if !g.Upstreams()[0].Healthy(time.Now()) {
		t.Fatal("early answers took the upstream out")
	}
}

// An upstream status below 100 is a protocol error: 502, no panic, the
// upstream connection closed.
func TestUpstreamStatusBelow100Is502(t *testing.T) {
	closed := make(chan struct{}, 1)
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err == io.EOF {
			closed <- struct{}{}
		}
	})
	g := newGW(t, []string{up}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if m := errorBody(t, resp.Body); m["code"] != "upstream_protocol_error" {
		t.Fatalf("code %v", m["code"])
	}
	resp.Body.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection was not closed")
	}
	if n := g.logs.FilterMessage("panic serving request").Len(); n != 0 {
		t.Fatalf("%d panics", n)
	}
}

// Retries are counted when a retry is sent, not when one is hoped for.
func TestRetriesCountOnlySentAttempts(t *testing.T) {
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}
	cases := []struct {
		upstreams int
		retries   float64
	}{{1, 0}, {2, 1}}
	for _, tc := range cases {
		var ups []string
		for range tc.upstreams {
			ups = append(ups, refused())
		}
		g := newGW(t, ups, func(c *config.Config) {
			c.Health.Active.Enabled = ptr(false)
			c.Health.Passive.Enabled = ptr(false)
		})
		resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
		readAll(t, resp)
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if n := counter(t, g, "flowgate_upstream_retries_total"); n != tc.retries {
			t.Fatalf("%d refusing upstreams: %v retries counted, want %v", tc.upstreams, n, tc.retries)
		}
	}
}

func counter(t *testing.T, g *gw, name string) float64 {
	t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// A client that stops reading is cut at write_idle_timeout; the upstream is
// released and the access log says why. A client that reads slowly but
// steadily is not.
func TestClientThatStopsReadingIsCut(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		buf := make([]byte, 64<<10)
		for range 4096 { // 256 MiB at most: far past every socket buffer
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Server.WriteIdleTimeout = config.Duration(300 * time.Millisecond)
	})
	c, br := rawConn(t, g)
	fmt.Fprint(c, "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	// Read nothing more.
	line := g.nextAccessLine(t)
	if line["cut"] != "client_write_timeout" || line["status"] != float64(499) {
		t.Fatalf("access log %v; want cut client_write_timeout, status 499", line)
	}
	if n := g.Upstreams()[0].InFlight(); n != 0 {
		t.Fatalf("upstream still has %d in flight", n)
	}
}

func TestSlowSteadyReaderIsNotCut(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{TokenDelay: 60 * time.Millisecond, Tokens: 15})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Server.WriteIdleTimeout = config.Duration(500 * time.Millisecond)
	})
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, nil)
	events := frameEvents(t, resp)
	if events[len(events)-1] != "end" {
		t.Fatalf("stream longer than write_idle_timeout was cut: %v", events)
	}
	if line := g.nextAccessLine(t); line["cut"] != nil {
		t.Fatalf("access log %v", line)
	}
}

// An upgraded connection is closed after proxy.idle_timeout without a byte
// in either direction, and kept while bytes flow.
func TestUpgradedConnectionIdleTimeout(t *testing.T) {
	up := wsEchoUpstream(t)
	const idle = time.Second
	g := newGW(t, []string{up}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Proxy.IdleTimeout = config.Duration(idle)
		// Shorter than the whole exchange: a write deadline left on the
		// hijacked connection would cut it here.
		c.Server.WriteIdleTimeout = config.Duration(idle)
	})
	c, br := rawConn(t, g)
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	// Six round trips a third of the idle timeout apart: twice the
	// timeout in all, kept alive by the traffic.
	tick := time.NewTicker(idle / 3)
	defer tick.Stop()
	for i := range 6 {
		<-tick.C
		fmt.Fprintf(c, "m%d\n", i)
		if line, err := br.ReadString('\n'); err != nil || line != fmt.Sprintf("echo: m%d\n", i) {
			t.Logf("access: %v", g.nextAccessLine(t))
			for _, e := range g.logs.All() {
				t.Log(e.Message, e.ContextMap())
			}
			t.Fatalf("round trip %d: %q %v", i, line, err)
		}
	}
	expectClosed(t, br)
}

// 1xx answers reach HTTP/1.1 clients and never HTTP/1.0 ones.
func TestInformationalAnswersSkipHTTP10(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	for _, tc := range []struct {
		proto string
		first string
	}{{"HTTP/1.1", "HTTP/1.1 103"}, {"HTTP/1.0", "HTTP/1.0 200"}} {
		c, br := rawConn(t, g)
		fmt.Fprintf(c, "GET /page %s\r\nHost: x\r\n\r\n", tc.proto)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, tc.first) {
			t.Fatalf("%s client: first line %q (%v), want %s", tc.proto, line, err, tc.first)
		}
	}
}

// The asset Cache-Control keeps away from private and no-store answers and
// from everything under /api/.
func TestStaticCacheControlRespectsTheUpstream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cc := r.URL.Query().Get("cc"); cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		io.WriteString(w, "x")
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	const asset = "public, immutable, max-age=31536000"
	for _, tc := range []struct{ path, want string }{
		{"/assets/a.js?cc=public,+max-age=0", asset},
		{"/assets/a.js", asset},
		{"/assets/a.js?cc=private,+max-age=60", "private, max-age=60"},
		{"/assets/a.js?cc=No-Store", "No-Store"},
		{"/api/v1/export.js?cc=max-age=0", "max-age=0"},
		{"/API/v1/logo.png", ""},
	} {
		if got := readCC(t, g.URL+tc.path); got != tc.want {
			t.Errorf("%s: Cache-Control %q, want %q", tc.path, got, tc.want)
		}
	}
}

// Flow routes are recognised whatever their case, as Flowise's router
// does, so a stream through /api/v1/Prediction/ still gets its checks.
func TestFlowRoutesIgnoreCase(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "message:\ndata:{\"event\":\"token\",\"data\":\"Hel\"}\n\n")
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	id := strings.ToUpper(flowID)
	resp, err := http.Post(g.URL+"/API/v1/Prediction/"+id, "application/json", strings.NewReader(`{"question":"hi","streaming":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var frames []string
	err = readFrames(resp.Body, func(f frame) { frames = append(frames, f.raw) })
	line := g.nextAccessLine(t)
	if line["route"] != "/api/v1/prediction/{id}" || line["workflow_id"] != id {
		t.Fatalf("access log %v", line)
	}
	if err == nil || line["cut"] != "stream_incomplete" || !strings.Contains(frames[len(frames)-1], `"event":"error"`) {
		t.Fatalf("stream without end passed as complete: %v %q %v", err, frames, line)
	}
}

// resettingUpstream answers the health path (with pingStatus) and resets
// every other request, as Node does with requests it refuses to parse.
func resettingUpstream(t *testing.T, pingStatus int) string {
	return rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if req.URL.Path != "/api/v1/ping" {
				return // closed without an answer
			}
			fmt.Fprintf(c, "HTTP/1.1 %d X\r\nContent-Length: 4\r\n\r\npong", pingStatus)
		}
	})
}

// Failures a client can cause (the upstream closing on a request it
// refuses) count against an upstream only when a health probe fails too.
func TestClientCausedFailuresNeedAFailingProbe(t *testing.T) {
	mutate := func(c *config.Config) {
		c.Health.Passive.MaxFails = 1
		c.Health.Active.Interval = config.Duration(time.Hour)      // only the confirming probes
		c.Health.Active.Timeout = config.Duration(5 * time.Second) // a slow probe under -race still passes
	}
	t.Run("probe passes", func(t *testing.T) {
		g := newGW(t, []string{resettingUpstream(t, 200), resettingUpstream(t, 200)}, mutate)
		const n = 4
		for range n {
			resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
			readAll(t, resp)
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		deadline := time.After(5 * time.Second)
		for {
			ch := g.HealthChanged()
			var forgiven int64
			for _, e := range g.logs.FilterMessage("upstream failures not counted: the health probe passed").All() {
				forgiven += e.ContextMap()["failures"].(int64)
			}
			if forgiven == n {
				break
			}
			select {
			case <-ch:
			case <-deadline:
				t.Fatalf("%d of %d failures checked by a probe", forgiven, n)
			}
		}
		for _, u := range g.Upstreams() {
			if !u.Healthy(time.Now()) {
				t.Fatalf("%s taken out by failures its probe did not confirm", u.Name)
			}
		}
	})
	t.Run("probe fails", func(t *testing.T) {
		bad := resettingUpstream(t, 500)
		g := newGW(t, []string{bad, resettingUpstream(t, 200)}, mutate)
		// Requests land on either upstream; each failure is followed by a
		// probe's verdict, announced on HealthChanged.
		for i := 0; g.Upstreams()[0].Healthy(time.Now()); i++ {
			if i == 20 {
				t.Fatal("an upstream whose probe fails was never taken out")
			}
			ch := g.HealthChanged()
			resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
			readAll(t, resp)
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				t.Fatal("no verdict after a failure")
			}
		}
		if !g.Upstreams()[1].Healthy(time.Now()) {
			t.Fatal("the upstream whose probe passes was taken out")
		}
	})
}

// A WebSocket client that neither reads nor sends is cut at the idle
// timeout on both sides, and its upstream released, even while the
// upstream floods it.
func TestStalledUpgradedClientIsCut(t *testing.T) {
	up := wsUpstream(t, func(conn net.Conn, _ *bufio.ReadWriter) {
		buf := make([]byte, 64<<10)
		for range 4096 { // 256 MiB at most
			if _, err := conn.Write(buf); err != nil {
				return
			}
		}
	})
	g := newGW(t, []string{up}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Proxy.IdleTimeout = config.Duration(300 * time.Millisecond)
	})
	c, br := rawConn(t, g)
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v", err)
	}
	// Read nothing, send nothing: the handler must end (its log line) and
	// release the upstream.
	g.nextAccessLine(t)
	if n := g.Upstreams()[0].InFlight(); n != 0 {
		t.Fatalf("upstream still has %d in flight", n)
	}
}

// Headers that declare large bodies and send nothing cannot take the
// memory budget from real bodies: budget follows the bytes that arrive.
func TestDeclaredLengthsDoNotHoldTheBudget(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Proxy.BodyMemoryBudget = 1 << 20
		c.Proxy.BodyDiskBudget = 1 << 10 // a spilled small body would get 503
	})
	for range 8 {
		c, _ := rawConn(t, g)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", predictPath, 1<<20)
	}
	for range 3 {
		status, body := post(http.DefaultClient, g.URL, `{"question":"small"}`, nil)
		if status != http.StatusOK {
			t.Fatalf("small body behind stalled large declarations: %d %s", status, body)
		}
	}
	if line := g.nextAccessLine(t); line["request_length"] != float64(len(`{"question":"small"}`)) {
		t.Fatalf("request_length %v", line["request_length"])
	}
}

// Bodies on disk are bounded too: past body_disk_budget a body is refused
// with 503 and Retry-After, before it is read when its length is declared.
func TestSpilledBodiesHaveADiskBudget(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Proxy.MaxBodyInMemory = 1 << 10
		c.Proxy.BodyDiskBudget = 4 << 20
	})
	for _, chunked := range []bool{false, true} {
		var body io.Reader = io.LimitReader(zeros{}, 8<<20)
		if chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, g.URL+predictPath, body)
		if !chunked {
			req.ContentLength = 8 << 20
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("chunked=%v: %v", chunked, err)
		}
		m := errorBody(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || m["code"] != "body_spool_full" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("chunked=%v: status %d %v", chunked, resp.StatusCode, m)
		}
	}
	// Within the budget, a spilled body still goes through.
	status, _ := post(http.DefaultClient, g.URL, `{"question":"`+strings.Repeat("a", 2<<20)+`"}`, nil)
	if status != http.StatusOK {
		t.Fatalf("a body within the disk budget: %d", status)
	}
}

// A bodiless answer that arrives after write_idle_timeout has passed since
// the request began still reaches the client.
func TestLateBodilessAnswerIsDelivered(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) {
		c.Health.Active.Enabled = ptr(false)
		c.Server.WriteIdleTimeout = config.Duration(200 * time.Millisecond)
	})
	time.AfterFunc(600*time.Millisecond, func() { close(release) }) // the upstream's latency, not a synchronisation
	resp, err := http.Get(g.URL + "/api/v1/slow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// A client that stops sending its body and half-closes never gets an
// empty 200 for a request that did not run.
func TestHalfClosedClientGetsNoFalseAnswer(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, nil)
	c, br := rawConn(t, g)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"question\":", predictPath)
	c.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(br, nil)
	if err == nil && resp.StatusCode < 300 {
		t.Fatalf("got %d for a request whose body never arrived", resp.StatusCode)
	}
	if p := ff.Server().Stats().Predictions; p != 0 {
		t.Fatalf("%d predictions", p)
	}
}
