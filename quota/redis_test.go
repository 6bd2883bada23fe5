package quota

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
)

// opCounter records the RedisError callback's operations.
type opCounter struct {
	mu  sync.Mutex
	ops map[string]int
}

func (c *opCounter) add(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ops == nil {
		c.ops = map[string]int{}
	}
	c.ops[op]++
}

func (c *opCounter) get(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ops[op]
}

// While Redis cannot be reached, on_redis_error decides: "open" enforces
// the limits in this process, "closed" refuses with quota_unavailable.
// Once Redis answers again (it is tried a second after a failure), the
// limits are shared again.
func TestRedisDown(t *testing.T) {
	const wf, probe = "outage-flow", "probe-flow"
	cfg := func(mode string) config.Quota {
		return config.Quota{OnRedisError: mode, Workflows: map[string]config.QuotaPolicy{
			wf:    {Budgets: []config.Budget{execBudget(3, 24*time.Hour)}},
			probe: {Budgets: []config.Budget{execBudget(1_000_000, 24*time.Hour)}},
		}}
	}
	for _, mode := range []string{"open", "closed"} {
		for _, failure := range []string{"kill", "pause"} {
			t.Run(mode+"/"+failure, func(t *testing.T) {
				r := newRig(t, "redis")
				var ops opCounter
				e := r.enforcer(cfg(mode), func(o *Options) { o.RedisError = ops.add })

				for i := range 3 {
					if d := admit(t, e, wf, ""); !d.Allowed || d.Local {
						t.Fatalf("run %d before the outage: %+v", i, d)
					}
				}
				if d := admit(t, e, wf, ""); d.Allowed || d.Local || d.What != "executions" {
					t.Fatalf("4th run before the outage: %+v; want refused by Redis's count", d)
				}
				// A run admitted through Redis, refunded during the outage.
				pd := admit(t, e, probe, "")

				down, up := r.srv.Kill, r.srv.Restart
				if failure == "pause" {
					down, up = r.srv.Pause, r.srv.Resume
				}
				down()
				start := time.Now()
				d := admit(t, e, wf, "")
				// A paused Redis answers nothing: the call times out after
				// the client's read timeout of 1s.
				if took := time.Since(start); took > 3*time.Second {
					t.Fatalf("the first Admit during the outage took %v", took)
				}
				if !e.Local() {
					t.Fatal("Local() = false during the outage")
				}
				if ops.get("admit") == 0 {
					t.Fatal("RedisError was not called for the failed admit")
				}
				if mode == "closed" {
					for i := range 3 {
						if d.Allowed || d.Code != CodeUnavailable || d.What != "redis" || d.RetryAfter != time.Second || d.Message == "" {
							t.Fatalf("closed, run %d during the outage: %+v; want quota_unavailable", i, d)
						}
						d = admit(t, e, wf, "")
					}
				} else {
					// Local limits: this process counts the 3 afresh.
					for i := range 3 {
						if !d.Allowed || !d.Local {
							t.Fatalf("open, run %d during the outage: %+v; want admitted locally", i, d)
						}
						if d.Limit != 3 || d.Remaining != int64(2-i) {
							t.Fatalf("open, run %d: Limit %d Remaining %d; want 3 and %d", i, d.Limit, d.Remaining, 2-i)
						}
						d = admit(t, e, wf, "")
					}
					if d.Allowed || !d.Local || d.Code != CodeQuotaExceeded || d.What != "executions" {
						t.Fatalf("open, 4th run during the outage: %+v; want refused locally", d)
					}
				}
				// A settlement of a run Redis admitted lands locally.
				e.Refund(&pd)
				flush(t, e)

				up()
				restarted := time.Now()
				var last Decision
				eventually(t, 5*time.Second, "limits shared again after Redis came back", func() bool {
					last = admit(t, e, probe, "")
					return last.Allowed && !last.Local
				})
				if took := time.Since(restarted); took > 3*time.Second {
					t.Errorf("shared again only %v after Redis came back; want within a couple of seconds", took)
				}
				if e.Local() {
					t.Fatal("Local() = true after recovery")
				}
				d = admit(t, e, wf, "")
				switch failure {
				case "kill":
					// Redis lost its counts in the crash: the window starts
					// afresh; the local counts were not carried over.
					if !d.Allowed || d.Local || d.Remaining != 2 {
						t.Fatalf("after the restart: %+v; want admitted by a fresh Redis window", d)
					}
				case "pause":
					// Redis kept what it had counted.
					if d.Allowed || d.Local || d.What != "executions" {
						t.Fatalf("after the pause: %+v; want refused by Redis's count", d)
					}
				}
			})
		}
	}
}

// Redis down when the Enforcer starts: the file's policies apply, and
// requests are decided locally until it is reachable.
func TestRedisDownAtStart(t *testing.T) {
	const wf = "start-flow"
	r := newRig(t, "redis")
	r.srv.Kill()
	var ops opCounter
	e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{execBudget(2, time.Hour)}}),
		func(o *Options) { o.RedisError = ops.add })
	if ops.get("load_policies") == 0 {
		t.Fatal("RedisError was not called for the failed policy load")
	}
	if d := admit(t, e, wf, ""); !d.Allowed || !d.Local {
		t.Fatalf("%+v; want admitted locally", d)
	}
	r.srv.Restart()
	eventually(t, 5*time.Second, "shared after Redis started", func() bool {
		return !admit(t, e, wf, "").Local
	})
}

// A request whose client has gone, made the probe of a recovering Redis,
// must not leave the probe taken: Redis would never be tried again.
func TestRedisProbeReleasedByGoneClient(t *testing.T) {
	const wf = "probe-gone"
	r := newRig(t, "redis")
	e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{execBudget(1000, time.Hour)}}))
	admit(t, e, wf, "")
	r.srv.Kill()
	if d := admit(t, e, wf, ""); !d.Local {
		t.Fatalf("%+v; want local during the outage", d)
	}
	r.srv.Restart()
	// The retry time is over: the next caller is the probe. Its client
	// has gone.
	e.downUntil.Store(time.Now().Add(-time.Millisecond).UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := e.Admit(ctx, e.Policy(wf), wf, "")
	if d.Allowed || d.Code != CodeUnavailable || d.Message != "the client went away" {
		t.Fatalf("gone client: %+v", d)
	}
	eventually(t, 4*time.Second, "shared again after a gone client's probe", func() bool {
		return !admit(t, e, wf, "").Local
	})
}

// A settlement made the probe of a recovering Redis, and answered, must
// give the probe back.
func TestRedisProbeReleasedBySettlement(t *testing.T) {
	const wf = "probe-settle"
	r := newRig(t, "redis")
	e := r.enforcer(limited(wf, config.QuotaPolicy{Budgets: []config.Budget{{Window: config.Duration(time.Hour), Tokens: 1_000_000}}}))
	d := admit(t, e, wf, "")
	if !d.Allowed || d.Local {
		t.Fatalf("%+v", d)
	}
	r.srv.Kill()
	if d := admit(t, e, wf, ""); !d.Local {
		t.Fatalf("%+v; want local during the outage", d)
	}
	r.srv.Restart()
	e.downUntil.Store(time.Now().Add(-time.Millisecond).UnixNano())
	e.Settle(&d, 10, 0)
	flush(t, e)
	eventually(t, 4*time.Second, "shared again after a settlement's probe", func() bool {
		return !admit(t, e, wf, "").Local
	})
}

// A client gone before its request is decided gets no verdict, and Redis
// is not taken for down.
func TestAdmitClientGone(t *testing.T) {
	const wf = "gone"
	r := newRig(t, "redis")
	var ops opCounter
	e := r.enforcer(limited(wf, config.QuotaPolicy{Rate: perSecond(100, 100)}), func(o *Options) { o.RedisError = ops.add })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := e.Admit(ctx, e.Policy(wf), wf, "")
	if d.Allowed || d.Code != CodeUnavailable {
		t.Fatalf("%+v", d)
	}
	if e.Local() || ops.get("admit") != 0 {
		t.Fatalf("a gone client made Redis count as down (Local %v, errors %d)", e.Local(), ops.get("admit"))
	}
	if d := admit(t, e, wf, ""); !d.Allowed || d.Local {
		t.Fatalf("%+v", d)
	}
}

// Settlements of runs admitted through Redis land in Redis, where every
// replica sees them.
func TestSettleSharedAcrossReplicas(t *testing.T) {
	const wf = "shared-spend"
	r := newRig(t, "redis")
	pol := config.QuotaPolicy{Budgets: []config.Budget{{Window: config.Duration(24 * time.Hour), CostUSD: 2 * config.NanoPerUSD}}}
	a, b := r.enforcer(limited(wf, pol)), r.enforcer(limited(wf, pol))
	d := admit(t, a, wf, "")
	a.Settle(&d, 1000, 2*config.NanoPerUSD)
	flush(t, a)
	if d := admit(t, b, wf, ""); d.Allowed || d.What != "cost_usd" || d.LimitUSD != "2" {
		t.Fatalf("replica b after a spent the budget: %+v", d)
	}
}
