package pool

import (
	"fmt"
	"net/netip"

	"github.com/agentlab/agentlab/trace"
)

// stateUntold is a server's shown state before settle first tells it.
const stateUntold State = -1

// settle tells every state change the trace and the log have not told
// yet: first the health changes each server went through (Active ->
// Failed, Failed -> Active, ...), in the order they happened, then what
// the selection now makes of the servers that are up (Active, or Inactive
// when another one gets the new requests). Its first run, at the end of
// Start, tells the state each server starts in.
//
// Anything that may change a server's health calls it once the server's
// lock is released; Stats does not wait for it, it asks the selection
// itself.
func (p *Pool) settle() {
	if !p.started.Load() {
		return
	}
	p.smu.Lock()
	defer p.smu.Unlock()
	cands := make([]candidate, len(p.servers))
	changes := make([][]healthChange, len(p.servers))
	var lastErr []string
	for i, s := range p.servers {
		s.mu.Lock()
		cands[i] = s.candidateLocked()
		changes[i], s.changes = s.changes, nil
		if s.shown == stateUntold && s.lastErr != nil {
			lastErr = append(lastErr, s.lastErr.Error())
		} else {
			lastErr = append(lastErr, "")
		}
		s.mu.Unlock()
	}
	use := p.rule.inUse(cands)
	addrs := make([]string, len(p.servers))
	for i, s := range p.servers {
		addrs[i] = s.addr
	}
	choice := p.rule.why(cands, addrs)
	now := func(i int) State {
		switch {
		case !cands[i].health.up():
			return cands[i].health
		case use[i]:
			return Active
		}
		return Inactive
	}

	for i, s := range p.servers {
		if s.shown == stateUntold {
			continue
		}
		for j, ch := range changes[i] {
			to := ch.to
			if j == len(changes[i])-1 {
				// The last change ends where the selection puts it now.
				to = now(i)
			}
			if to != s.shown {
				p.tell(s, s.shown, to, ch.why, "")
				s.shown = to
			}
		}
	}
	for i, s := range p.servers {
		to := now(i)
		switch {
		case s.shown == stateUntold:
			why, down := "up at start; "+choice, ""
			if !to.up() {
				down = lastErr[i]
				why = "down at start: " + down
			}
			p.tell(s, s.shown, to, why, down)
		case s.shown != to:
			p.tell(s, s.shown, to, choice, "")
		}
		s.shown = to
	}
}

// tell writes one state change into the trace and the log. The trace
// event (trace.OpServerState) is on no connection: it names the server as
// a connection's remote end would (remote = the address dialed, as the
// hosts map resolves it; remote_host = the lab name), and its note reads
// "smps1.shared.lab:44443 Active -> Failed: no answer within
// RequestTimeout 60s" (or "smps1.shared.lab:44443 Disabled: down at
// start: ..." for the state a server starts in). The event's State says
// the same as data; down is the error that has a server down at start.
func (p *Pool) tell(s *server, from, to State, why, down string) {
	change := &trace.ServerState{Server: s.addr, To: to.String(), Why: why, Err: down}
	note := fmt.Sprintf("%s %s -> %s: %s", s.addr, from, to, why)
	if from == stateUntold {
		note = fmt.Sprintf("%s %s: %s", s.addr, to, why)
	} else {
		change.From = from.String()
	}
	ev := s.log.Info()
	if !to.up() {
		ev = s.log.Warn()
	}
	if from != stateUntold {
		ev = ev.Str("was", from.String())
	}
	ev.Str("state", to.String()).Str("why", why).Msgf("Policy server %s is %s: %s.", s.addr, to, why)

	rec := p.cfg.Recorder
	if rec == nil {
		return
	}
	phase := p.defaultPhase
	if from == stateUntold {
		phase = trace.PhaseHCO
	}
	// A name the hosts map lacks stays as written: the server's dial
	// fails with the reason, this event only names it.
	remote, err := rec.Hosts().Resolve(s.addr)
	if err != nil {
		remote = s.addr
	}
	name := rec.Hosts().Name(remote)
	if _, err := netip.ParseAddr(s.ps.Host); name == "" && err != nil {
		name = s.ps.Host // never an IP as a host name
	}
	rec.Emit(trace.Event{Op: trace.OpServerState, LocalHost: rec.Options().Host, Remote: remote, RemoteHost: name, Phase: phase, Note: note, State: change})
}
