package proxy

import (
	"context"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Upstream is one flow-server replica and everything the balancer and the
// health checks know about it. All methods are safe for concurrent use.
type Upstream struct {
	Name string
	URL  *url.URL

	ttfb prometheus.Observer // flowgate_upstream_ttfb_seconds{upstream=Name}

	// removed: discovery dropped it. It takes no new requests; those
	// under way finish.
	removed atomic.Bool
	// stopProbe ends its active checks (guarded by Gateway.setMu).
	stopProbe context.CancelFunc

	// inflight counts requests sent and not yet finished; a streamed
	// response counts until its last byte.
	inflight atomic.Int64

	// activeUp is the verdict of the active checks; true until they say
	// otherwise, so a gateway starting next to a slow upstream still tries it.
	activeUp atomic.Bool
	// coolUntil (unix nanoseconds) keeps a passively failed upstream out.
	coolUntil atomic.Int64
	// answered: an active probe has passed at least once. Readiness waits
	// for it, so a gateway whose flow servers never came up is not ready.
	answered atomic.Bool

	// confirming: a probe is checking failures that a client could have
	// caused; unconfirmed counts the failures it answers for.
	confirming  atomic.Bool
	unconfirmed atomic.Int64

	mu        sync.Mutex
	failTimes []time.Time // passive failures inside the window, oldest first
	passes    int         // consecutive active passes
	fails     int         // consecutive active failures
}

func newUpstream(name string, u *url.URL) *Upstream {
	up := &Upstream{Name: name, URL: u, ttfb: noObserver{}}
	up.activeUp.Store(true)
	return up
}

type noObserver struct{}

func (noObserver) Observe(float64) {}

// InFlight is the number of requests currently forwarded to the upstream.
func (u *Upstream) InFlight() int64 { return u.inflight.Load() }

// Healthy reports whether the upstream may receive traffic at now.
func (u *Upstream) Healthy(now time.Time) bool {
	return u.activeUp.Load() && now.UnixNano() >= u.coolUntil.Load() && !u.removed.Load()
}

// passiveFail records a failure seen on real traffic and reports whether it
// took the upstream out (maxFails within window). With canEject false the
// failure is counted but the upstream stays in.
func (u *Upstream) passiveFail(now time.Time, maxFails int, window, cooldown time.Duration, canEject bool) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	cut := now.Add(-window)
	i := 0
	for i < len(u.failTimes) && u.failTimes[i].Before(cut) {
		i++
	}
	u.failTimes = append(u.failTimes[:0], u.failTimes[i:]...)
	u.failTimes = append(u.failTimes, now)
	if len(u.failTimes) < maxFails || !canEject {
		return false
	}
	u.failTimes = u.failTimes[:0]
	u.coolUntil.Store(now.Add(cooldown).UnixNano())
	return true
}

// activeResult records one probe and reports a change of the active verdict.
func (u *Upstream) activeResult(ok bool, healthyAfter, unhealthyAfter int) (changed, up bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	was := u.activeUp.Load()
	if ok {
		u.answered.Store(true)
		u.passes++
		u.fails = 0
		if !was && u.passes >= healthyAfter {
			u.activeUp.Store(true)
			// A probe that passes ends a passive cool-down early too: the
			// upstream has shown it answers again.
			u.coolUntil.Store(0)
			return true, true
		}
		return false, was
	}
	u.fails++
	u.passes = 0
	if was && u.fails >= unhealthyAfter {
		u.activeUp.Store(false)
		return true, false
	}
	return false, was
}
