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

	"github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/backoff"
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
	// metrics: the LLAWP serves /metrics (LLAWPOptions.Metrics), and its
	// owner announces the address (announceLLAWPMetrics).
	metrics bool
}

func (c LLAWPConfig) name() string {
	if c.Name == "" {
		return procname.IISLLAWP
	}
	return c.Name
}

// backoff is the wait before a new LLAWP: MinBackoff and MaxBackoff with
// their defaults.
func (c LLAWPConfig) backoff() *backoff.Backoff {
	b := &backoff.Backoff{Min: c.MinBackoff, Max: c.MaxBackoff}
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max <= 0 {
		b.Max = 30 * time.Second
	}
	return b
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
	// Metrics, when set, is the loopback host:port (port 0: any) the
	// worker serves its pool's /metrics on; MetricsReady is then called
	// with the address it listens on.
	Metrics      string
	MetricsReady func(addr string)
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
	if cfg.Metrics != "" {
		addr, err := serveWorkerMetrics(ctx, cfg.Metrics, p)
		if err != nil {
			return err
		}
		log.Info().Str("metrics", addr).Msgf("Metrics of the agent's sockets on http://%s/metrics", addr)
		if cfg.MetricsReady != nil {
			cfg.MetricsReady(addr)
		}
	}
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
	linked := make(chan struct{})

	// The worker's actors. run.Group interrupts every one, in the order
	// they are added, as soon as the first returns; an interrupt that
	// blocks holds back the ones after it, which is how the order below
	// is kept.
	var g run.Group
	{
		// HTTP server: serves the agent on the listener until interrupted.
		// Interrupted first, and its interrupt returns only once the
		// requests in flight are answered: drained when the worker
		// recycles, shut down otherwise. They still have the LLAWP link
		// (next) and the pool (closed when runWorker returns) under them.
		served := make(chan struct{})
		g.Add(func() error {
			err := srv.Serve(l)
			close(served)
			return fmt.Errorf("HTTP server on %s: %w", l.Addr(), err)
		}, func(err error) {
			if errors.Is(err, errRecycled) {
				drain(ctx, srv, l, served, conns, drainGrace)
				return
			}
			shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainGrace)
			defer cancel()
			if srv.Shutdown(shutCtx) != nil {
				// Requests still running after the grace must not outlive
				// the pool that the deferred Close is about to shut under
				// them.
				srv.Close()
			}
		})
	}
	{
		// LLAWP link: registers the worker with its LLAWP and applies the
		// management events it relays (in the IIS model it also launches
		// the LLAWP, and a new one when it dies), until ctx ends or it is
		// interrupted: after the HTTP server, so that a request in flight
		// still sees a cache flush.
		lctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			link.run(lctx, side, linked)
			return nil
		}, func(error) { cancel() })
	}
	{
		// Lifecycle: holds Ready until the LLAWP is linked (at most
		// AgentWaitTime), then waits for the end: ctx's (nil), or
		// MaxRequests served (errRecycled, which the HTTP server's
		// interrupt reads as "drain"). Interrupted when the HTTP server
		// fails: a worker whose server has failed never says it is ready.
		done := make(chan struct{})
		g.Add(func() error {
			return lifecycle(ctx, cfg, linkWait, linked, recycle, done, l.Addr().String())
		}, func(error) { close(done) })
	}
	if err := g.Run(); !errors.Is(err, errRecycled) {
		return err
	}
	return nil
}

// errRecycled ends a worker that has served MaxRequests.
var errRecycled = errors.New("served MaxRequestsPerChild requests")

// lifecycle is a worker's wait for its LLAWP (up to linkWait), its Ready,
// then its wait for the end: nil when ctx ends, errRecycled once recycle
// is closed; nil too once done is closed, without Ready if that comes
// first.
func lifecycle(ctx context.Context, cfg ProcessConfig, linkWait time.Duration, linked, recycle, done <-chan struct{}, addr string) error {
	if linkWait > 0 {
		t := time.NewTimer(linkWait)
		defer t.Stop()
		select {
		case <-linked:
		case <-t.C:
			cfg.Log.Warn().Dur("waited", linkWait).Msg("AgentWaitTime is over and the LLAWP is not up yet: serving without it; management commands until then are not seen")
		case <-done:
			return nil
		case <-ctx.Done():
		}
	}
	if cfg.Ready != nil && ctx.Err() == nil {
		cfg.Ready(addr)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-recycle:
		cfg.Log.Info().Int("max_requests", cfg.MaxRequests).Msg("Served MaxRequestsPerChild requests: finishing the requests in flight, then exiting")
		if cfg.Recycling != nil {
			cfg.Recycling()
		}
		return errRecycled
	case <-done:
		return nil
	}
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
	b := s.cfg.LLAWP.backoff()
	for ctx.Err() == nil {
		started := time.Now()
		o, err := s.once(ctx, linked)
		if ctx.Err() != nil {
			s.exited(o, false, "stopped with its worker")
			return
		}
		wait := b.Failed(time.Since(started))
		s.log.Error().Err(err).Dur("restart_in", wait).Msg("LLAWP is gone; authorization goes on, a new LLAWP will be started")
		s.exited(o, true, fmt.Sprintf("%s (pid %d) goes on serving and starts a new LLAWP in %s", s.cfg.ProcName, os.Getpid(), wait))
		if backoff.Wait(ctx, wait) != nil {
			return
		}
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
// failed. It closes linked once this LLAWP is through its HCO phase.
func (s *supervisor) once(ctx context.Context, linked chan<- struct{}) (*ipc.Owner, error) {
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
	// Every launch goes to WAS: it reaps this LLAWP if the worker dies
	// first, and passes a replacement on to the lab.
	if s.cfg.Notify != nil {
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
	if s.cfg.LLAWP.metrics && s.cfg.Notify != nil {
		// WAS passes the worker's notice on to whoever started the web
		// server.
		actx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { announceLLAWPMetrics(actx, l, o.Exited(), s.cfg.Notify) })
		defer wg.Wait()
		defer cancel()
	}
	id, err := register(ctx, l, ipc.Worker{PID: os.Getpid(), Name: s.cfg.ProcName, Role: s.cfg.role()})
	if err != nil {
		return fmt.Errorf("register with the LLAWP: %w", err)
	}
	return registration{
		llawp: l, id: id, worker: s.worker, log: s.log, forwarder: s.cfg.Forwarder,
		exited: o.Exited(), pid: o.PID(), linkedOnce: &s.linkedOnce, linked: linked,
	}.keep(ctx)
}

// registration is a worker registered with an LLAWP: the IIS worker with
// the LLAWP it launched, or an httpd child with its parent's.
type registration struct {
	llawp     ipc.LLAWP
	id        ipc.WorkerID
	worker    worker
	log       zerolog.Logger
	forwarder *ipc.LogForwarder // nil: no records to forward
	// exited is closed once the LLAWP's process has exited, and pid is
	// its pid: the IIS worker launched it and sees it go. nil for an httpd
	// child, which sees only its event stream end.
	exited     <-chan struct{}
	pid        int
	linkedOnce *sync.Once
	linked     chan<- struct{}
}

// keep watches the LLAWP for the worker until the LLAWP goes away or ctx
// ends, and returns why: it applies the management events the LLAWP
// relays, tells linked when the LLAWP is through its HCO phase, reports
// the worker's sockets and forwards its log records. When ctx ends the
// worker leaves the LLAWP's registry; otherwise leaving is the caller's
// business (an LLAWP that exited has no registry to leave).
func (r registration) keep(ctx context.Context) error {
	if r.forwarder != nil {
		r.forwarder.SetWorker(r.id)
	}
	// Ends the Watch stream once every actor below has returned.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := r.llawp.Watch(wctx, r.id)
	if err != nil {
		return fmt.Errorf("watch the LLAWP: %w", err)
	}
	// The registration's actors; the first to end (the events, in
	// practice) interrupts the others, and keep returns once all have.
	var g run.Group
	{
		// Management events: applied to the worker's agent until the
		// LLAWP ends the stream or exits, or ctx ends (then the worker
		// unregisters first). Its end is the registration's reason.
		done := make(chan struct{})
		g.Add(func() error { return r.events(ctx, events, done) }, func(error) { close(done) })
	}
	{
		// Readiness: closes linked once the LLAWP is through its own HCO
		// phase (the worker holds Ready until then), then waits.
		ctx, cancel := context.WithCancel(wctx)
		g.Add(func() error {
			awaitLLAWP(ctx, r.llawp, r.linkedOnce, r.linked)
			<-ctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	{
		// Socket reports: keeps the LLAWP's view of the worker's pool
		// current.
		ctx, cancel := context.WithCancel(wctx)
		g.Add(func() error {
			reportSockets(ctx, r.llawp, r.id, r.worker.sockets, r.log)
			return nil
		}, func(error) { cancel() })
	}
	if r.forwarder != nil {
		// Log records: the worker's, to WA.log. Interrupted with the rest
		// and waited for, so that the forwarder is stopped before the
		// LLAWP may be killed. A broken stream is no reason to drop the
		// registration: the records are kept until the next one.
		ctx, cancel := context.WithCancel(wctx)
		g.Add(func() error {
			if err := r.forwarder.Forward(ctx, r.llawp); err != nil && ctx.Err() == nil {
				r.log.Warn().Err(err).Msg("Log stream to the LLAWP broke; records are kept until it is back")
			}
			<-ctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	return g.Run()
}

// events applies the LLAWP's management events until the stream ends,
// the LLAWP exits, ctx ends or done is closed.
func (r registration) events(ctx context.Context, events <-chan ipc.ManagementEvent, done <-chan struct{}) error {
	for {
		select {
		case ev, ok := <-events:
			if ok {
				applyEvent(r.log, r.worker.agent, ev)
				continue
			}
			if ctx.Err() != nil {
				break
			}
			if r.exited == nil {
				return errors.New("the LLAWP closed its event stream")
			}
			// The stream ends as the LLAWP's process does: wait a moment
			// for the process to say which it was.
			select {
			case <-r.exited:
				return errors.New("the LLAWP exited")
			case <-ctx.Done():
			case <-time.After(time.Second):
				return errors.New("the LLAWP closed its event stream")
			}
		case <-r.exited:
			return fmt.Errorf("the LLAWP (pid %d) exited", r.pid)
		case <-ctx.Done():
		case <-done:
			return nil
		}
		// ctx ended: the worker leaves the LLAWP's registry.
		unregister(ctx, r.llawp, r.id)
		return ctx.Err()
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

// announceLLAWPMetrics tells notify where the LLAWP l serves its metrics
// ("llawp: metrics on ADDR"), once it is through its start-up: the
// LLAWP's stdout belongs to go-plugin, so its owner speaks for it. It
// returns then, or when the LLAWP exits (gone) or ctx ends.
func announceLLAWPMetrics(ctx context.Context, l ipc.LLAWP, gone <-chan struct{}, notify func(notice.Notice)) {
	t := time.NewTicker(llawpPhasePoll)
	defer t.Stop()
	for {
		if st, err := l.Status(ctx); err == nil && st.Phase != ipc.PhaseStarting {
			if st.MetricsAddr != "" {
				notify(notice.Notice{Prog: notice.ProgLLAWP, Kind: notice.Metrics, Addr: st.MetricsAddr})
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-gone:
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
