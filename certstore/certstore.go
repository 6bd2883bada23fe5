// Package certstore is a certmagic.Storage kept in Redis, so that the
// replicas of a flowgate deployment share their ACME state: one replica
// orders a certificate (the others wait on its lock and then find it in
// storage), any replica can answer an HTTP-01 or TLS-ALPN-01 challenge
// (certmagic keeps the challenge tokens in storage), and all of them serve
// the same certificate.
//
// # Key layout
//
// With the default prefix "flowgate:certmagic:":
//
//	flowgate:certmagic:{fs}:file:<key>   hash  v = the value, m = modified (Unix ns)
//	flowgate:certmagic:{fs}:index        zset  every file key, score 0
//	flowgate:certmagic:lock:<name>       string, the holder's random token, with a PX TTL
//
// certmagic keys are slash-separated paths ("certificates/acme-v02.../
// example.com/example.com.crt"); "directories" are implicit. The index is
// one sorted set whose members all have score 0, so ZRANGEBYLEX finds every
// key under a directory d (the range ["d/", "d0"), '0' being '/'+1) in
// O(log N + M) for M keys under d. Store and Delete change a file's hash and
// the index in one MULTI/EXEC, so the two never disagree. The "{fs}" hash
// tag puts the hashes and the index in one Redis Cluster slot, which
// MULTI/EXEC needs there; lock keys need no tag.
//
// Cost: Load, Store, Stat and Exists of a file are O(1) (plus O(log N) for
// the index). List, Exists of a directory and Delete read the index range
// of the directory; a non-recursive List still reads its whole subtree
// (one ZRANGEBYLEX), which for certmagic's largest directory
// ("certificates") is three keys per certificate: fine for thousands of
// names; List is called by certmagic's account lookup and by its daily
// storage cleaning, not on the request path.
//
// # Locks
//
// Lock is SET lock:<name> <token> NX PX <LockTTL>, with a fresh random
// token per acquisition, retried with exponential backoff (capped at
// LockPollInterval) until it succeeds or ctx ends. While held, a goroutine
// extends the TTL every LockTTL/3 with a script that checks the token
// first; Unlock stops it and deletes the key with a compare-and-delete
// script, so a Storage never releases a lock it does not hold (not even
// its own that expired and was taken over meanwhile). A holder that dies
// stops renewing, and its lock expires within LockTTL.
//
// Like every timeout-based lock (certmagic's FileStorage included), this is
// not a fencing lock: a holder paused for longer than LockTTL can find that
// another replica took its lock over. certmagic tolerates that (its locks
// only avoid duplicate ACME orders), and the renewal reports it (Unlock
// then returns ErrLockLost).
package certstore

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultPrefix = "flowgate:certmagic:"
	// DefaultLockTTL is how long a lock outlives the last renewal of its
	// holder. certmagic holds a lock for a whole ACME order (minutes, with
	// retries), but the TTL does not bound that, since the holder renews
	// every TTL/3; it bounds how long a crashed replica blocks the others
	// (ordering is days ahead of expiry, so a minute is nothing) and sets
	// how long a holder tolerates Redis being unreachable before it may
	// lose its lock (two missed renewals, about 40s).
	DefaultLockTTL = 60 * time.Second
	// DefaultLockPollInterval caps the backoff between two attempts of a
	// waiting Lock (certmagic's FileStorage polls every second).
	DefaultLockPollInterval = time.Second
)

// Errors of Unlock.
var (
	// ErrNotLocked: Unlock of a name that this Storage did not lock (or
	// already unlocked). Redis is not touched.
	ErrNotLocked = errors.New("certstore: lock not held by this Storage")
	// ErrLockLost: the lock had expired (renewals failed for LockTTL)
	// and perhaps been taken by another holder, which keeps it.
	ErrLockLost = errors.New("certstore: lock was lost before Unlock (expired or taken over)")
)

// Options configure New. The zero value is usable.
type Options struct {
	// Prefix starts every Redis key; DefaultPrefix when empty. Replicas
	// that share certificates must use the same prefix.
	Prefix string
	// LockTTL is the expiry of a lock that is not renewed;
	// DefaultLockTTL when zero or negative. See DefaultLockTTL.
	LockTTL time.Duration
	// LockPollInterval caps the backoff of a waiting Lock;
	// DefaultLockPollInterval when zero or negative.
	LockPollInterval time.Duration
	// Logger reports locks lost while held; none when nil.
	Logger *zap.Logger
}

// Storage is a certmagic.Storage (with certmagic.Locker, TryLocker and
// LockLeaseRenewer) in Redis. It is safe for concurrent use. Use one per
// process; replicas use their own, with the same Redis and prefix.
type Storage struct {
	rdb      redis.UniversalClient
	prefix   string
	ttl      time.Duration
	maxPoll  time.Duration
	log      *zap.Logger
	index    string // key of the index
	filePref string // prefix of the file hashes

	mu   sync.Mutex
	held map[string]*heldLock // by lock name
}

// heldLock is one lock this Storage holds, and its renewal.
type heldLock struct {
	token  string
	cancel context.CancelFunc // stops the renewal
	done   chan struct{}      // closed when the renewal has stopped
}

var (
	_ certmagic.Storage          = (*Storage)(nil)
	_ certmagic.TryLocker        = (*Storage)(nil)
	_ certmagic.LockLeaseRenewer = (*Storage)(nil)
)

// New returns a Storage on rdb. It does not contact Redis.
func New(rdb redis.UniversalClient, o Options) *Storage {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.LockTTL <= 0 {
		o.LockTTL = DefaultLockTTL
	}
	if o.LockPollInterval <= 0 {
		o.LockPollInterval = DefaultLockPollInterval
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Storage{
		rdb:      rdb,
		prefix:   o.Prefix,
		ttl:      o.LockTTL,
		maxPoll:  o.LockPollInterval,
		log:      o.Logger,
		index:    o.Prefix + "{fs}:index",
		filePref: o.Prefix + "{fs}:file:",
		held:     map[string]*heldLock{},
	}
}

// String names the storage in certmagic's logs.
func (s *Storage) String() string { return "certstore.Redis:" + s.prefix }

// ---- key/value ----

// normKey drops leading and trailing slashes, which certmagic's keys do
// not have but a caller's might.
func normKey(key string) string { return strings.Trim(key, "/") }

func (s *Storage) fileKey(key string) string { return s.filePref + key }

// dirRange is the ZRANGEBYLEX range of the keys under directory dir ("" is
// the root: every key).
func dirRange(dir string) (lo, hi string) {
	if dir == "" {
		return "-", "+"
	}
	return "[" + dir + "/", "(" + dir + "0" // '0' == '/'+1
}

// Store puts value at key, with the current time as its modification time.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	key = normKey(key)
	if key == "" {
		return errors.New("certstore: Store: empty key")
	}
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.fileKey(key), "v", value, "m", now)
		p.ZAdd(ctx, s.index, redis.Z{Member: key})
		return nil
	})
	if err != nil {
		return fmt.Errorf("certstore: store %q: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	key = normKey(key)
	v, err := s.rdb.HGet(ctx, s.fileKey(key), "v").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("certstore: load %q: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("certstore: load %q: %w", key, err)
	}
	return v, nil
}

// Delete deletes key and, if it is a directory, every key under it. A
// missing key is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	key = normKey(key)
	// WATCH the index, so that a key stored under the directory between
	// the read of its range and the delete retries instead of surviving.
	var err error
	for range 10 {
		err = s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			lo, hi := dirRange(key)
			under, err := tx.ZRangeByLex(ctx, s.index, &redis.ZRangeBy{Min: lo, Max: hi}).Result()
			if err != nil {
				return err
			}
			members := make([]any, 0, len(under)+1)
			dels := make([]string, 0, len(under)+1)
			if key != "" {
				members = append(members, key)
				dels = append(dels, s.fileKey(key))
			}
			for _, k := range under {
				members = append(members, k)
				dels = append(dels, s.fileKey(k))
			}
			if len(members) == 0 {
				return nil
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, dels...)
				p.ZRem(ctx, s.index, members...)
				return nil
			})
			return err
		}, s.index)
		if !errors.Is(err, redis.TxFailedErr) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("certstore: delete %q: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory (the prefix of a
// file). It answers false when Redis fails.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	key = normKey(key)
	lo, hi := dirRange(key)
	var file *redis.IntCmd
	var dir *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		file = p.Exists(ctx, s.fileKey(key))
		dir = p.ZRangeByLex(ctx, s.index, &redis.ZRangeBy{Min: lo, Max: hi, Count: 1})
		return nil
	})
	if err != nil {
		return false
	}
	return file.Val() > 0 || len(dir.Val()) > 0
}

// List returns the keys in the directory path: its files and
// subdirectories; with recursive, those of the subdirectories too (as
// certmagic's FileStorage walks them: every subdirectory and every file).
// The keys are full paths, sorted. A path that is neither a file nor a
// directory gives an error wrapping fs.ErrNotExist; a file lists nothing.
func (s *Storage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	path = normKey(path)
	lo, hi := dirRange(path)
	var file *redis.IntCmd
	var under *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		file = p.Exists(ctx, s.fileKey(path))
		under = p.ZRangeByLex(ctx, s.index, &redis.ZRangeBy{Min: lo, Max: hi})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("certstore: list %q: %w", path, err)
	}
	keys := under.Val()
	if len(keys) == 0 {
		if path == "" || file.Val() > 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("certstore: list %q: %w", path, fs.ErrNotExist)
	}
	base := ""
	if path != "" {
		base = path + "/"
	}
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, k := range keys {
		rel := strings.TrimPrefix(k, base)
		if !recursive {
			first, _, _ := strings.Cut(rel, "/")
			add(base + first)
			continue
		}
		// every directory between path and k, then k
		for i := 0; i < len(rel); i++ {
			if rel[i] == '/' {
				add(base + rel[:i])
			}
		}
		add(k)
	}
	sort.Strings(out)
	return out, nil
}

// Stat describes key: a file (IsTerminal, with its size and modification
// time) or a directory (IsTerminal false, no size or time). A key that is
// both (certmagic never makes one) is described as the file. A missing key
// gives an error wrapping fs.ErrNotExist.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = normKey(key)
	lo, hi := dirRange(key)
	var mod *redis.StringCmd
	var size *redis.IntCmd
	var dir *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		mod = p.HGet(ctx, s.fileKey(key), "m")
		size = p.HStrLen(ctx, s.fileKey(key), "v")
		dir = p.ZRangeByLex(ctx, s.index, &redis.ZRangeBy{Min: lo, Max: hi, Count: 1})
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, err)
	}
	for _, c := range []redis.Cmder{mod, size, dir} {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, err)
		}
	}
	if mod.Err() == nil {
		ns, err := strconv.ParseInt(mod.Val(), 10, 64)
		if err != nil {
			return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: bad modification time %q", key, mod.Val())
		}
		return certmagic.KeyInfo{
			Key:        key,
			Modified:   time.Unix(0, ns),
			Size:       size.Val(),
			IsTerminal: true,
		}, nil
	}
	if len(dir.Val()) > 0 || key == "" {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", key, fs.ErrNotExist)
}

// ---- locks ----

// renewScript extends a lock if it is still the caller's: KEYS[1] the lock,
// ARGV[1] the token, ARGV[2] the TTL in ms. 1 if extended, else 0.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes a lock if it is still the caller's: KEYS[1] the
// lock, ARGV[1] the token. 1 if deleted, else 0.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

func (s *Storage) lockKey(name string) string { return s.prefix + "lock:" + name }

func newToken() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// tryOnce makes one attempt at name. On a Redis error the SET may have
// applied without our seeing the answer: the token is then deleted, so
// that it does not block others until it expires.
func (s *Storage) tryOnce(ctx context.Context, name string) (bool, error) {
	token := newToken()
	key := s.lockKey(name)
	ok, err := s.rdb.SetNX(ctx, key, token, s.ttl).Result()
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		releaseScript.Run(cctx, s.rdb, []string{key}, token)
		cancel()
		return false, fmt.Errorf("certstore: lock %q: %w", name, err)
	}
	if !ok {
		return false, nil
	}
	s.hold(name, token)
	return true, nil
}

// Lock blocks until it holds the lock name, or ctx ends (its error is
// returned), or Redis fails.
func (s *Storage) Lock(ctx context.Context, name string) error {
	wait := 10 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, err := s.tryOnce(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if ok {
			return nil
		}
		// full jitter in [wait/2, wait), so that waiters spread out
		d := wait/2 + rand.N(wait/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, s.maxPoll)
	}
}

// TryLock makes one attempt at the lock name: true if it now holds it.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return s.tryOnce(ctx, name)
}

// hold records a lock just acquired and starts its renewal.
func (s *Storage) hold(name, token string) {
	ctx, cancel := context.WithCancel(context.Background())
	h := &heldLock{token: token, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	old := s.held[name]
	s.held[name] = h
	s.mu.Unlock()
	if old != nil {
		// Only possible if old's lock was lost (it expired in Redis,
		// since we just got it): stop its renewal.
		old.cancel()
	}
	go s.renew(ctx, name, h)
}

// renew extends h's lock every TTL/3 until cancelled, or until it finds
// the lock gone. A failed extension (Redis unreachable) is retried on the
// next tick: the lock survives two of them.
func (s *Storage) renew(ctx context.Context, name string, h *heldLock) {
	defer close(h.done)
	every := s.ttl / 3
	t := time.NewTicker(every)
	defer t.Stop()
	key := s.lockKey(name)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		n, err := renewScript.Run(rctx, s.rdb, []string{key}, h.token, s.ttl.Milliseconds()).Int()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn("certstore: renewing a lock failed; retrying", zap.String("lock", name), zap.Error(err))
		case n == 0:
			s.log.Error("certstore: lock lost while held (expired or taken over)", zap.String("lock", name))
			return
		}
	}
}

// stopRenewal stops h's renewal and waits for it.
func (h *heldLock) stopRenewal() {
	h.cancel()
	<-h.done
}

// Unlock releases the lock name, which must have been acquired by this
// Storage's Lock or TryLock. It deletes the lock only if it still holds
// this acquisition's token: ErrNotLocked if this Storage did not hold it,
// ErrLockLost if it had expired meanwhile (another holder keeps it).
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("certstore: unlock %q: %w", name, ErrNotLocked)
	}
	h.stopRenewal()
	n, err := releaseScript.Run(ctx, s.rdb, []string{s.lockKey(name)}, h.token).Int()
	if err != nil {
		// It expires within LockTTL, nobody renewing it.
		return fmt.Errorf("certstore: unlock %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("certstore: unlock %q: %w", name, ErrLockLost)
	}
	return nil
}

// RenewLockLease is certmagic's check, before each attempt of an ACME
// order, that it still holds lockKey. It extends the lock to LockTTL, not
// to leaseDuration: certmagic asks for the retry interval plus the order
// timeout (up to hours), which would block the other replicas that long
// after a crash, and the renewal goroutine keeps the lock alive anyway. It
// fails with ErrLockLost if the lock was lost, so that certmagic does not
// order without it.
func (s *Storage) RenewLockLease(ctx context.Context, lockKey string, leaseDuration time.Duration) error {
	s.mu.Lock()
	h := s.held[lockKey]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("certstore: renew lease %q: %w", lockKey, ErrNotLocked)
	}
	n, err := renewScript.Run(ctx, s.rdb, []string{s.lockKey(lockKey)}, h.token, s.ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("certstore: renew lease %q: %w", lockKey, err)
	}
	if n == 0 {
		return fmt.Errorf("certstore: renew lease %q: %w", lockKey, ErrLockLost)
	}
	return nil
}

// abandon forgets the lock name without releasing it, as if the process
// holding it had died: it expires after LockTTL. For tests.
func (s *Storage) abandon(name string) {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h != nil {
		h.stopRenewal()
	}
}
