package hla

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
)

// ChildCommand is how the httpd parent starts a child: the same hla
// binary with the parent's flags, marked by EnvChild.
type ChildCommand struct {
	Path string
	Args []string
	Env  []string
}

// ApacheConfig is the Apache model's parent process (httpd).
type ApacheConfig struct {
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
	LLAWP    LLAWPConfig
	Log      zerolog.Logger
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
}

// RunApache runs the httpd parent until ctx ends. It owns the listening
// socket and the one LLAWP, which it launches once every first child is
// through its HCO phase; it never serves HTTP
// and never talks to a Policy Server itself. Its children each bootstrap
// and open their own pool (the seed: every httpd child contacts the
// Policy Server on its own), share the listening socket, and attach to the
// LLAWP. A child that exits is replaced; at the end the children go first,
// then the LLAWP.
func RunApache(ctx context.Context, cfg ApacheConfig) error {
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
		wa, err := conf.ReadWebAgent(cfg.WebAgent)
		if err != nil {
			return err
		}
		if _, err := conf.ReadSmHost(wa.HostConfigFile); err != nil {
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

	p := &parent{cfg: cfg, log: log, lf: lf, addr: l.Addr().String(), events: make(chan childEvent), quit: make(chan struct{})}
	// The LLAWP goes last, after the children (run returns once they are
	// stopped).
	defer p.stopLLAWP()
	return p.run(ctx)
}

type parent struct {
	cfg    ApacheConfig
	log    zerolog.Logger
	lf     *os.File
	addr   string
	events chan childEvent
	quit   chan struct{}
	// serving: every first child has served. Before, children's stderr
	// is held, so that a child failing at start becomes the parent's one
	// error rather than N copies.
	serving atomic.Bool

	// The LLAWP's supervisor, once launched.
	llawpWG     sync.WaitGroup
	llawpCancel context.CancelFunc

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
}

// childEvent is a child's notice (hco, ready, recycle), or its exit.
type childEvent struct {
	c      *child
	notice string
	exited bool
	err    error // exit status
}

// startLLAWP launches the LLAWP and its supervisor, and names it to every
// child.
func (p *parent) startLLAWP(ctx context.Context) error {
	o, err := p.launchLLAWP(ctx)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(ctx)
	p.llawpCancel = cancel
	p.llawpWG.Add(1)
	go func() { defer p.llawpWG.Done(); p.superviseLLAWP(lctx, o) }()
	return nil
}

func (p *parent) stopLLAWP() {
	if p.llawpCancel != nil {
		p.llawpCancel()
	}
	p.llawpWG.Wait()
	p.killLLAWP()
}

func (p *parent) launchLLAWP(ctx context.Context) (*ipc.Owner, error) {
	o, err := ipc.Launch(ctx, ipc.LaunchConfig{
		Path: p.cfg.LLAWP.Path, Args: p.cfg.LLAWP.Args, Env: p.cfg.LLAWP.Env,
		Stderr: p.cfg.LLAWP.Stderr, Logger: p.log,
	})
	if err != nil {
		return nil, fmt.Errorf("launch LLAWP: %w", err)
	}
	p.log.Info().Int("llawp_pid", o.PID()).Msg("LLAWP started")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.llawp, p.reattach = o, o.ReattachJSON()
	for _, c := range p.children {
		c.sendReattach(p.reattach)
	}
	return o, nil
}

// sendReattach names the LLAWP to the child, at best effort: a child that
// has just exited has nobody reading the pipe. Called with parent.mu held.
func (c *child) sendReattach(cfg string) {
	if c.reattach != nil && cfg != "" {
		io.WriteString(c.reattach, cfg+"\n")
	}
}

func (p *parent) killLLAWP() {
	p.mu.Lock()
	o := p.llawp
	p.mu.Unlock()
	if o != nil {
		o.Kill()
	}
}

// superviseLLAWP starts a new LLAWP when the one running dies; every child
// is sent its reattach config and registers with it. Meanwhile the
// children go on serving, without management events.
func (p *parent) superviseLLAWP(ctx context.Context, o *ipc.Owner) {
	minB, maxB := p.cfg.LLAWP.backoff()
	backoff := minB
	for {
		started := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-o.Exited():
		}
		o.Kill() // reaps it
		if time.Since(started) > maxB {
			backoff = minB
		}
		p.log.Error().Int("llawp_pid", o.PID()).Dur("restart_in", backoff).Msg("LLAWP is gone; the children go on serving, a new LLAWP will be started")
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxB)
			nu, err := p.launchLLAWP(ctx)
			if err == nil {
				o = nu
				break
			}
			p.log.Error().Err(err).Msg("Could not start a new LLAWP")
		}
	}
}

func (p *parent) run(ctx context.Context) error {
	p.children = map[int]*child{}
	defer close(p.quit)
	for slot := range p.cfg.Workers {
		if err := p.start(slot); err != nil {
			p.stopAll()
			return err
		}
	}
	// The LLAWP starts once every first child is through its HCO phase:
	// its own bootstrap round then reads after theirs, as in the seed.
	hco, ready := map[int]bool{}, map[int]bool{}
	llawpUp, serving := false, false
	backoff := make([]time.Duration, p.cfg.Workers)
	restart := make(chan int)
	var timers sync.WaitGroup
	defer timers.Wait()
	tctx, stopTimers := context.WithCancel(ctx)
	defer stopTimers()
	for {
		select {
		case <-ctx.Done():
			stopTimers()
			p.stopAll()
			return nil
		case slot := <-restart:
			if err := p.start(slot); err != nil {
				p.log.Error().Err(err).Int("slot", slot).Msg("Could not start an httpd child")
				backoff[slot] = p.next(backoff[slot])
				p.after(tctx, &timers, backoff[slot], slot, restart)
			}
		case ev := <-p.events:
			c := ev.c
			switch ev.notice {
			case noticeHCO:
				if llawpUp {
					continue
				}
				hco[c.slot] = true
				if len(hco) == p.cfg.Workers {
					llawpUp = true
					if err := p.startLLAWP(ctx); err != nil {
						p.stopAll()
						return err
					}
				}
				continue
			case noticeReady:
				p.log.Info().Int("child_pid", c.pid).Int("slot", c.slot).Msg("httpd child serving")
				if !serving {
					ready[c.slot] = true
					if len(ready) == p.cfg.Workers {
						serving = true
						p.serving.Store(true)
						p.mu.Lock()
						for _, c := range p.children {
							c.stderr.flush()
						}
						p.mu.Unlock()
						p.log.Info().Int("children", p.cfg.Workers).Str("addr", p.addr).Msg("Every httpd child serves")
						if p.cfg.Ready != nil {
							p.cfg.Ready(p.addr)
						}
					}
				}
				continue
			case noticeRecycle:
				c.recycling = true
				continue
			}
			if !ev.exited {
				p.log.Warn().Int("child_pid", c.pid).Str("notice", ev.notice).Msg("Unknown notice from an httpd child")
				continue
			}
			p.mu.Lock()
			delete(p.children, c.slot)
			p.mu.Unlock()
			if ctx.Err() != nil {
				// A Ctrl-C reaches the whole process group: a child that
				// stopped on it is not to be replaced, nor is the web
				// server failing to start.
				continue
			}
			if !serving {
				// A child that cannot start (a configuration error, every
				// Policy Server down) would fail again in a loop: the web
				// server does not start, as the IIS model's does not.
				p.stopAll()
				msg := strings.TrimPrefix(strings.TrimSpace(c.stderr.text()), "hla: ")
				if msg == "" {
					msg = fmt.Sprint(exitText(ev.err))
				}
				return fmt.Errorf("httpd child (pid %d) exited before serving: %s", c.pid, msg)
			}
			if c.recycling && ev.err == nil {
				// It recycled itself (MaxRequestsPerChild): a new one
				// bootstraps now, the socket storm of the vendor's KB.
				p.log.Info().Int("child_pid", c.pid).Int("slot", c.slot).Msg("httpd child recycled; starting a new one")
				backoff[c.slot] = 0
				if err := p.start(c.slot); err != nil {
					p.log.Error().Err(err).Msg("Could not start an httpd child")
					backoff[c.slot] = p.next(0)
					p.after(tctx, &timers, backoff[c.slot], c.slot, restart)
				}
				continue
			}
			if time.Since(c.started) > 10*time.Second {
				backoff[c.slot] = 0
			}
			backoff[c.slot] = p.next(backoff[c.slot])
			p.log.Error().Int("child_pid", c.pid).Int("slot", c.slot).Str("exit", exitText(ev.err)).Dur("restart_in", backoff[c.slot]).
				Msg("httpd child died; a new one will be started")
			p.after(tctx, &timers, backoff[c.slot], c.slot, restart)
		}
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

func (p *parent) next(b time.Duration) time.Duration {
	if b == 0 {
		return p.cfg.MinBackoff
	}
	return min(2*b, p.cfg.MaxBackoff)
}

func (p *parent) after(ctx context.Context, wg *sync.WaitGroup, d time.Duration, slot int, restart chan<- int) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		select {
		case restart <- slot:
		case <-ctx.Done():
		}
	}()
}

// start execs a child into slot. It inherits the listening socket (fd 3),
// the write end of its notice pipe (fd 4) and the read end of its
// reattach pipe (fd 5); the parent's pid travels in its environment.
func (p *parent) start(slot int) error {
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
	cmd := exec.Command(p.cfg.Child.Path, p.cfg.Child.Args...)
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
		return fmt.Errorf("start httpd child: %w", err)
	}
	c := &child{slot: slot, pid: cmd.Process.Pid, cmd: cmd, started: time.Now(), done: make(chan struct{}),
		stderr: newChildStderr(p.cfg.Stderr, p.serving.Load()), reattach: aw}
	p.mu.Lock()
	p.children[slot] = c
	c.sendReattach(p.reattach)
	p.mu.Unlock()
	p.log.Info().Int("child_pid", c.pid).Int("slot", slot).Msg("httpd child started")
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

// stopAll stops every child: SIGTERM, then SIGKILL after the grace.
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
				p.log.Warn().Int("child_pid", c.pid).Msg("httpd child did not stop in time: killed")
				for _, k := range live {
					k.cmd.Process.Kill()
				}
				grace = nil
			}
		}
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
