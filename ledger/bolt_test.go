package ledger

import (
	"context"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

var restartRecords = []Record{
	{Workflow: "wf-1", Caller: "alice", Time: on(0, 3), Executions: 1, InputTokens: 100, OutputTokens: 20, CostNano: 123_456, DurationMs: 900},
	{Workflow: "wf-1", Caller: "bob", Time: on(1, 3), Executions: 1, EstimatedExecutions: 1, InputTokens: 50, CostNano: 5, DurationMs: 100},
	{Workflow: "wf-1", Time: on(1, 4), CacheHits: 1},
	{Workflow: "wf-1", Caller: "alice", Time: on(2, 5), Rejected: 1},
	{Workflow: "wf-2", Time: on(2, 6), Executions: 1, OutputTokens: 7, DurationMs: 70},
}

var restartQueries = []Query{
	{Workflow: "wf-1", From: on(0, 0), To: on(6, 0)},
	{Workflow: "wf-1", Caller: "alice", From: on(0, 0), To: on(6, 0)},
	{Workflow: "wf-1", Caller: "bob", From: on(1, 0), To: on(1, 0)},
	{Workflow: "wf-2", From: on(0, 0), To: on(6, 0)},
}

// snapshot is every report of restartQueries, and Reports.
func snapshot(t *testing.T, l Ledger) []any {
	t.Helper()
	var out []any
	for _, q := range restartQueries {
		out = append(out, report(t, l, q))
	}
	all, err := l.Reports(context.Background(), on(0, 0), on(6, 0))
	if err != nil {
		t.Fatalf("Reports: %v", err)
	}
	return append(out, all)
}

// A ledger closed with records not yet written, its file closed and
// reopened: the reports are those of a ledger that never restarted.
func TestBoltRestart(t *testing.T) {
	ref := backends[0].open(t, testOptions(t, nil))
	for _, r := range restartRecords {
		ref.Add(r)
	}
	want := snapshot(t, ref)

	path := filepath.Join(t.TempDir(), "flowgate.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewBolt(db, testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range restartRecords[:3] {
		l.Add(r)
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range restartRecords[3:] {
		l.Add(r) // queued: Close writes them
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openDB(t, path)
	reopened, err := NewBolt(db, testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reopened.Close() })
	if got := snapshot(t, reopened); !reflect.DeepEqual(got, want) {
		t.Errorf("after the restart:\n got %s\nwant %s", jsonString(t, got), jsonString(t, want))
	}
	// And what is added after the restart adds to what was there.
	for _, r := range restartRecords {
		reopened.Add(r)
	}
	got := report(t, reopened, restartQueries[0])
	if w := want[0].(Report); got.TotalExecutions != 2*w.TotalExecutions || got.TotalCostNano != 2*w.TotalCostNano {
		t.Errorf("after adding the records again: %s, want twice %s", jsonString(t, got), jsonString(t, w))
	}
}

// The ledger keeps to its bucket of a file that other packages share, and
// its values have the documented layout.
func TestBoltLayout(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "flowgate.db"))
	err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("quota"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewBolt(db, testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	l.Add(Record{Workflow: "wf", Caller: "c", Time: on(0, 1), Executions: 1, EstimatedExecutions: 2, CacheHits: 3,
		Rejected: 4, InputTokens: 5, OutputTokens: 6, CostNano: 7, DurationMs: 8})
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []byte{1,
		1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0,
		5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0}
	err = db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte("quota")).Get([]byte("k")); string(v) != "v" {
			t.Errorf("the other bucket's value = %q", v)
		}
		b := tx.Bucket([]byte("usage"))
		var keys []string
		_ = b.ForEach(func(k, v []byte) error {
			keys = append(keys, string(k))
			if !reflect.DeepEqual(v, want) {
				t.Errorf("value of %q = %v, want %v", k, v, want)
			}
			return nil
		})
		wantKeys := []string{"wf\x00" + date(0) + "\x00", "wf\x00" + date(0) + "\x00c"}
		if !reflect.DeepEqual(keys, wantKeys) {
			t.Errorf("keys %q, want %q", keys, wantKeys)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An unreadable value is replaced on the next write (and logged), not a
// batch that fails for ever.
func TestBoltUnreadableValue(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "flowgate.db"))
	var errs errCount
	l, err := NewBolt(db, testOptions(t, &errs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(boltBucket).Put([]byte("wf\x00"+date(0)+"\x00"), []byte("garbage"))
	})
	if err != nil {
		t.Fatal(err)
	}
	q := Query{Workflow: "wf", From: on(0, 0), To: on(0, 0)}
	if _, err := l.Report(context.Background(), q); err == nil {
		t.Error("Report of an unreadable value succeeded")
	}
	l.Add(Record{Workflow: "wf", Time: on(0, 1), Executions: 1})
	if got := report(t, l, q); got.TotalExecutions != 1 {
		t.Errorf("after the write: %s", jsonString(t, got))
	}
}

// countingStore counts a store's writes.
type countingStore struct {
	backend
	writes atomic.Int64
}

func (s *countingStore) write(ctx context.Context, b batch, retry bool) error {
	s.writes.Add(1)
	return s.backend.write(ctx, b, retry)
}

// The loop writes to bbolt at most once a second, whatever the rate of
// Adds, and without being asked to.
func TestBoltFlushesOncePerSecond(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 2 s")
	}
	db := openDB(t, filepath.Join(t.TempDir(), "flowgate.db"))
	o := testOptions(t, nil)
	l, err := NewBolt(db, o) // creates the bucket
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	s := &countingStore{backend: &boltStore{db: db, log: o.Logger}}
	c := newCore(s, o, boltInterval)
	t.Cleanup(func() { _ = c.Close() })
	const d = 2100 * time.Millisecond
	start := time.Now()
	var n int64
	for time.Since(start) < d {
		for range 100 {
			c.Add(Record{Workflow: "wf", Time: on(0, 0), Executions: 1})
			n++
		}
		time.Sleep(time.Millisecond) // pacing of the Adds, not a synchronisation
	}
	if w := s.writes.Load(); w < 2 || w > 3 {
		t.Errorf("%d writes in %v, want 2 or 3 (at 0 s, 1 s, 2 s)", w, d)
	}
	// Written without Flush: within a second of the last Add.
	eventually(t, 3*time.Second, "the last Adds are not written", func() bool {
		var got int64
		_ = db.View(func(tx *bbolt.Tx) error {
			if v := tx.Bucket(boltBucket).Get([]byte("wf\x00" + date(0) + "\x00")); v != nil {
				cs, _ := decodeCounters(v)
				got = cs.exec
			}
			return nil
		})
		return got == n
	})
}
