package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The cache-hit target (flowgate-cache) is measured with the JSON
// scenario's wrk load unchanged: the same input over every connection, so
// every request after the first is answered from the cache. That is
// checked, not assumed: before each measured run a request must come back
// with X-Cache: HIT, and over the run flowgate's own counters
// (flowgate_cache_requests_total) must show as many hits as wrk completed
// requests and not one miss, refresh, bypass or coalesced answer (a
// coalesced answer waited on a request sent upstream). fakeflow's CPU per
// request in the table shows the same from the other side.

// probeHit sends the request wrk sends, twice: the first may store the
// answer, the second must be served from the cache.
func probeHit(url string) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	var xc string
	for range 2 {
		h, err := sendAsWrk(c, url, "cache probe")
		if err != nil {
			return err
		}
		xc = h.Get("X-Cache")
	}
	if xc != "HIT" {
		return fmt.Errorf("the same request twice: the second has X-Cache %q, want HIT (is the cache on for %s?)", xc, flowID)
	}
	return nil
}

// sendAsWrk posts the request wrk sends and returns the answer's headers;
// anything but a 200 is an error named after what probed.
func sendAsWrk(c *http.Client, url, what string) (http.Header, error) {
	req, err := http.NewRequest(http.MethodPost, url+predictPath, strings.NewReader(jsonBody))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", what, resp.StatusCode)
	}
	return resp.Header, nil
}

// cacheCounts are flowgate_cache_requests_total by result.
type cacheCounts map[string]int64

const cacheMetric = "flowgate_cache_requests_total"

// readCacheCounts scrapes flowgate's /metrics.
func readCacheCounts(metricsURL string) (cacheCounts, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	return parseCacheCounts(resp.Body)
}

// parseCacheCounts reads lines such as
// flowgate_cache_requests_total{result="hit"} 12345 from the Prometheus
// text format.
func parseCacheCounts(r io.Reader) (cacheCounts, error) {
	out := cacheCounts{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		rest, ok := strings.CutPrefix(l, cacheMetric+`{result="`)
		if !ok {
			continue
		}
		result, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("metrics: unexpected line %q", l)
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %v", l, err)
		}
		out[result] = int64(f)
	}
	return out, sc.Err()
}

// cacheDelta is what the cache counted during one measured run.
type cacheDelta struct {
	Hits   int64
	Others map[string]int64 `json:",omitempty"` // any other result that moved (must stay empty)
}

func (c cacheCounts) since(before cacheCounts) cacheDelta {
	d := cacheDelta{Hits: c["hit"] - before["hit"]}
	for k, v := range c {
		if k == "hit" {
			continue
		}
		if n := v - before[k]; n != 0 {
			if d.Others == nil {
				d.Others = map[string]int64{}
			}
			d.Others[k] = n
		}
	}
	return d
}

// allHits checks that every request wrk completed was a hit: no other
// result moved, and the hits are wrk's requests plus at most one in flight
// per connection when the measured run stopped and one when the warm-up
// before it stopped (counted by flowgate, not by wrk; the counters are
// read between the two).
func (d cacheDelta) allHits(requests, conns int64) error {
	if len(d.Others) > 0 {
		return fmt.Errorf("besides %d hits, flowgate counted %v", d.Hits, d.Others)
	}
	if d.Hits < requests || d.Hits > requests+2*conns {
		return fmt.Errorf("flowgate counted %d hits for %d requests completed by wrk over %d connections", d.Hits, requests, conns)
	}
	if requests == 0 {
		return errors.New("no request completed")
	}
	return nil
}

func (d *cacheDelta) String() string {
	if d == nil {
		return ""
	}
	return fmt.Sprintf("  cache: %d hits, others %v", d.Hits, d.Others)
}
