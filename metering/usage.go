package metering

import (
	"math"
	"sync/atomic"
)

// Values of Usage.Source.
const (
	// SourceReported: Flowise reported the tokens (Agentflow V2's
	// usageMetadata, or an OpenAI-style usage object).
	SourceReported = "reported"
	// SourceEstimated: the tokens were counted with a tokenizer, or guessed
	// from byte counts (see Meter.Finish).
	SourceEstimated = "estimated"
)

// ModelUsage is what one model used in one execution.
type ModelUsage struct {
	// Model is the price table's canonical name when the model is priced,
	// else the name as the answer (or the Config) gave it, possibly "".
	Model         string
	Input, Output int64
	CostNano      int64 // nano-dollars (1e-9 USD)
	// FlowiseCost: some of the cost is Flowise's own total_cost, not
	// tokens × price.
	FlowiseCost bool
	// Priced: some cost is known (Flowise's or from the table). Unpriced
	// tokens add nothing to CostNano.
	Priced bool
}

// Usage is what one execution used.
type Usage struct {
	// Source is SourceReported, SourceEstimated, or "" when nothing was
	// metered (no answer bytes or events were seen).
	Source string
	// Models has one entry per model, in first-seen order; usually one.
	Models []ModelUsage
	// Nodes are the nodes of an Agentflow run, as its last
	// agentFlowExecutedData reports them (at most maxNodes).
	Nodes []NodeRun
}

// NodeRun is one node of an Agentflow run: its type (the node's data.name,
// e.g. llmAgentflow) and its status as Flowise reports it, lower-cased
// (finished, error, stopped, terminated, inprogress).
type NodeRun struct {
	Type, Status string
}

// maxNodes bounds the nodes kept of one run.
const maxNodes = 256

// Input is the input tokens of all models.
func (u Usage) Input() int64 {
	var n int64
	for _, m := range u.Models {
		n = addSat(n, m.Input)
	}
	return n
}

// Output is the output tokens of all models.
func (u Usage) Output() int64 {
	var n int64
	for _, m := range u.Models {
		n = addSat(n, m.Output)
	}
	return n
}

// CostNano is the known cost of all models in nano-dollars.
func (u Usage) CostNano() int64 {
	var n int64
	for _, m := range u.Models {
		n = addSat(n, m.CostNano)
	}
	return n
}

// addSat adds non-negative numbers, saturating at MaxInt64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Config is what Finish prices with. It is read, never written, by Meters,
// so one Config serves all of them until the configuration is reloaded
// (then build a new one rather than mutating it).
type Config struct {
	// Prices is the price table; nil means Bundled().
	Prices *Prices
	// DefaultModel is the model of a flow that Models does not name, used
	// when an answer does not say its model (classic chatflows never do).
	// "" leaves such usage unpriced.
	DefaultModel string
	// Models maps canonical (lower-case) flow ids to their model.
	Models map[string]string
}

// Model returns the model configured for a workflow: Models[workflow],
// else DefaultModel. A nil Config has none.
func (c *Config) Model(workflow string) string {
	if c == nil {
		return ""
	}
	if m, ok := c.Models[workflow]; ok {
		return m
	}
	return c.DefaultModel
}

func (c *Config) prices() *Prices {
	if c == nil || c.Prices == nil {
		return Bundled()
	}
	return c.Prices
}

// Budget bounds the bytes all Meters hold together (process-wide), so that
// many large answers at once cannot grow the process without bound: a
// Meter takes each growth of its buffers from the Budget first and, when
// refused, stops keeping bytes and estimates from counts instead. A nil
// *Budget is unbounded. Safe for concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a Budget of limit bytes; a limit of 0 or less refuses
// every growth (Meters then estimate everything from byte counts). Use a
// nil *Budget for no bound.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Used is the bytes currently held by Meters.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// take reserves n bytes, or reports false (reserving nothing) when that
// would pass the limit.
func (b *Budget) take(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	for {
		u := b.used.Load()
		if n > b.limit-u {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// give returns n bytes taken before.
func (b *Budget) give(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}
