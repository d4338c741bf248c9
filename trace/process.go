package trace

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// Process is the subject of a process-lifecycle event (OpProcessCreate,
// OpProcessExit): which process, started by whom, and how it ended. It
// is what the supervisor saw (exec, wait4), as Process Monitor's Process
// Create and Process Exit rows are what Windows saw.
type Process struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	Role string `json:"role,omitempty"`
	// Image is the binary's path, CommandLine its argv joined by spaces:
	// Process Monitor's Path and "Command line" of a Process Create.
	Image       string `json:"image,omitempty"`
	CommandLine string `json:"command_line,omitempty"`
	Parent      string `json:"parent,omitempty"`
	ParentPID   int    `json:"parent_pid,omitempty"`
	// Exit is set on OpProcessExit.
	Exit *Exit `json:"exit,omitempty"`
}

// Exit is how a process ended, from its wait status and resource usage.
type Exit struct {
	// At is when its supervisor saw it end (wait returned): the time of
	// its Process Exit row and of the lab's list of deaths, one clock.
	At time.Time `json:"at,omitzero"`
	// Code is the exit status, -1 when a signal ended the process.
	Code int `json:"code"`
	// Signal names the signal that ended it (SIGKILL), if one did.
	Signal string `json:"signal,omitempty"`
	// UserTime, KernelTime and PeakRSS (bytes) are the process's own
	// rusage: Process Monitor's User Time, Kernel Time, Peak Working Set.
	UserTime   time.Duration `json:"user_time,omitempty"`
	KernelTime time.Duration `json:"kernel_time,omitempty"`
	PeakRSS    int64         `json:"peak_rss,omitempty"`
	// Death is true when nobody asked it to stop: not a shutdown, not a
	// recycling. A lab reports every death as it happens.
	Death bool `json:"death,omitempty"`
	// Action is what its supervisor did about it, for people: "WAS starts
	// a new w3wp.exe", "the application pool is stopped (rapid-fail
	// protection)".
	Action string `json:"action,omitempty"`
}

// ExitOf reads a finished process's wait status and resource usage.
func ExitOf(ps *os.ProcessState) *Exit {
	if ps == nil {
		return nil
	}
	e := &Exit{At: time.Now(), Code: ps.ExitCode(), UserTime: ps.UserTime(), KernelTime: ps.SystemTime()}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = SignalName(ws.Signal())
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru != nil {
		e.PeakRSS = ru.Maxrss * 1024 // Linux reports kilobytes
	}
	return e
}

// Status is the end as a sentence's predicate: "was killed by signal 9
// (SIGKILL)", "exited with code 1".
func (e *Exit) Status() string {
	if e == nil {
		return "exited"
	}
	if e.Signal != "" {
		if n, ok := signalNumbers[e.Signal]; ok {
			return fmt.Sprintf("was killed by signal %d (%s)", n, e.Signal)
		}
		return "was killed by " + e.Signal
	}
	return fmt.Sprintf("exited with code %d", e.Code)
}

// String is "w3wp.exe (pid 4246) was killed by signal 9 (SIGKILL)".
func (p *Process) String() string {
	if p == nil {
		return "a process"
	}
	s := fmt.Sprintf("%s (pid %d)", p.Name, p.PID)
	if p.Exit != nil {
		s += " " + p.Exit.Status()
	}
	return s
}

// SignalName is the signal's C name, SIGKILL rather than Go's "killed".
func SignalName(s syscall.Signal) string {
	for name, n := range signalNumbers {
		if syscall.Signal(n) == s {
			return name
		}
	}
	return fmt.Sprintf("signal %d", int(s))
}

// signalNumbers are the signals a learner meets here (kill, Ctrl-C,
// crashes), by name.
var signalNumbers = map[string]int{
	"SIGHUP": int(syscall.SIGHUP), "SIGINT": int(syscall.SIGINT), "SIGQUIT": int(syscall.SIGQUIT),
	"SIGILL": int(syscall.SIGILL), "SIGABRT": int(syscall.SIGABRT), "SIGBUS": int(syscall.SIGBUS),
	"SIGFPE": int(syscall.SIGFPE), "SIGKILL": int(syscall.SIGKILL), "SIGSEGV": int(syscall.SIGSEGV),
	"SIGPIPE": int(syscall.SIGPIPE), "SIGTERM": int(syscall.SIGTERM), "SIGUSR1": int(syscall.SIGUSR1),
	"SIGUSR2": int(syscall.SIGUSR2),
}

// ProcessCreate records that this process started child (Process
// Monitor's Process Create: the parent's row, naming the child).
func (r *Recorder) ProcessCreate(child Process) {
	child.Exit = nil
	r.Emit(Event{Op: OpProcessCreate, Process: &child})
}

// ProcessExit records that child ended, as its supervisor saw it. The
// row is the child's (its name, pid and role), as Process Monitor shows a
// Process Exit, though this process wrote it: the child cannot.
func (r *Recorder) ProcessExit(child Process) {
	if r == nil || r.w == nil {
		return
	}
	e := Event{Op: OpProcessExit, Process: &child}
	if child.Exit != nil {
		e.T = child.Exit.At
	}
	r.emitAs(e, child.Name, child.PID, child.Role)
}
