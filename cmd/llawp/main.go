// Command llawp is the low-level agent worker process (LLAWP.exe). The HLA
// starts it through hashicorp/go-plugin (ipc.Launch); it is never run by
// hand. It bootstraps and opens its own HCO sockets (the seed's second
// round), writes the agent log and trace log, polls DoManagement and relays
// the commands to the registered workers, and exits when its owner stops
// it, dies, or leaves it without workers for the linger time.
//
// Its standard output belongs to go-plugin's handshake: nothing here
// prints to it.
package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/cmdline"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/llawp"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/trace"
)

// llawpCmd is the command line, defined with the owner that passes it.
type llawpCmd struct {
	ipc.LLAWPFlags
}

func (c *llawpCmd) Validate() error {
	if c.Poll < 0 {
		return fmt.Errorf("--poll %v: must not be negative", c.Poll)
	}
	if c.ProcName != "" {
		if err := procname.Check(c.ProcName); err != nil {
			return fmt.Errorf("--proc-name: %w", err)
		}
	}
	return nil
}

var program = cmdline.Program{
	Name:    "llawp",
	Summary: "the low-level agent worker process (LLAWP), started by the web server through go-plugin, never by hand",
	Detail: "It bootstraps and opens its own sockets to the Policy Servers, writes WA.log and WATrace.log, polls DoManagement " +
		"and relays the commands to the web server's workers; it exits when its owner stops it, dies, or leaves it without workers for the linger time.",
	Options: []kong.Option{kong.Vars{
		"default_linger":    llawp.DefaultLinger.String(),
		"default_proc_name": llawp.DefaultProcName,
	}},
}

func main() {
	// Parsed first: --help and a usage error answer the same whoever runs it.
	var c llawpCmd
	program.Main(&c, os.Args[1:])
	if !ipc.LaunchedByOwner() {
		fmt.Fprintln(os.Stderr, ipc.NotLaunchedMessage)
		os.Exit(cmdline.ExitRuntime)
	}
	// Standard error leads to the owner, which may die first: a write
	// there must fail, not kill the LLAWP with SIGPIPE before it has said
	// why it leaves.
	signal.Ignore(syscall.SIGPIPE)
	// go-plugin's Serve swaps os.Stderr for a pipe of its own; the real one
	// is what the owner reads and parses as hclog JSON lines.
	stderr := ipc.PluginStderr(os.Stderr)
	if err := c.run(stderr); err != nil {
		// Run has told most of its errors in the agent log, whose warnings
		// and errors reach stderr already.
		if !errors.As(err, new(*llawp.LoggedError)) {
			name := cmp.Or(c.ProcName, llawp.DefaultProcName)
			l := zerolog.New(stderr).With().Timestamp().Str("proc", name).Int("pid", os.Getpid()).Logger()
			l.Error().Msg(err.Error())
		}
		os.Exit(cmdline.ExitRuntime)
	}
}

func (c *llawpCmd) run(stderr io.Writer) error {
	name := cmp.Or(c.ProcName, llawp.DefaultProcName)
	if err := procname.Set(name); err != nil {
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
	rec, err := trace.Open(c.Trace, c.Hosts, c.Source, trace.Options{Proc: name, Role: "llawp", Payload: c.TracePayload})
	if err != nil {
		return err
	}
	defer rec.Close()

	ctx, stop := llawp.StopOnSIGTERM(llawp.OwnerWatch{PID: ipc.OwnerPID()})
	defer stop()
	return llawp.Run(ctx, llawp.Config{
		WebAgent: c.WebAgent, Out: c.Out, Recorder: rec, Dialer: dialer, HostID: hostID,
		Poll: c.Poll, HealthPoll: c.HealthPoll, Linger: c.Linger, ProcName: name, AgentName: c.AgentName, AgentTrace: c.AgentTrace,
		Metrics: c.Metrics,
		Debug:   c.Debug, Stderr: stderr, OwnerPID: ipc.OwnerPID(),
	})
}
