package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// noEnv keeps tests independent of the process environment.
func noEnv(string) string { return "" }

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func parseTest(t *testing.T, src string) (Config, error) {
	t.Helper()
	return ParseWith([]byte(src), "flowgate.yaml", LoadOptions{Getenv: noEnv})
}

func mustParse(t *testing.T, src string) Config {
	t.Helper()
	c, err := parseTest(t, src)
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return c
}

// errLines returns the error's lines, one problem each.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// withoutSource drops position bookkeeping so configs compare by value.
func withoutSource(c Config) Config {
	c.src = nil
	return c
}

// validated is Default() after Validate, which fills derived values such as
// upstream names.
func validated(t *testing.T) Config {
	t.Helper()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	return c
}

func TestDefaultMatchesComments(t *testing.T) {
	c := Default()
	checks := []struct {
		key       string
		got, want any
	}{
		{"server.listen", c.Server.Listen, ":8080"},
		{"server.metrics_listen", c.Server.MetricsListen, ":9090"},
		{"server.admin_listen", c.Server.AdminListen, "127.0.0.1:9091"},
		{"server.read_header_timeout", c.Server.ReadHeaderTimeout.D(), 10 * time.Second},
		{"server.body_read_timeout", c.Server.BodyReadTimeout.D(), 60 * time.Second},
		{"server.idle_timeout", c.Server.IdleTimeout.D(), 120 * time.Second},
		{"server.write_idle_timeout", c.Server.WriteIdleTimeout.D(), 60 * time.Second},
		{"server.max_header_bytes", c.Server.MaxHeaderBytes, ByteSize(64 << 10)},
		{"server.shutdown_timeout", c.Server.ShutdownTimeout.D(), 30 * time.Second},
		{"upstreams", c.Upstreams, []Upstream{{URL: "http://127.0.0.1:3000"}}},
		{"proxy.max_body_bytes", c.Proxy.MaxBodyBytes, ByteSize(100 << 20)},
		{"proxy.max_body_in_memory", c.Proxy.MaxBodyInMemory, ByteSize(8 << 20)},
		{"proxy.body_memory_budget", c.Proxy.BodyMemoryBudget, ByteSize(64 << 20)},
		{"proxy.body_disk_budget", c.Proxy.BodyDiskBudget, ByteSize(1 << 30)},
		{"proxy.dial_timeout", c.Proxy.DialTimeout.D(), 5 * time.Second},
		{"proxy.response_header_timeout", c.Proxy.ResponseHeaderTimeout.D(), 300 * time.Second},
		{"proxy.stream_response_header_timeout", c.Proxy.StreamResponseHeaderTimeout.D(), 60 * time.Second},
		{"proxy.idle_timeout", c.Proxy.IdleTimeout.D(), 300 * time.Second},
		{"proxy.max_idle_conns_per_upstream", c.Proxy.MaxIdleConnsPerUpstream, 256},
		{"proxy.retries", c.Proxy.Retries, 2},
		{"proxy.preserve_host", c.Proxy.PreserveHostOn(), true},
		{"proxy.trusted_proxies", len(c.Proxy.TrustedProxies), 0},
		{"proxy.pass_request_from", c.Proxy.PassRequestFrom, false},
		{"proxy.gzip.enabled", c.Proxy.Gzip.On(), true},
		{"proxy.gzip.min_size", c.Proxy.Gzip.MinSize, ByteSize(1024)},
		{"proxy.gzip.content_types", c.Proxy.Gzip.ContentTypes, []string{"text/", "application/json", "application/javascript", "application/xml", "image/svg+xml"}},
		{"proxy.security_headers", c.Proxy.SecurityHeaders, map[string]string{
			"X-Frame-Options":         "SAMEORIGIN",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "strict-origin-when-cross-origin",
			"Content-Security-Policy": "frame-ancestors 'self'",
		}},
		{"proxy.static_cache_control", c.Proxy.StaticCacheControlValue(), "public, immutable, max-age=31536000"},
		{"proxy.static_extensions", c.Proxy.StaticExtensions, []string{"js", "css", "png", "jpg", "jpeg", "gif", "ico", "svg"}},
		{"health.active.enabled", c.Health.Active.On(), true},
		{"health.active.path", c.Health.Active.Path, "/api/v1/ping"},
		{"health.active.interval", c.Health.Active.Interval.D(), 5 * time.Second},
		{"health.active.timeout", c.Health.Active.Timeout.D(), 2 * time.Second},
		{"health.active.healthy_threshold", c.Health.Active.HealthyThreshold, 2},
		{"health.active.unhealthy_threshold", c.Health.Active.UnhealthyThreshold, 3},
		{"health.passive.enabled", c.Health.Passive.On(), true},
		{"health.passive.max_fails", c.Health.Passive.MaxFails, 3},
		{"health.passive.fail_window", c.Health.Passive.FailWindow.D(), 10 * time.Second},
		{"health.passive.cooldown", c.Health.Passive.Cooldown.D(), 10 * time.Second},
		{"health.passive.unhealthy_statuses", len(c.Health.Passive.UnhealthyStatuses), 0},
		{"log.level", c.Log.Level, "info"},
		{"log.access_log", c.Log.AccessLogOn(), true},
		{"admin", c.Admin, Admin{}},
		{"redis", c.Redis, Redis{}},
		{"cache.max_memory", c.Cache.MaxMemory, ByteSize(256 << 20)},
		{"cache.max_entry_bytes", c.Cache.MaxEntryBytes, ByteSize(1 << 20)},
		{"cache.vary_headers", c.Cache.VaryHeaders, []string{"Authorization", "X-Api-Key", "Cookie"}},
		{"cache.default", c.Cache.Policy("any"), ResolvedCachePolicy{Enabled: false, TTL: time.Hour, Stateless: false}},
		{"cache.workflows", len(c.Cache.Workflows), 0},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.key, tc.got, tc.want)
		}
	}
}

func TestDefaultReturnsFreshCopies(t *testing.T) {
	a := Default()
	a.Upstreams[0].URL = "http://changed"
	a.Proxy.SecurityHeaders["X-Frame-Options"] = "DENY"
	*a.Proxy.PreserveHost = false
	a.Proxy.StaticExtensions[0] = "changed"
	b := Default()
	if b.Upstreams[0].URL != "http://127.0.0.1:3000" || b.Proxy.SecurityHeaders["X-Frame-Options"] != "SAMEORIGIN" ||
		!b.Proxy.PreserveHostOn() || b.Proxy.StaticExtensions[0] != "js" {
		t.Fatal("changing one Default() changed another")
	}
}

func TestAccessorsTreatNilAsDefault(t *testing.T) {
	var c Config
	if !c.Proxy.PreserveHostOn() || !c.Proxy.Gzip.On() || !c.Health.Active.On() || !c.Health.Passive.On() || !c.Log.AccessLogOn() {
		t.Error("nil *bool must read as the default true")
	}
	if got := c.Proxy.StaticCacheControlValue(); got != "public, immutable, max-age=31536000" {
		t.Errorf("StaticCacheControlValue() = %q", got)
	}
	if got := c.Proxy.EffectiveSecurityHeaders(); len(got) != 4 {
		t.Errorf("EffectiveSecurityHeaders() = %v, want the 4 defaults", got)
	}
}

func TestEmptyFileGivesDefaults(t *testing.T) {
	want := withoutSource(validated(t))
	for name, src := range map[string]string{
		"empty":          "",
		"comments only":  "# nothing here\n\n",
		"null document":  "~\n",
		"document start": "---\n",
		"empty sections": "server:\nproxy:\n  gzip:\nhealth:\n",
		"null leaves":    "server:\n  listen:\n  idle_timeout: ~\nproxy:\n  preserve_host: null\n  static_extensions:\n",
	} {
		t.Run(name, func(t *testing.T) {
			got := withoutSource(mustParse(t, src))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadEmptyPathGivesDefaults(t *testing.T) {
	c, err := LoadWith("", LoadOptions{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(withoutSource(c), withoutSource(validated(t))) {
		t.Error("LoadWith(\"\") differs from Default()")
	}
}

func TestOverrides(t *testing.T) {
	c := mustParse(t, `
server:
  listen: "0.0.0.0:80"
  metrics_listen: ""      # disables metrics
  idle_timeout: 1h30m
  max_header_bytes: 64KiB
upstreams:
  - url: http://flowise-1:3000
  - url: https://flowise-2.internal
    name: second
proxy:
  max_body_bytes: 10MB
  preserve_host: false
  trusted_proxies: [10.0.0.0/8, 192.168.1.7]
  static_cache_control: ""
  static_extensions: [.JS, woff2]
  gzip:
    enabled: false
  security_headers:
    x-frame-options: DENY
    Content-Security-Policy: ""
    Strict-Transport-Security: max-age=63072000
health:
  active:
    enabled: no
  passive:
    unhealthy_statuses: [502, 503]
log:
  level: debug
  access_log: false
redis:
  addr: redis:6379
  db: 2
`)
	if c.Server.Listen != "0.0.0.0:80" || c.Server.MetricsListen != "" {
		t.Errorf("server listeners = %q, %q", c.Server.Listen, c.Server.MetricsListen)
	}
	if c.Server.AdminListen != "127.0.0.1:9091" {
		t.Errorf("absent key lost its default: admin_listen = %q", c.Server.AdminListen)
	}
	if c.Server.IdleTimeout.D() != 90*time.Minute || c.Server.MaxHeaderBytes != 64*1024 {
		t.Errorf("idle_timeout %v, max_header_bytes %d", c.Server.IdleTimeout, c.Server.MaxHeaderBytes)
	}
	if c.Server.ReadHeaderTimeout.D() != 10*time.Second {
		t.Errorf("absent key lost its default: read_header_timeout = %v", c.Server.ReadHeaderTimeout)
	}
	wantUp := []Upstream{{URL: "http://flowise-1:3000", Name: "flowise-1:3000"}, {URL: "https://flowise-2.internal", Name: "second"}}
	if !reflect.DeepEqual(c.Upstreams, wantUp) {
		t.Errorf("upstreams = %+v, want %+v (the list replaces the default)", c.Upstreams, wantUp)
	}
	if c.Proxy.MaxBodyBytes != 10_000_000 || c.Proxy.PreserveHostOn() || c.Proxy.Gzip.On() {
		t.Errorf("proxy = %+v", c.Proxy)
	}
	if c.Proxy.Gzip.MinSize != 1024 || len(c.Proxy.Gzip.ContentTypes) != 5 {
		t.Errorf("gzip siblings lost their defaults: %+v", c.Proxy.Gzip)
	}
	if got := c.Proxy.StaticCacheControlValue(); got != "" {
		t.Errorf("static_cache_control = %q, want \"\" (disabled)", got)
	}
	if !reflect.DeepEqual(c.Proxy.StaticExtensions, []string{"js", "woff2"}) {
		t.Errorf("static_extensions = %q, want replaced, dot stripped, lower-cased", c.Proxy.StaticExtensions)
	}
	wantNets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
	if got := c.Proxy.TrustedNets(); !reflect.DeepEqual(got, wantNets) {
		t.Errorf("TrustedNets() = %v, want %v", got, wantNets)
	}
	wantHdr := map[string]string{
		"X-Frame-Options":           "DENY",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "strict-origin-when-cross-origin",
		"Strict-Transport-Security": "max-age=63072000",
	}
	if got := c.Proxy.EffectiveSecurityHeaders(); !reflect.DeepEqual(got, wantHdr) {
		t.Errorf("EffectiveSecurityHeaders() = %v, want %v", got, wantHdr)
	}
	if c.Health.Active.On() || !c.Health.Passive.On() || !reflect.DeepEqual(c.Health.Passive.UnhealthyStatuses, []int{502, 503}) {
		t.Errorf("health = %+v", c.Health)
	}
	if c.Log.Level != "debug" || c.Log.AccessLogOn() {
		t.Errorf("log = %+v", c.Log)
	}
	if c.Redis.Addr != "redis:6379" || c.Redis.DB != 2 {
		t.Errorf("redis = %+v", c.Redis)
	}
}

func TestEmptyListReplacesDefault(t *testing.T) {
	c := mustParse(t, "proxy:\n  static_extensions: []\n  gzip:\n    content_types: []\n")
	if len(c.Proxy.StaticExtensions) != 0 || len(c.Proxy.Gzip.ContentTypes) != 0 {
		t.Errorf("[] must empty the list: %q %q", c.Proxy.StaticExtensions, c.Proxy.Gzip.ContentTypes)
	}
}

func TestMergeKeys(t *testing.T) {
	c := mustParse(t, `
upstreams:
  - &base
    url: http://a:3000
  - <<: *base
    name: b
`)
	want := []Upstream{{URL: "http://a:3000", Name: "a:3000"}, {URL: "http://a:3000", Name: "b"}}
	if !reflect.DeepEqual(c.Upstreams, want) {
		t.Errorf("upstreams = %+v, want %+v", c.Upstreams, want)
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"typo in section", "proxy:\n  retries: 1\n  max_body_size: 1MiB\n",
			"flowgate.yaml:3: proxy.max_body_size: unknown key; did you mean proxy.max_body_bytes?"},
		{"plural", "upstream:\n  - url: http://a:1\n",
			"flowgate.yaml:1: upstream: unknown key; did you mean upstreams?"},
		{"other spelling", "server:\n  readHeaderTimeout: 5s\n",
			"flowgate.yaml:2: server.readHeaderTimeout: unknown key; did you mean server.read_header_timeout?"},
		{"wrong section", "listen: :80\n",
			"flowgate.yaml:1: listen: unknown key; did you mean server.listen or tls.listen?"},
		{"in list item", "upstreams:\n  - url: http://a:1\n  - url: http://b:1\n    nmae: b\n",
			"flowgate.yaml:4: upstreams[1].nmae: unknown key; did you mean upstreams[1].name?"},
		{"deep", "health:\n  active:\n    enabled: true\n    pth: /x\n",
			"flowgate.yaml:4: health.active.pth: unknown key; did you mean health.active.path?"},
		{"cut short", "proxy:\n  dial_time: 5s\n",
			"flowgate.yaml:2: proxy.dial_time: unknown key; did you mean proxy.dial_timeout?"},
		{"top-level key in a section", "proxy:\n  upstreams: []\n",
			"flowgate.yaml:2: proxy.upstreams: unknown key; did you mean upstreams?"},
		{"no obvious match", "proxy:\n  read_timeout: 5s\n",
			"flowgate.yaml:2: proxy.read_timeout: unknown key"},
		{"leaf of another section is no match", "proxy:\n  timeout: 5s\n",
			"flowgate.yaml:2: proxy.timeout: unknown key"},
		{"no match at all", "frobnicate: 1\n",
			"flowgate.yaml:1: frobnicate: unknown key"},
		{"duplicate key", "log:\n  level: info\n  level: debug\n",
			"flowgate.yaml:3: log.level: given twice (first at line 2)"},
		{"second document", "log:\n  level: info\n---\nlog:\n  level: debug\n",
			`flowgate.yaml:3: a config file holds one YAML document; remove the second "---"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTest(t, tc.src)
			if got := errLines(err); len(got) != 1 || got[0] != tc.want {
				t.Errorf("error:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestTypeErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"bare number duration", "proxy:\n  dial_timeout: 30\n",
			`flowgate.yaml:2: proxy.dial_timeout: duration 30 has no unit; write it like "30s" (units: ns, us, ms, s, m, h)`},
		{"quoted bare number duration", "proxy:\n  dial_timeout: \"5\"\n",
			`flowgate.yaml:2: proxy.dial_timeout: duration 5 has no unit; write it like "5s" (units: ns, us, ms, s, m, h)`},
		{"negative duration", "health:\n  active:\n    interval: -5s\n",
			"flowgate.yaml:3: health.active.interval: duration -5s must not be negative"},
		{"garbage duration", "server:\n  idle_timeout: 2 days\n",
			`flowgate.yaml:2: server.idle_timeout: invalid duration "2 days"; write it like "30s", "5m", "1h30m" or "30d" (units: ns, us, ms, s, m, h, d)`},
		{"duration as list", "server:\n  idle_timeout: [1s]\n",
			`flowgate.yaml:2: server.idle_timeout: must be a duration like "30s", not a list`},
		{"bad size unit", "proxy:\n  max_body_bytes: 10XB\n",
			`flowgate.yaml:2: proxy.max_body_bytes: invalid size "10XB": unknown unit "XB"; use B, KB, MB, GB, KiB, MiB or GiB`},
		{"negative size", "proxy:\n  gzip:\n    min_size: -1\n",
			"flowgate.yaml:3: proxy.gzip.min_size: size -1 must not be negative"},
		{"fractional bytes", "proxy:\n  max_body_bytes: 1.5\n",
			"flowgate.yaml:2: proxy.max_body_bytes: size 1.5 is not a whole number of bytes"},
		{"garbage size", "server:\n  max_header_bytes: lots\n",
			`flowgate.yaml:2: server.max_header_bytes: invalid size "lots"; write bytes (1048576) or a number with a unit: B, KB, MB, GB, KiB, MiB, GiB`},
		{"float int", "proxy:\n  retries: 2.5\n",
			`flowgate.yaml:2: proxy.retries: must be a whole number, not "2.5"`},
		{"quoted int", "proxy:\n  retries: \"2\"\n",
			`flowgate.yaml:2: proxy.retries: must be a whole number, not "2"`},
		{"bad bool", "proxy:\n  preserve_host: maybe\n",
			`flowgate.yaml:2: proxy.preserve_host: must be true or false, not "maybe"`},
		{"scalar for list", "proxy:\n  trusted_proxies: 10.0.0.0/8\n",
			`flowgate.yaml:2: proxy.trusted_proxies: must be a list ("- item" lines or [a, b]), not a value`},
		{"scalar for section", "proxy: fast\n",
			"flowgate.yaml:1: proxy: this section must be a mapping of key: value lines, not a value"},
		{"list for map", "proxy:\n  security_headers: [a]\n",
			"flowgate.yaml:2: proxy.security_headers: must be a mapping of name: value lines, not a list"},
		{"mapping for string", "log:\n  level: {a: b}\n",
			"flowgate.yaml:2: log.level: must be a single value, not a mapping"},
		{"int out of range", "redis:\n  db: 99999999999999999999\n",
			`flowgate.yaml:2: redis.db: must be a whole number, not "99999999999999999999"`},
		{"list at top", "- a\n- b\n",
			"flowgate.yaml:1: the top level must be a mapping of key: value lines, not a list"},
		{"syntax", "server:\n  listen: :80\n   bad: x\n",
			"flowgate.yaml:3: invalid YAML: mapping values are not allowed in this context"},
		{"tab indent", "server:\n\tlisten: :80\n",
			"flowgate.yaml:2: invalid YAML: found character that cannot start any token (YAML indents with spaces, not tabs)"},
		{"list item not a mapping, no follow-on error", "upstreams:\n  - http://a:3000\n",
			"flowgate.yaml:2: upstreams[0]: each item must be a mapping of key: value lines, not a value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTest(t, tc.src)
			if got := errLines(err); len(got) != 1 || got[0] != tc.want {
				t.Errorf("error:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestValidationRules(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"no upstreams", "upstreams: []\n",
			"flowgate.yaml:1: upstreams: at least one upstream is required"},
		{"upstream url missing", "upstreams:\n  - name: a\n",
			`flowgate.yaml:2: upstreams[0].url: is required, e.g. "http://flowise:3000"`},
		{"upstream without scheme", "upstreams:\n  - url: flowise:3000\n",
			`flowgate.yaml:2: upstreams[0].url: "flowise:3000" must start with http:// or https://, e.g. "http://flowise:3000"`},
		{"upstream bad scheme", "upstreams:\n  - url: ftp://flowise\n",
			`flowgate.yaml:2: upstreams[0].url: "ftp://flowise": scheme must be http or https, not "ftp"`},
		{"upstream no host", "upstreams:\n  - url: http:///api\n",
			`flowgate.yaml:2: upstreams[0].url: "http:///api" has no host`},
		{"upstream query", "upstreams:\n  - url: http://a:1/?x=1\n",
			`flowgate.yaml:2: upstreams[0].url: "http://a:1/?x=1" must not have a query (?...); the client's query is forwarded as is`},
		{"upstream fragment", "upstreams:\n  - url: http://a:1/#top\n",
			`flowgate.yaml:2: upstreams[0].url: "http://a:1/#top" must not have a fragment (#...)`},
		{"upstream unparsable", "upstreams:\n  - url: http://a b:1\n",
			`flowgate.yaml:2: upstreams[0].url: "http://a b:1" is not a valid URL: invalid character " " in host name`},
		{"upstream port range", "upstreams:\n  - url: http://a:70000\n",
			`flowgate.yaml:2: upstreams[0].url: "http://a:70000": port must be a number from 1 to 65535`},
		{"duplicate derived names", "upstreams:\n  - url: http://a:1\n  - url: http://a:1/x\n",
			`flowgate.yaml:3: upstreams[1].name: "a:1" is already the name of upstreams[0]; names label metrics and logs, so each needs its own (a missing name defaults to the URL's host:port)`},
		{"duplicate explicit names", "upstreams:\n  - url: http://a:1\n    name: x\n  - url: http://b:1\n    name: x\n",
			`flowgate.yaml:5: upstreams[1].name: "x" is already the name of upstreams[0]; names label metrics and logs, so each needs its own (a missing name defaults to the URL's host:port)`},
		{"dns and url", "upstreams:\n  - url: http://a:1\n    dns: flowise\n",
			`flowgate.yaml:2: upstreams[0]: set url or dns, not both`},
		{"dns without port", "upstreams:\n  - dns: flowise-headless.ns.svc.cluster.local\n",
			`flowgate.yaml:2: upstreams[0].port: is required with dns: the replicas' port, from 1 to 65535`},
		{"dns with a scheme", "upstreams:\n  - dns: http://flowise\n    port: 3000\n",
			`flowgate.yaml:2: upstreams[0].dns: "http://flowise" must be a host name, e.g. flowise-headless.flowise.svc.cluster.local (no scheme, port or path)`},
		{"dns bad scheme", "upstreams:\n  - dns: flowise\n    port: 3000\n    scheme: ftp\n",
			`flowgate.yaml:4: upstreams[0].scheme: must be http or https, not "ftp"`},
		{"dns refresh too short", "upstreams:\n  - dns: flowise\n    port: 3000\n    refresh: 100ms\n",
			`flowgate.yaml:4: upstreams[0].refresh: must be at least 1s`},
		{"port with url", "upstreams:\n  - url: http://a:1\n    port: 3000\n",
			`flowgate.yaml:2: upstreams[0]: port, scheme and refresh go with dns; a url carries its own scheme and port`},
		{"listen not host:port", "server:\n  listen: \"8080\"\n",
			`flowgate.yaml:2: server.listen: "8080" is not host:port; write e.g. ":8080" or "127.0.0.1:8080"`},
		{"listen empty", "server:\n  listen: \"\"\n",
			`flowgate.yaml:2: server.listen: is required, e.g. ":8080"`},
		{"listen named port", "server:\n  admin_listen: localhost:http\n",
			`flowgate.yaml:2: server.admin_listen: "localhost:http": port must be a number from 0 to 65535`},
		{"listeners clash", "server:\n  metrics_listen: 127.0.0.1:8080\n",
			`flowgate.yaml:2: server.metrics_listen: "127.0.0.1:8080" clashes with server.listen ":8080"; each listener needs its own port`},
		{"trusted proxy garbage", "proxy:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - office\n",
			`flowgate.yaml:4: proxy.trusted_proxies[1]: "office" is not a CIDR (10.0.0.0/8) or IP address (10.0.0.1)`},
		{"trusted proxy bad mask", "proxy:\n  trusted_proxies: [10.0.0.0/33]\n",
			`flowgate.yaml:2: proxy.trusted_proxies[0]: "10.0.0.0/33" is not a CIDR (10.0.0.0/8) or IP address (10.0.0.1)`},
		{"trusted proxy zone", "proxy:\n  trusted_proxies: [\"fe80::1%eth0\"]\n",
			`flowgate.yaml:2: proxy.trusted_proxies[0]: "fe80::1%eth0": IPv6 zones (%eth0) are not allowed`},
		{"zero timeout", "proxy:\n  dial_timeout: 0s\n",
			"flowgate.yaml:2: proxy.dial_timeout: must be greater than 0s"},
		{"zero server timeout", "server:\n  shutdown_timeout: 0s\n",
			"flowgate.yaml:2: server.shutdown_timeout: must be greater than 0s"},
		{"zero health timeout", "health:\n  passive:\n    cooldown: 0ms\n",
			"flowgate.yaml:3: health.passive.cooldown: must be greater than 0s"},
		{"threshold", "health:\n  active:\n    healthy_threshold: 0\n",
			"flowgate.yaml:3: health.active.healthy_threshold: must be 1 or more, not 0"},
		{"unhealthy threshold", "health:\n  active:\n    unhealthy_threshold: -1\n",
			"flowgate.yaml:3: health.active.unhealthy_threshold: must be 1 or more, not -1"},
		{"max fails", "health:\n  passive:\n    max_fails: 0\n",
			"flowgate.yaml:3: health.passive.max_fails: must be 1 or more, not 0"},
		{"retries", "proxy:\n  retries: -1\n",
			"flowgate.yaml:2: proxy.retries: must be 0 or more, not -1"},
		{"max body", "proxy:\n  max_body_bytes: 0\n",
			"flowgate.yaml:2: proxy.max_body_bytes: must be greater than 0"},
		{"max header", "server:\n  max_header_bytes: 0B\n",
			"flowgate.yaml:2: server.max_header_bytes: must be greater than 0"},
		{"idle conns", "proxy:\n  max_idle_conns_per_upstream: 0\n",
			"flowgate.yaml:2: proxy.max_idle_conns_per_upstream: must be 1 or more, not 0"},
		{"health path", "health:\n  active:\n    path: api/v1/ping\n",
			`flowgate.yaml:3: health.active.path: must start with "/", e.g. "/api/v1/ping"`},
		{"log level", "log:\n  level: verbose\n",
			`flowgate.yaml:2: log.level: must be debug, info, warn or error, not "verbose"`},
		{"unhealthy status", "health:\n  passive:\n    unhealthy_statuses: [502, 600]\n",
			"flowgate.yaml:3: health.passive.unhealthy_statuses[1]: 600 is not an HTTP status (100-599)"},
		{"static extension", "proxy:\n  static_extensions:\n    - js\n    - \".\"\n",
			"flowgate.yaml:4: proxy.static_extensions[1]: must not be empty"},
		{"static extension path", "proxy:\n  static_extensions: [a/b]\n",
			`flowgate.yaml:2: proxy.static_extensions[0]: "a/b" is not a file extension like "js"`},
		{"gzip content type", "proxy:\n  gzip:\n    content_types: [\"\"]\n",
			"flowgate.yaml:3: proxy.gzip.content_types[0]: must not be empty"},
		{"header name", "proxy:\n  security_headers:\n    \"Bad Header\": x\n",
			`flowgate.yaml:3: proxy.security_headers.Bad Header: "Bad Header" is not a valid header name`},
		{"header value", "proxy:\n  security_headers:\n    X-A: \"a\\r\\nb\"\n",
			"flowgate.yaml:3: proxy.security_headers.X-A: value must not contain line breaks"},
		{"header twice", "proxy:\n  security_headers:\n    X-A: a\n    x-a: b\n",
			`flowgate.yaml:4: proxy.security_headers.x-a: same header as "X-A" (header names ignore case)`},
		{"redis addr", "redis:\n  addr: redis\n",
			`flowgate.yaml:2: redis.addr: "redis" is not host:port; write e.g. "redis:6379"`},
		{"redis db", "redis:\n  db: -1\n",
			"flowgate.yaml:2: redis.db: must be 0 or more, not -1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTest(t, tc.src)
			if got := errLines(err); len(got) != 1 || got[0] != tc.want {
				t.Errorf("error:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestAllowedEdgeCases(t *testing.T) {
	for name, src := range map[string]string{
		"stream timeout above response timeout": "proxy:\n  stream_response_header_timeout: 10m\n  response_header_timeout: 1m\n",
		"retries zero":                          "proxy:\n  retries: 0\n",
		"gzip min size zero":                    "proxy:\n  gzip:\n    min_size: 0\n",
		"admin disabled":                        "server:\n  admin_listen: \"\"\n",
		"port zero twice":                       "server:\n  listen: \":0\"\n  metrics_listen: \":0\"\n",
		"different hosts same port":             "server:\n  listen: 10.0.0.1:8080\n  metrics_listen: 127.0.0.1:8080\n",
		"ipv6 listen":                           "server:\n  listen: \"[::1]:8080\"\n",
		"upstream with base path":               "upstreams:\n  - url: HTTPS://Flowise.example.com/base/\n",
		"ipv6 trusted":                          "proxy:\n  trusted_proxies: [\"fd00::/8\", \"::1\"]\n",
		"header null removes":                   "proxy:\n  security_headers:\n    X-Frame-Options:\n",
	} {
		t.Run(name, func(t *testing.T) { mustParse(t, src) })
	}
}

func TestMultipleErrorsReportedTogether(t *testing.T) {
	_, err := parseTest(t, `server:
  listen: nope
upstreams:
  - url: ftp://a
  - url: http://b:1
    wieght: 3
proxy:
  max_body_bytes: 0
  dial_timeout: 5
log:
  level: loud
`)
	want := []string{
		`flowgate.yaml:2: server.listen: "nope" is not host:port; write e.g. ":8080" or "127.0.0.1:8080"`,
		`flowgate.yaml:4: upstreams[0].url: "ftp://a": scheme must be http or https, not "ftp"`,
		`flowgate.yaml:6: upstreams[1].wieght: unknown key`,
		`flowgate.yaml:8: proxy.max_body_bytes: must be greater than 0`,
		`flowgate.yaml:9: proxy.dial_timeout: duration 5 has no unit; write it like "5s" (units: ns, us, ms, s, m, h)`,
		`flowgate.yaml:11: log.level: must be debug, info, warn or error, not "loud"`,
	}
	if got := errLines(err); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) != len(want) {
		t.Fatalf("errors.As(ErrorList) = %v", list)
	}
	if e := list[3]; e.File != "flowgate.yaml" || e.Line != 8 || e.Key != "proxy.max_body_bytes" || e.Msg != "must be greater than 0" {
		t.Errorf("structured error = %+v", e)
	}
	var one Error
	if !errors.As(err, &one) || one.Line != 2 {
		t.Errorf("errors.As(Error) = %+v", one)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := Default()
	c.Upstreams = nil
	c.Proxy.MaxBodyBytes = 0
	c.Proxy.SecurityHeaders["x-frame-options"] = "DENY"
	err := c.Validate()
	want := []string{
		"upstreams: at least one upstream is required",
		"proxy.max_body_bytes: must be greater than 0",
		`proxy.security_headers.x-frame-options: same header as "X-Frame-Options" (header names ignore case)`,
	}
	if got := errLines(err); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
	// Even so, the lower-case spelling is the one that takes effect.
	if got := c.Proxy.EffectiveSecurityHeaders()["X-Frame-Options"]; got != "DENY" {
		t.Errorf("X-Frame-Options = %q, want DENY", got)
	}
}

// A dns upstream gets its defaults and its name from validation.
func TestValidateFillsDNSDefaults(t *testing.T) {
	c := Default()
	c.Upstreams = []Upstream{{DNS: "flowise-headless.ns.svc.cluster.local", Port: 3000}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams[0]
	if u.Name != "flowise-headless.ns.svc.cluster.local" || u.Scheme != "http" || u.Refresh.D() != 10*time.Second || !u.Discovered() {
		t.Fatalf("%+v", u)
	}
}

func TestValidateFillsUpstreamNames(t *testing.T) {
	c := Default()
	c.Upstreams = []Upstream{{URL: "http://flowise:3000"}, {URL: "http://[::1]:3000", Name: "local"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Upstreams[0].Name != "flowise:3000" || c.Upstreams[1].Name != "local" {
		t.Errorf("names = %q, %q", c.Upstreams[0].Name, c.Upstreams[1].Name)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "admin_token", "from-file\n")
	writeFile(t, dir, "redis_pw", "pw-file \r\n\t")
	const (
		inline   = "admin:\n  token: from-yaml\nredis:\n  addr: r:6379\n  password: pw-yaml\n"
		withFile = "admin:\n  token: from-yaml\n  token_file: admin_token\nredis:\n  addr: r:6379\n  password: pw-yaml\n  password_file: redis_pw\n"
	)
	env := map[string]string{EnvAdminToken: "from-env", EnvRedisPassword: "pw-env"}
	tests := []struct {
		name, yaml      string
		env             map[string]string
		token, password string
	}{
		{"inline only", inline, nil, "from-yaml", "pw-yaml"},
		{"file beats inline", withFile, nil, "from-file", "pw-file"},
		{"env beats file", withFile, env, "from-env", "pw-env"},
		{"env beats inline", inline, env, "from-env", "pw-env"},
		{"nothing set", "", nil, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Relative secret paths resolve against the config's directory,
			// not the working directory.
			path := writeFile(t, dir, "flowgate.yaml", tc.yaml)
			c, err := LoadWith(path, LoadOptions{Getenv: envMap(tc.env)})
			if err != nil {
				t.Fatal(err)
			}
			if c.Admin.Token != tc.token || c.Redis.Password != tc.password {
				t.Errorf("token %q, password %q; want %q, %q", c.Admin.Token, c.Redis.Password, tc.token, tc.password)
			}
		})
	}
}

func TestSecretFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, dir, "empty", "\n")
	missing := filepath.Join(dir, "missing")
	src := "admin:\n  token_file: " + missing + "\nredis:\n  addr: r:6379\n  password_file: " + empty + "\n"

	_, err := parseTest(t, src)
	want := []string{
		"flowgate.yaml:2: admin.token_file: cannot read secret: open " + missing + ": no such file or directory",
		"flowgate.yaml:5: redis.password_file: secret file " + empty + " is empty",
	}
	if got := errLines(err); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}

	// With the environment variable set the file is not needed.
	env := envMap(map[string]string{EnvAdminToken: "t", EnvRedisPassword: "p"})
	if _, err := ParseWith([]byte(src), "flowgate.yaml", LoadOptions{Getenv: env}); err != nil {
		t.Errorf("env set, file not needed: %v", err)
	}
}

func TestCommandLineOverrides(t *testing.T) {
	s := func(v string) *string { return &v }
	src := "server:\n  listen: \":80\"\n  metrics_listen: \":81\"\nupstreams:\n  - url: ftp://broken\n"

	c, err := ParseWith([]byte(src), "flowgate.yaml", LoadOptions{Getenv: noEnv, Overrides: Overrides{
		Listen:        s(":8000"),
		MetricsListen: s(""),
		Upstreams:     []string{"http://a:3000", "http://b:3000"},
	}})
	if err != nil {
		t.Fatalf("a flag replacing a bad file value must win: %v", err)
	}
	if c.Server.Listen != ":8000" || c.Server.MetricsListen != "" || c.Server.AdminListen != "127.0.0.1:9091" {
		t.Errorf("server = %+v", c.Server)
	}
	want := []Upstream{{URL: "http://a:3000", Name: "a:3000"}, {URL: "http://b:3000", Name: "b:3000"}}
	if !reflect.DeepEqual(c.Upstreams, want) {
		t.Errorf("upstreams = %+v", c.Upstreams)
	}

	_, err = ParseWith([]byte(src), "flowgate.yaml", LoadOptions{Getenv: noEnv, Overrides: Overrides{
		AdminListen: s("nope"),
		Upstreams:   []string{"flowise:3000"},
	}})
	wantErr := []string{
		`flag -admin-listen: server.admin_listen: "nope" is not host:port; write e.g. ":8080" or "127.0.0.1:8080"`,
		`flag -upstream: upstreams[0].url: "flowise:3000" must start with http:// or https://, e.g. "http://flowise:3000"`,
	}
	if got := errLines(err); !reflect.DeepEqual(got, wantErr) {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(wantErr, "\n"))
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"30s": 30 * time.Second, "5m": 5 * time.Minute, "1h30m": 90 * time.Minute,
		"250ms": 250 * time.Millisecond, "0s": 0, " 2s ": 2 * time.Second,
		"1d": 24 * time.Hour, "30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour,
	}
	for in, want := range good {
		got, err := ParseDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":             "empty duration",
		"30":           "has no unit",
		"1.5":          "has no unit",
		"0":            "has no unit",
		"-5":           "must not be negative",
		"-1m":          "must not be negative",
		"5 s":          "invalid duration",
		"1.5d":         "invalid duration",
		"1dx":          "invalid duration",
		"d":            "invalid duration",
		"99999999999d": "invalid duration",
		"fast":         "invalid duration",
	}
	for in, want := range bad {
		if _, err := ParseDuration(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDuration(%q) error = %v, want it to contain %q", in, err, want)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	good := map[string]ByteSize{
		"0": 0, "1048576": 1 << 20, "512B": 512, "1KB": 1000, "1kb": 1000, "1KiB": 1024,
		"1kib": 1024, "100MiB": 100 << 20, "100MB": 100_000_000, "2GiB": 2 << 30, "3GB": 3_000_000_000,
		"1.5KiB": 1536, "64 KiB": 64 << 10, "+7": 7,
	}
	for in, want := range good {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":              "invalid size",
		"-1":            "must not be negative",
		"-1KiB":         "must not be negative",
		"10XB":          "unknown unit",
		"1TB":           "unknown unit",
		"MiB":           "invalid size",
		"1.2.3":         "invalid size",
		"0.5B":          "not a whole number",
		"1e6":           "unknown unit",
		"9999999999GiB": "too large",
	}
	for in, want := range bad {
		if _, err := ParseByteSize(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseByteSize(%q) error = %v, want it to contain %q", in, err, want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	for b, want := range map[ByteSize]string{0: "0B", 1023: "1023B", 1024: "1KiB", 1000: "1KB", 100 << 20: "100MiB", 1536: "1536B", 3 << 30: "3GiB"} {
		if got := b.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(b), got, want)
		}
	}
}

func TestYAMLIntegerSizes(t *testing.T) {
	c := mustParse(t, "proxy:\n  max_body_bytes: 0x100000\n  gzip:\n    min_size: 512\n")
	if c.Proxy.MaxBodyBytes != 1<<20 || c.Proxy.Gzip.MinSize != 512 {
		t.Errorf("max_body_bytes %d, min_size %d", c.Proxy.MaxBodyBytes, c.Proxy.Gzip.MinSize)
	}
}

// TestMarshalRoundTrip keeps Default, MarshalText and Parse consistent: a
// dumped config must load back to itself.
func TestMarshalRoundTrip(t *testing.T) {
	want := withoutSource(validated(t))
	out, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got := withoutSource(mustParse(t, string(out)))
	// nil lists marshal as [], which loads as an empty list: same meaning.
	if len(got.Proxy.TrustedProxies) == 0 && len(got.Health.Passive.UnhealthyStatuses) == 0 {
		got.Proxy.TrustedProxies, got.Health.Passive.UnhealthyStatuses = nil, nil
	}
	if len(got.Cache.Workflows) == 0 {
		got.Cache.Workflows = nil
	}
	if len(got.Quota.Workflows) == 0 && len(got.Quota.Default.Budgets) == 0 && len(got.Metering.Models) == 0 {
		got.Quota.Workflows, got.Quota.Default.Budgets, got.Metering.Models = nil, nil, nil
	}
	if len(got.TLS.ACME.Domains) == 0 {
		got.TLS.ACME.Domains = nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip through\n%s\ngot  %+v\nwant %+v", out, got, want)
	}
}

func TestAliasExpansionIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 {x: 1}\n")
	prev := "a0"
	for i := 1; i < 12; i++ {
		cur := "a" + string(rune('a'+i))
		b.WriteString("x" + cur + ": &" + cur + "\n  <<: [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]\n")
		prev = cur
	}
	b.WriteString("proxy:\n  <<: *" + prev + "\n")
	done := make(chan error, 1)
	go func() { _, err := parseTest(t, b.String()); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "flowgate.yaml:1: proxy.x: unknown key\n") {
			t.Errorf("error = %.300v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alias expansion not bounded")
	}
}

func TestHugeDocumentIsRefused(t *testing.T) {
	src := "proxy:\n  static_extensions: [" + strings.Repeat("js, ", maxNodes) + "js]\n"
	_, err := parseTest(t, src)
	want := "flowgate.yaml:2: document too large or too deeply aliased (more than 100000 nodes)"
	if got := errLines(err); len(got) != 1 || got[0] != want {
		t.Errorf("error = %.300v", err)
	}
}

// TestExampleFile keeps deploy/flowgate.example.yaml loadable, so the
// example cannot drift from the schema.
func TestExampleFile(t *testing.T) {
	path := filepath.Join("..", "deploy", "flowgate.example.yaml")
	// The example points token_file at a Docker secret that does not exist
	// here; the environment variable stands in for it.
	env := envMap(map[string]string{EnvAdminToken: "test-token", EnvRedisPassword: "test-password"})
	c, err := LoadWith(path, LoadOptions{Getenv: env})
	if err != nil {
		t.Fatalf("example does not load:\n%v", err)
	}
	if len(c.Upstreams) != 2 {
		t.Errorf("example has %d upstreams, want 2", len(c.Upstreams))
	}
	if len(c.Proxy.TrustedNets()) == 0 {
		t.Error("example has no trusted proxy")
	}
	if c.Admin.TokenFile == "" || c.Admin.Token != "test-token" {
		t.Errorf("example admin = %+v, want a token_file", c.Admin)
	}

	// Every section of the schema appears in the example.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	for name := range yamlFields(reflect.TypeFor[Config]()) {
		if _, ok := top[name]; !ok {
			t.Errorf("example lacks the %s section", name)
		}
	}
}

// A workflow's cache policy inherits what it does not set from default.
func TestCachePolicyInherits(t *testing.T) {
	c := mustParse(t, `
cache:
  default: {enabled: true, ttl: 30m}
  workflows:
    a: {ttl: 5m}
    b: {enabled: false}
    c: {stateless: true}
`)
	for _, tc := range []struct {
		id   string
		want ResolvedCachePolicy
	}{
		{"a", ResolvedCachePolicy{Enabled: true, TTL: 5 * time.Minute}},
		{"b", ResolvedCachePolicy{Enabled: false, TTL: 30 * time.Minute}},
		{"c", ResolvedCachePolicy{Enabled: true, TTL: 30 * time.Minute, Stateless: true}},
		{"unlisted", ResolvedCachePolicy{Enabled: true, TTL: 30 * time.Minute}},
	} {
		if got := c.Cache.Policy(tc.id); got != tc.want {
			t.Errorf("Policy(%q) = %+v, want %+v", tc.id, got, tc.want)
		}
	}
	if !c.Cache.AnyEnabled() {
		t.Error("AnyEnabled false with default enabled")
	}
}

func TestCacheValidation(t *testing.T) {
	_, err := Parse([]byte("cache:\n  max_memory: 1MiB\n  max_entry_bytes: 2MiB\n  vary_headers: [\"bad header\"]\n"), "f.yaml")
	if err == nil {
		t.Fatal("invalid cache section accepted")
	}
	for _, want := range []string{"f.yaml:3: cache.max_entry_bytes: must not exceed cache.max_memory", "f.yaml:4: cache.vary_headers[0]:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// Quota policies are checked key by key, with the line of the key.
func TestQuotaValidation(t *testing.T) {
	src := `quota:
  on_redis_error: maybe
  workflows:
    "wf-1":
      rate: {limit: 0, per: 1s}
      budgets:
        - {window: 24h}
        - {window: 1.5s, executions: 3}
        - {window: 30d, tokens: -1}
      per_caller: "header:bad name"
metering:
  default_model: ""
`
	_, err := ParseWith([]byte(src), "flowgate.yaml", LoadOptions{Getenv: noEnv})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`flowgate.yaml:2: quota.on_redis_error: must be "open" or "closed", not "maybe"`,
		`flowgate.yaml:5: quota.workflows.wf-1.rate.limit: must be 1 or more, not 0`,
		`flowgate.yaml:7: quota.workflows.wf-1.budgets[0]: limits nothing`,
		`flowgate.yaml:8: quota.workflows.wf-1.budgets[1].window: must be a whole number of seconds`,
		`flowgate.yaml:9: quota.workflows.wf-1.budgets[2].tokens: must not be negative`,
		`flowgate.yaml:10: quota.workflows.wf-1.per_caller: "bad name" is not a header name`,
		`flowgate.yaml:12: metering.default_model: must name a model`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	c, err := ParseWith([]byte("quota:\n  workflows:\n    w: {budgets: [{window: 30d, cost_usd: 12.5}]}\n"), "f", LoadOptions{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Quota.Workflows["w"].Budgets[0]; got.CostUSD != 12_500_000_000 || got.Window.D() != 30*24*time.Hour {
		t.Errorf("budget = %+v", got)
	}
}

// The tls section is checked key by key, with lines; relative files are
// resolved against the config's directory.
func TestTLSValidation(t *testing.T) {
	src := `server:
  listen: ":8080"
tls:
  mode: acme
  listen: ":8080"
  redirect_port: 0
  min_version: "1.1"
  hsts: "31536000"
  acme:
    domains: ["*.example.com", "bad domain"]
    ca: http://acme.example/dir
    challenges: [dns-01]
    on_demand: {enabled: true}
`
	_, err := ParseWith([]byte(src), "flowgate.yaml", LoadOptions{Getenv: noEnv})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`flowgate.yaml:5: tls.listen: ":8080" clashes with server.listen`,
		`flowgate.yaml:6: tls.redirect_port: must be a port from 1 to 65535`,
		`flowgate.yaml:7: tls.min_version: must be "1.2" or "1.3"`,
		`flowgate.yaml:8: tls.hsts: must start with max-age=`,
		`tls.acme.domains[0]: "*.example.com": wildcard names need the DNS-01 challenge`,
		`tls.acme.domains[1]: "bad domain" is not a domain name`,
		`flowgate.yaml:11: tls.acme.ca: must be an https:// ACME directory URL`,
		`tls.acme.challenges[0]: must be http-01 or tls-alpn-01, not "dns-01"`,
		`tls.acme.on_demand.ask: is required with on_demand`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	_, err = ParseWith([]byte("tls:\n  mode: files\n"), "f.yaml", LoadOptions{Getenv: noEnv})
	if err == nil || !strings.Contains(err.Error(), "tls.cert_file: is required") || !strings.Contains(err.Error(), "tls.key_file: is required") {
		t.Errorf("files without files: %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "flowgate.yaml")
	if err := os.WriteFile(path, []byte("tls:\n  mode: files\n  cert_file: certs/c.pem\n  key_file: /abs/k.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadWith(path, LoadOptions{Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.CertFile != filepath.Join(dir, "certs/c.pem") || c.TLS.KeyFile != "/abs/k.pem" || !c.TLS.RedirectOn() {
		t.Errorf("tls = %+v", c.TLS)
	}
}
