// Command agentlab runs and inspects agentlab labs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/agentlab/agentlab/cmdline"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/lab"
	"github.com/agentlab/agentlab/pcapng"
	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/startup"
	"github.com/agentlab/agentlab/trace"
)

type confCheckCmd struct {
	File string `arg:"" help:"WebAgent.conf (its SmHost.conf is checked too) or SmHost.conf." type:"path"`
}

func (c *confCheckCmd) Run() error {
	res, err := conf.Check(c.File)
	if err != nil {
		return err
	}
	fmt.Print(res)
	return nil
}

type probeCmd struct {
	File    string        `arg:"" help:"WebAgent.conf of the agent to check." type:"path"`
	Hosts   string        `help:"The lab's hosts file, to resolve lab host names (default: the hosts file next to the WebAgent.conf, as in a run's out folder)." type:"path"`
	Trace   string        `help:"Folder for this process's socket trace." type:"path"`
	Source  string        `help:"Local IP address to connect from (the agent host's lab address)."`
	Timeout time.Duration `help:"Give up after this long." default:"30s"`
}

func (c *probeCmd) Run(ctx context.Context) error {
	files, err := startup.ReadFiles(c.File)
	if err != nil {
		return err
	}
	// A run's out folder says which lab host its files belong to and
	// holds the hosts file: probe them as they are.
	id, err := conf.IdentityFor(files.WebAgent.HostConfigFile)
	if err != nil {
		return err
	}
	if c.Hosts == "" {
		if c.Hosts, err = trace.RunHostsNextTo(c.File); err != nil {
			return err
		}
	}
	rec, err := trace.Open(c.Trace, c.Hosts, c.Source, trace.Options{Proc: "agentlab", Role: "probe", Payload: true})
	if err != nil {
		return err
	}
	defer rec.Close()
	dialer, err := trace.LocalDialer(c.Source)
	if err != nil {
		return fmt.Errorf("--source: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	res, err := startup.Probe(ctx, startup.Config{Files: files, HostID: id.ID, Recorder: rec, Dialer: dialer})
	if res != nil {
		fmt.Print(res)
	}
	return err
}

type runCmd struct {
	Lab          string        `arg:"" optional:"" help:"Lab file, or the name of an embedded lab: seed (the default), failover, roundrobin, cluster."`
	Out          string        `help:"Folder for the run's traces, logs and config files." default:"out" type:"path"`
	Requests     int           `help:"Page loads to send through the web server (default: the lab's workload, or 10)."`
	Duration     time.Duration `help:"Keep sending page loads this long (default: the lab's workload); with --requests too, the first limit reached ends it."`
	Rate         float64       `help:"Page loads per second, across all browsers (default: the lab's workload, or as fast as they go)."`
	Concurrency  int           `help:"Browsers sending them at once (default: the lab's workload, or 1)."`
	Poll         time.Duration `help:"PSPollInterval for the run (default: the lab's, 5s in the seed lab; the vendor's is 30s)."`
	Model        string        `help:"Web server process model: iis (one w3wp.exe) or apache (an httpd parent and its children). Default: the lab's."`
	Workers      int           `help:"Apache model: httpd children (default: the lab's, or 3)."`
	MPM          string        `help:"Apache model: prefork (one request at a time per child) or worker (many). Default: the lab's, or prefork."`
	MaxRequests  int           `name:"max-requests-per-child" help:"Apache model: recycle a child after this many requests (0: never), like MaxConnectionsPerChild."`
	ACOFromLLAWP bool          `name:"aco-from-llawp" help:"Apache model: children take the ACO from the LLAWP instead of the Policy Server."`
	Rows         int           `help:"Process Monitor rows to print (the start-up comes first; report.html has them all); --rows -1 for every row." default:"400"`
	HealthPoll   time.Duration `name:"health-poll" help:"How often the agents look for Policy Servers that came back (default: the lab's, or the vendor's 30s)."`
	AgentCache   string        `name:"agent-cache" placeholder:"on|off" help:"Turn the agent cache on or off in the web server's ACO: on, only the first load of a page asks IsProtected (the seed's use case a); off, every page load does (use case b). Default: the lab's (off in the seed lab)."`
	Hold         bool          `help:"Keep the lab up after the workload, until Ctrl-C, to browse it."`
	All          bool          `help:"Show every process's socket events, not only the web server host's to the Policy Servers."`
	Bin          string        `help:"Folder with the smps, smreghost, hla, llawp and agentlab binaries (default: this program's folder)." type:"path"`
	KeyLog       string        `name:"keylog" placeholder:"FILE" help:"Append every TLI session's keys to FILE (mode 0600), for Wireshark to decrypt the capture (wireshark/README.md). Anyone with FILE reads every request, passwords included: a debug aid, off by default." type:"path"`
	procmonFilterFlags
}

// procmonFilterFlags are Process Monitor's Filter dialog as flags; a
// condition that does not parse is a usage error (ProcmonCondition's
// UnmarshalText).
type procmonFilterFlags struct {
	Include []procmon.Condition `placeholder:"'COLUMN RELATION VALUE'" sep:"none" help:"Process Monitor view: show the rows that match, e.g. 'Process Name is w3wp.exe', 'Operation is TCP Connect', 'Path contains smps2'. Columns: Time of Day, Process Name, PID, Operation, Path, Result, Detail; relations: is, is not, begins with, ends with, contains, excludes. Repeatable: on one column OR-ed, on different columns AND-ed, as Process Monitor does."`
	Exclude []procmon.Condition `placeholder:"'COLUMN RELATION VALUE'" sep:"none" help:"Process Monitor view: hide the rows that match, whatever --include says. Repeatable."`
}

func (f procmonFilterFlags) filter() procmon.Filter {
	return procmon.Filter{Include: f.Include, Exclude: f.Exclude}
}

// Validate makes a bad value a usage error (exit 2), found before anything
// starts.
func (c *runCmd) Validate() error {
	switch {
	case c.Requests < 0 || c.Duration < 0 || c.Rate < 0 || c.Concurrency < 0:
		return fmt.Errorf("--requests, --duration, --rate and --concurrency must not be negative")
	case c.Model != "" && c.Model != "iis" && c.Model != "apache":
		return fmt.Errorf("--model %q: want iis or apache", c.Model)
	case c.MPM != "" && c.MPM != "prefork" && c.MPM != "worker":
		return fmt.Errorf("--mpm %q: want prefork or worker", c.MPM)
	case c.Workers < 0 || c.MaxRequests < 0:
		return fmt.Errorf("--workers and --max-requests-per-child must not be negative")
	case c.HealthPoll < 0:
		return fmt.Errorf("--health-poll %v: must not be negative", c.HealthPoll)
	case c.Poll < 0:
		return fmt.Errorf("--poll %v: must not be negative", c.Poll)
	}
	if err := lab.CheckAgentCache(c.AgentCache); err != nil {
		return fmt.Errorf("--agent-cache %w", err)
	}
	return nil
}

func (c *runCmd) Run(ctx context.Context) error {
	l, err := lab.Open(c.Lab)
	if err != nil {
		return err
	}
	l.WebServer.Override(lab.WebServerFlags{
		Model: c.Model, MPM: c.MPM, Workers: c.Workers, MaxRequestsPerChild: c.MaxRequests, ACOFromLLAWP: c.ACOFromLLAWP,
		HealthPoll: c.HealthPoll, AgentCache: c.AgentCache,
	})
	if c.Bin, err = binDir(c.Bin); err != nil {
		return err
	}
	r := &lab.Run{Lab: l, Opts: lab.Options{
		Out: c.Out, BinDir: c.Bin, Progress: os.Stderr, Requests: c.Requests, Concurrency: c.Concurrency,
		Duration: c.Duration, Rate: c.Rate,
		Poll: c.Poll, Hold: c.Hold, KeyLog: c.KeyLog, All: c.All, TableRows: c.Rows, Procmon: c.filter(),
		HoldReady: func(url string) {
			fmt.Fprintf(os.Stderr, "lab: holding. Browse %s (try %sprotected/ as %s / %s); Ctrl-C stops every process.\n",
				url, url, l.User.Login(), l.User.Password)
		},
	}}
	evs, err := r.Execute(ctx)
	r.Report(os.Stdout, evs, c.All)
	if p := r.ReportPath(); p != "" {
		fmt.Printf("report.html (sequence diagram, steps, table): %s\n", p)
	}
	return err
}

type compareCmd struct {
	Lab         string        `arg:"" optional:"" help:"Lab file (default: the embedded seed lab)." type:"existingfile"`
	Out         string        `help:"Folder for the runs: one subfolder each (iis, apache-prefork, apache-worker)." default:"out/compare" type:"path"`
	Workers     int           `help:"httpd children of the Apache runs." default:"3"`
	Requests    int           `help:"Page loads each run sends through its web server." default:"200"`
	Concurrency int           `help:"Browsers sending them at once." default:"8"`
	MaxRequests int           `name:"max-requests-per-child" help:"Recycle the Apache runs' children after this many requests (0: never), and show connections opened per 1,000 requests."`
	Poll        time.Duration `help:"PSPollInterval of every run: shorter than the lab's so that three runs, each waiting for 2 management polls, take seconds." default:"1s"`
	JSON        bool          `name:"json" help:"Print the figures as JSON instead of the table."`
	Bin         string        `help:"Folder with the smps, smreghost, hla, llawp and agentlab binaries (default: this program's folder)." type:"path"`
}

func (c *compareCmd) Validate() error {
	if c.Workers < 1 || c.Requests < 1 || c.Concurrency < 1 || c.MaxRequests < 0 || c.Poll <= 0 {
		return fmt.Errorf("--workers, --requests, --concurrency and --poll must be positive, --max-requests-per-child not negative")
	}
	return nil
}

func (c *compareCmd) Run(ctx context.Context) error {
	l, err := lab.Open(c.Lab)
	if err != nil {
		return err
	}
	if c.Bin, err = binDir(c.Bin); err != nil {
		return err
	}
	start := time.Now()
	opts := lab.CompareOptions{
		Out: c.Out, BinDir: c.Bin, Progress: os.Stderr, Requests: c.Requests, Concurrency: c.Concurrency,
		Poll: c.Poll, Workers: c.Workers, MaxRequestsPerChild: c.MaxRequests,
	}
	runs := lab.Compare(ctx, l, opts)
	// On stderr, with the progress: stdout may be --json.
	report, repErr := lab.WriteCompareReport(l, opts, runs)
	if repErr == nil {
		fmt.Fprintf(os.Stderr, "compare: report.html with the %d runs side by side: %s\n", len(runs), report)
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err := enc.Encode(struct {
			Lab                 string           `json:"lab"`
			Workers             int              `json:"workers"`
			Requests            int              `json:"requests"`
			Concurrency         int              `json:"concurrency"`
			MaxRequestsPerChild int              `json:"max_requests_per_child,omitempty"`
			PollInterval        string           `json:"poll_interval"`
			LabPollInterval     string           `json:"lab_poll_interval"`
			Took                string           `json:"took"`
			Runs                []lab.CompareRun `json:"runs"`
		}{l.Name, c.Workers, c.Requests, c.Concurrency, c.MaxRequests, c.Poll.String(),
			time.Duration(l.PollInterval).String(), took.String(), runs})
		if err != nil {
			return err
		}
	} else {
		recycle := "no recycling"
		if c.MaxRequests > 0 {
			recycle = fmt.Sprintf("Apache children recycled every %d requests", c.MaxRequests)
		}
		fmt.Printf("\nagentlab compare: lab %s, %d page loads by %d browsers per run, Apache with %d children, %s.\n",
			l.Name, c.Requests, c.Concurrency, c.Workers, recycle)
		fmt.Printf("Management polled every %s (--poll; the lab says %s, the vendor 30s); each run waits for 2 polls.\n\n",
			c.Poll, time.Duration(l.PollInterval))
		if err := lab.WriteCompareTable(os.Stdout, runs, l.ServerHosts()); err != nil {
			return err
		}
		fmt.Printf("\nAll from each run's trace.jsonl and summary.json in %s/{iis,apache-prefork,apache-worker}; %d runs in %s.\n",
			c.Out, len(runs), took)
		if c.MaxRequests > 0 {
			fmt.Println("IIS does not recycle: its connections per 1,000 requests are the baseline.")
		}
	}
	return errors.Join(lab.CompareFailures(runs), repErr)
}

type remediesCmd struct {
	Lab         string        `arg:"" help:"Lab file with a remedies: list (labs/buildup.yaml), or the name of an embedded one."`
	Out         string        `help:"Folder for the runs: one subfolder each, the lab as it is first (0-none), then each remedy." default:"out/remedies" type:"path"`
	Requests    int           `help:"Page loads each run sends (default: the lab's workload)."`
	Concurrency int           `help:"Browsers sending them at once (default: the lab's workload)."`
	Poll        time.Duration `help:"PSPollInterval of every run (default: the lab's)."`
	JSON        bool          `name:"json" help:"Print the figures as JSON instead of the table."`
	Bin         string        `help:"Folder with the smps, smreghost, hla, llawp and agentlab binaries (default: this program's folder)." type:"path"`
}

func (c *remediesCmd) Run(ctx context.Context) error {
	l, err := lab.Open(c.Lab)
	if err != nil {
		return err
	}
	if len(l.Remedies) == 0 {
		return fmt.Errorf("lab %s has no remedies: list", l.File)
	}
	if c.Bin, err = binDir(c.Bin); err != nil {
		return err
	}
	runs := lab.Remedies(ctx, l, lab.CompareOptions{Out: c.Out, BinDir: c.Bin, Progress: os.Stderr,
		Requests: c.Requests, Concurrency: c.Concurrency, Poll: c.Poll})
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(runs); err != nil {
			return err
		}
	} else {
		fmt.Printf("\nagentlab remedies: lab %s, the build-up as it is, then each remedy in turn (each run's trace.jsonl and summary.json in %s):\n\n", l.Name, c.Out)
		if err := lab.WriteRemedyTable(os.Stdout, runs, l.ServerHosts()); err != nil {
			return err
		}
	}
	var errs []error
	for _, r := range runs {
		if r.Error != "" {
			errs = append(errs, fmt.Errorf("remedy %s (%s): %s", r.Remedy, r.Out, r.Error))
		}
	}
	return errors.Join(errs...)
}

type pcapCmd struct {
	Trace string `arg:"" help:"A run's merged trace (out/trace.jsonl), recorded with payloads (the lab's runs are)." type:"existingfile"`
	Out   string `short:"o" required:"" placeholder:"FILE.pcapng" help:"The pcapng file to write." type:"path"`
	Hosts string `placeholder:"HOSTSFILE" help:"The lab's hosts file, to name the addresses (default: the run's hosts file next to the trace, when there is one)." type:"existingfile"`
}

func (c *pcapCmd) Run() error { return pcapng.FromFile(c.Trace, c.Hosts, c.Out) }

type procmonCmd struct {
	Trace string `arg:"" help:"A run's merged trace (out/trace.jsonl)." type:"existingfile"`
	Hosts string `placeholder:"HOSTSFILE" help:"The lab's hosts file, to name the addresses the trace does not (default: the run's hosts file next to the trace, when there is one)." type:"existingfile"`
	procmonFilterFlags
}

func (c *procmonCmd) Run() error {
	return procmon.WriteTableFile(os.Stdout, c.Trace, c.Hosts, c.filter())
}

// binDir is where the lab's binaries are: the flag's folder, or this
// program's own (make build puts them all in bin/).
func binDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Dir(exe), nil
}

type cli struct {
	Run      runCmd      `cmd:"" help:"Run a lab: Policy Servers, registration, bootstrap, and the trace."`
	Compare  compareCmd  `cmd:"" help:"Run a lab as IIS, Apache prefork and Apache worker, one after another, and compare what each cost."`
	Probe    probeCmd    `cmd:"" help:"Check an agent's configuration against live Policy Servers: bootstrap, handshakes, ACO."`
	Pcap     pcapCmd     `cmd:"" help:"Render a run's trace as a pcapng file for Wireshark: its connections, bytes and closes, with host names and the process of each packet."`
	Procmon  procmonCmd  `cmd:"" help:"Render a run's trace as Process Monitor's network view: every process's socket operations, through Process Monitor's filters (--include, --exclude)."`
	Remedies remediesCmd `cmd:"" help:"Run a lab, then once per remedy of its remedies: list, and tabulate failed page loads, peak connections and time to recover."`
	Conf     struct {
		Check confCheckCmd `cmd:"" help:"Check a WebAgent.conf or SmHost.conf and print what the agent would use."`
	} `cmd:"" help:"Vendor configuration files."`
}

var program = cmdline.Program{
	Name:    "agentlab",
	Summary: "runs and inspects labs of a multi-process emulator of a SiteMinder-style Web Agent and its Policy Servers",
}

func main() {
	var c cli
	kctx := program.Main(&c, os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	err := kctx.Run()
	stop()
	program.Exit(err)
}
