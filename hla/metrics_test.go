package hla

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentlab/agentlab/metrics"
)

// TestWorkerMetrics: a web server parent serves its workers' /metrics
// under one address, each worker's labelled with its pid; a worker that
// is gone is left out, and the scrape still parses with Prometheus's
// text parser.
func TestWorkerMetrics(t *testing.T) {
	ctx := t.Context()
	g := newWorkerMetrics()
	resends := map[int]float64{101: 2, 102: 5}
	for pid, n := range resends {
		reg := prometheus.NewRegistry()
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: metrics.AgentResends, Help: "Resends."})
		c.Add(n)
		reg.MustRegister(c)
		addr, err := metrics.Serve(ctx, "127.0.0.1:0", reg)
		if err != nil {
			t.Fatal(err)
		}
		g.set(pid, addr.String())
	}
	g.set(103, "127.0.0.1:1") // exited: nothing listens there
	g.remove(103)
	g.set(104, "127.0.0.1:1") // not answering: left out of the scrape
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", g)
	if err != nil {
		t.Fatal(err)
	}
	fams, err := metrics.Scrape(t.Context(), nil, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range fams[metrics.AgentResends].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == metrics.LabelPID {
				got[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if len(got) != 2 || got["101"] != 2 || got["102"] != 5 {
		t.Errorf("%s by pid %v, want 101: 2, 102: 5", metrics.AgentResends, got)
	}
}
