package llawp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/policyserver"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// runWait bounds what normally takes milliseconds; it catches a hang and
// measures nothing.
const runWait = 10 * time.Second

const testSecret = "the llawp tests' shared secret"

// fakePlugin stands in for go-plugin's side: it hands the Service to the
// test and serves until Stop, or until the test plays the owner's
// shutdown.
type fakePlugin struct {
	svc      chan *Service
	stop     chan struct{}
	shutdown chan struct{}
	stopOnce sync.Once
	stopped  chan struct{} // closed by Stop, for the test to see
}

func newFakePlugin() *fakePlugin {
	return &fakePlugin{svc: make(chan *Service, 1), stop: make(chan struct{}), shutdown: make(chan struct{}), stopped: make(chan struct{})}
}

func (f *fakePlugin) serve(svc *Service, _ zerolog.Logger) Server {
	f.svc <- svc
	return f
}

func (f *fakePlugin) Serve() error {
	select {
	case <-f.stop:
		return nil
	case <-f.shutdown:
		return ipc.ErrOwnerShutdown
	}
}

func (f *fakePlugin) Stop() {
	f.stopOnce.Do(func() { close(f.stop); close(f.stopped) })
}

func (f *fakePlugin) service(t *testing.T) *Service {
	t.Helper()
	select {
	case svc := <-f.svc:
		return svc
	case <-time.After(runWait):
		t.Fatal("Run never built its server")
		return nil
	}
}

// seedLab is the seed's topology on loopback addresses of the test's own:
// smps2 for the bootstrap, smps1 in the seed store's hco.smps1. That HCO
// names port 44443, so smps1 listens there, on an address no other test
// uses; smps2's port is free, since SmHost.conf is the test's.
type seedLab struct {
	agentIP      string
	smps1, smps2 string // ip:port
	hosts        *trace.Hosts
	store        *policyserver.Store
	stops        []func()
}

func newSeedLab(t *testing.T) *seedLab {
	t.Helper()
	l := &seedLab{}
	var ln1 net.Listener
	var base string
	for try := 0; ln1 == nil; try++ {
		base = fmt.Sprintf("127.%d.%d.", 100+rand.IntN(100), 1+rand.IntN(250))
		ln, err := net.Listen("tcp", base+"21:44443")
		switch {
		case err == nil:
			ln1 = ln
		case try == 10:
			t.Fatalf("no loopback address of its own for smps1: %v", err)
		}
	}
	ln2, err := net.Listen("tcp", base+"22:0")
	if err != nil {
		ln1.Close()
		t.Fatal(err)
	}
	l.agentIP, l.smps1, l.smps2 = base+"11", ln1.Addr().String(), ln2.Addr().String()
	if l.hosts, err = trace.NewHosts(map[string][]string{
		base + "11": {"wa1.shared.lab"}, base + "21": {"smps1.shared.lab"}, base + "22": {"smps2.shared.lab"},
	}); err != nil {
		t.Fatal(err)
	}
	if l.store, err = policyserver.SeedStore(); err != nil {
		t.Fatal(err)
	}
	// What smreghost would have done, with a secret SmHost.conf can hold.
	if _, err := l.store.RegisterHost(t.Context(), "trust_wa1", "hco.smps1", true, []byte(testSecret)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		name string
		ln   net.Listener
	}{{"smps1.shared.lab", ln1}, {"smps2.shared.lab", ln2}} {
		srv, err := policyserver.New(policyserver.Config{Name: s.name, Store: l.store, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, s.ln) }()
		var once sync.Once
		l.stops = append(l.stops, func() {
			once.Do(func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("%s: Serve: %v", s.name, err)
					}
				case <-time.After(runWait):
					t.Errorf("%s: Serve has not returned %v after the cancel", s.name, runWait)
				}
			})
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *seedLab) stop() {
	for _, stop := range l.stops {
		stop()
	}
}

// writeConfs writes the web server instance's WebAgent.conf and the
// SmHost.conf it names, with a plain secret (no host identity needed) and
// the given bootstrap servers, and returns WebAgent.conf's path.
func writeConfs(t *testing.T, dir string, bootstrap ...string) string {
	t.Helper()
	wa := filepath.Join(dir, "WebAgent.conf")
	writeFile(t, wa, `HostConfigFile="SmHost.conf"
AgentConfigObject="aco.wa1"
EnableWebAgent="YES"
`)
	sm := `hostname="trust_wa1"
sharedsecret="{PLAIN}` + testSecret + `"
hostconfigobject="hco.smps1"
`
	for _, b := range bootstrap {
		sm += fmt.Sprintf("policyserver=\"%s\"\n", b)
	}
	writeFile(t, filepath.Join(dir, "SmHost.conf"), sm)
	return wa
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// psLine is a policyserver line for a server at addr ("host:port").
func psLine(t *testing.T, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host + ",0,0," + port
}

func traceEvents(t *testing.T, b *syncBuffer) []trace.Event {
	t.Helper()
	var evs []trace.Event
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var e trace.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("trace line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// started runs Run in the background; wait gives its result.
func started(ctx context.Context, cfg Config) (wait func(t *testing.T) error) {
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	return func(t *testing.T) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(runWait):
			t.Fatalf("Run has not returned after %v", runWait)
			return nil
		}
	}
}

// TestRun is the LLAWP's life against a real Policy Server: the seed's
// second round (bootstrap to smps2 and reset, two sockets to smps1, the
// ACO over the first), DoManagement every poll over that socket, a queued
// command relayed to a worker's watch, and a clean exit when asked.
func TestRun(t *testing.T) {
	before := goleak.IgnoreCurrent()
	lab := newSeedLab(t)
	out := t.TempDir()
	tb, stderr := &syncBuffer{}, &syncBuffer{}
	rec := trace.NewRecorder(tb, trace.Options{Proc: "LLAWP.exe", Role: "llawp", Host: "wa1.shared.lab", Hosts: lab.hosts})
	dialer, err := trace.LocalDialer(lab.agentIP)
	if err != nil {
		t.Fatal(err)
	}
	plugin := newFakePlugin()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	wait := started(ctx, Config{
		WebAgent: writeConfs(t, t.TempDir(), "smps2.shared.lab,0,0,"+strings.Split(lab.smps2, ":")[1]),
		Out:      out, Recorder: rec, Dialer: dialer, HostID: "not needed for a {PLAIN} secret",
		Poll: 200 * time.Millisecond, Linger: -1, Stderr: stderr, Serve: plugin.serve,
	})

	svc := plugin.service(t)
	id, err := svc.Register(ctx, ipc.Worker{PID: 4242, Name: "w3wp.exe", Role: "hla"})
	if err != nil {
		t.Fatal(err)
	}
	// Not ctx: it is Run that must end the watch.
	events, err := svc.Watch(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	status := func() ipc.Status {
		st, err := svc.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	testsupport.WaitFor(t, 10*time.Second, "two DoManagement polls", func() bool { return status().Polls >= 2 })
	if st := status(); st.Phase != ipc.PhaseReady || st.AgentName != "wa1" || st.BootstrapServer != "smps2.shared.lab:"+strings.Split(lab.smps2, ":")[1] ||
		len(st.HCOServers) != 1 || st.HCOServers[0] != "smps1.shared.lab:44443" || st.PollsFailed != 0 {
		t.Errorf("Status %+v, want ready, agent wa1, bootstrapped from smps2, pooled on smps1, no failed poll", st)
	}

	// An administrator queues a cache flush, as agentlab mgmt does.
	admin, err := tli.Dial(ctx, lab.smps1, tli.ClientConfig{Admin: true, TrustedHost: "smreghost", HandshakeTimeout: runWait})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := admin.Do(ctx, &tlipb.Request{Body: &tlipb.Request_QueueManagement{QueueManagement: &tlipb.QueueManagementRequest{
		AdminUser: "siteminder", AdminPassword: "siteminder", AgentName: "wa1",
		Command: &tlipb.ManagementCommand{Code: uint32(tlipb.ManagementCode_FLUSH_ALL)},
	}}})
	admin.Close()
	if err != nil || resp.Result != tlipb.Result_SUCCESS {
		t.Fatalf("QueueManagement: %v %v", resp, err)
	}
	select {
	case ev := <-events:
		if ev.Code != uint32(tlipb.ManagementCode_FLUSH_ALL) || ev.Name != ipc.EventName(uint32(tlipb.ManagementCode_FLUSH_ALL)) || ev.Seq != 1 {
			t.Errorf("relayed %+v, want the first event, FLUSH_ALL", ev)
		}
	case <-time.After(runWait):
		t.Fatal("the queued command never reached the watcher")
	}

	cancel(errors.New("the test is over"))
	if err := wait(t); err != nil {
		t.Fatalf("Run after the cancel: %v, want nil", err)
	}
	select {
	case <-plugin.stopped:
	default:
		t.Error("Run returned without stopping its server")
	}
	select {
	case ev, ok := <-events:
		if ok {
			t.Errorf("event %+v after Run returned", ev)
		}
	case <-time.After(runWait):
		t.Error("the watch is still open after Run returned")
	}
	lab.stop()
	goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))

	// The agent log, as the HLA's learner reads it.
	waLog := strings.Join(readLines(t, filepath.Join(out, "WA.log")), "\n")
	for _, want := range []string{
		"] LLAWP.exe starting for trusted host 'trust_wa1'.",
		"] hostname='trust_wa1'.",
		"] minsocketsperport='2'.",
		"] Worker w3wp.exe (pid 4242) registered with the LLAWP; 1 registered.",
		"] LLAWP.exe ready: agent 'wa1', management poll every 200ms over smps1.shared.lab:44443.",
		"] Management command FLUSH_ALL (194) relayed to 1 watcher(s).",
		"] LLAWP.exe exiting: the test is over.",
	} {
		if !strings.Contains(waLog, want) {
			t.Errorf("WA.log lacks %q:\n%s", want, waLog)
		}
	}
	if stderr.String() != "" {
		t.Errorf("stderr got %q; nothing went wrong", stderr.String())
	}

	// The sockets, as the seed's capture shows them.
	var bootConn, firstConn string
	var resets, pooled, polls, acos int
	for _, e := range traceEvents(t, tb) {
		if e.Op == trace.OpConnect && e.LocalHost != "wa1.shared.lab" {
			t.Errorf("%s from %s (%s), want from wa1.shared.lab", e.Op, e.Local, e.LocalHost)
		}
		switch {
		case e.Op == trace.OpConnect && e.RemoteHost == "smps2.shared.lab" && e.Phase == trace.PhaseBootstrap:
			bootConn = e.Conn
		case e.Op == trace.OpReset && e.Conn == bootConn:
			resets++
		case e.Op == trace.OpConnect && e.RemoteHost == "smps1.shared.lab" && e.Phase == trace.PhaseHCO:
			if bootConn == "" || resets == 0 {
				t.Errorf("a pool socket before the bootstrap socket was reset")
			}
			pooled++
			if firstConn == "" {
				firstConn = e.Conn
			}
		case e.Op == trace.OpRequest && e.Request == trace.ReqGetAgentConfig && e.Subject == "aco.wa1":
			acos++
			if e.Conn != firstConn {
				t.Errorf("ACO over %s, want the first pool socket %s", e.Conn, firstConn)
			}
		case e.Op == trace.OpRequest && e.Request == trace.ReqDoManagement && e.Subject == GetAgentCommands:
			polls++
			if e.Conn != firstConn {
				t.Errorf("DoManagement over %s, want the first pool socket %s", e.Conn, firstConn)
			}
		}
	}
	if bootConn == "" || resets != 1 || pooled != 2 || acos != 1 || polls < 2 {
		t.Errorf("bootstrap socket %q reset %d time(s), %d pool socket(s), %d ACO request(s), %d poll(s); "+
			"want a bootstrap to smps2 and its reset, 2 sockets to smps1, 1 ACO, at least 2 polls:\n%s", bootConn, resets, pooled, acos, polls, tb)
	}
}

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	noSmHost := filepath.Join(dir, "nosmhost", "WebAgent.conf")
	os.Mkdir(filepath.Dir(noSmHost), 0o755)
	writeFile(t, noSmHost, "HostConfigFile=\"SmHost.conf\"\nAgentConfigObject=\"aco.wa1\"\n")
	tests := []struct {
		name, webAgent, want string
	}{
		{"no WebAgent.conf", filepath.Join(dir, "WebAgent.conf"), "WebAgent.conf"},
		{"no SmHost.conf", noSmHost, "SmHost.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			plugin := newFakePlugin()
			err := Run(context.Background(), Config{WebAgent: tt.webAgent, Out: out, Serve: plugin.serve})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want an error naming %s", err, tt.want)
			}
			// There is no agent log yet: the caller must tell it.
			if errors.As(err, new(*LoggedError)) {
				t.Errorf("Run: %v is a LoggedError", err)
			}
			if _, err := os.Stat(filepath.Join(out, "WA.log")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("WA.log: %v, want none", err)
			}
			if len(plugin.svc) != 0 {
				t.Error("Run served the workers with a configuration it could not read")
			}
		})
	}
}

// TestRunStartupFailure: with no bootstrap server up, the LLAWP leaves,
// and says why in a WA.log of the default name (no ACO came to name it)
// and on stderr, towards the owner's log.
func TestRunStartupFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	out, stderr := t.TempDir(), &syncBuffer{}
	plugin := newFakePlugin()
	wait := started(context.Background(), Config{
		WebAgent: writeConfs(t, t.TempDir(), psLine(t, down)), Out: out, Linger: -1, Stderr: stderr, Serve: plugin.serve,
	})
	svc := plugin.service(t)
	err = wait(t)
	var logged *LoggedError
	if !errors.As(err, &logged) || !strings.Contains(err.Error(), down) {
		t.Fatalf("Run: %v, want a LoggedError naming %s", err, down)
	}
	if st, _ := svc.Status(context.Background()); st.Phase != ipc.PhaseFailed {
		t.Errorf("phase %q, want %q", st.Phase, ipc.PhaseFailed)
	}
	waLog := strings.Join(readLines(t, filepath.Join(out, "WA.log")), "\n")
	if !strings.Contains(waLog, "] LLAWP.exe exiting: ") || !strings.Contains(waLog, down) {
		t.Errorf("WA.log does not tell why:\n%s", waLog)
	}
	if !strings.Contains(stderr.String(), `"level":"error"`) || !strings.Contains(stderr.String(), down) {
		t.Errorf("stderr %q does not tell why", stderr.String())
	}
}

// TestRunExits: every way out but a failure is a normal exit, logged with
// its reason. The bootstrap server here accepts and never answers, so that
// the reason is the only thing that ends the run.
func TestRunExits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	held.Add(1)
	go func() {
		defer held.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); held.Wait() })

	tests := []struct {
		name   string
		linger time.Duration
		end    func(cancel context.CancelCauseFunc, p *fakePlugin)
		want   string // the WA.log line
		warn   bool   // also on stderr
	}{
		{"the owner shuts it down", -1, func(_ context.CancelCauseFunc, p *fakePlugin) { close(p.shutdown) },
			"] LLAWP.exe exiting: the owner shut the LLAWP down.", false},
		{"no worker for the linger time", 20 * time.Millisecond, func(context.CancelCauseFunc, *fakePlugin) {},
			"] LLAWP.exe exiting: no worker registered for 20ms.", false},
		{"a SIGTERM", -1, func(cancel context.CancelCauseFunc, _ *fakePlugin) { cancel(errors.New("received signal terminated")) },
			"] LLAWP.exe exiting: received signal terminated.", false},
		{"the owner's death", -1, func(cancel context.CancelCauseFunc, _ *fakePlugin) {
			cancel(fmt.Errorf("%w (pid 77): received signal terminated", ErrOwnerGone))
		}, "] LLAWP.exe exiting: the owner process is gone (pid 77): received signal terminated.", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr := t.TempDir(), &syncBuffer{}
			plugin := newFakePlugin()
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			wait := started(ctx, Config{
				WebAgent: writeConfs(t, t.TempDir(), psLine(t, ln.Addr().String())), Out: out,
				Linger: tt.linger, Stderr: stderr, Serve: plugin.serve,
			})
			plugin.service(t)
			tt.end(cancel, plugin)
			if err := wait(t); err != nil {
				t.Fatalf("Run: %v, want nil", err)
			}
			lines := readLines(t, filepath.Join(out, "WA.log"))
			if last := lines[len(lines)-1]; !strings.HasSuffix(last, tt.want) {
				t.Errorf("WA.log ends with %q, want %q", last, tt.want)
			}
			if got := stderr.String() != ""; got != tt.warn {
				t.Errorf("stderr %q; want a line: %v", stderr.String(), tt.warn)
			}
		})
	}
}
