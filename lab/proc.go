package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
)

// Proc is a process the lab started.
type Proc struct {
	Name string // what the lab calls it: smps1.shared.lab, smreghost, ...
	Role string // its role in the lab's trace: policyserver, web
	Cmd  *exec.Cmd

	done    chan struct{}
	waitErr error

	// stopping is set before the lab stops or kills the process: its exit
	// is then no death; nor is an exit before it was ready (ready unset),
	// which Start reports as its error.
	stopping, started atomic.Bool

	mu     sync.Mutex
	stdout []string
	ready  chan notice.Notice
}

// ProcSpec is how to start one.
type ProcSpec struct {
	Name string
	Role string
	// Arg0 is the process's argv[0], the product's name (svchost.exe,
	// httpd), which ps -ef shows; "" is Bin.
	Arg0 string
	Bin  string
	Args []string
	Env  []string
	// Ready is the notice that says the process is serving (Prog and
	// Kind); the zero Notice means ready at once.
	Ready notice.Notice
	// Stderr receives the process's standard error.
	Stderr io.Writer
	// OnNotice is told every other notice the process prints (a web
	// server's deaths and replacements), as it prints it.
	OnNotice func(notice.Notice)
	// OnStart is called once the process runs, before it is ready.
	OnStart func(*Proc)
	// OnDeath is called when the process exits without the lab having
	// stopped or killed it.
	OnDeath func(*Proc)
}

// Start runs a process that dies with the lab (Pdeathsig), so that a lab
// killed with SIGKILL leaves nothing behind, and waits until it prints its
// ready line, exits, or ctx ends.
func Start(ctx context.Context, s ProcSpec) (*Proc, error) {
	cmd := procname.Command(s.Bin, s.Arg0, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stderr = s.Stderr
	// A process group of its own: a Ctrl-C at the terminal (or timeout's
	// SIGTERM to its group) reaches only the lab, which stops everything
	// in its order, web server first; a process that exits before the lab
	// asks is then a death, never the terminal's doing.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", s.Name, s.Bin, err)
	}
	p := &Proc{Name: s.Name, Role: s.Role, Cmd: cmd, done: make(chan struct{}), ready: make(chan notice.Notice, 1)}
	p.started.Store(s.Ready.Kind == "")
	if s.OnStart != nil {
		s.OnStart(p)
	}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 4096), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stdout = append(p.stdout, line)
			p.mu.Unlock()
			n, ok := notice.Parse(line)
			switch {
			case !ok:
			case s.Ready.Kind != "" && n.Prog == s.Ready.Prog && n.Kind == s.Ready.Kind:
				p.started.Store(true)
				select {
				case p.ready <- n:
				default:
				}
			case s.OnNotice != nil:
				s.OnNotice(n)
			}
		}
	}()
	go func() {
		<-scanDone // Wait closes the pipe: read it all first.
		p.waitErr = cmd.Wait()
		close(p.done)
		if p.started.Load() && !p.stopping.Load() && s.OnDeath != nil {
			s.OnDeath(p)
		}
	}()
	if s.Ready.Kind == "" {
		return p, nil
	}
	select {
	case <-p.ready:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before it was ready: %v", s.Name, p.exitText())
	case <-ctx.Done():
		p.Kill()
		return nil, fmt.Errorf("%s not ready: %w", s.Name, ctx.Err())
	}
}

// PID is the process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Stdout is what the process printed so far.
func (p *Proc) Stdout() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stdout...)
}

// Wait waits for the process to exit.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

func (p *Proc) exitText() string {
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// Stop asks the process to stop (SIGTERM) and kills it if it has not
// exited within grace.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	p.stopping.Store(true)
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.Name, grace)
	}
}

func (p *Proc) exitErr() error {
	if p.waitErr == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return fmt.Errorf("%s (pid %d): %v", p.Name, p.PID(), ee)
	}
	return p.waitErr
}

// Kill kills the process and waits for it.
func (p *Proc) Kill() {
	p.stopping.Store(true)
	p.Cmd.Process.Kill()
	<-p.done
}
