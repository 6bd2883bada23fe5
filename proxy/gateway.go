// Package proxy is flowgate's request path: identify the flow, read the
// body once, pick the least-loaded healthy upstream, forward, tap the answer
// on its way out, and log and measure the result. gateway.go reads top to
// bottom as a request travels.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/ledger"
	"github.com/flowgate/flowgate/metering"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/quota"
	"go.uber.org/zap"
)

// Options are the gateway's collaborators, passed in rather than global.
type Options struct {
	Logger  *zap.Logger      // required
	Metrics *metrics.Metrics // nil records no metrics
	// Resolver answers dns upstreams; nil is net.DefaultResolver.
	Resolver Resolver
	// AccessLog receives one JSON line per request, one Write per line, so
	// it must be safe for concurrent use. nil turns access logging off.
	AccessLog io.Writer
	// IntN breaks balancer ties; nil means math/rand/v2.IntN. Tests inject
	// a deterministic one.
	IntN func(n int) int
	// Cache stores flow answers for the workflows whose cache policy is
	// on (config cache). nil turns the cache off.
	Cache *cache.Store
	// Quota admits flow runs against their workflow's limits. nil turns
	// quotas off.
	Quota *quota.Enforcer
	// Prices turns metering on: each Flowise run's tokens and cost are
	// measured from its answer. nil turns it off.
	Prices *metering.Prices
	// Ledger records each run's usage, cache hits and refusals; nil
	// records nothing.
	Ledger ledger.Ledger
}

// Gateway is the reverse proxy. Build it with New, start its health checks
// with Start, stop them with Close.
type Gateway struct {
	cfg     config.Config
	log     *zap.Logger
	copyLog *zap.Logger // "reverseproxy": an answer's body that failed part-way
	access  io.Writer   // nil when access logging is off
	metrics *metrics.Metrics

	// set is the upstreams in rotation: the static ones and what
	// discovery found. setMu serialises its writers.
	set      atomic.Pointer[upstreamSet]
	setMu    sync.Mutex
	static   []*Upstream
	discs    []*discovery
	resolver Resolver
	lb       *leastConn
	client   *upstreamClient

	// Read-only after New: the config digested for the hot path.
	trustedNets            []netip.Prefix
	decidesOn              map[string]bool // fields a client may not strip with Connection (outHeader)
	secHeaders             []secHeader
	staticExt              map[string]struct{}
	staticCC               []string // asset Cache-Control, shared by every response (len == cap); nil: off
	preserveHost           bool
	gzipOn                 bool
	gzipMin                int64
	gzipTypes              []string
	unhealthyStatus        [600]bool
	body                   bodyLimits
	bodyBudget             bodyBudget
	diskBudget             bodyBudget
	writeIdle              time.Duration
	passRequestFrom        bool
	requestFromWithSession bool
	headerTimeout          time.Duration
	streamHeaderTimeout    time.Duration
	idleTimeout            time.Duration
	retries                int

	states sync.Pool

	draining atomic.Bool
	healthMu sync.Mutex
	healthCh chan struct{}

	upstreamTLS *tls.Config

	quota  *quota.Enforcer // nil: no quotas
	ledger ledger.Ledger   // nil: no usage ledger
	meter  *meteringState  // nil: no metering

	cacheStore *cache.Store // nil: no cache
	cachePol   *cachePolicies
	flights    flights
	recBudget  bodyBudget // what recorders hold, all together

	ctx         context.Context // the health checks' lifetime, from Start
	stop        context.CancelFunc
	wg          sync.WaitGroup
	probeClient *http.Client
}

// New builds a gateway from a validated config.
func New(cfg config.Config, o Options) (*Gateway, error) {
	if o.Logger == nil {
		return nil, fmt.Errorf("proxy: Logger is required")
	}
	p := cfg.Proxy
	g := &Gateway{
		cfg:                    cfg,
		log:                    o.Logger,
		copyLog:                o.Logger.Named("reverseproxy"),
		metrics:                o.Metrics,
		trustedNets:            p.TrustedNets(),
		staticExt:              map[string]struct{}{},
		preserveHost:           p.PreserveHostOn(),
		gzipOn:                 p.Gzip.On(),
		gzipMin:                int64(p.Gzip.MinSize),
		gzipTypes:              p.Gzip.ContentTypes,
		writeIdle:              cfg.Server.WriteIdleTimeout.D(),
		passRequestFrom:        p.PassRequestFrom,
		requestFromWithSession: config.Bool(p.RequestFromWithSession, true),
		headerTimeout:          p.ResponseHeaderTimeout.D(),
		streamHeaderTimeout:    p.StreamResponseHeaderTimeout.D(),
		idleTimeout:            p.IdleTimeout.D(),
		retries:                p.Retries,
		healthCh:               make(chan struct{}),
	}
	g.quota, g.ledger = o.Quota, o.Ledger
	if o.Prices != nil {
		g.meter = newMeteringState(cfg.Metering, o.Prices)
	}
	if o.Cache != nil && cfg.Cache.AnyEnabled() {
		g.cacheStore = o.Cache
		g.cachePol = newCachePolicies(cfg.Cache)
		g.flights.m = map[cache.Key]*flight{}
		g.recBudget.limit = recordBudget(int64(cfg.Cache.MaxMemory))
	}
	// What the cache key, the caller's identity and the session check
	// read from the request.
	g.decidesOn = map[string]bool{"Content-Type": true, "Origin": true, "Cookie": true, "Authorization": true, "X-Api-Key": true}
	if g.cachePol != nil {
		for _, h := range g.cachePol.vary {
			g.decidesOn[h] = true
		}
	}
	g.bodyBudget.limit = int64(p.BodyMemoryBudget)
	g.diskBudget.limit = int64(p.BodyDiskBudget)
	g.body = bodyLimits{
		max:     int64(p.MaxBodyBytes),
		inMem:   int64(p.MaxBodyInMemory),
		timeout: cfg.Server.BodyReadTimeout.D(),
		budget:  &g.bodyBudget,
		disk:    &g.diskBudget,
	}
	if cfg.Log.AccessLogOn() {
		g.access = o.AccessLog
	}
	for k, v := range p.EffectiveSecurityHeaders() {
		g.secHeaders = append(g.secHeaders, secHeader{http.CanonicalHeaderKey(k), []string{v}})
	}
	if cc := p.StaticCacheControlValue(); cc != "" {
		g.staticCC = []string{cc}
	}
	for _, e := range p.StaticExtensions { // lower-cased, without dots, by Validate
		g.staticExt[e] = struct{}{}
	}
	for _, c := range cfg.Health.Passive.UnhealthyStatuses {
		if c >= 0 && c < len(g.unhealthyStatus) {
			g.unhealthyStatus[c] = true
		}
	}
	g.resolver = o.Resolver
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	for _, uc := range cfg.Upstreams {
		if uc.Discovered() {
			g.discs = append(g.discs, newDiscovery(uc))
			continue
		}
		u, err := url.Parse(uc.URL)
		if err != nil {
			return nil, fmt.Errorf("proxy: upstream %q: %w", uc.URL, err)
		}
		up := newUpstream(uc.Name, u) // Validate names unnamed upstreams by host
		up.ttfb = o.Metrics.UpstreamTTFB(up.Name)
		g.static = append(g.static, up)
	}
	if len(g.static)+len(g.discs) == 0 {
		return nil, fmt.Errorf("proxy: no upstreams")
	}
	if len(g.static) > maxUpstreams {
		return nil, fmt.Errorf("proxy: at most %d upstreams, got %d", maxUpstreams, len(g.static))
	}
	g.setMu.Lock()
	g.publishLocked()
	g.setMu.Unlock()
	// The first answers before serving, so a gateway starts with its
	// replicas; one that fails is retried every refresh.
	for _, d := range g.discs {
		g.resolve(context.Background(), d)
	}
	o.Metrics.UpstreamSource(func(yield func(name string, inflight, healthy float64)) {
		now := time.Now()
		for _, u := range g.set.Load().ups {
			h := 0.0
			if u.Healthy(now) {
				h = 1
			}
			yield(u.Name, float64(u.InFlight()), h)
		}
	})
	var err error
	if g.upstreamTLS, err = p.UpstreamTLS.ClientConfig(); err != nil {
		return nil, fmt.Errorf("proxy: proxy.upstream_tls: %w", err)
	}
	g.lb = newLeastConn(nil, o.IntN)
	g.client = newUpstreamClient(p.DialTimeout.D(), p.MaxIdleConnsPerUpstream, p.IdleConnTimeout.D(), g.upstreamTLS)
	g.states.New = func() any { return new(reqState) }
	return g, nil
}

// Start begins active health checks; they stop when Close is called.
func (g *Gateway) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	g.ctx, g.stop = ctx, cancel
	g.startMetering()
	if g.cfg.Health.Active.On() {
		g.activeChecks(ctx)
	}
	for _, d := range g.discs {
		g.wg.Add(1)
		go g.discover(ctx, d)
	}
}

// Close stops the health checks and drops idle upstream connections.
func (g *Gateway) Close() {
	if g.stop != nil {
		g.stop()
	}
	g.wg.Wait()
	g.stopMetering()
	if g.probeClient != nil {
		g.probeClient.CloseIdleConnections()
	}
	g.client.CloseIdleConnections()
}

// Upstreams returns the upstreams in rotation: the static ones in config
// order, then the discovered ones.
func (g *Gateway) Upstreams() []*Upstream { return g.set.Load().ups }

// Drain marks the gateway as shutting down: Ready turns false so load
// balancers stop sending, while in-flight requests carry on.
func (g *Gateway) Drain() { g.draining.Store(true) }

// Ready reports whether the gateway can serve: not draining and at least
// one upstream healthy. With active checks on, an upstream counts only once
// a probe has passed: upstreams start in rotation (a request may find them
// before the first probe), but readiness does not take that on trust.
func (g *Gateway) Ready() bool {
	if g.draining.Load() {
		return false
	}
	now := time.Now()
	probed := g.cfg.Health.Active.On()
	for _, u := range g.set.Load().ups {
		if u.Healthy(now) && (!probed || u.answered.Load()) {
			return true
		}
	}
	return false
}

// reqState is everything one request carries along the path. It is pooled;
// ServeHTTP starts from a zero value and finish zeroes it again.
type reqState struct {
	g    *Gateway
	rw   responseWriter
	ub   upstreamBody
	id   string
	info flow.Info

	peer        netip.Addr
	trustedPeer bool
	acceptGzip  bool
	isStatic    bool
	streamReq   bool
	body        *requestBody // nil, or &bodyBuf once a body was read
	bodyBuf     requestBody

	up       *Upstream
	tried    uint64
	attempts int
	failed   bool
	fail     failure

	start      time.Time // the request's arrival
	sentAt     time.Time // the current attempt's start
	clientCtx  context.Context
	attemptCtx context.Context
	timer      *attemptTimer

	// The outbound request, built on the first attempt (outHdr) and
	// pointed at each attempt's upstream.
	outHdr http.Header
	outReq http.Request
	outURL url.URL

	cache cacheState

	runStarted bool // a flow run was sent upstream (the seed's executions metric)

	quota       quota.Decision
	quotaOn     bool   // quota holds an admission to settle
	quotaCaller string // the policy's caller key
	meter       *metering.Meter

	status         int // set when the gateway answers itself
	upstreamStatus int
	upstreamCT     string // the upstream answer's Content-Type
	reqLen         int64  // request body bytes, for the log (the body is released early)
	sse            bool
	errCode        string
	cut            string
}

// rearm pushes the idle deadline out after the upstream sent bytes.
func (st *reqState) rearm() { st.timer.t.Reset(st.g.idleTimeout) }

// attemptTimer ends an attempt that waits too long: for the response
// headers first, then between body bytes. It is its own object, not part of
// the pooled reqState, because a timer may fire after its request is done.
type attemptTimer struct {
	t      *time.Timer
	cancel context.CancelCauseFunc
	inBody atomic.Bool // headers arrived: the timer now means idle

	// On an upgraded connection both directions report activity from
	// their own goroutines; a timestamp each is cheaper than a timer
	// reset each, and fire re-arms for what is left. 0: not watching.
	idle       atomic.Int64 // time.Duration; atomic: set while fire may run
	lastActive atomic.Int64 // unix nanoseconds
	// client is the hijacked client connection of an upgrade. Ending the
	// attempt closes only the upstream side, and a copy blocked writing
	// to a client that reads nothing would hold the handler forever.
	client atomic.Pointer[net.Conn]
}

func (a *attemptTimer) fire() {
	if idle := time.Duration(a.idle.Load()); idle > 0 {
		if left := idle - time.Duration(time.Now().UnixNano()-a.lastActive.Load()); left > 0 {
			a.t.Reset(left)
			return
		}
	}
	if a.inBody.Load() {
		a.cancel(errIdleTimeout)
	} else {
		a.cancel(errFirstByteTimeout)
	}
	if c := a.client.Load(); c != nil {
		(*c).Close()
	}
}

// watchActivity turns the timer into an idle timer fed by active.
func (a *attemptTimer) watchActivity(idle time.Duration) {
	a.t.Stop()
	a.idle.Store(int64(idle))
	a.active()
	a.t.Reset(idle)
}

func (a *attemptTimer) active() { a.lastActive.Store(time.Now().UnixNano()) }

// upgradedBody is an upgraded connection to the upstream; every byte in
// either direction passes here and keeps it from idling out.
type upgradedBody struct {
	rwc io.ReadWriteCloser
	at  *attemptTimer
}

func (u *upgradedBody) Read(p []byte) (int, error) {
	n, err := u.rwc.Read(p)
	if n > 0 {
		u.at.active()
	}
	return n, err
}

func (u *upgradedBody) Write(p []byte) (int, error) {
	n, err := u.rwc.Write(p)
	if n > 0 {
		u.at.active()
	}
	return n, err
}

func (u *upgradedBody) Close() error { return u.rwc.Close() }

// ServeHTTP is the request path.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := g.states.Get().(*reqState)
	// Field by field: a composite literal of the whole state is built on
	// the stack first, and this frame stays under every open stream.
	*st = reqState{}
	st.g, st.clientCtx, st.start = g, r.Context(), start
	st.rw.reset(w, r, g.writeIdle)
	defer g.finish(r, st, start)

	st.id = requestID(r)
	st.peer = clientAddr(r)
	st.trustedPeer = len(g.trustedNets) > 0 && g.trusted(st.peer)
	st.info = flow.Identify(r.URL.EscapedPath())
	st.isStatic = !st.info.IsFlow() && g.isStatic(r.URL.Path)
	st.acceptGzip = g.gzipOn && acceptsGzip(r.Header.Get("Accept-Encoding"))

	if r.URL.Opaque != "" {
		// "GET http:api/v1/..." has no path the gateway could route,
		// count or cache by, while the upstream would still get it.
		writeError(&st.rw, st, http.StatusBadRequest, "bad_request", "the request target has no path")
		return
	}
	if up := upgradeType(r.Header); up != "" && !printable(up) {
		// Refused before any quota, metric or upstream sees it.
		writeError(&st.rw, st, http.StatusBadRequest, "bad_request", "the request asks to switch to an invalid protocol")
		return
	}
	if r.Method == http.MethodConnect || r.Method == http.MethodTrace {
		// Neither has a use in front of a flow server, and Node destroys
		// the socket of a CONNECT it has no handler for: forwarded, it
		// would let any client count failures against a healthy upstream.
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		writeError(&st.rw, st, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed through the gateway")
		return
	}

	if r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != http.NoBody) {
		st.body = &st.bodyBuf
		if berr := readBody(w, r, st.body, &g.body); berr != nil {
			// Whatever of the body is still on the way must not be read
			// as the next request, nor waited for: the answer closes the
			// connection.
			w.Header().Set("Connection", "close")
			if berr.status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			writeError(&st.rw, st, berr.status, berr.code, berr.msg)
			return
		}
		st.reqLen = st.body.n
		if st.info.IsFlow() {
			st.streamReq = st.body.asksToStream()
		}
	}
	if (g.quota != nil || g.cacheStore != nil) && st.info.Runs && g.gates(w, r, st) {
		return
	}

	ups := g.set.Load().ups
	for {
		up, idx := g.lb.pickFrom(ups, time.Now(), st.tried)
		if up == nil {
			if st.failed {
				writeError(&st.rw, st, st.fail.status, st.fail.code, st.fail.message)
			} else {
				writeError(&st.rw, st, http.StatusServiceUnavailable, "no_healthy_upstream", "no healthy upstream is available")
			}
			return
		}
		st.tried |= 1 << uint(idx)
		if st.attempts > 0 {
			g.metrics.Retry() // counted once it is sent, not when hoped for
		} else if st.info.Runs && r.Method == http.MethodPost {
			st.runStarted = true
			g.metrics.RunStarted(flow.CanonicalID(st.info.WorkflowID))
		}
		st.attempts++
		st.up = up
		st.failed = false
		g.forward(r, st)
		if !st.failed {
			return
		}
		if st.fail.retry && st.attempts <= g.retries && r.Context().Err() == nil {
			continue
		}
		writeError(&st.rw, st, st.fail.status, st.fail.code, st.fail.message)
		return
	}
}

// onResponse runs once the upstream's headers arrived, before they are
// passed on.
func (g *Gateway) onResponse(res *http.Response, st *reqState) error {
	st.up.ttfb.Observe(time.Since(st.sentAt).Seconds())
	st.upstreamStatus = res.StatusCode
	h := res.Header
	// What the gateway adds goes straight into the client's header map,
	// to which respond copies h after this hook: adding to h first grew
	// two maps past their inline size per response.
	out := st.rw.Header()
	g.securityHeaders(h, out)
	delete(h, "X-Request-Id")
	out["X-Request-Id"] = []string{st.id}
	g.meterStart(res, st)
	if st.quotaOn && st.quota.HasLimit {
		// Ours, already in out, replace the upstream's own limiter's.
		delete(h, "Ratelimit-Limit")
		delete(h, "Ratelimit-Remaining")
		delete(h, "Ratelimit-Reset")
	}
	// The upstream has answered, so no attempt can need the request body
	// again: a long stream does not hold it.
	if st.body != nil {
		st.bodyBuf.release()
		st.body = nil
	}
	st.timer.inBody.Store(true)
	if res.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection (WebSocket) lives as long as both ends
		// want, but not idle: the idle timeout holds between bytes in
		// either direction. upgrade needs a read-write body.
		rwc, ok := res.Body.(io.ReadWriteCloser)
		if !ok {
			return errors.New("upstream's 101 answer has no connection to upgrade")
		}
		st.timer.watchActivity(g.idleTimeout)
		st.rw.noWriteDeadline()
		st.rw.hijacked = &st.timer.client
		res.Body = &upgradedBody{rwc: rwc, at: st.timer}
		return nil
	}
	st.timer.t.Reset(g.idleTimeout)
	if c := res.StatusCode; c >= 0 && c < len(g.unhealthyStatus) && g.unhealthyStatus[c] {
		g.passiveFailure(st.up, "status")
	}
	if st.isStatic && res.StatusCode >= 200 && res.StatusCode < 400 && !forbidsSharedCaching(h) {
		delete(h, "Cache-Control")
		out["Cache-Control"] = g.staticCC
	}
	st.sse = isEventStream(h)
	g.cacheResponse(res, out, st)
	if st.sse {
		// Chunked, whatever the upstream declared: a cut stream must be
		// able to end with our error frame, past any declared length.
		h.Del("Content-Length")
	}
	if st.acceptGzip && !st.sse && g.shouldCompress(res) {
		h.Set("Content-Encoding", "gzip")
		h.Del("Content-Length")
		h.Add("Vary", "Accept-Encoding")
		if et := h.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
			h.Set("Etag", "W/"+et) // the bytes differ now; strong validators would lie
		}
		st.rw.compress = true
	}
	st.ub.init(res.Body, st, st.sse && h.Get("Content-Encoding") == "",
		st.info.Kind == flow.Flowise && st.info.Runs)
	res.Body = &st.ub
	return nil
}

func (g *Gateway) shouldCompress(res *http.Response) bool {
	if res.Request.Method == http.MethodHead || res.StatusCode < 200 ||
		res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified {
		return false
	}
	if res.Header.Get("Content-Encoding") != "" || res.Header.Get("Content-Range") != "" {
		return false
	}
	if res.ContentLength >= 0 && res.ContentLength < g.gzipMin {
		return false
	}
	ct := res.Header.Get("Content-Type")
	for _, t := range g.gzipTypes {
		if strings.HasPrefix(ct, t) {
			return true
		}
	}
	return false
}

// finish runs last, also while an aborted response unwinds: log, measure,
// release.
func (g *Gateway) finish(r *http.Request, st *reqState, start time.Time) {
	p := recover()
	if p != nil {
		// ErrAbortHandler is how a cut response ends; anything else is a
		// bug, and must not be logged as the 200 that was under way.
		if p != http.ErrAbortHandler && st.status == 0 {
			st.status = http.StatusInternalServerError
			g.log.Error("panic serving request", zap.Any("panic", p), zap.String("request_id", st.id))
		}
		defer panic(p)
	}
	st.rw.finish(p == nil)
	if g.cacheStore != nil {
		g.cacheFinish(st)
	}
	end := time.Now()
	d := end.Sub(start)
	if st.status == 0 {
		st.status = st.rw.status
		if st.status == 0 {
			st.status = http.StatusOK
		}
		// The client left before the answer was complete: a failed write
		// to it aborts the copy without our body reader seeing an error.
		if st.cut == "client_closed" || (!st.ub.eof && r.Context().Err() != nil) {
			st.status = StatusClientClosed
		}
	}
	if st.rw.stalled() {
		// The client stopped reading for write_idle_timeout and was cut;
		// the upstream was released with it.
		st.cut = "client_write_timeout"
		st.status = StatusClientClosed
		g.metrics.ResponseCut(st.cut)
	}
	g.metrics.ObserveRequest(st.info.Route, r.Method, st.status, d)
	if st.runStarted {
		s := st.upstreamStatus
		wf := flow.CanonicalID(st.info.WorkflowID)
		g.metrics.RunEnded(wf, s >= 200 && s < 300 && st.cut == "" && st.ub.eof, d)
		if st.ub.flowiseSSE {
			g.metrics.StreamEnded(wf, st.ub.ttft, st.ub.parser.Events())
		}
	}
	if g.access != nil {
		g.logAccess(r, st, end, d)
	}
	if g.quota != nil {
		g.quotaFinish(st)
	}
	if g.meter != nil {
		g.meterFinish(r, st, end, d)
	}
	st.bodyBuf.release()
	*st = reqState{}
	g.states.Put(st)
}

// acceptsGzip reads Accept-Encoding loosely: a listed gzip without q=0.
func acceptsGzip(ae string) bool {
	i := strings.Index(ae, "gzip")
	if i < 0 {
		return false
	}
	rest := ae[i+4:]
	if j := strings.IndexByte(rest, ','); j >= 0 {
		rest = rest[:j]
	}
	rest = strings.ReplaceAll(rest, " ", "")
	return !strings.HasPrefix(rest, ";q=0") || strings.HasPrefix(rest, ";q=0.") && strings.Trim(rest[5:], "0") != ""
}

func joinPath(a, b string) string {
	return strings.TrimSuffix(a, "/") + "/" + strings.TrimPrefix(b, "/")
}
