// Command agentlab runs and inspects agentlab labs.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/agentlab/agentlab/bootstrap"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/lab"
	"github.com/agentlab/agentlab/trace"
)

type confCheckCmd struct {
	File string `arg:"" help:"WebAgent.conf (its SmHost.conf is checked too) or SmHost.conf." type:"path"`
}

func (c *confCheckCmd) Run() error {
	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	res, err := conf.Check(c.File, hostID)
	if err != nil {
		return err
	}
	fmt.Print(res)
	return nil
}

type probeCmd struct {
	File    string        `arg:"" help:"WebAgent.conf of the agent to check." type:"path"`
	Hosts   string        `help:"The lab's hosts file, to resolve lab host names." type:"path"`
	Trace   string        `help:"Folder for this process's socket trace." type:"path"`
	Source  string        `help:"Local IP address to connect from (the agent host's lab address)."`
	Timeout time.Duration `help:"Give up after this long." default:"30s"`
}

func (c *probeCmd) Run(ctx context.Context) error {
	hostID, err := conf.HostIdentity()
	if err != nil {
		return err
	}
	wa, err := conf.ReadWebAgent(c.File)
	if err != nil {
		return err
	}
	sm, err := conf.ReadSmHost(wa.HostConfigFile)
	if err != nil {
		return err
	}
	var hosts *trace.Hosts
	if c.Hosts != "" {
		if hosts, err = trace.LoadHosts(c.Hosts); err != nil {
			return err
		}
	}
	rec, err := openRecorder(c.Trace, trace.Options{Proc: "agentlab", Role: "probe", Host: hosts.Name(c.Source), Hosts: hosts, Payload: true})
	if err != nil {
		return err
	}
	defer rec.Close()
	dialer, err := sourceDialer(c.Source)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	res, err := bootstrap.Probe(ctx, bootstrap.Config{SmHost: sm, HostID: hostID, Recorder: rec, Dialer: dialer}, wa.AgentConfigObject)
	if res != nil {
		fmt.Print(res)
	}
	return err
}

type runCmd struct {
	Lab string `arg:"" optional:"" help:"Lab file (default: the embedded seed lab)." type:"existingfile"`
	Out string `help:"Folder for the run's traces, logs and config files." default:"out" type:"path"`
	Bin string `help:"Folder with the smps, smreghost and agentlab binaries (default: this program's folder)." type:"path"`
}

func (c *runCmd) Run(ctx context.Context) error {
	var l *lab.Lab
	var err error
	if c.Lab == "" {
		l, err = lab.Seed()
	} else {
		l, err = lab.Load(c.Lab)
	}
	if err != nil {
		return err
	}
	if c.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Bin = filepath.Dir(exe)
	}
	r := &lab.Run{Lab: l, Opts: lab.Options{Out: c.Out, BinDir: c.Bin, Progress: os.Stderr}}
	evs, err := r.Execute(ctx)
	if len(evs) > 0 {
		fmt.Printf("\nProcess Monitor view, filtered as the seed filters (%s to %v):\n\n", l.WebServer.Host, l.ServerHosts())
		trace.WriteTable(os.Stdout, evs, trace.All(trace.SocketOps, trace.Between(l.WebServer.Host, l.ServerHosts()...)))
		fmt.Printf("\nEverything is in %s: trace.jsonl, each process's log, SmHost.conf, WebAgent.conf, summary.json.\n", c.Out)
	}
	return err
}

func openRecorder(dir string, o trace.Options) (*trace.Recorder, error) {
	if dir == "" {
		return trace.NewRecorder(nil, o), nil
	}
	return trace.Create(dir, o)
}

func sourceDialer(source string) (*net.Dialer, error) {
	d := &net.Dialer{}
	if source == "" {
		return d, nil
	}
	ip := net.ParseIP(source)
	if ip == nil {
		return nil, fmt.Errorf("--source %q is not an IP address", source)
	}
	d.LocalAddr = &net.TCPAddr{IP: ip}
	return d, nil
}

type cli struct {
	Run   runCmd   `cmd:"" help:"Run a lab: Policy Servers, registration, bootstrap, and the trace."`
	Probe probeCmd `cmd:"" help:"Check an agent's configuration against live Policy Servers: bootstrap, handshakes, ACO."`
	Conf  struct {
		Check confCheckCmd `cmd:"" help:"Check a WebAgent.conf or SmHost.conf and print what the agent would use."`
	} `cmd:"" help:"Vendor configuration files."`
}

func main() {
	var c cli
	k := kong.Parse(&c, kong.Name("agentlab"),
		kong.Description("A multi-process emulator of a SiteMinder-style Web Agent and its Policy Servers."),
		kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	k.BindTo(ctx, (*context.Context)(nil))
	if err := k.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "agentlab:", err)
		os.Exit(1)
	}
}
