package metering

import "testing"

func TestDecimalScaled(t *testing.T) {
	tests := []struct {
		in       string
		k        int
		want     int64
		exact    bool
		overflow bool
	}{
		// USD to nano-dollars (k = 9), rounded half up at the nano digit.
		{"0.0000016499999999999999", 9, 1650, false, false},
		{"0.00000525", 9, 5250, true, false},
		{"5.25e-06", 9, 5250, true, false},
		{"5.25E-6", 9, 5250, true, false},
		{"0.0000036", 9, 3600, true, false},
		{"1.5e-7", 9, 150, true, false},
		{"0.0000000005", 9, 1, false, false},
		{"0.00000000049999999", 9, 0, false, false},
		{"0.0000000004", 9, 0, false, false},
		{"1e-400", 9, 0, false, false},
		{"0", 9, 0, true, false},
		{"0.000", 9, 0, true, false},
		{"-0.5", 9, 500000000, true, false}, // the sign is the caller's
		{"1e400", 9, 0, false, true},
		{"9223372036", 9, 0, false, true}, // 19 digits
		{"999999999.999999999", 9, 999999999999999999, true, false},
		{"123456789012345678901234567890e-40", 9, 0, false, false}, // 0.0123... nano
		// USD per 1M tokens to pico-dollars per token (k = 6), exact.
		{"0.15", 6, 150000, true, false},
		{"0.60", 6, 600000, true, false},
		{"2.5", 6, 2500000, true, false},
		{"0.0375", 6, 37500, true, false},
		{"0.1234567", 6, 123457, false, false},
		{"007.50", 6, 7500000, true, false},
		{"1E2", 6, 100000000, true, false},
		// Token counts (k = 0).
		{"11", 0, 11, true, false},
		{"1.1e1", 0, 11, true, false},
		{"6.5", 0, 7, false, false},
		{"6.49", 0, 6, false, false},
		{"100000000000000000000000000000", 0, 0, false, true},
	}
	for _, tc := range tests {
		d, ok := parseDecimal([]byte(tc.in))
		if !ok {
			t.Errorf("parseDecimal(%q) failed", tc.in)
			continue
		}
		v, exact, overflow := d.scaled(tc.k)
		if v != tc.want || exact != tc.exact || overflow != tc.overflow {
			t.Errorf("%q × 1e%d = %d exact %v overflow %v, want %d %v %v", tc.in, tc.k, v, exact, overflow, tc.want, tc.exact, tc.overflow)
		}
	}
}

func TestParseDecimalInvalid(t *testing.T) {
	for _, s := range []string{"", "-", "abc", ".5", "1.", "1e", "1e+", "NaN", "Infinity", "0x10", "1 ", " 1", "1.2.3", "--1", "1e5e5", `"1"`} {
		if _, ok := parseDecimal([]byte(s)); ok {
			t.Errorf("parseDecimal(%q) ok", s)
		}
	}
	d, ok := parseDecimal([]byte("-0"))
	if !ok || d.n != 0 {
		t.Errorf("-0: %+v %v", d, ok)
	}
	// A very long mantissa keeps its first digits and a sticky bit.
	long := "1.0000000000000000000000000000001"
	d, _ = parseDecimal([]byte(long))
	if v, exact, _ := d.scaled(6); v != 1000000 || exact {
		t.Errorf("%s: %d exact %v", long, v, exact)
	}
}

func FuzzParseDecimal(f *testing.F) {
	for _, s := range []string{"0.0000016499999999999999", "5.25e-06", "1e400", "-0", "12", "1.5e-7"} {
		f.Add(s, 9)
	}
	f.Fuzz(func(t *testing.T, s string, k int) {
		d, ok := parseDecimal([]byte(s))
		if !ok {
			return
		}
		v, _, overflow := d.scaled(k % 40)
		if v < 0 || overflow && v != 0 {
			t.Fatalf("%q × 1e%d = %d overflow %v", s, k%40, v, overflow)
		}
	})
}
