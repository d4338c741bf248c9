package hla

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/startup"
	"github.com/agentlab/agentlab/trace"
)

// LLAWPConfig says how a worker starts its LLAWP.
type LLAWPConfig struct {
	// Name is the LLAWP's process name (its --proc-name) and argv[0]:
	// procname.IISLLAWP or procname.ApacheLLAWP; "" means IISLLAWP.
	Name   string
	Path   string   // the llawp binary
	Args   []string // its flags (WebAgent.conf, folders, hosts, poll)
	Env    []string
	Stderr io.Writer
	// MinBackoff and MaxBackoff bound the wait before a dead LLAWP is
	// started again; 0 means 1 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
}

func (c LLAWPConfig) name() string {
	if c.Name == "" {
		return procname.IISLLAWP
	}
	return c.Name
}

// backoff is MinBackoff and MaxBackoff with their defaults.
func (c LLAWPConfig) backoff() (minB, maxB time.Duration) {
	minB, maxB = c.MinBackoff, c.MaxBackoff
	if minB <= 0 {
		minB = time.Second
	}
	if maxB <= 0 {
		maxB = 30 * time.Second
	}
	return minB, maxB
}

// ProcessConfig is one web worker process: the IIS model's w3wp.exe, or
// one httpd child of the Apache model. Each bootstraps, builds its own
// socket pool and serves HTTP through the agent; how it reaches its LLAWP
// is the model's business (RunIIS owns one, RunApacheChild attaches).
type ProcessConfig struct {
	WebAgent string // path to WebAgent.conf
	Listen   string // HTTP address, e.g. 127.0.0.11:8080
	// Listener, when set, is used instead of Listen (tests, and the Apache
	// model's shared socket).
	Listener net.Listener
	HostID   string
	Recorder *trace.Recorder
	Dialer   *net.Dialer
	ProcName string
	// Role names the process in its LLAWP registration and SetAgentInfo;
	// "" means "hla".
	Role string
	Log  zerolog.Logger
	// Forwarder receives the worker's log records for the LLAWP's WA.log;
	// Log should already write into it.
	Forwarder *ipc.LogForwarder
	LLAWP     LLAWPConfig
	// HealthPoll is how often the worker's pool retries the Policy
	// Servers that are down (pool.Config.HealthPollInterval): 0 means
	// the pool's default, a negative value never.
	HealthPoll time.Duration
	// Upstream is the application behind the agent; nil: the built-in site.
	Upstream *url.URL
	// Ready is called with the HTTP address once the worker serves.
	Ready func(addr string)

	// The Apache model's children only.

	// ACOFromLLAWP takes the ACO from the LLAWP's Status rather than
	// asking a Policy Server (pool.Config.SkipACO).
	ACOFromLLAWP bool
	// Prefork serves one connection, and one request, at a time, like an
	// Apache prefork child.
	Prefork bool
	// MaxRequests, when positive, ends the worker (nil error) once it has
	// served that many HTTP requests: Apache's MaxConnectionsPerChild.
	MaxRequests int
	// HCODone is called once the worker is through its HCO phase (its
	// pool is open), before it waits for anything from its LLAWP.
	HCODone func()
	// Recycling is called when the worker has served MaxRequests and
	// starts to drain.
	Recycling func()
	// Notify passes the worker's own news (its LLAWP died, a new one
	// started) to its parent, which tells whoever started the web server;
	// nil tells nobody.
	Notify func(notice.Notice)
}

func (cfg *ProcessConfig) role() string {
	if cfg.Role == "" {
		return "hla"
	}
	return cfg.Role
}

// llawpLink is how a worker reaches its LLAWP.
type llawpLink interface {
	// aco is the LLAWP's ACO, for ACOFromLLAWP.
	aco(ctx context.Context) (conf.ACO, error)
	// run keeps the worker registered and watching until ctx ends,
	// applying management events to w's agent and reporting its sockets;
	// it closes linked (if not nil) once the worker first watches.
	run(ctx context.Context, w worker, linked chan<- struct{})
	// status is the LLAWP's Status.
	status(ctx context.Context) (ipc.Status, error)
}

// RunIIS runs the IIS model's worker until ctx ends: the first round of the
// seed's capture (bootstrap, then the HCO phase), then the LLAWP it spawns,
// which does the second round on its own. Authorization never waits for
// the LLAWP once the worker serves: if it dies, the worker logs it, goes
// on serving, and starts a new one.
func RunIIS(ctx context.Context, cfg ProcessConfig) error {
	if cfg.ACOFromLLAWP {
		return errors.New("the IIS model's worker takes its ACO from the Policy Server: --aco-from-llawp is for the Apache model")
	}
	return runWorker(ctx, cfg, &supervisor{cfg: cfg, log: cfg.Log})
}

// runWorker is one web worker process from bootstrap to exit. It holds
// Ready until its LLAWP is through its own HCO phase, for at most
// WebAgent.conf's AgentWaitTime, as the vendor's worker waits for its
// LLAWP: the seed's capture then shows both start-up rounds before the
// first page load, and a management command queued once the web server
// says it serves reaches this worker too.
func runWorker(ctx context.Context, cfg ProcessConfig, link llawpLink) error {
	log := cfg.Log
	files, err := startup.ReadFiles(cfg.WebAgent)
	if err != nil {
		return err
	}
	linkWait := time.Duration(files.WebAgent.AgentWaitTime)
	ag, err := startup.Start(ctx, startup.Config{
		Files: files, HostID: cfg.HostID, Recorder: cfg.Recorder, Dialer: cfg.Dialer, Log: log,
		Role: cfg.role(), Process: cfg.ProcName, SkipACO: cfg.ACOFromLLAWP, HealthPoll: cfg.HealthPoll,
		Bootstrapped: func(boot *bootstrap.Result) {
			log.Info().Str("server", boot.Server.Addr()).Str("hco", boot.HCO.Name).
				Msgf("Bootstrap: host configuration object '%s' received from policy server %s; bootstrap connection reset.", boot.HCO.Name, boot.Server.Addr())
		},
	})
	if err != nil {
		return err
	}
	p, aco := ag.Pool, ag.ACO
	defer p.Close()
	if cfg.HCODone != nil {
		cfg.HCODone()
	}
	if cfg.ACOFromLLAWP {
		if aco, err = link.aco(ctx); err != nil {
			return err
		}
		log.Info().Str("aco", aco.Name).Msg("Agent configuration object taken from the LLAWP")
	}

	var next http.Handler = NewSite()
	if cfg.Upstream != nil {
		if next, err = NewUpstream(cfg.Upstream); err != nil {
			return err
		}
	}
	// The pool's bound, not RequestTimeout: a request that times out on
	// one server goes on to the next, with a RequestTimeout of its own.
	agent, err := NewAgent(Config{Client: p, AgentName: aco.DefaultAgentName, ACO: aco, Next: next, Log: log,
		RequestTimeout: p.CallTimeout()})
	if err != nil {
		return err
	}

	l := cfg.Listener
	if l == nil {
		if l, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen for HTTP on %s: %w", cfg.Listen, err)
		}
	}
	recycle := make(chan struct{})
	side := worker{agent: agent, sockets: poolSockets(p)}
	var handler http.Handler = agent
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second}
	if cfg.Prefork {
		l = newPreforkListener(l)
		handler = serialize(handler)
		// Apache's KeepAliveTimeout: a prefork child held by an idle
		// browser serves nobody else.
		srv.IdleTimeout = 5 * time.Second
	}
	if cfg.MaxRequests > 0 {
		handler = countRequests(handler, cfg.MaxRequests, func() { close(recycle) })
	}
	// Outside the count: the lab asking for the LLAWP's status must not
	// recycle a child.
	srv.Handler = statusHandler(cfg.ProcName, side.sockets, link, handler)
	conns := &connCounter{}
	srv.ConnState = conns.track
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()

	var wg sync.WaitGroup
	sctx, stopLink := context.WithCancel(ctx)
	linked := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); link.run(sctx, side, linked) }()
	if linkWait > 0 {
		select {
		case <-linked:
		case <-time.After(linkWait):
			log.Warn().Dur("waited", linkWait).Msg("AgentWaitTime is over and the LLAWP is not up yet: serving without it; management commands until then are not seen")
		case err := <-serveErr:
			// Never report ready for a server that has already failed.
			stopLink()
			wg.Wait()
			return fmt.Errorf("HTTP server on %s: %w", l.Addr(), err)
		case <-ctx.Done():
		}
	}
	if cfg.Ready != nil && ctx.Err() == nil {
		cfg.Ready(l.Addr().String())
	}

	recycled := false
	select {
	case <-ctx.Done():
		err = nil
	case <-recycle:
		log.Info().Int("max_requests", cfg.MaxRequests).Msg("Served MaxRequestsPerChild requests: finishing the requests in flight, then exiting")
		if cfg.Recycling != nil {
			cfg.Recycling()
		}
		recycled = true
	case err = <-serveErr:
		err = fmt.Errorf("HTTP server on %s: %w", l.Addr(), err)
	}
	if recycled {
		drain(ctx, srv, l, serveErr, conns, drainGrace)
	} else {
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainGrace)
		if srv.Shutdown(shutCtx) != nil {
			// Requests still running after the grace must not outlive the
			// pool that the deferred Close is about to shut under them.
			srv.Close()
		}
		cancel()
	}
	stopLink()
	wg.Wait()
	return err
}

// supervisor keeps one LLAWP running for the worker: it launches it,
// registers, applies its management events to the agent's caches, forwards
// log records, and starts a new one (with backoff) when it dies.
type supervisor struct {
	cfg    ProcessConfig
	worker worker
	log    zerolog.Logger

	linkedOnce sync.Once

	mu    sync.Mutex
	llawp ipc.LLAWP // the one running, nil between two
}

func (s *supervisor) status(ctx context.Context) (ipc.Status, error) {
	s.mu.Lock()
	l := s.llawp
	s.mu.Unlock()
	if l == nil {
		return ipc.Status{}, errors.New("no LLAWP running: it is being started again")
	}
	return l.Status(ctx)
}

func (s *supervisor) aco(context.Context) (conf.ACO, error) {
	return conf.ACO{}, errors.New("the IIS model's worker takes its ACO from the Policy Server")
}

func (s *supervisor) run(ctx context.Context, w worker, linked chan<- struct{}) {
	s.worker = w
	minB, maxB := s.cfg.LLAWP.backoff()
	backoff := minB
	for again := false; ctx.Err() == nil; again = true {
		started := time.Now()
		o, err := s.once(ctx, again, linked)
		if ctx.Err() != nil {
			s.exited(o, false, "stopped with its worker")
			return
		}
		if time.Since(started) > maxB {
			backoff = minB
		}
		s.log.Error().Err(err).Dur("restart_in", backoff).Msg("LLAWP is gone; authorization goes on, a new LLAWP will be started")
		s.exited(o, true, fmt.Sprintf("%s (pid %d) goes on serving and starts a new LLAWP in %s", s.cfg.ProcName, os.Getpid(), backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxB)
	}
}

// exited records the end of an LLAWP this worker launched, and tells a
// death to the worker's parent; o is nil when none was launched.
func (s *supervisor) exited(o *ipc.Owner, death bool, action string) {
	if o == nil {
		return
	}
	proc := llawpProcess(o, s.cfg.LLAWP.name(), s.cfg.ProcName)
	proc.Exit = trace.ExitOf(o.ExitState())
	if proc.Exit == nil {
		proc.Exit = &trace.Exit{Code: -1}
	}
	proc.Exit.Death, proc.Exit.Action = death, action
	s.cfg.Recorder.ProcessExit(proc)
	if death && s.cfg.Notify != nil {
		s.cfg.Notify(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Exited, Process: &proc})
	}
}

// once runs one LLAWP from launch to exit (or to ctx's end, when it stops
// it), and returns it, stopped, with why it ended; nil when the launch
// failed. again says it replaces one that died. It closes linked once
// this LLAWP is through its HCO phase.
func (s *supervisor) once(ctx context.Context, again bool, linked chan<- struct{}) (*ipc.Owner, error) {
	o, err := ipc.Launch(ctx, ipc.LaunchConfig{
		Path: s.cfg.LLAWP.Path, Name: s.cfg.LLAWP.name(), Args: s.cfg.LLAWP.Args, Env: s.cfg.LLAWP.Env,
		Stderr: s.cfg.LLAWP.Stderr, Logger: s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("launch LLAWP: %w", err)
	}
	defer o.Kill()
	s.log.Info().Int("llawp_pid", o.PID()).Msg("LLAWP started")
	proc := llawpProcess(o, s.cfg.LLAWP.name(), s.cfg.ProcName)
	s.cfg.Recorder.ProcessCreate(proc)
	if again && s.cfg.Notify != nil {
		s.cfg.Notify(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Started, Process: &proc})
	}
	return o, s.serve(ctx, o, linked)
}

// serve keeps the worker registered with the LLAWP o and applies its
// management events, until it exits or ctx ends.
func (s *supervisor) serve(ctx context.Context, o *ipc.Owner, linked chan<- struct{}) error {
	l := o.LLAWP()
	s.mu.Lock()
	s.llawp = l
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.llawp = nil
		s.mu.Unlock()
	}()
	id, err := register(ctx, l, ipc.Worker{PID: os.Getpid(), Name: s.cfg.ProcName, Role: s.cfg.role()})
	if err != nil {
		return fmt.Errorf("register with the LLAWP: %w", err)
	}
	if s.cfg.Forwarder != nil {
		s.cfg.Forwarder.SetWorker(id)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The forwarder stops on cancel; wait for it before the LLAWP is killed.
	defer func() { cancel(); wg.Wait() }()
	events, err := l.Watch(wctx, id)
	if err != nil {
		return fmt.Errorf("watch the LLAWP: %w", err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); awaitLLAWP(wctx, l, &s.linkedOnce, linked) }()
	wg.Add(1)
	go func() { defer wg.Done(); reportSockets(wctx, l, id, s.worker.sockets, s.log) }()
	if s.cfg.Forwarder != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.cfg.Forwarder.Forward(wctx, l); err != nil && wctx.Err() == nil {
				s.log.Warn().Err(err).Msg("Log stream to the LLAWP broke; records are kept until it is back")
			}
		}()
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				select {
				case <-o.Exited():
					return errors.New("the LLAWP exited")
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
					return errors.New("the LLAWP closed its event stream")
				}
			}
			applyEvent(s.log, s.worker.agent, ev)
		case <-o.Exited():
			return fmt.Errorf("the LLAWP (pid %d) exited", o.PID())
		case <-ctx.Done():
			uctx, c := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			l.Unregister(uctx, id)
			c()
			cancel()
			return ctx.Err()
		}
	}
}

// awaitLLAWP closes linked once the LLAWP is through its own bootstrap
// and HCO phase (ready, or failed: then there is nothing to wait for), or
// when ctx ends. The worker holds its readiness until then, up to
// AgentWaitTime.
func awaitLLAWP(ctx context.Context, l ipc.LLAWP, once *sync.Once, linked chan<- struct{}) {
	if linked == nil {
		return
	}
	t := time.NewTicker(llawpPhasePoll)
	defer t.Stop()
	for {
		if st, err := l.Status(ctx); err == nil && st.Phase != ipc.PhaseStarting {
			once.Do(func() { close(linked) })
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// llawpPhasePoll is how often a starting worker asks its LLAWP whether it
// is through its HCO phase: a few milliseconds of its start-up, which
// takes tens.
const llawpPhasePoll = 10 * time.Millisecond

// applyEvent is a worker's handling of one relayed management command; the
// log line is how a learner (and the e2e tests) see that it arrived.
func applyEvent(log zerolog.Logger, agent *Agent, ev ipc.ManagementEvent) {
	log.Info().Uint32("code", ev.Code).Str("command", ev.Name).Str("arg", ev.Arg).Msg("Management command from the LLAWP")
	agent.Apply(ManagementEvent{Code: int(ev.Code), Name: ev.Name, Arg: ev.Arg})
}

// registerTimeout bounds Register: an LLAWP that is alive but does not
// answer (stopped, wedged) must count as gone, so that it is replaced.
const registerTimeout = 10 * time.Second

func register(ctx context.Context, l ipc.LLAWP, w ipc.Worker) (ipc.WorkerID, error) {
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	return l.Register(rctx, w)
}
