package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Quota configures per-workflow rate limits and budgets, enforced before a
// request reaches the flow server. With redis.addr set the counts are
// shared, so replicas together admit exactly the limits.
type Quota struct {
	// OnRedisError says what happens while Redis cannot be reached: "open"
	// serves and enforces the limits in this process alone (Redis failures
	// are counted in flowgate_quota_redis_errors_total); "closed" answers 503
	// quota_unavailable. Default open.
	OnRedisError string `yaml:"on_redis_error"`
	// Default is the policy of workflows not listed. Default {}: unlimited.
	Default QuotaPolicy `yaml:"default"`
	// Workflows are per-workflow policies by flow id; a listed workflow's
	// policy replaces Default whole. The admin API can add and replace
	// entries at run time (PUT /admin/v1/quotas/{workflow}).
	Workflows map[string]QuotaPolicy `yaml:"workflows"`
}

// QuotaPolicy is one workflow's limits. The zero value is unlimited. Its
// JSON form is the body of PUT /admin/v1/quotas/{workflow}.
type QuotaPolicy struct {
	// Rate limits requests, cache hits included. Default none.
	Rate *RateLimit `yaml:"rate" json:"rate,omitempty"`
	// Budgets limit executions, tokens and cost per window. Default none.
	Budgets []Budget `yaml:"budgets" json:"budgets,omitempty"`
	// PerCaller splits the limits by caller: "" (the whole workflow shares
	// them), "authorization" (the Authorization header), "ip" (the client
	// address, X-Forwarded-For only from proxy.trusted_proxies) or
	// "header:<Name>". Default "".
	PerCaller string `yaml:"per_caller" json:"per_caller,omitempty"`
}

// IsZero reports whether the policy limits nothing.
func (p QuotaPolicy) IsZero() bool { return p.Rate == nil && len(p.Budgets) == 0 }

// RateLimit is a token bucket: Limit requests per Per, bursts up to Burst.
type RateLimit struct {
	// Limit is how many requests each Per admits. Required, 1 or more.
	Limit int64 `yaml:"limit" json:"limit"`
	// Per is the period of Limit. Default 1s.
	Per Duration `yaml:"per" json:"per,omitempty"`
	// Burst is how many requests may pass at once. Default Limit.
	Burst int64 `yaml:"burst" json:"burst,omitempty"`
}

// Budget limits what a workflow may spend in each fixed window. Windows
// are aligned to the Unix epoch, so 1h, 24h and 30d windows start on UTC
// hour and day boundaries. Give at least one of the limits.
type Budget struct {
	// Window is the budget's period, e.g. 1h, 24h, 30d. Required.
	Window Duration `yaml:"window" json:"window"`
	// Executions is how many runs the window admits. Default 0: no limit.
	Executions int64 `yaml:"executions" json:"executions,omitempty"`
	// Tokens is how many input plus output tokens the window admits.
	// Default 0: no limit.
	Tokens int64 `yaml:"tokens" json:"tokens,omitempty"`
	// CostUSD is how many US dollars the window admits. Default 0: no limit.
	CostUSD USD `yaml:"cost_usd" json:"cost_usd,omitempty"`
}

// Metering configures token and cost metering of flow executions and the
// usage ledger.
type Metering struct {
	// StoreDir holds the embedded usage ledger and quota state when
	// redis.addr is not set. Default "": /var/lib/flowgate, or the user's
	// state directory ($XDG_STATE_HOME/flowgate, ~/.local/state/flowgate)
	// when that is not writable; the start-up log says which.
	StoreDir string `yaml:"store_dir"`
	// PricesFile replaces the bundled price table (JSON, the bundled
	// file's format) without a rebuild. Default "": the bundled table.
	PricesFile string `yaml:"prices_file"`
	// DefaultModel prices the runs of workflows not in Models when the
	// answer does not name a priced model. Default gpt-4o-mini.
	DefaultModel string `yaml:"default_model"`
	// Models names each workflow's model, by flow id. Default none.
	Models map[string]string `yaml:"models"`
}

// EnvStoreDir replaces metering.store_dir, so tests and containers can
// move the embedded ledger without a config file.
const EnvStoreDir = "FLOWGATE_METERING_STORE_DIR"

// FieldError is one problem in a value, named by its key path relative to
// where the value was given.
type FieldError struct {
	Key   string
	Msg   string
	Cause error // the decoding error behind it, if any
}

func (e FieldError) Error() string { return e.Key + ": " + e.Msg }

// Check validates a policy; keys in the errors are relative to it
// ("rate.limit", "budgets[1].window").
func (p QuotaPolicy) Check() []FieldError {
	var errs []FieldError
	add := func(key, format string, args ...any) {
		errs = append(errs, FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if r := p.Rate; r != nil {
		if r.Limit < 1 {
			add("rate.limit", "must be 1 or more, not %d", r.Limit)
		}
		if r.Per < 0 {
			add("rate.per", "must not be negative")
		} else if r.Per != 0 && r.Per < Duration(time.Millisecond) {
			add("rate.per", "must be 1ms or more")
		}
		if r.Burst < 0 {
			add("rate.burst", "must not be negative, not %d", r.Burst)
		}
	}
	for i, b := range p.Budgets {
		k := "budgets[" + strconv.Itoa(i) + "]"
		switch {
		case b.Window <= 0:
			add(k+".window", `is required and must be greater than 0s, e.g. "24h" or "30d"`)
		case b.Window%Duration(time.Second) != 0:
			add(k+".window", "must be a whole number of seconds, not %s", b.Window)
		}
		if b.Executions < 0 {
			add(k+".executions", "must not be negative, not %d", b.Executions)
		}
		if b.Tokens < 0 {
			add(k+".tokens", "must not be negative, not %d", b.Tokens)
		}
		if b.CostUSD < 0 {
			add(k+".cost_usd", "must not be negative, not %s", b.CostUSD)
		}
		if b.Executions == 0 && b.Tokens == 0 && b.CostUSD == 0 {
			add(k, "limits nothing: give executions, tokens or cost_usd")
		}
	}
	if msg := checkPerCaller(p.PerCaller); msg != "" {
		add("per_caller", "%s", msg)
	}
	return errs
}

func checkPerCaller(s string) string {
	switch s {
	case "", "authorization", "ip":
		return ""
	}
	if name, ok := strings.CutPrefix(s, "header:"); ok {
		if isToken(name) {
			return ""
		}
		return fmt.Sprintf("%q is not a header name", name)
	}
	return fmt.Sprintf(`must be "", "authorization", "ip" or "header:<Name>", not %q`, s)
}

// ParseQuotaPolicy reads a policy from JSON, as the admin API's PUT takes
// it: malformed JSON, unknown fields, wrong types, trailing data and
// invalid values are errors naming the field by its path
// ("budgets[0].window").
func ParseQuotaPolicy(r io.Reader) (QuotaPolicy, []FieldError) {
	data, err := io.ReadAll(r)
	if err != nil {
		return QuotaPolicy{}, []FieldError{{Msg: "the body could not be read: " + err.Error(), Cause: err}}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return QuotaPolicy{}, []FieldError{jsonFieldError(err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return QuotaPolicy{}, []FieldError{{Msg: "trailing data after the JSON object"}}
	}
	var p QuotaPolicy
	w := &jsonWalker{}
	w.object(raw, "", map[string]func(json.RawMessage, string){
		"rate": func(v json.RawMessage, k string) {
			if string(v) == "null" {
				return
			}
			p.Rate = &RateLimit{}
			w.object(v, k, map[string]func(json.RawMessage, string){
				"limit": func(v json.RawMessage, k string) { w.int(v, k, &p.Rate.Limit) },
				"burst": func(v json.RawMessage, k string) { w.int(v, k, &p.Rate.Burst) },
				"per":   func(v json.RawMessage, k string) { w.duration(v, k, &p.Rate.Per) },
			})
		},
		"budgets": func(v json.RawMessage, k string) {
			var items []json.RawMessage
			if string(v) == "null" {
				return
			}
			if json.Unmarshal(v, &items) != nil {
				w.fail(k, "must be a JSON array of budgets")
				return
			}
			p.Budgets = make([]Budget, len(items))
			for i, item := range items {
				b := &p.Budgets[i]
				w.object(item, k+"["+strconv.Itoa(i)+"]", map[string]func(json.RawMessage, string){
					"window":     func(v json.RawMessage, k string) { w.duration(v, k, &b.Window) },
					"executions": func(v json.RawMessage, k string) { w.int(v, k, &b.Executions) },
					"tokens":     func(v json.RawMessage, k string) { w.int(v, k, &b.Tokens) },
					"cost_usd": func(v json.RawMessage, k string) {
						if err := b.CostUSD.UnmarshalJSON(v); err != nil {
							var fe *fieldValueError
							if errors.As(err, &fe) {
								w.fail(k, fe.msg)
							}
						}
					},
				})
			}
		},
		"per_caller": func(v json.RawMessage, k string) {
			if json.Unmarshal(v, &p.PerCaller) != nil {
				w.fail(k, "must be a JSON string")
			}
		},
	})
	if len(w.errs) > 0 {
		return QuotaPolicy{}, w.errs
	}
	if errs := p.Check(); len(errs) > 0 {
		return QuotaPolicy{}, errs
	}
	return p, nil
}

// jsonWalker decodes a JSON document field by field, so every error can
// name its path; the first error per field is kept.
type jsonWalker struct{ errs []FieldError }

func (w *jsonWalker) fail(key, msg string) { w.errs = append(w.errs, FieldError{Key: key, Msg: msg}) }

func (w *jsonWalker) object(raw json.RawMessage, key string, fields map[string]func(json.RawMessage, string)) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		what := "the body"
		if key != "" {
			what = "it"
		}
		w.fail(key, "must be a JSON object ("+what+" is not)")
		return
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names) // errors in a stable order
	for _, k := range names {
		path := k
		if key != "" {
			path = key + "." + k
		}
		fn, ok := fields[k]
		if !ok {
			w.fail(path, "unknown field")
			continue
		}
		fn(m[k], path)
	}
}

func (w *jsonWalker) int(raw json.RawMessage, key string, dst *int64) {
	if err := json.Unmarshal(raw, dst); err != nil {
		w.fail(key, "must be a whole number")
	}
}

func (w *jsonWalker) duration(raw json.RawMessage, key string, dst *Duration) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		w.fail(key, `must be a duration string like "1s", "24h" or "30d"`)
		return
	}
	d, err := ParseDuration(s)
	if err != nil {
		w.fail(key, err.Error())
		return
	}
	*dst = d
}

// jsonFieldError describes a document that is not one JSON value.
func jsonFieldError(err error) FieldError {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return FieldError{Msg: "malformed JSON at byte " + strconv.FormatInt(se.Offset, 10) + ": " + se.Error(), Cause: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return FieldError{Msg: "malformed JSON: the body ends early (want one JSON object)", Cause: err}
	}
	return FieldError{Msg: strings.TrimPrefix(err.Error(), "json: "), Cause: err}
}

type fieldValueError struct{ field, msg string }

func (e *fieldValueError) Error() string { return e.field + ": " + e.msg }

// USD is an amount of US dollars held exactly, in nano-dollars, so sums and
// comparisons are integer arithmetic. Written as a decimal number: 50, 12.5.
type USD int64

// NanoPerUSD is the unit of USD.
const NanoPerUSD = 1_000_000_000

// ParseUSD parses a non-negative decimal amount with at most 9 decimals.
func ParseUSD(s string) (USD, error) {
	s = strings.TrimSpace(s)
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" || strings.ContainsAny(whole, "+-eE") || strings.ContainsAny(frac, "+-eE.") {
		if strings.HasPrefix(s, "-") {
			return 0, fmt.Errorf("amount %s must not be negative", s)
		}
		return 0, fmt.Errorf("%q is not an amount in dollars, e.g. 50 or 12.5", s)
	}
	if len(frac) > 9 {
		return 0, fmt.Errorf("amount %s has more than 9 decimals", s)
	}
	w := uint64(0)
	if whole != "" {
		var err error
		if w, err = strconv.ParseUint(whole, 10, 64); err != nil || w > math.MaxInt64/NanoPerUSD {
			return 0, fmt.Errorf("%q is not an amount in dollars below 9 billion", s)
		}
	}
	f := uint64(0)
	if frac != "" {
		var err error
		if f, err = strconv.ParseUint(frac+strings.Repeat("0", 9-len(frac)), 10, 64); err != nil {
			return 0, fmt.Errorf("%q is not an amount in dollars, e.g. 50 or 12.5", s)
		}
	}
	return USD(w*NanoPerUSD + f), nil
}

// Float is the amount in dollars.
func (u USD) Float() float64 { return float64(u) / NanoPerUSD }

// String formats the amount as a decimal without trailing zeros.
func (u USD) String() string { return string(u.Append(nil)) }

// Append appends the amount as String writes it, without allocating.
func (u USD) Append(b []byte) []byte {
	if u < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendInt(b, int64(u)/NanoPerUSD, 10)
	if f := int64(u) % NanoPerUSD; f != 0 {
		var d [9]byte
		for i := 8; i >= 0; i-- {
			d[i] = byte('0' + f%10)
			f /= 10
		}
		n := 9
		for n > 0 && d[n-1] == '0' {
			n--
		}
		b = append(b, '.')
		b = append(b, d[:n]...)
	}
	return b
}

// MarshalJSON writes the amount as a JSON number.
func (u USD) MarshalJSON() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalJSON reads a JSON number (a string is refused).
func (u *USD) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && (b[0] == '"' || b[0] == '{' || b[0] == '[' || b[0] == 't' || b[0] == 'f' || b[0] == 'n') {
		return &fieldValueError{"cost_usd", "must be a number of dollars, e.g. 50 or 12.5"}
	}
	v, err := ParseUSD(string(bytes.TrimSpace(b)))
	if err != nil {
		return &fieldValueError{"cost_usd", err.Error()}
	}
	*u = v
	return nil
}

// UnmarshalYAML reads a YAML number.
func (u *USD) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		return fmt.Errorf("must be a number of dollars, e.g. 50 or 12.5, not %q", n.Value)
	}
	v, err := ParseUSD(n.Value)
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// MarshalYAML writes the amount as a number.
func (u USD) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: u.String()}, nil
}

// Per is the rate's period with its default.
func (r RateLimit) PerD() time.Duration {
	if r.Per <= 0 {
		return time.Second
	}
	return r.Per.D()
}

// BurstN is the rate's burst with its default.
func (r RateLimit) BurstN() int64 {
	if r.Burst <= 0 {
		return r.Limit
	}
	return r.Burst
}

// OnRedisErrorOpen reports whether requests are served while Redis is down.
func (q Quota) OnRedisErrorOpen() bool { return q.OnRedisError != "closed" }

// AnyLimit reports whether some workflow has a limit.
func (q Quota) AnyLimit() bool {
	if !q.Default.IsZero() {
		return true
	}
	for _, p := range q.Workflows {
		if !p.IsZero() {
			return true
		}
	}
	return false
}
