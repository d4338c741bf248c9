package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/trace"
)

// IIS restarts a worker process that dies (WAS); the lab says so at once,
// and the new w3wp.exe does its own bootstrap and HCO phase.

// wasChild waits for the w3wp.exe that WAS (svchost.exe, pid was) runs,
// other than pid not, by its Process Create row in WAS's own trace.
func wasChild(t *testing.T, dir string, was, not int, timeout time.Duration) int {
	t.Helper()
	path := filepath.Join(dir, trace.FileName("svchost.exe", was))
	deadline := time.Now().Add(timeout)
	for {
		evs, _ := trace.ReadFile(path)
		for i := len(evs) - 1; i >= 0; i-- {
			e := evs[i]
			if e.Op == trace.OpProcessCreate && e.Process.Name == "w3wp.exe" && e.Process.PID != not {
				return e.Process.PID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s names no w3wp.exe other than pid %d within %v", path, not, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIISWorkerKilledDuringHold: kill -9 of w3wp.exe while the lab holds.
// The lab prints the death at once (name, pid, signal, what was done),
// WAS starts a new w3wp.exe that bootstraps again and serves on the same
// address, and at the end the lab lists the death.
func TestIISWorkerKilledDuringHold(t *testing.T) {
	t.Parallel()
	labFile, ips := seedLab(t)
	guardProcs(t, slices.Collect(maps.Values(ips)))
	out := t.TempDir()
	p := startProc(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--hold", "--poll", "1s", "--requests", "2")
	line := p.waitOutput(t, &p.stderr, "lab: holding. Browse ", 2*time.Minute)
	url := strings.Fields(strings.TrimPrefix(line, "lab: holding. Browse "))[0]

	was := 0
	for _, q := range descendants(p.pid) {
		if slices.Contains(q.args, "--model") {
			was = q.pid
		}
	}
	if was == 0 {
		t.Fatalf("no web server process under agentlab (pid %d): %v", p.pid, descendants(p.pid))
	}
	old := wasChild(t, out, was, 0, time.Minute)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.waitOutput(t, &p.stderr, fmt.Sprintf("lab: w3wp.exe (pid %d) was killed by signal 9 (SIGKILL): ", old), 30*time.Second)
	nu := wasChild(t, out, was, old, time.Minute)
	p.waitOutput(t, &p.stderr, fmt.Sprintf("lab: svchost.exe (pid %d) started w3wp.exe (pid %d)", was, nu), 30*time.Second)

	// The same address serves again, through the new worker.
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer 200 after the restart: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	p.cmd.Process.Signal(os.Interrupt)
	if code := p.exitCode(t, time.Minute); code != 0 {
		t.Errorf("agentlab run: exit %d after a handled worker death and Ctrl-C\n%s", code, p.stderr.String())
	}
	stdout := p.stdout.String()
	if !strings.Contains(stdout, "Processes that died during the run:") ||
		!strings.Contains(stdout, fmt.Sprintf("w3wp.exe (pid %d) was killed by signal 9 (SIGKILL)", old)) {
		t.Errorf("the report does not list the death of w3wp.exe (pid %d):\n%s", old, stdout)
	}
	var sum struct {
		Deaths []struct {
			Name string
			PID  int
			Exit struct {
				Signal string
				Death  bool
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Deaths) != 1 || sum.Deaths[0].PID != old || sum.Deaths[0].Exit.Signal != "SIGKILL" || !sum.Deaths[0].Exit.Death {
		t.Errorf("summary.json deaths %+v, want w3wp.exe (pid %d) killed by SIGKILL, and nothing else", sum.Deaths, old)
	}

	// The trace: WAS's Process Exit for the old worker, and the new one's
	// own bootstrap (connect to smps2, HCO, reset) and HCO phase.
	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(e trace.Event) bool {
		return e.Op == trace.OpProcessExit && e.PID == old && e.Proc == "w3wp.exe" && e.Process.Exit != nil && e.Process.Exit.Signal == "SIGKILL"
	}) {
		t.Errorf("trace.jsonl has no Process Exit of w3wp.exe (pid %d) by SIGKILL", old)
	}
	// The old worker's LLAWP.exe left on its own; WAS, its subreaper,
	// recorded that.
	exits := checkEveryProcessExits(t, evs)
	oldLLAWP := 0
	for _, e := range evs {
		if e.Op == trace.OpProcessCreate && e.Process.ParentPID == old {
			oldLLAWP = e.Process.PID
		}
	}
	if x := exits[oldLLAWP]; oldLLAWP == 0 || x == nil || x.Death || !strings.Contains(x.Action, fmt.Sprintf("its owner w3wp.exe (pid %d) is gone", old)) {
		t.Errorf("the LLAWP.exe (pid %d) of the killed w3wp.exe: exit %+v, want one recorded, not a death, naming its owner", oldLLAWP, x)
	}
	for _, pid := range []int{old, nu} {
		cs := agentConns(evs)["w3wp.exe"][pid]
		if len(cs) == 0 {
			t.Errorf("w3wp.exe (pid %d) has no connections in the trace", pid)
			continue
		}
		checkRound(t, fmt.Sprintf("w3wp.exe (pid %d)", pid), cs, ips)
	}
	if !regexp.MustCompile(fmt.Sprintf(`Step \d+: at [0-9:.]+, w3wp.exe \(pid %d\) was killed by signal 9 \(SIGKILL\): `, old)).MatchString(stdout) {
		t.Errorf("the narrative does not tell the death of w3wp.exe (pid %d):\n%s", old, stdout)
	}
	if !strings.Contains(stdout, fmt.Sprintf("w3wp.exe (pid %d) connects to smps2.shared.lab:44443", nu)) {
		t.Errorf("the narrative does not tell the new w3wp.exe's bootstrap:\n%s", stdout)
	}
}

// TestIISRapidFail: WAS stops the application pool after the worker has
// failed rapid-fail-crashes times within the interval, and HTTP answers
// 503 as HTTP.sys does; each death is a notice on the web server's stdout.
func TestIISRapidFail(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	out := t.TempDir()
	args := append(s.hlaArgs(filepath.Join(s.dir, "WebAgent.conf"), out), "--rapid-fail-crashes", "2", "--rapid-fail-interval", "1m")
	hla := startProc(t, s.env, "hla", args...)
	url := hla.waitNotice(t, &hla.stdout, notice.HLAServing, nil, time.Minute).Addr
	// The notice of process pid's start or end.
	about := func(kind notice.Kind, pid int) (notice.Notice, func(notice.Notice) bool) {
		return notice.Notice{Prog: notice.ProgHLA, Kind: kind}, func(n notice.Notice) bool {
			return n.Process.Name == procname.IISWorker && n.Process.PID == pid
		}
	}

	first := wasChild(t, out, hla.pid, 0, time.Minute)
	syscall.Kill(first, syscall.SIGKILL)
	want, match := about(notice.Exited, first)
	hla.waitNotice(t, &hla.stdout, want, match, 30*time.Second)
	second := wasChild(t, out, hla.pid, first, time.Minute)
	want, match = about(notice.Started, second)
	hla.waitNotice(t, &hla.stdout, want, match, 30*time.Second)
	syscall.Kill(second, syscall.SIGKILL)
	want, match = about(notice.Exited, second)
	if exit := hla.waitNotice(t, &hla.stdout, want, match, 30*time.Second); !strings.Contains(exit.Process.Exit.Action, "rapid-fail protection") {
		t.Errorf("the second death does not say rapid-fail protection stopped the pool: %s", exit)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("after rapid-fail protection: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "HTTP Error 503. The service is unavailable.") {
		t.Errorf("after rapid-fail protection: %s\n%s", resp.Status, body)
	}
	for _, q := range descendants(hla.pid) {
		t.Errorf("WAS restarted a worker after rapid-fail protection stopped the pool: %v", q)
	}
	hla.cmd.Process.Signal(syscall.SIGTERM)
	if code := hla.exitCode(t, 30*time.Second); code != 0 {
		t.Errorf("hla: exit %d on SIGTERM\n%s", code, hla.stderr.String())
	}
}
