package proxy

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/ledger"
	"github.com/flowgate/flowgate/quota"
	"github.com/redis/go-redis/v9"
)

// Quotas on the request path. A request that runs a flow is admitted after
// its body is read and before the cache and the upstream: a refused one
// never reaches the flow server. Its answer, admitted or not, carries the
// RateLimit headers of the limit nearest to refusing. A cache hit is
// counted by the rate but gives its execution back.

// gates runs a flow request past the quota and the cache, in that order:
// a refused request is answered here, and so is a hit (which gives back
// the execution it was counted for). When both need Redis, the admission
// and the cache's lookup share one pipeline, one round trip. It reports
// whether the request was answered.
func (g *Gateway) gates(w http.ResponseWriter, r *http.Request, st *reqState) bool {
	var pol *quota.Policy
	var wf string
	if g.quota != nil && r.Method == http.MethodPost && (st.info.Route != flow.RouteMCP || mcpRuns(st)) {
		wf = flow.CanonicalID(st.info.WorkflowID)
		pol = g.quota.Policy(wf)
	}
	lookup := g.cacheStore != nil && g.cacheKey(r, st)
	var e *cache.Entry
	if lookup {
		e = g.cacheStore.MemoryGet(r.Context(), st.cache.key)
	}
	var remote func() *cache.Entry
	if pol != nil {
		var queue func(redis.Pipeliner)
		if lookup && e == nil {
			queue = func(p redis.Pipeliner) { remote = g.cacheStore.QueueGet(r.Context(), p, st.cache.key) }
		}
		admitted := g.quotaAdmit(r, st, pol, wf, queue)
		if remote != nil {
			// Read exactly once, admitted or not: it reports to the
			// cache's breaker.
			if re := remote(); e == nil {
				e = re
			}
		}
		if !admitted {
			return true
		}
	}
	if !lookup {
		return false
	}
	if e == nil && remote == nil {
		e, _ = g.cacheStore.RemoteGet(r.Context(), st.cache.key)
	}
	if g.cacheAnswer(w, r, st, e) {
		if st.quotaOn {
			g.quota.Refund(&st.quota) // a hit runs nothing
		}
		return true
	}
	return false
}

// quotaAdmit decides on a flow run under pol, with queue's commands in the
// admission's pipeline. It answers a refused request itself and returns
// false.
func (g *Gateway) quotaAdmit(r *http.Request, st *reqState, pol *quota.Policy, wf string, queue func(redis.Pipeliner)) bool {
	var caller string
	if pol.PerCaller() {
		caller = pol.CallerKey(r.Header, g.clientIP(r, st).String())
	}
	st.quota, _ = g.quota.AdmitWith(r.Context(), pol, wf, caller, queue)
	st.quotaOn, st.quotaCaller = true, caller
	d := &st.quota
	if d.Allowed {
		if d.HasLimit {
			rateLimitHeaders(st.rw.Header(), d)
		}
		return true
	}
	if r.Context().Err() != nil {
		abortClientGone(st)
	}
	g.metrics.QuotaRejection(wf, d.Code)
	// Refusals under the default policy are counted in the metric only:
	// any id a client invents would otherwise become a ledger row.
	if g.ledger != nil && pol.Listed() {
		g.ledger.Add(ledger.Record{Workflow: wf, Caller: caller, Time: time.Now(), Rejected: 1})
	}
	h := st.rw.Header()
	secs := retryAfterSeconds(d.RetryAfter)
	h["Retry-After"] = []string{strconv.FormatInt(secs, 10)}
	status := http.StatusTooManyRequests
	if d.Code == quota.CodeUnavailable {
		status = http.StatusServiceUnavailable
	} else if d.HasLimit {
		rateLimitHeaders(h, d)
	}
	writeQuotaError(&st.rw, st, status, d, st.info.WorkflowID)
	return false
}

// clientIP is the client as the quota sees it: behind trusted proxies,
// the address they forwarded; otherwise the peer.
func (g *Gateway) clientIP(r *http.Request, st *reqState) netip.Addr {
	if st.trustedPeer {
		// Every X-Forwarded-For line, as setForwarded reads them: a
		// proxy that appends a line of its own leaves the client's first.
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			return g.realClient(strings.Join(xff, ", "), st.peer)
		}
	}
	return st.peer
}

// mcpRuns reports whether an MCP request runs the flow: a JSON-RPC
// "tools/call", alone or in a batch. initialize, tools/list, ping and
// notifications only talk about the flow, and spend no budget.
func mcpRuns(st *reqState) bool {
	if st.body == nil {
		return false
	}
	b := st.body.inMemory()
	if b == nil {
		return true // too large to read here: count it, to be safe
	}
	type rpc struct {
		Method string `json:"method"`
	}
	var one rpc
	if json.Unmarshal(b, &one) == nil {
		return one.Method == "tools/call"
	}
	var batch []rpc
	if json.Unmarshal(b, &batch) == nil {
		for _, m := range batch {
			if m.Method == "tools/call" {
				return true
			}
		}
		return false
	}
	return true // not JSON-RPC: Flowise will refuse it; count it anyway
}

// quotaFinish gives back the execution of an admitted request that never
// ran: no answer came from any upstream and none was sent one (dial
// failures, no healthy upstream, a client that left while it waited), or
// the flow server refused it (4xx: a wrong API key, an unknown flow, its
// own limiter). A request sent upstream whose client left keeps its
// count: Flowise finishes a run whose client went away.
func (g *Gateway) quotaFinish(st *reqState) {
	if !st.quotaOn || !st.quota.Allowed || st.cache.result == cacheHit {
		return
	}
	s := st.upstreamStatus
	neverSent := s == 0 && (st.attempts == 0 || (st.failed && st.fail.retry))
	if neverSent || (s >= 400 && s < 500) {
		g.quota.Refund(&st.quota)
	}
}

// retryAfterSeconds rounds up: a client that waits the whole seconds
// given finds the limit open again.
func retryAfterSeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// rateLimitHeaders sets the RateLimit-* fields (draft-ietf-httpapi-
// ratelimit-headers, the form Flowise's own express-rate-limit sends),
// replacing any an upstream sent.
func rateLimitHeaders(h http.Header, d *quota.Decision) {
	h["Ratelimit-Limit"] = []string{strconv.FormatInt(d.Limit, 10)}
	h["Ratelimit-Remaining"] = []string{strconv.FormatInt(d.Remaining, 10)}
	h["Ratelimit-Reset"] = []string{strconv.FormatInt(retryAfterSeconds(d.Reset), 10)}
}

// writeQuotaError answers a refusal in Flowise's error shape plus what a
// client needs to back off: {"statusCode":429,"success":false,"code":...,
// "message":...,"workflowId":...,"limit":...,"window":...}.
func writeQuotaError(w http.ResponseWriter, st *reqState, status int, d *quota.Decision, workflow string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json; charset=utf-8"}
	h["X-Request-Id"] = []string{st.id}
	h["Cache-Control"] = []string{"no-store"}
	st.g.securityHeaders(h, h)
	body := make([]byte, 0, 256)
	body = append(body, `{"statusCode":`...)
	body = strconv.AppendInt(body, int64(status), 10)
	body = append(body, `,"success":false,"code":`...)
	body = strconv.AppendQuote(body, d.Code)
	body = append(body, `,"message":`...)
	body = strconv.AppendQuote(body, d.Message)
	body = append(body, `,"workflowId":`...)
	body = strconv.AppendQuote(body, workflow)
	if d.Code != quota.CodeUnavailable {
		body = append(body, `,"limit":`...)
		if d.LimitUSD != "" {
			body = append(body, d.LimitUSD...)
		} else {
			body = strconv.AppendInt(body, d.Limit, 10)
		}
		body = append(body, `,"limitType":`...)
		body = strconv.AppendQuote(body, d.What)
		body = append(body, `,"window":`...)
		body = strconv.AppendQuote(body, d.Window)
	}
	body = append(body, `,"retryAfter":`...)
	body = strconv.AppendInt(body, retryAfterSeconds(d.RetryAfter), 10)
	body = append(body, `,"requestId":`...)
	body = strconv.AppendQuote(body, st.id)
	body = append(body, "}\n"...)
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
	st.errCode = d.Code
}
