package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// connServer counts the connections an upstream accepted and announces
// each one that closes.
func connServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64, chan struct{}) {
	var opened atomic.Int64
	closed := make(chan struct{}, 100)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed:
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &opened, closed
}

func get(t *testing.T, c *upstreamClient, url string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("body"))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("body")), nil }
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestUpstreamClientReusesAndReplacesStaleConnections(t *testing.T) {
	var served atomic.Int64
	srv, opened, _ := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		served.Add(1)
		w.Write(b)
	})
	c := newUpstreamClient(time.Second, 4, time.Minute, &tls.Config{})
	defer c.CloseIdleConnections()
	for range 3 {
		if _, body := get(t, c, srv.URL); body != "body" {
			t.Fatalf("echo %q", body)
		}
	}
	if n := opened.Load(); n != 1 {
		t.Fatalf("3 sequential requests opened %d connections, want 1", n)
	}
	// The upstream drops the idle connection (Node does after 5 s).
	srv.CloseClientConnections()
	c.mu.Lock()
	pooled := c.idle["http://"+strings.TrimPrefix(srv.URL, "http://")][0]
	c.mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for peerIdle(pooled.raw) {
		if time.Now().After(deadline) {
			t.Fatal("close never seen")
		}
		time.Sleep(time.Millisecond)
	}
	if _, body := get(t, c, srv.URL); body != "body" {
		t.Fatalf("after the upstream closed the pooled connection: %q", body)
	}
	if n := opened.Load(); n != 2 {
		t.Fatalf("opened %d connections, want a fresh second one", n)
	}
	if n := served.Load(); n != 4 {
		t.Fatalf("upstream served %d requests, want 4 (none lost, none twice)", n)
	}
}

func TestUpstreamClientClosesWhatItCannotReuse(t *testing.T) {
	srv, opened, closed := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte(strings.Repeat("x", 64<<10)))
	})
	c := newUpstreamClient(time.Second, 4, time.Minute, &tls.Config{})
	defer c.CloseIdleConnections()

	// An answer abandoned half-read: its rest is still on the wire.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/big", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close()
	<-closed
	// An answer that says Connection: close.
	get(t, c, srv.URL+"/close")
	<-closed
	get(t, c, srv.URL+"/ok")
	if n := opened.Load(); n != 3 {
		t.Fatalf("opened %d connections, want 3", n)
	}
}

func TestUpstreamClientPrunesIdleConnections(t *testing.T) {
	srv, _, closed := connServer(t, func(w http.ResponseWriter, r *http.Request) {})
	c := newUpstreamClient(time.Second, 4, 50*time.Millisecond, &tls.Config{})
	defer c.CloseIdleConnections()
	get(t, c, srv.URL)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection never closed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, s := range c.idle {
		if len(s) != 0 {
			t.Fatalf("pool %s still holds %d connections", k, len(s))
		}
	}
}

// HEAD and 204 answers have no body: the connection is reused at once.
func TestUpstreamClientBodilessAnswersKeepTheConnection(t *testing.T) {
	srv, opened, _ := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Length", "5")
		if r.Method != http.MethodHead {
			w.Write([]byte("hello"))
		}
	})
	c := newUpstreamClient(time.Second, 4, time.Minute, &tls.Config{})
	defer c.CloseIdleConnections()
	for _, tc := range []struct{ method, path string }{{"HEAD", "/"}, {"GET", "/empty"}, {"HEAD", "/"}, {"GET", "/"}} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tc.method == "GET" && tc.path == "/" && string(b) != "hello" {
			t.Fatalf("GET body %q", b)
		}
	}
	if n := opened.Load(); n != 1 {
		t.Fatalf("opened %d connections for 4 sequential requests, want 1", n)
	}
}

// Bytes an upstream sends unasked on an idle connection (a late body, a
// 408 before closing) are never read as the next request's answer.
func TestUpstreamClientNeverReadsUnaskedBytesAsTheAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	strayed := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(first bool) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if first && req.URL.Path == "/first" {
						io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
						close(strayed)
						continue
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}(i == 0)
		}
	}()
	c := newUpstreamClient(time.Second, 4, time.Minute, &tls.Config{})
	defer c.CloseIdleConnections()
	url := "http://" + ln.Addr().String()
	if resp, _ := get(t, c, url+"/first"); resp.StatusCode != 204 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	<-strayed
	for range 3 {
		if _, body := get(t, c, url+"/second"); body != "ok" {
			t.Fatalf("a later request got %q: bytes nobody asked for were taken as its answer", body)
		}
	}
}

// An upstream cannot make flowgate read headers without end.
func TestUpstreamClientBoundsResponseHeaders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
		for range 4000 { // 4 MB of headers
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}()
	c := newUpstreamClient(time.Second, 4, time.Minute, &tls.Config{})
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	if _, err := c.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("error %v, want headers too large", err)
	}
}

// Sustained concurrent load reuses the pool: the upstream sees about as many
// connections as there are concurrent requests, not one per request.
func TestUpstreamClientDoesNotChurnConnections(t *testing.T) {
	srv, opened, _ := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	})
	c := newUpstreamClient(time.Second, 64, time.Minute, &tls.Config{})
	defer c.CloseIdleConnections()
	const workers, each = 16, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
				resp, err := c.RoundTrip(req)
				if err != nil {
					t.Error(err) // not Fatal: this is not the test's goroutine
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if n := opened.Load(); n > workers {
		t.Fatalf("%d requests over %d workers opened %d connections, want at most %d", workers*each, workers, n, workers)
	}
}
