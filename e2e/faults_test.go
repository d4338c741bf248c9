package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// failoverLab writes labs/failover.yaml with addresses of the test's own
// and a shorter workload and fault list.
func failoverLab(t testing.TB, rest string) (path string, ips map[string]string) {
	t.Helper()
	a := loopbackIPs(t, 3, 44443)
	ips = map[string]string{"wa1.shared.lab": a[0], "smps1.shared.lab": a[1], "smps2.shared.lab": a[2]}
	data, err := os.ReadFile("../labs/failover.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for host, ip := range map[string]string{"127.0.0.11": a[0], "127.0.0.21": a[1], "127.0.0.22": a[2]} {
		if !strings.Contains(s, host) {
			t.Fatalf("labs/failover.yaml no longer has %s", host)
		}
		s = strings.ReplaceAll(s, host, ip)
	}
	i := strings.Index(s, "\nworkload:")
	if i < 0 || !strings.Contains(s[i:], "\nfaults:") {
		t.Fatal("labs/failover.yaml no longer ends with its workload: and faults: sections")
	}
	path = filepath.Join(t.TempDir(), "failover.yaml")
	if err := os.WriteFile(path, []byte(s[:i+1]+rest), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, ips
}

// TestFailoverLab runs the failover lab, shortened: the primary smps1 is
// killed under load, started again, and then the backup smps2 is killed,
// so that the agent's traffic must find the restarted primary. It checks,
// from summary.json and trace.jsonl, that each fault was applied at its
// time and that the new smps1 process served on the old one's address.
func TestFailoverLab(t *testing.T) {
	labFile, ips := failoverLab(t, `workload:
  duration: 9s
  rate: 40
  concurrency: 2
faults:
  - {at: 2s, server: smps1, action: kill}
  - {at: 4s, server: smps1, action: restart}
  - {at: 6s, server: smps2, action: kill}
`)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--poll", "1s")
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var sum struct {
		Faults []struct {
			Line     int
			Server   string
			Action   string
			Applied  bool
			Time     time.Time
			OffsetMs float64 `json:"offset_ms"`
			PID      int
			NewPID   int `json:"new_pid"`
			Address  string
		}
		Processes []struct {
			Name  string
			PID   int
			Fault string
		}
		Requests struct{ Sent, Succeeded, Failed int }
	}
	data, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &sum); err != nil {
		t.Fatal(err)
	}
	primary := ips["smps1.shared.lab"] + ":44443"
	want := []struct {
		server, action string
		at             time.Duration
	}{{"smps1.shared.lab", "kill", 2 * time.Second}, {"smps1.shared.lab", "restart", 4 * time.Second}, {"smps2.shared.lab", "kill", 6 * time.Second}}
	if len(sum.Faults) != len(want) {
		t.Fatalf("summary.json has %d faults, want %d:\n%s", len(sum.Faults), len(want), data)
	}
	for i, w := range want {
		f := sum.Faults[i]
		late := time.Duration(f.OffsetMs*float64(time.Millisecond)) - w.at
		if !f.Applied || f.Server != w.server || f.Action != w.action || late < 0 || late > time.Second {
			t.Errorf("fault %d: %+v; want %s %s applied at %s (it came %s late)", i+1, f, w.action, w.server, w.at, late)
		}
		if !strings.Contains(r.stderr, fmt.Sprintf("failover.yaml:%d): %s %s", f.Line, w.action, w.server)) {
			t.Errorf("the progress output does not log fault %d:\n%s", i+1, r.stderr)
		}
	}
	kill, restart := sum.Faults[0], sum.Faults[1]
	if kill.PID == 0 || restart.NewPID == 0 || kill.PID == restart.NewPID || kill.Address != primary || restart.Address != primary {
		t.Fatalf("kill %+v, restart %+v: want two processes on %s", kill, restart, primary)
	}
	pids := map[int]string{}
	for _, p := range sum.Processes {
		if p.Name == "smps1.shared.lab" {
			pids[p.PID] = p.Fault
		}
	}
	if len(pids) != 2 || !strings.Contains(pids[kill.PID], "killed (SIGKILL)") || pids[restart.NewPID] != "" {
		t.Errorf("summary.json's smps1 processes %v: want pid %d killed by the fault and pid %d stopped with the run", pids, kill.PID, restart.NewPID)
	}

	// The trace: the old process's last event comes before the kill took
	// it; the new one starts after the restart and accepts the agent's
	// connections on the very same address.
	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var oldLast time.Time
	var newAccepts, oldAccepts int
	var newFirst time.Time
	afterBackupKill := 0
	for _, e := range evs {
		switch {
		case e.Proc == "smps" && e.PID == kill.PID:
			oldLast = e.T
			if e.Op == trace.OpAccept && e.Local == primary {
				oldAccepts++
			}
		case e.Proc == "smps" && e.PID == restart.NewPID:
			if newFirst.IsZero() {
				newFirst = e.T
			}
			if e.Op == trace.OpAccept && e.Local == primary && e.RemoteHost == "wa1.shared.lab" {
				newAccepts++
			}
		case e.Role == "hla" && e.Op == trace.OpResponse && e.Phase == trace.PhaseRequests && e.RemoteHost == "smps1.shared.lab" && e.T.After(sum.Faults[2].Time):
			afterBackupKill++
		}
	}
	if oldAccepts == 0 || oldLast.IsZero() || oldLast.After(kill.Time.Add(500*time.Millisecond)) {
		t.Errorf("the killed smps1 (pid %d) accepted %d connections on %s, last event at %s; the kill was at %s",
			kill.PID, oldAccepts, primary, oldLast.Format(time.StampMicro), kill.Time.Format(time.StampMicro))
	}
	if newAccepts == 0 || newFirst.Before(restart.Time) {
		t.Errorf("the restarted smps1 (pid %d) accepted %d of the web server's connections on %s, first event at %s; the restart was at %s",
			restart.NewPID, newAccepts, primary, newFirst.Format(time.StampMicro), restart.Time.Format(time.StampMicro))
	}
	if afterBackupKill == 0 {
		t.Errorf("no request of w3wp.exe was answered by the restarted smps1 after smps2 was killed")
	}
	// Both processes said where they listened, in the log they share.
	logData, _ := os.ReadFile(filepath.Join(out, "smps1.shared.lab.log"))
	if n := strings.Count(string(logData), "Policy Server smps1.shared.lab listening on "+primary); n != 2 {
		t.Errorf("smps1.shared.lab.log says %d times that it listens on %s, want 2 (before the kill and after the restart)", n, primary)
	}
	for _, want := range []string{"Faults (", "kill", "restart", "Answers to the web server's requests"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the report lacks %q:\n%s", want, r.stdout)
		}
	}
	t.Logf("page loads: %+v", sum.Requests)
}

// TestFaultLabErrors: a lab file whose faults are wrong is refused before
// anything starts, with the file and line of each problem.
func TestFaultLabErrors(t *testing.T) {
	labFile, _ := failoverLab(t, `faults:
  - {at: 2s, server: smps9, action: kill}
  - {at: 4s, server: smps1, action: explode}
`)
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", t.TempDir(), "--bin", binDir)
	if r.code == 0 {
		t.Fatal("exit 0")
	}
	data, _ := os.ReadFile(labFile)
	lines := strings.Split(string(data), "\n")
	lineOf := func(s string) int {
		for i, l := range lines {
			if strings.Contains(l, s) {
				return i + 1
			}
		}
		t.Fatalf("%q not in the lab file", s)
		return 0
	}
	for _, want := range []string{
		fmt.Sprintf("%s:%d: fault 1: server \"smps9\" is not one of the lab's policy servers", labFile, lineOf("smps9")),
		fmt.Sprintf("%s:%d: fault 2: unknown action \"explode\"", labFile, lineOf("explode")),
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

// TestSmpsControl drives a real smps through its control API, as the lab
// does, and meets each fault as smreghost, a real client.
func TestSmpsControl(t *testing.T) {
	ips := loopbackIPs(t, 2, 44443)
	control := ips[0] + ":44444"
	hosts := writeHosts(t, map[string]string{"smps1.shared.lab": ips[0], "wa1.shared.lab": ips[1]})
	logPath := startSmps(t, ips[0], "smps1.shared.lab", "--control", control)
	sm := filepath.Join(t.TempDir(), "SmHost.conf")
	register := func() result {
		return runCmd(t, []string{"AGENTLAB_HOST_ID=wa1.shared.lab"}, "smreghost", "-i", "smps1.shared.lab", "-u", "siteminder", "-p", "siteminder",
			"-hn", "trust_wa1", "-hc", "hco.smps1", "-f", sm, "-o", "--hosts", hosts, "--source", ips[1])
	}
	post := func(path string, code int, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+control+path, nil)
		// Without it smps refuses: a web page could otherwise POST a fault.
		if code != http.StatusForbidden {
			req.Header.Set("X-Agentlab-Control", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != code || !strings.Contains(string(b), body) {
			t.Fatalf("POST %s: %d %s, want %d with %q", path, resp.StatusCode, b, code, body)
		}
	}
	cases := []struct {
		name, path string
		fails      string // what smreghost says while the fault is on
	}{
		{"refuse", "/faults/stop-accepting", "refused"},
		{"reject", "/faults/reject-handshakes?code=3153", "3153"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			post(c.path, 200, `"done"`)
			if r := register(); r.code == 0 || !strings.Contains(r.stderr, c.fails) {
				t.Errorf("smreghost during %s: exit %d, stderr %q; want it to say %q", c.path, r.code, r.stderr, c.fails)
			}
			post("/faults/resume", 200, `"accept":"accepting"`)
			if r := register(); r.code != 0 {
				t.Errorf("smreghost after resume: exit %d\n%s", r.code, r.stderr)
			}
		})
	}
	post("/faults/explode", 400, `unknown fault "explode"`)
	post("/faults/stop-accepting", 403, "needs the header X-Agentlab-Control: 1")
	if r := register(); r.code != 0 {
		t.Errorf("smreghost after a refused POST: exit %d\n%s", r.code, r.stderr)
	}
	waitForLog(t, logPath, "Fault injection: stopped accepting connections: refusing")
	waitForLog(t, logPath, "Fault injection: rejecting every handshake with 3153 Bad version")
	waitForLog(t, logPath, "Handshake error: Bad version")
}

// TestSmpsMetricsFlush: a real smps serves /metrics on --metrics, and
// smps --flushrequests --control tells it to flush its queue, as
// smpolicysrv -flushrequests does.
func TestSmpsMetricsFlush(t *testing.T) {
	ips := loopbackIPs(t, 1, 44443)
	control, metricsAddr := ips[0]+":44444", ips[0]+":44445"
	logPath := startSmps(t, ips[0], "smps1.shared.lab", "--control", control, "--metrics", metricsAddr, "--threads", "3")
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"\nsmps_threads 3\n", "\nsmps_queue_depth 0\n", "\nsmps_connections_open 0\n", "\nprocess_resident_memory_bytes "} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, b)
		}
	}
	r := runCmd(t, nil, "smps", "--flushrequests", "--control", control)
	if r.code != 0 || r.stdout != "smps: flushed 0 queued requests\n" {
		t.Errorf("smps --flushrequests: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	waitForLog(t, logPath, "Flushed 0 requests from the request queue")
}
