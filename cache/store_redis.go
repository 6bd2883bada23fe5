package cache

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// Redis layout. Everything flowgate writes is under "flowgate:", so a Redis
// shared with other applications is never flushed: invalidation deletes
// only the keys it matches.
const (
	// redisPrefix starts every entry's key:
	//
	//	flowgate:cache:v1:<hex(workflow)>:<j|s><hex(sum)>
	//
	// The workflow id is hex-encoded so that no byte of it is special in a
	// key or in a SCAN MATCH pattern (*, ?, [, ], \), and the ":" after it
	// keeps one workflow's pattern from matching another whose id it
	// starts. j is a JSON answer, s a stream. v1 changes with the format
	// of the value (Entry.MarshalBinary), so that a new version never
	// reads an old one's entries.
	redisPrefix = "flowgate:cache:v1:"
	// redisGenKey holds the invalidation generation, an integer that every
	// invalidation increments before it deletes. A write to Redis carries
	// the generation its writer knew when the answer was stored, and a
	// script refuses it when the generation has moved since: an answer
	// queued (or in flight) when another replica invalidated its
	// workflow can never land after the delete and outlive it. It is
	// outside redisPrefix so that invalidating everything keeps it.
	redisGenKey = "flowgate:cache-gen:v1"
	// redisChannel carries invalidations to every replica's memory level:
	// "<generation> wf:<workflow id>" or "<generation> all".
	redisChannel = "flowgate:cache:v1:invalidate"
	// scanBatch is the COUNT hint of one SCAN, and so about the number of
	// keys one UNLINK deletes.
	scanBatch = 512
)

// setScript stores an entry unless the generation moved: KEYS[1] the
// generation, KEYS[2] the entry; ARGV[1] the writer's generation, ARGV[2]
// the value, ARGV[3] the TTL in ms. It answers "OK", or the current
// generation when it refused.
var setScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1]) or '0'
if g ~= ARGV[1] then return g end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 'OK'
`)

// RedisOptions are the go-redis options that the store is built for, from
// config's redis section: context deadlines honoured (the store bounds each
// operation at 150 ms, which needs them), no retries (the store's breaker
// backs off instead, and a retried cache read is slower than a miss),
// one dial per attempt, and go-redis's maintenance notifications off (a
// Redis Cloud feature; with a self-hosted Redis its handshake is a wasted
// round trip per connection). The pool keeps go-redis's default size (10
// per CPU).
func RedisOptions(addr, password string, db int) *redis.Options {
	return &redis.Options{
		Addr:                  addr,
		Password:              password,
		DB:                    db,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialTimeout:           time.Second,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		PoolTimeout:           time.Second,
		DialerRetries:         1,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
}

// redisLevel is the level shared by every replica.
type redisLevel struct {
	rdb       *redis.Client
	opTimeout time.Duration
	// gen is the invalidation generation this replica last saw: updated
	// by its invalidations and by refused writes.
	gen *atomic.Int64
	now func() int64 // the store's clock
}

func newRedisLevel(rdb *redis.Client, gen *atomic.Int64, opTimeout time.Duration, now func() int64) *redisLevel {
	return &redisLevel{rdb: rdb, gen: gen, opTimeout: opTimeout, now: now}
}

// redisKey is k's key (see redisPrefix).
func redisKey(k Key) string {
	n := len(redisPrefix) + 2*len(k.Workflow) + 2 + 2*len(k.Sum)
	b := make([]byte, 0, n)
	b = append(b, redisPrefix...)
	b = hex.AppendEncode(b, []byte(k.Workflow))
	b = append(b, ':')
	if k.Stream {
		b = append(b, 's')
	} else {
		b = append(b, 'j')
	}
	b = hex.AppendEncode(b, k.Sum[:])
	return string(b)
}

// workflowPattern matches every key of workflow, and nothing else.
func workflowPattern(workflow string) string {
	return redisPrefix + hex.EncodeToString([]byte(workflow)) + ":*"
}

func (r *redisLevel) get(ctx context.Context, k Key) (*Entry, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	val, pttl := r.queueGet(ctx, pipe, k)
	_, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, err
	}
	return r.decode(k, val, pttl)
}

// queueGet adds k's lookup to a pipeline: the value and its time to live.
func (r *redisLevel) queueGet(ctx context.Context, pipe redis.Pipeliner, k Key) (*redis.StringCmd, *redis.DurationCmd) {
	key := redisKey(k)
	return pipe.Get(ctx, key), pipe.PTTL(ctx, key)
}

// decode reads a queued lookup once its pipeline ran.
func (r *redisLevel) decode(k Key, val *redis.StringCmd, pttl *redis.DurationCmd) (*Entry, int64, error) {
	if err := val.Err(); errors.Is(err, redis.Nil) {
		return nil, 0, nil
	} else if err != nil {
		return nil, 0, err
	}
	if err := pttl.Err(); err != nil {
		return nil, 0, err
	}
	key := redisKey(k)
	ttl := pttl.Val()
	if ttl <= 0 {
		// Gone between the two commands, or stored without a TTL by
		// someone else: not ours to serve.
		return nil, 0, nil
	}
	b, err := val.Bytes()
	if err != nil {
		return nil, 0, err
	}
	e := new(Entry)
	if err := e.UnmarshalBinary(b); err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %w", errCorrupt, key, err)
	}
	return e, r.now() + int64(ttl), nil
}

// errCorrupt is a value that does not decode: Redis answered, so it does
// not count against Redis's health.
var errCorrupt = errors.New("cache: stored value does not decode")

// errStale is a write refused because an invalidation happened since its
// answer was stored: expected, not a failure of Redis.
var errStale = errors.New("cache: write refused: invalidated since")

func (r *redisLevel) set(ctx context.Context, k Key, e *Entry, expires int64, gen int64) error {
	ttl := time.Duration(expires - r.now())
	ms := ttl.Milliseconds()
	if ms <= 0 {
		return nil
	}
	b, err := e.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	res, err := setScript.Run(ctx, r.rdb, []string{redisGenKey, redisKey(k)}, strconv.FormatInt(gen, 10), b, ms).Text()
	if err != nil {
		return err
	}
	if res == "OK" {
		return nil
	}
	// Refused: learn the generation, so that the next answers are stored.
	if g, err := strconv.ParseInt(res, 10, 64); err == nil {
		storeMax(r.gen, g)
	}
	return errStale
}

func (r *redisLevel) deleteWorkflow(ctx context.Context, workflow string) (int, error) {
	return r.deleteMatching(ctx, workflowPattern(workflow))
}

func (r *redisLevel) deleteAll(ctx context.Context) (int, error) {
	return r.deleteMatching(ctx, redisPrefix+"*")
}

// deleteMatching moves the generation on, then deletes every key matching
// pattern: SCAN in batches, each batch unlinked, each round trip bounded by
// the operation timeout. SCAN returns every key that exists from its start
// to its end, and a write that lands after the generation moved is refused,
// so no entry stored before the call survives it.
func (r *redisLevel) deleteMatching(ctx context.Context, pattern string) (int, error) {
	octx, cancel := context.WithTimeout(ctx, r.opTimeout)
	g, err := r.rdb.Incr(octx, redisGenKey).Result()
	cancel()
	if err != nil {
		return 0, err
	}
	storeMax(r.gen, g)
	n := 0
	var cursor uint64
	for {
		octx, cancel := context.WithTimeout(ctx, r.opTimeout)
		keys, next, err := r.rdb.Scan(octx, cursor, pattern, scanBatch).Result()
		if err == nil && len(keys) > 0 {
			var d int64
			d, err = r.rdb.Unlink(octx, keys...).Result()
			n += int(d)
		}
		cancel()
		if err != nil {
			return n, err
		}
		if cursor = next; cursor == 0 {
			return n, nil
		}
	}
}

// RedisLogger adapts logger for redis.SetLogger, at debug: go-redis logs
// each failed dial of its pool and of its pub/sub reconnection loop (ten a
// second while Redis is down) to stderr by default, and the Store already
// warns once when Redis fails and says when it is back.
func RedisLogger(logger *zap.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogger{logger.WithOptions(zap.AddCallerSkip(1))}
}

type redisLogger struct{ l *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := r.l.Check(zap.DebugLevel, "redis client"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

// storeMax moves a generation forward to g, never back: replies and
// messages from Redis may arrive out of order.
func storeMax(a *atomic.Int64, g int64) {
	for cur := a.Load(); g > cur && !a.CompareAndSwap(cur, g); cur = a.Load() {
	}
}
