package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/flowgate/flowgate/proxy"
)

// floorTarget is the floor under flowgate (issue 12): net/http's server and
// flowgate's own upstream client with nothing else (proxy.Floor), run by
// this program's hidden subcommand "serve-floor". What flowgate costs above
// it is flowgate's own work; what it costs itself is net/http's and the
// upstream client's.
const floorTarget = "floor"

// serveFloor serves proxy.Floor in front of -upstream on -listen until
// SIGTERM or SIGINT, on net/http's server with its defaults.
func serveFloor(args []string) int {
	fs := flag.NewFlagSet("serve-floor", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "")
	upstream := fs.String("upstream", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		fmt.Fprintf(os.Stderr, "serve-floor: bad -upstream %q: %v\n", *upstream, err)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: proxy.Floor(u)}
	go func() { _ = srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return 0
}
