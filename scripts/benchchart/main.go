// Command benchchart turns the JSON results of scripts/bench.sh into a table
// (on stdout) and an SVG chart: throughput and p99 latency against the
// number of connections, the farm beside the reference echo server.
//
// It reads every <target>-c<conns>-d<depth>-r<round>.json in -in, where
// target is "farm" or "ref" and each file holds the output of
// `maple bench --json`. Rounds of one scenario are summarised by their
// median. Standard library only, so it runs wherever Go does.
//
//	go run ./scripts/benchchart -in bench-out -svg bench-out/chart.svg
package main

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// result is the part of bench.Result this program reads.
type result struct {
	Conns         int     `json:"conns"`
	Depth         int     `json:"depth"`
	Sent          int64   `json:"sent"`
	Answered      int64   `json:"answered"`
	Busy          int64   `json:"busy"`
	Failed        int64   `json:"failed"`
	Mismatches    int64   `json:"mismatches"`
	Unanswered    int64   `json:"unanswered"`
	ConnErrors    int64   `json:"conn_errors"`
	RepliesPerSec float64 `json:"replies_per_sec"`
	P50           float64 `json:"p50_ns"`
	P99           float64 `json:"p99_ns"`
}

type scenario struct{ conns, depth int }

func (s scenario) String() string { return fmt.Sprintf("%d conns x %d", s.conns, s.depth) }

// summary is the median of one target's rounds in one scenario, plus the
// sums of its faults.
type summary struct {
	n                 int
	rps, p50, p99     float64 // p50, p99 in ns
	busy, failed, bad int64   // bad: mismatches + unanswered + connection errors
}

func main() {
	in := flag.String("in", "bench-out", "directory of the JSON results")
	svg := flag.String("svg", "", "chart to write (default <in>/chart.svg; - for none)")
	depth := flag.Int("depth", 0, "depth of the series to chart (default: the one with the most connection counts)")
	flag.Parse()
	if *svg == "" {
		*svg = filepath.Join(*in, "chart.svg")
	}
	if err := run(*in, *svg, *depth, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchchart:", err)
		os.Exit(1)
	}
}

func run(in, svgPath string, depth int, out io.Writer) error {
	runs, err := load(in)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return fmt.Errorf("no results in %s", in)
	}
	sums := map[string]map[scenario]summary{}
	var scens []scenario
	for target, byScen := range runs {
		sums[target] = map[scenario]summary{}
		for s, rs := range byScen {
			sums[target][s] = summarize(rs)
			if !slices.Contains(scens, s) {
				scens = append(scens, s)
			}
		}
	}
	slices.SortFunc(scens, func(a, b scenario) int {
		if a.conns != b.conns {
			return a.conns - b.conns
		}
		return a.depth - b.depth
	})
	printTable(out, scens, sums)
	if svgPath == "-" {
		return nil
	}
	if depth == 0 {
		depth = mainDepth(scens)
	}
	f, err := os.Create(svgPath)
	if err != nil {
		return err
	}
	writeSVG(f, depth, scens, sums)
	return f.Close()
}

// load reads the results, by target and scenario.
func load(dir string) (map[string]map[scenario][]result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*-c*-d*-r*.json"))
	if err != nil {
		return nil, err
	}
	runs := map[string]map[scenario][]result{}
	for _, name := range files {
		target, _, _ := strings.Cut(filepath.Base(name), "-")
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var r result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if r.Conns == 0 {
			return nil, fmt.Errorf("%s: not a bench result", name)
		}
		s := scenario{r.Conns, r.Depth}
		if runs[target] == nil {
			runs[target] = map[scenario][]result{}
		}
		runs[target][s] = append(runs[target][s], r)
	}
	return runs, nil
}

func summarize(rs []result) summary {
	s := summary{n: len(rs)}
	var rps, p50, p99 []float64
	for _, r := range rs {
		rps = append(rps, r.RepliesPerSec)
		p50 = append(p50, r.P50)
		p99 = append(p99, r.P99)
		s.busy += r.Busy
		s.failed += r.Failed
		s.bad += r.Mismatches + r.Unanswered + r.ConnErrors
	}
	s.rps, s.p50, s.p99 = median(rps), median(p50), median(p99)
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	m := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[m]
	}
	return (xs[m-1] + xs[m]) / 2
}

// mainDepth is the depth measured at the most connection counts.
func mainDepth(scens []scenario) int {
	count := map[int]int{}
	best := 0
	for _, s := range scens {
		count[s.depth]++
		if count[s.depth] > count[best] || (count[s.depth] == count[best] && s.depth > best) {
			best = s.depth
		}
	}
	return best
}

func printTable(out io.Writer, scens []scenario, sums map[string]map[scenario]summary) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tfarm replies/s\tref replies/s\tfarm/ref\tfarm p50\tfarm p99\tref p50\tref p99\trounds\t notes")
	for _, s := range scens {
		f, fok := sums["farm"][s]
		r, rok := sums["ref"][s]
		ratio := "-"
		if fok && rok && r.rps > 0 {
			ratio = fmt.Sprintf("%.3f", f.rps/r.rps)
		}
		var notes []string
		for _, t := range []struct {
			name string
			s    summary
			ok   bool
		}{{"farm", f, fok}, {"ref", r, rok}} {
			if !t.ok {
				notes = append(notes, t.name+": no runs")
				continue
			}
			if t.s.bad > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d wrong/lost", t.name, t.s.bad))
			}
			if t.s.busy > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d busy", t.name, t.s.busy))
			}
			if t.s.failed > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d failed", t.name, t.s.failed))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t %s\n", s,
			rpsCell(f, fok), rpsCell(r, rok), ratio,
			msCell(f.p50, fok), msCell(f.p99, fok), msCell(r.p50, rok), msCell(r.p99, rok),
			f.n, r.n, cmp.Or(strings.Join(notes, "; "), "-"))
	}
	tw.Flush()
}

func rpsCell(s summary, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.0f", s.rps)
}

func msCell(ns float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.3fms", ns/1e6)
}

// The chart: two panels side by side, a log2 axis of connections, farm and
// reference as two lines in each.
const (
	panelW, panelH = 440, 300
	padL, padR     = 70, 20
	padT, padB     = 40, 50
	width          = 2 * (padL + panelW + padR)
	height         = padT + panelH + padB + 30
)

var colors = map[string]string{"farm": "#c0392b", "ref": "#2c7fb8"}

func writeSVG(w io.Writer, depth int, scens []scenario, sums map[string]map[scenario]summary) {
	var xs []int
	for _, s := range scens {
		if s.depth == depth && !slices.Contains(xs, s.conns) {
			xs = append(xs, s.conns)
		}
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	panel(w, 0, "replies/s (median, log scale)", true, depth, xs, sums, func(s summary) float64 { return s.rps })
	panel(w, padL+panelW+padR, "p99 latency, ms (median, log scale)", true, depth, xs, sums,
		func(s summary) float64 { return s.p99 / 1e6 })
	// Legend.
	lx := padL
	ly := height - 14
	for _, t := range []string{"farm", "ref"} {
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"/>`+"\n", lx, ly-4, lx+24, ly-4, colors[t])
		label := map[string]string{"farm": "farm (gateway + Redis + worker)", "ref": "reference echo server (no Redis)"}[t]
		fmt.Fprintf(w, `<text x="%d" y="%d">%s</text>`+"\n", lx+30, ly, html.EscapeString(label))
		lx += 280
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" fill="#555">depth %d per connection</text>`+"\n", lx, ly, depth)
	fmt.Fprintln(w, "</svg>")
}

func panel(w io.Writer, x0 int, title string, logY bool, depth int, xs []int,
	sums map[string]map[scenario]summary, val func(summary) float64) {
	fmt.Fprintf(w, `<g transform="translate(%d,0)">`+"\n", x0)
	fmt.Fprintf(w, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", padL, padT-16, html.EscapeString(title))
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", padL, padT, panelW, panelH)

	// Y range over both targets.
	var ys []float64
	for _, t := range []string{"farm", "ref"} {
		for _, c := range xs {
			if s, ok := sums[t][scenario{c, depth}]; ok && val(s) > 0 && !math.IsNaN(val(s)) {
				ys = append(ys, val(s))
			}
		}
	}
	if len(ys) == 0 || len(xs) == 0 {
		fmt.Fprintf(w, `<text x="%d" y="%d">no data</text>`+"\n</g>\n", padL+10, padT+20)
		return
	}
	lo, hi := slices.Min(ys), slices.Max(ys)
	var yTicks []float64
	var ypos func(v float64) float64
	if logY {
		l0, l1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		if l1 == l0 {
			l1++
		}
		for e := l0; e <= l1; e++ {
			yTicks = append(yTicks, math.Pow(10, e))
		}
		ypos = func(v float64) float64 {
			return float64(padT+panelH) - (math.Log10(v)-l0)/(l1-l0)*panelH
		}
	} else {
		step := niceStep(hi / 5)
		top := math.Ceil(hi/step) * step
		for v := 0.0; v <= top+step/2; v += step {
			yTicks = append(yTicks, v)
		}
		ypos = func(v float64) float64 { return float64(padT+panelH) - v/top*panelH }
	}
	for _, v := range yTicks {
		y := ypos(v)
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", padL, y, padL+panelW, y)
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y+4, tickLabel(v))
	}

	// X: log2 of connections, evenly spread between the first and last.
	l0, l1 := math.Log2(float64(xs[0])), math.Log2(float64(xs[len(xs)-1]))
	xpos := func(c int) float64 {
		if l1 == l0 {
			return padL + panelW/2
		}
		return padL + 30 + (math.Log2(float64(c))-l0)/(l1-l0)*(panelW-60)
	}
	for _, c := range xs {
		x := xpos(c)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999"/>`+"\n", x, padT+panelH, x, padT+panelH+5)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x, padT+panelH+18, c)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">connections</text>`+"\n", padL+panelW/2, padT+panelH+36)

	for _, t := range []string{"ref", "farm"} {
		var pts []string
		for _, c := range xs {
			s, ok := sums[t][scenario{c, depth}]
			if !ok || !(val(s) > 0) {
				continue
			}
			x, y := xpos(c), ypos(val(s))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s %d conns: %s</title></circle>`+"\n",
				x, y, colors[t], t, c, tickLabel(val(s)))
			fmt.Fprintf(w, `<text x="%.1f" y="%.1f" fill="%s" font-size="11">%s</text>`+"\n", x+6, y-6, colors[t], tickLabel(val(s)))
		}
		if len(pts) > 1 {
			fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2.5"/>`+"\n", strings.Join(pts, " "), colors[t])
		}
	}
	fmt.Fprintln(w, "</g>")
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func tickLabel(v float64) string {
	switch {
	case v >= 1e6:
		return trim(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case v >= 1e3:
		return trim(fmt.Sprintf("%.1f", v/1e3)) + "k"
	case v >= 1:
		return trim(fmt.Sprintf("%.2f", v))
	default:
		return trim(fmt.Sprintf("%.3f", v))
	}
}

func trim(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
