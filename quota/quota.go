// Package quota enforces per-workflow rate limits and budgets before a
// request reaches the flow server.
//
// A request is admitted in one step: the rate (a token bucket) and every
// budget window are checked, and only when all pass is the request counted
// in all of them. With Redis that step is one Lua script on Redis's clock,
// so replicas together admit exactly the limits; without it, a mutex in
// this process does the same. Execution budgets are therefore exact. Token
// and cost budgets admit while their window is below the limit and are
// settled with the real usage once the answer is metered: runs in flight
// when a budget fills may spend past it (the README states the bound).
//
// While Redis cannot be reached, quota.on_redis_error decides: "open"
// enforces the limits in this process alone (each replica then admits up
// to the whole limit), "closed" refuses with 503. Counts made locally
// during an outage are dropped when Redis is back, not added to Redis:
// Redis keeps what it counted before the outage, and the windows go on
// from there. Redis is tried again a second after a failure.
package quota

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/flow"
	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Codes of refused requests, as the 429 and 503 bodies and the metric's
// reason label say them.
const (
	CodeRateLimited   = "rate_limited"
	CodeQuotaExceeded = "quota_exceeded"
	CodeUnavailable   = "quota_unavailable"
)

// Decision is the verdict on one request, with what the RateLimit headers
// say and what settling it later needs.
type Decision struct {
	Allowed bool
	// HasLimit: a rate or an execution budget applies, so the answer
	// carries RateLimit headers.
	HasLimit   bool
	Code       string // on a refusal
	Message    string
	What       string // the refusing measure: requests, executions, tokens, cost_usd
	Limit      int64  // cost budgets: nano-dollars (LimitUSD has dollars)
	LimitUSD   string
	Remaining  int64
	Reset      time.Duration // until the reported limit is whole again
	RetryAfter time.Duration // on a refusal: until a request would pass
	Window     string        // the reported limit's window: 1s, 24h, 30d
	Local      bool          // decided in this process while Redis was down

	pol   *Policy
	key   string
	nowUs int64
	lim   limiter
}

// Options are the Enforcer's collaborators.
type Options struct {
	Config config.Quota
	// Redis shares counts and policies between replicas; nil keeps them
	// in this process.
	Redis redis.UniversalClient
	// DB persists policies set through the admin API and the budget
	// windows when Redis is nil; nil persists nothing (tests).
	DB *bbolt.DB
	// CredentialHeaders are hashed when a policy splits callers by them.
	CredentialHeaders []string
	Logger            *zap.Logger // required
	// RedisError is called on each failed Redis call (a metric).
	RedisError func(op string)
	// Now is the clock of the local limiter; nil: time.Now.
	Now func() time.Time
}

// Enforcer admits requests. Build it with New; Close it.
type Enforcer struct {
	o      Options
	log    *zap.Logger
	cred   map[string]bool
	set    atomic.Pointer[policySet]
	mu     sync.Mutex // serialises policy changes
	local  *memory
	shared *shared // nil without Redis
	open   bool
	store  overrideStore

	downUntil atomic.Int64 // Unix ns: Redis is not tried before then
	probing   atomic.Bool

	budgets budgetViews

	// admitTimeout is the const below; tests that fire a thousand
	// admissions at once on a loaded machine raise it, since what they
	// check is exact counting, not the bound.
	admitTimeout time.Duration

	jobs chan job
	stop chan struct{}
	wg   sync.WaitGroup
}

// job is a settlement or a refund, applied off the request path.
type job struct {
	lim   limiter
	key   string
	pol   *Policy
	nowUs int64
	u     usage
}

// maxLocalKeys bounds the in-process limiter's maps (each).
const maxLocalKeys = 100_000

var keyEscaper = strings.NewReplacer("%", "%25", "|", "%7C", "{", "%7B", "}", "%7D")

// admitTimeout bounds one admission's Redis round trip (loopback or a
// LAN answers in well under a millisecond).
const admitTimeout = 250 * time.Millisecond

// redisRetry is how long Redis is left alone after a failure.
const redisRetry = time.Second

// New builds an Enforcer from a validated config and loads the policies
// set through the admin API.
func New(o Options) (*Enforcer, error) {
	if o.Logger == nil {
		return nil, errors.New("quota: Logger is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	e := &Enforcer{
		o:     o,
		log:   o.Logger,
		cred:  map[string]bool{},
		local: newMemory(maxLocalKeys),
		open:  o.Config.OnRedisErrorOpen(),
		jobs:  make(chan job, 4096),

		admitTimeout: admitTimeout,
		stop:         make(chan struct{}),
	}
	for _, h := range o.CredentialHeaders {
		e.cred[canonicalHeader(h)] = true
	}
	switch {
	case o.Redis != nil:
		e.shared = &shared{rdb: o.Redis}
		e.store = &redisOverrides{rdb: o.Redis}
	case o.DB != nil:
		bs, err := newBoltOverrides(o.DB)
		if err != nil {
			return nil, err
		}
		e.store = bs
		if err := loadWindows(o.DB, e.local, o.Now()); err != nil {
			return nil, err
		}
	default:
		e.store = &memOverrides{m: map[string]config.QuotaPolicy{}}
	}
	e.set.Store(e.build(nil, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.reload(ctx); err != nil {
		// Redis down at start: the file's policies hold until it is back.
		e.log.Warn("quota: the admin API's policies could not be loaded; the config file's apply until they can", zap.Error(err))
		e.redisError("load_policies")
	}
	e.wg.Add(2)
	go e.worker()
	go e.maintain()
	return e, nil
}

// Close stops the background work, applying what is queued, and saves the
// local windows to the embedded store.
func (e *Enforcer) Close() {
	select {
	case <-e.stop:
		return
	default:
	}
	close(e.stop)
	e.wg.Wait()
	if e.o.DB != nil && e.shared == nil {
		if err := saveWindows(e.o.DB, e.local); err != nil {
			e.log.Warn("quota: saving budget windows", zap.Error(err))
		}
	}
}

// Policy returns the policy that applies to a workflow (its canonical id),
// or nil when nothing limits it: the hot path's only cost then.
func (e *Enforcer) Policy(workflow string) *Policy { return e.set.Load().lookup(workflow) }

// Admit decides on one request of workflow by caller (Policy.CallerKey)
// and, when it is admitted, counts it.
func (e *Enforcer) Admit(ctx context.Context, p *Policy, workflow, caller string) Decision {
	d, _ := e.AdmitWith(ctx, p, workflow, caller, nil)
	return d
}

// AdmitWith is Admit with queue's Redis commands (the cache's lookup) sent
// in the same pipeline as the admission, so both take one round trip.
// piped reports whether queue was called and its commands ran; when not
// (no Redis, or Redis skipped after a failure) the caller does its own.
func (e *Enforcer) AdmitWith(ctx context.Context, p *Policy, workflow, caller string, queue func(redis.Pipeliner)) (d Decision, piped bool) {
	// "|" separates the caller; a workflow id (decoded from the path)
	// that contains it, or the braces of Redis key names, is escaped, so
	// no id can name another workflow's caller.
	key := workflow
	if strings.ContainsAny(key, "|{}%") {
		key = keyEscaper.Replace(key)
	}
	if caller != "" {
		key += "|" + caller
	}
	d = Decision{pol: p, key: key}
	if e.shared != nil {
		if e.redisUsable() {
			// A slow Redis is a failing one: past admitTimeout the request
			// is decided as on_redis_error says, not held for go-redis's
			// one-second read timeout.
			actx, cancel := context.WithTimeout(ctx, e.admitTimeout)
			o, err := e.shared.admitWith(actx, key, p, queue)
			cancel()
			piped = queue != nil
			if err == nil {
				e.redisOK()
				d.lim = e.shared
				p.decide(o, &d)
				if len(p.budgets) > 0 && p.perCaller == "" {
					e.budgets.observe(workflow, p, o)
				}
				return d, piped
			}
			if ctx.Err() != nil {
				// The client left: no verdict is needed, and Redis may
				// well be fine. If this call was the probe, it is over:
				// let the next caller try.
				e.probing.Store(false)
				return Decision{Code: CodeUnavailable, Message: "the client went away"}, piped
			}
			e.redisFailed("admit", err)
		}
		if !e.open {
			return Decision{Code: CodeUnavailable, What: "redis", RetryAfter: redisRetry,
				Message: "quotas cannot be checked: Redis is unreachable and quota.on_redis_error is closed"}, piped
		}
		d.Local = true
	}
	o, _ := e.local.admit(ctx, key, p, e.o.Now().UnixMicro())
	d.lim = e.local
	p.decide(o, &d)
	if len(p.budgets) > 0 && p.perCaller == "" {
		e.budgets.observe(workflow, p, o)
	}
	return d, piped
}

// Refund gives back the execution an admitted request was counted for,
// when it was answered without running the flow (a cache hit). The rate
// keeps it: hits count toward rate limits.
//
// It is applied before it returns (one Redis round trip, after the answer
// was written): queued, a refund could land after the client's next
// request, which a budget near its limit would then refuse for an
// execution that never ran.
func (e *Enforcer) Refund(d *Decision) {
	if !d.Allowed || d.lim == nil || len(d.pol.budgets) == 0 {
		return
	}
	e.apply(job{lim: d.lim, key: d.key, pol: d.pol, nowUs: d.nowUs, u: usage{executions: -1}})
}

// Settle adds an admitted execution's metered tokens and cost to the
// windows it was admitted in.
func (e *Enforcer) Settle(d *Decision, tokens, costNano int64) {
	if !d.Allowed || d.lim == nil || (tokens <= 0 && costNano <= 0) || !d.pol.spends() {
		return
	}
	e.enqueue(job{lim: d.lim, key: d.key, pol: d.pol, nowUs: d.nowUs, u: usage{tokens: max(tokens, 0), costNano: max(costNano, 0)}})
}

// spends reports whether a token or cost budget needs settlements.
func (p *Policy) spends() bool {
	for _, b := range p.budgets {
		if b.tokens > 0 || b.costNano > 0 {
			return true
		}
	}
	return false
}

func (e *Enforcer) enqueue(j job) {
	if j.lim == limiter(e.local) {
		// In memory it costs a mutex: applied at once, so the next
		// request already sees it.
		_ = e.local.add(context.Background(), j.key, j.pol, j.nowUs, j.u)
		return
	}
	select {
	case e.jobs <- j:
	default:
		// A full queue means Redis is slow; waiting here would hold a
		// request, dropping would lose a count: apply it now, in this
		// request's goroutine, which is already done with its client.
		e.apply(j)
	}
}

func (e *Enforcer) worker() {
	defer e.wg.Done()
	for {
		select {
		case j := <-e.jobs:
			e.apply(j)
		case <-e.stop:
			for {
				select {
				case j := <-e.jobs:
					e.apply(j)
				default:
					return
				}
			}
		}
	}
}

func (e *Enforcer) apply(j job) {
	if j.lim == limiter(e.shared) && e.shared != nil && !e.redisUsable() {
		// Admitted through Redis, which is down now: the count lands
		// locally, where this process's limits are kept meanwhile.
		j.lim = e.local
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := j.lim.add(ctx, j.key, j.pol, j.nowUs, j.u); err != nil {
		e.redisFailed("settle", err)
		_ = e.local.add(ctx, j.key, j.pol, j.nowUs, j.u)
	} else if j.lim == limiter(e.shared) {
		// redisUsable may have made this call the probe: Redis answered.
		e.redisOK()
	}
}

// maintain reloads the policies (another replica may have changed them),
// forgets ended windows and saves the local ones.
func (e *Enforcer) maintain() {
	defer e.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sweep := 0
	for {
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
		if e.shared == nil || e.redisUsable() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := e.reload(ctx); err != nil {
				e.redisFailed("load_policies", err)
			} else if e.shared != nil {
				e.redisOK()
			}
			cancel()
		}
		if e.o.DB != nil && e.shared == nil {
			if err := saveWindows(e.o.DB, e.local); err != nil {
				e.log.Warn("quota: saving budget windows", zap.Error(err))
			}
		}
		if sweep++; sweep%30 == 0 {
			e.local.sweep(e.o.Now())
		}
	}
}

// redisUsable reports whether to try Redis now: not within redisRetry of
// a failure, and then one caller at a time until it answers.
func (e *Enforcer) redisUsable() bool {
	until := e.downUntil.Load()
	if until == 0 {
		return true
	}
	if time.Now().UnixNano() < until {
		return false
	}
	return e.probing.CompareAndSwap(false, true)
}

func (e *Enforcer) redisOK() {
	if e.downUntil.Load() != 0 {
		e.downUntil.Store(0)
		e.log.Info("quota: Redis is back; limits are shared again")
	}
	e.probing.Store(false)
}

func (e *Enforcer) redisFailed(op string, err error) {
	if e.shared == nil {
		e.log.Warn("quota: embedded store", zap.String("op", op), zap.Error(err))
		return
	}
	if e.downUntil.Swap(time.Now().Add(redisRetry).UnixNano()) == 0 {
		mode := "enforcing limits in this process"
		if !e.open {
			mode = "refusing limited workflows (on_redis_error: closed)"
		}
		e.log.Warn("quota: Redis is unreachable; "+mode, zap.String("op", op), zap.Error(err))
	}
	e.probing.Store(false)
	e.redisError(op)
}

func (e *Enforcer) redisError(op string) {
	if e.o.RedisError != nil {
		e.o.RedisError(op)
	}
}

// Local reports whether Redis is being bypassed right now.
func (e *Enforcer) Local() bool { return e.shared != nil && e.downUntil.Load() != 0 }

// policySet is every policy in force, swapped whole on a change.
type policySet struct {
	config  map[string]*Policy // the file's, by canonical id
	admin   map[string]*Policy // the admin API's, by canonical id
	adminC  map[string]config.QuotaPolicy
	def     *Policy
	version int64
}

func (s *policySet) lookup(workflow string) *Policy {
	p, ok := s.admin[workflow]
	if !ok {
		if p, ok = s.config[workflow]; !ok {
			p = s.def
		}
	}
	if p == nil || p.emission == 0 && len(p.budgets) == 0 {
		return nil
	}
	return p
}

func (e *Enforcer) build(admin map[string]config.QuotaPolicy, version int64) *policySet {
	s := &policySet{config: map[string]*Policy{}, admin: map[string]*Policy{}, adminC: admin, version: version}
	for id, p := range e.o.Config.Workflows {
		c := compile(p, e.cred)
		c.pinned, c.listed = c.perCaller == "", true
		s.config[flow.CanonicalID(id)] = c
	}
	s.def = compile(e.o.Config.Default, e.cred)
	for id, p := range admin {
		c := compile(p, e.cred)
		c.pinned, c.listed = c.perCaller == "", true
		s.admin[id] = c
	}
	return s
}

// reload rebuilds the policy set when the stored policies changed.
func (e *Enforcer) reload(ctx context.Context) error {
	v, err := e.store.version(ctx)
	if err != nil {
		return err
	}
	if cur := e.set.Load(); cur != nil && cur.version == v && cur.adminC != nil {
		return nil
	}
	return e.forceReload(ctx)
}

// Entry is one workflow's policy as the admin API lists it.
type Entry struct {
	Workflow string             `json:"workflowId"`
	Source   string             `json:"source"` // "config" or "admin"
	Policy   config.QuotaPolicy `json:"policy"`
}

// Default is the policy of workflows not listed.
func (e *Enforcer) Default() config.QuotaPolicy { return e.o.Config.Default }

// Entries lists the listed workflows' policies; an admin API entry
// replaces the file's for the same workflow.
func (e *Enforcer) Entries() []Entry {
	s := e.set.Load()
	var out []Entry
	for id, p := range s.config {
		if _, ok := s.admin[id]; !ok {
			out = append(out, Entry{id, "config", p.src})
		}
	}
	for id, p := range s.adminC {
		out = append(out, Entry{id, "admin", p})
	}
	sortEntries(out)
	return out
}

// Entry returns one workflow's listed policy.
func (e *Enforcer) Entry(workflow string) (Entry, bool) {
	id := flow.CanonicalID(workflow)
	s := e.set.Load()
	if p, ok := s.adminC[id]; ok {
		return Entry{id, "admin", p}, true
	}
	if p, ok := s.config[id]; ok {
		return Entry{id, "config", p.src}, true
	}
	return Entry{}, false
}

// Put sets a workflow's policy (checked by the caller), persisted and
// shared with every replica, in force here at once.
func (e *Enforcer) Put(ctx context.Context, workflow string, p config.QuotaPolicy) error {
	if err := e.store.put(ctx, flow.CanonicalID(workflow), p); err != nil {
		return err
	}
	return e.forceReload(ctx)
}

// Delete removes a workflow's admin API policy; the config file's, or the
// default, applies again. It reports whether there was one.
func (e *Enforcer) Delete(ctx context.Context, workflow string) (bool, error) {
	ok, err := e.store.del(ctx, flow.CanonicalID(workflow))
	if err != nil || !ok {
		return ok, err
	}
	return true, e.forceReload(ctx)
}

// forceReload loads the stored policies and puts them in force. The load
// and the swap happen under one lock: a reload that read the store before
// a Put cannot swap its older policies in after the Put's.
func (e *Enforcer) forceReload(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, v, err := e.store.load(ctx)
	if err != nil {
		return err
	}
	for id, p := range m {
		if errs := p.Check(); len(errs) > 0 {
			e.log.Warn("quota: ignoring an invalid stored policy", zap.String("workflow", id), zap.String("error", errs[0].Error()))
			delete(m, id)
		}
	}
	e.set.Store(e.build(m, v))
	return nil
}
