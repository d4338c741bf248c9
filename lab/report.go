package lab

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/procname"
	"github.com/agentlab/agentlab/report"
	"github.com/agentlab/agentlab/trace"
)

// ReportFile is the page a run writes into its folder: the sequence
// diagram, the steps and the Process Monitor view of its trace.
const ReportFile = "report.html"

// tableView is the Process Monitor view's events and how the title names
// them: the seed's filter, or every process with all, then the run's
// Process Monitor filter (Options.Procmon) on the rows.
func (r *Run) tableView(all bool) (procmon.Select, string) {
	l := r.Lab
	servers := l.ServerHosts()
	keep, what := procmon.All(procmon.SocketOps, procmon.Between(l.WebServer.Host, servers...)),
		fmt.Sprintf("filtered as the seed filters: %s to %s", l.WebServer.Host, strings.Join(servers, " or "))
	if all {
		keep, what = procmon.Ops, "every process"
	}
	if f := r.Opts.Procmon; !f.IsZero() {
		what += "; then " + f.String()
	}
	return keep, what
}

// reportSide is the run as report.html shows it, read with the filters of
// the text report: the steps and the diagram tell the agent processes
// (the registration happens before the web server exists).
func (r *Run) reportSide(label string, evs []trace.Event, lines []string) report.Side {
	keep, what := r.tableView(r.Opts.All)
	// With --all, the table shows the registration too; the steps and the
	// diagram tell the agents only (isAgent) either way.
	return report.Side{Label: label, Lines: lines, Events: r.tableEvents(evs, r.Opts.All), Host: r.Lab.WebServer.Host, Servers: r.Lab.ServerHosts(),
		Agents: isAgent, Table: keep, Procmon: r.Opts.Procmon, TableWhat: what}
}

// writeReport writes the run's report.html.
func (r *Run) writeReport(evs []trace.Event) error {
	sum := r.summary
	rep := report.Page{
		Title: fmt.Sprintf("agentlab run: lab %s, %s", sum.Lab, RunName(sum.Settings)),
		Lines: append(r.settingsLines(), r.outcomeLines()...),
		Sides: []report.Side{r.reportSide(RunName(sum.Settings), evs, nil)},
	}
	return writeReportFile(r.path(ReportFile), rep)
}

// ReportPath is the run's report.html, or "" when the run wrote none.
func (r *Run) ReportPath() string {
	p := r.path(ReportFile)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func writeReportFile(path string, rep report.Page) error {
	var b bytes.Buffer
	if err := report.Write(&b, rep); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// settingsLines say what the run was asked to do, from its summary.
func (r *Run) settingsLines() []string {
	s := r.summary.Settings
	names := procname.Model(s.Model)
	model := "IIS model: one " + names.Worker + " and its " + names.LLAWP
	if s.Model == "apache" {
		mpm := s.MPM
		if mpm == "" {
			mpm = "prefork"
		}
		model = fmt.Sprintf("Apache model, %s MPM: an %s parent, %d %s children and one %s", mpm, names.Worker, max(s.Workers, 1), names.Worker, names.LLAWP)
		if s.MaxRequests > 0 {
			model += fmt.Sprintf("; a child is replaced after %d requests", s.MaxRequests)
		}
		if s.ACOFromLLAWP {
			model += "; the children take the ACO from the LLAWP"
		}
	}
	return []string{
		fmt.Sprintf("Lab %s: web server %s (%s).", r.summary.Lab, s.WebServer, model),
		fmt.Sprintf("Trusted host %s; SmHost.conf names %s; HCO %s; ACO %s.", s.TrustedHost, s.Bootstrap, s.HCO, s.ACO),
	}
}

// outcomeLines say how the run went, from its summary and its trace.
func (r *Run) outcomeLines() []string {
	sum := r.summary
	q := sum.Requests
	work := fmt.Sprintf("%s sent by %s: %d succeeded, %d failed", plural(q.Sent, "page load", "page loads"),
		plural(sum.Settings.Concurrency, "browser", "browsers"), q.Succeeded, q.Failed)
	if q.Challenges > 0 {
		work += " (" + plural(q.Challenges, "Basic challenge", "Basic challenges") + " answered)"
	}
	if q.Succeeded > 0 {
		work += fmt.Sprintf("; p50 %.2f ms, p99 %.2f ms", q.P50ms, q.P99ms)
	}
	lines := []string{
		work + ".",
		fmt.Sprintf("Management polled every %s (the vendor's default is 30s): %d polls seen.", sum.PollInterval, sum.ManagementPolls),
		fmt.Sprintf("Started %s, took %s; %d events in %s.", sum.Started.Local().Format(time.DateTime), sum.Duration, sum.Events,
			filepath.Join(sum.Out, "trace.jsonl")),
	}
	if sum.Error != "" {
		lines = append(lines, "The run failed: "+sum.Error)
	}
	return lines
}

// compareLines are a run's lines beside the others: its model and how it
// went (the lab is the same for all).
func (r *Run) compareLines() []string {
	return append(r.settingsLines()[:1], r.outcomeLines()...)
}

// WriteCompareReport writes one report.html in o.Out with the runs of
// agentlab compare side by side, and returns its path.
func WriteCompareReport(l *Lab, o CompareOptions, runs []CompareRun) (string, error) {
	var fig bytes.Buffer
	if err := WriteCompareTable(&fig, runs, l.ServerHosts()); err != nil {
		return "", err
	}
	recycle := "no recycling"
	if o.MaxRequestsPerChild > 0 {
		recycle = fmt.Sprintf("Apache children recycled every %d requests", o.MaxRequestsPerChild)
	}
	rep := report.Page{
		Title: fmt.Sprintf("agentlab compare: lab %s", l.Name),
		Lines: []string{
			fmt.Sprintf("The same lab and workload as %s, one run after another: Apache with %d children, %s.",
				runNames(runs), max(o.Workers, 1), recycle),
		},
		Figures: fig.String(),
	}
	for _, cr := range runs {
		rep.Sides = append(rep.Sides, cr.side)
	}
	path := filepath.Join(o.Out, ReportFile)
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return "", err
	}
	return path, writeReportFile(path, rep)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func runNames(runs []CompareRun) string {
	names := make([]string, len(runs))
	for i, r := range runs {
		names[i] = r.Run
	}
	switch len(names) {
	case 0:
		return "no run"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
