package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryFiles hold the container's memory limit, cgroup v2 then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// setMemoryLimit gives the Go runtime a soft limit at 90% of the
// container's memory limit, unless GOMEMLIMIT is set. flowgate runs with
// GOGC=400 for CPU's sake; near the limit the runtime then collects more
// often instead of letting the heap grow into an OOM kill. It returns the
// limit set, or 0.
func setMemoryLimit(files []string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(s, 10, 64)
		// "max" (v2) and v1's near-MaxInt64 mean no limit.
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0
		}
		limit := n / 10 * 9
		debug.SetMemoryLimit(limit)
		return limit
	}
	return 0
}
