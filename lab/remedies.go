package lab

// The remedies of the connection build-up (DOMAIN.md section 9, issue 12):
// a lab's remedies: list is run after the lab itself, each remedy on a
// fresh copy of the lab, so that each starts from the same outage; the
// table gives each one's failed page loads, peak connections and time to
// recover, all counted from its run.

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// Remedy is one item of a lab file's remedies: what the run changes from
// the lab. Threads and MaxConns apply to every Policy Server of the lab
// (smps --threads, --max-conns); Faults are added to the lab's (a
// flushrequests, a directory made fast again).
type Remedy struct {
	Name     string  `yaml:"name"`
	Threads  int     `yaml:"threads,omitempty"`
	MaxConns int     `yaml:"max_conns,omitempty"`
	Faults   []Fault `yaml:"faults,omitempty"`
}

// validateRemedies checks the remedies as the lab's own settings and
// faults are checked; each fault error names the file and line.
func (l *Lab) validateRemedies() []error {
	var errs []error
	for i := range l.Remedies {
		rm := &l.Remedies[i]
		if rm.Name == "" {
			errs = append(errs, fmt.Errorf("%s: remedy %d has no name", l.File, i+1))
		}
		if rm.Threads < 0 || rm.MaxConns < 0 {
			errs = append(errs, fmt.Errorf("%s: remedy %q: threads and max_conns must not be negative", l.File, rm.Name))
		}
		errs = append(errs, l.checkFaults(rm.Faults, fmt.Sprintf("remedy %q fault", rm.Name))...)
	}
	return errs
}

// WithRemedy is a copy of the lab with the remedy applied.
func (l *Lab) WithRemedy(rm Remedy) *Lab {
	cl := *l
	cl.PolicyServers = append([]PolicyServer(nil), l.PolicyServers...)
	for i := range cl.PolicyServers {
		if rm.Threads > 0 {
			cl.PolicyServers[i].Threads = rm.Threads
		}
		if rm.MaxConns > 0 {
			cl.PolicyServers[i].MaxConns = rm.MaxConns
		}
	}
	cl.Faults = append(append([]Fault(nil), l.Faults...), rm.Faults...)
	cl.Remedies = nil
	return &cl
}

// RemedyRun is one run of Remedies: the lab as it is ("none"), or with
// one remedy.
type RemedyRun struct {
	Remedy string `json:"remedy"`
	Out    string `json:"out"`
	RemedyFigures
	Error string `json:"error,omitempty"`
}

// RemedyFigures are what the remedies table shows of a run.
type RemedyFigures struct {
	Sent   int `json:"page_loads"`
	Failed int `json:"failed_page_loads"`
	// PeakConns is, per Policy Server host, the most connections the
	// server held at once, as its own trace counts them: the build-up is
	// on the server's side, where sockets the agents gave up on stay open
	// until a worker thread answers them. Refused ones never count.
	PeakConns map[string]int `json:"peak_connections"`
	// Trouble is the first and last sign of the build-up in the trace:
	// an agent's request timeout, a server's refusal at its limit.
	// Recovered says the trouble ended RecoverQuiet before the agents'
	// last answer; Outage is then from its first sign to its last.
	FirstTrouble, LastTrouble time.Time
	Troubles                  int
	Recovered                 bool
	Outage                    time.Duration
}

// RecoverQuiet is how long a run must go on answering with no timeout and
// no refusal for the build-up to count as over.
const RecoverQuiet = 3 * time.Second

// ComputeRemedyFigures counts a run's figures from its trace and summary.
func ComputeRemedyFigures(evs []trace.Event, sum Summary) RemedyFigures {
	f := RemedyFigures{Sent: sum.Requests.Sent, Failed: sum.Requests.Failed, PeakConns: serverPeakOpen(evs)}
	var lastAnswer time.Time
	for _, e := range evs {
		if e.Timeout != nil || e.Limit != nil {
			if f.Troubles == 0 {
				f.FirstTrouble = e.T
			}
			f.Troubles++
			f.LastTrouble = e.T
		}
		if e.Op == trace.OpResponse && e.Phase == trace.PhaseRequests && isAgent(e) && e.T.After(lastAnswer) {
			lastAnswer = e.T
		}
	}
	if f.Troubles > 0 && lastAnswer.Sub(f.LastTrouble) >= RecoverQuiet {
		f.Recovered, f.Outage = true, f.LastTrouble.Sub(f.FirstTrouble)
	}
	return f
}

// Remedies runs the lab as it is, then once per remedy, one after another
// (they use the same addresses), each in its own folder under o.Out. A
// failed run is reported in its RemedyRun and the others still run; only
// a cancelled ctx stops the sequence.
func Remedies(ctx context.Context, l *Lab, o CompareOptions) []RemedyRun {
	items := append([]Remedy{{Name: "none"}}, l.Remedies...)
	var runs []RemedyRun
	for i, rm := range items {
		if ctx.Err() != nil {
			break
		}
		out := filepath.Join(o.Out, fmt.Sprintf("%d-%s", i, slug(rm.Name)))
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "remedies: run %d of %d, %s, in %s\n", i+1, len(items), rm.Name, out)
		}
		r := &Run{Lab: l.WithRemedy(rm), Opts: Options{Out: out, BinDir: o.BinDir, Progress: o.Progress,
			Requests: o.Requests, Concurrency: o.Concurrency, Poll: o.Poll}}
		evs, err := r.Execute(ctx)
		rr := RemedyRun{Remedy: rm.Name, Out: out, RemedyFigures: ComputeRemedyFigures(evs, r.Summary())}
		if err != nil {
			rr.Error = err.Error()
		}
		runs = append(runs, rr)
	}
	return runs
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '-'
	}, s)
}

// WriteRemedyTable prints one row per run: failed page loads, peak
// connections per server, time to recover.
func WriteRemedyTable(w io.Writer, runs []RemedyRun, servers []string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "remedy\tfailed page loads"
	for _, s := range servers {
		head += "\tpeak connections to " + s
	}
	fmt.Fprintln(tw, head+"\ttime to recover")
	for _, r := range runs {
		row := r.Remedy
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\tfailed: %s\n", row, r.Error)
			continue
		}
		row += fmt.Sprintf("\t%d of %d", r.Failed, r.Sent)
		for _, s := range servers {
			row += fmt.Sprintf("\t%d", r.PeakConns[s])
		}
		switch {
		case r.Troubles == 0:
			row += "\tno build-up"
		case r.Recovered:
			row += "\t" + r.Outage.Round(100*time.Millisecond).String()
		default:
			row += "\tnot within the run"
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// serverPeakOpen is, per Policy Server host, the most connections its
// trace shows open at once (trace.ServerConns).
func serverPeakOpen(evs []trace.Event) map[string]int {
	peak := map[string]int{}
	trace.ServerConns(evs, func(_ int, server string, _, after int) {
		peak[server] = max(peak[server], after)
	})
	return peak
}
