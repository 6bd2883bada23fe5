package main

import "fmt"

// requestsMetric is flowgate's request counter: recorded on every request
// with the metrics on, absent with them off.
const requestsMetric = "flowgate_requests_total"

// comparesMetrics reports whether a target is one side of the metrics
// comparison (plain flowgate: on; noMetricsTarget: off), whose metrics are
// checked in every round of the JSON scenario.
func comparesMetrics(name string) bool { return name == "flowgate" || name == noMetricsTarget }

// readRequestsCounted is the sum of flowgate_requests_total's series.
func readRequestsCounted(metricsURL string) (float64, error) {
	m, err := readMetricSums(metricsURL, []string{requestsMetric})
	if err != nil {
		return 0, err
	}
	return m[requestsMetric], nil
}

// metricsAsConfigured checks what a target's request counter did while wrk
// completed requests (conns in flight): with the metrics on it counted
// them all (less at most the requests still in flight at the end; more by
// at most those of the warm-up's end and the run's), with them off it
// has no series at all.
func metricsAsConfigured(name string, before, after float64, requests, conns int64) error {
	d := after - before
	if name == noMetricsTarget {
		if after != 0 {
			return fmt.Errorf("metrics are off, yet %s counts %.0f requests (%.0f during the run)", requestsMetric, after, d)
		}
		return nil
	}
	if d < float64(requests-conns) || d > float64(requests+2*conns) {
		return fmt.Errorf("metrics are on, yet %s counted %.0f requests during a run of %d", requestsMetric, d, requests)
	}
	return nil
}
