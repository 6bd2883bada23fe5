package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/metrics"
)

// fakeResolver answers what the test last set: addresses, or an error.
type fakeResolver struct {
	mu      sync.Mutex
	ips     []string
	err     error
	lookups atomic.Int64
}

func (r *fakeResolver) set(ips []string, err error) {
	r.mu.Lock()
	r.ips, r.err = ips, err
	r.mu.Unlock()
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	r.lookups.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return nil, &net.DNSError{Err: r.err.Error(), Name: host}
	}
	out := make([]net.IPAddr, 0, len(r.ips))
	for _, s := range r.ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(s)})
	}
	return out, nil
}

// replicas starts n fakeflows on one port, each on its own loopback
// address (127.0.0.1, .2, ...), as pods behind a headless Service are.
func replicas(t *testing.T, n int) (ips []string, port int, flows []*fakeflow.Instance) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(first.Addr())
		port, _ = strconv.Atoi(p)
		flows = []*fakeflow.Instance{first}
		ips = []string{"127.0.0.1"}
		for i := 2; i <= n; i++ {
			ip := "127.0.0." + strconv.Itoa(i)
			f, err := fakeflow.Start(net.JoinHostPort(ip, p), fakeflow.Options{})
			if err != nil {
				break // the port is taken on that address: try another
			}
			flows = append(flows, f)
			ips = append(ips, ip)
		}
		if len(flows) == n {
			for _, f := range flows {
				t.Cleanup(func() { f.Close() })
			}
			return ips, port, flows
		}
		for _, f := range flows {
			f.Close()
		}
	}
	t.Fatal("no port free on every loopback address")
	return
}

func discoveryGateway(t *testing.T, port int, res Resolver, reg *prometheus.Registry) *Gateway {
	return discoveryGatewayFor(t, "flowise-headless.flowise.svc.cluster.local", port, res, reg)
}

func discoveryGatewayFor(t *testing.T, name string, port int, res Resolver, reg *prometheus.Registry) *Gateway {
	t.Helper()
	cfg := config.Default()
	cfg.Upstreams = []config.Upstream{{DNS: name, Port: port, Name: "flowise", Refresh: config.Duration(time.Hour)}}
	cfg.Health.Active.Interval = config.Duration(20 * time.Millisecond)
	cfg.Health.Active.Timeout = config.Duration(200 * time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{Logger: zaptest.NewLogger(t), Metrics: metrics.New(reg), Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	t.Cleanup(g.Close)
	return g
}

func setNames(g *Gateway) []string {
	var out []string
	for _, u := range g.Upstreams() {
		out = append(out, u.Name)
	}
	return out
}

// Scaling 2 -> 4 -> 1 replicas by changing what DNS answers, under load:
// new replicas take traffic, removed ones take no new requests, and no
// request fails, even once the removed replicas are shut down.
func TestDiscoveryScalesWithoutFailures(t *testing.T) {
	ips, port, flows := replicas(t, 4)
	res := &fakeResolver{}
	res.set(ips[:2], nil)
	reg := prometheus.NewRegistry()
	g := discoveryGateway(t, port, res, reg)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	if got := setNames(g); len(got) != 2 || got[0] != "flowise/127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("first answer: %v", got)
	}

	var failures, done atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 5000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := http.Post(srv.URL+"/api/v1/prediction/11111111-0000-4000-8000-000000000001", "application/json", strings.NewReader(`{"question":"hi"}`))
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if err == nil && res.StatusCode != 200 {
						err = errors.New(res.Status)
					}
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				done.Add(1)
			}
		}()
	}
	// waitServed waits until every replica in want has answered at least
	// min more predictions than at the call.
	waitServed := func(want []*fakeflow.Instance, min int64) {
		t.Helper()
		base := make([]int64, len(want))
		for i, f := range want {
			base[i] = f.Server().Stats().Predictions
		}
		deadline := time.Now().Add(10 * time.Second)
		for i, f := range want {
			for f.Server().Stats().Predictions-base[i] < min {
				if time.Now().After(deadline) {
					t.Fatalf("replica %s served %d, want %d more", f.Addr(), f.Server().Stats().Predictions-base[i], min)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	waitServed(flows[:2], 20)

	res.set(ips, nil) // 2 -> 4
	g.resolve(context.Background(), g.discs[0])
	if got := setNames(g); len(got) != 4 {
		t.Fatalf("after scaling up: %v", got)
	}
	waitServed(flows, 20)

	res.set(ips[2:3], nil) // 4 -> 1: only 127.0.0.3 stays
	before := g.Upstreams()
	g.resolve(context.Background(), g.discs[0])
	if got := setNames(g); len(got) != 1 || !strings.HasPrefix(got[0], "flowise/127.0.0.3:") {
		t.Fatalf("after scaling down: %v", got)
	}
	// The removed replicas finish what the gateway sent them (as a pod
	// leaving a Service's endpoints drains), then go away for good;
	// requests keep flowing to the one left.
	for _, u := range before {
		if !u.removed.Load() {
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for u.InFlight() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s keeps %d requests", u.Name, u.InFlight())
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, i := range []int{0, 1, 3} {
		flows[i].Close()
	}
	waitServed(flows[2:3], 50)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed while scaling, first: %v", n, done.Load(), firstErr.Load())
	}
	if v := metricValue(t, reg, "flowgate_upstream_discovered"); v != 1 {
		t.Errorf("flowgate_upstream_discovered = %v, want 1", v)
	}
	t.Logf("%d requests while scaling 2 -> 4 -> 1", done.Load())
}

// A request under way on a replica that discovery removes finishes whole.
func TestDiscoveryDrainsRemovedReplica(t *testing.T) {
	ips, port, flows := replicas(t, 2)
	res := &fakeResolver{}
	res.set(ips[:1], nil)
	g := discoveryGateway(t, port, res, prometheus.NewRegistry())
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)

	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/prediction/11111111-0000-4000-8000-000000000001", strings.NewReader(`{"question":"hi","streaming":true}`))
	req.Header.Set(fakeflow.HeaderTokenDelay, "50ms")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The stream has started on 127.0.0.1; now DNS moves to 127.0.0.2.
	res.set(ips[1:], nil)
	g.resolve(context.Background(), g.discs[0])
	if got := setNames(g); len(got) != 1 || !strings.HasPrefix(got[0], "flowise/127.0.0.2:") {
		t.Fatalf("set %v", got)
	}
	before := flows[0].Server().Stats().Predictions
	r2, err := http.Post(srv.URL+"/api/v1/prediction/11111111-0000-4000-8000-000000000001", "application/json", strings.NewReader(`{"question":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r2.Body)
	r2.Body.Close()
	if flows[0].Server().Stats().Predictions != before {
		t.Error("a new request went to the removed replica")
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Contains(body, []byte(`"event":"end"`)) {
		t.Fatalf("stream on the removed replica: %v\n%s", err, body)
	}
}

// A failed or empty answer keeps the last good set, and is counted.
func TestDiscoveryKeepsLastGoodSet(t *testing.T) {
	ips, port, _ := replicas(t, 2)
	res := &fakeResolver{}
	res.set(ips, nil)
	reg := prometheus.NewRegistry()
	g := discoveryGateway(t, port, res, reg)
	for _, fail := range []func(){
		func() { res.set(nil, errors.New("server misbehaving")) },
		func() { res.set(nil, nil) }, // no records
	} {
		fail()
		g.resolve(context.Background(), g.discs[0])
		if got := setNames(g); len(got) != 2 {
			t.Fatalf("after a failed lookup: %v", got)
		}
	}
	if v := metricValue(t, reg, "flowgate_upstream_dns_errors_total"); v != 2 {
		t.Errorf("dns errors = %v, want 2", v)
	}
	if v := metricValue(t, reg, "flowgate_upstream_discovered"); v != 2 {
		t.Errorf("discovered = %v, want 2 (the last good answer)", v)
	}
	if !g.Ready() {
		// Readiness needs a passed probe: wait for it.
		deadline := time.Now().Add(5 * time.Second)
		for !g.Ready() {
			if time.Now().After(deadline) {
				t.Fatal("not ready on the kept set")
			}
			select {
			case <-g.HealthChanged():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// A gateway whose DNS has nothing yet starts, answers 503 and is not
// ready; the refresh loop brings the replicas in without a restart.
func TestDiscoveryStartsEmptyAndRefreshes(t *testing.T) {
	ips, port, _ := replicas(t, 1)
	res := &fakeResolver{}
	res.set(nil, errors.New("no such host"))
	cfg := config.Default()
	cfg.Upstreams = []config.Upstream{{DNS: "flowise", Port: port, Refresh: config.Duration(time.Second)}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{Logger: zaptest.NewLogger(t), Metrics: metrics.New(prometheus.NewRegistry()), Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	t.Cleanup(g.Close)
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/ping", nil))
	if rec.Code != http.StatusServiceUnavailable || g.Ready() {
		t.Fatalf("no replicas: %d, ready %v", rec.Code, g.Ready())
	}
	res.set(ips, nil)
	ch := g.HealthChanged()
	select {
	case <-ch: // the refresh published the set
	case <-time.After(5 * time.Second):
		t.Fatal("the refresh never brought the replica in")
	}
	if got := setNames(g); len(got) != 1 || got[0] != "flowise/127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("set %v", got)
	}
}

// The system resolver, through /etc/hosts: "localhost" needs no network.
// Its ::1 answer, where fakeflow does not listen, is found unhealthy by
// the active checks; requests go to 127.0.0.1.
func TestDiscoverySystemResolver(t *testing.T) {
	_, port, _ := replicas(t, 1)
	addrs, err := net.DefaultResolver.LookupIPAddr(context.Background(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve here: %v", err)
	}
	g := discoveryGatewayFor(t, "localhost", port, nil, prometheus.NewRegistry())
	var has4 bool
	for _, u := range g.Upstreams() {
		has4 = has4 || strings.HasPrefix(u.URL.Host, "127.0.0.1:")
	}
	if !has4 {
		t.Fatalf("localhost gave %v", setNames(g))
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	for range 20 {
		res, err := http.Get(srv.URL + "/api/v1/ping")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("ping through localhost discovery: %d", res.StatusCode)
		}
	}
}

// metricValue reads the one series of a family (dns="flowise").
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("%s not found", name)
	return 0
}
