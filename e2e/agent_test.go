package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/trace"
)

// The agent's bad inputs and faults: each broken configuration gives one
// error naming the file or server and a non-zero exit; a killed LLAWP costs
// no HTTP request; a killed HLA or agentlab leaves no process behind.

const (
	agentSecret   = "e2e-agent-s3cret"
	agentUser     = "user1"
	agentPassword = "Passw0rd1"
)

// agentSetup is a lab of the test's own, started piece by piece as a user
// would: smps1 (the HCO's server) and smps2 (the bootstrap server) sharing
// one registrations file, and trust_wa1 registered through smps2 with a
// shared secret the test chose, so that SmHost.conf variants can be written
// by hand with {PLAIN}.
type agentSetup struct {
	ips   map[string]string // wa1.shared.lab, smps1.shared.lab, smps2.shared.lab
	hosts string
	// dir holds WebAgent.conf and the SmHost.conf that smreghost wrote.
	dir string
	env []string
}

func newAgentSetup(t *testing.T) *agentSetup {
	t.Helper()
	a := loopbackIPs(t, 3, 44443)
	s := &agentSetup{
		ips: map[string]string{"wa1.shared.lab": a[0], "smps1.shared.lab": a[1], "smps2.shared.lab": a[2]},
		dir: t.TempDir(),
		// The secret smreghost seals is bound to the web server's lab host.
		env: []string{"AGENTLAB_HOST_ID=wa1.shared.lab"},
	}
	// Registered before anything starts: cleanups run last first, so the
	// check sees the state after every process's own cleanup.
	guardProcs(t, a)
	s.hosts = writeHosts(t, s.ips)
	reg := filepath.Join(t.TempDir(), "registrations.yaml")
	for _, name := range []string{"smps1.shared.lab", "smps2.shared.lab"} {
		startSmps(t, s.ips[name], name, "--registrations", reg, "--hosts", s.hosts)
	}
	r := runCmd(t, s.env, "smreghost", "-i", "smps2.shared.lab", "-u", "siteminder", "-p", "siteminder",
		"-hn", "trust_wa1", "-hc", "hco.smps1", "-sh", agentSecret, "-f", filepath.Join(s.dir, "SmHost.conf"),
		"--hosts", s.hosts, "--source", s.ips["wa1.shared.lab"])
	if r.code != 0 {
		t.Fatalf("smreghost: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	writeFile(t, filepath.Join(s.dir, "WebAgent.conf"), webAgentConf("SmHost.conf", "aco.wa1"))
	return s
}

func webAgentConf(smhost, aco string) string {
	return fmt.Sprintf("HostConfigFile=\"%s\"\r\nAgentConfigObject=\"%s\"\r\nEnableWebAgent=\"YES\"\r\n# <EOF>\r\n", smhost, aco)
}

// smHostConf is SmHost.conf as the vendor lays it out, with the secret in
// clear; each server (a host name or address) gets the default ports.
func smHostConf(hco, secret string, servers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "hostname=\"trust_wa1\"\r\nsharedsecret=\"{PLAIN}%s\"\r\nhostconfigobject=\"%s\"\r\n", secret, hco)
	for _, s := range servers {
		fmt.Fprintf(&b, "policyserver=\"%s,44441,44442,44443\"\r\n", s)
	}
	b.WriteString("requesttimeout=\"60\"\r\n# <EOF>\r\n")
	return b.String()
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hlaArgs are the flags `agentlab run` gives the web server, but with a
// port of the system's choosing and a management poll every second, so
// that an LLAWP shows it has polled soon after it starts.
func (s *agentSetup) hlaArgs(webagent, out string) []string {
	wa := s.ips["wa1.shared.lab"]
	return []string{
		"--webagent", webagent, "--listen", wa + ":0", "--out", out, "--trace", out, "--trace-payload",
		"--hosts", s.hosts, "--source", wa, "--poll", "1s",
	}
}

// startHLA starts the web server on the setup's WebAgent.conf and waits
// until it serves; out holds its logs, WA.log and every trace.
func (s *agentSetup) startHLA(t *testing.T) (p *proc, baseURL, out string) {
	t.Helper()
	out = t.TempDir()
	p = startProc(t, s.env, "hla", s.hlaArgs(filepath.Join(s.dir, "WebAgent.conf"), out)...)
	return p, p.waitNotice(t, &p.stdout, notice.HLAServing, nil, time.Minute).Addr, out
}

// TestAgentBadConfig: each way the agent can be configured wrong ends the
// web server by itself, soon, with one error that names the file (and line)
// or the servers it tried.
func TestAgentBadConfig(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	down := loopbackIPs(t, 2, 44443) // nothing listens there
	silent := silentServer(t)
	good := smHostConf("hco.smps1", agentSecret, "smps2.shared.lab")

	cases := []struct {
		name string
		// wa and sm are the files' contents; "" leaves the file out.
		wa, sm string
		// webagent names another WebAgent.conf than the case's own.
		webagent string
		want     func(dir string) []string
	}{
		{
			name: "good configuration", wa: webAgentConf("SmHost.conf", "aco.wa1"), sm: good,
		},
		{
			name: "WebAgent.conf missing", webagent: "absent/WebAgent.conf",
			want: func(dir string) []string { return []string{filepath.Join(dir, "absent", "WebAgent.conf")} },
		},
		{
			name: "WebAgent.conf broken", wa: "HostConfigFile=\"SmHost.conf\"\r\nthis line has no equals sign\r\n", sm: good,
			want: func(dir string) []string { return []string{filepath.Join(dir, "WebAgent.conf") + ":2:"} },
		},
		{
			name: "SmHost.conf missing", wa: webAgentConf("missing/SmHost.conf", "aco.wa1"),
			want: func(dir string) []string { return []string{filepath.Join(dir, "missing", "SmHost.conf")} },
		},
		{
			name: "SmHost.conf broken", wa: webAgentConf("SmHost.conf", "aco.wa1"), sm: "hostname=\"trust_wa1\"\r\nsharedsecret {PLAIN}x\r\n",
			want: func(dir string) []string { return []string{filepath.Join(dir, "SmHost.conf") + ":2:"} },
		},
		{
			name: "unknown HCO", wa: webAgentConf("SmHost.conf", "aco.wa1"), sm: smHostConf("hco.nope", agentSecret, "smps2.shared.lab"),
			want: func(string) []string { return []string{"hco.nope", "smps2.shared.lab:44443"} },
		},
		{
			name: "unknown ACO", wa: webAgentConf("SmHost.conf", "aco.nope"), sm: good,
			want: func(string) []string { return []string{"aco.nope", "smps1.shared.lab:44443"} },
		},
		{
			name: "every bootstrap server down", wa: webAgentConf("SmHost.conf", "aco.wa1"), sm: smHostConf("hco.smps1", agentSecret, down...),
			want: func(dir string) []string {
				sm := filepath.Join(dir, "SmHost.conf")
				return []string{down[0] + ":44443 (" + sm + ":4)", down[1] + ":44443 (" + sm + ":5)", "refused"}
			},
		},
		{
			// Accepts and never answers: the handshake timeout ends the
			// wait, not the test's bound.
			name: "bootstrap server silent", wa: webAgentConf("SmHost.conf", "aco.wa1"), sm: smHostConf("hco.smps1", agentSecret, silent),
			want: func(dir string) []string {
				return []string{silent + ":44443 (" + filepath.Join(dir, "SmHost.conf") + ":4): handshake with " + silent + ":44443"}
			},
		},
		{
			name: "wrong shared secret", wa: webAgentConf("SmHost.conf", "aco.wa1"), sm: smHostConf("hco.smps1", "not-the-secret", "smps2.shared.lab"),
			want: func(string) []string {
				return []string{"smps2.shared.lab:44443", "3154", "register this host again with smreghost"}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if c.wa != "" {
				writeFile(t, filepath.Join(dir, "WebAgent.conf"), c.wa)
			}
			if c.sm != "" {
				writeFile(t, filepath.Join(dir, "SmHost.conf"), c.sm)
			}
			webagent := filepath.Join(dir, "WebAgent.conf")
			if c.webagent != "" {
				webagent = filepath.Join(dir, c.webagent)
			}
			p := startProc(t, s.env, "hla", s.hlaArgs(webagent, t.TempDir())...)
			if c.want == nil {
				// The control: the same setup serves, so each failure below
				// is the case's own defect, not the setup's.
				p.waitNotice(t, &p.stdout, notice.HLAServing, nil, time.Minute)
				p.cmd.Process.Signal(syscall.SIGTERM)
				if code := p.exitCode(t, 30*time.Second); code != 0 {
					t.Errorf("hla exit %d on SIGTERM; stderr:\n%s", code, p.stderr.String())
				}
				return
			}
			code := p.exitCode(t, 30*time.Second)
			stderr := p.stderr.String()
			if code == 0 {
				t.Fatalf("exit 0, want an error; stdout %q", p.stdout.String())
			}
			if hasNotice(p.stdout.String(), notice.HLAServing) {
				t.Errorf("hla served before failing; stdout %q", p.stdout.String())
			}
			for _, w := range c.want(dir) {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if !oneError(stderr, "hla: ") {
				t.Errorf("stderr is not one error starting %q (continuation lines indented):\n%s", "hla: ", stderr)
			}
		})
	}
}

// silentServer listens on an address of the test's own and holds every
// connection without a word; it returns the address as SmHost.conf names it.
func silentServer(t *testing.T) string {
	t.Helper()
	ip := loopbackIPs(t, 1, 44443)[0]
	l, err := net.Listen("tcp", ip+":44443")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ip
}

// oneError: the first line starts with prefix, any further ones are the same
// message's indented details.
func oneError(s, prefix string) bool {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if !strings.HasPrefix(lines[0], prefix) {
		return false
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			return false
		}
	}
	return true
}

// TestAgentLabBrokenStore: a lab whose policy store the servers cannot load
// stops `agentlab run` with the store's file and line, not only a pointer to
// a log.
func TestAgentLabBrokenStore(t *testing.T) {
	t.Parallel()
	labFile, ips := seedLab(t)
	guardProcs(t, slices.Collect(maps.Values(ips)))
	data, err := os.ReadFile(labFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("store: \"\"")) {
		t.Fatal("labs/seed.yaml no longer has store: \"\"")
	}
	// Relative to the lab file, as lab files say it.
	writeFile(t, filepath.Join(filepath.Dir(labFile), "stores", "broken.yaml"), "admin:\n  name: a\n  password_hash: x\nbogus_key: 1\n")
	writeFile(t, labFile, strings.Replace(string(data), "store: \"\"", "store: stores/broken.yaml", 1))
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", t.TempDir(), "--bin", binDir)
	if r.code == 0 {
		t.Fatalf("agentlab run with a broken store: exit 0\n%s", r.stdout)
	}
	for _, w := range []string{filepath.Join(filepath.Dir(labFile), "stores", "broken.yaml") + ":4:", "bogus_key"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}

// TestAgentLLAWPKilledUnderLoad: authorization never waits for the LLAWP,
// so a SIGKILL of it while browsers load protected pages fails no request;
// the worker starts a new LLAWP, which does its own bootstrap and polls.
func TestAgentLLAWPKilledUnderLoad(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	hla, baseURL, out := s.startHLA(t)
	w3wp := wasChild(t, out, hla.pid, 0, time.Minute)
	old := waitLLAWP(t, w3wp, 0, time.Minute)
	// Killed only once it works, so that the kill interrupts a running
	// LLAWP rather than one still in its bootstrap.
	waitTrace(t, out, old.pid, s.ips["smps2.shared.lab"], time.Minute)

	ld := startLoad(baseURL, 4)
	defer ld.stop()
	ld.waitOK(t, 20, time.Minute)
	if err := syscall.Kill(old.pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL the LLAWP (pid %d): %v", old.pid, err)
	}
	okAtKill := ld.ok.Load()
	nu := waitLLAWP(t, w3wp, old.pid, time.Minute)
	// The supervisor waits at least a second before the new LLAWP: pages
	// must have loaded in that gap, not waited for it.
	if gap := ld.ok.Load() - okAtKill; gap == 0 {
		t.Errorf("no page load completed between the LLAWP's death and its successor (pid %d)", nu.pid)
	}
	waitTrace(t, out, nu.pid, s.ips["smps2.shared.lab"], time.Minute)
	// Pages loaded across the restart, and after it.
	ld.waitOK(t, ld.ok.Load()+20, time.Minute)
	ld.stop()

	ok, failed := ld.ok.Load(), ld.failed.Load()
	t.Logf("%d page loads, %d after the kill, %d failed", ok+failed, ok-okAtKill, failed)
	if failed != 0 {
		t.Errorf("%d of %d page loads failed around the LLAWP's death:\n%s", failed, ok+failed, strings.Join(ld.errors(), "\n"))
	}
	if alive(old) {
		t.Errorf("the killed LLAWP (pid %d) is still there", old.pid)
	}
	hlaLog := filepath.Join(out, fmt.Sprintf("w3wp.exe-%d.log", w3wp))
	waitForLog(t, hlaLog, "LLAWP is gone; authorization goes on, a new LLAWP will be started")
	waitForLog(t, hlaLog, fmt.Sprintf("LLAWP started llawp_pid=%d", nu.pid))
}

// TestAgentHLAKilled: go-plugin leaves its plugin running when the host
// dies. A SIGKILL of w3wp.exe gives its LLAWP.exe no word: the LLAWP must
// notice its owner's death and leave on its own, saying why in WA.log.
// Then a SIGKILL of WAS (svchost.exe) takes its new w3wp.exe (Pdeathsig)
// and that one's LLAWP.exe with it.
func TestAgentHLAKilled(t *testing.T) {
	t.Parallel()
	s := newAgentSetup(t)
	hla, _, out := s.startHLA(t)
	w3wp := wasChild(t, out, hla.pid, 0, time.Minute)
	ll := waitLLAWP(t, w3wp, 0, time.Minute)
	waitTrace(t, out, ll.pid, s.ips["smps2.shared.lab"], time.Minute)

	if err := syscall.Kill(w3wp, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL w3wp.exe (pid %d): %v", w3wp, err)
	}
	if gone := waitGone(5*time.Second, ll); len(gone) != 0 {
		t.Errorf("LLAWP.exe (pid %d) of the killed w3wp.exe (pid %d) still runs 5 s later", ll.pid, w3wp)
	}
	waitForLog(t, filepath.Join(out, "WA.log"), fmt.Sprintf("LLAWP.exe exiting: the owner process is gone (pid %d)", w3wp))

	// WAS started a new worker, which started its own LLAWP.
	nu := wasChild(t, out, hla.pid, w3wp, time.Minute)
	nuLL := waitLLAWP(t, nu, 0, time.Minute)
	worker, ok := readStat(nu)
	if !ok {
		t.Fatalf("the new w3wp.exe (pid %d) is gone", nu)
	}
	hla.cmd.Process.Kill()
	hla.exitCode(t, 10*time.Second)
	if gone := waitGone(10*time.Second, worker, nuLL); len(gone) != 0 {
		t.Errorf("of the killed svchost.exe (pid %d), these still run 10 s later: %v", hla.pid, gone)
	}
	for _, p := range leftovers([]string{s.ips["wa1.shared.lab"]}, nil) {
		t.Errorf("a process of this test's web server still runs: %v", p)
	}
}

// TestAgentLabKilled: `agentlab run` killed with SIGKILL cannot stop its
// processes itself; they must go anyway (Pdeathsig on smps and svchost.exe,
// which passes it on to w3wp.exe, and the LLAWP follows its w3wp.exe).
func TestAgentLabKilled(t *testing.T) {
	t.Parallel()
	labFile, ips := seedLab(t)
	addrs := slices.Collect(maps.Values(ips))
	guardProcs(t, addrs)
	p := startProc(t, nil, "agentlab", "run", labFile, "--out", t.TempDir(), "--bin", binDir, "--hold", "--poll", "1s", "--requests", "4")
	p.waitOutput(t, &p.stderr, "lab: holding. Browse ", 2*time.Minute)

	procs := leftovers(addrs, nil)
	comms := commands(procs)
	if want := []string{"LLAWP.exe", "smps", "smps", "svchost.exe", "w3wp.exe"}; !slices.Equal(comms, want) {
		t.Fatalf("the holding lab runs %v, want %v", comms, want)
	}
	p.cmd.Process.Kill()
	p.exitCode(t, 10*time.Second)
	if left := waitGone(5*time.Second, procs...); len(left) != 0 {
		t.Errorf("5 s after agentlab's SIGKILL these still run: %v", left)
	}
}

// proc is a process the test started; it dies with the test (Pdeathsig)
// and is killed at the test's end if still running.
type proc struct {
	cmd            *exec.Cmd
	pid            int
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error
}

type syncBuffer = testsupport.Buffer

func startProc(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(bin(name), args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A grandchild that kept our pipes open would hold Wait forever.
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, p.pid, p.stderr.String())
		}
	})
	return p
}

// waitOutput waits for a line of the stream that starts with prefix and
// returns it; the process exiting first, or the timeout, fails the test.
func (p *proc) waitOutput(t *testing.T, stream *syncBuffer, prefix string, timeout time.Duration) string {
	t.Helper()
	return p.waitLine(t, stream, fmt.Sprintf("%q", prefix), func(l string) bool { return strings.HasPrefix(l, prefix) }, timeout)
}

// waitNotice waits for a notice of want's program and kind on the stream
// (notice.ParseKind: the contract the program writes it by, not a
// literal of the test's), for which match, when not nil, is true too.
func (p *proc) waitNotice(t *testing.T, stream *syncBuffer, want notice.Notice, match func(notice.Notice) bool, timeout time.Duration) notice.Notice {
	t.Helper()
	var n notice.Notice
	p.waitLine(t, stream, fmt.Sprintf("a %q notice", want.Prog+": "+string(want.Kind)), func(l string) bool {
		got, ok := notice.ParseKind(l, want.Prog, want.Kind)
		if ok && (match == nil || match(got)) {
			n = got
			return true
		}
		return false
	}, timeout)
	return n
}

// waitLine waits for a line of the stream that ok accepts and returns
// it; the process exiting first, or the timeout, fails the test.
func (p *proc) waitLine(t *testing.T, stream *syncBuffer, what string, ok func(string) bool, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		for _, l := range strings.Split(stream.String(), "\n") {
			if ok(l) {
				return l
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before printing %s; stderr:\n%s", p.cmd.Path, p.err, what, p.stderr.String())
		case <-deadline:
			t.Fatalf("%s did not print %s within %v; stderr:\n%s", p.cmd.Path, what, timeout, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hasNotice says whether out holds a notice of want's program and kind.
func hasNotice(out string, want notice.Notice) bool {
	for _, l := range strings.Split(out, "\n") {
		if _, ok := notice.ParseKind(l, want.Prog, want.Kind); ok {
			return true
		}
	}
	return false
}

// exitCode waits for the process to exit by itself: a hang fails the test.
func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v; stderr:\n%s", p.cmd.Path, timeout, p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.cmd.Path, p.err)
	}
	return 0
}

// procStat is one process from /proc; start (in clock ticks since boot)
// tells it from a later process that got the same pid.
type procStat struct {
	pid, ppid int
	comm      string
	state     byte
	start     uint64
	args      []string
}

func (p procStat) String() string {
	return fmt.Sprintf("%s (pid %d, ppid %d): %s", p.comm, p.pid, p.ppid, strings.Join(p.args, " "))
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 20 {
		return procStat{}, false
	}
	p := procStat{pid: pid, comm: s[open+1 : end], state: f[0][0]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		p.args = strings.Split(strings.TrimRight(string(c), "\x00"), "\x00")
	}
	return p, true
}

func allProcs() []procStat {
	ents, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readStat(pid); ok && p.state != 'Z' && p.state != 'X' {
			out = append(out, p)
		}
	}
	return out
}

// alive: the same process (not a reused pid) still runs; a zombie has
// finished.
func alive(p procStat) bool {
	q, ok := readStat(p.pid)
	return ok && q.start == p.start && q.state != 'Z' && q.state != 'X'
}

// waitGone waits until none of procs runs and returns those still running
// at the timeout.
func waitGone(timeout time.Duration, procs ...procStat) []procStat {
	deadline := time.Now().Add(timeout)
	for {
		var left []procStat
		for _, p := range procs {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leftovers are the running processes with one of ips as an argument or
// an argument's ip:port, or a path under one of dirs in an argument: every
// process of a test's lab has its addresses or files on its command line.
func leftovers(ips, dirs []string) []procStat {
	var out []procStat
	for _, p := range allProcs() {
		if p.pid == os.Getpid() {
			continue
		}
		if slices.ContainsFunc(p.args, func(a string) bool {
			for _, ip := range ips {
				if a == ip || strings.HasPrefix(a, ip+":") {
					return true
				}
			}
			for _, d := range dirs {
				if strings.Contains(a, d) {
					return true
				}
			}
			return false
		}) {
			out = append(out, p)
		}
	}
	return out
}

// guardProcs fails the test if, once every other cleanup has run, a process
// with one of ips on its command line is still there, and kills it so the
// next test starts clean. Register it before starting anything.
func guardProcs(t *testing.T, ips []string) {
	t.Helper()
	ips = slices.Clone(ips)
	t.Cleanup(func() {
		// An LLAWP leaves on its own after its hla: give it time.
		left := leftovers(ips, nil)
		if len(left) > 0 {
			left = waitGone(10*time.Second, left...)
		}
		for _, p := range left {
			syscall.Kill(p.pid, syscall.SIGKILL)
			t.Errorf("still running at the test's end (killed now): %v", p)
		}
	})
}

// waitLLAWP waits for an LLAWP.exe child of the hla other than pid not.
func waitLLAWP(t *testing.T, hlaPID, not int, timeout time.Duration) procStat {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range allProcs() {
			if p.ppid == hlaPID && p.comm == procname.IISLLAWP && p.pid != not {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new LLAWP.exe child of hla (pid %d) within %v", hlaPID, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTrace waits until the LLAWP's own trace shows its bootstrap (the HCO
// fetched from the bootstrap server) and then a management poll answered:
// its second round, done on its own.
func waitTrace(t *testing.T, dir string, pid int, bootstrapIP string, timeout time.Duration) {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("LLAWP.exe-%d.trace.jsonl", pid))
	deadline := time.Now().Add(timeout)
	for {
		evs, _ := trace.ReadFile(path)
		boot := slices.IndexFunc(evs, func(e trace.Event) bool {
			return e.Op == trace.OpRequest && e.Phase == trace.PhaseBootstrap &&
				e.Request == trace.ReqGetHostConfig && e.Subject == "hco.smps1" && strings.HasPrefix(e.Remote, bootstrapIP+":")
		})
		if boot >= 0 && slices.ContainsFunc(evs[boot:], func(e trace.Event) bool {
			return e.Op == trace.OpResponse && e.Request == trace.ReqDoManagement
		}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s shows no bootstrap GetHostConfig to %s then DoManagement within %v (%d events)", path, bootstrapIP, timeout, len(evs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// load is browsers loading a protected page over and over, each with its
// own cookie jar, answering with Basic credentials: every answer must be 200.
type load struct {
	ok, failed atomic.Int64
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	mu         sync.Mutex
	errs       []string
}

func startLoad(baseURL string, browsers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for range browsers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			jar, _ := cookiejar.New(nil)
			// The timeout only guards against a hang; it is not a figure.
			c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
			for ctx.Err() == nil {
				err := getPage(ctx, c, baseURL+"/protected/")
				if ctx.Err() != nil {
					return // stopped mid-request: not the agent's failure
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 20 {
						l.errs = append(l.errs, err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *load) waitOK(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for l.ok.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d page loads succeeded within %v (%d failed: %v)", l.ok.Load(), n, timeout, l.failed.Load(), l.errors())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// commands are the sorted command names of procs, to compare a process
// tree with what a model should run.
func commands(procs []procStat) []string {
	var out []string
	for _, q := range procs {
		out = append(out, q.comm)
	}
	slices.Sort(out)
	return out
}
