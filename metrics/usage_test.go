package metrics

import (
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A client spraying random workflow ids grows the label set only up to the
// bound; the rest are counted under "other", and nothing is lost.
func TestUsageWorkflowLabelIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	u := NewUsage(reg, 3)
	for i := range 100 {
		u.QuotaRejection("wf-"+strconv.Itoa(i), "rate_limited")
	}
	u.QuotaRejection("wf-1", "rate_limited") // a known id keeps its label
	if n := testutil.CollectAndCount(u.rejections); n != 4 {
		t.Fatalf("%d series, want 3 workflows + other", n)
	}
	if got := testutil.ToFloat64(u.rejections.WithLabelValues("other", "rate_limited")); got != 97 {
		t.Errorf("other = %v, want 97", got)
	}
	if got := testutil.ToFloat64(u.rejections.WithLabelValues("wf-1", "rate_limited")); got != 2 {
		t.Errorf("wf-1 = %v, want 2", got)
	}
	u.Tokens("wf-0", "gpt-4o-mini", "input", "reported", 0) // nothing spent: no series
	u.Tokens("wf-0", "gpt-4o-mini", "input", "reported", 11)
	u.Cost("wf-0", "gpt-4o-mini", 0.00000525)
	if got := testutil.ToFloat64(u.tokens.WithLabelValues("wf-0", "gpt-4o-mini", "input", "reported")); got != 11 {
		t.Errorf("tokens = %v", got)
	}
	if n := testutil.CollectAndCount(u.tokens); n != 1 {
		t.Errorf("%d token series, want 1", n)
	}
}

// Workflows the config names keep their label whatever was sprayed
// before them, and do not use up max_workflows.
func TestReservedWorkflowsKeepTheirLabel(t *testing.T) {
	m := NewWith(prometheus.NewRegistry(), Options{MaxWorkflows: 2})
	m.ReserveWorkflows([]string{"named", "named"})
	for i := range 10 {
		m.QuotaRejection("sprayed-"+strconv.Itoa(i), "quota_exceeded")
	}
	m.QuotaRejection("named", "quota_exceeded")
	u := m.usage
	if got := testutil.ToFloat64(u.rejections.WithLabelValues("named", "quota_exceeded")); got != 1 {
		t.Errorf("named = %v, want its own series", got)
	}
	if got := testutil.ToFloat64(u.rejections.WithLabelValues("other", "quota_exceeded")); got != 8 {
		t.Errorf("other = %v, want 8 (2 sprayed ids kept their labels)", got)
	}
}
