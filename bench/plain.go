package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// servePlain is the reference floor for a Go proxy: httputil.ReverseProxy
// with a keep-alive transport and nothing else (no logs, no metrics, no
// headers, no body buffering). Target "httputil", hidden subcommand
// "serve-plain"; not in the default target list.
func servePlain(args []string) int {
	fs := flag.NewFlagSet("serve-plain", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "")
	upstream := fs.String("upstream", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 4 * time.Second, DisableCompression: true},
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = http.Serve(ln, rp) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return 0
}
