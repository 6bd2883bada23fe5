// Command flowgate is the gateway binary: flags, config loading, wiring and
// signals. The logic lives in the packages it wires.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flowgate/flowgate/admin"
	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/certstore"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/ledger"
	"github.com/flowgate/flowgate/metering"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/proxy"
	"github.com/flowgate/flowgate/quota"
	"github.com/flowgate/flowgate/tlsserve"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "validate":
			return cmdValidate(args[1:], stdout, stderr)
		case "healthcheck":
			return cmdHealthcheck(args[1:], stderr)
		case "version":
			fmt.Fprintln(stdout, versionString())
			return 0
		case "help", "-h", "-help", "--help":
			usage(stdout)
			return 0
		}
	}
	return cmdServe(args, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `flowgate: a gateway for LLM flow servers (Flowise, Langflow)

Usage:
  flowgate [flags]                 run the gateway
  flowgate validate -config FILE   check a config file and exit
  flowgate healthcheck [-url URL]  exit 0 if the local gateway's /healthz answers 200
  flowgate version                 print the version

Flags:
  -config FILE          YAML config (keys documented in docs/config.md)
  -listen ADDR          proxy listener (server.listen, default :8080)
  -upstream URL         flow server; repeat for several (replaces upstreams,
                        default http://127.0.0.1:3000)
  -metrics-listen ADDR  /metrics, /healthz, /readyz (default :9090)
  -admin-listen ADDR    admin API (default 127.0.0.1:9091)
  -demo                 start an embedded Flowise stand-in (fakeflow) and
                        proxy to it, to see flowgate work without Flowise
  -pprof ADDR           serve net/http/pprof on ADDR (off by default; bind
                        it to loopback: profiles reveal request data)
`)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type serveFlags struct {
	config, listen, metricsListen, adminListen string
	upstreams                                  multiFlag
	demo                                       bool
	pprof                                      string
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	fs := flag.NewFlagSet("flowgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	fs.StringVar(&f.config, "config", "", "")
	fs.StringVar(&f.listen, "listen", "", "")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "")
	fs.StringVar(&f.adminListen, "admin-listen", "", "")
	fs.Var(&f.upstreams, "upstream", "")
	fs.BoolVar(&f.demo, "demo", false, "")
	fs.StringVar(&f.pprof, "pprof", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "flowgate: unexpected argument %q (see flowgate help)\n", fs.Arg(0))
		return 2
	}

	var demo *fakeflow.Instance
	if f.demo {
		var err error
		// A visible token delay, so a streamed answer is seen arriving.
		demo, err = fakeflow.Start("127.0.0.1:0", fakeflow.Options{TokenDelay: 150 * time.Millisecond, Latency: 200 * time.Millisecond})
		if err != nil {
			fmt.Fprintf(stderr, "flowgate: demo upstream: %v\n", err)
			return 1
		}
		defer demo.Close()
		f.upstreams = multiFlag{demo.URL()}
	}

	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	cfg, err := loadConfig(f, set)
	if err != nil {
		fmt.Fprintf(stderr, "flowgate: %v\n", err)
		return 2
	}
	out := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(stdout), Size: 256 << 10, FlushInterval: time.Second}
	log, err := newLogger(cfg.Log.Level, out)
	if err != nil {
		fmt.Fprintf(stderr, "flowgate: %v\n", err)
		return 2
	}
	defer log.Sync()
	if os.Getenv("GOGC") == "" {
		// The proxy's live heap is small and its garbage rate high, so the
		// default GOGC=100 collects every few ms under load: a fifth of the
		// CPU in the profile (BENCHMARKS.md). GOGC env still wins.
		debug.SetGCPercent(gcPercent)
	}
	if limit := setMemoryLimit(cgroupMemoryFiles); limit > 0 {
		log.Info("memory limit from the container", zap.Int64("gomemlimit_bytes", limit))
	}
	if f.pprof != "" {
		if err := servePprof(f.pprof); err != nil {
			log.Error("pprof listener", zap.Error(err))
			return 1
		}
	}
	if err := serve(cfg, log, out, demo); err != nil {
		log.Error("flowgate stopped", zap.Error(err))
		return 1
	}
	return 0
}

// loadConfig reads the file (or the embedded defaults); flags replace the
// keys they name before validation, so errors name the flag, not a line a
// flag replaced.
func loadConfig(f serveFlags, set map[string]bool) (config.Config, error) {
	var o config.Overrides
	if set["listen"] {
		o.Listen = &f.listen
	}
	if set["metrics-listen"] {
		o.MetricsListen = &f.metricsListen
	}
	if set["admin-listen"] {
		o.AdminListen = &f.adminListen
	}
	o.Upstreams = f.upstreams
	return config.LoadWith(f.config, config.LoadOptions{Overrides: o})
}

// gcPercent is flowgate's GOGC unless the environment sets one.
const gcPercent = 400

// newLogger writes JSON lines to out, which the access log shares. out is
// buffered: a write syscall per line would cost more than the line itself;
// Sync at exit flushes the tail.
func newLogger(level string, out zapcore.WriteSyncer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "time"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), out, lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.AddSync(os.Stderr))), nil
}

func serve(cfg config.Config, log *zap.Logger, accessLog io.Writer, demo *fakeflow.Instance) error {
	reg := newRegistry()
	var m *metrics.Metrics // nil records nothing
	if config.Bool(cfg.Metrics.Enabled, true) {
		m = metrics.NewWith(reg, metrics.Options{MaxWorkflows: cfg.Metrics.MaxWorkflows})
		var named []string
		for id := range cfg.Quota.Workflows {
			named = append(named, flow.CanonicalID(id))
		}
		for id := range cfg.Cache.Workflows {
			named = append(named, flow.CanonicalID(id))
		}
		m.ReserveWorkflows(named)
	}
	rdb := redisClient(cfg.Redis, log)
	if rdb != nil {
		defer rdb.Close()
	}
	var store *cache.Store
	if cfg.Cache.AnyEnabled() {
		var err error
		store, err = cache.NewStore(cache.Options{MaxMemory: int64(cfg.Cache.MaxMemory), Redis: rdb, Metrics: m, Logger: log.Named("cache")})
		if err != nil {
			return err
		}
		defer store.Close()
		if len(cfg.Cache.VaryHeaders) == 0 {
			log.Warn("cache.vary_headers is empty: every caller of a cached workflow shares its answers, whatever their credentials")
		}
	}
	// Metering and quotas keep their state in Redis when it is set, else
	// in the embedded store; the deferred closes run after the gateway's,
	// which hands them its last records.
	var db *bbolt.DB
	if rdb == nil {
		var err error
		if db, err = openStore(cfg.Metering.StoreDir, log); err != nil {
			return err
		}
		defer db.Close()
	}
	prices := metering.Bundled()
	if pf := cfg.Metering.PricesFile; pf != "" {
		var err error
		if prices, err = metering.LoadPrices(pf); err != nil {
			return fmt.Errorf("metering.prices_file: %w", err)
		}
	}
	if _, _, ok := prices.Lookup(cfg.Metering.DefaultModel); !ok {
		log.Warn("metering.default_model is not in the price table: runs it prices cost 0",
			zap.String("model", cfg.Metering.DefaultModel))
	}
	lopts := ledger.Options{Logger: log.Named("ledger"), OnError: func(error) { m.LedgerError(rdb != nil) }}
	var led ledger.Ledger
	if rdb != nil {
		led = ledger.NewRedis(rdb, lopts)
	} else {
		var err error
		if led, err = ledger.NewBolt(db, lopts); err != nil {
			return fmt.Errorf("usage ledger: %w", err)
		}
	}
	defer led.Close()
	q, err := quota.New(quota.Options{Config: cfg.Quota, Redis: redisOrNil(rdb), DB: db, CredentialHeaders: cfg.Cache.VaryHeaders,
		Logger: log.Named("quota"), RedisError: m.QuotaRedisError})
	if err != nil {
		return err
	}
	defer q.Close()
	m.QuotaBudgets(q.BudgetUsage)

	g, err := proxy.New(cfg, proxy.Options{Logger: log, Metrics: m, AccessLog: accessLog, Cache: store,
		Quota: q, Prices: prices, Ledger: led})
	if err != nil {
		return err
	}
	g.Start()
	defer g.Close()

	errLog, err := newHTTPErrorLog(log)
	if err != nil {
		return err
	}
	main := &http.Server{
		Addr:              cfg.Server.Listen,
		Handler:           g,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
		ErrorLog:          errLog,
		ConnState:         m.ConnState,
		// No ReadTimeout or WriteTimeout: either would cut long streams.
		// Bodies get their own read deadline; responses an idle timeout.
	}
	servers := []*http.Server{main}
	var tlsSrv *http.Server
	var term *tlsserve.Terminator
	if cfg.TLS.TLSOn() {
		to := tlsserve.Options{Logger: log.Named("tls"), Registry: reg}
		if rdb != nil {
			// Replicas share accounts, certificates and locks: one orders,
			// any answers a challenge, all serve the same certificate.
			to.Storage = certstore.New(rdb, certstore.Options{Logger: log.Named("certstore")})
		}
		var err error
		if term, err = tlsserve.New(cfg.TLS, to); err != nil {
			return err
		}
		defer term.Close()
		// The same handler chain and limits as the plain listener; no
		// ReadTimeout or WriteTimeout either, which would cut streams.
		tlsSrv = &http.Server{
			Addr:              cfg.TLS.Listen,
			Handler:           term.HSTS(g),
			TLSConfig:         term.TLSConfig(),
			ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
			IdleTimeout:       cfg.Server.IdleTimeout.D(),
			MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
			ErrorLog:          term.ErrorLog(errLog),
			ConnState:         m.ConnState,
		}
		main.Handler = term.PlainHandler(g)
		servers = append(servers, tlsSrv)
	}
	var metricsSrv, adminSrv *http.Server
	if cfg.Server.MetricsListen != "" {
		metricsSrv = opsServer(cfg.Server.MetricsListen, opsHandler(reg, g), cfg.Server, errLog)
		servers = append(servers, metricsSrv)
	}
	if cfg.Server.AdminListen != "" {
		adminSrv = opsServer(cfg.Server.AdminListen, admin.HandlerWith(cfg.Admin.Token, admin.Deps{Gateway: g, Quota: q, Ledger: led}), cfg.Server, errLog)
		servers = append(servers, adminSrv)
	}

	// Signals are taken before anything serves: a SIGTERM that arrives as
	// soon as the listeners answer must drain, not kill.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	// SIGHUP's default would kill the process mid-stream; nginx habits
	// (reload hooks, logrotate) send it. Nothing needs reloading: files
	// mode re-reads changed certificates by itself, and a config change
	// takes a restart, which drains.
	hup, served := make(chan os.Signal, 1), make(chan struct{})
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(served) }()
	go func() {
		for {
			select {
			case <-hup:
				log.Warn("SIGHUP ignored: flowgate does not reload its config (restart it to apply a change; certificate files are re-read when they change)")
			case <-served:
				return
			}
		}
	}()
	// Bind every listener before serving any, so a taken port fails the
	// start instead of leaving a half-up gateway.
	lns := make([]net.Listener, len(servers))
	for i, s := range servers {
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
		lns[i] = ln
		// The bound address, for the start line: a port 0 becomes the
		// port the kernel chose. Serve(ln) does not read Addr.
		s.Addr = ln.Addr().String()
	}
	if term != nil {
		if err := term.Start(portOf(lns[0]), portOf(lns[1])); err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
	}
	errc := make(chan error, len(servers))
	for i, s := range servers {
		if s == tlsSrv {
			// ServeTLS sets up HTTP/2 beside HTTP/1.1 (ALPN); the
			// certificates come from TLSConfig.GetCertificate.
			go func() { errc <- s.ServeTLS(lns[i], "", "") }()
			continue
		}
		go func() { errc <- s.Serve(lns[i]) }()
	}
	ups := make([]string, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		ups = append(ups, u.URL)
	}
	log.Info("flowgate started", zap.String("version", version), zap.String("listen", main.Addr),
		zap.String("tls_listen", boundAddr(tlsSrv)),
		zap.String("metrics_listen", boundAddr(metricsSrv)), zap.String("admin_listen", boundAddr(adminSrv)),
		zap.Strings("upstreams", ups))
	_ = log.Sync() // the start line is what supervisors and tests wait for
	if demo != nil {
		printDemo(lns[0].Addr().String())
	}

	select {
	case err := <-errc:
		return err
	case s := <-sig:
		log.Info("shutting down: draining in-flight requests", zap.String("signal", s.String()),
			zap.Duration("deadline", cfg.Server.ShutdownTimeout.D()))
	}
	g.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.D())
	defer cancel()
	go func() {
		// A second signal means "now": an operator who asks twice does
		// not want to wait out the drain.
		select {
		case s := <-sig:
			log.Warn("second signal: ending the drain now", zap.String("signal", s.String()))
			cancel()
		case <-ctx.Done():
		}
	}()
	// The proxy listener drains first; ops and admin stay up meanwhile so
	// /readyz reports the drain and metrics can be scraped to the end.
	// Both proxy listeners (plain and HTTPS) drain together.
	proxies := []*http.Server{main}
	if tlsSrv != nil {
		proxies = append(proxies, tlsSrv)
	}
	var drained sync.WaitGroup
	for _, s := range proxies {
		drained.Add(1)
		go func() {
			defer drained.Done()
			if err := s.Shutdown(ctx); err != nil {
				log.Warn("drain deadline passed: closing the remaining connections", zap.String("listen", s.Addr), zap.Error(err))
				s.Close()
			}
		}()
	}
	drained.Wait()
	for _, s := range servers {
		if s != main && s != tlsSrv {
			s.Close()
		}
	}
	log.Info("flowgate stopped")
	return nil
}

// newHTTPErrorLog is the ErrorLog of flowgate's http.Servers. net/http
// writes to it what it cannot answer to a client: accept errors, handler
// panics, TLS handshake failures, misused ResponseWriters. Each of those
// is worth a look, so the lines are logged at warn, which a log.level of
// warn still shows. (zap.NewStdLog would log them at info, under the
// level of a logger raised to warn: they vanished.)
func newHTTPErrorLog(log *zap.Logger) (*stdlog.Logger, error) {
	l, err := zap.NewStdLogAt(log.Named("http"), zap.WarnLevel)
	if err != nil {
		return nil, fmt.Errorf("http error log: %w", err)
	}
	return l, nil
}

// Limits of the metrics and admin listeners. Their requests are small
// GETs from Prometheus, probes and an operator, so unlike the proxy
// listener they can have total read and write timeouts, and tight ones:
// nothing there streams or uploads.
const (
	// opsReadHeaderTimeout caps server.read_header_timeout: a probe or a
	// scrape sends its headers at once.
	opsReadHeaderTimeout = 5 * time.Second
	// opsReadTimeout bounds reading a whole request, headers and body:
	// these endpoints take no body worth waiting for, and a client that
	// trickles one holds a connection and a goroutine until it elapses.
	opsReadTimeout = 10 * time.Second
	// opsWriteTimeout bounds writing an answer. A /metrics scrape is the
	// largest, a few hundred KiB at most, and Prometheus gives up after
	// its scrape_timeout (10 s by default) anyway; without it a client
	// that stops reading holds the handler forever.
	opsWriteTimeout = 30 * time.Second
	// opsMaxHeaderBytes is the header block these listeners accept (net/http
	// allows 4 KiB of slack on top); larger gets 431. Probes, scrapes and an
	// admin token fit in far less, and the proxy listener's larger
	// server.max_header_bytes exists for browsers' cookies, which never
	// come here.
	opsMaxHeaderBytes = 16 << 10
)

// opsServer is the http.Server of the metrics and of the admin listener.
// Keep-alive connections close after server.idle_timeout: without an
// IdleTimeout (and with no ReadTimeout to fall back on) an idle
// connection stayed open for good, so every scraper, probe or client
// that kept one open held a file descriptor and a goroutine until exit.
func opsServer(addr string, h http.Handler, s config.Server, errLog *stdlog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: min(s.ReadHeaderTimeout.D(), opsReadHeaderTimeout),
		ReadTimeout:       opsReadTimeout,
		WriteTimeout:      opsWriteTimeout,
		IdleTimeout:       s.IdleTimeout.D(),
		MaxHeaderBytes:    opsMaxHeaderBytes,
		ErrorLog:          errLog,
	}
}

// portOf is the port a listener is bound to.
func portOf(ln net.Listener) int {
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// boundAddr is the address s listens on, or "" for a listener that is off.
func boundAddr(s *http.Server) string {
	if s == nil {
		return ""
	}
	return s.Addr
}

// redisClient connects to the shared store, or returns nil without one.
// It does not dial here: a Redis that is down at start is a degraded
// cache, not a gateway that will not start, and go-redis reconnects by
// itself. The options are the cache's (short timeouts, no retries: every
// caller has a memory level to fall back on).
func redisClient(c config.Redis, log *zap.Logger) *redis.Client {
	if c.Addr == "" {
		return nil
	}
	// go-redis logs every failed dial; at debug, a Redis outage does not
	// flood the log (the cache counts the errors in its metric).
	redis.SetLogger(cache.RedisLogger(log.Named("redis")))
	o := cache.RedisOptions(c.Addr, c.Password, c.DB)
	o.PoolSize = 64
	o.MinIdleConns = 2
	return redis.NewClient(o)
}

// servePprof exposes the runtime profiles on their own listener, never on
// the proxy or metrics ports.
func servePprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go http.Serve(ln, mux)
	return nil
}

// newRegistry is the one registry the process exposes: the runtime's and
// the process's collectors, plus whatever the packages register on it.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func opsHandler(reg *prometheus.Registry, g *proxy.Gateway) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !g.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"status":"unavailable","message":"draining or no healthy upstream"}`+"\n")
			return
		}
		io.WriteString(w, `{"status":"ready"}`+"\n")
	})
	return mux
}

func printDemo(addr string) {
	_, port, _ := net.SplitHostPort(addr)
	base := "http://127.0.0.1:" + port
	fmt.Fprintf(os.Stderr, `
flowgate demo: proxying to an embedded Flowise stand-in (fakeflow).
  JSON:    curl -s %[1]s/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11 -H 'Content-Type: application/json' -d '{"question":"hi"}'
  Stream:  curl -sN %[1]s/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11 -H 'Content-Type: application/json' -d '{"question":"hi","streaming":true}'
  Metrics: curl -s http://127.0.0.1:9090/metrics | grep ^flowgate_
Ctrl-C stops it.

`, base)
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "flowgate validate: -config FILE is required")
		return 2
	}
	if _, err := config.Load(*path); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

func cmdHealthcheck(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:9090/healthz", "health endpoint to ask")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(*url)
	if err != nil {
		fmt.Fprintf(stderr, "flowgate healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "flowgate healthcheck: %s answered %d\n", *url, resp.StatusCode)
		return 1
	}
	return 0
}

func versionString() string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " " + s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("flowgate %s%s %s/%s %s", version, rev, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
