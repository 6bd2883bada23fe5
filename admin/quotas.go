package admin

import (
	"errors"
	"net/http"
	"time"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/ledger"
)

// maxPolicyBody bounds a PUT's body: a policy is a few hundred bytes.
const maxPolicyBody = 64 << 10

// quotaRoutes: list, read, set and remove per-workflow quota policies. A
// PUT persists (Redis, or the embedded store) and reaches every replica
// within a couple of seconds; DELETE removes the admin API's policy, and
// the config file's (or the default) applies again.
func quotaRoutes(mux *http.ServeMux, d Deps) {
	need := func(w http.ResponseWriter) bool {
		if d.Quota == nil {
			writeErr(w, http.StatusConflict, "quotas_disabled", "quotas are not enabled in this gateway")
			return false
		}
		return true
	}
	mux.HandleFunc("GET /admin/v1/quotas", func(w http.ResponseWriter, r *http.Request) {
		if !need(w) {
			return
		}
		mode := "none"
		switch {
		case d.Quota.Local():
			mode = "local"
		case d.Quota.Shared():
			mode = "shared"
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"default":   d.Quota.Default(),
			"workflows": nonNil(d.Quota.Entries()),
			"redis":     mode,
		})
	})
	mux.HandleFunc("GET /admin/v1/quotas/{workflow}", func(w http.ResponseWriter, r *http.Request) {
		if !need(w) {
			return
		}
		id := r.PathValue("workflow")
		if e, ok := d.Quota.Entry(id); ok {
			writeJSON(w, http.StatusOK, e)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"workflowId": flow.CanonicalID(id), "source": "default", "policy": d.Quota.Default()})
	})
	mux.HandleFunc("PUT /admin/v1/quotas/{workflow}", func(w http.ResponseWriter, r *http.Request) {
		if !need(w) {
			return
		}
		id := r.PathValue("workflow")
		r.Body = http.MaxBytesReader(w, r.Body, maxPolicyBody)
		p, errs := config.ParseQuotaPolicy(r.Body)
		if len(errs) > 0 {
			var mbe *http.MaxBytesError
			if errors.As(errs[0].Cause, &mbe) {
				writeErr(w, http.StatusRequestEntityTooLarge, "body_too_large", "a policy is at most 64 KiB")
				return
			}
			writeFieldErr(w, errs[0].Key, errs[0].Msg)
			return
		}
		if err := d.Quota.Put(r.Context(), id, p); err != nil {
			writeErr(w, http.StatusServiceUnavailable, "store_unavailable", "the policy could not be stored: "+err.Error())
			return
		}
		e, _ := d.Quota.Entry(id)
		writeJSON(w, http.StatusOK, e)
	})
	mux.HandleFunc("DELETE /admin/v1/quotas/{workflow}", func(w http.ResponseWriter, r *http.Request) {
		if !need(w) {
			return
		}
		id := r.PathValue("workflow")
		ok, err := d.Quota.Delete(r.Context(), id)
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, "store_unavailable", "the policy could not be removed: "+err.Error())
			return
		}
		if !ok {
			writeErr(w, http.StatusNotFound, "not_found", "no admin API policy for workflow "+id+
				" (a config file policy stays until the file changes; PUT {} lifts its limits)")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"success": true, "workflowId": flow.CanonicalID(id), "removed": true})
	})
}

// usageRoutes: usage reports from the ledger, per workflow and for all.
func usageRoutes(mux *http.ServeMux, d Deps) {
	report := func(w http.ResponseWriter, r *http.Request, workflow string) {
		if d.Ledger == nil {
			writeErr(w, http.StatusConflict, "metering_disabled", "the usage ledger is not enabled in this gateway")
			return
		}
		q := r.URL.Query()
		for k := range q {
			switch k {
			case "range", "from", "to":
			case "caller":
				if workflow != "" {
					continue
				}
				fallthrough
			default:
				writeFieldErr(w, k, "unknown query parameter (use range, or from and to"+map[bool]string{true: ", and caller", false: ""}[workflow != ""]+")")
				return
			}
		}
		from, to, field, msg := parseRange(q.Get("range"), q.Get("from"), q.Get("to"), d.Now())
		if field != "" {
			writeFieldErr(w, field, msg)
			return
		}
		if workflow == "" {
			reps, err := d.Ledger.Reports(r.Context(), from, to)
			if ledgerFailed(w, err) {
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"from": day(from), "to": day(to), "workflows": nonNilReports(reps)})
			return
		}
		rep, err := d.Ledger.Report(r.Context(), ledger.Query{Workflow: flow.CanonicalID(workflow), Caller: q.Get("caller"), From: from, To: to})
		if ledgerFailed(w, err) {
			return
		}
		writeJSON(w, http.StatusOK, rep)
	}
	mux.HandleFunc("GET /admin/v1/usage", func(w http.ResponseWriter, r *http.Request) { report(w, r, "") })
	mux.HandleFunc("GET /admin/v1/usage/{workflow}", func(w http.ResponseWriter, r *http.Request) {
		report(w, r, r.PathValue("workflow"))
	})
}

// ledgerFailed answers a failed ledger read: 400 for a range the ledger
// can never answer, 503 when its store cannot be reached.
func ledgerFailed(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ledger.ErrInvalidQuery):
		writeFieldErr(w, "from", err.Error())
	default:
		writeErr(w, http.StatusServiceUnavailable, "ledger_unavailable", "the usage ledger could not be read: "+err.Error())
	}
	return true
}

// maxRangeDays is the longest report: the ledger keeps 400 days.
const maxRangeDays = 400

// parseRange reads range=Nd (the last N days, today included; default
// 30d) or from/to dates (YYYY-MM-DD, UTC, inclusive; to defaults to
// today). It returns the field at fault and why.
func parseRange(rng, from, to string, now time.Time) (f, t time.Time, field, msg string) {
	today := now.UTC().Truncate(24 * time.Hour)
	if rng != "" && (from != "" || to != "") {
		return f, t, "range", "give range or from/to, not both"
	}
	if from == "" && to == "" {
		if rng == "" {
			rng = "30d"
		}
		n, ok := parseDays(rng)
		if !ok || n < 1 || n > maxRangeDays {
			return f, t, "range", `must be a number of days from 1d to 400d, e.g. "30d"`
		}
		return today.AddDate(0, 0, -(n - 1)), today, "", ""
	}
	t = today
	if to != "" {
		var err error
		if t, err = time.Parse(time.DateOnly, to); err != nil {
			return f, t, "to", "must be a date YYYY-MM-DD"
		}
	}
	if from == "" {
		return f, t, "from", "is required with to (a date YYYY-MM-DD)"
	}
	f, err := time.Parse(time.DateOnly, from)
	if err != nil || f.Year() < 2000 {
		return f, t, "from", "must be a date YYYY-MM-DD from 2000-01-01"
	}
	if f.After(t) {
		return f, t, "from", "must not be after to"
	}
	if t.Sub(f) >= maxRangeDays*24*time.Hour {
		return f, t, "from", "the range must be at most 400 days"
	}
	return f, t, "", ""
}

func parseDays(s string) (int, bool) {
	if len(s) < 2 || s[len(s)-1] != 'd' {
		return 0, false
	}
	n := 0
	for _, c := range s[:len(s)-1] {
		if c < '0' || c > '9' || n > maxRangeDays {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func day(t time.Time) string { return t.Format(time.DateOnly) }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func nonNilReports(s []ledger.Report) []ledger.Report { return nonNil(s) }
