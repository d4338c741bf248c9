package hla

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/backoff"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/notice"
)

// EnvChild marks a process as a worker that a parent started (an httpd
// child of the Apache model, or w3wp.exe under WAS in the IIS model) and
// holds its parent's pid. An environment variable rather than a flag: a
// child is the same hla binary with the parent's own flags, and a user
// never starts one by hand.
const EnvChild = "AGENTLAB_WORKER_CHILD"

// The files a child inherits (exec.Cmd.ExtraFiles: fd 3 onwards).
const (
	childListenerFD = 3 // the parent's HTTP listening socket
	childNoticeFD   = 4 // write end of a pipe: the child's notices, a line each
	childReattachFD = 5 // read end of a pipe: the LLAWP's reattach config, a line each time it changes
)

// A child's notices to its parent are package notice's lines, one each on
// the notice pipe. The parent launches the LLAWP once every first child
// has sent notice.HCODone (so that a capture shows every child's round
// before the LLAWP's, as in the seed), counts notice.Serving, and
// replaces at once only a child that sent notice.Recycling: any other
// exit is a death, replaced after a backoff. An IIS worker's news about
// its own LLAWP (notice.Started, notice.Exited) goes on to whoever
// started the web server.

// Inherited is what an httpd child gets from its parent.
type Inherited struct {
	Listener  net.Listener
	ParentPID int

	mu     sync.Mutex
	notice *os.File
	// reattach delivers each reattach config the parent sends (the first
	// when an LLAWP is up, another each time the parent starts a new one).
	reattach *os.File
}

// Inherit takes the listening socket and the two pipes that the parent
// passed; ok is false when this process is not an httpd child.
func Inherit() (in *Inherited, ok bool, err error) {
	v := os.Getenv(EnvChild)
	if v == "" {
		return nil, false, nil
	}
	in = &Inherited{}
	if _, err := fmt.Sscan(v, &in.ParentPID); err != nil || in.ParentPID <= 0 {
		return nil, true, fmt.Errorf("%s=%q: want the parent's pid", EnvChild, v)
	}
	// The variable is for this process only: not for anything it starts.
	os.Unsetenv(EnvChild)
	lf := os.NewFile(childListenerFD, "httpd listener")
	if lf == nil {
		return nil, true, errors.New("no listening socket inherited on fd 3")
	}
	// FileListener dups the descriptor: the inherited one is closed here.
	in.Listener, err = net.FileListener(lf)
	lf.Close()
	if err != nil {
		return nil, true, fmt.Errorf("inherited listening socket: %w", err)
	}
	in.notice = os.NewFile(childNoticeFD, "httpd notice pipe")
	// Non-blocking, so that os.NewFile makes it pollable and Close ends a
	// read in progress: the parent handed it over in blocking mode
	// (os/exec's Fd), and a blocking read would hold the child's exit
	// until the parent closed its end, which it does once the child has
	// exited. The child alone holds this end.
	if err := syscall.SetNonblock(childReattachFD, true); err != nil {
		in.Listener.Close()
		return nil, true, fmt.Errorf("reattach pipe (fd 5) from the httpd parent: %w", err)
	}
	in.reattach = os.NewFile(childReattachFD, "httpd reattach pipe")
	if in.notice == nil || in.reattach == nil {
		in.Listener.Close()
		return nil, true, errors.New("no notice pipe (fd 4) or reattach pipe (fd 5) inherited from the httpd parent")
	}
	return in, true, nil
}

// notify sends one notice to the parent, at best effort: a parent that is
// gone reads nothing, and the child finds out by watching getppid.
func (in *Inherited) notify(n notice.Notice) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.notice != nil {
		notice.Write(in.notice, n)
	}
}

// The notices a worker sends its parent about itself.
var (
	noticeHCO     = notice.Notice{Prog: notice.ProgHLA, Kind: notice.HCODone}
	noticeRecycle = notice.Notice{Prog: notice.ProgHLA, Kind: notice.Recycling}
)

// noticeReady says the worker serves at addr.
// noticeMetrics tells the parent where the worker serves its pool's
// metrics; the parent gathers them into its own (workerMetrics).
func noticeMetrics(addr string) notice.Notice {
	return notice.Notice{Prog: notice.ProgHLA, Kind: notice.Metrics, Addr: addr}
}

func noticeReady(addr string) notice.Notice {
	return notice.Notice{Prog: notice.ProgHLA, Kind: notice.Serving, Addr: "http://" + addr}
}

func (in *Inherited) close() {
	in.mu.Lock()
	if in.notice != nil {
		in.notice.Close()
		in.notice = nil
	}
	in.mu.Unlock()
	in.closeReattach()
}

// closeReattach ends readReattach; closing twice is harmless.
func (in *Inherited) closeReattach() { in.reattach.Close() }

// readReattach hands every line of the reattach pipe to set, until the
// parent closes it (it has exited) or the pipe is closed here.
func (in *Inherited) readReattach(set func(string)) {
	sc := bufio.NewScanner(in.reattach)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			set(line)
		}
	}
}

// RunApacheChild runs one httpd child until ctx ends, its parent dies, or
// it has served cfg.MaxRequests: the same worker as the IIS model's
// (bootstrap, HCO phase, its own pool, the agent), on the parent's
// listening socket, joined to the parent's LLAWP with ipc.Attach, which
// cannot stop it.
func RunApacheChild(ctx context.Context, cfg ProcessConfig, in *Inherited) error {
	cfg.Listener = in.Listener
	ready := cfg.Ready
	cfg.Ready = func(addr string) {
		in.notify(noticeReady(addr))
		if ready != nil {
			ready(addr)
		}
	}
	cfg.HCODone = func() { in.notify(noticeHCO) }
	cfg.Recycling = func() { in.notify(noticeRecycle) }
	cfg.MetricsReady = func(addr string) { in.notify(noticeMetrics(addr)) }
	link := newAttachLink(cfg)
	defer link.close()
	return runChild(ctx, in, cfg.Log, "The httpd parent", func(ctx context.Context) error { return runWorker(ctx, cfg, link) }, link.setReattach)
}

// RunIISChild runs w3wp.exe under WAS until ctx ends or WAS dies: RunIIS
// on WAS's listening socket, telling WAS when it is through its HCO phase,
// when it serves, and when its LLAWP dies or starts again.
func RunIISChild(ctx context.Context, cfg ProcessConfig, in *Inherited) error {
	cfg.Listener = in.Listener
	cfg.Ready = func(addr string) { in.notify(noticeReady(addr)) }
	cfg.HCODone = func() { in.notify(noticeHCO) }
	cfg.Notify = in.notify
	cfg.MetricsReady = func(addr string) { in.notify(noticeMetrics(addr)) }
	return runChild(ctx, in, cfg.Log, "WAS", func(ctx context.Context) error { return RunIIS(ctx, cfg) }, nil)
}

// errParentGone ends a worker whose parent has died.
var errParentGone = errors.New("the parent is gone")

// runChild runs a worker that a parent started until ctx ends, the parent
// (called parent in the log) dies, or work returns; reattach, when not
// nil, takes each LLAWP reattach config the parent sends. It returns
// work's error, or nil when the worker was stopped or its parent is gone.
func runChild(ctx context.Context, in *Inherited, log zerolog.Logger, parent string, work func(context.Context) error, reattach func(string)) error {
	defer in.close()
	// The child's actors. run.Group interrupts every one, in the order
	// they are added, as soon as the first returns.
	var g run.Group
	{
		// Worker: work until ctx ends or it is interrupted. Interrupted
		// first, and its interrupt returns once work has (its requests
		// answered, its pool and LLAWP link closed), so that nothing
		// below closes a pipe the worker still uses.
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		g.Add(func() error {
			defer close(done)
			return work(wctx)
		}, func(error) {
			cancel()
			<-done
		})
	}
	{
		// Parent watch: Pdeathsig is the first guard against outliving
		// the parent; this covers a parent that died before it took
		// effect. Returns errParentGone.
		wctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			err := watchParent(wctx, in.ParentPID)
			if errors.Is(err, errParentGone) {
				log.Warn().Int("parent_pid", in.ParentPID).Msgf("%s is gone: exiting", parent)
			}
			return err
		}, func(error) { cancel() })
	}
	if reattach != nil {
		// Reattach configs: hands each LLAWP the parent names to the
		// worker's link. A parent that closes the pipe is no reason to
		// stop (the watch tells that), so it waits for its interrupt,
		// which closes the pipe.
		done := make(chan struct{})
		g.Add(func() error {
			in.readReattach(reattach)
			<-done
			return nil
		}, func(error) {
			in.closeReattach()
			close(done)
		})
	}
	err := g.Run()
	if errors.Is(err, errParentGone) || ctx.Err() != nil {
		return nil // stopped by the parent, or the parent is gone
	}
	return err
}

// watchParent returns errParentGone once this process's parent is no
// longer ppid, or ctx's error.
func watchParent(ctx context.Context, ppid int) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if os.Getppid() != ppid {
			return errParentGone
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// attachLink is an httpd child's way to the LLAWP that its parent owns.
type attachLink struct {
	cfg ProcessConfig
	log zerolog.Logger

	linkedOnce sync.Once

	mu       sync.Mutex
	reattach string
	// changed is closed, and replaced, when reattach changes.
	changed chan struct{}
	att     *ipc.Attached
}

func newAttachLink(cfg ProcessConfig) *attachLink {
	return &attachLink{cfg: cfg, log: cfg.Log, changed: make(chan struct{})}
}

// setReattach takes the parent's word that the LLAWP is (now) this one:
// a connection to an earlier LLAWP is dropped, which ends its Watch, and
// the link registers with the new one.
func (a *attachLink) setReattach(cfg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cfg == a.reattach {
		return
	}
	a.reattach = cfg
	close(a.changed)
	a.changed = make(chan struct{})
	if a.att != nil {
		a.att.Close()
		a.att = nil
	}
}

// attached is the connection to the current LLAWP, dialled when needed;
// it waits for the parent to name an LLAWP (it launches it once every
// first child is through its HCO phase). The dial happens outside the
// lock and is bounded: an LLAWP that accepts and never answers (stopped,
// wedged) must not hold up Status or a new reattach config meanwhile.
func (a *attachLink) attached(ctx context.Context) (*ipc.Attached, error) {
	for {
		a.mu.Lock()
		if a.att != nil {
			att := a.att
			a.mu.Unlock()
			return att, nil
		}
		cfg, changed := a.reattach, a.changed
		a.mu.Unlock()
		if cfg == "" {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("the httpd parent has named no LLAWP yet: %w", ctx.Err())
			case <-changed:
				continue
			}
		}
		actx, cancel := context.WithTimeout(ctx, attachTimeout)
		att, err := ipc.Attach(actx, cfg)
		cancel()
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		switch {
		case a.reattach != cfg:
			// The parent named another LLAWP meanwhile: dial that one.
			a.mu.Unlock()
			att.Close()
			continue
		case a.att != nil:
			// Another caller got there first.
			mine := a.att
			a.mu.Unlock()
			att.Close()
			return mine, nil
		}
		a.att = att
		a.mu.Unlock()
		return att, nil
	}
}

// attachTimeout bounds one dial of the LLAWP.
const attachTimeout = 5 * time.Second

// drop forgets a connection that failed, so that the next try dials again.
func (a *attachLink) drop(att *ipc.Attached) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.att == att && att != nil {
		a.att.Close()
		a.att = nil
	}
}

func (a *attachLink) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.att != nil {
		a.att.Close()
		a.att = nil
	}
}

// aco waits for the LLAWP to finish its own HCO phase and takes its ACO.
func (a *attachLink) aco(ctx context.Context) (conf.ACO, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		att, err := a.attached(ctx)
		if err == nil {
			var st ipc.Status
			if st, err = att.Status(ctx); err == nil {
				switch {
				case st.ACO != nil:
					return conf.ACOFromProto(st.ACO)
				case st.Phase == ipc.PhaseFailed:
					return conf.ACO{}, fmt.Errorf("the LLAWP (pid %d) failed its startup: no ACO to take from it", st.PID)
				}
			} else {
				a.drop(att)
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("it has not finished its HCO phase")
			}
			return conf.ACO{}, fmt.Errorf("ACO from the LLAWP: %w (%v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *attachLink) status(ctx context.Context) (ipc.Status, error) {
	att, err := a.attached(ctx)
	if err != nil {
		return ipc.Status{}, err
	}
	st, err := att.Status(ctx)
	if err != nil {
		a.drop(att)
	}
	return st, err
}

func (a *attachLink) run(ctx context.Context, w worker, linked chan<- struct{}) {
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		started := time.Now()
		err := a.once(ctx, w, linked)
		if ctx.Err() != nil {
			return
		}
		wait := b.Failed(time.Since(started))
		a.log.Error().Err(err).Dur("retry_in", wait).Msg("Lost the LLAWP; authorization goes on, attaching again")
		if backoff.Wait(ctx, wait) != nil {
			return
		}
	}
}

// once is one registration with the LLAWP, until it goes away or ctx ends.
func (a *attachLink) once(ctx context.Context, w worker, linked chan<- struct{}) error {
	att, err := a.attached(ctx)
	if err != nil {
		return err
	}
	id, err := register(ctx, att, ipc.Worker{PID: os.Getpid(), Name: a.cfg.ProcName, Role: a.cfg.role()})
	if err != nil {
		a.drop(att)
		return fmt.Errorf("register with the LLAWP: %w", err)
	}
	a.log.Info().Int("llawp_pid", att.PID()).Msg("Registered with the LLAWP")
	err = registration{
		llawp: att, id: id, worker: w, log: a.log, forwarder: a.cfg.Forwarder, linkedOnce: &a.linkedOnce, linked: linked,
	}.keep(ctx)
	if ctx.Err() == nil {
		// The stream ended (or never started) with the LLAWP perhaps
		// still up: registering again makes a new id, and the old one
		// must not stay in its registry as a worker that is gone. A child
		// leaves the registry; it never stops the LLAWP.
		unregister(ctx, att, id)
		a.drop(att)
	}
	return err
}

// unregister leaves the LLAWP's registry, at best effort: an LLAWP that
// is gone has no registry to leave.
func unregister(ctx context.Context, l ipc.LLAWP, id ipc.WorkerID) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	l.Unregister(uctx, id)
}
