package hla

import (
	"cmp"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/procname"
)

// What the hla command line decides beyond wiring: which process this is,
// and what its LLAWP is started with. Here rather than in cmd/hla, so that
// tests reach it.

// Identity is a web server process's name (in traces, logs and the
// system's process list) and role.
type Identity struct {
	Name, Role string
}

// ProcessIdentity is who an hla process of model is: the parent the lab
// starts (WAS in svchost.exe, or the httpd parent), or, with child, one of
// the workers it starts (w3wp.exe, an httpd child), named procName when
// that is set (--proc-name names the workers only).
func ProcessIdentity(model string, child bool, procName string) Identity {
	names := procname.Model(model)
	switch {
	case child:
		return Identity{Name: cmp.Or(procName, names.Worker), Role: RoleWorker}
	case model == ModelApache:
		return Identity{Name: names.Parent, Role: RoleHTTPDParent}
	default:
		return Identity{Name: names.Parent, Role: RoleWAS}
	}
}

// LLAWPOptions are the web server's own settings that its LLAWP shares:
// what hla's command line forwards to llawp's.
type LLAWPOptions struct {
	Model string // ModelIIS or ModelApache
	// Path is the llawp binary; "" is "llawp" next to this program.
	Path     string
	WebAgent string
	Out      string
	// Trace is the folder for the socket traces; "" traces nothing, and
	// TracePayload then means nothing either.
	Trace        string
	TracePayload bool
	Hosts        string
	Source       string
	// Poll overrides the ACO's PSPollInterval when positive.
	Poll       time.Duration
	HealthPoll time.Duration
	// Linger is the LLAWP's linger with no worker; 0 is its default in
	// the IIS model and forever in the Apache model (see NewLLAWPConfig).
	Linger time.Duration
	Stderr io.Writer
	// Metrics is hla's --metrics: the LLAWP then serves its own pool's
	// on a port of its own on the same host, which its owner announces.
	Metrics string
}

// NewLLAWPConfig is how this web server starts its LLAWP: the llawp binary
// and its command line (ipc.LLAWPFlags), under the model's process name.
func NewLLAWPConfig(o LLAWPOptions) (LLAWPConfig, error) {
	path := o.Path
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return LLAWPConfig{}, err
		}
		path = filepath.Join(filepath.Dir(exe), "llawp")
	}
	name := procname.Model(o.Model).LLAWP
	f := llawpFlags(o, name)
	return LLAWPConfig{Path: path, Name: name, Args: f.Args(), Stderr: o.Stderr, metrics: f.Metrics != ""}, nil
}

func llawpFlags(o LLAWPOptions, name string) ipc.LLAWPFlags {
	f := ipc.LLAWPFlags{
		WebAgent: o.WebAgent, Out: o.Out, ProcName: name, Hosts: o.Hosts, Source: o.Source,
		HealthPoll: o.HealthPoll, Linger: o.Linger,
	}
	if o.Trace != "" {
		f.Trace, f.TracePayload = o.Trace, o.TracePayload
	}
	if o.Poll > 0 {
		f.Poll = o.Poll
	}
	if host, _, err := net.SplitHostPort(o.Metrics); err == nil {
		// --metrics is the parent's address: the LLAWP takes a port of
		// its own there. (A malformed one is the parent's error.)
		f.Metrics = net.JoinHostPort(host, "0")
	}
	if o.Linger <= 0 && o.Model == ModelApache {
		// The parent owns the LLAWP and stops it at shutdown; a lull with
		// no child registered (all recycling at once) must not end it, or
		// the children still running would hold a dead reattach config.
		f.Linger = -time.Nanosecond
	}
	return f
}
