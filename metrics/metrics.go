// Package metrics owns flowgate's Prometheus collectors. The registry is
// passed in, never global, so tests and embedders get isolated metrics.
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
	*Usage                 // quotas and metering
	seed             *seed // the seed dashboard's flowise_* metrics
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	upstreamFailures *prometheus.CounterVec
	retries          prometheus.Counter
	streamsCut       *prometheus.CounterVec
	cacheRequests    *prometheus.CounterVec
	cacheErrors      *prometheus.CounterVec
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
	m.Usage = NewUsage(reg, o.MaxWorkflows)
	m.seed = newSeed(reg)
	reg.MustRegister(m.requests, m.duration, m.upstreamFailures, m.retries, m.streamsCut, m.cacheRequests, m.cacheErrors)
	return m
}

// CacheResult counts one cache decision (hit, miss, bypass, refresh, coalesced).
func (m *Metrics) CacheResult(result string) { m.cacheRequests.WithLabelValues(result).Inc() }

// CacheError counts a failed cache operation at level (memory, redis).
func (m *Metrics) CacheError(level string) { m.cacheErrors.WithLabelValues(level).Inc() }

// UpstreamGauges registers per-upstream gauges read at scrape time, so the
// hot path pays nothing for them.
func (m *Metrics) UpstreamGauges(name string, inflight func() float64, healthy func() float64) {
	labels := prometheus.Labels{"upstream": name}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "upstream_in_flight",
			Help:        "Requests currently forwarded to the upstream, streams included.",
			ConstLabels: labels,
		}, inflight),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "upstream_healthy",
			Help:        "1 when the upstream may receive traffic, else 0.",
			ConstLabels: labels,
		}, healthy),
	)
}

// ObserveRequest records one answered request.
func (m *Metrics) ObserveRequest(route, method string, code int, d time.Duration) {
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
	m.upstreamFailures.WithLabelValues(upstream, reason).Inc()
}

// Retry counts a request re-sent to another upstream.
func (m *Metrics) Retry() { m.retries.Inc() }

// ResponseCut counts a response ended early.
func (m *Metrics) ResponseCut(reason string) { m.streamsCut.WithLabelValues(reason).Inc() }

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
