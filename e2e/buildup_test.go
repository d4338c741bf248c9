package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/lab"
	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/trace"
)

// TestBuildupOutage runs labs/buildup.yaml (its remedies left out): the
// user directory turns slow behind 2 worker threads, agents time out and
// send again on new connections, connections climb until smps1 refuses
// them with the vendor's line, and page loads fail with the agent's
// error. Everything is checked from the run's records: trace.jsonl, the
// server's log, WA.log and the agents' logs, summary.json, metrics.jsonl.
func TestBuildupOutage(t *testing.T) {
	t.Parallel()
	a := loopbackIPs(t, 2, 44443)
	dir := t.TempDir()
	data, err := os.ReadFile("../labs/buildup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for host, ip := range map[string]string{"127.0.0.11": a[0], "127.0.0.21": a[1]} {
		if !strings.Contains(s, host) {
			t.Fatalf("labs/buildup.yaml no longer has %s", host)
		}
		s = strings.ReplaceAll(s, host, ip)
	}
	if i := strings.Index(s, "\nremedies:"); i >= 0 {
		s = s[:i+1]
	}
	store, err := os.ReadFile("../labs/buildup-store.yaml")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "buildup-store.yaml"), string(store))
	labFile := filepath.Join(dir, "buildup.yaml")
	writeFile(t, labFile, s)
	guardProcs(t, a)

	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir)
	if r.code != 0 {
		t.Fatalf("agentlab run buildup: exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	l, err := lab.Load(labFile)
	if err != nil {
		t.Fatal(err)
	}
	limit := l.PolicyServers[0].MaxConns

	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	timedOut := map[string]bool{}
	var resends, refused, queued int
	for _, e := range evs {
		switch {
		case e.Timeout != nil:
			timedOut[e.Conn] = true
		case e.Resend > 0 && e.Op == trace.OpRequest:
			if timedOut[e.Conn] {
				t.Errorf("a resend went over the connection that timed out (%s)", e.Conn)
			}
			resends++
		case e.Limit != nil:
			refused++
			if e.Limit.Max != limit {
				t.Errorf("refusal at a limit of %d, want %d", e.Limit.Max, limit)
			}
		case e.Queue != nil && e.Queue.Depth > 0:
			queued++
		}
	}
	if len(timedOut) == 0 || resends == 0 || refused == 0 || queued == 0 {
		t.Errorf("trace.jsonl: %d timed-out sockets, %d resends, %d refusals, %d requests that queued; want some of each", len(timedOut), resends, refused, queued)
	}
	serverLog, _ := os.ReadFile(filepath.Join(out, "smps1.shared.lab.log"))
	want := fmt.Sprintf("Connection request rejected. Connection limit of %d exceeded.", limit)
	if n := strings.Count(string(serverLog), want); n == 0 {
		t.Errorf("smps1.shared.lab.log never says %q", want)
	}
	var sum lab.Summary
	if data, err := os.ReadFile(filepath.Join(out, "summary.json")); err != nil || json.Unmarshal(data, &sum) != nil {
		t.Fatalf("summary.json: %v", err)
	}
	if sum.Requests.Failed == 0 || sum.Requests.Succeeded == 0 {
		t.Errorf("page loads: %d succeeded, %d failed; want both", sum.Requests.Succeeded, sum.Requests.Failed)
	}
	if !strings.Contains(strings.Join(sum.Requests.Errors, "\n"), "500") {
		t.Errorf("the failed page loads' errors name no HTTP 500: %q", sum.Requests.Errors)
	}
	agentLogs, _ := filepath.Glob(filepath.Join(out, "httpd-*.log"))
	cause := false
	for _, f := range agentLogs {
		data, _ := os.ReadFile(f)
		cause = cause || strings.Contains(string(data), "Likely cause")
	}
	if !cause {
		t.Errorf("no agent log of %d names the likely cause of a failed request", len(agentLogs))
	}
	// The server's own count of refusals, scraped once a second, never
	// exceeds what the trace recorded, and saw some.
	f, err := os.Open(filepath.Join(out, lab.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rejected float64
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var sm lab.Sample
		if json.Unmarshal(sc.Bytes(), &sm) == nil && sm.Proc == "smps1.shared.lab" && sm.Name == metrics.SmpsConnectionsRejected {
			rejected = max(rejected, sm.Value)
		}
	}
	if rejected == 0 || int(rejected) > refused {
		t.Errorf("%s scraped up to %v; the trace has %d refusals", metrics.SmpsConnectionsRejected, rejected, refused)
	}
	if !strings.Contains(r.stdout, fmt.Sprintf("Connection limit of %d exceeded", limit)) {
		t.Errorf("the steps do not tell the refusals:\n%s", r.stdout)
	}
}
