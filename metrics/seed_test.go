package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The seed's metrics keep its names, labels and buckets.
func TestSeedMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.ObserveRequest("/api/v1/prediction/{id}", "POST", 200, 700*time.Millisecond)
	m.RunStarted("wf-1")
	m.RunEnded("wf-1", true, 3*time.Second)
	m.RunStarted("wf-1")
	m.RunEnded("wf-1", false, 40*time.Second)
	m.ConnState(nil, http.StateNew)
	m.ConnState(nil, http.StateNew)
	m.ConnState(nil, http.StateClosed)
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP flowise_workflow_executions_total Flow runs by workflow and status: started (sent to the flow server), completed (a whole 2xx answer), failed (any other end).
# TYPE flowise_workflow_executions_total counter
flowise_workflow_executions_total{status="completed",workflow_id="wf-1"} 1
flowise_workflow_executions_total{status="failed",workflow_id="wf-1"} 1
flowise_workflow_executions_total{status="started",workflow_id="wf-1"} 2
# HELP flowise_active_connections Client connections open on the proxy listeners.
# TYPE flowise_active_connections gauge
flowise_active_connections 1
`), "flowise_workflow_executions_total", "flowise_active_connections")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		switch mf.GetName() {
		case "flowise_http_request_duration_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			var bounds []float64
			for _, b := range h.GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
			}
			if len(bounds) != 6 || bounds[0] != 0.1 || bounds[5] != 10 || h.GetSampleCount() != 1 {
				t.Errorf("http histogram: buckets %v, count %d", bounds, h.GetSampleCount())
			}
			labels := map[string]string{}
			for _, l := range mf.GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] != "POST" || labels["route"] != "/api/v1/prediction/{id}" || labels["status_code"] != "200" {
				t.Errorf("labels %v", labels)
			}
		case "flowise_workflow_execution_duration_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			if b := h.GetBucket(); len(b) != 7 || b[0].GetUpperBound() != 1 || b[6].GetUpperBound() != 300 || h.GetSampleCount() != 2 {
				t.Errorf("execution histogram: %v", h)
			}
		case "flowise_memory_usage_bytes":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v < 1<<20 {
				t.Errorf("memory %v", v)
			}
		case "flowise_cpu_usage_percentage":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v < 0 {
				t.Errorf("cpu %v", v)
			}
		}
	}
	for _, n := range []string{"flowise_http_request_duration_seconds", "flowise_workflow_execution_duration_seconds", "flowise_memory_usage_bytes", "flowise_cpu_usage_percentage"} {
		if !found[n] {
			t.Errorf("%s not registered", n)
		}
	}
}

// CPU percentage is process CPU time over wall time between scrapes: after
// a busy loop that used 50 ms of CPU it reads at least 50 ms over the wall
// time that passed (however loaded the machine), never more than the
// cores can give.
func TestSeedCPUPercent(t *testing.T) {
	before := time.Now()
	s := newSeed(prometheus.NewRegistry())
	cpu0 := processCPU()
	x := 0
	for processCPU()-cpu0 < 50*time.Millisecond {
		for range 10000 {
			x++
		}
	}
	p := s.cpuPercent()
	wall := time.Since(before)
	if min := 100 * 0.05 / wall.Seconds(); p < min || p > 100*float64(runtime.NumCPU()) {
		t.Fatalf("cpu %.1f%% after 50 ms of CPU in %v; want at least %.1f%%", p, wall, min)
	}
	_ = x
}

// The per-workflow run series are cached for known workflows only: ids
// past max_workflows share "other" and are not kept.
func TestRunSeriesBounded(t *testing.T) {
	m := NewWith(prometheus.NewRegistry(), Options{MaxWorkflows: 3})
	for i := range 100 {
		id := "wf-" + strconv.Itoa(i)
		m.RunStarted(id)
		m.RunEnded(id, i%2 == 0, time.Second)
	}
	n := 0
	m.seed.runs.Range(func(any, any) bool { n++; return true })
	if n != 3 {
		t.Fatalf("%d cached run series, want 3", n)
	}
	if got := testutil.ToFloat64(m.seed.executions.WithLabelValues("other", "started")); got != 97 {
		t.Fatalf("other started = %v, want 97", got)
	}
}
