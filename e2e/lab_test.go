package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// conns groups a trace's events by connection.
func conns(evs []trace.Event) map[string][]trace.Event {
	m := map[string][]trace.Event{}
	for _, e := range evs {
		if e.Conn != "" {
			m[e.Conn] = append(m[e.Conn], e)
		}
	}
	return m
}

// hasRequest tells whether evs have a request of call, naming subject
// ("" for any).
func hasRequest(evs []trace.Event, call, subject string) bool {
	for _, e := range evs {
		if e.Op == trace.OpRequest && e.Request == call && (subject == "" || e.Subject == subject) {
			return true
		}
	}
	return false
}

// agentConns returns, per agent process (proc name -> pid -> its
// connections in the order it opened them), the events of each connection
// seen from the agent's side.
func agentConns(evs []trace.Event) map[string]map[int][][]trace.Event {
	out := map[string]map[int][][]trace.Event{}
	byConn := conns(evs)
	seen := map[string]bool{}
	for _, e := range evs {
		if e.Op != trace.OpConnect || e.Conn == "" || seen[e.Conn] || e.Role != "hla" && e.Role != "llawp" {
			continue
		}
		seen[e.Conn] = true
		if out[e.Proc] == nil {
			out[e.Proc] = map[int][][]trace.Event{}
		}
		out[e.Proc][e.PID] = append(out[e.Proc][e.PID], byConn[e.Conn])
	}
	return out
}

// checkRound checks one agent process's two rounds of the seed: a bootstrap
// connection to smps2 that shows trust_wa1 in clear, fetches hco.smps1 and
// ends with a reset; then exactly MinSocketsPerPort (2) connections to
// smps1 with the ACO over the first; and no other connection to smps2.
func checkRound(t *testing.T, who string, cs [][]trace.Event, ips map[string]string) {
	t.Helper()
	if len(cs) < 3 {
		t.Fatalf("%s opened %d connections, want a bootstrap one and 2 HCO ones", who, len(cs))
	}
	boot := cs[0]
	if boot[0].RemoteHost != "smps2.shared.lab" || !strings.HasPrefix(boot[0].Remote, ips["smps2.shared.lab"]+":") {
		t.Errorf("%s: bootstrap connection goes to %s (%s), want smps2.shared.lab", who, boot[0].RemoteHost, boot[0].Remote)
	}
	if boot[0].LocalHost != "wa1.shared.lab" || !strings.HasPrefix(boot[0].Local, ips["wa1.shared.lab"]+":") {
		t.Errorf("%s: bootstrap connection comes from %s (%s), want wa1.shared.lab", who, boot[0].LocalHost, boot[0].Local)
	}
	var clear bool
	for _, e := range boot {
		if e.Op == trace.OpSend && bytes.Contains(e.Data, []byte("trust_wa1")) {
			clear = true
		}
	}
	if !clear {
		t.Errorf("%s: no send on the bootstrap connection carries trust_wa1 in clear", who)
	}
	if !hasRequest(boot, trace.ReqGetHostConfig, "hco.smps1") {
		t.Errorf("%s: bootstrap connection has no GetHostConfig hco.smps1", who)
	}
	if last := boot[len(boot)-1]; last.Op != trace.OpReset {
		t.Errorf("%s: bootstrap connection ends with %q, want %q", who, last.Op, trace.OpReset)
	}
	for i, c := range cs[1:3] {
		if c[0].RemoteHost != "smps1.shared.lab" || c[0].Phase != trace.PhaseHCO {
			t.Errorf("%s: HCO connection %d goes to %s in phase %q, want smps1.shared.lab in phase hco", who, i+1, c[0].RemoteHost, c[0].Phase)
		}
	}
	if !hasRequest(cs[1], trace.ReqGetAgentConfig, "aco.wa1") || hasRequest(cs[2], trace.ReqGetAgentConfig, "") {
		t.Errorf("%s: the ACO is not fetched over the first HCO connection", who)
	}
	for _, c := range cs[3:] {
		if c[0].RemoteHost == "smps2.shared.lab" {
			t.Errorf("%s: a further connection to smps2 (only the bootstrap may go there)", who)
		}
	}
}

// TestSeedLabRun runs `agentlab run` on the seed lab and checks, from
// trace.jsonl alone, what the seed shows: w3wp.exe's bootstrap and HCO
// phase, then LLAWP.exe's (a child of w3wp.exe), every authorization call
// from w3wp.exe, one IsProtected per page request with the cache off, and
// DoManagement only from LLAWP.exe, once per poll interval.
func TestSeedLabRun(t *testing.T) {
	labFile, ips := seedLab(t)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--requests", "12", "--poll", "1s")
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, f := range []string{"trace.jsonl", "trace.pcapng", "summary.json", "SmHost.conf", "WebAgent.conf", "WA.log", "smps1.shared.lab.log", "smps2.shared.lab.log", "hosts"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("run folder lacks %s", f)
		}
	}
	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].T.Before(evs[i-1].T) {
			t.Fatalf("trace.jsonl is not in time order at event %d", i)
		}
	}
	agents := agentConns(evs)
	if len(agents["w3wp.exe"]) != 1 || len(agents["LLAWP.exe"]) != 1 {
		t.Fatalf("want one w3wp.exe and one LLAWP.exe, got %d and %d", len(agents["w3wp.exe"]), len(agents["LLAWP.exe"]))
	}
	var hlaPID, llawpPID int
	for pid, cs := range agents["w3wp.exe"] {
		hlaPID = pid
		checkRound(t, "w3wp.exe", cs, ips)
	}
	for pid, cs := range agents["LLAWP.exe"] {
		llawpPID = pid
		checkRound(t, "LLAWP.exe", cs, ips)
	}
	// The LLAWP's own first event comes after w3wp.exe's HCO phase: the
	// HLA starts it once it has its pool.
	first := func(proc string) (t0 time.Time) {
		for _, e := range evs {
			if e.Proc == proc {
				return e.T
			}
		}
		return
	}
	if !first("LLAWP.exe").After(first("w3wp.exe")) {
		t.Error("LLAWP.exe's round does not follow w3wp.exe's")
	}
	// The seed's order: both start-up rounds, then the first page load.
	// w3wp.exe waits for its LLAWP (AgentWaitTime) before it serves.
	llawpACO := slices.IndexFunc(evs, func(e trace.Event) bool {
		return e.Proc == "LLAWP.exe" && e.Op == trace.OpResponse && e.Request == trace.ReqGetAgentConfig
	})
	firstPage := slices.IndexFunc(evs, func(e trace.Event) bool {
		return e.Proc == "w3wp.exe" && e.Op == trace.OpRequest && e.Request == trace.ReqIsProtected
	})
	if llawpACO < 0 || firstPage < 0 || firstPage < llawpACO {
		t.Errorf("w3wp.exe's first IsProtected (event %d) comes before LLAWP.exe has its ACO (event %d)", firstPage, llawpACO)
	}
	// The capture starts when the web server starts: the registration
	// has a trace and a capture of its own, and none of its connections
	// (neither end) is in the run's.
	if i := slices.IndexFunc(evs, func(e trace.Event) bool { return e.Op == trace.OpConnect }); i < 0 ||
		evs[i].Proc != "w3wp.exe" || !strings.HasPrefix(evs[i].Remote, ips["smps2.shared.lab"]+":") {
		t.Errorf("the trace's first connection is not w3wp.exe's bootstrap to smps2: %+v", evs[max(i, 0)])
	}
	reg, err := trace.ReadFile(filepath.Join(out, "registration", "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	regPorts := map[string]bool{}
	for _, e := range reg {
		if e.Role == "smreghost" && e.Local != "" {
			regPorts[e.Local] = true
		}
	}
	if len(regPorts) != 1 || !slices.ContainsFunc(reg, func(e trace.Event) bool { return e.Role == "policyserver" && e.Op == trace.OpAccept }) {
		t.Errorf("registration/trace.jsonl: smreghost's connections %v, and the Policy Server's side of it: want one, with both sides", regPorts)
	}
	for _, e := range evs {
		if e.Role == "smreghost" || regPorts[e.Local] || regPorts[e.Remote] {
			t.Errorf("the run's trace has the registration's %s by %s", e.Op, e.Proc)
			break
		}
	}
	if _, err := os.Stat(filepath.Join(out, "registration", "trace.pcapng")); err != nil {
		t.Errorf("no registration/trace.pcapng: %v", err)
	}
	// Who started whom, as Process Monitor's Process Create rows tell it,
	// and every process that was created has its Process Exit.
	created := map[string]string{}
	for _, e := range evs {
		if e.Op == trace.OpProcessCreate {
			created[e.Process.Name] = e.Proc
		}
	}
	checkEveryProcessExits(t, evs)
	if created["w3wp.exe"] != "svchost.exe" || created["LLAWP.exe"] != "w3wp.exe" || created["svchost.exe"] != "agentlab" {
		t.Errorf("Process Create rows: %v (child: parent), want svchost.exe (WAS) started by agentlab, w3wp.exe by WAS, LLAWP.exe by w3wp.exe", created)
	}
	wa, _ := os.ReadFile(filepath.Join(out, "WA.jsonl"))
	if !strings.Contains(string(wa), fmt.Sprintf(`"ppid":%d`, hlaPID)) {
		t.Errorf("WA.jsonl does not show LLAWP.exe (pid %d) started by w3wp.exe (pid %d)", llawpPID, hlaPID)
	}
	waLog, _ := os.ReadFile(filepath.Join(out, "WA.log"))
	for _, want := range []string{"hostname='trust_wa1'.", "maxsocketsperport='20'.", "minsocketsperport='2'.", "newsocketstep='2'.", "requesttimeout='60'."} {
		if !strings.Contains(string(waLog), "] "+want+"\n") {
			t.Errorf("WA.log lacks the vendor line %q", want)
		}
	}
	checkWALog(t, out)

	// Authorization calls only from w3wp.exe, management only from LLAWP.exe.
	counts := map[string]map[string]int{}
	var polls []time.Time
	for _, e := range evs {
		if e.Op != trace.OpRequest || e.Role != "hla" && e.Role != "llawp" {
			continue
		}
		name := e.Request
		if counts[e.Proc] == nil {
			counts[e.Proc] = map[string]int{}
		}
		counts[e.Proc][name]++
		if e.Proc == "LLAWP.exe" && name == trace.ReqDoManagement {
			polls = append(polls, e.T)
		}
	}
	for _, name := range []string{"IsProtected", "Login", "Authorize"} {
		if counts["LLAWP.exe"][name] != 0 {
			t.Errorf("LLAWP.exe sent %d %s requests; only w3wp.exe may", counts["LLAWP.exe"][name], name)
		}
	}
	if counts["w3wp.exe"]["DoManagement"] != 0 {
		t.Errorf("w3wp.exe sent DoManagement; only LLAWP.exe may")
	}
	if len(polls) < 2 {
		t.Errorf("LLAWP.exe polled %d times, want at least 2", len(polls))
	}
	for i := 1; i < len(polls); i++ {
		if gap := polls[i].Sub(polls[i-1]); gap < 900*time.Millisecond || gap > 3*time.Second {
			t.Errorf("poll %d came %s after the previous one; the interval is 1s", i, gap)
		}
	}
	// With the agent cache off (the seed's ACO), every HTTP request the
	// web server received sends one IsProtected: 12 page loads, plus the
	// one repeated after the Basic challenge.
	var sum struct {
		Requests struct{ Sent, Succeeded, Failed, Challenges int }
	}
	data, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if err := json.Unmarshal(data, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Requests.Sent != 12 || sum.Requests.Succeeded != 12 || sum.Requests.Failed != 0 {
		t.Errorf("summary: %+v", sum.Requests)
	}
	if got, want := counts["w3wp.exe"]["IsProtected"], 12+sum.Requests.Challenges; got != want {
		t.Errorf("w3wp.exe sent %d IsProtected for %d HTTP requests", got, want)
	}
	// The seed's four steps come first, in its order.
	for i, want := range []string{
		fmt.Sprintf("Step 1: w3wp.exe (pid %d) connects to smps2.shared.lab:44443 using tcp port", hlaPID),
		fmt.Sprintf("Step 2: w3wp.exe (pid %d) connects to smps1.shared.lab:44443 by creating 2 connections", hlaPID),
		fmt.Sprintf("Step 3: LLAWP.exe (pid %d) connects to smps2.shared.lab:44443 using tcp port", llawpPID),
		fmt.Sprintf("Step 4: LLAWP.exe (pid %d) connects to smps1.shared.lab:44443 by creating 2 connections", llawpPID),
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("step %d is not %q:\n%s", i+1, want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "smreghost") {
		t.Errorf("the report shows the registration (smreghost), which happened before the web server started:\n%s", r.stdout)
	}
	for _, want := range []string{"Time of Day", "Process Name", "w3wp.exe", "LLAWP.exe",
		"downloads HCO hco.smps1 and resets the connection", "downloads ACO aco.wa1 over the first",
		"requests: 12 sent, 12 succeeded, 0 failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}

	// The files the lab wrote pass conf check as they are (their folder
	// names the lab host, LabHost.conf), and not as another host: the
	// secret is bound to the host that registered.
	ok := runCmd(t, []string{"AGENTLAB_HOST_ID="}, "agentlab", "conf", "check", filepath.Join(out, "WebAgent.conf"))
	if ok.code != 0 || !strings.Contains(ok.stdout, "trust_wa1") || !strings.Contains(ok.stdout, "hco.smps1") || !strings.Contains(ok.stdout, "aco.wa1") {
		t.Errorf("conf check of the lab's WebAgent.conf: exit %d\n%s%s", ok.code, ok.stdout, ok.stderr)
	}
	other := runCmd(t, []string{"AGENTLAB_HOST_ID=another.host"}, "agentlab", "conf", "check", filepath.Join(out, "SmHost.conf"))
	if other.code == 0 || !strings.Contains(other.stderr, "Shared secret incorrect") || !strings.Contains(other.stderr, "smreghost") {
		t.Errorf("conf check of a copied SmHost.conf: exit %d, stderr %q", other.code, other.stderr)
	}
}

// TestSeedLabSocketGrowth drives more concurrent browsers than
// MinSocketsPerPort: w3wp.exe may open more sockets to smps1, but only in
// steps of NewSocketStep (2) and never more than MaxSocketsPerPort (20).
func TestSeedLabSocketGrowth(t *testing.T) {
	labFile, _ := seedLab(t)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--requests", "200", "--concurrency", "24", "--poll", "1s")
	// A second run into the same folder replaces the first: its trace
	// must show one w3wp.exe, not both runs'.
	if r.code == 0 {
		r = runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--requests", "200", "--concurrency", "24", "--poll", "1s")
	}
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(agentConns(evs)["w3wp.exe"]); n != 1 {
		t.Errorf("the second run's trace shows %d w3wp.exe processes, want 1", n)
	}
	for pid, cs := range agentConns(evs)["w3wp.exe"] {
		n := 0
		for _, c := range cs {
			if c[0].RemoteHost == "smps1.shared.lab" {
				n++
			}
		}
		// 24 browsers on 2 sockets queue at once: the pool must grow, and
		// only in whole steps.
		if n < 4 || n > 20 || (n-2)%2 != 0 {
			t.Errorf("w3wp.exe (pid %d) opened %d sockets to smps1: want 2 plus at least one step of 2, at most 20", pid, n)
		}
		t.Logf("w3wp.exe opened %d sockets to smps1 for 24 concurrent browsers", n)
	}
	checkGrowth(t, out, r.stdout)
}

// checkEveryProcessExits: a run's trace has a Process Exit for every
// Process Create, as Process Monitor has for a process that ended, and
// returns the exits by pid.
func checkEveryProcessExits(t *testing.T, evs []trace.Event) map[int]*trace.Exit {
	t.Helper()
	running := map[int]string{}
	exits := map[int]*trace.Exit{}
	for _, e := range evs {
		switch e.Op {
		case trace.OpProcessCreate:
			running[e.Process.PID] = e.Process.Name
		case trace.OpProcessExit:
			delete(running, e.PID)
			exits[e.PID] = e.Process.Exit
		}
	}
	if len(running) != 0 {
		t.Errorf("processes with a Process Create and no Process Exit (pid: name): %v", running)
	}
	return exits
}
