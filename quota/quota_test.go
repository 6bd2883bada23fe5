package quota

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
)

// An execution budget is exact: of 1,000 requests at once, spread over
// three replicas sharing Redis (or made of one process), exactly the
// budget's 100 pass.
func TestExecutionBudgetExact(t *testing.T) {
	const wf = "exact-flow"
	pol := config.QuotaPolicy{Budgets: []config.Budget{execBudget(100, 24*time.Hour)}}
	cases := []struct {
		backend   string
		enforcers int
	}{
		{"memory", 1},
		{"redis", 3},
	}
	for _, tc := range cases {
		t.Run(tc.backend+"/"+strconv.Itoa(tc.enforcers), func(t *testing.T) {
			r := newRig(t, tc.backend)
			var es []*Enforcer
			for range tc.enforcers {
				es = append(es, r.enforcer(limited(wf, pol)))
			}
			before := r.now()
			maxRetry := nextUTCMidnight(before).Sub(before)

			ds := admitAtOnce(t, es, wf, "", 1000)

			c := tally(ds)
			if c.allowed != 100 || c.refused["quota_exceeded/executions"] != 900 || c.local != 0 {
				t.Fatalf("allowed %d, refused %v, local %d; want exactly 100 allowed, 900 quota_exceeded/executions, none local",
					c.allowed, c.refused, c.local)
			}
			var remaining []int64
			for _, d := range ds {
				if d.Allowed {
					if !d.HasLimit || d.Limit != 100 || d.Window != fmtWindow(24*time.Hour) {
						t.Fatalf("admitted: HasLimit %v Limit %d Window %q; want true, 100, %q", d.HasLimit, d.Limit, d.Window, fmtWindow(24*time.Hour))
					}
					remaining = append(remaining, d.Remaining)
					continue
				}
				if d.Code != CodeQuotaExceeded || d.What != "executions" || d.Limit != 100 || d.Remaining != 0 || !d.HasLimit {
					t.Fatalf("refused: %+v", d)
				}
				if d.RetryAfter <= 0 || d.RetryAfter > maxRetry {
					t.Fatalf("RetryAfter %v, want in (0, %v] (the next UTC midnight)", d.RetryAfter, maxRetry)
				}
				if d.Reset != d.RetryAfter {
					t.Fatalf("Reset %v != RetryAfter %v", d.Reset, d.RetryAfter)
				}
				if !strings.Contains(d.Message, "100 executions") {
					t.Fatalf("Message %q does not name the budget", d.Message)
				}
			}
			// Each admission was counted once: the remainders are 99..0.
			slices.Sort(remaining)
			for i, rem := range remaining {
				if rem != int64(i) {
					t.Fatalf("remainders of the admitted = %v, want 0..99 once each", remaining)
				}
			}
			if r.clock != nil {
				// The injected clock is at noon UTC: the window ends at
				// midnight, 12 hours on.
				if got := ds[slices.IndexFunc(ds, func(d Decision) bool { return !d.Allowed })].RetryAfter; got != 12*time.Hour {
					t.Fatalf("RetryAfter at noon = %v, want 12h", got)
				}
			}
			// Every replica goes on refusing.
			for i, e := range es {
				if d := admit(t, e, wf, ""); d.Allowed {
					t.Fatalf("Enforcer %d admitted request 1,001", i)
				}
			}
		})
	}
}

// A token bucket of 5 per second, burst 5, passes 5 of 50 at once, and 5
// again a second later.
func TestRateLimitBurst(t *testing.T) {
	const wf = "rate-flow"
	pol := config.QuotaPolicy{Rate: perSecond(5, 5)}
	forEachBackend(t, func(t *testing.T, r *rig) {
		e := r.enforcer(limited(wf, pol))
		check := func(round int) {
			t.Helper()
			ds := admitAtOnce(t, []*Enforcer{e}, wf, "", 50)
			c := tally(ds)
			if c.allowed != 5 || c.refused["rate_limited/requests"] != 45 {
				t.Fatalf("round %d: allowed %d, refused %v; want 5 and 45 rate_limited/requests", round, c.allowed, c.refused)
			}
			var rem []int64
			for _, d := range ds {
				if !d.HasLimit || d.Limit != 5 || d.Window != "1s" {
					t.Fatalf("round %d: HasLimit %v Limit %d Window %q; want true, 5, 1s", round, d.HasLimit, d.Limit, d.Window)
				}
				if d.Allowed {
					rem = append(rem, d.Remaining)
					if d.Reset <= 0 || d.Reset > time.Second {
						t.Fatalf("round %d: admitted with Reset %v, want in (0, 1s]", round, d.Reset)
					}
					continue
				}
				if d.Code != CodeRateLimited || d.Remaining != 0 {
					t.Fatalf("round %d: refused %+v", round, d)
				}
				if d.RetryAfter <= 0 || d.RetryAfter > 200*time.Millisecond+20*time.Millisecond {
					t.Fatalf("round %d: RetryAfter %v, want in (0, 200ms+slack]", round, d.RetryAfter)
				}
				if !strings.Contains(d.Message, "5 requests per 1s") {
					t.Fatalf("round %d: Message %q", round, d.Message)
				}
			}
			// The first admitted had Limit 5 and Remaining 4, the last 0.
			slices.Sort(rem)
			if !slices.Equal(rem, []int64{0, 1, 2, 3, 4}) {
				t.Fatalf("round %d: Remaining of the admitted = %v, want 0..4", round, rem)
			}
		}
		check(1)
		r.elapse(time.Second)
		check(2)
	})
}

// A request admitted alone reports the rate's numbers exactly.
func TestRateLimitFirstDecision(t *testing.T) {
	const wf = "rate-first"
	forEachBackend(t, func(t *testing.T, r *rig) {
		e := r.enforcer(limited(wf, config.QuotaPolicy{Rate: perSecond(5, 5)}))
		d := admit(t, e, wf, "")
		if !d.Allowed || !d.HasLimit || d.Limit != 5 || d.Remaining != 4 || d.Window != "1s" || d.Code != "" {
			t.Fatalf("first decision %+v; want allowed, Limit 5, Remaining 4, Window 1s", d)
		}
		// Until the bucket is full again: one emission interval.
		if d.Reset <= 190*time.Millisecond || d.Reset > 200*time.Millisecond {
			t.Fatalf("Reset %v, want about 200ms", d.Reset)
		}
	})
}

// Token and cost budgets admit while the window is below the limit and
// refuse once the settled sum reaches it.
func TestTokenAndCostBudgets(t *testing.T) {
	const wf = "spend-flow"
	cases := []struct {
		name   string
		budget config.Budget
		first  [2]int64 // tokens, cost of the first settlement
		second [2]int64 // ...of the second, which reaches the limit
		what   string
		limit  int64
		usd    string
	}{
		{"tokens", config.Budget{Window: config.Duration(24 * time.Hour), Tokens: 1000}, [2]int64{600, 0}, [2]int64{400, 0}, "tokens", 1000, ""},
		{"cost", config.Budget{Window: config.Duration(time.Hour), CostUSD: 1_500_000_000}, [2]int64{0, 1_000_000_000}, [2]int64{0, 500_000_000}, "cost_usd", 1_500_000_000, "1.5"},
		{"tokens-overshoot", config.Budget{Window: config.Duration(24 * time.Hour), Tokens: 1000}, [2]int64{999, 0}, [2]int64{5000, 0}, "tokens", 1000, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, r *rig) {
				e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{tc.budget}}))
				d1 := admit(t, e, wf, "")
				if !d1.Allowed {
					t.Fatalf("first: %+v", d1)
				}
				if d1.HasLimit {
					t.Fatalf("a token or cost budget alone gave RateLimit numbers: %+v", d1)
				}
				e.Settle(&d1, tc.first[0], tc.first[1])
				flush(t, e)
				d2 := admit(t, e, wf, "")
				if !d2.Allowed {
					t.Fatalf("below the limit, refused: %+v", d2)
				}
				e.Settle(&d2, tc.second[0], tc.second[1])
				flush(t, e)
				d3 := admit(t, e, wf, "")
				if d3.Allowed || d3.Code != CodeQuotaExceeded || d3.What != tc.what || d3.Limit != tc.limit || d3.LimitUSD != tc.usd {
					t.Fatalf("at the limit: %+v; want quota_exceeded %s Limit %d LimitUSD %q", d3, tc.what, tc.limit, tc.usd)
				}
				if w := tc.budget.Window.D(); d3.RetryAfter <= 0 || d3.RetryAfter > w || d3.Window != fmtWindow(w) {
					t.Fatalf("RetryAfter %v Window %q; want in (0, %v] and %q", d3.RetryAfter, d3.Window, w, fmtWindow(w))
				}
				if !d3.HasLimit || d3.Remaining != 0 {
					t.Fatalf("refusal's RateLimit numbers: %+v", d3)
				}
				if tc.what == "cost_usd" && !strings.Contains(d3.Message, "$1.5 per 1h") {
					t.Fatalf("Message %q", d3.Message)
				}
				// Settling a refused decision, or nothing, does nothing.
				e.Settle(&d3, 1, 1)
				e.Settle(&d2, 0, 0)
				e.Settle(&d2, -5, -5)
				flush(t, e)
			})
		})
	}
}

// Settlements are not made where they would do nothing: policies without
// a token or cost budget queue no job.
func TestSettleWithoutSpendBudget(t *testing.T) {
	const wf = "exec-only"
	r := newRig(t, "memory")
	e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{execBudget(2, time.Hour)}}))
	d := admit(t, e, wf, "")
	e.Settle(&d, 100, 100)
	flush(t, e)
	e.local.mu.Lock()
	u := e.local.pwindows[windowKey{wf, 3600, d.pol.budgets[0].windowIndex(d.nowUs)}]
	e.local.mu.Unlock()
	if u == nil || u.executions != 1 || u.tokens != 0 || u.costNano != 0 {
		t.Fatalf("window %+v; want 1 execution and nothing spent", u)
	}
}

// A refund gives the execution back (a cache hit runs nothing), but the
// rate keeps it.
func TestRefund(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		t.Run("budget", func(t *testing.T) {
			const wf = "refund-budget"
			e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{execBudget(3, 24*time.Hour)}}))
			for i := range 10 {
				d := admit(t, e, wf, "")
				if !d.Allowed || d.Remaining != 2 {
					t.Fatalf("hit %d: %+v; want admitted with 2 remaining", i, d)
				}
				e.Refund(&d)
				flush(t, e)
			}
			for i := range 3 {
				if d := admit(t, e, wf, ""); !d.Allowed {
					t.Fatalf("run %d refused after refunds: %+v", i, d)
				}
			}
			d := admit(t, e, wf, "")
			if d.Allowed || d.What != "executions" {
				t.Fatalf("4th run: %+v; want refused", d)
			}
			// Refunding a refusal gives nothing back.
			e.Refund(&d)
			flush(t, e)
			if d := admit(t, e, wf, ""); d.Allowed {
				t.Fatalf("admitted after refunding a refusal: %+v", d)
			}
		})
		t.Run("rate", func(t *testing.T) {
			const wf = "refund-rate"
			e := r.enforcer(limited(wf, config.QuotaPolicy{
				Rate:    perSecond(5, 5),
				Budgets: []config.Budget{execBudget(100, 24*time.Hour)},
			}))
			for i := range 5 {
				d := admit(t, e, wf, "")
				if !d.Allowed {
					t.Fatalf("hit %d: %+v", i, d)
				}
				e.Refund(&d)
			}
			flush(t, e)
			if d := admit(t, e, wf, ""); d.Allowed || d.Code != CodeRateLimited {
				t.Fatalf("6th hit in the second: %+v; want rate_limited (hits count toward rates)", d)
			}
		})
	})
}

// per_caller splits the limits: each caller has the whole budget, and
// callers without the credential share one.
func TestPerCaller(t *testing.T) {
	cases := []struct {
		perCaller string
		a, b      http.Header
		ipA, ipB  string
	}{
		{"authorization", http.Header{"Authorization": {"Bearer alpha"}}, http.Header{"Authorization": {"Bearer beta"}}, "10.0.0.1", "10.0.0.1"},
		{"ip", http.Header{}, http.Header{}, "10.0.0.1", "2001:db8::2"},
		{"header:X-User", http.Header{"X-User": {"alice"}}, http.Header{"X-User": {"bob"}}, "10.0.0.1", "10.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.perCaller, ":", "="), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, r *rig) {
				const wf = "per-caller"
				e := r.enforcer(limited(wf, config.QuotaPolicy{
					Budgets:   []config.Budget{execBudget(2, 24*time.Hour)},
					PerCaller: tc.perCaller,
				}))
				p := e.Policy(wf)
				if !p.PerCaller() {
					t.Fatal("PerCaller() = false")
				}
				ka, kb := p.CallerKey(tc.a, tc.ipA), p.CallerKey(tc.b, tc.ipB)
				if ka == kb || ka == "" || kb == "" {
					t.Fatalf("caller keys %q and %q; want two distinct", ka, kb)
				}
				anon := p.CallerKey(http.Header{}, "")
				for _, k := range []string{ka, kb, anon} {
					for i := range 2 {
						if d := e.Admit(context.Background(), p, wf, k); !d.Allowed {
							t.Fatalf("caller %q run %d refused: %+v", k, i, d)
						}
					}
				}
				for _, k := range []string{ka, kb, anon} {
					if d := e.Admit(context.Background(), p, wf, k); d.Allowed || d.What != "executions" {
						t.Fatalf("caller %q run 3: %+v; want refused", k, d)
					}
				}
				// Another anonymous request is the same caller.
				if k := p.CallerKey(http.Header{"Other": {"x"}}, ""); k != anon && tc.perCaller != "ip" {
					t.Fatalf("anonymous caller keys %q and %q differ", k, anon)
				}
			})
		})
	}
}

// CallerKey never carries a credential, only its hash.
func TestCallerKey(t *testing.T) {
	cred := map[string]bool{"X-Api-Key": true}
	pol := func(perCaller string) *Policy {
		return compile(config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}, PerCaller: perCaller}, cred)
	}
	const secret = "Bearer sk-secret-token-123"
	cases := []struct {
		name      string
		perCaller string
		h         http.Header
		ip        string
		want      string // exact key, or "" to check hashing
		hides     string // must not appear in the key
		prefix    string
	}{
		{"shared", "", http.Header{"Authorization": {secret}}, "1.2.3.4", "", "", ""},
		{"authorization", "authorization", http.Header{"Authorization": {secret}}, "1.2.3.4", "", "sk-secret", "auth:"},
		{"authorization-absent", "authorization", http.Header{}, "1.2.3.4", "auth:-", "", ""},
		{"ip", "ip", http.Header{}, "192.0.2.7", "ip:192.0.2.7", "", ""},
		{"ip-v6", "ip", http.Header{}, "2001:db8::1", "ip:2001:db8::/64", "", ""},
		{"ip-v6-same-64", "ip", http.Header{}, "2001:db8::ffff:1", "ip:2001:db8::/64", "", ""},
		{"ip-v4-mapped", "ip", http.Header{}, "::ffff:192.0.2.7", "ip:::ffff:192.0.2.7", "", ""},
		{"header-plain", "header:x-user", http.Header{"X-User": {"alice"}}, "", "", "alice", "h:"},
		{"bearer-prefixes", "authorization", http.Header{"Authorization": {"xBearer Bearer sk-secret"}}, "", hashed("auth", "sk-secret"), "", ""},
		{"bearer", "authorization", http.Header{"Authorization": {"Bearer sk-secret"}}, "", hashed("auth", "sk-secret"), "", ""},
		{"header-absent", "header:X-User", http.Header{}, "", "h:-", "", ""},
		{"header-credential", "header:x-api-key", http.Header{"X-Api-Key": {"key-abcdef"}}, "", "", "key-abcdef", "h:"},
		{"header-credential-absent", "header:X-Api-Key", http.Header{}, "", "h:-", "", ""},
		{"header-long", "header:X-User", http.Header{"X-User": {strings.Repeat("u", 65)}}, "", "", "uuuuuuuu", "h:"},
		{"header-unprintable", "header:X-User", http.Header{"X-User": {"a b"}}, "", "", "a b", "h:"},
		{"header-pipe", "header:X-User", http.Header{"X-User": {"a|b"}}, "", "", "a|b", "h:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := pol(tc.perCaller)
			got := p.CallerKey(tc.h, tc.ip)
			if tc.perCaller == "" {
				if got != "" || p.PerCaller() {
					t.Fatalf("shared policy: key %q PerCaller %v; want \"\" false", got, p.PerCaller())
				}
				return
			}
			if tc.want != "" {
				if got != tc.want {
					t.Fatalf("key %q, want %q", got, tc.want)
				}
				return
			}
			if strings.Contains(got, tc.hides) || !strings.HasPrefix(got, tc.prefix) {
				t.Fatalf("key %q: want prefix %q and no %q", got, tc.prefix, tc.hides)
			}
			if len(got) != len(tc.prefix)+24 {
				t.Fatalf("key %q: want %s and 24 hex digits", got, tc.prefix)
			}
			// Stable, and a different value is a different caller.
			if again := p.CallerKey(tc.h.Clone(), tc.ip); again != got {
				t.Fatalf("key not stable: %q then %q", got, again)
			}
			other := tc.h.Clone()
			for k := range other {
				other.Set(k, other.Get(k)+"x")
			}
			if p.CallerKey(other, tc.ip) == got {
				t.Fatal("a different credential has the same key")
			}
		})
	}
	// The same credential in the Authorization header and in a hashed
	// header are told apart by the prefix.
	a := pol("authorization").CallerKey(http.Header{"Authorization": {"k"}}, "")
	h := pol("header:X-Api-Key").CallerKey(http.Header{"X-Api-Key": {"k"}}, "")
	if a == h {
		t.Fatalf("authorization and header keys are both %q", a)
	}
}

// With Redis, no key holds a raw credential.
func TestCallerKeyNotInRedis(t *testing.T) {
	const wf = "redis-callers"
	r := newRig(t, "redis")
	e := r.enforcer(limited(wf, config.QuotaPolicy{
		Rate:      perSecond(10, 10),
		Budgets:   []config.Budget{execBudget(10, 24*time.Hour)},
		PerCaller: "authorization",
	}))
	p := e.Policy(wf)
	k := p.CallerKey(http.Header{"Authorization": {"Bearer very-secret"}}, "")
	if d := e.Admit(context.Background(), p, wf, k); !d.Allowed {
		t.Fatalf("%+v", d)
	}
	keys, err := newRedisClient(t, r.srv.Addr()).Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 2 {
		t.Fatalf("keys %v; want the rate's and the window's", keys)
	}
	for _, key := range keys {
		if strings.Contains(key, "secret") || strings.Contains(key, "Bearer") {
			t.Fatalf("Redis key %q holds the credential", key)
		}
	}
}

// Budget windows are fixed and aligned to UTC: a 24h window ends at
// midnight, whatever time the first request came.
func TestWindowsAlignedToUTC(t *testing.T) {
	const wf = "daily"
	r := newRig(t, "memory")
	r.clock.Set(time.Date(2025, 6, 15, 23, 59, 59, 900_000_000, time.UTC))
	e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{
		execBudget(2, 24*time.Hour),
		{Window: config.Duration(24 * time.Hour), Tokens: 100},
	}}))
	var last Decision
	for i := range 2 {
		if last = admit(t, e, wf, ""); !last.Allowed {
			t.Fatalf("run %d: %+v", i, last)
		}
	}
	if last.Reset != 100*time.Millisecond {
		t.Fatalf("Reset %v at 23:59:59.9, want 100ms", last.Reset)
	}
	d := admit(t, e, wf, "")
	if d.Allowed || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("3rd run at 23:59:59.9: %+v; want refused until midnight, 100ms on", d)
	}
	r.clock.Set(time.Date(2025, 6, 16, 0, 0, 0, 100_000_000, time.UTC))
	d = admit(t, e, wf, "")
	if !d.Allowed || d.Remaining != 1 {
		t.Fatalf("1st run at 00:00:00.1: %+v; want admitted with 1 remaining", d)
	}
	if d.Reset != 24*time.Hour-100*time.Millisecond {
		t.Fatalf("Reset %v, want 23:59:59.9", d.Reset)
	}
	// A settlement lands in the window its run was admitted in, even when
	// it arrives after that window ended.
	e.Settle(&last, 100, 0)
	flush(t, e)
	if d := admit(t, e, wf, ""); !d.Allowed {
		t.Fatalf("yesterday's tokens spent today's budget: %+v", d)
	}
	r.clock.Set(time.Date(2025, 6, 15, 23, 59, 59, 950_000_000, time.UTC))
	if d := admit(t, e, wf, ""); d.Allowed || d.What != "executions" {
		t.Fatalf("back in yesterday's window: %+v", d)
	}
}

// Windows of every length start on an epoch multiple: 1h windows on UTC
// hours, 24h and 30d windows on UTC midnights.
func TestWindowIndex(t *testing.T) {
	at := time.Date(2025, 6, 15, 13, 45, 30, 0, time.UTC).UnixMicro()
	for _, w := range []time.Duration{time.Second, time.Minute, time.Hour, 24 * time.Hour, 30 * 24 * time.Hour} {
		b := compile(config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, w)}}, nil).budgets[0]
		idx := b.windowIndex(at)
		start, end := time.UnixMicro(b.windowEnd(idx-1)).UTC(), time.UnixMicro(b.windowEnd(idx)).UTC()
		if end.Sub(start) != w || start.UnixMicro()%w.Microseconds() != 0 || at < start.UnixMicro() || at >= end.UnixMicro() {
			t.Fatalf("%v: window [%v, %v) does not hold the instant or is not aligned", w, start, end)
		}
		if w >= 24*time.Hour && (start.Hour() != 0 || start.Minute() != 0 || start.Second() != 0) {
			t.Fatalf("%v window starts at %v, not at midnight UTC", w, start)
		}
	}
}

func TestFmtWindow(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "1s", 90 * time.Second: "90s", time.Minute: "1m", 90 * time.Minute: "90m",
		time.Hour: "1h", 36 * time.Hour: "36h", 30 * 24 * time.Hour: "30d", 1500 * time.Millisecond: "1.5s", 0: "0s",
	} {
		if got := fmtWindow(d); got != want {
			t.Errorf("fmtWindow(%v) = %q, want %q", d, got, want)
		}
	}
}

// The RateLimit numbers are those of the limit nearest to refusing, among
// the rate and the execution budgets.
func TestNearestLimit(t *testing.T) {
	const wf = "nearest"
	forEachBackend(t, func(t *testing.T, r *rig) {
		e := r.enforcer(limited(wf, config.QuotaPolicy{
			Rate:    perSecond(10, 10),
			Budgets: []config.Budget{execBudget(3, time.Hour), execBudget(50, 24*time.Hour)},
		}))
		d := admit(t, e, wf, "")
		if !d.Allowed || d.Limit != 3 || d.Remaining != 2 || d.Window != "1h" {
			t.Fatalf("first: %+v; want the 1h budget's numbers, 3 and 2", d)
		}
		if d.Reset <= 0 || d.Reset > time.Hour {
			t.Fatalf("Reset %v, want within the hour", d.Reset)
		}
		admit(t, e, wf, "")
		admit(t, e, wf, "")
		d = admit(t, e, wf, "")
		if d.Allowed || d.What != "executions" || d.Limit != 3 || d.Window != "1h" {
			t.Fatalf("4th: %+v; want refused by the 1h budget", d)
		}
		if d.RetryAfter <= 0 || d.RetryAfter > time.Hour {
			t.Fatalf("RetryAfter %v, want within the hour", d.RetryAfter)
		}
		// The refusal did not use the rate: 6 more fit in its burst of 10
		// on another key of the same policy.
		p := e.Policy(wf)
		for i := range 3 {
			if d := e.Admit(context.Background(), p, wf+"-other", ""); !d.Allowed {
				t.Fatalf("other key run %d: %+v", i, d)
			}
		}
	})
}

// A refusal by a budget does not spend the rate, and a refusal by the
// rate does not spend the budget.
func TestRefusalCountsNothing(t *testing.T) {
	const wf = "refusal-free"
	forEachBackend(t, func(t *testing.T, r *rig) {
		e := r.enforcer(limited(wf, config.QuotaPolicy{
			Rate:    perSecond(2, 2),
			Budgets: []config.Budget{execBudget(3, 24*time.Hour)},
		}))
		for i := range 2 {
			if d := admit(t, e, wf, ""); !d.Allowed {
				t.Fatalf("run %d: %+v", i, d)
			}
		}
		for range 5 {
			if d := admit(t, e, wf, ""); d.Code != CodeRateLimited {
				t.Fatalf("%+v; want rate_limited", d)
			}
		}
		r.elapse(time.Second)
		d := admit(t, e, wf, "")
		if !d.Allowed || d.Limit != 3 || d.Remaining != 0 {
			t.Fatalf("3rd run: %+v; want admitted as the budget's last (rate refusals spent none of it)", d)
		}
		for range 3 {
			if d := admit(t, e, wf, ""); d.What != "executions" {
				t.Fatalf("%+v; want refused by the budget", d)
			}
		}
	})
}

// Policy is nil for a workflow that nothing limits, and an admin policy
// of {} makes a limited workflow unlimited.
func TestZeroPolicy(t *testing.T) {
	cases := []struct {
		name    string
		backend string
		bolt    bool
	}{
		{"memory-store", "memory", false},
		{"bbolt", "memory", true},
		{"redis", "redis", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.backend)
			mod := func(*Options) {}
			if tc.bolt {
				db := openDB(t, tempDBPath(t))
				mod = func(o *Options) { o.DB = db }
			}
			cfg := config.Quota{
				OnRedisError: "open",
				Workflows: map[string]config.QuotaPolicy{
					"limited": {Budgets: []config.Budget{execBudget(1, time.Hour)}},
					"zero":    {},
				},
			}
			e := r.enforcer(cfg, mod)
			if e.Policy("unlisted") != nil || e.Policy("zero") != nil {
				t.Fatal("a workflow without limits has a policy")
			}
			if e.Policy("limited") == nil {
				t.Fatal("the limited workflow has no policy")
			}
			if !e.Default().IsZero() {
				t.Fatalf("Default() = %+v", e.Default())
			}
			if err := e.Put(context.Background(), "limited", config.QuotaPolicy{}); err != nil {
				t.Fatal(err)
			}
			if p := e.Policy("limited"); p != nil {
				t.Fatalf("after Put {}: policy %+v, want nil", p.Config())
			}
			if en, ok := e.Entry("limited"); !ok || en.Source != "admin" || !en.Policy.IsZero() {
				t.Fatalf("Entry = %+v %v; want the admin's {}", en, ok)
			}
			if ok, err := e.Delete(context.Background(), "limited"); !ok || err != nil {
				t.Fatalf("Delete = %v, %v", ok, err)
			}
			if e.Policy("limited") == nil {
				t.Fatal("after Delete the file's policy is not back")
			}
		})
	}

	t.Run("default", func(t *testing.T) {
		r := newRig(t, "memory")
		def := config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}}
		e := r.enforcer(config.Quota{Default: def, Workflows: map[string]config.QuotaPolicy{"free": {}}})
		if e.Policy("unlisted") == nil {
			t.Fatal("the default policy does not apply to an unlisted workflow")
		}
		if e.Policy("free") != nil {
			t.Fatal("a listed {} does not replace the default")
		}
		if d := admit(t, e, "unlisted", ""); !d.Allowed {
			t.Fatalf("%+v", d)
		}
		if d := admit(t, e, "unlisted", ""); d.Allowed {
			t.Fatalf("the default's budget was not enforced: %+v", d)
		}
		if err := e.Put(context.Background(), "other", config.QuotaPolicy{}); err != nil {
			t.Fatal(err)
		}
		if e.Policy("other") != nil {
			t.Fatal("an admin {} does not replace the default")
		}
	})
}

func TestNewRequiresLogger(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a Logger succeeded")
	}
}

// Close applies the queued settlements and may be called twice.
func TestCloseTwice(t *testing.T) {
	r := newRig(t, "memory")
	e := r.enforcer(limited("wf", config.QuotaPolicy{Budgets: []config.Budget{{Window: config.Duration(time.Hour), Tokens: 10}}}))
	d := admit(t, e, "wf", "")
	e.Settle(&d, 10, 0)
	e.Close()
	e.Close()
	u := e.local.pwindows[windowKey{"wf", 3600, d.pol.budgets[0].windowIndex(d.nowUs)}]
	if u == nil || u.tokens != 10 {
		t.Fatalf("window after Close: %+v; want the 10 tokens settled", u)
	}
}

// Two budgets of one window length (executions and tokens per 24h, say)
// count each admission once, with the tighter of each limit.
func TestBudgetsSameWindow(t *testing.T) {
	const wf = "same-window"
	forEachBackend(t, func(t *testing.T, r *rig) {
		e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{
			execBudget(3, 24*time.Hour),
			{Window: config.Duration(24 * time.Hour), Tokens: 100},
			execBudget(5, 24*time.Hour),
		}}))
		var ds []Decision
		for i := range 3 {
			d := admit(t, e, wf, "")
			if !d.Allowed || d.Limit != 3 || d.Remaining != int64(2-i) {
				t.Fatalf("run %d: %+v; want admitted, Limit 3, Remaining %d", i, d, 2-i)
			}
			ds = append(ds, d)
		}
		if d := admit(t, e, wf, ""); d.Allowed || d.What != "executions" || d.Limit != 3 {
			t.Fatalf("4th run: %+v; want refused by the tighter execution limit", d)
		}
		e.Refund(&ds[0])
		e.Settle(&ds[1], 100, 0)
		flush(t, e)
		if d := admit(t, e, wf, ""); d.Allowed || d.What != "tokens" || d.Limit != 100 {
			t.Fatalf("after 100 tokens: %+v; want refused by the token limit", d)
		}
	})
}

// Options.CredentialHeaders (the cache's vary headers, any case) make a
// per-caller header hashed.
func TestCredentialHeadersOption(t *testing.T) {
	r := newRig(t, "memory")
	pol := config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}, PerCaller: "header:X-Api-Key"}
	e := r.enforcer(limited("wf", pol), func(o *Options) { o.CredentialHeaders = []string{"x-api-key"} })
	k := e.Policy("wf").CallerKey(http.Header{"X-Api-Key": {"plain-key"}}, "")
	if strings.Contains(k, "plain-key") || !strings.HasPrefix(k, "h:") {
		t.Fatalf("key %q holds the credential", k)
	}
	// Without it too: every header value is hashed.
	plain := r.enforcer(limited("wf", pol))
	if k := plain.Policy("wf").CallerKey(http.Header{"X-Api-Key": {"plain-key"}}, ""); k != hashed("h", "plain-key") {
		t.Fatalf("without CredentialHeaders: key %q, want the hash", k)
	}
}

// The in-process limiter's maps stay within their bound whatever callers
// a client invents.
func TestMemoryBounded(t *testing.T) {
	m := newMemory(4)
	p := compile(config.QuotaPolicy{Rate: perSecond(1, 1), Budgets: []config.Budget{execBudget(1, time.Hour)}}, nil)
	now := noon.UnixMicro()
	for i := range 100 {
		if o, _ := m.admit(context.Background(), "caller-"+strconv.Itoa(i), p, now); o.refused != -1 {
			t.Fatalf("caller %d refused: %+v", i, o)
		}
	}
	if len(m.rates) > 4 || len(m.windows) > 4 {
		t.Fatalf("maps grew to %d rates and %d windows, bound 4", len(m.rates), len(m.windows))
	}
}

// sweep forgets ended windows and full buckets, and nothing that still
// counts.
func TestMemorySweep(t *testing.T) {
	m := newMemory(100)
	p := compile(config.QuotaPolicy{Rate: perSecond(1, 1), Budgets: []config.Budget{execBudget(5, time.Hour)}}, nil)
	now := noon.Add(30 * time.Minute)
	m.admit(context.Background(), "k", p, now.UnixMicro())
	m.sweep(now)
	if len(m.windows) != 1 || len(m.rates) != 1 {
		t.Fatalf("a live window or an empty bucket was swept: %d windows, %d rates", len(m.windows), len(m.rates))
	}
	m.sweep(now.Add(time.Second)) // the bucket is full again
	if len(m.rates) != 0 || len(m.windows) != 1 {
		t.Fatalf("after a second: %d rates, %d windows; want the bucket gone, the window kept", len(m.rates), len(m.windows))
	}
	m.sweep(now.Add(30 * time.Minute)) // the hour ended
	if len(m.windows) != 0 {
		t.Fatalf("an ended window was kept")
	}
}

// A flood of invented callers fills the evictable maps, never a pinned
// workflow's own counts: its spent budget stays spent.
func TestFloodDoesNotEvictPinned(t *testing.T) {
	m := newMemory(4)
	victim := compile(config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}}, nil)
	victim.pinned = true
	perCaller := compile(config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}, PerCaller: "header:X-User"}, nil)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixMicro()
	if o, _ := m.admit(context.Background(), "victim", victim, now); o.refused >= 0 {
		t.Fatal("first run refused")
	}
	for i := range 1000 {
		m.admit(context.Background(), "other|h:"+strconv.Itoa(i), perCaller, now)
	}
	if len(m.windows) > 4 {
		t.Fatalf("evictable windows grew to %d", len(m.windows))
	}
	if o, _ := m.admit(context.Background(), "victim", victim, now); o.refused < 0 {
		t.Fatal("the flood reset the pinned workflow's budget")
	}
}

// A workflow id holding "|" cannot name another workflow's caller.
func TestWorkflowIDCannotForgeCaller(t *testing.T) {
	r := newRig(t, "memory")
	e := r.enforcer(config.Quota{OnRedisError: "open", Default: config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}, PerCaller: "ip"}})
	forged := "a|ip:10.0.0.7"
	if d := e.Admit(context.Background(), e.Policy(forged), forged, ""); !d.Allowed {
		t.Fatalf("forged id: %+v", d)
	}
	if d := e.Admit(context.Background(), e.Policy("a"), "a", "ip:10.0.0.7"); !d.Allowed {
		t.Fatal("the forged id spent the real caller's budget")
	}
}
