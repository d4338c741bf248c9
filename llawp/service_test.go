package llawp

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/testsupport"
)

// serve runs svc behind the ipc adapters on an in-memory gRPC connection,
// as go-plugin would over its socket, and returns the HLA's side.
func serve(t *testing.T, svc ipc.LLAWP) ipc.LLAWP {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	if err := (&ipc.Plugin{Impl: svc}).GRPCServer(nil, srv); err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///llawp",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-served
	})
	return ipc.NewClient(conn)
}

func TestServiceOverGRPC(t *testing.T) {
	dir := t.TempDir()
	sink := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp", PID: 4242})
	linger := NewLinger(0)
	defer linger.Close()
	reg := NewRegistry(RegistryOptions{OnCount: linger.SetWorkers})
	svc := NewService(ServiceConfig{Registry: reg, Records: sink, Log: sink.Logger(), PID: 4242})
	srv := &fakeServer{replies: []reply{{cmds: []*tlipb.ManagementCommand{{Code: 194, Name: "FLUSH_ALL"}}}}}
	poller := &Poller{Client: srv, AgentName: "wa1", Interval: time.Hour, Relay: reg.Publish, Log: sink.Logger(), Trace: sink.Tracer()}
	svc.SetPoller(poller)
	l := serve(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if st, err := l.Status(ctx); err != nil || st.Phase != ipc.PhaseStarting || st.PID != 4242 {
		t.Fatalf("status before startup: %+v, %v", st, err)
	}
	// The HLA logs before the LLAWP has its ACO: the sink keeps the lines.
	fwd := ipc.NewLogForwarder(0)
	hlaLog := zerolog.New(fwd).With().Timestamp().Str("proc", "w3wp.exe").Int("pid", 1972).Int("tid", 2856).Str("role", "hla").Logger()
	hlaLog.Info().Msg("w3wp.exe: agent initialised")
	id, err := l.Register(ctx, ipc.Worker{PID: 1972, Name: "w3wp.exe", Role: "hla"})
	if err != nil {
		t.Fatal(err)
	}
	// Set before forwarding starts, so that the queued record is counted
	// for the worker; one forwarded before Register could not be.
	fwd.SetWorker(id)
	fctx, fcancel := context.WithCancel(ctx)
	fdone := make(chan error, 1)
	go func() { fdone <- fwd.Forward(fctx, l) }()
	if linger.armed() {
		t.Error("the linger is armed with a worker registered")
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	events, err := l.Watch(wctx, id)
	if err != nil {
		t.Fatal(err)
	}

	// Startup finishes (cmd/llawp's job), then the first poll.
	svc.SetAgent(AgentInfo{AgentName: "wa1", TrustedHost: "trust_wa1", BootstrapServer: "smps2.shared.lab:44443", HCOServers: []string{"smps1.shared.lab:44443"}})
	if err := sink.Open(SinkConfig{Dir: dir, ACO: testACO()}); err != nil {
		t.Fatal(err)
	}
	svc.SetPhase(ipc.PhaseReady)
	testsupport.WaitFor(t, 10*time.Second, "a watcher", func() bool { ws := reg.Workers(); return len(ws) == 1 && ws[0].Watchers == 1 })
	poller.Poll(ctx)
	select {
	case ev := <-events:
		if ev.Code != 194 || ev.Name != "FLUSH_ALL" || ev.Seq != 1 {
			t.Errorf("event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("the FLUSH_ALL did not reach the worker")
	}

	hlaLog.Warn().Str("server", "smps1.shared.lab:44443").Msg("w3wp.exe: policy server slow")
	testsupport.WaitFor(t, 10*time.Second, "the worker's records", func() bool {
		st, _ := l.Status(ctx)
		return len(st.Workers) == 1 && st.Workers[0].LogRecords == 2
	})
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != ipc.PhaseReady || st.AgentName != "wa1" || st.BootstrapServer != "smps2.shared.lab:44443" ||
		len(st.HCOServers) != 1 || st.Polls != 1 || st.CommandsRelayed != 1 || st.LastPoll.IsZero() ||
		st.Workers[0].PID != 1972 || st.Workers[0].Watchers != 1 || st.Uptime <= 0 {
		t.Errorf("status %+v", st)
	}

	if err := l.Unregister(ctx, id); err != nil {
		t.Fatal(err)
	}
	for range events {
		// Unregister ends the watch stream cleanly.
	}
	if !linger.armed() {
		t.Error("the last Unregister did not arm the linger")
	}
	if err := l.Unregister(ctx, id); !errors.Is(err, ipc.ErrUnknownWorker) {
		t.Errorf("second Unregister: %v", err)
	}
	fcancel()
	if err := <-fdone; err != nil {
		t.Fatalf("forwarder: %v", err)
	}
	sink.Close()

	b, err := os.ReadFile(filepath.Join(dir, "WA.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, re := range []string{
		`(?m)^\[1972/2856\]\[` + vendorDate + `\] w3wp.exe: agent initialised$`,
		`(?m)^\[4242/\d+\]\[` + vendorDate + `\] Worker w3wp.exe \(pid 1972\) registered with the LLAWP; 1 registered\.$`,
		`(?m)^\[4242/\d+\]\[` + vendorDate + `\] Management command FLUSH_ALL \(194\) relayed to 1 watcher\(s\)\.$`,
		`(?m)^\[1972/2856\]\[` + vendorDate + `\] w3wp.exe: policy server slow$`,
		`(?m)^\[4242/\d+\]\[` + vendorDate + `\] Worker w3wp.exe \(pid 1972\) unregistered`,
	} {
		if !regexp.MustCompile(re).MatchString(log) {
			t.Errorf("WA.log has no line matching %s:\n%s", re, log)
		}
	}
	// The fields are ours: in the JSON lines, not in the vendor's layout.
	js, _ := os.ReadFile(filepath.Join(dir, "WA.jsonl"))
	if !strings.Contains(string(js), `"worker_pid":1972`) || !strings.Contains(string(js), `"server":"smps1.shared.lab:44443"`) {
		t.Errorf("WA.jsonl lacks the records' fields:\n%s", js)
	}
	trace, _ := os.ReadFile(filepath.Join(dir, "WATrace.log"))
	if !strings.Contains(string(trace), "DoManagement GET_AGENT_COMMANDS: 1 command(s)") || !strings.Contains(string(trace), "Relayed FLUSH_ALL") {
		t.Errorf("WATrace.log:\n%s", trace)
	}
}

func TestServiceDropsRecordsWithLogFileOff(t *testing.T) {
	dir := t.TempDir()
	aco := testACO()
	aco.LogFile = false
	sink := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp"})
	if err := sink.Open(SinkConfig{Dir: dir, ACO: aco}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	reg := NewRegistry(RegistryOptions{})
	l := serve(t, NewService(ServiceConfig{Registry: reg, Records: sink}))
	ctx := context.Background()
	s, err := l.Log(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Send(ipc.LogRecord{Message: "x", PID: 1}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := s.CloseAndSummary()
	if err != nil || sum.Received != 2 || sum.Dropped != 2 {
		t.Fatalf("summary %+v, %v: want 2 received, 2 dropped", sum, err)
	}
}

// Status carries the LLAWP's ACO once it has one, for Apache children
// that take it from the LLAWP (--aco-from-llawp), and the pid of every
// registered worker, each an httpd child of its own.
func TestServiceStatusACOAndWorkers(t *testing.T) {
	sink := NewSink(SinkOptions{Proc: "LLAWP.exe", Role: "llawp", PID: 4242})
	reg := NewRegistry(RegistryOptions{})
	svc := NewService(ServiceConfig{Registry: reg, Records: sink, Log: sink.Logger(), PID: 4242})
	l := serve(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := l.Status(ctx)
	if err != nil || st.ACO != nil {
		t.Fatalf("Status before the HCO phase: ACO %v, err %v; want none", st.ACO, err)
	}
	aco := conf.DefaultACO()
	aco.Name, aco.DefaultAgentName = "aco.wa1", "wa1"
	svc.SetAgent(AgentInfo{AgentName: "wa1", ACO: &aco})
	for _, pid := range []int{101, 102} {
		if _, err := l.Register(ctx, ipc.Worker{PID: pid, Name: "httpd", Role: "hla"}); err != nil {
			t.Fatal(err)
		}
	}
	if st, err = l.Status(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := conf.ACOFromProto(st.ACO)
	if err != nil || got.Name != "aco.wa1" || got.DefaultAgentName != "wa1" {
		t.Errorf("ACO from Status %+v (%v), want aco.wa1 for agent wa1", got, err)
	}
	if len(st.Workers) != 2 || st.Workers[0].PID != 101 || st.Workers[1].PID != 102 {
		t.Errorf("workers %+v, want pids 101 and 102", st.Workers)
	}
}
