package hla

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
)

// EnvChild marks a process as an httpd child of the Apache model and holds
// its parent's pid. An environment variable rather than a flag: a child is
// the same hla binary with the parent's own flags, and a user never
// starts one by hand.
const EnvChild = "AGENTLAB_HTTPD_CHILD"

// The files a child inherits (exec.Cmd.ExtraFiles: fd 3 onwards).
const (
	childListenerFD = 3 // the parent's HTTP listening socket
	childReadyFD    = 4 // write end of a pipe: one line when serving
)

// readyLine is what a child writes on its ready pipe once it serves.
const readyLine = "ready\n"

// Inherited is what an httpd child gets from its parent.
type Inherited struct {
	Listener  net.Listener
	ParentPID int
	// Reattach is the LLAWP's ipc.EnvReattach.
	Reattach string
	ready    *os.File
}

// Inherit takes the listening socket and the ready pipe that the parent
// passed, and the LLAWP's reattach config; ok is false when this process
// is not an httpd child.
func Inherit() (in *Inherited, ok bool, err error) {
	v := os.Getenv(EnvChild)
	if v == "" {
		return nil, false, nil
	}
	in = &Inherited{Reattach: os.Getenv(ipc.EnvReattach)}
	if _, err := fmt.Sscan(v, &in.ParentPID); err != nil || in.ParentPID <= 0 {
		return nil, true, fmt.Errorf("%s=%q: want the parent's pid", EnvChild, v)
	}
	// The variables are for this process only: not for anything it starts.
	os.Unsetenv(EnvChild)
	os.Unsetenv(ipc.EnvReattach)
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
	in.ready = os.NewFile(childReadyFD, "httpd ready pipe")
	return in, true, nil
}

// Ready tells the parent that this child serves.
func (in *Inherited) Ready() {
	if in.ready != nil {
		io.WriteString(in.ready, readyLine)
		in.ready.Close()
		in.ready = nil
	}
}

// linkWait bounds how long a child holds its readiness for its first
// watch of the LLAWP.
const linkWait = 5 * time.Second

// RunApacheChild runs one httpd child until ctx ends, its parent dies, or
// it has served cfg.MaxRequests: the same worker as the IIS model's
// (bootstrap, HCO phase, its own pool, the agent), on the parent's
// listening socket, joined to the parent's LLAWP with ipc.Attach, which
// cannot stop it.
func RunApacheChild(ctx context.Context, cfg ProcessConfig, in *Inherited) error {
	if in.Reattach == "" {
		return fmt.Errorf("no LLAWP to attach to: %s is empty", ipc.EnvReattach)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Pdeathsig is the first guard against outliving the parent; this
	// covers a parent that died before it took effect.
	go watchParent(ctx, in.ParentPID, func() {
		cfg.Log.Warn().Int("parent_pid", in.ParentPID).Msg("The httpd parent is gone: exiting")
		cancel(errors.New("the httpd parent is gone"))
	})
	cfg.Listener = in.Listener
	ready := cfg.Ready
	cfg.Ready = func(addr string) {
		in.Ready()
		if ready != nil {
			ready(addr)
		}
	}
	link := &attachLink{cfg: cfg, reattach: in.Reattach, log: cfg.Log}
	defer link.close()
	err := runWorker(ctx, cfg, link, linkWait)
	if ctx.Err() != nil {
		return nil // stopped by the parent, or the parent is gone
	}
	return err
}

func watchParent(ctx context.Context, ppid int, gone func()) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if os.Getppid() != ppid {
			gone()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// attachLink is an httpd child's way to the LLAWP that its parent owns.
type attachLink struct {
	cfg      ProcessConfig
	reattach string
	log      zerolog.Logger

	linkedOnce sync.Once

	mu  sync.Mutex
	att *ipc.Attached
}

func (a *attachLink) attached(ctx context.Context) (*ipc.Attached, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.att != nil {
		return a.att, nil
	}
	att, err := ipc.Attach(ctx, a.reattach)
	if err != nil {
		return nil, err
	}
	a.att = att
	return att, nil
}

// drop forgets a connection that failed, so that the next try dials again.
func (a *attachLink) drop(att *ipc.Attached) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.att == att {
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
				case st.Phase == "failed":
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

func (a *attachLink) run(ctx context.Context, agent *Agent, linked chan<- struct{}) {
	backoff, maxB := 100*time.Millisecond, 10*time.Second
	for ctx.Err() == nil {
		started := time.Now()
		err := a.once(ctx, agent, linked)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > maxB {
			backoff = 100 * time.Millisecond
		}
		a.log.Error().Err(err).Dur("retry_in", backoff).Msg("Lost the LLAWP; authorization goes on, attaching again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxB)
	}
}

// once is one registration with the LLAWP, until it goes away or ctx ends.
func (a *attachLink) once(ctx context.Context, agent *Agent, linked chan<- struct{}) error {
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
	if a.cfg.Forwarder != nil {
		a.cfg.Forwarder.SetWorker(id)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	events, err := att.Watch(wctx, id)
	if err != nil {
		unregister(ctx, att, id)
		a.drop(att)
		return fmt.Errorf("watch the LLAWP: %w", err)
	}
	if linked != nil {
		a.linkedOnce.Do(func() { close(linked) })
	}
	if a.cfg.Forwarder != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.cfg.Forwarder.Forward(wctx, att); err != nil && wctx.Err() == nil {
				a.log.Warn().Err(err).Msg("Log stream to the LLAWP broke; records are kept until it is back")
			}
		}()
	}
	for {
		select {
		case ev, ok := <-events:
			if ok {
				applyEvent(a.log, agent, ev)
				continue
			}
			if ctx.Err() == nil {
				// Registering again makes a new id: the old one must not
				// stay in the LLAWP's registry as a worker that is gone.
				unregister(ctx, att, id)
				a.drop(att)
				return errors.New("the LLAWP closed its event stream")
			}
		case <-ctx.Done():
		}
		// A child leaves the LLAWP's registry; it never stops the LLAWP.
		unregister(ctx, att, id)
		return ctx.Err()
	}
}

// unregister leaves the LLAWP's registry, at best effort: an LLAWP that
// is gone has no registry to leave.
func unregister(ctx context.Context, l ipc.LLAWP, id ipc.WorkerID) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	l.Unregister(uctx, id)
}
