package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/lab"
	"github.com/agentlab/agentlab/trace"
)

type compareOutput struct {
	Lab          string           `json:"lab"`
	PollInterval string           `json:"poll_interval"`
	Runs         []lab.CompareRun `json:"runs"`
}

// runCompare runs agentlab compare to its end. Three labs in a row under
// the race detector take longer than runCmd's minute.
func runCompare(t *testing.T, args ...string) (compareOutput, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("agentlab"), append([]string{"compare"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("agentlab compare %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errb.String())
	}
	var res compareOutput
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("--json printed no JSON: %v\n%s", err, out.String())
	}
	return res, errb.String()
}

func TestCompare(t *testing.T) {
	path, _ := seedLab(t)
	out := t.TempDir()
	res, stderr := runCompare(t, path, "--requests", "40", "--json", "--out", out)
	if len(res.Runs) != 3 {
		t.Fatalf("%d runs, want 3; stderr:\n%s", len(res.Runs), stderr)
	}
	want := []struct {
		name, dir string
		procs     int
	}{{"IIS", "iis", 2}, {"Apache prefork", "apache-prefork", 4}, {"Apache worker", "apache-worker", 4}}
	for i, w := range want {
		r := res.Runs[i]
		if r.Run != w.name || r.Out != filepath.Join(out, w.dir) || r.Error != "" {
			t.Errorf("run %d: %q in %s, error %q; want %s in %s", i, r.Run, r.Out, r.Error, w.name, w.dir)
		}
		// Every agent process bootstraps once from smps2, fetches its own
		// ACO, and opens at least MinSocketsPerPort (2) sockets to smps1.
		if r.Processes != w.procs || r.BootstrapRounds != w.procs || r.ACODownloads != w.procs {
			t.Errorf("%s: %d processes, %d bootstrap rounds, %d ACO downloads; want %d of each",
				r.Run, r.Processes, r.BootstrapRounds, r.ACODownloads, w.procs)
		}
		if r.Connections["smps2.shared.lab"] != w.procs || r.Connections["smps1.shared.lab"] < 2*w.procs {
			t.Errorf("%s: connections %v; want %d to smps2 and at least %d to smps1", r.Run, r.Connections, w.procs, 2*w.procs)
		}
		total := r.Connections["smps1.shared.lab"] + r.Connections["smps2.shared.lab"]
		if r.Handshakes != total {
			t.Errorf("%s: %d handshakes for %d connections", r.Run, r.Handshakes, total)
		}
		// The bootstrap socket is reset before the HCO phase: one at a
		// time per process, so never more than the processes.
		if p := r.PeakOpen["smps2.shared.lab"]; p < 1 || p > w.procs {
			t.Errorf("%s: peak open to smps2 %d", r.Run, p)
		}
		if p := r.PeakOpen["smps1.shared.lab"]; p < 2 || p > r.Connections["smps1.shared.lab"] {
			t.Errorf("%s: peak open to smps1 %d of %d connections", r.Run, p, r.Connections["smps1.shared.lab"])
		}
		if r.ManagementPolls < 2 {
			t.Errorf("%s: %d management polls, the run waits for 2", r.Run, r.ManagementPolls)
		}
		// The table's polls are the run's summary.json's, and the trace's
		// answered DoManagement requests, the LLAWP's last ones included.
		var sum lab.Summary
		if data, err := os.ReadFile(filepath.Join(r.Out, "summary.json")); err != nil || json.Unmarshal(data, &sum) != nil {
			t.Errorf("%s: summary.json: %v", r.Run, err)
		}
		evs, err := trace.ReadFile(filepath.Join(r.Out, "trace.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if n := lab.ManagementPolls(evs); sum.ManagementPolls != r.ManagementPolls || n != r.ManagementPolls {
			t.Errorf("%s: %d management polls in the table, %d in summary.json, %d in trace.jsonl", r.Run, r.ManagementPolls, sum.ManagementPolls, n)
		}
		if r.PageLoads != 40 || r.Succeeded != 40 || r.RequestsPerSec <= 0 || r.P50ms <= 0 || r.P99ms < r.P50ms {
			t.Errorf("%s: workload %d/%d, %.0f/s, p50 %.2f p99 %.2f", r.Run, r.Succeeded, r.PageLoads, r.RequestsPerSec, r.P50ms, r.P99ms)
		}
		// IIS: WAS (svchost.exe), w3wp.exe and its LLAWP.exe; Apache: the
		// parent, the children and the LLAWP.
		if wantRSS := map[int]int{2: 3, 4: 5}[w.procs]; r.RSSProcs != wantRSS || r.RSSMiB <= 1 {
			t.Errorf("%s: %.1f MiB in %d processes, want %d processes", r.Run, r.RSSMiB, r.RSSProcs, wantRSS)
		}
		if r.ConnsPer1000 != nil {
			t.Errorf("%s: connections per 1,000 requests without recycling", r.Run)
		}
	}
	if res.PollInterval != "1s" {
		t.Errorf("poll %q, want compare's 1s", res.PollInterval)
	}
	// One report.html with the three runs side by side, named on stderr
	// (stdout is the JSON).
	page, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil || !strings.Contains(stderr, "compare: report.html with the 3 runs side by side: "+filepath.Join(out, "report.html")) {
		t.Errorf("no report.html (%v) or not told where:\n%s", err, stderr)
	}
	if n := strings.Count(string(page), `<svg class="seq"`); n != 3 {
		t.Errorf("report.html has %d sequence diagrams, want one per run", n)
	}
}
