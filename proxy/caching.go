package proxy

import (
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/flow"
)

// The response cache on the request path. After the body is read, a flow
// request of a workflow with caching on gets a key (cache.Derive) and is
// answered from the store when it can be; otherwise it goes upstream as
// usual while a recorder keeps a copy of the answer, which is stored once
// it is complete and may be stored. Identical requests that arrive while
// one is upstream wait for it (a flight) instead of running the flow again.

// X-Cache values, also the access log's "cache" field; lower-cased for the
// metric's result label.
const (
	cacheHit       = "HIT"
	cacheMiss      = "MISS"
	cacheBypass    = "BYPASS"
	cacheRefresh   = "REFRESH"
	cacheCoalesced = "COALESCED" // metric only: a HIT answered by a flight
)

// cachePolicies is the cache config digested for the hot path.
type cachePolicies struct {
	byWorkflow map[string]config.ResolvedCachePolicy
	def        config.ResolvedCachePolicy
	vary       []string // canonical header names
	maxEntry   int
}

func newCachePolicies(c config.Cache) *cachePolicies {
	p := &cachePolicies{
		byWorkflow: map[string]config.ResolvedCachePolicy{},
		def:        c.Policy(""),
		maxEntry:   int(c.MaxEntryBytes),
	}
	for id := range c.Workflows {
		p.byWorkflow[flow.CanonicalID(id)] = c.Policy(id)
	}
	for _, h := range c.VaryHeaders {
		p.vary = append(p.vary, textproto.CanonicalMIMEHeaderKey(h))
	}
	return p
}

func (p *cachePolicies) policy(workflow string) config.ResolvedCachePolicy {
	if pol, ok := p.byWorkflow[workflow]; ok {
		return pol
	}
	return p.def
}

// flights are the cache misses upstream right now, by key.
type flights struct {
	mu sync.Mutex
	m  map[cache.Key]*flight
}

// flight is one miss in progress. done is closed when its leader finished;
// entry is then the stored answer, or nil when there was none to share.
type flight struct {
	done  chan struct{}
	entry *cache.Entry
}

// join returns the flight for k and whether the caller leads it.
func (f *flights) join(k cache.Key) (*flight, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.m[k]; ok {
		return fl, false
	}
	fl := &flight{done: make(chan struct{})}
	f.m[k] = fl
	return fl, true
}

func (f *flights) land(k cache.Key, fl *flight, e *cache.Entry) {
	f.mu.Lock()
	delete(f.m, k)
	f.mu.Unlock()
	fl.entry = e
	close(fl.done)
}

// cacheState is what one request carries for the cache.
type cacheState struct {
	result  string // X-Cache; "" when the workflow's cache is off
	key     cache.Key
	version cache.Version // the store's invalidation state at the lookup
	vary    [8]string     // the key's vary values
	settled bool          // the recording was stored or dropped, the flight landed
	hdr     []string      // the upstream's replayed headers, name, value pairs
	ttl     time.Duration
	flight  *flight // set on the flight's leader
	rec     *recorder
}

// recorder keeps the answer as it passes, up to cache.max_entry_bytes, and
// all recorders together within a budget: distinct inputs are free to
// send, and recordings must not be a way to exhaust memory.
type recorder struct {
	max    int
	size   int
	budget *bodyBudget
	held   int64
	failed bool     // not storable: too large, compressed, cut, not 2xx
	body   []byte   // a JSON answer
	events [][]byte // a stream's event data, in order
}

// recordBudget bounds what all recorders hold at once; past it answers are
// passed on without being stored.
func recordBudget(maxMemory int64) int64 { return min(maxMemory, 64<<20) }

func (r *recorder) grow(n int) bool {
	if r.size += n; r.size > r.max {
		r.fail()
		return false
	}
	for int64(r.size) > r.held {
		if !r.budget.take(budgetStep) {
			r.fail()
			return false
		}
		r.held += budgetStep
	}
	return true
}

func (r *recorder) write(p []byte) {
	if !r.failed && r.grow(len(p)) {
		r.body = append(r.body, p...)
	}
}

func (r *recorder) event(data []byte, truncated bool) {
	if r.failed {
		return
	}
	if truncated {
		r.fail()
		return
	}
	if r.grow(len(data) + 24) { // + the slice header
		r.events = append(r.events, append([]byte(nil), data...))
	}
}

func (r *recorder) fail() {
	r.failed = true
	r.body, r.events = nil, nil
	r.release()
}

// release gives the recorder's budget back once its copy is stored or
// dropped.
func (r *recorder) release() {
	if r.held > 0 {
		r.budget.give(r.held)
		r.held = 0
	}
}

// cacheKey runs after the body is read: it decides whether the request may
// be answered from the cache, derives its key and reports whether to look
// it up. A request that bypasses the cache, or refreshes it, is prepared
// for the upstream here (false).
func (g *Gateway) cacheKey(r *http.Request, st *reqState) bool {
	// Flowise's flow ids are UUIDs its database matches whatever their
	// case: one flow, one policy, one set of entries.
	info := st.info
	info.WorkflowID = flow.CanonicalID(info.WorkflowID)
	pol := g.cachePol.policy(info.WorkflowID)
	if !pol.Enabled || r.Method != http.MethodPost {
		return false
	}
	cs := &st.cache
	cc := cacheControl(r.Header)
	if cc.noStore {
		g.cacheDecided(st, cacheBypass)
		return false
	}
	req := cache.Request{
		Info:        info,
		ContentType: r.Header.Get("Content-Type"),
		Stream:      st.streamReq,
		Stateless:   pol.Stateless,
	}
	if st.body != nil {
		req.Body = st.body.inMemory()
	}
	if st.info.Kind == flow.Langflow {
		req.Stream = langflowStream(r)
	}
	req.Vary = cs.vary[:0] // in the pooled state: a local array would escape
	for _, h := range g.cachePol.vary {
		req.Vary = append(req.Vary, strings.Join(r.Header[h], "\x00"))
	}
	// Origin always splits the key: the upstream's CORS headers, replayed
	// with a hit, may name the origin that asked. So does the query: it
	// may carry credentials (Langflow's ?x-api-key=) or change the run;
	// sorted, so parameter order does not matter.
	req.Vary = append(req.Vary, strings.Join(r.Header["Origin"], "\x00"))
	if r.URL.RawQuery != "" {
		req.Vary = append(req.Vary, r.URL.Query().Encode())
	} else {
		req.Vary = append(req.Vary, "")
	}
	key, bypass := cache.Derive(&req)
	if bypass != "" {
		g.cacheDecided(st, cacheBypass)
		return false
	}
	cs.key, cs.ttl = key, pol.TTL
	// Taken before going upstream: an invalidation while the answer is
	// fetched means it must not be stored.
	cs.version = g.cacheStore.Version()
	if cc.noCache {
		// The client asks for a fresh answer: fetch it and replace the
		// entry, without joining a flight that may be serving the old.
		g.cacheDecided(st, cacheRefresh)
		cs.rec = &recorder{max: g.cachePol.maxEntry, budget: &g.recBudget}
		return false
	}
	return true
}

// cacheAnswer answers a looked-up request: from e, the entry found (nil on
// a miss), or from an identical request in flight; or it prepares the
// miss for the upstream and returns false.
func (g *Gateway) cacheAnswer(w http.ResponseWriter, r *http.Request, st *reqState, e *cache.Entry) bool {
	cs := &st.cache
	key := cs.key
	if e != nil {
		g.cacheDecided(st, cacheHit)
		g.serveEntry(w, st, e)
		return true
	}
	fl, leader := g.flights.join(key)
	if leader {
		g.cacheDecided(st, cacheMiss)
		cs.flight = fl
		cs.rec = &recorder{max: g.cachePol.maxEntry, budget: &g.recBudget}
		return false
	}
	select {
	case <-fl.done:
	case <-r.Context().Done():
		abortClientGone(st)
	}
	if e := fl.entry; e != nil {
		cs.result = cacheHit
		g.metrics.CacheResult(metricResult(cacheCoalesced))
		g.serveEntry(w, st, e)
		return true
	}
	// The leader's answer could not be shared (an error, an answer that
	// may not be stored): every waiting request goes upstream at once, on
	// its own, rather than queueing behind a new leader; any of them may
	// still store its answer.
	g.cacheDecided(st, cacheMiss)
	cs.rec = &recorder{max: g.cachePol.maxEntry, budget: &g.recBudget}
	return false
}

// langflowStream reads Langflow's ?stream= as FastAPI parses a bool: the
// last value, 1/true/yes/on/t/y (any case) for true.
func langflowStream(r *http.Request) bool {
	vs := r.URL.Query()["stream"]
	if len(vs) == 0 {
		return false
	}
	switch strings.ToLower(vs[len(vs)-1]) {
	case "1", "true", "yes", "on", "t", "y":
		return true
	}
	return false
}

func (g *Gateway) cacheDecided(st *reqState, result string) {
	st.cache.result = result
	g.metrics.CacheResult(metricResult(result))
}

// metricResult is the metric label of an X-Cache value, without the
// allocation strings.ToLower makes per call.
func metricResult(r string) string {
	switch r {
	case cacheHit:
		return "hit"
	case cacheMiss:
		return "miss"
	case cacheBypass:
		return "bypass"
	case cacheRefresh:
		return "refresh"
	}
	return "coalesced"
}

// serveEntry answers from a stored entry, with fresh per-request ids.
func (g *Gateway) serveEntry(w http.ResponseWriter, st *reqState, e *cache.Entry) {
	h := st.rw.Header()
	g.securityHeaders(h, h)
	h["X-Request-Id"] = []string{st.id}
	h["X-Cache"] = hvCacheHit
	// Replicas' clocks differ: an entry from a faster one is not from
	// the future.
	h["Age"] = []string{strconv.FormatInt(max(0, int64(time.Since(e.Created())/time.Second)), 10)}
	h["Content-Type"] = []string{e.ContentType()}
	if eh := e.Headers(); len(eh) > 0 {
		for i := 0; i+1 < len(eh); i += 2 {
			// Entries come back from Redis: only the headers a hit may
			// replay are believed.
			if isReplayed(eh[i]) {
				h[eh[i]] = append(h[eh[i]], eh[i+1])
			}
		}
	}
	if e.Stream() {
		st.sse = true
		// As Flowise sends its streams: nothing between it and the
		// client may buffer or cache them.
		h["Cache-Control"] = []string{"no-cache"}
		h["X-Accel-Buffering"] = []string{"no"}
	} else if st.acceptGzip && int64(e.Len()) >= g.gzipMin && g.compressible(e.ContentType()) {
		h["Content-Encoding"] = []string{"gzip"}
		h["Vary"] = append(h["Vary"], "Accept-Encoding")
		st.rw.compress = true
	}
	if !st.rw.compress {
		h["Content-Length"] = []string{strconv.Itoa(e.Len())}
	}
	st.rw.WriteHeader(e.Status())
	if e.Len() > maxHitCopy {
		// Written from the stored bytes: a large hit to a slow client
		// holds no copy of its own.
		_, _ = e.WriteTo(&st.rw)
	} else {
		bp := hitBufPool.Get().(*[]byte)
		body := e.AppendBody((*bp)[:0])
		_, _ = st.rw.Write(body)
		*bp = body
		hitBufPool.Put(bp)
	}
	st.ub.eof = true // complete: not a cut in the log
}

// hvCacheHit is shared by every hit (len == cap: an Add copies).
var hvCacheHit = []string{cacheHit}

// maxHitCopy: hits up to this size are built in a pooled buffer and sent in
// one write; larger ones are written piece by piece from the entry.
const maxHitCopy = 64 << 10

var hitBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (g *Gateway) compressible(ct string) bool {
	for _, t := range g.gzipTypes {
		if strings.HasPrefix(ct, t) {
			return true
		}
	}
	return false
}

// cacheResponse runs in modifyResponse: it marks the answer and decides
// whether it may be recorded.
func (g *Gateway) cacheResponse(res *http.Response, out http.Header, st *reqState) {
	cs := &st.cache
	if cs.result == "" {
		return
	}
	out["X-Cache"] = []string{cs.result}
	rec := cs.rec
	if rec == nil {
		return
	}
	h := res.Header
	st.upstreamCT = h.Get("Content-Type")
	// Stored answers are: 2xx, storable by the upstream's word,
	// uncompressed (the recorder reads plain bytes), and streams only in
	// Flowise's framing, which is what a hit replays.
	// A JSON request is never answered with a stream by Flowise; storing
	// one under the JSON variant would serve it to every JSON caller. A
	// Set-Cookie belongs to one caller.
	if res.StatusCode < 200 || res.StatusCode > 299 || forbidsSharedCaching(h) ||
		h.Get("Content-Encoding") != "" || (st.sse && st.info.Kind != flow.Flowise) ||
		(st.sse && !cs.key.Stream) || len(h["Set-Cookie"]) > 0 {
		rec.fail()
		return
	}
	for _, name := range replayedHeaders {
		for _, v := range h[name] {
			cs.hdr = append(cs.hdr, name, v)
		}
	}
}

// replayedHeaders are the upstream response headers a hit carries: Flowise
// answers browsers (its embedded chat) under CORS, and a browser drops an
// answer without them.
var replayedHeaders = []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers", "Vary"}

func isReplayed(name string) bool {
	for _, h := range replayedHeaders {
		if h == name {
			return true
		}
	}
	return false
}

// cacheFinish runs when the request is done: it stores a complete answer
// and lands the flight, so waiting requests get it (or try themselves).
//
// It runs as soon as the upstream's answer has ended (upstreamBody), so
// the flight lands without waiting for the leader's client to read it all;
// and again when the request is done, where it only settles what is left.
func (g *Gateway) cacheFinish(st *reqState) {
	cs := &st.cache
	if cs.settled {
		return
	}
	cs.settled = true
	var e *cache.Entry
	if rec := cs.rec; rec != nil && !rec.failed && st.ub.eof && st.cut == "" && st.upstreamStatus != 0 {
		var err error
		now := time.Now()
		if st.sse {
			e, err = cache.NewStream(st.upstreamStatus, rec.events, now)
		} else {
			e, err = cache.NewJSON(st.upstreamStatus, st.upstreamCT, rec.body, now)
		}
		if err != nil {
			e = nil
		} else {
			e.SetHeaders(cs.hdr)
			g.cacheStore.SetFrom(cs.version, cs.key, e, cs.ttl)
		}
	}
	if cs.rec != nil {
		cs.rec.release()
	}
	if cs.flight != nil {
		g.flights.land(cs.key, cs.flight, e)
	}
}

// CacheStore is the store the gateway caches in (nil: caching off), for
// the admin API's invalidation.
func (g *Gateway) CacheStore() *cache.Store { return g.cacheStore }
