package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

func hasOp(evs []trace.Event, op, noteContains string) bool {
	for _, e := range evs {
		if e.Op == op && strings.Contains(e.Note, noteContains) {
			return true
		}
	}
	return false
}

// TestSeedLabRun runs `agentlab run` on the seed lab and checks, from
// trace.jsonl alone, the seed's bootstrap: the web server host connects to
// smps2 (the only SmHost.conf server), shows trust_wa1 in clear, fetches
// hco.smps1 and resets; then talks to smps1, the HCO's server, for the ACO.
func TestSeedLabRun(t *testing.T) {
	labFile, ips := seedLab(t)
	out := t.TempDir()
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir)
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, f := range []string{"trace.jsonl", "summary.json", "SmHost.conf", "WebAgent.conf", "smps1.shared.lab.log", "smps2.shared.lab.log", "hosts"} {
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

	// The agent's side of each connection, in the order they were opened.
	var agent [][]trace.Event
	byConn := conns(evs)
	seen := map[string]bool{}
	for _, e := range evs {
		if e.Proc == "agentlab" && e.Op == trace.OpConnect && e.Conn != "" && !seen[e.Conn] {
			seen[e.Conn] = true
			agent = append(agent, byConn[e.Conn])
		}
	}
	if len(agent) != 2 {
		t.Fatalf("the probe opened %d connections, want 2 (bootstrap to smps2, then smps1)", len(agent))
	}
	boot, hco := agent[0], agent[1]
	if boot[0].RemoteHost != "smps2.shared.lab" || !strings.HasPrefix(boot[0].Remote, ips["smps2.shared.lab"]+":") {
		t.Errorf("bootstrap connection goes to %s (%s), want smps2.shared.lab", boot[0].RemoteHost, boot[0].Remote)
	}
	if boot[0].LocalHost != "wa1.shared.lab" || !strings.HasPrefix(boot[0].Local, ips["wa1.shared.lab"]+":") {
		t.Errorf("bootstrap connection comes from %s (%s), want wa1.shared.lab", boot[0].LocalHost, boot[0].Local)
	}
	var clear bool
	for _, e := range boot {
		if e.Op == trace.OpSend && bytes.Contains(e.Data, []byte("trust_wa1")) {
			clear = true
		}
	}
	if !clear {
		t.Error("no send on the bootstrap connection carries trust_wa1 in clear")
	}
	if !hasOp(boot, trace.OpRequest, "GetHostConfig hco.smps1") {
		t.Error("bootstrap connection has no GetHostConfig hco.smps1")
	}
	if last := boot[len(boot)-1]; last.Op != trace.OpReset {
		t.Errorf("bootstrap connection ends with %q, want %q", last.Op, trace.OpReset)
	}
	if hco[0].RemoteHost != "smps1.shared.lab" {
		t.Errorf("HCO connection goes to %s, want smps1.shared.lab", hco[0].RemoteHost)
	}
	if !hasOp(hco, trace.OpRequest, "GetAgentConfig aco.wa1") || !hasOp(hco, trace.OpResponse, "SUCCESS") {
		t.Error("HCO connection did not fetch ACO aco.wa1")
	}
	// The server saw the same connection: its accept has our ports reversed.
	var serverSaw bool
	for _, e := range evs {
		if e.Proc == "smps" && e.Op == trace.OpAccept && e.Remote == boot[0].Local && e.Local == boot[0].Remote {
			serverSaw = true
		}
	}
	if !serverSaw {
		t.Error("smps2's trace has no accept of the bootstrap connection")
	}
	if !strings.Contains(r.stdout, "Time of Day") || !strings.Contains(r.stdout, "wa1.shared.lab:") {
		t.Errorf("stdout lacks the Process Monitor table:\n%s", r.stdout)
	}

	// The files the lab wrote pass conf check on the lab's web server host,
	// and not elsewhere: the secret is bound to the host that registered.
	env := []string{"AGENTLAB_HOST_ID=wa1.shared.lab"}
	ok := runCmd(t, env, "agentlab", "conf", "check", filepath.Join(out, "WebAgent.conf"))
	if ok.code != 0 || !strings.Contains(ok.stdout, "trust_wa1") || !strings.Contains(ok.stdout, "hco.smps1") || !strings.Contains(ok.stdout, "aco.wa1") {
		t.Errorf("conf check of the lab's WebAgent.conf: exit %d\n%s%s", ok.code, ok.stdout, ok.stderr)
	}
	other := runCmd(t, []string{"AGENTLAB_HOST_ID=another.host"}, "agentlab", "conf", "check", filepath.Join(out, "SmHost.conf"))
	if other.code == 0 || !strings.Contains(other.stderr, "Shared secret incorrect") || !strings.Contains(other.stderr, "smreghost") {
		t.Errorf("conf check of a copied SmHost.conf: exit %d, stderr %q", other.code, other.stderr)
	}
}
