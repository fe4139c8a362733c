package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/worker"
)

func get(t *testing.T, h http.Handler, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestHandler(t *testing.T) {
	var gs gateway.Stats
	gs.Conns.Store(7)
	gs.FramesIn.Add(120)
	gs.BytesIn.Add(4096)
	gs.Busy.Add(2)
	gs.Latency.Observe(3 * time.Millisecond) // le 0.005
	gs.Latency.Observe(400 * time.Microsecond)
	var ws worker.Stats
	ws.Handled.Add(118)
	ws.InFlight.Store(4)
	ws.HandlerTime.Observe(80 * time.Microsecond) // le 0.0001

	h, err := NewHandler(
		Source{Kind: stat.KindGateway, Sample: Gateway(&gs)},
		Source{Kind: stat.KindWorker, Sample: Worker(&ws)},
	)
	if err != nil {
		t.Fatal(err)
	}
	body := get(t, h, "/metrics")
	for _, line := range []string{
		"# TYPE maple_gateway_connections gauge",
		"maple_gateway_connections 7",
		"# TYPE maple_gateway_frames_in_total counter",
		"maple_gateway_frames_in_total 120",
		"maple_gateway_bytes_in_total 4096",
		"maple_gateway_busy_total 2",
		"# TYPE maple_gateway_request_duration_seconds histogram",
		`maple_gateway_request_duration_seconds_bucket{le="0.0005"} 1`,
		`maple_gateway_request_duration_seconds_bucket{le="0.005"} 2`,
		`maple_gateway_request_duration_seconds_bucket{le="+Inf"} 2`,
		"maple_gateway_request_duration_seconds_sum 0.0034",
		"maple_gateway_request_duration_seconds_count 2",
		"maple_worker_handled_total 118",
		"# TYPE maple_worker_inflight gauge",
		"maple_worker_inflight 4",
		`maple_worker_handler_duration_seconds_bucket{le="0.0001"} 1`,
		"maple_worker_handler_duration_seconds_count 1",
		"# TYPE go_goroutines gauge",
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	// Scrapes read the counters as they are now.
	gs.FramesIn.Add(1)
	if body := get(t, h, "/metrics"); !strings.Contains(body, "maple_gateway_frames_in_total 121\n") {
		t.Error("second scrape did not see the new count")
	}
	if body := get(t, h, "/debug/pprof/"); !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ does not list profiles:\n%s", body)
	}
	get(t, h, "/debug/pprof/goroutine?debug=1")
}

// The collector passes client_golang's own consistency checks (every
// metric described, names valid, no duplicates), and follows the naming
// conventions: counters end in _total, histograms in _seconds.
func TestCollectorPedantic(t *testing.T) {
	var gs gateway.Stats
	var ws worker.Stats
	for _, src := range []Source{
		{Kind: stat.KindGateway, Sample: Gateway(&gs)},
		{Kind: stat.KindWorker, Sample: Worker(&ws)},
	} {
		reg := prometheus.NewPedanticRegistry()
		if err := reg.Register(NewCollector(src)); err != nil {
			t.Fatalf("%s: %v", src.Kind, err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("%s: gather: %v", src.Kind, err)
		}
		s := src.Sample()
		if want := len(s.Values) + len(s.Dists); len(mfs) != want {
			t.Errorf("%s: %d metric families, want %d", src.Kind, len(mfs), want)
		}
		for _, mf := range mfs {
			name, typ := mf.GetName(), mf.GetType().String()
			if !strings.HasPrefix(name, "maple_"+src.Kind+"_") {
				t.Errorf("%s: metric %s lacks the maple_%s_ prefix", src.Kind, name, src.Kind)
			}
			if mf.GetHelp() == "" {
				t.Errorf("%s: metric %s has no help", src.Kind, name)
			}
			switch {
			case typ == "COUNTER" && !strings.HasSuffix(name, "_total"),
				typ != "COUNTER" && strings.HasSuffix(name, "_total"),
				typ == "HISTOGRAM" && !strings.HasSuffix(name, "_seconds"):
				t.Errorf("%s: %s %s breaks the naming conventions", src.Kind, typ, name)
			}
		}
	}
}

func TestHandlerDuplicateKind(t *testing.T) {
	var a, b gateway.Stats
	if _, err := NewHandler(Source{Kind: stat.KindGateway, Sample: Gateway(&a)}, Source{Kind: stat.KindGateway, Sample: Gateway(&b)}); err == nil {
		t.Fatal("two gateways in one handler: no error")
	}
}

func TestServer(t *testing.T) {
	var ws worker.Stats
	h, err := NewHandler(Source{Kind: stat.KindWorker, Sample: Worker(&ws)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start("127.0.0.1:0", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "maple_worker_handled_total 0") {
		t.Errorf("served metrics lack maple_worker_handled_total:\n%.500s", body)
	}
	if _, err := Start(s.Addr().String(), h, nil); err == nil {
		t.Error("Start on a busy port: no error")
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/metrics"); err == nil {
		t.Error("server still answers after Shutdown")
	}
}
