package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/proxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// serveProfiled runs the gateway wired as cmd/flowgate wires it (same
// logger, registry, collectors and server timeouts) plus net/http/pprof on
// a separate loopback port, for profiling under load without a pprof flag
// in the product binary. It is the hidden subcommand "serve-profiled".
//
// Keep it in step with cmd/flowgate's serve: the profile is only as true as
// this copy of the wiring.
func serveProfiled(args []string) int {
	fs := flag.NewFlagSet("serve-profiled", flag.ContinueOnError)
	conf := fs.String("config", "", "flowgate YAML")
	pprofAddr := fs.String("pprof", "127.0.0.1:6060", "pprof listener")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "time"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(os.Stdout), Size: 256 << 10, FlushInterval: time.Second}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, zap.InfoLevel))
	defer log.Sync()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g, err := proxy.New(cfg, proxy.Options{Logger: log, Metrics: metrics.New(reg)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	g.Start()
	defer g.Close()
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	pln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = http.Serve(pln, mux) }()
	go func() { _ = srv.Serve(ln) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return 0
}
