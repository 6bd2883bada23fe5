package quota

import (
	"sync"
)

// What each workflow's budgets have used, as its last admission saw it:
// the gauge behind "a workflow past 80 % of a budget". Admissions already
// carry the window counts (the Redis script returns them), so keeping
// them costs one map write per admission of a workflow with budgets.
// Per-caller budgets are not kept: their counts are per caller, and one
// caller's share says nothing of the workflow's.

// maxBudgetViews bounds the workflows kept under the default policy,
// which applies to any id a client sends. Workflows a policy names are
// always kept (their number is bounded by the policies), so a flood of
// invented ids cannot hide a real workflow's budget.
const maxBudgetViews = 1000

type budgetView struct {
	pol   *Policy
	nowUs int64
	used  []usage
	// full: 1+i when budget i refused the last request (what: the measure),
	// which counts as 100 % used whatever the counts said before.
	full int
	what string
}

type budgetViews struct {
	mu       sync.Mutex
	m        map[string]*budgetView
	unlisted int // entries of workflows under the default policy
}

func (v *budgetViews) observe(workflow string, p *Policy, o outcome) {
	if o.refused == 0 {
		return // the rate refused: nothing learnt of the budgets
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	bv := v.m[workflow]
	if bv == nil {
		if v.m == nil {
			v.m = map[string]*budgetView{}
		}
		if !p.listed {
			if v.unlisted >= maxBudgetViews {
				return
			}
			v.unlisted++
		}
		bv = &budgetView{}
		v.m[workflow] = bv
	}
	if bv.pol != p {
		*bv = budgetView{pol: p}
	}
	bv.nowUs = o.nowUs
	bv.full, bv.what = 0, ""
	if o.refused > 0 {
		bv.full, bv.what = o.refused, o.what
		return
	}
	bv.used = append(bv.used[:0], o.used...)
}

// BudgetUsage calls yield with the share of each budget that each
// workflow has used in its current window (0 once the window it was seen
// in has ended), by resource: executions, tokens, cost_usd.
func (e *Enforcer) BudgetUsage(yield func(workflow, window, resource string, ratio float64)) {
	nowUs := e.o.Now().UnixMicro()
	e.budgets.mu.Lock()
	defer e.budgets.mu.Unlock()
	for wf, bv := range e.budgets.m {
		for i, b := range bv.pol.budgets {
			current := b.windowIndex(bv.nowUs) == b.windowIndex(nowUs)
			var u usage
			if current && i < len(bv.used) {
				u = bv.used[i]
			}
			w := fmtWindow(b.window)
			for _, r := range [...]struct {
				what        string
				used, limit int64
			}{{"executions", u.executions, b.executions}, {"tokens", u.tokens, b.tokens}, {"cost_usd", u.costNano, b.costNano}} {
				if r.limit <= 0 {
					continue
				}
				ratio := float64(r.used) / float64(r.limit)
				if current && bv.full == i+1 && bv.what == r.what {
					ratio = max(ratio, 1)
				}
				yield(wf, w, r.what, ratio)
			}
		}
	}
}
