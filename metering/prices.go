package metering

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Price is a model's price in pico-dollars (1e-12 USD) per token, i.e. USD
// per 1M tokens × 1e6, so every price in the table is an exact integer:
// gpt-4o-mini's $0.15 per 1M input tokens is Input 150000.
type Price struct{ Input, Output int64 }

// CostNano is the cost of in and out tokens in nano-dollars (1e-9 USD),
// rounded half up from pico-dollars. Negative counts and prices count as 0;
// a cost beyond int64 (no real one comes near) saturates at MaxInt64.
func (p Price) CostNano(in, out int64) int64 {
	hi1, lo1 := bits.Mul64(uint64(max(in, 0)), uint64(max(p.Input, 0)))
	hi2, lo2 := bits.Mul64(uint64(max(out, 0)), uint64(max(p.Output, 0)))
	lo, c := bits.Add64(lo1, lo2, 0)
	hi, c2 := bits.Add64(hi1, hi2, c)
	lo, c = bits.Add64(lo, 500, 0) // half up
	hi, c3 := bits.Add64(hi, 0, c)
	if c2 != 0 || c3 != 0 || hi >= 1000 {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, 1000)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// Prices is a price table: model names to prices. It is immutable once
// built, so one table serves all goroutines.
type Prices struct {
	m map[string]priceEntry // by lower-case name
}

type priceEntry struct {
	name  string // the canonical (lower-case) name
	price Price
}

// The unit every price file is in.
const priceUnit = "USD per 1M tokens"

// maxPriceUSD bounds a price per 1M tokens: far above any real model, low
// enough that a typo such as a missing decimal point is caught.
const maxPriceUSD = 1_000_000

//go:embed prices.json
var bundledJSON []byte

var bundled = sync.OnceValue(func() *Prices {
	p, err := ParsePrices(bundledJSON)
	if err != nil {
		panic("metering: bundled prices.json: " + err.Error()) // TestBundled keeps it valid
	}
	return p
})

// Bundled returns the price table shipped in the binary (prices.json in
// this package: list prices of common OpenAI, Anthropic, Google and Mistral
// models at the date in its "updated" field, at the base tier where a
// provider charges more for long prompts). Deployments whose prices differ
// point prices_file at their own table, which replaces this one whole.
func Bundled() *Prices { return bundled() }

// LoadPrices reads a price table from a file in the format of prices.json.
func LoadPrices(path string) (*Prices, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePrices(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParsePrices parses a price table:
//
//	{"updated":"2026-11-01","unit":"USD per 1M tokens",
//	 "models":{"gpt-4o-mini":{"input":"0.15","output":"0.60"}, ...}}
//
// Prices are decimal strings or JSON numbers of USD per 1M tokens with at
// most 6 decimals (a pico-dollar per token), from 0 to 1,000,000. "unit"
// may be left out; any other unit is refused rather than mis-scaled. Model
// names are case-insensitive, so two names that differ only in case are an
// error. Other keys of a model (such as a cached-input price) are ignored.
// Errors name the model and field, e.g.
// `models."gpt-4o".input: "abc" is not a price in USD per 1M tokens`.
func ParsePrices(data []byte) (*Prices, error) {
	var f struct {
		Unit   *string                    `json:"unit"`
		Models map[string]json.RawMessage `json:"models"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("price table: %w", err)
	}
	if f.Unit != nil && !strings.EqualFold(strings.TrimSpace(*f.Unit), priceUnit) {
		return nil, fmt.Errorf("unit: %q is not supported: prices are in %q", *f.Unit, priceUnit)
	}
	if len(f.Models) == 0 {
		return nil, errors.New("models: no models in the price table")
	}
	names := make([]string, 0, len(f.Models))
	for name := range f.Models {
		names = append(names, name)
	}
	slices.Sort(names) // errors in a stable order
	p := &Prices{m: make(map[string]priceEntry, len(names))}
	for _, name := range names {
		at := "models." + strconv.Quote(name)
		key := strings.ToLower(strings.TrimSpace(name))
		if key == "" {
			return nil, fmt.Errorf("%s: empty model name", at)
		}
		if prev, dup := p.m[key]; dup {
			return nil, fmt.Errorf("%s: same model as %q (names are case-insensitive)", at, prev.name)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(f.Models[name], &fields); err != nil || fields == nil {
			return nil, fmt.Errorf(`%s: want an object {"input": price, "output": price}`, at)
		}
		var pr Price
		for _, fld := range [...]struct {
			key string
			dst *int64
		}{{"input", &pr.Input}, {"output", &pr.Output}} {
			raw, ok := fields[fld.key]
			if !ok {
				return nil, fmt.Errorf("%s.%s: missing", at, fld.key)
			}
			v, why, ok := parsePrice(raw)
			if !ok {
				if why != "" {
					why = ": " + why
				}
				return nil, fmt.Errorf("%s.%s: %s is not a price in %s%s", at, fld.key, shorten(raw), priceUnit, why)
			}
			*fld.dst = v
		}
		p.m[key] = priceEntry{name: key, price: pr}
	}
	return p, nil
}

// parsePrice reads a JSON string or number of USD per 1M tokens as
// pico-dollars per token. why says what is wrong with a number ("" when
// the value is not a number at all).
func parsePrice(raw json.RawMessage) (v int64, why string, ok bool) {
	text := []byte(strings.TrimSpace(string(raw)))
	if len(text) > 0 && text[0] == '"' {
		var s string
		if json.Unmarshal(text, &s) != nil {
			return 0, "", false
		}
		text = []byte(strings.TrimSpace(s))
	}
	d, ok := parseDecimal(text)
	if !ok {
		return 0, "", false
	}
	if d.neg && d.n > 0 {
		return 0, "negative", false
	}
	v, exact, overflow := d.scaled(6)
	switch {
	case overflow || v > maxPriceUSD*1e6:
		return 0, fmt.Sprintf("more than %d", maxPriceUSD), false
	case !exact:
		return 0, "more than 6 decimals", false
	}
	return v, "", true
}

// shorten returns a JSON value for an error message, cut when long.
func shorten(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

// Len is the number of models in the table.
func (p *Prices) Len() int {
	if p == nil {
		return 0
	}
	return len(p.m)
}

// Lookup finds a model's price: the exact name (case-insensitive); then the
// name without a provider prefix ("openai/gpt-4o", "models/gemini-1.5-pro",
// Bedrock's "us.anthropic.claude-..."); then the longest priced name that
// the model starts with followed by '-', '@' or ':' (dated or versioned ids
// such as "gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-20241022",
// "claude-3-5-sonnet-v2@20241022"). name is the table's canonical name. A
// nil table prices nothing.
func (p *Prices) Lookup(model string) (price Price, name string, ok bool) {
	if p == nil {
		return Price{}, "", false
	}
	s := strings.ToLower(strings.TrimSpace(model)) // no allocation when already lower-case
	if s == "" {
		return Price{}, "", false
	}
	if e, ok := p.m[s]; ok {
		return e.price, e.name, true
	}
	base := stripProvider(s)
	if base != s {
		if e, ok := p.m[base]; ok {
			return e.price, e.name, true
		}
	}
	if e, ok := p.prefix(s); ok {
		return e.price, e.name, true
	}
	if base != s {
		if e, ok := p.prefix(base); ok {
			return e.price, e.name, true
		}
	}
	return Price{}, "", false
}

// prefix finds the longest priced name that s starts with, followed in s by
// a version separator.
func (p *Prices) prefix(s string) (priceEntry, bool) {
	for i := len(s) - 1; i > 0; i-- {
		if c := s[i]; c == '-' || c == '@' || c == ':' {
			if e, ok := p.m[s[:i]]; ok {
				return e, true
			}
		}
	}
	return priceEntry{}, false
}

// stripProvider drops a provider prefix: everything up to the last '/'
// ("openai/gpt-4o", "models/gemini-1.5-pro"), then leading dotted segments
// of letters only, as Bedrock writes them ("us.anthropic.claude-3-5-..."),
// which no model name starts with ("gpt-4.1" keeps its dot: "gpt-4" is
// not letters only).
func stripProvider(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	for {
		i := strings.IndexByte(s, '.')
		if i <= 0 || !lettersOnly(s[:i]) {
			return s
		}
		s = s[i+1:]
	}
}

func lettersOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}
