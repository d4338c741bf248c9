package llawp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/pool"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/startup"
	"github.com/agentlab/agentlab/trace"
)

// DefaultProcName is the LLAWP's name in logs, as the vendor's process is
// called on IIS.
const DefaultProcName = procname.IISLLAWP

// Config is one LLAWP process: what cmd/llawp's flags and environment say.
type Config struct {
	// WebAgent is the web server instance's WebAgent.conf, which names
	// SmHost.conf.
	WebAgent string
	// Out is the folder for the agent log and trace log (WA.log,
	// WATrace.log); "" is the working folder.
	Out string
	// Recorder records the LLAWP's sockets and resolves the lab's host
	// names; nil records nothing. Run does not close it.
	Recorder *trace.Recorder
	// Dialer sets the web server host's source address (trace.LocalDialer).
	Dialer *net.Dialer
	// HostID unseals SmHost.conf's shared secret (conf.HostIdentity).
	HostID string
	// Poll is the DoManagement period; 0 takes the ACO's PSPollInterval.
	Poll time.Duration
	// HealthPoll is how often the LLAWP's pool retries the Policy Servers
	// that are down (pool.Config.HealthPollInterval): 0 means the pool's
	// default, a negative value never.
	HealthPoll time.Duration
	// Linger is how long to stay up with no worker registered; 0 means
	// DefaultLinger, a negative value forever.
	Linger time.Duration
	// ProcName names the process in its logs; "" means DefaultProcName.
	ProcName string
	// AgentName is the agent DoManagement asks for; "" takes the ACO's
	// DefaultAgentName.
	AgentName string
	// AgentTrace writes the trace log even if the ACO's TraceFile is off.
	AgentTrace bool
	// Metrics, when set, is the loopback host:port (port 0: any) the
	// LLAWP serves its pool's /metrics on; Status gives the address.
	Metrics string
	// Debug logs at debug level rather than info. (A bool and not a
	// zerolog.Level: the zero Level is debug.)
	Debug bool
	// Stderr receives the LLAWP's own records at warn and above: the way
	// to the owner's log (see SinkOptions.Stderr); nil for none.
	Stderr io.Writer
	// OwnerPID is the HLA that launched this process (ipc.OwnerPID); 0
	// when unknown, and the parent at start is watched instead.
	OwnerPID int
	// Serve builds what hands svc to the workers; nil means go-plugin's
	// side (ipc.NewServer), which works only in a process an owner
	// launched. Tests give one of their own.
	Serve func(svc *Service, log zerolog.Logger) Server
}

// Server hands the Service to the workers: ipc.Server.
type Server interface {
	// Serve returns nil after Stop, ipc.ErrOwnerShutdown when the owner
	// stopped the LLAWP, or why it could not serve.
	Serve() error
	Stop()
}

// LoggedError is an error that Run has already written to the agent log
// (and at error level, to Config.Stderr): the caller need not tell it
// again. Run's other errors, from reading the configuration, come before
// there is a log to write them to.
type LoggedError struct{ Err error }

func (e *LoggedError) Error() string { return e.Err.Error() }
func (e *LoggedError) Unwrap() error { return e.Err }

var errIdle = errors.New("no worker registered")

// stopped is ctx's end, as the reason the LLAWP leaves.
type stopped struct{ cause error }

func (s stopped) Error() string { return s.cause.Error() }
func (s stopped) Unwrap() error { return s.cause }

// Run is the LLAWP from start to exit: it serves the workers at once, so
// that the owner's Launch does not wait for the Policy Servers; meanwhile
// it bootstraps and opens its own HCO sockets (the seed's second round),
// opens the agent log once the ACO names it, then polls DoManagement and
// relays the commands to the registered workers.
//
// It returns nil when ctx ends (its cause, if any, is logged as the
// reason), when the owner shuts it down, when the owner dies
// (ErrOwnerGone, also as ctx's cause) and when no worker has been
// registered for the linger time. Other errors are *LoggedError, except
// those of reading WebAgent.conf and SmHost.conf.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ProcName == "" {
		cfg.ProcName = DefaultProcName
	}
	if cfg.Serve == nil {
		cfg.Serve = func(svc *Service, log zerolog.Logger) Server { return ipc.NewServer(svc, log) }
	}
	// Configuration errors surface before the handshake: Launch then fails
	// with this process's message rather than a timeout.
	files, err := startup.ReadFiles(cfg.WebAgent)
	if err != nil {
		return err
	}
	level := zerolog.InfoLevel
	if cfg.Debug {
		level = zerolog.DebugLevel
	}

	sink := NewSink(SinkOptions{Proc: cfg.ProcName, Role: "llawp", Stderr: cfg.Stderr, Level: level})
	log, tr := sink.Logger(), sink.Tracer()
	defer func() {
		if !sink.IsOpen() {
			// Startup failed before the ACO named the files: the defaults
			// still give the reason a WA.log.
			_ = sink.Open(SinkConfig{Dir: cfg.Out, ACO: conf.DefaultACO()})
		}
		sink.Close()
	}()

	lingerer := NewLinger(cfg.Linger)
	reg := NewRegistry(RegistryOptions{OnCount: lingerer.SetWorkers})
	svc := NewService(ServiceConfig{Registry: reg, Records: sink, Log: log})
	srv := cfg.Serve(svc, log)

	// ppid is the kernel's word for who started this process; owner_pid is
	// what the owner said it was: a reader can check one against the other.
	log.Info().Int("owner_pid", cfg.OwnerPID).Int("ppid", os.Getppid()).Str("webagent", cfg.WebAgent).
		Msgf("%s starting for trusted host '%s'.", cfg.ProcName, files.SmHost.HostName)

	a := &round{cfg: cfg, files: files, sink: sink, log: log, trace: tr, reg: reg, svc: svc}

	// The actors end on each other's interrupt, not on ctx: the first to
	// return is the reason logged, and ctx's end must not reach them as
	// their own context.Canceled before it reaches the group as the cause.
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var g run.Group
	g.Add(srv.Serve, func(error) {
		// Watch streams end cleanly before the server drops the rest.
		reg.Close()
		srv.Stop()
	})
	{
		ctx, cancel := context.WithCancel(inner)
		g.Add(func() error { return a.run(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(inner)
		g.Add(func() error {
			if err := lingerer.Wait(ctx); err != nil {
				return err
			}
			return fmt.Errorf("%w for %v", errIdle, lingerer.Delay())
		}, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(inner)
		g.Add(func() error { return OwnerWatch{PID: cfg.OwnerPID}.Run(ctx) }, func(error) { cancel() })
	}
	{
		done := make(chan struct{})
		g.Add(func() error {
			select {
			case <-ctx.Done():
				return stopped{context.Cause(ctx)}
			case <-done:
				return nil
			}
		}, func(error) { close(done) })
	}

	err = g.Run()
	lingerer.Close()
	switch {
	case errors.Is(err, ErrOwnerGone):
		log.Warn().Msgf("%s exiting: %v.", cfg.ProcName, err)
		return nil
	case errors.Is(err, ipc.ErrOwnerShutdown), errors.Is(err, errIdle), errors.As(err, new(stopped)):
		log.Info().Msgf("%s exiting: %v.", cfg.ProcName, err)
		return nil
	}
	log.Error().Msgf("%s exiting: %v", cfg.ProcName, err)
	return &LoggedError{err}
}

// round is the LLAWP's own agent round: bootstrap, HCO, ACO
// (startup.Start), then polling.
type round struct {
	cfg        Config
	files      startup.Files
	sink       *Sink
	log, trace zerolog.Logger
	reg        *Registry
	svc        *Service
}

func (a *round) run(ctx context.Context) error {
	err := a.start(ctx)
	if err != nil {
		a.svc.SetPhase(ipc.PhaseFailed)
	}
	return err
}

func (a *round) start(ctx context.Context) error {
	sm, cfg := a.files.SmHost, a.cfg
	a.trace.Info().Str("smhost", sm.File.Path()).Str("hco", sm.HostConfigObject).Str("aco", a.files.WebAgent.AgentConfigObject).
		Msgf("Agent startup: bootstrap of trusted host '%s'", sm.HostName)
	ag, err := startup.Start(ctx, startup.Config{
		Files: a.files, HostID: cfg.HostID, Recorder: cfg.Recorder, Dialer: cfg.Dialer, Log: a.log,
		Role: "llawp", HealthPoll: cfg.HealthPoll,
		Bootstrapped: func(res *bootstrap.Result) {
			for _, skipped := range res.Skipped {
				a.log.Warn().Msgf("Bootstrap policy server skipped: %v", skipped)
				a.trace.Warn().Msgf("Bootstrap: skipped %v", skipped)
			}
			a.trace.Info().Msgf("Bootstrap: %s gave host configuration object %s; connection reset", res.Server.Addr(), res.HCO.Name)
			LogHCO(a.log, sm.HostName, res.HCO)
		},
	})
	if err != nil {
		return err
	}
	p, aco, res := ag.Pool, ag.ACO, ag.Bootstrap
	defer p.Close()
	var servers []string
	for _, s := range p.Stats().Servers {
		servers = append(servers, s.Addr)
		a.trace.Info().Int("sockets", s.Open).Str("state", s.State.String()).Msgf("HCO: policy server %s", s.Addr)
	}
	a.trace.Info().Msgf("HCO: agent configuration object %s received", aco.Name)
	var metricsAddr string
	if cfg.Metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(pool.NewCollector(func() []*pool.Pool { return []*pool.Pool{p} }))
		addr, err := metrics.Serve(ctx, cfg.Metrics, reg)
		if err != nil {
			return err
		}
		metricsAddr = addr.String()
		a.log.Info().Str("metrics", metricsAddr).Msgf("Metrics of the agent's sockets on http://%s/metrics", metricsAddr)
	}

	if cfg.AgentTrace {
		aco.TraceFile = true
	}
	if err := a.sink.Open(SinkConfig{Dir: cfg.Out, ACO: aco}); err != nil {
		return err
	}
	name := cfg.AgentName
	if name == "" {
		name = aco.DefaultAgentName
	}
	interval := cfg.Poll
	if interval == 0 {
		interval = aco.PSPollInterval.D()
	}
	poller := &Poller{
		// The pool's bound, not RequestTimeout: a poll that times out on
		// one server goes on to the next.
		Client: p, AgentName: name, Interval: interval, Timeout: p.CallTimeout(),
		Relay: a.reg.Publish, Log: a.log, Trace: a.trace,
	}
	a.svc.SetAgent(AgentInfo{
		AgentName: name, TrustedHost: sm.HostName, BootstrapServer: res.Server.Addr(), HCOServers: servers, ACO: &aco,
		MetricsAddr: metricsAddr,
	})
	a.svc.SetPoller(poller)
	a.svc.SetPhase(ipc.PhaseReady)
	a.log.Info().Msgf("%s ready: agent '%s', management poll every %v over %s.", cfg.ProcName, name, interval, strings.Join(servers, ", "))
	return poller.Run(ctx)
}
