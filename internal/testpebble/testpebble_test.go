package testpebble_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/flowgate/flowgate/internal/testpebble"
)

func TestDirectoryAndRoots(t *testing.T) {
	s := testpebble.Start(t, testpebble.Options{AlwaysValid: true})

	// Trust only the CA in CARootPEMFile.
	pem, err := os.ReadFile(s.CARootPEMFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", s.CARootPEMFile())
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(s.DirectoryURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"newOrder", "newAccount", "newNonce"} {
		if u, _ := dir[k].(string); u == "" {
			t.Errorf("directory has no %s: %v", k, dir)
		}
	}

	// Pebble's HTTPS is not signed by the issuer root.
	if _, err := http.Get(s.DirectoryURL()); err == nil {
		t.Error("the directory verified against the system roots")
	}
	if s.IssuerRoots(t).Equal(pool) {
		t.Error("IssuerRoots is the CA of Pebble's own HTTPS")
	}
	if s.Orders() != 0 {
		t.Errorf("Orders() = %d before any order", s.Orders())
	}
}

// TestIssueWithCertmagic obtains a certificate for localhost with certmagic,
// validated for real over HTTP-01 on a listener of the test's own.
func TestIssueWithCertmagic(t *testing.T) {
	// The "gateway's" plain listener first, so that its port is ours.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpPort := ln.Addr().(*net.TCPAddr).Port
	s := testpebble.Start(t, testpebble.Options{HTTPPort: httpPort})

	logger := zap.NewNop()
	if testing.Verbose() {
		logger, _ = zap.NewDevelopment()
	}
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           logger,
	})
	t.Cleanup(cache.Stop)
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: t.TempDir()},
		Logger:  logger,
	})
	issuer := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:     s.DirectoryURL(),
		TestCA: s.DirectoryURL(),
		Agreed: true,
		// With no Email, ObtainCertSync (interactive) prompts for one on
		// stdin.
		Email:                   "ops@flowgate.test",
		TrustedRoots:            s.CARoots(),
		DisableTLSALPNChallenge: true,
		// certmagic's own solver tries to listen on ListenHost:AltHTTPPort
		// (default :80); finding our listener there, it leaves the
		// challenge to the HTTPChallengeHandler below.
		ListenHost:  "127.0.0.1",
		AltHTTPPort: httpPort,
		Logger:      logger,
	})
	cfg.Issuers = []certmagic.Issuer{issuer}

	var served atomic.Int64 // challenge requests answered
	challenges := issuer.HTTPChallengeHandler(http.NotFoundHandler())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if certmagic.LooksLikeHTTPChallenge(r) {
			served.Add(1)
		}
		challenges.ServeHTTP(w, r)
	})}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := cfg.ObtainCertSync(ctx, "localhost"); err != nil {
		t.Fatalf("obtain: %v\npebble:\n%s", err, s.Log())
	}
	t.Logf("obtained in %v", time.Since(start))

	if n := s.Orders(); n != 1 {
		t.Errorf("Orders() = %d, want 1", n)
	}
	if served.Load() == 0 {
		t.Errorf("Pebble's VA never dialed the HTTP-01 port\n%s", s.Log())
	}

	cert, err := cfg.CacheManagedCertificate(ctx, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 89*24*time.Hour || got > 91*24*time.Hour {
		t.Errorf("validity %v, want 90 days", got)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: s.IssuerRoots(t), Intermediates: inter}); err != nil {
		t.Errorf("the issued certificate does not verify against IssuerRoots: %v", err)
	}
	// Nor against the CA of Pebble's own HTTPS.
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: s.CARoots(), Intermediates: inter}); err == nil {
		t.Error("the issued certificate verifies against CARootPEMFile")
	}
	// The management API's intermediate is the one in the chain.
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: s.IssuerRoots(t), Intermediates: s.Intermediates(t)}); err != nil {
		t.Errorf("with Intermediates(): %v", err)
	}
}

// TestIssueTLSALPN obtains a certificate with the TLS-ALPN-01 challenge,
// answered by certmagic's own tls.Config on a TLS listener of the test's.
func TestIssueTLSALPN(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := ln.Addr().(*net.TCPAddr).Port
	s := testpebble.Start(t, testpebble.Options{TLSPort: tlsPort})

	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           zap.NewNop(),
	})
	t.Cleanup(cache.Stop)
	cfg = certmagic.New(cache, certmagic.Config{Storage: &certmagic.FileStorage{Path: t.TempDir()}, Logger: zap.NewNop()})
	cfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:                   s.DirectoryURL(),
		Agreed:               true,
		Email:                "ops@flowgate.test",
		TrustedRoots:         s.CARoots(),
		DisableHTTPChallenge: true,
		ListenHost:           "127.0.0.1",
		AltTLSALPNPort:       tlsPort,
		Logger:               zap.NewNop(),
	})}
	tcfg := cfg.TLSConfig() // answers acme-tls/1 handshakes
	tcfg.NextProtos = append([]string{"h2", "http/1.1"}, tcfg.NextProtos...)
	var challenged atomic.Int64 // acme-tls/1 handshakes
	getCert := tcfg.GetCertificate
	tcfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if slices.Contains(hello.SupportedProtos, "acme-tls/1") {
			challenged.Add(1)
		}
		return getCert(hello)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: tcfg}
	go srv.Serve(tls.NewListener(ln, tcfg))
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// ManageSync obtains, caches (so that the handshake serves it) and
	// keeps renewing; ObtainCertSync only stores.
	if err := cfg.ManageSync(ctx, []string{"localhost"}); err != nil {
		t.Fatalf("manage: %v\npebble:\n%s", err, s.Log())
	}
	if n := s.Orders(); n != 1 {
		t.Errorf("Orders() = %d, want 1", n)
	}
	if challenged.Load() == 0 {
		t.Errorf("Pebble's VA never made an acme-tls/1 handshake\n%s", s.Log())
	}

	// The listener now serves the issued certificate, which verifies
	// against IssuerRoots.
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "localhost", RootCAs: s.IssuerRoots(t)})
	if err != nil {
		t.Fatalf("handshake with the issued certificate: %v", err)
	}
	conn.Close()
}
