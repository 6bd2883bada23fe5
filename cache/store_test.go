package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/flowgate/flowgate/internal/testredis"
	"github.com/flowgate/flowgate/metrics"
)

// storeClock is a settable clock for the memory level's expiry. It never
// ticks: expired entries are found on reads.
type storeClock struct{ ns atomic.Int64 }

func newStoreClock() *storeClock {
	c := &storeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *storeClock) NowNano() int64                      { return c.ns.Load() }
func (c *storeClock) Tick(time.Duration) <-chan time.Time { return nil }
func (c *storeClock) Now() time.Time                      { return time.Unix(0, c.ns.Load()) }
func (c *storeClock) Advance(d time.Duration)             { c.ns.Add(int64(d)) }

// storeKey is a key of workflow wf; n tells keys of one workflow apart.
func storeKey(wf string, stream bool, n int) Key {
	k := Key{Workflow: wf, Stream: stream}
	k.Sum[0], k.Sum[1] = byte(n), byte(n>>8)
	return k
}

// storeEntry is a JSON answer created at t.
func storeEntry(tb testing.TB, t time.Time) *Entry {
	tb.Helper()
	e, err := NewJSON(200, "application/json", []byte(`{"text":"hi"}`), t)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// storeFixture is a Store with its metrics.
type storeFixture struct {
	*Store
	reg    *prometheus.Registry
	events chan string
}

// newTestStore makes a Store closed at the end of the test; o.Metrics and
// the event hook are set here.
func newTestStore(t *testing.T, o Options) *storeFixture {
	t.Helper()
	f := &storeFixture{reg: prometheus.NewRegistry(), events: make(chan string, 1024)}
	o.Metrics = metrics.New(f.reg)
	o.observe = func(ev string) {
		select {
		case f.events <- ev:
		default:
		}
	}
	if o.MaxMemory == 0 {
		o.MaxMemory = 1 << 20
	}
	s, err := NewStore(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f.Store = s
	return f
}

// errors reads flowgate_cache_errors_total{level}.
func (f *storeFixture) errors(t *testing.T, level string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flowgate_cache_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "level" && l.GetValue() == level {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// waitEvent waits for the store's listener to have handled event.
func (f *storeFixture) waitEvent(t *testing.T, event string) {
	t.Helper()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case ev := <-f.events:
			if ev == event {
				return
			}
		case <-timer.C:
			t.Fatalf("no %q event within 15s", event)
		}
	}
}

// newRedisStore makes a Store on the Redis at addr (its own client) and
// waits until it is subscribed to invalidations.
func newRedisStore(t *testing.T, addr string, o Options) *storeFixture {
	t.Helper()
	rdb := redis.NewClient(RedisOptions(addr, "", 0))
	t.Cleanup(func() { _ = rdb.Close() })
	o.Redis = rdb
	f := newTestStore(t, o)
	f.waitEvent(t, "subscribe")
	return f
}

// eventually polls cond until it holds or d passes: for what another
// replica does through Redis, which sends no signal here.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func TestNewStoreOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no memory bound", Options{}, "MaxMemory"},
		{"negative memory bound", Options{MaxMemory: -1}, "MaxMemory"},
		{"client without context deadlines", Options{MaxMemory: 1 << 20, Redis: redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})}, "ContextTimeoutEnabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.o.Redis != nil {
				defer tc.o.Redis.Close()
			}
			s, err := NewStore(tc.o)
			if err == nil {
				s.Close()
				t.Fatal("NewStore succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %s", err, tc.want)
			}
		})
	}
}

func TestMemorySetGet(t *testing.T) {
	s := newTestStore(t, Options{})
	now := time.Now()
	stored := map[Key]*Entry{}
	for _, k := range []Key{
		storeKey("wf1", false, 1),
		storeKey("wf1", true, 1), // the stream variant of the same input
		storeKey("wf1", false, 2),
		storeKey("wf2", false, 1),
	} {
		e := storeEntry(t, now)
		s.Set(k, e, time.Minute)
		stored[k] = e
	}
	for k, want := range stored {
		got, level := s.Get(context.Background(), k)
		if got != want || level != LevelMemory {
			t.Errorf("Get(%v) = %p, %q; want %p, memory", k, got, level, want)
		}
	}
	for _, k := range []Key{storeKey("wf1", true, 2), storeKey("wf3", false, 1)} {
		if got, level := s.Get(context.Background(), k); got != nil || level != "" {
			t.Errorf("Get(%v) of a key never set = %p, %q; want a miss", k, got, level)
		}
	}
}

func TestMemoryTTL(t *testing.T) {
	clock := newStoreClock()
	s := newTestStore(t, Options{clock: clock})
	start := clock.Now()
	for _, tc := range []struct {
		name    string
		created time.Duration // relative to start
		ttl     time.Duration
		expires time.Duration // relative to start; 0: never stored
	}{
		{"fresh, 10m", 0, 10 * time.Minute, 10 * time.Minute},
		{"fresh, 1m", 0, time.Minute, time.Minute},
		{"created 5m ago, 10m", -5 * time.Minute, 10 * time.Minute, 5 * time.Minute},
		{"created 10m ago, 5m: already expired", -10 * time.Minute, 5 * time.Minute, 0},
		{"zero TTL", 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.ns.Store(start.UnixNano())
			k := storeKey(tc.name, false, 0)
			s.Set(k, storeEntry(t, start.Add(tc.created)), tc.ttl)
			if tc.expires == 0 {
				if e, _ := s.Get(context.Background(), k); e != nil {
					t.Fatal("stored, want not")
				}
				return
			}
			clock.Advance(tc.expires - time.Second)
			if e, _ := s.Get(context.Background(), k); e == nil {
				t.Fatalf("miss a second before expiry")
			}
			clock.Advance(time.Second)
			if e, _ := s.Get(context.Background(), k); e != nil {
				t.Fatalf("hit at expiry")
			}
		})
	}
	t.Run("replaced entry takes the new deadline", func(t *testing.T) {
		clock.ns.Store(start.UnixNano())
		k := storeKey("replaced", false, 0)
		s.Set(k, storeEntry(t, start), time.Minute)
		s.Set(k, storeEntry(t, start), time.Hour)
		clock.Advance(30 * time.Minute)
		if e, _ := s.Get(context.Background(), k); e == nil {
			t.Fatal("miss after 30m, want the 1h deadline")
		}
	})
}

func TestMemoryWeightBound(t *testing.T) {
	const maxMemory = 64 << 10
	s := newTestStore(t, Options{MaxMemory: maxMemory})
	body := []byte(`{"text":"` + strings.Repeat("x", 1000) + `"}`)
	var one int
	for i := range 1000 { // about 16 times the bound
		e, err := NewJSON(200, "application/json", body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		k := storeKey("wf", false, i)
		one = e.Size() + keyWeight(k)
		s.Set(k, e, time.Hour)
	}
	w := s.mem.weight()
	if w > maxMemory {
		t.Fatalf("weight %d > MaxMemory %d", w, maxMemory)
	}
	if w < maxMemory/2 {
		t.Errorf("weight %d: the level keeps less than half of its %d bytes", w, maxMemory)
	}
	t.Logf("weight %d of %d (entries of %d)", w, maxMemory, one)

	// An answer larger than the whole level is not kept.
	big, err := NewJSON(200, "application/json", []byte(`{"text":"`+strings.Repeat("y", maxMemory)+`"}`), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.Set(storeKey("big", false, 0), big, time.Hour)
	if w := s.mem.weight(); w > maxMemory {
		t.Fatalf("weight %d > MaxMemory %d after an oversized entry", w, maxMemory)
	}
	if e, _ := s.Get(context.Background(), storeKey("big", false, 0)); e != nil {
		t.Fatal("an entry larger than MaxMemory is served")
	}
}

func TestMemoryInvalidate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		workflow string // "" for InvalidateAll
		want     int
		kept     []string
	}{
		{"one workflow", "wf1", 3, []string{"wf2", "wf1x"}},
		{"a workflow whose id another's starts with", "wf1x", 1, []string{"wf1", "wf2"}},
		{"unknown workflow", "nope", 0, []string{"wf1", "wf2", "wf1x"}},
		{"all", "", 6, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, Options{})
			keys := []Key{
				storeKey("wf1", false, 1), storeKey("wf1", true, 1), storeKey("wf1", false, 2),
				storeKey("wf2", false, 1), storeKey("wf2", true, 1),
				storeKey("wf1x", false, 1),
			}
			for _, k := range keys {
				s.Set(k, storeEntry(t, time.Now()), time.Hour)
			}
			var n int
			var err error
			if tc.workflow == "" {
				n, err = s.InvalidateAll(context.Background())
			} else {
				n, err = s.Invalidate(context.Background(), tc.workflow)
			}
			if err != nil || n != tc.want {
				t.Fatalf("invalidate = %d, %v; want %d, nil", n, err, tc.want)
			}
			for _, k := range keys {
				e, _ := s.Get(context.Background(), k)
				kept := false
				for _, wf := range tc.kept {
					kept = kept || k.Workflow == wf
				}
				if (e != nil) != kept {
					t.Errorf("%v: present=%v, want %v", k, e != nil, kept)
				}
			}
		})
	}
}

func TestRedisKeyLayout(t *testing.T) {
	for _, tc := range []struct {
		workflow string
		want     string
	}{
		{"ab", "flowgate:cache:v1:6162:j" + strings.Repeat("00", 32)},
		{"a*[?]\\:", "flowgate:cache:v1:612a5b3f5d5c3a:j" + strings.Repeat("00", 32)},
	} {
		if got := redisKey(Key{Workflow: tc.workflow}); got != tc.want {
			t.Errorf("redisKey(%q) = %q, want %q", tc.workflow, got, tc.want)
		}
	}
	if got := redisKey(Key{Workflow: "x", Stream: true, Sum: [32]byte{0xab}}); !strings.HasSuffix(got, ":sab"+strings.Repeat("00", 31)) {
		t.Errorf("stream key %q: want the s variant and the hex sum", got)
	}
}

// Workflow ids with glob characters, and ids that start others, delete
// exactly their own keys from Redis; other applications' keys stay.
func TestRedisDeleteMatchesOnlyItsWorkflow(t *testing.T) {
	srv := testredis.Start(t)
	rdb := redis.NewClient(RedisOptions(srv.Addr(), "", 0))
	defer rdb.Close()
	ctx := context.Background()
	var gen atomic.Int64
	now := func() int64 { return time.Now().UnixNano() }
	r := newRedisLevel(rdb, &gen, time.Second, now)
	workflows := []string{"a", "ab", "a*", "a?", "[a]", `a\`, "a:b", "ü"}
	for _, wf := range workflows {
		for i := range 3 {
			if err := r.set(ctx, storeKey(wf, i == 2, i), storeEntry(t, time.Now()), now()+int64(time.Hour), gen.Load()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := rdb.Set(ctx, "otherapp:key", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i, wf := range workflows {
		n, err := r.deleteWorkflow(ctx, wf)
		if err != nil || n != 3 {
			t.Fatalf("deleteWorkflow(%q) = %d, %v; want 3", wf, n, err)
		}
		for j, other := range workflows {
			e, _, err := r.get(ctx, storeKey(other, false, 0))
			if err != nil {
				t.Fatal(err)
			}
			if want := j > i; (e != nil) != want {
				t.Fatalf("after deleting %q: %q present=%v, want %v", wf, other, e != nil, want)
			}
		}
	}
	for i := range 5 {
		if err := r.set(ctx, storeKey("wf", false, i), storeEntry(t, time.Now()), now()+int64(time.Hour), gen.Load()); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r.deleteAll(ctx); err != nil || n != 5 {
		t.Fatalf("deleteAll = %d, %v; want 5", n, err)
	}
	if v, err := rdb.Get(ctx, "otherapp:key").Result(); err != nil || v != "v" {
		t.Fatalf("another application's key: %q, %v", v, err)
	}
	if g, err := rdb.Get(ctx, redisGenKey).Int64(); err != nil || g != int64(len(workflows)+1) {
		t.Fatalf("generation %d, %v; want one step per invalidation (%d)", g, err, len(workflows)+1)
	}
}

// A write stored before an invalidation is refused when it reaches Redis
// after it, whichever replica invalidated; the writer learns the new
// generation and its next answers are stored.
func TestRedisStaleWriteRefused(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	now := func() int64 { return time.Now().UnixNano() }
	rdbA := redis.NewClient(RedisOptions(srv.Addr(), "", 0))
	defer rdbA.Close()
	rdbB := redis.NewClient(RedisOptions(srv.Addr(), "", 0))
	defer rdbB.Close()
	var genA, genB atomic.Int64
	a := newRedisLevel(rdbA, &genA, time.Second, now)
	b := newRedisLevel(rdbB, &genB, time.Second, now)
	k := storeKey("wf", false, 1)
	exp := now() + int64(time.Hour)

	captured := genB.Load() // B stores an answer; its write is queued
	if _, err := a.deleteWorkflow(ctx, "wf"); err != nil {
		t.Fatal(err)
	}
	if err := b.set(ctx, k, storeEntry(t, time.Now()), exp, captured); !errors.Is(err, errStale) {
		t.Fatalf("stale write: %v, want errStale", err)
	}
	if e, _, _ := b.get(ctx, k); e != nil {
		t.Fatal("a write from before the invalidation landed")
	}
	if genB.Load() != genA.Load() || genA.Load() != 1 {
		t.Fatalf("generations A %d B %d, want both 1", genA.Load(), genB.Load())
	}
	if err := b.set(ctx, k, storeEntry(t, time.Now()), exp, genB.Load()); err != nil {
		t.Fatalf("write after learning the generation: %v", err)
	}
	if e, _, _ := a.get(ctx, k); e == nil {
		t.Fatal("a current write is not stored")
	}
}

// Two replicas on one Redis: an answer one stores, the other finds in
// Redis, then in its own memory, until the TTL it has left.
func TestReplicasShareEntries(t *testing.T) {
	srv := testredis.Start(t)
	clockB := newStoreClock()
	a := newRedisStore(t, srv.Addr(), Options{})
	b := newRedisStore(t, srv.Addr(), Options{clock: clockB})
	ctx := context.Background()

	for _, k := range []Key{storeKey("wf", false, 1), storeKey("wf", true, 1)} {
		e := storeEntry(t, time.Now())
		a.Set(k, e, time.Minute)
		var got *Entry
		var level string
		eventually(t, 10*time.Second, "B finds A's answer in Redis", func() bool {
			got, level = b.Get(ctx, k)
			return got != nil
		})
		if level != LevelRedis {
			t.Fatalf("first hit on B from %q, want redis", level)
		}
		if got.Stream() != e.Stream() || string(got.AppendBody(nil)) != string(e.AppendBody(nil)) {
			t.Fatalf("B's entry differs from A's")
		}
		if _, level := b.Get(ctx, k); level != LevelMemory {
			t.Fatalf("second hit on B from %q, want memory", level)
		}
		// In B's memory until what was left of its minute in Redis.
		_, expires, _ := b.mem.get(ctx, k)
		if left := time.Duration(expires - clockB.NowNano()); left <= 50*time.Second || left > time.Minute {
			t.Fatalf("B keeps it for %v, want the TTL left in Redis (just under 1m)", left)
		}
		clockB.Advance(time.Minute)
		if e, _, _ := b.mem.get(ctx, k); e != nil {
			t.Fatal("B's memory copy outlives the TTL")
		}
	}
	if n := a.errors(t, LevelRedis) + b.errors(t, LevelRedis); n != 0 {
		t.Fatalf("%v redis errors counted", n)
	}
}

// An invalidation through one replica is a miss on the other, in Redis and
// in its memory, and says how many entries Redis deleted.
func TestInvalidateAcrossReplicas(t *testing.T) {
	for _, tc := range []struct {
		name     string
		workflow string // "" for InvalidateAll
		want     int
		kept     []string
	}{
		{"workflow", "wf1", 2, []string{"wf2"}},
		{"all", "", 4, nil},
		{"unknown workflow", "wf3", 0, []string{"wf1", "wf2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testredis.Start(t)
			a := newRedisStore(t, srv.Addr(), Options{})
			b := newRedisStore(t, srv.Addr(), Options{})
			ctx := context.Background()
			keys := []Key{storeKey("wf1", false, 1), storeKey("wf1", true, 1), storeKey("wf2", false, 1), storeKey("wf2", false, 2)}
			for _, k := range keys {
				a.Set(k, storeEntry(t, time.Now()), time.Hour)
			}
			for _, k := range keys {
				eventually(t, 10*time.Second, "B finds A's answer", func() bool {
					e, _ := b.Get(ctx, k)
					return e != nil
				})
				if _, level := b.Get(ctx, k); level != LevelMemory {
					t.Fatalf("%v not in B's memory", k)
				}
			}

			var n int
			var err error
			if tc.workflow == "" {
				n, err = a.InvalidateAll(ctx)
			} else {
				n, err = a.Invalidate(ctx, tc.workflow)
			}
			if err != nil || n != tc.want {
				t.Fatalf("invalidate = %d, %v; want %d", n, err, tc.want)
			}
			b.waitEvent(t, "message")
			for _, store := range []*storeFixture{a, b} {
				for _, k := range keys {
					kept := false
					for _, wf := range tc.kept {
						kept = kept || wf == k.Workflow
					}
					_, level := store.Get(ctx, k)
					if want := map[bool]string{true: LevelMemory, false: ""}[kept]; level != want {
						t.Errorf("%v after the invalidation: %q, want %q", k, level, want)
					}
				}
			}
		})
	}
}

// slowOpBound is how long an operation on a dead or hung Redis may take in
// these tests: the store's timeout (an idle machine measures 151 ms), plus
// slack for a 2-core machine busy with other tests under the race detector
// (1.3 s measured with four busy loops beside the tests). The clients of
// the hung-Redis tests wait 30 s on a hung socket, so only the store's own
// timeout keeps an operation under the bound.
const slowOpBound = redisOpTimeout + 3*time.Second

// patientRedisStore is newRedisStore with a client that would wait 30 s
// for a hung Redis.
func patientRedisStore(t *testing.T, addr string, o Options) *storeFixture {
	t.Helper()
	opt := RedisOptions(addr, "", 0)
	opt.ReadTimeout, opt.WriteTimeout, opt.DialTimeout, opt.PoolTimeout = 30*time.Second, 30*time.Second, 30*time.Second, 30*time.Second
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	o.Redis = rdb
	f := newTestStore(t, o)
	f.waitEvent(t, "subscribe")
	return f
}

// A hung Redis costs a request one operation timeout, then is skipped
// (on the store's clock: set by the test here) but for one probe per
// backoff; nothing is returned as an error but invalidation, and memory
// hits are served throughout. Once Redis answers, a probe finds it.
func TestRedisHung(t *testing.T) {
	srv := testredis.Start(t)
	clock := newStoreClock()
	a := patientRedisStore(t, srv.Addr(), Options{clock: clock})
	b := newRedisStore(t, srv.Addr(), Options{})
	ctx := context.Background()
	inMem := storeKey("wf", false, 1)
	eventually(t, 10*time.Second, "A's answer reaches Redis", func() bool {
		a.Set(inMem, storeEntry(t, clock.Now()), time.Hour)
		e, _ := b.Get(ctx, inMem)
		return e != nil
	})

	srv.Pause()
	defer srv.Resume()
	timed := func(what string, f func()) {
		t.Helper()
		start := time.Now()
		f()
		if d := time.Since(start); d > slowOpBound {
			t.Fatalf("%s took %v on a hung Redis, want under %v", what, d, slowOpBound)
		}
	}
	miss := storeKey("wf", false, 2)
	timed("a miss", func() {
		if e, level := a.Get(ctx, miss); e != nil || level != "" {
			t.Fatalf("get on a hung Redis = %q, want a miss", level)
		}
	})
	failed := a.errors(t, LevelRedis)
	if failed < 1 {
		t.Fatal("the failed get is not counted")
	}
	// Skipped until the backoff (250 ms on the store's clock) is over.
	clock.Advance(breakerMin - time.Millisecond)
	timed("100 misses and sets while Redis is skipped", func() {
		for i := range 100 {
			a.Get(ctx, storeKey("wf", false, 100+i))
			a.Set(storeKey("wf", false, 100+i), storeEntry(t, clock.Now()), time.Hour)
		}
	})
	if _, level := a.Get(ctx, inMem); level != LevelMemory {
		t.Fatalf("memory hit during the outage: %q", level)
	}
	if n := a.errors(t, LevelRedis); n != failed {
		t.Fatalf("%v redis errors after skipped operations, want still %v: skipping is not failing", n, failed)
	}
	// The backoff is over: one probe, which fails and doubles it.
	clock.Advance(time.Millisecond)
	timed("the probe", func() { a.Get(ctx, miss) })
	if n := a.errors(t, LevelRedis); n != failed+1 {
		t.Fatalf("%v redis errors after the probe, want %v", n, failed+1)
	}
	clock.Advance(2*breakerMin - time.Millisecond)
	timed("a skipped get", func() { a.Get(ctx, miss) })
	if n := a.errors(t, LevelRedis); n != failed+1 {
		t.Fatalf("%v redis errors, want %v: the backoff doubled", n, failed+1)
	}
	// Invalidation is never skipped, and says it failed.
	timed("invalidate", func() {
		if _, err := a.Invalidate(ctx, "wf"); err == nil {
			t.Fatal("an invalidation that could not reach Redis succeeded")
		}
	})
	if _, level := a.Get(ctx, inMem); level != "" {
		t.Fatal("a failed invalidation left this replica's memory")
	}

	srv.Resume()
	k := storeKey("wf", false, 3)
	eventually(t, 10*time.Second, "A stores in Redis again", func() bool {
		clock.Advance(breakerMax)
		a.Set(k, storeEntry(t, clock.Now()), time.Hour)
		e, _ := b.Get(ctx, k)
		return e != nil
	})
}

// Redis killed: requests go on from memory, errors are counted, never
// returned (but by invalidation) and cost no waiting. Restarted on the same
// port: both replicas share entries again, and invalidations reach the
// other's memory again, without a restart of either.
func TestRedisKilledAndRestarted(t *testing.T) {
	srv := testredis.Start(t)
	a := newRedisStore(t, srv.Addr(), Options{})
	b := newRedisStore(t, srv.Addr(), Options{})
	ctx := context.Background()
	k1 := storeKey("wf", false, 1)
	a.Set(k1, storeEntry(t, time.Now()), time.Hour)
	eventually(t, 10*time.Second, "B finds A's answer", func() bool {
		e, _ := b.Get(ctx, k1)
		return e != nil
	})

	srv.Kill()
	const bound = slowOpBound
	for i := range 20 {
		start := time.Now()
		if _, level := b.Get(ctx, k1); level != LevelMemory {
			t.Fatalf("B's memory hit during the outage: %q", level)
		}
		if e, _ := b.Get(ctx, storeKey("wf", false, 1000+i)); e != nil {
			t.Fatal("hit on a key never set")
		}
		a.Set(storeKey("wf", false, 1000+i), storeEntry(t, time.Now()), time.Hour)
		if d := time.Since(start); d > bound {
			t.Fatalf("a get and a set with Redis down took %v, want under %v", d, bound)
		}
	}
	start := time.Now()
	if _, err := a.Invalidate(ctx, "nope"); err == nil {
		t.Fatal("invalidate with Redis down succeeded")
	}
	if d := time.Since(start); d > bound {
		t.Fatalf("invalidate with Redis down took %v", d)
	}
	if n := a.errors(t, LevelRedis) + b.errors(t, LevelRedis); n < 2 {
		t.Fatalf("%v redis errors counted, want some from each replica", n)
	}

	srv.Restart()
	restarted := time.Now()
	// Both resubscribe and drop their memory: they may have missed
	// invalidations.
	a.waitEvent(t, "subscribe")
	b.waitEvent(t, "subscribe")
	if _, level := b.Get(ctx, k1); level == LevelMemory {
		t.Fatal("B kept its memory across a resubscription")
	}
	k2 := storeKey("wf", false, 2)
	took := eventually(t, 15*time.Second-time.Since(restarted), "A's answer reaches B after the restart", func() bool {
		a.Set(k2, storeEntry(t, time.Now()), time.Hour)
		e, _ := b.Get(ctx, k2)
		return e != nil
	})
	t.Logf("entries shared again %v after the restart", time.Since(restarted))
	_ = took
	if _, level := b.Get(ctx, k2); level != LevelMemory {
		t.Fatalf("k2 not in B's memory: %q", level)
	}
	n, err := a.Invalidate(ctx, "wf")
	if err != nil || n < 1 {
		t.Fatalf("invalidate after the restart = %d, %v", n, err)
	}
	b.waitEvent(t, "message")
	if _, level := b.Get(ctx, k2); level != "" {
		t.Fatalf("B serves an invalidated answer after the restart from %q", level)
	}
}

// blockingLevel is a Redis level whose writes wait until released.
type blockingLevel struct {
	entered chan struct{} // a write started
	release chan struct{}
}

func (l *blockingLevel) get(context.Context, Key) (*Entry, int64, error) { return nil, 0, nil }
func (l *blockingLevel) set(ctx context.Context, _ Key, _ *Entry, _, _ int64) error {
	l.entered <- struct{}{}
	select {
	case <-l.release:
	case <-ctx.Done():
	}
	return nil
}
func (l *blockingLevel) deleteWorkflow(context.Context, string) (int, error) { return 0, nil }
func (l *blockingLevel) deleteAll(context.Context) (int, error)              { return 0, nil }

// A slow Redis never makes Set wait: past the queue, answers are dropped
// and counted.
func TestWriteQueueFullDrops(t *testing.T) {
	const queue = 4
	l := &blockingLevel{entered: make(chan struct{}, 100), release: make(chan struct{})}
	s := newTestStore(t, Options{remote: l, queueSize: queue})
	s.Set(storeKey("wf", false, 0), storeEntry(t, time.Now()), time.Hour)
	<-l.entered // the writer holds the first answer
	const more = 20
	start := time.Now()
	for i := 1; i <= more; i++ {
		s.Set(storeKey("wf", false, i), storeEntry(t, time.Now()), time.Hour)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("%d sets took %v", more, d)
	}
	if got, want := s.errors(t, LevelRedis), float64(more-queue); got != want {
		t.Fatalf("%v dropped writes counted, want %v", got, want)
	}
	for i := 0; i <= more; i++ {
		if _, level := s.Get(context.Background(), storeKey("wf", false, i)); level != LevelMemory {
			t.Fatalf("answer %d not in memory", i)
		}
	}
	close(l.release)
	for range queue {
		<-l.entered // the queued answers are written
	}
}

func TestBreaker(t *testing.T) {
	ms := func(n int) int64 { return int64(n) * int64(time.Millisecond) }
	var b breaker
	type step struct {
		at       int64
		do       string // allow, fail, ok
		probe    bool   // for fail: the failed op was the probe
		want     bool   // allow's verdict
		wantProb bool
	}
	steps := []step{
		{at: 0, do: "allow", want: true},
		{at: 0, do: "fail"}, // opens for 250ms
		{at: ms(1), do: "allow", want: false},
		{at: ms(249), do: "allow", want: false},
		{at: ms(250), do: "allow", want: true, wantProb: true},
		{at: ms(251), do: "allow", want: false}, // one probe at a time
		{at: ms(300), do: "fail", probe: true},  // 500ms from 300
		{at: ms(799), do: "allow", want: false},
		{at: ms(800), do: "allow", want: true, wantProb: true},
		{at: ms(800), do: "fail", probe: true}, // 1s
		{at: ms(1800), do: "allow", want: true, wantProb: true},
		{at: ms(1800), do: "fail", probe: true}, // 2s
		{at: ms(3800), do: "allow", want: true, wantProb: true},
		{at: ms(3800), do: "fail", probe: true}, // 4s
		{at: ms(7800), do: "allow", want: true, wantProb: true},
		{at: ms(7800), do: "fail", probe: true}, // 5s, the most
		{at: ms(12799), do: "allow", want: false},
		{at: ms(12800), do: "allow", want: true, wantProb: true},
		{at: ms(12800), do: "fail", probe: true}, // still 5s
		{at: ms(17800), do: "allow", want: true, wantProb: true},
		{at: ms(17801), do: "ok"},
		{at: ms(17802), do: "allow", want: true},
		{at: ms(17802), do: "fail"}, // back to 250ms
		{at: ms(18051), do: "allow", want: false},
		{at: ms(18052), do: "allow", want: true, wantProb: true},
	}
	for i, s := range steps {
		switch s.do {
		case "allow":
			ok, probe := b.allow(s.at)
			if ok != s.want || probe != s.wantProb {
				t.Fatalf("step %d at %v: allow = %v, %v; want %v, %v", i, time.Duration(s.at), ok, probe, s.want, s.wantProb)
			}
		case "fail":
			b.failure(s.at, s.probe)
		case "ok":
			b.success()
		}
	}
	// A failure of an op let through before the breaker opened does not
	// extend it; a probe whose caller went away is given back.
	var c breaker
	c.failure(0, false)
	if _, opened := c.failure(ms(100), false); opened {
		t.Fatal("a second concurrent failure reopened the breaker")
	}
	if ok, probe := c.allow(ms(250)); !ok || !probe {
		t.Fatal("no probe at 250ms: a concurrent failure extended the breaker")
	}
	c.release(true)
	if ok, probe := c.allow(ms(251)); !ok || !probe {
		t.Fatal("a released probe is not given again")
	}
}

// Close stops the writer, the subscription and the memory level's
// goroutines.
func TestCloseLeaksNoGoroutine(t *testing.T) {
	srv := testredis.Start(t)
	rdb := redis.NewClient(RedisOptions(srv.Addr(), "", 0))
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for range 3 {
		s, err := NewStore(Options{MaxMemory: 1 << 20, Redis: rdb})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k := storeKey("wf", false, i)
				s.Set(k, storeEntry(t, time.Now()), time.Hour)
				s.Get(ctx, k)
			}()
		}
		wg.Wait()
		if _, err := s.Invalidate(ctx, "wf"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s.Close() // twice is fine
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkStoreGetMemory is the hit path of every cached answer.
func BenchmarkStoreGetMemory(b *testing.B) {
	s, err := NewStore(Options{MaxMemory: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	keys := make([]Key, 1024)
	for i := range keys {
		keys[i] = storeKey("3f1c7a52-95b4-4c8e-9d0a-7c1e2b3d4f5a", i%2 == 0, i)
		s.Set(keys[i], storeEntry(b, time.Now()), time.Hour)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if e, _ := s.Get(ctx, keys[i&1023]); e == nil {
				panic("miss")
			}
			i++
		}
	})
}

// BenchmarkMemoryDeleteWorkflow measures the walk that per-workflow
// invalidation makes of the memory level.
func BenchmarkMemoryDeleteWorkflow(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s, err := NewStore(Options{MaxMemory: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := storeEntry(b, time.Now())
			for i := range n {
				s.Set(storeKey(fmt.Sprint("wf", i%100), false, i), e, time.Hour)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A workflow with no entries: the walk without the deletes,
				// so every iteration measures the same.
				if _, err := s.Invalidate(context.Background(), "none"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestRedisLogger(t *testing.T) {
	_ = func() { redis.SetLogger(RedisLogger(zap.NewNop())) } // what it is for (global: not called here)
	core, logs := observer.New(zapcore.DebugLevel)
	RedisLogger(zap.New(core)).Printf(context.Background(), "dial %s: %v", "127.0.0.1:1", "refused")
	got := logs.All()
	if len(got) != 1 || got[0].Level != zapcore.DebugLevel || got[0].ContextMap()["detail"] != "dial 127.0.0.1:1: refused" {
		t.Fatalf("logged %+v", got)
	}
	quiet, logs := observer.New(zapcore.InfoLevel)
	RedisLogger(zap.New(quiet)).Printf(context.Background(), "x")
	if logs.Len() != 0 {
		t.Fatal("logged above debug")
	}
}
