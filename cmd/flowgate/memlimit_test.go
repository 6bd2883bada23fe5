package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestSetMemoryLimitFromCgroup(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	defer debug.SetMemoryLimit(math.MaxInt64)
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(v), 0o600)
		return p
	}
	cases := []struct {
		name  string
		files []string
		want  int64
	}{
		{"v2 limit", []string{write("v2", "536870912\n")}, 536870912 / 10 * 9},
		{"v2 unlimited", []string{write("v2max", "max\n")}, 0},
		{"v1 unlimited", []string{filepath.Join(dir, "absent"), write("v1", "9223372036854771712\n")}, 0},
		{"v1 limit after missing v2", []string{filepath.Join(dir, "absent"), write("v1l", "268435456")}, 268435456 / 10 * 9},
		{"no cgroup files", []string{filepath.Join(dir, "absent")}, 0},
	}
	for _, tc := range cases {
		if got := setMemoryLimit(tc.files); got != tc.want {
			t.Errorf("%s: limit %d, want %d", tc.name, got, tc.want)
		}
		if tc.want != 0 && debug.SetMemoryLimit(-1) != tc.want {
			t.Errorf("%s: runtime limit not set", tc.name)
		}
	}
	t.Setenv("GOMEMLIMIT", "100MiB")
	if got := setMemoryLimit([]string{write("v2b", "536870912")}); got != 0 {
		t.Errorf("GOMEMLIMIT set, yet the cgroup limit was applied: %d", got)
	}
}
