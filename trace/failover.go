package trace

import (
	"strings"
	"time"
)

// narrStateWindow: Server State events of one process this close together
// are one happening (a server fails and the next one takes the requests)
// and are told as one step.
const narrStateWindow = 100 * time.Millisecond

// serverState is a Server State note taken apart: "<host:port> <from> ->
// <to>: <why>", or "<host:port> <state>: <why>" for the state a server
// starts in (pool/doc.go).
type serverState struct {
	addr, from, to, why string
}

func parseServerState(note string) (serverState, bool) {
	head, why, _ := strings.Cut(note, ": ")
	f := strings.Fields(head)
	switch {
	case len(f) == 2:
		return serverState{addr: f[0], to: f[1], why: why}, true
	case len(f) == 4 && f[2] == "->":
		return serverState{addr: f[0], from: f[1], to: f[3], why: why}, true
	}
	return serverState{}, false
}

func stateDown(s string) bool { return s == "Failed" || s == "Disabled" }

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
			text := "at " + span.first.Local().Format(narrTimeLayout) + ", " + n.name(p) + " " + strings.Join(clauses, "; ") + "."
			steps = append(steps, n.step(p, phase, text, nil, span))
		}
		clauses, span, phase = nil, narrSpan{}, ""
	}
	for _, i := range p.states {
		e := n.ev(i)
		st, ok := parseServerState(e.Note)
		if !ok {
			continue
		}
		host := e.RemoteHost
		if host == "" {
			host = st.addr
		}
		var clause string
		switch {
		case st.from == "" && stateDown(st.to):
			clause = "finds " + host + " down at start (" + strings.TrimPrefix(st.why, "down at start: ") + "): it is " + st.to + " and retried by the health poll"
		case st.from == "":
			continue
		case stateDown(st.to) && !stateDown(st.from):
			clause = "marks " + host + " unavailable (" + st.why + ")"
		case stateDown(st.from) && st.to == "Active":
			clause = "sees " + host + " back (" + st.why + "): new sockets go to it"
		case stateDown(st.from):
			clause = "sees " + host + " back (" + st.why + "), standing by as " + st.to
		case st.to == "Active":
			clause = "next requests go to " + host
		case st.to == "Inactive":
			clause = "puts " + host + " on standby"
		default:
			clause = host + " goes from " + st.from + " to " + st.to + " (" + st.why + ")"
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
