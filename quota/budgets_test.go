package quota

import (
	"strconv"
	"testing"
	"time"

	"github.com/flowgate/flowgate/config"
)

// budgetRatios collects BudgetUsage as "workflow window resource" -> ratio.
func budgetRatios(e *Enforcer) map[string]float64 {
	got := map[string]float64{}
	e.BudgetUsage(func(wf, window, resource string, ratio float64) {
		got[wf+" "+window+" "+resource] = ratio
	})
	return got
}

// The budget gauge follows admissions: the share used of each measure in
// the current window, 1 once a budget refused, on both limiters; per-caller
// budgets and workflows without budgets are not reported.
func TestBudgetUsage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *rig) {
		const wf, perCaller, free = "budget-flow", "caller-flow", "free-flow"
		cfg := limited(wf, config.QuotaPolicy{Budgets: []config.Budget{
			{Window: config.Duration(time.Hour), Executions: 4, Tokens: 1000},
		}})
		cfg.Workflows[perCaller] = config.QuotaPolicy{PerCaller: "ip", Budgets: []config.Budget{{Window: config.Duration(time.Hour), Executions: 1}}}
		cfg.Workflows[free] = config.QuotaPolicy{Rate: perSecond(100, 100)}
		e := r.enforcer(cfg)
		if got := budgetRatios(e); len(got) != 0 {
			t.Fatalf("before any admission: %v", got)
		}
		d := admit(t, e, wf, "")
		e.Settle(&d, 500, 0)
		flush(t, e)
		admit(t, e, wf, "")
		admit(t, e, perCaller, "10.0.0.1")
		admit(t, e, free, "")
		got := budgetRatios(e)
		// The second admission saw 2 of 4 executions and the first's 500 tokens.
		if len(got) != 2 || got[wf+" 1h executions"] != 0.5 || got[wf+" 1h tokens"] != 0.5 {
			t.Fatalf("after two runs: %v", got)
		}
		admit(t, e, wf, "")
		admit(t, e, wf, "")
		if d := admit(t, e, wf, ""); d.Allowed {
			t.Fatalf("fifth run admitted: %+v", d)
		}
		if got := budgetRatios(e); got[wf+" 1h executions"] != 1 {
			t.Fatalf("after the refusal: %v", got)
		}
		if r.shared() {
			return // Redis's clock cannot be moved
		}
		// The next window starts empty, before any admission in it.
		r.elapse(time.Hour)
		if got := budgetRatios(e); got[wf+" 1h executions"] != 0 || got[wf+" 1h tokens"] != 0 {
			t.Fatalf("in the next window: %v", got)
		}
	})
}

// Ids sprayed under a default budget fill their share of the view, never a
// named workflow's.
func TestBudgetUsageFloodKeepsNamedWorkflows(t *testing.T) {
	r := newRig(t, "memory")
	const named = "named-flow"
	cfg := limited(named, config.QuotaPolicy{Budgets: []config.Budget{execBudget(10, time.Hour)}})
	cfg.Default = config.QuotaPolicy{Budgets: []config.Budget{execBudget(5, time.Hour)}}
	e := r.enforcer(cfg)
	for i := range maxBudgetViews + 50 {
		admit(t, e, "invented-"+strconv.Itoa(i), "")
	}
	admit(t, e, named, "")
	got := budgetRatios(e)
	if got[named+" 1h executions"] != 0.1 {
		t.Fatalf("named workflow after a flood: %v", got[named+" 1h executions"])
	}
	if n := len(got); n != maxBudgetViews+1 {
		t.Fatalf("%d workflows reported, want %d", n, maxBudgetViews+1)
	}
}
