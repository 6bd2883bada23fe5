package proxy

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/internal/jsonx"
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

// meterJob is one finished request on its way to the worker: a run (with
// its Meter when it was a metered Flowise answer), a cache hit, or both
// none (an unmetered run: Langflow, a 5xx).
type meterJob struct {
	m         *metering.Meter // nil: nothing metered
	hit       bool
	workflow  string
	caller    string
	requestID string
	status    int
	end       time.Time
	dur       time.Duration
	decision  quota.Decision
	quotaOn   bool
}

var meterPool = sync.Pool{New: func() any { return new(metering.Meter) }}

// meterQueue bounds the runs waiting for the worker; past it the request's
// own goroutine meters its run (after its answer is complete).
const meterQueue = 4096

// maxMeteredEvent is what the stream parser keeps of one event while
// metering: Agentflow's agentFlowExecutedData repeats every node so far,
// with inputs and chat histories, and an event cut short cannot be read.
const maxMeteredEvent = 1 << 20

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

// meterStart gives a Flowise run's answer a Meter (modifyResponse). MCP
// answers are JSON-RPC, not predictions: they are counted, not metered.
func (g *Gateway) meterStart(res *http.Response, st *reqState) {
	if st.meter != nil {
		// One answer per request reaches here; should a later hook fail
		// and the request try again, the first Meter must not leak.
		st.meter.Release()
		meterPool.Put(st.meter)
		st.meter = nil
	}
	if g.meter == nil || st.info.Kind != flow.Flowise || !st.info.Runs || st.info.Route == flow.RouteMCP ||
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
// A run is a POST to a route that runs a flow which the flow server
// answered 2xx or 5xx (a 5xx flow may have run and spent); 4xx answers
// and requests that never reached it ran nothing.
func (g *Gateway) meterFinish(r *http.Request, st *reqState, end time.Time, d time.Duration) {
	hit := st.cache.result == cacheHit
	s := st.upstreamStatus
	ran := st.info.Runs && r.Method == http.MethodPost && !hit && (s >= 200 && s < 300 || s >= 500)
	if st.info.Runs && r.Method == http.MethodPost && !hit && s == 0 && st.attempts > 0 && !(st.failed && st.fail.retry) &&
		st.meter == nil && st.info.Kind == flow.Flowise && st.info.Route != flow.RouteMCP {
		// Sent, and no answer came back (the client left, the upstream
		// cut or timed out before its headers): Flowise runs on whatever
		// happens to the client, so the run counts, with the tokens the
		// request itself shows (estimated; its answer is unknown). A
		// client cannot escape token and cost budgets by hanging up.
		m := meterPool.Get().(*metering.Meter)
		m.Reset(g.meter.cfg, g.meter.budget, flow.CanonicalID(st.info.WorkflowID))
		if st.body != nil {
			m.Request(st.body.inMemory())
		}
		m.NoAnswer()
		st.meter = m
		ran = true
	}
	if !hit && !ran {
		if st.meter != nil {
			st.meter.Release()
			meterPool.Put(st.meter)
			st.meter = nil
		}
		return
	}
	if g.ledger == nil && !st.quotaOn && g.access == nil && st.meter == nil {
		return
	}
	j := meterJob{m: st.meter, hit: hit, workflow: flow.CanonicalID(st.info.WorkflowID), requestID: st.id,
		status: s, end: end, dur: d, decision: st.quota, quotaOn: st.quotaOn}
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

// meterRun prices one run and records it: the ledger, the quota's token
// and cost budgets, the metrics, and one "execution" line in the access
// log with what the run spent.
func (g *Gateway) meterRun(j meterJob) {
	rec := ledger.Record{Workflow: j.workflow, Caller: j.caller, Time: j.end}
	if j.hit {
		rec.CacheHits = 1
		if g.ledger != nil {
			g.ledger.Add(rec)
		}
		return
	}
	rec.Executions = 1
	rec.DurationMs = j.dur.Milliseconds()
	var u metering.Usage
	if j.m != nil {
		u = j.m.Finish()
		j.m.Release()
		meterPool.Put(j.m)
	}
	rec.InputTokens, rec.OutputTokens, rec.CostNano = u.Input(), u.Output(), u.CostNano()
	if u.Source == metering.SourceEstimated {
		rec.EstimatedExecutions = 1
	}
	for _, mu := range u.Models {
		// The label is bounded: a model the price table does not know
		// (the name comes from the answer) is "unpriced".
		model := mu.Model
		if !mu.Priced {
			model = "unpriced"
		}
		g.metrics.Tokens(j.workflow, model, "input", u.Source, mu.Input)
		g.metrics.Tokens(j.workflow, model, "output", u.Source, mu.Output)
		g.metrics.Cost(j.workflow, model, float64(mu.CostNano)/config.NanoPerUSD)
	}
	for _, n := range u.Nodes {
		g.metrics.NodeRun(n.Type, n.Status)
	}
	if j.quotaOn {
		g.quota.Settle(&j.decision, u.Input()+u.Output(), u.CostNano())
	}
	if g.ledger != nil {
		g.ledger.Add(rec)
	}
	if g.access != nil {
		g.logExecution(j, u)
	}
}

// logExecution writes the per-execution record: tokens in and out, model,
// cost, duration, status, and whether the tokens were reported by the
// flow server or estimated. It follows the request's access line (same
// request_id), written later because metering ends after the answer.
func (g *Gateway) logExecution(j meterJob, u metering.Usage) {
	bp := linePool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"level":"info","time":"`...)
	b = time.Now().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","logger":"access","msg":"execution","request_id":`...)
	b = jsonx.AppendString(b, j.requestID)
	b = append(b, `,"workflow_id":`...)
	b = jsonx.AppendString(b, j.workflow)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(j.status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendInt(b, j.dur.Milliseconds(), 10)
	b = append(b, `,"tokens_source":`...)
	b = jsonx.AppendString(b, u.Source)
	b = append(b, `,"input_tokens":`...)
	b = strconv.AppendInt(b, u.Input(), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, u.Output(), 10)
	b = append(b, `,"cost_usd":`...)
	b = config.USD(u.CostNano()).Append(b)
	b = append(b, `,"models":[`...)
	for i, mu := range u.Models {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"model":`...)
		b = jsonx.AppendString(b, mu.Model)
		b = append(b, `,"input_tokens":`...)
		b = strconv.AppendInt(b, mu.Input, 10)
		b = append(b, `,"output_tokens":`...)
		b = strconv.AppendInt(b, mu.Output, 10)
		b = append(b, `,"cost_usd":`...)
		b = config.USD(mu.CostNano).Append(b)
		b = append(b, `,"flowise_cost":`...)
		b = strconv.AppendBool(b, mu.FlowiseCost)
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	_, _ = g.access.Write(b)
	putLine(bp, b)
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
