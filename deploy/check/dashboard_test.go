package check

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// The Grafana dashboard (dashboards/flowgate.json), its provisioning and
// Prometheus's config. How the compose stack mounts them is checked in
// docker_test.go (TestComposeProdMonitoring).
const (
	dashboardFile     = "../../dashboards/flowgate.json"
	grafanaDir        = "../grafana/provisioning"
	prometheusConfig  = "../prometheus/prometheus.yml"
	prometheusAlerts  = "../prometheus/alerts.yml"
	grafanaDashboards = "/var/lib/grafana/dashboards"
)

// ---- the dashboard, read with plain encoding/json -------------------------

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H, W, X, Y int
}

type dashTarget struct {
	RefID      string `json:"refId"`
	Expr       string `json:"expr"`
	Datasource *dsRef `json:"datasource"`
	Format     string `json:"format"`
	Instant    bool   `json:"instant"`
}

type dashPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  *dsRef          `json:"datasource"`
	GridPos     *gridPos        `json:"gridPos"`
	TimeFrom    string          `json:"timeFrom"`
	Targets     []dashTarget    `json:"targets"`
	Panels      []dashPanel     `json:"panels"` // a collapsed row's panels
	Options     json.RawMessage `json:"options"`
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Thresholds *struct {
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

type dashVariable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	Definition string `json:"definition"`
	Datasource *dsRef `json:"datasource"`
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
}

type dashJSON struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) ([]byte, *dashJSON) {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashJSON
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return raw, &d
}

// allPanels flattens rows: top-level panels plus those of collapsed rows.
func allPanels(d *dashJSON) []dashPanel {
	var out []dashPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// buildErrs reports whether err holds real errors. QUIRK of
// grafana-foundation-sdk v0.0.22: UnmarshalJSONStrict returns its
// cog.BuildErrors slice as an error even when it is empty, so a non-nil
// error with no entries is success.
func buildErrs(err error) error {
	if err == nil {
		return nil
	}
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

// The dashboard decodes strictly into the Grafana Foundation SDK's types
// (unknown fields, wrong types and missing required options fail) and
// passes its Validate. The SDK's types are used for this only: the panel
// checks below read the file with encoding/json.
func TestDashboardStrictSchema(t *testing.T) {
	raw, _ := readDashboard(t)
	plugins.RegisterDefaultPlugins()
	var d dashboard.Dashboard
	if err := buildErrs(d.UnmarshalJSONStrict(raw)); err != nil {
		t.Fatalf("strict decode of %s:\n%v", dashboardFile, err)
	}
	if err := buildErrs(d.Validate()); err != nil {
		t.Fatalf("%s does not validate:\n%v", dashboardFile, err)
	}
}

func TestDashboardShape(t *testing.T) {
	raw, d := readDashboard(t)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	if _, wrapped := top["dashboard"]; wrapped {
		t.Error(`the dashboard is wrapped in {"dashboard": ...}: Grafana's provisioning and import want the dashboard itself`)
	}
	if d.UID != "flowgate" || d.Title != "flowgate" {
		t.Errorf("uid %q, title %q: want flowgate, flowgate", d.UID, d.Title)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d: want 39 or later", d.SchemaVersion)
	}

	// Variables.
	vars := map[string]dashVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || v.Query != "prometheus" {
		t.Errorf("variable datasource: %+v, want type datasource, query prometheus", v)
	}
	for name, query := range map[string]string{
		"instance":    "label_values(flowgate_requests_total, instance)",
		"workflow_id": "label_values(flowise_workflow_executions_total, workflow_id)",
	} {
		v, ok := vars[name]
		if !ok {
			t.Errorf("no variable %s", name)
			continue
		}
		q := fmt.Sprint(v.Query)
		if m, isMap := v.Query.(map[string]any); isMap {
			q = fmt.Sprint(m["query"])
		}
		if v.Type != "query" || q != query {
			t.Errorf("variable %s: type %q query %q, want query %q", name, v.Type, q, query)
		}
		if !v.Multi || !v.IncludeAll || v.AllValue != ".*" {
			t.Errorf("variable %s: multi %v includeAll %v allValue %q, want true, true, .*", name, v.Multi, v.IncludeAll, v.AllValue)
		}
		if v.Datasource == nil || *v.Datasource != (dsRef{"prometheus", "${datasource}"}) {
			t.Errorf("variable %s: datasource %+v, want ${datasource}", name, v.Datasource)
		}
	}

	allowed := map[string]bool{"row": true, "timeseries": true, "heatmap": true, "stat": true, "bargauge": true, "table": true}
	want := dsRef{"prometheus", "${datasource}"}
	ids := map[int]string{}
	var boxes []dashPanel
	for _, p := range allPanels(d) {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if !allowed[p.Type] {
			t.Errorf("%s: type %q (legacy or unexpected; want timeseries, heatmap, stat, bargauge, table)", name, p.Type)
		}
		if p.ID <= 0 {
			t.Errorf("%s: no id", name)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("%s: id also used by %q", name, other)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.GridPos == nil {
			t.Errorf("%s: no gridPos", name)
			continue
		}
		g := *p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", name, g)
		}
		boxes = append(boxes, p)
		if p.Type == "row" {
			continue
		}
		if !strings.Contains(p.Description, "?") {
			t.Errorf("%s: the description does not state the question the panel answers: %q", name, p.Description)
		}
		if p.Datasource == nil || *p.Datasource != want {
			t.Errorf("%s: datasource %+v, want %+v", name, p.Datasource, want)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", name)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || *tg.Datasource != want {
				t.Errorf("%s target %s: datasource %+v, want %+v", name, tg.RefID, tg.Datasource, want)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: target refId %q empty or repeated", name, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s target %s: no expr", name, tg.RefID)
			}
			// "Today" panels: an increase over the panel's own range.
			if strings.Contains(tg.Expr, "$__range") && (p.TimeFrom == "" || !tg.Instant) {
				t.Errorf("%s target %s: uses $__range but the panel has no timeFrom (%q) or the query is not instant", name, tg.RefID, p.TimeFrom)
			}
		}
		if p.Type == "heatmap" {
			var o struct {
				Calculate *bool `json:"calculate"`
			}
			_ = json.Unmarshal(p.Options, &o)
			if o.Calculate == nil || *o.Calculate {
				t.Errorf("%s: heatmap over stored buckets needs options.calculate false", name)
			}
			for _, tg := range p.Targets {
				if tg.Format != "heatmap" || !strings.Contains(tg.Expr, "_bucket") || !strings.Contains(tg.Expr, "by (le)") {
					t.Errorf("%s target %s: want format heatmap over sum by (le) of a _bucket series, got format %q expr %q", name, tg.RefID, tg.Format, tg.Expr)
				}
			}
		}
	}
	for i := range boxes {
		for j := i + 1; j < len(boxes); j++ {
			a, b := *boxes[i].GridPos, *boxes[j].GridPos
			if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
				t.Errorf("panels %q %+v and %q %+v overlap", boxes[i].Title, a, boxes[j].Title, b)
			}
		}
	}
}

// thresholdValues returns the panel's threshold steps with a value.
func thresholdValues(p dashPanel) []float64 {
	var out []float64
	if th := p.FieldConfig.Defaults.Thresholds; th != nil {
		for _, s := range th.Steps {
			if s.Value != nil {
				out = append(out, *s.Value)
			}
		}
	}
	return out
}

func hasValue(vs []float64, v float64) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// Panels that carry a threshold the issue asks for.
func TestDashboardThresholds(t *testing.T) {
	_, d := readDashboard(t)
	found := map[string]bool{}
	for _, p := range allPanels(d) {
		for _, tg := range p.Targets {
			switch {
			case strings.Contains(tg.Expr, "flowgate_tls_certificate_expiry_timestamp_seconds"):
				found["expiry"] = true
				if p.FieldConfig.Defaults.Unit != "s" || !strings.Contains(tg.Expr, "time()") {
					t.Errorf("%q: certificate expiry wants seconds left (unit s, minus time()), got unit %q, %q", p.Title, p.FieldConfig.Defaults.Unit, tg.Expr)
				}
				if v := thresholdValues(p); !hasValue(v, 14*86400) || !hasValue(v, 30*86400) {
					t.Errorf("%q: thresholds %v, want 14 days (1209600) and 30 days (2592000)", p.Title, v)
				}
			case strings.Contains(tg.Expr, "flowgate_quota_budget_used_ratio"):
				found["budget"] = true
				if v := thresholdValues(p); !hasValue(v, 0.8) {
					t.Errorf("%q: thresholds %v, want one at 0.8", p.Title, v)
				}
			}
		}
	}
	for _, k := range []string{"expiry", "budget"} {
		if !found[k] {
			t.Errorf("no %s panel", k)
		}
	}
}

// ---- the queries ------------------------------------------------------------

// Metrics that carry a workflow_id label: their selectors must filter on it.
var workflowMetrics = map[string]bool{
	"flowise_workflow_executions_total":                  true,
	"flowise_workflow_execution_duration_seconds_bucket": true,
	"flowise_workflow_execution_duration_seconds_sum":    true,
	"flowise_workflow_execution_duration_seconds_count":  true,
	"flowgate_tokens_total":                              true,
	"flowgate_cost_usd_total":                            true,
	"flowgate_quota_rejections_total":                    true,
	"flowgate_quota_budget_used_ratio":                   true,
	"flowgate_stream_ttft_seconds_bucket":                true,
	"flowgate_stream_ttft_seconds_sum":                   true,
	"flowgate_stream_ttft_seconds_count":                 true,
}

// Histograms by their base name: Prometheus stores only _bucket, _sum and
// _count, so a selector of the bare name matches nothing (the seed's bug).
var histograms = map[string]bool{
	"flowgate_request_duration_seconds":           true,
	"flowise_workflow_execution_duration_seconds": true,
	"flowise_http_request_duration_seconds":       true,
	"flowgate_upstream_ttfb_seconds":              true,
	"flowgate_stream_ttft_seconds":                true,
	"flowgate_stream_frames":                      true,
}

// Every metric the issue asks the dashboard to show.
var wantMetrics = []string{
	"flowgate_requests_total", "flowgate_request_duration_seconds_bucket",
	"flowise_workflow_execution_duration_seconds_bucket", "flowise_node_executions_total",
	"flowise_workflow_executions_total", "flowgate_cache_requests_total",
	"flowgate_tokens_total", "flowgate_cost_usd_total",
	"flowgate_quota_rejections_total", "flowgate_quota_budget_used_ratio",
	"flowgate_upstream_healthy", "flowgate_upstream_in_flight", "flowgate_upstream_failures_total",
	"flowgate_upstream_ttfb_seconds_bucket", "flowgate_stream_ttft_seconds_bucket",
	"flowgate_stream_frames_bucket", "flowgate_responses_cut_total",
	"flowise_memory_usage_bytes", "process_resident_memory_bytes",
	"flowise_cpu_usage_percentage", "process_cpu_seconds_total", "flowise_active_connections",
	"flowgate_tls_certificate_expiry_timestamp_seconds", "flowgate_tls_handshake_errors_total",
	"flowgate_redis_errors_total",
}

// Grafana's interval variables, as the Prometheus evaluation test
// substitutes them.
var intervalVars = strings.NewReplacer("$__rate_interval", "1m", "$__range", "10m", "$__interval", "15s")

// Dashboard variables, as "All" sends them.
var labelVars = strings.NewReplacer("$instance", ".*", "$workflow_id", ".*", "${instance}", ".*", "${workflow_id}", ".*")

var rangeWindow = regexp.MustCompile(`\[([^\]]*)\]`)

func matcher(vs *parser.VectorSelector, name string) *labels.Matcher {
	for _, m := range vs.LabelMatchers {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// unaggregatedRate reports whether e is rate()/increase() of a selector
// straight, with no aggregation: such series keep every label, status
// included.
func unaggregatedRate(e parser.Expr) bool {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			break
		}
		e = p.Expr
	}
	c, ok := e.(*parser.Call)
	if !ok || (c.Func.Name != "rate" && c.Func.Name != "increase" && c.Func.Name != "irate") {
		return false
	}
	_, ok = c.Args[0].(*parser.MatrixSelector)
	return ok
}

// Every expr parses as PromQL (after the substitutions the Prometheus
// evaluation test makes), every selector filters instance=~"$instance"
// and, where the metric has one, workflow_id=~"$workflow_id", rate windows
// are $__rate_interval (or $__range for "today"), histograms are read
// through _bucket with `le` kept, and no ratio divides one series by
// itself.
func TestDashboardQueries(t *testing.T) {
	_, d := readDashboard(t)
	p := parser.NewParser(parser.Options{})
	seen := map[string]bool{}
	n := 0
	for _, pan := range allPanels(d) {
		for _, tg := range pan.Targets {
			n++
			name := fmt.Sprintf("%q target %s", pan.Title, tg.RefID)
			for _, w := range rangeWindow.FindAllStringSubmatch(tg.Expr, -1) {
				if w[1] != "$__rate_interval" && w[1] != "$__range" {
					t.Errorf("%s: range window [%s], want [$__rate_interval] (or [$__range] for a total over the panel's range)", name, w[1])
				}
			}
			// With the variables left in place: "$instance" is a valid
			// regexp string, so the matchers can be checked as written.
			expr, err := p.ParseExpr(intervalVars.Replace(tg.Expr))
			if err != nil {
				t.Errorf("%s: %v\n  %s", name, err, tg.Expr)
				continue
			}
			// As evaluated against Prometheus.
			if _, err := p.ParseExpr(labelVars.Replace(intervalVars.Replace(tg.Expr))); err != nil {
				t.Errorf("%s after substitution: %v", name, err)
			}
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				switch e := node.(type) {
				case *parser.VectorSelector:
					seen[e.Name] = true
					if m := matcher(e, "instance"); m == nil || m.Type != labels.MatchRegexp || m.Value != "$instance" {
						t.Errorf("%s: selector %s does not filter instance=~\"$instance\"", name, e)
					}
					if workflowMetrics[e.Name] {
						if m := matcher(e, "workflow_id"); m == nil || m.Type != labels.MatchRegexp || m.Value != "$workflow_id" {
							t.Errorf("%s: selector %s does not filter workflow_id=~\"$workflow_id\"", name, e)
						}
					}
					if histograms[e.Name] {
						t.Errorf("%s: %s is a histogram's base name, which matches no series: use %s_bucket", name, e.Name, e.Name)
					}
				case *parser.Call:
					if e.Func.Name == "histogram_quantile" {
						a, ok := e.Args[1].(*parser.AggregateExpr)
						if !ok || a.Without || !contains(a.Grouping, "le") {
							t.Errorf("%s: histogram_quantile over %s, want an aggregation by (le, ...)", name, e.Args[1])
						}
					}
				case *parser.BinaryExpr:
					if e.Op == parser.DIV && e.VectorMatching != nil && len(e.VectorMatching.MatchingLabels) == 0 &&
						(unaggregatedRate(e.LHS) || unaggregatedRate(e.RHS)) {
						t.Errorf("%s: ratio of unaggregated rates matches each series with itself; sum both sides by the labels to keep: %s", name, e)
					}
				}
				return nil
			})
		}
	}
	if n == 0 {
		t.Fatal("no queries")
	}
	var missing []string
	for _, m := range wantMetrics {
		if !seen[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no panel queries %v", missing)
	}
}

// ---- provisioning and Prometheus ------------------------------------------

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string         `json:"name"`
			UID       string         `json:"uid"`
			Type      string         `json:"type"`
			Access    string         `json:"access"`
			URL       string         `json:"url"`
			IsDefault bool           `json:"isDefault"`
			Editable  bool           `json:"editable"`
			JSONData  map[string]any `json:"jsonData"`
		} `json:"datasources"`
	}
	readYAML(t, filepath.Join(grafanaDir, "datasources", "prometheus.yaml"), &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 {
		t.Fatalf("datasources: apiVersion %d, %d datasources; want 1 and one", ds.APIVersion, len(ds.Datasources))
	}
	s := ds.Datasources[0]
	if s.UID != "prometheus" || s.Type != "prometheus" || s.URL != "http://prometheus:9090" || !s.IsDefault {
		t.Errorf("datasource %+v: want uid prometheus, type prometheus, url http://prometheus:9090, isDefault", s)
	}

	var dp struct {
		APIVersion int `json:"apiVersion"`
		Providers  []struct {
			Name                  string `json:"name"`
			OrgID                 int    `json:"orgId"`
			Folder                string `json:"folder"`
			Type                  string `json:"type"`
			DisableDeletion       bool   `json:"disableDeletion"`
			AllowUIUpdates        bool   `json:"allowUiUpdates"`
			UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `json:"path"`
				FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
			} `json:"options"`
		} `json:"providers"`
	}
	readYAML(t, filepath.Join(grafanaDir, "dashboards", "flowgate.yaml"), &dp)
	if dp.APIVersion != 1 || len(dp.Providers) != 1 {
		t.Fatalf("dashboard providers: apiVersion %d, %d providers; want 1 and one", dp.APIVersion, len(dp.Providers))
	}
	if p := dp.Providers[0]; p.Type != "file" || p.Options.Path != grafanaDashboards {
		t.Errorf("provider %+v: want type file, path %s", p, grafanaDashboards)
	}
}

func TestPrometheusConfig(t *testing.T) {
	var cfg struct {
		Global struct {
			ScrapeInterval     string `json:"scrape_interval"`
			EvaluationInterval string `json:"evaluation_interval"`
		} `json:"global"`
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName        string `json:"job_name"`
			ScrapeInterval string `json:"scrape_interval"`
			MetricsPath    string `json:"metrics_path"`
			StaticConfigs  []struct {
				Targets []string          `json:"targets"`
				Labels  map[string]string `json:"labels"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	readYAML(t, prometheusConfig, &cfg)
	if !contains(cfg.RuleFiles, "alerts.yml") {
		t.Errorf("rule_files %v: want alerts.yml", cfg.RuleFiles)
	}
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if contains(st.Targets, fmt.Sprintf("flowgate:%d", metricsPort)) {
				found = true
				iv := sc.ScrapeInterval
				if iv == "" {
					iv = cfg.Global.ScrapeInterval
				}
				if iv != "15s" {
					t.Errorf("job %s scrapes every %q, want 15s", sc.JobName, iv)
				}
			}
		}
	}
	if !found {
		t.Errorf("no scrape target flowgate:%d", metricsPort)
	}
	// promtool reads the rule files too, relative to the config.
	if promtool, err := exec.LookPath("promtool"); err == nil {
		run(t, ".", promtool, "check", "config", prometheusConfig)
	} else {
		t.Log("promtool not installed: prometheus.yml checked by shape only")
	}
}
