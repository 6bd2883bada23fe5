package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Byte size units. Decimal units follow SI (1KB = 1000 bytes), binary ones
// IEC (1KiB = 1024 bytes), so "100MB" and "100MiB" mean what they say.
const (
	B   ByteSize = 1
	KB  ByteSize = 1000
	MB  ByteSize = 1000 * KB
	GB  ByteSize = 1000 * MB
	KiB ByteSize = 1024
	MiB ByteSize = 1024 * KiB
	GiB ByteSize = 1024 * MiB
)

// byteUnits is ordered largest first so String picks the biggest exact unit.
var byteUnits = []struct {
	name string
	size ByteSize
}{
	{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"GB", GB}, {"MB", MB}, {"KB", KB},
	{"B", B},
}

var bareNumber = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$`)

// ParseDuration parses a non-negative Go duration such as "30s", "5m" or
// "1h30m". A bare number is refused: "30" could mean seconds or
// milliseconds, and guessing wrong by 1000x is worse than asking.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New(`empty duration; write one like "30s" or "5m"`)
	}
	if bareNumber.MatchString(s) {
		if strings.HasPrefix(s, "-") {
			return 0, fmt.Errorf("duration %s must not be negative", s)
		}
		return 0, fmt.Errorf(`duration %s has no unit; write it like "%ss" (units: ns, us, ms, s, m, h)`, s, strings.TrimPrefix(s, "+"))
	}
	d, err := parseDays(s)
	if err != nil {
		return 0, fmt.Errorf(`invalid duration %q; write it like "30s", "5m", "1h30m" or "30d" (units: ns, us, ms, s, m, h, d)`, s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %s must not be negative", s)
	}
	return Duration(d), nil
}

// parseDays is time.ParseDuration plus a leading whole number of days
// ("30d", "1d12h"), as budget windows are written.
func parseDays(s string) (time.Duration, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || i >= len(s) || s[i] != 'd' {
		return time.ParseDuration(s)
	}
	days, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || days > int64(math.MaxInt64/(24*time.Hour)) {
		return 0, errors.New("too many days")
	}
	d := time.Duration(days) * 24 * time.Hour
	if rest := s[i+1:]; rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || r < 0 || d+r < d {
			return 0, errors.New("bad duration")
		}
		d += r
	}
	return d, nil
}

// String formats like time.Duration ("5m0s"), which ParseDuration accepts.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText makes Duration print as "30s" in YAML, JSON and logs.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText lets a Duration be a flag (flag.TextVar) or an env value.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// UnmarshalYAML refuses YAML numbers outright so `timeout: 30` gets the
// "has no unit" message rather than yaml's generic type error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf(`must be a duration like "30s", not a %s`, kindName(n))
	}
	return d.UnmarshalText([]byte(n.Value))
}

// ParseByteSize parses a non-negative size: a plain integer of bytes, or a
// number with a unit B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB
// (powers of 1024). Units are case-insensitive and may follow a space;
// a fraction is allowed when the result is a whole number of bytes
// ("1.5KiB" = 1536).
func ParseByteSize(s string) (ByteSize, error) {
	orig := s
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == '-' || s[i] == '+') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		return 0, fmt.Errorf("invalid size %q; write bytes (1048576) or a number with a unit: B, KB, MB, GB, KiB, MiB, GiB", orig)
	}
	mult := B
	if unit != "" {
		found := false
		for _, u := range byteUnits {
			if strings.EqualFold(unit, u.name) {
				mult, found = u.size, true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("invalid size %q: unknown unit %q; use B, KB, MB, GB, KiB, MiB or GiB", orig, unit)
		}
	}
	if strings.HasPrefix(num, "-") {
		return 0, fmt.Errorf("size %s must not be negative", strings.TrimSpace(orig))
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/int64(mult) {
			return 0, fmt.Errorf("size %s is too large", strings.TrimSpace(orig))
		}
		return ByteSize(n) * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q; write bytes (1048576) or a number with a unit: B, KB, MB, GB, KiB, MiB, GiB", orig)
	}
	total := f * float64(mult)
	if total >= math.MaxInt64 {
		return 0, fmt.Errorf("size %s is too large", strings.TrimSpace(orig))
	}
	if total != math.Trunc(total) {
		return 0, fmt.Errorf("size %s is not a whole number of bytes", strings.TrimSpace(orig))
	}
	return ByteSize(total), nil
}

// Int64 returns the size in bytes.
func (b ByteSize) Int64() int64 { return int64(b) }

// String uses the largest unit that divides the size exactly, preferring
// binary units: 104857600 -> "100MiB", 1000 -> "1KB", 1023 -> "1023B".
func (b ByteSize) String() string {
	if b <= 0 {
		return strconv.FormatInt(int64(b), 10) + "B"
	}
	for _, u := range byteUnits {
		if b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// MarshalText makes ByteSize print as "100MiB" in YAML, JSON and logs.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText lets a ByteSize be a flag (flag.TextVar) or an env value.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML accepts a YAML integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf(`must be a size like 1048576 or "1MiB", not a %s`, kindName(n))
	}
	if n.ShortTag() == "!!int" {
		// Covers YAML's other integer spellings (0x100000, 0o777).
		var v int64
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("invalid size %s", n.Value)
		}
		if v < 0 {
			return fmt.Errorf("size %s must not be negative", n.Value)
		}
		*b = ByteSize(v)
		return nil
	}
	return b.UnmarshalText([]byte(n.Value))
}

// kindName names a node's shape for error messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		if n.Alias != nil {
			return kindName(n.Alias)
		}
	}
	return "value"
}
