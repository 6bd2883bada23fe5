package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// boltBucket holds the ledger in the db; other packages keep their own
// buckets in the same file.
var boltBucket = []byte("usage")

const (
	// boltVersion is the first byte of a value; it changes with the
	// layout.
	boltVersion = 1
	// boltValueLen is a value's length: the version, then eight int64s.
	boltValueLen = 1 + 8*8
	// boltInterval spaces the loop's flushes: one transaction (and fsync)
	// a second at most.
	boltInterval = time.Second
	// dateLen is len("YYYY-MM-DD").
	dateLen = 10
)

// Bolt is the ledger in a bbolt file, for a single replica.
type Bolt struct {
	*core
}

var _ Ledger = (*Bolt)(nil)

// NewBolt returns the ledger kept in db, in its bucket "usage", which it
// creates if needed. The caller opens db and closes it after Close.
func NewBolt(db *bbolt.DB, o Options) (*Bolt, error) {
	if db == nil {
		return nil, errors.New("ledger: NewBolt: db is nil")
	}
	if o.Logger == nil {
		return nil, errors.New("ledger: NewBolt: Options.Logger is required")
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: create bucket %q: %w", boltBucket, err)
	}
	s := &boltStore{db: db, log: o.Logger}
	return &Bolt{newCore(s, o, boltInterval)}, nil
}

type boltStore struct {
	db  *bbolt.DB
	log *zap.Logger
}

// boltKey appends k's key: workflow \x00 date \x00 caller.
func boltKey(dst []byte, wf, date, caller string) []byte {
	dst = append(dst, wf...)
	dst = append(dst, 0)
	dst = append(dst, date...)
	dst = append(dst, 0)
	return append(dst, caller...)
}

// parseBoltKey splits a key; ok is false for a malformed one.
func parseBoltKey(k []byte) (wf, date, caller []byte, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 || len(k) < i+1+dateLen+1 || k[i+1+dateLen] != 0 {
		return nil, nil, nil, false
	}
	return k[:i], k[i+1 : i+1+dateLen], k[i+1+dateLen+1:], true
}

func encodeCounters(dst []byte, c *counters) []byte {
	dst = append(dst, boltVersion)
	for _, v := range [...]int64{c.exec, c.est, c.hits, c.rej, c.in, c.out, c.nano, c.ms} {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(v))
	}
	return dst
}

func decodeCounters(v []byte) (counters, error) {
	if len(v) != boltValueLen || v[0] != boltVersion {
		return counters{}, fmt.Errorf("ledger: unknown usage value (%d bytes, version %d)", len(v), firstByte(v))
	}
	f := func(i int) int64 { return int64(binary.LittleEndian.Uint64(v[1+8*i:])) }
	return counters{f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7)}, nil
}

func firstByte(v []byte) int {
	if len(v) == 0 {
		return -1
	}
	return int(v[0])
}

// write adds b to the stored counters in one transaction. A value it
// cannot read is replaced by b's counters and logged: failing the batch
// would stop the ledger for good.
func (s *boltStore) write(_ context.Context, b batch, _ bool) error {
	dates := make(map[int64]string)
	// One arena for the values: bbolt keeps them until the commit.
	arena := make([]byte, 0, len(b)*boltValueLen)
	var kbuf []byte
	return s.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		if bk == nil {
			return fmt.Errorf("ledger: bucket %q is gone", boltBucket)
		}
		for k, c := range b {
			date, ok := dates[k.day]
			if !ok {
				date = dateOf(k.day)
				dates[k.day] = date
			}
			kbuf = boltKey(kbuf[:0], k.wf, date, k.caller)
			sum := *c
			if old := bk.Get(kbuf); old != nil {
				prev, err := decodeCounters(old)
				if err != nil {
					s.log.Error("usage ledger: replacing an unreadable value", zap.ByteString("key", kbuf), zap.Error(err))
				} else {
					sum.merge(&prev)
				}
			}
			start := len(arena)
			arena = encodeCounters(arena, &sum)
			if err := bk.Put(kbuf, arena[start:len(arena):len(arena)]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) read(ctx context.Context, wf, caller string, from, to int64) (map[int64]*counters, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[int64]*counters)
	var kbuf []byte
	err := s.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		if bk == nil {
			return fmt.Errorf("ledger: bucket %q is gone", boltBucket)
		}
		for d := from; d <= to; d++ {
			kbuf = boltKey(kbuf[:0], wf, dateOf(d), caller)
			v := bk.Get(kbuf)
			if v == nil {
				continue
			}
			c, err := decodeCounters(v)
			if err != nil {
				return fmt.Errorf("%w (key %q)", err, kbuf)
			}
			out[d] = &c
		}
		return nil
	})
	return out, err
}

// readAll walks the workflows' totals of the range, seeking past the days
// outside it and past the callers' keys.
func (s *boltStore) readAll(ctx context.Context, from, to int64) (map[string]map[int64]*counters, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fromDate, toDate := []byte(dateOf(from)), []byte(dateOf(to))
	out := make(map[string]map[int64]*counters)
	err := s.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(boltBucket)
		if bk == nil {
			return fmt.Errorf("ledger: bucket %q is gone", boltBucket)
		}
		cur := bk.Cursor()
		var seek []byte
		k, v := cur.First()
		for k != nil {
			wf, date, caller, ok := parseBoltKey(k)
			switch {
			case !ok:
				k, v = cur.Next()
				continue
			case bytes.Compare(date, fromDate) < 0:
				// Up to the range's first day of this workflow.
				seek = append(append(append(seek[:0], wf...), 0), fromDate...)
			case bytes.Compare(date, toDate) > 0:
				// Past this workflow: its name then \x01 sorts after all
				// of its keys.
				seek = append(append(seek[:0], wf...), 1)
			case len(caller) > 0:
				// Past this day's callers.
				seek = append(append(append(append(seek[:0], wf...), 0), date...), 1)
			default:
				c, err := decodeCounters(v)
				if err != nil {
					return fmt.Errorf("%w (key %q)", err, k)
				}
				t, err := time.Parse(time.DateOnly, string(date))
				if err != nil {
					return fmt.Errorf("ledger: malformed date in key %q", k)
				}
				m := out[string(wf)]
				if m == nil {
					m = make(map[int64]*counters)
					out[string(wf)] = m
				}
				m[dayOf(t)] = &c
				seek = append(append(append(append(seek[:0], wf...), 0), date...), 1)
			}
			k, v = cur.Seek(seek)
		}
		return nil
	})
	return out, err
}
