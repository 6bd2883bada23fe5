package proxy

import (
	"context"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// activeChecks probes every upstream with GET health.active.path (Flowise's
// /api/v1/ping by default) and flips its verdict after the configured
// number of consecutive passes or failures.
func (g *Gateway) activeChecks(ctx context.Context) {
	hc := g.cfg.Health.Active
	client := &http.Client{
		Transport: newProbeTransport(hc.Timeout.D(), g.cfg.Proxy.IdleConnTimeout.D(), g.upstreamTLS),
		Timeout:   hc.Timeout.D(),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	g.probeClient = client
	g.setMu.Lock()
	defer g.setMu.Unlock()
	for _, u := range g.set.Load().ups {
		g.startProbe(u)
	}
}

// startProbe runs u's active checks until the gateway closes or
// discovery drops u. Before Start, or with active checks off, it does
// nothing: Start probes what is there then. g.setMu is held.
func (g *Gateway) startProbe(u *Upstream) {
	if g.ctx == nil || g.probeClient == nil {
		return
	}
	ctx, cancel := context.WithCancel(g.ctx)
	u.stopProbe = cancel
	interval, client := g.cfg.Health.Active.Interval.D(), g.probeClient
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			g.probe(ctx, client, u)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// stopProbeOf ends u's active checks. g.setMu is held.
func (g *Gateway) stopProbeOf(u *Upstream) {
	if u.stopProbe != nil {
		u.stopProbe()
		u.stopProbe = nil
	}
}

func (g *Gateway) probe(ctx context.Context, c *http.Client, u *Upstream) {
	hc := g.cfg.Health.Active
	resp, err := probeOnce(ctx, c, u, hc.Path)
	ok := err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300
	if ctx.Err() != nil {
		return // shutting down: a cancelled probe says nothing of the upstream
	}
	first := ok && !u.answered.Load()
	changed, up := u.activeResult(ok, hc.HealthyThreshold, hc.UnhealthyThreshold)
	if first && !changed {
		g.notifyHealth() // readiness changes with the first passing probe
	}
	if changed {
		fields := []zap.Field{zap.String("upstream", u.Name), zap.Bool("healthy", up)}
		if err != nil {
			fields = append(fields, zap.Error(err))
		} else if resp != nil {
			fields = append(fields, zap.Int("status", resp.StatusCode))
		}
		g.log.Warn("active health check changed upstream state", fields...)
		g.notifyHealth()
	}
}

// probeOnce asks the upstream's health path once. The answer's body is
// read (bounded) and closed; resp is nil when err is set.
func probeOnce(ctx context.Context, c *http.Client, u *Upstream, path string) (*http.Response, error) {
	target := *u.URL
	target.Path = joinPath(u.URL.Path, path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "flowgate-healthcheck")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return resp, nil
}

// passiveFailure counts a failure seen on real traffic.
//
// A failure after the request was sent (the connection reset or closed
// without an answer, a body cut short) may be the request's doing: Node
// destroys the socket of requests it refuses to parse, and any client can
// send those. Such failures count only once a probe of the health path
// fails too; one probe at a time answers for all the failures seen while
// it runs, and counts as one. Connection failures and the configured
// statuses count at once.
// Without active checks there is no probe, and every failure counts.
func (g *Gateway) passiveFailure(u *Upstream, reason string) {
	g.metrics.UpstreamFailure(u.Name, reason)
	ph := g.cfg.Health.Passive
	if !ph.On() {
		return
	}
	if clientCausable(reason) && g.probeClient != nil {
		u.unconfirmed.Add(1)
		if u.confirming.CompareAndSwap(false, true) {
			// Not in g.wg: Close cancels g.ctx, which ends the probe at once.
			go g.confirm(u, reason)
		}
		return
	}
	g.countPassive(u, reason, 1)
}

func clientCausable(reason string) bool {
	return reason == "upstream_error" || reason == "body_read"
}

// confirm probes u and counts the failures waiting on it if the probe fails.
func (g *Gateway) confirm(u *Upstream, reason string) {
	resp, err := probeOnce(g.ctx, g.probeClient, u, g.cfg.Health.Active.Path)
	// Failures that arrive from here on wait for the next probe.
	u.confirming.Store(false)
	n := u.unconfirmed.Swap(0)
	switch {
	case g.ctx.Err() != nil:
	case err != nil || resp.StatusCode < 200 || resp.StatusCode > 299:
		// One failure per failed probe, however many waited on it: a
		// burst of client-made resets and one slow probe must not eject
		// an upstream that active checks would keep.
		g.countPassive(u, reason, 1)
	default:
		g.log.Debug("upstream failures not counted: the health probe passed",
			zap.String("upstream", u.Name), zap.String("reason", reason), zap.Int64("failures", n))
	}
	g.notifyHealth() // tests wait on the verdict
}

// countPassive records n failures against u's passive health.
func (g *Gateway) countPassive(u *Upstream, reason string, n int) {
	ph := g.cfg.Health.Passive
	now := time.Now()
	ejected := false
	for range n {
		ejected = ejected || u.passiveFail(now, ph.MaxFails, ph.FailWindow.D(), ph.Cooldown.D(), g.othersHealthy(u, now))
	}
	if ejected {
		g.log.Warn("passive health check took upstream out",
			zap.String("upstream", u.Name), zap.String("reason", reason), zap.Duration("cooldown", ph.Cooldown.D()))
		g.notifyHealth()
	}
}

// othersHealthy reports whether an upstream other than u can take traffic.
// Passive checks never take out the last one, as nginx ignores max_fails
// for a lone server: with nowhere else to go, failing every request is
// worse than trying the one that fails some.
func (g *Gateway) othersHealthy(u *Upstream, now time.Time) bool {
	for _, o := range g.set.Load().ups {
		if o != u && o.Healthy(now) {
			return true
		}
	}
	return false
}

// notifyHealth wakes whoever waits in HealthChanged (tests, readiness).
func (g *Gateway) notifyHealth() {
	g.healthMu.Lock()
	close(g.healthCh)
	g.healthCh = make(chan struct{})
	g.healthMu.Unlock()
}

// HealthChanged returns a channel closed at the next change of any
// upstream's health verdict.
func (g *Gateway) HealthChanged() <-chan struct{} {
	g.healthMu.Lock()
	defer g.healthMu.Unlock()
	return g.healthCh
}
