package ledger

import (
	"context"
	"reflect"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowgate/flowgate/internal/testredis"
)

// The keys, fields, index and expiries of the documented layout.
func TestRedisLayout(t *testing.T) {
	srv := testredis.Start(t)
	rdb := newClient(t, srv.Addr())
	l := NewRedis(rdb, testOptions(t, nil))
	t.Cleanup(func() { _ = l.Close() })
	l.Add(Record{Workflow: "wf", Caller: "c", Time: on(0, 1), Executions: 1, EstimatedExecutions: 2, CacheHits: 3,
		Rejected: 4, InputTokens: 5, OutputTokens: 6, CostNano: 7, DurationMs: 8})
	l.Add(Record{Workflow: "wf2", Time: on(0, 1), CacheHits: 1})
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string]string{"exec": "1", "est": "2", "hits": "3", "rej": "4", "in": "5", "out": "6", "nano": "7", "ms": "8"}
	for _, k := range []string{"flowgate:usage:{wf}:" + date(0), "flowgate:usage:{wf}:" + date(0) + ":c:c"} {
		if got := rdb.HGetAll(ctx, k).Val(); !reflect.DeepEqual(got, want) {
			t.Errorf("HGETALL %s = %v, want %v", k, got, want)
		}
	}
	// Zero counters are not written.
	if got := rdb.HGetAll(ctx, "flowgate:usage:{wf2}:"+date(0)).Val(); !reflect.DeepEqual(got, map[string]string{"hits": "1"}) {
		t.Errorf("wf2's hash = %v", got)
	}
	days := "flowgate:usage:days:" + date(0)
	if got := rdb.SMembers(ctx, days).Val(); len(got) != 2 || !rdb.SIsMember(ctx, days, "wf").Val() || !rdb.SIsMember(ctx, days, "wf2").Val() {
		t.Errorf("SMEMBERS %s = %v, want wf and wf2", days, got)
	}
	for _, k := range []string{"flowgate:usage:{wf}:" + date(0), "flowgate:usage:{wf}:" + date(0) + ":c:c", days} {
		if ttl := rdb.TTL(ctx, k).Val(); ttl < 399*24*time.Hour || ttl > 400*24*time.Hour {
			t.Errorf("TTL %s = %v, want 400 days", k, ttl)
		}
	}
	marker := coreOf(l).be.(*redisStore).marker
	if v, _ := rdb.Get(ctx, marker).Int64(); v != 1 {
		t.Errorf("marker %s = %d, want 1 (one flush)", marker, v)
	}
}

// Add wakes the loop, which writes within milliseconds, without Flush.
func TestRedisWritesPromptly(t *testing.T) {
	srv := testredis.Start(t)
	rdb := newClient(t, srv.Addr())
	l := NewRedis(rdb, testOptions(t, nil))
	t.Cleanup(func() { _ = l.Close() })
	for i := range 3 {
		start := time.Now()
		l.Add(Record{Workflow: "wf", Time: on(0, 1), Executions: 1})
		eventually(t, 2*time.Second, "the record did not reach Redis", func() bool {
			v, _ := rdb.HGet(context.Background(), "flowgate:usage:{wf}:"+date(0), "exec").Int64()
			return v == int64(i+1)
		})
		t.Logf("record %d in Redis after %v", i+1, time.Since(start))
	}
}

// A Redis with append-only persistence, killed and restarted: the reports
// are the same, from a new ledger.
func TestRedisRestart(t *testing.T) {
	srv := testredis.StartWith(t, testredis.Options{AppendOnly: true})
	l := NewRedis(newClient(t, srv.Addr()), testOptions(t, nil))
	for _, r := range restartRecords {
		l.Add(r)
	}
	want := snapshot(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	srv.Restart()
	l = NewRedis(newClient(t, srv.Addr()), testOptions(t, nil))
	t.Cleanup(func() { _ = l.Close() })
	if got := snapshot(t, l); !reflect.DeepEqual(got, want) {
		t.Errorf("after the restart:\n got %s\nwant %s", jsonString(t, got), jsonString(t, want))
	}
	if want[0].(Report).TotalExecutions == 0 {
		t.Fatalf("empty reports: %s", jsonString(t, want))
	}
}

// adder adds records in the background until stopped, as requests do.
type adder struct {
	added atomic.Int64
	stop  chan struct{}
	done  chan struct{}
}

// startAdder adds records of wf, over two days and three callers.
func startAdder(l Ledger, wf string) *adder {
	a := &adder{stop: make(chan struct{}), done: make(chan struct{})}
	callers := []string{"", "c1", "c2"}
	go func() {
		defer close(a.done)
		// Bounded, in case the test never stops it.
		for i := range 5_000_000 {
			select {
			case <-a.stop:
				return
			default:
			}
			l.Add(Record{Workflow: wf, Caller: callers[i%3], Time: on(i%2, 0), Executions: 1, InputTokens: 2, CostNano: 3, DurationMs: 4})
			a.added.Add(1)
			if i%50 == 0 {
				runtime.Gosched()
			}
		}
	}()
	return a
}

// waitFor waits until a has added n more records than now.
func (a *adder) waitFor(t *testing.T, n int64) {
	t.Helper()
	target := a.added.Load() + n
	eventually(t, 10*time.Second, "the adder is stuck", func() bool { return a.added.Load() >= target })
}

func (a *adder) halt() int64 {
	close(a.stop)
	<-a.done
	return a.added.Load()
}

// flushEventually retries Flush until the store takes it: after a
// restart, the client's pooled connections fail first.
func flushEventually(t *testing.T, l Ledger) {
	t.Helper()
	var err error
	eventually(t, 10*time.Second, "Flush keeps failing", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err = l.Flush(ctx)
		return err == nil
	})
}

// checkTotals checks wf's report against n records of the adder.
func checkTotals(t *testing.T, l Ledger, wf string, n int64) {
	t.Helper()
	got := report(t, l, Query{Workflow: wf, From: on(0, 0), To: on(1, 0)})
	if got.TotalExecutions != n || got.InputTokens != 2*n || got.TotalCostNano != 3*n || got.AverageDuration != 4 {
		t.Errorf("after %d adds: %s", n, jsonString(t, got))
	}
	var callers int64
	for _, c := range []string{"c1", "c2"} {
		callers += report(t, l, Query{Workflow: wf, Caller: c, From: on(0, 0), To: on(1, 0)}).TotalExecutions
	}
	if want := n - (n+2)/3; callers != want {
		t.Errorf("callers' executions = %d, want %d", callers, want)
	}
}

// Redis killed while records are added, then restarted: what was added
// meanwhile is written when it is back, and the totals are exact.
func TestRedisKilledWhileAdding(t *testing.T) {
	srv := testredis.StartWith(t, testredis.Options{AppendOnly: true})
	var errs errCount
	rdb := newClient(t, srv.Addr())
	l := NewRedis(rdb, testOptions(t, &errs))
	c := coreOf(l)
	a := startAdder(l, "wf")
	a.waitFor(t, 2000)
	flushEventually(t, l)

	srv.Kill()
	a.waitFor(t, 2000)
	eventually(t, 10*time.Second, "no write failed while Redis was down", func() bool { return errs.n.Load() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := l.Report(ctx, Query{Workflow: "wf", From: on(0, 0), To: on(1, 0)})
	cancel()
	if err == nil {
		t.Error("Report succeeded while Redis was down")
	}
	a.waitFor(t, 2000)

	srv.Restart()
	a.waitFor(t, 2000)
	n := a.halt()
	flushEventually(t, l)
	checkTotals(t, l, "wf", n)
	t.Logf("%d records, %d failed writes", n, errs.n.Load())

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	loopGone(t, c)
}

// Redis paused (a hung server) while records are added, then resumed.
func TestRedisPausedWhileAdding(t *testing.T) {
	srv := testredis.Start(t)
	var errs errCount
	l := NewRedis(newClient(t, srv.Addr()), testOptions(t, &errs))
	c := coreOf(l)
	a := startAdder(l, "wf")
	a.waitFor(t, 2000)

	srv.Pause()
	a.waitFor(t, 2000)
	eventually(t, 10*time.Second, "no write failed while Redis was paused", func() bool { return errs.n.Load() > 0 })
	a.waitFor(t, 2000)
	srv.Resume()
	a.waitFor(t, 2000)
	n := a.halt()
	flushEventually(t, l)
	checkTotals(t, l, "wf", n)
	t.Logf("%d records, %d failed writes, %d retried batches found applied", n, errs.n.Load(), c.be.(*redisStore).landed.Load())

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	loopGone(t, c)
}

// pauseHook stops a transaction before it is sent, once armed, until the
// test lets it go.
type pauseHook struct {
	armed   atomic.Bool
	reached chan struct{}
	proceed chan struct{}
}

func (h *pauseHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pauseHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pauseHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "multi" && h.armed.CompareAndSwap(true, false) {
			h.reached <- struct{}{}
			<-h.proceed
		}
		return next(ctx, cmds)
	}
}

// A flush whose EXEC reply is lost (the server hangs after its WATCH, then
// applies the EXEC when it resumes, after the client gave up): the retry
// finds the batch applied and does not apply it again.
func TestRedisLostExecReplyNotCountedTwice(t *testing.T) {
	srv := testredis.Start(t)
	var errs errCount
	rdb := newClient(t, srv.Addr())
	h := &pauseHook{reached: make(chan struct{}), proceed: make(chan struct{})}
	rdb.AddHook(h)
	l := NewRedis(rdb, testOptions(t, &errs))
	t.Cleanup(func() { _ = l.Close() })
	c := coreOf(l)
	store := c.be.(*redisStore)
	ctx := context.Background()

	l.Add(Record{Workflow: "wf", Time: on(0, 1), Executions: 1})
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	h.armed.Store(true)
	l.Add(Record{Workflow: "wf", Time: on(0, 1), Executions: 10}) // the loop flushes it
	<-h.reached                                                   // WATCH done, MULTI…EXEC not sent
	srv.Pause()
	close(h.proceed)
	// The EXEC times out: the flush fails, the batch is kept.
	eventually(t, 10*time.Second, "the flush did not fail", func() bool { return errs.n.Load() > 0 })
	// Hold the loop's retries until the stale EXEC has landed.
	c.sem <- struct{}{}
	srv.Resume()
	other := newClient(t, srv.Addr())
	eventually(t, 10*time.Second, "the stale EXEC did not land", func() bool {
		v, _ := other.Get(ctx, store.marker).Int64()
		return v == 2
	})
	<-c.sem

	flushEventually(t, l)
	if got := report(t, l, Query{Workflow: "wf", From: on(0, 0), To: on(0, 0)}); got.TotalExecutions != 11 {
		t.Errorf("totalExecutions = %d, want 11 (the lost reply's batch once)", got.TotalExecutions)
	}
	if n := store.landed.Load(); n != 1 {
		t.Errorf("%d retried batches found applied, want 1", n)
	}
	// Later flushes go on as usual.
	l.Add(Record{Workflow: "wf", Time: on(0, 1), Executions: 100})
	if got := report(t, l, Query{Workflow: "wf", From: on(0, 0), To: on(0, 0)}); got.TotalExecutions != 111 {
		t.Errorf("totalExecutions = %d, want 111", got.TotalExecutions)
	}
}

// While Redis is down, at most MaxPending keys are held: records of new
// keys are dropped (and counted), those of held keys still add, and the
// held keys are written when Redis is back.
func TestRedisMaxPending(t *testing.T) {
	srv := testredis.Start(t)
	var errs errCount
	o := testOptions(t, &errs)
	o.MaxPending = 3
	l := NewRedis(newClient(t, srv.Addr()), o)
	t.Cleanup(func() { _ = l.Close() })

	srv.Kill()
	for d := range 5 {
		l.Add(Record{Workflow: "wf", Time: on(d, 1), Executions: 1})
	}
	l.Add(Record{Workflow: "wf", Time: on(0, 2), Executions: 1}) // held already
	if n := errs.count(ErrDropped); n != 2 {
		t.Errorf("OnError saw %d ErrDropped, want 2", n)
	}
	srv.Restart()
	flushEventually(t, l)
	got := report(t, l, Query{Workflow: "wf", From: on(0, 0), To: on(4, 0)})
	want := []Day{{Date: date(0), Executions: 2}, {Date: date(1), Executions: 1}, {Date: date(2), Executions: 1}}
	if !reflect.DeepEqual(got.UsageByDay, want) {
		t.Errorf("usageByDay = %s, want %s", jsonString(t, got.UsageByDay), jsonString(t, want))
	}
}

// Close while Redis is down gives up after one attempt: it returns the
// error (what was pending is lost, and logged) and stops the loop.
func TestRedisCloseWhileDown(t *testing.T) {
	srv := testredis.Start(t)
	var errs errCount
	l := NewRedis(newClient(t, srv.Addr()), testOptions(t, &errs))
	c := coreOf(l)
	srv.Kill()
	l.Add(Record{Workflow: "wf", Time: on(0, 1), Executions: 1})
	start := time.Now()
	err := l.Close()
	if err == nil {
		t.Fatal("Close with Redis down returned nil")
	}
	t.Logf("Close after %v: %v", time.Since(start), err)
	if err2 := l.Close(); err2 != err {
		t.Errorf("second Close = %v, want the first's %v", err2, err)
	}
	loopGone(t, c)
}
