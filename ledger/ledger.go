// Package ledger is the persisted usage ledger of flow executions: per
// workflow and UTC day, and per caller within them, how many executions
// ran (and how many of them had their tokens estimated), how many requests
// were answered from the cache or rejected, the input and output tokens,
// the cost in nano-dollars and the summed execution time.
//
// Two stores keep it: Bolt, an embedded bbolt file for a single replica,
// and Redis, shared by every replica. Both aggregate in memory first: Add
// adds a record to the pending counters of its keys (the workflow's
// totals, and the caller's when the record names one) and never waits
// for storage; a background loop writes what is pending: to Redis within
// milliseconds of an Add, to bbolt at most once per second, in one
// transaction per flush. Report flushes first, so it includes everything
// this process added before it was called (other replicas' pending
// records, a few milliseconds' worth, are not in Redis yet); while the store fails, Report and Reports
// fail too (an admin API answers 503), except for a query that can never
// be answered, whose error wraps ErrInvalidQuery (400).
//
// # What can be lost
//
// Nothing that was added is dropped while the store works, and nothing is
// dropped when it fails for a while: a batch that could not be written is
// kept in memory and written again (every 10 ms at first, backing off to
// once a second; bbolt: once a second) until the store takes it, and
// records that arrive meanwhile are aggregated beside it. What is lost:
//
//   - Records of new keys (a workflow, day and caller not already pending)
//     once MaxPending distinct keys are held because the store keeps
//     failing. Each such record is passed to OnError as ErrDropped. Records
//     of keys already held are still added.
//   - What is pending when the process dies without Close: up to about a
//     second of records with bbolt, a few milliseconds with a reachable
//     Redis, everything not yet written while Redis is unreachable.
//   - What is pending at Close when the store fails then; Close returns
//     the error and logs how many keys were not written.
//   - What the store itself loses: Redis without persistence loses
//     everything on a restart, with appendfsync everysec up to a second,
//     and a failover to a replica loses the writes not replicated yet
//     (whole transactions: a batch is never half there). A bbolt flush is written with the db's sync settings (fsync on
//     commit unless the caller set NoSync).
//
// # Written once, even when a reply is lost
//
// A Redis flush whose EXEC reply is lost (a timeout, a reset connection)
// may or may not have been applied, and the EXEC may even still be on its
// way to the server. The Redis store does not count such a batch twice:
// every flush runs under WATCH of a marker key of this process
// (flowgate:usage:flush:<random id>), sets the marker to the batch's
// sequence number inside the same MULTI/EXEC, and a batch retried after a
// failure is first checked against the marker, under WATCH again. A
// stale EXEC that reaches the server after the retry is refused by its own
// WATCH (the retry changed the marker), and one that lands between the
// check and the retry's EXEC makes the retry's EXEC fail, after which the
// check sees it applied. The limits: the marker lives 7 days after the
// last flush, so a batch whose outcome stays unknown for longer (Redis up
// but unreachable from this process for a week) could be written twice;
// and a command that fails inside an applied EXEC (WRONGTYPE because
// something else wrote a non-hash under a usage key) loses that command's
// counts, since Redis applies the rest of the transaction and the batch is
// then known as applied. The store needs a single Redis (or a
// primary/replica failover pair), not a Redis Cluster: one flush is one
// transaction over keys of many workflows.
//
// # Layout
//
// Bolt: bucket "usage", key workflow \x00 YYYY-MM-DD \x00 caller (caller
// empty for the workflow's totals), value a 65-byte record: a version
// byte (1), then the eight counters as little-endian int64s.
//
// Redis: a hash per key, flowgate:usage:{<workflow>}:<YYYY-MM-DD> for the
// totals and flowgate:usage:{<workflow>}:<YYYY-MM-DD>:c:<caller> per
// caller, its fields incremented with HINCRBY, and the set
// flowgate:usage:days:<YYYY-MM-DD> of the workflows with activity that
// day (Reports reads it). Every key expires 400 days after its last write.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Record is what one request adds.
type Record struct {
	// Workflow is the canonical flow id (lower-case). Required; at most
	// 1024 bytes, without NUL or '}'.
	Workflow string
	// Caller is "" or an opaque caller key (already hashed by the caller of
	// Add; at most 1024 bytes); when set, the record is also aggregated
	// under that caller.
	Caller string
	// Time is when the request finished; its UTC date is the day. The zero
	// time means now.
	Time time.Time
	// Executions is 1 for a run that reached the flow server.
	Executions int64
	// EstimatedExecutions counts executions whose tokens were estimated,
	// not reported.
	EstimatedExecutions int64
	CacheHits           int64
	Rejected            int64
	InputTokens         int64
	OutputTokens        int64
	// CostNano is in nano-dollars (1e-9 USD).
	CostNano int64
	// DurationMs is the execution's duration; AverageDuration is the sum
	// over Executions.
	DurationMs int64
}

// Day is one day of a Report.
type Day struct {
	Date       string  `json:"date"` // YYYY-MM-DD (UTC)
	Executions int64   `json:"executions"`
	Tokens     int64   `json:"tokens"` // input + output
	Cost       float64 `json:"cost"`   // USD
	CacheHits  int64   `json:"cacheHits"`
	Rejected   int64   `json:"rejected"`
}

// Report is a workflow's (or one caller's) usage over a range of days.
// Every number is 0, never NaN, when there is no data; UsageByDay is empty,
// never nil, so that it encodes as [].
type Report struct {
	WorkflowID          string  `json:"workflowId"`
	Caller              string  `json:"caller,omitempty"`
	From                string  `json:"from"` // YYYY-MM-DD
	To                  string  `json:"to"`
	TotalExecutions     int64   `json:"totalExecutions"`
	TotalTokens         int64   `json:"totalTokens"`
	InputTokens         int64   `json:"inputTokens"`
	OutputTokens        int64   `json:"outputTokens"`
	TotalCost           float64 `json:"totalCost"` // USD, from the exact nano sum
	TotalCostNano       int64   `json:"totalCostNano"`
	AverageDuration     float64 `json:"averageDuration"` // ms per execution
	CacheHits           int64   `json:"cacheHits"`
	Rejected            int64   `json:"rejected"`
	EstimatedExecutions int64   `json:"estimatedExecutions"`
	UsageByDay          []Day   `json:"usageByDay"` // days with any activity, ascending
}

// Query selects a Report.
type Query struct {
	// Workflow is the flow id. Required.
	Workflow string
	// Caller selects one caller's part; "" the workflow's totals (all
	// callers).
	Caller string
	// From and To are inclusive UTC dates: times are truncated to their
	// UTC day. To must not be before From, nor more than MaxDays after it.
	From, To time.Time
}

// MaxDays is how far apart the From and To of a query may be, in days.
// It is also how long the Redis store keeps a key after its last write.
const MaxDays = 400

// Ledger is the usage ledger; Bolt and Redis implement it.
type Ledger interface {
	// Add records r. It never blocks on storage: records are aggregated in
	// memory per workflow, day and caller, and written by a background
	// loop.
	Add(r Record)
	// Report flushes what is pending and reports q from the store. Its
	// error wraps ErrInvalidQuery for a query that can never be answered;
	// any other error is the store's (or ErrClosed).
	Report(ctx context.Context, q Query) (Report, error)
	// Reports flushes what is pending and reports every workflow with
	// activity between from and to (inclusive UTC days), sorted by
	// workflow id: the workflows' totals, not their callers.
	Reports(ctx context.Context, from, to time.Time) ([]Report, error)
	// Flush writes what is pending.
	Flush(ctx context.Context) error
	// Close writes what is pending and stops the loop. Later calls return
	// the first one's result.
	Close() error
}

// Options configure a ledger.
type Options struct {
	// Logger is required.
	Logger *zap.Logger
	// OnError is called on each failed write (the loop's, Flush's,
	// Report's, Close's), and from Add for each record it does not record:
	// with ErrDropped (past MaxPending), ErrInvalidRecord or ErrClosed.
	// It must be cheap and must not call the ledger. May be nil.
	OnError func(err error)
	// MaxPending bounds the distinct keys (workflow, day, caller) held in
	// memory while the store fails; past it, records of new keys are
	// dropped. Default 100000.
	MaxPending int
}

// DefaultMaxPending is Options.MaxPending's default.
const DefaultMaxPending = 100000

var (
	// ErrClosed is returned by Report, Reports and Flush after Close, and
	// passed to OnError for records added after Close.
	ErrClosed = errors.New("ledger: closed")
	// ErrInvalidQuery wraps the errors of a query that can never be
	// answered (an admin API answers 400 to it, and 503 to the others).
	ErrInvalidQuery = errors.New("ledger: invalid query")
	// ErrDropped is passed to OnError for each record dropped because
	// MaxPending keys were already held.
	ErrDropped = errors.New("ledger: usage record dropped: too many keys pending while the store fails")
	// ErrInvalidRecord is passed to OnError for each record dropped because
	// its workflow is empty, contains NUL or '}', or its workflow or caller
	// is longer than 1024 bytes, or its time is outside the years 1 to 9999.
	ErrInvalidRecord = errors.New("ledger: invalid usage record")
)

// counters are the sums of one key.
type counters struct {
	exec, est, hits, rej, in, out, nano, ms int64
}

func (c *counters) addRecord(r *Record) {
	c.merge(&counters{r.Executions, r.EstimatedExecutions, r.CacheHits, r.Rejected, r.InputTokens, r.OutputTokens, r.CostNano, r.DurationMs})
}

func (c *counters) merge(o *counters) {
	c.exec += o.exec
	c.est += o.est
	c.hits += o.hits
	c.rej += o.rej
	c.in += o.in
	c.out += o.out
	c.nano += o.nano
	c.ms += o.ms
}

func (c *counters) isZero() bool { return *c == counters{} }

// key is one aggregate: a workflow's day, for one caller or ("") all.
type key struct {
	wf     string
	day    int64 // days since 1970-01-01 (UTC)
	caller string
}

// batch is what is pending, or one flush of it.
type batch map[key]*counters

// backend is one store.
type backend interface {
	// write adds b to the store, whole or not at all. retry is set when b
	// was given to write before and failed (it is the same batch).
	write(ctx context.Context, b batch, retry bool) error
	// read returns the counters of wf and caller for each day in
	// [from, to] that has any.
	read(ctx context.Context, wf, caller string, from, to int64) (map[int64]*counters, error)
	// readAll returns the workflows' totals for each day in [from, to]
	// that has any, by workflow.
	readAll(ctx context.Context, from, to int64) (map[string]map[int64]*counters, error)
}

const (
	secondsPerDay = 86400
	// minDay and maxDay bound the days that a YYYY-MM-DD date can name.
	minDay = -719162 // 0001-01-01
	maxDay = 2932896 // 9999-12-31
	// firstBackoff and maxBackoff pace the retries of a failing store.
	firstBackoff = 10 * time.Millisecond
	maxBackoff   = time.Second
	// flushTimeout bounds one write of the background loop (the client's
	// own timeouts may end it sooner), and the final flush of Close.
	flushTimeout = 5 * time.Second
	// logEvery spaces the repeated warnings of a failing store.
	logEvery = 10 * time.Second
	// maxIDLen bounds a workflow id and a caller key, in bytes.
	maxIDLen = 1024
	// maxSpare is the largest drained batch kept for reuse.
	maxSpare = 4096
)

// dayOf is t's UTC day.
func dayOf(t time.Time) int64 {
	s := t.Unix()
	d := s / secondsPerDay
	if s%secondsPerDay < 0 {
		d--
	}
	return d
}

// dateOf formats a day as YYYY-MM-DD.
func dateOf(day int64) string {
	return time.Unix(day*secondsPerDay, 0).UTC().Format(time.DateOnly)
}

// validWorkflow reports whether wf can name a workflow in both stores'
// keys: not empty, no NUL (bbolt's separator) and no '}' (it would end
// Redis's hash tag, and let two workflows' keys collide).
func validWorkflow(wf string) bool {
	if wf == "" || len(wf) > maxIDLen {
		return false
	}
	for i := 0; i < len(wf); i++ {
		if wf[i] == 0 || wf[i] == '}' {
			return false
		}
	}
	return true
}

// core is what both stores share: the pending aggregates, the background
// loop and the reports.
type core struct {
	be          backend
	log         *zap.Logger
	onError     func(error)
	maxPending  int
	minInterval time.Duration // between the loop's flushes (bbolt: 1 s)

	mu      sync.Mutex
	pending batch
	spare   batch // a drained batch, for reuse
	// taken is the batch that a flush took from pending and has not
	// written yet: in flight, or failed and to be retried (as is, before
	// anything else). Only the holder of sem sets it (under mu too); the
	// batch is not changed while taken, so Add may read it under mu.
	taken  batch
	woken  bool // the loop was woken since the last take
	closed bool

	// sem serialises flushes: the loop's, Flush's, Report's and Close's.
	sem chan struct{}

	// failing and lastWarn pace the warnings of failed writes (under sem);
	// dropped counts the records dropped since lastDropWarn (under mu).
	failing      bool
	lastWarn     time.Time
	dropped      int64
	lastDropWarn time.Time

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
}

func newCore(be backend, o Options, minInterval time.Duration) *core {
	c := &core{
		be:          be,
		log:         o.Logger,
		onError:     o.OnError,
		maxPending:  o.MaxPending,
		minInterval: minInterval,
		pending:     make(batch),
		sem:         make(chan struct{}, 1),
		wake:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	if c.maxPending <= 0 {
		c.maxPending = DefaultMaxPending
	}
	if c.onError == nil {
		c.onError = func(error) {}
	}
	go c.loop()
	return c
}

// Add records r; see Ledger.
func (c *core) Add(r Record) {
	if r.Executions == 0 && r.EstimatedExecutions == 0 && r.CacheHits == 0 && r.Rejected == 0 &&
		r.InputTokens == 0 && r.OutputTokens == 0 && r.CostNano == 0 && r.DurationMs == 0 {
		return
	}
	var day int64
	if r.Time.IsZero() {
		day = dayOf(time.Now())
	} else {
		day = dayOf(r.Time)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.onError(ErrClosed)
		return
	}
	err := c.addLocked(key{r.Workflow, day, ""}, &r)
	if err == nil && r.Caller != "" {
		err = c.addLocked(key{r.Workflow, day, r.Caller}, &r)
	}
	wake := !c.woken
	c.woken = true
	c.mu.Unlock()
	if wake {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	if err != nil {
		c.onError(err)
	}
}

// addLocked adds r to k's pending counters. A new key is checked, and
// dropped when maxPending keys are held already, unless a taken batch
// holds it.
func (c *core) addLocked(k key, r *Record) error {
	p := c.pending[k]
	if p == nil {
		if !validWorkflow(k.wf) || len(k.caller) > maxIDLen || k.day < minDay || k.day > maxDay {
			return ErrInvalidRecord
		}
		if len(c.pending)+len(c.taken) >= c.maxPending && c.taken[k] == nil {
			c.dropped++
			return ErrDropped
		}
		p = new(counters)
		c.pending[k] = p
	}
	p.addRecord(r)
	return nil
}

// Flush writes what is pending; see Ledger.
func (c *core) Flush(ctx context.Context) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return c.flush(ctx)
}

// flush retries the taken batch, if any, then writes what is pending.
func (c *core) flush(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sem }()
	err := c.flushHeld(ctx)
	c.reportDropped()
	return err
}

// flushHeld is flush with sem held.
func (c *core) flushHeld(ctx context.Context) error {
	if c.taken != nil {
		// A batch that failed: the same batch again, so that the store
		// can tell whether the failed attempt landed after all.
		if err := c.be.write(ctx, c.taken, true); err != nil {
			return c.failed(err)
		}
		c.mu.Lock()
		c.recycleLocked(c.taken)
		c.taken = nil
		c.mu.Unlock()
	}
	c.mu.Lock()
	b := c.pending
	c.woken = false
	if len(b) == 0 {
		c.mu.Unlock()
		c.recovered()
		return nil
	}
	if c.spare != nil {
		c.pending, c.spare = c.spare, nil
	} else {
		c.pending = make(batch, len(b))
	}
	c.taken = b
	c.mu.Unlock()
	if err := c.be.write(ctx, b, false); err != nil {
		return c.failed(err)
	}
	c.mu.Lock()
	c.recycleLocked(b)
	c.taken = nil
	c.mu.Unlock()
	c.recovered()
	return nil
}

func (c *core) recycleLocked(b batch) {
	if c.spare == nil && len(b) <= maxSpare {
		clear(b)
		c.spare = b
	}
}

// failed reports a failed write, warning at the first of a run of
// failures and every logEvery after it. It returns err.
func (c *core) failed(err error) error {
	c.onError(err)
	// The loop retries, whoever's flush this was.
	select {
	case c.wake <- struct{}{}:
	default:
	}
	now := time.Now()
	if !c.failing || now.Sub(c.lastWarn) >= logEvery {
		c.mu.Lock()
		pending := len(c.pending) + len(c.taken)
		c.mu.Unlock()
		c.log.Warn("usage ledger: write failed; keeping the usage in memory and retrying",
			zap.Error(err), zap.Int("pending_keys", pending))
		c.lastWarn = now
	}
	c.failing = true
	return err
}

func (c *core) recovered() {
	if c.failing {
		c.failing = false
		c.log.Info("usage ledger: writes succeed again; the usage kept in memory is written")
	}
}

// reportDropped warns of the records dropped since the last such
// warning, at most every logEvery.
func (c *core) reportDropped() {
	c.mu.Lock()
	n := c.dropped
	if n == 0 || time.Since(c.lastDropWarn) < logEvery {
		c.mu.Unlock()
		return
	}
	c.dropped = 0
	c.lastDropWarn = time.Now()
	c.mu.Unlock()
	c.log.Warn("usage ledger: dropped usage records of new keys: too many keys pending while the store fails",
		zap.Int64("records", n), zap.Int("max_pending", c.maxPending))
}

// loop writes what Add queues until stop closes.
func (c *core) loop() {
	defer close(c.done)
	var last time.Time // the start of the last flush
	backoff := time.Duration(0)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	wait := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-timer.C:
			return true
		case <-c.stop:
			timer.Stop()
			return false
		}
	}
	for {
		select {
		case <-c.wake:
		case <-c.stop:
			return
		}
		for {
			if d := c.minInterval - time.Since(last); d > 0 && !wait(d) {
				return
			}
			last = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
			err := c.flush(ctx)
			cancel()
			if err == nil {
				backoff = 0
				break
			}
			backoff = min(max(2*backoff, firstBackoff, c.minInterval), maxBackoff)
			if !wait(backoff) {
				return
			}
		}
	}
}

// Close writes what is pending and stops the loop; see Ledger.
func (c *core) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		<-c.done
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		defer cancel()
		if err := c.flush(ctx); err != nil {
			c.mu.Lock()
			n := len(c.pending) + len(c.taken)
			c.mu.Unlock()
			c.log.Error("usage ledger: closed with usage not written", zap.Error(err), zap.Int("keys", n))
			c.closeErr = fmt.Errorf("ledger: close: %d keys not written: %w", n, err)
		}
	})
	return c.closeErr
}

// days checks a query's range and returns it in days.
func days(from, to time.Time) (int64, int64, error) {
	if from.IsZero() || to.IsZero() {
		return 0, 0, fmt.Errorf("%w: from and to are required", ErrInvalidQuery)
	}
	f, t := dayOf(from), dayOf(to)
	if t < f {
		return 0, 0, fmt.Errorf("%w: to (%s) is before from (%s)", ErrInvalidQuery, dateOf(t), dateOf(f))
	}
	if t-f > MaxDays {
		return 0, 0, fmt.Errorf("%w: from and to are %d days apart, more than %d", ErrInvalidQuery, t-f, MaxDays)
	}
	if f < minDay || t > maxDay {
		return 0, 0, fmt.Errorf("%w: dates outside the years 1 to 9999", ErrInvalidQuery)
	}
	return f, t, nil
}

// Report flushes and reports q; see Ledger.
func (c *core) Report(ctx context.Context, q Query) (Report, error) {
	from, to, err := days(q.From, q.To)
	if err != nil {
		return Report{}, err
	}
	if q.Workflow == "" {
		return Report{}, fmt.Errorf("%w: workflow is required", ErrInvalidQuery)
	}
	if err := c.Flush(ctx); err != nil {
		return Report{}, fmt.Errorf("ledger: report: %w", err)
	}
	if !validWorkflow(q.Workflow) {
		// Add never records it: nothing to read.
		return buildReport(q.Workflow, q.Caller, from, to, nil), nil
	}
	m, err := c.be.read(ctx, q.Workflow, q.Caller, from, to)
	if err != nil {
		return Report{}, fmt.Errorf("ledger: report: %w", err)
	}
	return buildReport(q.Workflow, q.Caller, from, to, m), nil
}

// Reports flushes and reports every workflow; see Ledger.
func (c *core) Reports(ctx context.Context, from, to time.Time) ([]Report, error) {
	f, t, err := days(from, to)
	if err != nil {
		return nil, err
	}
	if err := c.Flush(ctx); err != nil {
		return nil, fmt.Errorf("ledger: reports: %w", err)
	}
	all, err := c.be.readAll(ctx, f, t)
	if err != nil {
		return nil, fmt.Errorf("ledger: reports: %w", err)
	}
	out := make([]Report, 0, len(all))
	for wf, m := range all {
		r := buildReport(wf, "", f, t, m)
		if len(r.UsageByDay) > 0 {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].WorkflowID < out[j].WorkflowID })
	return out, nil
}

// buildReport sums the days of m (nil: none) in [from, to].
func buildReport(wf, caller string, from, to int64, m map[int64]*counters) Report {
	r := Report{
		WorkflowID: wf,
		Caller:     caller,
		From:       dateOf(from),
		To:         dateOf(to),
		UsageByDay: []Day{},
	}
	ds := make([]int64, 0, len(m))
	for d, c := range m {
		if d >= from && d <= to && !c.isZero() {
			ds = append(ds, d)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	var ms int64
	for _, d := range ds {
		c := m[d]
		r.TotalExecutions += c.exec
		r.EstimatedExecutions += c.est
		r.CacheHits += c.hits
		r.Rejected += c.rej
		r.InputTokens += c.in
		r.OutputTokens += c.out
		r.TotalCostNano += c.nano
		ms += c.ms
		r.UsageByDay = append(r.UsageByDay, Day{
			Date:       dateOf(d),
			Executions: c.exec,
			Tokens:     c.in + c.out,
			Cost:       usd(c.nano),
			CacheHits:  c.hits,
			Rejected:   c.rej,
		})
	}
	r.TotalTokens = r.InputTokens + r.OutputTokens
	r.TotalCost = usd(r.TotalCostNano)
	if r.TotalExecutions > 0 {
		r.AverageDuration = float64(ms) / float64(r.TotalExecutions)
	}
	return r
}

// usd converts nano-dollars to dollars: the float nearest to the exact
// quotient while the sum is below 2^53 nano-dollars (9 million dollars),
// within a few units of the last place past it.
func usd(nano int64) float64 {
	const exact = 1 << 53
	if nano > -exact && nano < exact {
		return float64(nano) / 1e9
	}
	return float64(nano/1e9) + float64(nano%1e9)/1e9
}
