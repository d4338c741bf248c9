// Command hla is a web server worker with the high-level agent: in the IIS
// model one process, shown as w3wp.exe, that bootstraps, pools its sockets
// to the Policy Servers, serves HTTP through the agent and launches the
// LLAWP through go-plugin; in the Apache model an httpd parent that owns
// the listening socket and the LLAWP, and N httpd children (this binary
// again, marked by hla.EnvChild) that each do what w3wp.exe does, on the
// parent's socket and with the parent's LLAWP.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/cmdline"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/hla"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/logging"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/trace"
)

// hlaCmd is the command line. The Apache model's parent starts its
// children with the same arguments.
type hlaCmd struct {
	WebAgent     string        `name:"webagent" default:"WebAgent.conf" placeholder:"FILE" help:"The web server instance's WebAgent.conf."`
	Listen       string        `default:"127.0.0.1:8080" placeholder:"ADDR" help:"HTTP address to serve on (a name must be in --hosts)."`
	Model        string        `default:"iis" enum:"iis,apache" help:"Process model: iis (one w3wp.exe) or apache (an httpd parent and its children)."`
	ProcName     string        `placeholder:"NAME" help:"Process name in traces, logs and the system's process list (default: w3wp.exe, or httpd for apache)."`
	Workers      int           `default:"3" placeholder:"N" help:"Apache: number of httpd children."`
	MPM          string        `name:"mpm" default:"prefork" enum:"prefork,worker" help:"Apache: prefork (one request at a time per child) or worker (many goroutines over one pool)."`
	MaxRequests  int           `name:"max-requests-per-child" placeholder:"N" help:"Apache: a child exits after this many HTTP requests and a new one starts (0: never), like MaxConnectionsPerChild."`
	ACOFromLLAWP bool          `name:"aco-from-llawp" help:"Apache: children take the ACO from the LLAWP, not from a Policy Server."`
	LLAWP        string        `name:"llawp" placeholder:"FILE" help:"The llawp binary (default: next to this one)."`
	Out          string        `default:"." placeholder:"DIR" help:"Folder for the logs (this process's, and the LLAWP's WA.log)."`
	Trace        string        `placeholder:"DIR" help:"Folder for the socket traces."`
	TracePayload bool          `help:"Keep the bytes of each send and receive in the trace."`
	Hosts        string        `placeholder:"FILE" help:"The lab's hosts file: resolves and names the lab's hosts."`
	Source       string        `placeholder:"IP" help:"Local IP address to connect from (the web server host's lab address)."`
	Poll         time.Duration `help:"Override the ACO's PSPollInterval (labs)."`
	HealthPoll   time.Duration `help:"How often the agent retries Policy Servers that are down (0: 30s; negative: never), here and in the LLAWP."`
	LLAWPLinger  time.Duration `name:"llawp-linger" help:"How long the LLAWP lingers with no worker (0: its default)."`
	Upstream     string        `placeholder:"URL" help:"Application URL behind the agent (default: the built-in site)."`
	Metrics      string        `placeholder:"ADDR" help:"Serve Prometheus's /metrics on this loopback address: the workers' socket pools, labelled by pid; the LLAWP serves its own on a port of its own. Each address is printed as \"<prog>: metrics on ADDR\"."`
	// WAS's rapid-fail protection (IIS model).
	RapidFailCrashes  int           `name:"rapid-fail-crashes" placeholder:"N" help:"IIS: worker failures within --rapid-fail-interval that make WAS stop the application pool and answer 503 (0: IIS's 5; negative: never)."`
	RapidFailInterval time.Duration `name:"rapid-fail-interval" help:"IIS: the window of rapid-fail protection (0: IIS's 5m)."`
}

// apacheOnly are the flags that mean nothing to the IIS model.
var apacheOnly = []string{"workers", "mpm", "max-requests-per-child", "aco-from-llawp"}

func (c *hlaCmd) Validate(kctx *kong.Context) error {
	var misused []string
	for _, el := range kctx.Path {
		if el.Flag != nil && slices.Contains(apacheOnly, el.Flag.Name) && c.Model != "apache" {
			misused = append(misused, "--"+el.Flag.Name)
		}
	}
	switch {
	case len(misused) > 0:
		return fmt.Errorf("%s: only for --model apache", strings.Join(misused, ", "))
	case c.Workers < 1:
		return fmt.Errorf("--workers %d: want at least 1", c.Workers)
	case c.MaxRequests < 0:
		return fmt.Errorf("--max-requests-per-child %d: must not be negative", c.MaxRequests)
	}
	if c.ProcName != "" {
		if err := procname.Check(c.ProcName); err != nil {
			return fmt.Errorf("--proc-name: %w", err)
		}
	}
	if c.Upstream != "" {
		if u, err := url.Parse(c.Upstream); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("--upstream %q: want an absolute URL such as http://127.0.0.1:9000", c.Upstream)
		}
	}
	return nil
}

var program = cmdline.Program{
	Name:    "hla",
	Summary: "a web server with the high-level agent: w3wp.exe (IIS model) or httpd and its children (Apache model)",
	Detail: "It bootstraps, pools its sockets to the Policy Servers, serves HTTP through the agent and launches the LLAWP through go-plugin. " +
		"Prints \"hla: serving http://ADDR\" once it serves; stops on SIGTERM or Ctrl-C.",
}

func main() {
	var c hlaCmd
	program.Main(&c, os.Args[1:])
	program.Exit(c.run(os.Args[1:]))
}

func (c *hlaCmd) run(args []string) error {
	in, child, err := hla.Inherit()
	if err != nil {
		return err
	}
	// The lab starts the parent (WAS in svchost.exe, or the httpd
	// parent), which starts the workers: this same binary, marked as a
	// child.
	self := hla.ProcessIdentity(c.Model, child, c.ProcName)
	role, procName := self.Role, self.Name
	parent := !child
	if err := procname.Set(procName); err != nil {
		return err
	}
	var up *url.URL
	if c.Upstream != "" {
		up, _ = url.Parse(c.Upstream) // checked by Validate
	}
	llawp, err := hla.NewLLAWPConfig(hla.LLAWPOptions{
		Model: c.Model, Path: c.LLAWP, WebAgent: c.WebAgent, Out: c.Out, Trace: c.Trace, TracePayload: c.TracePayload,
		Hosts: c.Hosts, Source: c.Source, Poll: c.Poll, HealthPoll: c.HealthPoll, Linger: c.LLAWPLinger, Stderr: os.Stderr,
		Metrics: c.Metrics,
	})
	if err != nil {
		return err
	}
	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	dialer, err := trace.LocalDialer(c.Source)
	if err != nil {
		return fmt.Errorf("--source: %w", err)
	}
	// A parent opens no socket of its own to a Policy Server: its trace
	// holds the processes it started and reaped.
	rec, err := trace.Open(c.Trace, c.Hosts, c.Source, trace.Options{Proc: procName, Role: role, Payload: c.TracePayload})
	if err != nil {
		return err
	}
	defer rec.Close()
	// A name, never looked up in DNS: the lab's hosts file has it or it
	// is an error.
	listen, err := rec.Hosts().Resolve(c.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return err
	}
	base := filepath.Join(c.Out, fmt.Sprintf("%s-%d", procName, os.Getpid()))
	// The worker's records go to its own file and, through the LLAWP, to WA.log.
	fwd := ipc.NewLogForwarder(0)
	var fwdW io.Writer = fwd
	if parent {
		// Not a worker: it never registers, so its records have no way
		// to WA.log; its own file and stderr are enough.
		fwdW = nil
	}
	log, err := logging.New(logging.Options{Proc: procName, Role: role, File: base + ".log", JSON: fwdW, Append: true, Level: zerolog.InfoLevel})
	if err != nil {
		return err
	}
	defer log.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Whoever started the web server (a lab) reads these lines: when it
	// serves, and every death among its processes.
	say := func(n notice.Notice) { notice.Write(os.Stdout, n) }
	ready := func(addr string) {
		say(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Serving, Addr: "http://" + addr})
	}
	worker := hla.ProcessConfig{
		WebAgent: c.WebAgent, Listen: listen, HostID: hostID, Recorder: rec, Dialer: dialer,
		ProcName: procName, Log: log.Logger, Forwarder: fwd, Upstream: up, LLAWP: llawp, Ready: ready,
		HealthPoll: c.HealthPoll,
	}
	if c.Metrics != "" {
		// Every worker serves its own pool's on a port of its own; the
		// parent serves them all on --metrics.
		host, _, err := net.SplitHostPort(c.Metrics)
		if err != nil {
			return fmt.Errorf("--metrics %q: want host:port: %w", c.Metrics, err)
		}
		worker.Metrics = net.JoinHostPort(host, "0")
	}
	switch {
	case child && c.Model == hla.ModelApache:
		worker.Ready = nil // the parent says when the web server serves
		worker.ACOFromLLAWP, worker.Prefork, worker.MaxRequests = c.ACOFromLLAWP, c.MPM == "prefork", c.MaxRequests
		err = hla.RunApacheChild(ctx, worker, in)
	case child:
		err = hla.RunIISChild(ctx, worker, in)
	default:
		exe, xerr := os.Executable()
		if xerr != nil {
			return xerr
		}
		pc := hla.ParentConfig{
			WebAgent: c.WebAgent, Listen: listen, Workers: c.Workers, Log: log.Logger, LLAWP: llawp, Stderr: os.Stderr, Ready: ready,
			Child: hla.ChildCommand{Path: exe, Name: hla.ProcessIdentity(c.Model, true, "").Name, Args: args}, Recorder: rec, Notify: say,
			RapidFail: hla.RapidFail{MaxCrashes: c.RapidFailCrashes, Interval: c.RapidFailInterval}, Metrics: c.Metrics,
		}
		if c.Model == hla.ModelApache {
			err = hla.RunApache(ctx, pc)
		} else {
			err = hla.RunWAS(ctx, pc)
		}
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
