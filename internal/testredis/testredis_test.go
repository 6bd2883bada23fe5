package testredis

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// ping sends PING in RESP and reports whether +PONG came back within d.
func ping(addr string, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return &net.AddrError{Err: "unexpected reply " + line, Addr: addr}
	}
	return nil
}

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Addr() = %q, want a 127.0.0.1 address", addr)
	}
	if err := ping(addr, 5*time.Second); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}

	s.Kill()
	if err := ping(addr, time.Second); err == nil {
		t.Fatal("PING after Kill succeeded, want an error")
	}

	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Addr() after Restart = %q, want the same %q", s.Addr(), addr)
	}
	if err := ping(addr, 5*time.Second); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}

	s.Pause()
	if err := ping(addr, 200*time.Millisecond); err == nil {
		t.Fatal("PING of a paused server succeeded, want a timeout")
	}
	s.Resume()
	if err := ping(addr, 5*time.Second); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}

func TestServersAreSeparate(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	a.Kill()
	if err := ping(b.Addr(), 5*time.Second); err != nil {
		t.Fatalf("PING of the other server after Kill: %v", err)
	}
}

// A paused server is still killed by the test's cleanup (SIGKILL ends a
// stopped process), so a test that fails while Redis is paused does not
// hang.
func TestCleanupKillsPausedServer(t *testing.T) {
	var addr string
	t.Run("paused", func(t *testing.T) {
		s := Start(t)
		addr = s.Addr()
		s.Pause()
	})
	if err := ping(addr, 500*time.Millisecond); err == nil {
		t.Fatalf("the server on %s still answers after its test ended", addr)
	}
}

// verdict records what Start did with a testing.TB whose Skipf and Fatalf
// end the goroutine, as testing's do.
type verdict struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (v *verdict) Skipf(format string, args ...any) {
	v.skipped, v.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (v *verdict) Fatalf(format string, args ...any) {
	v.failed, v.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Without redis-server on PATH, Start skips locally and fails under CI.
func TestMissingRedisServer(t *testing.T) {
	for _, tc := range []struct {
		ci                  string
		wantSkip, wantFatal bool
	}{
		{ci: "", wantSkip: true},
		{ci: "false", wantSkip: true},
		{ci: "true", wantFatal: true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tc.ci)
			v := &verdict{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Start(v)
			}()
			<-done
			if v.skipped != tc.wantSkip || v.failed != tc.wantFatal {
				t.Fatalf("skipped=%v failed=%v (%q), want skipped=%v failed=%v", v.skipped, v.failed, v.msg, tc.wantSkip, tc.wantFatal)
			}
			if !strings.Contains(v.msg, "redis-server") {
				t.Errorf("message %q does not name redis-server", v.msg)
			}
		})
	}
}
