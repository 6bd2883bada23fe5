package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A target is one way to reach fakeflow: directly, or through a proxy.
type target struct {
	name string // direct, nginx, caddy, flowgate, flowgate-nometrics, flowgate-cache, flowgate-quota, flowgate-quota-redis, httputil
	url  string // http://127.0.0.1:port
	p    *proc  // the proxy process; nil for direct (then up is measured)
	// metricsURL is flowgate's /metrics ("" for the others): the
	// cache-hit target's hits and misses are counted there, and the quota
	// targets' refusals and Redis errors.
	metricsURL string
	// redis is the redis-server behind flowgate-quota-redis (nil for the
	// others).
	redis *redisServer
}

// cacheTarget is a second flowgate with the cache on for the benchmark's
// flow: every request after the first is answered from the cache. It takes
// part in the JSON throughput scenario only.
const cacheTarget = "flowgate-cache"

// The quota targets are flowgate with a quota on the benchmark's flow that
// never refuses during a run (see flowgateQuotaSection): quotaTarget keeps
// its counts in the process, quotaRedisTarget in a redis-server the harness
// starts (its usage ledger too). Beside plain flowgate (quotas off) they
// give the CPU per request of the quota check. They take part in the JSON
// scenario only: a quota is checked once per request before it goes
// upstream, so a stream's frames do not pass through it.
const (
	quotaTarget      = "flowgate-quota"
	quotaRedisTarget = "flowgate-quota-redis"
)

// noMetricsTarget is flowgate configured as the plain target plus
// `metrics: {enabled: false}`: no request-path metric is recorded (the
// gateway runs with a nil *metrics.Metrics; /metrics still serves the
// process and Go collectors). Beside plain flowgate, in the same rounds,
// it gives what the metrics cost (issue 10). It takes part in the JSON and
// streaming scenarios, not in the moderate-load and memory ones: the cost
// is CPU per request, which the JSON scenario measures, and per frame.
const noMetricsTarget = "flowgate-nometrics"

// baseTarget is another flowgate binary (-base), configured exactly as the
// plain target: an earlier build measured in the same rounds, in rotating
// order, so that a change is judged against the round-to-round spread of
// one run rather than across runs (issue 12's "keep a change only if the
// bench shows it").
const baseTarget = "flowgate-base"

// jsonOnly reports whether a target is measured in the JSON scenario only.
func jsonOnly(name string) bool {
	return name == cacheTarget || name == quotaTarget || name == quotaRedisTarget || isTLS(name)
}

// measuredIn reports whether a target takes part in a scenario (json,
// rate, stream, memory).
func measuredIn(name, scenario string) bool {
	switch scenario {
	case "json":
		return true
	case "stream":
		return !jsonOnly(name)
	case "rate", "memory":
		return !jsonOnly(name) && name != noMetricsTarget
	}
	return false
}

// measuredInAny reports whether a target takes part in the JSON,
// moderate-load or streaming scenario of a run (o.only), so whether it is
// started for them (the memory scenario starts its own).
func measuredInAny(name string, only map[string]bool) bool {
	for sc, on := range only {
		if on && sc != "memory" && measuredIn(name, sc) {
			return true
		}
	}
	return false
}

// isQuota reports whether a target is one of the quota targets.
func isQuota(name string) bool { return name == quotaTarget || name == quotaRedisTarget }

const (
	flowID      = "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11"
	predictPath = "/api/v1/prediction/" + flowID
	jsonBody    = `{"question":"hi"}`
)

// env is what every scenario needs: where to put files, the binaries, the
// upstream.
type env struct {
	dir      string // configs, logs, raw results
	flowgate string // binary
	base     string // the -base binary, for baseTarget ("" when not given)
	fakeflow string // binary
	self     string // this program, for the plain httputil reference target
	up       *proc  // fakeflow
	upURL    string
	upAddr   string

	flowgateEnv       []string
	flowgateAccessLog bool

	// redis is the redis-server of quotaRedisTarget, started with the
	// first such target and stopped with the last.
	redis *redisServer

	// cert and key of the TLS targets: one self-signed ECDSA pair per
	// run, made with the first TLS target (see ensureCert).
	certFile, keyFile string
}

// flowgateEnvFor is the environment of a flowgate whose files are in dir:
// its embedded usage ledger lives there too (each flowgate needs its own,
// bbolt locks the file), not in /var/lib/flowgate. -flowgate-env comes
// last, so it can move it.
func (e *env) flowgateEnvFor(dir string) []string {
	return append([]string{"FLOWGATE_METERING_STORE_DIR=" + filepath.Join(dir, "state")}, e.flowgateEnv...)
}

var allTargets = []string{"direct", "nginx", "caddy", floorTarget, "flowgate", noMetricsTarget, cacheTarget, quotaTarget, quotaRedisTarget}

// knownTargets are the rows a table may have, in order.
var knownTargets = []string{"direct", "nginx", "caddy", floorTarget, "flowgate", baseTarget, noMetricsTarget, cacheTarget, quotaTarget, quotaRedisTarget, "httputil", nginxTLSTarget, flowgateTLSTarget, flowgateH2Target}

// startTarget starts a fresh proxy of the given kind in front of e.upAddr.
// tag keeps file names apart when one kind is started more than once.
func (e *env) startTarget(kind, tag string) (*target, error) {
	if kind == "direct" {
		return &target{name: "direct", url: e.upURL, p: nil}, nil
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.dir, kind+tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	var p *proc
	var metricsURL string
	var rs *redisServer
	switch kind {
	case "nginx", nginxTLSTarget:
		conf := filepath.Join(dir, "nginx.conf")
		text := nginxConf(dir, port, e.upAddr)
		if kind == nginxTLSTarget {
			if err := e.ensureCert(); err != nil {
				return nil, err
			}
			text = nginxTLSConf(text, port, e.certFile, e.keyFile)
			url = fmt.Sprintf("https://127.0.0.1:%d", port)
		}
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		p, err = startProc(kind, "nginx", []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}, nil,
			filepath.Join(dir, "stdout.log"), true)
	case "caddy":
		conf := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(conf, []byte(caddyfile(dir, port, e.upAddr)), 0o644); err != nil {
			return nil, err
		}
		p, err = startProc(kind, "caddy", []string{"run", "--config", conf, "--adapter", "caddyfile"},
			[]string{"XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "HOME=" + dir},
			filepath.Join(dir, "caddy.log"), false)
	case "flowgate", baseTarget, noMetricsTarget, cacheTarget, quotaTarget, quotaRedisTarget, flowgateTLSTarget:
		conf := filepath.Join(dir, "flowgate.yaml")
		mport, err := freePort()
		if err != nil {
			return nil, err
		}
		text := flowgateConf(port, mport, e.upURL, e.flowgateAccessLog)
		switch kind {
		case flowgateTLSTarget:
			if err := e.ensureCert(); err != nil {
				return nil, err
			}
			tport, err := freePort()
			if err != nil {
				return nil, err
			}
			text += flowgateTLSSection(tport, e.certFile, e.keyFile)
			url = fmt.Sprintf("https://127.0.0.1:%d", tport)
		case noMetricsTarget:
			text += flowgateNoMetricsSection()
		case cacheTarget:
			text += flowgateCacheSection(flowID)
		case quotaTarget:
			text += flowgateQuotaSection(flowID)
		case quotaRedisTarget:
			if rs, err = e.startRedis(); err != nil {
				return nil, err
			}
			text += flowgateQuotaSection(flowID) + flowgateRedisSection(rs.addr)
		}
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
		// stdout carries the JSON access log: it goes to a file on disk,
		// like nginx's and Caddy's.
		bin := e.flowgate
		if kind == baseTarget {
			if e.base == "" {
				return nil, fmt.Errorf("%s needs -base BINARY", baseTarget)
			}
			bin = e.base
		}
		p, err = startProc(kind, bin, []string{"-config", conf}, e.flowgateEnvFor(dir), filepath.Join(dir, "access.log"), false)
	case floorTarget:
		p, err = startProc(kind, e.self, []string{"serve-floor", "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-upstream", e.upURL},
			nil, filepath.Join(dir, "stdout.log"), false)
	case "httputil":
		p, err = startProc(kind, e.self, []string{"serve-plain", "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-upstream", e.upURL},
			nil, filepath.Join(dir, "stdout.log"), false)
	default:
		return nil, fmt.Errorf("unknown target %q", kind)
	}
	if err != nil {
		return nil, err
	}
	if err := waitReady(p, url, 15*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w (logs in %s)", kind, err, dir)
	}
	return &target{name: kind, url: url, p: p, metricsURL: metricsURL, redis: rs}, nil
}

// nginxConf is a production Flowise nginx.conf, pointed at loopback ports
// and this run's directory: upstream keep-alive, HTTP/1.1 to the upstream
// with Connection cleared (or upgraded for WebSockets), the forwarding
// headers, a 100m body limit, gzip for text and JSON from 1 KiB, security
// headers, the "main" access log, and SSE unbuffered because Flowise sends
// X-Accel-Buffering: no on its streams (proxy_buffering stays on for JSON,
// nginx's default). The request id is passed and returned as flowgate does.
func nginxConf(dir string, port int, upAddr string) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers write temp files into this run's directory
	}
	return strings.NewReplacer("{DIR}", dir, "{PORT}", fmt.Sprint(port), "{UP}", upAddr, "{USER}", user).Replace(`{USER}
worker_processes auto;
worker_rlimit_nofile 200000;
daemon off;
pid {DIR}/nginx.pid;
error_log {DIR}/error.log warn;

events {
    worker_connections 65536;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {DIR}/client_temp;
    proxy_temp_path {DIR}/proxy_temp;
    fastcgi_temp_path {DIR}/fastcgi_temp;
    uwsgi_temp_path {DIR}/uwsgi_temp;
    scgi_temp_path {DIR}/scgi_temp;

    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log {DIR}/access.log main;

    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    server_tokens off;
    client_max_body_size 100m;

    gzip on;
    gzip_vary on;
    gzip_proxied any;
    gzip_comp_level 5;
    gzip_min_length 1024;
    gzip_types text/plain text/css text/xml application/json application/javascript application/xml image/svg+xml;

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }

    upstream flowise {
        least_conn;
        server {UP};
        keepalive 256;
        keepalive_timeout 4s;
    }

    server {
        listen 127.0.0.1:{PORT};
        server_name _;

        add_header X-Frame-Options SAMEORIGIN always;
        add_header X-Content-Type-Options nosniff always;
        add_header Referrer-Policy strict-origin-when-cross-origin always;
        add_header Content-Security-Policy "frame-ancestors 'self'" always;
        add_header X-Request-ID $request_id always;

        location / {
            proxy_pass http://flowise;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }
}
`)
}

// caddyfile is Caddy's reverse_proxy with least_conn, the same headers,
// body limit, gzip and a JSON access log to a file; admin API off.
func caddyfile(dir string, port int, upAddr string) string {
	return strings.NewReplacer("{DIR}", dir, "{PORT}", fmt.Sprint(port), "{UP}", upAddr).Replace(`{
	admin off
	auto_https off
	grace_period 2s
}

http://:{PORT} {
	bind 127.0.0.1
	log {
		output file {DIR}/access.log
		format json
	}
	request_body {
		max_size 100MiB
	}
	encode gzip {
		minimum_length 1024
	}
	header {
		X-Frame-Options SAMEORIGIN
		X-Content-Type-Options nosniff
		Referrer-Policy strict-origin-when-cross-origin
		Content-Security-Policy "frame-ancestors 'self'"
		X-Request-ID {http.request.uuid}
	}
	reverse_proxy {UP} {
		lb_policy least_conn
		header_up X-Real-IP {remote_host}
		header_up X-Request-ID {http.request.uuid}
		transport http {
			keepalive 4s
			keepalive_idle_conns 256
			keepalive_idle_conns_per_host 256
		}
	}
}
`)
}

// flowgateConf: metrics and access logs on (the defaults), admin off, the
// cache off and no quota (their defaults), metering on (its default: every
// Flowise run's answer is metered and priced, the usage ledger written to
// the embedded store, see flowgateEnvFor).
func flowgateConf(port, metricsPort int, upURL string, accessLog bool) string {
	return fmt.Sprintf(`server:
  listen: "127.0.0.1:%d"
  metrics_listen: "127.0.0.1:%d"
  admin_listen: ""
upstreams:
  - url: %s
log:
  level: info
  access_log: %v
`, port, metricsPort, upURL, accessLog)
}

// flowgateNoMetricsSection turns the request path's metrics off; the rest
// stays as flowgateConf has it (metrics_listen included: /healthz, /readyz
// and the process collectors are still served).
func flowgateNoMetricsSection() string {
	return "metrics:\n  enabled: false\n"
}

// flowgateCacheSection turns the cache on for one workflow, memory only
// (no redis.addr), the other cache keys at their defaults.
func flowgateCacheSection(workflow string) string {
	return fmt.Sprintf(`cache:
  workflows:
    %q: {enabled: true, ttl: 1h}
`, workflow)
}

// Quota of the quota targets: a rate of a billion requests per second and
// a budget of a trillion executions per 24 h, for the whole workflow (no
// per_caller), so every request goes the whole admitted path (the rate's
// token bucket and the budget window checked and counted) and none is
// refused during a run.
const (
	quotaRate       = 1_000_000_000
	quotaExecutions = 1_000_000_000_000
)

// flowgateQuotaSection puts that quota on one workflow; the others stay
// unlimited.
func flowgateQuotaSection(workflow string) string {
	return fmt.Sprintf(`quota:
  workflows:
    %q:
      rate: {limit: %d, per: 1s}
      budgets:
        - {window: 24h, executions: %d}
`, workflow, quotaRate, quotaExecutions)
}

// flowgateRedisSection points flowgate at the harness's redis-server: the
// quota's counts and the usage ledger go there (the cache stays off).
func flowgateRedisSection(addr string) string {
	return fmt.Sprintf("redis:\n  addr: %q\n", addr)
}
