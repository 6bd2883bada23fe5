package quota

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter counts admissions and usage against a policy's limits. One
// implementation keeps the counts in this process (memory), the other in
// Redis, shared by every replica; the Enforcer picks per request.
type limiter interface {
	// admit checks every limit of p for key and, only when all pass,
	// counts the request: the rate's bucket and one execution in each
	// budget's window. now is the caller's clock (Unix microseconds); the
	// Redis limiter uses Redis's own, so replicas agree on windows.
	admit(ctx context.Context, key string, p *Policy, nowUs int64) (outcome, error)
	// add adds to the budget windows that admittedUs fell in: tokens and
	// cost once an execution is metered, -1 execution for a refund.
	add(ctx context.Context, key string, p *Policy, admittedUs int64, u usage) error
}

// memory is the in-process limiter: golang.org/x/time/rate for rates,
// counters for budget windows. Its maps are bounded (maxKeys each): a
// client that sprays caller values cannot grow them without limit; past
// the bound arbitrary entries are forgotten, which only ever makes a limit
// more lenient for the forgotten caller.
type memory struct {
	mu      sync.Mutex
	rates   map[string]*rateEntry
	windows map[windowKey]*usage
	// Pinned entries are never evicted: those of workflows the config or
	// the admin API names, without per-caller splitting. Their number is
	// bounded by the policies, not by clients, and a flood of invented
	// callers or workflow ids must not reset a real workflow's budget.
	prates   map[string]*rateEntry
	pwindows map[windowKey]*usage
	maxKeys  int
	dirty    map[windowKey]struct{} // windows changed since the last save
}

type rateEntry struct {
	lim      *rate.Limiter
	emission time.Duration
	burst    int64
}

type windowKey struct {
	key    string
	winSec int64
	idx    int64
}

func newMemory(maxKeys int) *memory {
	return &memory{rates: map[string]*rateEntry{}, windows: map[windowKey]*usage{},
		prates: map[string]*rateEntry{}, pwindows: map[windowKey]*usage{},
		maxKeys: maxKeys, dirty: map[windowKey]struct{}{}}
}

func (m *memory) admit(_ context.Context, key string, p *Policy, nowUs int64) (outcome, error) {
	o := outcome{nowUs: nowUs, refused: -1}
	now := time.UnixMicro(nowUs)
	m.mu.Lock()
	defer m.mu.Unlock()
	var r *rate.Reservation
	var re *rateEntry
	if p.emission > 0 {
		re = m.rate(key, p)
		r = re.lim.ReserveN(now, 1)
		if d := r.DelayFrom(now); !r.OK() || d > 0 {
			r.CancelAt(now)
			o.refused, o.what = 0, "requests"
			if !r.OK() {
				d = p.emission
			}
			o.rateRetryUs = max(int64(d/time.Microsecond), 1)
			o.rateResetUs = o.rateRetryUs
			return o, nil
		}
	}
	var ws [8]*usage
	cur := ws[:0]
	for i, b := range p.budgets {
		u := m.window(windowKey{key, b.winSec, b.windowIndex(nowUs)}, p.pinned)
		cur = append(cur, u)
		if what := exhausted(b, *u); what != "" {
			if r != nil {
				r.CancelAt(now)
			}
			o.refused, o.what = i+1, what
			return o, nil
		}
	}
	o.used = make([]usage, len(cur))
	for i, u := range cur {
		u.executions++
		o.used[i] = *u
		m.dirty[windowKey{key, p.budgets[i].winSec, p.budgets[i].windowIndex(nowUs)}] = struct{}{}
	}
	if re != nil {
		tokens := re.lim.TokensAt(now)
		o.rateRemaining = int64(math.Max(0, math.Floor(tokens)))
		o.rateResetUs = int64((float64(re.burst) - tokens) * float64(re.emission/time.Microsecond))
	}
	return o, nil
}

// exhausted names the measure of b that u has used up, or "".
func exhausted(b budget, u usage) string {
	switch {
	case b.executions > 0 && u.executions >= b.executions:
		return "executions"
	case b.tokens > 0 && u.tokens >= b.tokens:
		return "tokens"
	case b.costNano > 0 && u.costNano >= b.costNano:
		return "cost_usd"
	}
	return ""
}

// rate returns key's bucket, rebuilt when the policy's rate changed.
func (m *memory) rate(key string, p *Policy) *rateEntry {
	rates := m.rates
	if p.pinned {
		rates = m.prates
	}
	e := rates[key]
	if e != nil && e.emission == p.emission && e.burst == p.burst {
		return e
	}
	if e == nil && !p.pinned && len(m.rates) >= m.maxKeys {
		for k := range m.rates { // map order is random: an arbitrary victim
			delete(m.rates, k)
			break
		}
	}
	e = &rateEntry{lim: rate.NewLimiter(rate.Every(p.emission), int(min(p.burst, math.MaxInt32))), emission: p.emission, burst: p.burst}
	rates[key] = e
	return e
}

func (m *memory) window(k windowKey, pinned bool) *usage {
	if u := m.pwindows[k]; u != nil {
		return u
	}
	u := m.windows[k]
	if pinned {
		if u != nil {
			delete(m.windows, k)
		} else {
			u = &usage{}
		}
		m.pwindows[k] = u
		return u
	}
	if u == nil {
		if len(m.windows) >= m.maxKeys {
			for victim := range m.windows {
				delete(m.windows, victim)
				delete(m.dirty, victim)
				break
			}
		}
		u = &usage{}
		m.windows[k] = u
	}
	return u
}

func (m *memory) add(_ context.Context, key string, p *Policy, admittedUs int64, d usage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range p.budgets {
		k := windowKey{key, b.winSec, b.windowIndex(admittedUs)}
		u := m.window(k, p.pinned)
		u.executions = max(0, u.executions+d.executions)
		u.tokens += d.tokens
		u.costNano += d.costNano
		m.dirty[k] = struct{}{}
	}
	return nil
}

// sweep forgets windows that have ended and buckets that are full again
// (a full bucket is what a new one would be).
func (m *memory) sweep(now time.Time) {
	nowUs := now.UnixMicro()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ws := range []map[windowKey]*usage{m.windows, m.pwindows} {
		for k := range ws {
			if (k.idx+1)*k.winSec*1e6 <= nowUs {
				delete(ws, k)
				delete(m.dirty, k)
			}
		}
	}
	for _, rs := range []map[string]*rateEntry{m.rates, m.prates} {
		for k, e := range rs {
			if e.lim.TokensAt(now) >= float64(e.burst) {
				delete(rs, k)
			}
		}
	}
}

// takeDirty returns the windows changed since the last call, with their
// counts, for the embedded store.
func (m *memory) takeDirty() map[windowKey]usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.dirty) == 0 {
		return nil
	}
	out := make(map[windowKey]usage, len(m.dirty))
	for k := range m.dirty {
		if u := m.windows[k]; u != nil {
			out[k] = *u
		} else if u := m.pwindows[k]; u != nil {
			out[k] = *u
		}
		delete(m.dirty, k)
	}
	return out
}

// load restores saved windows (the embedded store, at start).
func (m *memory) load(k windowKey, u usage) {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.window(k, false) = u // pinned again at its next use
}
