package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// tcpClose is how one connection shows in a capture: its ends and which of
// them sent a FIN or an RST.
type tcpClose struct {
	client, server string
	flags          []string // "client FIN", "server RST", ...
	// accepted: the server answered the SYN. A refused connect (an RST
	// for the SYN) has no source port in a trace, and no place in a
	// rendering of it.
	accepted bool
}

// tcpConns reads a pcapng with tshark, one connection per TCP stream. A
// stream whose SYN is not in the file (the capture started late) is an
// error: the comparison would be meaningless.
func tcpConns(t *testing.T, path string) map[string]*tcpClose {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tshark", "-r", path, "-T", "fields",
		"-e", "tcp.stream", "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport", "-e", "tcp.flags")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", path, err, stderr.String())
	}
	streams := map[string]*tcpClose{}
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 6 {
			t.Fatalf("%s: tshark line %d: %q", path, i+1, line)
		}
		flags, err := strconv.ParseUint(strings.TrimPrefix(f[5], "0x"), 16, 16)
		if err != nil {
			t.Fatalf("%s: tshark line %d: flags %q", path, i+1, f[5])
		}
		src, dst := f[1]+":"+f[2], f[3]+":"+f[4]
		c := streams[f[0]]
		if c == nil {
			if flags&0x12 != 0x02 {
				t.Fatalf("%s: stream %s starts with flags %#x, not a SYN", path, f[0], flags)
			}
			c = &tcpClose{client: src, server: dst}
			streams[f[0]] = c
		}
		side := "server"
		if src == c.client {
			side = "client"
		}
		if side == "server" && flags&0x12 == 0x12 {
			c.accepted = true
		}
		for _, x := range []struct {
			bit  uint64
			name string
		}{{0x01, "FIN"}, {0x04, "RST"}} {
			if flags&x.bit != 0 && !slices.Contains(c.flags, side+" "+x.name) {
				c.flags = append(c.flags, side+" "+x.name)
			}
		}
	}
	byEnds := map[string]*tcpClose{}
	for _, c := range streams {
		slices.Sort(c.flags)
		byEnds[c.client+" -> "+c.server] = c
	}
	return byEnds
}

// ownAddresses writes a copy of a lab file whose loopback addresses are
// this test's own, and returns it with the lab's hosts' new addresses.
func ownAddresses(t *testing.T, path string) (string, map[string]string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	fixed := regexp.MustCompile(`\b127\.0\.0\.\d+\b`)
	var olds []string
	for _, ip := range fixed.FindAllString(s, -1) {
		if !slices.Contains(olds, ip) {
			olds = append(olds, ip)
		}
	}
	if len(olds) == 0 {
		t.Fatalf("%s has no 127.0.0.x address to replace", path)
	}
	news := loopbackIPs(t, len(olds), 44443)
	s = fixed.ReplaceAllStringFunc(s, func(ip string) string { return news[slices.Index(olds, ip)] })
	ips := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(\S+):\s+(127\.\d+\.\d+\.\d+)\s*$`).FindAllStringSubmatch(s, -1) {
		ips[m[1]] = m[2]
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return out, ips
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// canCapture says why this machine cannot capture loopback traffic, or "".
func canCapture(t *testing.T) string {
	for _, tool := range []string{"dumpcap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (scripts/install-test-deps.sh installs it)"
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	probe := filepath.Join(t.TempDir(), "probe.pcapng")
	out, err := exec.CommandContext(ctx, "dumpcap", "-i", "lo", "-f", "tcp port 1", "-a", "duration:1", "-q", "-w", probe).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("dumpcap cannot capture on lo here (root or dumpcap's capabilities are needed): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return ""
}

// TestCaptureMatchesTracePcapng captures real lab runs with
// scripts/capture.sh and compares what the kernel carried with the run's
// trace.pcapng, rendered from its trace: the same connections (ports and
// count per Policy Server), each closed the same way (FIN or RST, and by
// which end).
func TestCaptureMatchesTracePcapng(t *testing.T) {
	if why := canCapture(t); why != "" {
		t.Skip(why)
	}
	tests := []struct {
		name string
		lab  string
		args []string
		// faults, when set, replaces the lab's workload: and faults:
		// (failoverLab), to keep the run short.
		faults string
	}{
		{"IIS", "seed", []string{"--requests", "6"}, ""},
		// Recycled children close their pools as they exit, and new ones
		// bootstrap again: many more connections and closes.
		{"Apache with recycling", "seed", []string{"--requests", "12", "--model", "apache", "--workers", "2", "--max-requests-per-child", "3"}, ""},
		// A killed server's sockets are closed by its system, which its
		// trace cannot show: the rendering must infer the same FINs and
		// RSTs that the capture shows.
		{"a Policy Server killed under load", "failover", nil,
			"workload: {duration: 5s, rate: 50, concurrency: 4}\nfaults:\n  - {at: 1500ms, server: smps1, action: kill}\n  - {at: 3s, server: smps1, action: restart}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var labFile string
			var ips map[string]string
			if tc.faults != "" {
				labFile, ips = failoverLab(t, tc.faults)
			} else {
				labFile, ips = ownAddresses(t, "../labs/"+tc.lab+".yaml")
			}
			out := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			args := append([]string{"../scripts/capture.sh", out, labFile, "--bin", binDir, "--poll", "1s"}, tc.args...)
			cmd := exec.CommandContext(ctx, "bash", args...)
			cmd.Env = append(os.Environ(), "AGENTLAB="+bin("agentlab"))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("scripts/capture.sh: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), filepath.Join(out, "trace.pcapng")) {
				t.Errorf("agentlab run's report does not mention trace.pcapng:\n%s", stdout.String())
			}
			captured := tcpConns(t, filepath.Join(out, "capture.pcapng"))
			rendered := tcpConns(t, filepath.Join(out, "trace.pcapng"))
			// The registration, before the web server starts, has a
			// capture of its own; the real capture has both.
			registration := tcpConns(t, filepath.Join(out, "registration", "trace.pcapng"))
			if len(registration) != 1 {
				t.Errorf("registration/trace.pcapng has %d connections, want smreghost's one", len(registration))
			}
			for ends, c := range registration {
				if rendered[ends] != nil {
					t.Errorf("the registration's %s is in trace.pcapng too", ends)
				}
				rendered[ends] = c
			}
			// Refused connects are in the trace as failed TCP Connects.
			refused := map[string]int{}
			for ends, c := range captured {
				if !c.accepted {
					refused[c.server]++
					delete(captured, ends)
				}
			}
			evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			failed := map[string]int{}
			for _, e := range evs {
				if e.Op == trace.OpConnect && e.Conn == "" && e.Errno == "ECONNREFUSED" {
					failed[e.Remote]++
				}
			}
			if fmt.Sprint(failed) != fmt.Sprint(refused) {
				t.Errorf("refused connects per server: %v in trace.jsonl, %v in the capture", failed, refused)
			}

			perServer := func(m map[string]*tcpClose) map[string]int {
				n := map[string]int{}
				for _, c := range m {
					n[c.server]++
				}
				return n
			}
			if got, want := perServer(rendered), perServer(captured); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("connections per server: trace.pcapng %v, capture %v", got, want)
			}
			for _, host := range []string{"smps1.shared.lab", "smps2.shared.lab"} {
				if perServer(captured)[ips[host]+":44443"] == 0 {
					t.Errorf("the capture has no connection to %s (%s): did it capture the run?", host, ips[host])
				}
			}
			for ends, c := range captured {
				r := rendered[ends]
				switch {
				case r == nil:
					t.Errorf("captured %s (%v) is not in trace.pcapng", ends, c.flags)
				case !slices.Equal(r.flags, c.flags):
					t.Errorf("%s closes with %v in trace.pcapng, %v in the capture", ends, r.flags, c.flags)
				}
			}
			for ends := range rendered {
				if captured[ends] == nil {
					t.Errorf("trace.pcapng's %s was not captured", ends)
				}
			}
			t.Logf("compared %d connections and %d refused connects", len(captured), sum(refused))
		})
	}
}

// TestPcapCommand runs agentlab pcap on traces written here: the run's
// hosts file next to the trace names the addresses, and bad input ends in
// an error naming the file.
func TestPcapCommand(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 22, 8, 46, 0, time.UTC)
	ev := func(ms int, proc string, pid int, op, conn, local, remote, data string) trace.Event {
		e := trace.Event{T: t0.Add(time.Duration(ms) * time.Millisecond), Proc: proc, PID: pid, Op: op, Conn: conn,
			Local: local, Remote: remote, Len: len(data)}
		if data != "" {
			e.Data = []byte(data)
		}
		return e
	}
	c, s := "127.0.0.11:50000", "127.0.0.21:44443"
	good := []trace.Event{
		ev(0, "w3wp.exe", 100, trace.OpConnect, "100-1", c, s, ""),
		ev(1, "smps", 200, trace.OpAccept, "200-1", s, c, ""),
		ev(2, "w3wp.exe", 100, trace.OpSend, "100-1", c, s, "hello"),
		ev(3, "smps", 200, trace.OpReceive, "200-1", s, c, "hello"),
		ev(4, "w3wp.exe", 100, trace.OpDisconnect, "100-1", c, s, ""),
	}
	noPayload := slices.Clone(good)
	noPayload[2].Data, noPayload[3].Data = nil, nil

	write := func(dir string, evs []trace.Event, hosts string) string {
		t.Helper()
		var b bytes.Buffer
		if err := trace.WriteEvents(&b, evs); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "trace.jsonl")
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if hosts != "" {
			if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	run := t.TempDir()
	goodTrace := write(run, good, "127.0.0.11 wa1.shared.lab\n127.0.0.21 smps1.shared.lab\n")
	badTrace := write(t.TempDir(), noPayload, "")

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"the hosts file next to the trace", []string{"pcap", goodTrace, "-o", filepath.Join(run, "a.pcapng")}, 0, ""},
		{"a trace without payloads", []string{"pcap", badTrace, "-o", filepath.Join(run, "b.pcapng")}, 1, badTrace + ": w3wp.exe (pid 100) conn 100-1 to smps (pid 200) conn 200-1: 5 bytes, 0 of them recorded: trace has no payload bytes: record with --trace-payload"},
		{"no output file", []string{"pcap", goodTrace}, 2, "missing flags: --out"},
		{"no trace", []string{"pcap", filepath.Join(run, "none.jsonl"), "-o", filepath.Join(run, "c.pcapng")}, 2, "none.jsonl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, nil, "agentlab", tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("agentlab %q: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.stderr)
			}
		})
	}
	data, err := os.ReadFile(filepath.Join(run, "a.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	// A section header block, then the names from the hosts file.
	if len(data) < 12 || !bytes.Equal(data[:4], []byte{0x0a, 0x0d, 0x0d, 0x0a}) || !bytes.Contains(data, []byte("smps1.shared.lab\x00")) {
		t.Errorf("a.pcapng is not a pcapng naming smps1.shared.lab: % x", data[:min(len(data), 32)])
	}
	if _, err := os.Stat(filepath.Join(run, "b.pcapng")); err == nil {
		t.Error("a failed rendering left b.pcapng")
	}
}
