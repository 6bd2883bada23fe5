package proxy_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/metering"
	"github.com/flowgate/flowgate/quota"
	"go.uber.org/zap"
)

// 10,000 requests with distinct random workflow ids, every one a run that
// is metered (and, under a default quota, refused past its budget), leave
// at most max_workflows + 1 ("other") workflow_id label values.
func TestWorkflowLabelsBounded(t *testing.T) {
	up, err := fakeflow.Start("127.0.0.1:0", fakeflow.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	qc := config.Quota{OnRedisError: "open", Default: config.QuotaPolicy{Budgets: []config.Budget{{Window: config.Duration(3600e9), Executions: 1}}}}
	q, err := quota.New(quota.Options{Config: qc, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	g := newGWWith(t, []string{up.URL()}, func(c *config.Config) { c.Quota = qc }, func(o *gwOptions) {
		o.Quota, o.Prices = q, metering.Bundled()
	})
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make(chan string, 10000)
	for range 10000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		ids <- fmt.Sprintf("%x-%x-%x-%x-%x", b[:4], b[4:6], b[6:8], b[8:10], b[10:])
	}
	close(ids)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				for range 2 { // the second is refused by the default budget
					res, err := client.Post(g.URL+"/api/v1/prediction/"+id, "application/json", strings.NewReader(`{"question":"hi"}`))
					if err != nil {
						t.Error(err)
						return
					}
					res.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labelled := map[string]bool{}
	for _, mf := range mfs {
		values := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "workflow_id" {
					values[l.GetValue()] = true
				}
			}
		}
		if len(values) > 1001 {
			t.Errorf("%s: %d workflow_id values, want at most 1,001", mf.GetName(), len(values))
		}
		if len(values) > 0 {
			labelled[mf.GetName()] = true
		}
		if len(values) > 0 && !values["other"] {
			t.Errorf("%s: no \"other\" after 10,000 ids", mf.GetName())
		}
	}
	for _, name := range []string{"flowgate_quota_rejections_total", "flowgate_tokens_total", "flowise_workflow_executions_total", "flowise_workflow_execution_duration_seconds"} {
		if !labelled[name] {
			t.Errorf("%s has no workflow_id series: the bound was not exercised", name)
		}
	}
}
