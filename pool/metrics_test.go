package pool

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/trace"
)

// TestMetrics: the pool's /metrics, scraped over HTTP and parsed with
// Prometheus's text parser, counts what the test did: requests by call and
// result, the resends of one that timed out, the sockets and the server's
// state as Stats gives them.
func TestMetrics(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := l.fakeServer("smps1.shared.lab", nil)
	hco := hcoFor(true, f.ep)
	hco.RequestTimeout = conf.Seconds(300 * time.Millisecond)
	cfg, _ := l.config(hco)
	p, _ := l.start(cfg)

	for i := range 3 {
		if resp, err := p.Do(context.Background(), isProtected(fmt.Sprintf("/ok/%d", i))); err != nil || resp.Result != tlipb.Result_YES {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
	}
	if _, err := p.Do(context.Background(), isProtected("/hold")); Result(err) != tlipb.Result_TIMEOUT {
		t.Fatalf("held request: %v, want TIMEOUT", err)
	}
	f.release()

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() []*Pool { return []*Pool{p} }))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	families, err := metrics.Scrape(t.Context(), nil, addr.String())
	if err != nil {
		t.Fatal(err)
	}

	st := p.Stats().Servers[0]
	server := f.ep.addr()
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{metrics.AgentRequests, map[string]string{metrics.LabelType: trace.ReqIsProtected, metrics.LabelResult: "YES"}, 3},
		{metrics.AgentRequests, map[string]string{metrics.LabelType: trace.ReqIsProtected, metrics.LabelResult: "TIMEOUT"}, 1},
		{metrics.AgentResends, nil, MaxResends},
		{metrics.AgentCallersWaiting, nil, 0},
		{metrics.AgentServerState, map[string]string{metrics.LabelServer: server, metrics.LabelState: st.State.String()}, 1},
		{metrics.AgentServerState, map[string]string{metrics.LabelServer: server, metrics.LabelState: Inactive.String()}, 0},
		{metrics.AgentSockets, map[string]string{metrics.LabelServer: server, metrics.LabelState: "idle"}, float64(st.Open - st.Busy)},
		{metrics.AgentSockets, map[string]string{metrics.LabelServer: server, metrics.LabelState: "busy"}, float64(st.Busy)},
	}
	for _, tt := range tests {
		got, ok := metricValue(families[tt.name], tt.labels)
		if !ok {
			t.Errorf("%s%v: missing", tt.name, tt.labels)
			continue
		}
		if got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

// metricValue is the value of the metric of mf whose labels are labels.
func metricValue(mf *dto.MetricFamily, labels map[string]string) (float64, bool) {
	for _, m := range mf.GetMetric() {
		match := len(m.GetLabel()) == len(labels)
		for _, lp := range m.GetLabel() {
			if labels[lp.GetName()] != lp.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}
