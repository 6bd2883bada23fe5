package proxy

import (
	"math/rand/v2"
	"time"
)

// leastConn picks the healthy upstream with the fewest in-flight requests,
// breaking ties at random so equal replicas share load evenly.
type leastConn struct {
	ups []*Upstream
	// intN returns a number in [0,n); injected so tests are deterministic.
	intN func(n int) int
}

func newLeastConn(ups []*Upstream, intN func(int) int) *leastConn {
	if intN == nil {
		intN = rand.IntN
	}
	return &leastConn{ups: ups, intN: intN}
}

// pick returns the chosen upstream, or nil when none is healthy. tried is a
// bit set of upstream indexes already attempted by this request; they are
// skipped so a retry goes elsewhere.
func (b *leastConn) pick(now time.Time, tried uint64) (*Upstream, int) {
	return b.pickFrom(b.ups, now, tried)
}

// pickFrom is pick over ups, the set a request started with: discovery
// may publish another meanwhile, and tried's indexes are into this one.
func (b *leastConn) pickFrom(ups []*Upstream, now time.Time, tried uint64) (*Upstream, int) {
	var (
		best     *Upstream
		bestIdx  = -1
		bestLoad int64
		ties     int
	)
	for i, u := range ups {
		if i < 64 && tried&(1<<uint(i)) != 0 {
			continue
		}
		if !u.Healthy(now) {
			continue
		}
		load := u.inflight.Load()
		switch {
		case best == nil || load < bestLoad:
			best, bestIdx, bestLoad, ties = u, i, load, 1
		case load == bestLoad:
			// Reservoir sampling over the tied upstreams: each of k ties
			// ends up chosen with probability 1/k.
			ties++
			if b.intN(ties) == 0 {
				best, bestIdx = u, i
			}
		}
	}
	return best, bestIdx
}
