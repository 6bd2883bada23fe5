package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
