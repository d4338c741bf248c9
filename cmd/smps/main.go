// Command smps is a Policy Server: it answers agents over TLI on every
// --listen address, from a YAML policy store (the seed lab's when none is
// given).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/cmdline"
	"github.com/agentlab/agentlab/fault"
	"github.com/agentlab/agentlab/logging"
	"github.com/agentlab/agentlab/metrics"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/policyserver"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/tli"
	"github.com/agentlab/agentlab/trace"
)

// smps is the command line (cmdline's style).
type smps struct {
	Listen           []string      `help:"Address to serve on; repeat the flag for more." default:"127.0.0.1:44443" sep:"none" placeholder:"ADDR"`
	Name             string        `help:"This Policy Server's host name (default: the machine's)." placeholder:"HOST"`
	Store            string        `help:"YAML policy store (default: the embedded seed lab store)." placeholder:"FILE"`
	Registrations    string        `help:"File of registered trusted hosts, shared by the servers of a lab." placeholder:"FILE"`
	Log              string        `help:"Human log file, vendor layout (default: standard error)." placeholder:"FILE"`
	LogJSON          string        `name:"log-json" help:"JSON log file." placeholder:"FILE"`
	Trace            string        `help:"Folder for this process's socket trace." placeholder:"DIR"`
	TracePayload     bool          `help:"Keep the bytes of each send and receive in the trace."`
	Hosts            string        `help:"The lab's hosts file: names the addresses in the trace, resolves --listen and --control names." placeholder:"FILE"`
	MaxConns         int           `help:"Connection limit (MaxConnections): a connection over it is refused at once with the vendor's log line." default:"${max_conns}" placeholder:"N"`
	Threads          int           `help:"Worker threads that evaluate requests (the console's Maximum Threads)." default:"${threads}" placeholder:"N"`
	QueueBound       int           `name:"queue-bound" help:"Requests that may wait for a worker thread; more are answered with an error." default:"${queue_bound}" placeholder:"N"`
	Metrics          string        `help:"Loopback address (port 0: any) to serve Prometheus metrics on, at /metrics; off by default." placeholder:"ADDR"`
	FlushRequests    bool          `name:"flushrequests" help:"Do not serve: tell the smps whose control API is at --control to drop every queued request (each answered with an error), as smpolicysrv -flushrequests does, and exit."`
	IdleTimeout      time.Duration `help:"Close agent connections idle this long." default:"${idle_timeout}"`
	MaxLifetime      time.Duration `help:"Close agent connections this old (AgentConnectionMaxLifetime)." default:"${max_lifetime}"`
	HandshakeTimeout time.Duration `help:"Time allowed for a client's handshake." default:"10s"`
	Debug            bool          `help:"Log at debug level."`
	Control          string        `help:"Loopback address (port 0: any) of the fault-injection control API, docs/faults.md; off by default." placeholder:"ADDR"`
	KeyLog           string        `name:"keylog" help:"Append every session's keys to FILE (mode 0600) for Wireshark (wireshark/README.md); it reveals every request, passwords included: a debug aid, off by default." placeholder:"FILE"`
}

func (c *smps) Validate() error {
	if c.MaxConns < 1 {
		return fmt.Errorf("--max-conns %d: want at least 1", c.MaxConns)
	}
	if c.Threads < 1 {
		return fmt.Errorf("--threads %d: want at least 1", c.Threads)
	}
	if c.QueueBound < 1 {
		return fmt.Errorf("--queue-bound %d: want at least 1", c.QueueBound)
	}
	if c.FlushRequests && c.Control == "" {
		return errors.New("--flushrequests needs --control: the running smps's control API address")
	}
	return nil
}

var program = cmdline.Program{
	Name:    "smps",
	Summary: "a Policy Server: answers agents over TLI on every --listen address, from a YAML policy store",
	Detail: "Prints \"smps: listening on ADDR\" for each address once it serves; stops on SIGTERM or Ctrl-C. " +
		"The seed lab's store is embedded and used when --store is not given.",
	Options: []kong.Option{kong.Vars{
		"max_conns":    strconv.Itoa(policyserver.DefaultMaxConns),
		"threads":      strconv.Itoa(policyserver.DefaultThreads),
		"queue_bound":  strconv.Itoa(policyserver.DefaultQueueBound),
		"idle_timeout": policyserver.DefaultIdleTimeout.String(),
		"max_lifetime": policyserver.DefaultMaxLifetime.String(),
	}},
}

func main() {
	var c smps
	program.Main(&c, os.Args[1:])
	if err := procname.Set(procname.PolicyServer); err != nil {
		program.Exit(err)
	}
	program.Exit(c.run())
}

func (c *smps) run() error {
	if c.FlushRequests {
		return c.flushRequests()
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --name and no host name: %w", err)
		}
		c.Name = h
	}

	var store *policyserver.Store
	var err error
	if c.Store != "" {
		store, err = policyserver.LoadStore(c.Store)
	} else {
		store, err = policyserver.SeedStore()
	}
	if err != nil {
		return err
	}
	if c.Registrations != "" {
		if err := store.UseRegistrations(c.Registrations); err != nil {
			return err
		}
	}
	level := zerolog.InfoLevel
	if c.Debug {
		level = zerolog.DebugLevel
	}
	log, err := logging.New(logging.Options{Proc: "smps", Role: trace.RolePolicyServer, File: c.Log, JSONFile: c.LogJSON,
		Stderr: c.Log == "" && c.LogJSON == "", Append: true, Level: level})
	if err != nil {
		return err
	}
	defer log.Close()

	rec, err := trace.Open(c.Trace, c.Hosts, "", trace.Options{Proc: "smps", Role: trace.RolePolicyServer, Host: c.Name, Payload: c.TracePayload})
	if err != nil {
		return err
	}
	defer rec.Close()
	hosts := rec.Hosts()

	if w := policyserver.CheckDescriptors(c.MaxConns); w != "" {
		log.Warn().Msg(w)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	cfg := policyserver.Config{
		Name: c.Name, Store: store, MaxConns: c.MaxConns, Threads: c.Threads, QueueBound: c.QueueBound,
		IdleTimeout: c.IdleTimeout, MaxLifetime: c.MaxLifetime,
		HandshakeTimeout: c.HandshakeTimeout, Recorder: rec, Log: log.Logger, Metrics: reg,
	}
	if c.KeyLog != "" {
		f, err := tli.OpenKeyLog(c.KeyLog)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.KeyLog = f
		log.Warn().Msgf("Session keys are appended to %s: anyone with that file can read every request", c.KeyLog)
	}
	srv, err := policyserver.New(cfg)
	if err != nil {
		return err
	}
	var listeners []net.Listener
	for _, addr := range c.Listen {
		resolved, err := hosts.Resolve(addr)
		if err != nil {
			for _, o := range listeners {
				o.Close()
			}
			return fmt.Errorf("--listen: %w", err)
		}
		l, err := net.Listen("tcp", resolved)
		if err != nil {
			for _, o := range listeners {
				o.Close()
			}
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		listeners = append(listeners, l)
	}
	var ctl net.Listener
	if c.Control != "" {
		addr, err := hosts.Resolve(c.Control)
		if err == nil {
			ctl, err = policyserver.ListenControl(addr)
		}
		if err != nil {
			for _, o := range listeners {
				o.Close()
			}
			return fmt.Errorf("--control: %w", err)
		}
	}

	var g run.Group
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if c.Metrics != "" {
		addr, err := hosts.Resolve(c.Metrics)
		var ma net.Addr
		if err == nil {
			ma, err = metrics.Serve(ctx, addr, reg)
		}
		if err != nil {
			for _, o := range listeners {
				o.Close()
			}
			if ctl != nil {
				ctl.Close()
			}
			return fmt.Errorf("--metrics: %w", err)
		}
		log.Info().Msgf("Policy Server %s serves metrics on http://%s%s", c.Name, ma, metrics.Path)
		// Before the listening lines, as the control line: the lab has
		// the address by the time the server is ready.
		notice.Write(os.Stdout, notice.Notice{Prog: notice.ProgSmps, Kind: notice.Metrics, Addr: ma.String()})
	}
	for _, l := range listeners {
		g.Add(func() error { return srv.Serve(ctx, l) }, func(error) { cancel() })
	}
	g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	if ctl != nil {
		g.Add(func() error { return srv.ServeControl(ctx, ctl) }, func(error) { cancel() })
		log.Warn().Msgf("Policy Server %s takes fault-injection commands on http://%s%s", c.Name, ctl.Addr(), fault.ControlPrefix)
		// Printed before the listening lines, so that the lab has it by
		// the time it sees the server ready.
		notice.Write(os.Stdout, notice.Notice{Prog: notice.ProgSmps, Kind: notice.Control, Addr: ctl.Addr().String()})
	}
	for _, l := range listeners {
		log.Info().Msgf("Policy Server %s listening on %s", c.Name, l.Addr())
		// The lab reads this line to know the server is ready.
		notice.Write(os.Stdout, notice.Notice{Prog: notice.ProgSmps, Kind: notice.Listening, Addr: l.Addr().String()})
	}
	log.Info().Msgf("Policy Server %s serves requests with %d worker threads (queue of at most %d), at most %d connections",
		c.Name, c.Threads, c.QueueBound, c.MaxConns)
	err = g.Run()
	if errors.Is(err, run.ErrSignal) {
		log.Info().Msgf("Policy Server %s stopping: %v", c.Name, err)
		return nil
	}
	return err
}

// flushRequests is smps --flushrequests: the admin command, sent to the
// running server's control API.
func (c *smps) flushRequests() error {
	hosts, err := trace.NewHosts(nil)
	if c.Hosts != "" {
		hosts, err = trace.LoadHosts(c.Hosts)
	}
	if err != nil {
		return err
	}
	addr, err := hosts.Resolve(c.Control)
	if err != nil {
		return fmt.Errorf("--control: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := fault.Client{Addr: addr, Name: "smps at " + addr}.Apply(ctx, fault.Action{Kind: fault.FlushRequests})
	if err != nil {
		return err
	}
	fmt.Printf("smps: %s\n", res.Done)
	return nil
}
