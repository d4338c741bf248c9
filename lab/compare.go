package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentlab/agentlab/report"
	"github.com/agentlab/agentlab/trace"
)

// Figures are what agentlab compare shows of one run. Each is counted from
// the run's merged trace or read from its summary (workload and process
// accounting): none is estimated.
type Figures struct {
	Run                 string `json:"run"`
	Model               string `json:"model"`
	MPM                 string `json:"mpm,omitempty"`
	Workers             int    `json:"workers,omitempty"`
	MaxRequestsPerChild int    `json:"max_requests_per_child,omitempty"`

	// Processes are the agent processes the trace shows (role hla or
	// llawp): w3wp.exe and its LLAWP, or every httpd child, replacements
	// included, and the LLAWP. The Apache parent never talks to a Policy
	// Server, so it is not one of them.
	Processes int `json:"agent_processes"`
	// BootstrapRounds are the connections agent processes opened in the
	// bootstrap phase: one per process that fetched its HCO.
	BootstrapRounds int `json:"bootstrap_rounds"`
	// Handshakes are the client handshakes agent processes completed
	// (their ClientConfirm).
	Handshakes int `json:"handshakes"`
	// Connections are the TCP connections agent processes opened, per
	// Policy Server host; FailedConnects the attempts that never connected.
	Connections    map[string]int `json:"connections_opened"`
	FailedConnects int            `json:"failed_connects,omitempty"`
	// PeakOpen is, per Policy Server host, the most agent sockets that were
	// connected and not yet closed at one time.
	PeakOpen        map[string]int `json:"peak_open_sockets"`
	ACODownloads    int            `json:"aco_downloads"`
	ManagementPolls int            `json:"management_polls"`

	PageLoads      int     `json:"page_loads"`
	Succeeded      int     `json:"succeeded"`
	Failed         int     `json:"failed"`
	ElapsedMs      float64 `json:"elapsed_ms"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	// RSSMiB is the summed VmRSS of the web server's processes (WAS's
	// svchost.exe or the Apache parent included) and the LLAWP, sampled after the workload; 0 when
	// it was not sampled.
	RSSMiB    float64 `json:"rss_mib"`
	RSSProcs  int     `json:"rss_processes,omitempty"`
	Recycling bool    `json:"recycling,omitempty"`
	// ConnsPer1000 is every connection agent processes opened, start-up
	// included, per 1,000 page loads sent. Set when the run recycled
	// children, or is the baseline of runs that did.
	ConnsPer1000 *float64 `json:"connections_per_1000_requests,omitempty"`
}

// RunName names a run by its web server model: IIS, Apache prefork or
// Apache worker.
func RunName(s Settings) string {
	if s.Model != "apache" {
		return "IIS"
	}
	mpm := s.MPM
	if mpm == "" {
		mpm = "prefork" // hla's default
	}
	return "Apache " + mpm
}

func isAgent(e trace.Event) bool { return e.Role == "hla" || e.Role == "llawp" }

func serverOf(e trace.Event) string {
	if e.RemoteHost != "" {
		return e.RemoteHost
	}
	return e.Remote
}

// ComputeFigures counts a run's figures from its merged trace and its
// summary. The connections per 1,000 page loads are filled in when the run
// recycled children.
func ComputeFigures(evs []trace.Event, sum Summary) Figures {
	s := sum.Settings
	f := Figures{
		Run: RunName(s), Model: s.Model, MaxRequestsPerChild: s.MaxRequests,
		Connections: map[string]int{}, PeakOpen: map[string]int{},
		PageLoads: sum.Requests.Sent, Succeeded: sum.Requests.Succeeded, Failed: sum.Requests.Failed,
		ElapsedMs: sum.Requests.ElapsedMs, P50ms: sum.Requests.P50ms, P99ms: sum.Requests.P99ms,
		// Counted once, as the run ended, from the same trace.
		ManagementPolls: sum.ManagementPolls,
	}
	if s.Model == "apache" {
		f.MPM, f.Workers = s.MPM, s.Workers
		if f.MPM == "" {
			f.MPM = "prefork"
		}
		f.Recycling = s.MaxRequests > 0
	}
	if f.ElapsedMs > 0 {
		f.RequestsPerSec = float64(f.Succeeded) / (f.ElapsedMs / 1000)
	}
	if m := sum.AgentMemory; m != nil {
		f.RSSMiB, f.RSSProcs = float64(m.KiB)/1024, len(m.PIDs)
	}

	var agent []trace.Event
	for _, e := range evs {
		if isAgent(e) {
			agent = append(agent, e)
		}
	}
	// A merged trace is in time order already; a hand-built or
	// concatenated one may not be, and a close counted before its connect
	// would lower the peak.
	slices.SortStableFunc(agent, func(a, b trace.Event) int { return a.T.Compare(b.T) })

	pids := map[int]bool{}
	open := map[string]int{}
	openConns := map[string]string{} // conn id -> server, while open
	for _, e := range agent {
		pids[e.PID] = true
		switch e.Op {
		case trace.OpConnect:
			if e.Conn == "" {
				f.FailedConnects++
				continue
			}
			if _, dup := openConns[e.Conn]; dup {
				continue
			}
			srv := serverOf(e)
			f.Connections[srv]++
			if e.Phase == trace.PhaseBootstrap {
				f.BootstrapRounds++
			}
			openConns[e.Conn] = srv
			open[srv]++
			f.PeakOpen[srv] = max(f.PeakOpen[srv], open[srv])
		case trace.OpDisconnect, trace.OpReset:
			// A reset may follow a disconnect on the same socket: only the
			// first end closes it.
			if srv, ok := openConns[e.Conn]; ok {
				delete(openConns, e.Conn)
				open[srv]--
			}
		case trace.OpHandshake:
			if e.Handshake == trace.HandshakeClientConfirm {
				f.Handshakes++
			}
		case trace.OpRequest:
			if e.Request == trace.ReqGetAgentConfig {
				f.ACODownloads++
			}
		}
	}
	f.Processes = len(pids)
	if f.Recycling {
		f.SetConnsPer1000()
	}
	return f
}

// SetConnsPer1000 fills in the connections opened per 1,000 page loads.
func (f *Figures) SetConnsPer1000() {
	if f.PageLoads == 0 {
		return
	}
	n := 0
	for _, c := range f.Connections {
		n += c
	}
	v := float64(n) * 1000 / float64(f.PageLoads)
	f.ConnsPer1000 = &v
}

// MemorySample is the resident memory of a process and its descendants.
type MemorySample struct {
	KiB  int   `json:"kib"`
	PIDs []int `json:"pids"`
}

// SampleMemory sums VmRSS of pid and every process descending from it: the
// web server, its children and its LLAWP, all of which it starts. A process
// that exits between the scan and the read is left out.
func SampleMemory(root int) (*MemorySample, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// The name in parentheses may hold spaces: the fields that
		// follow start after its last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(fields[1]); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	m := &MemorySample{}
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		queue = append(queue, children[pid]...)
		kib, err := vmRSS(pid)
		if err != nil {
			if pid == root {
				return nil, err
			}
			continue
		}
		m.KiB += kib
		m.PIDs = append(m.PIDs, pid)
	}
	slices.Sort(m.PIDs)
	return m, nil
}

func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS (a zombie?)", pid)
}

// CompareOptions say how agentlab compare runs its three labs.
type CompareOptions struct {
	// Out holds one folder per run: iis, apache-prefork, apache-worker.
	Out         string
	BinDir      string
	Progress    io.Writer
	Requests    int
	Concurrency int
	Poll        time.Duration
	// Workers are the Apache runs' children.
	Workers int
	// MaxRequestsPerChild recycles the Apache runs' children; 0 never.
	MaxRequestsPerChild int
}

// CompareRun is one of the three runs.
type CompareRun struct {
	Figures
	Out   string `json:"out"`
	Error string `json:"error,omitempty"`
	// side is the run as report.html shows it, events and all.
	side report.Side
}

// compareSpecs are the three process models, in the order they run and
// are printed.
var compareSpecs = []struct{ dir, model, mpm string }{
	{"iis", "iis", ""},
	{"apache-prefork", "apache", "prefork"},
	{"apache-worker", "apache", "worker"},
}

// Compare runs the lab once per process model, one after another (they use
// the same addresses), with the same workload, and returns each run's
// figures. A failed run is reported in its CompareRun and the others still
// run; only a cancelled ctx stops the sequence.
func Compare(ctx context.Context, l *Lab, o CompareOptions) []CompareRun {
	var runs []CompareRun
	for _, s := range compareSpecs {
		if ctx.Err() != nil {
			break
		}
		cl := *l
		w := &cl.WebServer
		w.Model, w.MPM, w.Workers, w.MaxRequestsPerChild = s.model, s.mpm, 0, 0
		if s.model == "apache" {
			w.Workers = max(o.Workers, 1)
			w.MaxRequestsPerChild = o.MaxRequestsPerChild
		}
		out := filepath.Join(o.Out, s.dir)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "compare: run %d of %d, %s, in %s\n", len(runs)+1, len(compareSpecs), RunName(Settings{Model: s.model, MPM: s.mpm}), out)
		}
		r := &Run{Lab: &cl, Opts: Options{Out: out, BinDir: o.BinDir, Progress: o.Progress,
			Requests: o.Requests, Concurrency: o.Concurrency, Poll: o.Poll}}
		evs, err := r.Execute(ctx)
		cr := CompareRun{Figures: ComputeFigures(evs, r.Summary()), Out: out,
			side: r.reportSide(RunName(r.Summary().Settings), evs, r.compareLines())}
		if err != nil {
			cr.Error = err.Error()
		}
		runs = append(runs, cr)
	}
	// The IIS run never recycles; with recycling on, its figure is the
	// baseline the Apache runs' storm is read against.
	if o.MaxRequestsPerChild > 0 {
		for i := range runs {
			runs[i].SetConnsPer1000()
		}
	}
	return runs
}

// CompareFailures names the runs that failed, or is nil.
func CompareFailures(runs []CompareRun) error {
	var errs []error
	for _, r := range runs {
		if r.Error != "" {
			errs = append(errs, fmt.Errorf("%s run failed (%s): %s", r.Run, r.Out, r.Error))
		}
	}
	if len(runs) < len(compareSpecs) {
		errs = append(errs, fmt.Errorf("only %d of %d runs ran", len(runs), len(compareSpecs)))
	}
	return errors.Join(errs...)
}

// WriteCompareTable prints one column per run and one row per figure.
// servers orders the per-server rows (the lab's Policy Servers); a server
// only some trace shows comes after them.
func WriteCompareTable(w io.Writer, runs []CompareRun, servers []string) error {
	servers = slices.Clone(servers)
	for _, r := range runs {
		for _, m := range []map[string]int{r.Connections, r.PeakOpen} {
			for s := range m {
				if !slices.Contains(servers, s) {
					servers = append(servers, s)
				}
			}
		}
	}
	var rows [][]string
	row := func(label string, cell func(r CompareRun) string) {
		cells := []string{label}
		for _, r := range runs {
			cells = append(cells, cell(r))
		}
		rows = append(rows, cells)
	}
	num := func(get func(r CompareRun) int) func(CompareRun) string {
		return func(r CompareRun) string { return strconv.Itoa(get(r)) }
	}
	row("", func(r CompareRun) string {
		if r.Error != "" {
			return r.Run + " (FAILED)"
		}
		return r.Run
	})
	row("agent processes (workers + LLAWP)", num(func(r CompareRun) int { return r.Processes }))
	row("bootstrap rounds", num(func(r CompareRun) int { return r.BootstrapRounds }))
	row("handshakes completed", num(func(r CompareRun) int { return r.Handshakes }))
	for _, s := range servers {
		row("TCP connections opened to "+s, num(func(r CompareRun) int { return r.Connections[s] }))
	}
	if slices.ContainsFunc(runs, func(r CompareRun) bool { return r.FailedConnects > 0 }) {
		row("failed connects", num(func(r CompareRun) int { return r.FailedConnects }))
	}
	for _, s := range servers {
		row("peak open sockets to "+s, num(func(r CompareRun) int { return r.PeakOpen[s] }))
	}
	row("ACO downloads", num(func(r CompareRun) int { return r.ACODownloads }))
	row("management polls", num(func(r CompareRun) int { return r.ManagementPolls }))
	row("page loads succeeded / sent", func(r CompareRun) string { return fmt.Sprintf("%d / %d", r.Succeeded, r.PageLoads) })
	row("page loads/s (each one or two HTTP requests)", func(r CompareRun) string { return fmt.Sprintf("%.0f", r.RequestsPerSec) })
	row("p50 latency (ms)", func(r CompareRun) string { return fmt.Sprintf("%.2f", r.P50ms) })
	row("p99 latency (ms)", func(r CompareRun) string { return fmt.Sprintf("%.2f", r.P99ms) })
	row("resident memory (MiB)", func(r CompareRun) string {
		if r.RSSProcs == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f (%d procs)", r.RSSMiB, r.RSSProcs)
	})
	if slices.ContainsFunc(runs, func(r CompareRun) bool { return r.ConnsPer1000 != nil }) {
		row("connections opened per 1,000 page loads", func(r CompareRun) string {
			if r.ConnsPer1000 == nil {
				return "-"
			}
			return fmt.Sprintf("%.0f", *r.ConnsPer1000)
		})
	}
	// Figures read best right-aligned, labels left-aligned: padding the
	// labels to one width keeps tabwriter's right alignment off them.
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, r := range rows {
		fmt.Fprintf(tw, "%-*s\t%s\t\n", width, r[0], strings.Join(r[1:], "\t"))
	}
	return tw.Flush()
}
