package metrics

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServeRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:9464", ":9464", "localhost:0", "127.0.0.1"} {
		if _, err := Serve(t.Context(), addr, prometheus.NewRegistry()); err == nil {
			t.Errorf("Serve(%q): no error, want a loopback address asked for", addr)
		}
	}
}

// TestServeExposition: what Serve answers parses with Prometheus's own
// text parser and carries the registry's values.
func TestServeExposition(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	reg := prometheus.NewRegistry()
	open := prometheus.NewGauge(prometheus.GaugeOpts{Name: SmpsConnectionsOpen, Help: "Open TLI connections."})
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: SmpsRequests, Help: "Requests answered."}, []string{LabelType, LabelResult})
	reg.MustRegister(open, reqs)
	open.Set(3)
	reqs.WithLabelValues("IsProtected", "YES").Add(7)
	addr, err := Serve(ctx, "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	families, err := Scrape(ctx, nil, addr.String())
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	if g := families[SmpsConnectionsOpen].GetMetric()[0].GetGauge().GetValue(); g != 3 {
		t.Errorf("%s = %v, want 3", SmpsConnectionsOpen, g)
	}
	if c := families[SmpsRequests].GetMetric()[0].GetCounter().GetValue(); c != 7 {
		t.Errorf("%s = %v, want 7", SmpsRequests, c)
	}
}
