package lab

// What each fault does to its Policy Server: the lab kills and restarts
// the smps process itself; smps carries out the others, told through its
// control API with fault.Client.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"syscall"

	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/notice"
)

// faultServerState is one Policy Server as the faults see it.
type faultServerState struct {
	ps      PolicyServer
	name    string // as the faults' records and messages name it
	addr    string // ip:port it listens on
	args    []string
	proc    *Proc // nil once killed
	control string
	ended   []*Proc // processes the faults killed or stopped
	started []*Proc // processes restarts started
	notes   map[*Proc]string
}

// faultServerArgs is called with each Policy Server's arguments before it
// starts: with faults, the server gets a control API on its own lab
// address (any port), and the lab keeps the arguments for restarts.
func (r *Run) faultServerArgs(ps PolicyServer, args []string) []string {
	if !r.hasFaults() {
		return args
	}
	if r.faults == nil {
		r.faults = &faultRunner{r: r, faults: r.Lab.Faults, servers: map[string]*faultServerState{}}
	}
	args = append(slices.Clone(args), "--control", r.Lab.Hosts[ps.Host]+":0")
	r.faults.servers[ps.Addr()] = &faultServerState{ps: ps, name: r.Lab.serverName(ps), addr: fmt.Sprintf("%s:%d", r.Lab.Hosts[ps.Host], ps.Port), args: args}
	return args
}

// faultServerStarted gives the faults the process of a server that
// faultServerArgs prepared. The process's name is its host, which two
// servers may share, so the server says which it is.
func (r *Run) faultServerStarted(ps PolicyServer, p *Proc) {
	if r.faults == nil {
		return
	}
	if s := r.faults.servers[ps.Addr()]; s != nil {
		s.proc = p
	}
}

// controlAddr is what smps printed before it said it was ready.
func controlAddr(p *Proc) (string, error) {
	for _, line := range p.Stdout() {
		if n, ok := notice.ParseKind(line, notice.ProgSmps, notice.Control); ok {
			return n.Addr, nil
		}
	}
	return "", fmt.Errorf("%s (pid %d) did not say where its control API is", p.Name, p.PID())
}

func (fr *faultRunner) kill(s *faultServerState, rec *FaultRecord, where string) error {
	p := s.proc
	if p == nil {
		return fmt.Errorf("%s is not running (killed by an earlier fault)", s.name)
	}
	rec.PID = p.PID()
	p.Kill()
	s.proc, s.control = nil, ""
	s.ended = append(s.ended, p)
	fr.note(s, p, "killed (SIGKILL) by the fault at "+where)
	rec.Result = fmt.Sprintf("pid %d killed (SIGKILL); %s refuses connections", rec.PID, s.addr)
	return nil
}

// restart starts the server again with the same arguments: same address,
// store, registrations file and logs (appended to); a new trace file, since
// traces are per process. A server still running is stopped first, with
// SIGTERM, as an administrator restarting it would.
func (fr *faultRunner) restart(s *faultServerState, rec *FaultRecord, where string) error {
	r := fr.r
	how := "started again"
	if p := s.proc; p != nil {
		rec.PID = p.PID()
		err := p.Stop(stopGrace)
		s.proc, s.control = nil, ""
		s.ended = append(s.ended, p)
		fr.note(s, p, "stopped (SIGTERM) for the restart at "+where)
		// An exit on the SIGTERM the lab sent is the stop it asked for.
		if err != nil && !endedBy(p, syscall.SIGTERM) {
			r.progress("stopping %s (pid %d) for its restart: %v", s.name, rec.PID, err)
		}
		how = fmt.Sprintf("pid %d stopped (SIGTERM) and started again", rec.PID)
	}
	stderr, err := os.OpenFile(r.path(s.ps.Host+".stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fr.files = append(fr.files, stderr)
	sctx, cancel := context.WithTimeout(fr.ctx, r.Opts.StartTimeout)
	defer cancel()
	p, err := r.start(sctx, ProcSpec{Name: s.ps.Host, Bin: r.bin("smps"), Args: s.args, Ready: notice.SmpsListening, Stderr: stderr, Role: rolePolicyServer},
		policyServerDown(s.ps.Host))
	if err != nil {
		return fmt.Errorf("%w (see %s)", err, r.path(s.ps.Host+".stderr"))
	}
	s.started = append(s.started, p)
	addr, err := controlAddr(p)
	if err != nil {
		p.Kill()
		s.ended = append(s.ended, p)
		fr.note(s, p, "killed: started without a control API")
		return err
	}
	s.proc, s.control = p, addr
	rec.NewPID = p.PID()
	rec.Result = fmt.Sprintf("%s: pid %d listens on %s", how, rec.NewPID, s.addr)
	return nil
}

// endedBy tells whether the exited process p was ended by sig, from its
// wait status.
func endedBy(p *Proc, sig syscall.Signal) bool {
	if p.Cmd.ProcessState == nil {
		return false
	}
	ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// note keeps why a fault ended p, for summary.json and the lab's trace.
func (fr *faultRunner) note(s *faultServerState, p *Proc, text string) {
	fr.r.recordStop(p, text)
	if s.notes == nil {
		s.notes = map[*Proc]string{}
	}
	s.notes[p] = text
}

// control has smps carry out a fault through its control API.
func (fr *faultRunner) control(s *faultServerState, a fault.Action, rec *FaultRecord) error {
	if s.proc == nil {
		return fmt.Errorf("%s is not running (killed by an earlier fault; restart it first)", s.name)
	}
	rec.PID = s.proc.PID()
	c := fault.Client{Addr: s.control, Name: fmt.Sprintf("%s (pid %d)", s.name, rec.PID), HTTP: fr.client}
	res, err := c.Apply(fr.ctx, a)
	if err != nil {
		return err
	}
	rec.Result = res.Done
	return nil
}
