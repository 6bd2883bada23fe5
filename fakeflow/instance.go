package fakeflow

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Instance is a Server listening on a TCP address, for tests, benchmarks and
// the demo. Its methods are safe for concurrent use.
type Instance struct {
	s    *Server
	addr string // resolved "host:port", kept across Restart

	mu       sync.Mutex
	cur      *generation              // nil when not listening
	draining map[*generation]struct{} // being closed gracefully
}

// generation is one listen period of an Instance (Start or Restart until
// Close or Kill).
type generation struct {
	srv      *http.Server
	served   chan struct{} // closed when Serve returned
	closing  chan struct{} // closed by Close: hung handlers abort
	inflight atomic.Int64  // prediction handlers on this generation's conns
}

// genKey is the context key under which a connection's generation is found.
type genKey struct{}

// nodeKeepAliveTimeout is Node's default server.keepAliveTimeout, which
// Flowise advertises in Keep-Alive: timeout=5.
const nodeKeepAliveTimeout = 5 * time.Second

// killDrainTimeout bounds how long Kill waits for killed handlers to unwind.
const killDrainTimeout = 5 * time.Second

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves a new
// Server with o in a goroutine.
func Start(addr string, o Options) (*Instance, error) {
	return startServer(addr, New(o))
}

// startServer is Start with a ready Server (tests set hooks on it first).
func startServer(addr string, s *Server) (*Instance, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	i := &Instance{s: s, addr: ln.Addr().String()}
	i.cur = i.serve(ln)
	return i, nil
}

func (i *Instance) serve(ln net.Listener) *generation {
	g := &generation{served: make(chan struct{}), closing: make(chan struct{})}
	g.srv = &http.Server{
		Handler:     i.s,
		IdleTimeout: nodeKeepAliveTimeout,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, genKey{}, g)
		},
	}
	go func() {
		defer close(g.served)
		_ = g.srv.Serve(ln)
	}()
	return g
}

// URL returns "http://host:port".
func (i *Instance) URL() string { return "http://" + i.addr }

// Addr returns the listening "host:port".
func (i *Instance) Addr() string { return i.addr }

// Server returns the handler, whose Stats survive Restart.
func (i *Instance) Server() *Server { return i.s }

// Close shuts down gracefully: it stops listening, closes idle connections
// and waits for in-flight requests to finish. Requests in hang mode are
// aborted (their connections closed without an answer), since they would
// never finish. Closing a closed Instance returns nil.
func (i *Instance) Close() error {
	i.mu.Lock()
	g := i.cur
	i.cur = nil
	if g != nil {
		if i.draining == nil {
			i.draining = make(map[*generation]struct{})
		}
		i.draining[g] = struct{}{}
	}
	i.mu.Unlock()
	if g == nil {
		return nil
	}
	close(g.closing)
	err := g.srv.Shutdown(context.Background())
	<-g.served
	i.mu.Lock()
	delete(i.draining, g)
	i.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil // a Kill cut the graceful shutdown short
	}
	return err
}

// Kill emulates a crash: it closes the listener and every open connection at
// once, without answering, and returns how many prediction handlers were in
// flight at that moment. New dials to the address are refused afterwards.
// Kill returns once the killed handlers have unwound (bounded by a few
// seconds, for a handler stuck in Options.OnRequest). Kill also cuts short
// a Close still waiting for in-flight requests. Killing a stopped Instance
// returns 0.
func (i *Instance) Kill() int {
	i.mu.Lock()
	gens := make([]*generation, 0, 1+len(i.draining))
	if i.cur != nil {
		gens = append(gens, i.cur)
		i.cur = nil
	}
	for g := range i.draining {
		gens = append(gens, g)
	}
	i.mu.Unlock()
	n := 0
	for _, g := range gens {
		n += int(g.inflight.Load())
	}
	for _, g := range gens {
		_ = g.srv.Close()
	}
	deadline := time.Now().Add(killDrainTimeout)
	for _, g := range gens {
		<-g.served
		for g.inflight.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	return n
}

// Restart listens again on the same address with the same Server (Stats
// kept), after Kill or Close.
func (i *Instance) Restart() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cur != nil {
		return errors.New("fakeflow: instance is already running on " + i.addr)
	}
	ln, err := net.Listen("tcp", i.addr)
	if err != nil {
		return err
	}
	i.cur = i.serve(ln)
	return nil
}
