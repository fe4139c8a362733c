// Package metrics exports a process's counters to Prometheus, and serves
// net/http/pprof beside them.
//
// Counting costs nothing extra: gateways and workers keep their counters in
// atomics (gateway.Stats, worker.Stats) and a custom prometheus.Collector
// reads them at scrape time, through the same stat.SampleFunc that feeds
// the stat.Reporter behind `maple stat`. Gateway and Worker build those
// functions, so both views use one set of names:
//
//	maple_<kind>_<name>            a gauge, or a counter when <name> ends in _total
//	maple_<kind>_<name>_seconds    a histogram, buckets stat.Buckets
//
// The gateway and worker packages import neither Prometheus nor this
// package; cmd/maple wires them together (flag --metrics-addr).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/maple-farm/maple/stat"
)

// Namespace starts every metric name.
const Namespace = "maple"

// Source is one part of a process whose counters are exported: the
// gateway or the worker (`maple dev` has both).
type Source struct {
	Kind   string // stat.KindGateway or stat.KindWorker; the name's second part
	Sample stat.SampleFunc
}

// collector reads a Source at scrape time. Its metric set is fixed when it
// is built: a Value or Dist that the SampleFunc adds later is not exported.
type collector struct {
	sample stat.SampleFunc
	descs  map[string]*prometheus.Desc // by Value or Dist name
}

// NewCollector returns a collector of src's counters. It calls
// src.Sample once, to learn the names.
func NewCollector(src Source) prometheus.Collector {
	c := &collector{sample: src.Sample, descs: make(map[string]*prometheus.Desc)}
	s := src.Sample()
	for _, v := range s.Values {
		c.descs[v.Name] = prometheus.NewDesc(prometheus.BuildFQName(Namespace, src.Kind, v.Name), v.Help, nil, nil)
	}
	for _, d := range s.Dists {
		c.descs[d.Name] = prometheus.NewDesc(prometheus.BuildFQName(Namespace, src.Kind, d.Name), d.Help, nil, nil)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.sample()
	for _, v := range s.Values {
		d := c.descs[v.Name]
		if d == nil {
			continue
		}
		t := prometheus.CounterValue
		if v.Type == stat.Gauge {
			t = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(d, t, float64(v.Value))
	}
	for _, h := range s.Dists {
		d := c.descs[h.Name]
		if d == nil {
			continue
		}
		buckets := make(map[float64]uint64, len(stat.Buckets))
		for i, le := range stat.Buckets {
			buckets[le] = h.Snapshot.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(d, h.Snapshot.Count, h.Snapshot.Sum, buckets)
	}
}

// NewHandler returns the HTTP handler of a process: Prometheus metrics at
// /metrics (the sources, plus the Go runtime's and the process's own),
// and net/http/pprof under /debug/pprof/. It fails if two sources export
// the same name (two of one kind).
func NewHandler(srcs ...Source) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	for _, s := range srcs {
		cs = append(cs, NewCollector(s))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "maple: /metrics (Prometheus), /debug/pprof/")
	})
	return mux, nil
}

// Server serves a handler over HTTP until Shutdown.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Start listens on addr (":9100"; port 0 picks one) and serves h in the
// background. It returns once listening, so a busy port fails at once.
func Start(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	return Serve(ln, h, log), nil
}

// Serve serves h on ln in the background (a listener handed over by a
// reloading process, or one of the caller's).
func Serve(ln net.Listener, h http.Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	log.Info("metrics listening", "addr", ln.Addr().String())
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops the server, letting scrapes in progress finish until ctx
// ends (a CPU profile runs for its whole duration: it is cut off then).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}
