package ledger

import (
	"strconv"
	"testing"
	"time"
)

// Add of a key already pending allocates nothing. The flushes are held
// off (a flush makes the next Add of each key a new key again).
func TestAddAllocs(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			l := be.open(t, testOptions(t, nil))
			c := coreOf(l)
			for _, r := range []Record{
				{Workflow: "0f3b6c1e-9a4d-4c5b-8e2f-1a2b3c4d5e6f", Time: on(0, 1), Executions: 1, InputTokens: 10, CostNano: 5, DurationMs: 3},
				{Workflow: "0f3b6c1e-9a4d-4c5b-8e2f-1a2b3c4d5e6f", Caller: "5f1d3c0a9b7e2d4c", Time: on(0, 1), Executions: 1, InputTokens: 10},
			} {
				c.sem <- struct{}{}
				l.Add(r)
				if n := testing.AllocsPerRun(1000, func() { l.Add(r) }); n != 0 {
					t.Errorf("Add (caller %q) allocates %v times", r.Caller, n)
				}
				<-c.sem
			}
		})
	}
}

// BenchmarkAdd is the cost of one proxied request's Add, with the loop
// writing in the background as in production.
func BenchmarkAdd(b *testing.B) {
	const wf = "0f3b6c1e-9a4d-4c5b-8e2f-1a2b3c4d5e6f"
	now := time.Now()
	rec := Record{Workflow: wf, Time: now, Executions: 1, InputTokens: 812, OutputTokens: 96, CostNano: 179_400, DurationMs: 1400}
	callers := make([]string, 1000)
	for i := range callers {
		callers[i] = "caller-" + strconv.Itoa(i)
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			b.Run("existing key", func(b *testing.B) {
				l := be.open(b, testOptions(b, nil))
				b.ReportAllocs()
				for b.Loop() {
					l.Add(rec)
				}
			})
			b.Run("with caller", func(b *testing.B) {
				l := be.open(b, testOptions(b, nil))
				r := rec
				r.Caller = "5f1d3c0a9b7e2d4c"
				b.ReportAllocs()
				for b.Loop() {
					l.Add(r)
				}
			})
			b.Run("1000 callers", func(b *testing.B) {
				l := be.open(b, testOptions(b, nil))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					r := rec
					r.Caller = callers[i%len(callers)]
					l.Add(r)
					i++
				}
			})
			b.Run("parallel", func(b *testing.B) {
				l := be.open(b, testOptions(b, nil))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						l.Add(rec)
					}
				})
			})
		})
	}
}
