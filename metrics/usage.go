package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Usage holds the quota and metering collectors. Their workflow_id label
// comes from request paths, so it is bounded: past MaxWorkflows distinct
// ids the rest are counted under "other", and a client spraying random
// ids cannot grow the registry.
type Usage struct {
	rejections  *prometheus.CounterVec
	tokens      *prometheus.CounterVec
	cost        *prometheus.CounterVec
	redisErrors *prometheus.CounterVec
	ledgerErrs  prometheus.Counter

	mu       sync.Mutex
	seen     map[string]struct{}
	limit    int
	reserved int // ids the config names: kept, and not counted in limit
}

// DefaultMaxWorkflows bounds the workflow_id label (metrics.max_workflows
// in a later config).
const DefaultMaxWorkflows = 1000

// NewUsage creates the collectors and registers them on reg.
func NewUsage(reg prometheus.Registerer, maxWorkflows int) *Usage {
	if maxWorkflows <= 0 {
		maxWorkflows = DefaultMaxWorkflows
	}
	u := &Usage{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "quota_rejections_total",
			Help:      "Flow requests refused before reaching the flow server, by workflow and reason (rate_limited, quota_exceeded, quota_unavailable).",
		}, []string{"workflow_id", "reason"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "tokens_total",
			Help:      "LLM tokens spent by flow executions, by workflow, model, direction (input, output) and source (reported by the flow server, or estimated with a tokenizer).",
		}, []string{"workflow_id", "model", "direction", "source"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "cost_usd_total",
			Help:      "Cost of flow executions in US dollars, by workflow and model.",
		}, []string{"workflow_id", "model"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "quota_redis_errors_total",
			Help:      "Failed Redis calls of the quota enforcer, by operation; while they fail, quota.on_redis_error applies.",
		}, []string{"op"}),
		ledgerErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "ledger_errors_total",
			Help:      "Failed writes of the usage ledger (retried; records past the pending bound are dropped).",
		}),
		seen:  map[string]struct{}{},
		limit: maxWorkflows,
	}
	reg.MustRegister(u.rejections, u.tokens, u.cost, u.redisErrors, u.ledgerErrs)
	return u
}

// workflow is the label value for id: itself while fewer than the limit
// have been seen, else "other".
func (u *Usage) workflow(id string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.seen[id]; ok {
		return id
	}
	if len(u.seen)-u.reserved >= u.limit {
		return "other"
	}
	u.seen[id] = struct{}{}
	return id
}

// QuotaRejection counts one refused request.
func (u *Usage) QuotaRejection(workflow, reason string) {
	u.rejections.WithLabelValues(u.workflow(workflow), reason).Inc()
}

// Tokens counts tokens of one execution.
func (u *Usage) Tokens(workflow, model, direction, source string, n int64) {
	if n > 0 {
		u.tokens.WithLabelValues(u.workflow(workflow), model, direction, source).Add(float64(n))
	}
}

// Cost counts an execution's cost in dollars.
func (u *Usage) Cost(workflow, model string, usd float64) {
	if usd > 0 {
		u.cost.WithLabelValues(u.workflow(workflow), model).Add(usd)
	}
}

// QuotaRedisError counts a failed quota call to Redis.
func (u *Usage) QuotaRedisError(op string) { u.redisErrors.WithLabelValues(op).Inc() }

// LedgerError counts a failed ledger write.
func (u *Usage) LedgerError() { u.ledgerErrs.Inc() }

// BudgetSource reports each budget's used share (quota.Enforcer.BudgetUsage).
type BudgetSource func(yield func(workflow, window, resource string, ratio float64))

const budgetHelp = "Share of a workflow's budget used in its current window (1 = spent), by window (1h, 24h, 30d...) and resource (executions, tokens, cost_usd), as this replica's last admission saw it; with Redis, the count all replicas share. Workflow-wide budgets only (not per_caller)."

var budgetDesc = prometheus.NewDesc("flowgate_quota_budget_used_ratio", budgetHelp,
	[]string{"workflow_id", "window", "resource"}, nil)

// budgetCollector reads the budgets at scrape time: the request path only
// keeps the counts its admissions return anyway.
type budgetCollector struct {
	src BudgetSource
	u   *Usage
}

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- budgetDesc }

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	c.src(func(workflow, window, resource string, ratio float64) {
		// Past the label bound a workflow is not reported at all: under
		// "other" several would collide.
		if wf := c.u.workflow(workflow); wf == workflow && wf != "other" {
			ch <- prometheus.MustNewConstMetric(budgetDesc, prometheus.GaugeValue, ratio, workflow, window, resource)
		}
	})
}

// QuotaBudgets exports src as flowgate_quota_budget_used_ratio.
func (m *Metrics) QuotaBudgets(src BudgetSource) {
	if m != nil {
		m.reg.MustRegister(budgetCollector{src: src, u: m.usage})
	}
}

// ReserveWorkflows gives the workflows the config names their own label
// values up front, outside max_workflows: a client spraying invented ids
// before they run cannot push them under "other".
func (m *Metrics) ReserveWorkflows(ids []string) {
	if m == nil {
		return
	}
	u := m.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, id := range ids {
		if _, ok := u.seen[id]; !ok && id != "other" {
			u.seen[id] = struct{}{}
			u.reserved++
		}
	}
}
