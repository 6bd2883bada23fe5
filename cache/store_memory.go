package cache

import (
	"context"
	"math"
	"time"

	"github.com/maypok86/otter/v2"
)

// keyWeight is what a key adds to an entry's weight: its workflow id, the
// variant and the sum. Entry.Size counts the rest.
func keyWeight(k Key) int { return len(k.Workflow) + 1 + len(k.Sum) }

// memValue is what the memory level holds for a key: the answer and when
// it expires, in nanoseconds of the store's clock (Unix time).
type memValue struct {
	e       *Entry
	expires int64
}

// memoryLevel is the in-process level: an otter v2 cache bounded by the
// weight of its answers (Entry.Size plus the key), each expiring at its own
// deadline.
type memoryLevel struct {
	c   *otter.Cache[Key, memValue]
	now func() int64
}

// newMemoryLevel makes the level; clock is nil but in tests, for otter's
// own (Unix nanoseconds), which now must read too.
func newMemoryLevel(maxBytes int64, clock otter.Clock, now func() int64) (*memoryLevel, error) {
	c, err := otter.New(&otter.Options[Key, memValue]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(k Key, v memValue) uint32 {
			w := v.e.Size() + keyWeight(k)
			if w <= 0 {
				return 1
			}
			if uint64(w) > math.MaxUint32 {
				return math.MaxUint32
			}
			return uint32(w)
		},
		// Each entry expires at its own deadline, set by Store.Set (the
		// answer's creation + its workflow's TTL) or by a Redis hit (the
		// remaining TTL there). A replacement takes the new deadline; a
		// read does not extend it.
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[Key, memValue]) time.Duration {
			return time.Duration(e.Value.expires - now())
		}),
		Clock: clock,
	})
	if err != nil {
		return nil, err
	}
	return &memoryLevel{c: c, now: now}, nil
}

// get is the hit path of every cached answer: one lookup, no allocation.
func (m *memoryLevel) get(_ context.Context, k Key) (*Entry, int64, error) {
	v, ok := m.c.GetIfPresent(k)
	if !ok {
		return nil, 0, nil
	}
	return v.e, v.expires, nil
}

func (m *memoryLevel) set(_ context.Context, k Key, e *Entry, expires int64, _ int64) error {
	if expires <= m.now() {
		return nil
	}
	m.c.Set(k, memValue{e: e, expires: expires})
	return nil
}

// forget drops one key.
func (m *memoryLevel) forget(k Key) { m.c.Invalidate(k) }

// deleteWorkflow walks every key and drops the workflow's. The walk of the
// whole level costs about 0.5 ms per 10,000 entries and 20 ms per 100,000
// (BenchmarkMemoryDeleteWorkflow; 256 MiB of 2 KiB answers is about
// 130,000): an admin call and the pub/sub listener can afford it, requests
// never wait for it, and there is no per-workflow index to keep in step
// with otter's evictions and expiries.
func (m *memoryLevel) deleteWorkflow(_ context.Context, workflow string) (int, error) {
	n := 0
	for k := range m.c.Keys() {
		if k.Workflow == workflow {
			if _, ok := m.c.Invalidate(k); ok {
				n++
			}
		}
	}
	return n, nil
}

func (m *memoryLevel) deleteAll(context.Context) (int, error) {
	n := 0
	for k := range m.c.Keys() {
		if _, ok := m.c.Invalidate(k); ok {
			n++
		}
	}
	return n, nil
}

// weight is the level's current total weight, for tests.
func (m *memoryLevel) weight() uint64 {
	m.c.CleanUp()
	return m.c.WeightedSize()
}

func (m *memoryLevel) close() { m.c.StopAllGoroutines() }
