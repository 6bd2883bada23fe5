package proxy_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flowgate/flowgate/config"
)

// A client may name fields in Connection to have them dropped on the way,
// but not the fields the gateway already decided on: a cache key made with
// an Origin the upstream never saw would store an answer without CORS
// headers under every browser's key.
func TestConnectionCannotStripFieldsTheGatewayDecidedOn(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"text":"ok"}`)
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	c, br := rawConn(t, g)
	body := `{"question":"hi"}`
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nContent-Type: application/json\r\n"+
		"X-Custom: 1\r\nConnection: Origin, content-type, X-Custom\r\nContent-Length: %d\r\n\r\n%s", predictPath, len(body), body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	h := <-seen
	if h.Get("Origin") != "https://app.example" || h.Get("Content-Type") != "application/json" {
		t.Errorf("upstream got Origin %q, Content-Type %q: stripped by the client's Connection", h.Get("Origin"), h.Get("Content-Type"))
	}
	if _, ok := h["X-Custom"]; ok {
		t.Errorf("X-Custom, named in Connection, reached the upstream")
	}
	if _, ok := h["Connection"]; ok {
		t.Errorf("Connection reached the upstream: %q", h["Connection"])
	}
}

// A request target without a path ("http:api/v1/...", an opaque URL) is
// refused before it reaches anything: the gateway could not route, count
// or cache it by its path, while the upstream would still get it.
func TestOpaqueRequestTargetRefused(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	c, br := rawConn(t, g)
	fmt.Fprint(c, "GET http:api/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Code string }
	if err := json.Unmarshal([]byte(readAll(t, resp)), &e); err != nil || resp.StatusCode != http.StatusBadRequest || e.Code != "bad_request" {
		t.Fatalf("status %d, code %q (%v); want 400 bad_request", resp.StatusCode, e.Code, err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("upstream got %d requests", n)
	}
}

// An answer the gateway compresses and the upstream cuts must not end as a
// well-formed gzip stream: to an HTTP/1.0 client, whose answer ends when
// the connection closes, the gzip trailer would be the only sign of
// completeness.
func TestCutCompressedAnswerHasNoGzipTrailer(t *testing.T) {
	// Incompressible, so that what the gateway compresses before the cut
	// leaves its buffers and the answer's head reaches the client.
	rnd := rand.New(rand.NewPCG(1, 2))
	page := make([]byte, 512<<10)
	for i := range page {
		page[i] = 'a' + byte(rnd.IntN(26))
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", fmt.Sprint(len(page)))
		w.Write(page[:len(page)/2])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer up.Close()
	g := newGW(t, []string{up.URL}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
	c, br := rawConn(t, g)
	fmt.Fprint(c, "GET /page.html HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("answer not compressed (Content-Encoding %q): the test needs it", resp.Header.Get("Content-Encoding"))
	}
	raw, _ := io.ReadAll(resp.Body)
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return // not even a gzip header: cut, visibly
	}
	plain, err := io.ReadAll(zr)
	if err == nil {
		t.Fatalf("a cut answer (%d of %d bytes) reached the client as a complete gzip stream", len(plain), len(page))
	}
	if !strings.HasPrefix(string(page), string(plain)) {
		t.Fatalf("what arrived is not a prefix of the page")
	}
}
