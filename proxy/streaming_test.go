package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"go.uber.org/zap/zapcore"
)

// An upstream killed in the middle of a stream: the client receives an
// error frame and a closed connection, never a clean end.
func TestUpstreamKilledMidStream(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{TokenDelay: 50 * time.Millisecond, Tokens: 200})
	g := newGW(t, []string{ff.URL()}, nil)
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, nil)
	defer resp.Body.Close()
	var frames []string
	killed := false
	err := readFrames(resp.Body, func(f frame) {
		frames = append(frames, f.raw)
		if !killed && strings.Contains(f.raw, `"event":"token"`) {
			killed = true
			ff.Kill()
		}
	})
	if err == nil {
		t.Fatalf("stream ended cleanly after a kill; frames: %q", frames)
	}
	last := frames[len(frames)-1]
	if !strings.Contains(last, `"event":"error"`) {
		t.Fatalf("last frame is not an error frame: %q", last)
	}
	for _, f := range frames {
		if strings.Contains(f, `"event":"end"`) {
			t.Fatalf("an end frame reached the client: %q", f)
		}
	}
	if want := "message:\ndata:{\"event\":\"error\",\"data\":"; !strings.HasPrefix(last, want) {
		t.Fatalf("error frame not in Flowise's format: %q", last)
	}
}

// A stream that the upstream closes cleanly but without Flowise's end event
// is still incomplete, and must not look complete.
func TestStreamWithoutEndEventIsMarkedIncomplete(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/ping" {
			io.WriteString(w, "pong")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "message:\ndata:{\"event\":\"start\",\"data\":\"\"}\n\n")
		io.WriteString(w, "message:\ndata:{\"event\":\"token\",\"data\":\"Hel\"}\n\n")
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, nil)
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, nil)
	defer resp.Body.Close()
	var frames []string
	err := readFrames(resp.Body, func(f frame) { frames = append(frames, f.raw) })
	if err == nil {
		t.Fatal("incomplete stream ended cleanly")
	}
	if len(frames) != 3 || !strings.Contains(frames[2], `"event":"error"`) {
		t.Fatalf("frames %q", frames)
	}
	// ReverseProxy reports the failed copy through its error log, which
	// must reach a logger raised to warn.
	g.nextAccessLine(t)
	entries := g.logs.FilterLoggerName("reverseproxy").All()
	if len(entries) == 0 {
		t.Fatal("ReverseProxy's error log line is missing")
	}
	for _, e := range entries {
		if e.Level != zapcore.WarnLevel {
			t.Fatalf("ReverseProxy logged %q at %v, want warn", e.Message, e.Level)
		}
	}
}

// A stream that does end with the end event passes through untouched.
func TestCompleteStreamPassesUnchanged(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{Agentflow: true})
	g := newGW(t, []string{ff.URL()}, nil)
	direct := predict(t, http.DefaultClient, ff.URL(), `{"question":"hi","streaming":true,"chatId":"c1"}`, nil)
	via := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true,"chatId":"c1"}`, nil)
	d, v := frameEvents(t, direct), frameEvents(t, via)
	if strings.Join(d, ",") != strings.Join(v, ",") {
		t.Fatalf("events differ:\ndirect %v\nvia    %v", d, v)
	}
	if v[len(v)-1] != "end" {
		t.Fatalf("last event %q", v[len(v)-1])
	}
}

func frameEvents(t *testing.T, resp *http.Response) []string {
	t.Helper()
	defer resp.Body.Close()
	var ev []string
	if err := readFrames(resp.Body, func(f frame) {
		i := strings.Index(f.raw, `"event":"`)
		if i < 0 {
			return
		}
		rest := f.raw[i+9:]
		ev = append(ev, rest[:strings.IndexByte(rest, '"')])
	}); err != nil {
		t.Fatal(err)
	}
	return ev
}

// The idle timeout ends a stream whose upstream goes silent, with an error
// frame, while a slow but steady stream is left alone.
func TestStreamIdleTimeout(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) {
		c.Proxy.IdleTimeout = config.Duration(300 * time.Millisecond)
	})
	hdr := map[string]string{"X-Fakeflow-Token-Delay": "1s", "X-Fakeflow-Tokens": "3"}
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, hdr)
	var frames []string
	err := readFrames(resp.Body, func(f frame) { frames = append(frames, f.raw) })
	resp.Body.Close()
	if err == nil || !strings.Contains(frames[len(frames)-1], "upstream_idle") {
		t.Fatalf("err=%v frames=%q", err, frames)
	}
	hdr["X-Fakeflow-Token-Delay"] = "100ms"
	resp = predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, hdr)
	ev := frameEvents(t, resp)
	if ev[len(ev)-1] != "end" {
		t.Fatalf("steady stream cut: %v", ev)
	}
}

// wsUpstream answers the health path and upgrades every other request to
// a WebSocket stand-in that serve runs on the raw connection.
func wsUpstream(t *testing.T, serve func(net.Conn, *bufio.ReadWriter)) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/ping" {
			io.WriteString(w, "pong")
			return
		}
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		serve(conn, brw)
	}))
	t.Cleanup(up.Close)
	return up.URL
}

// wsEchoUpstream echoes each line it receives.
func wsEchoUpstream(t *testing.T) string {
	return wsUpstream(t, func(_ net.Conn, brw *bufio.ReadWriter) {
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(brw, "echo: "+line)
			brw.Flush()
		}
	})
}

// WebSocket upgrades pass through both ways.
func TestUpgradePassesThrough(t *testing.T) {
	g := newGW(t, []string{wsEchoUpstream(t)}, nil)

	conn, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /socket.io/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	fmt.Fprint(conn, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo: ping\n" {
		t.Fatalf("got %q, %v", line, err)
	}
}

// A client that leaves mid-stream is logged as 499, the upstream request is
// cancelled, and the upstream is not blamed.
func TestClientLeavingMidStream(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{TokenDelay: 50 * time.Millisecond, Tokens: 100})
	g := newGW(t, []string{ff.URL()}, func(c *config.Config) { c.Health.Passive.MaxFails = 1 })
	resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, nil)
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	line := g.nextAccessLine(t)
	if line["status"] != float64(499) {
		t.Fatalf("status %v, want 499: %v", line["status"], line)
	}
	if !g.Upstreams()[0].Healthy(time.Now()) {
		t.Fatal("a client leaving took the upstream out")
	}
}
