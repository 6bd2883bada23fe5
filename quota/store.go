package quota

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/textproto"
	"sort"
	"sync"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// overrideStore keeps the policies set through the admin API: in Redis,
// where every replica reads them (each checks a version counter every
// second, so a change reaches all of them within about a second), or in
// the embedded store of a single replica.
type overrideStore interface {
	version(ctx context.Context) (int64, error)
	load(ctx context.Context) (map[string]config.QuotaPolicy, int64, error)
	put(ctx context.Context, workflow string, p config.QuotaPolicy) error
	del(ctx context.Context, workflow string) (bool, error)
}

const (
	redisPoliciesKey = "flowgate:quota:policies"
	redisVersionKey  = "flowgate:quota:policies:version"
)

type redisOverrides struct{ rdb redis.UniversalClient }

func (r *redisOverrides) version(ctx context.Context) (int64, error) {
	v, err := r.rdb.Get(ctx, redisVersionKey).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

func (r *redisOverrides) load(ctx context.Context) (map[string]config.QuotaPolicy, int64, error) {
	var hv *redis.MapStringStringCmd
	var vv *redis.StringCmd
	// One MULTI: the policies and the version they are at.
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		hv = p.HGetAll(ctx, redisPoliciesKey)
		vv = p.Get(ctx, redisVersionKey)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, err
	}
	v, _ := vv.Int64()
	m := map[string]config.QuotaPolicy{}
	for id, raw := range hv.Val() {
		var p config.QuotaPolicy
		if json.Unmarshal([]byte(raw), &p) == nil {
			m[id] = p
		}
	}
	return m, v, nil
}

func (r *redisOverrides) put(ctx context.Context, workflow string, p config.QuotaPolicy) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = r.rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.HSet(ctx, redisPoliciesKey, workflow, raw)
		pl.Incr(ctx, redisVersionKey)
		return nil
	})
	return err
}

func (r *redisOverrides) del(ctx context.Context, workflow string) (bool, error) {
	var n *redis.IntCmd
	_, err := r.rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		n = pl.HDel(ctx, redisPoliciesKey, workflow)
		pl.Incr(ctx, redisVersionKey)
		return nil
	})
	return err == nil && n.Val() > 0, err
}

// Buckets of the embedded store (the file is shared with the ledger).
var (
	boltPolicies = []byte("quota_policies")
	boltWindows  = []byte("quota_windows")
)

type boltOverrides struct {
	db *bbolt.DB
	mu sync.Mutex
	v  int64
}

func newBoltOverrides(db *bbolt.DB) (*boltOverrides, error) {
	err := db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(boltPolicies); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(boltWindows)
		return err
	})
	return &boltOverrides{db: db, v: 1}, err
}

func (b *boltOverrides) version(context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.v, nil
}

func (b *boltOverrides) load(context.Context) (map[string]config.QuotaPolicy, int64, error) {
	m := map[string]config.QuotaPolicy{}
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(boltPolicies).ForEach(func(k, v []byte) error {
			var p config.QuotaPolicy
			if json.Unmarshal(v, &p) == nil {
				m[string(k)] = p
			}
			return nil
		})
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	return m, b.v, err
}

func (b *boltOverrides) put(_ context.Context, workflow string, p config.QuotaPolicy) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	err = b.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(boltPolicies).Put([]byte(workflow), raw) })
	b.bump()
	return err
}

func (b *boltOverrides) del(_ context.Context, workflow string) (bool, error) {
	found := false
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(boltPolicies)
		found = bk.Get([]byte(workflow)) != nil
		return bk.Delete([]byte(workflow))
	})
	b.bump()
	return found, err
}

func (b *boltOverrides) bump() {
	b.mu.Lock()
	b.v++
	b.mu.Unlock()
}

// memOverrides keeps admin API policies for a process with no store.
type memOverrides struct {
	mu sync.Mutex
	m  map[string]config.QuotaPolicy
	v  int64
}

func (s *memOverrides) version(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v, nil
}

func (s *memOverrides) load(context.Context) (map[string]config.QuotaPolicy, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]config.QuotaPolicy, len(s.m))
	for k, v := range s.m {
		m[k] = v
	}
	return m, s.v, nil
}

func (s *memOverrides) put(_ context.Context, workflow string, p config.QuotaPolicy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[workflow] = p
	s.v++
	return nil
}

func (s *memOverrides) del(_ context.Context, workflow string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[workflow]
	delete(s.m, workflow)
	s.v++
	return ok, nil
}

// Budget windows in the embedded store: key = caller key, 0, window
// seconds and index (8 bytes each, big-endian); value = executions,
// tokens, cost (8 bytes each). A restart keeps what a window has spent.

func windowDBKey(k windowKey) []byte {
	b := make([]byte, 0, len(k.key)+17)
	b = append(b, k.key...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(k.winSec))
	return binary.BigEndian.AppendUint64(b, uint64(k.idx))
}

func saveWindows(db *bbolt.DB, m *memory) error {
	dirty := m.takeDirty()
	if len(dirty) == 0 {
		return nil
	}
	return db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(boltWindows)
		for k, u := range dirty {
			v := make([]byte, 0, 24)
			v = binary.BigEndian.AppendUint64(v, uint64(u.executions))
			v = binary.BigEndian.AppendUint64(v, uint64(u.tokens))
			v = binary.BigEndian.AppendUint64(v, uint64(u.costNano))
			if err := bk.Put(windowDBKey(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// loadWindows restores the windows still open at now and deletes the
// ended ones.
func loadWindows(db *bbolt.DB, m *memory, now time.Time) error {
	nowUs := now.UnixMicro()
	return db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(boltWindows)
		var ended [][]byte
		err := bk.ForEach(func(k, v []byte) error {
			i := bytes.LastIndexByte(k[:max(len(k)-16, 0)], 0)
			if len(k) < 17 || i != len(k)-17 || len(v) != 24 {
				ended = append(ended, append([]byte(nil), k...))
				return nil
			}
			wk := windowKey{
				key:    string(k[:i]),
				winSec: int64(binary.BigEndian.Uint64(k[i+1:])),
				idx:    int64(binary.BigEndian.Uint64(k[i+9:])),
			}
			if wk.winSec <= 0 || (wk.idx+1)*wk.winSec*1e6 <= nowUs {
				ended = append(ended, append([]byte(nil), k...))
				return nil
			}
			m.load(wk, usage{
				executions: int64(binary.BigEndian.Uint64(v)),
				tokens:     int64(binary.BigEndian.Uint64(v[8:])),
				costNano:   int64(binary.BigEndian.Uint64(v[16:])),
			})
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range ended {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		m.takeDirty() // what was just loaded is already stored
		return nil
	})
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].Workflow < es[j].Workflow })
}

func canonicalHeader(h string) string { return textproto.CanonicalMIMEHeaderKey(h) }
