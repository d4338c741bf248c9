package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/agentlab/labs"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/trace"
)

// faultLab is a valid lab with two servers; faults are appended to it.
const faultLab = `name: x
hosts: {wa1: 127.0.0.11, smps1.shared.lab: 127.0.0.21, smps2.shared.lab: 127.0.0.22, smps10.other.lab: 127.0.0.23}
policy_servers:
  - {host: smps1.shared.lab, port: 44443}
  - {host: smps2.shared.lab, port: 44443}
  - {host: smps10.other.lab, port: 44443}
web_server: {host: wa1, http_port: 8080, trusted_host: t, host_config_object: h, agent_config_object: a, bootstrap: [smps2.shared.lab]}
admin: {user: a, password: b}
user: {name: u, password: p}
`

// faultLabLines is where the faults: list starts in faultLab + "faults:\n".
var faultLabLines = strings.Count(faultLab, "\n") + 1

func TestParseFaultAction(t *testing.T) {
	cases := []struct {
		in   string
		want FaultAction
		err  string
	}{
		{"kill", FaultAction{Kind: ActionKill}, ""},
		{"  restart ", FaultAction{Kind: ActionRestart}, ""},
		{"reset", FaultAction{Kind: ActionReset}, ""},
		{"resume", FaultAction{Kind: ActionResume}, ""},
		{"stop-accepting", FaultAction{Kind: ActionStopAccepting}, ""},
		{"stop-accepting refuse", FaultAction{Kind: ActionStopAccepting}, ""},
		{"stop-accepting queue", FaultAction{Kind: ActionStopAccepting, Queue: true}, ""},
		{"stall 10s", FaultAction{Kind: ActionStall, For: 10 * time.Second}, ""},
		{"stall 1m30s", FaultAction{Kind: ActionStall, For: 90 * time.Second}, ""},
		{"stall 24h", FaultAction{Kind: ActionStall, For: 24 * time.Hour}, ""},
		{"reject-handshakes", FaultAction{Kind: ActionRejectHandshakes}, ""},
		{"reject-handshakes 3157", FaultAction{Kind: ActionRejectHandshakes, Code: 3157}, ""},
		{"", FaultAction{}, "no action"},
		{"explode", FaultAction{}, `unknown action "explode"`},
		{"kill now", FaultAction{}, `kill: unexpected "now"`},
		{"stall", FaultAction{}, "needs a duration"},
		{"stall 10", FaultAction{}, `stall "10": want a positive duration`},
		{"stall -1s", FaultAction{}, "positive duration"},
		{"stall 0s", FaultAction{}, "positive duration"},
		{"stall 1s 2s", FaultAction{}, `unexpected "2s"`},
		{"stall 24h0m1s", FaultAction{}, `stall "24h0m1s": at most 24h0m0s`},
		// Its deadline would overflow past year 2262: smps acknowledged it and did nothing.
		{"stall 2100000h", FaultAction{}, `stall "2100000h": at most 24h0m0s`},
		{"stop-accepting drop", FaultAction{}, `stop-accepting "drop"`},
		{"reject-handshakes 42", FaultAction{}, "3152 to 3157"},
		{"reject-handshakes 3151", FaultAction{}, "3152 to 3157"},
		{"reject-handshakes 3158", FaultAction{}, "3152 to 3157"},
		{"reject-handshakes 3152", FaultAction{Kind: ActionRejectHandshakes, Code: 3152}, ""},
		{"reject-handshakes x", FaultAction{}, "3152 to 3157"},
		{"Kill", FaultAction{}, "unknown action"},
	}
	for _, c := range cases {
		got, err := ParseFaultAction(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want an error saying %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		if back, err := ParseFaultAction(got.String()); err != nil || back != got {
			t.Errorf("%q: String %q reads back as %+v, %v", c.in, got.String(), back, err)
		}
	}
}

func TestParseFaults(t *testing.T) {
	l, err := Parse("lab.yaml", "", []byte(faultLab+`faults:
  - at: 5s
    server: smps1
    action: kill
  - {after: hco, server: smps2.shared.lab, action: stall 10s}
  - {at: 1s, after: management, server: "smps10.other.lab:44443", action: reject-handshakes 3153}
  - {after: workload, server: smps10, action: stop-accepting queue}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line   int
		server string
		action string
		when   string
		anchor string
	}{
		{faultLabLines + 1, "smps1.shared.lab", "kill", "at 5s", AnchorWorkload},
		{faultLabLines + 4, "smps2.shared.lab", "stall 10s", "after hco", trace.PhaseHCO},
		{faultLabLines + 5, "smps10.other.lab", "reject-handshakes 3153", "1s after management", trace.PhaseManagement},
		{faultLabLines + 6, "smps10.other.lab", "stop-accepting queue", "at 0s", AnchorWorkload},
	}
	if len(l.Faults) != len(want) {
		t.Fatalf("%d faults, want %d", len(l.Faults), len(want))
	}
	for i, w := range want {
		f := l.Faults[i]
		if f.Line != w.line || f.Server != w.server || f.Action.String() != w.action || f.When() != w.when || f.Anchor() != w.anchor {
			t.Errorf("fault %d: line %d server %s action %q when %q anchor %s; want %+v", i+1, f.Line, f.Server, f.Action, f.When(), f.Anchor(), w)
		}
	}
}

// TestParseFaultsRejects: every problem is an error of its own that names
// the lab file and the line, as file:line.
func TestParseFaultsRejects(t *testing.T) {
	cases := []struct {
		name   string
		faults string
		want   []string // one per expected error, each "LINE: text" with LINE relative to the first fault
	}{
		{"unknown action", "  - {at: 1s, server: smps1, action: explode}", []string{`1: fault 1: unknown action "explode"`}},
		{"stall without a duration", "  - {server: smps1, action: stall}", []string{"1: fault 1: stall needs a duration"}},
		{"bad code", "  - {server: smps1, action: reject-handshakes 9}", []string{"1: fault 1: reject-handshakes \"9\""}},
		{"stall too long", "  - {server: smps1, action: stall 2100000h}", []string{`1: fault 1: stall "2100000h": at most 24h0m0s`}},
		{"unknown server", "  - {server: smps9, action: kill}", []string{`1: fault 1: server "smps9" is not one of the lab's policy servers (smps1.shared.lab, smps2.shared.lab, smps10.other.lab)`}},
		{"no server", "  - {action: kill}", []string{"1: fault 1: the fault names no server"}},
		{"no action", "  - {server: smps1}", []string{"1: fault 1: the fault has no action"}},
		{"bad at", "  - {at: soon, server: smps1, action: kill}", []string{`1: fault 1: at "soon"`}},
		{"negative at", "  - {at: -2s, server: smps1, action: kill}", []string{`1: fault 1: at "-2s"`}},
		{"bad after", "  - {after: lunch, server: smps1, action: kill}", []string{`1: fault 1: after "lunch": want workload`}},
		{"admin is no agent phase", "  - {after: admin, server: smps1, action: kill}", []string{`1: fault 1: after "admin"`}},
		{"unknown key", "  - {at: 1s, server: smps1, action: kill, when: now}", []string{`1: fault 1: unknown key "when"`}},
		{"not a mapping", "  - kill smps1", []string{"1: fault 1: a fault is a mapping"}},
		{"list value", "  - {server: [smps1, smps2], action: kill}", []string{"1: fault 1: server: want a single value"}},
		{"several at once", "  - {server: smps1, action: kill}\n  - {server: smps1, action: explode}\n  - {at: x, server: nope, action: kill}",
			[]string{`2: fault 2: unknown action "explode"`, `3: fault 3: at "x"`, `3: fault 3: server "nope"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("labs/x.yaml", "", []byte(faultLab+"faults:\n"+c.faults+"\n"))
			if err == nil {
				t.Fatal("accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(c.want) {
				t.Errorf("%d errors, want %d:\n%v", len(lines), len(c.want), err)
			}
			for _, w := range c.want {
				n, text, _ := strings.Cut(w, ": ")
				var rel int
				fmt.Sscan(n, &rel)
				full := fmt.Sprintf("labs/x.yaml:%d: %s", faultLabLines+rel, text)
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, full) }) {
					t.Errorf("no error starts with %q:\n%v", full, err)
				}
			}
		})
	}
	// A faults: that is not a list is a YAML error naming the file, line
	// and column; so is a key given twice, at the second.
	_, err := Parse("labs/x.yaml", "", []byte(faultLab+"faults: kill\n"))
	if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("labs/x.yaml:%d:9: faults: string was used where sequence is expected", faultLabLines)) {
		t.Errorf("faults: kill: %v", err)
	}
	_, err = Parse("labs/x.yaml", "", []byte(faultLab+"faults:\n  - at: 1s\n    at: 2s\n    server: smps1\n    action: kill\n"))
	if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf(`labs/x.yaml:%d:5: mapping key "at" already defined`, faultLabLines+2)) {
		t.Errorf("key twice: %v", err)
	}
	// An ambiguous first label.
	amb := strings.Replace(faultLab, "smps10.other.lab", "smps1.other.lab", -1)
	_, err = Parse("labs/x.yaml", "", []byte(amb+"faults:\n  - {server: smps1, action: kill}\n"))
	if err == nil || !strings.Contains(err.Error(), "could be any of 2 hosts") {
		t.Errorf("ambiguous server: %v", err)
	}
}

// TestEmbeddedLabs: the scenario labs parse, are reachable by name, and
// name HCOs their store has.
func TestEmbeddedLabs(t *testing.T) {
	store, err := os.ReadFile("../labs/seed-store.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range labs.ScenarioNames() {
		l, err := Open(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(l.Faults) == 0 || l.Workload.Duration == 0 {
			t.Errorf("%s: %d faults, workload %+v", name, len(l.Faults), l.Workload)
		}
		if !strings.Contains(string(store), "- name: "+l.WebServer.HostConfigObject+"\n") {
			t.Errorf("%s names HCO %s, which labs/seed-store.yaml lacks", name, l.WebServer.HostConfigObject)
		}
		for _, f := range l.Faults {
			if f.At >= time.Duration(l.Workload.Duration) {
				t.Errorf("%s: fault %s falls after the workload's %s", name, f.When(), time.Duration(l.Workload.Duration))
			}
		}
		disk, err := Load("../labs/" + name + ".yaml")
		if err != nil || len(disk.Faults) != len(l.Faults) {
			t.Errorf("labs/%s.yaml from disk: %v", name, err)
		}
	}
	if _, err := Open("seed"); err != nil {
		t.Errorf("Open(seed): %v", err)
	}
	if _, err := Open("nosuchlab"); err == nil || !strings.Contains(err.Error(), "failover") {
		t.Errorf("Open(nosuchlab): %v, want the embedded labs listed", err)
	}
}

func FuzzParseFaults(f *testing.F) {
	f.Add("  - {at: 5s, server: smps1, action: kill}\n")
	f.Add("  - at: 1s\n    after: hco\n    server: smps2.shared.lab\n    action: stall 10s\n")
	f.Add("  - {server: smps10.other.lab:44443, action: reject-handshakes 3153}\n")
	f.Add("  - {server: smps1, action: stop-accepting queue}\n  - {server: smps1, action: resume}\n")
	f.Add("  - [a, b]\n")
	f.Add("  - {at: , server: , action: }\n")
	f.Add("  - {server: smps1, action: stall 2100000h}\n")
	f.Fuzz(func(t *testing.T, faults string) {
		l, err := Parse("lab.yaml", "", []byte(faultLab+"faults:\n"+faults))
		if err != nil {
			// Every fault error names the file.
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.Contains(line, "fault") && !strings.HasPrefix(line, "lab.yaml") && !strings.HasPrefix(line, "  ") {
					t.Fatalf("error line without the file: %q", line)
				}
			}
			return
		}
		for _, f := range l.Faults {
			if ps, err := l.faultServer(f.Server); err != nil || f.addr != ps.Addr() || f.Server != ps.Host && f.Server != ps.Addr() {
				t.Fatalf("accepted server %q (%s): %+v, %v", f.Server, f.addr, ps, err)
			}
			if f.Action.Kind == ActionStall && f.Action.For > maxStall {
				t.Fatalf("accepted %s", f.Action)
			}
			if f.At < 0 || !slices.Contains(append(slices.Clone(faultPhases), AnchorWorkload), f.Anchor()) {
				t.Fatalf("accepted at %s after %q", f.At, f.After)
			}
			back, err := ParseFaultAction(f.Action.String())
			if err != nil || back != f.Action {
				t.Fatalf("action %+v does not read back: %+v, %v", f.Action, back, err)
			}
		}
	})
}

// twoOnOneHost is a lab with two Policy Servers on smps1.shared.lab.
const twoOnOneHost = `name: x
hosts: {wa1: 127.0.0.11, smps1.shared.lab: 127.0.0.21, smps2.shared.lab: 127.0.0.22}
policy_servers:
  - {host: smps1.shared.lab, port: 44443}
  - {host: smps1.shared.lab, port: 44444}
  - {host: smps2.shared.lab, port: 44443}
web_server: {host: wa1, http_port: 8080, trusted_host: t, host_config_object: h, agent_config_object: a, bootstrap: [smps2.shared.lab]}
admin: {user: a, password: b}
user: {name: u, password: p}
faults:
`

// TestFaultServersOnOneHost: where a host has two servers, a fault names
// one by host:port, and is kept on that one, not on its host.
func TestFaultServersOnOneHost(t *testing.T) {
	cases := []struct {
		server           string
		wantName, wantAt string // Fault.Server and the address the run keys it by
		err              string
	}{
		{"smps1.shared.lab:44444", "smps1.shared.lab:44444", "smps1.shared.lab:44444", ""},
		{"smps1.shared.lab:44443", "smps1.shared.lab:44443", "smps1.shared.lab:44443", ""},
		{"smps2", "smps2.shared.lab", "smps2.shared.lab:44443", ""},
		{"smps2.shared.lab:44443", "smps2.shared.lab", "smps2.shared.lab:44443", ""},
		{"smps1.shared.lab", "", "", `server "smps1.shared.lab" is 2 of the lab's policy servers: name one as host:port`},
		{"smps1", "", "", `server "smps1" is 2 of the lab's policy servers: name one as host:port`},
		{"smps1.shared.lab:44445", "", "", "is not one of the lab's policy servers"},
	}
	for _, c := range cases {
		t.Run(c.server, func(t *testing.T) {
			l, err := Parse("lab.yaml", "", []byte(twoOnOneHost+"  - {server: \""+c.server+"\", action: kill}\n"))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("%v, want an error saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f := l.Faults[0]; f.Server != c.wantName || f.addr != c.wantAt {
				t.Errorf("server %q keyed by %q, want %q keyed by %q", f.Server, f.addr, c.wantName, c.wantAt)
			}
		})
	}
}

// TestFaultRunnerOnOneHost: a kill and a restart of one of two servers on
// one host act on that one; the other one goes on and takes its own faults.
func TestFaultRunnerOnOneHost(t *testing.T) {
	fc := newFakeControl(t)
	l, err := Parse("lab.yaml", "", []byte(twoOnOneHost+`  - {server: "smps1.shared.lab:44444", action: kill}
  - {at: 50ms, server: "smps1.shared.lab:44443", action: stall 1s}
  - {at: 100ms, server: "smps1.shared.lab:44444", action: restart}
  - {at: 150ms, server: "smps1.shared.lab:44444", action: reset}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := &Run{Lab: l, Opts: Options{Out: t.TempDir(), BinDir: fakeSmps(t, strings.TrimPrefix(fc.srv.URL, "http://")), StartTimeout: 5 * time.Second}}
	startFakeServers(t, r)
	port43, port44 := r.procs[0], r.procs[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.startFaults(ctx); err != nil {
		t.Fatal(err)
	}
	r.faultsWorkloadStarted()
	if err := r.awaitFaults(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.stopFaults(); err != nil {
		t.Fatal(err)
	}
	recs := r.summary.Faults
	if recs[0].PID != port44.PID() || recs[0].Server != "smps1.shared.lab:44444" || recs[0].Address != "127.0.0.21:44444" {
		t.Errorf("kill record %+v: want pid %d (the :44444 server) at 127.0.0.21:44444", recs[0], port44.PID())
	}
	if recs[1].PID != port43.PID() || recs[1].Address != "127.0.0.21:44443" || !recs[1].Applied {
		t.Errorf("stall record %+v: want pid %d (the :44443 server)", recs[1], port43.PID())
	}
	if recs[2].PID != 0 || recs[2].NewPID == 0 || recs[2].Address != "127.0.0.21:44444" {
		t.Errorf("restart record %+v: want a new pid and no old one (the server was down)", recs[2])
	}
	if recs[3].PID != recs[2].NewPID {
		t.Errorf("reset record %+v: want the restarted pid %d", recs[3], recs[2].NewPID)
	}
	select {
	case <-port43.Done():
		t.Error("the :44443 server was stopped by faults on the :44444 one")
	default:
	}
	if len(r.infos) != 1 || r.infos[0].PID != port44.PID() {
		t.Errorf("ended processes %+v: want only the :44444 server, pid %d", r.infos, port44.PID())
	}
}

// fakeControl is an smps control API that records what it was told.
type fakeControl struct {
	mu   sync.Mutex
	got  []string
	when []time.Time
	srv  *httptest.Server
}

func newFakeControl(t *testing.T) *fakeControl {
	fc := &fakeControl{}
	fc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As smps does: a POST without the header is not from the lab.
		if r.Header.Get("X-Agentlab-Control") != "1" {
			http.Error(w, "smps control: a POST needs the header X-Agentlab-Control: 1", http.StatusForbidden)
			return
		}
		fc.mu.Lock()
		fc.got = append(fc.got, r.Method+" "+r.URL.RequestURI())
		fc.when = append(fc.when, time.Now())
		fc.mu.Unlock()
		if strings.Contains(r.URL.Path, "refuse-me") {
			http.Error(w, "smps control: no", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"done": "did " + r.URL.Path})
	}))
	t.Cleanup(fc.srv.Close)
	return fc
}

func (fc *fakeControl) requests() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return slices.Clone(fc.got)
}

// fakeSmps writes an smps stand-in that prints what smps prints when it
// is ready, control address first, and waits to be stopped.
func fakeSmps(t *testing.T, control string) string {
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\necho 'smps: control on %s'\necho 'smps: listening on 127.0.0.1:1'\nexec sleep 60\n", control)
	if err := os.WriteFile(filepath.Join(dir, "smps"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startFakeServers starts the lab's servers as startPolicyServers does,
// through faultServerArgs, with the stand-in binary.
func startFakeServers(t *testing.T, r *Run) {
	t.Helper()
	for _, ps := range r.Lab.PolicyServers {
		args := r.faultServerArgs(ps, []string{"--name", ps.Host})
		if !slices.Contains(args, "--control") || !slices.Contains(args, r.Lab.Hosts[ps.Host]+":0") {
			t.Fatalf("args %q: want --control on the server's own address", args)
		}
		p, err := Start(context.Background(), ProcSpec{Name: ps.Host, Bin: r.bin("smps"), Args: args, Ready: notice.SmpsListening})
		if err != nil {
			t.Fatal(err)
		}
		r.procs = append(r.procs, p)
		r.faultServerStarted(ps, p)
	}
	t.Cleanup(r.stopAll)
}

// writeTrace appends events to a per-process trace in the run's folder;
// torn leaves the last line without its newline, as a write in progress.
func writeTrace(t *testing.T, path string, torn bool, evs ...trace.Event) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, e := range evs {
		b, _ := json.Marshal(e)
		if !torn || i < len(evs)-1 {
			b = append(b, '\n')
		} else {
			b = b[:len(b)/2]
		}
		f.Write(b)
	}
}

// TestFaultRunner runs the faults of a lab against stand-in servers: each
// is applied at its time and in file order, phase anchors come from the
// agents' traces, a kill and a restart replace the process, and the
// records say what happened.
func TestFaultRunner(t *testing.T) {
	fc := newFakeControl(t)
	ctlAddr := strings.TrimPrefix(fc.srv.URL, "http://")
	l, err := Parse("lab.yaml", "", []byte(faultLab+`faults:
  - {after: hco, server: smps2, action: reset}
  - {at: 100ms, server: smps2, action: stall 2s}
  - {at: 300ms, server: smps1, action: kill}
  - {at: 300ms, server: smps1, action: restart}
  - {at: 400ms, server: smps1, action: reject-handshakes 3153}
  - {at: 50ms, after: hco, server: smps10, action: stop-accepting queue}
`))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var progress strings.Builder
	r := &Run{Lab: l, Opts: Options{Out: out, BinDir: fakeSmps(t, ctlAddr), StartTimeout: 5 * time.Second, Progress: &syncWriter{w: &progress}}}
	startFakeServers(t, r)
	oldSmps1 := r.procs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.startFaults(ctx); err != nil {
		t.Fatal(err)
	}

	// A trace of another role, and an agent's trace whose hco event is
	// still being written, do not anchor anything yet.
	hcoAt := time.Now().Add(-time.Second).Round(time.Millisecond)
	writeTrace(t, filepath.Join(out, "smps-1.trace.jsonl"), false, trace.Event{T: hcoAt, Role: "policyserver", Phase: trace.PhaseHCO, Op: trace.OpAccept})
	agent := filepath.Join(out, "w3wp.exe-2.trace.jsonl")
	writeTrace(t, agent, true,
		trace.Event{T: hcoAt.Add(-time.Second), Role: "hla", Phase: trace.PhaseBootstrap, Op: trace.OpConnect},
		trace.Event{T: hcoAt, Role: "hla", Phase: trace.PhaseHCO, Op: trace.OpConnect})
	time.Sleep(5 * phaseScan)
	if got := fc.requests(); len(got) != 0 {
		t.Fatalf("faults applied before their phase was reached: %q", got)
	}
	// The rest of the line arrives.
	f, _ := os.OpenFile(agent, os.O_APPEND|os.O_WRONLY, 0)
	b, _ := json.Marshal(trace.Event{T: hcoAt, Role: "hla", Phase: trace.PhaseHCO, Op: trace.OpConnect})
	f.Write(append(b[len(b)/2:], '\n'))
	f.Close()

	// The phase fault falls due before the workload starts.
	for end := time.Now().Add(5 * time.Second); len(fc.requests()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the after: hco faults were not applied: %q", fc.requests())
		}
	}
	workStart := time.Now()
	r.faultsWorkloadStarted()
	if err := r.awaitFaults(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.stopFaults(); err != nil {
		t.Fatalf("stopFaults: %v\nprogress:\n%s", err, progress.String())
	}

	wantReq := []string{
		"POST /faults/reset", "POST /faults/stop-accepting?mode=queue",
		"POST /faults/stall?for=2s", "POST /faults/reject-handshakes?code=3153",
	}
	if got := fc.requests(); !slices.Equal(got, wantReq) {
		t.Errorf("control requests %q, want %q", got, wantReq)
	}
	recs := r.summary.Faults
	if len(recs) != 6 {
		t.Fatalf("%d records", len(recs))
	}
	for i, rec := range recs {
		if !rec.Applied || rec.Error != "" || rec.Line != faultLabLines+1+i || rec.OffsetMs == nil {
			t.Errorf("record %d: %+v", i, rec)
		}
	}
	// Workload faults fall due at their time (a little after, never before).
	for i, at := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 300 * time.Millisecond, 4: 400 * time.Millisecond} {
		if late := recs[i].Time.Sub(workStart) - at; late < 0 || late > 500*time.Millisecond {
			t.Errorf("record %d applied %s after its time %s", i, late, at)
		}
	}
	// The phase faults count from the trace event's own time.
	if recs[0].Time.Before(hcoAt) || *recs[0].OffsetMs > 0 || *recs[5].OffsetMs > 0 {
		t.Errorf("the after: hco fault: %+v", recs[0])
	}
	if !strings.HasPrefix(recs[2].Result, fmt.Sprintf("pid %d killed", oldSmps1.PID())) || recs[2].Address != "127.0.0.21:44443" {
		t.Errorf("kill record %+v", recs[2])
	}
	if recs[3].NewPID == 0 || recs[3].NewPID == oldSmps1.PID() || recs[3].PID != 0 {
		t.Errorf("restart record %+v: want a new pid and no old one (the server was down)", recs[3])
	}
	// The run now owns the new smps1 and remembers the killed one.
	var names []string
	for _, p := range r.procs {
		names = append(names, fmt.Sprintf("%s/%d", p.Name, p.PID()))
		if p == oldSmps1 {
			t.Error("the killed process is still among the run's processes")
		}
	}
	if !slices.Contains(names, fmt.Sprintf("smps1.shared.lab/%d", recs[3].NewPID)) {
		t.Errorf("the run's processes %q lack the restarted smps1", names)
	}
	if len(r.infos) != 1 || r.infos[0].PID != oldSmps1.PID() || !strings.Contains(r.infos[0].Fault, "killed (SIGKILL) by the fault at lab.yaml:") {
		t.Errorf("infos %+v", r.infos)
	}
	for _, want := range []string{"6 faults to apply", "fault at 300ms (lab.yaml:", "kill smps1.shared.lab: pid", "restart smps1.shared.lab: started again"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
}

// TestFaultRunnerFailures: a fault that cannot be applied is recorded with
// why, the others still are, and the run's error names each by file:line.
func TestFaultRunnerFailures(t *testing.T) {
	fc := newFakeControl(t)
	l, err := Parse("lab.yaml", "", []byte(faultLab+`faults:
  - {server: smps1, action: kill}
  - {at: 50ms, server: smps1, action: stall 1s}
  - {at: 50ms, server: smps2, action: reset}
  - {after: management, server: smps2, action: resume}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := &Run{Lab: l, Opts: Options{Out: t.TempDir(), BinDir: fakeSmps(t, strings.TrimPrefix(fc.srv.URL, "http://")), StartTimeout: 5 * time.Second}}
	startFakeServers(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.startFaults(ctx); err != nil {
		t.Fatal(err)
	}
	r.faultsWorkloadStarted()
	if err := r.awaitFaults(ctx); err != nil {
		t.Fatal(err)
	}
	err = r.stopFaults()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		fmt.Sprintf("lab.yaml:%d: fault at 50ms stall 1s on smps1.shared.lab: smps1.shared.lab is not running", faultLabLines+2),
		fmt.Sprintf("lab.yaml:%d: fault after management resume on smps2.shared.lab: not applied: the web server's agents never reached phase management", faultLabLines+4),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	recs := r.summary.Faults
	if !recs[0].Applied || recs[1].Applied || !recs[2].Applied || recs[3].Applied {
		t.Errorf("applied: %v %v %v %v", recs[0].Applied, recs[1].Applied, recs[2].Applied, recs[3].Applied)
	}
	if got := fc.requests(); !slices.Equal(got, []string{"POST /faults/reset"}) {
		t.Errorf("control requests %q", got)
	}
}

// TestWriteAnswers: the report counts the web server's answers per server
// between faults, from Response events only.
func TestWriteAnswers(t *testing.T) {
	t0 := time.Now()
	ev := func(ms int, role, op, phase, host string) trace.Event {
		return trace.Event{T: t0.Add(time.Duration(ms) * time.Millisecond), Role: role, Op: op, Phase: phase, RemoteHost: host}
	}
	evs := []trace.Event{
		ev(0, "hla", trace.OpResponse, trace.PhaseHCO, "smps1"), // the ACO: not a page's request
		ev(10, "hla", trace.OpResponse, trace.PhaseRequests, "smps1"),
		ev(20, "hla", trace.OpRequest, trace.PhaseRequests, "smps1"),
		ev(30, "llawp", trace.OpResponse, trace.PhaseManagement, "smps1"),
		ev(110, "hla", trace.OpResponse, trace.PhaseRequests, "smps2"),
		ev(120, "hla", trace.OpResponse, trace.PhaseRequests, "smps2"),
		ev(210, "hla", trace.OpResponse, trace.PhaseRequests, "smps1"),
	}
	var b strings.Builder
	writeAnswers(&b, evs, []string{"smps1", "smps2"}, []answerMark{
		{t0.Add(100 * time.Millisecond), "after kill smps1"}, {t0.Add(200 * time.Millisecond), "after restart smps1"}})
	got := regexp.MustCompile(` +`).ReplaceAllString(b.String(), " ")
	for _, want := range []string{"from the first request smps1 1\n", "after kill smps1 smps2 2\n", "after restart smps1 smps1 1\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
