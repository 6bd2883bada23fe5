package quota

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowgate/flowgate/config"
)

// Policy is a workflow's quota policy compiled for the hot path. It is
// immutable; a change builds a new one.
type Policy struct {
	src config.QuotaPolicy

	// rate: a GCRA / token bucket. emission is the time one request
	// "costs"; burst how many fit at once. emission 0: no rate limit.
	emission time.Duration
	burst    int64
	rateWin  string // "1s": the window the 429 names

	budgets []budget

	perCaller string // "", "authorization", "ip", "header"
	// pinned: a policy the config or the admin API names for this
	// workflow, without per-caller splitting; its counts are never
	// evicted from the in-process limiter.
	pinned bool
	listed bool   // named by the config or the admin API, not the default
	header string // canonical header name for "header:<Name>"
	// hashHeader: the header is one of the cache's credential headers.
	// Values are hashed either way now; kept for the caller's listing.
	// (was: the header carries credentials (it is one of the
	// cache's vary headers), so its values are hashed, not stored.
	hashHeader bool
}

// budget is one window's limits; 0 means no limit on that measure.
type budget struct {
	window     time.Duration
	winSec     int64
	executions int64
	tokens     int64
	costNano   int64
}

// compile builds a Policy; p must have passed Check.
func compile(p config.QuotaPolicy, credentialHeaders map[string]bool) *Policy {
	c := &Policy{src: p}
	if r := p.Rate; r != nil && r.Limit > 0 {
		c.emission = r.PerD() / time.Duration(r.Limit)
		if c.emission <= 0 {
			c.emission = 1
		}
		c.burst = r.BurstN()
		c.rateWin = fmtWindow(r.PerD())
	}
	for _, b := range p.Budgets {
		nb := budget{
			window:     b.Window.D(),
			winSec:     int64(b.Window.D() / time.Second),
			executions: b.Executions,
			tokens:     b.Tokens,
			costNano:   int64(b.CostUSD),
		}
		// Budgets of one window length share its counts (the limiters
		// key a window by its length): one budget with the tighter of
		// each limit, or every admission would count twice.
		if i := slices.IndexFunc(c.budgets, func(x budget) bool { return x.winSec == nb.winSec }); i >= 0 {
			o := &c.budgets[i]
			o.executions = tighter(o.executions, nb.executions)
			o.tokens = tighter(o.tokens, nb.tokens)
			o.costNano = tighter(o.costNano, nb.costNano)
			continue
		}
		c.budgets = append(c.budgets, nb)
	}
	switch {
	case strings.HasPrefix(p.PerCaller, "header:"):
		c.perCaller = "header"
		c.header = textproto.CanonicalMIMEHeaderKey(strings.TrimPrefix(p.PerCaller, "header:"))
		c.hashHeader = credentialHeaders[c.header]
	default:
		c.perCaller = p.PerCaller
	}
	return c
}

// tighter is the stricter of two limits, 0 meaning none.
func tighter(a, b int64) int64 {
	if a == 0 || b == 0 {
		return max(a, b)
	}
	return min(a, b)
}

// Config is the policy as written.
func (p *Policy) Config() config.QuotaPolicy { return p.src }

// PerCaller reports whether the limits are split by caller.
func (p *Policy) PerCaller() bool { return p.perCaller != "" }

// CallerKey names the caller of r under the policy: "" when the workflow
// shares its limits. Credentials are hashed (the key lands in Redis and in
// usage reports); an absent header or credential is the caller "-", so
// anonymous callers share one limit rather than escaping it.
func (p *Policy) CallerKey(h http.Header, ip string) string {
	switch p.perCaller {
	case "":
		return ""
	case "ip":
		// An IPv6 client has a /64 to itself: each of its addresses
		// is the same caller.
		if a, err := netip.ParseAddr(ip); err == nil && a.Is6() && !a.Is4In6() {
			pfx, _ := a.Prefix(64)
			return "ip:" + pfx.String()
		}
		return "ip:" + ip
	case "authorization":
		// Flowise reads the key as the text after the last "Bearer "
		// (split('Bearer ').pop()): "Bearer K" and "xBearer Bearer K"
		// are one key there, so they are one caller here.
		v := h.Get("Authorization")
		if i := strings.LastIndex(v, "Bearer "); i >= 0 {
			v = v[i+len("Bearer "):]
		}
		return hashed("auth", v)
	}
	// Header values are always hashed: a header chosen for callers is as
	// likely as not a credential, and keys land in Redis and in reports.
	return hashed("h", h.Get(p.header))
}

func hashed(prefix, v string) string {
	if v == "" {
		return prefix + ":-"
	}
	sum := sha256.Sum256([]byte(v))
	return prefix + ":" + hex.EncodeToString(sum[:12])
}

// windowIndex is the fixed window of b that the instant nowUs (Unix
// microseconds) falls in; windows are aligned to the epoch, so 1h, 24h and
// 30d windows start on UTC boundaries.
func (b budget) windowIndex(nowUs int64) int64 { return nowUs / 1e6 / b.winSec }

// windowEnd is when window idx ends, in Unix microseconds.
func (b budget) windowEnd(idx int64) int64 { return (idx + 1) * b.winSec * 1e6 }

// usage is one window's counts.
type usage struct{ executions, tokens, costNano int64 }

// outcome is what a limiter reports of one admission, the same shape from
// memory and from Redis, so one function turns it into a Decision.
type outcome struct {
	nowUs int64
	// refused: -1 admitted, 0 the rate, 1+i budget i.
	refused int
	what    string // the measure that refused: requests, executions, tokens, cost_usd
	// rate state after the admission: whole requests that may still pass
	// at once, microseconds until the bucket is full again, and on a
	// refusal microseconds until one request would pass.
	rateRemaining int64
	rateResetUs   int64
	rateRetryUs   int64
	// used: each budget's window counts, the admitted execution included.
	used []usage
}

// decide turns an outcome into a Decision with the numbers for the
// RateLimit headers: the limit with the fewest requests left among the
// rate and the execution budgets, or, on a refusal, the limit that
// refused.
func (p *Policy) decide(o outcome, d *Decision) {
	d.Allowed = o.refused < 0
	d.nowUs = o.nowUs
	first := true
	consider := func(limit, remaining, resetUs int64, window string) {
		if first || remaining < d.Remaining {
			d.Limit, d.Remaining, d.Reset, d.Window = limit, remaining, usDur(resetUs), window
			first = false
		}
	}
	if p.emission > 0 {
		consider(p.burst, o.rateRemaining, o.rateResetUs, p.rateWin)
	}
	for i, b := range p.budgets {
		if b.executions > 0 && i < len(o.used) {
			idx := b.windowIndex(o.nowUs)
			consider(b.executions, max(0, b.executions-o.used[i].executions), b.windowEnd(idx)-o.nowUs, fmtWindow(b.window))
		}
	}
	d.HasLimit = !first
	if d.Allowed {
		return
	}
	d.Remaining = 0
	if o.refused == 0 {
		d.Code = CodeRateLimited
		d.Limit, d.Window = p.burst, p.rateWin
		d.RetryAfter = usDur(o.rateRetryUs)
		d.Reset = d.RetryAfter
		d.Message = "rate limit reached: " + strconv.FormatInt(p.src.Rate.Limit, 10) + " requests per " + p.rateWin
	} else {
		b := p.budgets[o.refused-1]
		idx := b.windowIndex(o.nowUs)
		d.Code = CodeQuotaExceeded
		d.Window = fmtWindow(b.window)
		d.RetryAfter = usDur(b.windowEnd(idx) - o.nowUs)
		d.Reset = d.RetryAfter
		switch o.what {
		case "tokens":
			d.Limit = b.tokens
		case "cost_usd":
			d.Limit = b.costNano
			d.LimitUSD = config.USD(b.costNano).String()
		default:
			d.Limit = b.executions
		}
		d.Message = budgetMessage(o.what, b, d.LimitUSD)
	}
	d.HasLimit = true
	d.What = o.what
}

func budgetMessage(what string, b budget, usd string) string {
	w := fmtWindow(b.window)
	switch what {
	case "tokens":
		return "token budget spent: " + strconv.FormatInt(b.tokens, 10) + " tokens per " + w + " window"
	case "cost_usd":
		return "cost budget spent: $" + usd + " per " + w + " window"
	}
	return "execution budget spent: " + strconv.FormatInt(b.executions, 10) + " executions per " + w + " window"
}

func usDur(us int64) time.Duration {
	if us < 0 {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// fmtWindow writes a window as configs usually do: 1s, 24h, 30d.
func fmtWindow(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d%(24*time.Hour) == 0 && d > 24*time.Hour:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}
