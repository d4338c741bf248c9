package startup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/policyserver/pstest"
	"github.com/agentlab/agentlab/trace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "s3cret"

// lab is the seed's smps1 on an address of the test's own, with the
// agent's files naming it as the bootstrap server (and dead, a server
// nobody answers, before it when asked).
type lab struct {
	base  string
	hosts *trace.Hosts
	dir   string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l, base := pstest.ListenSeedPort(t)
	pstest.StartOn(t, l, "smps1.shared.lab", "trust_wa1", []byte(secret))
	hosts, err := trace.NewHosts(map[string][]string{
		base + "11": {"wa1.shared.lab"}, base + "21": {"smps1.shared.lab"}, base + "22": {"smps2.shared.lab"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &lab{base: base, hosts: hosts, dir: t.TempDir()}
}

// files writes WebAgent.conf and SmHost.conf with the given policyserver
// lines and returns WebAgent.conf's path.
func (l *lab) files(t *testing.T, servers ...string) string {
	t.Helper()
	wa := filepath.Join(l.dir, "WebAgent.conf")
	write(t, wa, "HostConfigFile=\"SmHost.conf\"\nAgentConfigObject=\"aco.wa1\"\nEnableWebAgent=\"YES\"\n")
	sm := "hostname=\"trust_wa1\"\nsharedsecret=\"{PLAIN}" + secret + "\"\nhostconfigobject=\"hco.smps1\"\n"
	for _, s := range servers {
		sm += fmt.Sprintf("policyserver=\"%s\"\n", s)
	}
	write(t, filepath.Join(l.dir, "SmHost.conf"), sm)
	return wa
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// events reads back what a Recorder wrote to b, once nothing writes.
func events(t *testing.T, b *bytes.Buffer) []trace.Event {
	t.Helper()
	evs, err := trace.ReadEvents("trace", bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (l *lab) config(t *testing.T, buf *bytes.Buffer, wa string) Config {
	t.Helper()
	files, err := ReadFiles(wa)
	if err != nil {
		t.Fatal(err)
	}
	dialer, err := trace.LocalDialer(l.base + "11")
	if err != nil {
		t.Fatal(err)
	}
	rec := trace.NewRecorder(buf, trace.Options{Proc: "w3wp.exe", Role: "hla", Hosts: l.hosts})
	return Config{Files: files, Recorder: rec, Dialer: dialer, Role: "hla", Process: "w3wp.exe", HealthPoll: -1}
}

// bootstrapped is the op of the event TestStart records where Bootstrapped
// is called.
const bootstrapped = "Bootstrapped"

func TestStart(t *testing.T) {
	l := newLab(t)
	tests := []struct {
		name    string
		servers []string // SmHost.conf's bootstrap servers
		skipACO bool
		wantErr string
		skipped int
	}{
		{"the seed's round", []string{"smps1.shared.lab,0,0,44443"}, false, "", 0},
		{"a bootstrap server down is skipped", []string{"smps2.shared.lab,0,0,44443", "smps1.shared.lab,0,0,44443"}, false, "", 1},
		{"an Apache child that takes its ACO from the LLAWP", []string{"smps1.shared.lab,0,0,44443"}, true, "", 0},
		{"no bootstrap server answers", []string{"smps2.shared.lab,0,0,44443"}, false, "no policy server", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			cfg := l.config(t, &buf, l.files(t, tt.servers...))
			cfg.SkipACO = tt.skipACO
			// Bootstrapped marks its place in the trace.
			called := 0
			cfg.Bootstrapped = func(res *bootstrap.Result) {
				called++
				cfg.Recorder.Emit(trace.Event{Op: bootstrapped})
				if len(res.Skipped) != tt.skipped {
					t.Errorf("bootstrap skipped %v, want %d", res.Skipped, tt.skipped)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			ag, err := Start(ctx, cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Start: %v, want an error with %q", err, tt.wantErr)
				}
				if called > 0 {
					t.Error("Bootstrapped called for a bootstrap that failed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ag.Bootstrap.HCO.Name != "hco.smps1" || ag.Bootstrap.Server.Host != "smps1.shared.lab" {
				t.Errorf("bootstrap: HCO %q from %s", ag.Bootstrap.HCO.Name, ag.Bootstrap.Server.Addr())
			}
			if wantACO := map[bool]string{false: "aco.wa1", true: ""}[tt.skipACO]; ag.ACO.Name != wantACO {
				t.Errorf("ACO %q, want %q", ag.ACO.Name, wantACO)
			}
			st := ag.Pool.Stats().Servers
			if len(st) != 1 || st[0].Open != ag.Bootstrap.HCO.MinSocketsPerPort {
				t.Errorf("pool %+v, want MinSocketsPerPort sockets to the HCO's one server", st)
			}
			ag.Pool.Close() // nothing writes to buf from here
			// The bootstrap's events, then the HCO phase's: the hook
			// comes between them, as the process's log must.
			if called != 1 {
				t.Fatalf("Bootstrapped called %d times, want once", called)
			}
			after := false
			for i, e := range events(t, &buf) {
				switch {
				case e.Op == bootstrapped:
					after = true
				case e.Phase != "" && after == (e.Phase == trace.PhaseBootstrap):
					t.Errorf("event %d (%s, phase %s) is on the wrong side of Bootstrapped", i, e.Op, e.Phase)
				}
			}
		})
	}
}

func TestProbe(t *testing.T) {
	l := newLab(t)
	var buf bytes.Buffer
	cfg := l.config(t, &buf, l.files(t, "smps2.shared.lab,0,0,44443", "smps1.shared.lab,0,0,44443"))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	res, err := Probe(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bootstrap: skipped smps2.shared.lab:44443",
		"bootstrap: smps1.shared.lab:44443 gave HCO hco.smps1 and the connection was reset\n",
		"  smps1.shared.lab:44443: handshake OK (server says it is smps1.shared.lab)\n",
		"ACO aco.wa1 from smps1.shared.lab:44443: defaultagentname=wa1",
	}
	for _, w := range want {
		if !strings.Contains(res.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, res)
		}
	}
	// One socket per server, closed: a check, not a pool.
	var connects, hco int
	for _, e := range events(t, &buf) {
		if e.Op == trace.OpConnect {
			connects++
			if e.Phase == trace.PhaseHCO {
				hco++
			}
		}
	}
	if hco != 1 {
		t.Errorf("%d HCO-phase connects, want 1 (of %d in all)", hco, connects)
	}
}

func TestReadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good", "WebAgent.conf")
	lost := filepath.Join(dir, "lost", "WebAgent.conf")
	for _, d := range []string{"good", "lost"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, good, "HostConfigFile=\"SmHost.conf\"\nAgentConfigObject=\"aco.wa1\"\n")
	write(t, filepath.Join(dir, "good", "SmHost.conf"), "hostname=\"trust_wa1\"\nsharedsecret=\"{PLAIN}x\"\nhostconfigobject=\"hco.smps1\"\npolicyserver=\"smps2.shared.lab,44441,44442,44443\"\n")
	write(t, lost, "HostConfigFile=\"SmHost.conf\"\nAgentConfigObject=\"aco.wa1\"\n")
	tests := []struct {
		name, path, wantErr string
	}{
		{"both files", good, ""},
		{"no WebAgent.conf", filepath.Join(dir, "none", "WebAgent.conf"), "WebAgent.conf"},
		{"WebAgent.conf names an SmHost.conf that is not there", lost, "SmHost.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ReadFiles(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadFiles: %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.WebAgent.AgentConfigObject != "aco.wa1" || f.SmHost.HostName != "trust_wa1" {
				t.Errorf("read %+v and %+v", f.WebAgent, f.SmHost)
			}
		})
	}
}

func TestInstanceInfo(t *testing.T) {
	tests := []struct{ process, want string }{
		{"w3wp.exe", "Product=agentlab,Platform=" + runtime.GOOS + ",Version=0.1,Process=w3wp.exe"},
		{"httpd", "Product=agentlab,Platform=" + runtime.GOOS + ",Version=0.1,Process=httpd"},
		// The LLAWP's, as recorded before the round was shared.
		{"", "Product=agentlab,Platform=" + runtime.GOOS + ",Version=0.1"},
	}
	for _, tt := range tests {
		if got := InstanceInfo(tt.process); got != tt.want {
			t.Errorf("InstanceInfo(%q) = %q, want %q", tt.process, got, tt.want)
		}
	}
}
