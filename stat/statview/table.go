package statview

// The table of `maple stat` and its legend.

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maple-farm/maple/stat"
)

// statWidth is the widest line writeStatTable prints.
const statWidth = 100

// The table's columns: KIND ID HOST:PID UPTIME CONNS INFL IN/S OUT/S BUSY
// ERRORS P99~ (statLegend and the command's help explain them).
const statRow = "%-7s %-12s %-18s %6s %6s %6s %7s %7s %6s %6s %8s\n"

// statLegend follows every table: what each column, the queues line and
// the limits line mean (in full: `maple stat --help`).
var statLegend = []string{
	"gateway: CONNS = connections open; IN/S, OUT/S = frames from, to clients/s; BUSY = answered -10002",
	"         ERRORS = Redis errors + bad frames; P99~ = request time (frame read to reply handed over)",
	"worker:  INFL = frames and events read, not finished; IN/S = handled/s; P99~ = handler time;",
	"         ERRORS = failed + dead letters + Redis errors. BUSY, ERRORS: since start",
	"P99~:    99th percentile of the last second, an estimate inside histogram buckets; - = none seen",
	"queues:  entries no worker has read yet (consumer-group lag); * = the longest; + = at least",
	"limits:  clients that ran into a limit since start, by limit (docs/operations.md, Limits and abuse)",
}

// Help explains the table and its columns: the description of
// `maple stat --help`.
const Help = `Every gateway and worker reports its counters to Redis every second
(stat hashes that expire when it stops); maple stat reads them and prints
one row per process, totals, and what waits in the partition queues.

Columns:
   KIND, ID      gateway or worker, and its id (random, or from the gateway's
                 --id, the worker's --worker-id)
   HOST:PID      where it runs
   UPTIME        since the process started
   CONNS         gateways: client connections open now (workers: -)
   INFL          workers: frames and connection events read from the queues
                 and not finished yet (waiting for their connection's turn or
                 running); at most about 64 x --concurrency (gateways: -)
   IN/S          gateways: frames read from clients per second; workers:
                 frames and events handled per second
   OUT/S         gateways: frames written to clients per second (replies and
                 pushes; workers: -)
   BUSY          gateways: frames answered -10002 since start, for any reason
   ERRORS        since start; gateways: failed Redis calls + connections
                 closed for a malformed frame; workers: handler errors and
                 panics + dead letters + failed Redis calls
   P99~          the 99th percentile over the last second (the two last
                 reports of the process), of the request time at gateways
                 (frame read to its reply handed to the socket: Redis both
                 ways, queueing and the handler) and of the handler time at
                 workers. An estimate: histograms count durations in buckets
                 (50µs, 100µs, 250µs, 500µs, 1ms, 2.5ms ... 10s), and the
                 percentile is interpolated inside its bucket as if the
                 bucket's durations were spread evenly; the true value lies in
                 that bucket. <=50µs: in the first bucket, nothing finer is
                 known. >10s: past the last. -: nothing measured in that second
                 (idle), or only one report seen yet. --json gives p50 and p99
                 over the last second (recent_quantiles) and since the process
                 started (quantiles).
   rates (IN/S, OUT/S, totals) are over the same last second; - until two
   reports of a process were seen.

Lines under the table:
   total     the sums of the rows; batching: frames per gateway pipeline and
             frames handled per worker read (round trips saved)
   limits    clients that ran into a limit since start, by limit
             (docs/operations.md, "Limits and abuse")
   queues    what waits in the partition streams, as the newest worker
             report read it: entries no worker has read yet, per partition
             (pN:count), the consumer group's lag. An entry holds what one
             gateway round trip queued on that partition (one frame or
             hundreds), or one timer, periodic job or operator frame. Entries
             a worker read and acknowledged but that are not trimmed yet are
             not counted. "read, not acked": entries a worker took and is
             handling (or a dead worker held, until another takes them over).
             * marks the longest queue (a hot partition: one busy connection,
             or its worker is slow); + marks a count that is a lower bound
             (Redis before 7.0 and miniredis keep no lag: at most 1000 are
             counted).`

// writeStatTable prints v as a table at most statWidth columns wide.
func writeStatTable(w io.Writer, v farmView) {
	fmt.Fprintf(w, "maple stat  prefix %s  %s  %s, %s\n", v.Prefix, v.At.Format("2006-01-02 15:04:05"),
		statPlural(v.Totals.Gateways, "gateway"), statPlural(v.Totals.Workers, "worker"))
	if len(v.Processes) == 0 {
		fmt.Fprintf(w, "no process reports under prefix %q: is the farm running, on this Redis, with this --prefix?\n", v.Prefix)
		return
	}
	fmt.Fprintf(w, statRow, "KIND", "ID", "HOST:PID", "UPTIME", "CONNS", "INFL", "IN/S", "OUT/S", "BUSY", "ERRORS", "P99~")
	for _, p := range v.Processes {
		conns, infl, in, out, busy, p99 := "-", "-", "-", "-", "-", "-"
		switch p.Kind {
		case stat.KindGateway:
			conns = statCount(p.Values["connections"])
			in, out = statRate(p.Rates, "frames_in_total"), statRate(p.Rates, "frames_out_total")
			busy = statCount(p.Values["busy_total"])
			p99 = statSeconds(p.RecentQuantiles, "request_duration_seconds_p99")
		case stat.KindWorker:
			infl = statCount(p.Values["inflight"])
			in = statRate(p.Rates, "handled_total")
			p99 = statSeconds(p.RecentQuantiles, "handler_duration_seconds_p99")
		}
		fmt.Fprintf(w, statRow, statClip(p.Kind, 7), statClip(p.ID, 12), statClip(p.Host+":"+strconv.Itoa(p.PID), 18),
			statUptime(p.Uptime), conns, infl, in, out, busy, statCount(statSum(p.Values, statErrors[p.Kind])), p99)
	}
	t := v.Totals
	known := t.RatesFrom > 0
	perSec := func(v float64) string {
		if !known {
			return "-"
		}
		return statPerSec(v)
	}
	fmt.Fprintf(w, "total   gateways: %s conns, %s in/s, %s out/s, %s in, %s out, %s busy/s\n",
		statCount(t.Connections), perSec(t.FramesIn), perSec(t.FramesOut),
		statBytes(t.BytesIn, known), statBytes(t.BytesOut, known), perSec(t.BusyRate))
	fmt.Fprintf(w, "        workers: %s handled/s, %s failed/s, %s in flight; all: %s busy, %s errors, %s errors/s\n",
		perSec(t.Handled), perSec(t.Failed), statCount(t.InFlight), statCount(t.Busy), statCount(t.Errors), perSec(t.ErrorRate))
	ratio := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	fmt.Fprintf(w, "        batching: %s frames per gateway pipeline, %s handled per worker read\n",
		ratio(t.FramesPerPipeline), ratio(t.HandledPerRead))
	limits := "none hit"
	if len(t.Limits) > 0 {
		limits = ""
		for _, kind := range []string{stat.KindGateway, stat.KindWorker} {
			for _, l := range statLimits[kind] {
				if n := t.Limits[l[1]]; n != 0 {
					limits += fmt.Sprintf("%s %s  ", l[1], statCount(n))
				}
			}
		}
	}
	fmt.Fprintf(w, "limits  %s\n", strings.TrimSpace(limits))
	if q := v.Queues; q != nil {
		atLeast := make(map[int]bool, len(q.AtLeast))
		for _, i := range q.AtLeast {
			atLeast[i] = true
		}
		plus := func(i int) string {
			if atLeast[i] {
				return "+"
			}
			return ""
		}
		waiting := "none waiting"
		if q.Max > 0 {
			total := statCount(q.Total)
			if len(q.AtLeast) > 0 {
				total += "+"
			}
			waiting = fmt.Sprintf("%s entries waiting, longest p%d (%s%s)", total, q.MaxPart, statCount(q.Max), plus(q.MaxPart))
		}
		head := fmt.Sprintf("queues  %d partitions: %s; %s read, not acked", len(q.Lengths), waiting, statCount(q.PendingTotal))
		from := fmt.Sprintf("from worker %s, %s ago", statClip(q.From, 12), statAge(v.At.Sub(q.At)))
		if utf8.RuneCountInString(head)+3+utf8.RuneCountInString(from) <= statWidth {
			fmt.Fprintln(w, head+"   "+from)
		} else {
			fmt.Fprintln(w, head)
			fmt.Fprintln(w, "        "+from)
		}
		line := "       "
		for i, n := range q.Lengths {
			cell := fmt.Sprintf(" p%d:%s%s", i, statCount(n), plus(i))
			if n == q.Max && n > 0 {
				cell += "*"
			}
			if utf8.RuneCountInString(line)+utf8.RuneCountInString(cell) > statWidth {
				fmt.Fprintln(w, line)
				line = "       "
			}
			line += cell
		}
		fmt.Fprintln(w, line)
	} else {
		fmt.Fprintln(w, "queues  no worker reports the partition queues")
	}
	for _, l := range statLegend {
		fmt.Fprintln(w, l)
	}
}

func statPlural(n int, s string) string {
	if n == 1 {
		return "1 " + s
	}
	return strconv.Itoa(n) + " " + s + "s"
}

// statClip cuts s to n runes, marking the cut with "…".
func statClip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// statCount prints a count in at most 6 characters: 12345, 123k, 1.23M.
func statCount(n int64) string {
	if n < 100_000 && n > -100_000 {
		return strconv.FormatInt(n, 10)
	}
	return statSI(float64(n))
}

// statPerSec prints a rate: 0, 0.5, 12, 1234, 123k.
func statPerSec(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v < 100_000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return statSI(v)
}

// statRate prints the rate of a counter; "-" until two reports were seen.
func statRate(rates map[string]float64, name string) string {
	v, ok := rates[name]
	if !ok {
		return "-"
	}
	return statPerSec(v)
}

// statBytes prints a byte rate: 950 B/s, 1.07MB/s; "- B/s" when unknown.
func statBytes(v float64, known bool) string {
	if !known {
		return "- B/s"
	}
	if v < 1000 {
		return strconv.FormatFloat(v, 'f', 0, 64) + " B/s"
	}
	return statSI(v) + "B/s"
}

// statSI prints v with 3 significant digits and a k, M, G or T suffix.
func statSI(v float64) string {
	units := []string{"", "k", "M", "G", "T"}
	i := 0
	for (v >= 999.5 || v <= -999.5) && i < len(units)-1 {
		v /= 1000
		i++
	}
	prec := 0
	switch a := max(v, -v); {
	case a < 9.995:
		prec = 2
	case a < 99.95:
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + units[i]
}

// statSeconds prints a latency estimate to 3 significant digits; "-" for
// none, "<=50µs" in the first bucket (nothing finer is known), ">10s" past
// the last.
func statSeconds(q map[string]float64, name string) string {
	v, ok := q[name]
	switch {
	case !ok || math.IsNaN(v):
		return "-"
	case v > stat.Buckets[len(stat.Buckets)-1]:
		return ">" + time.Duration(stat.Buckets[len(stat.Buckets)-1]*float64(time.Second)).String()
	case v <= stat.Buckets[0]:
		return "<=" + time.Duration(stat.Buckets[0]*float64(time.Second)).String()
	}
	unit, x := "s", v
	switch {
	case v < 0.0009995:
		unit, x = "µs", v*1e6
	case v < 0.9995:
		unit, x = "ms", v*1e3
	}
	prec := 0
	switch {
	case x < 9.995:
		prec = 2
	case x < 99.95:
		prec = 1
	}
	n := strconv.FormatFloat(x, 'f', prec, 64)
	if strings.Contains(n, ".") {
		n = strings.TrimRight(strings.TrimRight(n, "0"), ".")
	}
	return n + unit
}

// statUptime prints a duration in at most 6 characters: 45s, 2m03s, 3h04m, 5d03h.
func statUptime(secs int64) string {
	d := time.Duration(secs) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", secs)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", secs/60, secs%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", secs/3600, secs%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", secs/86400, secs%86400/3600)
}

// statAge prints how old a report is: 0.4s, 12s.
func statAge(d time.Duration) string {
	if d < 10*time.Second {
		return strconv.FormatFloat(max(d.Seconds(), 0), 'f', 1, 64) + "s"
	}
	return d.Round(time.Second).String()
}
