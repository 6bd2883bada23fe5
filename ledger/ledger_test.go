package ledger

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestReport is the behaviour both stores share: each case adds its
// records to a fresh ledger, then checks its reports.
func TestReport(t *testing.T) {
	const wf = "0f3b6c1e-9a4d-4c5b-8e2f-1a2b3c4d5e6f"
	plus2 := time.FixedZone("UTC+2", 2*3600)
	minus8 := time.FixedZone("UTC-8", -8*3600)
	type check struct {
		q    Query
		want Report
	}
	cases := []struct {
		name    string
		adds    []Record
		checks  []check
		invalid int // records OnError must see as ErrInvalidRecord
	}{
		{
			name: "unknown workflow: zeros, no days",
			adds: []Record{{Workflow: "other", Time: on(0, 1), Executions: 1, DurationMs: 5}},
			checks: []check{{
				q:    Query{Workflow: wf, From: on(0, 0), To: on(6, 0)},
				want: Report{WorkflowID: wf, From: date(0), To: date(6), UsageByDay: []Day{}},
			}},
		},
		{
			name: "one execution",
			adds: []Record{{Workflow: wf, Time: on(2, 10), Executions: 1, InputTokens: 120, OutputTokens: 30, CostNano: 1500, DurationMs: 840}},
			checks: []check{{
				q: Query{Workflow: wf, From: on(0, 0), To: on(6, 0)},
				want: Report{
					WorkflowID: wf, From: date(0), To: date(6),
					TotalExecutions: 1, TotalTokens: 150, InputTokens: 120, OutputTokens: 30,
					TotalCost: 1500e-9, TotalCostNano: 1500, AverageDuration: 840,
					UsageByDay: []Day{{Date: date(2), Executions: 1, Tokens: 150, Cost: 1500e-9}},
				},
			}},
		},
		{
			name: "days and ranges",
			adds: []Record{
				{Workflow: wf, Time: on(0, 1), Executions: 1, InputTokens: 1, DurationMs: 10},
				{Workflow: wf, Time: on(1, 2), Executions: 1, InputTokens: 2, DurationMs: 20},
				{Workflow: wf, Time: on(1, 23), Executions: 1, InputTokens: 3, DurationMs: 30},
				{Workflow: wf, Time: on(3, 0), Executions: 1, OutputTokens: 4, DurationMs: 40},
				{Workflow: wf, Time: on(9, 0), Executions: 1, OutputTokens: 5, DurationMs: 50},
			},
			checks: []check{
				{
					q: Query{Workflow: wf, From: on(1, 0), To: on(3, 0)},
					want: Report{
						WorkflowID: wf, From: date(1), To: date(3),
						TotalExecutions: 3, TotalTokens: 9, InputTokens: 5, OutputTokens: 4, AverageDuration: 30,
						UsageByDay: []Day{
							{Date: date(1), Executions: 2, Tokens: 5},
							{Date: date(3), Executions: 1, Tokens: 4},
						},
					},
				},
				{
					q: Query{Workflow: wf, From: on(0, 0), To: on(9, 0)},
					want: Report{
						WorkflowID: wf, From: date(0), To: date(9),
						TotalExecutions: 5, TotalTokens: 15, InputTokens: 6, OutputTokens: 9, AverageDuration: 30,
						UsageByDay: []Day{
							{Date: date(0), Executions: 1, Tokens: 1},
							{Date: date(1), Executions: 2, Tokens: 5},
							{Date: date(3), Executions: 1, Tokens: 4},
							{Date: date(9), Executions: 1, Tokens: 5},
						},
					},
				},
				{
					q:    Query{Workflow: wf, From: on(4, 0), To: on(8, 0)},
					want: Report{WorkflowID: wf, From: date(4), To: date(8), UsageByDay: []Day{}},
				},
				{
					// One day: From and To the same.
					q: Query{Workflow: wf, From: on(9, 0), To: on(9, 0)},
					want: Report{
						WorkflowID: wf, From: date(9), To: date(9),
						TotalExecutions: 1, TotalTokens: 5, OutputTokens: 5, AverageDuration: 50,
						UsageByDay: []Day{{Date: date(9), Executions: 1, Tokens: 5}},
					},
				},
			},
		},
		{
			name: "days are UTC days",
			adds: []Record{
				// 23:59:59.999 UTC is still day 1.
				{Workflow: wf, Time: on(2, 0).Add(-time.Millisecond), Executions: 1},
				// 01:00 at UTC+2 is 23:00 UTC of day 1.
				{Workflow: wf, Time: on(2, 1).In(plus2).Add(-2 * time.Hour), Executions: 1},
				// 00:00 UTC is day 2, whatever the zone it is given in.
				{Workflow: wf, Time: on(2, 0).In(minus8), Executions: 1},
			},
			checks: []check{
				{
					// Query times are truncated to their UTC day: 15:00 of
					// day 1 at UTC-8 is 23:00 UTC, and 23:00 UTC of day 2
					// is 01:00 of day 3 at UTC+2.
					q: Query{Workflow: wf, From: on(1, 15).Add(8 * time.Hour).In(minus8), To: on(2, 23).In(plus2)},
					want: Report{
						WorkflowID: wf, From: date(1), To: date(2), TotalExecutions: 3,
						UsageByDay: []Day{{Date: date(1), Executions: 2}, {Date: date(2), Executions: 1}},
					},
				},
			},
		},
		{
			name: "averages, cache hits, rejections, estimates",
			adds: []Record{
				{Workflow: wf, Time: on(0, 1), Executions: 1, EstimatedExecutions: 1, DurationMs: 100},
				{Workflow: wf, Time: on(0, 2), Executions: 1, DurationMs: 301},
				{Workflow: wf, Time: on(0, 3), CacheHits: 1},
				{Workflow: wf, Time: on(1, 3), Rejected: 1},
				{Workflow: wf, Time: on(1, 4), CacheHits: 2},
			},
			checks: []check{{
				q: Query{Workflow: wf, From: on(0, 0), To: on(1, 0)},
				want: Report{
					WorkflowID: wf, From: date(0), To: date(1),
					TotalExecutions: 2, EstimatedExecutions: 1, CacheHits: 3, Rejected: 1, AverageDuration: 200.5,
					UsageByDay: []Day{
						{Date: date(0), Executions: 2, CacheHits: 1},
						{Date: date(1), CacheHits: 2, Rejected: 1},
					},
				},
			}, {
				// Only a cache hit: no executions, so no average (0, not NaN).
				q: Query{Workflow: wf, From: on(1, 0), To: on(1, 0)},
				want: Report{
					WorkflowID: wf, From: date(1), To: date(1), CacheHits: 2, Rejected: 1,
					UsageByDay: []Day{{Date: date(1), CacheHits: 2, Rejected: 1}},
				},
			}},
		},
		{
			name: "cost from the exact nano sum",
			adds: []Record{
				{Workflow: wf, Time: on(0, 1), Executions: 1, CostNano: 100_000_000},
				{Workflow: wf, Time: on(1, 1), Executions: 1, CostNano: 199_999_999},
				{Workflow: wf, Time: on(1, 2), Executions: 1, CostNano: 1},
				{Workflow: wf, Time: on(2, 2), Executions: 1, CostNano: 12_345_678_901_234},
			},
			checks: []check{{
				// 0.1 + 0.2 in floats is 0.30000000000000004: the total is
				// the nano sum's 0.3.
				q: Query{Workflow: wf, From: on(0, 0), To: on(1, 0)},
				want: Report{
					WorkflowID: wf, From: date(0), To: date(1), TotalExecutions: 3,
					TotalCost: 0.3, TotalCostNano: 300_000_000,
					UsageByDay: []Day{
						{Date: date(0), Executions: 1, Cost: 0.1},
						{Date: date(1), Executions: 2, Cost: 0.2},
					},
				},
			}, {
				q: Query{Workflow: wf, From: on(2, 0), To: on(2, 0)},
				want: Report{
					WorkflowID: wf, From: date(2), To: date(2), TotalExecutions: 1,
					TotalCost: 12345.678901234, TotalCostNano: 12_345_678_901_234,
					UsageByDay: []Day{{Date: date(2), Executions: 1, Cost: 12345.678901234}},
				},
			}},
		},
		{
			name: "callers",
			adds: []Record{
				{Workflow: wf, Caller: "c-a", Time: on(0, 1), Executions: 1, InputTokens: 10, DurationMs: 100},
				{Workflow: wf, Caller: "c-a", Time: on(1, 1), Executions: 1, InputTokens: 20, DurationMs: 200},
				{Workflow: wf, Caller: "c-b", Time: on(1, 2), Executions: 1, InputTokens: 40, DurationMs: 400},
				{Workflow: wf, Time: on(1, 3), CacheHits: 1},
				{Workflow: wf, Caller: "c-b", Time: on(1, 4), Rejected: 1},
			},
			checks: []check{
				{
					q: Query{Workflow: wf, From: on(0, 0), To: on(1, 0)},
					want: Report{
						WorkflowID: wf, From: date(0), To: date(1),
						TotalExecutions: 3, TotalTokens: 70, InputTokens: 70, CacheHits: 1, Rejected: 1,
						AverageDuration: 700.0 / 3,
						UsageByDay: []Day{
							{Date: date(0), Executions: 1, Tokens: 10},
							{Date: date(1), Executions: 2, Tokens: 60, CacheHits: 1, Rejected: 1},
						},
					},
				},
				{
					q: Query{Workflow: wf, Caller: "c-a", From: on(0, 0), To: on(1, 0)},
					want: Report{
						WorkflowID: wf, Caller: "c-a", From: date(0), To: date(1),
						TotalExecutions: 2, TotalTokens: 30, InputTokens: 30, AverageDuration: 150,
						UsageByDay: []Day{
							{Date: date(0), Executions: 1, Tokens: 10},
							{Date: date(1), Executions: 1, Tokens: 20},
						},
					},
				},
				{
					q: Query{Workflow: wf, Caller: "c-b", From: on(0, 0), To: on(1, 0)},
					want: Report{
						WorkflowID: wf, Caller: "c-b", From: date(0), To: date(1),
						TotalExecutions: 1, TotalTokens: 40, InputTokens: 40, Rejected: 1, AverageDuration: 400,
						UsageByDay: []Day{{Date: date(1), Executions: 1, Tokens: 40, Rejected: 1}},
					},
				},
				{
					q:    Query{Workflow: wf, Caller: "c-unknown", From: on(0, 0), To: on(1, 0)},
					want: Report{WorkflowID: wf, Caller: "c-unknown", From: date(0), To: date(1), UsageByDay: []Day{}},
				},
			},
		},
		{
			name: "workflows that share a prefix stay apart",
			adds: []Record{
				{Workflow: "flow", Time: on(0, 1), Executions: 1},
				{Workflow: "flow-2", Time: on(0, 1), Executions: 2},
				{Workflow: "flo", Caller: "w", Time: on(0, 1), Executions: 4},
			},
			checks: []check{
				{
					q:    Query{Workflow: "flow", From: on(0, 0), To: on(0, 0)},
					want: Report{WorkflowID: "flow", From: date(0), To: date(0), TotalExecutions: 1, UsageByDay: []Day{{Date: date(0), Executions: 1}}},
				},
				{
					q:    Query{Workflow: "flo", From: on(0, 0), To: on(0, 0)},
					want: Report{WorkflowID: "flo", From: date(0), To: date(0), TotalExecutions: 4, UsageByDay: []Day{{Date: date(0), Executions: 4}}},
				},
			},
		},
		{
			name: "invalid and empty records are not recorded",
			adds: []Record{
				{Workflow: "", Time: on(0, 1), Executions: 1},
				{Workflow: "a}b", Time: on(0, 1), Executions: 1},
				{Workflow: "a\x00b", Time: on(0, 1), Executions: 1},
				{Workflow: wf, Caller: strings.Repeat("c", maxIDLen+1), Time: on(0, 1), Executions: 1},
				{Workflow: wf, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Executions: 1},
				{Workflow: wf, Time: on(0, 2)}, // nothing to add
			},
			invalid: 5,
			checks: []check{
				{
					// The record with the long caller still counts in the
					// workflow's totals: only its caller key is refused.
					q:    Query{Workflow: wf, From: on(0, 0), To: on(0, 0)},
					want: Report{WorkflowID: wf, From: date(0), To: date(0), TotalExecutions: 1, UsageByDay: []Day{{Date: date(0), Executions: 1}}},
				},
				{
					q:    Query{Workflow: "a}b", From: on(0, 0), To: on(0, 0)},
					want: Report{WorkflowID: "a}b", From: date(0), To: date(0), UsageByDay: []Day{}},
				},
			},
		},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var errs errCount
					l := be.open(t, testOptions(t, &errs))
					for _, r := range tc.adds {
						l.Add(r)
					}
					for _, c := range tc.checks {
						got := report(t, l, c.q)
						if !reflect.DeepEqual(got, c.want) {
							t.Errorf("Report(%s %q %s..%s):\n got %s\nwant %s", c.q.Workflow, c.q.Caller,
								c.q.From.Format(time.RFC3339), c.q.To.Format(time.RFC3339), jsonString(t, got), jsonString(t, c.want))
						}
						// Never NaN (json.Marshal refuses it), never a null list.
						if s := jsonString(t, got); !strings.Contains(s, `"usageByDay":[`) {
							t.Errorf("JSON %s has no usageByDay list", s)
						}
					}
					if n := errs.count(ErrInvalidRecord); n != tc.invalid {
						t.Errorf("OnError saw %d ErrInvalidRecord, want %d (all: %v)", n, tc.invalid, errs.errs)
					}
				})
			}
		})
	}
}

// An empty report's JSON is the old seed's shape, with zeros and [].
func TestEmptyReportJSON(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			l := be.open(t, testOptions(t, nil))
			got := jsonString(t, report(t, l, Query{Workflow: "nothing", From: on(0, 0), To: on(29, 0)}))
			want := `{"workflowId":"nothing","from":"2026-03-01","to":"2026-03-30","totalExecutions":0,"totalTokens":0,` +
				`"inputTokens":0,"outputTokens":0,"totalCost":0,"totalCostNano":0,"averageDuration":0,"cacheHits":0,` +
				`"rejected":0,"estimatedExecutions":0,"usageByDay":[]}`
			if got != want {
				t.Errorf("JSON:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestReports(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			l := be.open(t, testOptions(t, nil))
			ctx := context.Background()
			empty, err := l.Reports(ctx, on(0, 0), on(9, 0))
			if err != nil {
				t.Fatal(err)
			}
			if s := jsonString(t, empty); s != "[]" {
				t.Errorf("Reports of an empty ledger = %s, want []", s)
			}
			for _, r := range []Record{
				{Workflow: "wf-b", Caller: "x", Time: on(1, 0), Executions: 1, InputTokens: 5, DurationMs: 10},
				{Workflow: "wf-b", Caller: "y", Time: on(2, 0), Executions: 1, OutputTokens: 7, DurationMs: 30},
				{Workflow: "wf-a", Time: on(0, 0), CacheHits: 3},
				{Workflow: "wf-a", Time: on(9, 23), Rejected: 1},
				{Workflow: "wf-a", Time: on(10, 0), Executions: 1},  // after the range
				{Workflow: "wf-c", Time: on(-1, 23), Executions: 1}, // before it
				{Workflow: "wf-d", Caller: "z", Time: on(20, 0), Executions: 1},
			} {
				l.Add(r)
			}
			got, err := l.Reports(ctx, on(0, 0), on(9, 0))
			if err != nil {
				t.Fatal(err)
			}
			var want []Report
			for _, wf := range []string{"wf-a", "wf-b"} {
				want = append(want, report(t, l, Query{Workflow: wf, From: on(0, 0), To: on(9, 0)}))
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Reports:\n got %s\nwant %s", jsonString(t, got), jsonString(t, want))
			}
			if want[0].CacheHits != 3 || want[0].Rejected != 1 || want[0].TotalExecutions != 0 ||
				want[1].TotalExecutions != 2 || want[1].TotalTokens != 12 || want[1].AverageDuration != 20 {
				t.Errorf("unexpected reports %s", jsonString(t, want))
			}
		})
	}
}

func TestInvalidQueries(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			l := be.open(t, testOptions(t, nil))
			ctx := context.Background()
			for _, tc := range []struct {
				name string
				q    Query
				ok   bool
			}{
				{"no workflow", Query{From: on(0, 0), To: on(1, 0)}, false},
				{"no from", Query{Workflow: "w", To: on(1, 0)}, false},
				{"no to", Query{Workflow: "w", From: on(1, 0)}, false},
				{"to before from", Query{Workflow: "w", From: on(1, 0), To: on(0, 23)}, false},
				{"401 days apart", Query{Workflow: "w", From: on(0, 0), To: on(401, 0)}, false},
				{"400 days apart", Query{Workflow: "w", From: on(0, 0), To: on(400, 23)}, true},
				{"same day, to earlier in it", Query{Workflow: "w", From: on(0, 12), To: on(0, 1)}, true},
			} {
				_, err := l.Report(ctx, tc.q)
				if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrInvalidQuery) {
					t.Errorf("%s: Report err = %v, want ok=%v", tc.name, err, tc.ok)
				}
				if tc.q.Workflow != "" {
					_, err = l.Reports(ctx, tc.q.From, tc.q.To)
					if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrInvalidQuery) {
						t.Errorf("%s: Reports err = %v, want ok=%v", tc.name, err, tc.ok)
					}
				}
			}
		})
	}
}

// 8 goroutines × 1000 Adds while the loop writes: the totals are exact.
func TestConcurrentAdds(t *testing.T) {
	const goroutines, adds = 8, 1000
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			l := be.open(t, testOptions(t, nil))
			done := make(chan struct{})
			for g := range goroutines {
				go func() {
					defer func() { done <- struct{}{} }()
					for i := range adds {
						caller := ""
						if i%2 == 0 {
							caller = []string{"c0", "c1", "c2", "c3"}[g%4]
						}
						l.Add(Record{
							Workflow: "wf", Caller: caller, Time: on(i%3, g),
							Executions: 1, InputTokens: 2, OutputTokens: 3, CostNano: 7, DurationMs: int64(g),
						})
						if i%100 == 0 {
							// Reports and flushes race with the Adds too.
							_ = l.Flush(context.Background())
						}
					}
				}()
			}
			for range goroutines {
				<-done
			}
			got := report(t, l, Query{Workflow: "wf", From: on(0, 0), To: on(2, 0)})
			const n = goroutines * adds
			if got.TotalExecutions != n || got.InputTokens != 2*n || got.OutputTokens != 3*n || got.TotalCostNano != 7*n {
				t.Errorf("totals %s, want %d executions", jsonString(t, got), n)
			}
			// Σ g × adds / n = (0+…+7)/8.
			if got.AverageDuration != 3.5 {
				t.Errorf("averageDuration = %v, want 3.5", got.AverageDuration)
			}
			var perDay int64
			for _, d := range got.UsageByDay {
				perDay += d.Executions
			}
			if len(got.UsageByDay) != 3 || perDay != n {
				t.Errorf("usageByDay %s", jsonString(t, got.UsageByDay))
			}
			// Goroutines 0 and 4 used c0, each on half its adds.
			c0 := report(t, l, Query{Workflow: "wf", Caller: "c0", From: on(0, 0), To: on(2, 0)})
			if c0.TotalExecutions != adds {
				t.Errorf("caller c0: %d executions, want %d", c0.TotalExecutions, adds)
			}
		})
	}
}

func TestClose(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			var errs errCount
			l := be.open(t, testOptions(t, &errs))
			eventually(t, 5*time.Second, "no loop goroutine in the stacks", func() bool { return loopRunning(coreOf(l)) })
			l.Add(Record{Workflow: "w", Time: on(0, 0), Executions: 1})
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			loopGone(t, coreOf(l))
			l.Add(Record{Workflow: "w", Time: on(0, 0), Executions: 1})
			if n := errs.count(ErrClosed); n != 1 {
				t.Errorf("Add after Close: OnError saw %d ErrClosed, want 1", n)
			}
			if err := l.Flush(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("Flush after Close = %v, want ErrClosed", err)
			}
			if _, err := l.Report(context.Background(), Query{Workflow: "w", From: on(0, 0), To: on(0, 0)}); !errors.Is(err, ErrClosed) {
				t.Errorf("Report after Close = %v, want ErrClosed", err)
			}
		})
	}
}
