// Package admin serves flowgate's admin API. Every call needs the admin
// token as "Authorization: Bearer TOKEN"; with no token configured the API
// refuses everything rather than answering openly.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/ledger"
	"github.com/flowgate/flowgate/proxy"
	"github.com/flowgate/flowgate/quota"
)

// Deps are what the admin API manages. Quota and Ledger may be nil: their
// endpoints then answer 409.
type Deps struct {
	Gateway *proxy.Gateway // required
	Quota   *quota.Enforcer
	Ledger  ledger.Ledger
	// Now is the clock of usage ranges; nil: time.Now.
	Now func() time.Time
}

// Handler returns the admin API for gateway g, guarded by token.
func Handler(token string, g *proxy.Gateway) http.Handler {
	return HandlerWith(token, Deps{Gateway: g})
}

// HandlerWith returns the admin API for d, guarded by token.
func HandlerWith(token string, d Deps) http.Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	g := d.Gateway
	mux := http.NewServeMux()
	quotaRoutes(mux, d)
	usageRoutes(mux, d)
	mux.HandleFunc("GET /admin/v1/upstreams", func(w http.ResponseWriter, r *http.Request) {
		type upstream struct {
			Name     string `json:"name"`
			URL      string `json:"url"`
			Healthy  bool   `json:"healthy"`
			InFlight int64  `json:"inFlight"`
		}
		now := time.Now()
		out := []upstream{}
		for _, u := range g.Upstreams() {
			out = append(out, upstream{u.Name, u.URL.Redacted(), u.Healthy(now), u.InFlight()})
		}
		writeJSON(w, http.StatusOK, map[string]any{"upstreams": out})
	})
	// Cache invalidation reaches every replica through Redis; it answers
	// how many entries were removed where that is known.
	invalidate := func(w http.ResponseWriter, r *http.Request, workflow string) {
		store := g.CacheStore()
		if store == nil {
			writeErr(w, http.StatusConflict, "cache_disabled", "the cache is not enabled for any workflow (config cache)")
			return
		}
		var n int
		var err error
		if workflow == "" {
			n, err = store.InvalidateAll(r.Context())
		} else {
			n, err = store.Invalidate(r.Context(), flow.CanonicalID(workflow))
		}
		if err != nil {
			// This replica forgot its entries; Redis, and so the other
			// replicas, may not have.
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"statusCode": http.StatusServiceUnavailable, "success": false,
				"code": "cache_unavailable", "message": "the shared cache could not be reached: " + err.Error(), "removed": n})
			return
		}
		out := map[string]any{"success": true, "removed": n}
		if workflow != "" {
			out["workflow"] = workflow
		}
		writeJSON(w, http.StatusOK, out)
	}
	mux.HandleFunc("DELETE /admin/v1/cache", func(w http.ResponseWriter, r *http.Request) { invalidate(w, r, "") })
	mux.HandleFunc("DELETE /admin/v1/cache/{workflow}", func(w http.ResponseWriter, r *http.Request) {
		invalidate(w, r, r.PathValue("workflow"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "not_found", "no such admin endpoint")
	})
	return auth(token, mux)
}

func auth(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			writeErr(w, http.StatusUnauthorized, "admin_token_unset",
				"the admin API is disabled until a token is set (FLOWGATE_ADMIN_TOKEN or admin.token_file)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="flowgate-admin"`)
			writeErr(w, http.StatusUnauthorized, "unauthorized", "missing or wrong admin token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"statusCode": status, "success": false, "code": code, "message": msg})
}

// writeFieldErr answers 400 for bad input, naming the field at fault
// ("" when the body as a whole is).
func writeFieldErr(w http.ResponseWriter, field, msg string) {
	out := map[string]any{"statusCode": http.StatusBadRequest, "success": false, "code": "invalid_request", "field": field, "message": msg}
	if field != "" {
		out["message"] = field + ": " + msg
	}
	writeJSON(w, http.StatusBadRequest, out)
}
