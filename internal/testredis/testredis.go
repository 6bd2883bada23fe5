// Package testredis runs a real redis-server for a test: each call of Start
// (or StartWith) starts one of its own, on a free loopback port, and stops
// it when the test ends. Tests that need Redis skip when redis-server is
// not installed, except under CI=true, where they fail instead
// (scripts/test installs it).
package testredis

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// readyTimeout bounds the wait for a started server to accept connections.
const readyTimeout = 15 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	opts Options

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of redis-server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and its output is read
	err  error         // Wait's error, set before done closes

	logMu sync.Mutex
	log   []string // the last lines of its output, for failure messages
}

// Options change how StartWith runs redis-server.
type Options struct {
	// AppendOnly turns on append-only persistence, fsynced on every write
	// (--appendonly yes --appendfsync always), in a directory kept across
	// Restart: every write that was answered survives Kill and Restart.
	AppendOnly bool
}

// Start starts a redis-server for t on a free port of 127.0.0.1, without
// persistence, and returns once it accepts connections. It is killed when
// t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testredis: redis-server is not on PATH, and tests never skip under CI (scripts/test installs it): %v", err)
		}
		t.Skipf("testredis: redis-server is not on PATH (apt-get install redis-server, or run scripts/test): %v", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), opts: o}
	t.Cleanup(s.stop)
	// A free port can be taken by someone else between our probe and
	// redis-server's bind: try a few.
	var lastErr error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("testredis: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("testredis: %v", lastErr)
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Kill kills the server with SIGKILL and waits for it to exit: its clients
// see their connections reset and new ones refused, as when Redis crashes.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		s.t.Fatalf("testredis: Kill: the server on %s is not running", s.Addr())
	}
	p.kill()
}

// Restart starts the server again on the same port (after Kill) and
// returns once it accepts connections. Its data is gone, as after a crash
// without persistence, unless it was started with Options.AppendOnly: then
// it has every write that was answered before the Kill.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		s.t.Fatalf("testredis: Restart: the server on %s is still running; Kill it first", s.Addr())
	}
	// The port was ours a moment ago; a second try covers a slow release.
	err := s.start()
	if err != nil {
		err = s.start()
	}
	if err != nil {
		s.t.Fatalf("testredis: restart: %v", err)
	}
}

// Pause stops the server with SIGSTOP: it keeps its connections and its
// port but answers nothing, as a hung or unreachable Redis. Resume ends it.
func (s *Server) Pause() { s.t.Helper(); s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.t.Helper(); s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		s.t.Fatalf("testredis: %v: the server on %s is not running", sig, s.Addr())
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("testredis: %v: %v", sig, err)
	}
}

// stop kills the server if it runs; it is the test's cleanup.
func (s *Server) stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// start runs redis-server on s.port and waits until its log says it is
// ready to accept connections, or it exits, or readyTimeout passes.
func (s *Server) start() error {
	appendOnly := []string{"--appendonly", "no"}
	if s.opts.AppendOnly {
		appendOnly = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	args := append([]string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
	}, appendOnly...)
	args = append(args,
		"--daemonize", "no",
		"--dir", s.dir,
		"--loglevel", "notice",
	)
	cmd := exec.Command(s.bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		// Read the output to the end, so that redis-server never blocks
		// on a full pipe, and keep the last lines for failure messages.
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			p.logMu.Lock()
			p.log = append(p.log, line)
			if len(p.log) > 50 {
				p.log = p.log[len(p.log)-50:]
			}
			p.logMu.Unlock()
			if !signalled && strings.Contains(line, "Ready to accept connections") {
				signalled = true
				close(ready)
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		s.mu.Lock()
		s.proc = p
		s.mu.Unlock()
		return nil
	case <-p.done:
		return fmt.Errorf("redis-server on port %d exited before it was ready (%v):\n%s", s.port, p.err, p.output())
	case <-timer.C:
		p.kill()
		return fmt.Errorf("redis-server on port %d not ready after %v:\n%s", s.port, readyTimeout, p.output())
	}
}

// kill sends SIGKILL (which also ends a stopped process) and waits for
// the exit.
func (p *process) kill() {
	// Kill fails only when the process has already exited, which done
	// then tells.
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *process) output() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return strings.Join(p.log, "\n")
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
