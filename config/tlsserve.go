package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// TLSServe configures TLS termination on the gateway's own listener. Off
// by default: server.listen serves plain HTTP, as behind a load balancer
// that terminates TLS.
type TLSServe struct {
	// Mode is off, files (a certificate and key from files, reloaded when
	// they change) or acme (certificates obtained and renewed through
	// ACME). Default off.
	Mode string `yaml:"mode"`
	// Listen is the HTTPS listener; server.listen keeps serving plain
	// HTTP. Default ":8443".
	Listen string `yaml:"listen"`
	// RedirectHTTP makes server.listen answer everything with a 301 to
	// https (and ACME HTTP-01 challenges, in mode acme). Default true.
	RedirectHTTP *bool `yaml:"redirect_http"`
	// RedirectPort is the port in the redirect's Location: the public
	// HTTPS port, which a container or load balancer may map to Listen.
	// 443 is left out of the URL. Default 443.
	RedirectPort int `yaml:"redirect_port"`
	// CertFile and KeyFile are PEM files (mode files), read again when
	// either changes. A relative path is resolved against the config
	// file's directory. Required in mode files.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ACME configures mode acme.
	ACME ACME `yaml:"acme"`
	// StorageDir holds ACME accounts, certificates and locks when
	// redis.addr is not set (with it, they are in Redis, shared by the
	// replicas). Default /var/lib/flowgate/certs.
	StorageDir string `yaml:"storage_dir"`
	// HSTS is the Strict-Transport-Security value sent on HTTPS answers,
	// e.g. "max-age=31536000; includeSubDomains". Default "": none.
	HSTS string `yaml:"hsts"`
	// MinVersion is the lowest TLS version accepted, "1.2" or "1.3"; with
	// 1.2 only ECDHE suites with AES-GCM or ChaCha20-Poly1305. Default "1.2".
	MinVersion string `yaml:"min_version"`
}

// ACME configures automatic certificates.
type ACME struct {
	// Domains are the names certificates are obtained for. Required
	// unless on_demand is enabled.
	Domains []string `yaml:"domains"`
	// Email is the ACME account's contact. Default none.
	Email string `yaml:"email"`
	// CA is the ACME directory URL. Default Let's Encrypt's production
	// directory.
	CA string `yaml:"ca"`
	// CARoot is a PEM file of an extra root the ACME server's own HTTPS is
	// trusted with (a private CA: step-ca, Pebble). Default none.
	CARoot string `yaml:"ca_root"`
	// Challenges are the challenge types offered: http-01 (on
	// server.listen, port 80 publicly) and tls-alpn-01 (on tls.listen,
	// port 443 publicly). Default [http-01, tls-alpn-01].
	Challenges []string `yaml:"challenges"`
	// OnDemand obtains certificates at the first handshake for a name,
	// only for names the Ask endpoint approves (it gets ?domain=NAME and
	// must answer 200). Default off.
	OnDemand OnDemand `yaml:"on_demand"`
}

// OnDemand configures on-demand certificates.
type OnDemand struct {
	// Enabled turns on-demand issuance on. Default false.
	Enabled bool `yaml:"enabled"`
	// Ask is the URL that approves a name; required when enabled: without
	// it any SNI a client sends would make the gateway order a
	// certificate.
	Ask string `yaml:"ask"`
}

// LetsEncryptProduction is the default ACME directory.
const LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"

// TLSOn reports whether the gateway terminates TLS.
func (t TLSServe) TLSOn() bool { return t.Mode == "files" || t.Mode == "acme" }

// RedirectOn reports whether the plain listener redirects to https.
func (t TLSServe) RedirectOn() bool { return t.TLSOn() && Bool(t.RedirectHTTP, true) }

func (v *validator) tlsServe() {
	t := &v.c.TLS
	switch t.Mode {
	case "off":
		return
	case "files", "acme":
	default:
		v.add("tls.mode", `must be off, files or acme, not %q`, t.Mode)
		return
	}
	if msg := checkHostPort(t.Listen); msg != "" {
		v.add("tls.listen", "%s", strings.Replace(msg, `":8080" or "127.0.0.1:8080"`, `":8443" or ":443"`, 1))
	} else {
		for _, l := range []struct{ key, addr string }{
			{"server.listen", v.c.Server.Listen}, {"server.metrics_listen", v.c.Server.MetricsListen}, {"server.admin_listen", v.c.Server.AdminListen},
		} {
			if l.addr != "" && sameSocket(l.addr, t.Listen) {
				v.add("tls.listen", "%q clashes with %s %q; each listener needs its own port", t.Listen, l.key, l.addr)
			}
		}
	}
	if t.RedirectPort < 1 || t.RedirectPort > 65535 {
		v.add("tls.redirect_port", "must be a port from 1 to 65535, not %d", t.RedirectPort)
	}
	switch t.MinVersion {
	case "1.2", "1.3":
	default:
		v.add("tls.min_version", `must be "1.2" or "1.3", not %q`, t.MinVersion)
	}
	if t.HSTS != "" && !strings.HasPrefix(strings.ToLower(strings.TrimSpace(t.HSTS)), "max-age=") {
		v.add("tls.hsts", `must start with max-age=, e.g. "max-age=31536000; includeSubDomains"`)
	}
	if t.Mode == "files" {
		if t.CertFile == "" {
			v.add("tls.cert_file", "is required in mode files (a PEM certificate chain)")
		}
		if t.KeyFile == "" {
			v.add("tls.key_file", "is required in mode files (the PEM private key)")
		}
		return
	}
	a := &t.ACME
	if len(a.Domains) == 0 && !a.OnDemand.Enabled {
		v.add("tls.acme.domains", "name at least one domain, or enable on_demand with an ask URL")
	}
	for i, d := range a.Domains {
		if msg := checkDomain(d); msg != "" {
			v.add("tls.acme.domains["+strconv.Itoa(i)+"]", "%s", msg)
		}
	}
	if u, err := url.Parse(a.CA); err != nil || u.Scheme != "https" || u.Host == "" {
		v.add("tls.acme.ca", "must be an https:// ACME directory URL, not %q", a.CA)
	}
	if len(a.Challenges) == 0 {
		v.add("tls.acme.challenges", "offer http-01, tls-alpn-01 or both")
	}
	for i, c := range a.Challenges {
		if c != "http-01" && c != "tls-alpn-01" {
			v.add("tls.acme.challenges["+strconv.Itoa(i)+"]", `must be http-01 or tls-alpn-01, not %q`, c)
		}
	}
	if a.OnDemand.Enabled {
		if u, err := url.Parse(a.OnDemand.Ask); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("tls.acme.on_demand.ask", "is required with on_demand: an http(s) URL that approves each name (never any SNI)")
		}
	}
}

// checkDomain accepts a DNS name as ACME issues for it, or a wildcard
// label first (which needs DNS-01, not offered: refused).
func checkDomain(d string) string {
	if strings.HasPrefix(d, "*.") {
		return fmt.Sprintf("%q: wildcard names need the DNS-01 challenge, which flowgate does not offer", d)
	}
	if d == "" || len(d) > 253 || strings.ContainsAny(d, " /:@") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return fmt.Sprintf("%q is not a domain name", d)
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Sprintf("%q is not a domain name", d)
		}
	}
	return ""
}

// resolveTLSPaths makes tls file paths relative to the config file's dir.
func resolveTLSPaths(c *Config, dir string) {
	if dir == "" {
		return
	}
	for _, p := range []*string{&c.TLS.CertFile, &c.TLS.KeyFile, &c.TLS.ACME.CARoot} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
