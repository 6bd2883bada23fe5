package config

import "testing"

// USD is written as a plain decimal, as the access log and the admin API
// show it: no trailing zeros, no exponent, the sign first.
func TestUSDString(t *testing.T) {
	for _, tc := range []struct {
		nano int64
		want string
	}{
		{0, "0"},
		{1, "0.000000001"},
		{NanoPerUSD, "1"},
		{12_500_000_000, "12.5"},
		{1_230_000_000, "1.23"},
		{-1_500_000, "-0.0015"},
		{987_654_321_012, "987.654321012"},
	} {
		if got := USD(tc.nano).String(); got != tc.want {
			t.Errorf("USD(%d) = %q, want %q", tc.nano, got, tc.want)
		}
		if got := string(USD(tc.nano).Append([]byte("x"))); got != "x"+tc.want {
			t.Errorf("Append(USD(%d)) = %q", tc.nano, got)
		}
	}
}
