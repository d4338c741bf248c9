package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// tsharkFields runs tshark with wireshark/agentlab_tli.lua over pcap and
// returns, per packet, the values of each field (all occurrences).
func tsharkFields(t *testing.T, pcap, keylog string, names ...string) [][][]string {
	t.Helper()
	bin, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark is not installed (scripts/install-test-deps.sh installs it): the capture is not dissected")
	}
	script, err := filepath.Abs("../wireshark/agentlab_tli.lua")
	if err != nil {
		t.Fatal(err)
	}
	const agg = "\x1f"
	args := []string{"-n", "-X", "lua_script:" + script, "-r", pcap, "-T", "fields",
		"-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=" + agg, "-e", "_ws.expert"}
	if keylog != "" {
		args = append(args, "-o", "agentlab_tli.keylog:"+keylog)
	}
	for _, n := range names {
		args = append(args, "-e", n)
	}
	cmd := exec.Command(bin, args...)
	// A fresh settings folder: no dissector a user installed, no key log
	// from their preferences.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "WIRESHARK_CONFIG_DIR="+home, "XDG_CONFIG_HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("tshark: %v\n%s", err, errb.String())
	}
	if strings.Contains(errb.String(), "Lua") {
		t.Fatalf("tshark: %s", errb.String())
	}
	var rows [][][]string
	for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		cols := strings.Split(line, "\t")
		if strings.Contains(cols[0], "Lua Error") {
			t.Fatalf("the dissector failed: %s", cols[0])
		}
		var row [][]string
		for i := range names {
			var vals []string
			if i+1 < len(cols) && cols[i+1] != "" {
				vals = strings.Split(cols[i+1], agg)
			}
			row = append(row, vals)
		}
		rows = append(rows, row)
	}
	return rows
}

// column gathers one field's values over every packet.
func column(rows [][][]string, i int) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r[i]...)
	}
	return out
}

// TestLabCaptureDecrypts runs the seed lab with --keylog and reads the
// run's trace.pcapng with the Wireshark dissector: with the key log every
// request and response of every process (smreghost's registration
// included) decrypts and reads as the processes' own traces name it;
// without it the handshake still shows the trusted host in clear and the
// requests stay encrypted.
func TestLabCaptureDecrypts(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark is not installed (scripts/install-test-deps.sh installs it): the capture is not dissected")
	}
	labFile, _ := seedLab(t)
	out := t.TempDir()
	keylog := filepath.Join(t.TempDir(), "keylog")
	r := runCmd(t, nil, "agentlab", "run", labFile, "--out", out, "--bin", binDir, "--requests", "3", "--poll", "1s", "--keylog", keylog)
	if r.code != 0 {
		t.Fatalf("agentlab run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	fi, err := os.Stat(keylog)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key log mode %#o, want 0600", fi.Mode().Perm())
	}
	sessions, err := tli.ReadKeyLogFile(keylog)
	if err != nil {
		t.Fatal(err)
	}
	// smreghost's registration, then w3wp.exe's and LLAWP.exe's bootstrap
	// connection and two HCO connections each.
	if len(sessions) < 7 {
		t.Errorf("key log has %d sessions, want at least 7", len(sessions))
	}
	pcap := filepath.Join(out, "trace.pcapng")
	if _, err := os.Stat(pcap); err != nil {
		t.Fatalf("the run wrote no capture: %v", err)
	}

	names := []string{"agentlab_tli.client_hello.trusted_host", "agentlab_tli.client_hello.mode",
		"agentlab_tli.get_host_config_request.name", "agentlab_tli.is_protected_request.resource",
		"agentlab_tli.request_name", "agentlab_tli.request", "agentlab_tli.response", "agentlab_tli.decryption",
		"agentlab_tli.register_host_request.trusted_host", "agentlab_tli.do_management_request.command"}
	const (
		trustedHost = iota
		mode
		hco
		resource
		requestName
		request
		response
		decryption
		registered
		command
	)
	rows := tsharkFields(t, pcap, keylog, names...)
	if hosts := column(rows, trustedHost); !slices.Contains(hosts, "trust_wa1") {
		t.Errorf("no ClientHello shows trusted host trust_wa1: %q", hosts)
	}
	// The capture starts with the web server, as the seed's does: the
	// registration before it has a capture of its own.
	if got := column(rows, mode); slices.Contains(got, "1") {
		t.Errorf("smreghost's administrator session is in the run's capture: modes %q", got)
	}
	if got := column(rows, registered); len(got) != 0 {
		t.Errorf("the run's capture has RegisterHost %q", got)
	}
	regRows := tsharkFields(t, filepath.Join(out, "registration", "trace.pcapng"), keylog, names...)
	if got := column(regRows, mode); !slices.Contains(got, "1") {
		t.Errorf("smreghost's administrator session is not in registration/trace.pcapng: modes %q", got)
	}
	if got := column(regRows, registered); !slices.Equal(got, []string{"trust_wa1"}) {
		t.Errorf("RegisterHost in registration/trace.pcapng names %q, want trust_wa1 once", got)
	}
	if got := column(rows, hco); len(got) < 2 || slices.ContainsFunc(got, func(s string) bool { return s != "hco.smps1" }) {
		t.Errorf("GetHostConfig names %q, want hco.smps1 from w3wp.exe and LLAWP.exe", got)
	}
	if got := column(rows, resource); !slices.Contains(got, "/protected/") {
		t.Errorf("IsProtected names no /protected/: %q", got)
	}
	if got := column(rows, command); len(got) < 2 || !slices.Contains(got, "GET_AGENT_COMMANDS") {
		t.Errorf("DoManagement commands %q, want at least 2 GET_AGENT_COMMANDS polls", got)
	}
	reqNames := column(rows, requestName)
	for _, want := range []string{"GetHostConfig", "GetAgentConfig", "SetAgentInfo", "IsProtected", "Login", "Authorize", "DoManagement"} {
		if !slices.Contains(reqNames, want) {
			t.Errorf("no %s request decoded; requests: %q", want, reqNames)
		}
	}
	for _, d := range column(rows, decryption) {
		if d != "decrypted, GCM tag verified" {
			t.Errorf("a sealed frame of the lab does not decrypt: %s", d)
		}
	}

	// The dissector names each exchange as the processes that made it
	// noted it in their traces (the client side: the server notes the same
	// requests).
	evs, err := trace.ReadFile(filepath.Join(out, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var wantReqs, wantResps []string
	for _, e := range evs {
		if e.Role == "policyserver" {
			continue
		}
		switch e.Op {
		case trace.OpRequest:
			wantReqs = append(wantReqs, e.Note)
		case trace.OpResponse:
			wantResps = append(wantResps, e.Note)
		}
	}
	gotReqs, gotResps := column(rows, request), column(rows, response)
	for _, s := range [][]string{wantReqs, wantResps, gotReqs, gotResps} {
		slices.Sort(s)
	}
	if !slices.Equal(gotReqs, wantReqs) {
		t.Errorf("requests in the capture:\n%s\nin the traces:\n%s", strings.Join(gotReqs, "\n"), strings.Join(wantReqs, "\n"))
	}
	if !slices.Equal(gotResps, wantResps) {
		t.Errorf("responses in the capture:\n%s\nin the traces:\n%s", strings.Join(gotResps, "\n"), strings.Join(wantResps, "\n"))
	}

	// Without the key log: the handshake, and nothing sealed.
	clear := tsharkFields(t, pcap, "", names...)
	if hosts := column(clear, trustedHost); !slices.Contains(hosts, "trust_wa1") {
		t.Errorf("without the key log no ClientHello shows trust_wa1: %q", hosts)
	}
	for _, i := range []int{hco, resource, requestName, request, response, registered, command} {
		if got := column(clear, i); len(got) > 0 {
			t.Errorf("without the key log %s shows %q", names[i], got)
		}
	}
	d := column(clear, decryption)
	if len(d) != len(column(rows, decryption)) {
		t.Errorf("without the key log %d sealed frames, with it %d", len(d), len(column(rows, decryption)))
	}
	for _, v := range d {
		if !strings.HasPrefix(v, "no key log") {
			t.Errorf("without the key log a sealed frame says %q", v)
		}
	}
}

// TestSmpsKeyLog checks smps's --keylog: the file it creates is its
// owner's alone, and one it cannot use, or that others can already read,
// stops the server before it listens, with an error naming the file.
func TestSmpsKeyLog(t *testing.T) {
	for _, tc := range []struct {
		name    string
		path    func(dir string) string
		wantErr string // "": the server starts
	}{
		{"new file", func(dir string) string { return filepath.Join(dir, "keylog") }, ""},
		{"readable by others", func(dir string) string {
			p := filepath.Join(dir, "keylog")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o644); err != nil { // past the umask
				t.Fatal(err)
			}
			return p
		}, "lets others read session keys"},
		{"missing folder", func(dir string) string { return filepath.Join(dir, "missing", "keylog") }, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tc.path(dir)
			ip := loopbackIPs(t, 1, 44443)[0]
			cmd := exec.Command(bin("smps"), "--listen", ip+":44443", "--name", "smps1.shared.lab",
				"--keylog", path, "--log", filepath.Join(dir, "smps.log"))
			var errb bytes.Buffer
			cmd.Stderr = &errb
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				err := cmd.Wait()
				if err == nil || !strings.Contains(errb.String(), tc.wantErr) || !strings.Contains(errb.String(), path) {
					t.Fatalf("smps: %v, stderr %q; want an error naming %s: %s", err, errb.String(), path, tc.wantErr)
				}
				return
			}
			defer func() {
				cmd.Process.Signal(os.Interrupt)
				cmd.Wait()
			}()
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			if _, ok := notice.ParseKind(line, notice.ProgSmps, notice.Listening); !ok {
				t.Fatalf("smps did not start: %q %s", line, errb.String())
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key log mode %#o, want 0600", fi.Mode().Perm())
			}
		})
	}
}
