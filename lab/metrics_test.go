package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/notice"
)

// fakeSmpsMetrics serves a Policy Server's metrics as smps would, through
// metrics.Serve, with the queue at depth.
func fakeSmpsMetrics(t *testing.T, ctx context.Context, depth float64) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	q := prometheus.NewGauge(prometheus.GaugeOpts{Name: metrics.SmpsQueueDepth, Help: "queued"})
	q.Set(depth)
	open := prometheus.NewGauge(prometheus.GaugeOpts{Name: metrics.SmpsConnectionsOpen, Help: "open"})
	open.Set(7)
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metrics.SmpsRequests, Help: "requests"}, []string{metrics.LabelType, metrics.LabelResult})
	reqs.WithLabelValues("IsProtected", "YES").Add(3)
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: metrics.SmpsRequestSeconds, Help: "latency", Buckets: []float64{0.1, 1}})
	lat.Observe(0.5)
	reg.MustRegister(q, open, reqs, lat)
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	return addr.String()
}

type progressLog struct {
	mu    sync.Mutex
	lines []string
}

func (p *progressLog) add(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, fmt.Sprintf(format, a...))
}

func (p *progressLog) count(sub string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func TestScraperOneGoesAway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stays := fakeSmpsMetrics(t, ctx, 4)
	goneCtx, goAway := context.WithCancel(ctx)
	gone := fakeSmpsMetrics(t, goneCtx, 9)

	path := filepath.Join(t.TempDir(), MetricsFile)
	var log progressLog
	s, err := newScraper(path, 50*time.Millisecond, log.add)
	if err != nil {
		t.Fatal(err)
	}
	s.Add("smps1.shared.lab", stays)
	s.Add("smps2.shared.lab", gone)
	s.Add("smps2.shared.lab", gone) // twice: scraped once
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(runCtx) }()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("a scrape of both", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.written >= 2*8
	})
	goAway()
	waitFor("smps2's scrapes to fail 3 times", func() bool { return s.Failures()["smps2.shared.lab"] >= 3 })
	s.mu.Lock()
	before := s.written
	s.mu.Unlock()
	waitFor("smps1 scraped after smps2 went away", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.written > before
	})
	stop()
	<-done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if n := log.count("metrics: smps2.shared.lab"); n != 1 {
		t.Errorf("smps2's failures told %d times, want once: %q", n, log.lines)
	}
	if f := s.Failures()["smps1.shared.lab"]; f != 0 {
		t.Errorf("smps1 failed %d scrapes", f)
	}
	samples, err := ReadMetrics(path)
	if err != nil {
		t.Fatal(err)
	}
	depth := map[string]float64{}
	var buckets, requests int
	for _, smp := range samples {
		switch {
		case smp.Name == metrics.SmpsQueueDepth:
			depth[smp.Proc] = smp.Value
		case smp.Name == metrics.SmpsRequestSeconds+"_bucket" && smp.Proc == "smps1.shared.lab":
			buckets++
		case smp.Name == metrics.SmpsRequests && smp.Labels[metrics.LabelType] == "IsProtected" && smp.Labels[metrics.LabelResult] == "YES" && smp.Value == 3:
			requests++
		}
		if smp.T.IsZero() {
			t.Fatalf("sample with no time: %+v", smp)
		}
	}
	if depth["smps1.shared.lab"] != 4 || depth["smps2.shared.lab"] != 9 {
		t.Errorf("queue depths %v, want smps1 4 and smps2 9", depth)
	}
	if buckets == 0 || buckets%3 != 0 || requests == 0 {
		t.Errorf("%d histogram buckets (3 per scrape: 0.1, 1, +Inf), %d request counters", buckets, requests)
	}
}

func TestParseMetrics(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string // name{labels}=value, in order
		err      string
	}{
		{"gauge and counter", "# TYPE smps_queue_depth gauge\nsmps_queue_depth 3\n# TYPE smps_requests_total counter\nsmps_requests_total{result=\"YES\",type=\"Login\"} 2\n",
			[]string{"smps_queue_depth{}=3", "smps_requests_total{result=YES,type=Login,}=2"}, ""},
		{"histogram", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n",
			[]string{"h_bucket{le=+Inf,}=2", "h_bucket{le=1,}=1", "h_count{}=2", "h_sum{}=3.5"}, ""},
		{"untyped", "x 1\n", []string{"x{}=1"}, ""},
		{"not the format", "x{ 1\n", nil, "parse /metrics"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseMetrics(strings.NewReader(c.in))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, g := range got {
				s = append(s, fmt.Sprintf("%s{%s}=%g", g.Name, labelKey(g.Labels), g.Value))
			}
			if strings.Join(s, " ") != strings.Join(c.want, " ") {
				t.Errorf("got %q, want %q", s, c.want)
			}
		})
	}
}

func TestMetricsGauges(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	samples := []Sample{
		{T: t0.Add(200 * time.Millisecond), Proc: "smps1.shared.lab", Name: metrics.SmpsConnectionsOpen, Value: 12},
		{T: t0.Add(200 * time.Millisecond), Proc: "smps1.shared.lab", Name: metrics.SmpsQueueDepth, Value: 0},
		{T: t0.Add(1200 * time.Millisecond), Proc: "smps1.shared.lab", Name: metrics.SmpsConnectionsOpen, Value: 256},
		{T: t0.Add(1200 * time.Millisecond), Proc: "smps1.shared.lab", Name: metrics.SmpsQueueDepth, Value: 64},
		{T: t0.Add(1200 * time.Millisecond), Proc: "w3wp.exe", Name: metrics.SmpsQueueDepth, Value: 99}, // not a server
		{T: t0.Add(1200 * time.Millisecond), Proc: "smps1.shared.lab", Name: metrics.SmpsThreadsBusy, Value: 2},
	}
	g := metricsGauges(samples, []string{"smps1.shared.lab"}, t0, 3)
	if fmt.Sprint(g.Open, g.Queue) != "[[12 256 -1]] [[0 64 -1]]" || !g.Any() {
		t.Errorf("open %v queue %v", g.Open, g.Queue)
	}
	if g := metricsGauges(nil, []string{"smps1.shared.lab"}, t0, 3); g.Any() {
		t.Errorf("no samples, yet %v %v", g.Open, g.Queue)
	}
}

// TestMetricsNotices: a process's "metrics on" notice adds it to the
// scraper under the lab's name for it; one it relays for another (the
// LLAWP's, through its owner) goes under the notice's prog; with no
// scraper (metrics off) a notice is ignored.
func TestMetricsNotices(t *testing.T) {
	var log progressLog
	s, err := newScraper(filepath.Join(t.TempDir(), MetricsFile), time.Second, log.add)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &Run{scraper: s}
	r.notice("smps1.shared.lab", notice.ProgSmps, notice.Notice{Prog: notice.ProgSmps, Kind: notice.Metrics, Addr: "127.0.0.21:41000"})
	r.notice("httpd", notice.ProgHLA, notice.Notice{Prog: notice.ProgHLA, Kind: notice.Metrics, Addr: "127.0.0.11:41001"})
	r.notice("httpd", notice.ProgHLA, notice.Notice{Prog: "llawp", Kind: notice.Metrics, Addr: "127.0.0.11:41002"})
	var got []string
	for _, tg := range s.targets {
		got = append(got, tg.proc+"="+tg.addr)
	}
	want := "smps1.shared.lab=127.0.0.21:41000 httpd=127.0.0.11:41001 llawp=127.0.0.11:41002"
	if strings.Join(got, " ") != want {
		t.Errorf("targets %q, want %q", got, want)
	}
	off := &Run{}
	off.notice("smps1.shared.lab", notice.ProgSmps, notice.Notice{Prog: notice.ProgSmps, Kind: notice.Metrics, Addr: "127.0.0.21:41000"})
}

// TestScraperBounded: past its cap the scraper writes nothing more and
// says so once.
func TestScraperBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := fakeSmpsMetrics(t, ctx, 1)
	var log progressLog
	path := filepath.Join(t.TempDir(), MetricsFile)
	s, err := newScraper(path, time.Second, log.add)
	if err != nil {
		t.Fatal(err)
	}
	s.maxSamples = 10
	s.Add("smps1.shared.lab", addr)
	for i := range 3 {
		s.scrapeAll(ctx, time.Now().Add(time.Duration(i)*time.Second))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	samples, err := ReadMetrics(path)
	if err != nil || len(samples) != 10 {
		t.Errorf("%d samples (%v), want 10", len(samples), err)
	}
	if n := log.count("the scraper stops"); n != 1 {
		t.Errorf("the cap told %d times: %q", n, log.lines)
	}
}
