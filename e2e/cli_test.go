package e2e

import (
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// TestCommandLineStyle: the five programs answer --help and a bad flag the
// same way (cmdline): the help on stdout, starting with a one-line
// description, exit 0; one line and a hint on stderr, nothing on stdout,
// exit 2. The LLAWP answers so even when run by hand.
func TestCommandLineStyle(t *testing.T) {
	t.Parallel()
	programs := []struct {
		name string
		bad  []string // a bad flag, and what the line says
		says string
	}{
		{"smps", []string{"--lisen", "127.0.0.1:1"}, `smps: unknown flag --lisen, did you mean "--listen"? (see smps --help)`},
		{"hla", []string{"--webagnet", "x"}, `hla: unknown flag --webagnet, did you mean "--webagent"? (see hla --help)`},
		{"llawp", []string{"--lingr", "1s"}, `llawp: unknown flag --lingr, did you mean "--linger"? (see llawp --help)`},
		{"smreghost", []string{"-i", "x", "-hq", "y"}, "smreghost: unknown flag -hq, did you mean -hc or -hn? (see smreghost --help)"},
		{"agentlab", []string{"run", "--rowz", "1"}, `agentlab: unknown flag --rowz, did you mean "--rows"? (see agentlab run --help)`},
	}
	for _, p := range programs {
		t.Run(p.name, func(t *testing.T) {
			h := runCmd(t, nil, p.name, "--help")
			first, _, _ := strings.Cut(h.stdout, "\n")
			if h.code != 0 || !strings.HasPrefix(first, p.name+" - ") || len(first) < len(p.name)+20 || h.stderr != "" {
				t.Errorf("%s --help: exit %d, first line %q, stderr %q; want 0 and a description", p.name, h.code, first, h.stderr)
			}
			if !strings.Contains(h.stdout, "Usage: "+p.name) {
				t.Errorf("%s --help has no usage line:\n%s", p.name, h.stdout)
			}
			b := runCmd(t, nil, p.name, p.bad...)
			if b.code != 2 || b.stderr != p.says+"\n" || b.stdout != "" {
				t.Errorf("%s %q: exit %d, stdout %q, stderr %q; want 2, nothing, and %q", p.name, p.bad, b.code, b.stdout, b.stderr, p.says)
			}
		})
	}
}

// TestHeldLabNames: while a lab holds, every process of its tree carries
// the product's name where the system's tools look (/proc/PID/comm for ps
// -o comm, top and ss; argv[0] in /proc/PID/cmdline for ps -ef), and the
// trace names each process as the system does.
func TestHeldLabNames(t *testing.T) {
	t.Parallel()
	for _, model := range []string{"iis", "apache"} {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			h := holdLab(t, "--model", model, "--workers", "2")
			names := procname.Model(model)
			tree := processTree(h.proc.pid)
			got := map[string]int{}
			comms := map[int]string{}
			for _, p := range tree {
				got[p.comm]++
				comms[p.pid] = p.comm
				// smps and smreghost are started by their own file name;
				// the agent processes by the product's.
				if p.args[0] != p.comm && filepath.Base(p.args[0]) != p.comm {
					t.Errorf("pid %d: comm %q but argv[0] %q", p.pid, p.comm, p.args[0])
				}
				if p.comm == names.Parent || p.comm == names.Worker || p.comm == names.LLAWP {
					if p.args[0] != p.comm {
						t.Errorf("pid %d: argv[0] %q, want %q (ps -ef)", p.pid, p.args[0], p.comm)
					}
					if c := threadComms(p.pid); len(c) != 1 || c[0] != p.comm {
						t.Errorf("pid %d (%s): its threads are called %q", p.pid, p.comm, c)
					}
				}
			}
			// IIS: WAS (svchost.exe) starts one w3wp.exe, which starts its
			// LLAWP.exe. Apache: the httpd parent, 2 httpd children, LLAWP.
			want := map[string]int{procname.PolicyServer: 2, names.Parent: 1, names.Worker: 1, names.LLAWP: 1}
			if model == "apache" {
				want[names.Worker] = 3 // the parent and 2 children
			}
			if !maps.Equal(got, want) {
				t.Fatalf("the lab's processes are called %v, want %v:\n%v", got, want, tree)
			}
			if out, err := exec.Command("ss", "-tnp").Output(); err == nil {
				for _, name := range []string{names.Worker, names.LLAWP, procname.PolicyServer} {
					if !strings.Contains(string(out), `(("`+name+`",pid=`) {
						t.Errorf("ss -tnp shows no socket of %s", name)
					}
				}
			} else {
				t.Logf("ss -tnp not checked: %v", err)
			}

			// The Apache parent opens no socket to a Policy Server: it has
			// no trace.
			untraced := map[int]bool{}
			for _, p := range descendants(h.proc.pid) {
				if model == "apache" && p.comm == names.Worker {
					untraced[p.pid] = true
				}
			}
			h.stop(t)
			evs, err := trace.ReadFile(filepath.Join(h.out, "trace.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[int]bool{}
			for _, e := range evs {
				comm, ok := comms[e.PID]
				if ok && e.Proc != comm {
					t.Errorf("the trace calls pid %d %q, the system %q", e.PID, e.Proc, comm)
				}
				seen[e.PID] = seen[e.PID] || ok
			}
			for _, p := range tree {
				if !seen[p.pid] && !untraced[p.pid] {
					t.Errorf("%s (pid %d) is not in the trace", p.comm, p.pid)
				}
			}
		})
	}
}

// TestLabFolderChecksAndProbes: the files a lab writes check and probe as
// they are, with no AGENTLAB_HOST_ID and no --hosts: the folder says which
// host they belong to (LabHost.conf) and holds the hosts file. A name no
// hosts file knows is an error that says which flag is missing, never a
// DNS query.
func TestLabFolderChecksAndProbes(t *testing.T) {
	t.Parallel()
	h := holdLab(t)
	env := []string{"AGENTLAB_HOST_ID="} // unset for the commands
	wa := filepath.Join(h.out, "WebAgent.conf")

	c := runCmd(t, env, "agentlab", "conf", "check", wa)
	if c.code != 0 || !strings.Contains(c.stdout, "sealed to lab host wa1.shared.lab ("+filepath.Join(h.out, "LabHost.conf")+")") {
		t.Errorf("conf check of the lab's WebAgent.conf: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
	p := runCmd(t, env, "agentlab", "probe", wa)
	if p.code != 0 || !strings.Contains(p.stdout, "gave HCO hco.smps1") || !strings.Contains(p.stdout, "ACO aco.wa1 from smps1.shared.lab:44443") {
		t.Errorf("probe of the lab's WebAgent.conf: exit %d\n%s%s", p.code, p.stdout, p.stderr)
	}

	// The same files elsewhere, without the hosts file: the lab's names
	// resolve nowhere.
	bare := t.TempDir()
	for _, f := range []string{"WebAgent.conf", "SmHost.conf", "LabHost.conf"} {
		mustCopy(t, filepath.Join(h.out, f), filepath.Join(bare, f))
	}
	p = runCmd(t, env, "agentlab", "probe", filepath.Join(bare, "WebAgent.conf"))
	if p.code != 1 || !strings.Contains(p.stderr, "smps2.shared.lab: not in any hosts file; pass --hosts") {
		t.Errorf("probe without a hosts file: exit %d, stderr %q", p.code, p.stderr)
	}
	// A bootstrap server under .invalid (RFC 2606): DNS could never answer
	// for it, so a success is impossible and a resolver's error would not
	// name the hosts file.
	sm, err := os.ReadFile(filepath.Join(bare, "SmHost.conf"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bare, "SmHost.conf"), []byte(strings.ReplaceAll(string(sm), "smps2.shared.lab", "smps9.shared.invalid")), 0o600)
	mustCopy(t, filepath.Join(h.out, "hosts"), filepath.Join(bare, "hosts"))
	p = runCmd(t, env, "agentlab", "probe", filepath.Join(bare, "WebAgent.conf"))
	if want := "smps9.shared.invalid: not in the hosts file " + filepath.Join(bare, "hosts"); p.code != 1 || !strings.Contains(p.stderr, want) {
		t.Errorf("probe of a name outside the hosts file: exit %d, stderr %q; want %q", p.code, p.stderr, want)
	}
}

// TestProbeAtFullServer: a Policy Server at its connection limit accepts
// and closes; the probe says what that usually means and where to look.
func TestProbeAtFullServer(t *testing.T) {
	t.Parallel()
	ips := loopbackIPs(t, 2, 44443)
	hosts := writeHosts(t, map[string]string{"smps1.shared.lab": ips[0], "wa1.shared.lab": ips[1]})
	log := startSmps(t, ips[0], "smps1.shared.lab", "--max-conns", "1", "--handshake-timeout", "1m")
	// The one slot: accepted first, since the listen queue is FIFO, and
	// held by a client that says nothing within the handshake timeout.
	slot, err := net.Dial("tcp", ips[0]+":44443")
	if err != nil {
		t.Fatal(err)
	}
	defer slot.Close()

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "SmHost.conf"), []byte("hostname=\"trust_wa1\"\nsharedsecret=\"{PLAIN}s\"\nhostconfigobject=\"hco.smps1\"\npolicyserver=\"smps1.shared.lab,44441,44442,44443\"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "WebAgent.conf"), []byte("HostConfigFile=\"SmHost.conf\"\nAgentConfigObject=\"aco.wa1\"\n"), 0o644)
	p := runCmd(t, nil, "agentlab", "probe", filepath.Join(dir, "WebAgent.conf"), "--hosts", hosts, "--source", ips[1], "--timeout", "20s")
	// Whether the close reads as EOF or a reset depends on timing; the
	// explanation follows either.
	if p.code != 1 || !strings.Contains(p.stderr, "handshake with "+ips[0]+":44443: ") || !strings.Contains(p.stderr, tli.ErrClosedBeforeHello.Error()) {
		t.Errorf("probe at a full server: exit %d, stderr %q", p.code, p.stderr)
	}
	waitForLog(t, log, "Connection limit of 1 exceeded")
}

// heldLab is an `agentlab run --hold` of the seed lab on the test's own
// addresses, holding.
type heldLab struct {
	proc *proc
	out  string
	ips  map[string]string
}

func holdLab(t *testing.T, extra ...string) *heldLab {
	t.Helper()
	labFile, ips := seedLab(t)
	guardProcs(t, slices.Collect(maps.Values(ips)))
	out := t.TempDir()
	args := append([]string{"run", labFile, "--out", out, "--bin", binDir, "--hold", "--poll", "1s", "--requests", "4"}, extra...)
	p := startProc(t, nil, "agentlab", args...)
	p.waitOutput(t, &p.stderr, "lab: holding. Browse ", 2*time.Minute)
	return &heldLab{proc: p, out: out, ips: ips}
}

// stop ends the hold as Ctrl-C does, and waits for the run's report.
func (h *heldLab) stop(t *testing.T) {
	t.Helper()
	h.proc.cmd.Process.Signal(syscall.SIGINT)
	if code := h.proc.exitCode(t, time.Minute); code != 0 {
		t.Fatalf("agentlab run exited %d after Ctrl-C:\n%s", code, h.proc.stderr.String())
	}
}

// processTree is every descendant of pid.
func processTree(pid int) []procStat {
	var out []procStat
	for _, p := range descendants(pid) {
		out = append(out, p)
		out = append(out, processTree(p.pid)...)
	}
	return out
}

// threadComms are the distinct names of pid's threads (top -H, ps -L).
func threadComms(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "comm"))
		if err == nil && !slices.Contains(out, strings.TrimSpace(string(b))) {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return out
}

func mustCopy(t *testing.T, from, to string) {
	t.Helper()
	if err := copyFile(from, to); err != nil {
		t.Fatal(err)
	}
}
