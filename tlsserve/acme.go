package tlsserve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/caddyserver/certmagic"
)

// acmeState is mode acme: certmagic obtains, renews and staples the
// certificates; flowgate's own listeners answer its challenges (HTTP-01 on
// the plain listener, TLS-ALPN-01 on the HTTPS one), so certmagic never
// binds a port of its own.
type acmeState struct {
	cache   *certmagic.Cache
	cfg     *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	domains []string
	cancel  context.CancelFunc
}

func (t *Terminator) newACME(storage certmagic.Storage) error {
	a := t.cfg.ACME
	var roots *x509.CertPool
	if a.CARoot != "" {
		pem, err := os.ReadFile(a.CARoot)
		if err != nil {
			return fmt.Errorf("tls.acme.ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls.acme.ca_root: %s holds no PEM certificate", a.CARoot)
		}
	}
	if storage == nil {
		storage = &certmagic.FileStorage{Path: t.cfg.StorageDir}
	}
	st := &acmeState{domains: a.Domains}
	var cmCfg *certmagic.Config
	st.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cmCfg, nil },
		Logger:           t.log.Named("certmagic"),
	})
	cmCfg = certmagic.New(st.cache, certmagic.Config{Storage: storage, Logger: t.log.Named("certmagic"),
		// A certificate obtained, renewed or loaded shows in the expiry
		// metric at once, not at the next tick.
		OnEvent: func(_ context.Context, event string, _ map[string]any) error {
			if event == "cert_obtained" || event == "cached_managed_cert" {
				go t.refreshExpiry()
			}
			return nil
		}})
	if a.OnDemand.Enabled {
		ask := a.OnDemand.Ask
		client := &http.Client{Timeout: 10 * time.Second}
		cmCfg.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: func(ctx context.Context, name string) error {
			return askApproves(ctx, client, ask, name)
		}}
	}
	st.issuer = certmagic.NewACMEIssuer(cmCfg, certmagic.ACMEIssuer{
		CA:                      a.CA,
		Email:                   a.Email,
		Agreed:                  true,
		TrustedRoots:            roots,
		DisableHTTPChallenge:    !slices.Contains(a.Challenges, "http-01"),
		DisableTLSALPNChallenge: !slices.Contains(a.Challenges, "tls-alpn-01"),
		Logger:                  t.log.Named("acme"),
	})
	cmCfg.Issuers = []certmagic.Issuer{st.issuer}
	st.cfg = cmCfg
	t.acme = st
	t.tc = t.policy()
	t.tc.GetCertificate = cmCfg.GetCertificate
	t.tc.NextProtos = append(t.tc.NextProtos, "acme-tls/1") // TLS-ALPN-01
	return nil
}

// askApproves asks the on-demand endpoint about name: only a 200 lets a
// certificate be ordered, so a client's SNI alone never makes one.
func askApproves(ctx context.Context, c *http.Client, ask, name string) error {
	u, err := url.Parse(ask)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	res, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("on-demand ask: %w", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("on-demand ask: %s not approved (%d)", name, res.StatusCode)
	}
	return nil
}

// Start begins managing the certificates, once the listeners are bound:
// httpPort and tlsPort are where the challenges are answered (certmagic
// is told so, and does not bind them itself). It does not wait for the
// first certificate: handshakes for a name get it as soon as it exists.
func (t *Terminator) Start(httpPort, tlsPort int) error {
	a := t.acme
	if a == nil {
		return nil
	}
	a.issuer.AltHTTPPort, a.issuer.AltTLSALPNPort = httpPort, tlsPort
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if len(a.domains) > 0 {
		if err := a.cfg.ManageAsync(ctx, a.domains); err != nil {
			cancel()
			return fmt.Errorf("tls.acme: %w", err)
		}
	}
	go t.watchExpiry(ctx)
	return nil
}

// watchExpiry keeps the expiry metric of managed certificates current
// (renewals swap certificates in the cache; connections are not touched).
func (t *Terminator) watchExpiry(ctx context.Context) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		t.refreshExpiry()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *Terminator) refreshExpiry() {
	for _, d := range t.acme.domains {
		for _, c := range t.acme.cache.AllMatchingCertificates(d) {
			if c.Leaf != nil {
				t.observe(&tls.Certificate{Leaf: c.Leaf})
			}
		}
	}
}

// Close stops certificate management.
func (t *Terminator) Close() {
	if t.acme != nil {
		if t.acme.cancel != nil {
			t.acme.cancel()
		}
		t.acme.cache.Stop()
	}
}

// PlainHandler is the plain listener's handler with TLS on: ACME HTTP-01
// challenges answered first (mode acme), then the redirect to https, or
// next when redirect_http is off.
func (t *Terminator) PlainHandler(next http.Handler) http.Handler {
	h := next
	if t.cfg.RedirectOn() {
		h = t.Redirect()
	}
	if t.acme != nil && slices.Contains(t.cfg.ACME.Challenges, "http-01") {
		h = t.acme.issuer.HTTPChallengeHandler(h)
	}
	return h
}
