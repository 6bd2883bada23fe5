// Package testbin builds the flowgate binary and runs it for tests that
// need the real process: its signals, its listeners, its memory.
package testbin

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var (
	once sync.Once
	bin  string
	err  error
)

// Build compiles cmd/flowgate once per test binary and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		var dir string
		if dir, err = os.MkdirTemp("", "flowgate-bin-"); err != nil {
			return
		}
		bin = filepath.Join(dir, "flowgate")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/flowgate/flowgate/cmd/flowgate")
		cmd.Stderr = os.Stderr
		err = cmd.Run()
	})
	if err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// Proc is a running flowgate.
type Proc struct {
	Cmd                    *exec.Cmd
	Listen, Metrics, Admin string // bound addresses from the start line ("" when off)
	TLS                    string // the HTTPS listener's bound address ("" when off)
	// Logs receives its JSON log lines, those before the start line too;
	// lines are dropped when nobody reads, so the process never blocks.
	Logs   chan map[string]any
	Exited chan error // Wait's result, once it exited
}

// Start runs bin with args and extra environment and waits for its start
// line. The process is killed when the test ends.
func Start(t testing.TB, bin string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	// Each process its own embedded ledger: the file is locked by the
	// process that opened it, and tests run many at once.
	cmd.Env = append(os.Environ(), "FLOWGATE_METERING_STORE_DIR="+t.TempDir())
	cmd.Env = append(cmd.Env, env...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{Cmd: cmd, Logs: make(chan map[string]any, 10000), Exited: make(chan error, 1)}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line["msg"] == "flowgate started" {
			p.Listen, _ = line["listen"].(string)
			p.Metrics, _ = line["metrics_listen"].(string)
			p.Admin, _ = line["admin_listen"].(string)
			p.TLS, _ = line["tls_listen"].(string)
			break
		}
		p.send(line)
	}
	if p.Listen == "" {
		t.Fatal("flowgate did not start")
	}
	go func() {
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				p.send(line)
			}
		}
		io.Copy(io.Discard, out)
		p.Exited <- cmd.Wait()
	}()
	return p
}

func (p *Proc) send(line map[string]any) {
	select {
	case p.Logs <- line:
	default:
	}
}

// DrainLogs forgets the log lines so far, so a wait sees only new ones.
func (p *Proc) DrainLogs() {
	for {
		select {
		case <-p.Logs:
		default:
			return
		}
	}
}

// WaitLog waits for a log line with message msg.
func (p *Proc) WaitLog(t testing.TB, msg string, d time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case l := <-p.Logs:
			if l["msg"] == msg {
				return l
			}
		case <-deadline:
			t.Fatalf("no %q log line within %v", msg, d)
			return nil
		}
	}
}
