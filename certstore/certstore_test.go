package certstore

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/internal/testredis"
)

// client is a new connection pool to srv, closed when t ends.
func client(t *testing.T, srv *testredis.Server) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(cache.RedisOptions(srv.Addr(), "", 0))
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// files is the store every contract case starts from.
var files = map[string][]byte{
	"certificates/acme/example.com/example.com.crt":  []byte("CRT"),
	"certificates/acme/example.com/example.com.key":  []byte("KEY!"),
	"certificates/acme/example.com/example.com.json": []byte(`{"a":1}`),
	"certificates/acme/example.com-x/a":              []byte("sibling sharing a string prefix"),
	"certificates/acme/other.org/other.org.crt":      {0, 1, 2, 0, 255},
	"certificates/zz/b.crt":                          []byte("B"),
	"ocsp/staple":                                    []byte("S"),
	"top":                                            {},
}

func seed(t *testing.T, s *Storage) {
	t.Helper()
	ctx := ctxT(t)
	for k, v := range files {
		if err := s.Store(ctx, k, v); err != nil {
			t.Fatalf("Store(%q): %v", k, err)
		}
	}
}

func TestStorageContract(t *testing.T) {
	srv := testredis.Start(t)
	rdb := client(t, srv)
	ctx := ctxT(t)

	t.Run("Load", func(t *testing.T) {
		s := New(rdb, Options{Prefix: "t:load:"})
		seed(t, s)
		for k, v := range files {
			got, err := s.Load(ctx, k)
			if err != nil || !bytes.Equal(got, v) {
				t.Errorf("Load(%q) = %q, %v; want %q", k, got, err, v)
			}
		}
		for _, k := range []string{"nope", "certificates", "certificates/acme", "top/x", "ocsp/stapl"} {
			if _, err := s.Load(ctx, k); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load(%q) err = %v; want fs.ErrNotExist", k, err)
			}
		}
	})

	t.Run("Exists", func(t *testing.T) {
		s := New(rdb, Options{Prefix: "t:exists:"})
		seed(t, s)
		for _, c := range []struct {
			key  string
			want bool
		}{
			{"certificates/acme/example.com/example.com.crt", true},
			{"certificates/acme/example.com", true}, // directory
			{"certificates", true},
			{"top", true},                        // empty value
			{"", true},                           // the root
			{"certificates/acme/example", false}, // a string prefix, not a component
			{"certificates/acm", false},
			{"certificates/acme/example.com/example.com", false},
			{"nope", false},
			{"top/x", false},
		} {
			if got := s.Exists(ctx, c.key); got != c.want {
				t.Errorf("Exists(%q) = %v; want %v", c.key, got, c.want)
			}
		}
	})

	t.Run("List", func(t *testing.T) {
		s := New(rdb, Options{Prefix: "t:list:"})
		seed(t, s)
		for _, c := range []struct {
			path      string
			recursive bool
			want      []string
			notExist  bool
		}{
			{path: "certificates/acme", want: []string{
				"certificates/acme/example.com",
				"certificates/acme/example.com-x",
				"certificates/acme/other.org",
			}},
			{path: "certificates/acme/example.com", want: []string{
				"certificates/acme/example.com/example.com.crt",
				"certificates/acme/example.com/example.com.json",
				"certificates/acme/example.com/example.com.key",
			}},
			{path: "certificates", recursive: true, want: []string{
				"certificates/acme",
				"certificates/acme/example.com",
				"certificates/acme/example.com-x",
				"certificates/acme/example.com-x/a",
				"certificates/acme/example.com/example.com.crt",
				"certificates/acme/example.com/example.com.json",
				"certificates/acme/example.com/example.com.key",
				"certificates/acme/other.org",
				"certificates/acme/other.org/other.org.crt",
				"certificates/zz",
				"certificates/zz/b.crt",
			}},
			{path: "", want: []string{"certificates", "ocsp", "top"}},
			{path: "ocsp", recursive: true, want: []string{"ocsp/staple"}},
			{path: "top", want: nil}, // a file: nothing under it
			{path: "nope", notExist: true},
			{path: "nope", recursive: true, notExist: true},
			{path: "certificates/acme/example", notExist: true},
		} {
			got, err := s.List(ctx, c.path, c.recursive)
			if c.notExist {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("List(%q, %v) = %q, %v; want fs.ErrNotExist", c.path, c.recursive, got, err)
				}
				continue
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("List(%q, %v) = %q, %v;\nwant %q", c.path, c.recursive, got, err, c.want)
			}
		}
	})

	t.Run("Stat", func(t *testing.T) {
		s := New(rdb, Options{Prefix: "t:stat:"})
		before := time.Now()
		seed(t, s)
		after := time.Now()
		for k, v := range files {
			ki, err := s.Stat(ctx, k)
			if err != nil {
				t.Fatalf("Stat(%q): %v", k, err)
			}
			if ki.Key != k || !ki.IsTerminal || ki.Size != int64(len(v)) ||
				ki.Modified.Before(before) || ki.Modified.After(after) {
				t.Errorf("Stat(%q) = %+v; want a file of %d bytes modified in [%v, %v]", k, ki, len(v), before, after)
			}
		}
		for _, k := range []string{"certificates", "certificates/acme/example.com", ""} {
			ki, err := s.Stat(ctx, k)
			if err != nil || ki.Key != k || ki.IsTerminal {
				t.Errorf("Stat(%q) = %+v, %v; want a directory", k, ki, err)
			}
		}
		for _, k := range []string{"nope", "certificates/acme/example", "top/x"} {
			if ki, err := s.Stat(ctx, k); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat(%q) = %+v, %v; want fs.ErrNotExist", k, ki, err)
			}
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		s := New(rdb, Options{Prefix: "t:overwrite:"})
		seed(t, s)
		k := "certificates/acme/example.com/example.com.crt"
		old, _ := s.Stat(ctx, k)
		time.Sleep(2 * time.Millisecond)
		if err := s.Store(ctx, k, []byte("NEW VALUE")); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(ctx, k)
		ki, err2 := s.Stat(ctx, k)
		if err != nil || err2 != nil || string(got) != "NEW VALUE" || ki.Size != 9 || !ki.Modified.After(old.Modified) {
			t.Errorf("after overwrite: Load = %q, %v; Stat = %+v, %v (was %+v)", got, err, ki, err2, old)
		}
		// a leading or trailing slash names the same key
		if got, err := s.Load(ctx, "/"+k+"/"); err != nil || string(got) != "NEW VALUE" {
			t.Errorf("Load with slashes = %q, %v", got, err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		for _, c := range []struct {
			name    string
			del     string
			gone    []string // keys (files or directories) that must be gone
			survive []string // files that must be kept
		}{
			{"file", "certificates/acme/example.com/example.com.key",
				[]string{"certificates/acme/example.com/example.com.key"},
				[]string{"certificates/acme/example.com/example.com.crt", "certificates/acme/example.com-x/a"}},
			{"directory", "certificates/acme/example.com",
				[]string{"certificates/acme/example.com", "certificates/acme/example.com/example.com.crt",
					"certificates/acme/example.com/example.com.json", "certificates/acme/example.com/example.com.key"},
				[]string{"certificates/acme/example.com-x/a", "certificates/acme/other.org/other.org.crt", "certificates/zz/b.crt"}},
			{"tree", "certificates",
				[]string{"certificates", "certificates/acme", "certificates/zz/b.crt"},
				[]string{"ocsp/staple", "top"}},
			{"missing", "nope", []string{"nope"}, slices.Collect(maps.Keys(files))},
			{"string prefix is not a directory", "certificates/acme/example", nil,
				[]string{"certificates/acme/example.com/example.com.crt", "certificates/acme/example.com-x/a"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				s := New(rdb, Options{Prefix: "t:delete:" + c.name + ":"})
				seed(t, s)
				if err := s.Delete(ctx, c.del); err != nil {
					t.Fatalf("Delete(%q): %v", c.del, err)
				}
				if err := s.Delete(ctx, c.del); err != nil {
					t.Fatalf("Delete(%q) again: %v", c.del, err)
				}
				for _, k := range c.gone {
					if s.Exists(ctx, k) {
						t.Errorf("Exists(%q) after Delete(%q)", k, c.del)
					}
					if _, err := s.Stat(ctx, k); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("Stat(%q) after Delete(%q): err %v", k, c.del, err)
					}
				}
				for _, k := range c.survive {
					if got, err := s.Load(ctx, k); err != nil || !bytes.Equal(got, files[k]) {
						t.Errorf("Load(%q) after Delete(%q) = %q, %v", k, c.del, got, err)
					}
				}
				// the index agrees with the files
				all, err := s.List(ctx, "", true)
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range all {
					if _, ok := files[k]; ok && slices.Contains(c.gone, k) {
						t.Errorf("List still has deleted %q", k)
					}
				}
			})
		}
	})

	t.Run("prefixes are separate", func(t *testing.T) {
		a := New(rdb, Options{Prefix: "t:iso-a:"})
		b := New(rdb, Options{Prefix: "t:iso-b:"})
		if err := a.Store(ctx, "k", []byte("a")); err != nil {
			t.Fatal(err)
		}
		if b.Exists(ctx, "k") {
			t.Error("b sees a's key")
		}
		if _, err := b.Load(ctx, "k"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("b.Load: %v", err)
		}
	})

	t.Run("key layout", func(t *testing.T) {
		s := New(rdb, Options{})
		if err := s.Store(ctx, "a/b", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if v, err := rdb.HGet(ctx, "flowgate:certmagic:{fs}:file:a/b", "v").Result(); err != nil || v != "v" {
			t.Errorf("file hash: %q, %v", v, err)
		}
		if n, err := rdb.ZCard(ctx, "flowgate:certmagic:{fs}:index").Result(); err != nil || n != 1 {
			t.Errorf("index: %d, %v", n, err)
		}
	})
}

// lockOpts are fast locks for tests.
func lockOpts(prefix string, ttl time.Duration) Options {
	return Options{Prefix: prefix, LockTTL: ttl, LockPollInterval: 20 * time.Millisecond}
}

// TestLockMutualExclusion: goroutines of two Storages (two connection
// pools, as two replicas) take turns; none is ever inside with another.
func TestLockMutualExclusion(t *testing.T) {
	srv := testredis.Start(t)
	stores := []*Storage{
		New(client(t, srv), lockOpts("t:mutex:", 2*time.Second)),
		New(client(t, srv), lockOpts("t:mutex:", 2*time.Second)),
	}
	ctx := ctxT(t)
	const workers, rounds = 8, 10
	var inside, overlaps atomic.Int32
	// counter is guarded by the Redis lock only: a lost update shows an
	// overlap. (atomic, since the race detector sees no ordering through
	// Redis.)
	var counter atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		s := stores[w%2]
		wg.Go(func() {
			for range rounds {
				if err := s.Lock(ctx, "issue_cert_example.com"); err != nil {
					errs <- err
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				c := counter.Load()
				time.Sleep(time.Millisecond)
				counter.Store(c + 1)
				inside.Add(-1)
				if err := s.Unlock(ctx, "issue_cert_example.com"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d times a holder entered while another was inside", n)
	}
	if n := counter.Load(); n != workers*rounds {
		t.Errorf("counter = %d; want %d (lost updates: the lock overlapped)", n, workers*rounds)
	}
}

// TestLockRenewedWhileHeld: a lock held for several TTLs stays held.
func TestLockRenewedWhileHeld(t *testing.T) {
	srv := testredis.Start(t)
	const ttl = 300 * time.Millisecond
	a := New(client(t, srv), lockOpts("t:renew:", ttl))
	b := New(client(t, srv), lockOpts("t:renew:", ttl))
	ctx := ctxT(t)
	if err := a.Lock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(4 * ttl); time.Now().Before(end); time.Sleep(ttl / 10) {
		ok, err := b.TryLock(ctx, "L")
		if err != nil || ok {
			t.Fatalf("b.TryLock while a holds = %v, %v", ok, err)
		}
	}
	if err := a.RenewLockLease(ctx, "L", time.Hour); err != nil {
		t.Errorf("RenewLockLease: %v", err)
	}
	if pttl := a.rdb.PTTL(ctx, "t:renew:lock:L").Val(); pttl <= 0 || pttl > ttl {
		t.Errorf("PTTL = %v; want in (0, %v]", pttl, ttl)
	}
	if err := a.Unlock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "L"); err != nil || !ok {
		t.Fatalf("b.TryLock after a's Unlock = %v, %v", ok, err)
	}
	if err := b.Unlock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
}

// TestLockExpiresWhenHolderDies: a holder that stops renewing without
// unlocking (a crashed replica) loses the lock after the TTL.
func TestLockExpiresWhenHolderDies(t *testing.T) {
	srv := testredis.Start(t)
	const ttl = 500 * time.Millisecond
	a := New(client(t, srv), lockOpts("t:dies:", ttl))
	b := New(client(t, srv), lockOpts("t:dies:", ttl))
	ctx := ctxT(t)
	if err := a.Lock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl / 2) // a has renewed once
	a.abandon("L")
	start := time.Now()
	if ok, _ := b.TryLock(ctx, "L"); ok {
		t.Fatal("b got the lock right after a died")
	}
	if err := b.Lock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < ttl/4 || d > ttl+time.Second {
		t.Errorf("b waited %v for the dead holder's lock; want about the TTL (%v) after the last renewal", d, ttl)
	}
	// a, come back, cannot release b's lock
	if err := a.Unlock(ctx, "L"); !errors.Is(err, ErrNotLocked) {
		t.Errorf("a.Unlock after dying = %v; want ErrNotLocked", err)
	}
	if err := b.Unlock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
}

// TestUnlockOnlyOwnLock: Unlock by a non-holder leaves the lock, and a
// holder whose lock was taken over does not delete the new holder's.
func TestUnlockOnlyOwnLock(t *testing.T) {
	srv := testredis.Start(t)
	rdb := client(t, srv)
	a := New(rdb, lockOpts("t:own:", 5*time.Second))
	b := New(client(t, srv), lockOpts("t:own:", 5*time.Second))
	ctx := ctxT(t)
	if err := a.Lock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "L"); !errors.Is(err, ErrNotLocked) {
		t.Errorf("b.Unlock of a's lock = %v; want ErrNotLocked", err)
	}
	if ok, err := b.TryLock(ctx, "L"); err != nil || ok {
		t.Errorf("b.TryLock after b's Unlock = %v, %v; want still a's", ok, err)
	}
	if err := a.Unlock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, "L"); !errors.Is(err, ErrNotLocked) {
		t.Errorf("second Unlock = %v; want ErrNotLocked", err)
	}

	// a's lock expired and someone else took it: a's Unlock and lease
	// renewal fail, and leave the other's lock alone.
	if err := a.Lock(ctx, "M"); err != nil {
		t.Fatal(err)
	}
	rdb.Set(ctx, "t:own:lock:M", "someone-else", time.Minute)
	if err := a.RenewLockLease(ctx, "M", time.Minute); !errors.Is(err, ErrLockLost) {
		t.Errorf("RenewLockLease of a lost lock = %v; want ErrLockLost", err)
	}
	if err := a.Unlock(ctx, "M"); !errors.Is(err, ErrLockLost) {
		t.Errorf("Unlock of a lost lock = %v; want ErrLockLost", err)
	}
	if v := rdb.Get(ctx, "t:own:lock:M").Val(); v != "someone-else" {
		t.Errorf("the other holder's lock = %q; Unlock deleted it", v)
	}
	if err := a.RenewLockLease(ctx, "nope", time.Minute); !errors.Is(err, ErrNotLocked) {
		t.Errorf("RenewLockLease of an unheld lock = %v; want ErrNotLocked", err)
	}
}

// TestLockContext: a waiting Lock ends with its context.
func TestLockContext(t *testing.T) {
	srv := testredis.Start(t)
	a := New(client(t, srv), lockOpts("t:ctx:", 5*time.Second))
	b := New(client(t, srv), lockOpts("t:ctx:", 5*time.Second))
	ctx := ctxT(t)
	if err := a.Lock(ctx, "L"); err != nil {
		t.Fatal(err)
	}
	defer a.Unlock(ctx, "L")

	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := b.Lock(dctx, "L"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock past its deadline = %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Lock returned %v after its deadline", d)
	}

	cctx, cancel2 := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Lock(cctx, "L") }()
	time.Sleep(100 * time.Millisecond)
	cancel2()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Lock = %v; want Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Lock did not end with its context")
	}

	if err := b.Lock(cctx, "free"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with a cancelled context = %v; want Canceled", err)
	}
	if ok, err := b.TryLock(cctx, "free"); ok || !errors.Is(err, context.Canceled) {
		t.Errorf("TryLock with a cancelled context = %v, %v; want Canceled", ok, err)
	}
	if b.rdb.Exists(ctx, "t:ctx:lock:free").Val() != 0 {
		t.Error("a cancelled Lock left a lock behind")
	}
}
