package tlsserve_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
	"github.com/flowgate/flowgate/internal/testpebble"
	"github.com/flowgate/flowgate/internal/testredis"
)

// freePorts reserves n loopback ports and frees them for the caller: the
// ACME server must know the gateway's ports before the gateway starts.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startACME runs flowgate in mode acme against pb on the given ports.
func startACME(t *testing.T, up string, pb *testpebble.Server, plain, tlsPort int, challenge, redisAddr string) *testbin.Proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	y := "server:\n  listen: 127.0.0.1:" + strconv.Itoa(plain) + "\n  metrics_listen: 127.0.0.1:0\n  admin_listen: \"\"\n" +
		"upstreams:\n  - url: " + up + "\n" +
		"tls:\n  mode: acme\n  listen: 127.0.0.1:" + strconv.Itoa(tlsPort) + "\n  storage_dir: " + filepath.Join(dir, "certs") + "\n" +
		"  acme:\n    domains: [localhost]\n    email: ops@flowgate.test\n    ca: " + pb.DirectoryURL() + "\n    ca_root: " + pb.CARootPEMFile() +
		"\n    challenges: [" + challenge + "]\n"
	if redisAddr != "" {
		y += "redis:\n  addr: " + redisAddr + "\n"
	}
	cfg := filepath.Join(dir, "flowgate.yaml")
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return testbin.Start(t, testbin.Build(t), nil, "-config", cfg)
}

// servedCert waits until addr serves a certificate for localhost that
// verifies against roots, and returns it.
func servedCert(t *testing.T, addr string, roots, inter *x509.CertPool) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
		if err == nil {
			state := conn.ConnectionState()
			conn.Close()
			leaf := state.PeerCertificates[0]
			pool := inter.Clone()
			for _, c := range state.PeerCertificates[1:] {
				pool.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, DNSName: "localhost"}); err == nil {
				return leaf
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate from the ACME server served on %s after 60s (last: %v)", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestACMEWithPebble(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			ports := freePorts(t, 2)
			pb := testpebble.Start(t, testpebble.Options{HTTPPort: ports[0], TLSPort: ports[1]})
			p := startACME(t, up.URL(), pb, ports[0], ports[1], challenge, "")
			roots := pb.IssuerRoots(t)
			servedCert(t, p.TLS, roots, pb.Intermediates(t))
			// A request over HTTP/2, the client trusting only Pebble's root.
			pool := roots.Clone()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "localhost"},
				ForceAttemptHTTP2: true,
			}}
			// The chain's intermediate comes with the handshake.
			res, err := c.Post("https://"+p.TLS+"/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11", "application/json", strings.NewReader(`{"question":"hi"}`))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || res.ProtoMajor != 2 {
				t.Fatalf("status %d over %s", res.StatusCode, res.Proto)
			}
			if n := pb.Orders(); n != 1 {
				t.Fatalf("%d orders reached Pebble, want 1", n)
			}
			// The expiry metric shows the obtained certificate.
			deadline := time.Now().Add(10 * time.Second)
			for {
				mres, err := http.Get("http://" + p.Metrics + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				m, _ := io.ReadAll(mres.Body)
				mres.Body.Close()
				if strings.Contains(string(m), `flowgate_tls_certificate_expiry_timestamp_seconds{domain="localhost"}`) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no expiry metric for the ACME certificate")
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// Two replicas sharing Redis and one Pebble: one order, one certificate
// served by both. Pebble validates on replica a's ports only; whichever
// replica ordered, the challenge is answered from the shared storage.
func TestACMESharedThroughRedis(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	rs := testredis.Start(t)
	ports := freePorts(t, 4)
	pb := testpebble.Start(t, testpebble.Options{HTTPPort: ports[0], TLSPort: ports[1]})
	a := startACME(t, up.URL(), pb, ports[0], ports[1], "http-01", rs.Addr())
	b := startACME(t, up.URL(), pb, ports[2], ports[3], "http-01", rs.Addr())
	roots, inter := pb.IssuerRoots(t), pb.Intermediates(t)
	ca, cb := servedCert(t, a.TLS, roots, inter), servedCert(t, b.TLS, roots, inter)
	if ca.SerialNumber.Cmp(cb.SerialNumber) != 0 {
		t.Fatalf("replicas serve different certificates: %s and %s", ca.SerialNumber, cb.SerialNumber)
	}
	if n := pb.Orders(); n != 1 {
		t.Fatalf("%d orders reached Pebble, want exactly 1", n)
	}
}

// On demand, a certificate is ordered at the first handshake for a name,
// and only for a name the ask endpoint approves: another SNI gets no
// certificate and orders nothing.
func TestACMEOnDemandAsks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	var asked []string
	var mu sync.Mutex
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		mu.Lock()
		asked = append(asked, d)
		mu.Unlock()
		if d != "localhost" {
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	t.Cleanup(ask.Close)
	ports := freePorts(t, 2)
	pb := testpebble.Start(t, testpebble.Options{HTTPPort: ports[0], TLSPort: ports[1]})
	dir := t.TempDir()
	y := "server:\n  listen: 127.0.0.1:" + strconv.Itoa(ports[0]) + "\n  metrics_listen: \"\"\n  admin_listen: \"\"\n" +
		"upstreams:\n  - url: " + up.URL() + "\n" +
		"tls:\n  mode: acme\n  listen: 127.0.0.1:" + strconv.Itoa(ports[1]) + "\n  storage_dir: " + filepath.Join(dir, "certs") + "\n" +
		"  acme:\n    email: ops@flowgate.test\n    ca: " + pb.DirectoryURL() + "\n    ca_root: " + pb.CARootPEMFile() +
		"\n    challenges: [http-01]\n    on_demand: {enabled: true, ask: \"" + ask.URL + "\"}\n"
	cfg := filepath.Join(dir, "flowgate.yaml")
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testbin.Start(t, testbin.Build(t), nil, "-config", cfg)
	// A name the endpoint refuses: no certificate, no order.
	if conn, err := tls.Dial("tcp", p.TLS, &tls.Config{ServerName: "evil.example", InsecureSkipVerify: true}); err == nil {
		conn.Close()
		t.Fatal("a certificate was served for a name the ask endpoint refused")
	}
	if n := pb.Orders(); n != 0 {
		t.Fatalf("%d orders for a refused name", n)
	}
	// An approved one: ordered at its first handshake.
	servedCert(t, p.TLS, pb.IssuerRoots(t), pb.Intermediates(t))
	if n := pb.Orders(); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(asked, "evil.example") || !slices.Contains(asked, "localhost") {
		t.Fatalf("asked about %v", asked)
	}
}
