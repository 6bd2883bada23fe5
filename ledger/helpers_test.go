package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flowgate/flowgate/internal/testredis"
)

// day0 is the first day of the tests' records.
var day0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// on is day d after day0 at hour h (UTC).
func on(d, h int) time.Time { return day0.AddDate(0, 0, d).Add(time.Duration(h) * time.Hour) }

// date is day d's YYYY-MM-DD.
func date(d int) string { return on(d, 0).Format(time.DateOnly) }

// errCount counts the errors given to OnError, by kind.
type errCount struct {
	mu   sync.Mutex
	errs []error
	n    atomic.Int64
}

func (e *errCount) add(err error) {
	e.n.Add(1)
	e.mu.Lock()
	if len(e.errs) < 100 {
		e.errs = append(e.errs, err)
	}
	e.mu.Unlock()
}

func (e *errCount) count(target error) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, err := range e.errs {
		if err == target {
			n++
		}
	}
	return n
}

func testOptions(t testing.TB, errs *errCount) Options {
	o := Options{Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))}
	if errs != nil {
		o.OnError = errs.add
	}
	return o
}

// openDB opens (or reopens) a bbolt file, closed when the test ends.
func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// newClient is a client as flowgate builds them: context deadlines
// honoured, no retries, short timeouts (so that a paused server fails a
// flush quickly).
func newClient(t testing.TB, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialTimeout:           time.Second,
		ReadTimeout:           500 * time.Millisecond,
		WriteTimeout:          500 * time.Millisecond,
		PoolTimeout:           time.Second,
		DialerRetries:         1,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// kind makes fresh ledgers of one kind, closed when the test ends.
type kind struct {
	name string
	open func(t testing.TB, o Options) Ledger
}

var backends = []kind{
	{"bolt", func(t testing.TB, o Options) Ledger {
		db := openDB(t, filepath.Join(t.TempDir(), "flowgate.db"))
		l, err := NewBolt(db, o)
		if err != nil {
			t.Fatalf("NewBolt: %v", err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}},
	{"redis", func(t testing.TB, o Options) Ledger {
		srv := testredis.Start(t)
		l := NewRedis(newClient(t, srv.Addr()), o)
		t.Cleanup(func() { _ = l.Close() })
		return l
	}},
}

// report asks for a report, failing the test on an error.
func report(t testing.TB, l Ledger, q Query) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := l.Report(ctx, q)
	if err != nil {
		t.Fatalf("Report(%+v): %v", q, err)
	}
	return r
}

func jsonString(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	return string(b)
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// coreOf is l's core.
func coreOf(l Ledger) *core {
	switch l := l.(type) {
	case *Bolt:
		return l.core
	case *Redis:
		return l.core
	}
	panic("unknown ledger")
}

// loopRunning reports whether c's loop goroutine is in the stacks.
func loopRunning(c *core) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Contains(string(buf[:n]), fmt.Sprintf("ledger.(*core).loop(%p)", c))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// loopGone waits for c's loop goroutine to exit: Close waits for the loop
// to close its done channel, and the goroutine ends right after.
func loopGone(t testing.TB, c *core) {
	t.Helper()
	eventually(t, 5*time.Second, "the ledger's loop goroutine still runs after Close", func() bool { return !loopRunning(c) })
}
