// Command hla is a web server worker with the high-level agent: in the IIS
// model one process, shown as w3wp.exe, that bootstraps, pools its sockets
// to the Policy Servers, serves HTTP through the agent and launches the
// LLAWP through go-plugin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/hla"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/logging"
	"github.com/agentlab/agentlab/trace"
)

func main() {
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hla:", err)
		os.Exit(1)
	}
}

func mainErr(args []string) error {
	fs := flag.NewFlagSet("hla", flag.ContinueOnError)
	webagent := fs.String("webagent", "WebAgent.conf", "the web server instance's WebAgent.conf")
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP address to serve on")
	model := fs.String("model", "iis", "process model: iis")
	procName := fs.String("proc-name", "w3wp.exe", "process name in traces and logs")
	llawpPath := fs.String("llawp", "", "the llawp binary (default: next to this one)")
	out := fs.String("out", ".", "folder for the logs (this process's, and the LLAWP's WA.log)")
	traceDir := fs.String("trace", "", "folder for the socket traces")
	payload := fs.Bool("trace-payload", false, "keep the bytes of each send and receive in the trace")
	hostsFile := fs.String("hosts", "", "the lab's hosts file")
	source := fs.String("source", "", "local IP address to connect from (the web server host's lab address)")
	poll := fs.Duration("poll", 0, "override the ACO's PSPollInterval (labs)")
	linger := fs.Duration("llawp-linger", 0, "how long the LLAWP lingers with no worker (0: its default)")
	upstream := fs.String("upstream", "", "application URL behind the agent (default: the built-in site)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model != "iis" {
		return fmt.Errorf("--model %q: only iis is available", *model)
	}
	var up *url.URL
	if *upstream != "" {
		u, err := url.Parse(*upstream)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("--upstream %q: want an absolute URL such as http://127.0.0.1:9000", *upstream)
		}
		up = u
	}
	if *llawpPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*llawpPath = filepath.Join(filepath.Dir(exe), "llawp")
	}
	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	dialer, err := trace.LocalDialer(*source)
	if err != nil {
		return fmt.Errorf("--source: %w", err)
	}
	rec, err := trace.Open(*traceDir, *hostsFile, *source, trace.Options{Proc: *procName, Role: "hla", Payload: *payload})
	if err != nil {
		return err
	}
	defer rec.Close()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	base := filepath.Join(*out, fmt.Sprintf("%s-%d", *procName, os.Getpid()))
	// The worker's records go to its own file and, through the LLAWP, to WA.log.
	fwd := ipc.NewLogForwarder(0)
	log, err := logging.New(logging.Options{Proc: *procName, Role: "hla", File: base + ".log", JSON: fwd, Append: true, Level: zerolog.InfoLevel})
	if err != nil {
		return err
	}
	defer log.Close()

	llawpArgs := []string{"--webagent", *webagent, "--out", *out, "--proc-name", "LLAWP.exe"}
	if *traceDir != "" {
		llawpArgs = append(llawpArgs, "--trace", *traceDir)
		if *payload {
			llawpArgs = append(llawpArgs, "--trace-payload")
		}
	}
	if *hostsFile != "" {
		llawpArgs = append(llawpArgs, "--hosts", *hostsFile)
	}
	if *source != "" {
		llawpArgs = append(llawpArgs, "--source", *source)
	}
	if *poll > 0 {
		llawpArgs = append(llawpArgs, "--poll", poll.String())
	}
	if *linger > 0 {
		llawpArgs = append(llawpArgs, "--linger", linger.String())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = hla.RunIIS(ctx, hla.ProcessConfig{
		WebAgent: *webagent, Listen: *listen, HostID: hostID, Recorder: rec, Dialer: dialer,
		ProcName: *procName, Log: log.Logger, Forwarder: fwd, Upstream: up,
		LLAWP: hla.LLAWPConfig{Path: *llawpPath, Args: llawpArgs, Stderr: os.Stderr},
		Ready: func(addr string) {
			// The lab reads this line to know the web server is up.
			fmt.Printf("hla: serving http://%s\n", addr)
		},
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
