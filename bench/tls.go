package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The TLS targets (issue 12): nginx and flowgate terminating TLS with the
// same certificate and the same TLS 1.2/1.3 policy, measured by wrk over
// https:// (HTTP/1.1, keep-alive, so the handshakes amortise) in the JSON
// scenario only, next to the plain targets of the same rounds.
const (
	nginxTLSTarget    = "nginx-tls"
	flowgateTLSTarget = "flowgate-tls"
)

func isTLS(name string) bool { return name == nginxTLSTarget || name == flowgateTLSTarget }

// withTLSTargets adds the TLS targets to a target list that has their
// plain counterparts (on), or takes them out (off).
func withTLSTargets(ts []string, on bool) []string {
	out := slices.DeleteFunc(slices.Clone(ts), isTLS)
	if !on {
		return out
	}
	for _, pair := range [][2]string{{"nginx", nginxTLSTarget}, {"flowgate", flowgateTLSTarget}} {
		if slices.Contains(out, pair[0]) {
			out = append(out, pair[1])
		}
	}
	return out
}

// ensureCert makes the run's certificate once: self-signed ECDSA P-256,
// for 127.0.0.1 and localhost, valid for a day.
func (e *env) ensureCert() error {
	if e.certFile != "" {
		return nil
	}
	certPEM, keyPEM, err := selfSignedCert(time.Now())
	if err != nil {
		return err
	}
	dir := filepath.Join(e.dir, "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cf, certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(kf, keyPEM, 0o600); err != nil {
		return err
	}
	e.certFile, e.keyFile = cf, kf
	return nil
}

func selfSignedCert(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"flowgate bench"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// nginxTLSCiphers is flowgate's TLS 1.2 policy (tlsserve) in OpenSSL's
// names: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only. TLS
// 1.3's suites are OpenSSL's defaults, as Go's are.
const nginxTLSCiphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" +
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

// nginxTLSConf turns the plain nginx.conf into the same server over TLS:
// `listen ... ssl` on the same port with the run's certificate, TLS 1.2
// and 1.3 with flowgate's cipher policy, a shared session cache; HTTP/1.1
// (what wrk speaks).
func nginxTLSConf(plain string, port int, certFile, keyFile string) string {
	listen := fmt.Sprintf("        listen 127.0.0.1:%d;\n", port)
	tlsListen := fmt.Sprintf(`        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers %s;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1d;
`, port, certFile, keyFile, nginxTLSCiphers)
	return strings.Replace(plain, listen, tlsListen, 1)
}

// flowgateTLSSection: flowgate's own HTTPS listener with the run's
// certificate (mode files), TLS 1.2 minimum (its default policy), no
// redirect from server.listen (which keeps serving plain HTTP).
func flowgateTLSSection(port int, certFile, keyFile string) string {
	return fmt.Sprintf(`tls:
  mode: files
  listen: "127.0.0.1:%d"
  cert_file: %q
  key_file: %q
  redirect_http: false
  min_version: "1.2"
`, port, certFile, keyFile)
}

// benchClient is the harness's own HTTP client (readiness and probes):
// the TLS targets' certificate is the run's self-signed one.
func benchClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the run's own certificate, on loopback
	}}
}
