// Command targetchart draws measured figures against their targets as an
// SVG of small panels, one per target: a bar for the release before, one
// for after, and the target as a line, each panel on its own scale.
//
// It reads a tab-separated file, one target per line (# starts a comment):
//
//	title	unit	better	target	before	after
//
// where better is "lower" or "higher". A panel says "met" when after is on
// the target's good side.
//
//	go run ./scripts/targetchart -in docs/benchmarks-issue15.tsv -svg docs/benchmarks-issue15.svg
package main

import (
	"bufio"
	"flag"
	"fmt"
	"html"
	"io"
	"os"
	"strconv"
	"strings"
)

type target struct {
	title, unit         string
	lower               bool // lower is better
	goal, before, after float64
}

func main() {
	in := flag.String("in", "", "tab-separated targets (title, unit, better, target, before, after)")
	out := flag.String("svg", "", "SVG file to write")
	flag.Parse()
	if *in == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	ts, err := read(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "targetchart:", err)
		os.Exit(1)
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "targetchart:", err)
		os.Exit(1)
	}
	draw(f, ts)
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "targetchart:", err)
		os.Exit(1)
	}
}

func read(path string) ([]target, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ts []target
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		c := strings.Split(line, "\t")
		if len(c) != 6 || (c[2] != "lower" && c[2] != "higher") {
			return nil, fmt.Errorf("%s:%d: want title, unit, lower|higher, target, before, after separated by tabs", path, n)
		}
		var v [3]float64
		for i := range v {
			if v[i], err = strconv.ParseFloat(c[3+i], 64); err != nil {
				return nil, fmt.Errorf("%s:%d: %q is not a number", path, n, c[3+i])
			}
		}
		ts = append(ts, target{title: c[0], unit: c[1], lower: c[2] == "lower", goal: v[0], before: v[1], after: v[2]})
	}
	return ts, sc.Err()
}

func (t target) met() bool {
	if t.lower {
		return t.after <= t.goal
	}
	return t.after >= t.goal
}

// draw writes the panels, three to a row.
func draw(w io.Writer, ts []target) {
	const pw, ph, cols = 260, 200, 3
	rows := (len(ts) + cols - 1) / cols
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", pw*cols, ph*rows+24)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="8" y="16" font-size="12"><tspan fill="#999">&#9632; before</tspan>  <tspan fill="#2a7">&#9632; after</tspan>  <tspan fill="#c33">&#8212; target</tspan></text>`+"\n")
	for i, t := range ts {
		x0, y0 := float64(i%cols*pw), float64(i/cols*ph+24)
		top := max(t.goal, t.before, t.after) * 1.15
		if top <= 0 {
			top = 1
		}
		plotTop, plotH := y0+34, float64(ph-70)
		y := func(v float64) float64 { return plotTop + plotH*(1-v/top) }
		verdict, color := "not met", "#c33"
		if t.met() {
			verdict, color = "met", "#2a7"
		}
		fmt.Fprintf(w, `<text x="%.0f" y="%.0f" font-weight="bold">%s</text>`+"\n", x0+10, y0+14, html.EscapeString(t.title))
		fmt.Fprintf(w, `<text x="%.0f" y="%.0f" fill="%s">%s (%s is better)</text>`+"\n", x0+10, y0+28, color, verdict, map[bool]string{true: "lower", false: "higher"}[t.lower])
		for j, b := range []struct {
			v     float64
			label string
			fill  string
		}{{t.before, "before", "#999"}, {t.after, "after", "#2a7"}} {
			bx := x0 + 40 + float64(j)*90
			fmt.Fprintf(w, `<rect x="%.0f" y="%.1f" width="60" height="%.1f" fill="%s"/>`+"\n", bx, y(b.v), plotTop+plotH-y(b.v), b.fill)
			fmt.Fprintf(w, `<text x="%.0f" y="%.1f" text-anchor="middle">%s</text>`+"\n", bx+30, y(b.v)-3, num(b.v))
			fmt.Fprintf(w, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", bx+30, plotTop+plotH+14, b.label)
		}
		fmt.Fprintf(w, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#c33" stroke-width="2" stroke-dasharray="5,3"/>`+"\n", x0+30, x0+210, y(t.goal), y(t.goal))
		fmt.Fprintf(w, `<text x="%.0f" y="%.1f" fill="#c33">%s</text>`+"\n", x0+212, y(t.goal)+4, num(t.goal))
		fmt.Fprintf(w, `<text x="%.0f" y="%.0f" fill="#666">%s</text>`+"\n", x0+10, plotTop+plotH+28, html.EscapeString(t.unit))
	}
	fmt.Fprintln(w, "</svg>")
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
