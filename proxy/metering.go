package proxy

import (
	"net/http"
	"sync"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/ledger"
	"github.com/flowgate/flowgate/metering"
	"github.com/flowgate/flowgate/quota"
	"go.uber.org/zap"
)

// Metering on the request path. A Flowise flow run answered 2xx gets a
// Meter when its headers arrive; the answer's frames (or JSON bytes) are
// handed to it as they pass, never held back. When the request is done the
// Meter goes to a worker, which prices the run (the tokenizer, for classic
// chatflows, costs milliseconds), adds it to the ledger, settles the
// quota's token and cost budgets and counts the metrics.

// meterJob is one finished run on its way to the worker.
type meterJob struct {
	m        *metering.Meter // nil: a record without metering (a hit, a refusal)
	workflow string
	caller   string
	end      time.Time
	dur      time.Duration
	decision quota.Decision
	quotaOn  bool
}

var meterPool = sync.Pool{New: func() any { return new(metering.Meter) }}

// meterQueue bounds the runs waiting for the worker; past it the request's
// own goroutine meters its run (after its answer is complete).
const meterQueue = 4096

// maxMeteredEvent is what the stream parser keeps of one event while
// metering: Agentflow's agentFlowExecutedData repeats every node so far,
// with inputs and chat histories, and an event cut short cannot be read.
const maxMeteredEvent = 4 << 20

// metering is the gateway's metering state.
type meteringState struct {
	cfg    *metering.Config
	budget *metering.Budget
	jobs   chan meterJob
	wg     sync.WaitGroup
	// mu guards sends against the close at shutdown: a request that
	// outlives the drain meters inline instead of sending on a closed
	// channel.
	mu     sync.RWMutex
	closed bool
}

func newMeteringState(c config.Metering, prices *metering.Prices) *meteringState {
	mc := &metering.Config{Prices: prices, DefaultModel: c.DefaultModel, Models: map[string]string{}}
	for id, m := range c.Models {
		mc.Models[flow.CanonicalID(id)] = m
	}
	return &meteringState{
		cfg:    mc,
		budget: metering.NewBudget(64 << 20),
		jobs:   make(chan meterJob, meterQueue),
	}
}

// meterStart gives a Flowise run's answer a Meter (modifyResponse).
func (g *Gateway) meterStart(res *http.Response, st *reqState) {
	if g.meter == nil || st.info.Kind != flow.Flowise || !st.info.Runs ||
		res.Request.Method != http.MethodPost || res.StatusCode < 200 || res.StatusCode > 299 {
		return
	}
	m := meterPool.Get().(*metering.Meter)
	m.Reset(g.meter.cfg, g.meter.budget, flow.CanonicalID(st.info.WorkflowID))
	if st.body != nil {
		m.Request(st.body.inMemory())
	}
	st.meter = m
}

// meterFinish hands the request's run (or its cache hit) to the worker.
func (g *Gateway) meterFinish(st *reqState, end time.Time, d time.Duration) {
	hit := st.cache.result == cacheHit
	if st.meter == nil && !hit {
		return
	}
	if g.ledger == nil && !st.quotaOn {
		if st.meter != nil {
			st.meter.Release()
			meterPool.Put(st.meter)
			st.meter = nil
		}
		return
	}
	j := meterJob{m: st.meter, workflow: flow.CanonicalID(st.info.WorkflowID), end: end, dur: d,
		decision: st.quota, quotaOn: st.quotaOn}
	if st.quotaOn {
		j.caller = st.quotaCaller
	}
	st.meter = nil
	ms := g.meter
	ms.mu.RLock()
	if !ms.closed {
		select {
		case ms.jobs <- j:
			ms.mu.RUnlock()
			return
		default:
		}
	}
	ms.mu.RUnlock()
	g.meterRun(j)
}

func (g *Gateway) meterWorker() {
	defer g.meter.wg.Done()
	for j := range g.meter.jobs {
		g.meterRun(j)
	}
}

// meterRun prices one run and records it.
func (g *Gateway) meterRun(j meterJob) {
	rec := ledger.Record{Workflow: j.workflow, Caller: j.caller, Time: j.end}
	if j.m == nil {
		rec.CacheHits = 1
	} else {
		u := j.m.Finish()
		j.m.Release()
		meterPool.Put(j.m)
		rec.Executions = 1
		rec.DurationMs = j.dur.Milliseconds()
		rec.InputTokens, rec.OutputTokens, rec.CostNano = u.Input(), u.Output(), u.CostNano()
		if u.Source == metering.SourceEstimated {
			rec.EstimatedExecutions = 1
		}
		for _, mu := range u.Models {
			g.metrics.Tokens(j.workflow, mu.Model, "input", u.Source, mu.Input)
			g.metrics.Tokens(j.workflow, mu.Model, "output", u.Source, mu.Output)
			g.metrics.Cost(j.workflow, mu.Model, float64(mu.CostNano)/config.NanoPerUSD)
		}
		if j.quotaOn {
			g.quota.Settle(&j.decision, u.Input()+u.Output(), u.CostNano())
		}
	}
	if g.ledger != nil {
		g.ledger.Add(rec)
	}
}

// startMetering runs the worker; Close drains it.
func (g *Gateway) startMetering() {
	if g.meter == nil {
		return
	}
	g.meter.wg.Add(1)
	go g.meterWorker()
}

func (g *Gateway) stopMetering() {
	if g.meter == nil {
		return
	}
	ms := g.meter
	ms.mu.Lock()
	if ms.closed {
		ms.mu.Unlock()
		return
	}
	ms.closed = true
	close(ms.jobs)
	ms.mu.Unlock()
	ms.wg.Wait()
	g.log.Debug("metering stopped", zap.Int64("budget_in_use", ms.budget.Used()))
}
