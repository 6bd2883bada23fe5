package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chartFiles are the sweep's charts, written to the -out directory and to
// -charts under the module root (docs/bench by default).
var chartFiles = []string{"throughput-vs-connections.png", "p99-vs-connections.png", "rss-vs-streams.png"}

// drawCharts draws the sweep: throughput and p99 against connections, RSS
// against open streams; one line per target, log-scale x.
func drawCharts(e *env, s *sweepOut, o options) error {
	var dirs []string
	if e.dir != "" {
		dirs = append(dirs, filepath.Join(e.dir, "charts"))
	}
	if o.charts != "" {
		d := o.charts
		if !filepath.IsAbs(d) {
			root, err := moduleRoot()
			if err != nil {
				return err
			}
			d = filepath.Join(root, d)
		}
		dirs = append(dirs, d)
	}
	plots := map[string]*plot.Plot{}
	if len(s.JSON) > 0 {
		plots[chartFiles[0]] = connsPlot(s.JSON, "JSON prediction throughput vs connections", "requests/s", false,
			func(p sweepPoint) float64 { return p.RPS })
		plots[chartFiles[1]] = connsPlot(s.JSON, "JSON prediction p99 latency vs connections", "p99 latency (ms, log scale)", true,
			func(p sweepPoint) float64 { return p.P99 / 1000 })
	}
	if len(s.Streams) > 0 {
		plots[chartFiles[2]] = streamsPlot(s.Streams)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for _, name := range chartFiles {
			p := plots[name]
			if p == nil {
				continue
			}
			f := filepath.Join(d, name)
			if err := p.Save(7*vg.Inch, 4.5*vg.Inch, f); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			logf("chart %s", f)
		}
	}
	return nil
}

// order is the targets of a sweep in the tables' order.
func order[V any](m map[string]V) []string {
	var out []string
	for _, k := range knownTargets {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

// intTicks labels the default ticks as whole numbers with thousands
// separators.
var intTicks = plot.TickerFunc(func(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = fmtInt(ts[i].Value)
		}
	}
	return ts
})

// headroom leaves the top quarter of a plot to its legend.
func headroom(p *plot.Plot, ymax float64) {
	p.Y.Min = 0
	p.Y.Max = ymax * 1.4
	p.Y.Tick.Marker = intTicks
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.Padding = 4
}

func logTicks(xs []int) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, x := range xs {
		t = append(t, plot.Tick{Value: float64(x), Label: fmtInt(float64(x))})
	}
	return t
}

func connsPlot(pts map[string][]sweepPoint, title, ylabel string, logY bool, val func(sweepPoint) float64) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "wrk keep-alive connections (log scale)"
	p.Y.Label.Text = ylabel
	p.X.Scale = plot.LogScale{}
	var xs []int
	var args []any
	ymax, ymin := 0.0, math.Inf(1)
	for _, name := range order(pts) {
		var xy plotter.XYs
		for _, pt := range pts[name] {
			if v := val(pt); !math.IsNaN(v) && v > 0 {
				xy = append(xy, plotter.XY{X: float64(pt.Conns), Y: v})
				ymax, ymin = math.Max(ymax, v), math.Min(ymin, v)
				if !slices.Contains(xs, pt.Conns) {
					xs = append(xs, pt.Conns)
				}
			}
		}
		if len(xy) > 0 {
			args = append(args, name, xy)
		}
	}
	slices.Sort(xs)
	p.X.Tick.Marker = logTicks(xs)
	headroom(p, ymax)
	if logY && ymax > 0 {
		// Latency spans orders of magnitude from 16 to 1,024 connections.
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Min, p.Y.Max = ymin/1.5, ymax*6
	}
	_ = plotutil.AddLinePoints(p, args...)
	p.Add(plotter.NewGrid())
	return p
}

func streamsPlot(ms map[string][]*memAgg) *plot.Plot {
	p := plot.New()
	p.Title.Text = "RSS vs open SSE streams (a fresh proxy per point)"
	p.X.Label.Text = "open streams held (log scale)"
	p.Y.Label.Text = "RSS holding the streams (MiB)"
	p.X.Scale = plot.LogScale{}
	var xs []int
	var args []any
	ymax := 0.0
	for _, name := range order(ms) {
		var xy plotter.XYs
		for _, m := range ms[name] {
			if m.HeldKiB > 0 {
				xy = append(xy, plotter.XY{X: float64(m.Streams), Y: float64(m.HeldKiB) / 1024})
				ymax = math.Max(ymax, float64(m.HeldKiB)/1024)
				if !slices.Contains(xs, m.Streams) {
					xs = append(xs, m.Streams)
				}
			}
		}
		if len(xy) > 0 {
			label := name
			if name == flowgateH2Target {
				label = "flowgate (HTTP/2 over TLS)"
			}
			args = append(args, label, xy)
		}
	}
	slices.Sort(xs)
	p.X.Tick.Marker = logTicks(xs)
	headroom(p, ymax)
	_ = plotutil.AddLinePoints(p, args...)
	p.Add(plotter.NewGrid())
	return p
}

// redrawCharts is the subcommand "charts RESULTS.json DIR": the charts of a
// saved run (its results.json), drawn again into DIR.
func redrawCharts(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./bench charts RESULTS.json DIR")
		return 2
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var rep struct{ Sweep *sweepOut }
	if err := json.Unmarshal(b, &rep); err != nil || rep.Sweep == nil {
		fmt.Fprintf(os.Stderr, "%s: no sweep (%v)\n", args[0], err)
		return 1
	}
	dir, err := filepath.Abs(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := drawCharts(&env{}, rep.Sweep, options{charts: dir}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
