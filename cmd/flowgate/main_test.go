package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
)

const flowID = "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11"

// buildBinary compiles flowgate once per test run.
func buildBinary(t *testing.T) string { return testbin.Build(t) }

// startBinary runs flowgate with every listener on a port of the kernel's
// choosing and waits for its start line, which names the bound addresses.
func startBinary(t *testing.T, bin string, args ...string) *testbin.Proc {
	t.Helper()
	args = append([]string{"-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"}, args...)
	s := testbin.Start(t, bin, nil, args...)
	if s.Metrics == "" || s.Admin == "" {
		t.Fatalf("the start line lacks an address: %+v", s)
	}
	return s
}

// waitReadyz waits until /readyz answers want: 200 once the first probe
// passed, 503 once a drain began.
func waitReadyz(t *testing.T, s *testbin.Proc, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := http.Get("http://" + s.Metrics + "/readyz")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered %d", want)
		}
	}
}

// streamThroughBinary starts flowgate in front of a fakeflow streaming
// tokens at tokenDelay, opens one stream and returns it once its first
// line has arrived.
func streamThroughBinary(t *testing.T, tokens int, tokenDelay time.Duration) (*testbin.Proc, *bufio.Reader) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ff, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{Tokens: tokens, TokenDelay: tokenDelay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ff.Close() })
	s := startBinary(t, buildBinary(t), "-upstream", ff.URL())
	waitReadyz(t, s, http.StatusOK)
	resp, err := http.Post("http://"+s.Listen+"/api/v1/prediction/"+flowID, "application/json",
		strings.NewReader(`{"question":"hi","streaming":true}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	return s, br
}

// sigtermAndWaitDraining sends SIGTERM and waits until /readyz reports
// the drain, which shows the signal was handled.
func sigtermAndWaitDraining(t *testing.T, s *testbin.Proc) {
	t.Helper()
	if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, s, http.StatusServiceUnavailable)
}

// SIGTERM during a 3-second stream: the stream completes and the process
// exits 0; meanwhile /readyz reports the drain and new connections are refused.
func TestSIGTERMDrainsStreams(t *testing.T) {
	s, br := streamThroughBinary(t, 30, 100*time.Millisecond)
	start := time.Now()
	sigtermAndWaitDraining(t, s)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("stream cut by shutdown after %v: %v", time.Since(start), err)
	}
	if !bytes.Contains(rest, []byte(`"data":"[DONE]"`)) {
		t.Fatalf("stream ended without its end event: %q", rest[max(0, len(rest)-200):])
	}
	if _, err := net.DialTimeout("tcp", s.Listen, time.Second); err == nil {
		t.Fatal("listener still accepting while draining")
	}
	select {
	case err := <-s.Exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("process did not exit after the stream ended")
	}
}

func TestHealthcheckSubcommand(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(500)
		}
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()
	var stderr bytes.Buffer
	if code := run([]string{"healthcheck", "-url", "http://" + ln.Addr().String() + "/healthz"}, io.Discard, &stderr); code != 0 {
		t.Fatalf("healthy: exit %d %s", code, stderr.String())
	}
	if code := run([]string{"healthcheck", "-url", "http://" + ln.Addr().String() + "/other"}, io.Discard, &stderr); code != 1 {
		t.Fatalf("500: exit %d", code)
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	ln2.Close()
	if code := run([]string{"healthcheck", "-url", "http://" + ln2.Addr().String() + "/healthz", "-timeout", "1s"}, io.Discard, &stderr); code != 1 {
		t.Fatalf("nothing listening: exit %d", code)
	}
}

func TestValidateSubcommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("upstreams:\n  - url: http://flowise:3000\n"), 0o600)
	os.WriteFile(bad, []byte("upstreams:\n  - url: http://flowise:3000\nproxy:\n  max_body_bytez: 10\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-config", good}, &out, &errb); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errb.String())
	}
	errb.Reset()
	code := run([]string{"validate", "-config", bad}, &out, &errb)
	msg := errb.String()
	if code != 1 || !strings.Contains(msg, "max_body_bytez") || !strings.Contains(msg, ":4") {
		t.Fatalf("bad config: exit %d, message %q (want the key and line 4)", code, msg)
	}
	if code := run([]string{"validate"}, &out, &errb); code != 2 {
		t.Fatalf("no -config: exit %d", code)
	}
}

func TestVersionSubcommand(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "flowgate ") {
		t.Fatalf("exit %d %q", code, out.String())
	}
}

// A second SIGTERM ends the drain at once.
func TestSecondSignalEndsTheDrain(t *testing.T) {
	s, _ := streamThroughBinary(t, 600, 100*time.Millisecond)
	sigtermAndWaitDraining(t, s)
	s.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.Exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second signal did not end the drain of a 60 s stream")
	}
}

// SIGHUP (a reload hook or logrotate used to nginx) neither kills nor
// drains: a stream under way completes and the gateway keeps serving.
func TestSIGHUPIgnored(t *testing.T) {
	s, br := streamThroughBinary(t, 5, 50*time.Millisecond)
	if err := s.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
wait:
	for {
		select {
		case line := <-s.Logs:
			if msg, _ := line["msg"].(string); strings.HasPrefix(msg, "SIGHUP ignored") {
				break wait
			}
		case err := <-s.Exited:
			t.Fatalf("exited on SIGHUP: %v", err)
		case <-timeout:
			t.Fatal("no log line for the SIGHUP")
		}
	}
	rest, err := io.ReadAll(br)
	if err != nil || !bytes.Contains(rest, []byte(`"data":"[DONE]"`)) {
		t.Fatalf("stream after SIGHUP: %v %q", err, rest)
	}
	waitReadyz(t, s, http.StatusOK)
	select {
	case err := <-s.Exited:
		t.Fatalf("exited after SIGHUP: %v", err)
	default:
	}
}
