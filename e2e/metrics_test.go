package e2e

import (
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/trace"
)

// TestAgentMetrics: with --metrics, the web server says where its
// workers' /metrics and its LLAWP's are ("hla: metrics on", "llawp:
// metrics on"); both parse with Prometheus's text parser, and the
// workers' IsProtected count (every worker's, labelled by pid) is the
// trace's.
func TestAgentMetrics(t *testing.T) {
	t.Parallel()
	for _, model := range []string{"iis", "apache"} {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			s := newAgentSetup(t)
			out := t.TempDir()
			args := append(s.hlaArgs(filepath.Join(s.dir, "WebAgent.conf"), out), "--model", model,
				"--metrics", s.ips["wa1.shared.lab"]+":0")
			if model == "apache" {
				args = append(args, "--workers", "2")
			}
			p := startProc(t, s.env, "hla", args...)
			hlaAddr := p.waitNotice(t, &p.stdout, notice.Notice{Prog: notice.ProgHLA, Kind: notice.Metrics}, nil, 2*time.Minute).Addr
			baseURL := p.waitNotice(t, &p.stdout, notice.HLAServing, nil, 2*time.Minute).Addr
			llawpAddr := p.waitNotice(t, &p.stdout, notice.Notice{Prog: notice.ProgLLAWP, Kind: notice.Metrics}, nil, time.Minute).Addr

			const loads = 12
			if errs := pages(baseURL, loads, 3); len(errs) != 0 {
				t.Fatalf("%d page loads failed: %v", len(errs), errs)
			}
			var fams map[string]*dto.MetricFamily
			waitTraceFor(t, out, "as many IsProtected as /metrics counts", 30*time.Second, func(a apacheTrace) bool {
				sent := 0
				for _, e := range a.evs {
					if e.Op == trace.OpRequest && e.Request == trace.ReqIsProtected && e.Role != "policyserver" &&
						e.Proc != procname.ApacheLLAWP && e.Proc != procname.IISLLAWP {
						sent++
					}
				}
				fams = scrape(t, hlaAddr)
				return sent >= loads && float64(sent) == metricSum(fams[metrics.AgentRequests], map[string]string{metrics.LabelType: trace.ReqIsProtected})
			})
			pids := map[string]bool{}
			for _, m := range fams[metrics.AgentRequests].GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == metrics.LabelPID {
						pids[l.GetValue()] = true
					}
				}
			}
			if want := map[string]int{"iis": 1, "apache": 2}[model]; len(pids) != want {
				t.Errorf("requests from %d worker pids %v, want %d", len(pids), pids, want)
			}
			if n := metricSum(fams[metrics.AgentResends], nil); n != 0 {
				t.Errorf("%s = %v with no timeout", metrics.AgentResends, n)
			}

			// The LLAWP polls DoManagement over its own pool.
			deadline := time.Now().Add(30 * time.Second)
			for {
				ll := scrape(t, llawpAddr)
				polls := metricSum(ll[metrics.AgentRequests], map[string]string{metrics.LabelType: trace.ReqDoManagement, metrics.LabelResult: "SUCCESS"})
				active := metricSum(ll[metrics.AgentServerState], map[string]string{metrics.LabelState: "Active"})
				if polls >= 1 && active == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the LLAWP's /metrics shows %v DoManagement and %v server Active", polls, active)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

// scrape reads http://addr/metrics with Prometheus's text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := metrics.Scrape(t.Context(), nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// metricSum adds the values of mf's metrics whose labels include labels.
func metricSum(mf *dto.MetricFamily, labels map[string]string) float64 {
	var total float64
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return total
}
