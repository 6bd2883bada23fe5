package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The quota targets (flowgate-quota, flowgate-quota-redis) are measured
// with the JSON scenario's wrk load unchanged. That every request went
// the admitted path is checked, not assumed: before each measured run a
// request sent as wrk sends it must come back 200 with the RateLimit
// headers of the quota, and over the run flowgate's own counters must show
// no refusal (flowgate_quota_rejections_total) and no failed Redis call
// (flowgate_quota_redis_errors_total: with one, that request would have
// been decided in the process instead). With Redis, the redis-server's
// INFO commandstats must show one admit script (EVALSHA) per request wrk
// completed, plus at most one in flight per connection at the end of the
// warm-up and of the run: one round trip per request. Its other commands
// are counted too: the usage ledger's batched writes (MULTI/EXEC), off the
// request path. redis-server's CPU per request is reported beside
// flowgate's.

// probeQuota sends the request wrk sends: it must be admitted, with the
// RateLimit headers a limited workflow's answers carry.
func probeQuota(url string) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	h, err := sendAsWrk(c, url, "quota probe")
	if err != nil {
		return err
	}
	if h.Get("Ratelimit-Limit") == "" || h.Get("Ratelimit-Remaining") == "" {
		return fmt.Errorf("quota probe: no RateLimit headers in the answer (is the quota on for %s?)", flowID)
	}
	return nil
}

// quotaMetrics are the counters of flowgate that must not move while a
// quota target is measured.
var quotaMetrics = []string{"flowgate_quota_rejections_total", "flowgate_quota_redis_errors_total"}

// readMetricSums scrapes flowgate's /metrics for the sum over every series
// of each named counter.
func readMetricSums(metricsURL string, names []string) (map[string]float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	return parseMetricSums(resp.Body, names)
}

// parseMetricSums reads lines such as
// flowgate_quota_rejections_total{reason="rate_limited",workflow_id="x"} 3
// from the Prometheus text format; a counter with no series sums to 0.
func parseMetricSums(r io.Reader, names []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, n := range names {
		out[n] = 0
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.IndexAny(l, "{ ")
		if i < 0 {
			continue
		}
		if _, ok := out[l[:i]]; !ok {
			continue
		}
		j := strings.LastIndexByte(l, ' ')
		f, err := strconv.ParseFloat(l[j+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %v", l, err)
		}
		out[l[:i]] += f
	}
	return out, sc.Err()
}

// quotaMoved names the counters that moved between two scrapes.
func quotaMoved(before, after map[string]float64) error {
	var moved []string
	for _, n := range quotaMetrics {
		if d := after[n] - before[n]; d != 0 {
			moved = append(moved, fmt.Sprintf("%s +%.0f", n, d))
		}
	}
	if len(moved) > 0 {
		return fmt.Errorf("flowgate counted %s", strings.Join(moved, ", "))
	}
	return nil
}

// ---- the redis-server of flowgate-quota-redis ------------------------------

// redisServer is a redis-server the harness started: no persistence, on a
// loopback port, its files in the run's directory.
type redisServer struct {
	p    *proc
	addr string
	rdb  *redis.Client
}

// startRedis starts the run's redis-server, once.
func (e *env) startRedis() (*redisServer, error) {
	if e.redis != nil {
		return e.redis, nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%s needs redis-server: %w (apt-get install redis-server)", quotaRedisTarget, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.dir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("redis-server", bin, []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", dir, "--loglevel", "notice",
	}, nil, filepath.Join(dir, "redis.log"), false)
	if err != nil {
		return nil, err
	}
	rs := &redisServer{p: p, addr: addr, rdb: redis.NewClient(&redis.Options{Addr: addr})}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = rs.rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			rs.stop()
			return nil, fmt.Errorf("redis-server on %s: not ready: %v (log in %s)", addr, err, dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logf("redis-server listening on %s", addr)
	e.redis = rs
	return rs, nil
}

// stopRedis ends the run's redis-server, if it was started.
func (e *env) stopRedis() {
	if e.redis != nil {
		e.redis.stop()
		e.redis = nil
	}
}

func (rs *redisServer) stop() {
	_ = rs.rdb.Close()
	rs.p.stop()
}

// redisCounts are what redis-server counted so far, from INFO
// commandstats, and its CPU time.
type redisCounts struct {
	Admits       int64 // EVALSHA and EVAL calls that did not fail (the quota's admit script)
	Transactions int64 // EXEC calls (the usage ledger's batched writes)
	Commands     int64 // every command, those run inside scripts and transactions included
	CPU          time.Duration
}

func (rs *redisServer) counts() (redisCounts, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := rs.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return redisCounts{}, fmt.Errorf("redis INFO commandstats: %w", err)
	}
	c, err := parseCommandStats(info)
	c.CPU = rs.p.cpuTime()
	return c, err
}

// parseCommandStats reads lines such as
// cmdstat_evalsha:calls=12,usec=80,usec_per_call=6.67,rejected_calls=0,failed_calls=1
// (a failed EVALSHA is a NOSCRIPT, answered by go-redis with an EVAL).
func parseCommandStats(info string) (redisCounts, error) {
	var c redisCounts
	for _, l := range strings.Split(info, "\n") {
		l = strings.TrimSpace(l)
		rest, ok := strings.CutPrefix(l, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			return c, fmt.Errorf("redis commandstats: unexpected line %q", l)
		}
		var calls, failed, rejected int64
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				calls = n
			case "failed_calls":
				failed = n
			case "rejected_calls":
				rejected = n
			}
		}
		if name == "info" {
			continue // the harness's own
		}
		c.Commands += calls
		switch name {
		case "evalsha", "eval":
			c.Admits += calls - failed - rejected
		case "exec":
			c.Transactions += calls
		}
	}
	if c.Commands == 0 && !strings.Contains(info, "# Commandstats") {
		return c, errors.New("redis commandstats: no section in the answer")
	}
	return c, nil
}

// redisDelta is what redis-server counted during one measured run.
type redisDelta struct {
	Admits, Transactions, Commands int64
	CPUus                          float64 // redis-server's CPU over the run, µs
}

func (c redisCounts) since(b redisCounts) redisDelta {
	return redisDelta{Admits: c.Admits - b.Admits, Transactions: c.Transactions - b.Transactions,
		Commands: c.Commands - b.Commands, CPUus: us(c.CPU - b.CPU)}
}

// oneAdmitEach checks that the requests wrk completed each made one admit
// round trip: as many as the requests, plus at most one in flight per
// connection at the end of the warm-up (the counters are read between the
// two) and one at the end of the run.
func (d redisDelta) oneAdmitEach(requests, conns int64) error {
	if requests == 0 {
		return errors.New("no request completed")
	}
	if d.Admits < requests || d.Admits > requests+2*conns {
		return fmt.Errorf("redis-server ran %d admit scripts for %d requests completed by wrk over %d connections", d.Admits, requests, conns)
	}
	return nil
}

func (d *redisDelta) String() string {
	if d == nil {
		return ""
	}
	return fmt.Sprintf("  redis: %d admits, %d ledger transactions, %d commands, %.2f s CPU", d.Admits, d.Transactions, d.Commands, d.CPUus/1e6)
}
