package config

import (
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

var errZone = errors.New("IPv6 zones are not allowed")

// Validate checks the whole configuration and returns an ErrorList with
// every problem, each naming its key and, for a config from Load or Parse,
// the file and line. It also fills in derived values: an empty upstream name
// becomes the URL's host, and static extensions lose leading dots and are
// lower-cased.
func (c *Config) Validate() error { return c.validate().err() }

type validator struct {
	c    *Config
	errs ErrorList
}

func (v *validator) add(key, format string, args ...any) {
	file, line := v.c.src.locate(key)
	v.errs = append(v.errs, Error{File: file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *Config) validate() ErrorList {
	v := &validator{c: c}
	v.server()
	v.upstreams()
	v.proxy()
	v.health()
	v.log()
	v.redis()
	v.cache()
	v.quota()
	v.metering()
	v.tlsServe()
	v.atLeast("metrics.max_workflows", v.c.Metrics.MaxWorkflows, 1)
	return v.errs
}

func (v *validator) positive(key string, d Duration) {
	if d <= 0 {
		v.add(key, "must be greater than 0s")
	}
}

func (v *validator) atLeast(key string, n, lo int) {
	if n < lo {
		v.add(key, "must be %d or more, not %d", lo, n)
	}
}

func (v *validator) server() {
	s := &v.c.Server
	type listener struct{ key, addr string }
	var ls []listener
	for _, l := range []struct {
		key, addr string
		optional  bool
	}{
		{"server.listen", s.Listen, false},
		{"server.metrics_listen", s.MetricsListen, true},
		{"server.admin_listen", s.AdminListen, true},
	} {
		if l.addr == "" {
			if !l.optional {
				v.add(l.key, `is required, e.g. ":8080"`)
			}
			continue
		}
		if msg := checkHostPort(l.addr); msg != "" {
			v.add(l.key, "%s", msg)
			continue
		}
		for _, prev := range ls {
			if sameSocket(prev.addr, l.addr) {
				v.add(l.key, "%q clashes with %s %q; each listener needs its own port", l.addr, prev.key, prev.addr)
			}
		}
		ls = append(ls, listener{l.key, l.addr})
	}
	v.positive("server.read_header_timeout", s.ReadHeaderTimeout)
	v.positive("server.body_read_timeout", s.BodyReadTimeout)
	v.positive("server.idle_timeout", s.IdleTimeout)
	v.positive("server.write_idle_timeout", s.WriteIdleTimeout)
	v.positive("server.shutdown_timeout", s.ShutdownTimeout)
	if s.MaxHeaderBytes <= 0 {
		v.add("server.max_header_bytes", "must be greater than 0")
	}
}

// checkHostPort accepts what net.Listen("tcp", addr) accepts, except named
// ports, and returns why not otherwise.
func checkHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf(`%q is not host:port; write e.g. ":8080" or "127.0.0.1:8080"`, addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("%q: port must be a number from 0 to 65535", addr)
	}
	if strings.ContainsAny(host, " /\t") {
		return fmt.Sprintf("%q: invalid host %q", addr, host)
	}
	return ""
}

// sameSocket reports whether two valid listen addresses would fight over
// one port: the same port on the same host, or on a wildcard host, which
// covers every interface. Port 0 picks a free port and never clashes.
func sameSocket(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

func (v *validator) upstreams() {
	if len(v.c.Upstreams) == 0 {
		v.add("upstreams", "at least one upstream is required")
		return
	}
	names := map[string]int{}
	for i := range v.c.Upstreams {
		u := &v.c.Upstreams[i]
		key := "upstreams[" + strconv.Itoa(i) + "]"
		var host, msg string
		switch {
		case u.DNS != "" && u.URL != "":
			v.add(key, "set url or dns, not both")
		case u.DNS != "":
			host = v.discovered(key, u)
		default:
			if u.Port != 0 || u.Scheme != "" || u.Refresh != 0 {
				v.add(key, "port, scheme and refresh go with dns; a url carries its own scheme and port")
			}
			if host, msg = checkUpstreamURL(u.URL); msg != "" {
				v.add(key+".url", "%s", msg)
			}
		}
		if u.Name == "" {
			if host == "" {
				continue
			}
			u.Name = host
		}
		if j, dup := names[u.Name]; dup {
			v.add(key+".name", "%q is already the name of upstreams[%d]; names label metrics and logs, so each needs its own (a missing name defaults to the URL's host:port)", u.Name, j)
			continue
		}
		names[u.Name] = i
	}
}

// discovered checks a dns upstream, fills its defaults and returns its
// default name.
func (v *validator) discovered(key string, u *Upstream) string {
	if strings.ContainsAny(u.DNS, "/:[] ") || strings.Trim(u.DNS, ".") == "" {
		v.add(key+".dns", "%q must be a host name, e.g. flowise-headless.flowise.svc.cluster.local (no scheme, port or path)", u.DNS)
		return ""
	}
	if u.Port < 1 || u.Port > 65535 {
		v.add(key+".port", "is required with dns: the replicas' port, from 1 to 65535")
	}
	switch u.Scheme {
	case "":
		u.Scheme = "http"
	case "http", "https":
	default:
		v.add(key+".scheme", "must be http or https, not %q", u.Scheme)
	}
	if u.Refresh == 0 {
		u.Refresh = Duration(10 * time.Second)
	} else if u.Refresh.D() < time.Second {
		v.add(key+".refresh", "must be at least 1s")
	}
	return u.DNS
}

// checkUpstreamURL returns the URL's host (for the default name) and a
// message when the URL is unusable as a proxy target.
func checkUpstreamURL(s string) (host, msg string) {
	if s == "" {
		return "", `is required, e.g. "http://flowise:3000"`
	}
	if !strings.Contains(s, "://") {
		return "", fmt.Sprintf("%q must start with http:// or https://, e.g. \"http://%s\"", s, s)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Sprintf("%q is not a valid URL: %v", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Sprintf("%q: scheme must be http or https, not %q", s, u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Sprintf("%q has no host", s)
	case u.RawQuery != "" || u.ForceQuery:
		return u.Host, fmt.Sprintf("%q must not have a query (?...); the client's query is forwarded as is", s)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return u.Host, fmt.Sprintf("%q must not have a fragment (#...)", s)
	}
	if p := u.Port(); p != "" {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return u.Host, fmt.Sprintf("%q: port must be a number from 1 to 65535", s)
		}
	}
	return u.Host, ""
}

func (v *validator) proxy() {
	p := &v.c.Proxy
	if p.MaxBodyBytes <= 0 {
		v.add("proxy.max_body_bytes", "must be greater than 0")
	}
	if p.MaxBodyInMemory <= 0 {
		v.add("proxy.max_body_in_memory", "must be greater than 0")
	}
	if p.BodyMemoryBudget <= 0 {
		v.add("proxy.body_memory_budget", "must be greater than 0")
	}
	if p.BodyDiskBudget <= 0 {
		v.add("proxy.body_disk_budget", "must be greater than 0")
	}
	if f := p.UpstreamTLS.CAFile; f != "" {
		if _, err := p.UpstreamTLS.CertPool(); err != nil {
			v.add("proxy.upstream_tls.ca_file", "%v", err)
		}
	}
	v.positive("proxy.dial_timeout", p.DialTimeout)
	v.positive("proxy.response_header_timeout", p.ResponseHeaderTimeout)
	v.positive("proxy.stream_response_header_timeout", p.StreamResponseHeaderTimeout)
	v.positive("proxy.idle_timeout", p.IdleTimeout)
	v.atLeast("proxy.max_idle_conns_per_upstream", p.MaxIdleConnsPerUpstream, 1)
	v.positive("proxy.idle_conn_timeout", p.IdleConnTimeout)
	v.atLeast("proxy.retries", p.Retries, 0)
	for i, s := range p.TrustedProxies {
		if _, err := parseTrusted(s); err != nil {
			key := "proxy.trusted_proxies[" + strconv.Itoa(i) + "]"
			if errors.Is(err, errZone) || strings.Contains(s, "%") {
				v.add(key, "%q: IPv6 zones (%%eth0) are not allowed", s)
			} else {
				v.add(key, "%q is not a CIDR (10.0.0.0/8) or IP address (10.0.0.1)", s)
			}
		}
	}
	if p.Gzip.MinSize < 0 {
		v.add("proxy.gzip.min_size", "must not be negative")
	}
	for i, ct := range p.Gzip.ContentTypes {
		if strings.TrimSpace(ct) == "" {
			v.add("proxy.gzip.content_types["+strconv.Itoa(i)+"]", "must not be empty")
		}
	}
	v.securityHeaders()
	if p.StaticCacheControl != nil && strings.ContainsAny(*p.StaticCacheControl, "\r\n\x00") {
		v.add("proxy.static_cache_control", "must not contain line breaks")
	}
	for i, ext := range p.StaticExtensions {
		key := "proxy.static_extensions[" + strconv.Itoa(i) + "]"
		ext = strings.ToLower(strings.TrimLeft(ext, "."))
		switch {
		case ext == "":
			v.add(key, "must not be empty")
		case strings.ContainsAny(ext, "/ \t?#"):
			v.add(key, "%q is not a file extension like \"js\"", p.StaticExtensions[i])
		}
		p.StaticExtensions[i] = ext
	}
}

func (v *validator) securityHeaders() {
	const key = "proxy.security_headers"
	seen := map[string]string{}
	for name, val := range v.c.Proxy.SecurityHeaders {
		k := joinKey(key, name)
		if !isToken(name) {
			v.add(k, "%q is not a valid header name", name)
			continue
		}
		if strings.ContainsAny(val, "\r\n\x00") {
			v.add(k, "value must not contain line breaks")
		}
		ck := textproto.CanonicalMIMEHeaderKey(name)
		if other, dup := seen[ck]; dup {
			a, b := min(other, name), max(other, name)
			v.add(joinKey(key, b), "same header as %q (header names ignore case)", a)
		}
		seen[ck] = name
	}
}

// isToken reports whether s is an HTTP field name (RFC 9110 token).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

func (v *validator) health() {
	a := &v.c.Health.Active
	if !strings.HasPrefix(a.Path, "/") {
		v.add("health.active.path", "must start with \"/\", e.g. \"/api/v1/ping\"")
	}
	v.positive("health.active.interval", a.Interval)
	v.positive("health.active.timeout", a.Timeout)
	v.atLeast("health.active.healthy_threshold", a.HealthyThreshold, 1)
	v.atLeast("health.active.unhealthy_threshold", a.UnhealthyThreshold, 1)

	p := &v.c.Health.Passive
	v.atLeast("health.passive.max_fails", p.MaxFails, 1)
	v.positive("health.passive.fail_window", p.FailWindow)
	v.positive("health.passive.cooldown", p.Cooldown)
	for i, code := range p.UnhealthyStatuses {
		if code < 100 || code > 599 {
			v.add("health.passive.unhealthy_statuses["+strconv.Itoa(i)+"]", "%d is not an HTTP status (100-599)", code)
		}
	}
}

func (v *validator) log() {
	switch v.c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "must be debug, info, warn or error, not %q", v.c.Log.Level)
	}
}

func (v *validator) cache() {
	c := &v.c.Cache
	if c.MaxMemory <= 0 {
		v.add("cache.max_memory", "must be greater than 0")
	}
	if c.MaxEntryBytes <= 0 {
		v.add("cache.max_entry_bytes", "must be greater than 0")
	} else if c.MaxMemory > 0 && c.MaxEntryBytes > c.MaxMemory {
		v.add("cache.max_entry_bytes", "must not exceed cache.max_memory")
	}
	for i, h := range c.VaryHeaders {
		if !isToken(h) {
			v.add("cache.vary_headers["+strconv.Itoa(i)+"]", "%q is not a header name", h)
		}
	}
	if c.Default.TTL < 0 {
		v.add("cache.default.ttl", "must not be negative")
	}
	for id, w := range c.Workflows {
		if id == "" {
			v.add("cache.workflows", "a workflow id must not be empty")
		}
		if w.TTL < 0 {
			v.add("cache.workflows."+id+".ttl", "must not be negative")
		}
	}
}

func (v *validator) redis() {
	r := &v.c.Redis
	if r.Addr != "" {
		if msg := checkHostPort(r.Addr); msg != "" {
			v.add("redis.addr", "%s", strings.Replace(msg, `":8080" or "127.0.0.1:8080"`, `"redis:6379"`, 1))
		}
	}
	v.atLeast("redis.db", r.DB, 0)
}

func (v *validator) quota() {
	q := &v.c.Quota
	switch q.OnRedisError {
	case "open", "closed":
	default:
		v.add("quota.on_redis_error", `must be "open" or "closed", not %q`, q.OnRedisError)
	}
	v.quotaPolicy("quota.default", q.Default)
	for id, p := range q.Workflows {
		if id == "" {
			v.add("quota.workflows", "a workflow id must not be empty")
			continue
		}
		v.quotaPolicy("quota.workflows."+id, p)
	}
}

func (v *validator) quotaPolicy(prefix string, p QuotaPolicy) {
	for _, e := range p.Check() {
		v.add(prefix+"."+e.Key, "%s", e.Msg)
	}
}

func (v *validator) metering() {
	m := &v.c.Metering
	if strings.TrimSpace(m.DefaultModel) == "" {
		v.add("metering.default_model", `must name a model, e.g. "gpt-4o-mini"`)
	}
	for id, model := range m.Models {
		if id == "" {
			v.add("metering.models", "a workflow id must not be empty")
		}
		if strings.TrimSpace(model) == "" {
			v.add("metering.models."+id, "must name a model")
		}
	}
}
