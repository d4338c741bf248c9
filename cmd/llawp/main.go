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
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/llawp"
	"github.com/agentlab/agentlab/trace"
)

func main() {
	if !ipc.LaunchedByOwner() {
		fmt.Fprintln(os.Stderr, ipc.NotLaunchedMessage)
		os.Exit(1)
	}
	// Standard error leads to the owner, which may die first: a write
	// there must fail, not kill the LLAWP with SIGPIPE before it has said
	// why it leaves.
	signal.Ignore(syscall.SIGPIPE)
	// go-plugin's Serve swaps os.Stderr for a pipe of its own; the real one
	// is what the owner reads and parses as hclog JSON lines.
	stderr := ipc.PluginStderr(os.Stderr)
	if err := mainErr(os.Args[1:], stderr); err != nil {
		// Run has told most of its errors in the agent log, whose warnings
		// and errors reach stderr already.
		if !errors.As(err, new(*llawp.LoggedError)) {
			l := zerolog.New(stderr).With().Timestamp().Str("proc", "LLAWP.exe").Int("pid", os.Getpid()).Logger()
			l.Error().Msg(err.Error())
		}
		os.Exit(1)
	}
}

func mainErr(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("llawp", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	webAgent := fs.String("webagent", "", "WebAgent.conf of this web server instance (required)")
	out := fs.String("out", ".", "folder for the agent log and trace log (WA.log, WATrace.log)")
	traceDir := fs.String("trace", "", "folder for this process's socket trace")
	payload := fs.Bool("trace-payload", false, "keep the bytes of each send and receive in the socket trace")
	hostsFile := fs.String("hosts", "", "the lab's hosts file: resolves and names the lab's hosts")
	source := fs.String("source", "", "local IP address to connect from (the web server host's lab address)")
	poll := fs.Duration("poll", 0, "DoManagement poll period; 0 takes the ACO's PSPollInterval")
	healthPoll := fs.Duration("health-poll", 0, "how often to retry Policy Servers that are down (0: 30s; negative: never)")
	linger := fs.Duration("linger", llawp.DefaultLinger, "how long to stay up with no worker registered; negative: forever")
	procName := fs.String("proc-name", llawp.DefaultProcName, "process name in logs and traces")
	agentName := fs.String("agent-name", "", "agent name for DoManagement; empty takes the ACO's DefaultAgentName")
	agentTrace := fs.Bool("agent-trace", false, "write the trace log (WATrace.log) even if the ACO's TraceFile is off")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *webAgent == "" {
		return errors.New("--webagent is required")
	}
	if *poll < 0 {
		return fmt.Errorf("--poll %v must not be negative", *poll)
	}

	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	dialer, err := trace.LocalDialer(*source)
	if err != nil {
		return fmt.Errorf("--source: %w", err)
	}
	rec, err := trace.Open(*traceDir, *hostsFile, *source, trace.Options{Proc: *procName, Role: "llawp", Payload: *payload})
	if err != nil {
		return err
	}
	defer rec.Close()

	ctx, stop := stopOnSIGTERM()
	defer stop()
	return llawp.Run(ctx, llawp.Config{
		WebAgent: *webAgent, Out: *out, Recorder: rec, Dialer: dialer, HostID: hostID,
		Poll: *poll, HealthPoll: *healthPoll, Linger: *linger, ProcName: *procName, AgentName: *agentName, AgentTrace: *agentTrace,
		Debug: *debug, Stderr: stderr, OwnerPID: ipc.OwnerPID(),
	})
}

// stopOnSIGTERM ends the context at the first SIGTERM, with what it means
// as the cause: the LLAWP logs it as its reason to leave.
//
// SIGTERM only: go-plugin makes the plugin ignore SIGINT, because a Ctrl-C
// reaches the whole process group and the owner decides when its LLAWP
// stops.
func stopOnSIGTERM() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	// Never undone: the owner's death can send several SIGTERMs (Pdeathsig
	// fires as each of its threads exits), and once nothing listened the
	// next would kill the LLAWP before it closes its sockets and logs why.
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-sigs:
			cause := fmt.Errorf("received signal %v", sig)
			if owner := ipc.OwnerPID(); (llawp.OwnerWatch{PID: owner}).Dying() {
				cause = fmt.Errorf("%w (pid %d): %v", llawp.ErrOwnerGone, owner, cause)
			}
			cancel(cause)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}
