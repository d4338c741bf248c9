package lab

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/labs"
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
	// An empty item is a null the YAML library gives no unmarshaler: it is
	// refused, not a fault with no server (found by FuzzParseFaults).
	for _, empty := range []string{"  -\n", "  - {server: smps1, action: kill}\n  - ~\n", " !000 -\n"} {
		_, err := Parse("labs/x.yaml", "", []byte(faultLab+"faults:\n"+empty))
		if err == nil || !strings.HasPrefix(err.Error(), "labs/x.yaml:") || !strings.Contains(err.Error(), "a mapping of at, after, server and action") {
			t.Errorf("faults:\n%s: %v, want the empty fault refused", empty, err)
		}
	}
	// An ambiguous first label.
	amb := strings.Replace(faultLab, "smps10.other.lab", "smps1.other.lab", -1)
	_, err = Parse("labs/x.yaml", "", []byte(amb+"faults:\n  - {server: smps1, action: kill}\n"))
	if err == nil || !strings.Contains(err.Error(), "could be any of 2 hosts") {
		t.Errorf("ambiguous server: %v", err)
	}
}

// TestEmbeddedLabs: the scenario labs parse, are reachable by name, and
// name HCOs their store (the seed store, or their own) has.
func TestEmbeddedLabs(t *testing.T) {
	for _, name := range labs.ScenarioNames() {
		l, err := Open(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(l.Faults) == 0 || l.Workload.Duration == 0 {
			t.Errorf("%s: %d faults, workload %+v", name, len(l.Faults), l.Workload)
		}
		storeName := "seed-store.yaml"
		if l.Store != "" {
			storeName = l.Store
		}
		store, err := os.ReadFile("../labs/" + storeName)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(store), "- name: "+l.WebServer.HostConfigObject+"\n") {
			t.Errorf("%s names HCO %s, which labs/%s lacks", name, l.WebServer.HostConfigObject, storeName)
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
			if f.Action.Validate() != nil {
				t.Fatalf("accepted %s", f.Action)
			}
			if f.At < 0 || !slices.Contains(append(slices.Clone(faultPhases), AnchorWorkload), f.Anchor()) {
				t.Fatalf("accepted at %s after %q", f.At, f.After)
			}
			back, err := fault.Parse(f.Action.String())
			if err != nil || back != f.Action {
				t.Fatalf("action %+v does not read back: %+v, %v", f.Action, back, err)
			}
			// What the lab sends smps, smps reads as the same action.
			if f.Action.Kind.ByServer() {
				path, query, _ := strings.Cut(f.Action.ControlPath(), "?")
				if back, err := fault.ParseControl(path, query); err != nil || back != f.Action {
					t.Fatalf("action %+v reads back from %s as %+v, %v", f.Action, f.Action.ControlPath(), back, err)
				}
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
