// Package report writes report.html: a run's settings and summary, then
// for each side (one run; agentlab compare has three) a sequence diagram of
// the agents' connections (diagram.go), the steps (narrative) and the
// Process Monitor view (procmon), in one self-contained page.
package report

import (
	"bufio"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"

	"github.com/agentlab/agentlab/narrative"
	"github.com/agentlab/agentlab/procmon"
	"github.com/agentlab/agentlab/trace"
)

// Page is what report.html shows: a run's settings and summary, then for
// each side (one run; agentlab compare has three) a sequence diagram, the
// steps and the Process Monitor view, all rendered from the side's events.
type Page struct {
	Title string
	// Lines are the settings and the summary, one sentence each.
	Lines []string
	// Figures is preformatted text shown under the lines (agentlab
	// compare's table); empty for none.
	Figures string
	Sides   []Side
}

// Side is one run's events and how to read them.
type Side struct {
	Label string
	// Lines say what this run was and how it went.
	Lines  []string
	Events []trace.Event // merged, in time order
	// Host is the web server host and Servers the Policy Server hosts: the
	// steps and the diagram tell the processes on Host talking to Servers.
	Host    string
	Servers []string
	// Agents keeps the events of the processes the steps and the diagram
	// tell (the lab leaves out the registration tool); nil keeps all.
	Agents procmon.Select
	// Table keeps the events of the Process Monitor view; nil keeps the
	// socket operations between Host and Servers, as the seed filters.
	Table procmon.Select
	// Procmon is the view's filter on its rows, after Table.
	Procmon procmon.Filter
	// TableWhat says which rows Table and Procmon keep, as a title's
	// parenthesis.
	TableWhat string
}

//go:embed report.html.tmpl
var reportTmplText string

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"sub": func(a, b int) int { return a - b },
	"add": func(a, b int) int { return a + b },
}).Parse(reportTmplText))

type reportView struct {
	Title   string
	Header  []string // the trace.Process Monitor view's columns
	Lines   []string
	Figures string
	Sides   []sideView
	Phases  []string // in the legend: every phase some side draws
	Events  int
}

type sideView struct {
	ID        string // prefixes the side's anchors
	Label     string
	Lines     []string
	Diagram   *diagram
	Steps     []stepView
	TableWhat string
	Rows      []tableView
	Events    int
}

type stepView struct {
	N           int
	Text        string
	Phase       string
	PhaseClass  string
	First, Last string
	Drawn       bool // the diagram shows where it begins
}

type tableView struct {
	Cells []string
	Class string
}

// WriteReport writes r as one self-contained HTML page: inline CSS and
// SVG, no script, nothing fetched when it is viewed, so that a run's
// folder can be mailed or opened years later.
func Write(w io.Writer, r Page) error {
	v := reportView{Title: r.Title, Header: procmon.Header, Lines: r.Lines, Figures: r.Figures}
	seen := map[string]bool{}
	for i, s := range r.Sides {
		sv := newSideView(i, s)
		v.Events += len(s.Events)
		for _, p := range sv.Diagram.Phases {
			if !seen[p] {
				seen[p] = true
				v.Phases = append(v.Phases, p)
			}
		}
		v.Sides = append(v.Sides, sv)
	}
	bw := bufio.NewWriter(w)
	if err := reportTmpl.Execute(bw, v); err != nil {
		return fmt.Errorf("report.html: %w", err)
	}
	return bw.Flush()
}

func newSideView(i int, s Side) sideView {
	sv := sideView{ID: fmt.Sprintf("s%d", i), Label: s.Label, Lines: s.Lines, TableWhat: s.TableWhat, Events: len(s.Events)}
	var agents []trace.Event
	for _, e := range s.Events {
		if s.Agents == nil || s.Agents(e) {
			agents = append(agents, e)
		}
	}
	steps := narrative.Narrate(agents, s.Host, s.Servers)
	sv.Diagram = layoutDiagram(s.Events, s.Host, s.Servers, s.Agents)
	sv.Diagram.ID = sv.ID
	sv.Diagram.markSteps(steps)
	drawn := map[int]bool{}
	for _, r := range sv.Diagram.Rows {
		for _, n := range r.Steps {
			drawn[n] = true
		}
	}
	for _, st := range steps {
		sv.Steps = append(sv.Steps, stepView{N: st.N, Text: st.Text, Phase: st.Phase, PhaseClass: phaseClass(st.Phase),
			First: st.First.Local().Format(narrative.TimeLayout), Last: st.Last.Local().Format(narrative.TimeLayout), Drawn: drawn[st.N]})
	}

	keep := s.Table
	if keep == nil {
		keep = procmon.SocketOps
		if s.Host != "" {
			keep = procmon.All(procmon.SocketOps, procmon.Between(s.Host, s.Servers...))
		}
	}
	if sv.TableWhat == "" && s.Table == nil && s.Host != "" {
		sv.TableWhat = fmt.Sprintf("filtered as the seed filters: %s to %s", s.Host, strings.Join(s.Servers, " or "))
	}
	for _, r := range procmon.Rows(s.Events, keep, s.Procmon) {
		sv.Rows = append(sv.Rows, tableView{Cells: r.Cells, Class: "op-" + strings.ToLower(strings.TrimPrefix(r.Op, "TCP "))})
	}
	return sv
}

// PhaseNote is what a phase is, for the legend.
func (v reportView) PhaseNote(p string) string {
	switch p {
	case trace.PhaseBootstrap:
		return "SmHost.conf's server: handshake, HCO, reset"
	case trace.PhaseHCO:
		return "the servers the HCO lists: the pool's first sockets, the ACO"
	case trace.PhaseRequests:
		return "page loads: IsProtected, Login, Authorize"
	case trace.PhaseManagement:
		return "the LLAWP's DoManagement polls"
	case trace.PhaseAdmin:
		return "registration (smreghost)"
	case "":
		return "no phase recorded"
	}
	return ""
}

// PhaseClass is the CSS class of a phase.
func (v reportView) PhaseClass(p string) string { return phaseClass(p) }
