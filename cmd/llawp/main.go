// Command llawp is the low-level agent worker process (LLAWP.exe). The HLA
// starts it through hashicorp/go-plugin (ipc.Launch); it is never run by
// hand. It bootstraps and opens its own HCO sockets (the seed's second
// round), writes the agent log and trace log, polls DoManagement and relays
// the commands to the registered workers, and exits when its owner stops
// it, dies, or leaves it without workers for the linger time.
//
// Its standard output belongs to go-plugin's handshake: nothing here
// prints to it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/llawp"
	"github.com/agentlab/agentlab/pool"
	"github.com/agentlab/agentlab/trace"
)

func main() {
	if !ipc.LaunchedByOwner() {
		fmt.Fprintln(os.Stderr, ipc.NotLaunchedMessage)
		os.Exit(1)
	}
	// Standard error leads to the owner, which may die first: a write
	// there must fail, not kill the LLAWP with SIGPIPE before it has said
	// why it leaves.
	signal.Ignore(syscall.SIGPIPE)
	// go-plugin's Serve swaps os.Stderr for a pipe of its own; the real one
	// is what the owner reads and parses as hclog JSON lines.
	stderr := ipc.PluginStderr(os.Stderr)
	if err := mainErr(os.Args[1:], stderr); err != nil {
		if !errors.As(err, new(logged)) {
			l := zerolog.New(stderr).With().Timestamp().Str("proc", "LLAWP.exe").Int("pid", os.Getpid()).Logger()
			l.Error().Msg(err.Error())
		}
		os.Exit(1)
	}
}

var errIdle = errors.New("no worker registered")

// logged is an error the agent log (and through it the owner's) has
// already told.
type logged struct{ error }

func mainErr(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("llawp", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	webAgent := fs.String("webagent", "", "WebAgent.conf of this web server instance (required)")
	out := fs.String("out", ".", "folder for the agent log and trace log (WA.log, WATrace.log)")
	traceDir := fs.String("trace", "", "folder for this process's socket trace")
	payload := fs.Bool("trace-payload", false, "keep the bytes of each send and receive in the socket trace")
	hostsFile := fs.String("hosts", "", "the lab's hosts file: resolves and names the lab's hosts")
	source := fs.String("source", "", "local IP address to connect from (the web server host's lab address)")
	poll := fs.Duration("poll", 0, "DoManagement poll period; 0 takes the ACO's PSPollInterval")
	linger := fs.Duration("linger", llawp.DefaultLinger, "how long to stay up with no worker registered; negative: forever")
	procName := fs.String("proc-name", "LLAWP.exe", "process name in logs and traces")
	agentName := fs.String("agent-name", "", "agent name for DoManagement; empty takes the ACO's DefaultAgentName")
	agentTrace := fs.Bool("agent-trace", false, "write the trace log (WATrace.log) even if the ACO's TraceFile is off")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *webAgent == "" {
		return errors.New("--webagent is required")
	}
	if *poll < 0 {
		return fmt.Errorf("--poll %v must not be negative", *poll)
	}

	// Configuration errors surface before the handshake: Launch then fails
	// with this process's message rather than a timeout.
	wa, err := conf.ReadWebAgent(*webAgent)
	if err != nil {
		return err
	}
	sm, err := conf.ReadSmHost(wa.HostConfigFile)
	if err != nil {
		return err
	}
	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	var hosts *trace.Hosts
	if *hostsFile != "" {
		if hosts, err = trace.LoadHosts(*hostsFile); err != nil {
			return err
		}
	}
	dialer, err := sourceDialer(*source)
	if err != nil {
		return err
	}
	level := zerolog.InfoLevel
	if *debug {
		level = zerolog.DebugLevel
	}

	sink := llawp.NewSink(llawp.SinkOptions{Proc: *procName, Role: "llawp", Stderr: stderr, Level: level})
	log, tr := sink.Logger(), sink.Tracer()
	defer func() {
		if !sink.IsOpen() {
			// Startup failed before the ACO named the files: the defaults
			// still give the reason a WA.log.
			_ = sink.Open(llawp.SinkConfig{Dir: *out, ACO: conf.DefaultACO()})
		}
		sink.Close()
	}()

	topts := trace.Options{Proc: *procName, Role: "llawp", Host: hosts.Name(*source), Hosts: hosts, Payload: *payload}
	var rec *trace.Recorder
	if *traceDir != "" {
		if rec, err = trace.Create(*traceDir, topts); err != nil {
			return err
		}
	} else {
		// Records nothing, but still resolves the lab's host names.
		rec = trace.NewRecorder(nil, topts)
	}
	defer rec.Close()

	lingerer := llawp.NewLinger(*linger)
	reg := llawp.NewRegistry(llawp.RegistryOptions{OnCount: lingerer.SetWorkers})
	svc := llawp.NewService(llawp.ServiceConfig{Registry: reg, Records: sink, Log: log})
	srv := ipc.NewServer(svc, log)

	log.Info().Int("owner_pid", ipc.OwnerPID()).Str("webagent", *webAgent).
		Msgf("%s starting for trusted host '%s'.", *procName, sm.HostName)

	a := &agent{
		wa: wa, sm: sm, hostID: hostID, rec: rec, dialer: dialer,
		sink: sink, log: log, trace: tr, reg: reg, svc: svc,
		out: *out, poll: *poll, agentName: *agentName, agentTrace: *agentTrace, procName: *procName,
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g run.Group
	g.Add(srv.Serve, func(error) {
		// Watch streams end cleanly before the server drops the rest.
		reg.Close()
		srv.Stop()
	})
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return a.run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			if err := lingerer.Wait(ctx); err != nil {
				return err
			}
			return fmt.Errorf("%w for %v", errIdle, lingerer.Delay())
		}, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return llawp.OwnerWatch{PID: ipc.OwnerPID()}.Run(ctx) }, func(error) { cancel() })
	}
	// SIGTERM only: go-plugin makes the plugin ignore SIGINT, because a
	// Ctrl-C reaches the whole process group and the owner decides when
	// its LLAWP stops.
	g.Add(run.SignalHandler(ctx, syscall.SIGTERM))
	// The handler above stops listening after the first SIGTERM, and the
	// owner's death can send several (Pdeathsig fires as each of its
	// threads exits): without a listener for good, the second would kill
	// the LLAWP before it closes its sockets and logs why.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM)

	err = g.Run()
	lingerer.Close()
	if errors.Is(err, run.ErrSignal) && ownerDying(ipc.OwnerPID()) {
		// The SIGTERM came from Pdeathsig: say what it means.
		err = fmt.Errorf("%w (pid %d): %v", llawp.ErrOwnerGone, ipc.OwnerPID(), err)
	}
	switch {
	case errors.Is(err, ipc.ErrOwnerShutdown), errors.Is(err, errIdle), errors.Is(err, run.ErrSignal):
		log.Info().Msgf("%s exiting: %v.", *procName, err)
		return nil
	case errors.Is(err, llawp.ErrOwnerGone):
		log.Warn().Msgf("%s exiting: %v.", *procName, err)
		return nil
	}
	log.Error().Msgf("%s exiting: %v", *procName, err)
	return logged{err}
}

// agent is the LLAWP's own agent round: bootstrap, HCO, ACO, then polling.
type agent struct {
	wa                  *conf.WebAgent
	sm                  *conf.SmHost
	hostID              string
	rec                 *trace.Recorder
	dialer              *net.Dialer
	sink                *llawp.Sink
	log, trace          zerolog.Logger
	reg                 *llawp.Registry
	svc                 *llawp.Service
	out                 string
	poll                time.Duration
	agentName, procName string
	agentTrace          bool
}

func (a *agent) run(ctx context.Context) error {
	err := a.start(ctx)
	if err != nil {
		a.svc.SetPhase(llawp.PhaseFailed)
	}
	return err
}

func (a *agent) start(ctx context.Context) error {
	sm := a.sm
	a.trace.Info().Str("smhost", sm.File.Path()).Str("hco", sm.HostConfigObject).Str("aco", a.wa.AgentConfigObject).
		Msgf("Agent startup: bootstrap of trusted host '%s'", sm.HostName)
	res, err := bootstrap.Run(ctx, bootstrap.Config{SmHost: sm, HostID: a.hostID, Recorder: a.rec, Dialer: a.dialer})
	if err != nil {
		return err // it names every server tried
	}
	for _, skipped := range res.Skipped {
		a.log.Warn().Msgf("Bootstrap policy server skipped: %v", skipped)
		a.trace.Warn().Msgf("Bootstrap: skipped %v", skipped)
	}
	a.trace.Info().Msgf("Bootstrap: %s gave host configuration object %s; connection reset", res.Server.Addr(), res.HCO.Name)
	llawp.LogHCO(a.log, sm.HostName, res.HCO)

	info := pool.AgentInfo{
		AgentName: sm.HostName, PID: os.Getpid(), Role: "llawp",
		Info: fmt.Sprintf("Product=agentlab,Platform=%s,Version=0.1", runtime.GOOS),
	}
	p, aco, err := pool.Start(ctx, pool.Config{
		HCO: res.HCO, TrustedHost: sm.HostName, Secret: res.Secret, Recorder: a.rec, Dialer: a.dialer, Log: a.log,
	}, info, a.wa.AgentConfigObject)
	if err != nil {
		return err
	}
	defer p.Close()
	var servers []string
	for _, s := range p.Stats().Servers {
		servers = append(servers, s.Addr)
		a.trace.Info().Int("sockets", s.Open).Str("state", s.State.String()).Msgf("HCO: policy server %s", s.Addr)
	}
	a.trace.Info().Msgf("HCO: agent configuration object %s received", aco.Name)

	if a.agentTrace {
		aco.TraceFile = true
	}
	if err := a.sink.Open(llawp.SinkConfig{Dir: a.out, ACO: aco}); err != nil {
		return err
	}
	name := a.agentName
	if name == "" {
		name = aco.DefaultAgentName
	}
	interval := a.poll
	if interval == 0 {
		interval = aco.PSPollInterval.D()
	}
	poller := &llawp.Poller{
		Client: p, AgentName: name, Interval: interval, Timeout: res.HCO.RequestTimeout.D(),
		Relay: a.reg.Publish, Log: a.log, Trace: a.trace,
	}
	a.svc.SetAgent(llawp.AgentInfo{
		AgentName: name, TrustedHost: sm.HostName, BootstrapServer: res.Server.Addr(), HCOServers: servers,
	})
	a.svc.SetPoller(poller)
	a.svc.SetPhase(llawp.PhaseReady)
	a.log.Info().Msgf("%s ready: agent '%s', management poll every %v over %s.", a.procName, name, interval, strings.Join(servers, ", "))
	return poller.Run(ctx)
}

// ownerDying tells a SIGTERM from Pdeathsig from any other. Pdeathsig
// fires as the owner's forking thread exits, which can be a moment before
// the whole owner is gone and this process reparented: so it waits a
// little for getppid to change.
func ownerDying(owner int) bool {
	if owner == 0 {
		return false
	}
	for range 10 {
		if os.Getppid() != owner {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func sourceDialer(source string) (*net.Dialer, error) {
	d := &net.Dialer{}
	if source == "" {
		return d, nil
	}
	ip := net.ParseIP(source)
	if ip == nil {
		return nil, fmt.Errorf("--source %q is not an IP address", source)
	}
	d.LocalAddr = &net.TCPAddr{IP: ip}
	return d, nil
}
