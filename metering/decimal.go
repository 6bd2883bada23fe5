package metering

// Exact decimal arithmetic on the text of JSON numbers. Costs and prices are
// money: Flowise writes total_cost as a JavaScript number
// (0.0000016499999999999999, 5.25e-06), and multiplying its float64 by 1e9
// would turn 1649.9999999999999 into 1649 where the intended value is 1650.
// Reading the digits instead gives the exact decimal the text spells.

// maxSig is how many significant digits a decimal keeps. Scaled results
// are at most 18 digits (they must fit an int64) plus one rounding digit,
// so digits beyond these only decide exactness (sticky).
const maxSig = 24

// decimal is a number read from its decimal text: sig × 10^exp, where sig
// is the integer spelled by digits[:n].
type decimal struct {
	neg    bool
	digits [maxSig]byte // significant digits, '0'..'9'; no leading or trailing zeros
	n      int          // digits used; 0 for zero
	exp    int
	sticky bool // a non-zero digit beyond maxSig was dropped
}

// Exponent bound: past ±expLimit a value is far beyond any int64 (overflow)
// or below any unit we scale to (zero), so bigger exponents saturate here
// instead of overflowing an int.
const expLimit = 100000

// parseDecimal reads s, a JSON number (an optional '-', digits, an optional
// fraction, an optional exponent). It is lenient where JSON is strict in
// ways that do not change the value: leading zeros ("007") and a leading
// '+' are accepted. ok is false for anything else, such as "", "abc",
// ".5", "1.", "1e", "NaN" or "Infinity".
func parseDecimal(s []byte) (d decimal, ok bool) {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		d.neg = s[i] == '-'
		i++
	}
	var (
		intLen = 0  // digits before the point
		pos    = 0  // mantissa index of the next digit (integer and fraction digits together)
		first  = -1 // mantissa index of the first non-zero digit
		lastNZ = -1 // mantissa index of the last non-zero digit kept
	)
	digit := func(c byte) {
		switch k := pos - first; {
		case first < 0 && c == '0':
			// a leading zero
		case first < 0:
			first, lastNZ = pos, pos
			d.digits[0] = c
		case k >= maxSig:
			d.sticky = d.sticky || c != '0'
		default:
			d.digits[k] = c
			if c != '0' {
				lastNZ = pos
			}
		}
		pos++
	}
	for ; i < len(s) && isDigit(s[i]); i++ {
		digit(s[i])
		intLen++
	}
	if intLen == 0 {
		return decimal{}, false
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for ; i < len(s) && isDigit(s[i]); i++ {
			digit(s[i])
		}
		if i == start {
			return decimal{}, false
		}
	}
	e := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		start := i
		for ; i < len(s) && isDigit(s[i]); i++ {
			if e < expLimit {
				e = e*10 + int(s[i]-'0')
			}
		}
		if i == start {
			return decimal{}, false
		}
		if eneg {
			e = -e
		}
	}
	if i != len(s) {
		return decimal{}, false
	}
	if first < 0 {
		return decimal{neg: d.neg}, true // zero
	}
	// Trailing zeros of the kept digits go into the exponent: the last kept
	// non-zero digit, at mantissa index lastNZ, has the place value
	// 10^(intLen-1-lastNZ).
	d.n = lastNZ - first + 1
	d.exp = intLen - 1 - lastNZ + e
	return d, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scaled returns the decimal × 10^k as an int64, rounded half up (away from
// zero on the magnitude) at the units digit. exact is false when rounding
// dropped a non-zero digit; overflow when the magnitude exceeds 18 digits,
// which every caller treats as absurd. The sign is not applied: callers
// decide what a negative value means.
func (d decimal) scaled(k int) (v int64, exact, overflow bool) {
	if d.n == 0 {
		return 0, true, false
	}
	e := d.exp + k
	switch {
	case e >= 0:
		if d.n+e > 18 {
			return 0, false, true
		}
		v = d.int(d.n)
		for range e {
			v *= 10
		}
		return v, !d.sticky, false
	case -e > d.n:
		// Every digit is below the first dropped place, which is a 0.
		return 0, false, false
	default:
		keep := d.n + e
		if keep > 18 {
			return 0, false, true
		}
		v = d.int(keep)
		if d.digits[keep] >= '5' {
			v++
		}
		// The dropped digits end in a non-zero one (no trailing zeros).
		return v, false, false
	}
}

func (d *decimal) int(n int) int64 {
	var v int64
	for _, c := range d.digits[:n] {
		v = v*10 + int64(c-'0')
	}
	return v
}
