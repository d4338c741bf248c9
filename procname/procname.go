// Package procname gives agentlab's processes the names of the product's
// processes, so that a learner checking with the system's own tools (ps,
// top, ss -tnp, /proc/PID/comm and /proc/PID/cmdline) sees w3wp.exe and
// LLAWP.exe, or httpd and LLAWP, as on the vendor's hosts, and the same
// names as the traces.
//
// Two names matter, and each has its own mechanism:
//
//   - the command name (comm: ps -o comm, top, ss -tnp, the process's
//     /proc/PID/stat), which the kernel takes from the executable's file
//     name at exec: the process sets it itself, with Set, once it knows
//     its name;
//   - argv[0] (ps -ef, ps -o args, /proc/PID/cmdline), which is what its
//     starter passed: every launch site builds its exec.Cmd with Command.
package procname

import (
	"fmt"
	"os/exec"
)

// The product's process names.
const (
	// IISWorker is the IIS worker process (the IIS model's hla).
	IISWorker = "w3wp.exe"
	// IISLLAWP is the LLAWP on IIS, a Windows executable.
	IISLLAWP = "LLAWP.exe"
	// Httpd is Apache's parent and each of its children (the Apache
	// model's hla).
	Httpd = "httpd"
	// ApacheLLAWP is the LLAWP on an Apache host: a Unix binary, no .exe.
	ApacheLLAWP = "LLAWP"
	// WAS is the IIS model's parent: Windows runs the Windows Process
	// Activation Service, which starts w3wp.exe, in svchost.exe.
	WAS = "svchost.exe"
	// PolicyServer keeps its own name: it is agentlab's, not the vendor's
	// (smpolicysrv), and it runs on no agent host.
	PolicyServer = "smps"
)

// WebServer names one web server model's agent processes.
type WebServer struct {
	Parent string // svchost.exe (WAS); httpd
	Worker string // w3wp.exe; httpd (the parent and every child)
	LLAWP  string
}

// Model is the names of the lab's web server model: "apache" or "iis"
// (anything else is IIS, the lab's default).
func Model(model string) WebServer {
	if model == "apache" {
		return WebServer{Parent: Httpd, Worker: Httpd, LLAWP: ApacheLLAWP}
	}
	return WebServer{Parent: WAS, Worker: IISWorker, LLAWP: IISLLAWP}
}

// MaxLen is the longest command name the kernel keeps (TASK_COMM_LEN less
// its NUL): a longer one would be cut, and the tools would not show the
// name the traces use.
const MaxLen = 15

// Check tells whether name can be a command name as it is.
func Check(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("a process name cannot be empty")
	case len(name) > MaxLen:
		return fmt.Errorf("process name %q has %d bytes; the system keeps %d", name, len(name), MaxLen)
	}
	return nil
}

// Set makes name this process's command name. On Linux it writes
// /proc/self/comm, which names the thread-group leader whichever thread
// writes it (ps, top and ss read the leader's), and then every thread's
// own comm, so that threads started later, which inherit the name of the
// thread that starts them, have it too (top -H, ps -L). Elsewhere it does
// nothing.
func Set(name string) error {
	if err := Check(name); err != nil {
		return err
	}
	return set(name)
}

// Command is exec.Command(path, args...) with argv[0] set to name: the
// process then reads as `name args...` in ps -ef and /proc/PID/cmdline,
// whatever its binary's file name. The binary is still found by path.
func Command(path, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	if name != "" {
		cmd.Args[0] = name
	}
	return cmd
}
