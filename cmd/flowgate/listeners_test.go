package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"go.uber.org/zap/zapcore"
)

// The metrics and admin listeners of the real binary close idle
// keep-alive connections after server.idle_timeout, and answer a header
// block over 16 KiB with 431 (the proxy listener's limit is 64 KiB).
func TestOpsListenersIdleAndHeaderLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const idle = 200 * time.Millisecond
	ff, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ff.Close() })
	cfgFile := filepath.Join(t.TempDir(), "flowgate.yaml")
	if err := os.WriteFile(cfgFile, []byte("server:\n  idle_timeout: "+idle.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startBinary(t, buildBinary(t), "-config", cfgFile, "-upstream", ff.URL())

	for _, l := range []struct{ name, addr, path string }{
		{"metrics", s.Metrics, "/healthz"},
		{"admin", s.Admin, "/admin/v1/upstreams"}, // 401 without a token: an answer all the same
	} {
		t.Run(l.name+"/idle", func(t *testing.T) {
			resp, c, br := get(t, l.addr, l.path, 0)
			if resp.Close {
				t.Fatalf("%s answered %d and closed the connection: no keep-alive to test", l.path, resp.StatusCode)
			}
			// Once answered, the connection is idle: the server must close
			// it after idle. The deadline stays under the listeners'
			// 10 s ReadTimeout, which would also close it.
			start := time.Now()
			c.SetReadDeadline(start.Add(5 * time.Second))
			n, err := br.Read(make([]byte, 1))
			if !errors.Is(err, io.EOF) {
				t.Fatalf("idle keep-alive connection: read %d bytes, %v after %v (want EOF after about %v)",
					n, err, time.Since(start).Round(time.Millisecond), idle)
			}
			// The answer was read after the server started its idle timer,
			// so a little less than idle may have passed here; much less
			// means the connection was not kept alive at all.
			if d := time.Since(start); d < idle/2 {
				t.Fatalf("connection closed %v after the answer, before the %v idle timeout", d, idle)
			}
		})
		t.Run(l.name+"/header-limit", func(t *testing.T) {
			// 12 KiB of header passes; 24 KiB is over 16 KiB plus the 4 KiB
			// net/http allows on top, and far under the proxy's 64 KiB.
			if resp, _, _ := get(t, l.addr, l.path, 12<<10); resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("12 KiB of header: %d", resp.StatusCode)
			}
			if resp, _, _ := get(t, l.addr, l.path, 24<<10); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("24 KiB of header: %d, want 431", resp.StatusCode)
			}
		})
	}
}

// get sends one keep-alive GET on a new connection, with an X-Pad header
// of pad bytes when pad > 0, and reads the whole answer. It returns the
// answer (its body read), and the connection, still open, with its reader.
func get(t *testing.T, addr, path string, pad int) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if pad > 0 {
		req += "X-Pad: " + strings.Repeat("a", pad) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return resp, c, br
}

// opsServer takes the tighter of server.read_header_timeout and 5 s, the
// idle timeout from the config, and fixed read, write and header limits.
func TestOpsServerLimits(t *testing.T) {
	cfg, err := config.LoadWith("", config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := opsServer("127.0.0.1:0", http.NotFoundHandler(), cfg.Server, nil)
	if s.ReadHeaderTimeout != 5*time.Second || s.IdleTimeout != cfg.Server.IdleTimeout.D() ||
		s.ReadTimeout != 10*time.Second || s.WriteTimeout != 30*time.Second || s.MaxHeaderBytes != 16<<10 {
		t.Fatalf("defaults: ReadHeaderTimeout %v IdleTimeout %v ReadTimeout %v WriteTimeout %v MaxHeaderBytes %d",
			s.ReadHeaderTimeout, s.IdleTimeout, s.ReadTimeout, s.WriteTimeout, s.MaxHeaderBytes)
	}
	cfg.Server.ReadHeaderTimeout = config.Duration(2 * time.Second)
	if s := opsServer("", nil, cfg.Server, nil); s.ReadHeaderTimeout != 2*time.Second {
		t.Fatalf("read_header_timeout 2s: ReadHeaderTimeout %v", s.ReadHeaderTimeout)
	}
}

// A line net/http writes to its ErrorLog (here a handler's panic) reaches
// flowgate's log at warn, so a log.level of warn keeps it.
func TestHTTPErrorLogAtWarn(t *testing.T) {
	var out lockedBuffer
	log, err := newLogger("warn", zapcore.AddSync(&out))
	if err != nil {
		t.Fatal(err)
	}
	errLog, err := newHTTPErrorLog(log)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadWith("", config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := opsServer("", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }), cfg.Server, errLog)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// net/http logs the panic before it closes the connection, so the
	// line is written once the connection reads EOF.
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("panicking handler: read %q, %v (want EOF and no answer)", b, err)
	}
	for _, l := range bytes.Split(out.Bytes(), []byte("\n")) {
		var line struct{ Level, Logger, Msg string }
		if json.Unmarshal(l, &line) == nil && strings.Contains(line.Msg, "http: panic serving") && strings.Contains(line.Msg, "boom") {
			if line.Level != "warn" || line.Logger != "http" {
				t.Fatalf("logged at %q by %q, want warn by http: %s", line.Level, line.Logger, l)
			}
			return
		}
	}
	t.Fatalf("no panic line in the log:\n%s", out.Bytes())
}

// lockedBuffer is a bytes.Buffer the server's goroutines may write while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}
