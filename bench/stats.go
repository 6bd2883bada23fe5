package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// pct returns the p-th percentile (0..100) of ds, nearest rank.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

// spread is a value measured once per round: its median and range.
type spread struct{ Med, Min, Max float64 }

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{m, s[0], s[len(s)-1]}
}

// fmtInt writes 12345.6 as "12,346".
func fmtInt(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	n := int64(math.Round(f))
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtUS formats microseconds: "812 µs", "3.41 ms".
func fmtUS(us float64) string {
	switch {
	case math.IsNaN(us):
		return "–"
	case math.Abs(us) >= 10000:
		return fmt.Sprintf("%.1f ms", us/1000)
	case math.Abs(us) >= 1000:
		return fmt.Sprintf("%.2f ms", us/1000)
	default:
		return fmt.Sprintf("%.0f µs", us)
	}
}

// fmtSpreadUS: "812 µs (790–850)".
func fmtSpreadUS(s spread, rounds int) string {
	if rounds <= 1 {
		return fmtUS(s.Med)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtUS(s.Med), trimUnit(fmtUS(s.Min)), trimUnit(fmtUS(s.Max)))
}

func fmtSpreadInt(s spread, rounds int) string {
	if rounds <= 1 {
		return fmtInt(s.Med)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtInt(s.Med), fmtInt(s.Min), fmtInt(s.Max))
}

func trimUnit(s string) string {
	if strings.HasSuffix(s, " µs") || strings.HasSuffix(s, " ms") {
		// keep the unit only when it differs from µs, to stay short
		if strings.HasSuffix(s, " µs") {
			return strings.TrimSuffix(s, " µs")
		}
	}
	return s
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// table renders a Markdown table.
type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) String() string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(t.head, " | ") + " |\n|")
	for range t.head {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		for len(r) < len(t.head) {
			r = append(r, "")
		}
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return b.String()
}

// MarshalJSON writes NaN (not measured) as null.
func (s spread) MarshalJSON() ([]byte, error) {
	f := func(x float64) string {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "null"
		}
		return fmt.Sprintf("%.3f", x)
	}
	return []byte(fmt.Sprintf(`{"med":%s,"min":%s,"max":%s}`, f(s.Med), f(s.Min), f(s.Max))), nil
}

// f64 is a float64 that is written to JSON as null when NaN (not measured),
// which encoding/json refuses otherwise.
type f64 float64

var nan = f64(math.NaN())

func (x f64) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
		return []byte("null"), nil
	}
	return []byte(fmt.Sprintf("%.3f", float64(x))), nil
}
