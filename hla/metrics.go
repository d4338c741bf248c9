package hla

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/pool"
)

// serveWorkerMetrics serves the worker's pool's /metrics on addr (a
// loopback host:port, port 0 for any) until ctx ends, and returns the
// address it listens on.
func serveWorkerMetrics(ctx context.Context, addr string, p *pool.Pool) (string, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(pool.NewCollector(func() []*pool.Pool { return []*pool.Pool{p} }))
	a, err := metrics.Serve(ctx, addr, reg)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

// workerMetrics is a web server parent's /metrics (the httpd parent, or
// WAS for its w3wp.exe): the union of its workers' own, each metric
// labelled with its worker's pid (metrics.LabelPID). Every worker is a
// pool of its own, as in the vendor's agent (an Apache prefork child
// opens its own sockets), and serves its pool's metrics on a loopback
// port of its own, which it tells the parent on its notice pipe; the
// parent reads them at each scrape. One address per web server is what
// an administrator (and the lab) scrapes, whatever the workers become:
// a worker that dies leaves it, its replacement joins it.
type workerMetrics struct {
	client *http.Client
	mu     sync.Mutex
	addrs  map[int]string // by pid
}

func newWorkerMetrics() *workerMetrics {
	return &workerMetrics{client: &http.Client{Timeout: time.Second}, addrs: map[int]string{}}
}

func (g *workerMetrics) set(pid int, addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.addrs[pid] = addr
}

func (g *workerMetrics) remove(pid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.addrs, pid)
}

// Gather implements prometheus.Gatherer. A worker that does not answer
// (exiting, or not serving yet) is left out of this scrape, without an
// error: metrics.Serve answers 500 to a Gatherer's error, and the other
// workers' figures are still worth having.
func (g *workerMetrics) Gather() ([]*dto.MetricFamily, error) {
	g.mu.Lock()
	pids := make([]int, 0, len(g.addrs))
	addrs := make(map[int]string, len(g.addrs))
	for pid, a := range g.addrs {
		pids = append(pids, pid)
		addrs[pid] = a
	}
	g.mu.Unlock()
	slices.Sort(pids)
	byName := map[string]*dto.MetricFamily{}
	for _, pid := range pids {
		// Gather has no context: the client's timeout bounds each worker.
		fams, err := metrics.Scrape(context.Background(), g.client, addrs[pid])
		if err != nil {
			continue
		}
		label := &dto.LabelPair{Name: proto.String(metrics.LabelPID), Value: proto.String(strconv.Itoa(pid))}
		for name, f := range fams {
			for _, m := range f.Metric {
				m.Label = append(m.Label, label)
			}
			if have, ok := byName[name]; ok {
				have.Metric = append(have.Metric, f.Metric...)
			} else {
				byName[name] = f
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int {
		switch {
		case a.GetName() < b.GetName():
			return -1
		case a.GetName() > b.GetName():
			return 1
		}
		return 0
	})
	return out, nil
}
