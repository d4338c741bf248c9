package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/agentlab/notice"
)

// BenchmarkColdStartIIS measures the IIS model's cold start on loopback:
// from exec of hla until w3wp.exe serves (its bootstrap and HCO phase
// done), and until LLAWP.exe, which w3wp.exe then launches through
// go-plugin, has received its ACO (its own bootstrap and HCO phase). The
// target is the second under 500 ms. Shutting each one down is off the clock.
func BenchmarkColdStartIIS(b *testing.B) {
	ips, hosts, wa, env := benchLab(b)

	var hlaTotal, llawpTotal, llawpMax time.Duration
	for i := 0; i < b.N; i++ {
		out := filepath.Join(b.TempDir(), "run")
		cmd := exec.Command(bin("hla"), "--webagent", wa, "--listen", ips[0]+":0", "--out", out, "--trace", out,
			"--hosts", hosts, "--source", ips[0], "--poll", "30s")
		cmd.Env = append(os.Environ(), env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdout, _ := cmd.StdoutPipe()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, ok := notice.ParseKind(sc.Text(), notice.ProgHLA, notice.Serving); ok {
				break
			}
		}
		hlaReady := time.Since(t0)
		deadline := time.Now().Add(20 * time.Second)
		for !llawpHasACO(out) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				b.Fatalf("LLAWP.exe never got its ACO; hla stderr:\n%s", stderr.String())
			}
			time.Sleep(time.Millisecond)
		}
		llawpReady := time.Since(t0)
		b.StopTimer()
		hlaTotal += hlaReady
		llawpTotal += llawpReady
		llawpMax = max(llawpMax, llawpReady)
		cmd.Process.Signal(syscall.SIGTERM)
		go func() {
			for sc.Scan() {
			}
		}()
		cmd.Wait()
		b.StartTimer()
	}
	b.ReportMetric(float64(hlaTotal.Milliseconds())/float64(b.N), "w3wp-ready-ms")
	b.ReportMetric(float64(llawpTotal.Milliseconds())/float64(b.N), "llawp-ready-ms")
	b.ReportMetric(float64(llawpMax.Milliseconds()), "llawp-ready-max-ms")
}

// benchLab starts the seed lab's two Policy Servers on addresses of the
// benchmark's own, registers trust_wa1, and writes the WebAgent.conf a web
// server starts from: ips are wa1, smps1 and smps2.
func benchLab(b *testing.B) (ips []string, hosts, webAgent string, env []string) {
	ips = loopbackIPs(b, 3, 44443)
	hosts = writeHosts(b, map[string]string{"wa1.shared.lab": ips[0], "smps1.shared.lab": ips[1], "smps2.shared.lab": ips[2]})
	regs := filepath.Join(b.TempDir(), "registrations.yaml")
	startSmps(b, ips[1], "smps1.shared.lab", "--hosts", hosts, "--registrations", regs)
	startSmps(b, ips[2], "smps2.shared.lab", "--hosts", hosts, "--registrations", regs)
	dir := b.TempDir()
	env = []string{"AGENTLAB_HOST_ID=wa1.shared.lab"}
	r := runCmd(b, env, "smreghost", "-i", "smps2.shared.lab", "-u", "siteminder", "-p", "siteminder",
		"-hn", "trust_wa1", "-hc", "hco.smps1", "-f", filepath.Join(dir, "SmHost.conf"), "--hosts", hosts)
	if r.code != 0 {
		b.Fatalf("smreghost: %s", r.stderr)
	}
	webAgent = filepath.Join(dir, "WebAgent.conf")
	if err := os.WriteFile(webAgent, []byte(webAgentConf("SmHost.conf", "aco.wa1")), 0o644); err != nil {
		b.Fatal(err)
	}
	return ips, hosts, webAgent, env
}

// llawpHasACO tells whether an LLAWP's trace in dir shows its ACO answer.
func llawpHasACO(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "LLAWP.exe-*.trace.jsonl"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if bytes.Contains(data, []byte(`"op":"Response"`)) && bytes.Contains(data, []byte("GetAgentConfig aco.wa1: SUCCESS")) {
			return true
		}
	}
	return false
}
