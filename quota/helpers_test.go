package quota

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
	"go.uber.org/zap/zaptest"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/internal/testredis"
)

// testClock is the injected clock of the in-process limiter. It never
// moves by itself.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *testClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }

// noon is the memory rig's start: 12 hours before the next UTC midnight.
var noon = time.Date(2025, 6, 15, 12, 0, 0, 0, time.UTC)

// rig is one backend under test: the in-process limiter with an injected
// clock, or a real Redis server shared by the rig's Enforcers.
type rig struct {
	t     *testing.T
	name  string
	srv   *testredis.Server // nil: the in-process limiter
	clock *testClock        // the memory rig's clock
}

// backends are the two limiters every behaviour is checked against.
var backends = []string{"memory", "redis"}

func newRig(t *testing.T, backend string) *rig {
	t.Helper()
	r := &rig{t: t, name: backend}
	switch backend {
	case "memory":
		r.clock = newTestClock(noon)
	case "redis":
		r.srv = testredis.Start(t)
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	return r
}

// forEachBackend runs f as a subtest on each backend.
func forEachBackend(t *testing.T, f func(t *testing.T, r *rig)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) { f(t, newRig(t, b)) })
	}
}

func (r *rig) shared() bool { return r.srv != nil }

// enforcer builds an Enforcer on the rig (with its own Redis client, as a
// replica has), closed when the test ends.
func (r *rig) enforcer(cfg config.Quota, mods ...func(*Options)) *Enforcer {
	r.t.Helper()
	o := Options{Config: cfg}
	if r.srv != nil {
		o.Redis = newRedisClient(r.t, r.srv.Addr())
	} else {
		o.Now = r.clock.Now
	}
	for _, m := range mods {
		m(&o)
	}
	return newEnforcer(r.t, o)
}

// now is the rig's clock: the injected one, or the wall clock that
// Redis's TIME follows.
func (r *rig) now() time.Time {
	if r.clock != nil {
		return r.clock.Now()
	}
	return time.Now()
}

// elapse lets d pass: the injected clock is advanced, and on Redis, whose
// script reads Redis's own clock, the time is waited for. The passing of
// time is the thing under test there, not a stand-in for a signal.
func (r *rig) elapse(d time.Duration) {
	if r.clock != nil {
		r.clock.Advance(d)
		return
	}
	waitUntil(time.Now().Add(d))
}

// waitUntil waits for the wall clock to reach t.
func waitUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		timer := time.NewTimer(d)
		<-timer.C
	}
}

func newRedisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(cache.RedisOptions(addr, "", 0))
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// newEnforcer builds an Enforcer with a test logger and closes it when
// the test ends.
func newEnforcer(t testing.TB, o Options) *Enforcer {
	t.Helper()
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	if o.Config.OnRedisError == "" {
		o.Config.OnRedisError = "open"
	}
	e, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// openDB opens a bbolt file; it is closed when the test ends (after the
// Enforcers built later, cleanups running last-in first-out).
func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("bbolt.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func tempDBPath(t testing.TB) string { return filepath.Join(t.TempDir(), "flowgate.db") }

// limited is a config with one workflow's policy.
func limited(wf string, p config.QuotaPolicy) config.Quota {
	return config.Quota{OnRedisError: "open", Workflows: map[string]config.QuotaPolicy{wf: p}}
}

func execBudget(n int64, window time.Duration) config.Budget {
	return config.Budget{Window: config.Duration(window), Executions: n}
}

func perSecond(limit, burst int64) *config.RateLimit {
	return &config.RateLimit{Limit: limit, Per: config.Duration(time.Second), Burst: burst}
}

// admit decides on one request of wf by caller with the policy in force.
func admit(t testing.TB, e *Enforcer, wf, caller string) Decision {
	t.Helper()
	p := e.Policy(wf)
	if p == nil {
		t.Fatalf("Policy(%q) = nil, want a policy", wf)
	}
	return e.Admit(context.Background(), p, wf, caller)
}

// admitAtOnce makes n Admit calls at once, spread round-robin over es,
// and returns their decisions in call order.
func admitAtOnce(t testing.TB, es []*Enforcer, wf, caller string, n int) []Decision {
	t.Helper()
	pols := make([]*Policy, len(es))
	for i, e := range es {
		if pols[i] = e.Policy(wf); pols[i] == nil {
			t.Fatalf("Policy(%q) = nil on Enforcer %d", wf, i)
		}
	}
	for _, e := range es {
		// A thousand admissions queue for go-redis's pool; under the race
		// detector on a busy machine the last ones can wait past the
		// production bound, and would be decided locally.
		e.admitTimeout = 10 * time.Second
	}
	out := make([]Decision, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			e := es[i%len(es)]
			out[i] = e.Admit(context.Background(), pols[i%len(es)], wf, caller)
		})
	}
	close(start)
	wg.Wait()
	return out
}

// flushLimiter is a job's limiter that reports when the worker got to it.
type flushLimiter struct{ done chan struct{} }

func (f flushLimiter) admit(context.Context, string, *Policy, int64) (outcome, error) {
	return outcome{}, nil
}

func (f flushLimiter) add(context.Context, string, *Policy, int64, usage) error {
	close(f.done)
	return nil
}

// flush waits until the worker has applied every settlement and refund
// queued before the call: the worker applies jobs in order, one at a
// time, so a marker queued last is applied last.
func flush(t testing.TB, e *Enforcer) {
	t.Helper()
	f := flushLimiter{done: make(chan struct{})}
	e.enqueue(job{lim: f})
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the settlement worker did not get to the marker within 10s")
	}
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nextUTCMidnight is the end of the 24h window t is in.
func nextUTCMidnight(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

// counts tallies decisions.
type counts struct {
	allowed, local int
	refused        map[string]int // by Code+"/"+What
}

func tally(ds []Decision) counts {
	c := counts{refused: map[string]int{}}
	for _, d := range ds {
		if d.Local {
			c.local++
		}
		if d.Allowed {
			c.allowed++
		} else {
			c.refused[d.Code+"/"+d.What]++
		}
	}
	return c
}
