package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flowgate/flowgate/config"
)

// Bodies larger than max_body_in_memory go through a temp file, arrive
// byte for byte, and can still be retried on another upstream.
func TestLargeBodiesSpillToDiskAndRetry(t *testing.T) {
	got := make(chan [32]byte, 10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/ping" {
			io.WriteString(w, "pong")
			return
		}
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
		fmt.Fprintf(w, `{"received":%d}`, n)
	}))
	defer up.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	g := newGW(t, []string{dead, up.URL}, func(c *config.Config) {
		c.Proxy.MaxBodyInMemory = 64 << 10
		c.Health.Active.Enabled = ptr(false)
		c.Health.Passive.Enabled = ptr(false)
	})
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1000, 64 << 10, 64<<10 + 1, 3 << 20} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(rng.Uint32())
		}
		for _, chunked := range []bool{false, true} {
			var rd io.Reader = bytes.NewReader(body)
			if chunked {
				rd = io.MultiReader(rd) // hides the length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/v1/vector/upsert/"+flowID, rd)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			reply := readAll(t, resp)
			if resp.StatusCode != 200 || reply != fmt.Sprintf(`{"received":%d}`, size) {
				t.Fatalf("size %d chunked=%v: %d %s", size, chunked, resp.StatusCode, reply)
			}
			if sum := <-got; sum != sha256.Sum256(body) {
				t.Fatalf("size %d chunked=%v: upstream received different bytes", size, chunked)
			}
		}
	}
}
