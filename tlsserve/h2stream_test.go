package tlsserve_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
)

// A stream that the upstream cuts reaches an HTTP/2 client as Flowise's
// error frame followed by a stream reset: the body read ends in an error,
// never in a clean end a client could take for a complete answer.
func TestCutStreamOverHTTP2(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/ping" {
			io.WriteString(w, "pong")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, "message:\ndata:{\"event\":\"start\",\"data\":\"\"}\n\nmessage:\ndata:{\"event\":\"token\",\"data\":\"Hel\"}\n\n")
		w.(http.Flusher).Flush()
		// The upstream dies mid-stream: no end event, no final chunk.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(up.Close)
	dir := t.TempDir()
	pool := writeCert(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), 1)
	p := startTLS(t, up.URL, dir)
	_, port, _ := net.SplitHostPort(p.TLS)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	res, err := c.Post("https://localhost:"+port+"/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11", "application/json",
		strings.NewReader(`{"question":"hi","streaming":true}`))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("proto %s", res.Proto)
	}
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("the cut stream ended cleanly over HTTP/2 (err %v):\n%s", err, body)
	}
	if !bytes.Contains(body, []byte(`"event":"token"`)) || !bytes.Contains(body, []byte(`"event":"error"`)) || bytes.Contains(body, []byte(`"event":"end"`)) {
		t.Fatalf("body:\n%s", body)
	}
}

// SIGTERM drains the HTTPS listener like the plain one: a stream in flight
// over HTTP/2 runs to its end before the process exits.
func TestDrainOverHTTPS(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	dir := t.TempDir()
	pool := writeCert(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), 1)
	p := startTLS(t, up.URL(), dir)
	_, port, _ := net.SplitHostPort(p.TLS)
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	req, _ := http.NewRequest("POST", "https://localhost:"+port+"/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11", strings.NewReader(`{"question":"hi","streaming":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(fakeflow.HeaderTokens, "10")
	req.Header.Set(fakeflow.HeaderTokenDelay, "100ms")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Headers are in: the stream is under way. Now ask the gateway to stop.
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !bytes.Contains(body, []byte(`"event":"end"`)) || res.ProtoMajor != 2 {
		t.Fatalf("stream during the drain: %v over %s\n%s", err, res.Proto, body)
	}
	select {
	case <-p.Exited:
	case <-time.After(15 * time.Second):
		t.Fatal("flowgate did not exit after the drain")
	}
}
