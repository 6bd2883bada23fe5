package config

import (
	"net/netip"
	"net/textproto"
	"sort"
	"time"
)

// Default values that more than one place needs. The field comments in
// config.go are the contract; these constants must match them.
const (
	defaultStaticCacheControl = "public, immutable, max-age=31536000"
	defaultLogLevel           = "info"
)

// defaultSecurityHeaders returns a fresh copy each call so no caller can
// change the defaults of another.
func defaultSecurityHeaders() map[string]string {
	return map[string]string{
		"X-Frame-Options":         "SAMEORIGIN",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "strict-origin-when-cross-origin",
		"Content-Security-Policy": "frame-ancestors 'self'",
	}
}

// Default returns the configuration used when a key is absent. Every call
// returns new maps, slices and pointers, so the result may be modified.
//
// Optional fields (*bool, *string) are filled in, so a dump of Default()
// shows every value; the accessor methods still treat nil as the default for
// configs built by hand.
func Default() Config {
	return Config{
		Server: Server{
			Listen:            ":8080",
			MetricsListen:     ":9090",
			AdminListen:       "127.0.0.1:9091",
			ReadHeaderTimeout: Duration(10 * time.Second),
			BodyReadTimeout:   Duration(60 * time.Second),
			IdleTimeout:       Duration(120 * time.Second),
			WriteIdleTimeout:  Duration(60 * time.Second),
			MaxHeaderBytes:    64 * KiB,
			ShutdownTimeout:   Duration(30 * time.Second),
		},
		Upstreams: []Upstream{{URL: "http://127.0.0.1:3000"}},
		Proxy: Proxy{
			MaxBodyBytes:                100 * MiB,
			MaxBodyInMemory:             8 * MiB,
			BodyMemoryBudget:            64 * MiB,
			BodyDiskBudget:              1 * GiB,
			DialTimeout:                 Duration(5 * time.Second),
			ResponseHeaderTimeout:       Duration(300 * time.Second),
			StreamResponseHeaderTimeout: Duration(60 * time.Second),
			IdleTimeout:                 Duration(300 * time.Second),
			MaxIdleConnsPerUpstream:     256,
			IdleConnTimeout:             Duration(4 * time.Second),
			Retries:                     2,
			PreserveHost:                ptr(true),
			TrustedProxies:              nil,
			Gzip: Gzip{
				Enabled: ptr(true),
				MinSize: 1024,
				ContentTypes: []string{
					"text/",
					"application/json",
					"application/javascript",
					"application/xml",
					"image/svg+xml",
				},
			},
			SecurityHeaders:    defaultSecurityHeaders(),
			StaticCacheControl: ptr(defaultStaticCacheControl),
			StaticExtensions:   []string{"js", "css", "png", "jpg", "jpeg", "gif", "ico", "svg"},
		},
		Health: Health{
			Active: ActiveHealth{
				Enabled:            ptr(true),
				Path:               "/api/v1/ping",
				Interval:           Duration(5 * time.Second),
				Timeout:            Duration(2 * time.Second),
				HealthyThreshold:   2,
				UnhealthyThreshold: 3,
			},
			Passive: PassiveHealth{
				Enabled:           ptr(true),
				MaxFails:          3,
				FailWindow:        Duration(10 * time.Second),
				Cooldown:          Duration(10 * time.Second),
				UnhealthyStatuses: nil,
			},
		},
		Log: Log{
			Level:     defaultLogLevel,
			AccessLog: ptr(true),
		},
		Admin: Admin{},
		Redis: Redis{},
		Cache: Cache{
			MaxMemory:     256 * MiB,
			MaxEntryBytes: 1 * MiB,
			VaryHeaders:   []string{"Authorization", "X-Api-Key", "Cookie"},
			Default:       CachePolicy{Enabled: ptr(false), TTL: Duration(time.Hour), Stateless: ptr(false)},
		},
		Quota:    Quota{OnRedisError: "open"},
		Metering: Metering{DefaultModel: "gpt-4o-mini"},
		Metrics:  Metrics{MaxWorkflows: 1000},
		TLS: TLSServe{
			Mode:         "off",
			Listen:       ":8443",
			RedirectHTTP: ptr(true),
			RedirectPort: 443,
			ACME: ACME{
				CA:         LetsEncryptProduction,
				Challenges: []string{"http-01", "tls-alpn-01"},
			},
			StorageDir: "/var/lib/flowgate/certs",
			MinVersion: "1.2",
		},
	}
}

// ResolvedCachePolicy is a workflow's cache policy with every field set.
type ResolvedCachePolicy struct {
	Enabled   bool
	TTL       time.Duration
	Stateless bool
}

// Policy returns the cache policy of workflow: its own keys over Default's,
// over the built-in defaults (off, 1h, not stateless).
func (c Cache) Policy(workflow string) ResolvedCachePolicy {
	p := ResolvedCachePolicy{
		Enabled:   Bool(c.Default.Enabled, false),
		TTL:       time.Hour,
		Stateless: Bool(c.Default.Stateless, false),
	}
	if c.Default.TTL > 0 {
		p.TTL = c.Default.TTL.D()
	}
	w, ok := c.Workflows[workflow]
	if !ok {
		return p
	}
	p.Enabled = Bool(w.Enabled, p.Enabled)
	p.Stateless = Bool(w.Stateless, p.Stateless)
	if w.TTL > 0 {
		p.TTL = w.TTL.D()
	}
	return p
}

// AnyEnabled reports whether some workflow may be cached.
func (c Cache) AnyEnabled() bool {
	if Bool(c.Default.Enabled, false) {
		return true
	}
	for _, w := range c.Workflows {
		if Bool(w.Enabled, false) {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

// PreserveHostOn reports whether the client's Host header goes upstream.
// Default true.
func (p Proxy) PreserveHostOn() bool { return Bool(p.PreserveHost, true) }

// On reports whether responses are compressed. Default true.
func (g Gzip) On() bool { return Bool(g.Enabled, true) }

// On reports whether upstreams are probed. Default true.
func (a ActiveHealth) On() bool { return Bool(a.Enabled, true) }

// On reports whether failures on real traffic take upstreams out. Default true.
func (p PassiveHealth) On() bool { return Bool(p.Enabled, true) }

// AccessLogOn reports whether one line per request is logged. Default true.
func (l Log) AccessLogOn() bool { return Bool(l.AccessLog, true) }

// StaticCacheControlValue is the Cache-Control for static assets; "" means
// leave the upstream's header alone. Default
// "public, immutable, max-age=31536000".
func (p Proxy) StaticCacheControlValue() string {
	if p.StaticCacheControl == nil {
		return defaultStaticCacheControl
	}
	return *p.StaticCacheControl
}

// EffectiveSecurityHeaders returns the headers to add to responses: the four
// defaults overlaid with p.SecurityHeaders, keys in canonical form
// (x-frame-options -> X-Frame-Options), and keys whose value is "" dropped.
// The result is a new map the caller may keep and modify.
//
// Should p.SecurityHeaders spell one header twice in different case (only
// possible when built in code; Parse canonicalises and Validate rejects it),
// the non-canonical spelling wins, because someone wrote it on purpose while
// the canonical one may be the inherited default.
func (p Proxy) EffectiveSecurityHeaders() map[string]string {
	out := defaultSecurityHeaders()
	keys := make([]string, 0, len(p.SecurityHeaders))
	for k := range p.SecurityHeaders {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ci, cj := isCanonicalHeader(keys[i]), isCanonicalHeader(keys[j])
		if ci != cj {
			return ci
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		out[textproto.CanonicalMIMEHeaderKey(k)] = p.SecurityHeaders[k]
	}
	for k, v := range out {
		if v == "" {
			delete(out, k)
		}
	}
	return out
}

func isCanonicalHeader(k string) bool { return textproto.CanonicalMIMEHeaderKey(k) == k }

// TrustedNets returns TrustedProxies parsed, a bare IP becoming a /32 or
// /128 and host bits masked off. Entries that do not parse are skipped;
// after Validate there are none.
func (p Proxy) TrustedNets() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range p.TrustedProxies {
		if pfx, err := parseTrusted(s); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

// parseTrusted accepts "10.0.0.0/8" or "10.1.2.3". IPv4-mapped IPv6 bare
// addresses are unmapped because Go reports IPv4 peers as plain IPv4.
func parseTrusted(s string) (netip.Prefix, error) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx.Masked(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, errZone
	}
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}
