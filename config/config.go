// Package config holds flowgate's YAML schema, its defaults and its validation.
//
// Every field states its default in its comment; Default() returns exactly
// those values, so a missing key and a key set to its default behave alike.
package config

import "time"

// Config is the whole gateway configuration.
type Config struct {
	Server    Server     `yaml:"server"`
	Upstreams []Upstream `yaml:"upstreams"`
	Proxy     Proxy      `yaml:"proxy"`
	Health    Health     `yaml:"health"`
	Log       Log        `yaml:"log"`
	Admin     Admin      `yaml:"admin"`
	Redis     Redis      `yaml:"redis"`
	Cache     Cache      `yaml:"cache"`
	Quota     Quota      `yaml:"quota"`
	Metering  Metering   `yaml:"metering"`
	TLS       TLSServe   `yaml:"tls"`
	Metrics   Metrics    `yaml:"metrics"`

	// src maps key paths to file lines so Validate can name them; nil for
	// a config built in code. Not part of the YAML schema.
	src *source
}

// Server configures the listeners and the client-facing http.Server.
type Server struct {
	// Listen is the address of the proxy listener. Default ":8080".
	Listen string `yaml:"listen"`
	// MetricsListen serves /metrics, /healthz and /readyz. Default ":9090".
	// Empty string disables it.
	MetricsListen string `yaml:"metrics_listen"`
	// AdminListen serves the admin API. Default "127.0.0.1:9091".
	AdminListen string `yaml:"admin_listen"`
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// BodyReadTimeout bounds reading a request's body. Default 60s.
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
	// IdleTimeout closes client keep-alive connections idle this long. Default 120s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// WriteIdleTimeout cuts a client that accepts no byte of its answer for
	// this long, like nginx's send_timeout: a client that stops reading
	// would otherwise hold its upstream (and its place in least-connections)
	// for as long as it likes. It bounds each write, not the whole answer,
	// so long streams are not cut. Default 60s.
	WriteIdleTimeout Duration `yaml:"write_idle_timeout"`
	// MaxHeaderBytes caps a request's header block; larger gets 431.
	// Default 64KiB (Node, under Flowise, accepts 16KiB; nginx 32KiB).
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes"`
	// ShutdownTimeout is how long SIGTERM waits for in-flight requests and
	// streams before closing them. Default 30s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// Upstream is one flow-server replica (url), or every replica a DNS name
// resolves to (dns), e.g. a Kubernetes headless Service. One of url and
// dns is required.
type Upstream struct {
	// URL is the base URL, e.g. http://flowise:3000.
	URL string `yaml:"url"`
	// Name labels the upstream in logs and metrics. Default: the URL's
	// host, or the DNS name; a discovered replica is "<name>/<ip>:<port>".
	Name string `yaml:"name"`
	// DNS is a name whose A and AAAA records are the replicas, resolved
	// again every Refresh: new addresses join, vanished ones leave once
	// their requests finish, and a failed or empty answer keeps the last
	// good set.
	DNS string `yaml:"dns"`
	// Port of the discovered replicas. Required with dns.
	Port int `yaml:"port"`
	// Scheme of the discovered replicas: http or https. Default http.
	Scheme string `yaml:"scheme"`
	// Refresh is how often dns is resolved again. Default 10s.
	Refresh Duration `yaml:"refresh"`
}

// Discovered reports whether the upstream is a DNS name to resolve.
func (u Upstream) Discovered() bool { return u.DNS != "" }

// Proxy configures forwarding.
type Proxy struct {
	// MaxBodyBytes is the largest request body accepted; larger gets 413.
	// Default 100MiB (nginx's client_max_body_size in the seed config).
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// MaxBodyInMemory is how much of a request body is held in memory;
	// the rest of a larger body (file uploads) waits in an unlinked temp
	// file until it is forwarded. Default 8MiB.
	MaxBodyInMemory ByteSize `yaml:"max_body_in_memory"`
	// BodyMemoryBudget bounds the request bodies held in memory by all
	// requests together; past it, bodies wait in temp files, so many
	// concurrent large bodies cannot exhaust memory. Default 64MiB.
	BodyMemoryBudget ByteSize `yaml:"body_memory_budget"`
	// BodyDiskBudget bounds the request bodies waiting in temp files, all
	// requests together; a body that would pass it gets 503 with
	// Retry-After. Size the temp directory (a Kubernetes emptyDir's
	// sizeLimit) above it. Default 1GiB.
	BodyDiskBudget ByteSize `yaml:"body_disk_budget"`
	// DialTimeout bounds connecting to an upstream. Default 5s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// ResponseHeaderTimeout answers 504 when an upstream sends no response
	// headers in time. Default 300s: a non-streaming flow answers only
	// once the whole run is done.
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout"`
	// StreamResponseHeaderTimeout replaces ResponseHeaderTimeout for
	// requests that ask to stream ("streaming": true). Flowise sends the
	// headers of a stream at once, but hangs without answering when such a
	// run fails early. It also answers a flow that cannot stream with JSON,
	// only when the whole run is done, so too short a value cuts slow
	// non-streaming flows. Default 60s, nginx's proxy_read_timeout.
	StreamResponseHeaderTimeout Duration `yaml:"stream_response_header_timeout"`
	// IdleTimeout ends a response whose upstream sends no byte for this
	// long; a stream ended this way gets an error frame. Default 300s.
	// Flowise 3.1.2+ sends a heartbeat every 30s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxIdleConnsPerUpstream is the keep-alive pool size per upstream. Default 256.
	MaxIdleConnsPerUpstream int `yaml:"max_idle_conns_per_upstream"`
	// IdleConnTimeout drops a pooled upstream connection unused this long.
	// Default 4s: Flowise (Node.js) closes idle keep-alive connections
	// after 5s, and a request sent on a connection the upstream is closing
	// fails without a way to know whether it ran.
	IdleConnTimeout Duration `yaml:"idle_conn_timeout"`
	// Retries is how many other upstreams a request tries when it could not
	// be sent (connection refused, dial timeout). Default 2.
	Retries int `yaml:"retries"`
	// PreserveHost sends the client's Host header upstream, like nginx's
	// "proxy_set_header Host $host". Default true.
	PreserveHost *bool `yaml:"preserve_host"`
	// TrustedProxies lists CIDRs whose X-Forwarded-* headers are believed.
	// Default: none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// PassRequestFrom forwards Flowise's x-request-from header when a
	// trusted proxy sent it. Flowise treats "x-request-from: internal" as
	// a call from its own UI, so it is dropped by default. Default false.
	PassRequestFrom bool `yaml:"pass_request_from"`
	// RequestFromWithSession forwards x-request-from from any client whose
	// request carries Flowise's session cookie ("token"): Flowise 3 then
	// checks that session instead of an API key, which is how its own UI
	// calls the API, so the UI works through the gateway. Turn it off for
	// Flowise 2.2 and older, where the header with no basic auth set
	// skipped the API key check. Default true.
	RequestFromWithSession *bool `yaml:"request_from_with_session"`
	// Gzip compresses text and JSON responses. Default on.
	Gzip Gzip `yaml:"gzip"`
	// UpstreamTLS configures connections to https:// upstreams.
	UpstreamTLS UpstreamTLS `yaml:"upstream_tls"`
	// SecurityHeaders are added to every response that lacks them. A key set
	// to "" removes a default. Defaults: X-Frame-Options SAMEORIGIN,
	// X-Content-Type-Options nosniff, Referrer-Policy
	// strict-origin-when-cross-origin, Content-Security-Policy
	// "frame-ancestors 'self'".
	SecurityHeaders map[string]string `yaml:"security_headers"`
	// StaticCacheControl is set on responses for static assets.
	// Default "public, immutable, max-age=31536000". "" disables it.
	StaticCacheControl *string `yaml:"static_cache_control"`
	// StaticExtensions are the path extensions that count as static assets.
	// Default [js, css, png, jpg, jpeg, gif, ico, svg].
	StaticExtensions []string `yaml:"static_extensions"`
}

// UpstreamTLS verifies https:// upstreams. By default they are verified
// against the system's roots with the upstream URL's host name.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of the CAs that sign the upstreams'
	// certificates (a private CA), used instead of the system's roots.
	// A relative path is resolved against the config file's directory.
	// Default none.
	CAFile string `yaml:"ca_file"`
	// ServerName is checked against the certificate instead of the URL's
	// host, for upstreams addressed by IP. Default none.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate. For tests only; it makes
	// TLS to the upstream worthless. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Gzip configures response compression.
type Gzip struct {
	// Enabled turns compression on. Default true.
	Enabled *bool `yaml:"enabled"`
	// MinSize is the smallest response compressed. Default 1024.
	MinSize ByteSize `yaml:"min_size"`
	// ContentTypes are the compressed media types (prefix match on the
	// media type). text/event-stream is never compressed.
	// Default [text/, application/json, application/javascript,
	// application/xml, image/svg+xml].
	ContentTypes []string `yaml:"content_types"`
}

// Health configures active and passive health checks.
type Health struct {
	Active  ActiveHealth  `yaml:"active"`
	Passive PassiveHealth `yaml:"passive"`
}

// ActiveHealth probes each upstream on a timer.
type ActiveHealth struct {
	// Enabled turns probing on. Default true.
	Enabled *bool `yaml:"enabled"`
	// Path is requested with GET. Default "/api/v1/ping" (Flowise).
	Path string `yaml:"path"`
	// Interval between probes. Default 5s.
	Interval Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s.
	Timeout Duration `yaml:"timeout"`
	// HealthyThreshold consecutive passes mark a down upstream up. Default 2.
	HealthyThreshold int `yaml:"healthy_threshold"`
	// UnhealthyThreshold consecutive failures mark an up upstream down. Default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
}

// PassiveHealth takes an upstream out after failures seen on real traffic.
type PassiveHealth struct {
	// Enabled turns passive checks on. Default true.
	Enabled *bool `yaml:"enabled"`
	// MaxFails within FailWindow take the upstream out. Default 3.
	MaxFails int `yaml:"max_fails"`
	// FailWindow is the window failures are counted in. Default 10s.
	FailWindow Duration `yaml:"fail_window"`
	// Cooldown is how long the upstream stays out. Default 10s.
	Cooldown Duration `yaml:"cooldown"`
	// UnhealthyStatuses are response codes that count as failures.
	// Default none (a 500 from Flowise is usually the flow, not the server).
	UnhealthyStatuses []int `yaml:"unhealthy_statuses"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// AccessLog writes one JSON line per request. Default true.
	AccessLog *bool `yaml:"access_log"`
}

// Admin configures the admin API.
type Admin struct {
	// Token authenticates admin calls. Prefer FLOWGATE_ADMIN_TOKEN or
	// TokenFile over writing it here. Default none: the admin API refuses
	// every call until a token is set.
	Token string `yaml:"token"`
	// TokenFile is read for the token (trailing newline trimmed).
	TokenFile string `yaml:"token_file"`
}

// Redis configures the shared store used when several replicas run.
type Redis struct {
	// Addr is host:port. Default none: memory stores only.
	Addr string `yaml:"addr"`
	// Password; prefer FLOWGATE_REDIS_PASSWORD or PasswordFile.
	Password string `yaml:"password"`
	// PasswordFile is read for the password (trailing newline trimmed).
	PasswordFile string `yaml:"password_file"`
	// DB number. Default 0.
	DB int `yaml:"db"`
}

// Cache configures the response cache of flow predictions. It is off for
// every workflow until enabled, by default or per workflow. The second level
// is Redis when redis.addr is set, shared by every replica.
type Cache struct {
	// MaxMemory bounds the in-process level, in bytes of stored answers.
	// Default 256MiB.
	MaxMemory ByteSize `yaml:"max_memory"`
	// MaxEntryBytes is the largest answer stored; a larger one is passed
	// on and not cached. Default 1MiB.
	MaxEntryBytes ByteSize `yaml:"max_entry_bytes"`
	// VaryHeaders are the request headers that carry the caller's
	// credentials: their values split the key, so an answer is never
	// served to a caller with other credentials. Default [Authorization,
	// X-Api-Key, Cookie] (API keys, and the login cookie of Flowise's UI).
	VaryHeaders []string `yaml:"vary_headers"`
	// Default is the policy of workflows not listed in Workflows.
	// Default {enabled: false, ttl: 1h, stateless: false}.
	Default CachePolicy `yaml:"default"`
	// Workflows are per-workflow policies by flow id; a key not set
	// inherits Default's.
	Workflows map[string]CachePolicy `yaml:"workflows"`
}

// CachePolicy is one workflow's cache policy.
type CachePolicy struct {
	// Enabled caches the workflow's answers. Default false.
	Enabled *bool `yaml:"enabled"`
	// TTL is how long an answer is served from the cache. Default 1h.
	TTL Duration `yaml:"ttl"`
	// Stateless says the flow has no memory, so requests with a chatId or
	// sessionId may be answered from the cache too. Default false: a
	// conversation is never served a stored turn.
	Stateless *bool `yaml:"stateless"`
}

// Metrics configures the Prometheus metrics.
type Metrics struct {
	// Enabled records the request path's metrics. Default true; false
	// leaves /metrics with the process, Go runtime and TLS collectors
	// only (it is what the benchmark compares against).
	Enabled *bool `yaml:"enabled"`
	// MaxWorkflows bounds the workflow_id label: past this many distinct
	// ids, the rest are counted under "other", so a client spraying
	// random ids cannot grow the metrics' memory. Default 1000.
	MaxWorkflows int `yaml:"max_workflows"`
}

// Bool reads an optional boolean with its default.
func Bool(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// Duration is a time.Duration written as "30s", "5m" in YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ByteSize is a size written as 1048576, "100MiB", "64KiB" or "1MB" in YAML.
type ByteSize int64
