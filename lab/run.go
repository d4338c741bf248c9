package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/agentlab/chart"
	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/labs"
	"github.com/agentlab/agentlab/narrative"
	"github.com/agentlab/agentlab/notice"
	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/trace"
)

// Options say where a run writes and where the binaries are.
type Options struct {
	// Out is the run's folder: traces, logs, the config files it used.
	Out string
	// BinDir holds smps, smreghost and agentlab.
	BinDir string
	// Progress receives one line per thing the lab waits for.
	Progress io.Writer
	// StartTimeout bounds each process's start.
	StartTimeout time.Duration
	// Requests is the number of page loads; 0: the lab's (workload:), or
	// 10 when the lab gives neither requests nor a duration.
	Requests int
	// Concurrency is the number of browsers sending them; 0: the lab's, or 1.
	Concurrency int
	// Duration keeps the workload going this long; Rate spaces its page
	// loads (per second). 0: the lab's.
	Duration time.Duration
	Rate     float64
	// Poll overrides the lab's PSPollInterval.
	Poll time.Duration
	// Polls is how many management polls the run waits for; 0 means 2.
	Polls int
	// Hold keeps the lab up after the workload until ctx ends.
	Hold bool
	// HoldReady is told the web server's URL when the lab holds.
	HoldReady func(url string)
	// All shows every process's socket events in report.html's table, not
	// only the seed's filter (agentlab run --all).
	All bool
	// TableRows caps the Process Monitor rows Report prints (the start-up
	// is at the top; a long load adds thousands of sends and receives):
	// 0 means DefaultTableRows, a negative value every row.
	TableRows int
	// Procmon is the Process Monitor view's filter (agentlab run
	// --include, --exclude), applied to the rows the view would show
	// without it: the seed's filter, or every process with All.
	Procmon procmon.Filter
	// KeyLog, when set, is the file every Policy Server appends its
	// sessions' keys to (smps --keylog), for Wireshark to decrypt the
	// run's capture. It reveals every request: off unless asked for.
	KeyLog string
}

// DefaultTableRows is how many Process Monitor rows a run prints unless
// told otherwise.
const DefaultTableRows = 400

// ProcInfo is one process of a run, for summary.json.
type ProcInfo struct {
	Name  string `json:"name"`
	Proc  string `json:"proc"`
	PID   int    `json:"pid"`
	Role  string `json:"role,omitempty"`
	Exit  string `json:"exit,omitempty"`
	Error string `json:"error,omitempty"`
	// StartedBy is empty for the processes the lab started; the others
	// (w3wp.exe, LLAWP) are named by their parent's Process Create row,
	// and known only from their own traces.
	StartedBy string `json:"started_by,omitempty"`
	// Fault says which of the lab's faults ended the process.
	Fault string `json:"fault,omitempty"`
}

// Settings are what a run was asked to do, for summary.json.
type Settings struct {
	Model        string  `json:"model"`
	Workers      int     `json:"workers,omitempty"`
	MPM          string  `json:"mpm,omitempty"`
	MaxRequests  int     `json:"max_requests_per_child,omitempty"`
	ACOFromLLAWP bool    `json:"aco_from_llawp,omitempty"`
	AgentCache   string  `json:"agent_cache,omitempty"`
	Requests     int     `json:"requests"`
	Concurrency  int     `json:"concurrency"`
	Duration     string  `json:"duration,omitempty"`
	Rate         float64 `json:"rate,omitempty"`
	PollInterval string  `json:"poll_interval"`
	Polls        int     `json:"polls_awaited"`
	WebServer    string  `json:"web_server"`
	TrustedHost  string  `json:"trusted_host"`
	HCO          string  `json:"host_config_object"`
	ACO          string  `json:"agent_config_object"`
	Bootstrap    string  `json:"bootstrap"`
}

// Summary is summary.json.
type Summary struct {
	Lab          string     `json:"lab"`
	Out          string     `json:"out"`
	Started      time.Time  `json:"started"`
	Duration     string     `json:"duration"`
	PollInterval string     `json:"poll_interval"`
	Settings     Settings   `json:"settings"`
	Processes    []ProcInfo `json:"processes"`
	Events       int        `json:"events"`
	Requests     struct {
		Sent       int `json:"sent"`
		Succeeded  int `json:"succeeded"`
		Failed     int `json:"failed"`
		Challenges int `json:"challenges"`
		// Skipped are the rate's slots the browsers were all too busy
		// to take (a stalled server): not sent late in a burst.
		Skipped int     `json:"skipped,omitempty"`
		P50ms   float64 `json:"p50_ms"`
		P99ms   float64 `json:"p99_ms"`
		// MaxMs is the slowest page load that worked: how long a
		// failover held a browser.
		MaxMs float64 `json:"max_ms"`
		// ElapsedMs is the workload's wall time, for requests per second.
		ElapsedMs float64  `json:"elapsed_ms"`
		Errors    []string `json:"errors,omitempty"`
	} `json:"requests"`
	// AgentMemory is sampled right after the workload, while every agent
	// process still runs: stopped processes have no resident memory to read.
	AgentMemory     *MemorySample `json:"agent_memory,omitempty"`
	ManagementPolls int           `json:"management_polls"`
	WebServerURL    string        `json:"web_server_url,omitempty"`
	// Faults are the lab's faults: when each was applied, to which
	// server, and what it did (lab/faults_run.go).
	Faults []FaultRecord `json:"faults,omitempty"`
	// Deaths are the processes that died during the run (not stopped by
	// the lab or by a fault, not recycled), with how and what was done
	// about each, in the order they died.
	Deaths []Death `json:"deaths,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// Run is one run of a lab: it starts the Policy Servers, registers the web
// server's trusted host with smreghost, starts the web server (which starts
// its LLAWP), sends the page loads, waits for the management polls, stops
// everything, and merges the per-process traces into trace.jsonl.
type Run struct {
	Lab  *Lab
	Opts Options

	hostsFile string
	procs     []*Proc
	files     []*os.File
	infos     []ProcInfo
	summary   Summary
	llawp     *llawpView // the LLAWP's status after the workload
	// llawpWritten: LLAWPStatusFile is this run's; a failed fetch or
	// write leaves it out of the report's list of files.
	llawpWritten bool
	faults       *faultRunner
	// registration is what smreghost recorded, apart from the run's trace.
	registration []trace.Event
	// rec is the lab's own trace: the Process Create and Process Exit of
	// the processes it starts.
	rec *trace.Recorder
	// webDown ends the run when the web server's own process dies: with
	// it go its workers and their LLAWP, and nothing restarts it.
	webDown context.CancelCauseFunc

	deathsMu sync.Mutex
	deaths   []Death
	// store is the store file the Policy Servers load; "" for their
	// embedded seed store.
	store string
	// scraper scrapes the processes' /metrics when the lab has metrics:
	// on; stopScraper ends it and waits for its last write.
	scraper     *scraper
	stopScraper func()
}

// Death is a process that died during a run, as the lab learnt it.
type Death struct {
	At time.Time `json:"at"`
	trace.Process
}

func (r *Run) progress(format string, a ...any) {
	if r.Opts.Progress != nil {
		fmt.Fprintf(r.Opts.Progress, "lab: "+format+"\n", a...)
	}
}

func (r *Run) bin(name string) string { return filepath.Join(r.Opts.BinDir, name) }

func (r *Run) path(name string) string { return filepath.Join(r.Opts.Out, name) }

// Execute runs the lab and returns the merged events. The processes are
// stopped whatever happens.
func (r *Run) Execute(ctx context.Context) (evs []trace.Event, err error) {
	if r.Opts.StartTimeout == 0 {
		r.Opts.StartTimeout = 10 * time.Second
	}
	l, ws := r.Lab, r.workloadSpec()
	r.summary = Summary{Lab: l.Name, Out: r.Opts.Out, Started: time.Now(), PollInterval: r.poll().String(),
		Settings: Settings{
			Model: l.WebServer.Model, Workers: l.WebServer.Workers, MPM: l.WebServer.MPM,
			MaxRequests: l.WebServer.MaxRequestsPerChild, ACOFromLLAWP: l.WebServer.ACOFromLLAWP, AgentCache: l.WebServer.AgentCache,
			Requests: ws.Requests, Concurrency: ws.Concurrency, Duration: ws.durationText(), Rate: ws.Rate,
			PollInterval: r.poll().String(), Polls: r.polls(), WebServer: l.WebServer.Host,
			TrustedHost: l.WebServer.TrustedHost, HCO: l.WebServer.HostConfigObject, ACO: l.WebServer.AgentConfigObject,
			Bootstrap: strings.Join(l.WebServer.Bootstrap, ","),
		}}
	if err := os.MkdirAll(r.Opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("out folder: %w", err)
	}
	if n, err := clearPreviousRun(r.Opts.Out); err != nil {
		return nil, err
	} else if n > 0 {
		r.progress("cleared the previous run's %d files from %s", n, r.Opts.Out)
	}
	hosts, err := l.HostsMap()
	if err != nil {
		return nil, err
	}
	r.hostsFile = r.path(trace.RunHostsFile)
	if err := os.WriteFile(r.hostsFile, hosts.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if r.rec, err = trace.Create(r.Opts.Out, trace.Options{Proc: "agentlab", Role: "lab", Hosts: hosts}); err != nil {
		return nil, err
	}
	ctx, r.webDown = context.WithCancelCause(ctx)
	defer func() {
		if cause := context.Cause(ctx); errors.Is(cause, errWebServerDown) {
			err = errors.Join(cause, err)
		}
		err = errors.Join(err, r.stopFaults())
		// The last scrape is of processes still up: stopping them
		// would only fill the progress with refused scrapes.
		err = errors.Join(err, r.endScraper())
		r.stopAll()
		r.rec.Close()
		evs, err = r.finish(err)
	}()
	if err := r.writeStore(); err != nil {
		return nil, err
	}
	if err := r.startScraper(ctx); err != nil {
		return nil, err
	}
	if err := r.startPolicyServers(ctx); err != nil {
		return nil, err
	}
	if err := r.register(ctx); err != nil {
		return nil, err
	}
	if err := r.startFaults(ctx); err != nil {
		return nil, err
	}
	if err := r.writeWebAgent(); err != nil {
		return nil, err
	}
	web, err := r.startWebServer(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.workload(ctx, web); err != nil {
		return nil, err
	}
	if m, err := SampleMemory(web.PID()); err == nil {
		r.summary.AgentMemory = m
	} else {
		r.progress("resident memory not sampled: %v", err)
	}
	if err := r.waitPolls(ctx); err != nil {
		return nil, err
	}
	if err := r.fetchLLAWPStatus(ctx); err != nil {
		r.progress("%v", err)
	}
	if r.Opts.Hold {
		if r.Opts.HoldReady != nil {
			r.Opts.HoldReady(r.summary.WebServerURL)
		}
		<-ctx.Done()
	}
	return nil, nil
}

// The roles of the processes the lab supervises, in its trace.
const (
	rolePolicyServer = trace.RolePolicyServer
	roleWeb          = "web"
)

// errWebServerDown is why a run ends when its web server's own process
// (WAS, the httpd parent) dies.
var errWebServerDown = errors.New("the web server is down")

// start starts a process the lab supervises for the whole run (a Policy
// Server, the web server): its start and end go into the lab's trace, and
// a death is told at once.
// onDeath says what the lab does about it (Exit.Action) and does it.
func (r *Run) start(ctx context.Context, s ProcSpec, onDeath func(*trace.Process)) (*Proc, error) {
	s.OnNotice = func(n notice.Notice) { r.notice(s.Name, s.Ready.Prog, n) }
	s.OnDeath = func(p *Proc) {
		proc := r.process(p)
		proc.Exit.Death = true
		onDeath(&proc)
		r.rec.ProcessExit(proc)
		r.death(proc)
	}
	s.OnStart = func(p *Proc) { r.rec.ProcessCreate(r.process(p)) }
	return Start(ctx, s)
}

// process is a process the lab started, as a trace names it: by the name
// it goes by (smps, svchost.exe, httpd), with its exit once it has one.
func (r *Run) process(p *Proc) trace.Process {
	proc := trace.Process{
		Name: filepath.Base(p.Cmd.Args[0]), PID: p.PID(), Role: p.Role, Image: p.Cmd.Path,
		CommandLine: strings.Join(p.Cmd.Args, " "), Parent: "agentlab", ParentPID: os.Getpid(),
	}
	if p.Role == roleWeb {
		proc.Name = r.Lab.WebServer.ParentProc()
	}
	select {
	case <-p.Done():
		proc.Exit = trace.ExitOf(p.Cmd.ProcessState)
	default:
	}
	return proc
}

// recordStop records in the lab's trace the end of a process the lab
// stopped itself (not a death).
func (r *Run) recordStop(p *Proc, action string) {
	if p.Role == "" {
		return
	}
	proc := r.process(p)
	if proc.Exit != nil {
		proc.Exit.Action = action
	}
	r.rec.ProcessExit(proc)
}

// notice handles what a process the lab started prints besides its ready
// line: a /metrics address to scrape (its own, or one it relays for a
// process it runs, the LLAWP's, named then by the notice's prog); a
// death among the web server's processes (a worker, an httpd child, an
// LLAWP) and each replacement, told to a learner as it happens.
func (r *Run) notice(name, prog string, n notice.Notice) {
	switch n.Kind {
	case notice.Metrics:
		if r.scraper == nil {
			return // the lab did not ask for metrics: nothing scrapes them
		}
		if n.Prog != prog {
			name = n.Prog
		}
		r.scraper.Add(name, n.Addr)
	case notice.Exited:
		if n.Process.Exit.Death {
			r.death(*n.Process)
		}
	case notice.Started:
		p := n.Process
		r.progress("%s (pid %d) started %s (pid %d)", p.Parent, p.ParentPID, p.Name, p.PID)
	}
}

// death records a process that died during the run and says so at once.
func (r *Run) death(p trace.Process) {
	r.deathsMu.Lock()
	at := time.Now()
	if p.Exit != nil && !p.Exit.At.IsZero() {
		at = p.Exit.At // the row in the trace and the steps show this time
	}
	r.deaths = append(r.deaths, Death{At: at, Process: p})
	r.deathsMu.Unlock()
	r.progress("%s", deathLine(p))
}

// deathLine is a death as one line: who, how, and what was done.
func deathLine(p trace.Process) string {
	s := p.String()
	if p.Exit != nil && p.Exit.Action != "" {
		s += ": " + p.Exit.Action
	}
	return s
}

// writeStore picks the store the Policy Servers load: the lab's ("" is
// the servers' embedded seed store), or, when web_server.agent_cache asks
// for another setting than its ACO has, a copy in the run's folder with the
// ACO's cache turned on or off. A store the lab cannot read goes to the
// servers as it is: they name its file and line.
func (r *Run) writeStore() error {
	l, w := r.Lab, r.Lab.WebServer
	switch {
	case l.Store != "" && l.Embedded && !filepath.IsAbs(l.Store):
		// An embedded lab's own store is embedded too: the servers load
		// a copy in the run's folder.
		data, err := labs.Store(l.Store)
		if err != nil {
			return fmt.Errorf("%s: store %s: %w", l.File, l.Store, err)
		}
		r.store = r.path(StoreFile)
		if err := os.WriteFile(r.store, data, 0o644); err != nil {
			return err
		}
	case l.Store != "":
		r.store = l.Store
		if !filepath.IsAbs(r.store) {
			r.store = filepath.Join(l.Dir, r.store)
		}
	}
	if w.AgentCache == "" {
		return nil
	}
	useCase := "(b): every page load asks the Policy Server IsProtected"
	if w.AgentCache == AgentCacheOn {
		useCase = "(a): only the first load of a page asks the Policy Server IsProtected"
	}
	data, from, err := agentCacheStore(l)
	switch {
	case err != nil:
		r.progress("%s: %v; the Policy Servers load the store as it is", l.File, err)
		return nil
	case data == nil:
		r.progress("the agent cache is %s in ACO %s (%s): the seed's use case %s", w.AgentCache, w.AgentConfigObject, from, useCase)
		return nil
	}
	r.store = r.path(StoreFile)
	if err := os.WriteFile(r.store, data, 0o644); err != nil {
		return err
	}
	r.progress("the agent cache is %s in ACO %s (written into %s, from %s): the seed's use case %s",
		w.AgentCache, w.AgentConfigObject, r.store, from, useCase)
	return nil
}

func (r *Run) startPolicyServers(ctx context.Context) error {
	l := r.Lab
	if r.Opts.KeyLog != "" {
		r.progress("the Policy Servers append every session's keys to %s: a secret that decrypts the capture (wireshark/README.md)", r.Opts.KeyLog)
	}
	for _, ps := range l.PolicyServers {
		ip := l.Hosts[ps.Host]
		args := []string{
			"--listen", fmt.Sprintf("%s:%d", ip, ps.Port), "--name", ps.Host,
			"--hosts", r.hostsFile, "--trace", r.Opts.Out, "--trace-payload",
			"--log", r.path(ps.Host + ".log"), "--log-json", r.path(ps.Host + ".log.jsonl"),
			"--registrations", r.path("registrations.yaml"),
		}
		// The servers write the key log, not the agents: they see every
		// connection, smreghost's administrator sessions included.
		if r.Opts.KeyLog != "" {
			args = append(args, "--keylog", r.Opts.KeyLog)
		}
		if r.store != "" {
			args = append(args, "--store", r.store)
		}
		args = append(args, ps.args()...)
		if l.Metrics {
			args = append(args, "--metrics", ip+":0")
		}
		args = r.faultServerArgs(ps, args)
		r.progress("starting Policy Server %s on %s:%d, waiting until it listens", ps.Host, ip, ps.Port)
		sctx, cancel := context.WithTimeout(ctx, r.Opts.StartTimeout)
		p, err := r.start(sctx, ProcSpec{Name: ps.Host, Bin: r.bin("smps"), Args: args, Ready: notice.SmpsListening, Stderr: r.stderrFile(ps.Host), Role: rolePolicyServer},
			policyServerDown(ps.Host))
		cancel()
		if err != nil {
			// The server's own message names what it could not use (a
			// store file and line, an address in use): pass it on.
			out, _ := os.ReadFile(r.path(ps.Host + ".stderr"))
			return fmt.Errorf("Policy Server %s: %w (see %s)\n%s", ps.Host, err, r.path(ps.Host+".stderr"), strings.TrimSpace(string(out)))
		}
		r.procs = append(r.procs, p)
		r.faultServerStarted(ps, p)
	}
	return nil
}

// policyServerDown is what the lab does about a Policy Server that died:
// nothing, as nothing restarts a real one; the agents fail over.
func policyServerDown(host string) func(*trace.Process) {
	return func(p *trace.Process) {
		p.Exit.Action = fmt.Sprintf("Policy Server %s is down, and the lab does not restart it: the agents fail over to another server of their HCO, if it has one", host)
	}
}

// stderrFile keeps a process's standard error in the run folder, where an
// error message can point.
func (r *Run) stderrFile(name string) io.Writer {
	f, err := os.Create(r.path(name + ".stderr"))
	if err != nil {
		return io.Discard
	}
	r.files = append(r.files, f)
	return f
}

// agentEnv makes the web server's processes seal and open SmHost.conf's
// secret as the lab's web server host, not as this machine; LabHost.conf
// says the same to the commands a user runs on the out folder afterwards
// (agentlab conf check, probe).
func (r *Run) agentEnv() []string {
	return []string{conf.HostIDEnv + "=" + r.Lab.WebServer.Host}
}

func (r *Run) register(ctx context.Context) error {
	l, w := r.Lab, r.Lab.WebServer
	first, _ := l.bootstrapServer(w.Bootstrap[0])
	r.progress("registering trusted host %s with %s (smreghost)", w.TrustedHost, first.Host)
	args := []string{
		"-i", first.Addr(), "-u", l.Admin.Login(), "-p", l.Admin.Password,
		"-hn", w.TrustedHost, "-hc", w.HostConfigObject, "-f", r.path("SmHost.conf"), "-o",
		"--hosts", r.hostsFile, "--trace", r.path(RegistrationDir), "--source", l.Hosts[w.Host],
	}
	if err := r.runToEnd(ctx, ProcSpec{Name: "smreghost", Bin: r.bin("smreghost"), Args: args, Env: r.agentEnv(), Stderr: r.stderrFile("smreghost")}); err != nil {
		return err
	}
	if err := conf.WriteLabHost(r.Opts.Out, r.Lab.WebServer.Host); err != nil {
		return err
	}
	// Further bootstrap servers go where the vendor's comment says to add
	// them, after the one smreghost wrote.
	if len(w.Bootstrap) > 1 {
		sm, err := conf.ReadSmHost(r.path("SmHost.conf"))
		if err != nil {
			return err
		}
		for _, b := range w.Bootstrap[1:] {
			ps, _ := l.bootstrapServer(b)
			p := conf.PolicyServer{Host: ps.Host, AuthorizationPort: ps.Port}
			if ps.Port == conf.AuthorizationPort {
				p.AccountingPort, p.AuthenticationPort = conf.AccountingPort, conf.AuthenticationPort
			}
			if err := sm.File.Add("policyserver", p.String()); err != nil {
				return err
			}
		}
		if err := sm.File.WriteFile(r.path("SmHost.conf"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (r *Run) writeWebAgent() error {
	w := r.Lab.WebServer
	wa, err := conf.NewWebAgent(r.path("WebAgent.conf"), conf.WebAgent{
		HostConfigFile: "SmHost.conf", AgentConfigObject: w.AgentConfigObject, EnableWebAgent: true,
		ServerPath: "agentlab-" + r.Lab.Name + "-" + w.Host,
	})
	if err != nil {
		return err
	}
	return wa.File.WriteFile(r.path("WebAgent.conf"), 0o644)
}

// WorkerProc is what the web server's processes are called in traces and
// by the system's tools: w3wp.exe for IIS, httpd for Apache (the parent
// and each child).
func (w WebServer) WorkerProc() string { return procname.Model(w.Model).Worker }

// VendorPollInterval is the vendor's PSPollInterval, which a lab
// shortens by default so that a run sees its polls in seconds.
const VendorPollInterval = 30 * time.Second

// ParentProc is the web server's own process, the one the lab starts:
// WAS (svchost.exe) for IIS, the httpd parent for Apache.
func (w WebServer) ParentProc() string {
	if w.Model == "apache" {
		return "httpd"
	}
	return "svchost.exe"
}

// webServerArgs are hla's flags for the lab's web server.
func (r *Run) webServerArgs(addr string) []string {
	l, w := r.Lab, r.Lab.WebServer
	args := []string{
		"--webagent", r.path("WebAgent.conf"), "--listen", addr, "--model", w.Model,
		"--out", r.Opts.Out, "--trace", r.Opts.Out, "--trace-payload",
		"--hosts", r.hostsFile, "--source", l.Hosts[w.Host], "--poll", r.poll().String(),
	}
	if w.HealthPoll > 0 {
		args = append(args, "--health-poll", time.Duration(w.HealthPoll).String())
	}
	if l.Metrics {
		args = append(args, "--metrics", l.Hosts[w.Host]+":0")
	}
	if w.Model == "apache" {
		args = append(args, "--workers", strconv.Itoa(max(w.Workers, 1)))
		if w.MPM != "" {
			args = append(args, "--mpm", w.MPM)
		}
		if w.MaxRequestsPerChild > 0 {
			args = append(args, "--max-requests-per-child", strconv.Itoa(w.MaxRequestsPerChild))
		}
		if w.ACOFromLLAWP {
			args = append(args, "--aco-from-llawp")
		}
	}
	return args
}

// startWebServer starts the web server: in the IIS model WAS
// (svchost.exe), which starts the worker, w3wp.exe, which does its
// bootstrap and HCO phase, then launches the LLAWP, which does its own; in
// the Apache model the httpd parent, which starts the children, each of
// which does its own, then launches the LLAWP. Either restarts a worker
// that dies; nothing restarts the parent.
func (r *Run) startWebServer(ctx context.Context) (*Proc, error) {
	l, w := r.Lab, r.Lab.WebServer
	addr := fmt.Sprintf("%s:%d", l.Hosts[w.Host], w.HTTPPort)
	name := w.ParentProc()
	if w.Model == "apache" {
		r.progress("starting web server %s (hla, Apache model: httpd parent and %d children) on %s, waiting for every child's bootstrap and HCO phase, then the LLAWP's",
			w.Host, max(w.Workers, 1), addr)
	} else {
		r.progress("starting web server %s (hla, IIS model: WAS in svchost.exe, which starts w3wp.exe) on %s, waiting for w3wp.exe's bootstrap and HCO phase, then its LLAWP.exe's", w.Host, addr)
	}
	sctx, cancel := context.WithTimeout(ctx, r.Opts.StartTimeout)
	defer cancel()
	p, err := r.start(sctx, ProcSpec{Name: name, Bin: r.bin("hla"), Arg0: name, Args: r.webServerArgs(addr), Env: r.agentEnv(), Ready: notice.HLAServing, Stderr: r.stderrFile(name), Role: roleWeb},
		func(p *trace.Process) {
			p.Exit.Action = "nothing restarts the web server's own process, and its workers and LLAWP stop with it: the run ends"
			r.webDown(fmt.Errorf("%w: %s", errWebServerDown, p))
		})
	if err != nil {
		out, _ := os.ReadFile(r.path(name + ".stderr"))
		return nil, fmt.Errorf("web server %s: %w\n%s", w.Host, err, out)
	}
	r.procs = append(r.procs, p)
	r.summary.WebServerURL = "http://" + addr + "/"
	return p, nil
}

func (r *Run) poll() time.Duration {
	if r.Opts.Poll > 0 {
		return r.Opts.Poll
	}
	return time.Duration(r.Lab.PollInterval)
}

// workload sends the page loads a browser would.
func (r *Run) workload(ctx context.Context, web *Proc) error {
	ws := r.workloadSpec()
	r.progress("sending %s to %s as %s (Basic challenge answered)", ws.describe(), r.summary.WebServerURL, r.Lab.User.Login())
	r.faultsWorkloadStarted()
	res := Workload{
		BaseURL: strings.TrimSuffix(r.summary.WebServerURL, "/"), User: r.Lab.User.Login(), Password: r.Lab.User.Password,
		Paths: []string{"/protected/", "/"}, Requests: ws.Requests, Duration: time.Duration(ws.Duration), Rate: ws.Rate,
		Concurrency: ws.Concurrency,
	}.Run(ctx)
	q := &r.summary.Requests
	q.Sent, q.Succeeded, q.Failed, q.Challenges, q.Errors = res.Sent, res.Succeeded, res.Failed, res.Challenges, res.Errors
	q.Skipped = res.Skipped
	if res.Skipped > 0 {
		r.progress("%d page loads not sent: every browser was busy at their time (skipped rather than sent late in a burst; more browsers with --concurrency)", res.Skipped)
	}
	q.P50ms = float64(res.Percentile(50).Microseconds()) / 1000
	q.P99ms = float64(res.Percentile(99).Microseconds()) / 1000
	q.MaxMs = float64(res.Percentile(100).Microseconds()) / 1000
	q.ElapsedMs = float64(res.Elapsed.Microseconds()) / 1000
	if err := r.awaitFaults(ctx); err != nil {
		return err
	}
	// Under faults, failed page loads are what the lab is about: they are
	// counted and shown, and the run goes on.
	if res.Failed > 0 && r.hasFaults() {
		r.progress("%d of %d page loads failed under the lab's faults (summary.json has the first errors)", res.Failed, res.Sent)
	} else if res.Failed > 0 {
		return fmt.Errorf("%d of %d page loads failed: %s", res.Failed, res.Sent, strings.Join(res.Errors, "; "))
	}
	return nil
}

// waitPolls waits until the LLAWP's trace shows the management polls. It
// only decides when to stop waiting: the count summary.json and agentlab
// compare report is taken once, from the merged trace, when the run ends
// (finish), because the LLAWP goes on polling until it is stopped.
func (r *Run) waitPolls(ctx context.Context) error {
	want := r.polls()
	r.progress("%s", r.pollWaitLine(want))
	limit := time.Duration(want+1)*r.poll() + 10*time.Second
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		n, err := r.pollsSoFar()
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("only %d of %d management polls within %s", n, want, limit)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// pollWaitLine says what waitPolls waits for; that the lab shortens the
// vendor's interval only when it does.
func (r *Run) pollWaitLine(want int) string {
	llawp := procname.Model(r.Lab.WebServer.Model).LLAWP
	if r.poll() < VendorPollInterval {
		return fmt.Sprintf("waiting for %d management polls by %s (every %s: the lab shortens the vendor's 30 s; --poll 30s restores it)", want, llawp, r.poll())
	}
	return fmt.Sprintf("waiting for %d management polls by %s (every %s)", want, llawp, r.poll())
}

// pollsSoFar counts the polls in the agents' trace files as they are
// being written: every process's file, since only the LLAWP's events can
// be polls and its file name follows the name the product gives it.
func (r *Run) pollsSoFar() (int, error) {
	files, err := filepath.Glob(r.path("*.trace.jsonl"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "trace.jsonl" {
			continue
		}
		evs, err := trace.ReadFile(f)
		if err != nil {
			return 0, err
		}
		n += ManagementPolls(evs)
	}
	return n, nil
}

// ManagementPolls counts the management polls a trace shows: the DoManagement
// round trips an agent completed, one response each. The pool records them
// in the management phase and nothing else (pool.Do), so the phase is the
// test, not the response's note. This is the one definition of a poll:
// waitPolls waits on it, summary.json and agentlab compare report it.
func ManagementPolls(evs []trace.Event) int {
	n := 0
	for _, e := range evs {
		if e.Op == trace.OpResponse && e.Phase == trace.PhaseManagement {
			n++
		}
	}
	return n
}

// runToEnd runs the registration tool, smreghost, to its end.
func (r *Run) runToEnd(ctx context.Context, s ProcSpec) error {
	// The registration's records are apart from the run's, as its
	// sockets are: smreghost's Process Create and Exit go there too.
	rec, err := trace.Create(r.path(RegistrationDir), trace.Options{Proc: "agentlab", Role: "lab"})
	if err != nil {
		return err
	}
	defer rec.Close()
	s.OnStart = func(p *Proc) { rec.ProcessCreate(r.process(p)) }
	p, err := Start(ctx, s)
	if err != nil {
		return err
	}
	r.procs = append(r.procs, p)
	err = p.Wait(ctx)
	rec.ProcessExit(r.process(p))
	if err != nil {
		out, _ := os.ReadFile(r.path(s.Name + ".stderr"))
		return fmt.Errorf("%s failed: %v\n%s", s.Name, err, out)
	}
	for _, line := range p.Stdout() {
		r.progress("%s: %s", s.Name, line)
	}
	return nil
}

func (r *Run) stopAll() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		p := r.procs[i]
		dead := false
		select {
		case <-p.Done():
			dead = true // a death, recorded when it happened
		default:
		}
		err := p.Stop(stopGrace)
		if !dead {
			r.recordStop(p, "stopped by the lab at the end of the run")
		}
		info := ProcInfo{Name: p.Name, Proc: filepath.Base(p.Cmd.Path), PID: p.PID(), Exit: strconv.Itoa(p.Cmd.ProcessState.ExitCode())}
		if err != nil {
			info.Error = err.Error()
		}
		r.infos = append([]ProcInfo{info}, r.infos...)
	}
}

func (r *Run) finish(runErr error) ([]trace.Event, error) {
	for _, f := range r.files {
		f.Close()
	}
	r.summary.Processes = r.infos
	r.deathsMu.Lock()
	r.summary.Deaths = slices.Clone(r.deaths)
	r.deathsMu.Unlock()
	r.summary.Duration = time.Since(r.summary.Started).Round(time.Millisecond).String()
	evs, err := r.mergeTraces()
	if err != nil {
		runErr = errors.Join(runErr, err)
	}
	r.summary.Events = len(evs)
	// Every poll of the run, those made while the lab stopped the
	// processes included: the LLAWP stops last (an Apache child that
	// takes seconds to drain leaves it polling), and the trace, the
	// steps and agentlab compare all show those polls too.
	r.summary.ManagementPolls = ManagementPolls(evs)
	r.summary.Processes = append(r.summary.Processes, agentProcs(evs, r.infos, r.Lab.WebServer.WorkerProc())...)
	for _, p := range r.infos {
		if p.Error != "" && runErr == nil {
			runErr = fmt.Errorf("process %s", p.Error)
		}
	}
	if runErr != nil {
		r.summary.Error = runErr.Error()
	}
	b, _ := json.MarshalIndent(&r.summary, "", "  ")
	if err := os.WriteFile(r.path("summary.json"), append(b, '\n'), 0o644); err != nil {
		runErr = errors.Join(runErr, err)
	}
	// A failed run writes its report too: what it did before failing is
	// what a learner needs to see.
	if err := r.writeReport(evs); err != nil {
		runErr = errors.Join(runErr, err)
	}
	return evs, runErr
}

// tableEvents are the events the Process Monitor view reads: the run's,
// and with all the registration's too, which happened before the web
// server started.
func (r *Run) tableEvents(evs []trace.Event, all bool) []trace.Event {
	if !all || len(r.registration) == 0 {
		return evs
	}
	out := append(slices.Clone(r.registration), evs...)
	slices.SortStableFunc(out, func(a, b trace.Event) int { return a.T.Compare(b.T) })
	return out
}

// mergeTraces merges the processes' traces into trace.jsonl and renders
// trace.pcapng. The registration, which happens before the web server
// starts, goes to a folder of its own (RegistrationDir, with its own
// trace.jsonl and trace.pcapng): the run's trace starts, as the seed's
// capture does, when the web server starts. smreghost records its side
// there; the Policy Server's side of the same connections is taken out
// of the run's events.
func (r *Run) mergeTraces() ([]trace.Event, error) {
	evs, err := trace.Merge(r.Opts.Out)
	if err != nil {
		return nil, fmt.Errorf("merging traces: %w", err)
	}
	if r.registration, err = trace.Merge(r.path(RegistrationDir)); err != nil {
		return nil, fmt.Errorf("merging the registration's trace: %w", err)
	}
	evs, r.registration = splitRegistration(evs, r.registration)
	var errs []error
	for _, out := range []struct {
		dir string
		evs []trace.Event
	}{{r.Opts.Out, evs}, {r.path(RegistrationDir), r.registration}} {
		if len(out.evs) == 0 {
			continue
		}
		if err := trace.WriteEventsFile(filepath.Join(out.dir, "trace.jsonl"), out.evs); err != nil {
			errs = append(errs, err)
		}
		if err := r.writePcapng(filepath.Join(out.dir, PcapngFile), out.evs); err != nil {
			errs = append(errs, err)
		}
	}
	return evs, errors.Join(errs...)
}

// splitRegistration moves the Policy Servers' side of the registration's
// connections from evs to reg. A server-side connection is the one
// accepted on the reverse address pair of a registration connection while
// it was open; all of its events go, by its connection id.
func splitRegistration(evs, reg []trace.Event) (run, regAll []trace.Event) {
	type span struct{ from, to time.Time }
	open := map[string]*span{} // server's local|remote -> when the client's side was open
	for _, e := range reg {
		if e.Conn == "" {
			continue
		}
		k := e.Remote + "|" + e.Local
		if sp := open[k]; sp == nil {
			open[k] = &span{e.T, e.T}
		} else {
			sp.to = e.T
		}
	}
	if len(open) == 0 {
		return evs, reg
	}
	server := map[string]bool{} // server-side connection ids
	for _, e := range evs {
		if e.Op != trace.OpAccept {
			continue
		}
		// The server accepts before the client's connect returns and
		// records: a moment's slack on each side.
		if sp := open[e.Local+"|"+e.Remote]; sp != nil && !e.T.Before(sp.from.Add(-time.Second)) && !e.T.After(sp.to.Add(time.Second)) {
			server[e.Conn] = true
		}
	}
	regAll = slices.Clone(reg)
	for _, e := range evs {
		if e.Conn != "" && server[e.Conn] {
			regAll = append(regAll, e)
		} else {
			run = append(run, e)
		}
	}
	slices.SortStableFunc(regAll, func(a, b trace.Event) int { return a.T.Compare(b.T) })
	return run, regAll
}

// Summary is what the run wrote to summary.json.
func (r *Run) Summary() Summary { return r.summary }

// stopGrace is how long a process may take to stop after SIGTERM before
// the lab kills it: the web server stops its LLAWP first, and binaries built
// with the race detector take about a second more to exit.
const stopGrace = 15 * time.Second

func (r *Run) polls() int {
	if r.Opts.Polls > 0 {
		return r.Opts.Polls
	}
	return 2
}

// agentProcs lists the processes a trace shows that the lab did not start
// itself: the LLAWP, and the Apache model's children, launched by the web
// server.
func agentProcs(evs []trace.Event, started []ProcInfo, web string) []ProcInfo {
	known := map[int]bool{}
	for _, p := range started {
		known[p.PID] = true
	}
	// Who started whom is in the supervisors' Process Create rows: WAS
	// (svchost.exe) starts w3wp.exe, which starts LLAWP.exe.
	parent := map[int]string{}
	for _, e := range evs {
		if e.Op == trace.OpProcessCreate && e.Process != nil && e.Process.Parent != "" {
			parent[e.Process.PID] = e.Process.Parent
		}
	}
	var out []ProcInfo
	for _, e := range evs {
		if known[e.PID] || e.Role != "llawp" && e.Role != "hla" {
			continue
		}
		known[e.PID] = true
		bin := "hla"
		if e.Role == "llawp" {
			bin = "llawp"
		}
		by := parent[e.PID]
		if by == "" {
			by = web
		}
		out = append(out, ProcInfo{Name: e.Proc, Proc: bin, PID: e.PID, Role: e.Role, StartedBy: by})
	}
	return out
}

// runFiles are the names a run writes into its folder. A new run removes
// them first: the traces are named by pid and the merge reads every one in
// the folder, so a second run would otherwise count the first run's polls
// and narrate both runs' processes.
var runFiles = []string{"*.trace.jsonl", "trace.jsonl", "*.log", "*.log.*", "*.jsonl", "*.stderr",
	"summary.json", LLAWPStatusFile, StoreFile, "SmHost.conf", "WebAgent.conf", conf.LabHostFile, trace.RunHostsFile, "registrations.yaml", "registrations.yaml.lock", ReportFile, PcapngFile,
	RegistrationDir + "/*.trace.jsonl", RegistrationDir + "/trace.jsonl", RegistrationDir + "/" + PcapngFile}

func clearPreviousRun(dir string) (int, error) {
	n := 0
	for _, pat := range runFiles {
		files, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return n, err
		}
		for _, f := range files {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				return n, fmt.Errorf("clearing the previous run: %w", err)
			}
			n++
		}
	}
	return n, nil
}

// Report prints what a run shows a learner: the Process Monitor view
// (filtered as the seed filters, or every process with all), the steps
// of the agent processes, and the summary line. The steps leave out the
// registration, which happens before the web server exists, so that Steps
// 1 to 4 are the seed's: the worker's bootstrap and HCO phase, then the
// LLAWP's.
func (r *Run) Report(w io.Writer, evs []trace.Event, all bool) {
	l, sum := r.Lab, r.summary
	if len(evs) > 0 {
		servers := l.ServerHosts()
		keep, what := r.tableView(all)
		limit := r.Opts.TableRows
		if limit == 0 {
			limit = DefaultTableRows
		}
		fmt.Fprintf(w, "\nProcess Monitor view (%s):\n\n", what)
		if n, _ := procmon.WriteTable(w, r.tableEvents(evs, all), keep, r.Opts.Procmon, limit); limit > 0 && n > limit {
			fmt.Fprintf(w, "… and %d more rows (%d in all): every row is in %s and trace.jsonl; --rows -1 prints them all here.\n",
				n-limit, n, ReportFile)
		}
		// The agents' events, and the Policy Servers' side of their
		// conversations: the narrative tells a server's queue and
		// refusals (narrative/load.go) from the servers' own records.
		var agents []trace.Event
		for _, e := range evs {
			if e.Role == "hla" || e.Role == "llawp" || e.Role == rolePolicyServer {
				agents = append(agents, e)
			}
		}
		fmt.Fprintf(w, "\nWhat happened, step by step:\n\n")
		narrative.Write(w, narrative.Narrate(agents, l.WebServer.Host, servers))
		r.writeLLAWPStatus(w)
		fmt.Fprintf(w, "\nThe lab polled management every %s (the vendor's default is 30s).\n", sum.PollInterval)
		files := "trace.jsonl, each process's log, WA.log, SmHost.conf, WebAgent.conf, summary.json"
		if r.llawpWritten {
			files += ", " + LLAWPStatusFile
		}
		fmt.Fprintf(w, "Everything is in %s: %s.\n", r.Opts.Out, files)
		if p := r.PcapngPath(); p != "" {
			fmt.Fprintf(w, "Open %s in Wireshark: the connections rendered from the trace, each packet's process in its comment.\n", p)
			if r.Opts.KeyLog != "" {
				fmt.Fprintf(w, "Decrypt its requests with the key log (a secret: delete it after): tshark -X lua_script:wireshark/agentlab_tli.lua -o agentlab_tli.keylog:%s -r %s -Y agentlab_tli\n", r.Opts.KeyLog, p)
			}
		}
	}
	r.reportFaults(w, evs)
	if len(sum.Deaths) > 0 {
		fmt.Fprintf(w, "\nProcesses that died during the run:\n")
		for _, d := range sum.Deaths {
			fmt.Fprintf(w, "  %s  %s\n", d.At.Local().Format("15:04:05.000"), deathLine(d.Process))
		}
	}
	// The chart is for runs long enough to show a change: a few seconds.
	if servers := l.ServerHosts(); len(servers) > 1 || len(sum.Faults) > 0 {
		if load := chart.CountLoad(evs, l.WebServer.Host, servers); load.Seconds() >= 3 {
			fmt.Fprintf(w, "\nRequests answered per second, by Policy Server (from the trace):\n\n")
			chart.Write(w, load)
		}
	}
	// A Policy Server under load: its connections and queue beside what
	// it answered, when the metrics or the trace tell them.
	if load := chart.CountLoad(evs, l.WebServer.Host, l.ServerHosts()); load.Seconds() > 0 {
		if g := r.serverGauges(evs, load); g.Any() {
			fmt.Fprintln(w)
			chart.WriteServers(w, load, g)
		}
	}
	q := sum.Requests
	fmt.Fprintf(w, "requests: %d sent, %d succeeded, %d failed", q.Sent, q.Succeeded, q.Failed)
	if q.Skipped > 0 {
		fmt.Fprintf(w, ", %d skipped (every browser busy)", q.Skipped)
	}
	fmt.Fprintln(w)
}
