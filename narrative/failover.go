package narrative

import (
	"strings"
	"time"

	"github.com/agentlab/agentlab/trace"
)

// narrStateWindow: Server State events of one process this close together
// are one happening (a server fails and the next one takes the requests)
// and are told as one step.
const narrStateWindow = 100 * time.Millisecond

// failovers tells how the process's pool saw its Policy Servers change:
// one failed (and the requests moved), one came back. The states a
// server starts in are told only when it starts down: the HCO step
// already says which servers took the sockets.
func (n *narrator) failovers(p *narrProc) []Step {
	var steps []Step
	var clauses []string
	var span narrSpan
	phase := ""
	flush := func() {
		if len(clauses) > 0 {
			text := "at " + span.first.Local().Format(TimeLayout) + ", " + n.name(p) + " " + strings.Join(clauses, "; ") + "."
			steps = append(steps, n.step(p, phase, text, nil, span))
		}
		clauses, span, phase = nil, narrSpan{}, ""
	}
	for _, i := range p.states {
		e := n.ev(i)
		st := e.State
		if st == nil {
			continue // a trace from before the field: nothing to tell
		}
		host := e.RemoteHost
		if host == "" {
			host = st.Server
		}
		var clause string
		switch {
		case st.From == "" && trace.Down(st.To):
			clause = "finds " + host + " down at start (" + st.Err + "): it is " + st.To + " and retried by the health poll"
		case st.From == "":
			continue
		case trace.Down(st.To) && !trace.Down(st.From):
			clause = "marks " + host + " unavailable (" + st.Why + ")"
		case trace.Down(st.From) && st.To == trace.StateActive:
			clause = "sees " + host + " back (" + st.Why + "): new sockets go to it"
		case trace.Down(st.From):
			clause = "sees " + host + " back (" + st.Why + "), standing by as " + st.To
		case st.To == trace.StateActive:
			clause = "next requests go to " + host
		case st.To == trace.StateInactive:
			clause = "puts " + host + " on standby"
		default:
			clause = host + " goes from " + st.From + " to " + st.To + " (" + st.Why + ")"
		}
		if span.set && e.T.Sub(span.first) > narrStateWindow {
			flush()
		}
		if phase == "" {
			phase = e.Phase
		}
		span.add(e.T)
		clauses = append(clauses, clause)
	}
	flush()
	return steps
}
