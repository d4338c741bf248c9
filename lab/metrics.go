package lab

// Scraping the processes' /metrics (issue 12): every process that says
// "metrics on ADDR" (notice.Metrics) is scraped once a second, and each
// sample goes into the run's MetricsFile as one JSON line. A process that
// never says so is simply not scraped; one that goes away (killed by a
// fault, stopped with the run) fails its scrapes, which are counted and
// told once, not retried faster.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/agentlab/agentlab/chart"
	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/trace"
)

// MetricsFile is where a run's scraped samples go, in its folder.
const MetricsFile = "metrics.jsonl"

// Bounds of the scraper: a run of a few minutes stays well inside them,
// and a process that misbehaves (an endless body, thousands of series)
// cannot fill the disk.
const (
	// ScrapeInterval is how often every target is scraped.
	ScrapeInterval = time.Second
	// maxScrapeTargets caps the processes scraped (a web server that
	// relays its workers' addresses forever).
	maxScrapeTargets = 64
	// maxScrapeSamples caps the lines of MetricsFile: past it the
	// scraper stops and says so.
	maxScrapeSamples = 2_000_000
)

// Sample is one line of MetricsFile: a series' value at one scrape.
// A histogram is written as Prometheus's exposition writes it: its
// _bucket series (label le), _sum and _count.
type Sample struct {
	T time.Time `json:"t"`
	// Proc is the process that served it, as the lab names it: the
	// Policy Server's host, the web server's process, or the relaying
	// process's notice prog (llawp).
	Proc   string            `json:"proc"`
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
}

type scrapeTarget struct {
	proc, addr string
	failures   int
	lastErr    string
}

// scraper scrapes its targets until its context ends.
type scraper struct {
	client   *http.Client
	interval time.Duration
	progress func(format string, a ...any)

	mu      sync.Mutex
	targets []*scrapeTarget
	w       *bufio.Writer
	f       *os.File
	written int
	full    bool
	// maxSamples is maxScrapeSamples (a test lowers it).
	maxSamples int
}

// newScraper writes into path (created, or emptied).
func newScraper(path string, interval time.Duration, progress func(string, ...any)) (*scraper, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &scraper{
		// A scrape that takes longer than the interval is late: give up
		// on it rather than pile scrapes up behind a stalled process.
		client:   &http.Client{Timeout: interval},
		interval: interval,
		progress: progress,
		f:        f,
		w:        bufio.NewWriter(f),

		maxSamples: maxScrapeSamples,
	}, nil
}

// Add scrapes addr (host:port) from now on, as proc's. An address
// already scraped is not added twice.
func (s *scraper) Add(proc, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.ContainsFunc(s.targets, func(t *scrapeTarget) bool { return t.addr == addr }) {
		return
	}
	if len(s.targets) >= maxScrapeTargets {
		s.progress("metrics: %s at %s not scraped: already %d processes", proc, addr, maxScrapeTargets)
		return
	}
	s.targets = append(s.targets, &scrapeTarget{proc: proc, addr: addr})
}

// Run scrapes every target each interval until ctx ends.
func (s *scraper) Run(ctx context.Context) {
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.scrapeAll(ctx, now)
		}
	}
}

// scrapeAll scrapes the targets one after the other, all stamped with the
// tick's time so that a chart's second holds one sample of each.
func (s *scraper) scrapeAll(ctx context.Context, now time.Time) {
	s.mu.Lock()
	targets := slices.Clone(s.targets)
	full := s.full
	s.mu.Unlock()
	if full {
		return
	}
	for _, t := range targets {
		samples, err := s.scrape(ctx, t)
		s.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				t.failures++
				// Told once per kind of failure: a process that went
				// away fails every second after.
				if msg := err.Error(); msg != t.lastErr {
					t.lastErr = msg
					s.progress("metrics: %s: %v", t.proc, err)
				}
			}
			s.mu.Unlock()
			continue
		}
		t.lastErr = ""
		err = s.write(now, t.proc, samples)
		s.mu.Unlock()
		if err != nil {
			s.progress("metrics: %v", err)
			return
		}
	}
}

// write appends samples; the caller holds mu.
func (s *scraper) write(now time.Time, proc string, samples []Sample) error {
	for _, smp := range samples {
		if s.written >= s.maxSamples {
			if !s.full {
				s.full = true
				s.progress("metrics: %d samples written, the scraper stops: %s is as long as it gets", s.written, MetricsFile)
			}
			return nil
		}
		smp.T, smp.Proc = now, proc
		b, err := json.Marshal(smp)
		if err != nil {
			return fmt.Errorf("%s: %w", MetricsFile, err)
		}
		s.w.Write(append(b, '\n'))
		s.written++
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("%s: %w", MetricsFile, err)
	}
	return nil
}

func (s *scraper) scrape(ctx context.Context, t *scrapeTarget) ([]Sample, error) {
	fams, err := metrics.Scrape(ctx, s.client, t.addr)
	if err != nil {
		return nil, err
	}
	return samplesOf(fams), nil
}

// Failures are the scrapes that failed, per process.
func (s *scraper) Failures() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, t := range s.targets {
		if t.failures > 0 {
			out[t.proc] += t.failures
		}
	}
	return out
}

// Close flushes and closes the file; call it after Run returned.
func (s *scraper) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.w.Flush(), s.f.Close())
}

// ParseMetrics reads Prometheus's text exposition into samples, sorted by
// name and labels so that two scrapes of the same process line up.
func ParseMetrics(r io.Reader) ([]Sample, error) {
	fams, err := metrics.Parse(r)
	if err != nil {
		return nil, err
	}
	return samplesOf(fams), nil
}

// samplesOf is what ParseMetrics makes of parsed families.
func samplesOf(fams map[string]*dto.MetricFamily) []Sample {
	var out []Sample
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			add := func(name string, v float64, extra ...string) {
				l := labels
				if len(extra) > 0 {
					l = map[string]string{extra[0]: extra[1]}
					for k, v := range labels {
						l[k] = v
					}
				}
				if len(l) == 0 {
					l = nil
				}
				out = append(out, Sample{Name: name, Labels: l, Value: v})
			}
			switch fam.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, b := range h.GetBucket() {
					add(name+"_bucket", float64(b.GetCumulativeCount()), "le", formatFloat(b.GetUpperBound()))
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
				}
				// The text format may leave the +Inf bucket implicit.
				if !inf {
					add(name+"_bucket", float64(h.GetSampleCount()), "le", "+Inf")
				}
				add(name+"_sum", h.GetSampleSum())
				add(name+"_count", float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					add(name, q.GetValue(), "quantile", formatFloat(q.GetQuantile()))
				}
				add(name+"_sum", sm.GetSampleSum())
				add(name+"_count", float64(sm.GetSampleCount()))
			default:
				add(name, m.GetUntyped().GetValue())
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return labelKey(out[i].Labels) < labelKey(out[j].Labels)
	})
	return out
}

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func labelKey(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b []byte
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, l[k]...)
		b = append(b, ',')
	}
	return string(b)
}

// ReadMetrics reads a run's MetricsFile.
func ReadMetrics(path string) ([]Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Sample
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		var s Sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// startScraper starts scraping, when the lab has metrics: on, into the
// run's MetricsFile; the processes add themselves as they say where they
// serve.
func (r *Run) startScraper(ctx context.Context) error {
	if !r.Lab.Metrics {
		return nil
	}
	s, err := newScraper(r.path(MetricsFile), ScrapeInterval, r.progress)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(sctx)
	}()
	r.scraper = s
	r.stopScraper = func() { cancel(); <-done }
	r.progress("scraping every process's /metrics once a second into %s", r.path(MetricsFile))
	return nil
}

// endScraper stops the scraper and closes its file.
func (r *Run) endScraper() error {
	if r.scraper == nil {
		return nil
	}
	r.stopScraper()
	return r.scraper.Close()
}

// metricsGauges are the Policy Servers' connections open and queue depth
// per second from scraped samples (a server's samples carry its host as
// Proc); nothing seen when no sample names them.
func metricsGauges(samples []Sample, servers []string, start time.Time, seconds int) chart.Gauges {
	g := chart.NewGauges(start, servers, seconds, "from "+MetricsFile)
	for _, s := range samples {
		i := slices.Index(servers, s.Proc)
		if i < 0 {
			continue
		}
		switch s.Name {
		case metrics.SmpsConnectionsOpen:
			g.Set(g.Open, i, s.T, int(s.Value))
		case metrics.SmpsQueueDepth:
			g.Set(g.Queue, i, s.T, int(s.Value))
		}
	}
	return g
}

// serverGauges are what the report charts beside the requests answered:
// the scraped metrics when the run has them, else the servers' trace.
func (r *Run) serverGauges(evs []trace.Event, load chart.Load) chart.Gauges {
	servers := r.Lab.ServerHosts()
	if r.Lab.Metrics {
		samples, err := ReadMetrics(r.path(MetricsFile))
		if g := metricsGauges(samples, servers, load.Start, load.Seconds()); err == nil && g.Any() {
			return g
		}
	}
	return chart.GaugesFromTrace(evs, servers, load.Start, load.Seconds())
}
