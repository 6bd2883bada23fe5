package quota

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/internal/testredis"
)

// benchPolicy has a rate and two budgets that never refuse during a run:
// every request goes the whole admitted path.
var benchPolicy = config.QuotaPolicy{
	Rate: &config.RateLimit{Limit: 1_000_000_000, Per: config.Duration(time.Second)},
	Budgets: []config.Budget{
		{Window: config.Duration(time.Hour), Executions: 1 << 50},
		{Window: config.Duration(30 * 24 * time.Hour), Executions: 1 << 50, Tokens: 1 << 50},
	},
	PerCaller: "authorization",
}

func benchEnforcer(b *testing.B, o Options) *Enforcer {
	b.Helper()
	o.Config = limited("bench-flow", benchPolicy)
	o.Logger = zap.NewNop()
	e, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	return e
}

// The request path without Redis: policy lookup, caller key, Admit.
// Target: at most 5µs of CPU per request.
func BenchmarkAdmitMemory(b *testing.B) {
	e := benchEnforcer(b, Options{})
	h := http.Header{"Authorization": {"Bearer bench-token"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p := e.Policy("bench-flow")
		d := e.Admit(ctx, p, "bench-flow", p.CallerKey(h, "10.0.0.1"))
		if !d.Allowed {
			b.Fatalf("%+v", d)
		}
	}
}

// The same from every core at once, over 64 callers.
func BenchmarkAdmitMemoryParallel(b *testing.B) {
	e := benchEnforcer(b, Options{})
	var hs []http.Header
	for i := range 64 {
		hs = append(hs, http.Header{"Authorization": {"Bearer token-" + strconv.Itoa(i)}})
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			p := e.Policy("bench-flow")
			d := e.Admit(ctx, p, "bench-flow", p.CallerKey(hs[i%len(hs)], "10.0.0.1"))
			if !d.Allowed {
				b.Errorf("%+v", d)
				return
			}
			i++
		}
	})
}

// An unlimited workflow: the hot path's only cost is the lookup.
func BenchmarkPolicyUnlimited(b *testing.B) {
	e := benchEnforcer(b, Options{})
	b.ReportAllocs()
	for b.Loop() {
		if e.Policy("free-flow") != nil {
			b.Fatal("policy")
		}
	}
}

// The request path with Redis: one script round trip.
func BenchmarkAdmitRedis(b *testing.B) {
	srv := testredis.Start(b)
	e := benchEnforcer(b, Options{Redis: newRedisClient(b, srv.Addr())})
	h := http.Header{"Authorization": {"Bearer bench-token"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p := e.Policy("bench-flow")
		d := e.Admit(ctx, p, "bench-flow", p.CallerKey(h, "10.0.0.1"))
		if !d.Allowed || d.Local {
			b.Fatalf("%+v", d)
		}
	}
}

func BenchmarkAdmitRedisParallel(b *testing.B) {
	srv := testredis.Start(b)
	e := benchEnforcer(b, Options{Redis: newRedisClient(b, srv.Addr())})
	h := http.Header{"Authorization": {"Bearer bench-token"}}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p := e.Policy("bench-flow")
			d := e.Admit(ctx, p, "bench-flow", p.CallerKey(h, "10.0.0.1"))
			if !d.Allowed || d.Local {
				b.Errorf("%+v", d)
				return
			}
		}
	})
}
