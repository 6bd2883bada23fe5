package tlsserve_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/internal/testbin"
	"github.com/flowgate/flowgate/internal/testcert"
	"github.com/flowgate/flowgate/tlsserve"
	"go.uber.org/zap"
)

// writeCert writes a self-signed certificate for localhost and 127.0.0.1
// with the given serial, and returns a pool that trusts it.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.CertPool {
	t.Helper()
	return testcert.Write(t, certFile, keyFile, serial, 24*time.Hour)
}

func startTLS(t *testing.T, up, dir string) *testbin.Proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	cfg := filepath.Join(dir, "flowgate.yaml")
	y := "server:\n  listen: 127.0.0.1:0\n  metrics_listen: 127.0.0.1:0\n  admin_listen: \"\"\nupstreams:\n  - url: " + up + "\n" +
		"tls:\n  mode: files\n  listen: 127.0.0.1:0\n  redirect_port: 8443\n  cert_file: cert.pem\n  key_file: key.pem\n  hsts: \"max-age=31536000\"\n"
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return testbin.Start(t, testbin.Build(t), nil, "-config", cfg)
}

func TestFilesModeOverHTTP2(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeCert(t, certFile, keyFile, 1)
	p := startTLS(t, up.URL(), dir)
	if p.TLS == "" {
		t.Fatal("no tls_listen in the start line")
	}
	_, port, _ := net.SplitHostPort(p.TLS)
	base := "https://localhost:" + port
	client := func(pool *x509.CertPool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2: true,
		}}
	}
	c := client(pool)

	// HTTP/2 with the file's certificate, HSTS on the answer.
	res, err := c.Post(base+"/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11", "application/json", strings.NewReader(`{"question":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.ProtoMajor != 2 || res.Header.Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Fatalf("status %d proto %s hsts %q", res.StatusCode, res.Proto, res.Header.Get("Strict-Transport-Security"))
	}

	// A stream over HTTP/2 arrives frame by frame: the first token is read
	// before fakeflow writes the second (200 ms apart).
	req, _ := http.NewRequest("POST", base+"/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11", strings.NewReader(`{"question":"hi","streaming":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(fakeflow.HeaderTokens, "3")
	req.Header.Set(fakeflow.HeaderTokenDelay, "200ms")
	req.Header.Set(fakeflow.HeaderStamp, "1")
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	var firstRead time.Time
	var stamps []int64
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data:"); ok {
			var f struct {
				Event string `json:"event"`
				Stamp int64  `json:"fakeflowStamp"`
			}
			if json.Unmarshal([]byte(data), &f) == nil && f.Event == "token" && f.Stamp > 0 {
				if firstRead.IsZero() {
					firstRead = time.Now()
				}
				stamps = append(stamps, f.Stamp)
			}
		}
		if err != nil {
			break
		}
	}
	res.Body.Close()
	if res.ProtoMajor != 2 || len(stamps) < 2 {
		t.Fatalf("stream over %s: %d stamped token frames", res.Proto, len(stamps))
	}
	if firstRead.UnixNano() >= stamps[1] && stamps[1] > 0 {
		t.Fatalf("first token read at %d, after the second was written at %d: the stream was held back", firstRead.UnixNano(), stamps[1])
	}

	// A replaced certificate is served without a restart.
	newPool := writeCert(t, certFile, keyFile, 2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.Dial("tcp", p.TLS, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
		conn.Close()
		if serial == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replaced certificate was not picked up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res, err := client(newPool).Get(base + "/api/v1/ping"); err != nil {
		t.Fatalf("with the new certificate: %v", err)
	} else {
		res.Body.Close()
	}

	// Refused: TLS 1.1, and a client offering only CBC suites.
	for name, cfg := range map[string]*tls.Config{
		"tls1.1": {RootCAs: newPool, ServerName: "localhost", MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10},
		"cbc":    {RootCAs: newPool, ServerName: "localhost", MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
	} {
		if conn, err := tls.Dial("tcp", p.TLS, cfg); err == nil {
			conn.Close()
			t.Errorf("%s: handshake succeeded", name)
		}
	}

	// The plain listener redirects to https on redirect_port.
	nr := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err = nr.Get("http://" + p.Listen + "/api/v1/prediction/x?a=1")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 301 || res.Header.Get("Location") != "https://127.0.0.1:8443/api/v1/prediction/x?a=1" {
		t.Fatalf("redirect: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	// A POST keeps its method (308); a Host the certificate does not name
	// is not redirected anywhere (a cacheable 301 to any host would let
	// one request poison a shared cache).
	res, err = nr.Post("http://"+p.Listen+"/api/v1/prediction/x", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 308 {
		t.Fatalf("POST redirect: %d", res.StatusCode)
	}
	req, _ = http.NewRequest("GET", "http://"+p.Listen+"/x", nil)
	req.Host = "evil.example"
	res, err = nr.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 || res.Header.Get("Location") != "" {
		t.Fatalf("foreign Host: %d %q", res.StatusCode, res.Header.Get("Location"))
	}

	// The metrics: expiry of the served certificate, failed handshakes.
	mres, err := http.Get("http://" + p.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	if !strings.Contains(string(m), `flowgate_tls_certificate_expiry_timestamp_seconds{domain="localhost"}`) ||
		!strings.Contains(string(m), `flowgate_tls_handshake_errors_total{reason="protocol_version"}`) ||
		!strings.Contains(string(m), `flowgate_tls_handshake_errors_total{reason="cipher_suite"}`) {
		t.Errorf("tls metrics missing:\n%s", grep(string(m), "flowgate_tls"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A ca_root that is not PEM stops the start with the key named.
func TestACMEBadCARoot(t *testing.T) {
	c := config.Default().TLS
	c.Mode = "acme"
	c.ACME.Domains = []string{"localhost"}
	c.ACME.CARoot = filepath.Join(t.TempDir(), "root.pem")
	os.WriteFile(c.ACME.CARoot, []byte("not pem"), 0o600)
	if _, err := tlsserve.New(c, tlsserve.Options{Logger: zap.NewNop()}); err == nil || !strings.Contains(err.Error(), "tls.acme.ca_root") {
		t.Fatalf("bad ca_root: %v", err)
	}
}
