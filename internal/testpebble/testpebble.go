// Package testpebble runs a real ACME server, Pebble
// (github.com/letsencrypt/pebble/v2), for a test: each call of Start starts
// one of its own on free loopback ports and kills it when the test ends.
//
// The pebble binary is built once per machine with
// `go install github.com/letsencrypt/pebble/v2/cmd/pebble@` + Version into a
// cache directory (os.UserCacheDir()/flowgate-testpebble/<Version>), under a
// lock file so that the tests of several packages running at once build it
// only once. The certificates that Pebble serves its own HTTPS with ship in
// the module (its test/certs folder), found with `go mod download -json`.
// Pebble is not a dependency of this module: nothing here imports it.
//
// Tests skip when Pebble cannot be installed or started (no network, no go
// command), except under CI=true, where they fail instead.
package testpebble

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/flowgate/flowgate/internal/flock"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Version is the Pebble release that is installed and run.
const Version = "v2.10.1"

const modulePath = "github.com/letsencrypt/pebble/v2"

// readyTimeout bounds the wait for a started Pebble to answer on its ACME
// and management listeners.
const readyTimeout = 15 * time.Second

// orderLine is what Pebble logs (wfe/wfe.go, NewOrder) once per order it
// accepted and stored: `Added order "<id>" to the db`.
const orderLine = "Added order \""

// Options change how Start runs Pebble.
type Options struct {
	// HTTPPort is the port Pebble's VA dials on the identifier's address
	// (for "localhost": 127.0.0.1) to validate HTTP-01 challenges: the
	// gateway's plain listener. 0 picks a free port (see Server.HTTPPort),
	// but binding your listener on 127.0.0.1:0 first and passing its port
	// avoids racing anyone for it.
	HTTPPort int
	// TLSPort is the port Pebble's VA dials to validate TLS-ALPN-01
	// challenges: the gateway's TLS listener. 0 picks a free port.
	TLSPort int
	// AlwaysValid sets PEBBLE_VA_ALWAYS_VALID=1: Pebble marks every
	// challenge valid without dialing anything.
	AlwaysValid bool
	// Validity is the lifetime of issued certificates; 0 means 90 days.
	// Pebble's single profile "default" has it.
	Validity time.Duration
	// Env is added to Pebble's environment after the defaults, which it
	// overrides: PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0 (Pebble's
	// own default rejects 5% of good nonces as badNonce) and
	// PEBBLE_AUTHZREUSE=0 (its default reuses a valid authorization for
	// half of the new orders, which then need no challenge). Others:
	// PEBBLE_CHAIN_LENGTH, PEBBLE_ALTERNATE_ROOTS, PEBBLE_VA_SLEEPTIME.
	Env []string
}

// Server is one Pebble process owned by a test.
type Server struct {
	httpPort, tlsPort int
	listen, mgmt      string // host:port of the ACME and management listeners
	caFile            string // pebble.minica.pem
	client            *http.Client

	cmd    *exec.Cmd
	done   chan struct{} // closed when the process exited and its output is read
	err    error         // Wait's error, set before done closes
	orders atomic.Int64

	logMu sync.Mutex
	log   []string // the last lines of its output, for failure messages
}

// Start installs Pebble if needed, starts it for t on free ports of
// 127.0.0.1 and returns once its ACME directory and management API answer.
// It is killed when t ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	inst := install()
	if inst.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testpebble: cannot install pebble %s, and tests never skip under CI: %v", Version, inst.err)
		}
		t.Skipf("testpebble: cannot install pebble %s: %v", Version, inst.err)
	}
	pool := x509.NewCertPool()
	if pemBytes, err := os.ReadFile(inst.caFile); err != nil {
		t.Fatalf("testpebble: %v", err)
	} else if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("testpebble: no certificate in %s", inst.caFile)
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true},
	}
	dir := t.TempDir()
	// A free port can be taken by someone else between our probe and
	// Pebble's bind: try a few.
	var lastErr error
	for range 5 {
		s := &Server{caFile: inst.caFile, client: client, httpPort: o.HTTPPort, tlsPort: o.TLSPort}
		ports, err := freePorts(4)
		if err != nil {
			t.Fatalf("testpebble: %v", err)
		}
		s.listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		s.mgmt = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		if s.httpPort == 0 {
			s.httpPort = ports[2]
		}
		if s.tlsPort == 0 {
			s.tlsPort = ports[3]
		}
		if lastErr = s.start(inst, dir, o); lastErr == nil {
			t.Cleanup(s.stop)
			return s
		}
	}
	t.Fatalf("testpebble: %v", lastErr)
	return nil
}

// DirectoryURL is the ACME directory, https://127.0.0.1:<port>/dir. Its
// certificate is for "localhost" and 127.0.0.1, signed by CARootPEMFile.
func (s *Server) DirectoryURL() string { return "https://" + s.listen + "/dir" }

// ManagementURL is the base of Pebble's management API,
// https://127.0.0.1:<port> (/roots/0, /intermediates/0, ...).
func (s *Server) ManagementURL() string { return "https://" + s.mgmt }

// CARootPEMFile is the PEM file of the CA that signs Pebble's own HTTPS
// (test/certs/pebble.minica.pem in the module): what an ACME client must
// trust to talk to DirectoryURL (certmagic: ACMEIssuer.TrustedRoots). It
// does not sign issued certificates; IssuerRoots does.
func (s *Server) CARootPEMFile() string { return s.caFile }

// CARoots is CARootPEMFile as a pool.
func (s *Server) CARoots() *x509.CertPool {
	return s.client.Transport.(*http.Transport).TLSClientConfig.RootCAs
}

// HTTPClient is a client that trusts CARootPEMFile only.
func (s *Server) HTTPClient() *http.Client { return s.client }

// HTTPPort is the port Pebble validates HTTP-01 on.
func (s *Server) HTTPPort() int { return s.httpPort }

// TLSPort is the port Pebble validates TLS-ALPN-01 on.
func (s *Server) TLSPort() int { return s.tlsPort }

// IssuerRoots is the root that signs the certificates this Pebble issues,
// from its management API /roots/0: what a TLS client must trust to verify
// them. Pebble makes a new root every start. The intermediate comes with
// the issued chain (certmagic's Certificate.Certificate[1:]); Intermediates
// fetches it too.
func (s *Server) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range s.fetchCerts(t, "/roots/0") {
		pool.AddCert(c)
	}
	return pool
}

// Intermediates is the intermediate chain of /intermediates/0 as a pool.
func (s *Server) Intermediates(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range s.fetchCerts(t, "/intermediates/0") {
		pool.AddCert(c)
	}
	return pool
}

// Orders is how many new orders Pebble accepted so far, counted from its
// log ("Added order ... to the db"). Requests refused before an order is
// stored (bad nonce, bad request, blocked domain) do not count. The line is
// logged before the order's response is sent, so once a client has its
// certificate, every order it made is counted.
func (s *Server) Orders() int { return int(s.orders.Load()) }

// Log is the last lines of Pebble's output.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return strings.Join(s.log, "\n")
}

func (s *Server) fetchCerts(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	resp, err := s.client.Get(s.ManagementURL() + path)
	if err != nil {
		t.Fatalf("testpebble: GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("testpebble: GET %s: %s %v\n%s", path, resp.Status, err, body)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, body = pem.Decode(body)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("testpebble: GET %s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("testpebble: GET %s: no certificate", path)
	}
	return certs
}

// start writes a config and runs Pebble with it, and waits until both
// listeners answer, or it exits, or readyTimeout passes.
func (s *Server) start(inst installation, dir string, o Options) error {
	validity := o.Validity
	if validity <= 0 {
		validity = 90 * 24 * time.Hour
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  s.listen,
		"managementListenAddress":        s.mgmt,
		"certificate":                    filepath.Join(inst.testDir, "certs", "localhost", "cert.pem"),
		"privateKey":                     filepath.Join(inst.testDir, "certs", "localhost", "key.pem"),
		"httpPort":                       s.httpPort,
		"tlsPort":                        s.tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"domainBlocklist":                []string{"blocked-domain.example"},
		// No Retry-After on pending authorizations and processing
		// orders (the shipped config says 3 s and 5 s, which acmez waits).
		"retryAfter":   map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm": "ecdsa",
		// One profile: for an order that names none, Pebble picks one of
		// its profiles at random (the shipped config has a 90-day and a
		// 6-day one), so certificate lifetimes would vary from run to run.
		"profiles": map[string]any{
			"default": map[string]any{"description": "testpebble", "validityPeriod": int64(validity / time.Second)},
		},
	}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		return err
	}
	cmd := exec.Command(inst.bin, "-config", cfgFile, "-strict=false")
	cmd.Dir = dir // every path in the config is absolute
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	if o.AlwaysValid {
		cmd.Env = append(cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	cmd.Env = append(cmd.Env, o.Env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start pebble: %w", err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() {
		// Read the output to the end, so that Pebble never blocks on a
		// full pipe; count orders; keep the last lines.
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, orderLine) {
				s.orders.Add(1)
			}
			s.logMu.Lock()
			s.log = append(s.log, line)
			if len(s.log) > 100 {
				s.log = s.log[len(s.log)-100:]
			}
			s.logMu.Unlock()
		}
		s.err = cmd.Wait()
		close(s.done)
	}()
	// Pebble logs "Listening on" before it binds, and binds the
	// management listener in a goroutine: poll both over HTTPS instead.
	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.probe()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("pebble (%s, management %s) exited before it was ready (%v):\n%s", s.listen, s.mgmt, s.err, s.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("pebble (%s, management %s) not ready after %v: %v\n%s", s.listen, s.mgmt, readyTimeout, err, s.Log())
		}
	}
}

// probe gets the directory and the root once.
func (s *Server) probe() error {
	for _, u := range []string{s.DirectoryURL(), s.ManagementURL() + "/roots/0"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := s.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("GET %s: %s", u, resp.Status)
			}
		}
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// stop kills Pebble and waits for it to exit; it is the test's cleanup.
func (s *Server) stop() {
	// Kill fails only when the process has already exited.
	_ = s.cmd.Process.Kill()
	<-s.done
}

type installation struct {
	bin     string // the pebble binary
	testDir string // the module's test folder (config, certs)
	caFile  string // test/certs/pebble.minica.pem
	err     error
}

var (
	installOnce sync.Once
	installed   installation
)

// install builds pebble once per machine (once per process past the
// first) and finds the module's test folder.
func install() installation {
	installOnce.Do(func() { installed = doInstall() })
	return installed
}

func doInstall() installation {
	var inst installation
	goBin, err := exec.LookPath("go")
	if err != nil {
		inst.err = err
		return inst
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "flowgate-testpebble", Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		inst.err = err
		return inst
	}
	// Run the go commands outside any module, so that they never read or
	// write this module's go.mod and go.sum.
	goCmd := func(env []string, args ...string) ([]byte, error) {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GO111MODULE=on", "GOWORK=off")
		cmd.Env = append(cmd.Env, env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out, nil
	}

	inst.bin = filepath.Join(dir, "pebble")
	if _, err := os.Stat(inst.bin); err != nil {
		// Tests of several packages run at once: one builds, the others
		// wait on the lock and then find the binary.
		if inst.err = flock.Do(filepath.Join(dir, "lock"), func() error {
			if _, err := os.Stat(inst.bin); err == nil {
				return nil
			}
			tmp, err := os.MkdirTemp(dir, "build-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			if _, err := goCmd([]string{"GOBIN=" + tmp}, "install", modulePath+"/cmd/pebble@"+Version); err != nil {
				return err
			}
			return os.Rename(filepath.Join(tmp, "pebble"), inst.bin)
		}); inst.err != nil {
			return inst
		}
	}

	out, err := goCmd(nil, "mod", "download", "-json", modulePath+"@"+Version)
	if err != nil {
		inst.err = err
		return inst
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		inst.err = fmt.Errorf("go mod download -json: %v", err)
		return inst
	}
	if mod.Error != "" || mod.Dir == "" {
		inst.err = fmt.Errorf("go mod download %s@%s: %q", modulePath, Version, mod.Error)
		return inst
	}
	inst.testDir = filepath.Join(mod.Dir, "test")
	inst.caFile = filepath.Join(inst.testDir, "certs", "pebble.minica.pem")
	for _, f := range []string{inst.caFile, filepath.Join(inst.testDir, "certs", "localhost", "cert.pem"), filepath.Join(inst.testDir, "certs", "localhost", "key.pem")} {
		if _, err := os.Stat(f); err != nil {
			inst.err = err
			return inst
		}
	}
	return inst
}

// freePorts returns n distinct TCP ports of 127.0.0.1 that were free a
// moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
