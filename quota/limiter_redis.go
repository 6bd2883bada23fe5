package quota

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// shared is the limiter every replica shares: one Lua script checks the
// rate (GCRA, on Redis's clock) and every budget window, and only when all
// pass counts the request in all of them. Redis runs a script atomically,
// so N replicas together admit exactly the limit: there is no window
// between a check and its count for another replica to slip through.
type shared struct {
	rdb redis.UniversalClient
}

// admitScript: KEYS[1] the rate key, KEYS[1+i] budget i's base key (the
// window index is appended here, from Redis's clock). ARGV: emission in
// µs (0: no rate), burst, the number of budgets, then per budget: window
// seconds, execution, token and cost limits (0: none).
//
// Returns {now_us, refused, what, retry_us, rate_remaining, rate_reset_us,
// then per budget: executions, tokens, cost}: refused is -1 when admitted,
// 0 for the rate, i for budget i; what is 1 executions, 2 tokens, 3 cost.
var admitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local new_tat = 0
local rate_remaining, rate_reset = 0, 0
if emission > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if tat < now then tat = now end
  new_tat = tat + emission
  local allow_at = new_tat - emission * burst
  if now < allow_at then
    return {now, 0, 0, allow_at - now, 0, 0}
  end
  rate_remaining = math.floor((now - allow_at) / emission)
  rate_reset = new_tat - now
end
local used = {}
for i = 1, n do
  local a = 3 + (i - 1) * 4
  local win = tonumber(ARGV[a + 1])
  local idx = math.floor(math.floor(now / 1000000) / win)
  local key = KEYS[1 + i] .. ':' .. idx
  local v = redis.call('HMGET', key, 'e', 't', 'c')
  local e, tk, c = tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')
  local le, lt, lc = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if le > 0 and e >= le then return {now, i, 1, 0, 0, 0} end
  if lt > 0 and tk >= lt then return {now, i, 2, 0, 0, 0} end
  if lc > 0 and c >= lc then return {now, i, 3, 0, 0, 0} end
  used[i] = {key, win, idx, tk, c}
end
if emission > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
local out = {now, -1, 0, 0, rate_remaining, rate_reset}
for i = 1, n do
  local u = used[i]
  out[#out + 1] = redis.call('HINCRBY', u[1], 'e', 1)
  out[#out + 1] = u[4]
  out[#out + 1] = u[5]
  redis.call('PEXPIREAT', u[1], (u[3] + 1) * u[2] * 1000 + 86400000)
end
return out
`)

// Keys: every key of one workflow and caller shares a prefix; the windows
// live a day past their end, so late settlements still land.
func rateKey(key string) string { return "flowgate:quota:{" + key + "}:rate" }
func budgetKey(key string, winSec int64) string {
	return "flowgate:quota:{" + key + "}:w" + strconv.FormatInt(winSec, 10)
}

func (s *shared) admit(ctx context.Context, key string, p *Policy, _ int64) (outcome, error) {
	return s.admitWith(ctx, key, p, nil)
}

// admitWith runs the admission in one pipeline after what queue adds (the
// cache's lookup), so both cost one round trip.
func (s *shared) admitWith(ctx context.Context, key string, p *Policy, queue func(redis.Pipeliner)) (outcome, error) {
	var kbuf [9]string
	keys := append(kbuf[:0], rateKey(key))
	args := make([]any, 0, 3+4*len(p.budgets))
	// Whole microseconds, at least 1: a rate faster than a million a
	// second is still a rate, not "none" (0).
	emissionUs := int64(0)
	if p.emission > 0 {
		emissionUs = max(int64(p.emission/time.Microsecond), 1)
	}
	args = append(args, emissionUs, p.burst, len(p.budgets))
	for _, b := range p.budgets {
		keys = append(keys, budgetKey(key, b.winSec))
		args = append(args, b.winSec, b.executions, b.tokens, b.costNano)
	}
	var res []int64
	var err error
	if queue == nil {
		res, err = admitScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
	} else {
		pipe := s.rdb.Pipeline()
		queue(pipe)
		cmd := pipe.EvalSha(ctx, admitScript.Hash(), keys, args...)
		// Exec's error is the first command's: a cache miss (redis.Nil)
		// is no failure of the script, whose own error is what counts.
		_, _ = pipe.Exec(ctx)
		res, err = cmd.Int64Slice()
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			// The first admission since Redis started: load the script
			// (the queued commands have run already).
			res, err = admitScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
		}
	}
	if err != nil {
		return outcome{}, err
	}
	return parseOutcome(res, p)
}

func parseOutcome(res []int64, p *Policy) (outcome, error) {
	if len(res) < 6 {
		return outcome{}, fmt.Errorf("quota: admit script answered %d values", len(res))
	}
	o := outcome{nowUs: res[0], refused: int(res[1]), rateRetryUs: res[3], rateRemaining: res[4], rateResetUs: res[5]}
	switch {
	case o.refused == 0:
		o.what = "requests"
		o.rateResetUs = o.rateRetryUs
		return o, nil
	case o.refused > 0:
		o.what = [...]string{"", "executions", "tokens", "cost_usd"}[min(max(res[2], 0), 3)]
		return o, nil
	}
	if len(res) != 6+3*len(p.budgets) {
		return outcome{}, fmt.Errorf("quota: admit script answered %d values for %d budgets", len(res), len(p.budgets))
	}
	o.used = make([]usage, len(p.budgets))
	for i := range p.budgets {
		o.used[i] = usage{executions: res[6+3*i], tokens: res[7+3*i], costNano: res[8+3*i]}
	}
	return o, nil
}

func (s *shared) add(ctx context.Context, key string, p *Policy, admittedUs int64, u usage) error {
	if len(p.budgets) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, b := range p.budgets {
			idx := b.windowIndex(admittedUs)
			k := budgetKey(key, b.winSec) + ":" + strconv.FormatInt(idx, 10)
			if u.executions != 0 {
				pl.HIncrBy(ctx, k, "e", u.executions)
			}
			if u.tokens != 0 {
				pl.HIncrBy(ctx, k, "t", u.tokens)
			}
			if u.costNano != 0 {
				pl.HIncrBy(ctx, k, "c", u.costNano)
			}
			pl.PExpireAt(ctx, k, time.UnixMilli(b.windowEnd(idx)/1e3+86400000))
		}
		return nil
	})
	return err
}
