package hla

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/agentlab/agentlab/backoff"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/trace"
)

// The Apache parent's LLAWP: it launches the one LLAWP of the web server
// once every first child is through its HCO phase, names it to every
// child (their reattach pipe), and starts a new one when it dies.

// llawpProcess is a launched LLAWP as a trace and a notice name it.
func llawpProcess(o *ipc.Owner, name, parent string) trace.Process {
	path, args := o.Command()
	return trace.Process{
		Name: name, PID: o.PID(), Role: "llawp", Image: path, CommandLine: strings.Join(args, " "),
		Parent: parent, ParentPID: os.Getpid(),
	}
}

// runLLAWP is the Apache parent's LLAWP actor: it waits for run to want
// the LLAWP, launches it, starts a new one each time it dies, and stops it
// when ctx ends. A first launch that fails is the web server's error.
func (p *parent) runLLAWP(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-p.llawpWanted:
	}
	o, err := p.launchLLAWP(ctx, false)
	if err != nil {
		return err
	}
	p.superviseLLAWP(ctx, o)
	p.killLLAWP()
	p.announcing.Wait()
	return nil
}

// launchLLAWP starts an LLAWP; again says it replaces one that died, which
// whoever started the web server is told.
func (p *parent) launchLLAWP(ctx context.Context, again bool) (*ipc.Owner, error) {
	o, err := ipc.Launch(ctx, ipc.LaunchConfig{
		Path: p.cfg.LLAWP.Path, Name: p.cfg.LLAWP.name(), Args: p.cfg.LLAWP.Args, Env: p.cfg.LLAWP.Env,
		Stderr: p.cfg.LLAWP.Stderr, Logger: p.log,
	})
	if err != nil {
		return nil, fmt.Errorf("launch LLAWP: %w", err)
	}
	p.log.Info().Int("llawp_pid", o.PID()).Msg("LLAWP started")
	proc := llawpProcess(o, p.cfg.LLAWP.name(), p.name)
	p.cfg.Recorder.ProcessCreate(proc)
	if again {
		p.notify(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Started, Process: &proc})
	}
	if p.cfg.LLAWP.metrics {
		p.announcing.Go(func() { announceLLAWPMetrics(ctx, o.LLAWP(), o.Exited(), p.notify) })
	}
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

// killLLAWP stops the LLAWP at the web server's end, and records its exit
// (not a death: the parent stopped it).
func (p *parent) killLLAWP() {
	p.mu.Lock()
	o := p.llawp
	p.mu.Unlock()
	if o != nil {
		o.Kill()
		p.exited(llawpProcess(o, p.cfg.LLAWP.name(), p.name), o.ExitState(), false, "stopped with the web server")
	}
}

// superviseLLAWP starts a new LLAWP when the one running dies; every child
// is sent its reattach config and registers with it. Meanwhile the
// children go on serving, without management events.
func (p *parent) superviseLLAWP(ctx context.Context, o *ipc.Owner) {
	b := p.cfg.LLAWP.backoff()
	for {
		started := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-o.Exited():
		}
		o.Kill() // reaps it
		p.mu.Lock()
		p.llawp, p.reattach = nil, ""
		p.mu.Unlock()
		wait := b.Failed(time.Since(started))
		p.log.Error().Int("llawp_pid", o.PID()).Dur("restart_in", wait).Msg("LLAWP is gone; the children go on serving, a new LLAWP will be started")
		p.exited(llawpProcess(o, p.cfg.LLAWP.name(), p.name), o.ExitState(), true,
			fmt.Sprintf("the children go on serving; %s (pid %d) starts a new LLAWP in %s", p.name, os.Getpid(), wait))
		for {
			if backoff.Wait(ctx, wait) != nil {
				return
			}
			nu, err := p.launchLLAWP(ctx, true)
			if err == nil {
				o = nu
				break
			}
			p.log.Error().Err(err).Msg("Could not start a new LLAWP")
			wait = b.Next()
		}
	}
}
