// Command smps is a Policy Server: it answers agents over TLI on every
// --listen address, from a YAML policy store (the seed lab's when none is
// given).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/logging"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/policyserver"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "smps:", err)
		os.Exit(1)
	}
}

func mainErr(args []string) error {
	fs := flag.NewFlagSet("smps", flag.ContinueOnError)
	var listen listFlag
	fs.Var(&listen, "listen", "address to serve on, repeatable (default 127.0.0.1:44443)")
	name := fs.String("name", "", "this Policy Server's host name (default: the machine's)")
	storePath := fs.String("store", "", "YAML policy store (default: the embedded seed lab store)")
	regs := fs.String("registrations", "", "file of registered trusted hosts, shared by the servers of a lab")
	logFile := fs.String("log", "", "human log file, vendor layout (default: standard error)")
	logJSON := fs.String("log-json", "", "JSON log file")
	traceDir := fs.String("trace", "", "folder for this process's socket trace")
	payload := fs.Bool("trace-payload", false, "keep the bytes of each send and receive in the trace")
	hostsFile := fs.String("hosts", "", "the lab's hosts file, naming addresses in the trace")
	maxConns := fs.Int("max-conns", policyserver.DefaultMaxConns, "connection limit")
	idle := fs.Duration("idle-timeout", policyserver.DefaultIdleTimeout, "close agent connections idle this long")
	lifetime := fs.Duration("max-lifetime", policyserver.DefaultMaxLifetime, "close agent connections this old (AgentConnectionMaxLifetime)")
	hsTimeout := fs.Duration("handshake-timeout", 10*time.Second, "time allowed for a client's handshake")
	debug := fs.Bool("debug", false, "log at debug level")
	control := fs.String("control", "", "loopback address (port 0: any) of the fault-injection control API, docs/faults.md; off by default")
	keyLog := fs.String("keylog", "", "append every session's keys to this file (mode 0600) for Wireshark (wireshark/README.md); "+
		"it reveals every request, passwords included: a debug aid, off by default")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(listen) == 0 {
		listen = listFlag{"127.0.0.1:44443"}
	}
	if *name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --name and no host name: %w", err)
		}
		*name = h
	}

	var store *policyserver.Store
	var err error
	if *storePath != "" {
		store, err = policyserver.LoadStore(*storePath)
	} else {
		store, err = policyserver.SeedStore()
	}
	if err != nil {
		return err
	}
	if *regs != "" {
		if err := store.UseRegistrations(*regs); err != nil {
			return err
		}
	}
	level := zerolog.InfoLevel
	if *debug {
		level = zerolog.DebugLevel
	}
	log, err := logging.New(logging.Options{Proc: "smps", Role: "policyserver", File: *logFile, JSONFile: *logJSON,
		Stderr: *logFile == "" && *logJSON == "", Append: true, Level: level})
	if err != nil {
		return err
	}
	defer log.Close()

	rec, err := trace.Open(*traceDir, *hostsFile, "", trace.Options{Proc: "smps", Role: "policyserver", Host: *name, Payload: *payload})
	if err != nil {
		return err
	}
	defer rec.Close()
	hosts := rec.Hosts()

	cfg := policyserver.Config{
		Name: *name, Store: store, MaxConns: *maxConns, IdleTimeout: *idle, MaxLifetime: *lifetime,
		HandshakeTimeout: *hsTimeout, Recorder: rec, Log: log.Logger,
	}
	if *keyLog != "" {
		f, err := tli.OpenKeyLog(*keyLog)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.KeyLog = f
		log.Warn().Msgf("Session keys are appended to %s: anyone with that file can read every request", *keyLog)
	}
	srv, err := policyserver.New(cfg)
	if err != nil {
		return err
	}
	var listeners []net.Listener
	for _, addr := range listen {
		l, err := net.Listen("tcp", hosts.ResolveAddr(addr))
		if err != nil {
			for _, o := range listeners {
				o.Close()
			}
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		listeners = append(listeners, l)
	}
	var ctl net.Listener
	if *control != "" {
		if ctl, err = policyserver.ListenControl(hosts.ResolveAddr(*control)); err != nil {
			for _, o := range listeners {
				o.Close()
			}
			return fmt.Errorf("--control: %w", err)
		}
	}

	var g run.Group
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, l := range listeners {
		g.Add(func() error { return srv.Serve(ctx, l) }, func(error) { cancel() })
	}
	g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	if ctl != nil {
		g.Add(func() error { return srv.ServeControl(ctx, ctl) }, func(error) { cancel() })
		log.Warn().Msgf("Policy Server %s takes fault-injection commands on http://%s%s", *name, ctl.Addr(), policyserver.ControlPrefix)
		// Printed before the listening lines, so that the lab has it by
		// the time it sees the server ready.
		notice.Write(os.Stdout, notice.Notice{Prog: notice.ProgSmps, Kind: notice.Control, Addr: ctl.Addr().String()})
	}
	for _, l := range listeners {
		log.Info().Msgf("Policy Server %s listening on %s", *name, l.Addr())
		// The lab reads this line to know the server is ready.
		notice.Write(os.Stdout, notice.Notice{Prog: notice.ProgSmps, Kind: notice.Listening, Addr: l.Addr().String()})
	}
	err = g.Run()
	if errors.Is(err, run.ErrSignal) {
		log.Info().Msgf("Policy Server %s stopping: %v", *name, err)
		return nil
	}
	return err
}
