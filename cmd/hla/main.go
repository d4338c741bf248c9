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
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/hla"
	"github.com/agentlab/agentlab/ipc"
	"github.com/agentlab/agentlab/logging"
	"github.com/agentlab/agentlab/notice"
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
	model := fs.String("model", "iis", "process model: iis or apache")
	procName := fs.String("proc-name", "", "process name in traces and logs (default: w3wp.exe, or httpd for apache)")
	workers := fs.Int("workers", 3, "apache: number of httpd children")
	mpm := fs.String("mpm", "prefork", "apache: prefork (one request at a time per child) or worker (many goroutines over one pool)")
	maxRequests := fs.Int("max-requests-per-child", 0, "apache: a child exits after this many HTTP requests and a new one starts (0: never), like MaxConnectionsPerChild")
	acoFromLLAWP := fs.Bool("aco-from-llawp", false, "apache: children take the ACO from the LLAWP, not from a Policy Server")
	llawpPath := fs.String("llawp", "", "the llawp binary (default: next to this one)")
	out := fs.String("out", ".", "folder for the logs (this process's, and the LLAWP's WA.log)")
	traceDir := fs.String("trace", "", "folder for the socket traces")
	payload := fs.Bool("trace-payload", false, "keep the bytes of each send and receive in the trace")
	hostsFile := fs.String("hosts", "", "the lab's hosts file")
	source := fs.String("source", "", "local IP address to connect from (the web server host's lab address)")
	poll := fs.Duration("poll", 0, "override the ACO's PSPollInterval (labs)")
	healthPoll := fs.Duration("health-poll", 0, "how often the agent retries Policy Servers that are down (0: 30s; negative: never), here and in the LLAWP")
	linger := fs.Duration("llawp-linger", 0, "how long the LLAWP lingers with no worker (0: its default)")
	upstream := fs.String("upstream", "", "application URL behind the agent (default: the built-in site)")
	rapidFailCrashes := fs.Int("rapid-fail-crashes", 0, "iis: worker failures within --rapid-fail-interval that make WAS stop the application pool (0: IIS's 5; negative: never)")
	rapidFailInterval := fs.Duration("rapid-fail-interval", 0, "iis: the window of rapid-fail protection (0: IIS's 5m)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	apacheOnly := map[string]bool{"workers": true, "mpm": true, "max-requests-per-child": true, "aco-from-llawp": true}
	var misused []string
	fs.Visit(func(f *flag.Flag) {
		if apacheOnly[f.Name] && *model != "apache" {
			misused = append(misused, "--"+f.Name)
		}
	})
	switch {
	case *model != "iis" && *model != "apache":
		return fmt.Errorf("--model %q: want iis or apache", *model)
	case len(misused) > 0:
		return fmt.Errorf("%s: only for --model apache", strings.Join(misused, ", "))
	case *mpm != "prefork" && *mpm != "worker":
		return fmt.Errorf("--mpm %q: want prefork or worker", *mpm)
	case *workers < 1:
		return fmt.Errorf("--workers %d: want at least 1", *workers)
	case *maxRequests < 0:
		return fmt.Errorf("--max-requests-per-child %d: must not be negative", *maxRequests)
	}
	in, child, err := hla.Inherit()
	if err != nil {
		return err
	}
	role := hla.RoleWorker
	switch {
	case *model == hla.ModelApache && !child:
		role = hla.RoleHTTPDParent
		fallthrough
	case *model == hla.ModelApache:
		if *procName == "" {
			*procName = hla.ProcHTTPD
		}
	case !child:
		role = hla.RoleWAS
		if *procName == "" {
			*procName = hla.ProcWAS
		}
	case *procName == "":
		*procName = hla.ProcW3WP
	}
	parent := role == hla.RoleHTTPDParent || role == hla.RoleWAS
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
	// A parent opens no socket of its own to a Policy Server: its trace
	// holds the processes it started and reaped.
	rec, err := trace.Open(*traceDir, *hostsFile, *source, trace.Options{Proc: *procName, Role: role, Payload: *payload})
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
	var fwdW io.Writer = fwd
	if parent {
		// Not a worker: it never registers, so its records have no way
		// to WA.log; its own file and stderr are enough.
		fwdW = nil
	}
	log, err := logging.New(logging.Options{Proc: *procName, Role: role, File: base + ".log", JSON: fwdW, Append: true, Level: zerolog.InfoLevel})
	if err != nil {
		return err
	}
	defer log.Close()

	llawpName := hla.ProcLLAWPIIS
	if *model == hla.ModelApache {
		llawpName = hla.ProcLLAWPApache
	}
	llawpArgs := []string{"--webagent", *webagent, "--out", *out, "--proc-name", llawpName}
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
	if *healthPoll != 0 {
		llawpArgs = append(llawpArgs, "--health-poll", healthPoll.String())
	}
	switch {
	case *linger > 0:
		llawpArgs = append(llawpArgs, "--linger", linger.String())
	case *model == "apache":
		// The parent owns the LLAWP and stops it at shutdown; a lull with
		// no child registered (all recycling at once) must not end it, or
		// the children still running would hold a dead reattach config.
		llawpArgs = append(llawpArgs, "--linger", "-1ns")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Whoever started the web server (a lab) reads these lines: when it
	// serves, and every death among its processes.
	say := func(n notice.Notice) { notice.Write(os.Stdout, n) }
	ready := func(addr string) {
		say(notice.Notice{Prog: notice.ProgHLA, Kind: notice.Serving, Addr: "http://" + addr})
	}
	llawp := hla.LLAWPConfig{Name: llawpName, Path: *llawpPath, Args: llawpArgs, Stderr: os.Stderr}
	worker := hla.ProcessConfig{
		WebAgent: *webagent, Listen: *listen, HostID: hostID, Recorder: rec, Dialer: dialer,
		ProcName: *procName, Log: log.Logger, Forwarder: fwd, Upstream: up, LLAWP: llawp, Ready: ready,
		HealthPoll: *healthPoll,
	}
	switch {
	case child && *model == hla.ModelApache:
		worker.Ready = nil // the parent says when the web server serves
		worker.ACOFromLLAWP, worker.Prefork, worker.MaxRequests = *acoFromLLAWP, *mpm == "prefork", *maxRequests
		err = hla.RunApacheChild(ctx, worker, in)
	case child:
		err = hla.RunIISChild(ctx, worker, in)
	default:
		self, xerr := os.Executable()
		if xerr != nil {
			return xerr
		}
		pc := hla.ParentConfig{
			WebAgent: *webagent, Listen: *listen, Workers: *workers, Log: log.Logger, LLAWP: llawp, Stderr: os.Stderr, Ready: ready,
			Child: hla.ChildCommand{Path: self, Args: args}, Recorder: rec, Notify: say,
			RapidFail: hla.RapidFail{MaxCrashes: *rapidFailCrashes, Interval: *rapidFailInterval},
		}
		if *model == hla.ModelApache {
			err = hla.RunApache(ctx, pc)
		} else {
			pc.Workers = 1
			err = hla.RunWAS(ctx, pc)
		}
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
