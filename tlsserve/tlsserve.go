// Package tlsserve terminates TLS on the gateway's HTTPS listener: the
// policy (TLS 1.2 and 1.3, ECDHE with AEAD suites only), certificates from
// files reloaded when they change, the plain listener's redirect to https,
// HSTS, and the certificate metrics. HTTP/2 and HTTP/1.1 are offered by
// ALPN; the handler chain is the same as on the plain listener.
package tlsserve

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/flowgate/flowgate/config"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Terminator holds the TLS state of one gateway.
type Terminator struct {
	cfg   config.TLSServe
	log   *zap.Logger
	files *fileCert
	tc    *tls.Config

	acme *acmeState // mode acme

	expiry     *prometheus.GaugeVec
	handshakes *prometheus.CounterVec
}

// Options are the Terminator's collaborators.
type Options struct {
	Logger   *zap.Logger // required
	Registry prometheus.Registerer
	// Storage keeps ACME accounts, certificates and locks (mode acme):
	// Redis when several replicas share them; nil: files under
	// tls.storage_dir.
	Storage certmagic.Storage
}

// New builds the Terminator for a validated config with TLS on. In mode
// acme, call Start once the listeners are bound.
func New(c config.TLSServe, o Options) (*Terminator, error) {
	log, reg := o.Logger, o.Registry
	t := &Terminator{cfg: c, log: log}
	t.expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "flowgate", Name: "tls_certificate_expiry_timestamp_seconds",
		Help: "When the certificate served for a domain expires, as a Unix timestamp.",
	}, []string{"domain"})
	t.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "flowgate", Name: "tls_handshake_errors_total",
		Help: "TLS handshakes that failed on the HTTPS listener, by reason (protocol_version, cipher_suite, no_certificate, eof, other).",
	}, []string{"reason"})
	if reg != nil {
		reg.MustRegister(t.expiry, t.handshakes)
	}
	switch c.Mode {
	case "files":
		fc, err := loadFileCert(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		fc.onLoad = t.replaced
		fc.log = log
		t.files = fc
		t.observe(fc.current.Load())
		t.tc = t.policy()
		t.tc.GetCertificate = t.files.get
	case "acme":
		if err := t.newACME(o.Storage); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("tls.mode %q: TLS is off", c.Mode)
	}
	return t, nil
}

// policy is the TLS configuration every mode shares: TLS 1.2 (unless
// min_version is 1.3) and 1.3; for 1.2 only ECDHE key exchange with
// AES-GCM or ChaCha20-Poly1305, so no CBC, RSA key exchange or 3DES.
func (t *Terminator) policy() *tls.Config {
	minV := uint16(tls.VersionTLS12)
	if t.cfg.MinVersion == "1.3" {
		minV = tls.VersionTLS13
	}
	return &tls.Config{
		MinVersion: minV,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// TLSConfig is the configuration of the HTTPS listener's http.Server.
func (t *Terminator) TLSConfig() *tls.Config { return t.tc }

// replaced records the files' new certificate: the names of the old one
// leave the metric, so no alert fires for a name no longer served.
func (t *Terminator) replaced(c *tls.Certificate) {
	t.expiry.Reset()
	t.observe(c)
}

// observe records a certificate's expiry under each of its names.
func (t *Terminator) observe(c *tls.Certificate) {
	if c == nil || c.Leaf == nil {
		return
	}
	names := c.Leaf.DNSNames
	if len(names) == 0 && c.Leaf.Subject.CommonName != "" {
		names = []string{c.Leaf.Subject.CommonName}
	}
	for _, n := range names {
		t.expiry.WithLabelValues(n).Set(float64(c.Leaf.NotAfter.Unix()))
	}
}

// HSTS adds Strict-Transport-Security to every answer of next, when set.
func (t *Terminator) HSTS(next http.Handler) http.Handler {
	if t.cfg.HSTS == "" {
		return next
	}
	v := []string{t.cfg.HSTS}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Strict-Transport-Security"] = v
		next.ServeHTTP(w, r)
	})
}

// Redirect is the plain listener's handler with TLS on: a 301 to the same
// path and query on https, at redirect_port (left out when 443). Methods
// other than GET and HEAD get a 308, which keeps the method and body. Only
// a host the gateway serves a certificate for is redirected to: a Host
// header is the client's to choose, and a cacheable 301 to any host it
// names would let one request poison a shared cache for everyone.
func (t *Terminator) Redirect() http.Handler {
	port := ""
	if t.cfg.RedirectPort != 443 {
		port = ":" + strconv.Itoa(t.cfg.RedirectPort)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.Trim(host, "[]"))
		if !strings.HasPrefix(r.URL.Path, "/") || !t.serves(host) {
			w.Header().Set("Connection", "close")
			http.Error(w, "flowgate: this address serves HTTPS only, for the names on its certificate", http.StatusBadRequest)
			return
		}
		if strings.Contains(host, ":") { // IPv6 literal
			host = "[" + host + "]"
		}
		code := http.StatusMovedPermanently
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			code = http.StatusPermanentRedirect
		}
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, "https://"+host+port+r.URL.RequestURI(), code)
	})
}

// serves reports whether a certificate the gateway serves names host: the
// files' certificate (its DNS names and IP addresses), or an ACME domain
// or a name certmagic holds a certificate for (on demand).
func (t *Terminator) serves(host string) bool {
	if host == "" {
		return false
	}
	if t.files != nil {
		c := t.files.current.Load()
		if c == nil || c.Leaf == nil {
			return false
		}
		if ip := net.ParseIP(host); ip != nil {
			for _, a := range c.Leaf.IPAddresses {
				if a.Equal(ip) {
					return true
				}
			}
			return false
		}
		return c.Leaf.VerifyHostname(host) == nil
	}
	if t.acme != nil {
		for _, d := range t.acme.domains {
			if strings.EqualFold(d, host) {
				return true
			}
		}
		return len(t.acme.cache.AllMatchingCertificates(host)) > 0
	}
	return false
}

// ErrorLog wraps the HTTPS server's error log: net/http reports a failed
// handshake only there ("http: TLS handshake error from ADDR: REASON"),
// so the reason is counted from it, and the line still goes to base.
func (t *Terminator) ErrorLog(base *log.Logger) *log.Logger {
	return log.New(errorLogWriter{t, base}, "", 0)
}

type errorLogWriter struct {
	t    *Terminator
	base *log.Logger
}

func (w errorLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	if _, reason, ok := strings.Cut(line, "TLS handshake error from "); ok {
		// Counted, and logged at debug only: every scanner on the
		// internet fails a handshake, and the metric says how many.
		w.t.handshakes.WithLabelValues(handshakeReason(reason)).Inc()
		w.t.log.Debug(line)
		return len(p), nil
	}
	w.base.Print(line)
	return len(p), nil
}

// handshakeReason classifies the error text crypto/tls produced.
func handshakeReason(s string) string {
	switch {
	case strings.Contains(s, "unsupported versions"), strings.Contains(s, "protocol version"):
		return "protocol_version"
	case strings.Contains(s, "no cipher suite"), strings.Contains(s, "cipher"):
		return "cipher_suite"
	case strings.Contains(s, "no certificate"), strings.Contains(s, "missing certificate"):
		return "no_certificate"
	case strings.HasSuffix(strings.TrimSpace(s), "EOF"), strings.Contains(s, "connection reset"):
		return "eof"
	}
	return "other"
}

// fileCert serves a certificate from files and reloads it when either
// file changes: a handshake checks their modification times at most once
// a second, so a renewed certificate is served without a restart, and a
// broken pair (a half-written file) keeps the previous one in service.
type fileCert struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
	checked           atomic.Int64 // Unix ns of the last look at the files
	mu                sync.Mutex
	stamp             string // the files' sizes and times at the last load
	onLoad            func(*tls.Certificate)
	log               *zap.Logger
}

func loadFileCert(certFile, keyFile string) (*fileCert, error) {
	fc := &fileCert{certFile: certFile, keyFile: keyFile}
	c, stamp, err := fc.read()
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	fc.current.Store(c)
	fc.stamp = stamp
	fc.checked.Store(time.Now().UnixNano())
	return fc, nil
}

func (fc *fileCert) stampNow() (string, error) {
	a, err := os.Stat(fc.certFile)
	if err != nil {
		return "", err
	}
	b, err := os.Stat(fc.keyFile)
	if err != nil {
		return "", err
	}
	return fmt.Sprint(a.Size(), a.ModTime().UnixNano(), b.Size(), b.ModTime().UnixNano()), nil
}

func (fc *fileCert) read() (*tls.Certificate, string, error) {
	stamp, err := fc.stampNow()
	if err != nil {
		return nil, "", err
	}
	c, err := tls.LoadX509KeyPair(fc.certFile, fc.keyFile)
	if err != nil {
		return nil, "", err
	}
	if c.Leaf == nil && len(c.Certificate) > 0 {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, "", err
		}
	}
	return &c, stamp, nil
}

// reloadInterval is how often a handshake may look at the files.
const reloadInterval = time.Second

func (fc *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	if last := fc.checked.Load(); now-last >= int64(reloadInterval) && fc.checked.CompareAndSwap(last, now) {
		fc.maybeReload()
	}
	return fc.current.Load(), nil
}

func (fc *fileCert) maybeReload() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	stamp, err := fc.stampNow()
	if err != nil || stamp == fc.stamp {
		return
	}
	c, stamp, err := fc.read()
	if err != nil {
		if fc.log != nil {
			fc.log.Warn("tls: the certificate files changed but do not load; serving the previous certificate", zap.Error(err))
		}
		return
	}
	fc.current.Store(c)
	fc.stamp = stamp
	if fc.onLoad != nil {
		fc.onLoad(c)
	}
	if fc.log != nil {
		fc.log.Info("tls: certificate reloaded from files", zap.Strings("names", c.Leaf.DNSNames), zap.Time("not_after", c.Leaf.NotAfter))
	}
}
