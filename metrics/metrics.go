// Package metrics owns flowgate's Prometheus collectors. The registry is
// passed in, never global, so tests and embedders get isolated metrics.
//
// A nil *Metrics is valid and records nothing (metrics.enabled: false):
// every method checks its receiver, so the request path needs no branch
// of its own.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "flowgate"

// Metrics holds the gateway's collectors.
type Metrics struct {
	usage            *Usage // quotas and metering
	seed             *seed  // the seed dashboard's flowise_* metrics
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	upstreamFailures *prometheus.CounterVec
	retries          prometheus.Counter
	streamsCut       *prometheus.CounterVec
	cacheRequests    *prometheus.CounterVec
	cacheErrors      *prometheus.CounterVec
	redisErrors      *prometheus.CounterVec
	discovered       *prometheus.GaugeVec
	dnsErrors        *prometheus.CounterVec
	ttfb             *prometheus.HistogramVec
	ttft             *prometheus.HistogramVec
	frames           prometheus.Histogram
	reg              prometheus.Registerer

	// series caches the request counter and histogram per label set:
	// WithLabelValues hashes its labels on every call, and the label sets
	// are few (closed route, method and code sets).
	series sync.Map // seriesKey -> *requestSeries
}

type seriesKey struct {
	route, method string
	code          int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
	seed     prometheus.Observer // flowise_http_request_duration_seconds
}

// Options adjust NewWith.
type Options struct {
	// MaxWorkflows bounds the workflow_id label (metrics.max_workflows);
	// 0 means DefaultMaxWorkflows.
	MaxWorkflows int
}

// New creates the collectors with the defaults and registers them on reg.
func New(reg prometheus.Registerer) *Metrics { return NewWith(reg, Options{}) }

// NewWith creates the collectors and registers them on reg.
func NewWith(reg prometheus.Registerer, o Options) *Metrics {
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "requests_total",
			Help:      "Requests answered, by flow route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "request_duration_seconds",
			Help:      "Time from request start to the last byte of the answer, by route template.",
			// LLM flows run for seconds to minutes; proxied UI assets take
			// microseconds. The buckets span both.
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"route"}),
		upstreamFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "upstream_failures_total",
			Help:      "Failed attempts to an upstream, by upstream and reason.",
		}, []string{"upstream", "reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "upstream_retries_total",
			Help:      "Requests re-sent to another upstream after a connection failure.",
		}),
		streamsCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "responses_cut_total",
			Help:      "Responses that ended before the upstream finished them, by reason.",
		}, []string{"reason"}),
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "cache_requests_total",
			Help:      "Flow requests of workflows with caching on, by result: hit, miss, bypass (not cacheable or no-store), refresh (no-cache), coalesced (answered by an identical request in flight).",
		}, []string{"result"}),
		cacheErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "cache_errors_total",
			Help:      "Cache operations that failed and were skipped, by level (memory, redis).",
		}, []string{"level"}),
	}
	m.redisErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "redis_errors_total",
		Help:      "Failed Redis calls, by component (cache, quota, ledger). Each component keeps working without Redis as its docs say; a steady rate means Redis is unreachable.",
	}, []string{"component"})
	m.ttfb = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "upstream_ttfb_seconds",
		Help:      "Time from sending a request to an upstream to its response headers, by upstream (every attempt that got an answer).",
		// A flow server answers a JSON run after the whole LLM call, a
		// stream at once; assets in microseconds.
		Buckets: []float64{.001, .005, .025, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"upstream"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "stream_ttft_seconds",
		Help:      "Time from a streamed flow request's arrival to its first token frame, by workflow (Flowise SSE answers that sent a token).",
		Buckets:   []float64{.05, .1, .25, .5, 1, 2, 4, 8, 15, 30, 60},
	}, []string{"workflow_id"})
	m.frames = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "stream_frames",
		Help:      "SSE frames (events) per streamed flow answer.",
		Buckets:   prometheus.ExponentialBuckets(1, 4, 9), // 1 .. 65,536
	})
	m.discovered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "upstream_discovered",
		Help:      "Replicas the last good answer of a dns upstream gave, by upstream name.",
	}, []string{"dns"})
	m.dnsErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "upstream_dns_errors_total",
		Help:      "Failed or empty lookups of a dns upstream (the last good set is kept), by upstream name.",
	}, []string{"dns"})
	m.usage = NewUsage(reg, o.MaxWorkflows)
	m.seed = newSeed(reg)
	reg.MustRegister(m.requests, m.duration, m.upstreamFailures, m.retries, m.streamsCut, m.cacheRequests, m.cacheErrors,
		m.redisErrors, m.discovered, m.dnsErrors, m.ttfb, m.ttft, m.frames)
	return m
}

// CacheResult counts one cache decision (hit, miss, bypass, refresh, coalesced).
func (m *Metrics) CacheResult(result string) {
	if m != nil {
		m.cacheRequests.WithLabelValues(result).Inc()
	}
}

// CacheError counts a failed cache operation at level (memory, redis).
func (m *Metrics) CacheError(level string) {
	if m == nil {
		return
	}
	m.cacheErrors.WithLabelValues(level).Inc()
	if level == "redis" {
		m.RedisError("cache")
	}
}

// RedisError counts a failed Redis call of component (cache, quota,
// ledger, certstore).
func (m *Metrics) RedisError(component string) {
	if m != nil {
		m.redisErrors.WithLabelValues(component).Inc()
	}
}

// UpstreamTTFB is the time-to-first-byte histogram of one upstream, for
// the upstream to keep: looked up once, observed per attempt.
func (m *Metrics) UpstreamTTFB(name string) prometheus.Observer {
	if m == nil {
		return noop{}
	}
	return m.ttfb.WithLabelValues(name)
}

type noop struct{}

func (noop) Observe(float64) {}

// StreamEnded records a streamed flow answer: ttft is the time to its first
// token frame (0 when none came), frames the events it carried.
func (m *Metrics) StreamEnded(workflow string, ttft time.Duration, frames int) {
	if m == nil {
		return
	}
	m.frames.Observe(float64(frames))
	if ttft > 0 {
		m.runs(workflow).ttft.Observe(ttft.Seconds())
	}
}

var (
	inflightDesc = prometheus.NewDesc("flowgate_upstream_in_flight",
		"Requests currently forwarded to the upstream, streams included.", []string{"upstream"}, nil)
	healthyDesc = prometheus.NewDesc("flowgate_upstream_healthy",
		"1 when the upstream may receive traffic, else 0.", []string{"upstream"}, nil)
)

// UpstreamSource reports each upstream in rotation: its name, requests in
// flight, and 1 when healthy.
type UpstreamSource func(yield func(name string, inflight, healthy float64))

type upstreamCollector UpstreamSource

func (upstreamCollector) Describe(ch chan<- *prometheus.Desc) { ch <- inflightDesc; ch <- healthyDesc }

func (c upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	c(func(name string, inflight, healthy float64) {
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, inflight, name)
		ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, healthy, name)
	})
}

// UpstreamSource exports the upstreams' gauges, read at scrape time: the
// hot path pays nothing for them, and the set may change (discovery).
func (m *Metrics) UpstreamSource(src UpstreamSource) {
	if m != nil {
		m.reg.MustRegister(upstreamCollector(src))
	}
}

// Discovered sets how many replicas a dns upstream's last good answer gave.
func (m *Metrics) Discovered(name string, n int) {
	if m != nil {
		m.discovered.WithLabelValues(name).Set(float64(n))
	}
}

// DNSError counts a failed or empty lookup of a dns upstream.
func (m *Metrics) DNSError(name string) {
	if m != nil {
		m.dnsErrors.WithLabelValues(name).Inc()
	}
}

// ForgetUpstream drops the series of an upstream that discovery removed,
// so replicas that come and go (pod IPs) do not pile up.
func (m *Metrics) ForgetUpstream(name string) {
	if m == nil {
		return
	}
	m.ttfb.DeleteLabelValues(name)
	m.upstreamFailures.DeletePartialMatch(prometheus.Labels{"upstream": name})
}

// ObserveRequest records one answered request.
func (m *Metrics) ObserveRequest(route, method string, code int, d time.Duration) {
	if m == nil {
		return
	}
	k := seriesKey{route, normMethod(method), code}
	v, ok := m.series.Load(k)
	if !ok {
		v, _ = m.series.LoadOrStore(k, &requestSeries{
			count:    m.requests.WithLabelValues(k.route, k.method, codeString(code)),
			duration: m.duration.WithLabelValues(route),
			seed:     m.seedRequest(route, k.method, code),
		})
	}
	s := v.(*requestSeries)
	s.count.Inc()
	sec := d.Seconds()
	s.duration.Observe(sec)
	s.seed.Observe(sec)
}

// UpstreamFailure counts a failed attempt.
func (m *Metrics) UpstreamFailure(upstream, reason string) {
	if m == nil {
		return
	}
	m.upstreamFailures.WithLabelValues(upstream, reason).Inc()
}

// Retry counts a request re-sent to another upstream.
func (m *Metrics) Retry() {
	if m != nil {
		m.retries.Inc()
	}
}

// ResponseCut counts a response ended early.
func (m *Metrics) ResponseCut(reason string) {
	if m != nil {
		m.streamsCut.WithLabelValues(reason).Inc()
	}
}

// QuotaRejection counts one refused request.
func (m *Metrics) QuotaRejection(workflow, reason string) {
	if m != nil {
		m.usage.QuotaRejection(workflow, reason)
	}
}

// Tokens counts tokens of one execution.
func (m *Metrics) Tokens(workflow, model, direction, source string, n int64) {
	if m != nil {
		m.usage.Tokens(workflow, model, direction, source, n)
	}
}

// Cost counts an execution's cost in dollars.
func (m *Metrics) Cost(workflow, model string, usd float64) {
	if m != nil {
		m.usage.Cost(workflow, model, usd)
	}
}

// QuotaRedisError counts a failed quota call to Redis, by operation.
func (m *Metrics) QuotaRedisError(op string) {
	if m != nil {
		m.usage.QuotaRedisError(op)
		m.RedisError("quota")
	}
}

// LedgerError counts a failed ledger write; redis says the ledger is
// Redis's.
func (m *Metrics) LedgerError(redis bool) {
	if m == nil {
		return
	}
	m.usage.LedgerError()
	if redis {
		m.RedisError("ledger")
	}
}

// normMethod keeps the method label's values a closed set whatever clients send.
func normMethod(m string) string {
	switch m {
	case "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS":
		return m
	}
	return "OTHER"
}

var codes = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return
}()

func codeString(c int) string {
	if c >= 0 && c < len(codes) {
		return codes[c]
	}
	return strconv.Itoa(c)
}
