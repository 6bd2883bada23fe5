package proxy_test

// Memory bounds measured on the real binary: its peak RSS (VmHWM) while
// clients push bodies at it, so what is measured is the gateway alone.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
)

// runFlowgate starts the binary in front of upstream with extra config
// lines and returns its proxy address and process id.
func runFlowgate(t *testing.T, upstream string, yaml string) (addr string, pid int) {
	t.Helper()
	p := startFlowgate(t, upstream, "log:\n  access_log: false\n"+yaml)
	return p.Listen, p.Cmd.Process.Pid
}

// adminToken is the admin API token of the binaries tests start.
const adminToken = "test-admin-token"

// startFlowgate starts the binary in front of upstream with extra config
// lines (top-level sections other than server and upstreams).
func startFlowgate(t *testing.T, upstream string, yaml string) *testbin.Proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	cfg := filepath.Join(t.TempDir(), "flowgate.yaml")
	body := "server:\n  listen: 127.0.0.1:0\n  metrics_listen: \"\"\n  admin_listen: 127.0.0.1:0\nupstreams:\n  - url: " + upstream + "\n" + yaml
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"FLOWGATE_ADMIN_TOKEN=" + adminToken}
	// Spilled bodies go to tmpfs when there is one: gigabytes of temp
	// files on disk would leave writeback running into the next tests,
	// and the files are not the process's memory either way.
	if shmFree() > 6<<30 {
		env = append(env, "TMPDIR=/dev/shm")
	}
	return testbin.Start(t, testbin.Build(t), env, "-config", cfg)
}

// shmFree is the free space of /dev/shm, 0 when there is none (Docker's
// default is 64 MiB: too small for the upload test's temp files).
func shmFree() int64 {
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) != nil {
		return 0
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// procKiB reads a VmXXX line of /proc/PID/status, in KiB.
func procKiB(t *testing.T, pid int, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

// holdingUpstream reads each body whole, then holds the request until
// release is closed; arrived gets one value per request read.
func holdingUpstream(t *testing.T) (url string, arrived chan struct{}, release chan struct{}) {
	arrived, release = make(chan struct{}, 1000), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/ping" {
			io.WriteString(w, "pong")
			return
		}
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-release
		io.WriteString(w, `{"text":"ok"}`)
	}))
	t.Cleanup(up.Close)
	return up.URL, arrived, release
}

// postBodies sends n concurrent bodies of size bytes with a declared
// length and returns a channel that yields each status.
func postBodies(addr string, n int, size int64) chan int {
	done := make(chan int, n)
	for range n {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+predictPath, io.LimitReader(zeros{}, size))
			req.ContentLength = size
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	return done
}

// 40 concurrent 8 MiB bodies, all held by the gateway at once: memory
// stays under the body budget (64 MiB) plus 64 MiB, because the bodies the
// budget cannot hold wait on disk.
func TestConcurrentBodiesStayWithinTheBudget(t *testing.T) {
	up, arrived, release := holdingUpstream(t)
	addr, pid := runFlowgate(t, up, "")
	const n, size = 40, 8 << 20
	done := postBodies(addr, n, size)
	for range n {
		<-arrived // every body is now read and held by the gateway
	}
	rss, hwm := procKiB(t, pid, "VmRSS"), procKiB(t, pid, "VmHWM")
	close(release)
	for range n {
		if s := <-done; s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
	}
	t.Logf("%d x %d MiB bodies held: RSS %d MiB, peak %d MiB", n, size>>20, rss>>10, hwm>>10)
	if limit := int64(64+64) << 10; hwm > limit {
		t.Fatalf("peak RSS %d MiB, want under %d MiB", hwm>>10, limit>>10)
	}
}

// 50 concurrent 90 MiB uploads go through with a peak RSS under 256 MiB.
func TestConcurrentLargeUploadsPeakUnder256MiB(t *testing.T) {
	up, arrived, release := holdingUpstream(t)
	close(release)
	// Probes off: on two cores saturated by 9 GB of copying, a probe
	// answered late would take the upstream out and fail the uploads.
	// The disk budget (1GiB by default) is raised to hold all 50 at once.
	addr, pid := runFlowgate(t, up, "health:\n  active:\n    enabled: false\nproxy:\n  body_disk_budget: 5GiB\n")
	const n, size = 50, 90 << 20
	done := postBodies(addr, n, size)
	for range n {
		if s := <-done; s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
		<-arrived
	}
	hwm := procKiB(t, pid, "VmHWM")
	t.Logf("%d x %d MiB uploads: peak RSS %d MiB", n, size>>20, hwm>>10)
	if hwm > 256<<10 {
		t.Fatalf("peak RSS %d MiB, want under 256 MiB", hwm>>10)
	}
}

// The binary's default header limit (64 KiB) answers 431 past it.
func TestOversizedHeadersAre431(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{})
	addr, _ := runFlowgate(t, ff.URL(), "")
	for _, tc := range []struct {
		size   int
		status int
	}{{60 << 10, http.StatusOK}, {70 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /api/v1/ping HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", tc.size))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%d KiB of headers: status %d, want %d", tc.size>>10, resp.StatusCode, tc.status)
		}
	}
}
