package lab

// The faults in the run's report: what each did, and, from the trace's
// Response events, which Policy Server answered the web server's
// requests between one fault and the next.

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// reportFaults prints the faults a run applied and, from the trace, which
// Policy Server answered the web server's requests between them.
func (r *Run) reportFaults(w io.Writer, evs []trace.Event) {
	recs := r.summary.Faults
	if len(recs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nFaults (%s):\n\n", r.Lab.File)
	var marks []answerMark
	for _, f := range recs {
		off := "      -"
		if f.OffsetMs != nil {
			off = fmt.Sprintf("%+7.2fs", *f.OffsetMs/1000)
		}
		what := f.Result
		if !f.Applied {
			what = "NOT APPLIED: " + f.Error
		} else {
			marks = append(marks, answerMark{f.Time, fmt.Sprintf("after %s %s", f.Action, f.Server)})
		}
		fmt.Fprintf(w, "  %s  %-22s %-18s %s\n", off, f.Action, f.Server, what)
	}
	writeAnswers(w, evs, r.Lab.ServerHosts(), marks)
}

type answerMark struct {
	t     time.Time
	label string
}

// writeAnswers counts the Responses the web server's workers received from
// each Policy Server between consecutive faults.
func writeAnswers(w io.Writer, evs []trace.Event, servers []string, marks []answerMark) {
	type window struct {
		from   time.Time
		label  string
		counts map[string]int
	}
	var first time.Time
	for _, e := range evs {
		if e.Op == trace.OpResponse && e.Role == "hla" && e.Phase == trace.PhaseRequests {
			first = e.T
			break
		}
	}
	if first.IsZero() {
		return
	}
	wins := []window{{from: first, label: "from the first request", counts: map[string]int{}}}
	for _, m := range marks {
		if m.t.After(first) {
			wins = append(wins, window{from: m.t, label: m.label, counts: map[string]int{}})
		}
	}
	for _, e := range evs {
		if e.Op != trace.OpResponse || e.Role != "hla" || e.Phase != trace.PhaseRequests {
			continue
		}
		i := len(wins) - 1
		for i > 0 && e.T.Before(wins[i].from) {
			i--
		}
		wins[i].counts[e.RemoteHost]++
	}
	fmt.Fprintf(w, "\nAnswers to the web server's requests, by Policy Server, between faults (from the trace):\n\n")
	for _, win := range wins {
		var parts []string
		for _, s := range servers {
			if n := win.counts[s]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", s, n))
			}
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(w, "  %-40s %s\n", win.label, strings.Join(parts, ", "))
	}
}
