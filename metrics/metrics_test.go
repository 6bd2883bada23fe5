package metrics

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// metrics.enabled: false is a nil *Metrics: every method records nothing
// and none panics.
func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	m.ObserveRequest("/", "GET", 200, time.Millisecond)
	m.CacheResult("hit")
	m.CacheError("redis")
	m.RedisError("quota")
	m.UpstreamTTFB("a").Observe(1)
	m.StreamEnded("wf", time.Second, 3)
	m.UpstreamSource(func(func(string, float64, float64)) { t.Fatal("read") })
	m.Discovered("flowise", 2)
	m.DNSError("flowise")
	m.ForgetUpstream("a")
	m.UpstreamFailure("a", "refused")
	m.Retry()
	m.ResponseCut("upstream_eof")
	m.QuotaRejection("wf", "rate_limited")
	m.Tokens("wf", "m", "input", "reported", 1)
	m.Cost("wf", "m", 1)
	m.QuotaRedisError("admit")
	m.LedgerError(true)
	m.QuotaBudgets(func(func(string, string, string, float64)) { t.Fatal("read") })
	m.RunStarted("wf")
	m.RunEnded("wf", true, time.Second)
	m.NodeRun("llmAgentflow", "finished")
	m.ConnState(nil, http.StateNew)
}

// Node statuses take the seed's values, so its success-rate panel
// (status='success') reads them.
func TestNodeStatusLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	for _, s := range []string{"finished", "finished", "error", "terminated", "stopped", "inprogress", "weird"} {
		m.NodeRun("llmAgentflow", s)
	}
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP flowise_node_executions_total Agentflow nodes run, by node type (data.name) and status: success (Flowise's FINISHED), failure (ERROR, TERMINATED), stopped (waiting on human input), other.
# TYPE flowise_node_executions_total counter
flowise_node_executions_total{node_type="llmAgentflow",status="failure"} 2
flowise_node_executions_total{node_type="llmAgentflow",status="other"} 2
flowise_node_executions_total{node_type="llmAgentflow",status="stopped"} 1
flowise_node_executions_total{node_type="llmAgentflow",status="success"} 2
`), "flowise_node_executions_total")
	if err != nil {
		t.Fatal(err)
	}
}

// Redis errors are counted by component, whichever part met them.
func TestRedisErrorsByComponent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.CacheError("redis")
	m.CacheError("memory")
	m.QuotaRedisError("admit")
	m.QuotaRedisError("settle")
	m.LedgerError(true)
	m.LedgerError(false) // the embedded store's
	for comp, want := range map[string]float64{"cache": 1, "quota": 2, "ledger": 1} {
		if got := testutil.ToFloat64(m.redisErrors.WithLabelValues(comp)); got != want {
			t.Errorf("%s: %v, want %v", comp, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.redisErrors); n != 3 {
		t.Errorf("%d components", n)
	}
}

// The budget gauge is read at scrape time, and workflows past the label
// bound are left out rather than collide under "other".
func TestQuotaBudgetsGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewWith(reg, Options{MaxWorkflows: 2})
	m.QuotaRejection("wf-a", "quota_exceeded")
	m.QuotaRejection("wf-b", "quota_exceeded")
	m.QuotaBudgets(func(yield func(string, string, string, float64)) {
		yield("wf-a", "24h", "executions", 0.85)
		yield("wf-a", "24h", "cost_usd", 0.5)
		yield("wf-c", "24h", "executions", 0.1) // past the bound
	})
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP flowgate_quota_budget_used_ratio `+budgetHelp+`
# TYPE flowgate_quota_budget_used_ratio gauge
flowgate_quota_budget_used_ratio{resource="cost_usd",window="24h",workflow_id="wf-a"} 0.5
flowgate_quota_budget_used_ratio{resource="executions",window="24h",workflow_id="wf-a"} 0.85
`), "flowgate_quota_budget_used_ratio")
	if err != nil {
		t.Fatal(err)
	}
}

// Streams: frames always, the first token's time when one came.
func TestStreamEnded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.StreamEnded("wf", 300*time.Millisecond, 12)
	m.StreamEnded("wf", 0, 3) // an error before any token
	if n := testutil.CollectAndCount(m.ttft); n != 1 {
		t.Fatalf("%d ttft series", n)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case "flowgate_stream_ttft_seconds":
			if h := mf.GetMetric()[0].GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() != 0.3 {
				t.Errorf("ttft %v", h)
			}
		case "flowgate_stream_frames":
			if h := mf.GetMetric()[0].GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() != 15 {
				t.Errorf("frames %v", h)
			}
		}
	}
}
