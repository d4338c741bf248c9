package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/notice"
)

// startSmps runs smps on ip:44443 until the test ends and returns its log path.
func startSmps(t testing.TB, ip, name string, extra ...string) (logPath string) {
	t.Helper()
	logPath, _ = startSmpsProc(t, ip, name, extra...)
	return logPath
}

// startSmpsProc is startSmps that also gives the process id, for a
// benchmark that reads the server's memory from /proc.
func startSmpsProc(t testing.TB, ip, name string, extra ...string) (logPath string, pid int) {
	t.Helper()
	dir := t.TempDir()
	logPath = filepath.Join(dir, "smps.log")
	args := append([]string{"--listen", ip + ":44443", "--name", name, "--log", logPath}, extra...)
	cmd := exec.Command(bin("smps"), args...)
	runSmps(t, cmd)
	return logPath, cmd.Process.Pid
}

// runSmps starts cmd, an smps, waits until it listens, and stops it with
// SIGTERM when the test ends.
func runSmps(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, ok := notice.ParseKind(sc.Text(), notice.ProgSmps, notice.Listening); ok {
				close(ready)
				break
			}
		}
		io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("smps exited before listening: %v", err)
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("smps did not listen within 20 s")
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("smps did not stop cleanly on SIGTERM: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("smps did not stop within 10 s of SIGTERM")
		}
	})
}

func writeHosts(t testing.TB, entries map[string]string) string {
	t.Helper()
	var b strings.Builder
	for name, ip := range entries {
		fmt.Fprintf(&b, "%s %s\n", ip, name)
	}
	p := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSmreghostThenHandshake: smreghost registers with a running smps and
// writes SmHost.conf; an agent configuration using it then bootstraps and
// handshakes; a wrong admin password is refused without writing a file.
func TestSmreghostThenHandshake(t *testing.T) {
	ips := loopbackIPs(t, 2, 44443)
	hosts := writeHosts(t, map[string]string{"smps1.shared.lab": ips[0], "wa1.shared.lab": ips[1]})
	smpsLog := startSmps(t, ips[0], "smps1.shared.lab")
	dir := t.TempDir()
	sm := filepath.Join(dir, "SmHost.conf")
	env := []string{"AGENTLAB_HOST_ID=wa1.shared.lab"}

	bad := runCmd(t, env, "smreghost", "-i", "smps1.shared.lab", "-u", "siteminder", "-p", "wrong", "-hn", "trust_wa1", "-hc", "hco.smps1", "-f", sm, "--hosts", hosts)
	if bad.code == 0 || !strings.Contains(bad.stderr, "bad administrator credentials") {
		t.Errorf("smreghost with a wrong password: exit %d, stderr %q", bad.code, bad.stderr)
	}
	if _, err := os.Stat(sm); err == nil {
		t.Error("a refused registration wrote SmHost.conf")
	}

	r := runCmd(t, env, "smreghost", "-i", "smps1.shared.lab", "-u", "siteminder", "-p", "siteminder", "-hn", "trust_wa1", "-hc", "hco.smps1", "-f", sm, "--hosts", hosts, "--source", ips[1])
	if r.code != 0 || !strings.Contains(r.stdout, "Host Registration Successful") {
		t.Fatalf("smreghost: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	data, _ := os.ReadFile(sm)
	for _, want := range []string{"hostname=\"trust_wa1\"\r\n", "sharedsecret=\"{AL1}", "hostconfigobject=\"hco.smps1\"", "policyserver=\"smps1.shared.lab,44441,44442,44443\"", "# <EOF>"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("SmHost.conf lacks %q:\n%s", want, data)
		}
	}
	again := runCmd(t, env, "smreghost", "-i", "smps1.shared.lab", "-u", "siteminder", "-p", "siteminder", "-hn", "trust_wa1", "-hc", "hco.smps1", "-f", sm, "--hosts", hosts)
	if again.code == 0 || !strings.Contains(again.stderr, "-o") {
		t.Errorf("registering over an existing SmHost.conf without -o: exit %d, stderr %q", again.code, again.stderr)
	}

	wa := filepath.Join(dir, "WebAgent.conf")
	os.WriteFile(wa, []byte("HostConfigFile=\"SmHost.conf\"\r\nAgentConfigObject=\"aco.wa1\"\r\nEnableWebAgent=\"YES\"\r\n# <EOF>\r\n"), 0o644)
	// hco.smps1 lists smps1.shared.lab:44443, which this test's hosts map
	// points at the server it started.
	p := runCmd(t, env, "agentlab", "probe", wa, "--hosts", hosts, "--source", ips[1])
	if p.code != 0 || !strings.Contains(p.stdout, "gave HCO hco.smps1") || !strings.Contains(p.stdout, "ACO aco.wa1") {
		t.Fatalf("probe after registration: exit %d\n%s%s", p.code, p.stdout, p.stderr)
	}

	// Another host cannot use the file: the secret is bound to wa1.
	cp := runCmd(t, []string{"AGENTLAB_HOST_ID=wa2.shared.lab"}, "agentlab", "probe", wa, "--hosts", hosts)
	if cp.code == 0 || !strings.Contains(cp.stderr, "Shared secret incorrect") {
		t.Errorf("probe with a copied SmHost.conf: exit %d, stderr %q", cp.code, cp.stderr)
	}

	// A wrong secret reaches the server, which refuses it with 3154 and
	// logs it as the vendor does.
	wrong := filepath.Join(dir, "wrong")
	os.Mkdir(wrong, 0o755)
	os.WriteFile(filepath.Join(wrong, "SmHost.conf"), []byte(strings.Replace(string(data), string(data[strings.Index(string(data), "sharedsecret="):strings.Index(string(data), "sharedsecrettime")]), "sharedsecret=\"{PLAIN}not-the-secret\"\r\n", 1)), 0o600)
	os.WriteFile(filepath.Join(wrong, "WebAgent.conf"), []byte("HostConfigFile=\"SmHost.conf\"\nAgentConfigObject=\"aco.wa1\"\n"), 0o644)
	w := runCmd(t, env, "agentlab", "probe", filepath.Join(wrong, "WebAgent.conf"), "--hosts", hosts)
	if w.code == 0 || !strings.Contains(w.stderr, "3154") || !strings.Contains(w.stderr, "smreghost") {
		t.Errorf("probe with a wrong secret: exit %d, stderr %q", w.code, w.stderr)
	}
	waitForLog(t, smpsLog, "Handshake error: Shared secret incorrect for this client")
	waitForLog(t, smpsLog, "Failed handshake with")
}

func waitForLog(t *testing.T, path, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("%s never logged %q; it has:\n%s", path, want, data)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestBadStartup: each way smps, smreghost or the lab can be started wrong
// gives one clear error naming what is wrong, and a non-zero exit.
func TestBadStartup(t *testing.T) {
	ips := loopbackIPs(t, 1, 44443)
	startSmps(t, ips[0], "smps1.shared.lab")
	dir := t.TempDir()
	badStore := filepath.Join(dir, "store.yaml")
	os.WriteFile(badStore, []byte("admin:\n  name: a\n  password_hash: x\nbogus_key: 1\n"), 0o644)
	badLab := filepath.Join(dir, "lab.yaml")
	os.WriteFile(badLab, []byte("name: x\nhosts: {wa1: 10.0.0.1}\n"), 0o644)
	cases := []struct {
		name string
		bin  string
		args []string
		want []string
	}{
		{"port in use", "smps", []string{"--listen", ips[0] + ":44443"}, []string{"listen on " + ips[0] + ":44443", "address already in use"}},
		{"store missing", "smps", []string{"--listen", "127.0.0.1:0", "--store", filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml"}},
		{"store broken", "smps", []string{"--listen", "127.0.0.1:0", "--store", badStore}, []string{"store.yaml:4:", "bogus_key"}},
		{"smreghost missing flags", "smreghost", []string{"-i", "x"}, []string{"missing -u, -p, -hn, -hc"}},
		{"smreghost server down", "smreghost", []string{"-i", "127.0.0.1:1", "-u", "a", "-p", "b", "-hn", "c", "-hc", "d", "-f", filepath.Join(dir, "S.conf")}, []string{"127.0.0.1:1", "refused"}},
		{"lab not loopback", "agentlab", []string{"run", badLab, "--out", filepath.Join(dir, "out")}, []string{"lab.yaml", "not a loopback address"}},
		{"control not loopback", "smps", []string{"--listen", "127.0.0.1:0", "--control", "10.0.0.1:0"}, []string{"--control", "10.0.0.1:0", "loopback"}},
		{"lab missing", "agentlab", []string{"run", filepath.Join(dir, "nolab.yaml")}, []string{"nolab.yaml", "no such file"}},
		{"embedded lab unknown", "agentlab", []string{"run", "nosuchlab"}, []string{"nosuchlab", "failover, roundrobin"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCmd(t, nil, c.bin, c.args...)
			if r.code == 0 {
				t.Fatalf("exit 0, want an error; stdout %q", r.stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
		})
	}
}

// TestSmpsDescriptorLimit: an smps whose descriptor limit is below
// --max-conns says so at start-up, and at the limit refuses a new
// connection at once (with its log line) instead of leaving it in the
// backlog until the client's handshake times out.
func TestSmpsDescriptorLimit(t *testing.T) {
	const nofile = 48
	ip := loopbackIPs(t, 1, 44443)[0]
	logPath := filepath.Join(t.TempDir(), "smps.log")
	// sh's ulimit -n sets the soft and the hard limit; exec keeps the pid.
	runSmps(t, exec.Command("sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), bin("smps"),
		"--listen", ip+":44443", "--name", "smps1.shared.lab", "--log", logPath, "--handshake-timeout", "1m"))
	waitForLog(t, logPath, fmt.Sprintf("--max-conns 256 needs about 320 file descriptors (one per connection and 64 for the server itself), but this process may open %d", nofile))

	// Raw connections that never say hello each hold a descriptor of the
	// server's until its handshake timeout: well past the limit.
	var conns []net.Conn
	for i := range nofile + 10 {
		c, err := net.DialTimeout("tcp", ip+":44443", 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond) // a refusal's FIN or RST has come by now
	var refused int
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			refused++ // EOF or a reset: told at once
		}
	}
	if refused < 10 {
		t.Errorf("%d of %d connections refused at once, want at least the 10 past the limit", refused, nofile+10)
	}
	waitForLog(t, logPath, "Connection request rejected: out of file descriptors")
}
