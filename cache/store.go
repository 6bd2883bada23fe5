package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/flowgate/flowgate/metrics"
)

// The Store's bounds on Redis.
const (
	// redisOpTimeout bounds each round trip to Redis: a Redis that hangs
	// adds at most this to a miss.
	redisOpTimeout = 150 * time.Millisecond
	// writeQueueSize bounds the answers waiting to be written to Redis.
	// One writer drains it; when it is full (Redis slow, or the writer
	// behind a burst of misses), an answer is not written to Redis, and
	// that is counted: its replica still serves it from memory.
	writeQueueSize = 256
	// breakerMin and breakerMax bound how long Redis is skipped after a
	// failure: the first failure skips it for breakerMin, each failed
	// probe after that doubles the time, up to breakerMax.
	breakerMin = 250 * time.Millisecond
	breakerMax = 5 * time.Second
)

// level is one level of the cache: the in-process one (store_memory.go) or
// Redis, shared by every replica (store_redis.go).
type level interface {
	// get returns k's entry and when it expires (Unix nanoseconds); nil,
	// 0, nil on a miss.
	get(ctx context.Context, k Key) (e *Entry, expires int64, err error)
	// set stores e under k until expires. gen is the invalidation
	// generation (Store.gen) known when the answer was stored: a level
	// shared by replicas refuses the write (errStale) when an
	// invalidation has happened since; the memory level ignores it.
	set(ctx context.Context, k Key, e *Entry, expires, gen int64) error
	// deleteWorkflow deletes the workflow's entries and says how many.
	deleteWorkflow(ctx context.Context, workflow string) (int, error)
	// deleteAll deletes every entry of the cache and says how many.
	deleteAll(ctx context.Context) (int, error)
}

// Options configure a Store.
type Options struct {
	// MaxMemory bounds the memory level, in bytes of stored answers
	// (Entry.Size plus the key). Required.
	MaxMemory int64
	// Redis is the shared level; nil for memory only. It must honour
	// context deadlines (RedisOptions sets what the store needs). The
	// caller owns it: Close does not close it.
	Redis *redis.Client
	// Metrics counts failed and skipped operations as
	// CacheError("memory"|"redis"); nil counts nothing.
	Metrics *metrics.Metrics
	// Logger logs failures at debug, Redis going away and coming back at
	// warn and info; nil logs nothing.
	Logger *zap.Logger

	// Tests only.
	clock     otter.Clock  // the memory level's time and the store's
	remote    level        // replaces the Redis level (then Redis may be nil: no pub/sub)
	queueSize int          // replaces writeQueueSize
	observe   func(string) // told "subscribe" and "message" as the listener handles them
}

// Store is the response cache's two levels behind one API: a byte-bounded
// in-process level in front of Redis.
//
// Reads never fail: an error is counted, logged at debug, and is a miss.
// Writes go to memory at once and to Redis in the background. Redis is
// skipped for a while after a failure (a circuit breaker, backing off from
// 250 ms to 5 s and probing with one operation), so a Redis outage costs a
// request at most one round trip's timeout, and the store finds Redis again
// by itself when it is back.
//
// Invalidation reaches every replica: the entries are deleted from Redis,
// and a message on a Redis channel makes every Store drop them from its
// memory. A Store that was unsubscribed (Redis down, a network cut) may have
// missed messages, so whenever its subscription is confirmed, the first
// time and after every reconnection go-redis makes, it drops its whole
// memory level: the answers it had are still in Redis, if they were not
// invalidated meanwhile, and cost a round trip to get back. Two races are
// closed as well: a write queued (or in flight) when any replica
// invalidates is refused by Redis (redisGenKey), and a Redis hit read while
// this replica drops memory is not kept in memory (Store.epoch).
type Store struct {
	mem    *memoryLevel
	remote level         // nil: memory only
	rdb    *redis.Client // nil: no pub/sub
	now    func() int64
	m      *metrics.Metrics
	log    *zap.Logger

	// gen is the Redis invalidation generation this store last knew (see
	// redisGenKey); a write to Redis carries it.
	gen atomic.Int64
	// epoch moves each time the memory level drops entries for an
	// invalidation, so that a Redis hit read before it is not put back
	// into memory after it.
	epoch atomic.Uint64
	brk   breaker

	queue   chan write
	ctx     context.Context // the writer's; ends at Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	ps      *redis.PubSub
	subs    atomic.Int64 // subscriptions confirmed so far
	observe func(string)

	closed    atomic.Bool
	closeOnce sync.Once
}

// write is one answer waiting for Redis.
type write struct {
	k       Key
	e       *Entry
	expires int64
	gen     int64
}

// NewStore makes a Store and, with Redis, starts its writer and its
// subscription to invalidations. Redis need not be reachable.
func NewStore(o Options) (*Store, error) {
	if o.MaxMemory <= 0 {
		return nil, fmt.Errorf("cache: MaxMemory must be positive, not %d", o.MaxMemory)
	}
	if o.Redis != nil && !o.Redis.Options().ContextTimeoutEnabled {
		return nil, errors.New("cache: the Redis client must have ContextTimeoutEnabled, or a hung Redis blocks requests for its read timeout (see cache.RedisOptions)")
	}
	now := o.clockNow()
	mem, err := newMemoryLevel(o.MaxMemory, o.clock, now)
	if err != nil {
		return nil, fmt.Errorf("cache: memory level: %w", err)
	}
	s := &Store{mem: mem, rdb: o.Redis, now: now, m: o.Metrics, log: o.Logger, observe: o.observe}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.remote = o.remote
	if s.remote == nil && o.Redis != nil {
		s.remote = newRedisLevel(o.Redis, &s.gen, redisOpTimeout, now)
	}
	if s.remote != nil {
		n := o.queueSize
		if n <= 0 {
			n = writeQueueSize
		}
		s.queue = make(chan write, n)
		s.wg.Add(1)
		go s.writer()
	}
	if o.Redis != nil {
		// go-redis's PubSub reconnects and resubscribes by itself; the
		// first connection may fail here (Redis down) and is made later.
		ctx, cancel := context.WithTimeout(s.ctx, redisOpTimeout)
		s.ps = o.Redis.Subscribe(ctx, redisChannel)
		cancel()
		ch := s.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
		s.wg.Add(1)
		go s.listen(ch)
	}
	return s, nil
}

// clockNow is the store's clock: Unix nanoseconds, read as otter's own
// clock reads them (the wall time at start plus monotonic time since), or
// the test's clock.
func (o *Options) clockNow() func() int64 {
	if o.clock != nil {
		return o.clock.NowNano
	}
	start := time.Now()
	startNano := start.UnixNano()
	return func() int64 { return startNano + int64(time.Since(start)) }
}

// LevelMemory and LevelRedis are the level names Get returns and errors are
// counted under.
const (
	LevelMemory = "memory"
	LevelRedis  = "redis"
)

// Get looks k up in memory, then in Redis, and says where it found it
// (LevelMemory or LevelRedis), or returns nil, "" on a miss. A Redis hit is put in
// memory until the TTL it has left in Redis. Errors are misses: they are
// counted and logged, never returned, and a Redis outage costs at most
// one round trip's timeout.
func (s *Store) Get(ctx context.Context, k Key) (e *Entry, level string) {
	if e, _, _ := s.mem.get(ctx, k); e != nil {
		return e, LevelMemory
	}
	return s.RemoteGet(ctx, k)
}

// RemoteGet looks k up in the Redis level only (after MemoryGet missed),
// and keeps what it finds in memory too.
func (s *Store) RemoteGet(ctx context.Context, k Key) (e *Entry, level string) {
	if s.remote == nil {
		return nil, ""
	}
	epoch := s.epoch.Load()
	var expires int64
	err := s.redisOp(ctx, "get", func() (err error) {
		e, expires, err = s.remote.get(ctx, k)
		return err
	})
	if err != nil || e == nil {
		return nil, ""
	}
	_ = s.mem.set(ctx, k, e, expires, 0)
	if s.epoch.Load() != epoch {
		// An invalidation dropped memory while this read was in flight:
		// the answer was current when read, but must not stay.
		s.mem.forget(k)
	}
	return e, LevelRedis
}

// MemoryGet looks k up in the in-process level only.
func (s *Store) MemoryGet(ctx context.Context, k Key) *Entry {
	e, _, _ := s.mem.get(ctx, k)
	return e
}

// QueueGet adds k's Redis lookup to pipe, so it shares a round trip with
// other commands (the quota's admission), and returns what reads the
// result once pipe ran; nil when there is no Redis level or its breaker
// is open. Call the result exactly once, after the pipeline's Exec.
func (s *Store) QueueGet(ctx context.Context, pipe redis.Pipeliner, k Key) func() *Entry {
	rl, isRedis := s.remote.(*redisLevel)
	if !isRedis {
		return nil
	}
	ok, probe := s.brk.allow(s.now())
	if !ok {
		return nil
	}
	epoch := s.epoch.Load()
	val, pttl := rl.queueGet(ctx, pipe, k)
	return func() *Entry {
		e, expires, err := rl.decode(k, val, pttl)
		s.report(ctx, "get", err, probe)
		if err != nil || e == nil {
			return nil
		}
		_ = s.mem.set(ctx, k, e, expires, 0)
		if s.epoch.Load() != epoch {
			s.mem.forget(k)
		}
		return e
	}
}

// Set stores e under k until e.Created()+ttl: in memory at once, in Redis
// in the background. It never blocks: when the queue to Redis is full the
// answer is not written there, and that is counted as a Redis error.
func (s *Store) Set(k Key, e *Entry, ttl time.Duration) {
	s.SetFrom(s.Version(), k, e, ttl)
}

// Version is the invalidation state of the store at one moment.
type Version struct {
	epoch uint64
	gen   int64
}

// Version returns the invalidation state now. A miss takes it before it
// goes upstream and stores with SetFrom, so that an answer fetched before
// an invalidation does not outlive it.
func (s *Store) Version() Version { return Version{epoch: s.epoch.Load(), gen: s.gen.Load()} }

// SetFrom is Set for an answer fetched since v: if the store was
// invalidated meanwhile (here, or on any replica through Redis's
// generation), the answer is not stored.
func (s *Store) SetFrom(v Version, k Key, e *Entry, ttl time.Duration) {
	if e == nil || ttl <= 0 || s.epoch.Load() != v.epoch {
		return
	}
	now := s.now()
	expires := now + int64(ttl)
	if c := e.Created(); !c.IsZero() {
		expires = c.UnixNano() + int64(ttl)
	}
	if expires <= now {
		return
	}
	_ = s.mem.set(context.Background(), k, e, expires, 0)
	if s.epoch.Load() != v.epoch {
		// Dropped while it was being written: drop it again.
		s.drop(k.Workflow, false)
		return
	}
	if s.remote == nil || s.closed.Load() || s.brk.skipping(now) {
		return
	}
	select {
	case s.queue <- write{k: k, e: e, expires: expires, gen: v.gen}:
	default:
		s.count(LevelRedis)
		s.log.Debug("cache: redis write queue full; answer kept in memory only", zap.String("workflow", k.Workflow))
	}
}

// Invalidate forgets workflow's entries on every replica: it deletes them
// from Redis, drops them from this replica's memory, and tells the other
// replicas to drop theirs. It returns how many entries Redis deleted, or
// without Redis how many memory dropped. On an error this replica's
// memory is dropped all the same, and the count is that.
func (s *Store) Invalidate(ctx context.Context, workflow string) (int, error) {
	return s.invalidate(ctx, workflow, false)
}

// InvalidateAll forgets every entry on every replica, as Invalidate does
// for one workflow. Only the cache's own keys are deleted from Redis.
func (s *Store) InvalidateAll(ctx context.Context) (int, error) {
	return s.invalidate(ctx, "", true)
}

func (s *Store) invalidate(ctx context.Context, workflow string, all bool) (int, error) {
	if s.remote == nil {
		return s.drop(workflow, all), nil
	}
	// Redis first, memory after: a Redis hit read before the delete was
	// either put in memory before the drop, or sees the epoch moved and
	// forgets it (Get). Dropping memory first would let such a hit refill
	// it. An invalidation is always tried, even while the breaker skips
	// Redis: it must not succeed silently.
	var n int
	var err error
	if all {
		n, err = s.remote.deleteAll(ctx)
	} else {
		n, err = s.remote.deleteWorkflow(ctx, workflow)
	}
	s.report(ctx, "invalidate", err, false)
	local := s.drop(workflow, all)
	if err != nil {
		return local, fmt.Errorf("cache: invalidate in redis (this replica's memory is dropped; the others keep their copies until they expire): %w", err)
	}
	if s.rdb != nil {
		// The new generation travels with the message: a replica that
		// stores an answer after hearing of the invalidation must not
		// have that write refused as if it were queued before it.
		payload := strconv.FormatInt(s.gen.Load(), 10) + " all"
		if !all {
			payload = strconv.FormatInt(s.gen.Load(), 10) + " wf:" + workflow
		}
		pctx, cancel := context.WithTimeout(ctx, redisOpTimeout)
		err = s.rdb.Publish(pctx, redisChannel, payload).Err()
		cancel()
		s.report(ctx, "publish", err, false)
		if err != nil {
			return n, fmt.Errorf("cache: deleted from redis, but not announced to the other replicas (they keep their memory copies until they expire): %w", err)
		}
	}
	return n, nil
}

// drop drops workflow's entries (or all) from memory for an invalidation,
// and says how many.
func (s *Store) drop(workflow string, all bool) int {
	s.epoch.Add(1)
	var n int
	if all {
		n, _ = s.mem.deleteAll(context.Background())
	} else {
		n, _ = s.mem.deleteWorkflow(context.Background(), workflow)
	}
	return n
}

// Close stops the writer and the subscription; answers still queued for
// Redis are not written. The Store still serves from memory, but writes no
// more to Redis. It does not close the Redis client.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		if s.ps != nil {
			_ = s.ps.Close()
		}
		s.wg.Wait()
		s.mem.close()
	})
}

// writer writes queued answers to Redis, one at a time.
func (s *Store) writer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case w := <-s.queue:
			err := s.redisOp(s.ctx, "set", func() error {
				return s.remote.set(s.ctx, w.k, w.e, w.expires, w.gen)
			})
			if errors.Is(err, errStale) {
				s.log.Debug("cache: redis write refused: invalidated since", zap.String("workflow", w.k.Workflow))
			}
		}
	}
}

// listen applies the invalidations other replicas (and this one) announce.
func (s *Store) listen(ch <-chan any) {
	defer s.wg.Done()
	for msg := range ch {
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			// Confirmed, the first time or after a reconnection: messages
			// sent while unsubscribed are lost, so memory may hold entries
			// invalidated meanwhile. Drop it all; Redis still has what is
			// current. (At start memory is empty or nearly.)
			n := s.drop("", true)
			if s.subs.Add(1) > 1 {
				s.log.Info("cache: invalidation channel resubscribed; memory level dropped", zap.Int("entries", n))
			} else {
				s.log.Debug("cache: invalidation channel subscribed")
			}
			s.notify("subscribe")
		case *redis.Message:
			p := m.Payload
			if sp := strings.IndexByte(p, ' '); sp > 0 {
				if g, err := strconv.ParseInt(p[:sp], 10, 64); err == nil {
					storeMax(&s.gen, g)
				}
				p = p[sp+1:]
			}
			switch {
			case p == "all":
				n := s.drop("", true)
				s.log.Debug("cache: invalidation received", zap.String("workflow", ""), zap.Int("entries", n))
			case strings.HasPrefix(p, "wf:"):
				n := s.drop(p[len("wf:"):], false)
				s.log.Debug("cache: invalidation received", zap.String("workflow", p[len("wf:"):]), zap.Int("entries", n))
			default:
				s.log.Debug("cache: unknown invalidation message", zap.String("payload", p))
			}
			s.notify("message")
		}
	}
}

func (s *Store) notify(event string) {
	if s.observe != nil {
		s.observe(event)
	}
}

// errSkipped is an operation not sent to Redis while the breaker is open.
var errSkipped = errors.New("cache: redis skipped after a failure")

// redisOp runs op through the breaker and reports its outcome. It returns
// errSkipped without running op while Redis is being skipped.
func (s *Store) redisOp(ctx context.Context, name string, op func() error) error {
	ok, probe := s.brk.allow(s.now())
	if !ok {
		return errSkipped
	}
	err := op()
	s.report(ctx, name, err, probe)
	return err
}

// report counts and logs an operation's outcome and tells the breaker.
func (s *Store) report(ctx context.Context, name string, err error, probe bool) {
	switch {
	case err == nil || errors.Is(err, errStale):
		if s.brk.success() {
			s.log.Info("cache: redis is back")
		}
	case ctx.Err() != nil && !errors.Is(err, errCorrupt):
		// The caller went away (a client that disconnected, Close):
		// that says nothing about Redis.
		s.brk.release(probe)
	default:
		s.count(LevelRedis)
		s.log.Debug("cache: redis operation failed", zap.String("op", name), zap.Error(err))
		if errors.Is(err, errCorrupt) {
			// Redis answered; the value did not decode.
			s.brk.release(probe)
			return
		}
		if d, opened := s.brk.failure(s.now(), probe); opened {
			s.log.Warn("cache: redis failed; serving from memory and skipping redis until it answers again", zap.Duration("retry_in", d), zap.Error(err))
		}
	}
}

func (s *Store) count(level string) {
	if s.m != nil {
		s.m.CacheError(level)
	}
}

// breaker skips Redis after a failure: for breakerMin after the first, then
// for twice as long after each failed probe, up to breakerMax. When the time
// is up, one operation is let through as a probe; its success closes the
// breaker.
type breaker struct {
	open     atomic.Bool // fast path of every operation while Redis is fine
	mu       sync.Mutex
	failures int   // consecutive
	until    int64 // skip before this (store clock)
	probing  bool  // a probe is in flight
}

// allow says whether an operation may go to Redis now, and whether it is
// the probe.
func (b *breaker) allow(now int64) (ok, probe bool) {
	if !b.open.Load() {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return true, false
	}
	if b.probing || now < b.until {
		return false, false
	}
	b.probing = true
	return true, true
}

// skipping says whether allow would refuse now, without taking the probe.
func (b *breaker) skipping(now int64) bool {
	if !b.open.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open.Load() && (b.probing || now < b.until)
}

// success closes the breaker, and says whether it was open.
func (b *breaker) success() bool {
	if !b.open.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return false
	}
	b.open.Store(false)
	b.failures, b.probing = 0, false
	return true
}

// failure opens the breaker, or extends it after a failed probe, and says
// for how long, and whether it was closed. A failure of an operation let
// through before another failure opened the breaker changes nothing.
func (b *breaker) failure(now int64, probe bool) (backoff time.Duration, opened bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasOpen := b.open.Load()
	if wasOpen && !probe {
		return 0, false
	}
	b.failures++
	backoff = breakerMax
	if shift := b.failures - 1; shift < 10 {
		backoff = min(breakerMin<<shift, breakerMax)
	}
	b.until = now + int64(backoff)
	b.probing = false
	b.open.Store(true)
	return backoff, !wasOpen
}

// release gives the probe back when it ended without telling anything.
func (b *breaker) release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}
