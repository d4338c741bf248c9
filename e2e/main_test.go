// Package e2e runs the real binaries, built once per test run, as separate
// processes over real sockets, in the manner of tailscale's
// tstest/integration: what a user types is what is tested.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// binDir holds smps, smreghost and agentlab, built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "agentlab-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-race", "-o", dir+string(os.PathSeparator), "../cmd/...")
	if !raceEnabled {
		cmd = exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../cmd/...")
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

func bin(name string) string { return filepath.Join(binDir, name) }

// result is a finished command.
type result struct {
	stdout, stderr string
	code           int
}

// runCmd runs a binary to its end (bounded by a timeout, so nothing hangs).
func runCmd(t testing.TB, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else {
			t.Fatalf("%s %v: %v", name, args, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish in time", name, args)
	}
	return r
}

// loopbackIPs picks n addresses of this test's own in 127.0.0.0/8, all free
// on port, so that tests running in parallel, or a lab left running on the
// lab's fixed addresses, never collide.
func loopbackIPs(t testing.TB, n, port int) []string {
	t.Helper()
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 100 {
			t.Fatal("no free loopback address found")
		}
		ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			continue
		}
		l.Close()
		out = append(out, ip)
	}
	return out
}

// seedLab writes the seed lab with addresses of the test's own.
func seedLab(t *testing.T) (path string, ips map[string]string) {
	t.Helper()
	a := loopbackIPs(t, 3, 44443)
	ips = map[string]string{"wa1.shared.lab": a[0], "smps1.shared.lab": a[1], "smps2.shared.lab": a[2]}
	data, err := os.ReadFile("../labs/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for host, ip := range map[string]string{"127.0.0.11": a[0], "127.0.0.21": a[1], "127.0.0.22": a[2]} {
		if !strings.Contains(s, host) {
			t.Fatalf("labs/seed.yaml no longer has %s", host)
		}
		s = strings.ReplaceAll(s, host, ip)
	}
	path = filepath.Join(t.TempDir(), "seed.yaml")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, ips
}
