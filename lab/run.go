package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/agentlab/conf"
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
	// StartedBy is empty for the processes the lab started; the LLAWP is
	// started by its web server, and known only from its own trace.
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
	// server, and what it did (lab/faults.go).
	Faults []FaultRecord `json:"faults,omitempty"`
	Error  string        `json:"error,omitempty"`
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
	// store is the store file the Policy Servers load; "" for their
	// embedded seed store.
	store string
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
	r.hostsFile = r.path("hosts")
	if err := os.WriteFile(r.hostsFile, hosts.Bytes(), 0o644); err != nil {
		return nil, err
	}
	defer func() {
		err = errors.Join(err, r.stopFaults())
		r.stopAll()
		evs, err = r.finish(err)
	}()
	if err := r.writeStore(); err != nil {
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

// writeStore picks the store the Policy Servers load: the lab's ("" is
// the servers' embedded seed store), or, when web_server.agent_cache asks
// for another setting than its ACO has, a copy in the run's folder with the
// ACO's cache turned on or off. A store the lab cannot read goes to the
// servers as it is: they name its file and line.
func (r *Run) writeStore() error {
	l, w := r.Lab, r.Lab.WebServer
	if l.Store != "" {
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
		args = r.faultServerArgs(ps, args)
		r.progress("starting Policy Server %s on %s:%d, waiting until it listens", ps.Host, ip, ps.Port)
		sctx, cancel := context.WithTimeout(ctx, r.Opts.StartTimeout)
		p, err := Start(sctx, ProcSpec{Name: ps.Host, Bin: r.bin("smps"), Args: args, Ready: "smps: listening on", Stderr: r.stderrFile(ps.Host)})
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
// secret as the lab's web server host, not as this machine.
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
		"--hosts", r.hostsFile, "--trace", r.Opts.Out, "--source", l.Hosts[w.Host],
	}
	if err := r.runToEnd(ctx, ProcSpec{Name: "smreghost", Bin: r.bin("smreghost"), Args: args, Env: r.agentEnv(), Stderr: r.stderrFile("smreghost")}); err != nil {
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

// WorkerProc is what the web server's processes are called in traces:
// w3wp.exe for IIS, httpd for Apache (the parent and each child).
func (w WebServer) WorkerProc() string {
	if w.Model == "apache" {
		return "httpd"
	}
	return "w3wp.exe"
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

// startWebServer starts the web server: in the IIS model its worker
// (w3wp.exe), which does its bootstrap and HCO phase, then launches the
// LLAWP, which does its own; in the Apache model the httpd parent, which
// launches the LLAWP and the children, each of which does its own.
func (r *Run) startWebServer(ctx context.Context) (*Proc, error) {
	l, w := r.Lab, r.Lab.WebServer
	addr := fmt.Sprintf("%s:%d", l.Hosts[w.Host], w.HTTPPort)
	name := w.WorkerProc()
	if w.Model == "apache" {
		r.progress("starting web server %s (hla, Apache model: httpd parent and %d children) on %s, waiting for every child's bootstrap and HCO phase",
			w.Host, max(w.Workers, 1), addr)
	} else {
		r.progress("starting web server %s (hla, IIS model: w3wp.exe) on %s, waiting for its bootstrap and HCO phase", w.Host, addr)
	}
	sctx, cancel := context.WithTimeout(ctx, r.Opts.StartTimeout)
	defer cancel()
	p, err := Start(sctx, ProcSpec{Name: name, Bin: r.bin("hla"), Args: r.webServerArgs(addr), Env: r.agentEnv(), Ready: "hla: serving ", Stderr: r.stderrFile(name)})
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

// waitPolls waits until the LLAWP's trace shows the management polls.
func (r *Run) waitPolls(ctx context.Context) error {
	want := r.polls()
	r.progress("waiting for %d management polls by LLAWP.exe (every %s: the lab shortens the vendor's 30 s; --poll 30s restores it)", want, r.poll())
	limit := time.Duration(want+1)*r.poll() + 10*time.Second
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		n, err := r.countPolls()
		if err != nil {
			return err
		}
		r.summary.ManagementPolls = n
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

func (r *Run) countPolls() (int, error) {
	files, err := filepath.Glob(r.path("LLAWP.exe-*.trace.jsonl"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		evs, err := trace.ReadFile(f)
		if err != nil {
			return 0, err
		}
		for _, e := range evs {
			if e.Op == trace.OpResponse && strings.HasPrefix(e.Note, "DoManagement") {
				n++
			}
		}
	}
	return n, nil
}

func (r *Run) runToEnd(ctx context.Context, s ProcSpec) error {
	p, err := Start(ctx, s)
	if err != nil {
		return err
	}
	r.procs = append(r.procs, p)
	if err := p.Wait(ctx); err != nil {
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
		err := p.Stop(stopGrace)
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
	r.summary.Duration = time.Since(r.summary.Started).Round(time.Millisecond).String()
	evs, err := trace.MergeDir(r.Opts.Out)
	if err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("merging traces: %w", err))
	} else if len(evs) > 0 {
		if err := r.writePcapng(evs); err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	r.summary.Events = len(evs)
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
		out = append(out, ProcInfo{Name: e.Proc, Proc: bin, PID: e.PID, Role: e.Role, StartedBy: web})
	}
	return out
}

// runFiles are the names a run writes into its folder. A new run removes
// them first: the traces are named by pid and the merge reads every one in
// the folder, so a second run would otherwise count the first run's polls
// and narrate both runs' processes.
var runFiles = []string{"*.trace.jsonl", "trace.jsonl", "*.log", "*.log.*", "*.jsonl", "*.stderr",
	"summary.json", LLAWPStatusFile, StoreFile, "SmHost.conf", "WebAgent.conf", "hosts", "registrations.yaml", "registrations.yaml.lock", ReportFile, PcapngFile}

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
		var rows []trace.Event
		for _, e := range evs {
			if keep == nil || keep(e) {
				rows = append(rows, e)
			}
		}
		limit := r.Opts.TableRows
		if limit == 0 {
			limit = DefaultTableRows
		}
		fmt.Fprintf(w, "\nProcess Monitor view (%s):\n\n", what)
		if limit > 0 && len(rows) > limit {
			trace.WriteTable(w, rows[:limit], nil)
			fmt.Fprintf(w, "… and %d more rows (%d in all): every row is in %s and trace.jsonl; --rows -1 prints them all here.\n",
				len(rows)-limit, len(rows), ReportFile)
		} else {
			trace.WriteTable(w, rows, nil)
		}
		var agents []trace.Event
		for _, e := range evs {
			if e.Role == "hla" || e.Role == "llawp" {
				agents = append(agents, e)
			}
		}
		fmt.Fprintf(w, "\nWhat happened, step by step:\n\n")
		trace.WriteNarrative(w, trace.Narrate(agents, l.WebServer.Host, servers))
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
	// The chart is for runs long enough to show a change: a few seconds.
	if servers := l.ServerHosts(); len(servers) > 1 || len(sum.Faults) > 0 {
		if load := trace.CountServerLoad(evs, l.WebServer.Host, servers); load.Seconds() >= 3 {
			fmt.Fprintf(w, "\nRequests answered per second, by Policy Server (from the trace):\n\n")
			trace.WriteServerChart(w, load)
		}
	}
	q := sum.Requests
	fmt.Fprintf(w, "requests: %d sent, %d succeeded, %d failed", q.Sent, q.Succeeded, q.Failed)
	if q.Skipped > 0 {
		fmt.Fprintf(w, ", %d skipped (every browser busy)", q.Skipped)
	}
	fmt.Fprintln(w)
}
