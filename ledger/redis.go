package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// redisPrefix starts every key the ledger writes.
	redisPrefix = "flowgate:usage:"
	// redisTTL is how long a key lives after its last write.
	redisTTL = MaxDays * 24 * time.Hour
	// markerTTL is how long a process's flush marker lives after its last
	// flush: a batch whose outcome stays unknown longer could be counted
	// twice (see the package comment).
	markerTTL = 7 * 24 * time.Hour
	// maxTxRetries bounds the retries of a flush whose EXEC the marker's
	// WATCH aborted; each retry first checks whether the batch landed.
	maxTxRetries = 10
)

// redisFields name the hash fields of counters' values, in order.
var redisFields = [...]string{"exec", "est", "hits", "rej", "in", "out", "nano", "ms"}

func (c *counters) values() [8]int64 {
	return [8]int64{c.exec, c.est, c.hits, c.rej, c.in, c.out, c.nano, c.ms}
}

func (c *counters) set(i int, v int64) {
	switch i {
	case 0:
		c.exec = v
	case 1:
		c.est = v
	case 2:
		c.hits = v
	case 3:
		c.rej = v
	case 4:
		c.in = v
	case 5:
		c.out = v
	case 6:
		c.nano = v
	case 7:
		c.ms = v
	}
}

// Redis is the ledger in Redis, shared by every replica. It needs a single
// Redis or a failover pair, not a Redis Cluster (see the package comment).
type Redis struct {
	*core
}

var _ Ledger = (*Redis)(nil)

// NewRedis returns the ledger kept in rdb. The client should bound its
// operations (go-redis's ContextTimeoutEnabled, or read and write
// timeouts): a flush waits for its reply, and Close for the last flush.
// The caller closes rdb after Close. It panics when rdb or o.Logger is nil.
func NewRedis(rdb redis.UniversalClient, o Options) *Redis {
	if rdb == nil {
		panic("ledger: NewRedis: rdb is nil")
	}
	if o.Logger == nil {
		panic("ledger: NewRedis: Options.Logger is required")
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails
	s := &redisStore{rdb: rdb, marker: redisPrefix + "flush:" + hex.EncodeToString(id[:])}
	return &Redis{newCore(s, o, 0)}
}

type redisStore struct {
	rdb redis.UniversalClient
	// marker holds the sequence number of this process's last applied
	// batch.
	marker string
	// seq is the sequence number of the last batch given to write: the
	// batch that a retry retries. Only the flusher (core.sem) touches it.
	seq int64
	// landed counts the retried batches found already applied.
	landed atomic.Int64
}

// hashKey is the hash of a workflow's day, for caller or ("") all.
func hashKey(wf, date, caller string) string {
	if caller == "" {
		return redisPrefix + "{" + wf + "}:" + date
	}
	return redisPrefix + "{" + wf + "}:" + date + ":c:" + caller
}

// daysKey is the set of the workflows with activity on date.
func daysKey(date string) string { return redisPrefix + "days:" + date }

// write applies b in one MULTI/EXEC under WATCH of the marker, which the
// transaction sets to b's sequence number. A retried batch is first
// checked against the marker: if it landed, it is not applied again.
func (s *redisStore) write(ctx context.Context, b batch, retry bool) error {
	if !retry {
		s.seq++
	}
	seq := s.seq
	for attempt := 0; ; attempt++ {
		landed := false
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			if retry {
				v, err := tx.Get(ctx, s.marker).Int64()
				switch {
				case err == nil && v >= seq:
					landed = true
					return nil
				case err != nil && !errors.Is(err, redis.Nil):
					return err
				}
			}
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				s.queue(ctx, p, b, seq)
				return nil
			})
			return err
		}, s.marker)
		if errors.Is(err, redis.TxFailedErr) && attempt < maxTxRetries {
			// The marker moved between WATCH and EXEC: a stale EXEC of
			// this batch landed. The check will see it.
			retry = true
			continue
		}
		if err == nil && landed {
			s.landed.Add(1)
		}
		return err
	}
}

// queue adds b's commands to p.
func (s *redisStore) queue(ctx context.Context, p redis.Pipeliner, b batch, seq int64) {
	dates := make(map[int64]string)
	for k, c := range b {
		date, ok := dates[k.day]
		if !ok {
			date = dateOf(k.day)
			dates[k.day] = date
		}
		hk := hashKey(k.wf, date, k.caller)
		for i, v := range c.values() {
			if v != 0 {
				p.HIncrBy(ctx, hk, redisFields[i], v)
			}
		}
		p.Expire(ctx, hk, redisTTL)
		if k.caller == "" {
			p.SAdd(ctx, daysKey(date), k.wf)
		}
	}
	for _, date := range dates {
		p.Expire(ctx, daysKey(date), redisTTL)
	}
	p.Set(ctx, s.marker, seq, markerTTL)
}

// parseHash reads a hash's counters; unknown fields are ignored.
func parseHash(m map[string]string) (counters, error) {
	var c counters
	for i, f := range redisFields {
		s, ok := m[f]
		if !ok {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return counters{}, fmt.Errorf("ledger: field %s: %w", f, err)
		}
		c.set(i, v)
	}
	return c, nil
}

// read is one pipeline of HGETALL, a day each.
func (s *redisStore) read(ctx context.Context, wf, caller string, from, to int64) (map[int64]*counters, error) {
	cmds := make([]*redis.MapStringStringCmd, 0, to-from+1)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for d := from; d <= to; d++ {
			cmds = append(cmds, p.HGetAll(ctx, hashKey(wf, dateOf(d), caller)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[int64]*counters)
	for i, cmd := range cmds {
		m := cmd.Val()
		if len(m) == 0 {
			continue
		}
		c, err := parseHash(m)
		if err != nil {
			return nil, fmt.Errorf("%w (key %q)", err, cmd.Args()[1])
		}
		out[from+int64(i)] = &c
	}
	return out, nil
}

// readAll is one pipeline of SMEMBERS, a day each, then one of HGETALL
// for each workflow and day found.
func (s *redisStore) readAll(ctx context.Context, from, to int64) (map[string]map[int64]*counters, error) {
	sets := make([]*redis.StringSliceCmd, 0, to-from+1)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for d := from; d <= to; d++ {
			sets = append(sets, p.SMembers(ctx, daysKey(dateOf(d))))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	type pair struct {
		wf  string
		day int64
		cmd *redis.MapStringStringCmd
	}
	var pairs []pair
	for i, cmd := range sets {
		for _, wf := range cmd.Val() {
			if validWorkflow(wf) {
				pairs = append(pairs, pair{wf: wf, day: from + int64(i)})
			}
		}
	}
	out := make(map[string]map[int64]*counters)
	if len(pairs) == 0 {
		return out, nil
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range pairs {
			pairs[i].cmd = p.HGetAll(ctx, hashKey(pairs[i].wf, dateOf(pairs[i].day), ""))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, pr := range pairs {
		m := pr.cmd.Val()
		if len(m) == 0 {
			continue
		}
		c, err := parseHash(m)
		if err != nil {
			return nil, fmt.Errorf("%w (key %q)", err, pr.cmd.Args()[1])
		}
		if out[pr.wf] == nil {
			out[pr.wf] = make(map[int64]*counters)
		}
		out[pr.wf][pr.day] = &c
	}
	return out, nil
}
