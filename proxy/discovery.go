package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/flowgate/flowgate/config"
)

// Resolver looks up the addresses of a name; *net.Resolver is one, and
// tests inject their own.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// maxUpstreams bounds the upstreams in rotation at once: a request's
// tried set is a 64-bit mask.
const maxUpstreams = 64

// upstreamSet is the upstreams in rotation. It is replaced whole when
// discovery changes it; a request picks, and retries, from the set it
// started with.
type upstreamSet struct {
	ups []*Upstream
}

// discovery is one dns upstream: a name whose A and AAAA records are the
// replicas.
type discovery struct {
	cfg  config.Upstream
	name string
	// current is what the last good answer gave (guarded by Gateway.setMu).
	current []*Upstream
	failing bool // the last lookup failed (logged once per outage)
}

var errNoRecords = errors.New("no A or AAAA records")

// lookupTimeout bounds one resolution; a resolver that hangs must not
// stall the refresh loop past its next turn.
const lookupTimeout = 5 * time.Second

// resolve looks d's name up and, on a good answer, makes the set follow
// it: new addresses join, vanished ones are marked removed (no new
// requests; those under way finish) and leave the set. A failed or empty
// answer keeps the last good set: a DNS outage must not empty the pool.
func (g *Gateway) resolve(ctx context.Context, d *discovery) {
	lctx, cancel := context.WithTimeout(ctx, min(d.cfg.Refresh.D(), lookupTimeout))
	addrs, err := g.resolver.LookupIPAddr(lctx, d.cfg.DNS)
	cancel()
	if err == nil && len(addrs) == 0 {
		err = errNoRecords
	}
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down: a cancelled lookup says nothing of DNS
		}
		g.metrics.DNSError(d.name)
		g.setMu.Lock()
		first := !d.failing
		d.failing = true
		kept := len(d.current)
		g.setMu.Unlock()
		if first {
			g.log.Warn("upstream discovery failed; keeping the last good set",
				zap.String("dns", d.cfg.DNS), zap.Int("kept", kept), zap.Error(err))
		}
		return
	}
	keys := make([]string, 0, len(addrs))
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		keys = append(keys, netip.AddrPortFrom(ip.Unmap(), uint16(d.cfg.Port)).String())
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	g.setMu.Lock()
	defer g.setMu.Unlock()
	if d.failing {
		d.failing = false
		g.log.Info("upstream discovery answers again", zap.String("dns", d.cfg.DNS))
	}
	old := make(map[string]*Upstream, len(d.current))
	for _, u := range d.current {
		old[u.URL.Host] = u
	}
	next := make([]*Upstream, 0, len(keys))
	var added, gone []string
	var fresh []*Upstream
	for _, k := range keys {
		if u := old[k]; u != nil {
			next = append(next, u)
			delete(old, k)
			continue
		}
		u := newUpstream(d.name+"/"+k, &url.URL{Scheme: d.cfg.Scheme, Host: k})
		u.ttfb = g.metrics.UpstreamTTFB(u.Name)
		next = append(next, u)
		fresh = append(fresh, u)
		added = append(added, u.Name)
	}
	for _, u := range old {
		u.removed.Store(true)
		g.stopProbeOf(u)
		g.metrics.ForgetUpstream(u.Name)
		gone = append(gone, u.Name)
	}
	d.current = next
	g.metrics.Discovered(d.name, len(next))
	if len(added)+len(gone) == 0 {
		return
	}
	g.publishLocked()
	// Probed once in the set: a first passing probe announces readiness,
	// which must find the replica there.
	for _, u := range fresh {
		g.startProbe(u)
	}
	g.log.Info("upstream discovery changed the set", zap.String("dns", d.cfg.DNS),
		zap.Strings("added", added), zap.Strings("removed", gone), zap.Int("replicas", len(next)))
	g.notifyHealth()
}

// publishLocked builds the set in rotation from the static upstreams and
// every discovery's current answer. Past maxUpstreams the rest wait
// outside the rotation (a warning says so). g.setMu is held.
func (g *Gateway) publishLocked() {
	ups := slices.Clone(g.static)
	for _, d := range g.discs {
		ups = append(ups, d.current...)
	}
	if len(ups) > maxUpstreams {
		g.log.Warn("more upstreams than flowgate balances over; the rest are left out",
			zap.Int("upstreams", len(ups)), zap.Int("max", maxUpstreams))
		ups = ups[:maxUpstreams]
	}
	g.set.Store(&upstreamSet{ups: ups})
}

// discover re-resolves d every refresh until ctx ends.
func (g *Gateway) discover(ctx context.Context, d *discovery) {
	defer g.wg.Done()
	t := time.NewTicker(d.cfg.Refresh.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.resolve(ctx, d)
		}
	}
}

// newDiscovery builds d for a dns upstream; its first answer comes from
// New, so the gateway starts with replicas when DNS has them.
func newDiscovery(uc config.Upstream) *discovery {
	d := &discovery{cfg: uc, name: uc.Name}
	if d.name == "" {
		d.name = uc.DNS
	}
	if d.cfg.Scheme == "" {
		d.cfg.Scheme = "http"
	}
	if d.cfg.Refresh <= 0 {
		d.cfg.Refresh = config.Duration(10 * time.Second)
	}
	return d
}
