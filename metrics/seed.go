package metrics

import (
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The seed's metrics: the names, labels and buckets its metrics.js
// defined, so the Grafana dashboard built on them reads flowgate unchanged.
// They sit beside flowgate's own (flowgate_*), which follow Prometheus's
// naming; both come from the same observations.
type seed struct {
	httpDuration *prometheus.HistogramVec
	executions   *prometheus.CounterVec
	execDuration *prometheus.HistogramVec
	nodes        *prometheus.CounterVec
	runs         sync.Map // workflow id -> *runSeries, bounded by max_workflows
	activeConns  atomic.Int64

	typesMu sync.Mutex
	types   map[string]struct{} // node types seen, bounded like workflows

	cpuMu   sync.Mutex
	cpuLast time.Duration // process CPU time at the last scrape
	cpuWall time.Time
}

func newSeed(reg prometheus.Registerer) *seed {
	s := &seed{
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flowise_http_request_duration_seconds",
			Help:    "Duration of HTTP requests in seconds (the seed's metric; route is a template).",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10},
		}, []string{"method", "route", "status_code"}),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowise_workflow_executions_total",
			Help: "Flow runs by workflow and status: started (sent to the flow server), completed (a whole 2xx answer), failed (any other end).",
		}, []string{"workflow_id", "status"}),
		execDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flowise_workflow_execution_duration_seconds",
			Help:    "Duration of flow runs in seconds, by workflow.",
			Buckets: []float64{1, 5, 10, 30, 60, 120, 300},
		}, []string{"workflow_id"}),
		nodes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowise_node_executions_total",
			Help: "Agentflow nodes run, by node type (data.name) and status: success (Flowise's FINISHED), failure (ERROR, TERMINATED), stopped (waiting on human input), other.",
		}, []string{"node_type", "status"}),
		cpuWall: time.Now(),
		types:   map[string]struct{}{},
	}
	s.cpuLast = processCPU()
	reg.MustRegister(s.httpDuration, s.executions, s.execDuration, s.nodes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowise_active_connections",
			Help: "Client connections open on the proxy listeners.",
		}, func() float64 { return float64(s.activeConns.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowise_memory_usage_bytes",
			Help: "Resident memory of the gateway process in bytes.",
		}, residentBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flowise_cpu_usage_percentage",
			Help: "CPU the gateway process used since the previous scrape, in percent of one core (user + system time over wall time).",
		}, s.cpuPercent),
	)
	return s
}

// seedRequest is the seed histogram's series of one label set.
func (m *Metrics) seedRequest(route, method string, code int) prometheus.Observer {
	return m.seed.httpDuration.WithLabelValues(method, route, strconv.Itoa(code))
}

// runSeries are one workflow's run metrics, looked up once: every run
// touches them twice, and WithLabelValues hashes its labels each call.
type runSeries struct {
	started, completed, failed prometheus.Counter
	duration                   prometheus.Observer
	ttft                       prometheus.Observer // flowgate_stream_ttft_seconds
}

// runs returns workflow's series. Known workflows come from a lock-free
// map; ids past max_workflows share the "other" series and are not
// stored, so invented ids cannot grow the map.
func (m *Metrics) runs(workflow string) *runSeries {
	if v, ok := m.seed.runs.Load(workflow); ok {
		return v.(*runSeries)
	}
	wf := m.usage.workflow(workflow)
	s := &runSeries{
		started:   m.seed.executions.WithLabelValues(wf, "started"),
		completed: m.seed.executions.WithLabelValues(wf, "completed"),
		failed:    m.seed.executions.WithLabelValues(wf, "failed"),
		duration:  m.seed.execDuration.WithLabelValues(wf),
		ttft:      m.ttft.WithLabelValues(wf),
	}
	if wf != "other" || workflow == "other" {
		v, _ := m.seed.runs.LoadOrStore(workflow, s)
		s = v.(*runSeries)
	}
	return s
}

// RunStarted counts a flow run sent to the flow server.
func (m *Metrics) RunStarted(workflow string) {
	if m != nil {
		m.runs(workflow).started.Inc()
	}
}

// RunEnded counts a run's end, completed or failed, and its duration.
func (m *Metrics) RunEnded(workflow string, completed bool, d time.Duration) {
	if m == nil {
		return
	}
	s := m.runs(workflow)
	if completed {
		s.completed.Inc()
	} else {
		s.failed.Inc()
	}
	s.duration.Observe(d.Seconds())
}

// maxNodeTypes bounds the node_type label; the names come from answers.
const maxNodeTypes = 200

// NodeRun counts one Agentflow node of a run. status is Flowise's,
// lower-cased; the label takes the seed's values, success and failure,
// so its dashboard's success-rate panel reads it, plus stopped (a node
// waiting on human input) and other.
func (m *Metrics) NodeRun(nodeType, status string) {
	if m == nil {
		return
	}
	s := m.seed
	s.typesMu.Lock()
	if _, ok := s.types[nodeType]; !ok {
		if len(s.types) >= maxNodeTypes {
			nodeType = "other"
		} else {
			s.types[nodeType] = struct{}{}
		}
	}
	s.typesMu.Unlock()
	switch status {
	case "finished":
		status = "success"
	case "error", "terminated":
		status = "failure"
	case "stopped":
	default:
		status = "other"
	}
	s.nodes.WithLabelValues(nodeType, status).Inc()
}

// ConnState keeps flowise_active_connections: pass it as the proxy
// listeners' http.Server.ConnState.
func (m *Metrics) ConnState(_ net.Conn, st http.ConnState) {
	if m == nil {
		return
	}
	switch st {
	case http.StateNew:
		m.seed.activeConns.Add(1)
	case http.StateHijacked, http.StateClosed:
		m.seed.activeConns.Add(-1)
	}
}

// cpuPercent is the process's CPU time over wall time since the last
// scrape (the seed computed it from a variable it never set).
func (s *seed) cpuPercent() float64 {
	s.cpuMu.Lock()
	defer s.cpuMu.Unlock()
	now, cpu := time.Now(), processCPU()
	wall := now.Sub(s.cpuWall)
	used := cpu - s.cpuLast
	s.cpuWall, s.cpuLast = now, cpu
	if wall <= 0 {
		return 0
	}
	return 100 * used.Seconds() / wall.Seconds()
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// residentBytes is the process's resident set (Linux /proc), or the Go
// runtime's own total where /proc is not there.
func residentBytes() float64 {
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				return float64(pages * int64(os.Getpagesize()))
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.Sys)
}
