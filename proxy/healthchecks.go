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
	for _, u := range g.ups {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			t := time.NewTicker(hc.Interval.D())
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
}

func (g *Gateway) probe(ctx context.Context, c *http.Client, u *Upstream) {
	hc := g.cfg.Health.Active
	target := *u.URL
	target.Path = joinPath(u.URL.Path, hc.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return
	}
	req.Header.Set("User-Agent", "flowgate-healthcheck")
	resp, err := c.Do(req)
	ok := err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300
	if resp != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
	}
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

// passiveFailure counts a failure seen on real traffic.
func (g *Gateway) passiveFailure(u *Upstream, reason string) {
	g.metrics.UpstreamFailure(u.Name, reason)
	ph := g.cfg.Health.Passive
	if !ph.On() {
		return
	}
	now := time.Now()
	if u.passiveFail(now, ph.MaxFails, ph.FailWindow.D(), ph.Cooldown.D(), g.othersHealthy(u, now)) {
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
	for _, o := range g.ups {
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
