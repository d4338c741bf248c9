package hla

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/backoff"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/startup"
	"github.com/agentlab/agentlab/trace"
)

// The process models. Their processes' names are procname's.
const (
	ModelIIS    = "iis"
	ModelApache = "apache"
)

// Roles in traces and logs.
const (
	RoleWorker      = "hla"
	RoleWAS         = "was"
	RoleHTTPDParent = "httpd-parent"
)

// ChildCommand is how a parent starts a worker: the same hla binary with
// the parent's flags, marked by EnvChild.
type ChildCommand struct {
	Path string
	// Name is the child's argv[0]: w3wp.exe, or httpd as the parent's
	// (procname).
	Name string
	Args []string
	Env  []string
}

// ParentConfig is a web server's parent process: the Apache model's httpd
// parent, or the IIS model's WAS. Each owns the listening socket (WAS
// stands for HTTP.sys there too: requests wait in the socket's backlog
// while a worker restarts) and starts the worker processes that serve it.
type ParentConfig struct {
	// WebAgent is the children's WebAgent.conf: read (with the SmHost.conf
	// it names) before anything starts, so that a broken file is one
	// error naming it, as in the IIS model, not N children's and the
	// LLAWP's.
	WebAgent string
	Listen   string
	// Listener, when set, is used instead of Listen; it must be a
	// *net.TCPListener (its descriptor goes to the children).
	Listener net.Listener
	Workers  int
	Child    ChildCommand
	// LLAWP is the Apache parent's to launch; in the IIS model each
	// w3wp.exe launches its own.
	LLAWP LLAWPConfig
	Log   zerolog.Logger
	// Recorder records the Process Create and Process Exit of every
	// process this parent starts; nil records nothing.
	Recorder *trace.Recorder
	// Notify tells whoever started the web server (a lab) of every death
	// among its processes and every replacement, at once; nil tells
	// nobody. The workers' own notices (their LLAWP's death) come through.
	Notify func(notice.Notice)
	// Stderr receives the children's standard error (and output: they
	// must not write to the parent's stdout, which the lab reads).
	Stderr io.Writer
	// Ready is called with the HTTP address once every child serves.
	Ready func(addr string)
	// StopGrace is how long children have to exit on SIGTERM before they
	// are killed; 0 means 10 s.
	StopGrace time.Duration
	// MinBackoff and MaxBackoff bound the wait before a child that died
	// is replaced; 0 means 100 ms and 5 s. A child that recycled itself
	// is replaced at once.
	MinBackoff, MaxBackoff time.Duration
	// RapidFail is WAS's rapid-fail protection (IIS model only).
	RapidFail RapidFail
	// Metrics, when set, is the loopback host:port the parent serves its
	// workers' pools' /metrics on (workerMetrics); it says so with a
	// notice (Metrics). The workers must be started with --metrics too.
	Metrics string

	// model is ModelApache or ModelIIS, set by RunApache or RunWAS.
	model string
}

// names are the parent's process name and role, and its workers' name.
func (cfg *ParentConfig) names() (parent, parentRole, child string) {
	self := ProcessIdentity(cfg.model, false, "")
	return self.Name, self.Role, ProcessIdentity(cfg.model, true, "").Name
}

// RunApache runs the httpd parent until ctx ends. It owns the listening
// socket and the one LLAWP, which it launches once every first child is
// through its HCO phase; it never serves HTTP
// and never talks to a Policy Server itself. Its children each bootstrap
// and open their own pool (the seed: every httpd child contacts the
// Policy Server on its own), share the listening socket, and attach to the
// LLAWP. A child that exits is replaced; at the end the children go first,
// then the LLAWP.
func RunApache(ctx context.Context, cfg ParentConfig) error {
	cfg.model = ModelApache
	return runParent(ctx, cfg)
}

func runParent(ctx context.Context, cfg ParentConfig) error {
	if cfg.Workers < 1 {
		return fmt.Errorf("--workers %d: want at least 1", cfg.Workers)
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	log := cfg.Log
	if cfg.WebAgent != "" {
		if _, err := startup.ReadFiles(cfg.WebAgent); err != nil {
			return err
		}
	}
	l := cfg.Listener
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen for HTTP on %s: %w", cfg.Listen, err)
		}
	}
	defer l.Close()
	tl, ok := l.(*net.TCPListener)
	if !ok {
		return fmt.Errorf("the httpd parent needs a TCP listener, got %T", l)
	}
	// The parent keeps the socket open and never accepts on it: the
	// children do, each on its own copy of the descriptor.
	lf, err := inheritable(tl)
	if err != nil {
		return fmt.Errorf("listening socket for the children: %w", err)
	}
	defer lf.Close()

	p := &parent{cfg: cfg, log: log, lf: lf, addr: l.Addr().String(), events: make(chan childEvent), quit: make(chan struct{}),
		llawpWanted: make(chan struct{}), poolStopped: make(chan struct{})}
	p.name, p.role, p.childName = cfg.names()
	if cfg.Metrics != "" {
		p.metrics = newWorkerMetrics()
		addr, err := metrics.Serve(ctx, cfg.Metrics, p.metrics)
		if err != nil {
			return err
		}
		log.Info().Str("metrics", addr.String()).Msgf("Metrics of the %s processes' sockets on http://%s/metrics", p.childName, addr)
		p.notify(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Metrics, Addr: addr.String()})
	}

	// The web server's actors. run.Group interrupts every one, in the
	// order they are added, as soon as the first returns, and returns
	// once all have; an interrupt that blocks holds back the ones after
	// it, which is how the order below is kept.
	var g run.Group
	{
		// Workers: starts the children (the httpd children, or WAS's
		// w3wp.exe), says when the web server serves, asks for the LLAWP
		// once every first child is through its HCO phase, and replaces
		// each child that dies (after a backoff; one that recycled, at
		// once). It ends when ctx does (nil), or with the error that
		// keeps the web server from starting. Interrupted first, and its
		// interrupt returns only once every child has exited: the
		// children go before the LLAWP they are registered with, so that
		// none of them sees it die.
		ctx, cancel := context.WithCancel(ctx)
		stopped := make(chan struct{})
		g.Add(func() error {
			defer close(stopped)
			defer p.orphans.Wait()
			return p.run(ctx)
		}, func(error) {
			cancel()
			<-stopped
		})
	}
	if cfg.model == ModelApache {
		// LLAWP (Apache model): launched when the workers ask for it,
		// named to every child, and started again (after a backoff) each
		// time it dies; stopped when interrupted, after the workers. Its
		// context is not ctx, which would stop it first: a Ctrl-C ends
		// ctx before anything is interrupted.
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error { return p.runLLAWP(ctx) }, func(error) { cancel() })
	}
	if cfg.model == ModelIIS {
		// 503 responder (IIS model): once rapid-fail protection has
		// stopped the application pool, answers every request on the
		// socket with 503, as HTTP.sys does, until interrupted. The
		// workers' end interrupts it.
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.Add(func() error { return p.serveUnavailable(ctx) }, func(error) { cancel() })
	}
	return g.Run()
}

type parent struct {
	cfg ParentConfig
	// name and role are this process's, childName its workers'.
	name, role, childName string
	// crashes are the recent worker deaths, for rapid-fail protection
	// (run's goroutine only).
	crashes []time.Time
	log     zerolog.Logger
	lf      *os.File
	addr    string
	events  chan childEvent
	quit    chan struct{}
	// serving: every first child has served. Before, children's stderr
	// is held, so that a child failing at start becomes the parent's one
	// error rather than N copies.
	serving atomic.Bool

	// llawpWanted is closed by run once every first child is through its
	// HCO phase (Apache model): the LLAWP actor launches it then.
	llawpWanted chan struct{}
	// poolStopped is closed by run when rapid-fail protection stops the
	// application pool (IIS model): the 503 responder starts then.
	poolStopped chan struct{}

	// orphans are the LLAWP.exe processes of dead w3wp.exe being reaped.
	orphans sync.WaitGroup
	// metrics gathers the workers' /metrics; nil without ParentConfig.Metrics.
	metrics *workerMetrics
	// announcing are the goroutines that announce each LLAWP's metrics
	// address (Apache model).
	announcing sync.WaitGroup

	mu       sync.Mutex
	llawp    *ipc.Owner
	reattach string
	children map[int]*child // by slot
}

// child is one httpd child process in its slot.
type child struct {
	slot    int
	pid     int
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	stderr  *childStderr
	// reattach is the parent's end of the child's reattach pipe; nil once
	// the child has exited. Guarded by parent.mu.
	reattach *os.File
	// recycling: the child said it served MaxRequests and drains (run's
	// goroutine only).
	recycling bool
	// llawp is the LLAWP.exe a w3wp.exe said it started (run's goroutine
	// only): WAS reaps it if the w3wp.exe dies first.
	llawp *trace.Process
}

// childEvent is a line from a child's notice pipe (a notice.Notice: its
// HCO phase done, it serves, it recycles, or news of its own LLAWP to
// pass on), or its exit.
type childEvent struct {
	c      *child
	notice string
	exited bool
	err    error // exit status
}

// process is a child as a trace and a notice name it.
func (p *parent) process(c *child) trace.Process {
	return trace.Process{
		Name: p.childName, PID: c.pid, Role: RoleWorker, Image: c.cmd.Path, CommandLine: strings.Join(c.cmd.Args, " "),
		Parent: p.name, ParentPID: os.Getpid(),
	}
}

// notify passes a notice on to whoever started the web server.
func (p *parent) notify(n notice.Notice) {
	if p.cfg.Notify != nil {
		p.cfg.Notify(n)
	}
}

// exited records a process's end and, when it is a death, tells at once.
func (p *parent) exited(proc trace.Process, ps *os.ProcessState, death bool, action string) {
	proc.Exit = trace.ExitOf(ps)
	if proc.Exit == nil {
		proc.Exit = &trace.Exit{Code: -1}
	}
	proc.Exit.Death, proc.Exit.Action = death, action
	p.cfg.Recorder.ProcessExit(proc)
	if death {
		p.notify(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Exited, Process: &proc})
	}
}

func (p *parent) run(ctx context.Context) error {
	p.children = map[int]*child{}
	defer close(p.quit)
	for slot := range p.cfg.Workers {
		if err := p.start(slot, false); err != nil {
			p.stopAll()
			return err
		}
	}
	// The Apache parent's LLAWP starts once every first child is through
	// its HCO phase: its own bootstrap round then reads after theirs, as
	// in the seed. (An IIS w3wp.exe launches its own, likewise after its
	// HCO phase.)
	hco, ready := map[int]bool{}, map[int]bool{}
	llawpUp, serving := p.cfg.model == ModelIIS, false
	// A child that dies soon after it started waits longer each time;
	// one that served for 10 s starts the count over.
	waits := make([]backoff.Backoff, p.cfg.Workers)
	for i := range waits {
		waits[i] = backoff.Backoff{Min: p.cfg.MinBackoff, Max: p.cfg.MaxBackoff, Stable: 10 * time.Second}
	}
	var restarts restarts
	defer restarts.stop()
	for {
		select {
		case <-ctx.Done():
			p.stopAll()
			return nil
		case <-restarts.C():
			for _, slot := range restarts.due() {
				if err := p.start(slot, true); err != nil {
					p.log.Error().Err(err).Int("slot", slot).Msgf("Could not start a new %s", p.childName)
					restarts.after(slot, waits[slot].Next())
				}
			}
		case ev := <-p.events:
			c := ev.c
			if !ev.exited {
				n, ok := notice.Parse(ev.notice)
				switch {
				case ev.notice == "":
				case !ok:
					p.log.Warn().Int("child_pid", c.pid).Str("notice", ev.notice).Msgf("Unknown notice from %s", p.childName)
				case n.Kind == notice.HCODone:
					if !llawpUp {
						hco[c.slot] = true
						if len(hco) == p.cfg.Workers {
							llawpUp = true
							close(p.llawpWanted)
						}
					}
				case n.Kind == notice.Serving:
					p.log.Info().Int("child_pid", c.pid).Int("slot", c.slot).Msgf("%s serving", p.childName)
					if !serving {
						ready[c.slot] = true
						if len(ready) == p.cfg.Workers {
							serving = true
							p.serves()
						}
					}
				case n.Kind == notice.Recycling:
					c.recycling = true
				case n.Kind == notice.Metrics && n.Prog == notice.ProgHLA:
					// The worker's own: the parent serves it with the
					// others' under its address, which it announced.
					if p.metrics != nil {
						p.metrics.set(c.pid, n.Addr)
					}
				case n.Kind == notice.Started && p.cfg.model == ModelIIS && n.Process != nil && n.Process.Name == procname.IISLLAWP:
					if c.llawp != nil {
						p.notify(n) // a new LLAWP.exe after a death: news
					}
					c.llawp = n.Process
				default:
					// A worker's own news (its LLAWP died, or started
					// again) goes on to whoever started the web server.
					p.notify(n)
				}
				continue
			}
			p.mu.Lock()
			delete(p.children, c.slot)
			p.mu.Unlock()
			if p.metrics != nil {
				p.metrics.remove(c.pid)
			}
			proc := p.process(c)
			if ctx.Err() != nil {
				// A Ctrl-C reaches the whole process group: a child that
				// stopped on it is not to be replaced, nor is the web
				// server failing to start.
				p.exited(proc, c.cmd.ProcessState, false, "stopped with the web server")
				continue
			}
			if !serving {
				// A child that cannot start (a configuration error, every
				// Policy Server down) would fail again in a loop: the web
				// server does not start.
				p.exited(proc, c.cmd.ProcessState, true, "the web server does not start")
				p.stopAll()
				msg := strings.TrimPrefix(strings.TrimSpace(c.stderr.text()), "hla: ")
				if msg == "" {
					msg = fmt.Sprint(exitText(ev.err))
				}
				return fmt.Errorf("%s (pid %d) exited before serving: %s", p.childName, c.pid, msg)
			}
			if c.recycling && ev.err == nil {
				// It recycled itself (MaxRequestsPerChild): a new one
				// bootstraps now, the socket storm of the vendor's KB.
				p.log.Info().Int("child_pid", c.pid).Int("slot", c.slot).Msgf("%s recycled; starting a new one", p.childName)
				p.exited(proc, c.cmd.ProcessState, false, "recycled (MaxConnectionsPerChild): a new one starts")
				waits[c.slot].Reset()
				if err := p.start(c.slot, false); err != nil {
					p.log.Error().Err(err).Msgf("Could not start a new %s", p.childName)
					restarts.after(c.slot, waits[c.slot].Next())
				}
				continue
			}
			if c.llawp != nil {
				p.reapOrphan(ctx, *c.llawp, proc)
			}
			if p.cfg.model == ModelIIS {
				if p.rapidFail(c, proc) {
					continue
				}
			}
			wait := waits[c.slot].Failed(time.Since(c.started))
			p.log.Error().Int("child_pid", c.pid).Int("slot", c.slot).Str("exit", exitText(ev.err)).Dur("restart_in", wait).
				Msgf("%s died; a new one will be started", p.childName)
			action := fmt.Sprintf("%s (pid %d) starts a new %s in %s, which bootstraps again", p.name, os.Getpid(), p.childName, wait)
			if p.cfg.model == ModelIIS {
				// Its LLAWP watches its owner and leaves with it.
				action = fmt.Sprintf("its %s leaves with it; %s (pid %d) starts a new %s in %s, which bootstraps again and launches a new %s",
					procname.IISLLAWP, p.name, os.Getpid(), p.childName, wait, procname.IISLLAWP)
			}
			p.exited(proc, c.cmd.ProcessState, true, action)
			restarts.after(c.slot, wait)
		}
	}
}

// serves is the web server's readiness, once every first child serves:
// the children's stderr, held until then, goes through, and Ready says
// so.
func (p *parent) serves() {
	p.serving.Store(true)
	p.mu.Lock()
	for _, c := range p.children {
		c.stderr.flush()
	}
	p.mu.Unlock()
	p.log.Info().Int("children", p.cfg.Workers).Str("addr", p.addr).Msgf("Every %s serves", p.childName)
	if p.cfg.Ready != nil {
		p.cfg.Ready(p.addr)
	}
}

// exitText is a child's exit status as a reader wants it: a child that
// exited 0 without recycling was stopped by someone else (a signal it
// handled), which is not "<nil>".
func exitText(err error) string {
	if err == nil {
		return "exit status 0 (stopped from outside)"
	}
	return err.Error()
}

// restarts are the slots waiting for a new child, each until its time:
// one timer for them all, read by run's loop, so that nothing waits on
// after the loop has returned.
type restarts struct {
	at    map[int]time.Time
	timer *time.Timer
}

// after schedules slot's new child in d.
func (r *restarts) after(slot int, d time.Duration) {
	if r.at == nil {
		r.at = map[int]time.Time{}
	}
	r.at[slot] = time.Now().Add(d)
	r.arm()
}

// C fires when a slot is due; nil, which never fires, while none waits.
func (r *restarts) C() <-chan time.Time {
	if r.timer == nil {
		return nil
	}
	return r.timer.C
}

// due takes the slots whose time has come, in slot order.
func (r *restarts) due() []int {
	now := time.Now()
	var slots []int
	for slot, t := range r.at {
		if !t.After(now) {
			slots = append(slots, slot)
			delete(r.at, slot)
		}
	}
	slices.Sort(slots)
	r.arm()
	return slots
}

// arm sets the timer for the first slot due.
func (r *restarts) arm() {
	r.stop()
	r.timer = nil
	var first time.Time
	for _, t := range r.at {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	if !first.IsZero() {
		r.timer = time.NewTimer(time.Until(first))
	}
}

func (r *restarts) stop() {
	if r.timer != nil {
		r.timer.Stop()
	}
}

// start execs a child into slot. It inherits the listening socket (fd 3),
// the write end of its notice pipe (fd 4) and the read end of its
// reattach pipe (fd 5); the parent's pid travels in its environment.
func (p *parent) start(slot int, again bool) error {
	var pipes []*os.File
	closeAll := func() {
		for _, f := range pipes {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			pipes = append(pipes, r, w)
		}
		return r, w, err
	}
	nr, nw, err := pipe()
	if err != nil {
		return err
	}
	ar, aw, err := pipe()
	if err != nil {
		closeAll()
		return err
	}
	er, ew, err := pipe()
	if err != nil {
		closeAll()
		return err
	}
	cmd := procname.Command(p.cfg.Child.Path, p.cfg.Child.Name, p.cfg.Child.Args...)
	cmd.Env = append(os.Environ(), p.cfg.Child.Env...)
	cmd.Env = append(cmd.Env, EnvChild+"="+strconv.Itoa(os.Getpid()))
	cmd.ExtraFiles = []*os.File{p.lf, nw, ar}
	cmd.Stdout, cmd.Stderr = ew, ew
	// SIGTERM, not SIGKILL: a child whose parent died still closes its
	// Policy Server sockets (a FIN in the trace). The child also watches
	// getppid, in case the parent died before this took effect.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	err = cmd.Start()
	// The child's ends are the child's alone from here.
	nw.Close()
	ar.Close()
	ew.Close()
	if err != nil {
		nr.Close()
		aw.Close()
		er.Close()
		return fmt.Errorf("start %s: %w", p.childName, err)
	}
	c := &child{slot: slot, pid: cmd.Process.Pid, cmd: cmd, started: time.Now(), done: make(chan struct{}),
		stderr: newChildStderr(p.cfg.Stderr, p.serving.Load()), reattach: aw}
	p.mu.Lock()
	p.children[slot] = c
	c.sendReattach(p.reattach)
	p.mu.Unlock()
	p.log.Info().Int("child_pid", c.pid).Int("slot", slot).Msgf("%s started", p.childName)
	proc := p.process(c)
	p.cfg.Recorder.ProcessCreate(proc)
	if again {
		p.notify(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Started, Process: &proc})
	}
	go c.stderr.copy(er)
	notices := make(chan struct{})
	go func() {
		defer close(notices)
		defer nr.Close()
		sc := bufio.NewScanner(nr)
		for sc.Scan() {
			p.send(childEvent{c: c, notice: strings.TrimSpace(sc.Text())})
		}
	}()
	go func() {
		err := cmd.Wait()
		close(c.done)
		p.mu.Lock()
		aw.Close()
		c.reattach = nil
		p.mu.Unlock()
		// Its notices and its last words come before its exit: both pipes
		// reach EOF once the child is gone, unless something it started
		// still holds them, hence the bound.
		bound := time.After(2 * time.Second)
		select {
		case <-notices:
		case <-bound:
		}
		select {
		case <-c.stderr.done:
		case <-bound:
		}
		p.send(childEvent{c: c, exited: true, err: err})
	}()
	return nil
}

// send hands an event to run, or drops it once run has returned.
func (p *parent) send(ev childEvent) {
	select {
	case p.events <- ev:
	case <-p.quit:
	}
}

// stopAll stops every child: SIGTERM, then SIGKILL after the grace. Each
// end goes into the trace, as Process Monitor shows a Process Exit for a
// worker that WAS stops.
func (p *parent) stopAll() {
	p.mu.Lock()
	live := make([]*child, 0, len(p.children))
	for _, c := range p.children {
		live = append(live, c)
	}
	p.mu.Unlock()
	for _, c := range live {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	grace := time.After(p.cfg.StopGrace)
	for _, c := range live {
		for waiting := true; waiting; {
			select {
			case <-c.done:
				waiting = false
			case <-grace:
				p.log.Warn().Int("child_pid", c.pid).Msgf("%s did not stop in time: killed", p.childName)
				for _, k := range live {
					k.cmd.Process.Kill()
				}
				grace = nil
			}
		}
		p.exited(p.process(c), c.cmd.ProcessState, false, "stopped with the web server")
	}
}

// childStderr copies a child's stderr to the parent's, holding it until
// told to let it through.
type childStderr struct {
	w      io.Writer
	done   chan struct{} // closed at the pipe's EOF
	mu     sync.Mutex
	direct bool
	buf    strings.Builder
}

func newChildStderr(w io.Writer, direct bool) *childStderr {
	return &childStderr{w: w, direct: direct, done: make(chan struct{})}
}

func (s *childStderr) copy(r io.ReadCloser) {
	defer close(s.done)
	defer r.Close()
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.mu.Lock()
			if s.direct {
				s.w.Write(buf[:n])
			} else if s.buf.Len() < 64<<10 {
				s.buf.Write(buf[:n])
			}
			s.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (s *childStderr) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.direct = true
	if s.buf.Len() > 0 {
		io.WriteString(s.w, s.buf.String())
		s.buf.Reset()
	}
}

func (s *childStderr) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// inheritable is a descriptor of the listening socket for ExtraFiles.
// O_NONBLOCK belongs to the open file description, which the parent and
// every child share; os/exec calls File.Fd on ExtraFiles, and Fd puts a
// file that Go opened non-blocking back into blocking mode. Done at each
// child's start, that would leave the children already running in a
// blocking accept(2) that Close cannot interrupt (a child then ignores
// SIGTERM until a connection arrives). So the file handed to os/exec is
// made from a descriptor that is blocking when wrapped: Fd leaves it
// alone, and each child's net.FileListener sets non-blocking mode once.
func inheritable(tl *net.TCPListener) (*os.File, error) {
	f, err := tl.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd())) // Fd: blocking mode, for now
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "httpd listener"), nil
}
